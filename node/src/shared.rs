//! State shared by the swarm task and every handle: the store, the capability index, the
//! hosted agents and their keys, trust, pauses, and the intent admission and delivery path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use agentnet_discovery::CapabilityIndex;
use agentnet_protocol::limits::MAX_ERROR_LEN;
use agentnet_protocol::{
    AgentCard, Did, Intent, IntentId, IntentResponse, IntentResult, IntentStatus, Keypair, Kind,
    OpenError, Outcome, PauseNotice, Receipt, Rejection, RejectionCode, SignedEnvelope, SyncTable,
    Timestamp, Tombstone, TrustAttestation, ValidationContext, ValidationError,
};
use agentnet_trust::{PeerFault, PeerScores, Penalty, ReceiptPair, TrustEngine};
use libp2p::PeerId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::intent::{
    Admit, AgentReply, BudgetGate, IntentHandler, IntentLimits, PauseState, RateLimiter,
    ReplayCache, ReplayVerdict, credential_issuer_is,
};
use crate::node::NodeError;
use crate::store::{PutOutcome, Store, StoreError, StoredRecord};

/// Locks a mutex; a poisoned lock (a panic elsewhere while holding it) is taken over, since
/// every structure behind these locks stays consistent between statements.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

/// Counters served at `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) gossip_accepted: AtomicU64,
    pub(crate) gossip_rejected: AtomicU64,
    pub(crate) gossip_ignored: AtomicU64,
    pub(crate) gossip_received: AtomicU64,
    pub(crate) gossip_bytes: AtomicU64,
    pub(crate) gossip_dropped: AtomicU64,
    pub(crate) synced_records: AtomicU64,
    pub(crate) gossip_repaired: AtomicU64,
    pub(crate) sync_requests: AtomicU64,
    pub(crate) sync_answered: AtomicU64,
    pub(crate) intents_sent: AtomicU64,
    pub(crate) intents_received: AtomicU64,
    pub(crate) intents_rejected: AtomicU64,
    pub(crate) intents_completed: AtomicU64,
    pub(crate) intent_timeouts: AtomicU64,
    pub(crate) penalties: AtomicU64,
}

impl Metrics {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where a record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// This node's own (a local agent's card, a published notice): stored durably.
    Local,
    /// A peer (gossip or sync): stored as a replica.
    Network,
}

/// An agent's queue of intents waiting to be fetched through the local API.
pub(crate) struct Inbox {
    pub(crate) tx: mpsc::Sender<Intent>,
    pub(crate) rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Intent>>>,
}

impl Inbox {
    pub(crate) fn new(capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        Inbox {
            tx,
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
        }
    }
}

/// Why a message from a peer was refused, and what the peer earns for it.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The peer sent something invalid.
    Fault(Penalty, String),
    /// This node could not apply a valid message (store full, index error).
    Node(NodeError),
}

impl From<NodeError> for Refusal {
    fn from(e: NodeError) -> Self {
        Refusal::Node(e)
    }
}

impl From<crate::store::StoreError> for Refusal {
    fn from(e: crate::store::StoreError) -> Self {
        Refusal::Node(e.into())
    }
}

fn fault(e: &(impl PeerFault + std::fmt::Display)) -> Refusal {
    Refusal::Fault(e.penalty(), e.to_string())
}

/// What ingesting a signed record did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ingested {
    /// New: stored and applied; forward it. With the record's `issued_at`.
    Applied(Change, Timestamp),
    /// Already known, older than what the store holds, or not this node's business.
    Stale,
}

/// The change an applied record made.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// A card, and whether this node is its host.
    Card { did: Did, hosted_here: bool },
    /// A tombstone.
    Removed(Did),
    /// A pause notice this node obeys.
    Pause,
    /// A trust attestation.
    Attestation,
}

impl Change {
    /// The gossip topic a record of this change travels on.
    pub(crate) fn table(&self) -> SyncTable {
        match self {
            Change::Card { .. } | Change::Removed(_) => SyncTable::Registry,
            Change::Pause => SyncTable::Pauses,
            Change::Attestation => SyncTable::Attestations,
        }
    }
}

/// An intent that passed every check and is being handed to its agent.
pub(crate) struct Admitted {
    pub(crate) intent: Intent,
    pub(crate) key: Arc<Keypair>,
    pub(crate) received: Instant,
    pub(crate) _permit: OwnedSemaphorePermit,
}

pub(crate) struct Shared {
    pub(crate) peer_id: PeerId,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) index: RwLock<CapabilityIndex>,
    /// The agents this node hosts, with their keys.
    pub(crate) agents: RwLock<HashMap<Did, Arc<Keypair>>>,
    pub(crate) trust: Mutex<TrustEngine>,
    pub(crate) pauses: Mutex<PauseState>,
    pub(crate) replay: Mutex<ReplayCache<PeerId>>,
    pub(crate) peer_limits: Mutex<RateLimiter<PeerId>>,
    pub(crate) agent_limits: Mutex<RateLimiter<Did>>,
    pub(crate) handlers: RwLock<HashMap<Did, Arc<dyn IntentHandler>>>,
    pub(crate) inboxes: Mutex<HashMap<Did, Inbox>>,
    /// Intents delivered to an inbox, waiting for the agent's answer.
    pub(crate) awaiting: Mutex<HashMap<IntentId, oneshot::Sender<AgentReply>>>,
    pub(crate) penalties: Mutex<PeerScores<PeerId>>,
    /// Inbound intents being handled.
    pub(crate) inbound: Arc<Semaphore>,
    /// Outbound intents awaiting an answer.
    pub(crate) outbound: Arc<Semaphore>,
    pub(crate) limits: IntentLimits,
    pub(crate) pause_issuers: Vec<Did>,
    pub(crate) budget: Option<Arc<dyn BudgetGate>>,
    pub(crate) metrics: Metrics,
}

/// How long a callee stays quiet after an intent's deadline passed unanswered, so that the
/// caller's clock ends the intent (as a timeout) rather than a late refusal.
const DEADLINE_GRACE: Duration = Duration::from_secs(2);

/// A rejection and what the sending peer earns for it.
pub(crate) type Refused = (Rejection, Option<Penalty>);

fn reject(code: RejectionCode, message: impl Into<String>) -> Rejection {
    let mut message: String = message.into();
    message.retain(|c| c != '\n' && c != '\r');
    truncate(&mut message, MAX_ERROR_LEN);
    Rejection { code, message }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

fn content_hash(envelope: &SignedEnvelope) -> [u8; agentnet_protocol::SYNC_HASH_LEN] {
    let mut hash = [0u8; agentnet_protocol::SYNC_HASH_LEN];
    hash.copy_from_slice(&envelope.content_id().0[..agentnet_protocol::SYNC_HASH_LEN]);
    hash
}

/// The key of a pause notice in the store: issuer, a zero byte, `seq` big-endian.
fn pause_key(notice: &PauseNotice) -> Vec<u8> {
    let mut key = notice.issuer.as_str().as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&notice.seq.to_be_bytes());
    key
}

/// The key of an attestation in the store: issuer, subject and capability, zero-separated.
fn attestation_key(a: &TrustAttestation) -> Vec<u8> {
    let mut key = a.issuer.as_str().as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(a.subject.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(a.capability.as_deref().unwrap_or("").as_bytes());
    key
}

impl Shared {
    /// The card held for `did`, if any (even expired: callers decide).
    pub(crate) fn card(&self, did: &Did) -> Result<Option<AgentCard>, NodeError> {
        let Some(record) = self
            .store
            .get_record(SyncTable::Registry, did.as_str().as_bytes())?
        else {
            return Ok(None);
        };
        Ok(
            SignedEnvelope::from_bytes_of_kind(&record.envelope, Kind::AgentCard)
                .ok()
                .and_then(|env| env.open_untimed::<AgentCard>().ok()),
        )
    }

    /// The latest registry record of `did`: its card or tombstone envelope.
    pub(crate) fn registry_record(&self, did: &Did) -> Result<Option<StoredRecord>, NodeError> {
        Ok(self
            .store
            .get_record(SyncTable::Registry, did.as_str().as_bytes())?)
    }

    /// Stores a record: durably if it is this node's own, as a replica (durable at the
    /// next flush) if it came from the network.
    fn put(
        &self,
        origin: Origin,
        table: SyncTable,
        record: &StoredRecord,
    ) -> Result<PutOutcome, StoreError> {
        match origin {
            Origin::Local => self.store.put_record(table, record),
            Origin::Network => self.store.put_replica(table, record),
        }
    }

    /// Verifies a signed record of any replicated kind, then stores and applies it.
    pub(crate) fn ingest(
        &self,
        bytes: &[u8],
        now: Timestamp,
        origin: Origin,
    ) -> Result<Ingested, Refusal> {
        let envelope = SignedEnvelope::from_bytes(bytes).map_err(|e| fault(&e))?;
        let ctx = ValidationContext::at(now);
        let hash = content_hash(&envelope);
        let open_fault = |e: OpenError| fault(&e);
        match envelope.kind() {
            Kind::AgentCard => {
                let card: AgentCard = envelope.open(&ctx).map_err(open_fault)?;
                let record = StoredRecord {
                    key: card.did.as_str().as_bytes().to_vec(),
                    version: card.seq,
                    hash,
                    envelope: bytes.to_vec(),
                };
                // One writer at a time: the index lock orders the check, the index and the
                // store.
                let mut index = write(&self.index);
                if self
                    .store
                    .get_record(SyncTable::Registry, &record.key)?
                    .is_some_and(|old| (old.version, old.hash) >= (record.version, record.hash))
                {
                    return Ok(Ingested::Stale);
                }
                // Index first: a card the index refuses is not stored either.
                index.upsert(&card).map_err(NodeError::from)?;
                match self.put(origin, SyncTable::Registry, &record)? {
                    PutOutcome::Stale => Ok(Ingested::Stale),
                    PutOutcome::Inserted | PutOutcome::Replaced => {
                        // Announced in the DHT only if this node holds the agent's key: a
                        // card naming this node as host proves nothing by itself.
                        Ok(Ingested::Applied(
                            Change::Card {
                                hosted_here: card.host == self.peer_id
                                    && read(&self.agents).contains_key(&card.did),
                                did: card.did,
                            },
                            card.issued_at,
                        ))
                    }
                }
            }
            Kind::Tombstone => {
                let tombstone: Tombstone = envelope.open(&ctx).map_err(open_fault)?;
                let record = StoredRecord {
                    key: tombstone.did.as_str().as_bytes().to_vec(),
                    version: tombstone.seq,
                    hash,
                    envelope: bytes.to_vec(),
                };
                let mut index = write(&self.index);
                match self.put(origin, SyncTable::Registry, &record)? {
                    PutOutcome::Stale => Ok(Ingested::Stale),
                    PutOutcome::Inserted | PutOutcome::Replaced => {
                        index.remove(&tombstone.did);
                        Ok(Ingested::Applied(
                            Change::Removed(tombstone.did),
                            tombstone.issued_at,
                        ))
                    }
                }
            }
            Kind::PauseNotice => {
                let notice: PauseNotice = envelope.open(&ctx).map_err(open_fault)?;
                let governed: Vec<Did> = notice
                    .subjects
                    .iter()
                    .filter(|s| self.governs(&notice.issuer, s))
                    .cloned()
                    .collect();
                if governed.is_empty() {
                    // Valid, but about agents that never put themselves under this issuer:
                    // not stored, not forwarded.
                    return Ok(Ingested::Stale);
                }
                let record = StoredRecord {
                    key: pause_key(&notice),
                    version: notice.seq,
                    hash,
                    envelope: bytes.to_vec(),
                };
                let mut pauses = lock(&self.pauses);
                match self.put(origin, SyncTable::Pauses, &record)? {
                    PutOutcome::Stale => Ok(Ingested::Stale),
                    PutOutcome::Inserted | PutOutcome::Replaced => {
                        pauses.apply(&notice, &governed);
                        Ok(Ingested::Applied(Change::Pause, notice.issued_at))
                    }
                }
            }
            Kind::TrustAttestation => {
                let attestation: TrustAttestation = envelope.open(&ctx).map_err(open_fault)?;
                let record = StoredRecord {
                    key: attestation_key(&attestation),
                    version: attestation.seq,
                    hash,
                    envelope: bytes.to_vec(),
                };
                let mut trust = lock(&self.trust);
                if trust.add_attestation(&attestation, now).is_err() {
                    // Unbacked by receipts this node holds, or not newer: no weight here.
                    return Ok(Ingested::Stale);
                }
                match self.put(origin, SyncTable::Attestations, &record)? {
                    PutOutcome::Stale => Ok(Ingested::Stale),
                    PutOutcome::Inserted | PutOutcome::Replaced => Ok(Ingested::Applied(
                        Change::Attestation,
                        attestation.issued_at,
                    )),
                }
            }
            other => Err(Refusal::Fault(
                agentnet_trust::WRONG_KIND,
                format!("a {other:?} is not a replicated record"),
            )),
        }
    }

    /// Whether this node obeys `issuer`'s pause notices about `subject`: the issuer is
    /// configured as a pause authority, or the subject's card carries a credential it issued.
    pub(crate) fn governs(&self, issuer: &Did, subject: &Did) -> bool {
        if self.pause_issuers.contains(issuer) {
            return true;
        }
        matches!(self.card(subject), Ok(Some(card)) if card
            .credentials
            .iter()
            .any(|c| credential_issuer_is(&c.data, issuer)))
    }

    /// Whether `did` is paused by an issuer this node obeys.
    pub(crate) fn is_paused(&self, did: &Did, now: Timestamp) -> bool {
        lock(&self.pauses).is_paused(did, now)
    }

    /// The trust score of `did` for `capability` (agent-wide when `None`).
    pub(crate) fn trust_score(&self, did: &Did, capability: Option<&str>, now: Timestamp) -> f64 {
        lock(&self.trust).score(did, capability, now).score
    }

    /// Checks an inbound intent: envelope, signature and limits, deadline, the agent,
    /// pauses, rate limits and replay, in that order.
    pub(crate) fn admit(
        &self,
        peer: Option<PeerId>,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<Admitted, Refused> {
        let envelope = SignedEnvelope::from_bytes_of_kind(bytes, Kind::Intent).map_err(|e| {
            (
                reject(RejectionCode::Invalid, e.to_string()),
                Some(e.penalty()),
            )
        })?;
        let intent: Intent = envelope.open(&ValidationContext::at(now)).map_err(|e| {
            let code = match &e {
                OpenError::Invalid(ValidationError::Expired { .. }) => RejectionCode::Expired,
                _ => RejectionCode::Invalid,
            };
            (reject(code, e.to_string()), Some(e.penalty()))
        })?;
        let Some(key) = read(&self.agents).get(&intent.to).cloned() else {
            return Err((
                reject(
                    RejectionCode::UnknownAgent,
                    format!("{} is not hosted here", intent.to),
                ),
                None,
            ));
        };
        for did in [&intent.to, &intent.from] {
            if self.is_paused(did, now) {
                return Err((
                    reject(RejectionCode::Paused, format!("{did} is paused")),
                    None,
                ));
            }
        }
        let started = Instant::now();
        let limited = |admit: Admit, who: String| match admit {
            Admit::Yes => Ok(()),
            Admit::Limited => Err((
                reject(
                    RejectionCode::RateLimited,
                    format!("too many intents from {who}"),
                ),
                Some(agentnet_trust::SPAM),
            )),
            // Not this sender's fault: the node tracks too many senders at once.
            Admit::TableFull => Err((
                reject(RejectionCode::RateLimited, "too many senders at once"),
                None,
            )),
        };
        if let Some(peer) = &peer {
            limited(
                lock(&self.peer_limits).allows(peer, started),
                "this peer".into(),
            )?;
        }
        limited(
            lock(&self.agent_limits).allows(&intent.from, started),
            intent.from.to_string(),
        )?;
        let Ok(permit) = self.inbound.clone().try_acquire_owned() else {
            return Err((
                reject(RejectionCode::Unavailable, "too many intents in flight"),
                None,
            ));
        };
        match lock(&self.replay).check(intent.id, intent.deadline, peer.as_ref(), now) {
            ReplayVerdict::Fresh => {}
            ReplayVerdict::Replay => {
                return Err((
                    reject(
                        RejectionCode::Replay,
                        format!("intent {} was seen before", intent.id),
                    ),
                    Some(agentnet_trust::REPLAY),
                ));
            }
            ReplayVerdict::SenderFull => {
                return Err((
                    reject(
                        RejectionCode::RateLimited,
                        "this peer has too many intents awaiting their deadlines",
                    ),
                    Some(agentnet_trust::SPAM),
                ));
            }
            ReplayVerdict::Full => {
                return Err((
                    reject(RejectionCode::Unavailable, "the replay cache is full"),
                    None,
                ));
            }
        }
        // Admitted: only now does the intent take its tokens.
        if let Some(peer) = &peer {
            lock(&self.peer_limits).check(peer, started);
        }
        lock(&self.agent_limits).check(&intent.from, started);
        Ok(Admitted {
            intent,
            key,
            received: started,
            _permit: permit,
        })
    }

    /// Hands an admitted intent to its agent, waits for the answer until the deadline, signs
    /// the result and the callee's receipt, and returns the encoded response.
    pub(crate) async fn deliver(self: Arc<Self>, admitted: Admitted) -> Vec<u8> {
        Metrics::bump(&self.metrics.intents_received);
        let intent = &admitted.intent;
        let left = intent
            .deadline
            .saturating_duration_since(Timestamp::now())
            .min(agentnet_protocol::limits::MAX_INTENT_TTL);
        let handler = read(&self.handlers).get(&intent.to).cloned();
        let reply = match handler {
            Some(handler) => {
                use futures::FutureExt;
                let run =
                    std::panic::AssertUnwindSafe(handler.handle(intent.clone())).catch_unwind();
                match tokio::time::timeout(left, run).await {
                    Ok(Ok(reply)) => Some(reply),
                    Ok(Err(_)) => Some(AgentReply::failed("the agent's handler panicked")),
                    Err(_) => None,
                }
            }
            None => match self.to_inbox(intent) {
                Ok(rx) => {
                    let reply = tokio::time::timeout(left, rx)
                        .await
                        .ok()
                        .and_then(Result::ok);
                    lock(&self.awaiting).remove(&intent.id);
                    reply
                }
                Err(rejection) => {
                    return IntentResponse::Rejected(rejection).to_bytes();
                }
            },
        };
        let now = Timestamp::now();
        let (reply, outcome) = match reply {
            Some(reply) => {
                let outcome = match reply.status {
                    IntentStatus::Completed => Outcome::Success,
                    IntentStatus::Declined => Outcome::Declined,
                    _ => Outcome::Failure,
                };
                (reply, outcome)
            }
            None => {
                // The caller has given up by now. Record the timeout, then stay quiet a
                // little longer so the caller's own clock, not this answer, ends the intent.
                let receipt = Receipt {
                    intent_id: intent.id,
                    caller: intent.from.clone(),
                    callee: intent.to.clone(),
                    capability: intent.capability.clone(),
                    issuer: intent.to.clone(),
                    outcome: Outcome::Timeout,
                    latency_ms: admitted.received.elapsed().as_millis() as u64,
                    time_allowed_ms: time_allowed_ms(intent),
                    max_cost: intent.max_cost.clone(),
                    cost: None,
                    issued_at: now,
                };
                if let Err(e) = self.keep_receipt(&admitted.key, &receipt) {
                    tracing::warn!(error = %e, "cannot keep a receipt");
                }
                tokio::time::sleep(DEADLINE_GRACE).await;
                return IntentResponse::Rejected(reject(
                    RejectionCode::Unavailable,
                    "the agent did not answer before the deadline",
                ))
                .to_bytes();
            }
        };
        let result = seal_result(&admitted.key, intent, reply, now);
        let (result, outcome) = match result {
            Ok((envelope, cost)) => ((envelope, cost), outcome),
            Err(reason) => {
                let fallback =
                    AgentReply::failed(format!("the agent's answer was invalid: {reason}"));
                match seal_result(&admitted.key, intent, fallback, now) {
                    Ok(sealed) => (sealed, Outcome::Failure),
                    Err(reason) => {
                        return IntentResponse::Rejected(reject(
                            RejectionCode::Unavailable,
                            format!("cannot sign a result: {reason}"),
                        ))
                        .to_bytes();
                    }
                }
            }
        };
        let (envelope, cost) = result;
        if outcome == Outcome::Success {
            Metrics::bump(&self.metrics.intents_completed);
        }
        let receipt = Receipt {
            intent_id: intent.id,
            caller: intent.from.clone(),
            callee: intent.to.clone(),
            capability: intent.capability.clone(),
            issuer: intent.to.clone(),
            outcome,
            latency_ms: admitted.received.elapsed().as_millis() as u64,
            time_allowed_ms: time_allowed_ms(intent),
            max_cost: intent.max_cost.clone(),
            cost,
            issued_at: now,
        };
        if let Err(e) = self.keep_receipt(&admitted.key, &receipt) {
            tracing::warn!(error = %e, "cannot keep a receipt");
        }
        IntentResponse::Result(envelope).to_bytes()
    }

    /// Queues `intent` in its agent's inbox; the answer arrives on the returned channel.
    fn to_inbox(&self, intent: &Intent) -> Result<oneshot::Receiver<AgentReply>, Rejection> {
        let (tx, rx) = oneshot::channel();
        lock(&self.awaiting).insert(intent.id, tx);
        let sent = lock(&self.inboxes)
            .get(&intent.to)
            .map(|inbox| inbox.tx.try_send(intent.clone()).is_ok());
        match sent {
            Some(true) => Ok(rx),
            Some(false) => {
                lock(&self.awaiting).remove(&intent.id);
                Err(reject(
                    RejectionCode::Unavailable,
                    format!("the inbox of {} is full", intent.to),
                ))
            }
            None => {
                lock(&self.awaiting).remove(&intent.id);
                Err(reject(
                    RejectionCode::UnknownAgent,
                    format!("{} has no inbox here", intent.to),
                ))
            }
        }
    }

    /// Signs `receipt` with `key`, stores it (flushed before this returns), and feeds trust:
    /// a caller's receipt updates the node's direct observation of the callee, a callee's is
    /// kept to weigh attestations that cite it.
    pub(crate) fn keep_receipt(
        &self,
        key: &Keypair,
        receipt: &Receipt,
    ) -> Result<agentnet_protocol::ContentId, NodeError> {
        let envelope = SignedEnvelope::seal(key, receipt)
            .map_err(|e| NodeError::Refused(format!("cannot sign a receipt: {e}")))?;
        let id = envelope.content_id();
        self.store.put_receipt(&id.0, &envelope.to_bytes())?;
        self.apply_receipt(id, receipt, receipt.issued_at);
        Ok(id)
    }

    fn apply_receipt(&self, id: agentnet_protocol::ContentId, receipt: &Receipt, now: Timestamp) {
        let mut trust = lock(&self.trust);
        if let Err(e) = trust.add_receipt(id, receipt) {
            tracing::debug!(error = %e, "trust kept no receipt");
        }
        if receipt.issuer == receipt.caller {
            match ReceiptPair::new(Some(receipt.clone()), None) {
                Ok(pair) => {
                    if let Err(e) = trust.observe(&pair, now) {
                        tracing::debug!(error = %e, "trust did not observe a receipt");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "a receipt does not pair"),
            }
        }
    }

    /// Rebuilds what the store implies after a restart: hosted agents and their inboxes,
    /// trust from receipts, the replay cache, pauses and attestations.
    pub(crate) fn restore(&self, now: Timestamp) -> Result<(), NodeError> {
        {
            let mut agents = write(&self.agents);
            let mut inboxes = lock(&self.inboxes);
            for (did, seed) in self.store.agent_keys()? {
                let key = Keypair::from_seed(&seed);
                if key.did().as_str() != did {
                    tracing::warn!(%did, "an agent key does not match its DID; skipped");
                    continue;
                }
                inboxes.insert(key.did(), Inbox::new(self.limits.inbox));
                agents.insert(key.did(), Arc::new(key));
            }
            let own: Vec<Did> = agents.keys().cloned().collect();
            lock(&self.trust).set_pre_trusted(&own);
        }
        let mut receipts = Vec::new();
        let mut after = None;
        loop {
            let batch = self.store.receipts(after.as_ref(), 1024)?;
            let Some((last, _)) = batch.last() else { break };
            after = Some(*last);
            for (id, bytes) in batch {
                if let Ok(env) = SignedEnvelope::from_bytes_of_kind(&bytes, Kind::Receipt)
                    && let Ok(receipt) = env.open_untimed::<Receipt>()
                {
                    receipts.push((agentnet_protocol::ContentId(id), receipt));
                }
            }
        }
        receipts.sort_by_key(|(_, r)| r.issued_at);
        for (id, receipt) in &receipts {
            self.apply_receipt(*id, receipt, receipt.issued_at);
            if receipt.issuer == receipt.callee {
                let deadline = receipt
                    .issued_at
                    .saturating_add(Duration::from_millis(receipt.time_allowed_ms));
                lock(&self.replay).restore(receipt.intent_id, deadline, now);
            }
        }
        for table in [SyncTable::Pauses, SyncTable::Attestations] {
            let mut lower = Vec::new();
            loop {
                let batch = self.store.records(table, &lower, &[], 1024)?;
                let Some(last) = batch.last() else { break };
                lower = last.key.clone();
                lower.push(0);
                for record in batch {
                    let Ok(env) = SignedEnvelope::from_bytes(&record.envelope) else {
                        continue;
                    };
                    match env.kind() {
                        Kind::PauseNotice => {
                            if let Ok(notice) = env.open_untimed::<PauseNotice>() {
                                let governed: Vec<Did> = notice
                                    .subjects
                                    .iter()
                                    .filter(|s| self.governs(&notice.issuer, s))
                                    .cloned()
                                    .collect();
                                lock(&self.pauses).apply(&notice, &governed);
                            }
                        }
                        Kind::TrustAttestation => {
                            if let Ok(a) = env.open::<TrustAttestation>(&ValidationContext::at(now))
                            {
                                let _ = lock(&self.trust).add_attestation(&a, now);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes expired records from the store (and expired cards from the index), so that
    /// sync stops offering them. Revocations are kept: they are final.
    pub(crate) fn prune_expired(&self, now: Timestamp) -> Result<usize, NodeError> {
        let ctx = ValidationContext::at(now);
        let mut removed = 0;
        for table in [
            SyncTable::Registry,
            SyncTable::Pauses,
            SyncTable::Attestations,
        ] {
            let mut lower = Vec::new();
            loop {
                let batch = self.store.records(table, &lower, &[], 1024)?;
                let Some(last) = batch.last() else { break };
                lower = last.key.clone();
                lower.push(0);
                for record in batch {
                    if !is_expired(&record.envelope, &ctx) {
                        continue;
                    }
                    // Under the index lock, so a newer record that arrived meanwhile is
                    // never removed in its place.
                    let mut index = write(&self.index);
                    let current = self.store.get_record(table, &record.key)?;
                    if current.is_some_and(|c| c.hash == record.hash) {
                        self.store.remove_record(table, &record.key)?;
                        if table == SyncTable::Registry
                            && let Ok(did) = std::str::from_utf8(&record.key)
                                .unwrap_or("")
                                .parse::<Did>()
                        {
                            index.remove(&did);
                        }
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Re-signed cards of hosted agents whose cards pass half their lifetime: a card lives
    /// at most `MAX_CARD_LIFETIME`, so the host renews it (with `seq` + 1) well before then.
    pub(crate) fn renewed_cards(&self, now: Timestamp) -> Vec<Vec<u8>> {
        let half = agentnet_protocol::limits::MAX_CARD_LIFETIME / 2;
        let agents: Vec<(Did, Arc<Keypair>)> = read(&self.agents)
            .iter()
            .map(|(d, k)| (d.clone(), k.clone()))
            .collect();
        let mut out = Vec::new();
        for (did, key) in agents {
            let Ok(Some(card)) = self.card(&did) else {
                continue;
            };
            if card.host != self.peer_id || card.expires_at.saturating_duration_since(now) > half {
                continue;
            }
            let renewed = AgentCard {
                seq: card.seq.saturating_add(1),
                issued_at: now,
                expires_at: now.saturating_add(agentnet_protocol::limits::MAX_CARD_LIFETIME),
                ..card
            };
            match SignedEnvelope::seal(&key, &renewed) {
                Ok(env) => out.push(env.to_bytes()),
                Err(e) => tracing::warn!(%did, error = %e, "cannot renew a card"),
            }
        }
        out
    }

    /// Applies `penalty` to `peer`; returns its new score and whether it is now banned.
    pub(crate) fn penalise(&self, peer: &PeerId, penalty: Penalty) -> (f64, bool) {
        Metrics::bump(&self.metrics.penalties);
        let now = Timestamp::now();
        let mut scores = lock(&self.penalties);
        let score = scores.penalise(peer, penalty, now);
        (score, scores.is_banned(peer, now))
    }
}

/// Whether a stored record has expired (a revocation never does: it is final).
fn is_expired(bytes: &[u8], ctx: &ValidationContext) -> bool {
    let Ok(env) = SignedEnvelope::from_bytes(bytes) else {
        return false;
    };
    let error = match env.kind() {
        Kind::AgentCard => env.open::<AgentCard>(ctx).err(),
        Kind::Tombstone => env.open::<Tombstone>(ctx).err(),
        Kind::TrustAttestation => env.open::<TrustAttestation>(ctx).err(),
        Kind::PauseNotice => match env.open_untimed::<PauseNotice>() {
            Ok(n) if n.action == agentnet_protocol::PauseAction::Revoke => None,
            _ => env.open::<PauseNotice>(ctx).err(),
        },
        _ => None,
    };
    matches!(
        error,
        Some(OpenError::Invalid(ValidationError::Expired { .. }))
    )
}

/// The intent's deadline minus its issue time, as a receipt records it.
pub(crate) fn time_allowed_ms(intent: &Intent) -> u64 {
    (intent
        .deadline
        .saturating_duration_since(intent.issued_at)
        .as_millis() as u64)
        .max(1)
}

/// Signs the agent's answer to `intent`. Returns the envelope and the cost it states, or
/// why the answer cannot be signed (output not JSON, too large, …).
fn seal_result(
    key: &Keypair,
    intent: &Intent,
    reply: AgentReply,
    now: Timestamp,
) -> Result<(SignedEnvelope, Option<agentnet_protocol::Price>), String> {
    let output = match (reply.status, &reply.output) {
        (IntentStatus::Completed, Some(value)) => {
            serde_json::to_vec(value).map_err(|e| e.to_string())?
        }
        (IntentStatus::Completed, None) => b"null".to_vec(),
        _ => Vec::new(),
    };
    let mut error = reply.error;
    truncate(&mut error, MAX_ERROR_LEN);
    if reply.status != IntentStatus::Completed && error.is_empty() {
        error = "no reason given".into();
    }
    let result = IntentResult {
        intent_id: intent.id,
        from: intent.to.clone(),
        to: intent.from.clone(),
        status: reply.status,
        output,
        error,
        cost: reply.cost.clone(),
        usage: reply.usage,
        completed_at: now,
    };
    let envelope = SignedEnvelope::seal(key, &result).map_err(|e| e.to_string())?;
    Ok((envelope, reply.cost))
}
