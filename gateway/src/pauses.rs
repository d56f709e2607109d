//! The kill switch (`specs/gateway-api.md#kill-switch`).
//!
//! Pausing an agent, a team or the whole organisation signs `PauseNotice`s with the
//! gateway's key (`specs/protocol.md#pausenotice`), keeps them, and publishes them through the
//! gateway's node, so that every node that obeys this gateway refuses intents to and from
//! the paused agents (`specs/intents.md#pause-notices`). The gateway also refuses budget
//! reservations for a paused agent itself. Resuming publishes `RESUME` notices.

use std::time::Duration;

use agentnet_protocol::limits::{MAX_PAUSE_LIFETIME, MAX_PAUSE_SUBJECTS, MAX_REASON_LEN};
use agentnet_protocol::{Did, PauseAction, PauseNotice, SignedEnvelope, Timestamp};
use uuid::Uuid;

use crate::Gateway;
use crate::audit::Entry;
use crate::keys::Principal;
use crate::orgs;

/// Whom a pause covers.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PauseScope {
    /// Every agent of the organisation (`scope_id` is the org's id).
    Org,
    /// A team's agents (`scope_id` is the team's id).
    Team,
    /// One agent (`scope_id` is its DID).
    Agent,
}

/// Pause or resume.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PauseVerb {
    /// Stop the agents.
    Pause,
    /// Let them run again.
    Resume,
}

/// A pause or resume to issue.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    /// Whom it covers.
    pub scope: PauseScope,
    /// The org id, team id or agent DID.
    pub scope_id: String,
    /// Pause or resume.
    pub action: PauseVerb,
    /// Why, for people: at most 512 bytes.
    #[serde(default)]
    pub reason: String,
}

/// A pause or resume as issued.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PauseRecord {
    /// Its id.
    pub id: Uuid,
    /// `pause` or `resume`.
    pub action: String,
    /// The agents it covers.
    pub subjects: Vec<String>,
    /// The notices' `seq`.
    pub seq: i64,
    /// The signed notices, hex: one per 128 subjects.
    pub notices: Vec<String>,
    /// Whether every notice was handed to the network.
    pub published: bool,
}

/// Why a pause failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PauseError {
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// The caller's team does not cover it.
    #[error("{0}")]
    Forbidden(String),
    /// Signing failed.
    #[error("cannot sign the pause notice: {0}")]
    Sign(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

async fn subjects(
    conn: &mut sqlx::PgConnection,
    actor: &Principal,
    scope: PauseScope,
    scope_id: &str,
) -> Result<Vec<String>, PauseError> {
    let rows: Vec<(String, Option<Uuid>)> = match scope {
        PauseScope::Org => {
            if scope_id != actor.org_id.to_string() {
                return Err(PauseError::Invalid(
                    "an org pause's scope_id is the organisation's id".into(),
                ));
            }
            sqlx::query_as("SELECT did, team_id FROM agents WHERE org_id = $1 ORDER BY did")
                .bind(actor.org_id)
                .fetch_all(&mut *conn)
                .await?
        }
        PauseScope::Team => {
            let team: Uuid = scope_id
                .parse()
                .map_err(|_| PauseError::Invalid("a team's scope_id is its id".into()))?;
            sqlx::query_as(
                "SELECT did, team_id FROM agents WHERE org_id = $1 AND team_id = $2 ORDER BY did",
            )
            .bind(actor.org_id)
            .bind(team)
            .fetch_all(&mut *conn)
            .await?
        }
        PauseScope::Agent => {
            sqlx::query_as("SELECT did, team_id FROM agents WHERE org_id = $1 AND did = $2")
                .bind(actor.org_id)
                .bind(scope_id)
                .fetch_all(&mut *conn)
                .await?
        }
    };
    if actor.role == crate::Role::TeamLead
        && (scope == PauseScope::Org || rows.iter().any(|(_, t)| *t != actor.team_id))
    {
        return Err(PauseError::Forbidden(
            "a team lead pauses only its own team's agents".into(),
        ));
    }
    if rows.is_empty() {
        return Err(PauseError::Invalid(format!(
            "no agents of this organisation in {} `{scope_id}`",
            match scope {
                PauseScope::Org => "org",
                PauseScope::Team => "team",
                PauseScope::Agent => "agent",
            }
        )));
    }
    Ok(rows.into_iter().map(|(d, _)| d).collect())
}

/// Issues a pause or resume for `request`'s scope.
pub async fn issue(
    gw: &Gateway,
    actor: &Principal,
    request: &PauseRequest,
) -> Result<PauseRecord, PauseError> {
    if request.reason.len() > MAX_REASON_LEN || request.reason.chars().any(char::is_control) {
        return Err(PauseError::Invalid(format!(
            "reason must be at most {MAX_REASON_LEN} bytes without control characters"
        )));
    }
    if request.scope == PauseScope::Team {
        let team: Option<Uuid> = request.scope_id.parse().ok();
        orgs::team_scope_ok(actor, team).map_err(|e| PauseError::Forbidden(e.to_string()))?;
    }
    let mut conn = gw.db().pool().acquire().await?;
    let subjects = subjects(&mut conn, actor, request.scope, &request.scope_id).await?;
    drop(conn);
    record(
        gw,
        actor.org_id,
        &actor.key_id,
        request.scope,
        &request.scope_id,
        request.action,
        &request.reason,
        subjects,
    )
    .await
}

/// Pauses one agent on the gateway's own account (a budget's `auto_pause`).
pub(crate) async fn pause_by_gateway(
    gw: &Gateway,
    org: Uuid,
    agent: &str,
    reason: &str,
) -> Result<PauseRecord, PauseError> {
    let reason: String = reason.chars().take(MAX_REASON_LEN / 4).collect();
    // Only the organisation's own agents: anyone can name any DID in a reservation, and a
    // pause notice is obeyed network-wide.
    let own: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM agents WHERE org_id = $1 AND did = $2")
        .bind(org)
        .bind(agent)
        .fetch_optional(gw.db().pool())
        .await?;
    if own.is_none() {
        return Err(PauseError::Invalid(format!(
            "{agent} is not an agent of this organisation; it is not paused"
        )));
    }
    record(
        gw,
        org,
        "gateway",
        PauseScope::Agent,
        agent,
        PauseVerb::Pause,
        &reason,
        vec![agent.to_owned()],
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn record(
    gw: &Gateway,
    org: Uuid,
    actor: &str,
    scope: PauseScope,
    scope_id: &str,
    verb: PauseVerb,
    reason: &str,
    subjects: Vec<String>,
) -> Result<PauseRecord, PauseError> {
    let dids: Vec<Did> = subjects
        .iter()
        .map(|s| s.parse::<Did>())
        .collect::<Result<_, _>>()
        .map_err(|e| PauseError::Invalid(format!("a subject is not a DID: {e}")))?;
    let mut tx = gw.db().pool().begin().await?;
    // Strictly increasing, and ahead of the clock in microseconds, so a gateway whose
    // database was rebuilt still issues notices that win over its earlier ones.
    let (seq,): (i64,) = sqlx::query_as(
        "SELECT setval('pause_seq', GREATEST(nextval('pause_seq'),
                       (extract(epoch from clock_timestamp()) * 1000000)::bigint))",
    )
    .fetch_one(&mut *tx)
    .await?;
    let issued_at = Timestamp::now();
    let action = match verb {
        PauseVerb::Pause => PauseAction::Pause,
        PauseVerb::Resume => PauseAction::Resume,
    };
    let mut envelopes = Vec::new();
    for chunk in dids.chunks(MAX_PAUSE_SUBJECTS) {
        let notice = PauseNotice {
            issuer: gw.did(),
            subjects: chunk.to_vec(),
            action,
            reason: reason.to_owned(),
            seq: seq as u64,
            issued_at,
            expires_at: issued_at.saturating_add(MAX_PAUSE_LIFETIME - Duration::from_secs(60)),
        };
        envelopes.push(
            SignedEnvelope::seal(gw.audit().key(), &notice)
                .map_err(|e| PauseError::Sign(e.to_string()))?,
        );
    }
    let notices: Vec<Vec<u8>> = envelopes.iter().map(|e| e.to_bytes()).collect();
    let id = Uuid::new_v4();
    let verb_str = match verb {
        PauseVerb::Pause => "pause",
        PauseVerb::Resume => "resume",
    };
    let scope_str = match scope {
        PauseScope::Org => "org",
        PauseScope::Team => "team",
        PauseScope::Agent => "agent",
    };
    sqlx::query(
        "INSERT INTO pauses (id, org_id, scope, scope_id, action, reason, subjects, notices, seq, actor)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(id)
    .bind(org)
    .bind(scope_str)
    .bind(scope_id)
    .bind(verb_str)
    .bind(reason)
    .bind(&subjects)
    .bind(&notices)
    .bind(seq)
    .bind(actor)
    .execute(&mut *tx)
    .await?;
    match verb {
        PauseVerb::Pause => {
            sqlx::query(
                "INSERT INTO paused_agents (org_id, did, pause_id) SELECT $1, d, $2 FROM UNNEST($3::text[]) AS d
                 ON CONFLICT (org_id, did) DO UPDATE SET pause_id = EXCLUDED.pause_id",
            )
            .bind(org)
            .bind(id)
            .bind(&subjects)
            .execute(&mut *tx)
            .await?;
        }
        PauseVerb::Resume => {
            sqlx::query("DELETE FROM paused_agents WHERE org_id = $1 AND did = ANY($2)")
                .bind(org)
                .bind(&subjects)
                .execute(&mut *tx)
                .await?;
        }
    }
    gw.audit()
        .append(
            &mut tx,
            org,
            Entry {
                actor,
                action: if verb == PauseVerb::Pause {
                    "agent.pause"
                } else {
                    "agent.resume"
                },
                subject: &format!("{scope_str} {scope_id}"),
                detail: &format!("seq={seq}; agents={}; reason={reason}", subjects.len()),
            },
        )
        .await?;
    tx.commit().await?;
    let mut published = gw.publisher().is_some();
    if let Some(network) = gw.publisher() {
        for envelope in envelopes {
            if let Err(e) = network.publish(envelope).await {
                tracing::warn!(error = %e, pause = %id, "cannot publish a pause notice; nodes will get it by sync");
                published = false;
            }
        }
    }
    Ok(PauseRecord {
        id,
        action: verb_str.into(),
        subjects,
        seq,
        notices: notices.iter().map(hex::encode).collect(),
        published,
    })
}

/// The organisation's pauses and resumes, newest first.
pub async fn list(gw: &Gateway, actor: &Principal) -> Result<Vec<PauseRecord>, PauseError> {
    type Row = (Uuid, String, Vec<String>, i64, Vec<Vec<u8>>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, action, subjects, seq, notices FROM pauses WHERE org_id = $1
          ORDER BY created_at DESC LIMIT 1000",
    )
    .bind(actor.org_id)
    .fetch_all(gw.db().pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, action, subjects, seq, notices)| PauseRecord {
            id,
            action,
            subjects,
            seq,
            notices: notices.iter().map(hex::encode).collect(),
            published: true,
        })
        .collect())
}

/// The organisation's agents that are paused now.
pub async fn paused(gw: &Gateway, actor: &Principal) -> Result<Vec<String>, PauseError> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT did FROM paused_agents WHERE org_id = $1 ORDER BY did LIMIT 100000")
            .bind(actor.org_id)
            .fetch_all(gw.db().pool())
            .await?;
    Ok(rows.into_iter().map(|(d,)| d).collect())
}
