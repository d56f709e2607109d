//! Retrieval quality on a JSONL catalog and query set (the format of
//! `shared/data/gorilla_apibench/`): an embedder with exact cosine search, against plain BM25
//! measured in the same run.

use agentnet_discovery::eval::{
    CatalogEntry, Metrics, Query, ScoreMatrix, bm25_scores, dense_scores, evaluate_scores,
    feedback, fuse_rrf, fuse_weighted,
};
use agentnet_discovery::{Embedder, LexicalConfig, LexicalEmbedder, RRF_K};
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
    /// For `hybrid`: every fusion tried, with its metrics (the reported one is [`HYBRID_FUSION`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<(String, Metrics)>,
}

/// Reads a JSONL file of `T`, one per non-empty line.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
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

/// The fusion `hybrid` reports: chosen on the TensorFlow Hub and Torch Hub subsets, where
/// weights 0.35 to 1.0 on the lexical cosine tie within noise; 0.5 is the middle.
pub const HYBRID_FUSION: &str = "minilm+0.5*lexical";

/// Where the `minilm` model is looked for when no directory is given.
pub const DEFAULT_MODEL_DIR: &str = "models/all-MiniLM-L6-v2";

fn lexical_scores(
    catalog: &[CatalogEntry],
    queries: &[Query],
    config: LexicalConfig,
) -> Result<(String, ScoreMatrix, f64)> {
    let mut lexical = LexicalEmbedder::new(config);
    for entry in catalog {
        lexical.add_document(&entry.text());
    }
    let (scores, seconds) =
        dense_scores(&lexical, catalog, queries).context("cannot embed the catalog")?;
    Ok((lexical.id().to_owned(), scores, seconds))
}

#[cfg(feature = "minilm")]
fn minilm_scores(
    catalog: &[CatalogEntry],
    queries: &[Query],
    model_dir: &Path,
) -> Result<(String, ScoreMatrix, f64)> {
    let model = agentnet_discovery::MinilmEmbedder::load(model_dir)?;
    let (scores, seconds) =
        dense_scores(&model, catalog, queries).context("cannot embed the catalog")?;
    Ok((model.id().to_owned(), scores, seconds))
}

#[cfg(feature = "minilm")]
fn minilm_doc_sim(catalog: &[CatalogEntry], model_dir: &Path) -> Result<Vec<Vec<f32>>> {
    let model = agentnet_discovery::MinilmEmbedder::load(model_dir)?;
    Ok(agentnet_discovery::eval::doc_similarities(&model, catalog)?)
}

#[cfg(not(feature = "minilm"))]
fn minilm_doc_sim(_catalog: &[CatalogEntry], _model_dir: &Path) -> Result<Vec<Vec<f32>>> {
    bail!("this build has no minilm embedder")
}

#[cfg(not(feature = "minilm"))]
fn minilm_scores(
    _catalog: &[CatalogEntry],
    _queries: &[Query],
    _model_dir: &Path,
) -> Result<(String, ScoreMatrix, f64)> {
    bail!(
        "this build has no minilm embedder; rebuild with `--features minilm` \
         (cargo run --release -p agentnet-benches --features minilm --bin agentnet-bench -- ...)"
    )
}

/// Runs the retrieval benchmark with the named embedder: `lexical` (configured by
/// `lexical_config`), `minilm` (from `model_dir`), or `hybrid` (minilm and lexical scores
/// fused by [`HYBRID_FUSION`]; every other fusion tried is reported under `variants`).
pub fn run(
    catalog: &Path,
    queries: &Path,
    embedder: &str,
    lexical_config: LexicalConfig,
    model_dir: &Path,
) -> Result<RetrievalReport> {
    let catalog: Vec<CatalogEntry> = read_jsonl(catalog)?;
    let queries: Vec<Query> = read_jsonl(queries)?;
    if catalog.is_empty() || queries.is_empty() {
        bail!("the catalog and the query file must each hold at least one entry");
    }
    let bm25 = bm25_scores(&catalog, &queries);
    let mut variants = Vec::new();
    let (id, scores, embed_seconds) = match embedder {
        "lexical" => lexical_scores(&catalog, &queries, lexical_config)?,
        "minilm" => minilm_scores(&catalog, &queries, model_dir)?,
        "hybrid" => {
            let (id, dense, seconds) = minilm_scores(&catalog, &queries, model_dir)?;
            let (_, lexical, _) = lexical_scores(&catalog, &queries, lexical_config)?;
            let mut tried: Vec<(String, ScoreMatrix)> = vec![
                ("rrf(minilm,bm25)".into(), fuse_rrf(&[&dense, &bm25], RRF_K)),
                (
                    "rrf(minilm,lexical,bm25)".into(),
                    fuse_rrf(&[&dense, &lexical, &bm25], RRF_K),
                ),
                (
                    "rrf(minilm,lexical)".into(),
                    fuse_rrf(&[&dense, &lexical], RRF_K),
                ),
            ];
            for w in [0.2f32, 0.35, 0.5, 0.75, 1.0] {
                tried.push((
                    format!("minilm+{w}*lexical"),
                    fuse_weighted(&[(&dense, 1.0), (&lexical, w)]),
                ));
                tried.push((
                    format!("minilm+{w}*bm25"),
                    fuse_weighted(&[(&dense, 1.0), (&bm25, w)]),
                ));
            }
            for w in [0.2f32, 0.35] {
                for b in [0.1f32, 0.2] {
                    tried.push((
                        format!("minilm+{w}*lexical+{b}*bm25"),
                        fuse_weighted(&[(&dense, 1.0), (&lexical, w), (&bm25, b)]),
                    ));
                }
            }
            let doc_sim = minilm_doc_sim(&catalog, model_dir)?;
            let base = fuse_weighted(&[(&dense, 1.0), (&lexical, 0.35)]);
            for top in [3usize, 5] {
                for beta in [0.2f32, 0.4] {
                    tried.push((
                        format!("prf{top},{beta}(minilm+0.35*lexical)"),
                        feedback(&base, &doc_sim, top, beta),
                    ));
                }
            }
            variants = tried
                .iter()
                .map(|(name, s)| (name.clone(), evaluate_scores(&catalog, &queries, s)))
                .collect();
            let (name, fused) = tried
                .into_iter()
                .find(|(name, _)| name == HYBRID_FUSION)
                .context("the hybrid fusion is among those tried")?;
            (format!("hybrid({id}:{name})"), fused, seconds)
        }
        other => bail!("unknown embedder {other:?}; choose lexical, minilm or hybrid"),
    };
    Ok(RetrievalReport {
        embedder: id,
        catalog: catalog.len(),
        metrics: evaluate_scores(&catalog, &queries, &scores),
        bm25: evaluate_scores(&catalog, &queries, &bm25),
        query_embed_ms: embed_seconds * 1000.0 / queries.len() as f64,
        variants,
    })
}
