//! Five real nodes in a line on 127.0.0.1: a card registered on the first is searchable on
//! the last within 5 s, its tombstone removes it everywhere, a late joiner with gossip off
//! converges by anti-entropy alone, and an intent crosses the line with receipts and trust.

use std::time::Duration;

use agentnet_discovery::SearchQuery;
use agentnet_protocol::Capability;
use agentnet_testnet::{Testnet, Topology, scenarios};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_crosses_a_five_node_line_and_its_tombstone_follows() {
    let mut net = Testnet::builder()
        .nodes(5)
        .topology(Topology::Line)
        .seed(3)
        .spawn()
        .await
        .expect("testnet");
    let did = net
        .node(0)
        .register_agent(agentnet_node::AgentSpec::new(
            "cartographer",
            "draws maps",
            vec![Capability {
                name: "map".into(),
                description: "Draw a topographic map of a mountain region".into(),
                tags: vec!["geo".into()],
                version: "1".into(),
                price: None,
            }],
        ))
        .await
        .expect("register");
    let last = net.local(4).expect("in process").clone();
    let took = agentnet_testnet::wait_until(
        Duration::from_secs(5),
        "the card to be searchable on the last node",
        async || {
            last.search(&SearchQuery::new("topographic mountain map", 5))
                .is_ok_and(|p| p.hits.iter().any(|h| h.did == did))
        },
    )
    .await
    .expect("within 5 s");
    println!("card searchable 4 hops away after {took:?}");

    net.local(0)
        .expect("in process")
        .remove_agent(&did)
        .await
        .expect("remove");
    net.wait_all(
        Duration::from_secs(5),
        "the tombstone everywhere",
        async |h: &agentnet_testnet::Member| {
            h.local().is_some_and(|h| {
                h.is_removed(&did).unwrap_or(false)
                    && h.search(&SearchQuery::new("topographic mountain map", 5))
                        .is_ok_and(|p| p.hits.iter().all(|hit| hit.did != did))
            })
        },
    )
    .await
    .expect("tombstone everywhere");

    // More cards, then a late joiner that learns them by anti-entropy alone.
    let catalog = agentnet_testnet::catalog::synthetic(60);
    let p = scenarios::propagation(&mut net, &catalog, 0, 0, 60)
        .await
        .expect("propagation");
    assert!(p.to_all_nodes.p99_ms < 5_000.0, "{p:?}");
    let late = scenarios::late_join(&mut net).await.expect("late join");
    assert!(late.gossip_off);
    assert_eq!(late.capabilities, 60);
    assert!(late.convergence_ms < 10_000.0, "{late:?}");

    // An intent from the first node to the last.
    let rtt = scenarios::intent_rtt(&net, 10).await.expect("intents");
    assert_eq!(rtt.errors, 0);
    println!(
        "propagation {:?}\nlate join {late:?}\nintents {:?}",
        p.to_all_nodes, rtt.round_trip
    );
    net.shutdown().await;
}
