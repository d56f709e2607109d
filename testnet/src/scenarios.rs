//! Measurements over a running [`Testnet`]: card propagation, late-joiner convergence,
//! intent round trips, and the memory of a node holding many agents.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use agentnet_discovery::{
    CapabilityIndex, IndexConfig, LexicalConfig, LexicalEmbedder, RankWeights, SearchQuery,
};

use agentnet_node::{AgentReply, IntentRequest, Node, NodeConfig, NodeHandle};
use agentnet_protocol::limits::MAX_CARD_LIFETIME;
use agentnet_protocol::{AgentCard, Did, Intent, Keypair, Outcome, SignedEnvelope, Timestamp};
use serde::Serialize;

use crate::catalog::CatalogEntry;
use crate::{Member, Testnet, TestnetError, wait_every, wait_until};

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

/// Gossip traffic over a measured stretch, from the nodes' counters.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Traffic {
    /// Gossip messages received per node (after gossipsub's own de-duplication).
    pub messages_per_node: f64,
    /// Payload bytes of those, per node.
    pub bytes_per_node: f64,
    /// Messages carrying a record the node already held, per node.
    pub duplicates_per_node: f64,
    /// Records learnt by anti-entropy instead, per node.
    pub synced_per_node: f64,
    /// Records learnt by sync that the node gossiped again (`specs/sync.md#repair`), per
    /// node.
    pub repaired_per_node: f64,
    /// Sync requests sent (openings, ranges and fetches), per node.
    pub sync_requests_per_node: f64,
}

/// Sums of the counters [`Traffic`] is made of.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    received: u64,
    bytes: u64,
    stale: u64,
    synced: u64,
    repaired: u64,
    sync_requests: u64,
    nodes: usize,
}

async fn counters(net: &Testnet) -> Result<Counters, TestnetError> {
    let mut c = Counters::default();
    let handles = net.handles();
    let all = futures::future::join_all(handles.iter().map(|h| h.metrics())).await;
    for m in all {
        let m = m.map_err(|e| TestnetError::Invalid(format!("a node's counters: {e}")))?;
        c.received += m.gossip_received;
        c.bytes += m.gossip_bytes;
        c.stale += m.gossip_ignored;
        c.synced += m.synced_records;
        c.repaired += m.gossip_repaired;
        c.sync_requests += m.sync_requests;
        c.nodes += 1;
    }
    Ok(c)
}

fn traffic(before: Counters, after: Counters, per: usize) -> Traffic {
    let div = (after.nodes.max(1) * per.max(1)) as f64;
    Traffic {
        messages_per_node: after.received.saturating_sub(before.received) as f64 / div,
        bytes_per_node: after.bytes.saturating_sub(before.bytes) as f64 / div,
        duplicates_per_node: after.stale.saturating_sub(before.stale) as f64 / div,
        synced_per_node: after.synced.saturating_sub(before.synced) as f64 / div,
        repaired_per_node: after.repaired.saturating_sub(before.repaired) as f64 / div,
        sync_requests_per_node: after.sync_requests.saturating_sub(before.sync_requests) as f64
            / div,
    }
}

/// How fast cards spread.
#[derive(Clone, Debug, Serialize)]
pub struct Propagation {
    /// Agents registered (spread over the nodes) before anything was timed.
    pub agents: usize,
    /// Time until every node held every one of those agents' capabilities.
    pub load_ms: f64,
    /// Gossip traffic per node per agent while loading them.
    pub load_traffic_per_agent: Traffic,
    /// From then until every node had re-embedded its vectors ([`settle`]), before
    /// anything was timed.
    pub settle_ms: f64,
    /// Cards registered and timed but left out of the figures (warm-up).
    pub warmup: usize,
    /// From the call that registers an agent on a random node (including that node's
    /// durable commit) until every node holds its card.
    pub to_all_nodes: Stats,
    /// The same clock, until each single node holds the card: one sample per card and
    /// node (the CDF's samples).
    pub to_each_node: Stats,
    /// How long `register_agent` took on the origin (signing, the durable write, the
    /// index), the same clock's start: the part of `to_all_nodes` spent before the card
    /// left the origin.
    pub register: Stats,
    /// Cards measured.
    pub samples: usize,
    /// Gossip traffic per node per timed card.
    pub traffic_per_card: Traffic,
    /// Every (card, node) arrival in milliseconds, for the CDF.
    pub arrivals_ms: Vec<f64>,
}

/// Registers `spec` on node `origin` and returns, for each running node, how long after
/// the call began it held the card in its index (searchable there). Nodes are polled every
/// 2 ms, each until it has it; a poll is an in-memory lookup, so polling 100 nodes costs
/// the nodes little CPU. Node processes are asked over HTTP every [`Testnet::poll`].
async fn arrivals(
    net: &Testnet,
    origin: usize,
    spec: agentnet_node::AgentSpec,
    timeout: Duration,
) -> Result<(Did, Duration, Vec<Duration>), TestnetError> {
    let started = Instant::now();
    let did = net
        .node(origin)
        .register_agent(spec)
        .await
        .map_err(|source| TestnetError::Node {
            index: origin,
            source,
        })?;
    let registered = started.elapsed();
    let mut waiting = net.handles();
    let mut got = Vec::with_capacity(waiting.len());
    let every = net.poll().max(Duration::from_millis(2));
    while !waiting.is_empty() {
        let now = started.elapsed();
        let held = futures::future::join_all(waiting.iter().map(|h| h.is_indexed(&did))).await;
        let mut held = held.into_iter();
        waiting.retain(|_| {
            let has = held.next().is_some_and(|h| h.unwrap_or(false));
            if has {
                got.push(now);
            }
            !has
        });
        if waiting.is_empty() {
            break;
        }
        if now > timeout {
            return Err(TestnetError::Timeout(
                timeout,
                format!("card {did} on {} more nodes", waiting.len()),
            ));
        }
        tokio::time::sleep(every).await;
    }
    Ok((did, registered, got))
}

/// Waits until every running node indexes at least `capabilities` capabilities.
pub async fn wait_capabilities(
    net: &Testnet,
    capabilities: usize,
    timeout: Duration,
) -> Result<Duration, TestnetError> {
    let result = net
        .wait_all(
            timeout,
            &format!("{capabilities} capabilities on every node"),
            async |h: &Member| h.capabilities().await.is_ok_and(|c| c >= capabilities),
        )
        .await;
    if let Err(TestnetError::Timeout(t, what)) = result {
        let held = held(net).await;
        let behind = held.iter().filter(|&&c| c < capabilities).count();
        let least = held.iter().copied().min().unwrap_or(0);
        return Err(TestnetError::Timeout(
            t,
            format!("{what} ({behind} nodes behind, the least holding {least})"),
        ));
    }
    result
}

/// Loads `agents` agents from `catalog` spread over the nodes, waits until every node has
/// them, then registers `warmup + cards` more on seeded random nodes one at a time and
/// times each until every node holds its card.
pub async fn propagation(
    net: &mut Testnet,
    catalog: &[CatalogEntry],
    agents: usize,
    warmup: usize,
    cards: usize,
) -> Result<Propagation, TestnetError> {
    if catalog.is_empty() {
        return Err(TestnetError::Invalid("the catalog is empty".into()));
    }
    let base = capabilities_of(net, net.up()[0]).await?;
    let started = Instant::now();
    let before_load = counters(net).await?;
    if agents > 0 {
        net.load_agents(catalog, agents).await?;
        wait_capabilities(net, base + agents, Duration::from_secs(900)).await?;
    }
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let load_traffic = traffic(before_load, counters(net).await?, agents);
    let settle_ms = settle(net).await?.as_secs_f64() * 1e3;
    let mut to_all = Vec::with_capacity(cards);
    let mut to_register = Vec::with_capacity(cards);
    let mut to_each = Vec::with_capacity(cards * net.len());
    let mut before = counters(net).await?;
    for i in 0..warmup + cards {
        if i == warmup {
            before = counters(net).await?;
        }
        let up = net.up();
        let origin = up[net.rng().below(up.len())];
        let entry = &catalog[(agents + i) % catalog.len()];
        let (_, registered, got) =
            arrivals(net, origin, entry.agent(), Duration::from_secs(30)).await?;
        if i >= warmup {
            to_register.push(registered);
            to_all.push(got.iter().copied().max().unwrap_or_default());
            to_each.extend(got);
        }
    }
    let after = counters(net).await?;
    Ok(Propagation {
        agents,
        load_ms,
        load_traffic_per_agent: load_traffic,
        settle_ms,
        warmup,
        to_all_nodes: stats(&to_all),
        to_each_node: stats(&to_each),
        register: stats(&to_register),
        samples: to_all.len(),
        traffic_per_card: traffic(before, after, cards),
        arrivals_ms: to_each.iter().map(|d| d.as_secs_f64() * 1e3).collect(),
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
    let target = capabilities_of(net, 0).await?;
    let joiner = net.add_node_with(|c| c.gossip = false).await?;
    let started = Instant::now();
    net.connect(joiner, joiner - 1).await?;
    let handle = net.node(joiner).clone();
    wait_every(
        Duration::from_secs(120),
        net.poll(),
        "the late joiner to converge",
        async || handle.capabilities().await.is_ok_and(|c| c >= target),
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
        .local(last)?
        .register_agent(crate::catalog::synthetic(1)[0].agent())
        .await
        .map_err(node_err(last))?;
    net.local(last)?
        .serve(&echo, |intent: Intent| async move {
            let input: serde_json::Value =
                serde_json::from_slice(&intent.input).unwrap_or_default();
            AgentReply::completed(input)
        })
        .map_err(node_err(last))?;
    let caller = net
        .local(0)?
        .register_agent(crate::catalog::synthetic(2)[1].agent())
        .await
        .map_err(node_err(0))?;
    let first = net.local(0)?.clone();
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

/// A point of a convergence curve: seconds since a start, and the share of (record, node)
/// pairs held.
pub type Point = (f64, f64);

/// The capabilities each running node holds (0 for one that does not answer).
async fn held(net: &Testnet) -> Vec<usize> {
    let handles = net.handles();
    futures::future::join_all(handles.iter().map(|h| h.capabilities()))
        .await
        .into_iter()
        .map(|c| c.unwrap_or(0))
        .collect()
}

/// The capabilities node `i` holds.
async fn capabilities_of(net: &Testnet, i: usize) -> Result<usize, TestnetError> {
    net.node(i)
        .capabilities()
        .await
        .map_err(|source| TestnetError::Node { index: i, source })
}

/// The share of the `expected` capabilities the running nodes hold, over all of them.
async fn held_share(net: &Testnet, expected: usize) -> f64 {
    let held = held(net).await;
    if held.is_empty() || expected == 0 {
        return 1.0;
    }
    let sum: usize = held.iter().map(|&c| c.min(expected)).sum();
    sum as f64 / (expected * held.len()) as f64
}

/// Waits until every running node indexes `expected` capabilities, sampling the held share
/// every 50 ms into `curve` (seconds since `t0`).
async fn converge(
    net: &Testnet,
    expected: usize,
    timeout: Duration,
    t0: Instant,
    curve: &mut Vec<Point>,
) -> Result<Duration, TestnetError> {
    let started = Instant::now();
    loop {
        let share = held_share(net, expected).await;
        curve.push((t0.elapsed().as_secs_f64(), share));
        if share >= 1.0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            return Err(TestnetError::Timeout(
                timeout,
                format!("{expected} capabilities on every node (held share {share:.4})"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every running node has re-embedded its stored vectors under its current
/// corpus statistics (no stale capabilities): the background work a burst of cards leaves
/// has finished, and the network is settled for a timed event. In one process, a hundred
/// nodes' refreshes after 1,000 agents take one core for tens of seconds, and an event
/// timed meanwhile measures that backlog.
pub async fn settle(net: &Testnet) -> Result<Duration, TestnetError> {
    net.wait_all(
        Duration::from_secs(300),
        "every node to re-embed its vectors",
        async |h: &Member| h.stale_capabilities().await.is_ok_and(|s| s == 0),
    )
    .await
}

/// A partition and its healing.
#[derive(Clone, Debug, Serialize)]
pub struct Partition {
    /// Nodes on each side.
    pub sides: [usize; 2],
    /// Cards registered on each side while split.
    pub cards_per_side: usize,
    /// Capabilities every node must hold once healed.
    pub capabilities: usize,
    /// Whether each side held all its own cards and none of the other's while split.
    pub split_held: bool,
    /// From then until every node had re-embedded its vectors ([`settle`]), before the
    /// heal.
    pub settle_ms: f64,
    /// From lifting the blocks until every node holds every capability.
    pub heal_ms: f64,
    /// The held share over time (seconds since the split).
    pub curve: Vec<Point>,
    /// When the heal began on that clock.
    pub healed_at_s: f64,
    /// Traffic per node from the heal until full agreement.
    pub heal_traffic: Traffic,
}

/// Splits the running nodes 50/50 (a seeded shuffle; each side joined up by a ring of its
/// own), registers `cards_per_side` cards
/// on random nodes of each side, checks the split holds, heals, and times until every
/// node holds every capability.
pub async fn partition(
    net: &mut Testnet,
    catalog: &[CatalogEntry],
    cards_per_side: usize,
) -> Result<Partition, TestnetError> {
    if catalog.is_empty() {
        return Err(TestnetError::Invalid("the catalog is empty".into()));
    }
    let mut up = net.up();
    if up.len() < 2 {
        return Err(TestnetError::Invalid("a partition needs two nodes".into()));
    }
    for i in (1..up.len()).rev() {
        let j = net.rng().below(i + 1);
        up.swap(i, j);
    }
    let half = up.len() / 2;
    let sides = [up[..half].to_vec(), up[half..].to_vec()];
    let base = capabilities_of(net, up[0]).await?;
    let t0 = Instant::now();
    let mut curve = Vec::new();
    net.partition(&sides).await?;
    // A random split can leave a node with no neighbour on its own side: each side is
    // joined up by a ring of its own (as a real partition leaves each side's network
    // whole), and the meshes re-form without the other side.
    let mut ring = Vec::new();
    for side in &sides {
        for k in 0..side.len() {
            let (a, b) = (side[k], side[(k + 1) % side.len()]);
            if a != b && !net.edges().contains(&(a, b)) && !net.edges().contains(&(b, a)) {
                net.connect(a, b).await?;
                ring.push((a, b));
            }
        }
    }
    net.wait_connected(&ring, Duration::from_secs(30)).await?;
    net.wait_gossip(Duration::from_secs(30)).await?;
    let mut dids: [Vec<Did>; 2] = [Vec::new(), Vec::new()];
    let offset = net.rng().below(catalog.len());
    for (s, side) in sides.iter().enumerate() {
        for c in 0..cards_per_side {
            let origin = side[net.rng().below(side.len())];
            let entry = &catalog[(offset + s * cards_per_side + c) % catalog.len()];
            let did = net
                .node(origin)
                .register_agent(entry.agent())
                .await
                .map_err(|source| TestnetError::Node {
                    index: origin,
                    source,
                })?;
            dids[s].push(did);
        }
    }
    let mut split_held = true;
    for (s, side) in sides.iter().enumerate() {
        let handles: Vec<_> = side.iter().map(|&i| net.node(i).clone()).collect();
        let own = &dids[s];
        wait_every(
            Duration::from_secs(30),
            net.poll(),
            &format!("side {s} to hold its own cards"),
            async || indexed_everywhere(&handles, own, true).await,
        )
        .await?;
        let other = &dids[1 - s];
        split_held &= indexed_everywhere(&handles, other, false).await;
        curve.push((
            t0.elapsed().as_secs_f64(),
            held_share(net, base + 2 * cards_per_side).await,
        ));
    }
    let settle_ms = settle(net).await?.as_secs_f64() * 1e3;
    let healed_at_s = t0.elapsed().as_secs_f64();
    let before_heal = counters(net).await?;
    let heal_started = Instant::now();
    net.heal().await?;
    let expected = base + 2 * cards_per_side;
    converge(net, expected, Duration::from_secs(60), t0, &mut curve).await?;
    let heal_ms = heal_started.elapsed().as_secs_f64() * 1e3;
    let heal_traffic = traffic(before_heal, counters(net).await?, 1);
    Ok(Partition {
        sides: [sides[0].len(), sides[1].len()],
        cards_per_side,
        capabilities: expected,
        split_held,
        settle_ms,
        heal_ms,
        curve,
        healed_at_s,
        heal_traffic,
    })
}

/// Whether every one of `nodes` has (`want` true) or lacks (false) every one of `dids` in
/// its index; a node that does not answer counts as neither.
async fn indexed_everywhere(nodes: &[Member], dids: &[Did], want: bool) -> bool {
    let checks = nodes
        .iter()
        .flat_map(|h| dids.iter().map(move |d| h.is_indexed(d)));
    futures::future::join_all(checks)
        .await
        .into_iter()
        .all(|r| r.is_ok_and(|has| has == want))
}

/// Churn: nodes leave and come back while cards keep being registered.
#[derive(Clone, Debug, Serialize)]
pub struct Churn {
    /// How long the churn lasted.
    pub duration_s: f64,
    /// Nodes stopped per second.
    pub rate_per_s: f64,
    /// How long a stopped node stays down.
    pub downtime_s: f64,
    /// Nodes stopped (each restarted later).
    pub departures: usize,
    /// Cards registered during the churn.
    pub cards: usize,
    /// At the end of the churn: the share of (card, running node) pairs held.
    pub delivery_ratio: f64,
    /// From the end of the churn (every node restarted) until every node holds every card.
    pub convergence_ms: f64,
    /// The held share over time (seconds since the churn began).
    pub curve: Vec<Point>,
    /// When the churn ended on that clock.
    pub ended_at_s: f64,
}

/// For `duration`, stops a seeded random node (never node 0, the harness's anchor) every
/// `1 / rate` seconds for `downtime`, and registers `cards_per_s` cards per second on
/// running nodes; then restarts every stopped node and times convergence.
pub async fn churn(
    net: &mut Testnet,
    catalog: &[CatalogEntry],
    duration: Duration,
    rate: f64,
    downtime: Duration,
    cards_per_s: f64,
) -> Result<Churn, TestnetError> {
    if catalog.is_empty()
        || rate.is_nan()
        || rate <= 0.0
        || cards_per_s.is_nan()
        || cards_per_s <= 0.0
        || net.len() < 3
    {
        return Err(TestnetError::Invalid(
            "churn needs a catalog, positive rates and three nodes".into(),
        ));
    }
    let base = capabilities_of(net, 0).await?;
    let t0 = Instant::now();
    let mut curve = Vec::new();
    let mut down: Vec<(Instant, usize)> = Vec::new();
    let mut departures = 0;
    let mut cards = 0usize;
    let kill_every = Duration::from_secs_f64(1.0 / rate);
    let card_every = Duration::from_secs_f64(1.0 / cards_per_s);
    let mut next_kill = t0 + kill_every;
    let mut next_card = t0;
    let mut next_sample = t0;
    let offset = net.rng().below(catalog.len());
    while t0.elapsed() < duration {
        let now = Instant::now();
        // Bring back those whose downtime is over.
        let mut i = 0;
        while i < down.len() {
            if down[i].0 <= now {
                let (_, node) = down.swap_remove(i);
                net.restart(node).await?;
            } else {
                i += 1;
            }
        }
        if now >= next_kill {
            next_kill += kill_every;
            let candidates: Vec<usize> = net.up().into_iter().filter(|&i| i != 0).collect();
            // Keep at least half the network up.
            if candidates.len() + 1 > net.len() / 2 {
                let node = candidates[net.rng().below(candidates.len())];
                net.kill(node).await?;
                down.push((Instant::now() + downtime, node));
                departures += 1;
            }
        }
        if now >= next_card {
            next_card += card_every;
            let up = net.up();
            let origin = up[net.rng().below(up.len())];
            let entry = &catalog[(offset + cards) % catalog.len()];
            net.node(origin)
                .register_agent(entry.agent())
                .await
                .map_err(|source| TestnetError::Node {
                    index: origin,
                    source,
                })?;
            cards += 1;
        }
        if now >= next_sample {
            next_sample += Duration::from_millis(100);
            curve.push((
                t0.elapsed().as_secs_f64(),
                held_share(net, base + cards).await,
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let expected = base + cards;
    let delivery_ratio = held_share(net, expected).await;
    let ended_at_s = t0.elapsed().as_secs_f64();
    let end = Instant::now();
    for (_, node) in std::mem::take(&mut down) {
        net.restart(node).await?;
    }
    converge(net, expected, Duration::from_secs(120), t0, &mut curve).await?;
    Ok(Churn {
        duration_s: duration.as_secs_f64(),
        rate_per_s: rate,
        downtime_s: downtime.as_secs_f64(),
        departures,
        cards,
        delivery_ratio,
        convergence_ms: end.elapsed().as_secs_f64() * 1e3,
        curve,
        ended_at_s,
    })
}

/// One query of a query file: `{"query": ..}` (other fields ignored).
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Query {
    /// The text.
    pub query: String,
}

/// Reads a JSONL query file.
pub fn load_queries(path: &std::path::Path) -> Result<Vec<Query>, TestnetError> {
    crate::catalog::read_jsonl(path)
}

/// Queries made from catalog entries' descriptions, for runs without a query file.
pub fn synthetic_queries(catalog: &[CatalogEntry], n: usize) -> Vec<Query> {
    catalog
        .iter()
        .step_by((catalog.len() / n.max(1)).max(1))
        .take(n)
        .map(|e| Query {
            query: e
                .description
                .split_whitespace()
                .take(12)
                .collect::<Vec<_>>()
                .join(" "),
        })
        .collect()
}

/// Search agreement with a central exact index.
#[derive(Clone, Debug, Serialize)]
pub struct SearchAgreement {
    /// Queries asked of every running node, per round.
    pub queries: usize,
    /// Rounds (churn steps between them).
    pub rounds: usize,
    /// Nodes stopped and restarted between rounds.
    pub departures: usize,
    /// Mean over queries and nodes of |node's top 10 ∩ central top 10| / |central top 10|.
    pub recall_at_10: f64,
    /// The lowest node-and-query recall seen.
    pub min_recall: f64,
    /// Mean recall per round.
    pub per_round: Vec<f64>,
    /// How the central index searched.
    pub central_backend: String,
    /// Capabilities every node held before the first round.
    pub capabilities: usize,
}

/// Rank by similarity alone, so that a node's own trust does not reorder what it shares.
fn similarity_only(text: &str) -> SearchQuery {
    let mut q = SearchQuery::new(text, 10);
    let mut w = RankWeights::default();
    w.similarity = 1.0;
    w.trust = 0.0;
    w.freshness = 0.0;
    w.price = 0.0;
    q.weights = Some(w);
    q
}

/// Every running node answers the same queries (top 10 by similarity); each answer is
/// compared with a central index that scans every card exactly. Between rounds, `churn`
/// nodes are stopped and others restarted (node 0 stays up); every node holds every card
/// before the first round. Nodes down at a round are not asked.
pub async fn search_agreement(
    net: &mut Testnet,
    queries: &[Query],
    rounds: usize,
    churn: usize,
) -> Result<SearchAgreement, TestnetError> {
    if queries.is_empty() {
        return Err(TestnetError::Invalid("no queries".into()));
    }
    // The central index: every card node 0 holds, scanned exactly.
    let mut config = IndexConfig::default();
    config.hnsw_threshold = Some(usize::MAX);
    let mut central = CapabilityIndex::with_embedder(
        Box::new(LexicalEmbedder::new(LexicalConfig::default())),
        config,
    );
    let first = net.local(0)?.clone();
    let mut after = String::new();
    loop {
        let cards = first
            .cards(&after, 1000)
            .map_err(|source| TestnetError::Node { index: 0, source })?;
        let Some(last) = cards.last() else { break };
        after = last.did.as_str().to_owned();
        for card in &cards {
            central
                .upsert(card)
                .map_err(|e| TestnetError::Invalid(format!("central index: {e}")))?;
        }
    }
    central.refresh();
    let expected = central.len();
    wait_capabilities(net, expected, Duration::from_secs(60)).await?;
    let now = Timestamp::now();
    let neutral = |_: &Did, _: &str| 0.5;
    let mut truth = Vec::with_capacity(queries.len());
    for q in queries {
        let page = central
            .search(&similarity_only(&q.query), &neutral, now)
            .map_err(|e| TestnetError::Invalid(format!("central search: {e}")))?;
        truth.push(
            page.hits
                .into_iter()
                .map(|h| (h.did, h.capability))
                .collect::<HashSet<_>>(),
        );
    }
    let mut per_round = Vec::with_capacity(rounds);
    let mut sum = 0.0;
    let mut n = 0usize;
    let mut min_recall: f64 = 1.0;
    let mut departures = 0;
    let mut down: Vec<usize> = Vec::new();
    for round in 0..rounds {
        if round > 0 && churn > 0 {
            for node in std::mem::take(&mut down) {
                net.restart(node).await?;
            }
            for _ in 0..churn {
                let candidates: Vec<usize> = net.up().into_iter().filter(|&i| i != 0).collect();
                if candidates.len() < 2 {
                    break;
                }
                let node = candidates[net.rng().below(candidates.len())];
                net.kill(node).await?;
                down.push(node);
                departures += 1;
            }
        }
        // Nodes re-embed their stored vectors once their registry is quiet (restarted
        // ones rebuild their index from the store first).
        net.wait_all(
            Duration::from_secs(30),
            "every node to refresh its vectors",
            async |h: &Member| h.stale_capabilities().await.is_ok_and(|s| s == 0),
        )
        .await?;
        let mut round_sum = 0.0;
        let mut round_n = 0usize;
        for i in net.up() {
            let handle = net.local(i)?;
            for (q, want) in queries.iter().zip(&truth) {
                if want.is_empty() {
                    continue;
                }
                let page = match handle.search(&similarity_only(&q.query)) {
                    Ok(page) => page,
                    Err(e) => return Err(TestnetError::Invalid(format!("node search: {e}"))),
                };
                let got = page
                    .hits
                    .iter()
                    .filter(|h| want.contains(&(h.did.clone(), h.capability.clone())))
                    .count();
                let recall = got as f64 / want.len() as f64;
                min_recall = min_recall.min(recall);
                round_sum += recall;
                round_n += 1;
            }
        }
        sum += round_sum;
        n += round_n;
        per_round.push(round_sum / round_n.max(1) as f64);
    }
    for node in down {
        net.restart(node).await?;
    }
    Ok(SearchAgreement {
        queries: queries.len(),
        rounds,
        departures,
        recall_at_10: sum / n.max(1) as f64,
        min_recall,
        per_round,
        central_backend: central.backend().to_owned(),
        capabilities: expected,
    })
}

/// Intents under load across the network.
#[derive(Clone, Debug, Serialize)]
pub struct IntentLoad {
    /// Callers sending at once.
    pub concurrency: usize,
    /// How long they sent.
    pub duration_s: f64,
    /// Intents sent.
    pub sent: usize,
    /// Those that did not succeed (including refusals and timeouts).
    pub errors: usize,
    /// `errors / sent`.
    pub error_rate: f64,
    /// Successful intents per second, network-wide.
    pub intents_per_s: f64,
    /// Round trips of the successful ones.
    pub latency: Stats,
}

/// An echo agent and a caller on every running node; `concurrency` tasks each send
/// intents, one after another, from a random caller to a random echo agent on another
/// node, for `duration`.
pub async fn intent_load(
    net: &mut Testnet,
    concurrency: usize,
    duration: Duration,
) -> Result<IntentLoad, TestnetError> {
    let up = net.up();
    if up.len() < 2 || concurrency == 0 {
        return Err(TestnetError::Invalid(
            "intent load needs two nodes and one caller".into(),
        ));
    }
    let capability = "echo-load".to_owned();
    let spec = |name: &str| {
        agentnet_node::AgentSpec::new(
            name,
            "echoes its input",
            vec![agentnet_protocol::Capability {
                name: capability.clone(),
                description: "Echo the input document back".into(),
                tags: vec!["echo".into()],
                version: "1".into(),
                price: None,
            }],
        )
    };
    let mut echoes = Vec::new();
    let mut callers = Vec::new();
    for &i in &up {
        let node_err = |source| TestnetError::Node { index: i, source };
        let h = net.local(i)?.clone();
        let echo = h.register_agent(spec("echo")).await.map_err(node_err)?;
        h.serve(&echo, |intent: Intent| async move {
            let input: serde_json::Value =
                serde_json::from_slice(&intent.input).unwrap_or_default();
            AgentReply::completed(input)
        })
        .map_err(node_err)?;
        let caller = h.register_agent(spec("caller")).await.map_err(node_err)?;
        echoes.push((i, echo));
        callers.push((i, caller));
    }
    let all: Vec<Did> = echoes.iter().map(|(_, d)| d.clone()).collect();
    net.wait_all(
        Duration::from_secs(60),
        "every echo card everywhere",
        async |h: &Member| {
            h.local()
                .is_some_and(|h| all.iter().all(|d| h.agent(d).ok().flatten().is_some()))
        },
    )
    .await?;
    let seeds: Vec<u64> = (0..concurrency).map(|_| net.rng().next_u64()).collect();
    let handles = up
        .iter()
        .map(|&i| Ok((i, net.local(i)?.clone())))
        .collect::<Result<Vec<(usize, NodeHandle)>, TestnetError>>()?;
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks = seeds.into_iter().map(|seed| {
        let handles = handles.clone();
        let echoes = echoes.clone();
        let callers = callers.clone();
        let capability = capability.clone();
        async move {
            let mut rng = crate::Rng::new(seed);
            let mut latencies = Vec::new();
            let mut sent = 0usize;
            let mut errors = 0usize;
            while Instant::now() < deadline {
                let (from_node, caller) = &callers[rng.below(callers.len())];
                let targets: Vec<&(usize, Did)> =
                    echoes.iter().filter(|(n, _)| n != from_node).collect();
                let (_, echo) = targets[rng.below(targets.len())];
                let Some((_, h)) = handles.iter().find(|(i, _)| i == from_node) else {
                    continue;
                };
                sent += 1;
                let request = IntentRequest::new(
                    caller.clone(),
                    echo.clone(),
                    capability.clone(),
                    serde_json::json!({ "n": sent }),
                )
                .with_timeout(Duration::from_secs(10));
                match h.send_intent(request).await {
                    Ok(o) if o.outcome == Outcome::Success => latencies.push(o.latency),
                    _ => errors += 1,
                }
            }
            (sent, errors, latencies)
        }
    });
    let results = futures::future::join_all(tasks).await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut sent = 0;
    let mut errors = 0;
    let mut latencies = Vec::new();
    for (s, e, l) in results {
        sent += s;
        errors += e;
        latencies.extend(l);
    }
    Ok(IntentLoad {
        concurrency,
        duration_s: elapsed,
        sent,
        errors,
        error_rate: errors as f64 / sent.max(1) as f64,
        intents_per_s: latencies.len() as f64 / elapsed.max(1e-9),
        latency: stats(&latencies),
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
