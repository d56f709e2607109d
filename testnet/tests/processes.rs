//! The testnet with every node in its own `agentnet node run` process, driven over the
//! local API: propagation, a partition and its healing (blocks over HTTP), a crash
//! (SIGKILL) and restart from the store, and a late joiner.
//!
//! It runs the `agentnet` binary cargo built beside this test (`cargo test --workspace`
//! builds it; or set `AGENTNET_BIN`).

use std::time::Duration;

use agentnet_testnet::catalog::synthetic;
use agentnet_testnet::process::find_binary;
use agentnet_testnet::{Testnet, Topology, scenarios};

const NODES: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_in_their_own_processes_spread_split_heal_and_recover() {
    let binary = find_binary().expect("the agentnet binary");
    let mut net = Testnet::builder()
        .nodes(NODES)
        .topology(Topology::Random { degree: 3 })
        .seed(21)
        .processes(binary)
        .spawn()
        .await
        .expect("testnet");
    assert!(net.is_processes());
    assert!(net.node(0).is_process());
    assert!(net.local(0).is_err(), "no in-process handle to a process");
    let pids: Vec<_> = (0..NODES).map(|i| net.node(i).peer_id()).collect();
    let mut unique = pids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), NODES, "one identity per process");

    let catalog = synthetic(200);
    let p = scenarios::propagation(&mut net, &catalog, 60, 2, 10)
        .await
        .expect("propagation");
    println!("propagation {:?}", p.to_all_nodes);
    assert_eq!(p.samples, 10);
    assert_eq!(p.arrivals_ms.len(), 10 * NODES);
    assert!(p.to_all_nodes.p99_ms < 3_000.0, "{:?}", p.to_all_nodes);
    // The counters come from each process's /metrics: every node but the origin hears
    // each card about once.
    let m = p.traffic_per_card.messages_per_node;
    assert!((0.5..=1.5).contains(&m), "{m} messages per node per card");

    let part = scenarios::partition(&mut net, &catalog, 5)
        .await
        .expect("partition");
    println!("partition heal {:.0} ms", part.heal_ms);
    assert!(part.split_held, "a side saw the other's cards while split");
    assert!(part.heal_ms < 10_000.0, "{} ms", part.heal_ms);

    // A crash: the process is killed, and restarts from its store on its old address.
    // Records learnt from peers are made durable once a second (`specs/sync.md`): wait
    // that long, so everything held now must survive the kill.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let held = net.node(3).capabilities().await.expect("capabilities");
    net.kill(3).await.expect("kill");
    assert!(!net.is_up(3));
    let more = &synthetic(300)[250..255];
    for entry in more {
        net.node(0)
            .register_agent(entry.agent())
            .await
            .expect("register while node 3 is down");
    }
    net.restart(3).await.expect("restart");
    let restarted = net.node(3).capabilities().await.expect("capabilities");
    assert!(restarted >= held, "the store kept {restarted} of {held}");
    scenarios::wait_capabilities(&net, held + more.len(), Duration::from_secs(60))
        .await
        .expect("the restarted node catches up");

    let late = scenarios::late_join(&mut net).await.expect("late join");
    println!("late join {:.0} ms", late.convergence_ms);
    assert_eq!(late.capabilities, held + more.len());
    net.shutdown().await;
}
