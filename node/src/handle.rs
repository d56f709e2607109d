//! [`NodeHandle`]: everything an embedding agent, the local API or the CLI does with a
//! running node.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use agentnet_discovery::{Page, SearchQuery};
use agentnet_protocol::limits::{MAX_CARD_LIFETIME, MAX_TOMBSTONE_LIFETIME};
use agentnet_protocol::{
    AgentCard, Capability, ContentId, Credential, Did, Intent, IntentId, IntentResponse,
    IntentResult, IntentStatus, Keypair, Kind, Outcome, Price, Receipt, Rejection, RejectionCode,
    SignedEnvelope, SyncTable, Timestamp, Tombstone, ValidationContext,
};
use agentnet_trust::TrustScore;
use libp2p::{Multiaddr, PeerId, request_response};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::intent::{AgentReply, IntentHandler, ReserveRequest, SettleRequest};
use crate::node::{Command, NodeError};
use crate::shared::{Inbox, Metrics, Shared, lock, read, time_allowed_ms, write};

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

/// An agent to host: the node creates its key, then signs and publishes its card.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AgentSpec {
    /// Display name.
    pub name: String,
    /// What the agent is.
    pub description: String,
    /// What it can do.
    pub capabilities: Vec<Capability>,
    /// Where else it can be reached.
    pub endpoints: Vec<String>,
    /// Credentials to attach, such as a gateway's membership credential.
    pub credentials: Vec<Credential>,
}

impl AgentSpec {
    /// An agent named `name`, described by `description`, with `capabilities`.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        capabilities: Vec<Capability>,
    ) -> Self {
        AgentSpec {
            name: name.into(),
            description: description.into(),
            capabilities,
            endpoints: Vec::new(),
            credentials: Vec::new(),
        }
    }
}

/// An intent to send.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct IntentRequest {
    /// The sending agent, hosted on this node.
    pub from: Did,
    /// The agent asked to act.
    pub to: Did,
    /// The capability invoked.
    pub capability: String,
    /// The input, a JSON document.
    pub input: serde_json::Value,
    /// The most the caller will pay.
    pub max_cost: Option<Price>,
    /// How long the callee has; the intent's deadline is now plus this. At most one hour.
    pub timeout: Duration,
}

impl IntentRequest {
    /// An intent from `from` to `to` for `capability` with `input`, due in 30 s.
    pub fn new(
        from: Did,
        to: Did,
        capability: impl Into<String>,
        input: serde_json::Value,
    ) -> Self {
        IntentRequest {
            from,
            to,
            capability: capability.into(),
            input,
            max_cost: None,
            timeout: Duration::from_secs(30),
        }
    }

    /// With a deadline `timeout` from now.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// With a cost ceiling.
    pub fn with_max_cost(mut self, max_cost: Price) -> Self {
        self.max_cost = Some(max_cost);
        self
    }
}

/// How a sent intent ended. A timeout or a refusal is an outcome too, with a receipt.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct IntentOutcome {
    /// The intent's id.
    pub intent_id: IntentId,
    /// Success, failure, timeout or declined, as the caller's receipt records it.
    pub outcome: Outcome,
    /// The callee's signed result, verified, if one came back.
    pub result: Option<IntentResult>,
    /// The hosting node's refusal, if it refused.
    pub rejection: Option<Rejection>,
    /// What went wrong on the way, if anything.
    pub error: Option<String>,
    /// From sending to the answer.
    pub latency: Duration,
    /// The caller's receipt, stored before this returns.
    pub receipt: ContentId,
}

/// A peer and what this node thinks of it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PeerInfo {
    /// The peer.
    pub peer_id: String,
    /// The node's own penalty score (0 is clean; `agentnet_trust::FATAL_SCORE` bans).
    pub penalty: f64,
    /// Gossipsub's score of the peer, including the penalty term.
    pub gossip_score: Option<f64>,
}

/// The node's counters, as served at `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Gossip messages accepted.
    pub gossip_accepted: u64,
    /// Gossip messages rejected as invalid.
    pub gossip_rejected: u64,
    /// Gossip messages ignored as stale.
    pub gossip_ignored: u64,
    /// Gossip messages received (after gossipsub's own de-duplication by message id).
    pub gossip_received: u64,
    /// Bytes of the gossip messages received (payloads).
    pub gossip_bytes: u64,
    /// Gossip messages dropped unread by fault injection (`NodeConfig::gossip_loss`).
    pub gossip_dropped: u64,
    /// Records sync brought that this node gossiped again (`specs/sync.md#repair`).
    pub gossip_repaired: u64,
    /// Records learnt by anti-entropy.
    pub synced_records: u64,
    /// Sync requests sent: openings, ranges and fetches (`specs/sync.md`).
    pub sync_requests: u64,
    /// Sync requests from peers this node answered.
    pub sync_answered: u64,
    /// Intents sent.
    pub intents_sent: u64,
    /// Intents delivered to local agents.
    pub intents_received: u64,
    /// Intents refused before delivery.
    pub intents_rejected: u64,
    /// Intents local agents completed.
    pub intents_completed: u64,
    /// Sent intents that timed out.
    pub intent_timeouts: u64,
    /// Penalties given to peers.
    pub penalties: u64,
    /// Hosted agents.
    pub agents: u64,
    /// Indexed capabilities.
    pub capabilities: u64,
    /// Intents in the replay cache.
    pub replay_cache: u64,
}

impl NodeHandle {
    pub(crate) fn new(commands: mpsc::Sender<Command>, shared: Arc<Shared>) -> Self {
        NodeHandle { commands, shared }
    }

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

    /// Closes every connection to `peer`; false if there was none.
    pub async fn disconnect(&self, peer: PeerId) -> Result<bool, NodeError> {
        self.ask(|tx| Command::Disconnect(peer, tx)).await
    }

    /// Connected peers.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, NodeError> {
        self.ask(Command::ConnectedPeers).await
    }

    /// Connected peers with their scores.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NodeError> {
        let mut out = Vec::new();
        for peer in self.connected_peers().await? {
            out.push(PeerInfo {
                peer_id: peer.to_string(),
                penalty: self.peer_penalty(&peer),
                gossip_score: self.gossip_score(peer).await?,
            });
        }
        Ok(out)
    }

    /// This node's penalty score of `peer` (0 if it never misbehaved).
    pub fn peer_penalty(&self, peer: &PeerId) -> f64 {
        lock(&self.shared.penalties).score(peer, Timestamp::now())
    }

    /// Gossipsub's score of `peer`, if it is known to gossipsub.
    pub async fn gossip_score(&self, peer: PeerId) -> Result<Option<f64>, NodeError> {
        self.ask(|tx| Command::GossipScore(peer, tx)).await
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

    /// Verifies, stores, applies and gossips a signed card, tombstone, pause notice or
    /// attestation.
    pub async fn publish(&self, envelope: &SignedEnvelope) -> Result<(), NodeError> {
        let bytes = envelope.to_bytes();
        self.ask(|tx| Command::Publish(bytes, tx)).await?
    }

    /// Gossips `bytes` on `table`'s topic without any check. For adversarial tests and the
    /// testnet's attack scenarios only: honest peers reject what this sends.
    #[doc(hidden)]
    pub async fn publish_unchecked(
        &self,
        table: SyncTable,
        bytes: Vec<u8>,
    ) -> Result<(), NodeError> {
        self.ask(|tx| Command::PublishRaw(table, bytes, tx)).await?
    }

    /// Sends `bytes` as an intent request to `peer` without any check and returns the raw
    /// answer. For adversarial tests only.
    #[doc(hidden)]
    pub async fn send_unchecked(&self, peer: PeerId, bytes: Vec<u8>) -> Result<Vec<u8>, NodeError> {
        self.ask(|tx| Command::SendIntent(peer, bytes, tx))
            .await?
            .map_err(|e| NodeError::Network(e.to_string()))
    }

    /// Searches the node's capability index, ranking by this node's trust scores.
    pub fn search(&self, query: &SearchQuery) -> Result<Page, NodeError> {
        let index = read(&self.shared.index);
        let now = Timestamp::now();
        let shared = &self.shared;
        let trust = |did: &Did, capability: &str| shared.trust_score(did, Some(capability), now);
        Ok(index.search(query, &trust, now)?)
    }

    /// Capabilities indexed.
    pub fn capabilities(&self) -> usize {
        read(&self.shared.index).len()
    }

    /// Whether the capability index holds `did`'s card: searchable here. Cheap (no store
    /// read, no signature check), so it suits polling.
    pub fn is_indexed(&self, did: &Did) -> bool {
        read(&self.shared.index).contains(did)
    }

    /// Capabilities whose stored vectors predate the index's current corpus statistics
    /// (`CapabilityIndex::stale_capabilities`); the node re-embeds them once its registry
    /// has been quiet for a moment (one second if 1% of them changed, else five), after
    /// which this is 0.
    pub fn stale_capabilities(&self) -> usize {
        read(&self.shared.index).stale_capabilities()
    }

    /// The id of the embedder the index uses.
    pub fn embedder(&self) -> String {
        read(&self.shared.index).embedder_id().to_owned()
    }

    /// The agents this node hosts.
    pub fn agents(&self) -> Vec<Did> {
        let mut agents: Vec<Did> = read(&self.shared.agents).keys().cloned().collect();
        agents.sort();
        agents
    }

    /// Cards in the registry, by DID, after `after` (empty for the first): at most `limit`.
    /// Tombstones and expired cards are left out, so a page may hold fewer than `limit`.
    pub fn cards(&self, after: &str, limit: usize) -> Result<Vec<AgentCard>, NodeError> {
        let mut lower = after.as_bytes().to_vec();
        if !lower.is_empty() {
            lower.push(0);
        }
        let ctx = ValidationContext::at(Timestamp::now());
        let records =
            self.shared
                .store
                .records(SyncTable::Registry, &lower, &[], limit.min(10_000))?;
        Ok(records
            .iter()
            .filter_map(|r| {
                SignedEnvelope::from_bytes_of_kind(&r.envelope, Kind::AgentCard)
                    .ok()?
                    .open::<AgentCard>(&ctx)
                    .ok()
            })
            .collect())
    }

    /// The card held for `did`, if any and not withdrawn.
    pub fn agent(&self, did: &Did) -> Result<Option<AgentCard>, NodeError> {
        self.shared.card(did)
    }

    /// Whether the registry holds a tombstone for `did`.
    pub fn is_removed(&self, did: &Did) -> Result<bool, NodeError> {
        Ok(self.shared.registry_record(did)?.is_some_and(|r| {
            SignedEnvelope::from_bytes(&r.envelope).is_ok_and(|e| e.kind() == Kind::Tombstone)
        }))
    }

    /// Creates an agent: a new key (stored and flushed first), then a signed card with this
    /// node as host, published. Returns its DID.
    pub async fn register_agent(&self, spec: AgentSpec) -> Result<Did, NodeError> {
        let key = Keypair::generate().map_err(|e| NodeError::Invalid(e.to_string()))?;
        self.register_agent_with_key(key, spec).await
    }

    /// Like [`register_agent`](Self::register_agent), with a key the caller already has: an
    /// agent whose DID a gateway has issued a membership credential for, say.
    pub async fn register_agent_with_key(
        &self,
        key: Keypair,
        spec: AgentSpec,
    ) -> Result<Did, NodeError> {
        let now = Timestamp::now();
        let card = AgentCard {
            did: key.did(),
            name: spec.name,
            description: spec.description,
            capabilities: spec.capabilities,
            endpoints: spec.endpoints,
            host: self.shared.peer_id,
            seq: 1,
            issued_at: now,
            expires_at: now.saturating_add(MAX_CARD_LIFETIME),
            credentials: spec.credentials,
        };
        let envelope =
            SignedEnvelope::seal(&key, &card).map_err(|e| NodeError::Invalid(e.to_string()))?;
        self.adopt(key)?;
        if let Err(e) = self.publish(&envelope).await {
            self.forget(&card.did)?;
            return Err(e);
        }
        Ok(card.did)
    }

    /// Hosts an agent whose key the caller already holds (kept in the store, flushed).
    pub fn adopt(&self, key: Keypair) -> Result<Did, NodeError> {
        let did = key.did();
        self.shared.store.put_agent_key(did.as_str(), &key.seed())?;
        lock(&self.shared.inboxes).insert(did.clone(), Inbox::new(self.shared.limits.inbox));
        let own: Vec<Did> = {
            let mut agents = write(&self.shared.agents);
            agents.insert(did.clone(), Arc::new(key));
            agents.keys().cloned().collect()
        };
        lock(&self.shared.trust).set_pre_trusted(&own);
        Ok(did)
    }

    fn forget(&self, did: &Did) -> Result<(), NodeError> {
        write(&self.shared.agents).remove(did);
        lock(&self.shared.inboxes).remove(did);
        write(&self.shared.handlers).remove(did);
        self.shared.store.remove_agent_key(did.as_str())?;
        Ok(())
    }

    /// Withdraws an agent this node hosts: publishes its tombstone, then forgets its key.
    pub async fn remove_agent(&self, did: &Did) -> Result<(), NodeError> {
        let Some(key) = read(&self.shared.agents).get(did).cloned() else {
            return Err(NodeError::UnknownAgent(format!("{did} is not hosted here")));
        };
        let seq = self
            .shared
            .registry_record(did)?
            .map(|r| r.version)
            .unwrap_or(0)
            .saturating_add(1);
        let now = Timestamp::now();
        let tombstone = Tombstone {
            did: did.clone(),
            seq,
            issued_at: now,
            expires_at: now.saturating_add(MAX_TOMBSTONE_LIFETIME),
        };
        let envelope = SignedEnvelope::seal(&key, &tombstone)
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        self.publish(&envelope).await?;
        self.forget(did)
    }

    /// Runs intents for `did` (hosted here) in-process with `handler`, instead of queueing
    /// them in its inbox.
    pub fn serve(&self, did: &Did, handler: impl IntentHandler) -> Result<(), NodeError> {
        if !read(&self.shared.agents).contains_key(did) {
            return Err(NodeError::UnknownAgent(format!("{did} is not hosted here")));
        }
        write(&self.shared.handlers).insert(did.clone(), Arc::new(handler));
        Ok(())
    }

    /// Waits up to `wait` for the next intent in `did`'s inbox. Answer it with
    /// [`NodeHandle::answer`] before its deadline.
    pub async fn next_intent(
        &self,
        did: &Did,
        wait: Duration,
    ) -> Result<Option<Intent>, NodeError> {
        let rx = lock(&self.shared.inboxes)
            .get(did)
            .map(|inbox| inbox.rx.clone())
            .ok_or_else(|| NodeError::UnknownAgent(format!("{did} is not hosted here")))?;
        let mut rx = match tokio::time::timeout(wait, rx.lock_owned()).await {
            Ok(rx) => rx,
            Err(_) => return Ok(None),
        };
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some(intent)) => {
                    // Skip intents whose caller already gave up.
                    if intent.deadline > Timestamp::now()
                        && lock(&self.shared.awaiting).contains_key(&intent.id)
                    {
                        return Ok(Some(intent));
                    }
                }
                Ok(None) => return Err(NodeError::Stopped),
                Err(_) => return Ok(None),
            }
        }
    }

    /// Answers an intent delivered through an inbox.
    pub fn answer(&self, intent_id: IntentId, reply: AgentReply) -> Result<(), NodeError> {
        let Some(tx) = lock(&self.shared.awaiting).remove(&intent_id) else {
            return Err(NodeError::UnknownAgent(format!(
                "no intent {intent_id} is waiting for an answer (unknown, answered or past its deadline)"
            )));
        };
        tx.send(reply).map_err(|_| {
            NodeError::UnknownAgent(format!(
                "no intent {intent_id} is waiting for an answer (past its deadline)"
            ))
        })
    }

    /// This node's trust in `did` (agent-wide, or for `capability`).
    pub fn trust(&self, did: &Did, capability: Option<&str>) -> TrustScore {
        lock(&self.shared.trust).score(did, capability, Timestamp::now())
    }

    /// A receipt this node stored.
    pub fn receipt(&self, id: &ContentId) -> Result<Option<Receipt>, NodeError> {
        Ok(self
            .shared
            .store
            .get_receipt(&id.0)?
            .and_then(|b| SignedEnvelope::from_bytes_of_kind(&b, Kind::Receipt).ok())
            .and_then(|e| e.open_untimed::<Receipt>().ok()))
    }

    /// Up to `limit` stored receipts (this node's agents' own, as caller or callee).
    pub fn receipts(&self, limit: usize) -> Result<Vec<(ContentId, Receipt)>, NodeError> {
        let mut out = Vec::new();
        let mut after = None;
        while out.len() < limit {
            let batch = self.shared.store.receipts(after.as_ref(), 256)?;
            let Some((last, _)) = batch.last() else { break };
            after = Some(*last);
            out.extend(batch.into_iter().filter_map(|(id, bytes)| {
                let env = SignedEnvelope::from_bytes_of_kind(&bytes, Kind::Receipt).ok()?;
                Some((ContentId(id), env.open_untimed::<Receipt>().ok()?))
            }));
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Whether `did` is paused by a gateway this node obeys.
    pub fn is_paused(&self, did: &Did) -> bool {
        self.shared.is_paused(did, Timestamp::now())
    }

    /// The node's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        let m = &self.shared.metrics;
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            gossip_accepted: get(&m.gossip_accepted),
            gossip_rejected: get(&m.gossip_rejected),
            gossip_ignored: get(&m.gossip_ignored),
            gossip_received: get(&m.gossip_received),
            gossip_bytes: get(&m.gossip_bytes),
            gossip_dropped: get(&m.gossip_dropped),
            gossip_repaired: get(&m.gossip_repaired),
            synced_records: get(&m.synced_records),
            sync_requests: get(&m.sync_requests),
            sync_answered: get(&m.sync_answered),
            intents_sent: get(&m.intents_sent),
            intents_received: get(&m.intents_received),
            intents_rejected: get(&m.intents_rejected),
            intents_completed: get(&m.intents_completed),
            intent_timeouts: get(&m.intent_timeouts),
            penalties: get(&m.penalties),
            agents: read(&self.shared.agents).len() as u64,
            capabilities: self.capabilities() as u64,
            replay_cache: lock(&self.shared.replay).len() as u64,
        }
    }

    /// Sends an intent and waits for its result, or until its deadline.
    ///
    /// Before sending: the sender must be hosted here; neither agent may be paused; the
    /// gateway, if configured, must grant a budget reservation (unreachable means nothing is
    /// sent). Whatever happens after sending, a caller's receipt is stored and fed to trust,
    /// and the reservation is settled.
    pub async fn send_intent(&self, request: IntentRequest) -> Result<IntentOutcome, NodeError> {
        let shared = &self.shared;
        let Some(key) = read(&shared.agents).get(&request.from).cloned() else {
            return Err(NodeError::UnknownAgent(format!(
                "{} is not hosted here",
                request.from
            )));
        };
        let now = Timestamp::now();
        for did in [&request.from, &request.to] {
            if shared.is_paused(did, now) {
                return Err(NodeError::Paused(did.clone()));
            }
        }
        let host = match shared.card(&request.to)? {
            Some(card) if !self.is_removed(&request.to)? => card.host,
            _ => self
                .find_hosts(&request.to)
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    NodeError::UnknownAgent(format!("no card and no host found for {}", request.to))
                })?,
        };
        let input =
            serde_json::to_vec(&request.input).map_err(|e| NodeError::Invalid(e.to_string()))?;
        let id = IntentId::random().map_err(|e| NodeError::Invalid(e.to_string()))?;
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| NodeError::Invalid(e.to_string()))?;
        let mut intent = Intent {
            id,
            from: request.from.clone(),
            to: request.to.clone(),
            capability: request.capability.clone(),
            input,
            max_cost: request.max_cost.clone(),
            issued_at: now,
            deadline: now.saturating_add(request.timeout),
            nonce: u64::from_le_bytes(nonce),
        };
        // Checked now, so an invalid intent never reserves budget; signed again below with
        // the times it is really sent at.
        SignedEnvelope::seal(&key, &intent).map_err(|e| NodeError::Invalid(e.to_string()))?;
        let _permit = shared
            .outbound
            .clone()
            .try_acquire_owned()
            .map_err(|_| NodeError::Busy("too many intents in flight".into()))?;
        let reservation = match &shared.budget {
            Some(gate) => {
                let (amount_micros, currency) = request
                    .max_cost
                    .as_ref()
                    .map(|p| (p.amount_micros, p.currency.clone()))
                    .unwrap_or((0, String::new()));
                Some(
                    gate.reserve(ReserveRequest {
                        intent_id: id,
                        agent: request.from.clone(),
                        callee: request.to.clone(),
                        capability: request.capability.clone(),
                        amount_micros,
                        currency,
                        expires_at_ms: intent
                            .deadline
                            .saturating_add(crate::intent::BUDGET_TIMEOUT)
                            .as_millis(),
                    })
                    .await?,
                )
            }
            None => None,
        };
        // The deadline counts from now, after the host lookup and the budget call.
        let now = Timestamp::now();
        intent.issued_at = now;
        intent.deadline = now.saturating_add(request.timeout);
        let envelope =
            SignedEnvelope::seal(&key, &intent).map_err(|e| NodeError::Invalid(e.to_string()))?;
        Metrics::bump(&shared.metrics.intents_sent);
        let started = Instant::now();
        type Answer = Result<
            Result<crate::node::IntentReply, oneshot::error::RecvError>,
            tokio::time::error::Elapsed,
        >;
        let answer: Answer = if host == shared.peer_id {
            // Both agents live here: the same checks and delivery (bounded by the
            // deadline), without the network.
            match shared.admit(None, &envelope.to_bytes(), now) {
                Ok(admitted) => {
                    // On its own task, so that the callee's side (its receipt) completes
                    // even when the caller stops waiting.
                    let delivery = tokio::spawn(shared.clone().deliver(admitted));
                    match tokio::time::timeout(request.timeout, delivery).await {
                        Ok(Ok(bytes)) => Ok(Ok(Ok(bytes))),
                        Ok(Err(_)) => Ok(Ok(Err(request_response::OutboundFailure::Io(
                            std::io::Error::other("the local delivery task failed"),
                        )))),
                        Err(elapsed) => Err(elapsed),
                    }
                }
                Err((rejection, _)) => Ok(Ok(Ok(IntentResponse::Rejected(rejection).to_bytes()))),
            }
        } else {
            let (tx, rx) = oneshot::channel();
            self.commands
                .send(Command::SendIntent(host, envelope.to_bytes(), tx))
                .await
                .map_err(|_| NodeError::Stopped)?;
            tokio::time::timeout(request.timeout, rx).await
        };
        let latency = started.elapsed();
        let mut outcome = IntentOutcome {
            intent_id: id,
            outcome: Outcome::Failure,
            result: None,
            rejection: None,
            error: None,
            latency,
            receipt: ContentId([0; 32]),
        };
        match answer {
            Err(_) => {
                outcome.outcome = Outcome::Timeout;
                outcome.error = Some("no answer before the deadline".into());
            }
            Ok(Err(_)) => return Err(NodeError::Stopped),
            Ok(Ok(Err(request_response::OutboundFailure::Timeout))) => {
                outcome.outcome = Outcome::Timeout;
                outcome.error = Some("no answer before the deadline".into());
            }
            Ok(Ok(Err(failure))) => {
                outcome.error = Some(format!("cannot reach the host {host}: {failure}"));
            }
            Ok(Ok(Ok(bytes))) => self.classify(&intent, host, &bytes, &mut outcome),
        }
        if outcome.outcome == Outcome::Timeout {
            Metrics::bump(&shared.metrics.intent_timeouts);
        }
        let cost = outcome.result.as_ref().and_then(|r| r.cost.clone());
        let receipt = Receipt {
            intent_id: id,
            caller: request.from.clone(),
            callee: request.to.clone(),
            capability: request.capability.clone(),
            issuer: request.from.clone(),
            outcome: outcome.outcome,
            latency_ms: latency.as_millis() as u64,
            time_allowed_ms: time_allowed_ms(&intent),
            max_cost: request.max_cost.clone(),
            cost: cost.clone(),
            issued_at: Timestamp::now(),
        };
        // Settle first: the intent has happened whatever becomes of the receipt. The
        // amount is what the callee states, but never more than the caller agreed to.
        if let (Some(gate), Some(reservation)) = (&shared.budget, reservation) {
            let amount_micros = match (&request.max_cost, &cost) {
                (Some(max), Some(c)) if c.currency == max.currency => {
                    c.amount_micros.min(max.amount_micros)
                }
                (Some(max), Some(_)) => max.amount_micros,
                (None, Some(c)) => c.amount_micros,
                (_, None) => 0,
            };
            let settle = SettleRequest {
                reservation_id: reservation.reservation_id,
                amount_micros,
            };
            if let Err(e) = gate.settle(settle).await {
                tracing::warn!(error = %e, "cannot settle a budget reservation; the gateway releases it when it expires");
            }
        }
        outcome.receipt = shared.keep_receipt(&key, &receipt)?;
        Ok(outcome)
    }

    /// Reads the callee's answer into `outcome`.
    fn classify(&self, intent: &Intent, host: PeerId, bytes: &[u8], outcome: &mut IntentOutcome) {
        match IntentResponse::from_bytes(bytes) {
            Ok(IntentResponse::Rejected(rejection)) => {
                outcome.outcome = match rejection.code {
                    RejectionCode::RateLimited
                    | RejectionCode::Unavailable
                    | RejectionCode::Paused => Outcome::Declined,
                    _ => Outcome::Failure,
                };
                outcome.error = Some(format!(
                    "refused ({:?}): {}",
                    rejection.code, rejection.message
                ));
                outcome.rejection = Some(rejection);
            }
            Ok(IntentResponse::Result(envelope)) => {
                let result = envelope
                    .open::<IntentResult>(&ValidationContext::now())
                    .map_err(|e| (agentnet_trust::PeerFault::penalty(&e), e.to_string()))
                    .and_then(|r| {
                        if r.intent_id != intent.id || r.from != intent.to || r.to != intent.from {
                            Err((
                                agentnet_trust::INVALID_SIGNATURE,
                                "the result answers another intent".to_owned(),
                            ))
                        } else {
                            Ok(r)
                        }
                    });
                match result {
                    Ok(result) => {
                        outcome.outcome = match result.status {
                            IntentStatus::Completed => Outcome::Success,
                            IntentStatus::Declined => Outcome::Declined,
                            _ => Outcome::Failure,
                        };
                        if result.status != IntentStatus::Completed {
                            outcome.error = Some(result.error.clone());
                        }
                        outcome.result = Some(result);
                    }
                    Err((penalty, reason)) => {
                        tracing::debug!(%host, %reason, "an invalid intent result");
                        self.shared.penalise(&host, penalty);
                        outcome.error = Some(format!("invalid result: {reason}"));
                    }
                }
            }
            Err(e) => {
                self.shared
                    .penalise(&host, agentnet_trust::PeerFault::penalty(&e));
                outcome.error = Some(format!("malformed answer: {e}"));
            }
        }
    }

    /// Blocks `peers` (at most [`crate::MAX_BLOCKED_PER_COMMAND`] per call): their
    /// connections are closed, and new ones refused, in both directions, until unblocked.
    pub async fn block_peers(&self, peers: Vec<PeerId>) -> Result<(), NodeError> {
        self.ask(|tx| Command::Block(peers, true, tx)).await
    }

    /// Lifts a block on `peers`. Nothing redials them: dial them again, or wait for them.
    pub async fn unblock_peers(&self, peers: Vec<PeerId>) -> Result<(), NodeError> {
        self.ask(|tx| Command::Block(peers, false, tx)).await
    }

    /// Stops the swarm task.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.ask(Command::Shutdown).await
    }
}
