//! Two real nodes on 127.0.0.1: a card published on one is verified, stored, indexed and
//! searchable on the other; a forged card is refused; a restarted node keeps its registry.

use std::time::{Duration, Instant};

use agentnet_discovery::SearchQuery;
use agentnet_node::{Node, NodeConfig, NodeError, NodeHandle};
use agentnet_protocol::{AgentCard, Capability, Keypair, SignedEnvelope, Timestamp, Tombstone};

fn card(agent: &Keypair, host: &NodeHandle, seq: u64) -> AgentCard {
    let now = Timestamp::now();
    AgentCard {
        did: agent.did(),
        name: "translator".into(),
        description: "translates text".into(),
        capabilities: vec![Capability {
            name: "translate".into(),
            description: "Translate text between English and German".into(),
            tags: vec!["nlp".into()],
            version: "1".into(),
            price: None,
        }],
        endpoints: vec![],
        host: host.peer_id(),
        seq,
        issued_at: now,
        expires_at: now.saturating_add(Duration::from_secs(3600)),
        credentials: vec![],
    }
}

async fn found(node: &NodeHandle, text: &str) -> usize {
    node.search(&SearchQuery::new(text, 10))
        .map(|p| p.hits.len())
        .unwrap_or(0)
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_crosses_two_nodes_and_a_forged_one_does_not() {
    let dir_a = tempfile::tempdir().expect("tempdir");
    let dir_b = tempfile::tempdir().expect("tempdir");
    let a = Node::builder(NodeConfig::new(dir_a.path()))
        .spawn()
        .await
        .expect("node a");
    let b = Node::builder(NodeConfig::new(dir_b.path()))
        .spawn()
        .await
        .expect("node b");
    wait_for("a to listen", async || {
        !a.listen_addrs().await.expect("addrs").is_empty()
    })
    .await;
    let addr = a.listen_addrs().await.expect("addrs")[0].clone();
    b.dial(addr).await.expect("dial");
    wait_for("the registry mesh", async || {
        a.registry_peers().await.expect("peers") > 0 && b.registry_peers().await.expect("peers") > 0
    })
    .await;

    let agent = Keypair::generate().expect("key");
    let envelope = SignedEnvelope::seal(&agent, &card(&agent, &a, 1)).expect("seal");
    let started = Instant::now();
    a.publish(&envelope).await.expect("publish");
    assert_eq!(
        found(&a, "translate German").await,
        1,
        "visible locally at once"
    );
    wait_for("the card on b", async || {
        found(&b, "translate German").await == 1
    })
    .await;
    println!("card propagation a -> b: {:?}", started.elapsed());

    // Another key cannot sign this agent's card.
    let mut forged = card(&agent, &a, 2);
    forged.name = "impostor".into();
    let thief = Keypair::generate().expect("key");
    assert!(SignedEnvelope::seal(&thief, &forged).is_err());
    // An expired card is refused with a clear error, and nothing changes.
    let mut old = card(&agent, &a, 3);
    old.issued_at = Timestamp::from_millis(1_000);
    old.expires_at = Timestamp::from_millis(2_000);
    let err = a
        .publish(&SignedEnvelope::seal(&agent, &old).expect("seal"))
        .await
        .expect_err("expired");
    assert!(matches!(err, NodeError::Refused(_)), "{err}");
    assert_eq!(found(&a, "translate German").await, 1);

    // A tombstone removes the agent everywhere.
    let now = Timestamp::now();
    let tombstone = Tombstone {
        did: agent.did(),
        seq: 2,
        issued_at: now,
        expires_at: now.saturating_add(Duration::from_secs(3600)),
    };
    a.publish(&SignedEnvelope::seal(&agent, &tombstone).expect("seal"))
        .await
        .expect("publish tombstone");
    wait_for("the tombstone on b", async || {
        found(&b, "translate German").await == 0
    })
    .await;
    assert_eq!(found(&a, "translate German").await, 0);
    a.shutdown().await.expect("shutdown");
    b.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_registry_and_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Keypair::generate().expect("key");
    let (peer_id, envelope) = {
        let node = Node::builder(NodeConfig::new(dir.path()))
            .spawn()
            .await
            .expect("node");
        let envelope = SignedEnvelope::seal(&agent, &card(&agent, &node, 1)).expect("seal");
        node.publish(&envelope).await.expect("publish");
        let id = node.peer_id();
        node.shutdown().await.expect("shutdown");
        (id, envelope)
    };
    // The swarm task has returned; give it a moment to drop the store.
    let node = loop {
        match Node::builder(NodeConfig::new(dir.path())).spawn().await {
            Ok(node) => break node,
            Err(NodeError::Store(agentnet_node::store::StoreError::Locked(_))) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("restart: {e}"),
        }
    };
    assert_eq!(node.peer_id(), peer_id, "same node key");
    assert_eq!(
        found(&node, "translate German").await,
        1,
        "registry restored"
    );
    // Publishing the same card again is accepted as already known.
    node.publish(&envelope).await.expect("idempotent");
    assert_eq!(node.capabilities(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_without_gossip_converges_by_anti_entropy_alone() {
    let dir_a = tempfile::tempdir().expect("tempdir");
    let dir_b = tempfile::tempdir().expect("tempdir");
    let a = Node::builder(NodeConfig::new(dir_a.path()))
        .spawn()
        .await
        .expect("node a");
    let n = 300;
    for i in 0..n {
        let agent = Keypair::generate().expect("key");
        let mut c = card(&agent, &a, 1);
        c.name = format!("agent {i}");
        a.publish(&SignedEnvelope::seal(&agent, &c).expect("seal"))
            .await
            .expect("publish");
    }
    assert_eq!(a.capabilities(), n);

    let mut config = NodeConfig::new(dir_b.path());
    config.gossip = false;
    let b = Node::builder(config).spawn().await.expect("node b");
    wait_for("a to listen", async || {
        !a.listen_addrs().await.expect("addrs").is_empty()
    })
    .await;
    let started = Instant::now();
    b.dial(a.listen_addrs().await.expect("addrs")[0].clone())
        .await
        .expect("dial");
    wait_for("b to converge", async || b.capabilities() == n).await;
    println!(
        "late joiner converged on {n} cards in {:?}",
        started.elapsed()
    );
    assert_eq!(
        a.registry_peers().await.expect("peers"),
        0,
        "b never subscribed to the registry topic"
    );
    assert_eq!(found(&b, "translate German").await, 10, "searchable on b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_host_is_found_through_kademlia_before_its_card() {
    let dir_a = tempfile::tempdir().expect("tempdir");
    let dir_b = tempfile::tempdir().expect("tempdir");
    let a = Node::builder(NodeConfig::new(dir_a.path()))
        .spawn()
        .await
        .expect("node a");
    let mut config = NodeConfig::new(dir_b.path());
    // No gossip, and no periodic sync during the test: b cannot have the card.
    config.gossip = false;
    config.sync_interval = Duration::from_secs(3600);
    let b = Node::builder(config).spawn().await.expect("node b");
    wait_for("a to listen", async || {
        !a.listen_addrs().await.expect("addrs").is_empty()
    })
    .await;
    b.dial(a.listen_addrs().await.expect("addrs")[0].clone())
        .await
        .expect("dial");
    wait_for("the connection", async || {
        !b.connected_peers().await.expect("peers").is_empty()
    })
    .await;
    // Published after the connection's opening sync, so b never receives the card.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let agent = Keypair::generate().expect("key");
    // Only agents whose keys the node holds are announced: a card naming a node as host
    // proves nothing by itself.
    a.adopt(Keypair::from_seed(&agent.seed())).expect("adopt");
    a.publish(&SignedEnvelope::seal(&agent, &card(&agent, &a, 1)).expect("seal"))
        .await
        .expect("publish");
    let mut hosts = Vec::new();
    wait_for("the provider record", async || {
        hosts = b.find_hosts(&agent.did()).await.expect("lookup");
        !hosts.is_empty()
    })
    .await;
    assert_eq!(hosts, vec![a.peer_id()]);
    assert_eq!(found(&b, "translate German").await, 0, "b has no card yet");
    // An unknown agent has no host.
    let stranger = Keypair::generate().expect("key");
    assert!(
        b.find_hosts(&stranger.did())
            .await
            .expect("lookup")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_expired_cards_from_a_peer_cost_it_its_score() {
    let dir_a = tempfile::tempdir().expect("tempdir");
    let dir_b = tempfile::tempdir().expect("tempdir");
    let a = Node::builder(NodeConfig::new(dir_a.path()))
        .spawn()
        .await
        .expect("node a");
    let b = Node::builder(NodeConfig::new(dir_b.path()))
        .spawn()
        .await
        .expect("node b");
    wait_for("a to listen", async || {
        !a.listen_addrs().await.expect("addrs").is_empty()
    })
    .await;
    b.dial(a.listen_addrs().await.expect("addrs")[0].clone())
        .await
        .expect("dial");
    wait_for("the registry mesh", async || {
        a.registry_peers().await.expect("peers") > 0 && b.registry_peers().await.expect("peers") > 0
    })
    .await;
    let peer_a = a.peer_id();
    let agent = Keypair::generate().expect("key");

    // An expired card, validly signed: refused, and a small penalty.
    let mut old = card(&agent, &a, 1);
    old.issued_at = Timestamp::from_millis(1_000);
    old.expires_at = Timestamp::from_millis(2_000);
    let expired = SignedEnvelope::seal(&agent, &old).expect("seal").to_bytes();
    a.publish_unchecked(agentnet_protocol::SyncTable::Registry, expired)
        .await
        .expect("gossip");
    wait_for("b to penalise the expired card", async || {
        b.peer_penalty(&peer_a) < 0.0
    })
    .await;
    let after_expired = b.peer_penalty(&peer_a);
    assert_eq!(found(&b, "translate German").await, 0);

    // A forged card: the agent's DID with someone else's signature.
    let genuine = SignedEnvelope::seal(&agent, &card(&agent, &a, 2))
        .expect("seal")
        .to_bytes();
    let mut forged = genuine.clone();
    let last = forged.len() - 1;
    forged[last] ^= 0x55; // one flipped bit pattern in the last byte: the signature fails
    a.publish_unchecked(agentnet_protocol::SyncTable::Registry, forged)
        .await
        .expect("gossip");
    wait_for("b to penalise the forgery", async || {
        b.peer_penalty(&peer_a) < after_expired
    })
    .await;
    assert_eq!(found(&b, "translate German").await, 0, "nothing was stored");
    // gossipsub's own score of a carries the penalty (weight 1).
    let score = b.gossip_score(peer_a).await.expect("score");
    assert!(score.is_some_and(|s| s < 0.0), "gossip score {score:?}");
    // Rubbish on the pause topic: rejected too; and b still works.
    let _ = a
        .publish_unchecked(agentnet_protocol::SyncTable::Pauses, vec![1, 2, 3])
        .await;
    assert!(b.search(&SearchQuery::new("anything", 5)).is_ok());
    a.shutdown().await.expect("shutdown");
    b.shutdown().await.expect("shutdown");
}
