//! Retrieval quality on a JSONL catalog and query set (the format of
//! `shared/data/gorilla_apibench/`): an embedder with exact cosine search, against plain BM25
//! measured in the same run.

use agentnet_discovery::eval::{CatalogEntry, Metrics, Query, evaluate_bm25, evaluate_embedder};
use agentnet_discovery::{Embedder, LexicalConfig, LexicalEmbedder};
use anyhow::{Context, Result, bail};
use std::fs;
use std::path::Path;

/// Results of one retrieval run.
#[derive(Debug, serde::Serialize)]
pub struct RetrievalReport {
    /// The embedder measured.
    pub embedder: String,
    /// Catalog entries.
    pub catalog: usize,
    /// The embedder's metrics (exact cosine search).
    #[serde(flatten)]
    pub metrics: Metrics,
    /// Plain BM25 (k1 = 1.2, b = 0.75) on the same data.
    pub bm25: Metrics,
    /// Mean time to embed one query, in milliseconds.
    pub query_embed_ms: f64,
}

fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a valid entry", path.display(), i + 1))
        })
        .collect()
}

/// Runs the retrieval benchmark with the named embedder (`lexical`, configured by `lexical_config`).
pub fn run(
    catalog: &Path,
    queries: &Path,
    embedder: &str,
    lexical_config: LexicalConfig,
) -> Result<RetrievalReport> {
    let catalog: Vec<CatalogEntry> = read_jsonl(catalog)?;
    let queries: Vec<Query> = read_jsonl(queries)?;
    if catalog.is_empty() || queries.is_empty() {
        bail!("the catalog and the query file must each hold at least one entry");
    }
    let baseline = evaluate_bm25(&catalog, &queries);
    let model: Box<dyn Embedder> = match embedder {
        "lexical" => {
            let mut lexical = LexicalEmbedder::new(lexical_config);
            for entry in &catalog {
                lexical.add_document(&entry.text());
            }
            Box::new(lexical)
        }
        other => bail!("unknown embedder {other:?}; this build knows: lexical"),
    };
    let (metrics, embed_seconds) = evaluate_embedder(model.as_ref(), &catalog, &queries)
        .context("cannot embed the catalog")?;
    Ok(RetrievalReport {
        embedder: model.id().to_owned(),
        catalog: catalog.len(),
        metrics,
        bm25: baseline,
        query_embed_ms: embed_seconds * 1000.0 / queries.len() as f64,
    })
}
