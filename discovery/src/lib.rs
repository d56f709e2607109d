//! Semantic discovery for agentnet: "who can do X?" answered from a node's own index.
//!
//! - [`Embedder`]: text to unit vectors. [`LexicalEmbedder`], the default, needs no model
//!   files: hashed word stems, character n-grams and word pairs, weighted by IDF learned
//!   from the local corpus.
//! - [`Bm25`]: Okapi BM25, the lexical baseline and the sparse half of hybrid search.
//! - [`eval`]: retrieval metrics (recall@k, nDCG@10, MRR@10) and the JSONL catalog format of
//!   the benchmark data.
//!
//! The capability index with HNSW, fusion, filters, ranking and cursors builds on these
//! (see `ARCHITECTURE.md` and the discovery issue). This crate never touches the network.
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
mod text;

pub use bm25::{Bm25, Bm25Config};
pub use embed::{
    EmbedError, Embedder, LexicalConfig, LexicalEmbedder, MAX_LEXICAL_TEXT_LEN, dot, normalise,
};
