//! `agentnet-bench gateway-ingest`: the gateway's ingestion throughput with durable commits,
//! and budget reservation latency on one hot budget, over HTTP against a gateway served in
//! this process on the machine's Postgres.
//!
//! Each figure comes with a baseline measured in the same run on the same database:
//! - ingestion: the same events written by plain multi-row `INSERT … SELECT FROM UNNEST`
//!   into one unpartitioned table with no index, no idempotency and no API, one
//!   transaction per batch, by the same number of writers;
//! - reservation: one conditional `UPDATE … WHERE spent + reserved + amount <= limit` of
//!   the hot row and its commit, by the same number of clients, with no API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentnet_gateway::{Db, DbOptions, Gateway, GatewayConfig, api, keys};
use agentnet_protocol::Keypair;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::json;

/// Settings of a run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Postgres; a fresh schema is made in it and dropped after.
    pub database_url: String,
    /// Events to ingest in all.
    pub events: usize,
    /// Runs per request.
    pub runs_per_request: usize,
    /// Events per run.
    pub events_per_run: usize,
    /// Concurrent ingesting clients.
    pub clients: usize,
    /// Reservations per client in the latency runs.
    pub reservations: usize,
}

/// Latency figures in milliseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    /// Clients at once.
    pub clients: usize,
    /// Requests timed.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Requests per second over the run.
    pub per_second: f64,
}

/// What a run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Postgres `synchronous_commit` and `fsync` during the run: `on` means every
    /// acknowledged commit was flushed to disk.
    pub synchronous_commit: String,
    /// See above.
    pub fsync: String,
    /// Events ingested through the API.
    pub events: usize,
    /// Events per request.
    pub events_per_request: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Through the gateway's API, acknowledged after commit.
    pub ingest_events_per_second: f64,
    /// Request latency of ingestion.
    pub ingest_latency: Latency,
    /// The plain-INSERT baseline.
    pub baseline_events_per_second: f64,
    /// Gateway over baseline.
    pub ingest_ratio: f64,
    /// Rows found afterwards: must equal `events`.
    pub events_in_table: i64,
    /// Reservations at one client, through the API.
    pub reserve_1: Latency,
    /// Reservations at 64 clients on one hot budget, through the API.
    pub reserve_64: Latency,
    /// The bare conditional UPDATE at one client.
    pub baseline_reserve_1: Latency,
    /// The bare conditional UPDATE at 64 clients.
    pub baseline_reserve_64: Latency,
    /// spent + reserved after the 64-client run, and the hard limit it must not pass.
    pub hot_budget_total_micros: i64,
    /// The hot budget's hard limit.
    pub hot_budget_hard_limit_micros: i64,
}

fn latency(clients: usize, mut samples: Vec<Duration>, elapsed: Duration) -> Latency {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| {
        samples
            .get(((samples.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .map(ms)
            .unwrap_or(0.0)
    };
    Latency {
        clients,
        count: samples.len(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: samples.last().copied().map(ms).unwrap_or(0.0),
        per_second: samples.len() as f64 / elapsed.as_secs_f64().max(1e-9),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn request_body(client: usize, request: usize, s: &Settings, agent: &str, at: i64) -> String {
    let runs: Vec<serde_json::Value> = (0..s.runs_per_request)
        .map(|r| {
            json!({
                "idempotency_key": format!("c{client}-q{request}-r{r}"),
                "agent": agent,
                "started_at_ms": at,
                "ended_at_ms": at + 500,
                "status": "ok",
                "events": (0..s.events_per_run).map(|e| json!({
                    "at_ms": at + e as i64, "kind": "llm_call", "model": "gpt-bench",
                    "input_tokens": 1200, "output_tokens": 300,
                    "cost_micros": if e % 2 == 0 { serde_json::Value::from(41) } else { serde_json::Value::Null },
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "runs": runs }).to_string()
}

/// Runs the benchmark.
pub async fn run(s: &Settings) -> Result<Report> {
    let schema = format!("bench_{}", now_ms());
    let db = Db::connect(
        &s.database_url,
        DbOptions {
            max_connections: 80,
            schema: Some(schema.clone()),
            ..DbOptions::default()
        },
    )
    .await
    .context("the benchmark needs Postgres (DATABASE_URL)")?;
    let result = measure(s, db.clone()).await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(db.pool())
        .await;
    result
}

async fn measure(s: &Settings, db: Db) -> Result<Report> {
    let (synchronous_commit,): (String,) = sqlx::query_as("SHOW synchronous_commit")
        .fetch_one(db.pool())
        .await?;
    let (fsync,): (String,) = sqlx::query_as("SHOW fsync").fetch_one(db.pool()).await?;
    let config = GatewayConfig {
        rate_per_minute: 100_000_000,
        rate_burst: 1_000_000,
        ..GatewayConfig::default()
    };
    let gw = Gateway::new(db.clone(), Keypair::generate()?, None, config);
    let (_, admin) = keys::init_org(&gw, "bench").await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = api::router(gw.clone());
    // As the gateway's binary serves: TCP_NODELAY on every accepted connection.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let agent = Keypair::generate()?.did().to_string();
    sqlx::query(
        "INSERT INTO model_prices (org_id, model, currency, input_micros_per_mtok, output_micros_per_mtok, effective_from)
         SELECT id, 'gpt-bench', 'USD', 2500000, 10000000, now() - interval '1 year' FROM orgs",
    )
    .execute(db.pool())
    .await?;

    // Ingestion through the API.
    let per_request = s.runs_per_request * s.events_per_run;
    let requests = s.events.div_ceil(per_request);
    let at = now_ms() - 60_000;
    let bodies: Vec<Vec<String>> = (0..s.clients)
        .map(|c| {
            (c..requests)
                .step_by(s.clients)
                .map(|q| request_body(c, q, s, &agent, at))
                .collect()
        })
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mine in bodies {
        let (http, base, admin) = (http.clone(), base.clone(), admin.key.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(mine.len());
            for body in mine {
                let t = Instant::now();
                let r = http
                    .post(format!("{base}/api/v1/ingest/runs"))
                    .bearer_auth(&admin)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!(
                        "ingest: {} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    );
                }
                samples.push(t.elapsed());
            }
            Ok(samples)
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await??);
    }
    let elapsed = started.elapsed();
    let events = requests * per_request;
    let ingest_events_per_second = events as f64 / elapsed.as_secs_f64();
    let ingest_latency = latency(s.clients, samples, elapsed);
    let (events_in_table,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(db.pool())
        .await?;

    // Baseline: the same events by plain multi-row INSERT, one transaction per request.
    sqlx::query(
        "CREATE TABLE baseline_events (org_id uuid, run_id uuid, seq int, at timestamptz, kind text,
         model text, input_tokens bigint, output_tokens bigint, currency text, cost_micros bigint,
         cost_source text, price_id bigint)",
    )
    .execute(db.pool())
    .await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..s.clients {
        let pool = db.pool().clone();
        let mine = (c..requests).step_by(s.clients).count();
        tasks.push(tokio::spawn(async move {
            let org = uuid::Uuid::new_v4();
            for _ in 0..mine {
                let n = per_request;
                let runs: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::new_v4()).collect();
                let seqs: Vec<i32> = (0..n as i32).collect();
                let ats: Vec<f64> = vec![at as f64 / 1000.0; n];
                let text: Vec<&str> = vec!["llm_call"; n];
                let model: Vec<&str> = vec!["gpt-bench"; n];
                let tokens: Vec<i64> = vec![1200; n];
                let cur: Vec<&str> = vec!["USD"; n];
                let src: Vec<&str> = vec!["provider"; n];
                let price: Vec<Option<i64>> = vec![None; n];
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "INSERT INTO baseline_events SELECT $1, r, s, to_timestamp(a), k, m, i, i, c, i, src, p
                       FROM UNNEST($2::uuid[], $3::int4[], $4::float8[], $5::text[], $6::text[], $7::int8[],
                                   $8::text[], $9::text[], $10::int8[]) AS u(r, s, a, k, m, i, c, src, p)",
                )
                .bind(org)
                .bind(&runs)
                .bind(&seqs)
                .bind(&ats)
                .bind(&text)
                .bind(&model)
                .bind(&tokens)
                .bind(&cur)
                .bind(&src)
                .bind(&price)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let baseline_events_per_second = events as f64 / started.elapsed().as_secs_f64();

    // Reservations on one hot budget.
    let (org,): (uuid::Uuid,) = sqlx::query_as("SELECT id FROM orgs")
        .fetch_one(db.pool())
        .await?;
    let limit: i64 = 1_000_000_000_000;
    let r = http
        .post(format!("{base}/api/v1/budgets"))
        .bearer_auth(&admin.key)
        .json(&json!({"scope": "org", "scope_id": org, "period": "total", "currency": "USD", "limit_micros": limit}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("budget: {}", r.text().await.unwrap_or_default());
    }
    let reserve_1 = reserve(&http, &base, &admin.key, &agent, 1, s.reservations * 4).await?;
    let reserve_64 = reserve(&http, &base, &admin.key, &agent, 64, s.reservations).await?;
    let (total,): (i64,) =
        sqlx::query_as("SELECT spent_micros + reserved_micros FROM budgets WHERE scope = 'org'")
            .fetch_one(db.pool())
            .await?;
    sqlx::query("CREATE TABLE baseline_budget (id int PRIMARY KEY, spent bigint, reserved bigint, lim bigint)")
        .execute(db.pool())
        .await?;
    sqlx::query("INSERT INTO baseline_budget VALUES (1, 0, 0, $1)")
        .bind(limit)
        .execute(db.pool())
        .await?;
    let baseline_reserve_1 = bare_reserve(db.pool(), 1, s.reservations * 4).await?;
    let baseline_reserve_64 = bare_reserve(db.pool(), 64, s.reservations).await?;

    Ok(Report {
        synchronous_commit,
        fsync,
        events,
        events_per_request: per_request,
        clients: s.clients,
        ingest_events_per_second,
        ingest_latency,
        baseline_events_per_second,
        ingest_ratio: ingest_events_per_second / baseline_events_per_second,
        events_in_table,
        reserve_1,
        reserve_64,
        baseline_reserve_1,
        baseline_reserve_64,
        hot_budget_total_micros: total,
        hot_budget_hard_limit_micros: limit + limit / 5,
    })
}

async fn reserve(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    agent: &str,
    clients: usize,
    each: usize,
) -> Result<Latency> {
    // Warm the connections first.
    for _ in 0..clients.min(8) {
        let _ = http.get(format!("{base}/readyz")).send().await;
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, base, key, agent) = (
            http.clone(),
            base.to_owned(),
            key.to_owned(),
            agent.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(each);
            for _ in 0..each {
                let body = json!({
                    "intent_id": uuid::Uuid::new_v4().simple().to_string(), "agent": agent,
                    "callee": "did:key:x", "capability": "bench", "amount_micros": 10,
                    "currency": "USD", "expires_at_ms": now_ms() + 3_600_000,
                });
                let t = Instant::now();
                let r = http
                    .post(format!("{base}/api/v1/budgets/reserve"))
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!(
                        "reserve: {} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    );
                }
                samples.push(t.elapsed());
            }
            Ok(samples)
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await??);
    }
    Ok(latency(clients, samples, started.elapsed()))
}

async fn bare_reserve(pool: &sqlx::PgPool, clients: usize, each: usize) -> Result<Latency> {
    let pool = Arc::new(pool.clone());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(each);
            for _ in 0..each {
                let t = Instant::now();
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "UPDATE baseline_budget SET reserved = reserved + 10
                      WHERE id = 1 AND spent + reserved + 10 <= lim",
                )
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                samples.push(t.elapsed());
            }
            Ok::<_, sqlx::Error>(samples)
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await??);
    }
    Ok(latency(clients, samples, started.elapsed()))
}
