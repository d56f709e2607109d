//! Intents between agents (`specs/intents.md`): what the receiving node checks before an
//! agent sees an intent (replay cache, rate limits, pause notices), how an agent answers
//! (an in-process [`IntentHandler`] or the inbox the local API serves), and the gateway's
//! budget reservation, which the sending node asks for first and without which it does not
//! send.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::time::{Duration, Instant};

use agentnet_protocol::limits::MAX_CLOCK_SKEW;
use agentnet_protocol::{
    Did, IntentId, IntentStatus, PauseAction, PauseNotice, Price, Timestamp, Usage,
};
use serde::{Deserialize, Serialize};

/// Rate limits and bounds on intents. The defaults follow the AINP seed.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct IntentLimits {
    /// Intents admitted per minute, sustained, per sending peer and per sending agent.
    /// Default 100.
    pub per_minute: u32,
    /// The most intents admitted at once after a quiet spell (the bucket's size), per peer
    /// and per agent. Default 200, so at most 200 + 100/6 ≈ 216 fit in any 10 s.
    pub burst: u32,
    /// Discovery queries per minute per peer. Default 10.
    pub discovery_per_minute: u32,
    /// Intents remembered against replay at once. Default 262,144; when it is full of live
    /// entries, new intents are refused as unavailable rather than admitted unchecked.
    pub replay_capacity: usize,
    /// Live replay-cache entries one sending peer may hold. Default 1,024 (at 100 intents a
    /// minute with 30 s deadlines, a peer holds about 60).
    pub replay_per_peer: usize,
    /// Intents waiting in one agent's inbox. Default 64.
    pub inbox: usize,
    /// Intents being handled or awaited at once, in each direction. Default 1,024.
    pub in_flight: usize,
    /// Peers and agents with a rate-limit bucket at once. Default 10,000.
    pub tracked: usize,
}

impl Default for IntentLimits {
    fn default() -> Self {
        IntentLimits {
            per_minute: 100,
            burst: 200,
            discovery_per_minute: 10,
            replay_capacity: 262_144,
            replay_per_peer: 1024,
            inbox: 64,
            in_flight: 1024,
            tracked: 10_000,
        }
    }
}

/// Whether a rate limiter admits a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// A token is there.
    Yes,
    /// This key is over its rate.
    Limited,
    /// Every tracked key is still limited, so a new key cannot be tracked.
    TableFull,
}

/// Token buckets per key: `burst` tokens, refilled at `per_minute`.
///
/// Bounded: at most `capacity` keys. A key whose bucket has refilled carries no state worth
/// keeping, so those go first; if every tracked key is still limited, a new key is refused.
#[derive(Debug)]
pub(crate) struct RateLimiter<K> {
    per_second: f64,
    burst: f64,
    capacity: usize,
    buckets: HashMap<K, (f64, Instant)>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub(crate) fn new(per_minute: u32, burst: u32, capacity: usize) -> Self {
        RateLimiter {
            per_second: f64::from(per_minute) / 60.0,
            burst: f64::from(burst.max(1)),
            capacity: capacity.max(1),
            buckets: HashMap::new(),
        }
    }

    fn level(&self, tokens: f64, since: Instant, now: Instant) -> f64 {
        let refill = now.saturating_duration_since(since).as_secs_f64() * self.per_second;
        (tokens + refill).min(self.burst)
    }

    /// Whether `key` may take a token now, without taking it.
    pub(crate) fn allows(&self, key: &K, now: Instant) -> Admit {
        match self.buckets.get(key) {
            Some((tokens, since)) if self.level(*tokens, *since, now) < 1.0 => Admit::Limited,
            Some(_) => Admit::Yes,
            None if self.buckets.len() >= self.capacity
                && !self
                    .buckets
                    .values()
                    .any(|(t, s)| self.level(*t, *s, now) >= self.burst) =>
            {
                Admit::TableFull
            }
            None => Admit::Yes,
        }
    }

    /// Takes one token for `key`; false if none is left (or the table is full of keys
    /// still limited).
    pub(crate) fn check(&mut self, key: &K, now: Instant) -> bool {
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.capacity {
            let (per_second, burst) = (self.per_second, self.burst);
            self.buckets.retain(|_, (tokens, since)| {
                let refill = now.saturating_duration_since(*since).as_secs_f64() * per_second;
                *tokens + refill < burst
            });
            if self.buckets.len() >= self.capacity {
                return false;
            }
        }
        let (tokens, since) = self.buckets.get(key).copied().unwrap_or((self.burst, now));
        let level = self.level(tokens, since, now);
        if level < 1.0 {
            self.buckets.insert(key.clone(), (level, now));
            return false;
        }
        self.buckets.insert(key.clone(), (level - 1.0, now));
        true
    }
}

/// Why the replay cache refused an intent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplayVerdict {
    /// First sighting: admitted and remembered.
    Fresh,
    /// Seen before.
    Replay,
    /// This sender already holds its share of the cache.
    SenderFull,
    /// The cache is full of live entries.
    Full,
}

/// Intents seen, remembered until their deadline plus the clock skew, after which their
/// envelopes would be refused as expired anyway.
///
/// Keyed by id: an id seen under one nonce is refused under any other too, so that one id
/// is never in flight twice. Each sending peer may hold at most `per_sender` live entries,
/// so that one peer cannot fill the cache for everyone.
#[derive(Debug)]
pub(crate) struct ReplayCache<K> {
    capacity: usize,
    per_sender: usize,
    /// id → (forget at, sender).
    seen: HashMap<IntentId, (Timestamp, Option<K>)>,
    /// Live entries per sender.
    shares: HashMap<K, usize>,
}

impl<K: Hash + Eq + Clone> ReplayCache<K> {
    pub(crate) fn new(capacity: usize, per_sender: usize) -> Self {
        ReplayCache {
            capacity: capacity.max(1),
            per_sender: per_sender.max(1),
            seen: HashMap::new(),
            shares: HashMap::new(),
        }
    }

    fn prune(&mut self, now: Timestamp) {
        let shares = &mut self.shares;
        self.seen.retain(|_, (forget_at, sender)| {
            let keep = *forget_at > now;
            if !keep
                && let Some(sender) = sender
                && let Some(n) = shares.get_mut(sender)
            {
                *n = n.saturating_sub(1);
            }
            keep
        });
        self.shares.retain(|_, n| *n > 0);
    }

    /// Records an intent seen before a restart (its nonce is not known).
    pub(crate) fn restore(&mut self, id: IntentId, deadline: Timestamp, now: Timestamp) {
        let forget_at = deadline.saturating_add(MAX_CLOCK_SKEW);
        if forget_at > now && self.seen.len() < self.capacity {
            self.seen.insert(id, (forget_at, None));
        }
    }

    /// Checks and records intent `id` from `sender`, due to be forgotten after `deadline`.
    pub(crate) fn check(
        &mut self,
        id: IntentId,
        deadline: Timestamp,
        sender: Option<&K>,
        now: Timestamp,
    ) -> ReplayVerdict {
        if self.seen.get(&id).is_some_and(|(t, _)| *t > now) {
            return ReplayVerdict::Replay;
        }
        let share = |c: &Self| sender.and_then(|s| c.shares.get(s)).copied().unwrap_or(0);
        if self.seen.len() >= self.capacity || share(self) >= self.per_sender {
            self.prune(now);
        }
        if share(self) >= self.per_sender {
            return ReplayVerdict::SenderFull;
        }
        if self.seen.len() >= self.capacity {
            return ReplayVerdict::Full;
        }
        if let Some(sender) = sender {
            *self.shares.entry(sender.clone()).or_default() += 1;
        }
        self.seen.insert(
            id,
            (deadline.saturating_add(MAX_CLOCK_SKEW), sender.cloned()),
        );
        ReplayVerdict::Fresh
    }

    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

/// Which agents are paused, from the pause notices this node obeys.
///
/// For each (issuer, subject) the notice with the highest `seq` wins; a `Revoke` is final,
/// so no later notice of that issuer lifts it.
#[derive(Debug, Default)]
pub(crate) struct PauseState {
    /// subject → issuer → (seq, action, expires_at).
    subjects: HashMap<Did, HashMap<Did, (u64, PauseAction, Timestamp)>>,
}

impl PauseState {
    /// Applies `notice` for the subjects in `governed`; returns whether anything changed.
    pub(crate) fn apply(&mut self, notice: &PauseNotice, governed: &[Did]) -> bool {
        let mut changed = false;
        for subject in governed {
            let by_issuer = self.subjects.entry(subject.clone()).or_default();
            match by_issuer.get(&notice.issuer) {
                Some((_, PauseAction::Revoke, _)) => {}
                Some((seq, _, _)) if *seq >= notice.seq => {}
                _ => {
                    by_issuer.insert(
                        notice.issuer.clone(),
                        (notice.seq, notice.action, notice.expires_at),
                    );
                    changed = true;
                }
            }
        }
        changed
    }

    /// Whether any obeyed issuer holds `did` paused or revoked at `now`.
    pub(crate) fn is_paused(&self, did: &Did, now: Timestamp) -> bool {
        self.subjects.get(did).is_some_and(|by_issuer| {
            by_issuer
                .values()
                .any(|(_, action, expires_at)| match action {
                    PauseAction::Resume => false,
                    PauseAction::Revoke => true,
                    _ => *expires_at > now,
                })
        })
    }
}

/// Whether a card's credentials name `issuer` as their issuer: the agent has put itself
/// under that gateway, which may then pause it. The credential's proof is not needed for
/// this: only the agent can put a credential in its own signed card, so a stranger cannot
/// make a node obey its notices about someone else's agent.
pub(crate) fn credential_issuer_is(data: &[u8], issuer: &Did) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return false;
    };
    let named = match value.get("issuer") {
        Some(serde_json::Value::String(s)) => Some(s.as_str()),
        Some(serde_json::Value::Object(o)) => o.get("id").and_then(|v| v.as_str()),
        _ => None,
    };
    named == Some(issuer.as_str())
}

/// An agent's answer to an intent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AgentReply {
    /// Completed, failed or declined.
    pub status: IntentStatus,
    /// The output (a JSON document) if completed.
    #[serde(default)]
    pub output: Option<serde_json::Value>,
    /// Why it failed or was declined.
    #[serde(default)]
    pub error: String,
    /// What it cost, if anything.
    #[serde(default)]
    pub cost: Option<Price>,
    /// Resources used.
    #[serde(default)]
    pub usage: Usage,
}

impl AgentReply {
    /// Completed with `output`.
    pub fn completed(output: serde_json::Value) -> Self {
        AgentReply {
            status: IntentStatus::Completed,
            output: Some(output),
            error: String::new(),
            cost: None,
            usage: Usage::default(),
        }
    }

    /// Attempted and failed, because of `error`.
    pub fn failed(error: impl Into<String>) -> Self {
        AgentReply {
            status: IntentStatus::Failed,
            output: None,
            error: error.into(),
            cost: None,
            usage: Usage::default(),
        }
    }

    /// Declined, because of `reason`.
    pub fn declined(reason: impl Into<String>) -> Self {
        AgentReply {
            status: IntentStatus::Declined,
            output: None,
            error: reason.into(),
            cost: None,
            usage: Usage::default(),
        }
    }

    /// With a cost.
    pub fn with_cost(mut self, cost: Price) -> Self {
        self.cost = Some(cost);
        self
    }
}

/// A boxed future, as [`IntentHandler`] returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Runs intents for an agent hosted in this process.
///
/// Any `Fn(Intent) -> impl Future<Output = AgentReply>` is a handler. The node calls it once
/// per admitted intent, on its own task, and gives up at the intent's deadline.
pub trait IntentHandler: Send + Sync + 'static {
    /// Runs `intent` and answers.
    fn handle(&self, intent: agentnet_protocol::Intent) -> BoxFuture<AgentReply>;
}

impl<F, Fut> IntentHandler for F
where
    F: Fn(agentnet_protocol::Intent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = AgentReply> + Send + 'static,
{
    fn handle(&self, intent: agentnet_protocol::Intent) -> BoxFuture<AgentReply> {
        Box::pin(self(intent))
    }
}

/// A request for budget before an intent is sent (`specs/intents.md#budgets`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveRequest {
    /// The intent's id, so the reservation and the intent can be matched.
    pub intent_id: IntentId,
    /// The agent that spends.
    pub agent: Did,
    /// The agent asked to act.
    pub callee: Did,
    /// The capability invoked.
    pub capability: String,
    /// The most the intent may cost (zero when the intent names no maximum).
    pub amount_micros: u64,
    /// The currency of `amount_micros`.
    pub currency: String,
    /// When the reservation lapses if never settled: the intent's deadline.
    pub expires_at_ms: u64,
}

/// A granted reservation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The gateway's id for it, quoted when settling.
    pub reservation_id: String,
}

/// How a reserved intent ended, to settle its reservation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettleRequest {
    /// The reservation.
    pub reservation_id: String,
    /// What was actually spent (zero if nothing was).
    pub amount_micros: u64,
}

/// Why a budget reservation was not granted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// The gateway refused: over budget, awaiting approval, paused or forbidden.
    #[error("the gateway refused the budget: {0}")]
    Denied(String),
    /// The gateway could not be reached or answered nonsense; the node fails closed.
    #[error("the gateway is unreachable, so nothing is sent: {0}")]
    Unavailable(String),
}

/// The gateway's side of budgets, as a sending node sees it.
pub trait BudgetGate: Send + Sync + 'static {
    /// Reserves budget for an intent before it is sent.
    fn reserve(&self, request: ReserveRequest) -> BoxFuture<Result<Reservation, BudgetError>>;
    /// Settles a reservation once the intent has ended. Settling is idempotent.
    fn settle(&self, request: SettleRequest) -> BoxFuture<Result<(), BudgetError>>;
}

/// The gateway's REST API: `POST {base}/api/v1/budgets/reserve` and `…/settle`, with the
/// node's API key as a bearer token.
#[derive(Clone, Debug)]
pub struct HttpBudgetGate {
    base: String,
    api_key: String,
    client: reqwest::Client,
}

/// The longest a budget call may take before the node gives up (and fails closed).
pub const BUDGET_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest gateway answer read.
const MAX_BUDGET_RESPONSE: usize = 64 * 1024;

impl HttpBudgetGate {
    /// A gate for the gateway at `base` (such as `http://127.0.0.1:8080`).
    pub fn new(base: impl Into<String>, api_key: impl Into<String>) -> Result<Self, BudgetError> {
        let client = reqwest::Client::builder()
            .timeout(BUDGET_TIMEOUT)
            .connect_timeout(BUDGET_TIMEOUT)
            .build()
            .map_err(|e| BudgetError::Unavailable(e.to_string()))?;
        Ok(HttpBudgetGate {
            base: base.into().trim_end_matches('/').to_owned(),
            api_key: api_key.into(),
            client,
        })
    }

    async fn post<T: Serialize>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<serde_json::Value, BudgetError> {
        let unavailable = |e: &dyn std::fmt::Display| BudgetError::Unavailable(e.to_string());
        let mut response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.api_key)
            .json(body)
            .send()
            .await
            .map_err(|e| unavailable(&e))?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| unavailable(&e))? {
            if bytes.len() + chunk.len() > MAX_BUDGET_RESPONSE {
                return Err(BudgetError::Unavailable(
                    "the gateway's answer is too large".into(),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if status.is_success() {
            return Ok(value);
        }
        let message = value
            .pointer("/error/message")
            .and_then(|m| m.as_str())
            .unwrap_or("")
            .to_owned();
        if status.is_server_error() {
            Err(BudgetError::Unavailable(format!("{status} {message}")))
        } else {
            Err(BudgetError::Denied(format!("{status} {message}")))
        }
    }
}

impl BudgetGate for HttpBudgetGate {
    fn reserve(&self, request: ReserveRequest) -> BoxFuture<Result<Reservation, BudgetError>> {
        let gate = self.clone();
        Box::pin(async move {
            let value = gate.post("/api/v1/budgets/reserve", &request).await?;
            serde_json::from_value(value).map_err(|e| {
                BudgetError::Unavailable(format!("the gateway's reservation is malformed: {e}"))
            })
        })
    }

    fn settle(&self, request: SettleRequest) -> BoxFuture<Result<(), BudgetError>> {
        let gate = self.clone();
        Box::pin(async move {
            gate.post("/api/v1/budgets/settle", &request)
                .await
                .map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentnet_protocol::Keypair;

    #[test]
    fn buckets_admit_the_burst_then_the_rate() {
        let mut limiter = RateLimiter::new(60, 5, 10);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(limiter.check(&1, t0));
        }
        assert!(!limiter.check(&1, t0), "the burst is spent");
        assert!(limiter.check(&2, t0), "another key has its own bucket");
        // 60/min is one token a second.
        assert!(!limiter.check(&1, t0 + Duration::from_millis(500)));
        assert!(limiter.check(&1, t0 + Duration::from_millis(1600)));
    }

    #[test]
    fn buckets_are_bounded_and_forget_idle_keys_first() {
        let mut limiter = RateLimiter::new(60, 1, 2);
        let t0 = Instant::now();
        assert!(limiter.check(&1, t0));
        assert!(limiter.check(&2, t0));
        // Both keys are limited: a third is refused rather than tracked.
        assert!(!limiter.check(&3, t0));
        // Once key 1 has refilled it is forgotten, making room.
        assert_eq!(limiter.allows(&3, t0), Admit::TableFull);
        assert_eq!(limiter.allows(&1, t0), Admit::Limited);
        assert!(limiter.check(&3, t0 + Duration::from_secs(2)));
        assert!(limiter.buckets.len() <= 2);
    }

    #[test]
    fn replays_are_caught_until_the_deadline_passes() {
        let mut cache: ReplayCache<u8> = ReplayCache::new(3, 2);
        let now = Timestamp::from_millis(1_000_000);
        let deadline = now.saturating_add(Duration::from_secs(60));
        let id = |n| IntentId([n; 16]);
        assert_eq!(
            cache.check(id(1), deadline, Some(&1), now),
            ReplayVerdict::Fresh
        );
        assert_eq!(
            cache.check(id(1), deadline, Some(&1), now),
            ReplayVerdict::Replay
        );
        assert_eq!(
            cache.check(id(1), deadline, Some(&2), now),
            ReplayVerdict::Replay,
            "whoever sends it again"
        );
        assert_eq!(
            cache.check(id(2), deadline, Some(&1), now),
            ReplayVerdict::Fresh
        );
        assert_eq!(
            cache.check(id(3), deadline, Some(&1), now),
            ReplayVerdict::SenderFull,
            "one sender holds at most its share"
        );
        assert_eq!(
            cache.check(id(3), deadline, Some(&2), now),
            ReplayVerdict::Fresh
        );
        assert_eq!(
            cache.check(id(4), deadline, Some(&3), now),
            ReplayVerdict::Full,
            "full of live entries: refused, not admitted unchecked"
        );
        let later = deadline.saturating_add(MAX_CLOCK_SKEW + Duration::from_secs(1));
        assert_eq!(
            cache.check(id(4), later, Some(&1), later),
            ReplayVerdict::Fresh
        );
        assert_eq!(cache.len(), 1, "expired entries were pruned");
        assert_eq!(cache.shares.get(&1), Some(&1), "and their shares returned");
        cache.restore(id(5), now, later);
        assert_eq!(
            cache.check(id(5), later, None, later),
            ReplayVerdict::Fresh,
            "a restored entry already past its deadline is not kept"
        );
        let mut cache: ReplayCache<u8> = ReplayCache::new(8, 8);
        cache.restore(id(6), deadline, now);
        assert_eq!(
            cache.check(id(6), deadline, Some(&1), now),
            ReplayVerdict::Replay,
            "a restored id is caught"
        );
    }

    #[test]
    fn pauses_follow_seq_and_revocation_is_final() {
        let gateway = Keypair::from_seed(&[1; 32]).did();
        let agent = Keypair::from_seed(&[2; 32]).did();
        let now = Timestamp::from_millis(1_000_000);
        let notice = |seq, action| PauseNotice {
            issuer: gateway.clone(),
            subjects: vec![agent.clone()],
            action,
            reason: String::new(),
            seq,
            issued_at: now,
            expires_at: now.saturating_add(Duration::from_secs(3600)),
        };
        let mut state = PauseState::default();
        assert!(state.apply(&notice(2, PauseAction::Pause), std::slice::from_ref(&agent)));
        assert!(state.is_paused(&agent, now));
        assert!(!state.apply(
            &notice(1, PauseAction::Resume),
            std::slice::from_ref(&agent)
        ));
        assert!(state.is_paused(&agent, now), "an older resume loses");
        assert!(state.apply(
            &notice(3, PauseAction::Resume),
            std::slice::from_ref(&agent)
        ));
        assert!(!state.is_paused(&agent, now));
        assert!(state.apply(
            &notice(4, PauseAction::Revoke),
            std::slice::from_ref(&agent)
        ));
        assert!(!state.apply(
            &notice(5, PauseAction::Resume),
            std::slice::from_ref(&agent)
        ));
        assert!(state.is_paused(&agent, now), "a revocation is final");
        assert!(
            state.is_paused(&agent, now.saturating_add(Duration::from_secs(7200))),
            "and outlives the notice's expiry"
        );
        let other = Keypair::from_seed(&[3; 32]).did();
        assert!(!state.is_paused(&other, now));
    }

    #[test]
    fn credential_issuer_is_read_from_the_json() {
        let gateway = Keypair::from_seed(&[1; 32]).did();
        let vc = format!(r#"{{"issuer":"{gateway}","credentialSubject":{{}}}}"#);
        assert!(credential_issuer_is(vc.as_bytes(), &gateway));
        let vc = format!(r#"{{"issuer":{{"id":"{gateway}"}}}}"#);
        assert!(credential_issuer_is(vc.as_bytes(), &gateway));
        assert!(!credential_issuer_is(b"not json", &gateway));
        let other = Keypair::from_seed(&[2; 32]).did();
        assert!(!credential_issuer_is(
            format!(r#"{{"issuer":"{other}"}}"#).as_bytes(),
            &gateway
        ));
    }
}
