//! The agentnet node: the process that agents embed or run beside them.
//!
//! This crate will hold the swarm event loop and its `NodeHandle`, the redb registry
//! store, gossip, anti-entropy sync, intent delivery, the agents' local HTTP API, and the
//! `agentnet` command line. Today it provides the `agentnet key` commands. See
//! `ARCHITECTURE.md` and the node issue.
#![deny(missing_docs)]
