//! Retrieval quality on the Gorilla APIBench HuggingFace subset, carried in
//! `tests/data/gorilla_apibench/` (Apache-2.0; see its NOTE.md and LICENSE): the lexical
//! embedder must beat plain BM25 on recall@5, measured in the same run.

use agentnet_discovery::eval::{CatalogEntry, Query, evaluate_bm25, evaluate_embedder};
use agentnet_discovery::{Embedder, LexicalConfig, LexicalEmbedder};

fn load<T: serde::de::DeserializeOwned>(text: &str) -> Vec<T> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("valid JSONL"))
        .collect()
}

#[test]
fn lexical_beats_bm25_on_recall_at_5() {
    let catalog: Vec<CatalogEntry> = load(include_str!("data/gorilla_apibench/catalog.jsonl"));
    let queries: Vec<Query> = load(include_str!("data/gorilla_apibench/queries_hf.jsonl"));
    assert_eq!((catalog.len(), queries.len()), (1059, 911));
    let mut lexical = LexicalEmbedder::new(LexicalConfig::default());
    for entry in &catalog {
        lexical.add_document(&entry.text());
    }
    let (ours, _) = evaluate_embedder(&lexical, &catalog, &queries).expect("catalog embeds");
    let bm25 = evaluate_bm25(&catalog, &queries);
    println!("lexical {ours:?}\nbm25 {bm25:?}");
    assert!(
        ours.recall_at_5 > bm25.recall_at_5,
        "lexical R@5 {} vs BM25 {}",
        ours.recall_at_5,
        bm25.recall_at_5
    );
    // The figures measured when this test was written, to catch silent regressions.
    assert!(ours.recall_at_5 > 0.26, "{}", ours.recall_at_5);
}
