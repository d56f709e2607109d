//! Runs, events and cost summaries (`specs/gateway-api.md#runs-and-events`).
//!
//! Listings are newest first and paged by an opaque cursor: the position of the last row
//! returned, so a page never repeats or skips a row however many are ingested meanwhile.

use uuid::Uuid;

use crate::Gateway;
use crate::keys::Principal;

/// The most rows one page may hold.
pub const MAX_PAGE: i64 = 1_000;
/// Rows per page unless asked otherwise.
pub const DEFAULT_PAGE: i64 = 100;

/// Why a listing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunsError {
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// No such run in the organisation.
    #[error("run not found")]
    NotFound,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Filters of a run listing.
#[derive(Clone, Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunQuery {
    /// Only this agent's runs.
    pub agent: Option<String>,
    /// Only this team's runs.
    pub team_id: Option<Uuid>,
    /// Only runs with this status.
    pub status: Option<String>,
    /// Runs that started at or after this (ms since the epoch).
    pub from_ms: Option<i64>,
    /// Runs that started before this.
    pub to_ms: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<i64>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// A run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Run {
    /// Its id.
    pub id: Uuid,
    /// The client's idempotency key.
    pub idempotency_key: String,
    /// The agent.
    pub agent: String,
    /// The agent's team when it was ingested.
    pub team_id: Option<Uuid>,
    /// The key that ingested it.
    pub key_id: String,
    /// Its status.
    pub status: String,
    /// When it started (ms since the epoch).
    pub started_at_ms: i64,
    /// When it ended.
    pub ended_at_ms: Option<i64>,
    /// How many events it has.
    pub events: i32,
    /// Currency.
    pub currency: String,
    /// Its cost, the sum of its events'.
    pub cost_micros: i64,
}

/// One page of runs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct RunPage {
    /// The runs, newest first.
    pub runs: Vec<Run>,
    /// Pass it as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// An event.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Event {
    /// Its run.
    pub run_id: Uuid,
    /// Its place in the run, from 0.
    pub seq: i32,
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// What.
    pub kind: String,
    /// The model.
    pub model: Option<String>,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Completion tokens.
    pub output_tokens: i64,
    /// Currency.
    pub currency: String,
    /// Its cost.
    pub cost_micros: i64,
    /// `provider` (reported), `price_table` (priced by the gateway) or `unpriced`.
    pub cost_source: String,
    /// The price version used, for `price_table`.
    pub price_id: Option<i64>,
}

/// Filters of an event listing.
#[derive(Clone, Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Only this run's events.
    pub run_id: Option<Uuid>,
    /// Only this model's.
    pub model: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// At or after this (ms since the epoch).
    pub from_ms: Option<i64>,
    /// Before this.
    pub to_ms: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<i64>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// One page of events.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct EventPage {
    /// Newest first.
    pub events: Vec<Event>,
    /// Pass it as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

fn page_size(limit: Option<i64>) -> Result<i64, RunsError> {
    let n = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&n) {
        return Err(RunsError::Invalid(format!("limit must be 1 to {MAX_PAGE}")));
    }
    Ok(n)
}

/// The latest time any query takes: 9999-12-31.
const LATEST_MS: i64 = 253_402_300_799_000;

fn range(from: Option<i64>, to: Option<i64>) -> Result<(f64, f64), RunsError> {
    let from = from.unwrap_or(0);
    let to = to.unwrap_or(LATEST_MS).min(LATEST_MS);
    if from < 0 || to < from {
        return Err(RunsError::Invalid(
            "from_ms and to_ms must be times with from_ms <= to_ms".into(),
        ));
    }
    Ok((from as f64 / 1000.0, to as f64 / 1000.0))
}

/// A cursor: the last row's time (µs) and its tie-breakers, hex-encoded.
fn encode_cursor(parts: &[String]) -> String {
    hex::encode(parts.join("|"))
}

fn decode_cursor(cursor: &str, n: usize) -> Result<Vec<String>, RunsError> {
    let bad = || RunsError::Invalid("cursor is not one this gateway issued".into());
    let bytes = hex::decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let parts: Vec<String> = text.split('|').map(str::to_owned).collect();
    if parts.len() != n {
        return Err(bad());
    }
    Ok(parts)
}

const RUN_COLUMNS: &str = "r.id, r.idempotency_key, \
     r.agent, r.team_id, r.key_id, r.status, \
     (extract(epoch from r.started_at) * 1000)::bigint AS started_at_ms, \
     (extract(epoch from r.ended_at) * 1000)::bigint AS ended_at_ms, \
     r.events, r.currency, r.cost_micros, \
     (extract(epoch from r.started_at) * 1000000)::bigint AS cursor_us";

#[derive(sqlx::FromRow)]
struct RunRow {
    #[sqlx(flatten)]
    run: Run,
    cursor_us: i64,
}

/// A page of the organisation's runs.
pub async fn list(gw: &Gateway, actor: &Principal, q: &RunQuery) -> Result<RunPage, RunsError> {
    let limit = page_size(q.limit)?;
    let (from, to) = range(q.from_ms, q.to_ms)?;
    let (after_us, after_id) = match &q.cursor {
        Some(c) => {
            let p = decode_cursor(c, 2)?;
            let bad = || RunsError::Invalid("cursor is not one this gateway issued".into());
            (
                Some(p[0].parse::<i64>().map_err(|_| bad())?),
                Some(p[1].parse::<Uuid>().map_err(|_| bad())?),
            )
        }
        None => (None, None),
    };
    let rows: Vec<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM runs r
          WHERE r.org_id = $1 AND r.started_at >= to_timestamp($2) AND r.started_at < to_timestamp($3)
            AND ($4::text IS NULL OR r.agent = $4)
            AND ($5::uuid IS NULL OR r.team_id = $5)
            AND ($6::text IS NULL OR r.status = $6)
            AND ($7::bigint IS NULL OR (r.started_at, r.id) < (to_timestamp($7::float8 / 1000000), $8))
          ORDER BY r.started_at DESC, r.id DESC LIMIT $9"
    )))
    .bind(actor.org_id)
    .bind(from)
    .bind(to)
    .bind(&q.agent)
    .bind(q.team_id)
    .bind(&q.status)
    .bind(after_us)
    .bind(after_id)
    .bind(limit + 1)
    .fetch_all(gw.db().pool())
    .await?;
    let more = rows.len() as i64 > limit;
    let rows: Vec<RunRow> = rows.into_iter().take(limit as usize).collect();
    let next_cursor = if more {
        rows.last()
            .map(|r| encode_cursor(&[r.cursor_us.to_string(), r.run.id.to_string()]))
    } else {
        None
    };
    Ok(RunPage {
        runs: rows.into_iter().map(|r| r.run).collect(),
        next_cursor,
    })
}

/// One run with its events.
pub async fn get(
    gw: &Gateway,
    actor: &Principal,
    id: Uuid,
) -> Result<(Run, Vec<Event>), RunsError> {
    let row: Option<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM runs r WHERE r.org_id = $1 AND r.id = $2 LIMIT 1"
    )))
    .bind(actor.org_id)
    .bind(id)
    .fetch_optional(gw.db().pool())
    .await?;
    let run = row.ok_or(RunsError::NotFound)?.run;
    let events: Vec<Event> = sqlx::query_as(
        "SELECT run_id, seq, (extract(epoch from at) * 1000)::bigint AS at_ms, kind, model,
                input_tokens, output_tokens, currency, cost_micros, cost_source, price_id
           FROM events WHERE org_id = $1 AND run_id = $2 ORDER BY seq LIMIT 10000",
    )
    .bind(actor.org_id)
    .bind(id)
    .fetch_all(gw.db().pool())
    .await?;
    Ok((run, events))
}

#[derive(sqlx::FromRow)]
struct EventRow {
    #[sqlx(flatten)]
    event: Event,
    cursor_us: i64,
}

/// A page of the organisation's events.
pub async fn events(
    gw: &Gateway,
    actor: &Principal,
    q: &EventQuery,
) -> Result<EventPage, RunsError> {
    let limit = page_size(q.limit)?;
    let (from, to) = range(q.from_ms, q.to_ms)?;
    let (after_us, after_run, after_seq) = match &q.cursor {
        Some(c) => {
            let p = decode_cursor(c, 3)?;
            let bad = || RunsError::Invalid("cursor is not one this gateway issued".into());
            (
                Some(p[0].parse::<i64>().map_err(|_| bad())?),
                Some(p[1].parse::<Uuid>().map_err(|_| bad())?),
                Some(p[2].parse::<i32>().map_err(|_| bad())?),
            )
        }
        None => (None, None, None),
    };
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT run_id, seq, (extract(epoch from at) * 1000)::bigint AS at_ms, kind, model,
                input_tokens, output_tokens, currency, cost_micros, cost_source, price_id,
                (extract(epoch from at) * 1000000)::bigint AS cursor_us
           FROM events
          WHERE org_id = $1 AND at >= to_timestamp($2) AND at < to_timestamp($3)
            AND ($4::uuid IS NULL OR run_id = $4)
            AND ($5::text IS NULL OR model = $5)
            AND ($6::text IS NULL OR kind = $6)
            AND ($7::bigint IS NULL OR (at, run_id, seq) < (to_timestamp($7::float8 / 1000000), $8, $9))
          ORDER BY at DESC, run_id DESC, seq DESC LIMIT $10",
    )
    .bind(actor.org_id)
    .bind(from)
    .bind(to)
    .bind(q.run_id)
    .bind(&q.model)
    .bind(&q.kind)
    .bind(after_us)
    .bind(after_run)
    .bind(after_seq)
    .bind(limit + 1)
    .fetch_all(gw.db().pool())
    .await?;
    let more = rows.len() as i64 > limit;
    let rows: Vec<EventRow> = rows.into_iter().take(limit as usize).collect();
    let next_cursor = if more {
        rows.last().map(|r| {
            encode_cursor(&[
                r.cursor_us.to_string(),
                r.event.run_id.to_string(),
                r.event.seq.to_string(),
            ])
        })
    } else {
        None
    };
    Ok(EventPage {
        events: rows.into_iter().map(|r| r.event).collect(),
        next_cursor,
    })
}

/// How to group a cost summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// Per agent.
    Agent,
    /// Per team (runs of agents without a team under `null`).
    Team,
    /// The whole organisation.
    Org,
}

/// Parameters of a cost summary.
#[derive(Clone, Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CostQuery {
    /// `agent`, `team` or `org`.
    pub group_by: GroupBy,
    /// Runs that started at or after this (ms since the epoch).
    pub from_ms: Option<i64>,
    /// Runs that started before this.
    pub to_ms: Option<i64>,
}

/// One line of a cost summary.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct CostLine {
    /// The agent's DID, the team's id or the org's id; `null` for runs without a team.
    pub key: Option<String>,
    /// Currency.
    pub currency: String,
    /// Runs.
    pub runs: i64,
    /// Events.
    pub events: i64,
    /// Their cost.
    pub cost_micros: i64,
}

/// Costs of the organisation's runs over a time range, grouped.
pub async fn costs(
    gw: &Gateway,
    actor: &Principal,
    q: &CostQuery,
) -> Result<Vec<CostLine>, RunsError> {
    let (from, to) = range(q.from_ms, q.to_ms)?;
    let key = match q.group_by {
        GroupBy::Agent => "agent",
        GroupBy::Team => "team_id::text",
        GroupBy::Org => "org_id::text",
    };
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {key} AS key, currency, count(*)::bigint AS runs, COALESCE(sum(events), 0)::bigint AS events,
                COALESCE(sum(cost_micros), 0)::bigint AS cost_micros
           FROM runs WHERE org_id = $1 AND started_at >= to_timestamp($2) AND started_at < to_timestamp($3)
          GROUP BY 1, 2 ORDER BY 5 DESC, 1 LIMIT 10000"
    )))
    .bind(actor.org_id)
    .bind(from)
    .bind(to)
    .fetch_all(gw.db().pool())
    .await?)
}

/// A price version to add.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPrice {
    /// The model, as events name it.
    pub model: String,
    /// Currency.
    pub currency: String,
    /// Micros per million prompt tokens.
    pub input_micros_per_mtok: i64,
    /// Micros per million completion tokens.
    pub output_micros_per_mtok: i64,
    /// From when it applies (ms since the epoch); events before it use the version before.
    pub effective_from_ms: i64,
}

/// A price version.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Price {
    /// Its id: events priced by it record it.
    pub id: i64,
    /// The model.
    pub model: String,
    /// Currency.
    pub currency: String,
    /// Micros per million prompt tokens.
    pub input_micros_per_mtok: i64,
    /// Micros per million completion tokens.
    pub output_micros_per_mtok: i64,
    /// From when it applies (ms since the epoch).
    pub effective_from_ms: i64,
}

const PRICE_COLUMNS: &str = "id, model, currency, input_micros_per_mtok, output_micros_per_mtok, \
     (extract(epoch from effective_from) * 1000)::bigint AS effective_from_ms";

/// Adds a price version. Versions are never changed, so the version an event was priced by
/// stays what it was.
pub async fn add_price(gw: &Gateway, actor: &Principal, p: &NewPrice) -> Result<Price, RunsError> {
    if p.model.is_empty() || p.model.len() > 128 {
        return Err(RunsError::Invalid("model must be 1 to 128 bytes".into()));
    }
    if p.currency.is_empty()
        || p.currency.len() > 8
        || !p.currency.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(RunsError::Invalid(
            "currency must be 1 to 8 ASCII letters or digits".into(),
        ));
    }
    for (what, v) in [
        ("input_micros_per_mtok", p.input_micros_per_mtok),
        ("output_micros_per_mtok", p.output_micros_per_mtok),
    ] {
        if !(0..=crate::ingest::MAX_COST_MICROS).contains(&v) {
            return Err(RunsError::Invalid(format!("{what} is out of range")));
        }
    }
    if !(0..=LATEST_MS).contains(&p.effective_from_ms) {
        return Err(RunsError::Invalid(
            "effective_from_ms must be a time".into(),
        ));
    }
    let mut tx = gw.db().pool().begin().await?;
    let price: Option<Price> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO model_prices (org_id, model, currency, input_micros_per_mtok, output_micros_per_mtok, effective_from)
         VALUES ($1, $2, $3, $4, $5, to_timestamp($6::float8 / 1000))
         ON CONFLICT (org_id, model, currency, effective_from) DO NOTHING
         RETURNING {PRICE_COLUMNS}"
    )))
    .bind(actor.org_id)
    .bind(&p.model)
    .bind(p.currency.to_ascii_uppercase())
    .bind(p.input_micros_per_mtok)
    .bind(p.output_micros_per_mtok)
    .bind(p.effective_from_ms as f64)
    .fetch_optional(&mut *tx)
    .await?;
    let price = price.ok_or_else(|| {
        RunsError::Invalid("a price for this model from this time exists already".into())
    })?;
    gw.audit()
        .record(
            &mut tx,
            actor,
            "price.add",
            &p.model,
            &format!(
                "id={}; {} {} in, {} out per Mtok from {}",
                price.id,
                p.currency,
                p.input_micros_per_mtok,
                p.output_micros_per_mtok,
                p.effective_from_ms
            ),
        )
        .await?;
    tx.commit().await?;
    Ok(price)
}

/// The organisation's price versions, by model and time.
pub async fn prices(gw: &Gateway, actor: &Principal) -> Result<Vec<Price>, RunsError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PRICE_COLUMNS} FROM model_prices WHERE org_id = $1 ORDER BY model, effective_from LIMIT 10000"
    )))
    .bind(actor.org_id)
    .fetch_all(gw.db().pool())
    .await?)
}
