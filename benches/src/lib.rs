//! Benchmarks for agentnet.
//!
//! `benches/` holds criterion micro-benchmarks (`cargo bench -p agentnet-benches`); the
//! release-mode bench binaries that print measured figures are added beside them as the
//! crates they measure land. See `ARCHITECTURE.md`.
#![deny(missing_docs)]
