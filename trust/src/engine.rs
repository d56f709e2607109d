//! The trust engine: one node's personalised view of every agent it has evidence about.

use std::collections::HashMap;

use agentnet_protocol::{
    Claim, ContentId, Did, IntentId, Outcome, Receipt, Timestamp, TrustAttestation,
};

use crate::config::TrustConfig;
use crate::evidence::{ReceiptPair, TrustError};
use crate::graph::Graph;
use crate::vector::{Observation, TrustVector};

const MS_PER_DAY: f64 = 86_400_000.0;

/// Bounds on what the engine holds. Evidence beyond them is refused with [`TrustError::Full`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Distinct agents. Default 2,000,000.
    pub agents: usize,
    /// Receipts kept to back attestations. Default 20,000,000.
    pub receipts: usize,
    /// Attestation claims (issuer, subject, capability). Default 20,000,000.
    pub claims: usize,
    /// Agent-wide claims by one issuer: bounds the work of one update. Default 4,096.
    pub claims_per_issuer: usize,
    /// Distinct capability names. Default 1,000,000.
    pub capabilities: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            agents: 2_000_000,
            receipts: 20_000_000,
            claims: 20_000_000,
            claims_per_issuer: 4096,
            capabilities: 1_000_000,
        }
    }
}

/// A subject's trust from this node's point of view.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct TrustScore {
    /// The score in [0, 1] used for ranking: the prior for an unknown agent, above it for a
    /// good record, below it for a bad one.
    pub score: f64,
    /// The subject's share of personalised EigenTrust mass: how much this node trusts it
    /// as an issuer of attestations.
    pub reputation: f64,
    /// What the network's trusted issuers say (weighted mean claim), if anything.
    pub opinion: Option<f64>,
    /// Effective evidence behind `opinion`.
    pub network_evidence: f64,
    /// This node's own observation of the subject, if any.
    pub direct: Option<TrustVector>,
    /// Evidence behind `direct`.
    pub direct_evidence: f64,
}

#[derive(Clone, Copy, Debug)]
struct ClaimState {
    /// The claim, cut back to what its receipts support.
    value: f64,
    /// The claim as the issuer made it; credibility judges this.
    stated: f64,
    evidence: f64,
    seq: u64,
    issued_at: Timestamp,
    expires_at: Timestamp,
}

#[derive(Clone, Copy, Debug)]
struct ReceiptInfo {
    intent: IntentId,
    caller: u32,
    callee: u32,
    issuer_is_callee: bool,
}

/// Capability-less key for agent-wide claims.
const AGENT_WIDE: u32 = u32::MAX;

/// One node's trust engine: direct observations from its own agents' receipts, attestations
/// gossiped by others, and personalised EigenTrust over the attestation graph, restarting
/// at the node's pre-trusted set.
///
/// Pure logic: every method takes the time as an argument.
#[derive(Debug)]
pub struct TrustEngine {
    config: TrustConfig,
    limits: Limits,
    index: HashMap<Did, u32>,
    dids: Vec<Did>,
    capabilities: HashMap<String, u32>,
    pre_trusted: Vec<u32>,
    graph: Graph,
    receipts: HashMap<ContentId, ReceiptInfo>,
    /// (issuer, subject, capability or AGENT_WIDE) → claim.
    claims: HashMap<(u32, u32, u32), ClaimState>,
    /// (subject, capability or AGENT_WIDE) → issuers with claims about it.
    incoming: HashMap<(u32, u32), Vec<u32>>,
    /// (subject, capability or AGENT_WIDE) → this node's own observation.
    direct: HashMap<(u32, u32), Observation>,
    /// (observer, subject) → what one of this node's agents observed; the basis of its edges.
    own_edges: HashMap<(u32, u32), Observation>,
    /// issuer → subjects of its agent-wide claims.
    outgoing: HashMap<u32, Vec<u32>>,
    /// issuer → credibility in [0, 1]; absent means not yet computed.
    credibility: HashMap<u32, f64>,
    /// Seqs of pruned claims, kept until a replay of them would have expired too.
    expired_seqs: HashMap<(u32, u32, u32), (u64, Timestamp)>,
}

impl TrustEngine {
    /// An engine whose pre-trusted set is `pre_trusted`: the node itself, its organisation's
    /// gateway and its agents.
    pub fn new(config: TrustConfig, pre_trusted: &[Did]) -> Self {
        Self::with_limits(config, Limits::default(), pre_trusted)
    }

    /// Like [`TrustEngine::new`], with explicit bounds.
    pub fn with_limits(config: TrustConfig, limits: Limits, pre_trusted: &[Did]) -> Self {
        let mut engine = TrustEngine {
            graph: Graph::new(config.restart, config.push_tolerance),
            config,
            limits,
            index: HashMap::new(),
            dids: Vec::new(),
            capabilities: HashMap::new(),
            pre_trusted: Vec::new(),
            receipts: HashMap::new(),
            claims: HashMap::new(),
            incoming: HashMap::new(),
            direct: HashMap::new(),
            own_edges: HashMap::new(),
            outgoing: HashMap::new(),
            credibility: HashMap::new(),
            expired_seqs: HashMap::new(),
        };
        engine.set_pre_trusted(pre_trusted);
        engine
    }

    /// Replaces the pre-trusted set and recomputes from scratch.
    pub fn set_pre_trusted(&mut self, dids: &[Did]) {
        let mut ids: Vec<u32> = dids.iter().filter_map(|d| self.intern(d).ok()).collect();
        ids.sort_unstable();
        ids.dedup();
        self.pre_trusted = ids;
        self.graph.set_source(&self.pre_trusted);
        self.credibility.clear();
        self.recompute();
    }

    /// The configuration.
    pub fn config(&self) -> &TrustConfig {
        &self.config
    }

    /// Number of agents known.
    pub fn agents(&self) -> usize {
        self.dids.len()
    }

    /// Number of edges in the trust graph.
    pub fn edges(&self) -> usize {
        self.graph.edge_count()
    }

    /// Power iterations the last full recompute took.
    pub fn iterations(&self) -> u32 {
        self.graph.iterations()
    }

    /// Residual pushes performed by incremental updates so far.
    pub fn pushes(&self) -> u64 {
        self.graph.pushes()
    }

    fn intern(&mut self, did: &Did) -> Result<u32, TrustError> {
        if let Some(&id) = self.index.get(did) {
            return Ok(id);
        }
        if self.dids.len() >= self.limits.agents.min(u32::MAX as usize - 1) {
            return Err(TrustError::Full {
                what: "agents",
                limit: self.limits.agents,
            });
        }
        let id = self.dids.len() as u32;
        self.index.insert(did.clone(), id);
        self.dids.push(did.clone());
        self.graph.ensure(id);
        Ok(id)
    }

    fn capability_id(&mut self, capability: Option<&str>) -> Result<u32, TrustError> {
        let Some(name) = capability else {
            return Ok(AGENT_WIDE);
        };
        if let Some(&id) = self.capabilities.get(name) {
            return Ok(id);
        }
        if self.capabilities.len() >= self.limits.capabilities {
            return Err(TrustError::Full {
                what: "capabilities",
                limit: self.limits.capabilities,
            });
        }
        let id = self.capabilities.len() as u32;
        self.capabilities.insert(name.to_owned(), id);
        Ok(id)
    }

    fn known_capability(&self, capability: Option<&str>) -> Option<u32> {
        match capability {
            None => Some(AGENT_WIDE),
            Some(name) => self.capabilities.get(name).copied(),
        }
    }

    /// Records the outcome of an intent sent by one of this node's agents (a pre-trusted
    /// DID; anyone else is refused with [`TrustError::NotOwn`]): updates the
    /// node's direct observation of the callee (agent-wide and for the capability), and the
    /// caller's edge to the callee in the trust graph.
    pub fn observe(&mut self, pair: &ReceiptPair, now: Timestamp) -> Result<(), TrustError> {
        let caller = match self.index.get(pair.caller()) {
            Some(&id) if self.pre_trusted.binary_search(&id).is_ok() => id,
            _ => {
                return Err(TrustError::NotOwn {
                    caller: pair.caller().clone(),
                });
            }
        };
        let callee = self.intern(pair.callee())?;
        let cap = self.capability_id(Some(pair.capability()))?;
        let signals = pair.signals();
        let weight = pair.weight(&self.config);
        let config = self.config;
        for key in [(callee, AGENT_WIDE), (callee, cap)] {
            self.direct
                .entry(key)
                .or_insert_with(|| Observation::new(&config, now))
                .update(&signals, weight, &config, now);
        }
        let edge = self
            .own_edges
            .entry((caller, callee))
            .or_insert_with(|| Observation::new(&config, now));
        edge.update(&signals, weight, &config, now);
        let value = edge.vector.aggregate(&config.weights);
        let claim = ClaimState {
            value,
            stated: value,
            evidence: edge.evidence,
            seq: 0,
            issued_at: now,
            expires_at: Timestamp::from_millis(u64::MAX),
        };
        self.put_claim(caller, callee, AGENT_WIDE, claim, true)?;
        // What others said about the callee can now be checked against what we saw.
        let issuers = self
            .incoming
            .get(&(callee, AGENT_WIDE))
            .cloned()
            .unwrap_or_default();
        for issuer in issuers {
            if issuer != caller {
                self.update_credibility(issuer);
            }
        }
        Ok(())
    }

    /// Keeps a verified receipt so that attestations citing it can be weighed.
    pub fn add_receipt(&mut self, id: ContentId, receipt: &Receipt) -> Result<(), TrustError> {
        if self.receipts.contains_key(&id) {
            return Ok(());
        }
        if self.receipts.len() >= self.limits.receipts {
            return Err(TrustError::Full {
                what: "receipts",
                limit: self.limits.receipts,
            });
        }
        let caller = self.intern(&receipt.caller)?;
        let callee = self.intern(&receipt.callee)?;
        self.receipts.insert(
            id,
            ReceiptInfo {
                intent: receipt.intent_id,
                caller,
                callee,
                issuer_is_callee: receipt.issuer == receipt.callee,
            },
        );
        Ok(())
    }

    /// Adds a verified attestation and updates trust incrementally.
    ///
    /// Only cited receipts that this node holds and that record an intent between the
    /// issuer and the subject back the claim; a receipt the subject signed counts fully, one
    /// only the issuer signed counts `receipt_weights.caller_only`. An attestation backed by
    /// none is refused ([`TrustError::Unbacked`]); one not newer than the held claim of the
    /// same issuer, subject and capability is refused ([`TrustError::Stale`]).
    pub fn add_attestation(
        &mut self,
        attestation: &TrustAttestation,
        now: Timestamp,
    ) -> Result<(), TrustError> {
        self.insert_attestation(attestation, now, true)
    }

    /// Adds many attestations, then recomputes once from scratch. Faster than one by one
    /// when loading a store or joining a network. Returns how many were refused.
    pub fn add_attestations<'a>(
        &mut self,
        attestations: impl IntoIterator<Item = &'a TrustAttestation>,
        now: Timestamp,
    ) -> usize {
        let refused = attestations
            .into_iter()
            .filter(|a| self.insert_attestation(a, now, false).is_err())
            .count();
        self.recompute();
        refused
    }

    fn insert_attestation(
        &mut self,
        attestation: &TrustAttestation,
        now: Timestamp,
        incremental: bool,
    ) -> Result<(), TrustError> {
        if attestation.expires_at <= now {
            return Err(TrustError::Expired {
                expires_at: attestation.expires_at,
            });
        }
        // A backed claim's parties are known from its receipts, so nothing is interned
        // before the claim is accepted: refused attestations leave no trace.
        let unbacked = || TrustError::Unbacked {
            issuer: attestation.issuer.clone(),
            subject: attestation.subject.clone(),
        };
        let issuer = *self.index.get(&attestation.issuer).ok_or_else(unbacked)?;
        let subject = *self.index.get(&attestation.subject).ok_or_else(unbacked)?;
        if self.own_edges.contains_key(&(issuer, subject)) {
            // One of our own agents' observations, echoed back by gossip: we already hold
            // the evidence first-hand.
            return Ok(());
        }
        let known_cap = self.known_capability(attestation.capability.as_deref());
        if let Some(cap) = known_cap {
            let held = self
                .claims
                .get(&(issuer, subject, cap))
                .map(|c| c.seq)
                .or_else(|| {
                    self.expired_seqs
                        .get(&(issuer, subject, cap))
                        .map(|(seq, _)| *seq)
                });
            if let Some(held) = held
                && attestation.seq <= held
            {
                return Err(TrustError::Stale {
                    seq: attestation.seq,
                    held,
                });
            }
        }
        // Each backed intent counts once, at the weight of its strongest receipt: one the
        // subject signed counts fully, one only the issuer signed counts less.
        let w = self.config.receipt_weights;
        let mut intents: Vec<(IntentId, f64)> = Vec::new();
        for id in &attestation.receipts {
            let Some(info) = self.receipts.get(id) else {
                continue;
            };
            let links = (info.caller == issuer && info.callee == subject)
                || (info.caller == subject && info.callee == issuer);
            if !links {
                continue;
            }
            let subject_signed = if info.issuer_is_callee {
                info.callee == subject
            } else {
                info.caller == subject
            };
            let weight = if subject_signed {
                w.both
            } else {
                w.caller_only
            };
            match intents.iter_mut().find(|(i, _)| *i == info.intent) {
                Some((_, best)) => *best = best.max(weight),
                None => intents.push((info.intent, weight)),
            }
        }
        let evidence: f64 = intents.iter().map(|(_, w)| w).sum();
        // The most an exponential moving average starting at the prior can move with this
        // evidence: a claim stronger than its receipts can support is cut back to it.
        let support = 1.0
            - intents
                .iter()
                .map(|(_, w)| 1.0 - (self.config.alpha * w).clamp(0.0, 1.0))
                .product::<f64>();
        if evidence <= 0.0 {
            return Err(TrustError::Unbacked {
                issuer: attestation.issuer.clone(),
                subject: attestation.subject.clone(),
            });
        }
        let value = match attestation.claim {
            Claim::Scores(s) => TrustVector {
                reliability: f64::from(s.reliability),
                honesty: f64::from(s.honesty),
                competence: f64::from(s.competence),
                timeliness: f64::from(s.timeliness),
            }
            .aggregate(&self.config.weights),
            Claim::Outcome(Outcome::Success) => 1.0,
            Claim::Outcome(Outcome::Failure | Outcome::Timeout) => 0.0,
            Claim::Outcome(_) => 0.5,
        };
        let prior = self.config.prior;
        let stated = value.clamp(0.0, 1.0);
        let supported = prior + (stated - prior).clamp(-support * prior, support * (1.0 - prior));
        let cap = match known_cap {
            Some(cap) => cap,
            None => self.capability_id(attestation.capability.as_deref())?,
        };
        let claim = ClaimState {
            value: supported.clamp(0.0, 1.0),
            stated,
            evidence: receipt_evidence(evidence, self.config.max_receipts_per_edge),
            seq: attestation.seq,
            issued_at: attestation.issued_at,
            expires_at: attestation.expires_at,
        };
        self.put_claim(issuer, subject, cap, claim, incremental)
    }

    fn put_claim(
        &mut self,
        issuer: u32,
        subject: u32,
        cap: u32,
        claim: ClaimState,
        incremental: bool,
    ) -> Result<(), TrustError> {
        let key = (issuer, subject, cap);
        if !self.claims.contains_key(&key) {
            if self.claims.len() >= self.limits.claims {
                return Err(TrustError::Full {
                    what: "claims",
                    limit: self.limits.claims,
                });
            }
            if cap == AGENT_WIDE {
                let out = self.outgoing.entry(issuer).or_default();
                if out.len() >= self.limits.claims_per_issuer {
                    return Err(TrustError::Full {
                        what: "claims per issuer",
                        limit: self.limits.claims_per_issuer,
                    });
                }
                out.push(subject);
            }
            self.incoming
                .entry((subject, cap))
                .or_default()
                .push(issuer);
        }
        self.claims.insert(key, claim);
        if cap == AGENT_WIDE {
            let weight = edge_weight(&claim);
            if incremental && !self.graph.is_dirty() {
                self.graph.set_edge(issuer, subject, weight);
                self.update_credibility(issuer);
            } else {
                // `recompute` refreshes every issuer's credibility once for the whole batch.
                self.graph.set_edge_deferred(issuer, subject, weight);
            }
        }
        Ok(())
    }

    /// How far the issuer's claims can be believed, from how much they overstate what this
    /// node saw first-hand (`specs/trust.md#credibility`). Pre-trusted issuers have 1.
    ///
    /// Over the subjects of the issuer's agent-wide claims that this node has observed
    /// itself, `inflation = Σ w·max(0, claim − direct) / Σ w`, shrunk towards
    /// `CREDIBILITY_PRIOR_INFLATION` with one pseudo-observation; credibility is
    /// `max(0, 1 − inflation / MAX_INFLATION)`. An issuer with no overlap gets 0.1.
    fn compute_credibility(&self, issuer: u32) -> f64 {
        if self.pre_trusted.binary_search(&issuer).is_ok() {
            return 1.0;
        }
        let (mut num, mut den) = (CREDIBILITY_PRIOR_INFLATION, 1.0);
        for &subject in self.outgoing.get(&issuer).map(Vec::as_slice).unwrap_or(&[]) {
            let (Some(claim), Some(direct)) = (
                self.claims.get(&(issuer, subject, AGENT_WIDE)),
                self.direct.get(&(subject, AGENT_WIDE)),
            ) else {
                continue;
            };
            if direct.evidence <= 0.0 {
                continue;
            }
            let seen = direct.vector.aggregate(&self.config.weights);
            let w = direct.evidence.min(1.0);
            num += w * (claim.stated - seen).max(0.0);
            den += w;
        }
        (1.0 - (num / den) / MAX_INFLATION).clamp(0.0, 1.0)
    }

    /// Recomputes one issuer's credibility and lets only that share of the trust passing
    /// through it follow its edges (the rest restarts at the pre-trusted set).
    fn update_credibility(&mut self, issuer: u32) {
        let credibility = self.compute_credibility(issuer);
        self.credibility.insert(issuer, credibility);
        self.graph.set_keep(issuer, credibility);
    }

    fn credibility_of(&self, issuer: u32) -> f64 {
        match self.credibility.get(&issuer) {
            Some(c) => *c,
            None => self.compute_credibility(issuer),
        }
    }

    /// Drops claims that have expired by `now` and removes their edges.
    pub fn prune(&mut self, now: Timestamp) {
        let expired: Vec<(u32, u32, u32)> = self
            .claims
            .iter()
            .filter(|(_, c)| c.expires_at <= now)
            .map(|(k, _)| *k)
            .collect();
        let mut issuers = Vec::new();
        for key @ (issuer, subject, cap) in expired {
            let Some(claim) = self.claims.remove(&key) else {
                continue;
            };
            // Remember the seq while a replay of an older attestation could still be valid.
            let replayable_until = claim
                .issued_at
                .saturating_add(agentnet_protocol::limits::MAX_ATTESTATION_LIFETIME);
            self.expired_seqs.insert(key, (claim.seq, replayable_until));
            if let Some(list) = self.incoming.get_mut(&(subject, cap)) {
                list.retain(|&i| i != issuer);
                if list.is_empty() {
                    self.incoming.remove(&(subject, cap));
                }
            }
            if cap == AGENT_WIDE {
                if let Some(out) = self.outgoing.get_mut(&issuer) {
                    out.retain(|&j| j != subject);
                    if out.is_empty() {
                        self.outgoing.remove(&issuer);
                    }
                }
                self.graph.set_edge(issuer, subject, 0.0);
                issuers.push(issuer);
            }
        }
        issuers.sort_unstable();
        issuers.dedup();
        for issuer in issuers {
            self.update_credibility(issuer);
        }
        self.expired_seqs.retain(|_, (_, until)| *until > now);
    }

    /// Defers trust-vector updates: edges change without residual pushes until the next
    /// [`TrustEngine::recompute`] (or [`TrustEngine::add_attestations`]). Scores read while
    /// deferred use the last computed vector.
    pub fn defer_updates(&mut self) {
        self.graph.mark_dirty();
    }

    /// L1 distance between the current trust vector and a fresh recompute: the error that
    /// incremental updates have accumulated. Costs a full recompute on a copy.
    pub fn recompute_error(&self) -> f64 {
        let mut fresh = self.graph.clone();
        fresh.recompute();
        (0..self.dids.len() as u32)
            .map(|v| (fresh.trust(v) - self.graph.trust(v)).abs())
            .sum()
    }

    /// Recomputes every issuer's credibility, then the trust vector from scratch (power
    /// iteration).
    pub fn recompute(&mut self) {
        self.graph.mark_dirty();
        let issuers: Vec<u32> = self.outgoing.keys().copied().collect();
        for issuer in issuers {
            self.update_credibility(issuer);
        }
        self.graph.recompute();
    }

    /// The subject's trust as of `now`, agent-wide (`capability = None`) or for one
    /// capability.
    ///
    /// `score = (κ·base + e·opinion + λ·k·direct) / (κ + e + λ·k)`, where `base` is the prior
    /// (agent-wide) or the agent-wide score (per capability), `e` the network evidence, `k`
    /// the direct evidence, `κ = prior_strength` and `λ = direct_strength`
    /// (`specs/trust.md#scores`).
    pub fn score(&self, subject: &Did, capability: Option<&str>, now: Timestamp) -> TrustScore {
        let prior = self.config.prior;
        let Some(&id) = self.index.get(subject) else {
            return TrustScore {
                score: prior,
                reputation: 0.0,
                opinion: None,
                network_evidence: 0.0,
                direct: None,
                direct_evidence: 0.0,
            };
        };
        let agent = self.score_for(id, AGENT_WIDE, prior, now);
        match capability {
            None => agent,
            Some(_) => match self.known_capability(capability) {
                Some(cap) => self.score_for(id, cap, agent.score, now),
                None => agent,
            },
        }
    }

    /// Ranks `candidates` for `capability`: by score, then, between equal scores, by
    /// reputation (an agent that trusted issuers vouch for before one only doubtful
    /// issuers vouch for). Highest first; equal on both keeps the input order.
    pub fn rank<'a>(
        &self,
        candidates: impl IntoIterator<Item = &'a Did>,
        capability: Option<&str>,
        now: Timestamp,
    ) -> Vec<(&'a Did, TrustScore)> {
        let mut ranked: Vec<(&Did, TrustScore)> = candidates
            .into_iter()
            .map(|did| (did, self.score(did, capability, now)))
            .collect();
        ranked.sort_by(|(_, a), (_, b)| compare_scores(b, a));
        ranked
    }

    fn score_for(&self, id: u32, cap: u32, base: f64, now: Timestamp) -> TrustScore {
        let cfg = &self.config;
        let (opinion, network_evidence) = self.opinion(id, cap, now);
        let direct = self.direct.get(&(id, cap)).map(|o| o.decayed(cfg, now));
        let (d, k) = direct
            .map(|o| (o.vector.aggregate(&cfg.weights), o.evidence))
            .unwrap_or((base, 0.0));
        let o = opinion.unwrap_or(base);
        let num = cfg.prior_strength * base + network_evidence * o + cfg.direct_strength * k * d;
        let den = cfg.prior_strength + network_evidence + cfg.direct_strength * k;
        TrustScore {
            score: if den > 0.0 {
                (num / den).clamp(0.0, 1.0)
            } else {
                base
            },
            reputation: self.graph.trust(id),
            opinion,
            network_evidence,
            direct: direct.map(|o| o.vector),
            direct_evidence: k,
        }
    }

    /// Mean claim about `(subject, cap)` weighted by each issuer's trust and evidence,
    /// and the effective evidence behind it. An issuer counts fully once its trust reaches
    /// what a pre-trusted agent receives by restart alone (`restart / |pre-trusted|`), and
    /// proportionally below that; the node's own agents always count fully.
    fn opinion(&self, subject: u32, cap: u32, now: Timestamp) -> (Option<f64>, f64) {
        let Some(issuers) = self.incoming.get(&(subject, cap)) else {
            return (None, 0.0);
        };
        let reference = self.config.restart / self.pre_trusted.len().max(1) as f64;
        let (mut num, mut den) = (0.0, 0.0);
        for &issuer in issuers {
            let Some(claim) = self.claims.get(&(issuer, subject, cap)) else {
                continue;
            };
            if claim.expires_at <= now {
                continue;
            }
            let standing = if self.pre_trusted.binary_search(&issuer).is_ok() {
                1.0
            } else {
                (self.graph.trust(issuer) / reference).min(1.0) * self.credibility_of(issuer)
            };
            let age_days =
                now.as_millis().saturating_sub(claim.issued_at.as_millis()) as f64 / MS_PER_DAY;
            let weight = standing * claim.evidence * self.config.daily_decay.powf(age_days);
            num += weight * claim.value;
            den += weight;
        }
        if den <= 1e-12 {
            (None, 0.0)
        } else {
            (Some(num / den), den)
        }
    }
}

/// Orders scores by value rounded to 1e-9 (so rounding noise does not decide), then by
/// reputation. A total order, as sorting requires.
pub(crate) fn compare_scores(a: &TrustScore, b: &TrustScore) -> std::cmp::Ordering {
    let key = |s: &TrustScore| (s.score * 1e9).round() as i64;
    key(a)
        .cmp(&key(b))
        .then_with(|| a.reputation.total_cmp(&b.reputation))
}

/// Evidence of `n` (weighted) receipts: `1 + ln(n)` for n ≥ 1, and `n` below, capped at
/// the value for `max` receipts. Logarithmic, so an issuer that fakes many intents with
/// the same subject gains little over one honest interaction.
fn receipt_evidence(n: f64, max: u32) -> f64 {
    let n = n.min(f64::from(max.max(1)));
    if n >= 1.0 { 1.0 + n.ln() } else { n }
}

/// Inflation assumed before any evidence: gives an issuer without overlap credibility 0.1.
const CREDIBILITY_PRIOR_INFLATION: f64 = 0.225;

/// Mean overstatement at which an issuer's credibility reaches 0.
const MAX_INFLATION: f64 = 0.25;

/// Local trust that an issuer's claim passes along the graph: its evidence times how far
/// the claimed value lies above neutral, `max(0, 2·value − 1)`. Claims at or below neutral
/// pass no trust, as in EigenTrust's `max(sat − unsat, 0)`.
fn edge_weight(claim: &ClaimState) -> f64 {
    claim.evidence * (2.0 * claim.value - 1.0).max(0.0)
}
