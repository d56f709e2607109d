//! Intents between agents on real nodes on 127.0.0.1 (`specs/intents.md`): round trips with
//! receipts on both sides and trust updates, the inbox, timeouts, replays, forgeries,
//! oversized requests, pauses, the fail-closed budget gate, and restarts.

use std::time::{Duration, Instant};

use agentnet_node::{
    AgentReply, AgentSpec, BudgetError, IntentRequest, Node, NodeConfig, NodeError, NodeHandle,
};
use agentnet_protocol::limits::{MAX_ENVELOPE_OVERHEAD, MAX_INTENT_LEN};
use agentnet_protocol::{
    Capability, Did, Intent, IntentId, IntentResponse, Keypair, Outcome, PauseAction, PauseNotice,
    RejectionCode, SignedEnvelope, Timestamp,
};

fn capability(name: &str, description: &str) -> Capability {
    Capability {
        name: name.into(),
        description: description.into(),
        tags: vec!["test".into()],
        version: "1".into(),
        price: None,
    }
}

async fn node(dir: &tempfile::TempDir, configure: impl FnOnce(&mut NodeConfig)) -> NodeHandle {
    let mut config = NodeConfig::new(dir.path());
    configure(&mut config);
    loop {
        match Node::builder(config.clone()).spawn().await {
            Ok(node) => return node,
            // A node just shut down on this directory may still hold the store for a moment.
            Err(NodeError::Store(agentnet_node::store::StoreError::Locked(_))) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("node: {e}"),
        }
    }
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Two connected nodes: `a` hosts `alice`, `b` hosts `bob` (echo) and `carol` (inbox); `a`
/// holds both cards.
struct Pair {
    a: NodeHandle,
    b: NodeHandle,
    alice: Did,
    bob: Did,
    carol: Did,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn pair(
    configure_a: impl FnOnce(&mut NodeConfig),
    configure_b: impl FnOnce(&mut NodeConfig),
) -> Pair {
    let dir_a = tempfile::tempdir().expect("tempdir");
    let dir_b = tempfile::tempdir().expect("tempdir");
    let a = node(&dir_a, configure_a).await;
    let b = node(&dir_b, configure_b).await;
    let alice = a
        .register_agent(AgentSpec::new(
            "alice",
            "plans trips",
            vec![capability("plan", "Plan a trip")],
        ))
        .await
        .expect("alice");
    let bob = b
        .register_agent(AgentSpec::new(
            "bob",
            "echoes",
            vec![capability("echo", "Echo the input")],
        ))
        .await
        .expect("bob");
    let carol = b
        .register_agent(AgentSpec::new(
            "carol",
            "answers by hand",
            vec![capability("ask", "Answer a question")],
        ))
        .await
        .expect("carol");
    b.serve(&bob, |intent: Intent| async move {
        let input: serde_json::Value = serde_json::from_slice(&intent.input).unwrap_or_default();
        if input.get("sleep_ms").is_some() {
            let ms = input["sleep_ms"].as_u64().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        AgentReply::completed(serde_json::json!({ "echo": input }))
    })
    .expect("serve");
    let addr = b.listen_addrs().await.expect("addrs")[0].clone();
    a.dial(addr).await.expect("dial");
    wait_for("a to hold bob's and carol's cards", async || {
        a.agent(&bob).ok().flatten().is_some() && a.agent(&carol).ok().flatten().is_some()
    })
    .await;
    Pair {
        a,
        b,
        alice,
        bob,
        carol,
        _dirs: (dir_a, dir_b),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intent_round_trip_leaves_receipts_on_both_sides_and_updates_trust() {
    let p = pair(|_| {}, |_| {}).await;
    let before = p.a.trust(&p.bob, None);
    let mut latencies = Vec::new();
    for i in 0..20 {
        let outcome =
            p.a.send_intent(IntentRequest::new(
                p.alice.clone(),
                p.bob.clone(),
                "echo",
                serde_json::json!({ "n": i }),
            ))
            .await
            .expect("send");
        assert_eq!(outcome.outcome, Outcome::Success, "{outcome:?}");
        let result = outcome.result.expect("a result");
        let output: serde_json::Value = serde_json::from_slice(&result.output).expect("json");
        assert_eq!(output, serde_json::json!({ "echo": { "n": i } }));
        assert_eq!(result.from, p.bob);
        let receipt =
            p.a.receipt(&outcome.receipt)
                .expect("store")
                .expect("caller receipt");
        assert_eq!(receipt.issuer, p.alice);
        assert_eq!(receipt.outcome, Outcome::Success);
        latencies.push(outcome.latency);
    }
    latencies.sort();
    println!(
        "intent round trip over TCP, 20 sequential (debug build): p50 {:?}, max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    // The callee's node signed and kept its own receipts.
    wait_for("bob's receipts", async || {
        p.b.receipts(100).map(|r| r.len()).unwrap_or(0) == 20
    })
    .await;
    let callee_receipts = p.b.receipts(100).expect("receipts");
    assert!(
        callee_receipts
            .iter()
            .all(|(_, r)| r.issuer == p.bob && r.caller == p.alice)
    );
    // Trust in bob rose above the prior on alice's node.
    let after = p.a.trust(&p.bob, None);
    assert!(after.direct_evidence > before.direct_evidence);
    assert!(
        after.score > before.score,
        "trust in bob: {} before, {} after",
        before.score,
        after.score
    );
    assert!(p.a.trust(&p.bob, Some("echo")).score > before.score);
    let metrics = p.b.metrics();
    assert_eq!(metrics.intents_received, 20);
    assert_eq!(metrics.intents_completed, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_agent_answers_and_a_slow_one_times_out() {
    let p = pair(|_| {}, |_| {}).await;
    // carol has no handler: her intents wait in her inbox until she answers.
    let b = p.b.clone();
    let carol = p.carol.clone();
    let answering = tokio::spawn(async move {
        let intent = b
            .next_intent(&carol, Duration::from_secs(10))
            .await
            .expect("poll")
            .expect("an intent");
        assert_eq!(intent.capability, "ask");
        b.answer(intent.id, AgentReply::completed(serde_json::json!("42")))
            .expect("answer");
        // A second answer to the same intent is refused.
        assert!(
            b.answer(intent.id, AgentReply::completed(serde_json::json!("43")))
                .is_err()
        );
    });
    let outcome =
        p.a.send_intent(IntentRequest::new(
            p.alice.clone(),
            p.carol.clone(),
            "ask",
            serde_json::json!({ "q": "meaning of life" }),
        ))
        .await
        .expect("send");
    answering.await.expect("answering task");
    assert_eq!(outcome.outcome, Outcome::Success);
    assert_eq!(outcome.result.expect("result").output, b"\"42\"".to_vec());

    // Nobody polls carol's inbox now, and bob sleeps past the deadline: both time out, and
    // the timeouts are outcomes with receipts.
    for (to, capability, input) in [
        (&p.carol, "ask", serde_json::json!({})),
        (&p.bob, "echo", serde_json::json!({ "sleep_ms": 2000 })),
    ] {
        let outcome =
            p.a.send_intent(
                IntentRequest::new(p.alice.clone(), to.clone(), capability, input)
                    .with_timeout(Duration::from_millis(500)),
            )
            .await
            .expect("send");
        assert_eq!(outcome.outcome, Outcome::Timeout, "{outcome:?}");
        let receipt =
            p.a.receipt(&outcome.receipt)
                .expect("store")
                .expect("receipt");
        assert_eq!(receipt.outcome, Outcome::Timeout);
        assert_eq!(receipt.time_allowed_ms, 500);
    }
    assert_eq!(p.a.metrics().intent_timeouts, 2);
}

/// Sends raw intent bytes, giving up after 10 s.
async fn unchecked(
    from: &NodeHandle,
    to: agentnet_protocol::PeerId,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, NodeError> {
    tokio::time::timeout(Duration::from_secs(10), from.send_unchecked(to, bytes))
        .await
        .expect("an answer or a failure within 10 s")
}

fn intent_envelope(from: &Keypair, to: &Did, id: IntentId, nonce: u64) -> SignedEnvelope {
    let now = Timestamp::now();
    let intent = Intent {
        id,
        from: from.did(),
        to: to.clone(),
        capability: "echo".into(),
        input: b"{}".to_vec(),
        max_cost: None,
        issued_at: now,
        deadline: now.saturating_add(Duration::from_secs(30)),
        nonce,
    };
    SignedEnvelope::seal(from, &intent).expect("seal")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_forged_and_oversized_intents_are_refused_and_cost_the_sender() {
    let p = pair(|_| {}, |_| {}).await;
    let (peer_a, peer_b) = (p.a.peer_id(), p.b.peer_id());
    let mallory = Keypair::generate().expect("key");
    let envelope = intent_envelope(&mallory, &p.bob, IntentId([7; 16]), 1);

    // First delivery is answered with bob's signed result.
    let first = unchecked(&p.a, peer_b, envelope.to_bytes())
        .await
        .expect("send");
    assert!(matches!(
        IntentResponse::from_bytes(&first),
        Ok(IntentResponse::Result(_))
    ));
    assert_eq!(p.b.peer_penalty(&peer_a), 0.0);

    // The same bytes again: a replay.
    let again = unchecked(&p.a, peer_b, envelope.to_bytes())
        .await
        .expect("send");
    let Ok(IntentResponse::Rejected(rejection)) = IntentResponse::from_bytes(&again) else {
        panic!("a replay must be rejected");
    };
    assert_eq!(rejection.code, RejectionCode::Replay);
    let after_replay = p.b.peer_penalty(&peer_a);
    assert!(after_replay < 0.0, "the replaying peer's score drops");

    // Oversized: more bytes than any intent envelope may have. b reads one byte past the
    // bound, refuses, and penalises the sender.
    let huge = vec![0u8; MAX_INTENT_LEN + MAX_ENVELOPE_OVERHEAD + 1024];
    let answer = unchecked(&p.a, peer_b, huge).await.expect("send");
    let Ok(IntentResponse::Rejected(rejection)) = IntentResponse::from_bytes(&answer) else {
        panic!("an oversized intent must be rejected");
    };
    assert_eq!(rejection.code, RejectionCode::Invalid);
    assert!(rejection.message.contains("limit"), "{}", rejection.message);
    assert!(p.b.peer_penalty(&peer_a) <= after_replay + agentnet_trust::OVERSIZED.score + 1.0);

    let after_oversized = p.b.peer_penalty(&peer_a);
    // Garbage: refused as invalid, and nothing panicked: the node still works.
    let answer = unchecked(&p.a, peer_b, vec![0xff; 100]).await;
    if let Ok(answer) = answer {
        let Ok(IntentResponse::Rejected(rejection)) = IntentResponse::from_bytes(&answer) else {
            panic!("garbage must be rejected");
        };
        assert_eq!(rejection.code, RejectionCode::Invalid);
    }
    assert!(p.b.peer_penalty(&peer_a) < after_oversized);
    assert!(p.b.metrics().intents_rejected >= 2);
    // A forgery: mallory's intent with alice's DID put in place of hers, as signer and as
    // sender. The signature no longer verifies.
    let mut bytes = intent_envelope(&mallory, &p.bob, IntentId([8; 16]), 2).to_bytes();
    let mallory_did = mallory.did();
    let (m, a) = (mallory_did.as_str().as_bytes(), p.alice.as_str().as_bytes());
    assert_eq!(m.len(), a.len());
    let mut replaced = 0;
    while let Some(at) = bytes.windows(m.len()).position(|w| w == m) {
        bytes[at..at + m.len()].copy_from_slice(a);
        replaced += 1;
    }
    assert!(replaced >= 1, "the signer appears in the envelope");
    // A bad signature costs more than the remaining margin: b answers, bans a and drops
    // the connection, so the answer may be lost with it.
    if let Ok(answer) = unchecked(&p.a, peer_b, bytes).await {
        let Ok(IntentResponse::Rejected(rejection)) = IntentResponse::from_bytes(&answer) else {
            panic!("a forgery must be rejected");
        };
        assert_eq!(rejection.code, RejectionCode::Invalid);
    }
    let after_forgery = p.b.peer_penalty(&peer_a);
    assert!(
        after_forgery <= agentnet_trust::FATAL_SCORE,
        "{after_forgery}"
    );
    wait_for("b to drop the banned peer", async || {
        !p.b.connected_peers()
            .await
            .expect("peers")
            .contains(&peer_a)
    })
    .await;
    // A banned peer that dials again is dropped again.
    let addr = p.b.listen_addrs().await.expect("addrs")[0].clone();
    p.a.dial(addr).await.expect("dial");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !p.b.connected_peers()
            .await
            .expect("peers")
            .contains(&peer_a)
    );

    assert!(
        p.b.search(&agentnet_discovery::SearchQuery::new("echo", 5))
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_agent_gets_no_intents_anywhere() {
    let gateway = Keypair::generate().expect("key");
    let gateway_did = gateway.did();
    let gd = gateway_did.clone();
    let p = pair(
        |c| c.pause_issuers = vec![gateway_did.clone()],
        |c| c.pause_issuers = vec![gd],
    )
    .await;
    let now = Timestamp::now();
    let notice = PauseNotice {
        issuer: gateway.did(),
        subjects: vec![p.bob.clone()],
        action: PauseAction::Pause,
        reason: "over budget".into(),
        seq: 1,
        issued_at: now,
        expires_at: now.saturating_add(Duration::from_secs(3600)),
    };
    p.a.publish(&SignedEnvelope::seal(&gateway, &notice).expect("seal"))
        .await
        .expect("publish the pause");
    assert!(p.a.is_paused(&p.bob));
    wait_for("the pause to reach b", async || p.b.is_paused(&p.bob)).await;
    // The sending node refuses at once…
    let err =
        p.a.send_intent(IntentRequest::new(
            p.alice.clone(),
            p.bob.clone(),
            "echo",
            serde_json::json!({}),
        ))
        .await
        .expect_err("paused");
    assert!(
        matches!(err, NodeError::Paused(ref d) if *d == p.bob),
        "{err}"
    );
    // …and so does the receiving node, for a sender that does not check.
    let mallory = Keypair::generate().expect("key");
    let answer =
        p.a.send_unchecked(
            p.b.peer_id(),
            intent_envelope(&mallory, &p.bob, IntentId([9; 16]), 1).to_bytes(),
        )
        .await
        .expect("send");
    let Ok(IntentResponse::Rejected(rejection)) = IntentResponse::from_bytes(&answer) else {
        panic!("an intent to a paused agent must be rejected");
    };
    assert_eq!(rejection.code, RejectionCode::Paused);
    // Resume (a higher seq) lifts it.
    let resume = PauseNotice {
        action: PauseAction::Resume,
        seq: 2,
        ..notice
    };
    p.a.publish(&SignedEnvelope::seal(&gateway, &resume).expect("seal"))
        .await
        .expect("publish the resume");
    wait_for("the resume to reach b", async || !p.b.is_paused(&p.bob)).await;
    let outcome =
        p.a.send_intent(IntentRequest::new(
            p.alice.clone(),
            p.bob.clone(),
            "echo",
            serde_json::json!({}),
        ))
        .await
        .expect("send");
    assert_eq!(outcome.outcome, Outcome::Success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_gateway_means_nothing_is_sent() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let p = pair(
        |c| {
            c.gateway = Some(agentnet_node::GatewayConfig {
                url: format!("http://127.0.0.1:{port}"),
                api_key: "agn_test_secret".into(),
            })
        },
        |_| {},
    )
    .await;
    let err =
        p.a.send_intent(IntentRequest::new(
            p.alice.clone(),
            p.bob.clone(),
            "echo",
            serde_json::json!({}),
        ))
        .await
        .expect_err("fail closed");
    assert!(
        matches!(err, NodeError::Budget(BudgetError::Unavailable(_))),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(p.b.metrics().intents_received, 0, "nothing reached bob");
    assert_eq!(p.a.metrics().intents_sent, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_agents_keys_receipts_and_trust() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (alice, bob, trust_before) = {
        let n = node(&dir, |_| {}).await;
        let alice = n
            .register_agent(AgentSpec::new(
                "alice",
                "asks",
                vec![capability("plan", "Plan")],
            ))
            .await
            .expect("alice");
        let bob = n
            .register_agent(AgentSpec::new(
                "bob",
                "echoes",
                vec![capability("echo", "Echo")],
            ))
            .await
            .expect("bob");
        n.serve(&bob, |_: Intent| async {
            AgentReply::completed(serde_json::json!(1))
        })
        .expect("serve");
        // Both agents on one node: delivered locally, with the same checks.
        for _ in 0..5 {
            let outcome = n
                .send_intent(IntentRequest::new(
                    alice.clone(),
                    bob.clone(),
                    "echo",
                    serde_json::json!({}),
                ))
                .await
                .expect("send");
            assert_eq!(outcome.outcome, Outcome::Success);
        }
        let trust = n.trust(&bob, None).score;
        assert!(trust > 0.5);
        n.shutdown().await.expect("shutdown");
        (alice, bob, trust)
    };
    let n = node(&dir, |_| {}).await;
    assert_eq!(n.agents(), {
        let mut v = vec![alice.clone(), bob.clone()];
        v.sort();
        v
    });
    assert_eq!(
        n.receipts(100).expect("receipts").len(),
        10,
        "5 caller + 5 callee receipts"
    );
    let trust_after = n.trust(&bob, None).score;
    assert!(
        (trust_after - trust_before).abs() < 0.05,
        "trust rebuilt from receipts: {trust_before} before, {trust_after} after"
    );
    // bob's inbox works again after the restart (no handler registered now).
    let n2 = n.clone();
    let b2 = bob.clone();
    let answering = tokio::spawn(async move {
        let intent = n2
            .next_intent(&b2, Duration::from_secs(10))
            .await
            .expect("poll")
            .expect("intent");
        n2.answer(intent.id, AgentReply::declined("busy"))
            .expect("answer");
    });
    let outcome = n
        .send_intent(IntentRequest::new(
            alice.clone(),
            bob.clone(),
            "echo",
            serde_json::json!({}),
        ))
        .await
        .expect("send");
    answering.await.expect("task");
    assert_eq!(outcome.outcome, Outcome::Declined);
    // Removing an agent publishes a tombstone and forgets its key.
    n.remove_agent(&bob).await.expect("remove");
    assert!(n.is_removed(&bob).expect("store"));
    assert_eq!(n.agents(), vec![alice.clone()]);
    let err = n
        .send_intent(IntentRequest::new(
            alice,
            bob,
            "echo",
            serde_json::json!({}),
        ))
        .await
        .expect_err("removed");
    assert!(matches!(err, NodeError::UnknownAgent(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosted_agents_card_is_renewed_before_it_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Keypair::generate().expect("key");
    {
        let n = node(&dir, |_| {}).await;
        n.adopt(Keypair::from_seed(&agent.seed())).expect("adopt");
        let now = Timestamp::now();
        let card = agentnet_protocol::AgentCard {
            did: agent.did(),
            name: "short-lived".into(),
            description: String::new(),
            capabilities: vec![capability("echo", "Echo")],
            endpoints: vec![],
            host: n.peer_id(),
            seq: 7,
            issued_at: now,
            expires_at: now.saturating_add(Duration::from_secs(3600)),
            credentials: vec![],
        };
        n.publish(&SignedEnvelope::seal(&agent, &card).expect("seal"))
            .await
            .expect("publish");
        n.shutdown().await.expect("shutdown");
    }
    // The renewal check runs at start and hourly.
    let n = node(&dir, |_| {}).await;
    wait_for("the renewed card", async || {
        n.agent(&agent.did())
            .ok()
            .flatten()
            .is_some_and(|c| c.seq == 8)
    })
    .await;
    let card = n.agent(&agent.did()).expect("store").expect("card");
    let left = card.expires_at.saturating_duration_since(Timestamp::now());
    assert!(left > Duration::from_secs(29 * 24 * 3600), "{left:?}");
    assert_eq!(card.name, "short-lived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_records_are_pruned_so_sync_stops_offering_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Keypair::generate().expect("key");
    let host = Keypair::generate().expect("key").peer_id();
    {
        let n = node(&dir, |_| {}).await;
        let now = Timestamp::now();
        let card = agentnet_protocol::AgentCard {
            did: agent.did(),
            name: "ephemeral".into(),
            description: String::new(),
            capabilities: vec![capability("blink", "Blink once")],
            endpoints: vec![],
            host,
            seq: 1,
            issued_at: now,
            expires_at: now.saturating_add(Duration::from_millis(1500)),
            credentials: vec![],
        };
        n.publish(&SignedEnvelope::seal(&agent, &card).expect("seal"))
            .await
            .expect("publish");
        assert_eq!(n.capabilities(), 1);
        n.shutdown().await.expect("shutdown");
    }
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let n = node(&dir, |_| {}).await;
    assert_eq!(n.capabilities(), 0, "the expired card is not indexed");
    assert!(
        n.agent(&agent.did()).expect("store").is_none(),
        "nor stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_hold_per_sending_peer_and_per_sending_agent() {
    // b admits bursts of 3 per peer and per agent, refilled at 1 a minute.
    let p = pair(
        |_| {},
        |c| {
            c.intents.per_minute = 1;
            c.intents.burst = 3;
        },
    )
    .await;
    let send = || {
        p.a.send_intent(IntentRequest::new(
            p.alice.clone(),
            p.bob.clone(),
            "echo",
            serde_json::json!({}),
        ))
    };
    for _ in 0..3 {
        assert_eq!(send().await.expect("send").outcome, Outcome::Success);
    }
    let limited = send().await.expect("send");
    assert_eq!(
        limited.rejection.map(|r| r.code),
        Some(RejectionCode::RateLimited),
        "the fourth in the burst is refused"
    );
    let code = |answer: Vec<u8>| match IntentResponse::from_bytes(&answer) {
        Ok(IntentResponse::Rejected(r)) => Some(r.code),
        Ok(_) => None,
        Err(e) => panic!("answer: {e}"),
    };
    let b_addr = p.b.listen_addrs().await.expect("addrs")[0].clone();
    let dirs = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let c = node(&dirs.0, |_| {}).await;
    let d = node(&dirs.1, |_| {}).await;
    for n in [&c, &d] {
        n.dial(b_addr.clone()).await.expect("dial");
    }
    let (mallory, eve) = (
        Keypair::generate().expect("key"),
        Keypair::generate().expect("key"),
    );
    // Peer a is spent, whichever agent it sends for.
    let answer = unchecked(
        &p.a,
        p.b.peer_id(),
        intent_envelope(&mallory, &p.bob, IntentId([1; 16]), 1).to_bytes(),
    )
    .await
    .expect("send");
    assert_eq!(code(answer), Some(RejectionCode::RateLimited), "per peer");
    // Mallory spends her own burst through c…
    for i in 0..3u8 {
        let answer = unchecked(
            &c,
            p.b.peer_id(),
            intent_envelope(&mallory, &p.bob, IntentId([10 + i; 16]), 1).to_bytes(),
        )
        .await
        .expect("send");
        assert_eq!(
            code(answer),
            None,
            "mallory's intent {i} through c is admitted"
        );
    }
    // …after which c is spent for eve too (per peer), and mallory is refused through the
    // fresh peer d (per agent), while eve goes through d.
    let answer = unchecked(
        &c,
        p.b.peer_id(),
        intent_envelope(&eve, &p.bob, IntentId([20; 16]), 1).to_bytes(),
    )
    .await
    .expect("send");
    assert_eq!(
        code(answer),
        Some(RejectionCode::RateLimited),
        "peer c is spent"
    );
    let answer = unchecked(
        &d,
        p.b.peer_id(),
        intent_envelope(&mallory, &p.bob, IntentId([21; 16]), 1).to_bytes(),
    )
    .await
    .expect("send");
    assert_eq!(
        code(answer),
        Some(RejectionCode::RateLimited),
        "mallory is spent, whatever the peer"
    );
    let answer = unchecked(
        &d,
        p.b.peer_id(),
        intent_envelope(&eve, &p.bob, IntentId([22; 16]), 1).to_bytes(),
    )
    .await
    .expect("send");
    assert_eq!(code(answer), None, "eve through d is admitted");
    // Sending past the limit is spam (`specs/trust.md`, penalties): the peers that did lost
    // score.
    let (a_score, c_score) = (
        p.b.peer_penalty(&p.a.peer_id()),
        p.b.peer_penalty(&c.peer_id()),
    );
    assert!(a_score < 0.0 && c_score < 0.0, "{a_score} {c_score}");
}
