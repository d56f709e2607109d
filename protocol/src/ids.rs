//! Protocol identifiers: stream protocols and gossip topics. Each one is versioned; a
//! change that old peers cannot parse gets a new version (`specs/protocol.md#versioning`).

/// Request-response protocol that carries a signed [`Intent`](crate::Intent) and returns an
/// [`IntentResponse`](crate::IntentResponse).
///
/// Spec: [`specs/protocol.md#intent-protocol`](../../../specs/protocol.md#intent-protocol);
/// how nodes use it: [`specs/intents.md`](../../../specs/intents.md).
pub const INTENT_PROTOCOL: &str = "/agentnet/intent/1";

/// Request-response protocol for anti-entropy: [`SyncRequest`](crate::SyncRequest) and
/// [`SyncResponse`](crate::SyncResponse).
///
/// Spec: [`specs/protocol.md#sync-protocol`](../../../specs/protocol.md#sync-protocol);
/// the algorithm: [`specs/sync.md`](../../../specs/sync.md).
pub const SYNC_PROTOCOL: &str = "/agentnet/sync/1";

/// Kademlia protocol name of the agentnet DHT, where each agent's DID is a provider key.
///
/// Spec: [`specs/protocol.md#dht`](../../../specs/protocol.md#dht).
pub const KAD_PROTOCOL: &str = "/agentnet/kad/1";

/// The identify protocol version string that agentnet nodes announce.
///
/// Spec: [`specs/protocol.md#identify`](../../../specs/protocol.md#identify).
pub const IDENTIFY_PROTOCOL_VERSION: &str = "/agentnet/1";

/// Gossipsub topic for agent cards and tombstones.
///
/// Spec: [`specs/protocol.md#gossip-topics`](../../../specs/protocol.md#gossip-topics).
pub const REGISTRY_TOPIC: &str = "agentnet/registry/1";

/// Gossipsub topic for trust attestations.
///
/// Spec: [`specs/protocol.md#gossip-topics`](../../../specs/protocol.md#gossip-topics).
pub const ATTESTATION_TOPIC: &str = "agentnet/attestations/1";

/// Gossipsub topic for pause notices.
///
/// Spec: [`specs/protocol.md#gossip-topics`](../../../specs/protocol.md#gossip-topics);
/// which notices a node obeys: [`specs/intents.md#pause-notices`](../../../specs/intents.md#pause-notices).
pub const PAUSE_TOPIC: &str = "agentnet/pauses/1";

/// The message kinds a gossip topic admits; empty for a topic agentnet does not use.
///
/// Spec: [`specs/protocol.md#gossip-topics`](../../../specs/protocol.md#gossip-topics).
pub fn topic_kinds(topic: &str) -> &'static [crate::Kind] {
    use crate::Kind;
    match topic {
        REGISTRY_TOPIC => &[Kind::AgentCard, Kind::Tombstone],
        ATTESTATION_TOPIC => &[Kind::TrustAttestation],
        PAUSE_TOPIC => &[Kind::PauseNotice],
        _ => &[],
    }
}
