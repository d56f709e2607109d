//! Budgets, the 80/100/120% ladder, and the reservation protocol a node uses before sending
//! an intent (`specs/gateway-api.md#budgets`, `specs/intents.md#budgets`).
//!
//! A reservation is **exact under concurrency**: each budget it touches is changed by one
//! conditional `UPDATE` that admits only while `spent + reserved + amount` stays within the
//! limit (100%, or 120% once re-authorised). Row locks, taken in budget-id order, serialise
//! concurrent reservations on one budget, so none can admit on a stale total. The ladder:
//! the first reservation or ingested cost that brings a budget to 80% records a `warn` alert
//! (and its webhook); the first that would pass 100% without re-authorisation is refused
//! (`approval_required`), records the 100% alert and opens a re-authorisation approval; the
//! first that would pass 120% is refused (`hard_stop`), records the 120% alert and, with
//! `auto_pause`, pauses the agent. A unique key makes each alert fire exactly once per budget
//! and period, however many reservations race.

use std::collections::HashMap;

use sqlx::AssertSqlSafe;
use uuid::Uuid;

use crate::db::Db;
use crate::keys::Principal;
use crate::reserver::Outcome;
use crate::{Gateway, pauses, policies};

/// What a budget covers.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The whole organisation (`scope_id` is the org's id).
    Org,
    /// A team (`scope_id` is the team's id).
    Team,
    /// One agent (`scope_id` is its DID).
    Agent,
    /// One API key (`scope_id` is the key id).
    Key,
}

/// How often it resets.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// At midnight UTC.
    Daily,
    /// On Monday, midnight UTC.
    Weekly,
    /// On the first of the month, midnight UTC.
    Monthly,
    /// Never.
    Total,
}

impl Scope {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scope::Org => "org",
            Scope::Team => "team",
            Scope::Agent => "agent",
            Scope::Key => "key",
        }
    }
}

impl Period {
    fn as_str(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Total => "total",
        }
    }
}

/// The largest limit (the protocol's largest amount).
pub const MAX_LIMIT_MICROS: i64 = 1_000_000_000_000_000;

/// A budget to create.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBudget {
    /// What it covers.
    pub scope: Scope,
    /// The org id, team id, agent DID or key id.
    pub scope_id: String,
    /// How often it resets.
    pub period: Period,
    /// Currency code, such as `USD`.
    pub currency: String,
    /// 100%, in micros.
    pub limit_micros: i64,
    /// Pause the agent when the hard stop is hit.
    #[serde(default)]
    pub auto_pause: bool,
}

/// A change to a budget.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetUpdate {
    /// A new 100%, in micros.
    #[serde(default)]
    pub limit_micros: Option<i64>,
    /// Pause the agent at the hard stop.
    #[serde(default)]
    pub auto_pause: Option<bool>,
}

/// A budget as stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Budget {
    /// Its id.
    pub id: Uuid,
    /// `org`, `team`, `agent` or `key`.
    pub scope: String,
    /// What in that scope.
    pub scope_id: String,
    /// `daily`, `weekly`, `monthly` or `total`.
    pub period: String,
    /// Currency.
    pub currency: String,
    /// 100%.
    pub limit_micros: i64,
    /// Spent this period: settled intents and ingested runs.
    pub spent_micros: i64,
    /// Held by open reservations.
    pub reserved_micros: i64,
    /// Approved to spend past 100% (up to 120%) this period.
    pub reauthorised: bool,
    /// Pause the agent at the hard stop.
    pub auto_pause: bool,
    /// When the current period began (ms since the epoch).
    pub period_start_ms: i64,
}

/// Why a budget call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// No such budget or reservation in the caller's organisation.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A budget of that scope and currency exists already.
    #[error("a budget for this scope and currency exists already")]
    Exists,
    /// The caller's team does not cover it.
    #[error("{0}")]
    Forbidden(String),
    /// Past 100% without re-authorisation.
    #[error(
        "budget {budget} is at its limit; spending more needs re-authorisation (approval {approval})"
    )]
    ApprovalRequired {
        /// Which budget.
        budget: Uuid,
        /// The approval that re-authorises it.
        approval: Uuid,
    },
    /// Past 120%.
    #[error("budget {budget} has reached its hard stop")]
    HardStop {
        /// Which budget.
        budget: Uuid,
    },
    /// A policy refuses it, or holds it for approval.
    #[error(transparent)]
    Policy(#[from] policies::PolicyRefusal),
    /// The agent is paused by the kill switch.
    #[error("agent {0} is paused")]
    Paused(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

const COLUMNS: &str = "id, scope, scope_id, period, currency, limit_micros, spent_micros, \
     reserved_micros, reauthorised, auto_pause, \
     (extract(epoch from period_start) * 1000)::bigint AS period_start_ms";

// Dynamic SQL below is only ever assembled from these constants; every value is bound.

/// [`PERIOD_START`] over the columns of a budget aliased `b`.
pub(crate) const PERIOD_START_OF_B: &str = "CASE b.period WHEN 'daily' THEN date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' \
     WHEN 'weekly' THEN date_trunc('week', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' \
     WHEN 'monthly' THEN date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' \
     ELSE b.period_start END";

/// The start of the current period, as SQL over a budget's `period` and `period_start`.
pub(crate) const PERIOD_START: &str = "CASE period WHEN 'daily' THEN date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' \
     WHEN 'weekly' THEN date_trunc('week', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' \
     WHEN 'monthly' THEN date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' \
     ELSE period_start END";

fn currency_ok(c: &str) -> Result<(), BudgetError> {
    if c.is_empty() || c.len() > 8 || !c.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(BudgetError::Invalid(
            "currency must be 1 to 8 ASCII letters or digits".into(),
        ));
    }
    Ok(())
}

fn limit_ok(limit: i64) -> Result<(), BudgetError> {
    if !(1..=MAX_LIMIT_MICROS).contains(&limit) {
        return Err(BudgetError::Invalid(format!(
            "limit_micros must be between 1 and {MAX_LIMIT_MICROS}"
        )));
    }
    Ok(())
}

/// Checks that the scope exists in the caller's organisation, and that a team lead's budget
/// is its team's or one of its team's agents'.
pub(crate) async fn scope_ok(
    conn: &mut sqlx::PgConnection,
    actor: &Principal,
    scope: &str,
    scope_id: &str,
) -> Result<(), BudgetError> {
    let team_of_scope: Option<Option<Uuid>> = match scope {
        "org" => {
            if scope_id != actor.org_id.to_string() {
                return Err(BudgetError::Invalid(
                    "an org budget's scope_id is the organisation's id".into(),
                ));
            }
            Some(None)
        }
        "team" => {
            let team: Uuid = scope_id
                .parse()
                .map_err(|_| BudgetError::Invalid("a team's scope_id is its id".into()))?;
            let found: Option<(Uuid,)> =
                sqlx::query_as("SELECT id FROM teams WHERE org_id = $1 AND id = $2")
                    .bind(actor.org_id)
                    .bind(team)
                    .fetch_optional(&mut *conn)
                    .await?;
            found.map(|(t,)| Some(t))
        }
        "agent" => {
            let found: Option<(Option<Uuid>,)> =
                sqlx::query_as("SELECT team_id FROM agents WHERE org_id = $1 AND did = $2")
                    .bind(actor.org_id)
                    .bind(scope_id)
                    .fetch_optional(&mut *conn)
                    .await?;
            found.map(|(t,)| t)
        }
        _ => {
            let found: Option<(Option<Uuid>,)> =
                sqlx::query_as("SELECT team_id FROM api_keys WHERE org_id = $1 AND key_id = $2")
                    .bind(actor.org_id)
                    .bind(scope_id)
                    .fetch_optional(&mut *conn)
                    .await?;
            found.map(|(t,)| t)
        }
    };
    let Some(team) = team_of_scope else {
        return Err(BudgetError::Invalid(format!(
            "no {scope} `{scope_id}` in this organisation"
        )));
    };
    if actor.role == crate::Role::TeamLead && (team.is_none() || team != actor.team_id) {
        return Err(BudgetError::Forbidden(
            "a team lead manages only its own team's budgets".into(),
        ));
    }
    Ok(())
}

/// Creates a budget in the caller's organisation.
pub async fn create(
    gw: &Gateway,
    actor: &Principal,
    new: &NewBudget,
) -> Result<Budget, BudgetError> {
    limit_ok(new.limit_micros)?;
    currency_ok(&new.currency)?;
    if new.scope_id.is_empty() || new.scope_id.len() > 256 {
        return Err(BudgetError::Invalid(
            "scope_id must be 1 to 256 bytes".into(),
        ));
    }
    let id = Uuid::new_v4();
    let currency = new.currency.to_ascii_uppercase();
    let mut tx = gw.db().pool().begin().await?;
    scope_ok(&mut tx, actor, new.scope.as_str(), &new.scope_id).await?;
    let created: Option<(Uuid,)> = sqlx::query_as(
        "INSERT INTO budgets (id, org_id, scope, scope_id, period, currency, limit_micros, auto_pause, period_start)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
         ON CONFLICT (org_id, scope, scope_id, currency) DO NOTHING
         RETURNING id",
    )
        .bind(id)
        .bind(actor.org_id)
        .bind(new.scope.as_str())
        .bind(&new.scope_id)
        .bind(new.period.as_str())
        .bind(&currency)
        .bind(new.limit_micros)
        .bind(new.auto_pause)
        .fetch_optional(&mut *tx)
        .await?;
    if created.is_none() {
        return Err(BudgetError::Exists);
    }
    // Periods start on their calendar boundary.
    let budget: Budget = sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE budgets SET period_start = {PERIOD_START} WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    gw.audit()
        .record(
            &mut tx,
            actor,
            "budget.create",
            &id.to_string(),
            &format!(
                "scope={} {}; period={}; limit={} {}; auto_pause={}",
                new.scope.as_str(),
                new.scope_id,
                new.period.as_str(),
                new.limit_micros,
                new.currency,
                new.auto_pause
            ),
        )
        .await?;
    tx.commit().await?;
    Ok(budget)
}

/// A budget of the caller's organisation.
pub async fn get(db: &Db, actor: &Principal, id: Uuid) -> Result<Option<Budget>, BudgetError> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM budgets WHERE id = $1 AND org_id = $2"
    )))
    .bind(id)
    .bind(actor.org_id)
    .fetch_optional(db.pool())
    .await?)
}

/// The organisation's budgets.
pub async fn list(db: &Db, actor: &Principal) -> Result<Vec<Budget>, BudgetError> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM budgets WHERE org_id = $1 ORDER BY scope, scope_id, currency LIMIT 10000"
    )))
    .bind(actor.org_id)
    .fetch_all(db.pool())
    .await?)
}

/// Changes a budget's limit or auto-pause. Lowering the limit below what is spent and held
/// refuses new reservations; it does not undo the ones held.
pub async fn update(
    gw: &Gateway,
    actor: &Principal,
    id: Uuid,
    change: &BudgetUpdate,
) -> Result<Budget, BudgetError> {
    if let Some(limit) = change.limit_micros {
        limit_ok(limit)?;
    }
    let mut tx = gw.db().pool().begin().await?;
    let before = lock(&mut tx, actor, id).await?;
    scope_ok(&mut tx, actor, &before.scope, &before.scope_id).await?;
    let budget: Budget = sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE budgets SET limit_micros = COALESCE($2, limit_micros), auto_pause = COALESCE($3, auto_pause)
          WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(change.limit_micros)
    .bind(change.auto_pause)
    .fetch_one(&mut *tx)
    .await?;
    gw.audit()
        .record(
            &mut tx,
            actor,
            "budget.update",
            &id.to_string(),
            &format!(
                "limit_micros={:?}; auto_pause={:?}",
                change.limit_micros, change.auto_pause
            ),
        )
        .await?;
    tx.commit().await?;
    Ok(budget)
}

async fn lock(
    tx: &mut sqlx::PgConnection,
    actor: &Principal,
    id: Uuid,
) -> Result<Budget, BudgetError> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM budgets WHERE id = $1 AND org_id = $2 FOR UPDATE"
    )))
    .bind(id)
    .bind(actor.org_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(BudgetError::NotFound("budget"))
}

/// Deletes a budget. Reservations it holds stay on the other budgets they hold.
pub async fn delete(gw: &Gateway, actor: &Principal, id: Uuid) -> Result<(), BudgetError> {
    let mut tx = gw.db().pool().begin().await?;
    let before = lock(&mut tx, actor, id).await?;
    scope_ok(&mut tx, actor, &before.scope, &before.scope_id).await?;
    sqlx::query("DELETE FROM budgets WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    gw.audit()
        .record(&mut tx, actor, "budget.delete", &id.to_string(), "")
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Approves spending past 100% (up to the 120% hard stop) for the rest of the period. The
/// approvals API calls this when a budget approval is approved.
pub(crate) async fn reauthorise_in(
    tx: &mut sqlx::PgConnection,
    actor: &Principal,
    id: Uuid,
) -> Result<(), BudgetError> {
    let before = lock(tx, actor, id).await?;
    scope_ok(tx, actor, &before.scope, &before.scope_id).await?;
    // A period that has ended starts over first, or the next reservation would take the
    // approval for a stale period and clear it.
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE budgets SET spent_micros = 0, period_start = {PERIOD_START}
          WHERE id = $1 AND period <> 'total' AND period_start < {PERIOD_START}"
    )))
    .bind(id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE budgets SET reauthorised = true WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Re-authorises a budget directly (the same as approving its pending budget approval).
pub async fn reauthorise(gw: &Gateway, actor: &Principal, id: Uuid) -> Result<(), BudgetError> {
    let mut tx = gw.db().pool().begin().await?;
    reauthorise_in(&mut tx, actor, id).await?;
    sqlx::query(
        "UPDATE approvals SET status = 'approved', decided_by = $3, decided_at = now()
          WHERE org_id = $1 AND budget_id = $2 AND kind = 'budget' AND status = 'pending'",
    )
    .bind(actor.org_id)
    .bind(id)
    .bind(&actor.key_id)
    .execute(&mut *tx)
    .await?;
    gw.audit()
        .record(&mut tx, actor, "budget.reauthorise", &id.to_string(), "")
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A reservation request, as the node sends it (`specs/intents.md#budgets`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
pub struct ReserveRequest {
    /// The intent (hex id).
    pub intent_id: String,
    /// The spending agent's DID.
    pub agent: String,
    /// The agent asked.
    pub callee: String,
    /// The capability.
    pub capability: String,
    /// The most the intent may cost.
    pub amount_micros: i64,
    /// Its currency; empty when the intent names no maximum.
    pub currency: String,
    /// When an unsettled reservation lapses (ms since the epoch).
    pub expires_at_ms: i64,
}

/// A granted reservation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Reservation {
    /// Quote it when settling.
    pub reservation_id: Uuid,
    /// The budgets it holds.
    pub budgets: Vec<Uuid>,
    /// Ladder alerts this reservation fired (`warn`).
    pub alerts: Vec<Alert>,
}

/// A ladder alert.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Alert {
    /// The budget.
    pub budget: Uuid,
    /// 80, 100 or 120.
    pub threshold: i32,
}

/// The longest a reservation may be held.
pub const MAX_HOLD_MS: i64 = 2 * 60 * 60 * 1000;

/// Records a ladder alert once per budget and period; returns whether this call fired it.
async fn alert(
    conn: &mut sqlx::PgConnection,
    budget: Uuid,
    threshold: i32,
) -> Result<bool, sqlx::Error> {
    let fired: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO budget_alerts (org_id, budget_id, threshold, period_start)
         SELECT org_id, id, $2, period_start FROM budgets WHERE id = $1
         ON CONFLICT (budget_id, threshold, period_start) DO NOTHING
         RETURNING id",
    )
    .bind(budget)
    .bind(threshold)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(fired.is_some())
}

/// Opens (once per period) the approval that re-authorises `budget`; returns its id. The
/// opening is appended to the audit chain (`approval.open`, by `requested_by`) in the same
/// transaction, which `conn` must be.
async fn open_budget_approval(
    conn: &mut sqlx::PgConnection,
    audit: &crate::audit::Auditor,
    org: Uuid,
    budget: Uuid,
    requested_by: &str,
) -> Result<Uuid, sqlx::Error> {
    let opened = sqlx::query(
        "INSERT INTO approvals (id, org_id, kind, budget_id, period_start, status, requested_by)
         SELECT $1, org_id, 'budget', id, period_start, 'pending', $3 FROM budgets WHERE id = $2 AND org_id = $4
         ON CONFLICT (budget_id, period_start) WHERE kind = 'budget' DO NOTHING",
    )
    .bind(Uuid::new_v4())
    .bind(budget)
    .bind(requested_by)
    .bind(org)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        > 0;
    let (id,): (Uuid,) = sqlx::query_as(
        "SELECT a.id FROM approvals a JOIN budgets b ON b.id = a.budget_id AND b.period_start = a.period_start
          WHERE a.budget_id = $1 AND a.kind = 'budget'",
    )
    .bind(budget)
    .fetch_one(&mut *conn)
    .await?;
    if opened {
        let subject = id.to_string();
        let detail = format!("kind=budget; budget={budget}; reached 100%");
        let entry = crate::audit::Entry {
            actor: requested_by,
            action: "approval.open",
            subject: &subject,
            detail: &detail,
        };
        audit.append(conn, org, entry).await?;
    }
    Ok(id)
}

/// Starts new periods: spend and re-authorisation reset on the calendar boundary.
async fn roll_periods(conn: &mut sqlx::PgConnection, org: Uuid) -> Result<(), sqlx::Error> {
    // Locks first, in id order, as every writer of budget rows takes them.
    sqlx::query(AssertSqlSafe(format!(
        "SELECT id FROM budgets WHERE org_id = $1 AND period <> 'total' AND period_start < {PERIOD_START}
          ORDER BY id FOR UPDATE"
    )))
    .bind(org)
    .execute(&mut *conn)
    .await?;
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE budgets SET spent_micros = 0, reauthorised = false, period_start = {PERIOD_START}
          WHERE org_id = $1 AND period <> 'total' AND period_start < {PERIOD_START}"
    )))
    .bind(org)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Reserves `amount` against every budget that applies to the request (the org's, the
/// agent's team's, the agent's and the calling key's, in its currency), all or none, after
/// the pause list and the policies. The hold itself is decided by the batcher
/// (`gateway/src/reserver.rs`) under the budgets' row locks.
pub async fn reserve(
    gw: &Gateway,
    caller: &Principal,
    request: &ReserveRequest,
) -> Result<Reservation, BudgetError> {
    if !(0..=MAX_LIMIT_MICROS).contains(&request.amount_micros) {
        return Err(BudgetError::Invalid("amount_micros is out of range".into()));
    }
    if request.intent_id.is_empty()
        || request.intent_id.len() > 64
        || !request.intent_id.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(BudgetError::Invalid(
            "intent_id must be 1 to 64 hex digits".into(),
        ));
    }
    if request.agent.parse::<agentnet_protocol::Did>().is_err() {
        return Err(BudgetError::Invalid("agent must be a did:key".into()));
    }
    if request.capability.is_empty()
        || request.capability.len() > 128
        || request.capability.chars().any(char::is_control)
    {
        return Err(BudgetError::Invalid(
            "capability must be 1 to 128 bytes".into(),
        ));
    }
    if request.callee.len() > 256 {
        return Err(BudgetError::Invalid("callee is too long".into()));
    }
    if request.currency.is_empty() {
        if request.amount_micros != 0 {
            return Err(BudgetError::Invalid(
                "an amount needs a currency (an intent without max_cost reserves 0 and no currency)"
                    .into(),
            ));
        }
    } else {
        currency_ok(&request.currency)?;
    }
    // Currency codes compare without case: `usd` is spent against a `USD` budget.
    let mut held = request.clone();
    held.currency = held.currency.to_ascii_uppercase();
    let outcome = gw
        .reserver()
        .hold(caller.org_id, &caller.key_id, held)
        .await?;
    match outcome {
        Outcome::Held(reservation) => Ok(reservation),
        Outcome::Refused { budget, hard } => Err(refuse(gw, caller, request, budget, hard).await?),
        Outcome::NeedsApproval { policy } => {
            let approval = policies::open_intent_approval(gw, caller, policy, request).await?;
            Err(policies::PolicyRefusal::NeedsApproval { policy, approval }.into())
        }
        Outcome::Denied { policy, why } => {
            Err(policies::PolicyRefusal::Denied { policy, why }.into())
        }
        Outcome::Paused => Err(BudgetError::Paused(request.agent.clone())),
    }
}

/// Records the ladder's alert for a refused reservation, opens re-authorisation at 100%,
/// and pauses the agent at the hard stop if the budget says so.
async fn refuse(
    gw: &Gateway,
    caller: &Principal,
    request: &ReserveRequest,
    budget: Uuid,
    hard: bool,
) -> Result<BudgetError, BudgetError> {
    let mut conn = gw.db().pool().acquire().await?;
    if hard {
        let fired = alert(&mut conn, budget, 120).await?;
        let (auto_pause,): (bool,) = sqlx::query_as("SELECT auto_pause FROM budgets WHERE id = $1")
            .bind(budget)
            .fetch_one(&mut *conn)
            .await?;
        drop(conn);
        if fired && auto_pause {
            auto_pause_agent(gw, caller.org_id, &request.agent, budget).await;
        }
        return Ok(BudgetError::HardStop { budget });
    }
    drop(conn);
    let mut tx = gw.db().pool().begin().await?;
    alert(&mut tx, budget, 100).await?;
    let approval =
        open_budget_approval(&mut tx, gw.audit(), caller.org_id, budget, &caller.key_id).await?;
    tx.commit().await?;
    Ok(BudgetError::ApprovalRequired { budget, approval })
}

async fn auto_pause_agent(gw: &Gateway, org: Uuid, agent: &str, budget: Uuid) {
    let reason = format!("budget {budget} reached its hard stop");
    if let Err(e) = pauses::pause_by_gateway(gw, org, agent, &reason).await {
        tracing::error!(error = %e, %agent, %budget, "cannot auto-pause an agent at its hard stop");
    }
}

/// How a settlement went.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Settlement {
    /// The reservation.
    pub reservation_id: Uuid,
    /// What was charged (at most what was reserved).
    pub settled_micros: i64,
    /// False when this reservation had been settled before (settling is idempotent).
    pub first: bool,
}

/// Settles a reservation: the budgets it held are charged `amount` (at most what was
/// reserved) and released. Settling again returns the first settlement; settling a
/// reservation that lapsed charges nothing.
pub async fn settle(
    db: &Db,
    caller: &Principal,
    reservation: Uuid,
    amount: i64,
) -> Result<Settlement, BudgetError> {
    if !(0..=MAX_LIMIT_MICROS).contains(&amount) {
        return Err(BudgetError::Invalid(
            "amount_micros must be between 0 and the largest amount".into(),
        ));
    }
    let mut tx = db.pool().begin().await?;
    let settled: Option<(i64,)> = sqlx::query_as(
        "UPDATE budget_reservations
            SET status = 'settled', settled_micros = LEAST($3, amount_micros), ended_at = now()
          WHERE id = $1 AND org_id = $2 AND status = 'held' AND expires_at >= now()
          RETURNING settled_micros",
    )
    .bind(reservation)
    .bind(caller.org_id)
    .bind(amount)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((charged,)) = settled else {
        tx.rollback().await?;
        let before: Option<(String, Option<i64>)> = sqlx::query_as(
            "SELECT status, settled_micros FROM budget_reservations WHERE id = $1 AND org_id = $2",
        )
        .bind(reservation)
        .bind(caller.org_id)
        .fetch_optional(db.pool())
        .await?;
        return match before {
            Some((_, settled)) => Ok(Settlement {
                reservation_id: reservation,
                settled_micros: settled.unwrap_or(0),
                first: false,
            }),
            None => Err(BudgetError::NotFound("reservation")),
        };
    };
    // Budget rows are locked in id order, as the reservation batcher locks them, so the two
    // never wait on each other in a cycle.
    sqlx::query(
        "SELECT b.id FROM budgets b JOIN budget_holds h ON h.budget_id = b.id
          WHERE h.reservation_id = $1 ORDER BY b.id FOR UPDATE OF b",
    )
    .bind(reservation)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE budgets b
            SET reserved_micros = b.reserved_micros - h.amount_micros,
                spent_micros = b.spent_micros + $2
           FROM (SELECT budget_id, amount_micros FROM budget_holds WHERE reservation_id = $1
                  ORDER BY budget_id) h
          WHERE b.id = h.budget_id",
    )
    .bind(reservation)
    .bind(charged)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Settlement {
        reservation_id: reservation,
        settled_micros: charged,
        first: true,
    })
}

/// Releases every held reservation past its expiry; returns how many.
pub async fn release_expired(db: &Db) -> Result<u64, BudgetError> {
    let mut tx = db.pool().begin().await?;
    let released: Vec<(Uuid,)> = sqlx::query_as(
        "UPDATE budget_reservations SET status = 'released', ended_at = now()
          WHERE id IN (SELECT id FROM budget_reservations
                        WHERE status = 'held' AND expires_at < now()
                        ORDER BY expires_at LIMIT 1000 FOR UPDATE SKIP LOCKED)
          RETURNING id",
    )
    .fetch_all(&mut *tx)
    .await?;
    if !released.is_empty() {
        let ids: Vec<Uuid> = released.iter().map(|(id,)| *id).collect();
        sqlx::query(
            "SELECT id FROM budgets WHERE id IN
                    (SELECT budget_id FROM budget_holds WHERE reservation_id = ANY($1))
              ORDER BY id FOR UPDATE",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE budgets b SET reserved_micros = b.reserved_micros - h.total
               FROM (SELECT budget_id, sum(amount_micros)::bigint AS total FROM budget_holds
                      WHERE reservation_id = ANY($1) GROUP BY budget_id ORDER BY budget_id) h
              WHERE b.id = h.budget_id",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(released.len() as u64)
}

/// One alert of a budget's ladder.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AlertRow {
    /// 80, 100 or 120.
    pub threshold: i32,
    /// When it fired (ms since the epoch).
    pub at_ms: i64,
    /// The period it belongs to.
    pub period_start_ms: i64,
    /// When its webhook was delivered.
    pub delivered_at_ms: Option<i64>,
}

/// Ladder alerts of a budget, in order.
pub async fn alerts(
    db: &Db,
    caller: &Principal,
    budget: Uuid,
) -> Result<Vec<AlertRow>, BudgetError> {
    Ok(sqlx::query_as(
        "SELECT threshold, (extract(epoch from at) * 1000)::bigint AS at_ms,
                (extract(epoch from period_start) * 1000)::bigint AS period_start_ms,
                (extract(epoch from delivered_at) * 1000)::bigint AS delivered_at_ms
           FROM budget_alerts WHERE budget_id = $1 AND org_id = $2 ORDER BY id LIMIT 1000",
    )
    .bind(budget)
    .bind(caller.org_id)
    .fetch_all(db.pool())
    .await?)
}

/// Whose spend an ingested run is: the budgets it counts against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SpendKey {
    pub(crate) org: Uuid,
    pub(crate) agent: String,
    pub(crate) team: Option<Uuid>,
    pub(crate) key_id: String,
    pub(crate) currency: String,
}

/// A budget with `auto_pause` that an ingested cost pushed to its hard stop, and the agents
/// whose spend in that ingestion counted against it.
#[derive(Clone, Debug)]
pub(crate) struct Crossed {
    org: Uuid,
    budget: Uuid,
    agents: Vec<String>,
}

/// Adds ingested spend to every budget it counts against, and records the ladder's alerts it
/// crossed, all inside the ingestion's transaction; returns the `auto_pause` budgets it
/// brought to the hard stop. Ingested spend has already happened, so it is added even past
/// the hard stop; the ladder then refuses further reservations.
pub(crate) async fn charge(
    tx: &mut sqlx::PgConnection,
    audit: &crate::audit::Auditor,
    spend: &HashMap<SpendKey, i64>,
) -> Result<Vec<Crossed>, sqlx::Error> {
    if spend.is_empty() {
        return Ok(Vec::new());
    }
    let mut orgs = std::collections::BTreeSet::new();
    for org in spend.keys().map(|k| k.org) {
        orgs.insert(org);
    }
    for org in orgs {
        roll_periods(tx, org).await?;
    }
    let (mut o, mut a, mut t, mut k, mut c, mut m) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for (key, micros) in spend {
        o.push(key.org);
        a.push(key.agent.as_str());
        t.push(key.team);
        k.push(key.key_id.as_str());
        c.push(key.currency.as_str());
        m.push(*micros);
    }
    // Which budgets each spend counts against, summed per budget, in id order.
    let rows: Vec<(Uuid, i64, Vec<String>)> = sqlx::query_as(
        "SELECT b.id, sum(u.m)::bigint, array_agg(DISTINCT u.a ORDER BY u.a) FROM budgets b
           JOIN UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::int8[])
                AS u(o, a, t, k, c, m)
             ON b.org_id = u.o AND b.currency = u.c
            AND ((b.scope = 'org' AND b.scope_id = u.o::text)
              OR (b.scope = 'agent' AND b.scope_id = u.a)
              OR (b.scope = 'team' AND b.scope_id = u.t::text)
              OR (b.scope = 'key' AND b.scope_id = u.k))
          GROUP BY b.id ORDER BY b.id",
    )
    .bind(&o)
    .bind(&a)
    .bind(&t)
    .bind(&k)
    .bind(&c)
    .bind(&m)
    .fetch_all(&mut *tx)
    .await?;
    let mut crossed = Vec::new();
    for (budget, micros, agents) in rows {
        let (org, before, after, limit, auto_pause): (Uuid, i64, i64, i64, bool) = sqlx::query_as(
            "UPDATE budgets SET spent_micros = LEAST(spent_micros + $2, $3)
              WHERE id = $1
              RETURNING org_id, spent_micros - $2 + reserved_micros, spent_micros + reserved_micros,
                        limit_micros, auto_pause",
        )
        .bind(budget)
        .bind(micros)
        .bind(i64::MAX / 2)
        .fetch_one(&mut *tx)
        .await?;
        // The ladder's alerts are recorded in the ingestion's transaction, so they commit
        // with the spend that crossed them; only the pause waits for the commit.
        let mut stopped = false;
        for (pct, line) in [(80, limit * 4 / 5), (100, limit), (120, limit + limit / 5)] {
            if before < line && after >= line {
                let fired = alert(&mut *tx, budget, pct).await?;
                if pct == 100 {
                    open_budget_approval(&mut *tx, audit, org, budget, "gateway").await?;
                }
                stopped |= pct == 120 && fired;
            }
        }
        if stopped && auto_pause {
            crossed.push(Crossed {
                org,
                budget,
                agents,
            });
        }
    }
    Ok(crossed)
}

/// Pauses every agent whose ingested spend counted against an `auto_pause` budget that the
/// ingestion brought to its hard stop (for a team, key or org budget, every such agent of
/// the batch, not one picked among them), after the ingestion's commit.
pub(crate) async fn after_charge(gw: &Gateway, crossed: Vec<Crossed>) {
    for c in crossed {
        for agent in &c.agents {
            auto_pause_agent(gw, c.org, agent, c.budget).await;
        }
    }
}

/// Where an organisation's alerts go.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://` or `https://`, at most 2048 bytes. Each alert is POSTed as JSON.
    pub url: String,
}

/// Sets the organisation's alert webhook.
pub async fn set_webhook(
    gw: &Gateway,
    actor: &Principal,
    hook: &Webhook,
) -> Result<(), BudgetError> {
    if !(hook.url.starts_with("http://") || hook.url.starts_with("https://"))
        || hook.url.len() > 2048
        || hook.url.parse::<reqwest::Url>().is_err()
    {
        return Err(BudgetError::Invalid(
            "url must be an http:// or https:// URL of at most 2048 bytes".into(),
        ));
    }
    crate::webhooks::check_url(&hook.url, gw.delivery().private)
        .map_err(|e| BudgetError::Invalid(e.to_string()))?;
    let mut tx = gw.db().pool().begin().await?;
    sqlx::query(
        "INSERT INTO webhooks (org_id, url) VALUES ($1, $2)
         ON CONFLICT (org_id) DO UPDATE SET url = EXCLUDED.url",
    )
    .bind(actor.org_id)
    .bind(&hook.url)
    .execute(&mut *tx)
    .await?;
    gw.audit()
        .record(
            &mut tx,
            actor,
            "webhook.set",
            &actor.org_id.to_string(),
            &format!("url={}", hook.url),
        )
        .await?;
    tx.commit().await?;
    Ok(())
}

/// How alert webhooks are delivered.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// How long one delivery may take (resolving the name included).
    pub timeout: std::time::Duration,
    /// Whether a webhook may reach a loopback, private or link-local address
    /// ([`crate::webhooks`]).
    pub private: bool,
}

/// Delivers undelivered alerts to their organisations' webhooks, at least once each (a
/// receiver deduplicates by `alert_id`). An alert is tried up to 10 times, one try per
/// maintenance round. Each delivery resolves the webhook's host and, unless `private`
/// webhooks are allowed, refuses (as a failed try) one that reaches inside the gateway's
/// network; it connects to the address it checked and follows no redirect.
pub async fn deliver_webhooks(db: &Db, delivery: &Delivery) -> Result<usize, BudgetError> {
    let due: Vec<(i64, Uuid, Uuid, i32, i64, String)> = sqlx::query_as(
        "SELECT a.id, a.org_id, a.budget_id, a.threshold,
                (extract(epoch from a.at) * 1000)::bigint, w.url
           FROM budget_alerts a JOIN webhooks w ON w.org_id = a.org_id
          WHERE a.delivered_at IS NULL AND a.attempts < 10
          ORDER BY a.id LIMIT 100",
    )
    .fetch_all(db.pool())
    .await?;
    let mut delivered = 0;
    for (id, org, budget, threshold, at_ms, url) in due {
        let body = serde_json::json!({
            "alert_id": id, "org_id": org, "budget_id": budget, "threshold": threshold,
            "at_ms": at_ms,
            "event": match threshold { 80 => "budget.warning", 100 => "budget.reauthorisation_required", _ => "budget.hard_stop" },
        });
        let ok = match crate::webhooks::client_for(&url, delivery.timeout, delivery.private).await {
            Ok(http) => http
                .post(&url)
                .json(&body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success()),
            Err(e) => {
                tracing::warn!(%org, error = %e, "alert webhook refused");
                false
            }
        };
        sqlx::query(
            "UPDATE budget_alerts SET attempts = attempts + 1,
                    delivered_at = CASE WHEN $2 THEN now() ELSE NULL END WHERE id = $1",
        )
        .bind(id)
        .bind(ok)
        .execute(db.pool())
        .await?;
        delivered += usize::from(ok);
    }
    Ok(delivered)
}
