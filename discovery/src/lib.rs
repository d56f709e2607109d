//! Semantic discovery for agentnet: "who can do X?" answered from a node's own index.
//!
//! - [`Embedder`]: text to unit vectors. [`LexicalEmbedder`], the default, needs no model
//!   files: hashed word stems, character n-grams and word pairs, weighted by IDF learned
//!   from the local corpus.
//! - [`Bm25`]: Okapi BM25, the lexical baseline and the sparse half of hybrid search.
//! - [`CapabilityIndex`]: cards in, ranked pages out. Dense search through an
//!   [`AdaptiveIndex`] (an exact search while the corpus is small, [`SparseIndex`] for
//!   lexical vectors and [`ExactIndex`] for dense ones, then HNSW through usearch), fused
//!   with BM25 by reciprocal rank fusion, filtered by tags, organisations, trust and
//!   exclusions, ranked by similarity, trust, freshness and price with a breakdown per
//!   result, and paged by snapshot cursors.
//! - [`eval`]: retrieval metrics (recall@k, nDCG@10, MRR@10) and the JSONL catalog format of
//!   the benchmark data.
//!
//! This crate never touches the network.
//!
//! # Example
//!
//! ```
//! use agentnet_discovery::{Embedder, LexicalConfig, LexicalEmbedder, dot};
//!
//! let mut embedder = LexicalEmbedder::new(LexicalConfig::default());
//! let docs = ["Translate text between languages", "Classify images into categories"];
//! for doc in docs {
//!     embedder.add_document(doc);
//! }
//! let query = embedder.embed("image classifier")?;
//! let scores: Vec<f32> = docs.iter().map(|d| dot(&query, &embedder.embed(d).unwrap())).collect();
//! assert!(scores[1] > scores[0]);
//! # Ok::<(), agentnet_discovery::EmbedError>(())
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod bm25;
mod embed;
pub mod eval;
mod hnsw;
mod http;
mod index;
#[cfg(feature = "minilm")]
mod minilm;
mod sparse;
mod text;
mod vector;

pub use bm25::{Bm25, Bm25Config};
pub use embed::{
    EmbedError, Embedder, LexicalConfig, LexicalEmbedder, MAX_LEXICAL_TEXT_LEN, dot, normalise,
};
pub use hnsw::{
    AdaptiveIndex, BackgroundPermit, HnswConfig, HnswError, HnswIndex, Phase, Quantization, Source,
    max_concurrent_builds,
};
pub use http::{HttpEmbedder, HttpEmbedderConfig, MAX_HTTP_BATCH, MAX_HTTP_RESPONSE};
pub use index::{
    Breakdown, CapabilityIndex, DEFAULT_HNSW_THRESHOLD, DEFAULT_SPARSE_HNSW_THRESHOLD, Hit,
    IndexConfig, MAX_PAGE_SIZE, MAX_QUERY_LEN, MAX_QUERY_ORGS, MAX_QUERY_TAGS, MAX_REFRESHED,
    MAX_RESULTS, MAX_SNAPSHOTS, Page, REFRESH_DRIFT, RRF_K, RankWeights, RefreshJob, Refreshed,
    SearchError, SearchQuery, Signals,
};
#[cfg(feature = "minilm")]
pub use minilm::{MINILM_BATCH, MINILM_FILES, MINILM_MAX_TOKENS, MinilmEmbedder, MinilmError};
pub use sparse::SparseIndex;
pub use vector::{ExactIndex, Layout, VectorError, VectorIndex};
