//! `agentnet-bench gateway-durability`: ingestion survives `kill -9`.
//!
//! It makes a fresh database, starts the `agentnet-gateway` binary on it, and has clients
//! ingest batches of runs with fixed idempotency keys. Mid-stream it kills the gateway with
//! SIGKILL, starts it again on the same database, and retries every batch that was not
//! acknowledged. Then it counts: every acknowledged batch must be present, every run exactly
//! once, and every event of every run present.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::json;

/// Settings of a run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The `agentnet-gateway` binary.
    pub gateway: PathBuf,
    /// A Postgres URL whose server gets the fresh database (its path names any database
    /// to connect to first).
    pub database_url: String,
    /// The fresh database's name (dropped first if it exists).
    pub database: String,
    /// Batches to send.
    pub batches: usize,
    /// Runs per batch.
    pub runs_per_batch: usize,
    /// Events per run.
    pub events_per_run: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// When to kill the gateway after the first batch is sent.
    pub kill_after: Duration,
    /// Port of the gateway.
    pub port: u16,
}

/// What a run found.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Batches sent.
    pub batches: usize,
    /// Acknowledged before the kill.
    pub acknowledged_before_kill: usize,
    /// Sent but not acknowledged when the gateway died (connection refused or reset).
    pub unacknowledged_at_kill: usize,
    /// Of those, batches whose runs had in fact been committed: the retry found them all
    /// duplicates, and counted none of them again.
    pub committed_but_unacknowledged: usize,
    /// Runs the database holds.
    pub runs_in_database: i64,
    /// Runs there must be.
    pub runs_expected: usize,
    /// Events the database holds.
    pub events_in_database: i64,
    /// Events there must be.
    pub events_expected: usize,
    /// Idempotency keys held more than once (must be 0).
    pub duplicated_runs: i64,
    /// Acknowledged runs missing (must be 0).
    pub missing_acknowledged_runs: usize,
    /// Whether nothing was lost and nothing duplicated.
    pub ok: bool,
    /// How long the restarted gateway took to answer `/readyz`.
    pub restart_ms: u128,
}

fn body(batch: usize, s: &Settings) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
        - 60_000;
    let agent = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK";
    let runs: Vec<serde_json::Value> = (0..s.runs_per_batch)
        .map(|r| {
            json!({
                "idempotency_key": format!("b{batch}-r{r}"),
                "agent": agent, "started_at_ms": now, "status": "ok",
                "events": (0..s.events_per_run).map(|e| json!({
                    "at_ms": now + e as i64, "kind": "llm_call", "model": "m",
                    "input_tokens": 100, "output_tokens": 10, "cost_micros": 3,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "runs": runs }).to_string()
}

fn with_database(url: &str, db: &str) -> Result<String> {
    let (base, _) = url
        .rsplit_once('/')
        .context("DATABASE_URL must end in /<database>")?;
    Ok(format!("{base}/{db}"))
}

fn start(s: &Settings, url: &str, dir: &std::path::Path) -> Result<Child> {
    Command::new(&s.gateway)
        .args(["--no-node", "--listen", &format!("127.0.0.1:{}", s.port)])
        // The load is the point here, not the per-key limit.
        .args(["--rate-per-minute", "100000000"])
        .arg("--data-dir")
        .arg(dir)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", s.gateway.display()))
}

async fn ready(http: &reqwest::Client, base: &str) -> Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the gateway did not become ready in 60 s")
}

/// Sends every batch in `todo`; returns which were acknowledged and how many of those held
/// only duplicates.
async fn send_all(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    s: &Settings,
    todo: Vec<usize>,
    sent: Option<Arc<AtomicUsize>>,
) -> (BTreeSet<usize>, usize) {
    let todo = Arc::new(Mutex::new(todo));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let duplicates = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..s.clients {
        let (http, base, key, todo, acked, duplicates, sent, s) = (
            http.clone(),
            base.to_owned(),
            key.to_owned(),
            todo.clone(),
            acked.clone(),
            duplicates.clone(),
            sent.clone(),
            s.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(batch) = todo.lock().ok().and_then(|mut t| t.pop()) else {
                    return;
                };
                if let Some(sent) = &sent {
                    sent.fetch_add(1, Ordering::SeqCst);
                }
                let r = http
                    .post(format!("{base}/api/v1/ingest/runs"))
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(body(batch, &s))
                    .send()
                    .await;
                let Ok(r) = r else { continue };
                if !r.status().is_success() {
                    // Not acknowledged: the retry after the restart sends it again.
                    tracing_note(batch, r.status());
                    continue;
                }
                let Ok(v) = r.json::<serde_json::Value>().await else {
                    continue;
                };
                if v["accepted"] == 0 {
                    duplicates.fetch_add(1, Ordering::SeqCst);
                }
                if let Ok(mut a) = acked.lock() {
                    a.insert(batch);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    (acked, duplicates.load(Ordering::SeqCst))
}

fn tracing_note(batch: usize, status: reqwest::StatusCode) {
    if status.is_client_error() {
        eprintln!("batch {batch} refused: {status}");
    }
}

/// Runs the procedure.
pub async fn run(s: &Settings) -> Result<Report> {
    use sqlx::Connection;
    if !s
        .database
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        bail!("the database name must be letters, digits and _");
    }
    let mut admin = sqlx::PgConnection::connect(&s.database_url)
        .await
        .context("cannot reach Postgres")?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        s.database
    )))
    .execute(&mut admin)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {}",
        s.database
    )))
    .execute(&mut admin)
    .await?;
    let url = with_database(&s.database_url, &s.database)?;
    let dir = tempfile::tempdir()?;
    let init = Command::new(&s.gateway)
        .args(["admin", "init", "--org", "durability"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("DATABASE_URL", &url)
        .env("RUST_LOG", "warn")
        .output()
        .context("admin init")?;
    let out = String::from_utf8_lossy(&init.stdout);
    let key = out
        .lines()
        .find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("key"))
                .then(|| words.next())
                .flatten()
                .filter(|k| k.starts_with("agn_"))
                .map(str::to_owned)
        })
        .with_context(|| format!("no key in `admin init` output: {out}"))?;
    let base = format!("http://127.0.0.1:{}", s.port);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;

    let mut child = start(s, &url, dir.path())?;
    ready(&http, &base).await?;
    let all: Vec<usize> = (0..s.batches).rev().collect();
    let sent = Arc::new(AtomicUsize::new(0));
    let kill_after = s.kill_after;
    let stream = send_all(&http, &base, &key, s, all, Some(sent.clone()));
    tokio::pin!(stream);
    // Kill -9 mid-stream: the clients keep sending into a dead port until they run out.
    let (acked, _) = tokio::select! {
        done = &mut stream => done,
        _ = tokio::time::sleep(kill_after) => {
            child.kill().context("SIGKILL")?;
            let _ = child.wait();
            stream.await
        }
    };
    if sent.load(Ordering::SeqCst) >= s.batches && acked.len() == s.batches {
        bail!("every batch was acknowledged before the kill: send more batches or kill sooner");
    }
    let _ = child.kill();
    let _ = child.wait();
    let acknowledged_before_kill = acked.len();
    let unacked: Vec<usize> = (0..s.batches).filter(|b| !acked.contains(b)).collect();

    let restarted = Instant::now();
    let mut child = start(s, &url, dir.path())?;
    ready(&http, &base).await?;
    let restart_ms = restarted.elapsed().as_millis();
    let mut remaining = unacked.clone();
    let mut committed_but_unacknowledged = 0;
    for _ in 0..10 {
        if remaining.is_empty() {
            break;
        }
        let (now_acked, dups) = send_all(&http, &base, &key, s, remaining.clone(), None).await;
        committed_but_unacknowledged += dups;
        remaining.retain(|b| !now_acked.contains(b));
    }
    let _ = child.kill();
    let _ = child.wait();
    if !remaining.is_empty() {
        bail!(
            "{} batches were never acknowledged after the restart",
            remaining.len()
        );
    }

    let mut conn = sqlx::PgConnection::connect(&url).await?;
    let (runs,): (i64,) = sqlx::query_as("SELECT count(*) FROM runs")
        .fetch_one(&mut conn)
        .await?;
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(&mut conn)
        .await?;
    let (duplicated,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM (SELECT idempotency_key FROM runs GROUP BY 1 HAVING count(*) > 1) d",
    )
    .fetch_one(&mut conn)
    .await?;
    let keys: Vec<(String,)> = sqlx::query_as("SELECT idempotency_key FROM runs")
        .fetch_all(&mut conn)
        .await?;
    let held: BTreeSet<String> = keys.into_iter().map(|(k,)| k).collect();
    let missing = acked
        .iter()
        .flat_map(|b| (0..s.runs_per_batch).map(move |r| format!("b{b}-r{r}")))
        .filter(|k| !held.contains(k))
        .count();
    let runs_expected = s.batches * s.runs_per_batch;
    let events_expected = runs_expected * s.events_per_run;
    let ok = runs == runs_expected as i64
        && events == events_expected as i64
        && duplicated == 0
        && missing == 0;
    drop(conn);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        s.database
    )))
    .execute(&mut admin)
    .await?;
    Ok(Report {
        batches: s.batches,
        acknowledged_before_kill,
        unacknowledged_at_kill: unacked.len(),
        committed_but_unacknowledged,
        runs_in_database: runs,
        runs_expected,
        events_in_database: events,
        events_expected,
        duplicated_runs: duplicated,
        missing_acknowledged_runs: missing,
        ok,
        restart_ms,
    })
}
