//! The agentnet testnet: N real nodes on one machine, with faults, attacks and reports.
//!
//! This crate will start nodes in one process (or as separate processes), inject
//! partitions, churn and attacks, run the scenarios and write reports. See
//! `ARCHITECTURE.md` and the testnet issue.
#![deny(missing_docs)]
