//! The running node: one task owns the libp2p `Swarm`; a cloneable [`NodeHandle`] drives it
//! with commands that carry their own reply channel.
//!
//! Every replicated record (card, tombstone, pause notice, attestation), from a local agent
//! or from the network, is verified (signature, kind, `seq`, expiry, limits) before it is
//! stored, applied or forwarded; a forged or malformed message is rejected in gossipsub
//! validation and penalised, so the sending peer's score drops. Intents travel on
//! `/agentnet/intent/1` (`specs/intents.md`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use agentnet_discovery::{
    CapabilityIndex, Embedder, IndexConfig, LexicalConfig, LexicalEmbedder, SearchError,
};
use agentnet_protocol::ids::{
    ATTESTATION_TOPIC, IDENTIFY_PROTOCOL_VERSION, INTENT_PROTOCOL, KAD_PROTOCOL, PAUSE_TOPIC,
    REGISTRY_TOPIC, SYNC_PROTOCOL,
};
use agentnet_protocol::limits::{
    MAX_ENVELOPE_OVERHEAD, MAX_INTENT_LEN, MAX_INTENT_RESPONSE_LEN, MAX_INTENT_TTL,
    MAX_SYNC_MESSAGE_LEN, MAX_SYNC_RECORDS,
};
use agentnet_protocol::{
    AgentCard, Did, Keypair, Kind, SignedEnvelope, SyncRange, SyncRequest, SyncResponse, SyncTable,
    Timestamp,
};
use agentnet_trust::{PeerScores, Penalty, TrustConfig, TrustEngine};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, TopicHash};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, allow_block_list, connection_limits, identify, kad,
    mdns, ping, request_response,
};
use tokio::sync::{Semaphore, mpsc, oneshot};
use zeroize::Zeroizing;

use crate::codec::BytesCodec;
use crate::handle::NodeHandle;
use crate::intent::{
    BudgetGate, HttpBudgetGate, IntentLimits, PauseState, RateLimiter, ReplayCache,
};
use crate::peers::Peers;
use crate::shared::{Change, Ingested, Metrics, Origin, Refusal, Shared, lock};
use crate::store::{RedbStore, Store, StoreError};

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
/// Concurrent intent streams per connection.
const INTENT_STREAMS: usize = 256;
/// How often hosted agents' cards are checked for renewal.
const CARD_RENEWAL_CHECK: Duration = Duration::from_secs(60 * 60);
/// Outbound intent requests awaiting an answer at once.
const MAX_PENDING_INTENTS: usize = 4096;
/// The largest gossip message (the largest envelope the protocol allows, with room).
const MAX_GOSSIP_MESSAGE: usize = 256 * 1024;
/// Peers with a penalty score at once.
const MAX_SCORED_PEERS: usize = 10_000;
/// Peers one block or unblock command names at most.
pub const MAX_BLOCKED_PER_COMMAND: usize = 4096;
/// How fast penalties are forgiven.
const PENALTY_HALF_LIFE: Duration = Duration::from_secs(10 * 60);

/// [`NodeConfig::target_peers`] by default.
pub const DEFAULT_TARGET_PEERS: usize = 128;
/// How often the node prunes its connections down to [`NodeConfig::target_peers`].
const PRUNE_INTERVAL: Duration = Duration::from_secs(1);

/// The node's gateway: where it asks for budget before sending an intent.
#[derive(Clone)]
pub struct GatewayConfig {
    /// The gateway's base URL, such as `http://127.0.0.1:8080`.
    pub url: String,
    /// The node's API key at the gateway (`agn_<id>_<secret>`).
    pub api_key: String,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("url", &self.url)
            .field("api_key", &"<redacted>")
            .finish()
    }
}

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
    /// The connections the node keeps: above this many, it closes the least recently used
    /// that nothing needs (`specs/sync.md#connections`). Default 128.
    pub target_peers: usize,
    /// A connection with no stream open for this long is closed. Default 60 s.
    pub idle_timeout: Duration,
    /// Whether to take part in gossip. Default true; off, the node learns only by
    /// anti-entropy (used to test that sync alone converges).
    pub gossip: bool,
    /// How often to reconcile with a connected peer, besides on every new connection.
    /// Default 30 s.
    pub sync_interval: Duration,
    /// Find peers on the LAN with mDNS. Default off.
    pub mdns: bool,
    /// Rate limits and bounds on intents.
    pub intents: IntentLimits,
    /// Issuers (gateways) whose pause notices this node obeys for any agent. Others are
    /// obeyed only for agents whose cards carry a credential they issued.
    pub pause_issuers: Vec<Did>,
    /// The gateway to ask for budget before sending intents. When set and unreachable, the
    /// node sends nothing (fails closed).
    pub gateway: Option<GatewayConfig>,
    /// A directory holding all-MiniLM-L6-v2 (`scripts/fetch-minilm.sh`). Without it, or in a
    /// build without the `minilm` feature, the node says so and uses the lexical embedder.
    pub minilm_dir: Option<PathBuf>,
    /// The share (0 to 1) of inbound gossip messages this node drops unread, as if lost on
    /// the way: fault injection for testnets. Default 0. A dropped message is neither
    /// applied nor forwarded; anti-entropy delivers its record later.
    pub gossip_loss: f64,
    /// The seed of the choice of which messages [`NodeConfig::gossip_loss`] drops.
    pub fault_seed: u64,
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
            target_peers: DEFAULT_TARGET_PEERS,
            idle_timeout: Duration::from_secs(60),
            gossip: true,
            sync_interval: Duration::from_secs(30),
            mdns: false,
            intents: IntentLimits::default(),
            pause_issuers: Vec::new(),
            gateway: None,
            minilm_dir: None,
            gossip_loss: 0.0,
            fault_seed: 0,
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
    /// The request was invalid.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The agent is not known (not hosted here, or no card and no host found).
    #[error("unknown agent: {0}")]
    UnknownAgent(String),
    /// The agent is paused by a gateway this node obeys.
    #[error("{0} is paused")]
    Paused(Did),
    /// The gateway refused or could not be asked for budget, so nothing was sent.
    #[error(transparent)]
    Budget(#[from] crate::intent::BudgetError),
    /// Too much is in flight.
    #[error("busy: {0}")]
    Busy(String),
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
        NodeBuilder {
            config,
            budget: None,
        }
    }
}

/// Builds and starts a node.
pub struct NodeBuilder {
    config: NodeConfig,
    budget: Option<Arc<dyn BudgetGate>>,
}

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("config", &self.config)
            .field("budget", &self.budget.is_some())
            .finish()
    }
}

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    limits: connection_limits::Behaviour,
    gossipsub: gossipsub::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    sync: request_response::Behaviour<BytesCodec>,
    intent: request_response::Behaviour<BytesCodec>,
    mdns: Toggle<mdns::tokio::Behaviour>,
}

/// What an intent request to a peer came to, as the swarm task reports it.
pub(crate) type IntentReply = Result<Vec<u8>, request_response::OutboundFailure>;

pub(crate) enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Dial(Multiaddr, oneshot::Sender<Result<(), NodeError>>),
    Publish(Vec<u8>, oneshot::Sender<Result<(), NodeError>>),
    /// Gossips bytes without checking them (the testnet's adversaries use this).
    PublishRaw(SyncTable, Vec<u8>, oneshot::Sender<Result<(), NodeError>>),
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
    GossipPeers(oneshot::Sender<usize>),
    GossipScore(PeerId, oneshot::Sender<Option<f64>>),
    FindHosts(Did, oneshot::Sender<Result<Vec<PeerId>, NodeError>>),
    SendIntent(PeerId, Vec<u8>, oneshot::Sender<IntentReply>),
    Disconnect(PeerId, oneshot::Sender<bool>),
    /// Blocks (true) or unblocks (false) peers: a blocked peer's connections are closed and
    /// refused both ways.
    Block(Vec<PeerId>, bool, oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

impl NodeBuilder {
    /// Asks `gate` for budget before each intent, instead of the gateway named in the
    /// config.
    pub fn budget_gate(mut self, gate: Arc<dyn BudgetGate>) -> Self {
        self.budget = Some(gate);
        self
    }

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
        // Refreshes run on a blocking thread (`refresh_when_due`), never inside an upsert on
        // the swarm task.
        let mut index_config = IndexConfig::default();
        index_config.refresh_inline = false;
        let mut index = CapabilityIndex::with_embedder(embedder(&config), index_config);
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

        let budget = match (self.budget, &config.gateway) {
            (Some(gate), _) => Some(gate),
            (None, Some(gateway)) => Some(Arc::new(HttpBudgetGate::new(
                gateway.url.clone(),
                gateway.api_key.clone(),
            )?) as Arc<dyn BudgetGate>),
            (None, None) => None,
        };
        let limits = config.intents;
        let shared = Arc::new(Shared {
            peer_id,
            store,
            index: RwLock::new(index),
            agents: RwLock::new(HashMap::new()),
            trust: Mutex::new(TrustEngine::new(TrustConfig::default(), &[])),
            pauses: Mutex::new(PauseState::default()),
            replay: Mutex::new(ReplayCache::new(
                limits.replay_capacity,
                limits.replay_per_peer,
            )),
            peer_limits: Mutex::new(RateLimiter::new(
                limits.per_minute,
                limits.burst,
                limits.tracked,
            )),
            agent_limits: Mutex::new(RateLimiter::new(
                limits.per_minute,
                limits.burst,
                limits.tracked,
            )),
            handlers: RwLock::new(HashMap::new()),
            inboxes: Mutex::new(HashMap::new()),
            awaiting: Mutex::new(HashMap::new()),
            penalties: Mutex::new(PeerScores::new(PENALTY_HALF_LIFE, MAX_SCORED_PEERS)),
            inbound: Arc::new(Semaphore::new(
                limits.in_flight.clamp(1, MAX_PENDING_INTENTS),
            )),
            outbound: Arc::new(Semaphore::new(
                limits.in_flight.clamp(1, MAX_PENDING_INTENTS),
            )),
            limits,
            pause_issuers: config.pause_issuers.clone(),
            budget,
            metrics: Metrics::default(),
        });
        shared.restore(Timestamp::now())?;
        let pruned = shared.prune_expired(Timestamp::now())?;
        if pruned > 0 {
            tracing::info!(pruned, "removed expired records");
        }
        hosted.retain(|did| crate::shared::read(&shared.agents).contains_key(did));

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
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let (responses_tx, responses_rx) = mpsc::channel(limits.in_flight.max(1));
        let mut peers = Peers::new(config.target_peers.min(config.max_connections as usize));
        for addr in &config.bootstrap {
            peers.dialling(addr);
        }
        tokio::spawn(run(
            swarm,
            Channels {
                commands: rx,
                responses_tx,
                responses: responses_rx,
            },
            shared.clone(),
            Setup {
                gossip: config.gossip,
                sync_interval: config.sync_interval,
                hosted,
                loss: Loss::new(config.gossip_loss, config.fault_seed),
                peers,
            },
        ));
        Ok(NodeHandle::new(tx, shared))
    }
}

/// The embedder the config asks for, falling back to lexical with a warning.
fn embedder(config: &NodeConfig) -> Box<dyn Embedder> {
    #[cfg(feature = "minilm")]
    if let Some(dir) = &config.minilm_dir {
        match agentnet_discovery::MinilmEmbedder::load(dir) {
            Ok(e) => return Box::new(e),
            Err(e) => tracing::warn!(error = %e, "cannot load MiniLM; using the lexical embedder"),
        }
    }
    #[cfg(not(feature = "minilm"))]
    if config.minilm_dir.is_some() {
        tracing::warn!(
            "this build has no `minilm` feature; using the lexical embedder (rebuild with \
             `--features minilm`)"
        );
    }
    Box::new(LexicalEmbedder::new(LexicalConfig::default()))
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

/// The gossip topic of each replicated table.
fn topic_of(table: SyncTable) -> IdentTopic {
    match table {
        SyncTable::Attestations => IdentTopic::new(ATTESTATION_TOPIC),
        SyncTable::Pauses => IdentTopic::new(PAUSE_TOPIC),
        _ => IdentTopic::new(REGISTRY_TOPIC),
    }
}

/// The replicated tables, in the order a sync walks them.
const TABLES: [SyncTable; 3] = [
    SyncTable::Registry,
    SyncTable::Pauses,
    SyncTable::Attestations,
];

fn build_swarm(keypair: &Keypair, config: &NodeConfig) -> Result<Swarm<Behaviour>, NodeError> {
    let net = |e: &dyn std::fmt::Display| NodeError::Network(e.to_string());
    let gossip_config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .message_id_fn(message_id)
        .validate_messages()
        .max_transmit_size(MAX_GOSSIP_MESSAGE)
        .heartbeat_interval(Duration::from_millis(500))
        .build()
        .map_err(|e| net(&e))?;
    // Peer scoring: the application-specific term is the node's own penalty score
    // (`agentnet_trust::PeerScores`), weight 1, so a forged signature (-100) alone passes
    // the graylist threshold (-80). Peers on one host are normal in testnets, so loopback is
    // exempt from the IP-colocation penalty.
    let mut score_params = gossipsub::PeerScoreParams {
        app_specific_weight: 1.0,
        ..Default::default()
    };
    score_params.ip_colocation_factor_whitelist.extend(
        ["127.0.0.1".parse::<std::net::IpAddr>(), "::1".parse()]
            .into_iter()
            .flatten(),
    );
    for table in TABLES {
        score_params.topics.insert(
            topic_of(table).hash(),
            gossipsub::TopicScoreParams::default(),
        );
    }
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(config.max_connections))
        .with_max_pending_incoming(Some(config.max_connections / 4 + 1))
        .with_max_established_per_peer(Some(2));
    let idle = config.idle_timeout;
    let want_mdns = config.mdns;
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
            let mut gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossip_config,
            )?;
            gossipsub.with_peer_score(score_params, gossipsub::PeerScoreThresholds::default())?;
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
            let mdns = if want_mdns {
                Some(mdns::tokio::Behaviour::new(
                    mdns::Config::default(),
                    peer_id,
                )?)
            } else {
                None
            };
            Ok(Behaviour {
                blocked: allow_block_list::Behaviour::default(),
                limits: connection_limits::Behaviour::new(limits),
                gossipsub,
                identify: identify::Behaviour::new(identify::Config::new(
                    IDENTIFY_PROTOCOL_VERSION.to_owned(),
                    key.public(),
                )),
                ping: ping::Behaviour::default(),
                kad,
                sync: request_response::Behaviour::with_codec(
                    BytesCodec::new(MAX_SYNC_MESSAGE_LEN, MAX_SYNC_MESSAGE_LEN),
                    [(
                        StreamProtocol::new(SYNC_PROTOCOL),
                        request_response::ProtocolSupport::Full,
                    )],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(10))
                        .with_max_concurrent_streams(SYNC_STREAMS),
                ),
                intent: request_response::Behaviour::with_codec(
                    BytesCodec::new(
                        MAX_INTENT_LEN + MAX_ENVELOPE_OVERHEAD,
                        MAX_INTENT_RESPONSE_LEN,
                    ),
                    [(
                        StreamProtocol::new(INTENT_PROTOCOL),
                        request_response::ProtocolSupport::Full,
                    )],
                    // The sender enforces each intent's own deadline; this only bounds a
                    // stream whose peer never answers.
                    request_response::Config::default()
                        .with_request_timeout(MAX_INTENT_TTL + Duration::from_secs(30))
                        .with_max_concurrent_streams(INTENT_STREAMS),
                ),
                mdns: Toggle::from(mdns),
            })
        })
        .map_err(|e| net(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    if config.gossip {
        for table in TABLES {
            swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&topic_of(table))
                .map_err(|e| net(&e))?;
        }
    }
    Ok(swarm)
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
        Change::Removed(did) => swarm
            .behaviour_mut()
            .kad
            .stop_providing(&kad::RecordKey::new(&did.as_str())),
        _ => {}
    }
}

/// Applies a penalty to `peer`: the node's own score, then gossipsub's application-specific
/// term; a banned peer is disconnected.
fn penalise(swarm: &mut Swarm<Behaviour>, shared: &Shared, peer: PeerId, penalty: Penalty) {
    let (score, banned) = shared.penalise(&peer, penalty);
    tracing::debug!(%peer, penalty = penalty.name, score, "penalised a peer");
    swarm
        .behaviour_mut()
        .gossipsub
        .set_application_score(&peer, score);
    if banned {
        tracing::info!(%peer, score, "disconnecting a peer whose score fell too low");
        let _ = swarm.disconnect_peer_id(peer);
    }
}

/// Pushes every connected peer's decayed penalty score into gossipsub, and disconnects
/// peers that are banned (including penalties given outside the swarm task).
fn refresh_scores(swarm: &mut Swarm<Behaviour>, shared: &Shared) {
    let now = Timestamp::now();
    let peers: Vec<PeerId> = swarm.connected_peers().copied().collect();
    for peer in peers {
        let (score, banned) = {
            let scores = lock(&shared.penalties);
            (scores.score(&peer, now), scores.is_banned(&peer, now))
        };
        swarm
            .behaviour_mut()
            .gossipsub
            .set_application_score(&peer, score);
        if banned {
            let _ = swarm.disconnect_peer_id(peer);
        }
    }
}

/// Pending reconcile ranges per (peer, table).
type Pending = HashMap<(PeerId, SyncTable), VecDeque<SyncRange>>;

/// Ranges waiting to be reconciled per (peer, table).
const PENDING_RANGES: usize = 512;

/// Opens a new sync of `table` with `peer` (after one whose ranges overflowed the queue).
fn restart_sync(
    swarm: &mut Swarm<Behaviour>,
    shared: &Shared,
    fetches: &mut Fetches,
    peer: PeerId,
    table: SyncTable,
) {
    open_sync(swarm, shared, fetches, table, &[peer]);
}

/// Fetch requests in flight to one peer at once. The records of an answer are verified,
/// stored and indexed before the next is read, so sending every fetch at once would leave
/// the last ones waiting past the request timeout.
const FETCHES_IN_FLIGHT: usize = 2;
/// Fetch requests queued per peer (each of at most `MAX_SYNC_RECORDS` keys).
const FETCH_QUEUE: usize = 256;

/// The keys of one fetch request, and their table.
type FetchKeys = (SyncTable, Vec<Vec<u8>>);

/// Record fetches of the syncs in progress: queued per peer, and in flight by request.
#[derive(Debug, Default)]
struct Fetches {
    queued: HashMap<PeerId, VecDeque<FetchKeys>>,
    in_flight: HashMap<request_response::OutboundRequestId, (PeerId, SyncTable, Vec<Vec<u8>>)>,
    /// Syncs whose ranges overflowed [`PENDING_RANGES`]: they start over once drained.
    overflowed: HashSet<(PeerId, SyncTable)>,
    /// Restarts per sync since the last tick: a peer that keeps answering with differences
    /// gets at most [`MAX_RESTARTS`] back-to-back syncs per `sync_interval`.
    restarts: HashMap<(PeerId, SyncTable), u32>,
    /// Tables that learnt records by sync since the last spread ([`SPREAD_INTERVAL`]).
    fresh: HashSet<SyncTable>,
    /// Every key queued or in flight, from any peer: a key that several peers offer at
    /// once (a joiner's or a healed node's syncs overlap) is fetched from one of them, not
    /// verified and applied once per peer.
    wanted: HashMap<SyncTable, HashSet<Vec<u8>>>,
    /// Records sync brought that this node gossips again.
    repairs: Repairs,
    /// Openings awaiting their answer, by request.
    openings: HashMap<request_response::OutboundRequestId, (PeerId, SyncTable)>,
}

/// The most records a node gossips again per second ([`Repairs`]); beyond that, sync alone
/// carries them.
const REPAIRS_PER_SECOND: usize = 256;

/// Gossiping again the records that sync brought but gossip should have
/// (`specs/sync.md#repair`): which ones is [`Peers::should_repair`]'s call, how many a
/// second is bounded here.
#[derive(Debug, Default)]
struct Repairs {
    /// Off on a node with gossip off.
    enabled: bool,
    /// The start of the current one-second window and the repairs sent in it.
    window: Option<Instant>,
    sent: usize,
}

impl Repairs {
    /// Takes one repair from this second's allowance.
    fn admit(&mut self, now: Instant) -> bool {
        if !self.enabled {
            return false;
        }
        match self.window {
            Some(start) if now.saturating_duration_since(start) < Duration::from_secs(1) => {}
            _ => {
                self.window = Some(now);
                self.sent = 0;
            }
        }
        if self.sent < REPAIRS_PER_SECOND {
            self.sent += 1;
            true
        } else {
            false
        }
    }
}

/// How often a node that learnt records by sync reconciles that table with its other
/// peers, so that what one peer brought reaches those it connects to without waiting for
/// the round-robin `sync_interval` (a healed partition, a restarted node).
const SPREAD_INTERVAL: Duration = Duration::from_millis(500);

/// Peers a spread reconciles with per table and tick, taken in turn: the syncs a spread
/// opens stay bounded whatever the node's degree, and two per tick still about double the
/// nodes that hold a record every tick.
const SPREAD_FANOUT: usize = 2;

/// Opens a sync of `table` with each of `peers`, computing the opening once.
fn open_sync(
    swarm: &mut Swarm<Behaviour>,
    shared: &Shared,
    fetches: &mut Fetches,
    table: SyncTable,
    peers: &[PeerId],
) {
    if peers.is_empty() {
        return;
    }
    match crate::sync::opening(shared.store.as_ref(), table) {
        Ok(request) => {
            let bytes = request.to_bytes();
            for peer in peers {
                let id = swarm.behaviour_mut().sync.send_request(peer, bytes.clone());
                fetches.openings.insert(id, (*peer, table));
                Metrics::bump(&shared.metrics.sync_requests);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot open a sync"),
    }
}

/// Back-to-back restarts of one sync per `sync_interval`; each reconciles at least
/// [`PENDING_RANGES`] ranges.
const MAX_RESTARTS: u32 = 64;

impl Fetches {
    /// Queues `keys` to fetch from `peer`, in requests an answer can hold in full.
    /// Keys already wanted from another peer are skipped.
    fn queue(&mut self, peer: PeerId, table: SyncTable, keys: Vec<Vec<u8>>) {
        let keys: Vec<Vec<u8>> = keys
            .into_iter()
            .filter(|k| !self.wanted.get(&table).is_some_and(|w| w.contains(k)))
            .collect();
        let queue = self.queued.entry(peer).or_default();
        for chunk in keys.chunks(MAX_SYNC_RECORDS) {
            if queue.len() >= FETCH_QUEUE {
                // The rest waits for the next sync round.
                break;
            }
            self.wanted
                .entry(table)
                .or_default()
                .extend(chunk.iter().cloned());
            queue.push_back((table, chunk.to_vec()));
        }
    }

    /// Takes the fetch `id` out of flight: its keys are no longer wanted from anyone (those
    /// still missing are queued again, or found by the next sync round).
    fn settle(
        &mut self,
        id: &request_response::OutboundRequestId,
    ) -> Option<(PeerId, SyncTable, Vec<Vec<u8>>)> {
        self.openings.remove(id);
        let fetched = self.in_flight.remove(id)?;
        unwant(&mut self.wanted, fetched.1, &fetched.2);
        Some(fetched)
    }

    /// Sends queued fetches to `peer` while fewer than [`FETCHES_IN_FLIGHT`] are out.
    fn pump(&mut self, swarm: &mut Swarm<Behaviour>, metrics: &Metrics, peer: PeerId) {
        let out = self.in_flight.values().filter(|(p, ..)| *p == peer).count();
        for _ in out..FETCHES_IN_FLIGHT {
            let Some((table, keys)) = self.queued.get_mut(&peer).and_then(|q| q.pop_front()) else {
                break;
            };
            let request = SyncRequest::Fetch {
                table,
                keys: keys.clone(),
            };
            let id = swarm
                .behaviour_mut()
                .sync
                .send_request(&peer, request.to_bytes());
            Metrics::bump(&metrics.sync_requests);
            self.in_flight.insert(id, (peer, table, keys));
        }
        if self.queued.get(&peer).is_some_and(|q| q.is_empty()) {
            self.queued.remove(&peer);
        }
    }

    fn forget(&mut self, peer: PeerId) {
        self.openings.retain(|_, (p, _)| *p != peer);
        let wanted = &mut self.wanted;
        for (table, keys) in self.queued.remove(&peer).into_iter().flatten() {
            unwant(wanted, table, &keys);
        }
        self.in_flight.retain(|_, (p, table, keys)| {
            if *p == peer {
                unwant(wanted, *table, keys);
            }
            *p != peer
        });
        self.overflowed.retain(|(p, _)| *p != peer);
        self.restarts.retain(|(p, _), _| *p != peer);
    }
}

/// Marks `keys` of `table` as no longer wanted from any peer ([`Fetches::wanted`]).
fn unwant(wanted: &mut HashMap<SyncTable, HashSet<Vec<u8>>>, table: SyncTable, keys: &[Vec<u8>]) {
    if let Some(w) = wanted.get_mut(&table) {
        for key in keys {
            w.remove(key);
        }
        if w.is_empty() {
            wanted.remove(&table);
        }
    }
}

/// Sends the next reconcile request of a sync with `peer`, if ranges are pending.
fn send_pending(
    swarm: &mut Swarm<Behaviour>,
    metrics: &Metrics,
    peer: PeerId,
    table: SyncTable,
    pending: &mut VecDeque<SyncRange>,
) {
    if pending.is_empty() {
        return;
    }
    let ranges = crate::sync::take_disjoint(pending);
    let request = SyncRequest::Reconcile { table, ranges };
    swarm
        .behaviour_mut()
        .sync
        .send_request(&peer, request.to_bytes());
    Metrics::bump(&metrics.sync_requests);
}

/// Closes the connections beyond [`NodeConfig::target_peers`] that nothing needs: not in
/// the gossip mesh, not mid-sync, with no intent awaiting an answer ([`Peers::to_prune`]).
fn prune(
    swarm: &mut Swarm<Behaviour>,
    peers: &Peers,
    pending: &Pending,
    fetches: &Fetches,
    intents: &HashMap<request_response::OutboundRequestId, (PeerId, oneshot::Sender<IntentReply>)>,
) {
    if swarm.network_info().num_peers() <= peers.target() {
        return;
    }
    let mut needed: HashSet<PeerId> = swarm
        .behaviour()
        .gossipsub
        .all_mesh_peers()
        .copied()
        .collect();
    needed.extend(pending.keys().map(|(peer, _)| *peer));
    needed.extend(fetches.queued.keys().copied());
    needed.extend(fetches.in_flight.values().map(|(peer, ..)| *peer));
    needed.extend(intents.values().map(|(peer, _)| *peer));
    for peer in peers.to_prune(Instant::now(), |p| needed.contains(p)) {
        tracing::debug!(%peer, "closing a connection nothing needs");
        let _ = swarm.disconnect_peer_id(peer);
    }
}

/// The peers this node is syncing some table with: an opening awaits its answer, ranges
/// are pending, or fetches are queued or in flight.
fn syncing_peers(pending: &Pending, fetches: &Fetches) -> usize {
    pending
        .keys()
        .map(|(peer, _)| peer)
        .chain(fetches.openings.values().map(|(peer, _)| peer))
        .chain(fetches.in_flight.values().map(|(peer, ..)| peer))
        .chain(fetches.queued.keys())
        .collect::<HashSet<_>>()
        .len()
}

/// Opens a sync of every replicated table with `peer`.
fn start_sync(swarm: &mut Swarm<Behaviour>, shared: &Shared, fetches: &mut Fetches, peer: PeerId) {
    for table in TABLES {
        open_sync(swarm, shared, fetches, table, &[peer]);
    }
}

/// Handles a sync request or response from `peer`.
fn on_sync(
    swarm: &mut Swarm<Behaviour>,
    shared: &Shared,
    peer: PeerId,
    message: request_response::Message<Vec<u8>, Vec<u8>>,
    pending: &mut Pending,
    fetches: &mut Fetches,
    peers: &mut Peers,
) {
    match message {
        request_response::Message::Request {
            request, channel, ..
        } => match SyncRequest::from_bytes(&request) {
            Ok(request) => {
                Metrics::bump(&shared.metrics.sync_answered);
                let opened = crate::sync::opened(&request);
                match crate::sync::respond(shared.store.as_ref(), request) {
                    Ok(response) => {
                        let differs = matches!(&response, SyncResponse::Reconcile { ranges, .. } if !ranges.is_empty());
                        let _ = swarm
                            .behaviour_mut()
                            .sync
                            .send_response(channel, response.to_bytes());
                        // Sync pulls, so an initiator whose records differ may hold some
                        // this node lacks: reconcile back, unless already doing so.
                        if let Some(table) = opened
                            && differs
                            && !pending.contains_key(&(peer, table))
                            && !fetches.openings.values().any(|o| *o == (peer, table))
                            && peers.may_reverse(peer, table, Instant::now())
                        {
                            open_sync(swarm, shared, fetches, table, &[peer]);
                        }
                    }
                    Err(e) => tracing::warn!(%peer, error = %e, "cannot answer a sync request"),
                }
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "refused a sync request");
                penalise(swarm, shared, peer, agentnet_trust::PeerFault::penalty(&e));
            }
        },
        request_response::Message::Response {
            request_id,
            response,
        } => {
            let fetched = fetches.settle(&request_id);
            match SyncResponse::from_bytes(&response) {
                Ok(SyncResponse::Reconcile { table, ranges }) => {
                    match crate::sync::plan(shared.store.as_ref(), table, &ranges) {
                        Ok((next, fetch)) => {
                            fetches.queue(peer, table, fetch);
                            let queue = pending.entry((peer, table)).or_default();
                            queue.extend(next);
                            // Bounded: a peer cannot make this node queue unbounded work.
                            // What does not fit is not lost: once the queue drains, the sync
                            // starts over, and the ranges already reconciled then match.
                            if queue.len() > PENDING_RANGES {
                                queue.truncate(PENDING_RANGES);
                                fetches.overflowed.insert((peer, table));
                            }
                            send_pending(swarm, &shared.metrics, peer, table, queue);
                            if queue.is_empty() {
                                pending.remove(&(peer, table));
                                if fetches.overflowed.remove(&(peer, table)) {
                                    let n = fetches.restarts.entry((peer, table)).or_default();
                                    if *n < MAX_RESTARTS {
                                        *n += 1;
                                        restart_sync(swarm, shared, fetches, peer, table);
                                    }
                                }
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot plan a sync"),
                    }
                }
                Ok(SyncResponse::Records(envelopes)) => {
                    let returned = envelopes.len();
                    let mut applied = 0usize;
                    // Applied records that were not gossiped again: spreading carries those.
                    let mut unrepaired = 0usize;
                    for envelope in envelopes {
                        let now = Timestamp::now();
                        match shared.ingest(&envelope, now, Origin::Network) {
                            Ok(Ingested::Applied(change, issued_at)) => {
                                applied += 1;
                                Metrics::bump(&shared.metrics.synced_records);
                                if let Change::Card {
                                    hosted_here: true, ..
                                } = &change
                                {
                                    announce(swarm, &change);
                                }
                                let repaired = peers.should_repair(issued_at, now)
                                    && fetches.repairs.admit(Instant::now())
                                    && repair(swarm, shared, change.table(), envelope);
                                if !repaired {
                                    unrepaired += 1;
                                }
                            }
                            Ok(Ingested::Stale) => {}
                            Err(Refusal::Fault(penalty, reason)) => {
                                tracing::debug!(%peer, %reason, "refused a synced record");
                                // A record can expire in the peer's store before it prunes
                                // it: that is no fault.
                                if penalty.name != agentnet_trust::EXPIRED.name {
                                    penalise(swarm, shared, peer, penalty);
                                }
                            }
                            Err(Refusal::Node(e)) => {
                                tracing::warn!(error = %e, "cannot apply a synced record");
                            }
                        }
                    }
                    // Records gossiped again reach this node's meshes by gossip; the others
                    // spread by sync (`specs/sync.md#when`).
                    if let Some((_, table, _)) = &fetched
                        && unrepaired > 0
                    {
                        fetches.fresh.insert(*table);
                    }
                    // An answer cut short by its size limits: fetch what it left out, as
                    // long as answers keep bringing something new.
                    if let Some((_, table, keys)) = fetched
                        && returned < keys.len()
                        && applied > 0
                    {
                        let missing: Vec<Vec<u8>> = keys
                            .into_iter()
                            .filter(|k| matches!(shared.store.get_record(table, k), Ok(None)))
                            .collect();
                        if !missing.is_empty() {
                            fetches.queue(peer, table, missing);
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "malformed sync response");
                    penalise(swarm, shared, peer, agentnet_trust::PeerFault::penalty(&e));
                }
            }
            fetches.pump(swarm, &shared.metrics, peer);
        }
    }
}

/// Gossips again a record that sync brought ([`Repairs`]). Message ids are content
/// addressed ([`message_id`]), so a peer that already saw the record on gossip drops the
/// copy before reading it, and however many nodes repair one record, each node handles
/// it once. Returns whether the node's meshes have it now.
fn repair(
    swarm: &mut Swarm<Behaviour>,
    shared: &Shared,
    table: SyncTable,
    envelope: Vec<u8>,
) -> bool {
    match swarm
        .behaviour_mut()
        .gossipsub
        .publish(topic_of(table), envelope)
    {
        Ok(_) => {
            Metrics::bump(&shared.metrics.gossip_repaired);
            true
        }
        // A duplicate: this node saw it on gossip after all, and so did its meshes.
        Err(gossipsub::PublishError::Duplicate) => true,
        // No peers: nobody to tell, so sync spreads it.
        Err(e) => {
            tracing::debug!(error = %e, "gossip repair");
            false
        }
    }
}

/// A gossip message's id: the first 20 bytes of the SHA-256 of its data (the encoded
/// envelope), whoever published it (`specs/protocol.md#gossip-topics`). With gossipsub's
/// default id (publisher and sequence number), a record gossiped again by another node
/// would be a new message to every node.
fn message_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(&message.data);
    gossipsub::MessageId::from(&digest[..20])
}

/// Host lookups in flight: the reply and the providers found so far.
type HostQueries = HashMap<
    kad::QueryId,
    (
        oneshot::Sender<Result<Vec<PeerId>, NodeError>>,
        HashSet<PeerId>,
    ),
>;

/// An answer to an inbound intent: the peer that sent it, its stream, and the bytes.
type IntentAnswer = (PeerId, request_response::ResponseChannel<Vec<u8>>, Vec<u8>);

/// The swarm task's channels.
struct Channels {
    commands: mpsc::Receiver<Command>,
    /// Answers to inbound intents, from the tasks that deliver them.
    responses_tx: mpsc::Sender<IntentAnswer>,
    responses: mpsc::Receiver<IntentAnswer>,
}

/// Handles a gossip message: which topic, then verify, store and apply.
fn on_gossip(
    swarm: &mut Swarm<Behaviour>,
    shared: &Shared,
    topics: &HashMap<TopicHash, SyncTable>,
    propagation_source: PeerId,
    message_id: gossipsub::MessageId,
    message: gossipsub::Message,
    loss: &mut Loss,
) {
    Metrics::bump(&shared.metrics.gossip_received);
    shared.metrics.gossip_bytes.fetch_add(
        message.data.len() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    if loss.drops() {
        Metrics::bump(&shared.metrics.gossip_dropped);
        swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(
                &message_id,
                &propagation_source,
                MessageAcceptance::Ignore,
            );
        return;
    }
    let acceptance = match topics.get(&message.topic) {
        None => {
            penalise(
                swarm,
                shared,
                propagation_source,
                agentnet_trust::WRONG_KIND,
            );
            MessageAcceptance::Reject
        }
        Some(table) => match shared.ingest(&message.data, Timestamp::now(), Origin::Network) {
            Ok(Ingested::Applied(change, _)) if change.table() == *table => {
                Metrics::bump(&shared.metrics.gossip_accepted);
                MessageAcceptance::Accept
            }
            Ok(Ingested::Applied(..)) => {
                // Valid, so applied, but sent on the wrong topic: not forwarded there.
                penalise(
                    swarm,
                    shared,
                    propagation_source,
                    agentnet_trust::WRONG_KIND,
                );
                MessageAcceptance::Reject
            }
            Ok(Ingested::Stale) => {
                Metrics::bump(&shared.metrics.gossip_ignored);
                MessageAcceptance::Ignore
            }
            Err(Refusal::Fault(penalty, reason)) => {
                Metrics::bump(&shared.metrics.gossip_rejected);
                tracing::debug!(%propagation_source, %reason, "rejected a gossip message");
                penalise(swarm, shared, propagation_source, penalty);
                MessageAcceptance::Reject
            }
            Err(Refusal::Node(e)) => {
                tracing::warn!(error = %e, "could not apply a gossip message");
                MessageAcceptance::Ignore
            }
        },
    };
    swarm
        .behaviour_mut()
        .gossipsub
        .report_message_validation_result(&message_id, &propagation_source, acceptance);
}

/// Verifies, stores and applies a local record, then gossips it.
fn publish(
    swarm: &mut Swarm<Behaviour>,
    shared: &Shared,
    gossip: bool,
    bytes: Vec<u8>,
) -> Result<(), NodeError> {
    match shared.ingest(&bytes, Timestamp::now(), Origin::Local) {
        Ok(Ingested::Applied(change, _)) => {
            announce(swarm, &change);
            // No subscribed peer yet is not an error: the record is stored, and
            // anti-entropy delivers it later.
            if gossip
                && let Err(e) = swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(topic_of(change.table()), bytes)
            {
                tracing::debug!(error = %e, "gossip publish");
            }
            Ok(())
        }
        Ok(Ingested::Stale) => Ok(()),
        Err(Refusal::Fault(_, reason)) => Err(NodeError::Refused(reason)),
        Err(Refusal::Node(e)) => Err(e),
    }
}

/// Handles an inbound intent request: admission on this task, delivery on its own.
/// Returns whether the intent was admitted (its answer comes later, through `responses`).
fn on_intent_request(
    swarm: &mut Swarm<Behaviour>,
    shared: &Arc<Shared>,
    peer: PeerId,
    request: Vec<u8>,
    channel: request_response::ResponseChannel<Vec<u8>>,
    responses: &mpsc::Sender<IntentAnswer>,
) -> bool {
    match shared.admit(Some(peer), &request, Timestamp::now()) {
        Ok(admitted) => {
            let shared = shared.clone();
            let responses = responses.clone();
            tokio::spawn(async move {
                let response = shared.deliver(admitted).await;
                let _ = responses.send((peer, channel, response)).await;
            });
            true
        }
        Err((rejection, penalty)) => {
            Metrics::bump(&shared.metrics.intents_rejected);
            tracing::debug!(%peer, code = ?rejection.code, message = %rejection.message, "rejected an intent");
            if let Some(penalty) = penalty {
                penalise(swarm, shared, peer, penalty);
            }
            let bytes = agentnet_protocol::IntentResponse::Rejected(rejection).to_bytes();
            let _ = swarm.behaviour_mut().intent.send_response(channel, bytes);
            false
        }
    }
}

/// What the swarm task starts with besides its swarm, channels and shared state.
struct Setup {
    gossip: bool,
    sync_interval: Duration,
    hosted: Vec<Did>,
    loss: Loss,
    peers: Peers,
}

async fn run(
    mut swarm: Swarm<Behaviour>,
    mut channels: Channels,
    shared: Arc<Shared>,
    setup: Setup,
) {
    let Setup {
        gossip,
        sync_interval,
        hosted,
        mut loss,
        mut peers,
    } = setup;
    let topics: HashMap<TopicHash, SyncTable> =
        TABLES.iter().map(|t| (topic_of(*t).hash(), *t)).collect();
    let mut pending: Pending = HashMap::new();
    let mut fetches = Fetches::default();
    fetches.repairs.enabled = gossip;
    let mut ticker = tokio::time::interval(sync_interval);
    ticker.tick().await;
    let mut round_robin = 0usize;
    let mut host_queries: HostQueries = HashMap::new();
    let mut renewals = tokio::time::interval(CARD_RENEWAL_CHECK);
    let mut flushes = tokio::time::interval(FLUSH_INTERVAL);
    flushes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut quiet = Quiet::default();
    let mut spread_turn = 0usize;
    let mut spreads = tokio::time::interval(SPREAD_INTERVAL);
    spreads.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut intents: HashMap<
        request_response::OutboundRequestId,
        (PeerId, oneshot::Sender<IntentReply>),
    > = HashMap::new();
    let mut prunes = tokio::time::interval(PRUNE_INTERVAL);
    prunes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for did in hosted.iter().take(MAX_PROVIDED_KEYS) {
        provide(&mut swarm, did);
    }
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                refresh_scores(&mut swarm, &shared);
                fetches.restarts.clear();
                let peers: Vec<PeerId> = swarm.connected_peers().copied().collect();
                if !peers.is_empty() {
                    round_robin = round_robin.wrapping_add(1);
                    let peer = peers[round_robin % peers.len()];
                    start_sync(&mut swarm, &shared, &mut fetches, peer);
                }
            }
            _ = flushes.tick() => {
                flush(&shared);
                refresh_when_due(&shared, &mut quiet);
                swap_in_finished_graph(&shared);
            }
            _ = spreads.tick(), if !fetches.fresh.is_empty() => {
                let tables: Vec<SyncTable> = fetches.fresh.drain().collect();
                for table in tables {
                    // Peers mid-sync of this table finish that one first; of the others, the
                    // next SPREAD_FANOUT in turn.
                    let peers: Vec<PeerId> = swarm
                        .connected_peers()
                        .filter(|p| !pending.contains_key(&(**p, table)))
                        .copied()
                        .collect();
                    let chosen: Vec<PeerId> = (0..peers.len().min(SPREAD_FANOUT))
                        .map(|k| peers[spread_turn.wrapping_add(k) % peers.len()])
                        .collect();
                    spread_turn = spread_turn.wrapping_add(SPREAD_FANOUT);
                    open_sync(&mut swarm, &shared, &mut fetches, table, &chosen);
                }
            }
            _ = prunes.tick() => prune(&mut swarm, &peers, &pending, &fetches, &intents),
            _ = renewals.tick() => {
                if let Err(e) = shared.prune_expired(Timestamp::now()) {
                    tracing::warn!(error = %e, "cannot prune expired records");
                }
                for bytes in shared.renewed_cards(Timestamp::now()) {
                    if let Err(e) = publish(&mut swarm, &shared, gossip, bytes) {
                        tracing::warn!(error = %e, "cannot publish a renewed card");
                    }
                }
            }
            Some((peer, channel, bytes)) = channels.responses.recv() => {
                peers.intent_answered(&peer, Instant::now());
                let _ = swarm.behaviour_mut().intent.send_response(channel, bytes);
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { peer_id, num_established, .. } => {
                    if shared.penalties_banned(&peer_id) {
                        let _ = swarm.disconnect_peer_id(peer_id);
                    } else if num_established.get() == 1
                        && peers.connected(peer_id, Instant::now(), syncing_peers(&pending, &fetches))
                    {
                        start_sync(&mut swarm, &shared, &mut fetches, peer_id);
                    }
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                    pending.retain(|(peer, _), _| *peer != peer_id);
                    fetches.forget(peer_id);
                    peers.disconnected(&peer_id);
                }
                SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                    for addr in info.listen_addrs.iter().take(16) {
                        swarm.behaviour_mut().kad.add_address(&peer_id, addr.clone());
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                    for (peer, addr) in found.into_iter().take(64) {
                        swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                        if !swarm.is_connected(&peer) {
                            let addr = addr.with_p2p(peer).unwrap_or_else(|addr| addr);
                            peers.dialling(&addr);
                            let _ = swarm.dial(addr);
                        }
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
                            if let Some((_, found)) = host_queries.get_mut(&id) {
                                found.extend(providers.iter().copied().take(64));
                            }
                            step.last
                        }
                        _ => true,
                    };
                    if done && let Some((reply, found)) = host_queries.remove(&id) {
                        let _ = reply.send(Ok(found.into_iter().collect()));
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
                    peer, message, ..
                })) => {
                    peers.used(&peer, Instant::now());
                    on_sync(&mut swarm, &shared, peer, message, &mut pending, &mut fetches, &mut peers);
                }
                SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::OutboundFailure {
                    peer, request_id, error, ..
                })) => {
                    // A fetch that failed is retried by the next sync round.
                    if fetches.settle(&request_id).is_some() {
                        tracing::debug!(%peer, %error, "a sync fetch failed");
                    }
                    fetches.pump(&mut swarm, &shared.metrics, peer);
                }
                SwarmEvent::Behaviour(BehaviourEvent::Intent(request_response::Event::Message {
                    peer, message, ..
                })) => match message {
                    request_response::Message::Request { request, channel, .. } => {
                        peers.used(&peer, Instant::now());
                        if on_intent_request(&mut swarm, &shared, peer, request, channel, &channels.responses_tx) {
                            peers.intent_received(&peer);
                        }
                    }
                    request_response::Message::Response { request_id, response } => {
                        peers.used(&peer, Instant::now());
                        if let Some((_, reply)) = intents.remove(&request_id) {
                            let _ = reply.send(Ok(response));
                        }
                    }
                },
                SwarmEvent::Behaviour(BehaviourEvent::Intent(request_response::Event::OutboundFailure {
                    request_id, error, ..
                })) => {
                    if let Some((_, reply)) = intents.remove(&request_id) {
                        let _ = reply.send(Err(error));
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Intent(request_response::Event::InboundFailure {
                    peer, error, ..
                })) => tracing::debug!(%peer, %error, "an inbound intent failed"),
                SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                    propagation_source,
                    message_id,
                    message,
                })) => on_gossip(&mut swarm, &shared, &topics, propagation_source, message_id, message, &mut loss),
                _ => {}
            },
            command = channels.commands.recv() => {
                let Some(command) = command else {
                    flush(&shared);
                    return;
                };
                match command {
                    Command::ListenAddrs(reply) => {
                        let _ = reply.send(swarm.listeners().cloned().collect());
                    }
                    Command::Dial(addr, reply) => {
                        peers.dialling(&addr);
                        let result = swarm
                            .dial(addr.clone())
                            .map_err(|e| NodeError::Network(format!("cannot dial {addr}: {e}")));
                        let _ = reply.send(result);
                    }
                    Command::Publish(bytes, reply) => {
                        let _ = reply.send(publish(&mut swarm, &shared, gossip, bytes));
                    }
                    Command::PublishRaw(table, bytes, reply) => {
                        let result = swarm
                            .behaviour_mut()
                            .gossipsub
                            .publish(topic_of(table), bytes)
                            .map(|_| ())
                            .map_err(|e| NodeError::Network(e.to_string()));
                        let _ = reply.send(result);
                    }
                    Command::FindHosts(did, reply) => {
                        if host_queries.len() >= MAX_HOST_QUERIES {
                            let _ = reply.send(Err(NodeError::Busy("too many host lookups in flight".into())));
                        } else {
                            let key = kad::RecordKey::new(&did.as_str());
                            let id = swarm.behaviour_mut().kad.get_providers(key);
                            host_queries.insert(id, (reply, HashSet::new()));
                        }
                    }
                    Command::SendIntent(peer, bytes, reply) => {
                        // A caller that stopped waiting (its deadline passed) leaves an entry
                        // until the peer answers or the stream times out: drop those first.
                        if intents.len() >= MAX_PENDING_INTENTS {
                            intents.retain(|_, (_, tx)| !tx.is_closed());
                        }
                        if intents.len() >= MAX_PENDING_INTENTS {
                            let _ = reply.send(Err(request_response::OutboundFailure::Io(
                                std::io::Error::other("too many intents awaiting answers"),
                            )));
                        } else {
                            let id = swarm.behaviour_mut().intent.send_request(&peer, bytes);
                            peers.used(&peer, Instant::now());
                            intents.insert(id, (peer, reply));
                        }
                    }
                    Command::ConnectedPeers(reply) => {
                        let _ = reply.send(swarm.connected_peers().copied().collect());
                    }
                    Command::GossipPeers(reply) => {
                        let hash = topic_of(SyncTable::Registry).hash();
                        let n = swarm
                            .behaviour()
                            .gossipsub
                            .all_peers()
                            .filter(|(_, topics)| topics.contains(&&hash))
                            .count();
                        let _ = reply.send(n);
                    }
                    Command::GossipScore(peer, reply) => {
                        let _ = reply.send(swarm.behaviour().gossipsub.peer_score(&peer));
                    }
                    Command::Disconnect(peer, reply) => {
                        let _ = reply.send(swarm.disconnect_peer_id(peer).is_ok());
                    }
                    Command::Block(peers, block, reply) => {
                        let blocked = &mut swarm.behaviour_mut().blocked;
                        for peer in peers.into_iter().take(MAX_BLOCKED_PER_COMMAND) {
                            if block {
                                blocked.block_peer(peer);
                            } else {
                                blocked.unblock_peer(peer);
                            }
                        }
                        let _ = reply.send(());
                    }
                    Command::Shutdown(reply) => {
                        flush(&shared);
                        let _ = reply.send(());
                        return;
                    }
                }
            }
        }
    }
}

/// How often records learnt from the network are made durable ([`Store::put_replica`]).
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

fn flush(shared: &Shared) {
    if let Err(e) = shared.store.flush() {
        tracing::warn!(error = %e, "cannot flush the store");
    }
}

/// A registry quiet for one flush interval is refreshed if at least this share of its
/// capabilities changed since the last refresh; fewer changes wait for [`QUIET_LONG`]. A
/// registry that drifted ([`CapabilityIndex::drifted`]) is refreshed without waiting.
const REFRESH_SHARE: f64 = 0.01;
/// Flush intervals of quiet after which any change is refreshed.
const QUIET_LONG: u32 = 5;

/// Vectors a refresh stores per hold of the index ([`CapabilityIndex::apply_refresh_part`]).
const REFRESH_APPLY_PART: usize = 64;

/// How long the registry has been quiet, as [`refresh_when_due`] tracks it, and whether a
/// refresh is running.
#[derive(Debug, Default)]
struct Quiet {
    /// Stale capabilities at the last flush.
    stale: usize,
    /// Flush intervals since that number last changed.
    intervals: u32,
    /// Set while a refresh runs on a blocking thread: one at a time.
    running: Arc<std::sync::atomic::AtomicBool>,
}

/// Re-embeds the index's stored vectors on a blocking thread, away from the index lock
/// ([`CapabilityIndex::refresh_job`]), so that nodes that hold the same cards rank them
/// alike whatever order they learnt them in. It runs once the registry drifted, or once it
/// has been quiet: after one flush interval if at least [`REFRESH_SHARE`] of the
/// capabilities changed, else after [`QUIET_LONG`]. A refresh re-embeds every capability
/// (50 ms for 1,000 here): done inside the upsert that drifted, it held up the swarm task,
/// and a card arriving now and then would otherwise cost one each.
fn refresh_when_due(shared: &Arc<Shared>, quiet: &mut Quiet) {
    use std::sync::atomic::Ordering;
    if quiet.running.load(Ordering::Acquire) {
        return;
    }
    {
        let index = crate::shared::read(&shared.index);
        let stale = index.stale_capabilities();
        let due = if stale == 0 || stale != quiet.stale {
            quiet.stale = stale;
            quiet.intervals = 0;
            index.drifted()
        } else {
            quiet.intervals += 1;
            index.drifted()
                || stale as f64 >= REFRESH_SHARE * index.len() as f64
                || quiet.intervals >= QUIET_LONG
        };
        if !due {
            return;
        }
    }
    quiet.stale = 0;
    quiet.intervals = 0;
    quiet.running.store(true, Ordering::Release);
    /// Clears the running flag however the refresh ends.
    struct Done(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Release);
        }
    }
    let done = Done(Arc::clone(&quiet.running));
    let shared = Arc::clone(shared);
    drop(tokio::task::spawn_blocking(move || {
        let _done = done;
        // Background index work of all the nodes in this process takes at most half the
        // cores (a testnet runs a hundred): the job is taken once a place is free, so that
        // it embeds under the statistics of that moment.
        let _permit = agentnet_discovery::BackgroundPermit::acquire();
        let Some(job) = crate::shared::read(&shared.index).refresh_job() else {
            return;
        };
        let mut refreshed = job.run();
        // A part at a time: the swarm task's ingest and the API's searches take the index
        // in between.
        while crate::shared::write(&shared.index)
            .apply_refresh_part(&mut refreshed, REFRESH_APPLY_PART)
            .is_none()
        {}
    }));
}

/// Swaps in the index's HNSW graph once its background build has finished
/// ([`CapabilityIndex::poll_build`]), on a blocking thread because it replays the changes
/// made during the build, so that a finished graph does not wait for the next card.
fn swap_in_finished_graph(shared: &Arc<Shared>) {
    if crate::shared::read(&shared.index).build_ready() {
        let shared = Arc::clone(shared);
        drop(tokio::task::spawn_blocking(move || {
            crate::shared::write(&shared.index).poll_build()
        }));
    }
}

/// Which inbound gossip messages are dropped ([`NodeConfig::gossip_loss`]).
#[derive(Debug)]
struct Loss {
    /// Drop when the next 64 random bits fall below this.
    threshold: u64,
    state: u64,
}

impl Loss {
    fn new(share: f64, seed: u64) -> Self {
        let share = if share.is_finite() {
            share.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Loss {
            threshold: (share * u64::MAX as f64) as u64,
            state: seed,
        }
    }

    /// Whether to drop the next message (SplitMix64).
    fn drops(&mut self) -> bool {
        if self.threshold == 0 {
            return false;
        }
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) < self.threshold
    }
}

impl Shared {
    fn penalties_banned(&self, peer: &PeerId) -> bool {
        lock(&self.penalties).is_banned(peer, Timestamp::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(q: &Fetches, peer: &PeerId) -> Vec<Vec<u8>> {
        q.queued
            .get(peer)
            .into_iter()
            .flatten()
            .flat_map(|(_, keys)| keys.clone())
            .collect()
    }

    #[test]
    fn a_key_two_peers_offer_is_fetched_from_one() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let key = |n: u8| vec![n];
        let mut fetches = Fetches::default();
        fetches.queue(a, SyncTable::Registry, vec![key(1), key(2)]);
        fetches.queue(b, SyncTable::Registry, vec![key(2), key(3)]);
        assert_eq!(keys(&fetches, &a), vec![key(1), key(2)]);
        assert_eq!(
            keys(&fetches, &b),
            vec![key(3)],
            "key 2 is wanted from a already"
        );
        // The same key in another table is another record.
        fetches.queue(b, SyncTable::Pauses, vec![key(1)]);
        assert_eq!(keys(&fetches, &b), vec![key(3), key(1)]);
        // Once a is gone, what it was to bring can come from b.
        fetches.forget(a);
        fetches.queue(b, SyncTable::Registry, vec![key(1), key(2)]);
        assert_eq!(keys(&fetches, &b), vec![key(3), key(1), key(1), key(2)]);
        fetches.forget(b);
        assert!(fetches.wanted.is_empty());
    }
}
