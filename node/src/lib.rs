//! The agentnet node: the process that agents embed or run beside them.
//!
//! [`Node::builder`] starts a node: one task owns the libp2p swarm (TCP with noise and
//! yamux, QUIC, gossipsub with peer scoring, Kademlia, identify, ping, request-response,
//! optional mDNS), and the returned [`NodeHandle`] drives it. The node keeps the registry
//! of agent cards in a redb [`store`], indexes their capabilities for search, reconciles
//! with peers by anti-entropy (`specs/sync.md`), and carries signed intents between agents
//! (`specs/intents.md`), with receipts that feed trust.
//!
//! ```no_run
//! # async fn demo() -> Result<(), agentnet_node::NodeError> {
//! use agentnet_node::{AgentReply, AgentSpec, Node, NodeConfig};
//! use agentnet_protocol::Capability;
//!
//! let node = Node::builder(NodeConfig::new("./data")).spawn().await?;
//! let did = node
//!     .register_agent(AgentSpec::new(
//!         "echo",
//!         "repeats what it is given",
//!         vec![Capability {
//!             name: "echo".into(),
//!             description: "Echo the input back".into(),
//!             tags: vec!["test".into()],
//!             version: "1".into(),
//!             price: None,
//!         }],
//!     ))
//!     .await?;
//! node.serve(&did, |intent: agentnet_protocol::Intent| async move {
//!     let input: serde_json::Value = serde_json::from_slice(&intent.input).unwrap_or_default();
//!     AgentReply::completed(input)
//! })?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod api;
mod codec;
pub mod config;
mod handle;
mod intent;
mod node;
mod peers;
mod shared;
pub mod store;
mod sync;

pub use handle::{AgentSpec, IntentOutcome, IntentRequest, MetricsSnapshot, NodeHandle, PeerInfo};
pub use intent::{
    AgentReply, BUDGET_TIMEOUT, BoxFuture, BudgetError, BudgetGate, HttpBudgetGate, IntentHandler,
    IntentLimits, Reservation, ReserveRequest, SettleRequest,
};
pub use node::{
    DEFAULT_TARGET_PEERS, GatewayConfig, MAX_BLOCKED_PER_COMMAND, Node, NodeBuilder, NodeConfig,
    NodeError, STORE_FILE,
};
