//! Policies and approvals (`specs/gateway-api.md#policies-and-approvals`).
//!
//! A policy applies to an agent, a team's agents or the whole organisation:
//! - `deny`: intents to `capability` (or to any, without one) are refused;
//! - `max_cost`: no intent may reserve more than `max_cost_micros`;
//! - `approval`: intents to `capability` (or any) wait for a person. The first reservation
//!   opens a pending approval and is refused with its id; once approved, the approval admits
//!   one reservation of at most the amount it was opened for.
//!
//! Budget approvals are opened by the ladder at 100%; approving one re-authorises the budget
//! up to its 120% hard stop for the rest of the period.

use uuid::Uuid;

use crate::audit::Entry;
use crate::budgets::{self, ReserveRequest};
use crate::keys::Principal;
use crate::{Gateway, Role};

/// What a policy does.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// Intents to the capability need an approval each.
    Approval,
    /// No intent may reserve more than `max_cost_micros`.
    MaxCost,
    /// Intents to the capability are refused.
    Deny,
}

impl PolicyKind {
    fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Approval => "approval",
            PolicyKind::MaxCost => "max_cost",
            PolicyKind::Deny => "deny",
        }
    }
}

/// Whom a policy covers.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PolicyScope {
    /// Every agent of the organisation (`scope_id` is the org's id).
    Org,
    /// A team's agents (`scope_id` is the team's id).
    Team,
    /// One agent (`scope_id` is its DID).
    Agent,
}

impl PolicyScope {
    fn as_str(self) -> &'static str {
        match self {
            PolicyScope::Org => "org",
            PolicyScope::Team => "team",
            PolicyScope::Agent => "agent",
        }
    }
}

/// A policy to create.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPolicy {
    /// Whom it covers.
    pub scope: PolicyScope,
    /// The org id, team id or agent DID.
    pub scope_id: String,
    /// What it does.
    pub kind: PolicyKind,
    /// The capability it is about; none for every capability.
    #[serde(default)]
    pub capability: Option<String>,
    /// For `max_cost`.
    #[serde(default)]
    pub max_cost_micros: Option<i64>,
}

/// A policy as stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Policy {
    /// Its id.
    pub id: Uuid,
    /// `org`, `team` or `agent`.
    pub scope: String,
    /// Which.
    pub scope_id: String,
    /// `approval`, `max_cost` or `deny`.
    pub kind: String,
    /// The capability; none for all.
    pub capability: Option<String>,
    /// For `max_cost`.
    pub max_cost_micros: Option<i64>,
    /// When it was made (ms since the epoch).
    pub created_at_ms: i64,
}

/// An approval.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Approval {
    /// Its id.
    pub id: Uuid,
    /// `budget` (re-authorise past 100%) or `intent` (a policy holds it).
    pub kind: String,
    /// `pending`, `approved` or `denied`.
    pub status: String,
    /// The budget, for `budget`.
    pub budget_id: Option<Uuid>,
    /// The policy, for `intent`.
    pub policy_id: Option<Uuid>,
    /// The agent, for `intent`.
    pub agent: Option<String>,
    /// The capability, for `intent`.
    pub capability: Option<String>,
    /// The most it admits, for `intent`.
    pub amount_micros: Option<i64>,
    /// Who asked (a key id, or `gateway`).
    pub requested_by: String,
    /// Who decided.
    pub decided_by: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// When it was opened (ms since the epoch).
    pub created_at_ms: i64,
    /// When it was decided.
    pub decided_at_ms: Option<i64>,
    /// When an approved intent approval was used.
    pub consumed_at_ms: Option<i64>,
}

/// Why a policy refused a reservation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyRefusal {
    /// A `deny` or `max_cost` policy refuses it.
    #[error("policy {policy} refuses this: {why}")]
    Denied {
        /// The policy.
        policy: Uuid,
        /// Why.
        why: String,
    },
    /// An `approval` policy holds it: approve the approval and try again.
    #[error("policy {policy} needs approval {approval} for this intent; approve it and retry")]
    NeedsApproval {
        /// The policy.
        policy: Uuid,
        /// The pending approval (nil until it is opened).
        approval: Uuid,
    },
}

/// Why a policy or approval call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// No such policy or approval in the organisation.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Already decided.
    #[error("approval {0} was decided already")]
    Decided(Uuid),
    /// The caller's team does not cover it.
    #[error("{0}")]
    Forbidden(String),
    /// A budget step failed.
    #[error(transparent)]
    Budget(#[from] budgets::BudgetError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

const POLICY_COLUMNS: &str = "id, scope, scope_id, kind, capability, max_cost_micros, \
     (extract(epoch from created_at) * 1000)::bigint AS created_at_ms";
const APPROVAL_COLUMNS: &str = "id, kind, status, budget_id, policy_id, agent, capability, amount_micros, \
     requested_by, decided_by, reason, \
     (extract(epoch from created_at) * 1000)::bigint AS created_at_ms, \
     (extract(epoch from decided_at) * 1000)::bigint AS decided_at_ms, \
     (extract(epoch from consumed_at) * 1000)::bigint AS consumed_at_ms";

/// The team a policy's scope belongs to (`None` for the org), checked to exist.
async fn scope_team(
    conn: &mut sqlx::PgConnection,
    actor: &Principal,
    scope: &str,
    scope_id: &str,
) -> Result<Option<Uuid>, PolicyError> {
    match scope {
        "org" if scope_id == actor.org_id.to_string() => Ok(None),
        "org" => Err(PolicyError::Invalid(
            "an org policy's scope_id is the organisation's id".into(),
        )),
        "team" => {
            let team: Uuid = scope_id
                .parse()
                .map_err(|_| PolicyError::Invalid("a team's scope_id is its id".into()))?;
            let found: Option<(Uuid,)> =
                sqlx::query_as("SELECT id FROM teams WHERE org_id = $1 AND id = $2")
                    .bind(actor.org_id)
                    .bind(team)
                    .fetch_optional(&mut *conn)
                    .await?;
            found
                .map(|(t,)| Some(t))
                .ok_or_else(|| PolicyError::Invalid(format!("no team {team} in this organisation")))
        }
        _ => {
            let found: Option<(Option<Uuid>,)> =
                sqlx::query_as("SELECT team_id FROM agents WHERE org_id = $1 AND did = $2")
                    .bind(actor.org_id)
                    .bind(scope_id)
                    .fetch_optional(&mut *conn)
                    .await?;
            found.map(|(t,)| t).ok_or_else(|| {
                PolicyError::Invalid(format!("no agent {scope_id} in this organisation"))
            })
        }
    }
}

fn team_lead_ok(actor: &Principal, team: Option<Uuid>) -> Result<(), PolicyError> {
    if actor.role == Role::TeamLead && (team.is_none() || team != actor.team_id) {
        return Err(PolicyError::Forbidden(
            "a team lead manages only its own team's policies and approvals".into(),
        ));
    }
    Ok(())
}

/// Creates a policy.
pub async fn create(gw: &Gateway, actor: &Principal, p: &NewPolicy) -> Result<Policy, PolicyError> {
    if let Some(c) = &p.capability
        && (c.is_empty() || c.len() > 128)
    {
        return Err(PolicyError::Invalid(
            "capability must be 1 to 128 bytes".into(),
        ));
    }
    match (p.kind, p.max_cost_micros) {
        (PolicyKind::MaxCost, Some(m)) if (0..=budgets::MAX_LIMIT_MICROS).contains(&m) => {}
        (PolicyKind::MaxCost, _) => {
            return Err(PolicyError::Invalid(
                "a max_cost policy needs max_cost_micros between 0 and the largest amount".into(),
            ));
        }
        (_, Some(_)) => {
            return Err(PolicyError::Invalid(
                "max_cost_micros belongs only to max_cost policies".into(),
            ));
        }
        _ => {}
    }
    let mut tx = gw.db().pool().begin().await?;
    let team = scope_team(&mut tx, actor, p.scope.as_str(), &p.scope_id).await?;
    team_lead_ok(actor, team)?;
    let id = Uuid::new_v4();
    let policy: Policy = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO policies (id, org_id, scope, scope_id, kind, capability, max_cost_micros)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {POLICY_COLUMNS}"
    )))
    .bind(id)
    .bind(actor.org_id)
    .bind(p.scope.as_str())
    .bind(&p.scope_id)
    .bind(p.kind.as_str())
    .bind(&p.capability)
    .bind(p.max_cost_micros)
    .fetch_one(&mut *tx)
    .await?;
    gw.audit()
        .record(
            &mut tx,
            actor,
            "policy.create",
            &id.to_string(),
            &format!(
                "scope={} {}; kind={}; capability={:?}; max_cost_micros={:?}",
                p.scope.as_str(),
                p.scope_id,
                p.kind.as_str(),
                p.capability,
                p.max_cost_micros
            ),
        )
        .await?;
    tx.commit().await?;
    Ok(policy)
}

/// The organisation's policies.
pub async fn list(gw: &Gateway, actor: &Principal) -> Result<Vec<Policy>, PolicyError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {POLICY_COLUMNS} FROM policies WHERE org_id = $1 ORDER BY created_at LIMIT 10000"
    )))
    .bind(actor.org_id)
    .fetch_all(gw.db().pool())
    .await?)
}

/// Deletes a policy.
pub async fn delete(gw: &Gateway, actor: &Principal, id: Uuid) -> Result<(), PolicyError> {
    let mut tx = gw.db().pool().begin().await?;
    let found: Option<(String, String)> = sqlx::query_as(
        "SELECT scope, scope_id FROM policies WHERE org_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(actor.org_id)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let (scope, scope_id) = found.ok_or(PolicyError::NotFound("policy"))?;
    let team = scope_team(&mut tx, actor, &scope, &scope_id)
        .await
        .unwrap_or(None);
    team_lead_ok(actor, team)?;
    sqlx::query("DELETE FROM policies WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    gw.audit()
        .record(&mut tx, actor, "policy.delete", &id.to_string(), "")
        .await?;
    tx.commit().await?;
    Ok(())
}

// An approved intent approval is used up (and given back if a budget then refuses the
// reservation) inside the reservation batch's statement: `agentnet_reserve_batch`,
// `gateway/migrations/0002_reserve_batch.sql`.

/// Opens (or finds) the pending approval for an intent a policy holds; returns its id.
pub(crate) async fn open_intent_approval(
    gw: &Gateway,
    caller: &Principal,
    policy: Uuid,
    request: &ReserveRequest,
) -> Result<Uuid, sqlx::Error> {
    let mut tx = gw.db().pool().begin().await?;
    // `xmax = 0` tells a new row from one the conflict updated: only a new request is
    // audited, not every retry of it.
    let opened: Option<(Uuid, bool)> = sqlx::query_as(
        "INSERT INTO approvals (id, org_id, kind, policy_id, agent, capability, amount_micros, status, requested_by)
         VALUES ($1, $2, 'intent', $3, $4, $5, $6, 'pending', $7)
         ON CONFLICT (org_id, policy_id, agent, capability) WHERE kind = 'intent' AND status = 'pending'
         DO UPDATE SET amount_micros = GREATEST(approvals.amount_micros, EXCLUDED.amount_micros)
         RETURNING id, (xmax = 0)",
    )
    .bind(Uuid::new_v4())
    .bind(caller.org_id)
    .bind(policy)
    .bind(&request.agent)
    .bind(&request.capability)
    .bind(request.amount_micros)
    .bind(&caller.key_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, new)) = opened else {
        tx.commit().await?;
        return Ok(Uuid::nil());
    };
    if new {
        gw.audit()
            .record(
                &mut tx,
                caller,
                "approval.request",
                &id.to_string(),
                &format!(
                    "kind=intent; policy={policy}; agent={}; capability={}; amount_micros={}",
                    request.agent, request.capability, request.amount_micros
                ),
            )
            .await?;
    }
    tx.commit().await?;
    Ok(id)
}

/// The organisation's approvals, newest first, optionally only those with `status`.
pub async fn approvals(
    gw: &Gateway,
    actor: &Principal,
    status: Option<&str>,
) -> Result<Vec<Approval>, PolicyError> {
    if let Some(s) = status
        && !["pending", "approved", "denied"].contains(&s)
    {
        return Err(PolicyError::Invalid(
            "status must be pending, approved or denied".into(),
        ));
    }
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE org_id = $1 AND ($2::text IS NULL OR status = $2)
          ORDER BY created_at DESC LIMIT 1000"
    )))
    .bind(actor.org_id)
    .bind(status)
    .fetch_all(gw.db().pool())
    .await?)
}

/// Approves or denies a pending approval. Approving a budget approval re-authorises the
/// budget for the rest of its period.
pub async fn decide(
    gw: &Gateway,
    actor: &Principal,
    id: Uuid,
    approve: bool,
    reason: Option<&str>,
) -> Result<Approval, PolicyError> {
    if reason.is_some_and(|r| r.len() > 1024) {
        return Err(PolicyError::Invalid(
            "reason must be at most 1024 bytes".into(),
        ));
    }
    let mut tx = gw.db().pool().begin().await?;
    let found: Option<(String, String, Option<Uuid>, Option<String>)> = sqlx::query_as(
        "SELECT kind, status, budget_id, agent FROM approvals WHERE org_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(actor.org_id)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let (kind, status, budget, agent) = found.ok_or(PolicyError::NotFound("approval"))?;
    if status != "pending" {
        return Err(PolicyError::Decided(id));
    }
    if kind == "intent" {
        let team = match &agent {
            Some(a) => scope_team(&mut tx, actor, "agent", a).await.unwrap_or(None),
            None => None,
        };
        team_lead_ok(actor, team)?;
    }
    if kind == "budget"
        && let Some(budget) = budget
    {
        // A team lead decides only its own team's budgets, either way; and an approval opened
        // in an earlier period does not re-authorise the current one.
        let found: Option<(String, String, bool)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT b.scope, b.scope_id, a.period_start = ({start})
               FROM budgets b JOIN approvals a ON a.budget_id = b.id
              WHERE b.id = $1 AND b.org_id = $2 AND a.id = $3",
            start = budgets::PERIOD_START_OF_B,
        )))
        .bind(budget)
        .bind(actor.org_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let (scope, scope_id, current) = found.ok_or(PolicyError::NotFound("budget"))?;
        budgets::scope_ok(&mut tx, actor, &scope, &scope_id).await?;
        if approve && !current {
            return Err(PolicyError::Invalid(format!(
                "approval {id} was for an earlier period of the budget; a new one opens when \
                 the budget reaches its limit again"
            )));
        }
        if approve {
            budgets::reauthorise_in(&mut tx, actor, budget).await?;
        }
    }
    let approval: Approval = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE approvals SET status = $3, decided_by = $4, decided_at = now(), reason = $5
          WHERE org_id = $1 AND id = $2 RETURNING {APPROVAL_COLUMNS}"
    )))
    .bind(actor.org_id)
    .bind(id)
    .bind(if approve { "approved" } else { "denied" })
    .bind(&actor.key_id)
    .bind(reason)
    .fetch_one(&mut *tx)
    .await?;
    gw.audit()
        .append(
            &mut tx,
            actor.org_id,
            Entry {
                actor: &actor.key_id,
                action: if approve {
                    "approval.approve"
                } else {
                    "approval.deny"
                },
                subject: &id.to_string(),
                detail: &format!(
                    "kind={kind}; budget={budget:?}; agent={agent:?}; reason={reason:?}"
                ),
            },
        )
        .await?;
    tx.commit().await?;
    Ok(approval)
}
