//! Ingestion on real Postgres: idempotent under retries and concurrent duplicate batches,
//! priced by the provider's figure or the price version in effect, charged to budgets,
//! refused whole when malformed; and the runs, events and costs it feeds, paged by cursor.

mod common;

use std::collections::HashSet;

use agentnet_gateway::budgets::{self, NewBudget, Period, Scope};
use agentnet_gateway::ingest::{EventIn, IngestError, IngestRequest, RunIn};
use agentnet_gateway::keys::Principal;
use agentnet_gateway::orgs::{self, AgentRequest};
use agentnet_gateway::runs::{self, CostQuery, EventQuery, GroupBy, NewPrice, RunQuery};
use agentnet_gateway::{Gateway, GatewayConfig, ingest};
use common::*;

const HOUR: i64 = 3_600_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn event(at_ms: i64, model: &str, input: i64, output: i64, cost: Option<i64>) -> EventIn {
    EventIn {
        at_ms,
        kind: "llm_call".into(),
        model: Some(model.into()),
        input_tokens: input,
        output_tokens: output,
        cost_micros: cost,
    }
}

fn run(key: &str, agent: &str, at_ms: i64, events: Vec<EventIn>) -> RunIn {
    RunIn {
        idempotency_key: key.into(),
        agent: agent.into(),
        started_at_ms: at_ms,
        ended_at_ms: Some(at_ms + 1_000),
        status: "ok".into(),
        currency: "USD".into(),
        events,
    }
}

/// A batch of `runs` runs of `events` events each, keys `{prefix}-{i}`.
fn batch(prefix: &str, agent: &str, runs: usize, events: usize, at_ms: i64) -> IngestRequest {
    IngestRequest {
        runs: (0..runs)
            .map(|i| {
                run(
                    &format!("{prefix}-{i}"),
                    agent,
                    at_ms + i as i64,
                    (0..events)
                        .map(|j| event(at_ms + i as i64 + j as i64, "m", 10, 10, Some(1)))
                        .collect(),
                )
            })
            .collect(),
    }
}

async fn count(gw: &Gateway, table: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(gw.db().pool())
        .await
        .expect("count");
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_is_counted_once() {
    let t = gateway().await;
    let (admin, _) = admin(&t.gw, "acme").await;
    let agent = agent_did();
    let b = batch("r", &agent, 20, 5, now_ms() - HOUR);
    let first =
        t.gw.ingest()
            .ingest(&admin, b.clone())
            .await
            .expect("ingest");
    assert_eq!(
        (first.accepted, first.duplicates, first.events),
        (20, 0, 100)
    );
    let again =
        t.gw.ingest()
            .ingest(&admin, b.clone())
            .await
            .expect("retry");
    assert_eq!((again.accepted, again.duplicates, again.events), (0, 20, 0));
    // The retry names the same runs.
    let ids = |r: &ingest::IngestReport| r.runs.iter().map(|o| o.run_id).collect::<Vec<_>>();
    assert_eq!(ids(&first), ids(&again));
    // A batch that overlaps the first writes only what is new.
    let mut overlap = batch("r", &agent, 25, 5, now_ms() - HOUR);
    overlap.runs.drain(..10);
    let third =
        t.gw.ingest()
            .ingest(&admin, overlap)
            .await
            .expect("overlap");
    assert_eq!((third.accepted, third.duplicates), (5, 10));
    assert_eq!(count(&t.gw, "runs").await, 25);
    assert_eq!(count(&t.gw, "events").await, 125);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicate_batches_write_each_run_once() {
    // Small batches and several writers, so that duplicates race across transactions.
    let config = GatewayConfig {
        ingest: ingest::WriterConfig {
            writers: 4,
            max_batch_events: 50,
            ..ingest::WriterConfig::default()
        },
        ..GatewayConfig::default()
    };
    let t = gateway_with(12, config).await;
    let (admin, _) = admin(&t.gw, "acme").await;
    let agent = agent_did();
    let b = batch("dup", &agent, 30, 4, now_ms() - HOUR);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (gw, admin, b) = (t.gw.clone(), admin.clone(), b.clone());
        tasks.push(tokio::spawn(
            async move { gw.ingest().ingest(&admin, b).await },
        ));
    }
    let mut accepted = 0;
    let mut run_ids = HashSet::new();
    for task in tasks {
        let report = task.await.expect("task").expect("ingest");
        accepted += report.accepted;
        assert_eq!(report.accepted + report.duplicates, 30);
        for r in report.runs {
            run_ids.insert((r.idempotency_key, r.run_id));
        }
    }
    assert_eq!(accepted, 30, "each run accepted by exactly one request");
    assert_eq!(
        run_ids.len(),
        30,
        "every answer names the same run for a key"
    );
    assert_eq!(count(&t.gw, "runs").await, 30);
    assert_eq!(count(&t.gw, "events").await, 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_priced_by_the_provider_or_the_version_in_effect() {
    let t = gateway().await;
    let gw = &t.gw;
    let (admin, _) = admin(gw, "acme").await;
    let t0 = now_ms() - 10 * HOUR;
    let price = |from, input, output| NewPrice {
        model: "gpt-x".into(),
        currency: "USD".into(),
        input_micros_per_mtok: input,
        output_micros_per_mtok: output,
        effective_from_ms: from,
    };
    let v1 = runs::add_price(gw, &admin, &price(t0, 1_000_000, 2_000_000))
        .await
        .expect("v1");
    let v2 = runs::add_price(gw, &admin, &price(t0 + 5 * HOUR, 3_000_000, 4_000_000))
        .await
        .expect("v2");
    assert!(
        runs::add_price(gw, &admin, &price(t0, 1, 1)).await.is_err(),
        "a version is never replaced"
    );
    let agent = agent_did();
    let report = gw
        .ingest()
        .ingest(
            &admin,
            IngestRequest {
                runs: vec![run(
                    "priced",
                    &agent,
                    t0 + HOUR,
                    vec![
                        // 1,000 in + 500 out at v1: 1,000 + 1,000 micros.
                        event(t0 + HOUR, "gpt-x", 1_000, 500, None),
                        // The same at v2: 3,000 + 2,000.
                        event(t0 + 6 * HOUR, "gpt-x", 1_000, 500, None),
                        // The provider's figure wins.
                        event(t0 + 6 * HOUR, "gpt-x", 1_000, 500, Some(7)),
                        // Before any version, or an unknown model: unpriced.
                        event(t0 - HOUR, "gpt-x", 1_000, 500, None),
                        event(t0 + HOUR, "other", 1_000, 500, None),
                    ],
                )],
            },
        )
        .await
        .expect("ingest");
    let (run, events) = runs::get(gw, &admin, report.runs[0].run_id)
        .await
        .expect("run");
    let got: Vec<(i64, &str, Option<i64>)> = events
        .iter()
        .map(|e| (e.cost_micros, e.cost_source.as_str(), e.price_id))
        .collect();
    assert_eq!(
        got,
        vec![
            (2_000, "price_table", Some(v1.id)),
            (5_000, "price_table", Some(v2.id)),
            (7, "provider", None),
            (0, "unpriced", None),
            (0, "unpriced", None),
        ]
    );
    assert_eq!(run.cost_micros, 7_007);
    assert_eq!(run.events, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingested_spend_counts_against_budgets_and_fires_the_ladder() {
    let t = gateway().await;
    let gw = &t.gw;
    let (admin, _) = admin(gw, "acme").await;
    let agent = agent_did();
    let budget = budgets::create(
        gw,
        &admin,
        &NewBudget {
            scope: Scope::Org,
            scope_id: admin.org_id.to_string(),
            period: Period::Total,
            currency: "USD".into(),
            limit_micros: 100,
            auto_pause: false,
        },
    )
    .await
    .expect("budget");
    // 20 runs × 5 events × 1 micro = 100 micros: 100% of the budget.
    gw.ingest()
        .ingest(&admin, batch("s", &agent, 16, 5, now_ms() - HOUR))
        .await
        .expect("ingest");
    let b = budgets::get(gw.db(), &admin, budget.id)
        .await
        .expect("get")
        .expect("b");
    assert_eq!(b.spent_micros, 80);
    gw.ingest()
        .ingest(&admin, batch("s2", &agent, 4, 5, now_ms() - HOUR))
        .await
        .expect("ingest");
    let b = budgets::get(gw.db(), &admin, budget.id)
        .await
        .expect("get")
        .expect("b");
    assert_eq!(b.spent_micros, 100);
    let fired: Vec<i32> = budgets::alerts(gw.db(), &admin, budget.id)
        .await
        .expect("alerts")
        .into_iter()
        .map(|a| a.threshold)
        .collect();
    assert_eq!(fired, vec![80, 100]);
    // Reaching 100% opened the re-authorisation approval, in the ingestion's transaction.
    let pending = agentnet_gateway::policies::approvals(gw, &admin, Some("pending"))
        .await
        .expect("approvals");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].budget_id, Some(budget.id));
    // At 100%, a reservation needs re-authorisation.
    assert!(matches!(
        budgets::reserve(
            gw,
            &admin,
            &budgets::ReserveRequest {
                intent_id: "ab".into(),
                agent: agent.clone(),
                callee: String::new(),
                capability: "x".into(),
                amount_micros: 1,
                currency: "USD".into(),
                expires_at_ms: now_ms() + HOUR,
            }
        )
        .await,
        Err(budgets::BudgetError::ApprovalRequired { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingested_spend_past_an_org_stop_pauses_every_agent_that_spent() {
    let t = gateway().await;
    let gw = &t.gw;
    let (admin, _) = admin(gw, "acme").await;
    let spenders = [agent_did(), agent_did()];
    let bystander = agent_did();
    for (i, did) in spenders.iter().chain([&bystander]).enumerate() {
        orgs::create_agent(
            gw,
            &admin,
            &AgentRequest {
                did: did.clone(),
                name: format!("agent-{i}"),
                team_id: None,
            },
        )
        .await
        .expect("agent");
    }
    budgets::create(
        gw,
        &admin,
        &NewBudget {
            scope: Scope::Org,
            scope_id: admin.org_id.to_string(),
            period: Period::Total,
            currency: "USD".into(),
            limit_micros: 100,
            auto_pause: true,
        },
    )
    .await
    .expect("budget");
    // One batch, two agents, 2 × 12 runs × 5 events × 1 micro = 120 micros: the hard stop.
    let mut request = batch("a", &spenders[0], 12, 5, now_ms() - HOUR);
    request
        .runs
        .extend(batch("b", &spenders[1], 12, 5, now_ms() - HOUR).runs);
    gw.ingest().ingest(&admin, request).await.expect("ingest");
    let mut paused = Vec::new();
    for _ in 0..200 {
        paused = agentnet_gateway::pauses::paused(gw, &admin)
            .await
            .expect("paused");
        if paused.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    paused.sort();
    let mut want = spenders.to_vec();
    want.sort();
    assert_eq!(paused, want, "both spenders, and only they, are paused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_batch_is_refused_whole() {
    let t = gateway().await;
    let (admin, _) = admin(&t.gw, "acme").await;
    let agent = agent_did();
    let now = now_ms();
    let good = || batch("g", &agent, 3, 2, now - HOUR);
    type Spoil = Box<dyn Fn(&mut IngestRequest)>;
    let cases: Vec<(&str, Spoil)> = vec![
        (
            "agent",
            Box::new(|b| b.runs[1].agent = "did:web:example.com".into()),
        ),
        ("started_at_ms", Box::new(|b| b.runs[2].started_at_ms = 5)),
        (
            "at_ms",
            Box::new(move |b| b.runs[0].events[1].at_ms = now + 48 * HOUR),
        ),
        (
            "ended_at_ms",
            Box::new(|b| b.runs[0].ended_at_ms = Some(1_000_000_000_000)),
        ),
        ("status", Box::new(|b| b.runs[0].status = "maybe".into())),
        (
            "idempotency_key",
            Box::new(|b| b.runs[1].idempotency_key = "g-0".into()),
        ),
        (
            "idempotency_key",
            Box::new(|b| b.runs[1].idempotency_key = String::new()),
        ),
        (
            "input_tokens",
            Box::new(|b| b.runs[0].events[0].input_tokens = -1),
        ),
        (
            "cost_micros",
            Box::new(|b| b.runs[0].events[0].cost_micros = Some(i64::MAX)),
        ),
        ("currency", Box::new(|b| b.runs[0].currency = "US$".into())),
        ("runs", Box::new(|b| b.runs.clear())),
    ];
    for (field, spoil) in cases {
        let mut b = good();
        spoil(&mut b);
        match t.gw.ingest().ingest(&admin, b).await {
            Err(IngestError::Invalid(m)) => assert!(m.contains(field), "{field}: {m}"),
            other => panic!("{field}: {other:?}"),
        }
    }
    let huge = batch("h", &agent, 6, ingest::MAX_EVENTS_PER_RUN + 1, now - HOUR);
    assert!(matches!(
        t.gw.ingest().ingest(&admin, huge).await,
        Err(IngestError::Invalid(_))
    ));
    assert_eq!(
        count(&t.gw, "runs").await,
        0,
        "nothing of a refused batch is written"
    );
    assert_eq!(count(&t.gw, "run_keys").await, 0);
}

async fn all_runs(gw: &Gateway, who: &Principal, mut q: RunQuery) -> Vec<uuid::Uuid> {
    let mut seen = Vec::new();
    loop {
        let page = runs::list(gw, who, &q).await.expect("page");
        seen.extend(page.runs.iter().map(|r| r.id));
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return seen,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_events_and_costs_are_listed_by_cursor_and_filter() {
    let t = gateway().await;
    let gw = &t.gw;
    let (admin, _) = admin(gw, "acme").await;
    let team = orgs::create_team(gw, &admin, "research")
        .await
        .expect("team");
    let (a, b) = (agent_did(), agent_did());
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
    let at = now_ms() - 40 * 24 * HOUR; // a month and more back: another partition
    gw.ingest()
        .ingest(&admin, batch("a", &a, 25, 2, at))
        .await
        .expect("a");
    gw.ingest()
        .ingest(&admin, batch("b", &b, 7, 3, now_ms() - HOUR))
        .await
        .expect("b");

    let q = |agent: Option<&str>| RunQuery {
        agent: agent.map(str::to_owned),
        limit: Some(10),
        ..RunQuery::default()
    };
    let everything = all_runs(gw, &admin, q(None)).await;
    assert_eq!(everything.len(), 32);
    assert_eq!(
        everything.iter().collect::<HashSet<_>>().len(),
        32,
        "no run twice"
    );
    assert_eq!(all_runs(gw, &admin, q(Some(&a))).await.len(), 25);
    // Ingesting between pages neither repeats nor skips.
    let first = runs::list(gw, &admin, &q(Some(&a))).await.expect("page");
    gw.ingest()
        .ingest(&admin, batch("late", &a, 3, 1, now_ms()))
        .await
        .expect("late");
    let mut rest = q(Some(&a));
    rest.cursor = first.next_cursor.clone();
    let rest = all_runs(gw, &admin, rest).await;
    assert_eq!(first.runs.len() + rest.len(), 25);
    let page = runs::list(
        gw,
        &admin,
        &RunQuery {
            team_id: Some(team.id),
            limit: Some(1000),
            ..RunQuery::default()
        },
    )
    .await
    .expect("team");
    assert_eq!(page.runs.len(), 28);
    let old = runs::list(
        gw,
        &admin,
        &RunQuery {
            to_ms: Some(at + 1_000_000),
            limit: Some(1000),
            ..RunQuery::default()
        },
    )
    .await
    .expect("range");
    assert_eq!(old.runs.len(), 25);
    assert!(
        runs::list(
            gw,
            &admin,
            &RunQuery {
                cursor: Some("zz".into()),
                ..RunQuery::default()
            }
        )
        .await
        .is_err()
    );
    assert!(
        runs::list(
            gw,
            &admin,
            &RunQuery {
                limit: Some(0),
                ..RunQuery::default()
            }
        )
        .await
        .is_err()
    );

    // Events, paged.
    let mut eq = EventQuery {
        limit: Some(7),
        ..EventQuery::default()
    };
    let mut events = 0;
    loop {
        let page = runs::events(gw, &admin, &eq).await.expect("events");
        events += page.events.len();
        match page.next_cursor {
            Some(c) => eq.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(events, 25 * 2 + 7 * 3 + 3);

    // Costs by agent, team and org.
    let costs = |group_by| CostQuery {
        group_by,
        from_ms: None,
        to_ms: None,
    };
    let by_agent = runs::costs(gw, &admin, &costs(GroupBy::Agent))
        .await
        .expect("costs");
    let of = |key: &str| {
        by_agent
            .iter()
            .find(|l| l.key.as_deref() == Some(key))
            .map(|l| (l.runs, l.cost_micros))
    };
    assert_eq!(of(&a), Some((28, 53)));
    assert_eq!(of(&b), Some((7, 21)));
    let by_team = runs::costs(gw, &admin, &costs(GroupBy::Team))
        .await
        .expect("costs");
    assert!(
        by_team
            .iter()
            .any(|l| l.key == Some(team.id.to_string()) && l.cost_micros == 53)
    );
    assert!(
        by_team
            .iter()
            .any(|l| l.key.is_none() && l.cost_micros == 21)
    );
    let by_org = runs::costs(gw, &admin, &costs(GroupBy::Org))
        .await
        .expect("costs");
    assert_eq!(by_org.len(), 1);
    assert_eq!(
        (by_org[0].runs, by_org[0].events, by_org[0].cost_micros),
        (35, 74, 74)
    );
}
