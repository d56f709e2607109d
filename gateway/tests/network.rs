//! The gateway with real nodes on 127.0.0.1: a node that spends through the gateway's REST
//! API reserves and settles each intent it sends (`specs/intents.md#budgets`), and the kill
//! switch's pause notice, published by the gateway's own node, makes the other nodes refuse
//! intents to the paused agent.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentnet_gateway::budgets::{self, NewBudget, Period, Scope};
use agentnet_gateway::network::NodeNetwork;
use agentnet_gateway::orgs::{self, AgentRequest};
use agentnet_gateway::{Gateway, GatewayConfig, Network, credentials, keys};
use agentnet_node::{
    AgentReply, AgentSpec, GatewayConfig as NodeGateway, IntentRequest, Node, NodeConfig,
    NodeHandle,
};
use agentnet_protocol::{Capability, Credential, Intent, Keypair, Outcome, Price};
use common::*;

async fn node(dir: &tempfile::TempDir, configure: impl FnOnce(&mut NodeConfig)) -> NodeHandle {
    let mut config = NodeConfig::new(dir.path());
    configure(&mut config);
    Node::builder(config).spawn().await.expect("node")
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_spend_through_the_gateway_and_obey_its_kill_switch() {
    // The gateway, with its own node.
    let dirs = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let gateway_node = node(&dirs.0, |_| {}).await;
    let db = db_with(8).await;
    let key = Keypair::generate().expect("key");
    let gw = Gateway::new(
        db,
        Keypair::from_seed(&key.seed()),
        Some(Arc::new(NodeNetwork(gateway_node.clone())) as Arc<dyn Network>),
        GatewayConfig::default(),
    );
    let (admin, admin_key) = admin(&gw, "acme").await;
    let base = serve(gw.clone()).await;
    let _ = admin_key;

    // The callee's node hosts a translator that carries the gateway's credential, so every
    // node obeys the gateway's pause notices about it.
    let host = node(&dirs.1, |_| {}).await;
    let translator_key = Keypair::generate().expect("key");
    let translator_did = translator_key.did();
    let vc = credentials::membership(gw.audit().key(), &translator_did, admin.org_id, "acme")
        .expect("vc");
    orgs::create_agent(
        &gw,
        &admin,
        &AgentRequest {
            did: translator_did.to_string(),
            name: "translator".into(),
            team_id: None,
        },
    )
    .await
    .expect("agent");
    let mut spec = AgentSpec::new(
        "translator",
        "translates",
        vec![Capability {
            name: "translate".into(),
            description: "Translate text".into(),
            tags: vec![],
            version: "1".into(),
            price: None,
        }],
    );
    spec.credentials = vec![Credential {
        format: credentials::FORMAT.into(),
        data: serde_json::to_vec(&vc).expect("json"),
    }];
    let translator = host
        .register_agent_with_key(translator_key, spec)
        .await
        .expect("register");
    assert_eq!(translator, translator_did);
    host.serve(&translator, |_intent: Intent| async move {
        AgentReply::completed(serde_json::json!({"text": "hallo"})).with_cost(Price {
            amount_micros: 700,
            currency: "USD".into(),
        })
    })
    .expect("serve");

    // The caller's node spends through the gateway with a developer key.
    let dev = keys::create_key(
        &gw,
        &admin,
        &keys::KeyRequest {
            name: "node".into(),
            role: agentnet_gateway::Role::Developer,
            team_id: None,
            member_id: None,
            scopes: vec![keys::KeyScope::Spend],
            expires_at_ms: None,
        },
    )
    .await
    .expect("key");
    let caller_node = node(&dirs.2, |c| {
        c.gateway = Some(NodeGateway {
            url: base.clone(),
            api_key: dev.key.clone(),
        });
    })
    .await;
    let caller = caller_node
        .register_agent(AgentSpec::new(
            "planner",
            "plans",
            vec![Capability {
                name: "plan".into(),
                description: "Plan".into(),
                tags: vec![],
                version: "1".into(),
                price: None,
            }],
        ))
        .await
        .expect("caller");
    orgs::create_agent(
        &gw,
        &admin,
        &AgentRequest {
            did: caller.to_string(),
            name: "planner".into(),
            team_id: None,
        },
    )
    .await
    .expect("agent");
    let budget = budgets::create(
        &gw,
        &admin,
        &NewBudget {
            scope: Scope::Agent,
            scope_id: caller.to_string(),
            period: Period::Daily,
            currency: "USD".into(),
            limit_micros: 1_000_000,
            auto_pause: false,
        },
    )
    .await
    .expect("budget");

    for n in [&host, &caller_node] {
        n.dial(gateway_node.listen_addrs().await.expect("addrs")[0].clone())
            .await
            .expect("dial");
    }
    caller_node
        .dial(host.listen_addrs().await.expect("addrs")[0].clone())
        .await
        .expect("dial");
    wait_for("the caller to hold the translator's card", async || {
        caller_node.agent(&translator).ok().flatten().is_some()
    })
    .await;

    let send = || {
        let mut r = IntentRequest::new(
            caller.clone(),
            translator.clone(),
            "translate",
            serde_json::json!({"text": "hello"}),
        );
        r = r.with_max_cost(Price {
            amount_micros: 1_000,
            currency: "USD".into(),
        });
        caller_node.send_intent(r)
    };
    let outcome = send().await.expect("send");
    assert_eq!(outcome.outcome, Outcome::Success, "{outcome:?}");
    // The node reserved max_cost and settled the callee's stated cost.
    let b = budgets::get(gw.db(), &admin, budget.id)
        .await
        .expect("get")
        .expect("budget");
    assert_eq!((b.spent_micros, b.reserved_micros), (700, 0));

    // The kill switch: the gateway's node publishes the notice; the caller's node refuses.
    let paused = agentnet_gateway::pauses::issue(
        &gw,
        &admin,
        &agentnet_gateway::pauses::PauseRequest {
            scope: agentnet_gateway::pauses::PauseScope::Agent,
            scope_id: translator.to_string(),
            action: agentnet_gateway::pauses::PauseVerb::Pause,
            reason: "incident".into(),
        },
    )
    .await
    .expect("pause");
    assert!(paused.published);
    wait_for(
        "the pause to reach the caller's and the host's nodes",
        async || caller_node.is_paused(&translator) && host.is_paused(&translator),
    )
    .await;
    let refused = send().await;
    assert!(
        !matches!(&refused, Ok(o) if o.outcome == Outcome::Success),
        "an intent to a paused agent must not go through: {refused:?}"
    );
    let b = budgets::get(gw.db(), &admin, budget.id)
        .await
        .expect("get")
        .expect("budget");
    assert_eq!(
        (b.spent_micros, b.reserved_micros),
        (700, 0),
        "nothing held for a refused intent"
    );
    // The gateway's own node lists what it has seen.
    let seen = NodeNetwork(gateway_node.clone()).agents("", 100);
    let t = seen
        .iter()
        .find(|a| a.did == translator.to_string())
        .expect("seen");
    assert_eq!(t.credential_issuers, vec![gw.did().to_string()]);
}
