//! The running node: one task owns the libp2p `Swarm`; a cloneable [`NodeHandle`] drives it
//! with commands that carry their own reply channel.
//!
//! This slice carries the registry over gossipsub: a card or tombstone, from a local agent
//! or from the network, is verified (signature, kind, `seq`, expiry, limits) before it is
//! stored, indexed or forwarded; a forged or malformed message is rejected in gossipsub
//! validation, so that the sending peer's score drops.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use agentnet_discovery::{CapabilityIndex, Page, SearchError, SearchQuery};
use agentnet_protocol::ids::{
    IDENTIFY_PROTOCOL_VERSION, KAD_PROTOCOL, REGISTRY_TOPIC, SYNC_PROTOCOL,
};
use agentnet_protocol::limits::{MAX_SYNC_FETCH_KEYS, MAX_SYNC_MESSAGE_LEN};
use agentnet_protocol::{
    AgentCard, Did, Keypair, Kind, SignedEnvelope, SyncTable, Timestamp, Tombstone,
    ValidationContext,
};
use agentnet_protocol::{SyncRange, SyncRequest, SyncResponse};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, connection_limits, identify, kad, ping,
    request_response,
};
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use crate::store::{PutOutcome, RedbStore, Store, StoreError, StoredRecord};

/// Commands queued to the swarm task; more wait in the caller.
const COMMAND_QUEUE: usize = 64;
/// The store's file name inside the data directory.
pub const STORE_FILE: &str = "node.redb";
/// The most DIDs this node announces as provider records (its own agents).
const MAX_PROVIDED_KEYS: usize = 100_000;
/// Host lookups in flight at once.
const MAX_HOST_QUERIES: usize = 256;
/// Concurrent sync streams per connection.
const SYNC_STREAMS: usize = 8;
/// The largest gossip message (the largest envelope the protocol allows, with room).
const MAX_GOSSIP_MESSAGE: usize = 256 * 1024;

/// How a node is set up.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NodeConfig {
    /// Where the store lives.
    pub data_dir: PathBuf,
    /// Addresses to listen on. Default: TCP and QUIC on 127.0.0.1, ports chosen by the OS.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start.
    pub bootstrap: Vec<Multiaddr>,
    /// The most established connections. Default 256.
    pub max_connections: u32,
    /// A connection with no stream open for this long is closed. Default 60 s.
    pub idle_timeout: Duration,
    /// Whether to take part in registry gossip. Default true; off, the node learns only
    /// by anti-entropy (used to test that sync alone converges).
    pub gossip: bool,
    /// How often to reconcile with a connected peer, besides on every new connection.
    /// Default 30 s.
    pub sync_interval: Duration,
}

impl NodeConfig {
    /// The defaults, storing in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            data_dir: data_dir.into(),
            listen: vec![
                "/ip4/127.0.0.1/tcp/0"
                    .parse()
                    .expect("a valid literal address"),
                "/ip4/127.0.0.1/udp/0/quic-v1"
                    .parse()
                    .expect("a valid literal address"),
            ],
            bootstrap: Vec::new(),
            max_connections: 256,
            idle_timeout: Duration::from_secs(60),
            gossip: true,
            sync_interval: Duration::from_secs(30),
        }
    }
}

/// Why the node failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The network could not be set up.
    #[error("network: {0}")]
    Network(String),
    /// A message was refused.
    #[error("refused: {0}")]
    Refused(String),
    /// The search was refused.
    #[error(transparent)]
    Search(#[from] SearchError),
    /// The node has shut down.
    #[error("the node has shut down")]
    Stopped,
}

/// The entry point: `Node::builder(config).spawn().await`.
#[derive(Debug)]
pub struct Node;

impl Node {
    /// A builder for a node with `config`.
    pub fn builder(config: NodeConfig) -> NodeBuilder {
        NodeBuilder { config }
    }
}

/// Builds and starts a node.
#[derive(Debug)]
pub struct NodeBuilder {
    config: NodeConfig,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    gossipsub: gossipsub::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    sync: request_response::Behaviour<SyncCodec>,
}

/// Raw bytes on `/agentnet/sync/1`: the peer closes its side after writing, so a message
/// is everything up to end of stream, at most [`MAX_SYNC_MESSAGE_LEN`] bytes.
#[derive(Clone, Copy, Debug, Default)]
struct SyncCodec;

async fn read_bounded<T: futures::AsyncRead + Unpin + Send>(
    io: &mut T,
) -> std::io::Result<Vec<u8>> {
    use futures::AsyncReadExt;
    let mut buf = Vec::new();
    io.take(MAX_SYNC_MESSAGE_LEN as u64 + 1)
        .read_to_end(&mut buf)
        .await?;
    if buf.len() > MAX_SYNC_MESSAGE_LEN {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "sync message larger than MAX_SYNC_MESSAGE_LEN",
        ));
    }
    Ok(buf)
}

async fn write_all<T: futures::AsyncWrite + Unpin + Send>(
    io: &mut T,
    bytes: Vec<u8>,
) -> std::io::Result<()> {
    use futures::AsyncWriteExt;
    io.write_all(&bytes).await?;
    io.close().await
}

impl request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        read_bounded(io).await
    }

    async fn read_response<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        read_bounded(io).await
    }

    async fn write_request<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> std::io::Result<()> {
        write_all(io, req).await
    }

    async fn write_response<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> std::io::Result<()> {
        write_all(io, res).await
    }
}

/// State shared by the swarm task and every handle.
struct Shared {
    peer_id: PeerId,
    store: Arc<dyn Store>,
    index: RwLock<CapabilityIndex>,
}

enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Dial(Multiaddr, oneshot::Sender<Result<(), NodeError>>),
    Publish(Vec<u8>, oneshot::Sender<Result<(), NodeError>>),
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
    GossipPeers(oneshot::Sender<usize>),
    FindHosts(Did, oneshot::Sender<Result<Vec<PeerId>, NodeError>>),
    Shutdown(oneshot::Sender<()>),
}

/// Drives a running node; clone it freely.
#[derive(Clone)]
pub struct NodeHandle {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("peer_id", &self.shared.peer_id)
            .finish_non_exhaustive()
    }
}

impl NodeBuilder {
    /// Opens the store, starts the swarm task, and returns its handle.
    pub async fn spawn(self) -> Result<NodeHandle, NodeError> {
        let config = self.config;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            NodeError::Store(StoreError::Io {
                path: config.data_dir.clone(),
                reason: e.to_string(),
            })
        })?;
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(&config.data_dir.join(STORE_FILE))?);
        let keypair = node_key(store.as_ref())?;
        let peer_id = keypair.peer_id();

        // The registry comes back from the store: a restarted node keeps what it knew.
        let mut index = CapabilityIndex::default();
        // The agents this node hosts, to announce as provider records.
        let mut hosted = Vec::new();
        let mut lower = Vec::new();
        loop {
            let batch = store.records(SyncTable::Registry, &lower, &[], 1024)?;
            let Some(last) = batch.last() else { break };
            lower = last.key.clone();
            lower.push(0);
            for record in &batch {
                if let Ok(env) =
                    SignedEnvelope::from_bytes_of_kind(&record.envelope, Kind::AgentCard)
                    && let Ok(card) = env.open_untimed::<AgentCard>()
                {
                    // A card that no longer indexes is skipped, not fatal.
                    let _ = index.upsert(&card);
                    if card.host == peer_id {
                        hosted.push(card.did);
                    }
                }
            }
        }

        let mut swarm = build_swarm(&keypair, &config)?;
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NodeError::Network(format!("cannot listen on {addr}: {e}")))?;
        }
        for addr in &config.bootstrap {
            swarm
                .dial(addr.clone())
                .map_err(|e| NodeError::Network(format!("cannot dial {addr}: {e}")))?;
        }
        let shared = Arc::new(Shared {
            peer_id,
            store,
            index: RwLock::new(index),
        });
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        tokio::spawn(run(
            swarm,
            rx,
            shared.clone(),
            config.gossip,
            config.sync_interval,
            hosted,
        ));
        Ok(NodeHandle {
            commands: tx,
            shared,
        })
    }
}

fn node_key(store: &dyn Store) -> Result<Keypair, NodeError> {
    if let Some(seed) = store.get_meta("node_key")? {
        let seed: [u8; 32] = seed.as_slice().try_into().map_err(|_| {
            NodeError::Store(StoreError::Corrupt {
                path: PathBuf::from(STORE_FILE),
                reason: "the node key is not 32 bytes".into(),
            })
        })?;
        return Ok(Keypair::from_seed(&seed));
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut seed[..])
        .map_err(|e| NodeError::Network(format!("no randomness for a node key: {e}")))?;
    store.put_meta("node_key", &seed[..])?;
    Ok(Keypair::from_seed(&seed))
}

fn build_swarm(keypair: &Keypair, config: &NodeConfig) -> Result<Swarm<Behaviour>, NodeError> {
    let net = |e: &dyn std::fmt::Display| NodeError::Network(e.to_string());
    let gossip_config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(MAX_GOSSIP_MESSAGE)
        .heartbeat_interval(Duration::from_millis(500))
        .build()
        .map_err(|e| net(&e))?;
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(config.max_connections))
        .with_max_pending_incoming(Some(config.max_connections / 4 + 1))
        .with_max_established_per_peer(Some(2));
    let idle = config.idle_timeout;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair.to_libp2p())
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .map_err(|e| net(&e))?
        .with_quic()
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossip_config,
            )?;
            let mut kad = kad::Behaviour::with_config(
                peer_id,
                kad::store::MemoryStore::with_config(
                    peer_id,
                    kad::store::MemoryStoreConfig {
                        max_provided_keys: MAX_PROVIDED_KEYS,
                        ..Default::default()
                    },
                ),
                kad::Config::new(StreamProtocol::new(KAD_PROTOCOL)),
            );
            // Loopback and LAN addresses are never confirmed as external, so ask for server
            // mode outright (see ../shared/pitfalls.md).
            kad.set_mode(Some(kad::Mode::Server));
            Ok(Behaviour {
                limits: connection_limits::Behaviour::new(limits),
                gossipsub,
                identify: identify::Behaviour::new(identify::Config::new(
                    IDENTIFY_PROTOCOL_VERSION.to_owned(),
                    key.public(),
                )),
                ping: ping::Behaviour::default(),
                kad,
                sync: request_response::Behaviour::with_codec(
                    SyncCodec,
                    [(
                        StreamProtocol::new(SYNC_PROTOCOL),
                        request_response::ProtocolSupport::Full,
                    )],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(10))
                        .with_max_concurrent_streams(SYNC_STREAMS),
                ),
            })
        })
        .map_err(|e| net(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    if config.gossip {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&IdentTopic::new(REGISTRY_TOPIC))
            .map_err(|e| net(&e))?;
    }
    Ok(swarm)
}

/// What ingesting a registry message did.
#[derive(Debug, PartialEq, Eq)]
enum Ingested {
    /// New: stored and indexed; forward it.
    Applied(Change),
    /// Already known, or older than what the store holds.
    Stale,
}

/// The registry change an applied message made.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    /// A card, and whether this node is its host.
    Card { did: Did, hosted_here: bool },
    /// A tombstone.
    Removed(Did),
}

impl Shared {
    /// Verifies a card or tombstone, then stores and indexes it.
    fn ingest_registry(&self, bytes: &[u8], now: Timestamp) -> Result<Ingested, NodeError> {
        let refused = |e: &dyn std::fmt::Display| NodeError::Refused(e.to_string());
        let envelope = SignedEnvelope::from_bytes(bytes).map_err(|e| refused(&e))?;
        let ctx = ValidationContext::at(now);
        let mut hash = [0u8; agentnet_protocol::SYNC_HASH_LEN];
        hash.copy_from_slice(&envelope.content_id().0[..agentnet_protocol::SYNC_HASH_LEN]);
        match envelope.kind() {
            Kind::AgentCard => {
                let card: AgentCard = envelope.open(&ctx).map_err(|e| refused(&e))?;
                let record = StoredRecord {
                    key: card.did.as_str().as_bytes().to_vec(),
                    version: card.seq,
                    hash,
                    envelope: bytes.to_vec(),
                };
                // Index first: a card the index refuses is not stored either.
                let mut index = self.index.write().map_err(|_| NodeError::Stopped)?;
                if self
                    .store
                    .get_record(SyncTable::Registry, &record.key)?
                    .is_some_and(|old| (old.version, old.hash) >= (record.version, record.hash))
                {
                    return Ok(Ingested::Stale);
                }
                index.upsert(&card)?;
                match self.store.put_record(SyncTable::Registry, &record)? {
                    PutOutcome::Stale => Ok(Ingested::Stale),
                    PutOutcome::Inserted | PutOutcome::Replaced => {
                        Ok(Ingested::Applied(Change::Card {
                            hosted_here: card.host == self.peer_id,
                            did: card.did,
                        }))
                    }
                }
            }
            Kind::Tombstone => {
                let tombstone: Tombstone = envelope.open(&ctx).map_err(|e| refused(&e))?;
                let record = StoredRecord {
                    key: tombstone.did.as_str().as_bytes().to_vec(),
                    version: tombstone.seq,
                    hash,
                    envelope: bytes.to_vec(),
                };
                let mut index = self.index.write().map_err(|_| NodeError::Stopped)?;
                match self.store.put_record(SyncTable::Registry, &record)? {
                    PutOutcome::Stale => Ok(Ingested::Stale),
                    PutOutcome::Inserted | PutOutcome::Replaced => {
                        index.remove(&tombstone.did);
                        Ok(Ingested::Applied(Change::Removed(tombstone.did)))
                    }
                }
            }
            other => Err(NodeError::Refused(format!(
                "a {other:?} does not belong on the registry topic"
            ))),
        }
    }
}

/// Announces the DID of an agent this node hosts as a Kademlia provider record.
fn provide(swarm: &mut Swarm<Behaviour>, did: &Did) {
    let key = kad::RecordKey::new(&did.as_str());
    if let Err(e) = swarm.behaviour_mut().kad.start_providing(key) {
        tracing::warn!(error = %e, "cannot announce an agent");
    }
}

/// Announces or withdraws a provider record after a local card or tombstone was applied.
fn announce(swarm: &mut Swarm<Behaviour>, change: &Change) {
    match change {
        Change::Card {
            did,
            hosted_here: true,
        } => provide(swarm, did),
        Change::Card { .. } => {}
        Change::Removed(did) => swarm
            .behaviour_mut()
            .kad
            .stop_providing(&kad::RecordKey::new(&did.as_str())),
    }
}

/// Sends the next reconcile request of a sync with `peer`, if ranges are pending.
fn send_pending(swarm: &mut Swarm<Behaviour>, peer: PeerId, pending: &mut VecDeque<SyncRange>) {
    if pending.is_empty() {
        return;
    }
    let take = pending.len().min(crate::sync::REQUEST_RANGES);
    let request = SyncRequest::Reconcile {
        table: SyncTable::Registry,
        ranges: pending.drain(..take).collect(),
    };
    swarm
        .behaviour_mut()
        .sync
        .send_request(&peer, request.to_bytes());
}

/// Opens a sync of the registry with `peer`.
fn start_sync(swarm: &mut Swarm<Behaviour>, shared: &Shared, peer: PeerId) {
    match crate::sync::opening(shared.store.as_ref(), SyncTable::Registry) {
        Ok(request) => {
            swarm
                .behaviour_mut()
                .sync
                .send_request(&peer, request.to_bytes());
        }
        Err(e) => tracing::warn!(error = %e, "cannot start a sync"),
    }
}

/// Handles a sync request or response from `peer`.
fn on_sync(
    swarm: &mut Swarm<Behaviour>,
    shared: &Shared,
    peer: PeerId,
    message: request_response::Message<Vec<u8>, Vec<u8>>,
    pending: &mut HashMap<PeerId, VecDeque<SyncRange>>,
) {
    match message {
        request_response::Message::Request {
            request, channel, ..
        } => {
            let response = SyncRequest::from_bytes(&request)
                .map_err(|e| e.to_string())
                .and_then(|r| {
                    crate::sync::respond(shared.store.as_ref(), r).map_err(|e| e.to_string())
                });
            match response {
                Ok(response) => {
                    let _ = swarm
                        .behaviour_mut()
                        .sync
                        .send_response(channel, response.to_bytes());
                }
                Err(reason) => tracing::debug!(%peer, %reason, "refused a sync request"),
            }
        }
        request_response::Message::Response { response, .. } => {
            match SyncResponse::from_bytes(&response) {
                Ok(SyncResponse::Reconcile { table, ranges }) => {
                    match crate::sync::plan(shared.store.as_ref(), table, &ranges) {
                        Ok((next, fetch)) => {
                            for keys in fetch.chunks(MAX_SYNC_FETCH_KEYS) {
                                let request = SyncRequest::Fetch {
                                    table,
                                    keys: keys.to_vec(),
                                };
                                swarm
                                    .behaviour_mut()
                                    .sync
                                    .send_request(&peer, request.to_bytes());
                            }
                            let queue = pending.entry(peer).or_default();
                            queue.extend(next);
                            // Bounded: a peer cannot make this node queue unbounded work.
                            queue.truncate(crate::sync::REQUEST_RANGES * 64);
                            send_pending(swarm, peer, queue);
                            if queue.is_empty() {
                                pending.remove(&peer);
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot plan a sync"),
                    }
                }
                Ok(SyncResponse::Records(envelopes)) => {
                    for envelope in envelopes {
                        if let Err(e) = shared.ingest_registry(&envelope, Timestamp::now()) {
                            tracing::debug!(%peer, error = %e, "refused a synced record");
                        }
                    }
                }
                Err(e) => tracing::debug!(%peer, error = %e, "malformed sync response"),
            }
        }
    }
}

/// Host lookups in flight: the reply and the providers found so far.
type HostQueries = HashMap<
    kad::QueryId,
    (
        oneshot::Sender<Result<Vec<PeerId>, NodeError>>,
        std::collections::HashSet<PeerId>,
    ),
>;

async fn run(
    mut swarm: Swarm<Behaviour>,
    mut commands: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    gossip: bool,
    sync_interval: Duration,
    hosted: Vec<Did>,
) {
    let topic = IdentTopic::new(REGISTRY_TOPIC);
    let mut pending = HashMap::new();
    let mut ticker = tokio::time::interval(sync_interval);
    ticker.tick().await;
    let mut round_robin = 0usize;
    let mut host_queries: HostQueries = HashMap::new();
    for did in hosted.iter().take(MAX_PROVIDED_KEYS) {
        provide(&mut swarm, did);
    }
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let peers: Vec<PeerId> = swarm.connected_peers().copied().collect();
                if !peers.is_empty() {
                    round_robin = round_robin.wrapping_add(1);
                    let peer = peers[round_robin % peers.len()];
                    start_sync(&mut swarm, &shared, peer);
                }
            }
            event = swarm.select_next_some() => {
                if let SwarmEvent::ConnectionEstablished { peer_id, num_established, .. } = &event
                    && num_established.get() == 1
                {
                    start_sync(&mut swarm, &shared, *peer_id);
                }
                match &event {
                    SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                        for addr in info.listen_addrs.iter().take(16) {
                            swarm.behaviour_mut().kad.add_address(peer_id, addr.clone());
                        }
                    }
                    SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                        id,
                        result: kad::QueryResult::GetProviders(result),
                        step,
                        ..
                    })) => {
                        let done = match result {
                            Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => {
                                if let Some((_, found)) = host_queries.get_mut(id) {
                                    found.extend(providers.iter().copied().take(64));
                                }
                                step.last
                            }
                            _ => true,
                        };
                        if done && let Some((reply, found)) = host_queries.remove(id) {
                            let _ = reply.send(Ok(found.into_iter().collect()));
                        }
                    }
                    _ => {}
                }
                if let SwarmEvent::Behaviour(BehaviourEvent::Sync(
                    request_response::Event::Message { peer, message, .. },
                )) = event
                {
                    on_sync(&mut swarm, &shared, peer, message, &mut pending);
                    continue;
                }
                if let SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                    propagation_source,
                    message_id,
                    message,
                })) = event
                {
                    let acceptance = if message.topic != topic.hash() {
                        MessageAcceptance::Reject
                    } else {
                        match shared.ingest_registry(&message.data, Timestamp::now()) {
                            Ok(Ingested::Applied(_)) => MessageAcceptance::Accept,
                            Ok(Ingested::Stale) => MessageAcceptance::Ignore,
                            Err(NodeError::Refused(reason)) => {
                                tracing::debug!(%propagation_source, %reason, "rejected a registry message");
                                MessageAcceptance::Reject
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "could not apply a registry message");
                                MessageAcceptance::Ignore
                            }
                        }
                    };
                    swarm.behaviour_mut().gossipsub.report_message_validation_result(
                        &message_id,
                        &propagation_source,
                        acceptance,
                    );
                }
            }
            command = commands.recv() => {
                let Some(command) = command else { return };
                match command {
                    Command::ListenAddrs(reply) => {
                        let _ = reply.send(swarm.listeners().cloned().collect());
                    }
                    Command::Dial(addr, reply) => {
                        let result = swarm
                            .dial(addr.clone())
                            .map_err(|e| NodeError::Network(format!("cannot dial {addr}: {e}")));
                        let _ = reply.send(result);
                    }
                    Command::Publish(bytes, reply) => {
                        let result = match shared.ingest_registry(&bytes, Timestamp::now()) {
                            Ok(applied) => {
                                if let Ingested::Applied(change) = &applied {
                                    announce(&mut swarm, change);
                                }
                                // No subscribed peer yet is not an error: the record is
                                // stored, and anti-entropy delivers it later.
                                if gossip
                                    && let Err(e) = swarm.behaviour_mut().gossipsub.publish(topic.clone(), bytes)
                                {
                                    tracing::debug!(error = %e, "gossip publish");
                                }
                                Ok(())
                            }
                            Err(e) => Err(e),
                        };
                        let _ = reply.send(result);
                    }
                    Command::FindHosts(did, reply) => {
                        if host_queries.len() >= MAX_HOST_QUERIES {
                            let _ = reply.send(Err(NodeError::Network("too many host lookups in flight".into())));
                        } else {
                            let key = kad::RecordKey::new(&did.as_str());
                            let id = swarm.behaviour_mut().kad.get_providers(key);
                            host_queries.insert(id, (reply, std::collections::HashSet::new()));
                        }
                    }
                    Command::ConnectedPeers(reply) => {
                        let _ = reply.send(swarm.connected_peers().copied().collect());
                    }
                    Command::GossipPeers(reply) => {
                        let hash = topic.hash();
                        let n = swarm
                            .behaviour()
                            .gossipsub
                            .all_peers()
                            .filter(|(_, topics)| topics.contains(&&hash))
                            .count();
                        let _ = reply.send(n);
                    }
                    Command::Shutdown(reply) => {
                        let _ = reply.send(());
                        return;
                    }
                }
            }
        }
    }
}

impl NodeHandle {
    /// The node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.shared.peer_id
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// The addresses the node listens on.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NodeError> {
        self.ask(Command::ListenAddrs).await
    }

    /// Dials a peer.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NodeError> {
        self.ask(|tx| Command::Dial(addr, tx)).await?
    }

    /// Connected peers.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, NodeError> {
        self.ask(Command::ConnectedPeers).await
    }

    /// How many peers are subscribed to the registry topic.
    pub async fn registry_peers(&self) -> Result<usize, NodeError> {
        self.ask(Command::GossipPeers).await
    }

    /// The nodes that announce hosting `did` (Kademlia provider records), so that an
    /// agent's host can be found before its card arrives.
    pub async fn find_hosts(&self, did: &Did) -> Result<Vec<PeerId>, NodeError> {
        let did = did.clone();
        self.ask(|tx| Command::FindHosts(did, tx)).await?
    }

    /// Verifies, stores, indexes and gossips a signed card or tombstone.
    pub async fn publish(&self, envelope: &SignedEnvelope) -> Result<(), NodeError> {
        let bytes = envelope.to_bytes();
        self.ask(|tx| Command::Publish(bytes, tx)).await?
    }

    /// Searches the node's capability index (trust is neutral until the trust engine is
    /// wired in).
    pub fn search(&self, query: &SearchQuery) -> Result<Page, NodeError> {
        let index = self.shared.index.read().map_err(|_| NodeError::Stopped)?;
        let neutral = |_: &Did, _: &str| 0.5;
        Ok(index.search(query, &neutral, Timestamp::now())?)
    }

    /// Capabilities indexed.
    pub fn capabilities(&self) -> usize {
        self.shared.index.read().map(|i| i.len()).unwrap_or(0)
    }

    /// Stops the swarm task.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.ask(Command::Shutdown).await
    }
}
