//! Measurements over a running [`Testnet`]: card propagation, late-joiner convergence,
//! intent round trips, and the memory of a node holding many agents.

use std::time::{Duration, Instant};

use agentnet_node::{AgentReply, IntentRequest, Node, NodeConfig};
use agentnet_protocol::limits::MAX_CARD_LIFETIME;
use agentnet_protocol::{AgentCard, Intent, Keypair, Outcome, SignedEnvelope, Timestamp};
use serde::Serialize;

use crate::catalog::CatalogEntry;
use crate::{Testnet, TestnetError, wait_until};

/// Percentiles of a set of durations, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stats {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// Nearest-rank percentiles of `samples`.
pub fn stats(samples: &[Duration]) -> Stats {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if ms.is_empty() {
            return 0.0;
        }
        let rank = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
        ms[rank - 1]
    };
    Stats {
        count: ms.len(),
        p50_ms: at(0.50),
        p95_ms: at(0.95),
        p99_ms: at(0.99),
        max_ms: ms.last().copied().unwrap_or(0.0),
        mean_ms: if ms.is_empty() {
            0.0
        } else {
            ms.iter().sum::<f64>() / ms.len() as f64
        },
    }
}

/// How fast cards spread.
#[derive(Clone, Debug, Serialize)]
pub struct Propagation {
    /// Cards registered before measuring (excluded).
    pub warmup: usize,
    /// From the call that registers an agent on a random node (including that node's
    /// durable commit) until every node holds its card.
    pub to_all_nodes: Stats,
    /// Cards measured.
    pub samples: usize,
}

/// Registers `warmup + cards` agents from `catalog` on seeded random nodes, one at a time,
/// and times each until every node holds its card.
pub async fn propagation(
    net: &mut Testnet,
    catalog: &[CatalogEntry],
    warmup: usize,
    cards: usize,
) -> Result<Propagation, TestnetError> {
    if catalog.is_empty() {
        return Err(TestnetError::Invalid("the catalog is empty".into()));
    }
    let mut samples = Vec::with_capacity(cards);
    for i in 0..warmup + cards {
        let n = net.len();
        let origin = net.rng().below(n);
        let entry = &catalog[i % catalog.len()];
        let started = Instant::now();
        let did = net
            .node(origin)
            .register_agent(entry.agent())
            .await
            .map_err(|source| TestnetError::Node {
                index: origin,
                source,
            })?;
        net.wait_all(
            Duration::from_secs(30),
            &format!("card {i} everywhere"),
            |h| h.agent(&did).ok().flatten().is_some(),
        )
        .await?;
        if i >= warmup {
            samples.push(started.elapsed());
        }
    }
    Ok(Propagation {
        warmup,
        to_all_nodes: stats(&samples),
        samples: samples.len(),
    })
}

/// A late joiner's catch-up.
#[derive(Clone, Debug, Serialize)]
pub struct LateJoin {
    /// Capabilities the network held when the joiner dialled.
    pub capabilities: usize,
    /// From dialling one peer until the joiner's index holds every capability.
    pub convergence_ms: f64,
    /// Whether the joiner had gossip switched off (anti-entropy alone).
    pub gossip_off: bool,
}

/// Starts one more node with gossip off, dials the last node, and times until it holds
/// every capability node 0 holds.
pub async fn late_join(net: &mut Testnet) -> Result<LateJoin, TestnetError> {
    let target = net.node(0).capabilities();
    let joiner = net.add_node_with(|c| c.gossip = false).await?;
    let started = Instant::now();
    net.connect(joiner, joiner - 1).await?;
    let handle = net.node(joiner).clone();
    wait_until(
        Duration::from_secs(120),
        "the late joiner to converge",
        async || handle.capabilities() >= target,
    )
    .await?;
    Ok(LateJoin {
        capabilities: target,
        convergence_ms: started.elapsed().as_secs_f64() * 1e3,
        gossip_off: true,
    })
}

/// Intent round trips between the first and the last node.
#[derive(Clone, Debug, Serialize)]
pub struct IntentRtt {
    /// Sequential intents sent.
    pub sent: usize,
    /// Those that did not succeed.
    pub errors: usize,
    /// From `send_intent` to the verified result, including both receipts' commits.
    pub round_trip: Stats,
}

/// An echo agent on the last node, a caller on node 0; `n` intents one after another.
pub async fn intent_rtt(net: &Testnet, n: usize) -> Result<IntentRtt, TestnetError> {
    let last = net.len() - 1;
    let node_err = |index| move |source| TestnetError::Node { index, source };
    let echo = net
        .node(last)
        .register_agent(crate::catalog::synthetic(1)[0].agent())
        .await
        .map_err(node_err(last))?;
    net.node(last)
        .serve(&echo, |intent: Intent| async move {
            let input: serde_json::Value =
                serde_json::from_slice(&intent.input).unwrap_or_default();
            AgentReply::completed(input)
        })
        .map_err(node_err(last))?;
    let caller = net
        .node(0)
        .register_agent(crate::catalog::synthetic(2)[1].agent())
        .await
        .map_err(node_err(0))?;
    let first = net.node(0).clone();
    wait_until(
        Duration::from_secs(30),
        "the echo agent's card on node 0",
        async || first.agent(&echo).ok().flatten().is_some(),
    )
    .await?;
    let capability = crate::catalog::synthetic(1)[0].agent().capabilities[0]
        .name
        .clone();
    let mut samples = Vec::with_capacity(n);
    let mut errors = 0;
    for i in 0..n {
        let outcome = first
            .send_intent(IntentRequest::new(
                caller.clone(),
                echo.clone(),
                capability.clone(),
                serde_json::json!({ "i": i }),
            ))
            .await
            .map_err(node_err(0))?;
        if outcome.outcome == Outcome::Success {
            samples.push(outcome.latency);
        } else {
            errors += 1;
        }
    }
    Ok(IntentRtt {
        sent: n,
        errors,
        round_trip: stats(&samples),
    })
}

/// The resident set size of this process, in bytes (Linux; 0 elsewhere).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The memory of one node holding many agents.
#[derive(Clone, Debug, Serialize)]
pub struct Memory {
    /// Agents (cards) held.
    pub agents: usize,
    /// Capabilities indexed.
    pub capabilities: usize,
    /// Process RSS before the node started.
    pub rss_before_bytes: u64,
    /// Process RSS with the node holding every card.
    pub rss_after_bytes: u64,
    /// The difference, per agent.
    pub bytes_per_agent: f64,
    /// Time to verify, store and index every card.
    pub load_s: f64,
}

/// Starts one node in `dir` and publishes `agents` cards from `catalog` (each signed by its
/// own agent key, hosted by other peers), then measures RSS.
pub async fn memory(
    dir: &std::path::Path,
    catalog: &[CatalogEntry],
    agents: usize,
) -> Result<Memory, TestnetError> {
    if catalog.is_empty() {
        return Err(TestnetError::Invalid("the catalog is empty".into()));
    }
    let before = rss_bytes();
    let mut config = NodeConfig::new(dir);
    config.listen = vec![
        "/ip4/127.0.0.1/tcp/0"
            .parse()
            .map_err(|e| TestnetError::Invalid(format!("{e}")))?,
    ];
    let node = Node::builder(config)
        .spawn()
        .await
        .map_err(|source| TestnetError::Node { index: 0, source })?;
    let started = Instant::now();
    let now = Timestamp::now();
    for i in 0..agents {
        let key = Keypair::generate().map_err(|e| TestnetError::Invalid(e.to_string()))?;
        let host = Keypair::generate()
            .map_err(|e| TestnetError::Invalid(e.to_string()))?
            .peer_id();
        let spec = catalog[i % catalog.len()].agent();
        let card = AgentCard {
            did: key.did(),
            name: spec.name,
            description: spec.description,
            capabilities: spec.capabilities,
            endpoints: vec![],
            host,
            seq: 1,
            issued_at: now,
            expires_at: now.saturating_add(MAX_CARD_LIFETIME),
            credentials: vec![],
        };
        let envelope =
            SignedEnvelope::seal(&key, &card).map_err(|e| TestnetError::Invalid(e.to_string()))?;
        node.publish(&envelope)
            .await
            .map_err(|source| TestnetError::Node { index: 0, source })?;
    }
    let load = started.elapsed();
    let after = rss_bytes();
    let capabilities = node.capabilities();
    let _ = node.shutdown().await;
    Ok(Memory {
        agents,
        capabilities,
        rss_before_bytes: before,
        rss_after_bytes: after,
        bytes_per_agent: after.saturating_sub(before) as f64 / agents.max(1) as f64,
        load_s: load.as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = stats(&samples);
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_ms, 50.0);
        assert_eq!(s.p99_ms, 99.0);
        assert_eq!(s.max_ms, 100.0);
        assert_eq!(stats(&[]).count, 0);
    }
}
