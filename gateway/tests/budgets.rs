//! Budgets on real Postgres: exact reservations under 64 concurrent reservers, the ladder
//! firing each threshold once, idempotent settlement, expiry, policies and approvals, pauses,
//! and key rotation that keeps budget windows.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use agentnet_gateway::budgets::{self, BudgetError, NewBudget, Period, ReserveRequest, Scope};
use agentnet_gateway::keys::{self, KeyRequest, Principal};
use agentnet_gateway::orgs::{self, AgentRequest};
use agentnet_gateway::pauses::{self, PauseRequest, PauseScope, PauseVerb};
use agentnet_gateway::policies::{self, NewPolicy, PolicyKind, PolicyRefusal, PolicyScope};
use agentnet_gateway::{Gateway, GatewayConfig, Role};
use agentnet_protocol::{PauseAction, PauseNotice, ValidationContext};
use common::*;

fn request(agent: &str, amount: i64) -> ReserveRequest {
    ReserveRequest {
        intent_id: uuid::Uuid::new_v4().simple().to_string(),
        agent: agent.into(),
        callee: "did:key:callee".into(),
        capability: "translate".into(),
        amount_micros: amount,
        currency: "USD".into(),
        expires_at_ms: i64::MAX / 4,
    }
}

async fn budget(
    gw: &Gateway,
    admin: &Principal,
    scope: Scope,
    id: &str,
    limit: i64,
) -> budgets::Budget {
    budgets::create(
        gw,
        admin,
        &NewBudget {
            scope,
            scope_id: id.into(),
            period: Period::Monthly,
            currency: "USD".into(),
            limit_micros: limit,
            auto_pause: false,
        },
    )
    .await
    .expect("budget")
}

async fn org_budget(gw: &Gateway, admin: &Principal, limit: i64) -> budgets::Budget {
    budget(gw, admin, Scope::Org, &admin.org_id.to_string(), limit).await
}

async fn thresholds(gw: &Gateway, who: &Principal, budget: uuid::Uuid) -> Vec<i32> {
    budgets::alerts(gw.db(), who, budget)
        .await
        .expect("alerts")
        .into_iter()
        .map(|a| a.threshold)
        .collect()
}

/// 64 tasks reserve `amount` until refused, half of them through a second gateway on the
/// same database; returns how many were granted and why each stopped.
async fn race(gws: [&Gateway; 2], who: &Principal, amount: i64) -> (usize, Vec<String>) {
    let granted = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (gw, who, granted) = (gws[i % 2].clone(), who.clone(), granted.clone());
        let agent = agent_did();
        tasks.push(tokio::spawn(async move {
            loop {
                match budgets::reserve(&gw, &who, &request(&agent, amount)).await {
                    Ok(_) => {
                        granted.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(
                        e @ (BudgetError::ApprovalRequired { .. } | BudgetError::HardStop { .. }),
                    ) => {
                        return e.to_string();
                    }
                    Err(e) => panic!("reserve: {e}"),
                }
            }
        }));
    }
    let mut refusals = Vec::new();
    for t in tasks {
        refusals.push(t.await.expect("task"));
    }
    (granted.load(Ordering::SeqCst), refusals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_reservers_never_overshoot_and_the_ladder_fires_once() {
    let t = gateway_with(12, GatewayConfig::default()).await;
    let gw = &t.gw;
    let other = replica(&t, 12).await;
    let (admin, _) = admin(gw, "acme").await;
    let budget = org_budget(gw, &admin, 1_000_000).await;

    // Up to 100%: exactly 50 reservations of 20,000 fit.
    let (granted, refusals) = race([gw, &other], &admin, 20_000).await;
    assert_eq!(granted, 50);
    assert!(
        refusals.iter().all(|r| r.contains("re-authorisation")),
        "{refusals:?}"
    );
    let b = budgets::get(gw.db(), &admin, budget.id)
        .await
        .expect("get")
        .expect("budget");
    assert_eq!(b.spent_micros + b.reserved_micros, 1_000_000);
    assert_eq!(thresholds(gw, &admin, budget.id).await, vec![80, 100]);
    // The 100% gate opened one re-authorisation approval, however many were refused.
    let pending = policies::approvals(gw, &admin, Some("pending"))
        .await
        .expect("approvals");
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].kind, "budget");

    // Approving it re-authorises: up to the 120% hard stop, exactly 10 more.
    policies::decide(gw, &admin, pending[0].id, true, Some("quarter end"))
        .await
        .expect("approve");
    let (granted, refusals) = race([gw, &other], &admin, 20_000).await;
    assert_eq!(granted, 10);
    assert!(
        refusals.iter().all(|r| r.contains("hard stop")),
        "{refusals:?}"
    );
    let b = budgets::get(gw.db(), &admin, budget.id)
        .await
        .expect("get")
        .expect("budget");
    assert_eq!(
        b.spent_micros + b.reserved_micros,
        1_200_000,
        "zero overshoot"
    );
    assert_eq!(
        thresholds(gw, &admin, budget.id).await,
        vec![80, 100, 120],
        "each threshold exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlement_is_idempotent_clamped_and_expiry_releases() {
    let t = gateway().await;
    let gw = &t.gw;
    let (admin, _) = admin(gw, "acme").await;
    let budget = org_budget(gw, &admin, 100_000).await;
    let a = agent_did();
    let r = budgets::reserve(gw, &admin, &request(&a, 30_000))
        .await
        .expect("reserve");
    assert_eq!(r.budgets, vec![budget.id]);
    let first = budgets::settle(gw.db(), &admin, r.reservation_id, 50_000)
        .await
        .expect("settle");
    assert!(first.first);
    assert_eq!(first.settled_micros, 30_000, "never more than reserved");
    let again = budgets::settle(gw.db(), &admin, r.reservation_id, 1)
        .await
        .expect("again");
    assert!(!again.first);
    assert_eq!(again.settled_micros, 30_000);
    let b = budgets::get(gw.db(), &admin, budget.id)
        .await
        .expect("get")
        .expect("budget");
    assert_eq!((b.spent_micros, b.reserved_micros), (30_000, 0));

    // A reservation past its expiry is released by the sweeper, and settles as nothing.
    let mut lapsed = request(&a, 40_000);
    lapsed.expires_at_ms = 1_000;
    let lapsed = budgets::reserve(gw, &admin, &lapsed)
        .await
        .expect("reserve");
    let b = budgets::get(gw.db(), &admin, budget.id)
        .await
        .expect("get")
        .expect("budget");
    assert_eq!(b.reserved_micros, 40_000);
    assert_eq!(budgets::release_expired(gw.db()).await.expect("release"), 1);
    let b = budgets::get(gw.db(), &admin, budget.id)
        .await
        .expect("get")
        .expect("budget");
    assert_eq!((b.spent_micros, b.reserved_micros), (30_000, 0));
    let late = budgets::settle(gw.db(), &admin, lapsed.reservation_id, 40_000)
        .await
        .expect("late");
    assert!(!late.first);
    assert_eq!(late.settled_micros, 0);
    let b = budgets::get(gw.db(), &admin, budget.id)
        .await
        .expect("get")
        .expect("budget");
    assert_eq!(
        (b.spent_micros, b.reserved_micros),
        (30_000, 0),
        "a lapsed hold charges nothing"
    );
    assert!(matches!(
        budgets::settle(gw.db(), &admin, uuid::Uuid::new_v4(), 1).await,
        Err(BudgetError::NotFound(_))
    ));
    // Bad input is refused before anything is held.
    let mut bad = request(&a, -1);
    assert!(matches!(
        budgets::reserve(gw, &admin, &bad).await,
        Err(BudgetError::Invalid(_))
    ));
    bad = request("not-a-did", 1);
    assert!(matches!(
        budgets::reserve(gw, &admin, &bad).await,
        Err(BudgetError::Invalid(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_applicable_budget_holds_and_a_refusal_holds_none() {
    let t = gateway().await;
    let gw = &t.gw;
    let (admin, _) = admin(gw, "acme").await;
    let team = orgs::create_team(gw, &admin, "research")
        .await
        .expect("team");
    let a = agent_did();
    orgs::create_agent(
        gw,
        &admin,
        &AgentRequest {
            did: a.clone(),
            name: "a".into(),
            team_id: Some(team.id),
        },
    )
    .await
    .expect("agent");
    let org = org_budget(gw, &admin, 1_000_000).await;
    let team_budget = budget(gw, &admin, Scope::Team, &team.id.to_string(), 100_000).await;
    let agent_budget = budget(gw, &admin, Scope::Agent, &a, 50_000).await;
    let key_budget = budget(gw, &admin, Scope::Key, &admin.key_id, 1_000_000).await;
    let r = budgets::reserve(gw, &admin, &request(&a, 40_000))
        .await
        .expect("reserve");
    let mut expected = vec![org.id, team_budget.id, agent_budget.id, key_budget.id];
    expected.sort();
    assert_eq!(r.budgets, expected);
    // The agent's budget has 10,000 left: a reservation of 20,000 is refused by it and holds
    // nothing anywhere.
    assert!(matches!(
        budgets::reserve(gw, &admin, &request(&a, 20_000)).await,
        Err(BudgetError::ApprovalRequired { budget, .. }) if budget == agent_budget.id
    ));
    for id in expected {
        let b = budgets::get(gw.db(), &admin, id)
            .await
            .expect("get")
            .expect("budget");
        assert_eq!(b.reserved_micros, 40_000, "{}", b.scope);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_deny_cap_and_hold_for_approval() {
    let t = gateway().await;
    let gw = &t.gw;
    let (admin, _) = admin(gw, "acme").await;
    let a = agent_did();
    orgs::create_agent(
        gw,
        &admin,
        &AgentRequest {
            did: a.clone(),
            name: "a".into(),
            team_id: None,
        },
    )
    .await
    .expect("agent");
    let org = admin.org_id.to_string();
    let policy = |kind, capability: Option<&str>, max| NewPolicy {
        scope: PolicyScope::Org,
        scope_id: org.clone(),
        kind,
        capability: capability.map(str::to_owned),
        max_cost_micros: max,
    };
    policies::create(gw, &admin, &policy(PolicyKind::MaxCost, None, Some(10_000)))
        .await
        .expect("max");
    policies::create(gw, &admin, &policy(PolicyKind::Deny, Some("launch"), None))
        .await
        .expect("deny");
    let hold = policies::create(
        gw,
        &admin,
        &NewPolicy {
            scope: PolicyScope::Agent,
            scope_id: a.clone(),
            kind: PolicyKind::Approval,
            capability: Some("pay".into()),
            max_cost_micros: None,
        },
    )
    .await
    .expect("approval");

    budgets::reserve(gw, &admin, &request(&a, 10_000))
        .await
        .expect("at the cap");
    assert!(matches!(
        budgets::reserve(gw, &admin, &request(&a, 10_001)).await,
        Err(BudgetError::Policy(PolicyRefusal::Denied { .. }))
    ));
    let mut launch = request(&a, 1);
    launch.capability = "launch".into();
    assert!(matches!(
        budgets::reserve(gw, &admin, &launch).await,
        Err(BudgetError::Policy(PolicyRefusal::Denied { .. }))
    ));
    let mut pay = request(&a, 5_000);
    pay.capability = "pay".into();
    let Err(BudgetError::Policy(PolicyRefusal::NeedsApproval { policy, approval })) =
        budgets::reserve(gw, &admin, &pay).await
    else {
        panic!("a held intent needs approval");
    };
    assert_eq!(policy, hold.id);
    // Asking again finds the same pending approval.
    let Err(BudgetError::Policy(PolicyRefusal::NeedsApproval {
        approval: again, ..
    })) = budgets::reserve(gw, &admin, &pay).await
    else {
        panic!("still held");
    };
    assert_eq!(again, approval);
    // A developer cannot decide; a team lead of another team cannot either.
    let dev = keys::create_key(
        gw,
        &admin,
        &KeyRequest {
            name: "dev".into(),
            role: Role::Developer,
            team_id: None,
            member_id: None,
            scopes: vec![],
            expires_at_ms: None,
        },
    )
    .await
    .expect("dev");
    let dev = keys::authenticate(gw.db(), &dev.key).await.expect("auth");
    let other = orgs::create_team(gw, &admin, "other").await.expect("team");
    let lead = keys::create_key(
        gw,
        &admin,
        &KeyRequest {
            name: "lead".into(),
            role: Role::TeamLead,
            team_id: Some(other.id),
            member_id: None,
            scopes: vec![],
            expires_at_ms: None,
        },
    )
    .await
    .expect("lead");
    let lead = keys::authenticate(gw.db(), &lead.key).await.expect("auth");
    assert!(
        policies::decide(gw, &lead, approval, true, None)
            .await
            .is_err(),
        "not its team"
    );
    let _ = dev;
    policies::decide(gw, &admin, approval, true, None)
        .await
        .expect("approve");
    // One approved intent: one reservation of at most the amount asked.
    let mut bigger = pay.clone();
    bigger.amount_micros = 6_000;
    assert!(
        budgets::reserve(gw, &admin, &bigger).await.is_err(),
        "more than approved"
    );
    budgets::reserve(gw, &admin, &pay)
        .await
        .expect("approved once");
    assert!(budgets::reserve(gw, &admin, &pay).await.is_err(), "used up");
    assert!(
        policies::decide(gw, &admin, approval, false, None)
            .await
            .is_err(),
        "decided already"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_signs_publishes_and_refuses_reservations() {
    let t = gateway().await;
    let gw = &t.gw;
    let (admin, _) = admin(gw, "acme").await;
    let team = orgs::create_team(gw, &admin, "ops").await.expect("team");
    let mut agents = Vec::new();
    for i in 0..3 {
        let did = agent_did();
        orgs::create_agent(
            gw,
            &admin,
            &AgentRequest {
                did: did.clone(),
                name: format!("a{i}"),
                team_id: Some(team.id),
            },
        )
        .await
        .expect("agent");
        agents.push(did);
    }
    budgets::reserve(gw, &admin, &request(&agents[0], 1))
        .await
        .expect("before the pause");
    let paused = pauses::issue(
        gw,
        &admin,
        &PauseRequest {
            scope: PauseScope::Team,
            scope_id: team.id.to_string(),
            action: PauseVerb::Pause,
            reason: "incident 7".into(),
        },
    )
    .await
    .expect("pause");
    assert!(paused.published);
    assert_eq!(paused.subjects.len(), 3);
    // The notice on the network is signed by the gateway and names every agent of the team.
    let published = t.published.0.lock().expect("lock").clone();
    assert_eq!(published.len(), 1);
    let notice: PauseNotice = published[0]
        .open(&ValidationContext::now())
        .expect("valid notice");
    assert_eq!(notice.issuer, t.key.did());
    assert_eq!(notice.action, PauseAction::Pause);
    let mut subjects: Vec<String> = notice.subjects.iter().map(|d| d.to_string()).collect();
    subjects.sort();
    let mut expected = agents.clone();
    expected.sort();
    assert_eq!(subjects, expected);
    assert!(matches!(
        budgets::reserve(gw, &admin, &request(&agents[1], 1)).await,
        Err(BudgetError::Paused(_))
    ));
    assert_eq!(pauses::paused(gw, &admin).await.expect("paused").len(), 3);

    let resumed = pauses::issue(
        gw,
        &admin,
        &PauseRequest {
            scope: PauseScope::Agent,
            scope_id: agents[1].clone(),
            action: PauseVerb::Resume,
            reason: String::new(),
        },
    )
    .await
    .expect("resume");
    assert!(
        resumed.seq > paused.seq,
        "a later notice wins on every node"
    );
    budgets::reserve(gw, &admin, &request(&agents[1], 1))
        .await
        .expect("resumed");
    assert!(
        budgets::reserve(gw, &admin, &request(&agents[2], 1))
            .await
            .is_err(),
        "still paused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hard_stop_auto_pauses_the_agent() {
    let t = gateway().await;
    let gw = &t.gw;
    let (admin, _) = admin(gw, "acme").await;
    let a = agent_did();
    orgs::create_agent(
        gw,
        &admin,
        &AgentRequest {
            did: a.clone(),
            name: "spender".into(),
            team_id: None,
        },
    )
    .await
    .expect("agent");
    let b = budgets::create(
        gw,
        &admin,
        &NewBudget {
            scope: Scope::Agent,
            scope_id: a.clone(),
            period: Period::Daily,
            currency: "USD".into(),
            limit_micros: 1_000,
            auto_pause: true,
        },
    )
    .await
    .expect("budget");
    budgets::reauthorise(gw, &admin, b.id)
        .await
        .expect("reauthorise");
    budgets::reserve(gw, &admin, &request(&a, 1_200))
        .await
        .expect("to 120%");
    assert!(matches!(
        budgets::reserve(gw, &admin, &request(&a, 1)).await,
        Err(BudgetError::HardStop { .. })
    ));
    assert_eq!(
        pauses::paused(gw, &admin).await.expect("paused"),
        vec![a.clone()]
    );
    assert_eq!(
        t.published.0.lock().expect("lock").len(),
        1,
        "the pause was published"
    );
    assert!(matches!(
        budgets::reserve(gw, &admin, &request(&a, 1)).await,
        Err(BudgetError::Paused(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_with_a_grace_period_and_keep_their_budgets() {
    let t = gateway().await;
    let gw = &t.gw;
    let (a, a_key) = admin(gw, "org-a").await;
    let key_budget = budget(gw, &a, Scope::Key, &a.key_id, 100_000).await;
    let agent = agent_did();
    budgets::reserve(gw, &a, &request(&agent, 1_000))
        .await
        .expect("reserve");

    // Rotation: the new secret works, the old one too during the grace period; the key id,
    // and so its budget window, is unchanged.
    let rotated = keys::rotate(gw, &a, &a.key_id, 3600).await.expect("rotate");
    assert_eq!(rotated.key_id, a.key_id);
    assert_ne!(rotated.key, a_key);
    let new = keys::authenticate(gw.db(), &rotated.key)
        .await
        .expect("new");
    assert_eq!(
        keys::authenticate(gw.db(), &a_key)
            .await
            .expect("old, in grace")
            .key_id,
        a.key_id
    );
    budgets::reserve(gw, &new, &request(&agent, 1_000))
        .await
        .expect("reserve");
    let b = budgets::get(gw.db(), &a, key_budget.id)
        .await
        .expect("get")
        .expect("budget");
    assert_eq!(b.reserved_micros, 2_000, "the window did not start over");
    // Without grace, the old secret stops at once.
    let again = keys::rotate(gw, &a, &a.key_id, 0).await.expect("rotate");
    assert!(keys::authenticate(gw.db(), &rotated.key).await.is_err());
    assert!(keys::authenticate(gw.db(), &again.key).await.is_ok());
    keys::revoke(gw, &a, &a.key_id).await.expect("revoke");
    assert!(
        keys::authenticate(gw.db(), &again.key).await.is_err(),
        "revoked"
    );
    // An expired key stops too.
    let (b_admin, _) = admin(gw, "org-b").await;
    let short = keys::create_key(
        gw,
        &b_admin,
        &KeyRequest {
            name: "short".into(),
            role: Role::Viewer,
            team_id: None,
            member_id: None,
            scopes: vec![],
            expires_at_ms: Some(1_000),
        },
    )
    .await
    .expect("key");
    assert!(
        keys::authenticate(gw.db(), &short.key).await.is_err(),
        "expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_period_starts_over_and_its_ladder_fires_again() {
    let t = gateway().await;
    let gw = &t.gw;
    let (admin, _) = admin(gw, "acme").await;
    let b = budgets::create(
        gw,
        &admin,
        &NewBudget {
            scope: Scope::Org,
            scope_id: admin.org_id.to_string(),
            period: Period::Daily,
            currency: "USD".into(),
            limit_micros: 1_000,
            auto_pause: false,
        },
    )
    .await
    .expect("budget");
    let a = agent_did();
    let r = budgets::reserve(gw, &admin, &request(&a, 900))
        .await
        .expect("reserve");
    assert_eq!(r.alerts.len(), 1, "80% fired");
    budgets::settle(gw.db(), &admin, r.reservation_id, 900)
        .await
        .expect("settle");
    budgets::reauthorise(gw, &admin, b.id)
        .await
        .expect("reauthorise");
    // Pretend all of that happened yesterday: the next reservation starts a new period.
    for table in ["budgets", "budget_alerts", "approvals"] {
        let column = if table == "budgets" {
            "id"
        } else {
            "budget_id"
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET period_start = period_start - interval '1 day' WHERE {column} = $1"
        )))
        .bind(b.id)
        .execute(gw.db().pool())
        .await
        .expect("age");
    }
    let r = budgets::reserve(gw, &admin, &request(&a, 850))
        .await
        .expect("a fresh period");
    assert_eq!(r.alerts.len(), 1, "80% fires again in the new period");
    let now = budgets::get(gw.db(), &admin, b.id)
        .await
        .expect("get")
        .expect("b");
    assert_eq!((now.spent_micros, now.reserved_micros), (0, 850));
    assert!(!now.reauthorised, "re-authorisation ends with its period");
    assert!(
        now.period_start_ms >= b.period_start_ms,
        "the period starts on today's boundary: {now:?}"
    );
    assert!(matches!(
        budgets::reserve(gw, &admin, &request(&a, 200)).await,
        Err(BudgetError::ApprovalRequired { .. })
    ));
    let periods: std::collections::BTreeSet<i64> = budgets::alerts(gw.db(), &admin, b.id)
        .await
        .expect("alerts")
        .into_iter()
        .filter(|a| a.threshold == 80)
        .map(|a| a.period_start_ms)
        .collect();
    assert_eq!(periods.len(), 2, "one 80% alert per period");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_the_webhook_once() {
    use axum::routing::post;
    let received = Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |axum::Json(v): axum::Json<serde_json::Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().expect("lock").push(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The receiver is on 127.0.0.1: this gateway allows private webhooks.
    let t = gateway_with(
        8,
        GatewayConfig {
            private_webhooks: true,
            ..GatewayConfig::default()
        },
    )
    .await;
    let gw = &t.gw;
    let (admin, _) = admin(gw, "acme").await;
    let b = org_budget(gw, &admin, 1_000).await;
    budgets::set_webhook(gw, &admin, &budgets::Webhook { url })
        .await
        .expect("webhook");
    let a = agent_did();
    budgets::reserve(gw, &admin, &request(&a, 850))
        .await
        .expect("80%");
    assert!(
        budgets::reserve(gw, &admin, &request(&a, 200))
            .await
            .is_err(),
        "100%"
    );
    assert_eq!(
        budgets::deliver_webhooks(gw.db(), gw.delivery())
            .await
            .expect("deliver"),
        2
    );
    assert_eq!(
        budgets::deliver_webhooks(gw.db(), gw.delivery())
            .await
            .expect("again"),
        0,
        "once each"
    );
    let got = received.lock().expect("lock").clone();
    let events: Vec<(&str, i64)> = got
        .iter()
        .map(|v| {
            (
                v["event"].as_str().unwrap_or(""),
                v["threshold"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        events,
        vec![
            ("budget.warning", 80),
            ("budget.reauthorisation_required", 100)
        ]
    );
    assert!(got.iter().all(|v| v["budget_id"] == b.id.to_string()));
    assert!(
        budgets::alerts(gw.db(), &admin, b.id)
            .await
            .expect("alerts")
            .iter()
            .all(|a| a.delivered_at_ms.is_some())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_cannot_reach_inside_the_gateways_network() {
    let t = gateway().await;
    let gw = &t.gw;
    let (admin, _) = admin(gw, "acme").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.7/hook",
    ] {
        let refused = budgets::set_webhook(
            gw,
            &admin,
            &budgets::Webhook {
                url: url.to_owned(),
            },
        )
        .await;
        assert!(
            matches!(&refused, Err(BudgetError::Invalid(m)) if m.contains("public address")),
            "{url}: {refused:?}"
        );
    }
    // A URL set while private webhooks were allowed (or a name that resolves inside the
    // network) is checked again at delivery: refused, counted as a failed try.
    sqlx::query("INSERT INTO webhooks (org_id, url) VALUES ($1, 'http://localhost.:9/hook')")
        .bind(admin.org_id)
        .execute(gw.db().pool())
        .await
        .expect("webhook row");
    let b = org_budget(gw, &admin, 1_000).await;
    budgets::reserve(gw, &admin, &request(&agent_did(), 850))
        .await
        .expect("80%");
    assert_eq!(
        budgets::deliver_webhooks(gw.db(), gw.delivery())
            .await
            .expect("deliver"),
        0
    );
    let (attempts,): (i32,) =
        sqlx::query_as("SELECT attempts FROM budget_alerts WHERE budget_id = $1")
            .bind(b.id)
            .fetch_one(gw.db().pool())
            .await
            .expect("alert");
    assert_eq!(attempts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_orgs_hard_stop_cannot_pause_this_orgs_agent() {
    let t = gateway().await;
    let gw = &t.gw;
    let (a, _) = admin(gw, "org-a").await;
    let (b, _) = admin(gw, "org-b").await;
    let victim = agent_did();
    orgs::create_agent(
        gw,
        &a,
        &AgentRequest {
            did: victim.clone(),
            name: "a-bot".into(),
            team_id: None,
        },
    )
    .await
    .expect("agent");
    // Org B names A's agent in its own reservations and drives its own auto-pause budget to
    // the hard stop.
    budgets::create(
        gw,
        &b,
        &NewBudget {
            scope: Scope::Key,
            scope_id: b.key_id.clone(),
            period: Period::Total,
            currency: "USD".into(),
            limit_micros: 100,
            auto_pause: true,
        },
    )
    .await
    .expect("budget");
    assert!(matches!(
        budgets::reserve(gw, &b, &request(&victim, 1_000)).await,
        Err(BudgetError::HardStop { .. })
    ));
    assert!(
        pauses::paused(gw, &a).await.expect("paused").is_empty(),
        "A's agent is not paused"
    );
    assert!(
        t.published.0.lock().expect("lock").is_empty(),
        "no notice went out"
    );
    // Amounts need a currency, and currencies compare without case.
    let mut free = request(&victim, 5);
    free.currency = String::new();
    assert!(matches!(
        budgets::reserve(gw, &b, &free).await,
        Err(BudgetError::Invalid(_))
    ));
    let mut lower = request(&victim, 1_000);
    lower.currency = "usd".into();
    assert!(matches!(
        budgets::reserve(gw, &b, &lower).await,
        Err(BudgetError::HardStop { .. })
    ));
}
