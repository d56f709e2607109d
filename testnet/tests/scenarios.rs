//! The CI quick set: every scenario on 10 real nodes (TCP on 127.0.0.1, a debug build),
//! each asserting its figures. The bars here are looser than the 100-node release bars in
//! the README, since a debug build on 2 shared cores is several times slower; what they
//! check is that each scenario works and converges.

use std::time::Duration;

use agentnet_testnet::catalog::synthetic;
use agentnet_testnet::sybil::{SybilConfig, sybil};
use agentnet_testnet::{Testnet, Topology, scenarios};

const NODES: usize = 10;

async fn net(seed: u64) -> Testnet {
    Testnet::builder()
        .nodes(NODES)
        .topology(Topology::Random { degree: 3 })
        .seed(seed)
        .configure(|_, c| {
            c.intents.per_minute = 100_000;
            c.intents.burst = 100_000;
        })
        .spawn()
        .await
        .expect("testnet")
}

async fn load(net: &mut Testnet, agents: usize) {
    let catalog = synthetic(agents);
    net.load_agents(&catalog, agents).await.expect("load");
    scenarios::wait_capabilities(net, agents, Duration::from_secs(60))
        .await
        .expect("every node holds every agent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propagation_reaches_every_node_without_duplicates() {
    let mut net = net(11).await;
    let catalog = synthetic(200);
    let p = scenarios::propagation(&mut net, &catalog, 100, 5, 20)
        .await
        .expect("propagation");
    println!("{:?}\n{:?}", p.to_all_nodes, p.traffic_per_card);
    assert_eq!(p.samples, 20);
    assert_eq!(p.arrivals_ms.len(), 20 * NODES);
    assert!(p.to_all_nodes.p99_ms < 3_000.0, "{:?}", p.to_all_nodes);
    // Every node but the origin hears each card about once: gossipsub de-duplicates.
    let m = p.traffic_per_card.messages_per_node;
    assert!((0.5..=1.5).contains(&m), "{m} messages per node per card");
    assert!(p.traffic_per_card.duplicates_per_node < 0.1);
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_converges_by_anti_entropy_alone() {
    let mut net = net(12).await;
    load(&mut net, 200).await;
    let late = scenarios::late_join(&mut net).await.expect("late join");
    println!("{late:?}");
    assert_eq!(late.capabilities, 200);
    assert!(late.convergence_ms < 10_000.0, "{late:?}");
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healed_partition_reaches_full_agreement() {
    let mut net = net(18).await;
    load(&mut net, 100).await;
    let p = scenarios::partition(&mut net, &synthetic(300)[100..], 20)
        .await
        .expect("partition");
    println!("heal {:.0} ms, sides {:?}", p.heal_ms, p.sides);
    assert!(p.split_held, "the partition leaked");
    assert_eq!(p.sides.iter().sum::<usize>(), NODES);
    assert_eq!(p.capabilities, 140);
    assert!(p.heal_ms < 10_000.0, "heal took {} ms", p.heal_ms);
    assert!(p.curve.last().is_some_and(|(_, share)| *share >= 1.0));
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_delivers_and_converges() {
    let mut net = net(13).await;
    load(&mut net, 50).await;
    let c = scenarios::churn(
        &mut net,
        &synthetic(200)[50..],
        Duration::from_secs(8),
        0.5,
        Duration::from_secs(2),
        3.0,
    )
    .await
    .expect("churn");
    println!(
        "departures {} cards {} delivery {:.3} convergence {:.0} ms",
        c.departures, c.cards, c.delivery_ratio, c.convergence_ms
    );
    assert!(c.departures >= 3, "{c:?}");
    assert!(c.cards >= 20);
    assert!(c.delivery_ratio > 0.8, "{}", c.delivery_ratio);
    assert!(c.convergence_ms < 20_000.0, "{}", c.convergence_ms);
    assert_eq!(net.up().len(), NODES, "every node is back");
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_agrees_with_the_central_index_under_churn() {
    let mut net = net(14).await;
    load(&mut net, 150).await;
    let queries = scenarios::synthetic_queries(&synthetic(150), 30);
    let s = scenarios::search_agreement(&mut net, &queries, 3, 2)
        .await
        .expect("search agreement");
    println!("{s:?}");
    assert_eq!(s.capabilities, 150);
    assert!(s.departures >= 4);
    // The bar. Nodes re-embed their vectors once their registry is quiet, so they
    // rank like the central index whatever order they learnt the cards in.
    assert!(s.recall_at_10 >= 0.95, "{}", s.recall_at_10);
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sybil_ring_cannot_lift_a_malicious_agent_into_the_top_10() {
    let mut net = net(15).await;
    let s = sybil(
        &mut net,
        SybilConfig {
            workers: 12,
            sybil_nodes: 3,
            sybils_per_node: 5,
            rounds: 6,
            explore: 0.3,
        },
    )
    .await
    .expect("sybil");
    for r in &s.rounds {
        println!("{r:?}");
    }
    assert_eq!(s.sybils, 10);
    assert!(s.sybil_attestations >= 6 * 10 * 2);
    assert!(!s.entered_top_10, "best rank {}", s.best_rank_ever);
    // Search ranks by similarity and freshness too, so a fresh, untried agent can show up
    // in search results; the bar is on trust, which the sybils cannot move.
    println!("in an honest search top 10: {}", s.entered_search_top_10);
    let last = s.rounds.last().expect("rounds");
    assert!(
        last.malicious_score < last.worker_score,
        "the malicious agent ({}) should score below the workers ({})",
        last.malicious_score,
        last.worker_score
    );
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_flow_under_load_without_errors() {
    let mut net = net(16).await;
    let l = scenarios::intent_load(&mut net, 8, Duration::from_secs(3))
        .await
        .expect("intent load");
    println!("{l:?}");
    assert!(l.sent >= 50, "{l:?}");
    assert_eq!(l.errors, 0, "{l:?}");
    assert!(l.intents_per_s > 10.0);
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_gossip_loss_are_injected() {
    let mut net = Testnet::builder()
        .nodes(4)
        .topology(Topology::Line)
        .latency(Duration::from_millis(30))
        .gossip_loss(0.5)
        .seed(17)
        // What gossip loses, anti-entropy brings: reconcile often.
        .configure(|_, c| c.sync_interval = Duration::from_secs(1))
        .spawn()
        .await
        .expect("testnet");
    let p = scenarios::propagation(&mut net, &synthetic(30), 0, 0, 10)
        .await
        .expect("propagation");
    println!("{:?}", p.to_all_nodes);
    // Three hops of at least 30 ms each, whichever way the card travels.
    assert!(p.to_all_nodes.p50_ms >= 90.0, "{:?}", p.to_all_nodes);
    let dropped: u64 = net
        .handles()
        .iter()
        .filter_map(|h| h.local().map(|h| h.metrics().gossip_dropped))
        .sum();
    assert!(dropped > 0, "nothing was dropped");
    net.shutdown().await;
}
