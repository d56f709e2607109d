//! The agentnet node: the process that agents embed or run beside them.
//!
//! This crate will hold the swarm event loop and its `NodeHandle`, gossip, anti-entropy
//! sync, intent delivery, the agents' local HTTP API, and the `agentnet` command line.
//! Today it provides the redb store ([`store`]) and the `agentnet key` commands. See
//! `ARCHITECTURE.md` and the node issue.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod node;
pub mod store;
mod sync;

pub use node::{Node, NodeBuilder, NodeConfig, NodeError, NodeHandle, STORE_FILE};
