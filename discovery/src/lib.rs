//! Semantic discovery for agentnet: "who can do X?" answered from a node's own index.
//!
//! This crate will hold the `Embedder` trait and its implementations, the capability
//! index (an exact scan while small, HNSW above that), BM25, fusion, filters, ranking with
//! a score breakdown, and page cursors. It depends only on `agentnet-protocol`, for the
//! card types; it never touches the network. See `ARCHITECTURE.md` and the discovery issue.
#![deny(missing_docs)]
