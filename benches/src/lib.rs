//! Benchmarks for agentnet.
//!
//! - `benches/`: criterion micro-benchmarks (`cargo bench -p agentnet-benches`).
//! - `agentnet-bench`: release-mode bench binary whose commands print measured figures,
//!   one JSON object each with `--json`.
//! - [`search`]: capability search latency, HNSW against the exact scan, behind
//!   `agentnet-bench search`.
//! - [`durability`]: ingestion across a `kill -9` of the gateway, behind
//!   `agentnet-bench gateway-durability`.
//! - [`gateway`]: the gateway's ingestion throughput and reservation latency behind
//!   `agentnet-bench gateway-ingest`.
//! - [`trust`]: the trust attack suite and aggregation-speed measurement behind
//!   `agentnet-bench trust-sim` and `agentnet-bench trust-aggregate`.
#![deny(missing_docs)]

pub mod durability;
pub mod gateway;
pub mod index;
pub mod retrieval;
pub mod search;
pub mod trust;
