//! One running node of a testnet, in this process or in its own.

use std::sync::Arc;

use agentnet_node::{AgentSpec, MetricsSnapshot, NodeError, NodeHandle};
use agentnet_protocol::Did;
use libp2p::{Multiaddr, PeerId};

use crate::process::NodeProcess;

/// A running node: a handle to one in this process, or the API of one in its own
/// `agentnet` process (`--processes`). The scenarios that only register, poll and fault
/// nodes are written once against this; those that serve intents or forge records need
/// [`Member::local`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Member {
    /// A node in this process.
    Local(NodeHandle),
    /// A node in its own process.
    Process(Arc<NodeProcess>),
}

impl Member {
    /// Its peer id.
    pub fn peer_id(&self) -> PeerId {
        match self {
            Member::Local(h) => h.peer_id(),
            Member::Process(p) => p.peer_id(),
        }
    }

    /// Its handle, if it runs in this process.
    pub fn local(&self) -> Option<&NodeHandle> {
        match self {
            Member::Local(h) => Some(h),
            Member::Process(_) => None,
        }
    }

    /// Whether it runs in its own process.
    pub fn is_process(&self) -> bool {
        matches!(self, Member::Process(_))
    }

    /// Capabilities in its search index.
    pub async fn capabilities(&self) -> Result<usize, NodeError> {
        match self {
            Member::Local(h) => Ok(h.capabilities()),
            Member::Process(p) => Ok(p.status().await?.capabilities),
        }
    }

    /// Indexed capabilities embedded with older corpus statistics.
    pub async fn stale_capabilities(&self) -> Result<usize, NodeError> {
        match self {
            Member::Local(h) => Ok(h.stale_capabilities()),
            Member::Process(p) => Ok(p.status().await?.stale_capabilities),
        }
    }

    /// Whether `did`'s capabilities are in its search index.
    pub async fn is_indexed(&self, did: &Did) -> Result<bool, NodeError> {
        match self {
            Member::Local(h) => Ok(h.is_indexed(did)),
            Member::Process(p) => p.is_indexed(did).await,
        }
    }

    /// Registers an agent it hosts.
    pub async fn register_agent(&self, spec: AgentSpec) -> Result<Did, NodeError> {
        match self {
            Member::Local(h) => h.register_agent(spec).await,
            Member::Process(p) => p.register_agent(spec).await,
        }
    }

    /// The peers it is connected to.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, NodeError> {
        match self {
            Member::Local(h) => h.connected_peers().await,
            Member::Process(p) => p.connected_peers().await,
        }
    }

    /// Connected peers subscribed to the registry topic.
    pub async fn registry_peers(&self) -> Result<usize, NodeError> {
        match self {
            Member::Local(h) => h.registry_peers().await,
            Member::Process(p) => Ok(p.status().await?.registry_peers),
        }
    }

    /// Dials `addr` (ending in `/p2p/<peer id>`).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NodeError> {
        match self {
            Member::Local(h) => h.dial(addr).await,
            Member::Process(p) => p.dial(&addr).await,
        }
    }

    /// Blocks `peers` both ways until unblocked.
    pub async fn block_peers(&self, peers: Vec<PeerId>) -> Result<(), NodeError> {
        match self {
            Member::Local(h) => {
                for chunk in peers.chunks(agentnet_node::MAX_BLOCKED_PER_COMMAND) {
                    h.block_peers(chunk.to_vec()).await?;
                }
                Ok(())
            }
            Member::Process(p) => p.block(&peers, true).await,
        }
    }

    /// Lifts a block on `peers`.
    pub async fn unblock_peers(&self, peers: Vec<PeerId>) -> Result<(), NodeError> {
        match self {
            Member::Local(h) => {
                for chunk in peers.chunks(agentnet_node::MAX_BLOCKED_PER_COMMAND) {
                    h.unblock_peers(chunk.to_vec()).await?;
                }
                Ok(())
            }
            Member::Process(p) => p.block(&peers, false).await,
        }
    }

    /// Its counters.
    pub async fn metrics(&self) -> Result<MetricsSnapshot, NodeError> {
        match self {
            Member::Local(h) => Ok(h.metrics()),
            Member::Process(p) => p.metrics().await,
        }
    }

    /// Stops it cleanly.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        match self {
            Member::Local(h) => h.shutdown().await,
            Member::Process(p) => p.shutdown().await,
        }
    }
}
