//! Trust benchmarks: the attack suite and aggregation speed.

use std::time::Instant;

use agentnet_protocol::{
    Claim, ContentId, IntentId, Keypair, Outcome, Receipt, Timestamp, TrustAttestation, TrustScores,
};
use agentnet_trust::sim::{self, SimConfig, SimReport};
use agentnet_trust::{TrustConfig, TrustEngine};

/// The bars of the trust issue.
pub const SYBIL_BAR: f64 = 0.99;
/// At most this share of intents may go to malicious agents.
pub const MALICIOUS_BAR: f64 = 0.10;

/// Results of the attack suite, and which bars failed.
#[derive(Debug, serde::Serialize)]
pub struct AttackSuite {
    /// Every scenario's report.
    pub runs: Vec<(String, SimReport)>,
    /// Bars that were not met, with the figure reached.
    pub failures: Vec<String>,
}

impl AttackSuite {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "scenario            intents  to_malicious  share   2nd_half  sybil<=1_in_top10  max_sybils  target_in_top10  whitewash(fresh/prior/min_good/old)  secs\n",
        );
        for (name, r) in &self.runs {
            let ww = r
                .whitewash
                .as_ref()
                .map(|w| {
                    format!(
                        "{:.3}/{:.3}/{:.3}/{:.3}",
                        w.fresh_score, w.prior, w.min_known_good_score, w.old_score
                    )
                })
                .unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "{name:<19} {:>7}  {:>12}  {:.4}  {:.4}    {:>17.4}  {:>10}  {:>15}  {ww:<36} {:.1}\n",
                r.intents,
                r.to_malicious,
                r.malicious_share,
                r.malicious_share_second_half,
                r.share_at_most_one_sybil_in_top10,
                r.max_sybils_in_top10,
                r.target_in_top10,
                r.elapsed_s
            ));
        }
        for f in &self.failures {
            out.push_str(&format!("FAILED: {f}\n"));
        }
        out
    }
}

/// Runs the chosen scenarios at `1/scale` of the sizes and checks the bars.
pub fn attack_suite(
    seed: u64,
    scale: usize,
    sybil: bool,
    camouflage: bool,
    collusion: bool,
) -> AttackSuite {
    let mut runs = Vec::new();
    if sybil {
        runs.push((
            "sybil-ring".to_string(),
            sim::run(&SimConfig::sybil_ring(seed).scaled(scale)),
        ));
    }
    for f in [0.3, 0.5, 0.7] {
        if camouflage {
            runs.push((
                format!("camouflage f={f}"),
                sim::run(&SimConfig::camouflage(seed, f).scaled(scale)),
            ));
        }
        if collusion {
            runs.push((
                format!("collusion f={f}"),
                sim::run(&SimConfig::collusion(seed, f).scaled(scale)),
            ));
        }
    }
    let failures = check(&runs);
    AttackSuite { runs, failures }
}

/// The bars, applied to a set of runs.
pub fn check(runs: &[(String, SimReport)]) -> Vec<String> {
    let mut failures = Vec::new();
    for (name, r) in runs {
        if r.config.sybils > 0 && r.share_at_most_one_sybil_in_top10 < SYBIL_BAR {
            failures.push(format!(
                "{name}: {:.4} of queries had at most one sybil in the top 10 (bar {SYBIL_BAR})",
                r.share_at_most_one_sybil_in_top10
            ));
        }
        if r.config.malicious > 0 && r.malicious_share > MALICIOUS_BAR {
            failures.push(format!(
                "{name}: {:.4} of intents went to malicious agents (bar {MALICIOUS_BAR})",
                r.malicious_share
            ));
        }
        if let Some(w) = &r.whitewash {
            if (w.fresh_score - w.prior).abs() > 1e-9 {
                failures.push(format!(
                    "{name}: a fresh DID scored {} instead of the prior {}",
                    w.fresh_score, w.prior
                ));
            }
            if w.known_good > 0 && w.fresh_score > w.min_known_good_score {
                failures.push(format!(
                    "{name}: a fresh DID ({}) ranks above a known-good agent ({})",
                    w.fresh_score, w.min_known_good_score
                ));
            }
        }
    }
    failures
}

/// Aggregation speed figures.
#[derive(Debug, serde::Serialize)]
pub struct AggregateReport {
    /// Agents.
    pub agents: usize,
    /// Attestations loaded.
    pub attestations: usize,
    /// Attestations refused (should be 0).
    pub refused: usize,
    /// Edges in the trust graph.
    pub edges: usize,
    /// Seconds to insert the receipts.
    pub receipts_s: f64,
    /// Seconds to insert every attestation and compute trust from scratch.
    pub from_scratch_s: f64,
    /// Seconds of one full recompute (power iteration) alone: the baseline an incremental
    /// update is compared against.
    pub full_recompute_s: f64,
    /// Power iterations of the full recompute.
    pub iterations: u32,
    /// Incremental update latency, one new attestation each.
    pub incremental_p50_ms: f64,
    /// p99 of the same.
    pub incremental_p99_ms: f64,
    /// Max of the same.
    pub incremental_max_ms: f64,
    /// `full_recompute_s / incremental p50`: how much cheaper an incremental update is.
    pub incremental_speedup: f64,
    /// L1 distance between the incrementally updated trust vector and a fresh recompute.
    pub incremental_l1_error: f64,
}

/// Builds `attestations` random attestations among `agents` agents, each backed by a receipt
/// signed by its subject, and measures loading, full recompute and incremental updates.
pub fn aggregate(agents: usize, attestations: usize, updates: usize, seed: u64) -> AggregateReport {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let agents = agents.max(2);
    let dids: Vec<_> = (0..agents)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            Keypair::from_seed(&seed).did()
        })
        .collect();
    let now = Timestamp::from_millis(1_763_700_000_000);
    let expires = Timestamp::from_millis(now.as_millis() + 30 * 86_400_000);
    let make = |k: u64, issuer: usize, subject: usize, value: f32| {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&k.to_le_bytes());
        let receipt = Receipt {
            intent_id: IntentId([0; 16]),
            caller: dids[issuer].clone(),
            callee: dids[subject].clone(),
            capability: "work".into(),
            issuer: dids[subject].clone(),
            outcome: Outcome::Success,
            latency_ms: 100,
            time_allowed_ms: 1000,
            max_cost: None,
            cost: None,
            issued_at: now,
        };
        let attestation = TrustAttestation {
            issuer: dids[issuer].clone(),
            subject: dids[subject].clone(),
            capability: None,
            claim: Claim::Scores(TrustScores {
                reliability: value,
                honesty: value,
                competence: value,
                timeliness: value,
            }),
            receipts: vec![ContentId(id)],
            seq: k + 1,
            issued_at: now,
            expires_at: expires,
        };
        (ContentId(id), receipt, attestation)
    };
    let mut data = Vec::with_capacity(attestations);
    for k in 0..attestations as u64 {
        let issuer = (next() % agents as u64) as usize;
        let mut subject = (next() % agents as u64) as usize;
        if subject == issuer {
            subject = (subject + 1) % agents;
        }
        let value = (next() % 1000) as f32 / 1000.0;
        data.push(make(k, issuer, subject, value));
    }
    let pre_trusted: Vec<_> = dids[..10.min(agents)].to_vec();
    let mut engine = TrustEngine::new(TrustConfig::default(), &pre_trusted);

    let started = Instant::now();
    for (id, receipt, _) in &data {
        let _ = engine.add_receipt(*id, receipt);
    }
    let receipts_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let refused = engine.add_attestations(data.iter().map(|(_, _, a)| a), now);
    let from_scratch_s = started.elapsed().as_secs_f64() + receipts_s;

    let started = Instant::now();
    engine.recompute();
    let full_recompute_s = started.elapsed().as_secs_f64();
    let iterations = engine.iterations();

    let mut latencies = Vec::with_capacity(updates);
    for k in 0..updates as u64 {
        let issuer = (next() % agents as u64) as usize;
        let subject = (issuer + 1 + (next() % (agents as u64 - 1)) as usize) % agents;
        let value = (next() % 1000) as f32 / 1000.0;
        let (id, receipt, attestation) = make(
            attestations as u64 + 10 * k + 5_000_000_000,
            issuer,
            subject,
            value,
        );
        let _ = engine.add_receipt(id, &receipt);
        let started = Instant::now();
        let _ = engine.add_attestation(&attestation, now);
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let incremental_l1_error = engine.recompute_error();
    latencies.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let p50 = pct(0.5);
    AggregateReport {
        agents,
        attestations,
        refused,
        edges: engine.edges(),
        receipts_s,
        from_scratch_s,
        full_recompute_s,
        iterations,
        incremental_p50_ms: p50,
        incremental_p99_ms: pct(0.99),
        incremental_max_ms: latencies.last().copied().unwrap_or(0.0),
        incremental_speedup: if p50 > 0.0 {
            full_recompute_s * 1000.0 / p50
        } else {
            0.0
        },
        incremental_l1_error,
    }
}
