//! A seeded, deterministic simulator of attacks on trust, running the real [`TrustEngine`].
//!
//! Honest agents belong to organisations; each organisation runs one node whose engine is
//! pre-trusted with its own agents. Every round, each honest agent needs a capability,
//! ranks the agents that offer it by its node's trust scores, and sends an intent to one of
//! the top-ranked (or, with a small probability, to a random one, to explore). Outcomes
//! become receipts signed by both sides; every agent then publishes attestations about the
//! agents it used, backed by those receipts, and every node takes in the others'.
//!
//! Attackers:
//! - **malicious** agents offer capabilities and succeed only a fraction `f` of the time
//!   (camouflage), and always claim success in their own receipts;
//! - **colluding** malicious agents also run fake intents among themselves and attest to
//!   each other with perfect scores;
//! - a **sybil ring** of fresh identities joins after a warm-up, offers capabilities,
//!   fakes intents among itself and with one malicious **target**, and vouches for all;
//! - **whitewashing**: a malicious agent with a bad record returns under a fresh DID.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agentnet_protocol::{
    Claim, ContentId, Did, IntentId, Keypair, Outcome, Receipt, Timestamp, TrustAttestation,
    TrustScores,
};

use crate::config::TrustConfig;
use crate::engine::TrustEngine;
use crate::evidence::ReceiptPair;
use crate::vector::Observation;

/// What to simulate.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct SimConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Honest agents.
    pub honest: usize,
    /// Organisations (nodes) the honest agents are split over.
    pub orgs: usize,
    /// Malicious agents offering capabilities from the start.
    pub malicious: usize,
    /// Fraction of intents a malicious agent completes well (camouflage).
    pub malicious_success: f64,
    /// Whether the malicious agents fake intents among themselves and attest to each other.
    pub collusion: bool,
    /// Sybil identities joining at `sybil_join_round`, plus one malicious target they vouch for.
    pub sybils: usize,
    /// The round the sybil ring joins.
    pub sybil_join_round: usize,
    /// Distinct capabilities.
    pub capabilities: usize,
    /// Rounds; every honest agent sends one intent per round.
    pub rounds: usize,
    /// Probability of picking a random provider instead of a top-ranked one.
    pub explore: f64,
    /// How many of the top-ranked providers an agent picks among.
    pub pick_among: usize,
    /// Probability that an honest provider completes an intent well.
    pub honest_success: f64,
    /// Rounds before intents are counted towards the reported shares.
    pub warm_up_rounds: usize,
}

impl SimConfig {
    /// The baseline: 1,000 honest agents in 10 organisations, 20 capabilities, 30 rounds,
    /// no attackers.
    pub fn baseline(seed: u64) -> Self {
        SimConfig {
            seed,
            honest: 1000,
            orgs: 10,
            malicious: 0,
            malicious_success: 0.0,
            collusion: false,
            sybils: 0,
            sybil_join_round: 0,
            capabilities: 20,
            rounds: 30,
            explore: 0.05,
            pick_among: 5,
            honest_success: 0.95,
            warm_up_rounds: 0,
        }
    }

    /// Camouflage: 250 malicious agents (20% of providers) that do well a fraction `f` of the time.
    pub fn camouflage(seed: u64, f: f64) -> Self {
        SimConfig {
            malicious: 250,
            malicious_success: f,
            ..Self::baseline(seed)
        }
    }

    /// Camouflage plus collusion among the malicious agents.
    pub fn collusion(seed: u64, f: f64) -> Self {
        SimConfig {
            collusion: true,
            ..Self::camouflage(seed, f)
        }
    }

    /// A ring of 4,000 sybils joins after 10 rounds and vouches for a malicious target.
    pub fn sybil_ring(seed: u64) -> Self {
        SimConfig {
            sybils: 4000,
            sybil_join_round: 10,
            rounds: 25,
            ..Self::baseline(seed)
        }
    }

    /// Scales every population, and the number of capabilities, down by `factor`, so that
    /// each capability keeps about as many providers (for quick tests).
    pub fn scaled(mut self, factor: usize) -> Self {
        let f = factor.max(1);
        self.honest = (self.honest / f).max(self.orgs * 2);
        self.malicious /= f;
        self.sybils /= f;
        self.capabilities = (self.capabilities / f).max(1);
        self
    }
}

/// What a simulation measured.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SimReport {
    /// The configuration.
    pub config: SimConfig,
    /// Intents counted (after warm-up).
    pub intents: u64,
    /// Of those, intents sent to malicious agents, sybils or the target.
    pub to_malicious: u64,
    /// `to_malicious / intents`.
    pub malicious_share: f64,
    /// The share over the second half of the rounds.
    pub malicious_share_second_half: f64,
    /// The share in each round.
    pub malicious_share_by_round: Vec<f64>,
    /// Honest queries ranked after the sybil ring joined.
    pub sybil_queries: u64,
    /// Share of those with at most one sybil (or the target) in the top 10.
    pub share_at_most_one_sybil_in_top10: f64,
    /// The most sybils seen in one top 10.
    pub max_sybils_in_top10: usize,
    /// Queries whose top 10 held the sybils' malicious target.
    pub target_in_top10: u64,
    /// Whitewashing, measured at the end where malicious agents exist.
    pub whitewash: Option<Whitewash>,
    /// Wall-clock seconds.
    pub elapsed_s: f64,
}

/// A malicious agent with a bad record returns under a fresh DID.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Whitewash {
    /// The old DID's score.
    pub old_score: f64,
    /// The fresh DID's score.
    pub fresh_score: f64,
    /// The prior.
    pub prior: f64,
    /// The lowest score among known-good honest providers of the same capability.
    pub min_known_good_score: f64,
    /// How many known-good providers there are.
    pub known_good: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Honest(usize),
    Malicious,
    Sybil,
    Target,
}

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// What one agent has seen of another: the basis of its attestations.
struct Seen {
    observation: Observation,
    receipts: Vec<ContentId>,
    seq: u64,
    dirty: bool,
}

struct World {
    config: SimConfig,
    trust: TrustConfig,
    rng: Rng,
    dids: Vec<Did>,
    roles: Vec<Role>,
    offers: Vec<usize>,
    providers: Vec<Vec<usize>>,
    engines: Vec<TrustEngine>,
    seen: HashMap<(usize, usize), Seen>,
    receipts: Vec<(ContentId, Receipt)>,
    attestations: Vec<(Option<usize>, TrustAttestation)>,
    next_receipt: u64,
    now: Timestamp,
}

const START: Timestamp = Timestamp::from_millis(1_763_700_000_000);
const ROUND: Duration = Duration::from_secs(3600);
const TIME_ALLOWED_MS: u64 = 30_000;

fn capability(c: usize) -> String {
    format!("cap-{c}")
}

impl World {
    fn new(config: &SimConfig) -> Self {
        let mut rng = Rng(config.seed);
        let mut world = World {
            config: config.clone(),
            trust: TrustConfig::default(),
            rng: Rng(config.seed ^ 0xA5A5_5A5A),
            dids: Vec::new(),
            roles: Vec::new(),
            offers: Vec::new(),
            providers: vec![Vec::new(); config.capabilities.max(1)],
            engines: Vec::new(),
            seen: HashMap::new(),
            receipts: Vec::new(),
            attestations: Vec::new(),
            next_receipt: 0,
            now: START,
        };
        for i in 0..config.honest {
            world.add_agent(Role::Honest(i % config.orgs.max(1)), &mut rng);
        }
        for _ in 0..config.malicious {
            world.add_agent(Role::Malicious, &mut rng);
        }
        for org in 0..config.orgs.max(1) {
            let own: Vec<Did> = (0..world.dids.len())
                .filter(|&a| world.roles[a] == Role::Honest(org))
                .map(|a| world.dids[a].clone())
                .collect();
            world.engines.push(TrustEngine::new(world.trust, &own));
        }
        world
    }

    fn add_agent(&mut self, role: Role, rng: &mut Rng) -> usize {
        let mut seed = [0u8; 32];
        for chunk in seed.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        let id = self.dids.len();
        self.dids.push(Keypair::from_seed(&seed).did());
        self.roles.push(role);
        let cap = match role {
            Role::Target => 0,
            _ => rng.below(self.providers.len()),
        };
        self.offers.push(cap);
        self.providers[cap].push(id);
        id
    }

    fn is_bad(&self, agent: usize) -> bool {
        !matches!(self.roles[agent], Role::Honest(_))
    }

    fn receipt(
        &mut self,
        caller: usize,
        callee: usize,
        issuer: usize,
        outcome: Outcome,
        latency_ms: u64,
    ) -> (ContentId, Receipt) {
        self.next_receipt += 1;
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&self.next_receipt.to_le_bytes());
        id[8..16].copy_from_slice(&self.config.seed.to_le_bytes());
        let mut intent = [0u8; 16];
        intent[..8].copy_from_slice(&self.next_receipt.to_le_bytes());
        let receipt = Receipt {
            intent_id: IntentId(intent),
            caller: self.dids[caller].clone(),
            callee: self.dids[callee].clone(),
            capability: capability(self.offers[callee]),
            issuer: self.dids[issuer].clone(),
            outcome,
            latency_ms,
            time_allowed_ms: TIME_ALLOWED_MS,
            max_cost: None,
            cost: None,
            issued_at: self.now,
        };
        (ContentId(id), receipt)
    }

    /// Runs one intent from `caller` to `callee` with the given outcome as the caller saw it
    /// and as the callee claims it. Returns the receipt pair.
    fn interact(
        &mut self,
        caller: usize,
        callee: usize,
        seen_outcome: Outcome,
        claimed: Outcome,
    ) -> ReceiptPair {
        let latency = 1_000 + self.rng.below(10_000) as u64;
        let (caller_id, caller_receipt) =
            self.receipt(caller, callee, caller, seen_outcome, latency);
        let (callee_id, callee_receipt) = self.receipt(caller, callee, callee, claimed, latency);
        let mut callee_receipt = callee_receipt;
        callee_receipt.intent_id = caller_receipt.intent_id;
        self.receipts.push((caller_id, caller_receipt.clone()));
        self.receipts.push((callee_id, callee_receipt.clone()));
        let pair = match ReceiptPair::new(Some(caller_receipt), Some(callee_receipt)) {
            Ok(pair) => pair,
            Err(e) => unreachable!("the simulator builds matching receipts: {e}"),
        };
        let trust = self.trust;
        let now = self.now;
        let seen = self.seen.entry((caller, callee)).or_insert_with(|| Seen {
            observation: Observation::new(&trust, now),
            receipts: Vec::new(),
            seq: 0,
            dirty: false,
        });
        seen.observation
            .update(&pair.signals(), pair.weight(&trust), &trust, now);
        seen.receipts.push(caller_id);
        seen.receipts.push(callee_id);
        let keep = 2 * trust.max_receipts_per_edge as usize;
        if seen.receipts.len() > keep {
            seen.receipts.drain(..seen.receipts.len() - keep);
        }
        seen.dirty = true;
        pair
    }

    fn fake_intent(&mut self, from: usize, to: usize) {
        let _ = self.interact(from, to, Outcome::Success, Outcome::Success);
    }

    fn join_sybils(&mut self) {
        let mut rng = Rng(self.config.seed ^ 0x005e_ed0f_5b11);
        let target = self.add_agent(Role::Target, &mut rng);
        let first = self.dids.len();
        for _ in 0..self.config.sybils {
            self.add_agent(Role::Sybil, &mut rng);
        }
        let last = self.dids.len();
        for s in first..last {
            self.fake_intent(s, target);
            for _ in 0..4 {
                let other = first + self.rng.below(last - first);
                if other != s {
                    self.fake_intent(s, other);
                }
            }
        }
    }

    fn publish(&mut self) {
        let expires = self.now.saturating_add(Duration::from_secs(30 * 86_400));
        let mut out = Vec::new();
        for (&(observer, subject), seen) in self.seen.iter_mut().filter(|(_, s)| s.dirty) {
            seen.dirty = false;
            seen.seq += 1;
            let v = seen.observation.vector;
            let mut receipts = seen.receipts.clone();
            receipts.sort_unstable();
            receipts.dedup();
            let claim = if matches!(self.roles[observer], Role::Honest(_)) {
                Claim::Scores(TrustScores {
                    reliability: v.reliability as f32,
                    honesty: v.honesty as f32,
                    competence: v.competence as f32,
                    timeliness: v.timeliness as f32,
                })
            } else {
                // Attackers vouch with perfect scores whatever happened.
                Claim::Scores(TrustScores {
                    reliability: 1.0,
                    honesty: 1.0,
                    competence: 1.0,
                    timeliness: 1.0,
                })
            };
            let org = match self.roles[observer] {
                Role::Honest(org) => Some(org),
                _ => None,
            };
            out.push((
                org,
                TrustAttestation {
                    issuer: self.dids[observer].clone(),
                    subject: self.dids[subject].clone(),
                    capability: None,
                    claim,
                    receipts,
                    seq: seen.seq,
                    issued_at: self.now,
                    expires_at: expires,
                },
            ));
        }
        // HashMap order is not deterministic; sort so runs reproduce exactly.
        out.sort_by(|a, b| {
            (a.1.issuer.as_str(), a.1.subject.as_str())
                .cmp(&(b.1.issuer.as_str(), b.1.subject.as_str()))
        });
        self.attestations.extend(out);
    }

    /// Delivers the round's receipts and attestations to every node (its own agents'
    /// attestations excepted: it has those first-hand) and recomputes.
    fn deliver(&mut self) {
        let receipts = std::mem::take(&mut self.receipts);
        let attestations = std::mem::take(&mut self.attestations);
        for (org, engine) in self.engines.iter_mut().enumerate() {
            for (id, receipt) in &receipts {
                let _ = engine.add_receipt(*id, receipt);
            }
            let foreign = attestations
                .iter()
                .filter(|(o, _)| *o != Some(org))
                .map(|(_, a)| a);
            engine.add_attestations(foreign, self.now);
        }
    }

    fn rank(&mut self, org: usize, cap: usize, caller: usize) -> Vec<(usize, f64)> {
        let name = capability(cap);
        // Shuffle first, so that candidates equal on score and reputation come in random order.
        let mut candidates: Vec<(u64, usize)> = self.providers[cap]
            .iter()
            .filter(|&&p| p != caller)
            .map(|&p| (self.rng.next_u64(), p))
            .collect();
        candidates.sort_unstable();
        let engine = &self.engines[org];
        let mut ranked: Vec<(usize, crate::TrustScore)> = candidates
            .into_iter()
            .map(|(_, p)| (p, engine.score(&self.dids[p], Some(&name), self.now)))
            .collect();
        ranked.sort_by(|(_, a), (_, b)| crate::engine::compare_scores(b, a));
        ranked.into_iter().map(|(p, s)| (p, s.score)).collect()
    }
}

/// Runs a simulation and reports what it measured.
pub fn run(config: &SimConfig) -> SimReport {
    let started = Instant::now();
    let mut w = World::new(config);
    let honest: Vec<usize> = (0..config.honest).collect();
    let malicious: Vec<usize> = (config.honest..config.honest + config.malicious).collect();
    let (mut intents, mut to_bad, mut late_intents, mut late_bad) = (0u64, 0u64, 0u64, 0u64);
    let (mut sybil_queries, mut at_most_one, mut max_sybils, mut target_hits) =
        (0u64, 0u64, 0usize, 0u64);
    let mut sybils_joined = false;
    let mut by_round = Vec::with_capacity(config.rounds);
    for round in 0..config.rounds {
        let (mut round_intents, mut round_bad) = (0u64, 0u64);
        if config.sybils > 0 && round == config.sybil_join_round {
            w.join_sybils();
            sybils_joined = true;
            w.publish();
            w.deliver();
        }
        for engine in &mut w.engines {
            engine.defer_updates();
        }
        for &caller in &honest {
            let Role::Honest(org) = w.roles[caller] else {
                continue;
            };
            let cap = w.rng.below(w.providers.len());
            let ranked = w.rank(org, cap, caller);
            if ranked.is_empty() {
                continue;
            }
            if sybils_joined {
                let bad_in_top: usize = ranked
                    .iter()
                    .take(10)
                    .filter(|(p, _)| matches!(w.roles[*p], Role::Sybil | Role::Target))
                    .count();
                sybil_queries += 1;
                at_most_one += u64::from(bad_in_top <= 1);
                max_sybils = max_sybils.max(bad_in_top);
                target_hits += u64::from(
                    ranked
                        .iter()
                        .take(10)
                        .any(|(p, _)| w.roles[*p] == Role::Target),
                );
            }
            let callee = if w.rng.chance(config.explore) {
                ranked[w.rng.below(ranked.len())].0
            } else {
                ranked[w.rng.below(config.pick_among.min(ranked.len()))].0
            };
            let (seen, claimed) = match w.roles[callee] {
                Role::Honest(_) => {
                    let o = if w.rng.chance(config.honest_success) {
                        Outcome::Success
                    } else {
                        Outcome::Failure
                    };
                    (o, o)
                }
                Role::Malicious => {
                    let o = if w.rng.chance(config.malicious_success) {
                        Outcome::Success
                    } else {
                        Outcome::Failure
                    };
                    (o, Outcome::Success)
                }
                Role::Sybil | Role::Target => (Outcome::Failure, Outcome::Success),
            };
            let pair = w.interact(caller, callee, seen, claimed);
            let now = w.now;
            let _ = w.engines[org].observe(&pair, now);
            round_intents += 1;
            round_bad += u64::from(w.is_bad(callee));
            if round >= config.warm_up_rounds {
                intents += 1;
                to_bad += u64::from(w.is_bad(callee));
                if round >= config.rounds / 2 {
                    late_intents += 1;
                    late_bad += u64::from(w.is_bad(callee));
                }
            }
        }
        if config.collusion && malicious.len() > 1 {
            for &m in &malicious {
                for _ in 0..3 {
                    let other = malicious[w.rng.below(malicious.len())];
                    if other != m {
                        w.fake_intent(m, other);
                    }
                }
            }
        }
        if sybils_joined {
            // The ring keeps vouching: fresh fake intents every round.
            let first = config.honest + config.malicious + 1;
            let last = w.dids.len();
            let target = first - 1;
            for s in first..last {
                w.fake_intent(s, target);
            }
        }
        w.publish();
        w.deliver();
        w.now = w.now.saturating_add(ROUND);
        by_round.push(if round_intents == 0 {
            0.0
        } else {
            round_bad as f64 / round_intents as f64
        });
    }
    let whitewash = (config.malicious > 0).then(|| whitewash(&mut w, &malicious));
    let share = |bad: u64, all: u64| {
        if all == 0 {
            0.0
        } else {
            bad as f64 / all as f64
        }
    };
    SimReport {
        config: config.clone(),
        intents,
        to_malicious: to_bad,
        malicious_share: share(to_bad, intents),
        malicious_share_second_half: share(late_bad, late_intents),
        malicious_share_by_round: by_round,
        sybil_queries,
        share_at_most_one_sybil_in_top10: share(at_most_one, sybil_queries),
        max_sybils_in_top10: max_sybils,
        target_in_top10: target_hits,
        whitewash,
        elapsed_s: started.elapsed().as_secs_f64(),
    }
}

/// The worst-scored malicious agent (from organisation 0's view) returns under a fresh DID.
fn whitewash(w: &mut World, malicious: &[usize]) -> Whitewash {
    let now = w.now;
    let engine = &w.engines[0];
    let score =
        |agent: usize| engine.score(&w.dids[agent], Some(&capability(w.offers[agent])), now);
    let worst = malicious
        .iter()
        .copied()
        .min_by(|&a, &b| score(a).score.total_cmp(&score(b).score))
        .unwrap_or(0);
    let cap = w.offers[worst];
    let fresh = Keypair::from_seed(&[0xAB; 32]).did();
    let fresh_score = engine.score(&fresh, Some(&capability(cap)), now).score;
    let known_good: Vec<f64> = w.providers[cap]
        .iter()
        .filter(|&&p| matches!(w.roles[p], Role::Honest(_)))
        .map(|&p| score(p))
        .filter(|s| {
            s.network_evidence + s.direct_evidence >= 1.0 && s.score > engine.config().prior
        })
        .map(|s| s.score)
        .collect();
    Whitewash {
        old_score: score(worst).score,
        fresh_score,
        prior: engine.config().prior,
        min_known_good_score: known_good.iter().copied().fold(f64::INFINITY, f64::min),
        known_good: known_good.len(),
    }
}
