//! The REST API over HTTP on real Postgres: an admin of org B can read or change nothing of
//! org A through any endpoint (the cases are checked against the OpenAPI document, so a new
//! endpoint without a case fails here); roles and scopes; one JSON error shape for bad
//! input; per-key rate limits; a valid OpenAPI document; readiness before the database.

mod common;

use std::collections::BTreeSet;

use agentnet_gateway::{GatewayConfig, api};
use common::*;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

struct Http {
    base: String,
    client: Client,
}

impl Http {
    async fn call(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("send");
        let status = r.status();
        let text = r.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn ok(&self, key: &str, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(key, method.clone(), path, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    }
}

fn reserve_body(agent: &str, capability: &str, amount: i64) -> Value {
    json!({
        "intent_id": uuid::Uuid::new_v4().simple().to_string(), "agent": agent, "callee": "did:key:x",
        "capability": capability, "amount_micros": amount, "currency": "USD",
        "expires_at_ms": now_ms() + 3_600_000,
    })
}

/// Everything org A has, by id.
struct OrgA {
    key: String,
    ids: Vec<String>,
    team: String,
    member: String,
    dev_key: String,
    agent: String,
    budget: String,
    policy: String,
    approval: String,
    reservation: String,
    run: String,
}

async fn populate_a(http: &Http, key: &str) -> OrgA {
    let org = http.ok(key, Method::GET, "/api/v1/org", None).await;
    let team = http
        .ok(
            key,
            Method::POST,
            "/api/v1/teams",
            Some(json!({"name": "a-team"})),
        )
        .await;
    let team_id = team["id"].as_str().expect("id").to_owned();
    let member = http
        .ok(key, Method::POST, "/api/v1/members", Some(json!({"email": "ann@a.example", "name": "Ann", "role": "developer", "team_id": team_id})))
        .await;
    let dev = http
        .ok(
            key,
            Method::POST,
            "/api/v1/keys",
            Some(json!({"name": "a-dev", "role": "developer", "team_id": team_id})),
        )
        .await;
    let agent = agent_did();
    http.ok(
        key,
        Method::POST,
        "/api/v1/agents",
        Some(json!({"did": agent, "name": "a-bot", "team_id": team_id})),
    )
    .await;
    let budget = http
        .ok(key, Method::POST, "/api/v1/budgets", Some(json!({"scope": "agent", "scope_id": agent, "period": "monthly", "currency": "USD", "limit_micros": 1_000_000})))
        .await;
    let policy = http
        .ok(key, Method::POST, "/api/v1/policies", Some(json!({"scope": "agent", "scope_id": agent, "kind": "approval", "capability": "pay"})))
        .await;
    let (status, _) = http
        .call(
            key,
            Method::POST,
            "/api/v1/budgets/reserve",
            Some(reserve_body(&agent, "pay", 10)),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "held for approval");
    let approvals = http
        .ok(key, Method::GET, "/api/v1/approvals?status=pending", None)
        .await;
    let approval = approvals[0]["id"].as_str().expect("approval").to_owned();
    let reservation = http
        .ok(
            key,
            Method::POST,
            "/api/v1/budgets/reserve",
            Some(reserve_body(&agent, "chat", 10)),
        )
        .await;
    let report = http
        .ok(key, Method::POST, "/api/v1/ingest/runs", Some(json!({"runs": [{
            "idempotency_key": "a-run-1", "agent": agent, "started_at_ms": now_ms() - 1000, "status": "ok",
            "events": [{"at_ms": now_ms() - 900, "kind": "llm_call", "model": "gpt-a", "input_tokens": 5, "cost_micros": 3}]
        }]})))
        .await;
    http.ok(key, Method::POST, "/api/v1/prices", Some(json!({"model": "gpt-a", "currency": "USD", "input_micros_per_mtok": 1, "output_micros_per_mtok": 2, "effective_from_ms": 0}))).await;
    http.ok(
        key,
        Method::PUT,
        "/api/v1/webhook",
        Some(json!({"url": "https://hooks.example.com/a-hook"})),
    )
    .await;
    let s = |v: &Value| v.as_str().expect("str").to_owned();
    let a = OrgA {
        key: key.to_owned(),
        team: team_id.clone(),
        member: s(&member["id"]),
        dev_key: s(&dev["key_id"]),
        agent: agent.clone(),
        budget: s(&budget["id"]),
        policy: s(&policy["id"]),
        approval,
        reservation: s(&reservation["reservation_id"]),
        run: s(&report["runs"][0]["run_id"]),
        ids: vec![],
    };
    let ids = vec![
        s(&org["id"]),
        s(&org["name"]),
        team_id,
        a.member.clone(),
        "ann@a.example".into(),
        a.dev_key.clone(),
        agent,
        a.budget.clone(),
        a.policy.clone(),
        a.approval.clone(),
        a.reservation.clone(),
        a.run.clone(),
        "gpt-a".into(),
        "a-hook".into(),
        "a-team".into(),
        "a-bot".into(),
    ];
    OrgA { ids, ..a }
}

/// What org A's lists look like, as A sees them.
async fn snapshot(http: &Http, a: &OrgA) -> Vec<Value> {
    let mut out = Vec::new();
    for path in [
        "/api/v1/org",
        "/api/v1/teams",
        "/api/v1/members",
        "/api/v1/keys",
        "/api/v1/agents",
        "/api/v1/runs",
        "/api/v1/events",
        "/api/v1/costs?group_by=agent",
        "/api/v1/prices",
        "/api/v1/budgets",
        "/api/v1/policies",
        "/api/v1/approvals",
        "/api/v1/pauses",
        "/api/v1/paused",
    ] {
        let mut v = http.ok(&a.key, Method::GET, path, None).await;
        // Budgets' reserved totals are A's own; nothing of B's may change them either.
        if let Value::Array(items) = &mut v {
            items.iter_mut().for_each(|i| {
                if let Value::Object(o) = i {
                    o.remove("last_used_at_ms");
                }
            });
        }
        out.push(v);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_of_one_org_can_read_or_change_nothing_of_another_through_any_endpoint() {
    let t = gateway().await;
    let (_, a_key) = admin(&t.gw, "org-a-7f3").await;
    let (b, b_key) = admin(&t.gw, "org-b").await;
    let http = Http {
        base: serve(t.gw.clone()).await,
        client: Client::new(),
    };
    let a = populate_a(&http, &a_key).await;
    // A pauses its agent last, so that the reservations above went through.
    http.ok(&a.key, Method::POST, "/api/v1/pauses", Some(json!({"scope": "team", "scope_id": a.team, "action": "pause", "reason": "a's incident"}))).await;
    let before = snapshot(&http, &a).await;
    let b_agent = agent_did();

    let cases: Vec<(Method, &str, String, Option<Value>)> = vec![
        (Method::GET, "/readyz", "/readyz".into(), None),
        (Method::GET, "/metrics", "/metrics".into(), None),
        (
            Method::GET,
            "/api/v1/openapi.json",
            "/api/v1/openapi.json".into(),
            None,
        ),
        (Method::GET, "/api/v1/org", "/api/v1/org".into(), None),
        (
            Method::PATCH,
            "/api/v1/org",
            "/api/v1/org".into(),
            Some(json!({"name": "org-b-renamed"})),
        ),
        (Method::GET, "/api/v1/teams", "/api/v1/teams".into(), None),
        (
            Method::POST,
            "/api/v1/teams",
            "/api/v1/teams".into(),
            Some(json!({"name": "b-team"})),
        ),
        (
            Method::GET,
            "/api/v1/teams/{id}",
            format!("/api/v1/teams/{}", a.team),
            None,
        ),
        (
            Method::PATCH,
            "/api/v1/teams/{id}",
            format!("/api/v1/teams/{}", a.team),
            Some(json!({"name": "stolen"})),
        ),
        (
            Method::DELETE,
            "/api/v1/teams/{id}",
            format!("/api/v1/teams/{}", a.team),
            None,
        ),
        (
            Method::GET,
            "/api/v1/members",
            "/api/v1/members".into(),
            None,
        ),
        (
            Method::POST,
            "/api/v1/members",
            "/api/v1/members".into(),
            Some(
                json!({"email": "bo@b.example", "name": "Bo", "role": "viewer", "team_id": a.team}),
            ),
        ),
        (
            Method::GET,
            "/api/v1/members/{id}",
            format!("/api/v1/members/{}", a.member),
            None,
        ),
        (
            Method::PUT,
            "/api/v1/members/{id}",
            format!("/api/v1/members/{}", a.member),
            Some(json!({"email": "x@b.example", "name": "X", "role": "admin"})),
        ),
        (
            Method::DELETE,
            "/api/v1/members/{id}",
            format!("/api/v1/members/{}", a.member),
            None,
        ),
        (Method::GET, "/api/v1/keys", "/api/v1/keys".into(), None),
        (
            Method::POST,
            "/api/v1/keys",
            "/api/v1/keys".into(),
            Some(json!({"name": "b-lead", "role": "team_lead", "team_id": a.team})),
        ),
        (
            Method::POST,
            "/api/v1/keys/{id}/rotate",
            format!("/api/v1/keys/{}/rotate", a.dev_key),
            Some(json!({"grace_secs": 0})),
        ),
        (
            Method::DELETE,
            "/api/v1/keys/{id}",
            format!("/api/v1/keys/{}", a.dev_key),
            None,
        ),
        (Method::GET, "/api/v1/agents", "/api/v1/agents".into(), None),
        (
            Method::POST,
            "/api/v1/agents",
            "/api/v1/agents".into(),
            Some(json!({"did": a.agent, "name": "mine now"})),
        ),
        (
            Method::GET,
            "/api/v1/agents/{did}",
            format!("/api/v1/agents/{}", a.agent),
            None,
        ),
        (
            Method::PUT,
            "/api/v1/agents/{did}",
            format!("/api/v1/agents/{}", a.agent),
            Some(json!({"did": a.agent, "name": "renamed"})),
        ),
        (
            Method::DELETE,
            "/api/v1/agents/{did}",
            format!("/api/v1/agents/{}", a.agent),
            None,
        ),
        (
            Method::GET,
            "/api/v1/network/agents",
            "/api/v1/network/agents".into(),
            None,
        ),
        (
            Method::POST,
            "/api/v1/ingest/runs",
            "/api/v1/ingest/runs".into(),
            Some(json!({"runs": [{
            "idempotency_key": "a-run-1", "agent": b_agent, "started_at_ms": now_ms() - 1000, "status": "ok", "events": []}]})),
        ),
        (Method::GET, "/api/v1/runs", "/api/v1/runs".into(), None),
        (
            Method::GET,
            "/api/v1/runs/{id}",
            format!("/api/v1/runs/{}", a.run),
            None,
        ),
        (
            Method::GET,
            "/api/v1/events",
            format!("/api/v1/events?run_id={}", a.run),
            None,
        ),
        (
            Method::GET,
            "/api/v1/costs",
            "/api/v1/costs?group_by=org".into(),
            None,
        ),
        (Method::GET, "/api/v1/prices", "/api/v1/prices".into(), None),
        (
            Method::POST,
            "/api/v1/prices",
            "/api/v1/prices".into(),
            Some(
                json!({"model": "gpt-b", "currency": "USD", "input_micros_per_mtok": 9, "output_micros_per_mtok": 9, "effective_from_ms": 0}),
            ),
        ),
        (
            Method::GET,
            "/api/v1/budgets",
            "/api/v1/budgets".into(),
            None,
        ),
        (
            Method::POST,
            "/api/v1/budgets",
            "/api/v1/budgets".into(),
            Some(
                json!({"scope": "agent", "scope_id": a.agent, "period": "daily", "currency": "USD", "limit_micros": 1}),
            ),
        ),
        (
            Method::GET,
            "/api/v1/budgets/{id}",
            format!("/api/v1/budgets/{}", a.budget),
            None,
        ),
        (
            Method::PATCH,
            "/api/v1/budgets/{id}",
            format!("/api/v1/budgets/{}", a.budget),
            Some(json!({"limit_micros": 1})),
        ),
        (
            Method::DELETE,
            "/api/v1/budgets/{id}",
            format!("/api/v1/budgets/{}", a.budget),
            None,
        ),
        (
            Method::GET,
            "/api/v1/budgets/{id}/alerts",
            format!("/api/v1/budgets/{}/alerts", a.budget),
            None,
        ),
        (
            Method::POST,
            "/api/v1/budgets/{id}/reauthorise",
            format!("/api/v1/budgets/{}/reauthorise", a.budget),
            None,
        ),
        (
            Method::POST,
            "/api/v1/budgets/reserve",
            "/api/v1/budgets/reserve".into(),
            Some(reserve_body(&b_agent, "chat", 5)),
        ),
        (
            Method::POST,
            "/api/v1/budgets/settle",
            "/api/v1/budgets/settle".into(),
            Some(json!({"reservation_id": a.reservation, "amount_micros": 10})),
        ),
        (
            Method::PUT,
            "/api/v1/webhook",
            "/api/v1/webhook".into(),
            Some(json!({"url": "https://hooks.example.com/b-hook"})),
        ),
        (
            Method::GET,
            "/api/v1/policies",
            "/api/v1/policies".into(),
            None,
        ),
        (
            Method::POST,
            "/api/v1/policies",
            "/api/v1/policies".into(),
            Some(json!({"scope": "agent", "scope_id": a.agent, "kind": "deny"})),
        ),
        (
            Method::DELETE,
            "/api/v1/policies/{id}",
            format!("/api/v1/policies/{}", a.policy),
            None,
        ),
        (
            Method::GET,
            "/api/v1/approvals",
            "/api/v1/approvals".into(),
            None,
        ),
        (
            Method::POST,
            "/api/v1/approvals/{id}/approve",
            format!("/api/v1/approvals/{}/approve", a.approval),
            None,
        ),
        (
            Method::POST,
            "/api/v1/approvals/{id}/deny",
            format!("/api/v1/approvals/{}/deny", a.approval),
            None,
        ),
        (Method::GET, "/api/v1/pauses", "/api/v1/pauses".into(), None),
        (
            Method::POST,
            "/api/v1/pauses",
            "/api/v1/pauses".into(),
            Some(json!({"scope": "agent", "scope_id": a.agent, "action": "resume"})),
        ),
        (Method::GET, "/api/v1/paused", "/api/v1/paused".into(), None),
        (Method::GET, "/api/v1/audit", "/api/v1/audit".into(), None),
        (
            Method::GET,
            "/api/v1/audit/verify",
            "/api/v1/audit/verify".into(),
            None,
        ),
    ];

    // Every operation of the OpenAPI document has a case.
    let doc: Value = serde_json::from_str(&api::openapi_json()).expect("json");
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("ops").keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let covered: BTreeSet<(String, String)> = cases
        .iter()
        .map(|(m, p, ..)| (m.to_string(), (*p).to_owned()))
        .collect();
    assert_eq!(
        documented, covered,
        "every documented operation needs an isolation case"
    );

    let mut touched_b = 0;
    for (method, template, path, body) in &cases {
        let (status, v) = http.call(&b_key, method.clone(), path, body.clone()).await;
        let text = v.to_string();
        let asked = format!(
            "{path} {}",
            body.as_ref().map(|b| b.to_string()).unwrap_or_default()
        );
        for id in a.ids.iter().filter(|id| !asked.contains(id.as_str())) {
            assert!(
                !text.contains(id.as_str()),
                "{method} {template} showed org A's {id}: {text}"
            );
        }
        if path.contains(&a.team)
            || path.contains(&a.member)
            || path.contains(&a.dev_key)
            || path.contains(&a.agent)
            || path.contains(&a.budget)
            || path.contains(&a.policy)
            || path.contains(&a.approval)
            || path.contains(&a.run)
        {
            if *template == "/api/v1/events" {
                assert_eq!(v["events"], json!([]), "{template}");
            } else {
                assert!(
                    matches!(
                        status,
                        StatusCode::NOT_FOUND | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST
                    ),
                    "{method} {template}: {status} {v}"
                );
            }
        } else if body.as_ref().is_some_and(|b| {
            b.to_string().contains(&a.agent)
                || b.to_string().contains(&a.team)
                || b.to_string().contains(&a.reservation)
        }) {
            assert!(
                status.is_client_error(),
                "{method} {template} with A's ids: {status} {v}"
            );
        } else {
            assert!(
                status.is_success(),
                "{method} {template} on B's own: {status} {v}"
            );
            touched_b += 1;
        }
        if *template == "/api/v1/ingest/runs" {
            assert_eq!(
                v["accepted"], 1,
                "idempotency keys are per organisation: {v}"
            );
        }
    }
    assert!(touched_b > 20);
    assert_eq!(
        snapshot(&http, &a).await,
        before,
        "nothing of org A changed"
    );
    // And B's audit chain recorded B's changes only, intact.
    let v = http
        .ok(&b_key, Method::GET, "/api/v1/audit/verify", None)
        .await;
    assert_eq!(v["intact"], true, "{v}");
    let _ = b;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_scopes_are_enforced() {
    let t = gateway().await;
    let (_, admin_key) = admin(&t.gw, "acme").await;
    let http = Http {
        base: serve(t.gw.clone()).await,
        client: Client::new(),
    };
    let team = http
        .ok(
            &admin_key,
            Method::POST,
            "/api/v1/teams",
            Some(json!({"name": "t"})),
        )
        .await;
    let other = http
        .ok(
            &admin_key,
            Method::POST,
            "/api/v1/teams",
            Some(json!({"name": "u"})),
        )
        .await;
    let key = |role: &str, scopes: Value, team: &Value| json!({"name": role, "role": role, "scopes": scopes, "team_id": team["id"]});
    let mk = async |body: Value| {
        http.ok(&admin_key, Method::POST, "/api/v1/keys", Some(body))
            .await["key"]
            .as_str()
            .expect("key")
            .to_owned()
    };
    let viewer = mk(key("viewer", json!([]), &Value::Null)).await;
    let dev = mk(key("developer", json!([]), &Value::Null)).await;
    let ingest_only = mk(key("developer", json!(["ingest"]), &Value::Null)).await;
    let lead = mk(key("team_lead", json!([]), &team)).await;
    let agent = agent_did();
    let other_agent = agent_did();
    http.ok(
        &admin_key,
        Method::POST,
        "/api/v1/agents",
        Some(json!({"did": agent, "name": "in-t", "team_id": team["id"]})),
    )
    .await;
    http.ok(
        &admin_key,
        Method::POST,
        "/api/v1/agents",
        Some(json!({"did": other_agent, "name": "in-u", "team_id": other["id"]})),
    )
    .await;
    let run = json!({"runs": [{"idempotency_key": "k1", "agent": agent, "started_at_ms": now_ms() - 5, "status": "ok"}]});

    let expect = async |k: &str, m: Method, p: &str, b: Option<Value>, want: StatusCode| {
        let (status, v) = http.call(k, m.clone(), p, b).await;
        assert_eq!(status, want, "{m} {p}: {v}");
        if !status.is_success() {
            assert!(v["error"]["code"].is_string(), "{v}");
        }
    };
    expect(&viewer, Method::GET, "/api/v1/runs", None, StatusCode::OK).await;
    expect(
        &viewer,
        Method::POST,
        "/api/v1/ingest/runs",
        Some(run.clone()),
        StatusCode::FORBIDDEN,
    )
    .await;
    expect(
        &viewer,
        Method::POST,
        "/api/v1/budgets/reserve",
        Some(reserve_body(&agent, "x", 1)),
        StatusCode::FORBIDDEN,
    )
    .await;
    expect(
        &viewer,
        Method::GET,
        "/api/v1/keys",
        None,
        StatusCode::FORBIDDEN,
    )
    .await;
    expect(
        &dev,
        Method::POST,
        "/api/v1/ingest/runs",
        Some(run.clone()),
        StatusCode::OK,
    )
    .await;
    expect(
        &dev,
        Method::POST,
        "/api/v1/budgets/reserve",
        Some(reserve_body(&agent, "x", 1)),
        StatusCode::CREATED,
    )
    .await;
    expect(
        &dev,
        Method::POST,
        "/api/v1/teams",
        Some(json!({"name": "v"})),
        StatusCode::FORBIDDEN,
    )
    .await;
    expect(
        &dev,
        Method::POST,
        "/api/v1/pauses",
        Some(json!({"scope": "agent", "scope_id": agent, "action": "pause"})),
        StatusCode::FORBIDDEN,
    )
    .await;
    // A scoped key may ingest but not read or spend, whatever its role allows.
    expect(
        &ingest_only,
        Method::POST,
        "/api/v1/ingest/runs",
        Some(run.clone()),
        StatusCode::OK,
    )
    .await;
    expect(
        &ingest_only,
        Method::GET,
        "/api/v1/runs",
        None,
        StatusCode::FORBIDDEN,
    )
    .await;
    expect(
        &ingest_only,
        Method::POST,
        "/api/v1/budgets/reserve",
        Some(reserve_body(&agent, "x", 1)),
        StatusCode::FORBIDDEN,
    )
    .await;
    // A team lead governs its own team only.
    let budget = |a: &str| json!({"scope": "agent", "scope_id": a, "period": "daily", "currency": "USD", "limit_micros": 100});
    expect(
        &lead,
        Method::POST,
        "/api/v1/budgets",
        Some(budget(&agent)),
        StatusCode::CREATED,
    )
    .await;
    expect(
        &lead,
        Method::POST,
        "/api/v1/budgets",
        Some(budget(&other_agent)),
        StatusCode::FORBIDDEN,
    )
    .await;
    expect(
        &lead,
        Method::POST,
        "/api/v1/pauses",
        Some(json!({"scope": "agent", "scope_id": other_agent, "action": "pause"})),
        StatusCode::FORBIDDEN,
    )
    .await;
    expect(
        &lead,
        Method::POST,
        "/api/v1/pauses",
        Some(json!({"scope": "team", "scope_id": team["id"], "action": "pause"})),
        StatusCode::CREATED,
    )
    .await;
    expect(
        &lead,
        Method::POST,
        "/api/v1/keys",
        Some(key("viewer", json!([]), &Value::Null)),
        StatusCode::FORBIDDEN,
    )
    .await;
    // Any key may rotate itself.
    let (status, rotated) = http
        .call(
            &viewer,
            Method::POST,
            &format!("/api/v1/keys/{}/rotate", &viewer[4..20]),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    expect(
        rotated["key"].as_str().expect("key"),
        Method::GET,
        "/api/v1/org",
        None,
        StatusCode::OK,
    )
    .await;
    // Revocation takes effect at once, though the key was just checked (and cached).
    expect(&dev, Method::GET, "/api/v1/org", None, StatusCode::OK).await;
    let (status, _) = http
        .call(
            &admin_key,
            Method::DELETE,
            &format!("/api/v1/keys/{}", &dev[4..20]),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    expect(
        &dev,
        Method::GET,
        "/api/v1/org",
        None,
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_one_json_error_shape() {
    let t = gateway().await;
    let (_, key) = admin(&t.gw, "acme").await;
    let base = serve(t.gw.clone()).await;
    let client = Client::new();
    let send = async |req: reqwest::RequestBuilder, want: u16, code: &str, says: &str| {
        let r = req.send().await.expect("send");
        assert_eq!(r.status().as_u16(), want);
        assert_eq!(r.headers()["content-type"], "application/json");
        let v: Value = r.json().await.expect("json error");
        assert_eq!(v["error"]["code"], code, "{v}");
        let message = v["error"]["message"].as_str().expect("message");
        assert!(message.contains(says), "{message} should say {says}");
    };
    let url = |p: &str| format!("{base}{p}");
    send(
        client.get(url("/api/v1/runs")),
        401,
        "unauthorized",
        "Authorization",
    )
    .await;
    send(
        client.get(url("/api/v1/runs")).bearer_auth("agn_nope"),
        401,
        "unauthorized",
        "malformed",
    )
    .await;
    send(
        client.get(url("/api/v1/runs")).bearer_auth(format!(
            "agn_{}_{}",
            "0".repeat(16),
            "0".repeat(64)
        )),
        401,
        "unauthorized",
        "invalid",
    )
    .await;
    send(
        client
            .post(url("/api/v1/teams"))
            .bearer_auth(&key)
            .body("{")
            .header("content-type", "application/json"),
        400,
        "bad_request",
        "",
    )
    .await;
    send(
        client
            .post(url("/api/v1/teams"))
            .bearer_auth(&key)
            .body("{\"name\":\"x\"}"),
        415,
        "unsupported_media_type",
        "",
    )
    .await;
    send(
        client
            .post(url("/api/v1/teams"))
            .bearer_auth(&key)
            .json(&json!({"name": "x", "colour": "red"})),
        422,
        "bad_request",
        "colour",
    )
    .await;
    send(
        client
            .post(url("/api/v1/budgets"))
            .bearer_auth(&key)
            .json(&json!({"scope": "galaxy"})),
        422,
        "bad_request",
        "scope",
    )
    .await;
    send(
        client
            .get(url("/api/v1/budgets/not-a-uuid"))
            .bearer_auth(&key),
        400,
        "bad_request",
        "UUID",
    )
    .await;
    send(
        client.get(url("/api/v1/runs?limit=5000")).bearer_auth(&key),
        400,
        "bad_request",
        "limit",
    )
    .await;
    send(
        client.get(url("/api/v1/runs?colour=red")).bearer_auth(&key),
        400,
        "bad_request",
        "colour",
    )
    .await;
    send(
        client.get(url("/api/v1/nowhere")).bearer_auth(&key),
        404,
        "not_found",
        "openapi",
    )
    .await;
    send(
        client.delete(url("/api/v1/org")).bearer_auth(&key),
        405,
        "method_not_allowed",
        "method",
    )
    .await;
    let big = "x".repeat(api::MAX_BODY + 1);
    send(
        client
            .post(url("/api/v1/teams"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(format!("{{\"name\":\"{big}\"}}")),
        413,
        "payload_too_large",
        "",
    )
    .await;
    send(
        client
            .post(url("/api/v1/teams"))
            .bearer_auth(&key)
            .json(&json!({"name": ""})),
        400,
        "bad_request",
        "name",
    )
    .await;
    send(
        client
            .post(url("/api/v1/ingest/runs"))
            .bearer_auth(&key)
            .json(&json!({"runs": []})),
        400,
        "bad_request",
        "runs",
    )
    .await;
    send(
        client
            .post(url("/api/v1/budgets/settle"))
            .bearer_auth(&key)
            .json(&json!({"reservation_id": "x", "amount_micros": 1})),
        400,
        "bad_request",
        "UUID",
    )
    .await;
    send(
        client
            .post(url("/api/v1/budgets/settle"))
            .bearer_auth(&key)
            .json(&json!({"reservation_id": uuid::Uuid::new_v4(), "amount_micros": 1})),
        404,
        "not_found",
        "reservation",
    )
    .await;
    send(
        client
            .put(url("/api/v1/webhook"))
            .bearer_auth(&key)
            .json(&json!({"url": "ftp://x"})),
        400,
        "bad_request",
        "url",
    )
    .await;
    // A payload the gateway's own limits refuse gets a 400, not a 500.
    send(
        client
            .post(url("/api/v1/agents"))
            .bearer_auth(&key)
            .json(&json!({"did": "did:key:zzz", "name": "x"})),
        400,
        "bad_request",
        "did",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_has_its_own_rate_limit() {
    let t = gateway_with(
        4,
        GatewayConfig {
            rate_per_minute: 60,
            rate_burst: 3,
            ..GatewayConfig::default()
        },
    )
    .await;
    let (_, a) = admin(&t.gw, "acme").await;
    let (_, b) = admin(&t.gw, "other").await;
    let base = serve(t.gw.clone()).await;
    let client = Client::new();
    for _ in 0..3 {
        let r = client
            .get(format!("{base}/api/v1/org"))
            .bearer_auth(&a)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = client
        .get(format!("{base}/api/v1/org"))
        .bearer_auth(&a)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry), "{retry}");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "rate_limited");
    let r = client
        .get(format!("{base}/api/v1/org"))
        .bearer_auth(&b)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK, "another key is not limited");
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("agentnet_gateway_rate_limited_total 1"),
        "{metrics}"
    );
}

#[test]
fn the_openapi_document_is_valid() {
    let doc: Value = serde_json::from_str(&api::openapi_json()).expect("json");
    assert!(doc["openapi"].as_str().expect("version").starts_with("3."));
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    // Every $ref resolves.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    out.push(r.clone());
                }
                o.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r}"));
        assert!(schemas.contains_key(name), "dangling {r}");
    }
    // Every operation has responses, path parameters are declared, ids are unique.
    let mut ids = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("ops") {
            assert!(["get", "post", "put", "patch", "delete"].contains(&method.as_str()));
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
            assert!(
                ids.insert(op["operationId"].as_str().expect("operationId").to_owned()),
                "{method} {path}"
            );
            let declared: BTreeSet<String> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .map(|p| p["name"].as_str().unwrap_or("").to_owned())
                        .collect()
                })
                .unwrap_or_default();
            let in_path: BTreeSet<String> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .map(str::to_owned)
                .collect();
            assert_eq!(declared, in_path, "{method} {path}");
        }
    }
    assert!(doc["components"]["securitySchemes"]["key"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_the_database_is_up_the_gateway_says_so() {
    // Nothing listens on port 1: a clear error, no panic.
    let err = agentnet_gateway::Db::connect(
        "postgres://postgres@127.0.0.1:1/none",
        agentnet_gateway::DbOptions {
            acquire_timeout: std::time::Duration::from_secs(2),
            ..Default::default()
        },
    )
    .await
    .expect_err("no database there");
    assert!(
        err.to_string().contains("cannot connect to Postgres"),
        "{err}"
    );

    let startup = api::Startup::default();
    startup.failed(err.to_string());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app = startup.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::new();
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("send")
            .status(),
        StatusCode::OK
    );
    let r = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "database_unavailable");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("m")
            .contains("cannot connect"),
        "{v}"
    );
    // Once the database is up, the same server serves the API.
    let t = gateway().await;
    let (_, key) = admin(&t.gw, "acme").await;
    startup.ready(t.gw.clone());
    let r = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let r = client
        .get(format!("{base}/api/v1/org"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
}
