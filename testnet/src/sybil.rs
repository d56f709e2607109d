//! The sybil scenario: a ring of sybil nodes joins the network and vouches for a malicious
//! agent, with every intent really executed and every attestation really gossiped. Honest
//! nodes' trust ranking of the malicious agent is tracked round by round.
//!
//! The honest side: `workers` agents on the honest nodes offer one capability and do the
//! work; each honest node hosts a caller that, every round, searches for the capability on
//! its own node and sends an intent to the best result, or (with probability `explore`) to
//! a random result, then attests to the outcome, citing its receipt.
//!
//! The attack: `sybil_nodes` new nodes join, each dialling two honest nodes and the other
//! sybil nodes. One hosts the malicious agent, which offers the same capability with the
//! same description, completes the sybils' intents and fails honest callers'. The others
//! host `sybils_per_node` sybil agents each; every round, each sybil sends an intent to the
//! malicious agent and to another sybil, and publishes attestations with perfect scores for
//! both, citing the receipts of those intents.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use agentnet_discovery::SearchQuery;
use agentnet_node::{AgentReply, AgentSpec, IntentRequest, NodeHandle};
use agentnet_protocol::{
    Capability, Claim, ContentId, Did, Intent, Keypair, Outcome, SignedEnvelope, Timestamp,
    TrustAttestation, TrustScores,
};
use serde::Serialize;

use crate::{Member, Testnet, TestnetError};

/// The capability the honest workers and the malicious agent offer.
pub const CAPABILITY: &str = "translate-legal";
const DESCRIPTION: &str = "Translate legal contracts between English and German, keeping terms";
const QUERY: &str = "translate a legal contract from English to German";
/// How long a round's gossip is given to spread before the honest nodes are read.
const SETTLE: Duration = Duration::from_millis(300);
/// How long an attestation of the scenario stays valid.
const ATTESTATION_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// How the scenario is set up.
#[derive(Clone, Debug, Serialize)]
pub struct SybilConfig {
    /// Honest worker agents (at least 11, so that a top 10 can leave one out).
    pub workers: usize,
    /// Sybil nodes that join (at least 2: one hosts the malicious agent).
    pub sybil_nodes: usize,
    /// Sybil agents on each sybil node but the malicious agent's.
    pub sybils_per_node: usize,
    /// Rounds of the attack.
    pub rounds: usize,
    /// Probability that an honest caller tries a random search result instead of the best.
    pub explore: f64,
}

impl Default for SybilConfig {
    fn default() -> Self {
        SybilConfig {
            workers: 15,
            sybil_nodes: 3,
            sybils_per_node: 10,
            rounds: 20,
            explore: 0.3,
        }
    }
}

/// One round, as the honest nodes saw it at its end.
#[derive(Clone, Debug, Serialize)]
pub struct Round {
    /// The round.
    pub round: usize,
    /// Seconds since the attack began.
    pub at_s: f64,
    /// The malicious agent's best (lowest) trust rank over the honest nodes, counting
    /// every provider tied with it as ahead of it only if strictly better: 1 + the number
    /// of providers ranked strictly above it (score, then reputation).
    pub best_rank: usize,
    /// The median of those ranks.
    pub median_rank: usize,
    /// The malicious agent's mean trust score on honest nodes.
    pub malicious_score: f64,
    /// The mean trust score of the honest workers on honest nodes.
    pub worker_score: f64,
    /// Honest nodes whose search for the capability put the malicious agent in its top 10.
    pub in_search_top_10: usize,
    /// Intents honest callers sent to the malicious agent this round.
    pub honest_intents_to_malicious: usize,
}

/// What the scenario measured.
#[derive(Clone, Debug, Serialize)]
pub struct Sybil {
    /// The setup.
    pub config: SybilConfig,
    /// Honest nodes.
    pub honest_nodes: usize,
    /// Sybil agents.
    pub sybils: usize,
    /// Intents the sybils sent (all executed).
    pub sybil_intents: usize,
    /// Attestations the sybils published.
    pub sybil_attestations: usize,
    /// Intents the honest callers sent.
    pub honest_intents: usize,
    /// The malicious agent's best trust rank on any honest node in any round.
    pub best_rank_ever: usize,
    /// Whether it ever entered the top 10 of an honest node's trust ranking.
    pub entered_top_10: bool,
    /// Whether it ever entered the top 10 of an honest node's search results.
    pub entered_search_top_10: bool,
    /// Round by round.
    pub rounds: Vec<Round>,
}

fn node_err(index: usize) -> impl Fn(agentnet_node::NodeError) -> TestnetError {
    move |source| TestnetError::Node { index, source }
}

fn spec(name: &str, capability: &str, description: &str) -> AgentSpec {
    AgentSpec::new(
        name,
        description,
        vec![Capability {
            name: capability.into(),
            description: description.into(),
            tags: vec!["legal".into()],
            version: "1".into(),
            price: None,
        }],
    )
}

fn key() -> Result<Keypair, TestnetError> {
    Keypair::generate().map_err(|e| TestnetError::Invalid(e.to_string()))
}

/// Signs and publishes `issuer`'s attestation about `subject`.
#[allow(clippy::too_many_arguments)]
async fn attest(
    node: &NodeHandle,
    index: usize,
    issuer: &Keypair,
    subject: &Did,
    capability: &str,
    claim: Claim,
    receipt: ContentId,
    seq: u64,
) -> Result<(), TestnetError> {
    let now = Timestamp::now();
    let attestation = TrustAttestation {
        issuer: issuer.did(),
        subject: subject.clone(),
        capability: Some(capability.to_owned()),
        claim,
        receipts: vec![receipt],
        seq,
        issued_at: now,
        expires_at: now.saturating_add(ATTESTATION_LIFETIME),
    };
    let envelope = SignedEnvelope::seal(issuer, &attestation)
        .map_err(|e| TestnetError::Invalid(e.to_string()))?;
    node.publish(&envelope).await.map_err(node_err(index))
}

const PERFECT: Claim = Claim::Scores(TrustScores {
    reliability: 1.0,
    honesty: 1.0,
    competence: 1.0,
    timeliness: 1.0,
});

/// The malicious agent's conservative rank on `node` among `providers` (itself included).
/// Whether `node` holds the card of every one of `dids`.
fn holds_all(node: &NodeHandle, dids: &[Did]) -> bool {
    dids.iter().all(|d| node.agent(d).ok().flatten().is_some())
}

fn rank_of(node: &NodeHandle, malicious: &Did, providers: &[Did]) -> (usize, f64, f64) {
    let m = node.trust(malicious, Some(CAPABILITY));
    let mut ahead = 0;
    let mut worker_sum = 0.0;
    let mut workers = 0usize;
    for did in providers.iter().filter(|d| *d != malicious) {
        let s = node.trust(did, Some(CAPABILITY));
        worker_sum += s.score;
        workers += 1;
        let better = (s.score * 1e9).round() > (m.score * 1e9).round()
            || ((s.score * 1e9).round() == (m.score * 1e9).round() && s.reputation > m.reputation);
        if better {
            ahead += 1;
        }
    }
    (ahead + 1, m.score, worker_sum / workers.max(1) as f64)
}

/// Runs the scenario on `net`, whose running nodes are the honest ones.
pub async fn sybil(net: &mut Testnet, config: SybilConfig) -> Result<Sybil, TestnetError> {
    if config.workers < 11 || config.sybil_nodes < 2 || config.rounds == 0 {
        return Err(TestnetError::Invalid(
            "the sybil scenario needs at least 11 workers, 2 sybil nodes and 1 round".into(),
        ));
    }
    let honest = net.up();
    if honest.len() < 2 {
        return Err(TestnetError::Invalid("it needs two honest nodes".into()));
    }
    // Honest workers and callers.
    let mut providers = Vec::new();
    for w in 0..config.workers {
        let i = honest[net.rng().below(honest.len())];
        let h = net.local(i)?.clone();
        let did = h
            .register_agent(spec(&format!("worker-{w}"), CAPABILITY, DESCRIPTION))
            .await
            .map_err(node_err(i))?;
        h.serve(&did, |intent: Intent| async move {
            AgentReply::completed(serde_json::json!({ "translated": intent.input.len() }))
        })
        .map_err(node_err(i))?;
        providers.push(did);
    }
    let mut callers = Vec::new();
    for &i in &honest {
        let caller_key = key()?;
        let did = net
            .local(i)?
            .register_agent_with_key(
                caller_key.clone(),
                spec("client", "request-translation", "Asks for translations"),
            )
            .await
            .map_err(node_err(i))?;
        callers.push((i, did, caller_key));
    }
    let workers = providers.clone();
    net.wait_all(
        Duration::from_secs(60),
        "the workers' cards",
        async |h: &Member| h.local().is_some_and(|h| holds_all(h, &workers)),
    )
    .await?;
    // Warm-up: every honest caller tries every worker once.
    let mut honest_intents = 0;
    for (i, caller, _) in &callers {
        let h = net.local(*i)?.clone();
        for worker in &providers {
            let outcome = h
                .send_intent(IntentRequest::new(
                    caller.clone(),
                    worker.clone(),
                    CAPABILITY,
                    serde_json::json!({ "text": "warm-up" }),
                ))
                .await
                .map_err(node_err(*i))?;
            honest_intents += 1;
            if outcome.outcome != Outcome::Success {
                return Err(TestnetError::Invalid(format!(
                    "an honest warm-up intent failed: {:?}",
                    outcome.error
                )));
            }
        }
    }

    // The sybil ring joins.
    let mut sybil_nodes = Vec::new();
    for _ in 0..config.sybil_nodes {
        let i = net
            .add_node_with(|c| {
                c.intents.per_minute = 100_000;
                c.intents.burst = 100_000;
            })
            .await?;
        for _ in 0..2 {
            let target = honest[net.rng().below(honest.len())];
            net.connect(i, target).await?;
        }
        for &j in &sybil_nodes {
            net.connect(i, j).await?;
        }
        sybil_nodes.push(i);
    }
    let edges: Vec<(usize, usize)> = net
        .edges()
        .iter()
        .copied()
        .filter(|(a, b)| sybil_nodes.contains(a) || sybil_nodes.contains(b))
        .collect();
    net.wait_connected(&edges, Duration::from_secs(30)).await?;
    net.wait_gossip(Duration::from_secs(30)).await?;
    let host = sybil_nodes[0];
    let malicious_key = key()?;
    let malicious = net
        .local(host)?
        .register_agent_with_key(
            malicious_key,
            spec("fast-legal-translations", CAPABILITY, DESCRIPTION),
        )
        .await
        .map_err(node_err(host))?;
    let mut sybil_set: HashSet<Did> = HashSet::new();
    let mut sybils = Vec::new();
    for &i in &sybil_nodes[1..] {
        for s in 0..config.sybils_per_node {
            let k = key()?;
            let did = net
                .local(i)?
                .register_agent_with_key(
                    k.clone(),
                    spec(&format!("sybil-{s}"), "vouch", "Vouches for its friends"),
                )
                .await
                .map_err(node_err(i))?;
            net.local(i)?
                .serve(&did, |_intent: Intent| async move {
                    AgentReply::completed(serde_json::json!({ "ok": true }))
                })
                .map_err(node_err(i))?;
            sybil_set.insert(did.clone());
            sybils.push((i, did, k));
        }
    }
    {
        let sybil_set = sybil_set.clone();
        net.local(host)?
            .serve(&malicious, move |intent: Intent| {
                let friend = sybil_set.contains(&intent.from);
                async move {
                    if friend {
                        AgentReply::completed(serde_json::json!({ "translated": true }))
                    } else {
                        AgentReply::failed("could not translate")
                    }
                }
            })
            .map_err(node_err(host))?;
    }
    let mut everyone: Vec<Did> = sybils.iter().map(|(_, d, _)| d.clone()).collect();
    everyone.push(malicious.clone());
    net.wait_all(
        Duration::from_secs(60),
        "the sybils' cards",
        async |h: &Member| h.local().is_some_and(|h| holds_all(h, &everyone)),
    )
    .await?;
    providers.push(malicious.clone());

    let started = Instant::now();
    let mut rounds = Vec::with_capacity(config.rounds);
    let mut sybil_intents = 0;
    let mut sybil_attestations = 0;
    for round in 0..config.rounds {
        let seq = round as u64 + 1;
        // The sybils vouch, with receipts of intents that really ran.
        for (n, (i, did, k)) in sybils.iter().enumerate() {
            let h = net.local(*i)?.clone();
            let (_, friend, _) = &sybils[(n + 1) % sybils.len()];
            for (to, capability) in [(&malicious, CAPABILITY), (friend, "vouch")] {
                let outcome = h
                    .send_intent(IntentRequest::new(
                        did.clone(),
                        to.clone(),
                        capability,
                        serde_json::json!({ "round": round }),
                    ))
                    .await
                    .map_err(node_err(*i))?;
                sybil_intents += 1;
                attest(&h, *i, k, to, capability, PERFECT, outcome.receipt, seq).await?;
                sybil_attestations += 1;
            }
        }
        // The honest callers work, and say how it went.
        let mut to_malicious = 0;
        for (i, caller, k) in &callers {
            let h = net.local(*i)?.clone();
            let mut query = SearchQuery::new(QUERY, 25);
            query.tags = vec!["legal".into()];
            let hits: Vec<Did> = h
                .search(&query)
                .map_err(node_err(*i))?
                .hits
                .into_iter()
                .filter(|hit| hit.capability == CAPABILITY)
                .map(|hit| hit.did)
                .collect();
            if hits.is_empty() {
                continue;
            }
            let explore = (net.rng().next_u64() as f64 / u64::MAX as f64) < config.explore;
            let to = if explore {
                hits[net.rng().below(hits.len())].clone()
            } else {
                hits[0].clone()
            };
            if to == malicious {
                to_malicious += 1;
            }
            let outcome = h
                .send_intent(IntentRequest::new(
                    caller.clone(),
                    to.clone(),
                    CAPABILITY,
                    serde_json::json!({ "text": "contract", "round": round }),
                ))
                .await
                .map_err(node_err(*i))?;
            honest_intents += 1;
            attest(
                &h,
                *i,
                k,
                &to,
                CAPABILITY,
                Claim::Outcome(outcome.outcome),
                outcome.receipt,
                seq,
            )
            .await?;
        }
        // Let this round's attestations spread before looking.
        tokio::time::sleep(SETTLE).await;
        let mut ranks = Vec::new();
        let mut m_scores = 0.0;
        let mut w_scores = 0.0;
        let mut in_top = 0;
        for &i in &honest {
            let h = net.local(i)?;
            let (rank, m, w) = rank_of(h, &malicious, &providers);
            ranks.push(rank);
            m_scores += m;
            w_scores += w;
            let mut query = SearchQuery::new(QUERY, 10);
            query.tags = vec!["legal".into()];
            if h.search(&query)
                .map_err(node_err(i))?
                .hits
                .iter()
                .any(|hit| hit.did == malicious)
            {
                in_top += 1;
            }
        }
        ranks.sort_unstable();
        rounds.push(Round {
            round,
            at_s: started.elapsed().as_secs_f64(),
            best_rank: ranks[0],
            median_rank: ranks[ranks.len() / 2],
            malicious_score: m_scores / honest.len() as f64,
            worker_score: w_scores / honest.len() as f64,
            in_search_top_10: in_top,
            honest_intents_to_malicious: to_malicious,
        });
    }
    let best_rank_ever = rounds
        .iter()
        .map(|r| r.best_rank)
        .min()
        .unwrap_or(usize::MAX);
    Ok(Sybil {
        honest_nodes: honest.len(),
        sybils: sybils.len(),
        sybil_intents,
        sybil_attestations,
        honest_intents,
        best_rank_ever,
        entered_top_10: best_rank_ever <= 10,
        entered_search_top_10: rounds.iter().any(|r| r.in_search_top_10 > 0),
        rounds,
        config,
    })
}
