//! Run and cost ingestion through a batching writer (`specs/gateway-api.md#ingestion`).
//!
//! A request is checked in full before it is queued. Writer tasks take queued requests in
//! groups (whatever is waiting, up to [`WriterConfig::max_batch_events`]), and write each group
//! in one transaction with multi-row `INSERT … SELECT FROM UNNEST(…)`: idempotency keys first
//! (`ON CONFLICT DO NOTHING`, so a retried or concurrent duplicate run is written once), then
//! events, runs and the spend of the budgets they touch. Each request is answered only after
//! its group has committed. A group that fails is retried request by request, so one bad
//! request cannot fail the others.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use agentnet_protocol::Did;
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use crate::budgets;
use crate::db::Db;
use crate::keys::Principal;

/// Runs in one request.
pub const MAX_RUNS: usize = 1_000;
/// Events in one run.
pub const MAX_EVENTS_PER_RUN: usize = 10_000;
/// Events in one request.
pub const MAX_EVENTS: usize = 50_000;
/// Tokens in one event, either way.
pub const MAX_TOKENS: i64 = 1_000_000_000_000;
/// The largest cost of one event, in micros.
pub const MAX_COST_MICROS: i64 = 1_000_000_000_000_000;
/// Earliest accepted time: 2000-01-01.
const EARLIEST_MS: i64 = 946_684_800_000;
/// How far into the future a time may be.
const FUTURE_SLACK_MS: i64 = 24 * 3600 * 1000;

/// Settings of the batching writer.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Writer tasks, each with its own transaction at a time.
    pub writers: usize,
    /// Requests waiting to be written; beyond it a request waits up to `enqueue_timeout`.
    pub queue: usize,
    /// The most events one transaction takes (a larger single request is written alone).
    pub max_batch_events: usize,
    /// How long a request may wait for room in the queue before it gets `busy`.
    pub enqueue_timeout: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            writers: 2,
            queue: 1_024,
            max_batch_events: 20_000,
            enqueue_timeout: Duration::from_secs(5),
        }
    }
}

/// One event of a run: an LLM call, a tool call or anything else with a cost.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventIn {
    /// When it happened (ms since the epoch).
    pub at_ms: i64,
    /// What it was, such as `llm_call` or `tool_call`: 1 to 64 bytes.
    pub kind: String,
    /// The model, for LLM calls.
    #[serde(default)]
    pub model: Option<String>,
    /// Prompt tokens.
    #[serde(default)]
    pub input_tokens: i64,
    /// Completion tokens.
    #[serde(default)]
    pub output_tokens: i64,
    /// The provider-reported cost in micros of the run's currency; if absent, the price table
    /// in effect at `at_ms` prices the event.
    #[serde(default)]
    pub cost_micros: Option<i64>,
}

/// One run of an agent, with its events.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunIn {
    /// Chosen by the client, 1 to 128 bytes: a run sent again with the same key is not
    /// counted again.
    pub idempotency_key: String,
    /// The agent's DID.
    pub agent: String,
    /// When it started (ms since the epoch).
    pub started_at_ms: i64,
    /// When it ended.
    #[serde(default)]
    pub ended_at_ms: Option<i64>,
    /// `ok`, `error`, `cancelled` or `running`.
    pub status: String,
    /// The currency of its costs (default `USD`).
    #[serde(default = "usd")]
    pub currency: String,
    /// Its events, at most [`MAX_EVENTS_PER_RUN`].
    #[serde(default)]
    pub events: Vec<EventIn>,
}

fn usd() -> String {
    "USD".into()
}

/// A batch of runs.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestRequest {
    /// At most [`MAX_RUNS`] runs and [`MAX_EVENTS`] events in all.
    pub runs: Vec<RunIn>,
}

/// What happened to one run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct RunOutcome {
    /// The client's key.
    pub idempotency_key: String,
    /// The run's id.
    pub run_id: Uuid,
    /// True if a run with this key had been ingested before: nothing was written.
    pub duplicate: bool,
}

/// The answer to an ingestion request: sent only after the commit.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct IngestReport {
    /// Runs written now.
    pub accepted: usize,
    /// Runs ingested before.
    pub duplicates: usize,
    /// Events written now.
    pub events: usize,
    /// Per run, in the request's order.
    pub runs: Vec<RunOutcome>,
}

/// Why ingestion failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The request is malformed; nothing was written.
    #[error("{0}")]
    Invalid(String),
    /// The queue stayed full: retry later.
    #[error("the ingestion queue is full; retry later")]
    Busy,
    /// The writer stopped.
    #[error("the ingestion writer has stopped")]
    Stopped,
    /// The database failed; nothing of this request was written.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

fn time_ok(what: &str, ms: i64, now: i64) -> Result<(), IngestError> {
    if !(EARLIEST_MS..=now + FUTURE_SLACK_MS).contains(&ms) {
        return Err(IngestError::Invalid(format!(
            "{what} ({ms}) must be between 2000-01-01 and a day from now, in ms since the epoch"
        )));
    }
    Ok(())
}

/// Checks a request in full; the first problem is reported with where it is.
pub fn validate(request: &IngestRequest) -> Result<(), IngestError> {
    let now = crate::audit::now_ms();
    if request.runs.is_empty() || request.runs.len() > MAX_RUNS {
        return Err(IngestError::Invalid(format!(
            "runs: send 1 to {MAX_RUNS} runs"
        )));
    }
    let events: usize = request.runs.iter().map(|r| r.events.len()).sum();
    if events > MAX_EVENTS {
        return Err(IngestError::Invalid(format!(
            "runs: {events} events in one request; the most is {MAX_EVENTS}"
        )));
    }
    let mut keys = HashSet::with_capacity(request.runs.len());
    for (i, run) in request.runs.iter().enumerate() {
        let at = |field: &str| format!("runs[{i}].{field}");
        let bad =
            |field: &str, why: &str| Err(IngestError::Invalid(format!("{}: {why}", at(field))));
        if run.idempotency_key.is_empty()
            || run.idempotency_key.len() > 128
            || run.idempotency_key.chars().any(char::is_control)
        {
            return bad(
                "idempotency_key",
                "must be 1 to 128 bytes without control characters",
            );
        }
        if !keys.insert(run.idempotency_key.as_str()) {
            return bad("idempotency_key", "appears twice in this request");
        }
        if run.agent.parse::<Did>().is_err() {
            return bad("agent", "must be a did:key");
        }
        time_ok(&at("started_at_ms"), run.started_at_ms, now)?;
        if let Some(end) = run.ended_at_ms {
            time_ok(&at("ended_at_ms"), end, now)?;
            if end < run.started_at_ms {
                return bad("ended_at_ms", "is before started_at_ms");
            }
        }
        if !["ok", "error", "cancelled", "running"].contains(&run.status.as_str()) {
            return bad("status", "must be ok, error, cancelled or running");
        }
        if run.currency.is_empty()
            || run.currency.len() > 8
            || !run.currency.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return bad("currency", "must be 1 to 8 ASCII letters or digits");
        }
        if run.events.len() > MAX_EVENTS_PER_RUN {
            return bad("events", &format!("at most {MAX_EVENTS_PER_RUN} per run"));
        }
        let mut total: i64 = 0;
        for (j, e) in run.events.iter().enumerate() {
            let at = |field: &str| format!("runs[{i}].events[{j}].{field}");
            let bad =
                |field: &str, why: &str| Err(IngestError::Invalid(format!("{}: {why}", at(field))));
            time_ok(&at("at_ms"), e.at_ms, now)?;
            if e.kind.is_empty() || e.kind.len() > 64 || e.kind.chars().any(char::is_control) {
                return bad("kind", "must be 1 to 64 bytes without control characters");
            }
            if let Some(m) = &e.model
                && (m.is_empty() || m.len() > 128 || m.chars().any(char::is_control))
            {
                return bad("model", "must be 1 to 128 bytes without control characters");
            }
            for (field, t) in [
                ("input_tokens", e.input_tokens),
                ("output_tokens", e.output_tokens),
            ] {
                if !(0..=MAX_TOKENS).contains(&t) {
                    return bad(field, &format!("must be between 0 and {MAX_TOKENS}"));
                }
            }
            if let Some(c) = e.cost_micros {
                if !(0..=MAX_COST_MICROS).contains(&c) {
                    return bad(
                        "cost_micros",
                        &format!("must be between 0 and {MAX_COST_MICROS}"),
                    );
                }
                total = total.saturating_add(c);
            }
        }
        if total > MAX_COST_MICROS {
            return bad(
                "events",
                "the run's costs add up to more than the largest amount",
            );
        }
    }
    Ok(())
}

struct Job {
    org: Uuid,
    key_id: String,
    runs: Vec<RunIn>,
    events: usize,
    reply: oneshot::Sender<Result<IngestReport, IngestError>>,
}

/// The batching writer's handle.
#[derive(Clone, Debug)]
pub struct Writer {
    queue: mpsc::Sender<Job>,
    enqueue_timeout: Duration,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("org", &self.org)
            .field("runs", &self.runs.len())
            .field("events", &self.events)
            .finish()
    }
}

impl Writer {
    /// Starts `config.writers` writer tasks on `db`. They stop when the gateway is dropped.
    pub(crate) fn spawn(db: Db, gw: Weak<crate::Inner>, config: WriterConfig) -> Writer {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..config.writers.max(1) {
            let (db, rx, gw) = (db.clone(), rx.clone(), gw.clone());
            let max_events = config.max_batch_events.max(1);
            tokio::spawn(async move { write_loop(db, gw, rx, max_events).await });
        }
        Writer {
            queue: tx,
            enqueue_timeout: config.enqueue_timeout,
        }
    }

    /// Checks and writes `request` for `caller`; returns once it is committed.
    pub async fn ingest(
        &self,
        caller: &Principal,
        mut request: IngestRequest,
    ) -> Result<IngestReport, IngestError> {
        validate(&request)?;
        // Currency codes compare without case, as budgets and prices store them.
        for run in &mut request.runs {
            run.currency.make_ascii_uppercase();
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            org: caller.org_id,
            key_id: caller.key_id.clone(),
            events: request.runs.iter().map(|r| r.events.len()).sum(),
            runs: request.runs,
            reply,
        };
        match tokio::time::timeout(self.enqueue_timeout, self.queue.send(job)).await {
            Err(_) => return Err(IngestError::Busy),
            Ok(Err(_)) => return Err(IngestError::Stopped),
            Ok(Ok(())) => {}
        }
        answer.await.map_err(|_| IngestError::Stopped)?
    }
}

async fn write_loop(
    db: Db,
    gw: Weak<crate::Inner>,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    max_events: usize,
) {
    loop {
        let mut batch = Vec::new();
        {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut events = first.events;
            batch.push(first);
            // Whatever else is waiting, up to the batch's size: no added wait when idle.
            while events < max_events {
                match rx.try_recv() {
                    Ok(job) => {
                        events += job.events;
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
        }
        write_batch(&db, &gw, batch).await;
    }
}

async fn write_batch(db: &Db, gw: &Weak<crate::Inner>, batch: Vec<Job>) {
    let refs: Vec<&Job> = batch.iter().collect();
    match write(db, gw, &refs).await {
        Ok(reports) => {
            for (job, report) in batch.into_iter().zip(reports) {
                let _ = job.reply.send(Ok(report));
            }
        }
        Err(e) if batch.len() == 1 => {
            if let Some(job) = batch.into_iter().next() {
                let _ = job.reply.send(Err(e.into()));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, requests = batch.len(), "an ingestion batch failed; writing its requests one by one");
            for job in batch {
                let result = write(db, gw, &[&job]).await;
                let _ = job.reply.send(
                    result
                        .map(|mut r| r.pop().unwrap_or_else(empty_report))
                        .map_err(IngestError::from),
                );
            }
        }
    }
}

fn empty_report() -> IngestReport {
    IngestReport {
        accepted: 0,
        duplicates: 0,
        events: 0,
        runs: Vec::new(),
    }
}

fn ts(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

/// Cost of `tokens` at a price per million tokens, rounded up to the micro.
fn priced(tokens: i64, per_mtok: i64) -> i64 {
    let product = i128::from(tokens) * i128::from(per_mtok);
    let micros = (product + 999_999) / 1_000_000;
    i64::try_from(micros)
        .unwrap_or(i64::MAX)
        .min(MAX_COST_MICROS)
}

/// A price version: (id, effective from in ms, input and output micros per million tokens).
type PriceRow = (i64, i64, i64, i64);

/// Writes the jobs in one transaction; returns one report per job.
async fn write(
    db: &Db,
    gw: &Weak<crate::Inner>,
    jobs: &[&Job],
) -> Result<Vec<IngestReport>, sqlx::Error> {
    let mut tx = db.pool().begin().await?;

    // 1. Idempotency keys. New runs get fresh ids; a key already present is a duplicate.
    let mut key_orgs = Vec::new();
    let mut key_names = Vec::new();
    let mut key_runs = Vec::new();
    let mut key_starts = Vec::new();
    for job in jobs {
        for run in &job.runs {
            key_orgs.push(job.org);
            key_names.push(run.idempotency_key.as_str());
            key_runs.push(Uuid::new_v4());
            key_starts.push(ts(run.started_at_ms));
        }
    }
    let inserted: Vec<(Uuid, String)> = sqlx::query_as(
        "INSERT INTO run_keys (org_id, idempotency_key, run_id, started_at)
         SELECT o, k, r, to_timestamp(s) FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::float8[]) AS u(o, k, r, s)
         ON CONFLICT DO NOTHING
         RETURNING org_id, idempotency_key",
    )
    .bind(&key_orgs)
    .bind(&key_names)
    .bind(&key_runs)
    .bind(&key_starts)
    .fetch_all(&mut *tx)
    .await?;
    let new: HashSet<(Uuid, &str)> = inserted.iter().map(|(o, k)| (*o, k.as_str())).collect();
    // Two requests in one batch may carry the same key: the first one written wins.
    let mut claimed: HashSet<(Uuid, &str)> = HashSet::new();
    let mut duplicates: Vec<(Uuid, &str)> = Vec::new();
    let mut is_new = Vec::with_capacity(key_orgs.len());
    for (org, key) in key_orgs.iter().zip(&key_names) {
        let fresh = new.contains(&(*org, *key)) && claimed.insert((*org, *key));
        if !fresh {
            duplicates.push((*org, key));
        }
        is_new.push(fresh);
    }
    let mut existing: HashMap<(Uuid, String), Uuid> = HashMap::new();
    if !duplicates.is_empty() {
        let (orgs, names): (Vec<Uuid>, Vec<&str>) = duplicates.iter().copied().unzip();
        let rows: Vec<(Uuid, String, Uuid)> = sqlx::query_as(
            "SELECT k.org_id, k.idempotency_key, k.run_id FROM run_keys k
               JOIN UNNEST($1::uuid[], $2::text[]) AS u(o, n) ON k.org_id = u.o AND k.idempotency_key = u.n",
        )
        .bind(&orgs)
        .bind(&names)
        .fetch_all(&mut *tx)
        .await?;
        existing = rows.into_iter().map(|(o, k, r)| ((o, k), r)).collect();
    }

    // 2. Prices of the models the new events name and that report no cost.
    let mut wanted: HashSet<(Uuid, &str, &str)> = HashSet::new();
    let mut i = 0;
    for job in jobs {
        for run in &job.runs {
            if is_new[i] {
                for e in &run.events {
                    if let (None, Some(model)) = (e.cost_micros, &e.model) {
                        wanted.insert((job.org, model.as_str(), run.currency.as_str()));
                    }
                }
            }
            i += 1;
        }
    }
    let mut prices: HashMap<(Uuid, String, String), Vec<PriceRow>> = HashMap::new();
    if !wanted.is_empty() {
        let mut orgs = Vec::new();
        let mut models = Vec::new();
        let mut currencies = Vec::new();
        for (o, m, c) in &wanted {
            orgs.push(*o);
            models.push(*m);
            currencies.push(*c);
        }
        let rows: Vec<(Uuid, String, String, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT p.org_id, p.model, p.currency, p.id,
                    (extract(epoch from p.effective_from) * 1000)::bigint,
                    p.input_micros_per_mtok, p.output_micros_per_mtok
               FROM model_prices p
               JOIN UNNEST($1::uuid[], $2::text[], $3::text[]) AS u(o, m, c)
                 ON p.org_id = u.o AND p.model = u.m AND p.currency = u.c
              ORDER BY p.effective_from",
        )
        .bind(&orgs)
        .bind(&models)
        .bind(&currencies)
        .fetch_all(&mut *tx)
        .await?;
        for (o, m, c, id, from, input, output) in rows {
            prices
                .entry((o, m, c))
                .or_default()
                .push((id, from, input, output));
        }
    }

    // 3. Agents' teams, for the runs and the team budgets.
    let mut agents: HashSet<(Uuid, &str)> = HashSet::new();
    for job in jobs {
        for run in &job.runs {
            agents.insert((job.org, run.agent.as_str()));
        }
    }
    let (agent_orgs, agent_dids): (Vec<Uuid>, Vec<&str>) = agents.iter().copied().unzip();
    let team_rows: Vec<(Uuid, String, Option<Uuid>)> = sqlx::query_as(
        "SELECT a.org_id, a.did, a.team_id FROM agents a
           JOIN UNNEST($1::uuid[], $2::text[]) AS u(o, d) ON a.org_id = u.o AND a.did = u.d",
    )
    .bind(&agent_orgs)
    .bind(&agent_dids)
    .fetch_all(&mut *tx)
    .await?;
    let teams: HashMap<(Uuid, String), Option<Uuid>> =
        team_rows.into_iter().map(|(o, d, t)| ((o, d), t)).collect();

    // 4. Events and runs of the new runs, priced.
    let mut ev = EventColumns::default();
    let mut rn = RunColumns::default();
    let mut spend: HashMap<budgets::SpendKey, i64> = HashMap::new();
    let mut reports = Vec::with_capacity(jobs.len());
    let mut i = 0;
    for job in jobs {
        let mut report = empty_report();
        for run in &job.runs {
            let run_id = if is_new[i] {
                key_runs[i]
            } else {
                existing
                    .get(&(job.org, run.idempotency_key.clone()))
                    .copied()
                    .unwrap_or(key_runs[i])
            };
            if !is_new[i] {
                report.duplicates += 1;
                report.runs.push(RunOutcome {
                    idempotency_key: run.idempotency_key.clone(),
                    run_id,
                    duplicate: true,
                });
                i += 1;
                continue;
            }
            i += 1;
            let team = teams.get(&(job.org, run.agent.clone())).copied().flatten();
            let mut cost: i64 = 0;
            for (seq, e) in run.events.iter().enumerate() {
                let (micros, source, price_id) = match (e.cost_micros, &e.model) {
                    (Some(c), _) => (c, "provider", None),
                    (None, Some(model)) => {
                        let version = prices
                            .get(&(job.org, model.clone(), run.currency.clone()))
                            .and_then(|v| v.iter().rev().find(|p| p.1 <= e.at_ms));
                        match version {
                            Some(&(id, _, input, output)) => (
                                priced(e.input_tokens, input)
                                    .saturating_add(priced(e.output_tokens, output))
                                    .min(MAX_COST_MICROS),
                                "price_table",
                                Some(id),
                            ),
                            None => (0, "unpriced", None),
                        }
                    }
                    (None, None) => (0, "unpriced", None),
                };
                cost = cost.saturating_add(micros).min(MAX_COST_MICROS);
                ev.org.push(job.org);
                ev.run.push(run_id);
                ev.seq.push(seq as i32);
                ev.at.push(ts(e.at_ms));
                ev.kind.push(e.kind.as_str());
                ev.model.push(e.model.as_deref());
                ev.input.push(e.input_tokens);
                ev.output.push(e.output_tokens);
                ev.currency.push(run.currency.as_str());
                ev.cost.push(micros);
                ev.source.push(source);
                ev.price.push(price_id);
            }
            rn.org.push(job.org);
            rn.id.push(run_id);
            rn.started.push(ts(run.started_at_ms));
            rn.ended.push(run.ended_at_ms.map(ts));
            rn.agent.push(run.agent.as_str());
            rn.team.push(team);
            rn.key.push(job.key_id.as_str());
            rn.status.push(run.status.as_str());
            rn.events.push(run.events.len() as i32);
            rn.currency.push(run.currency.as_str());
            rn.cost.push(cost);
            rn.idem.push(run.idempotency_key.as_str());
            if cost > 0 {
                let total = spend
                    .entry(budgets::SpendKey {
                        org: job.org,
                        agent: run.agent.clone(),
                        team,
                        key_id: job.key_id.clone(),
                        currency: run.currency.to_ascii_uppercase(),
                    })
                    .or_default();
                *total = total.saturating_add(cost).min(MAX_COST_MICROS);
            }
            report.accepted += 1;
            report.events += run.events.len();
            report.runs.push(RunOutcome {
                idempotency_key: run.idempotency_key.clone(),
                run_id,
                duplicate: false,
            });
        }
        reports.push(report);
    }
    if !ev.org.is_empty() {
        sqlx::query(
            "INSERT INTO events (org_id, run_id, seq, at, kind, model, input_tokens, output_tokens,
                                 currency, cost_micros, cost_source, price_id)
             SELECT o, r, s, to_timestamp(a), k, m, i, x, c, m2, src, p
               FROM UNNEST($1::uuid[], $2::uuid[], $3::int4[], $4::float8[], $5::text[], $6::text[],
                           $7::int8[], $8::int8[], $9::text[], $10::int8[], $11::text[], $12::int8[])
                    AS u(o, r, s, a, k, m, i, x, c, m2, src, p)",
        )
        .bind(&ev.org)
        .bind(&ev.run)
        .bind(&ev.seq)
        .bind(&ev.at)
        .bind(&ev.kind)
        .bind(&ev.model)
        .bind(&ev.input)
        .bind(&ev.output)
        .bind(&ev.currency)
        .bind(&ev.cost)
        .bind(&ev.source)
        .bind(&ev.price)
        .execute(&mut *tx)
        .await?;
    }
    if !rn.org.is_empty() {
        sqlx::query(
            "INSERT INTO runs (org_id, id, started_at, ended_at, agent, team_id, key_id, status,
                               events, currency, cost_micros, idempotency_key)
             SELECT o, i, to_timestamp(s), to_timestamp(e), a, t, k, st, n, c, m, ik
               FROM UNNEST($1::uuid[], $2::uuid[], $3::float8[], $4::float8[], $5::text[], $6::uuid[],
                           $7::text[], $8::text[], $9::int4[], $10::text[], $11::int8[], $12::text[])
                    AS u(o, i, s, e, a, t, k, st, n, c, m, ik)",
        )
        .bind(&rn.org)
        .bind(&rn.id)
        .bind(&rn.started)
        .bind(&rn.ended)
        .bind(&rn.agent)
        .bind(&rn.team)
        .bind(&rn.key)
        .bind(&rn.status)
        .bind(&rn.events)
        .bind(&rn.currency)
        .bind(&rn.cost)
        .bind(&rn.idem)
        .execute(&mut *tx)
        .await?;
    }
    // 5. Spend last, so budget rows stay locked for as short a time as possible.
    let Some(inner) = gw.upgrade() else {
        // The gateway is shutting down: nothing is committed, and the callers are told.
        return Err(sqlx::Error::PoolClosed);
    };
    let crossed = budgets::charge(&mut tx, &inner.audit, &spend).await?;
    tx.commit().await?;
    // The pauses sign and publish notices through the node: the writer, and so every
    // acknowledgement waiting on it, does not wait for that. The hard stop itself is in the
    // committed budget row, so reservations are refused from now on whatever the pause does.
    if !crossed.is_empty() {
        tokio::spawn(async move {
            budgets::after_charge(&crate::Gateway::from_inner(inner), crossed).await;
        });
    }
    Ok(reports)
}

#[derive(Default)]
struct EventColumns<'a> {
    org: Vec<Uuid>,
    run: Vec<Uuid>,
    seq: Vec<i32>,
    at: Vec<f64>,
    kind: Vec<&'a str>,
    model: Vec<Option<&'a str>>,
    input: Vec<i64>,
    output: Vec<i64>,
    currency: Vec<&'a str>,
    cost: Vec<i64>,
    source: Vec<&'a str>,
    price: Vec<Option<i64>>,
}

#[derive(Default)]
struct RunColumns<'a> {
    org: Vec<Uuid>,
    id: Vec<Uuid>,
    started: Vec<f64>,
    ended: Vec<Option<f64>>,
    agent: Vec<&'a str>,
    team: Vec<Option<Uuid>>,
    key: Vec<&'a str>,
    status: Vec<&'a str>,
    events: Vec<i32>,
    currency: Vec<&'a str>,
    cost: Vec<i64>,
    idem: Vec<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_round_up_to_the_micro_and_never_overflow() {
        assert_eq!(priced(1, 1), 1);
        assert_eq!(priced(1_000_000, 3_000_000), 3_000_000);
        assert_eq!(priced(0, 5), 0);
        assert_eq!(priced(MAX_TOKENS, i64::MAX), MAX_COST_MICROS);
    }
}
