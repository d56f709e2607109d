//! Organisations, teams, members and the organisation's agents.

use agentnet_protocol::Did;
use uuid::Uuid;

use crate::keys::Principal;
use crate::{Gateway, Role, credentials};

/// Why an organisation call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OrgError {
    /// Bad input.
    #[error("{0}")]
    BadRequest(String),
    /// No such thing in the caller's organisation.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// It exists already.
    #[error("{0}")]
    Exists(String),
    /// The caller's role or team does not allow it.
    #[error("{0}")]
    Forbidden(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

fn name_ok(what: &str, name: &str) -> Result<(), OrgError> {
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(OrgError::BadRequest(format!(
            "{what} must be 1 to 128 bytes without control characters"
        )));
    }
    Ok(())
}

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}

/// An organisation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Org {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// When it was made (ms since the epoch).
    pub created_at_ms: i64,
}

/// The caller's organisation.
pub async fn org(gw: &Gateway, actor: &Principal) -> Result<Org, OrgError> {
    sqlx::query_as(
        "SELECT id, name, (extract(epoch from created_at) * 1000)::bigint AS created_at_ms
           FROM orgs WHERE id = $1",
    )
    .bind(actor.org_id)
    .fetch_optional(gw.db().pool())
    .await?
    .ok_or(OrgError::NotFound("organisation"))
}

/// Renames the caller's organisation.
pub async fn rename_org(gw: &Gateway, actor: &Principal, name: &str) -> Result<Org, OrgError> {
    name_ok("name", name)?;
    let mut tx = gw.db().pool().begin().await?;
    sqlx::query("UPDATE orgs SET name = $2 WHERE id = $1")
        .bind(actor.org_id)
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if unique_violation(&e) {
                OrgError::Exists(format!("an organisation named `{name}` exists already"))
            } else {
                e.into()
            }
        })?;
    gw.audit()
        .record(
            &mut tx,
            actor,
            "org.rename",
            &actor.org_id.to_string(),
            &format!("name={name}"),
        )
        .await?;
    tx.commit().await?;
    org(gw, actor).await
}

/// A team.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Team {
    /// Its id.
    pub id: Uuid,
    /// Its name, unique in the organisation.
    pub name: String,
    /// When it was made (ms since the epoch).
    pub created_at_ms: i64,
}

const TEAM_COLUMNS: &str =
    "id, name, (extract(epoch from created_at) * 1000)::bigint AS created_at_ms";

/// Creates a team.
pub async fn create_team(gw: &Gateway, actor: &Principal, name: &str) -> Result<Team, OrgError> {
    name_ok("name", name)?;
    let id = Uuid::new_v4();
    let mut tx = gw.db().pool().begin().await?;
    let team: Team = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO teams (id, org_id, name) VALUES ($1, $2, $3) RETURNING {TEAM_COLUMNS}"
    )))
    .bind(id)
    .bind(actor.org_id)
    .bind(name)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| {
        if unique_violation(&e) {
            OrgError::Exists(format!("a team named `{name}` exists already"))
        } else {
            e.into()
        }
    })?;
    gw.audit()
        .record(
            &mut tx,
            actor,
            "team.create",
            &id.to_string(),
            &format!("name={name}"),
        )
        .await?;
    tx.commit().await?;
    Ok(team)
}

/// The organisation's teams, by name.
pub async fn teams(gw: &Gateway, actor: &Principal) -> Result<Vec<Team>, OrgError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {TEAM_COLUMNS} FROM teams WHERE org_id = $1 ORDER BY name LIMIT 10000"
    )))
    .bind(actor.org_id)
    .fetch_all(gw.db().pool())
    .await?)
}

/// One team.
pub async fn team(gw: &Gateway, actor: &Principal, id: Uuid) -> Result<Team, OrgError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {TEAM_COLUMNS} FROM teams WHERE org_id = $1 AND id = $2"
    )))
    .bind(actor.org_id)
    .bind(id)
    .fetch_optional(gw.db().pool())
    .await?
    .ok_or(OrgError::NotFound("team"))
}

/// Renames a team.
pub async fn rename_team(
    gw: &Gateway,
    actor: &Principal,
    id: Uuid,
    name: &str,
) -> Result<Team, OrgError> {
    name_ok("name", name)?;
    let mut tx = gw.db().pool().begin().await?;
    let team: Option<Team> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE teams SET name = $3 WHERE org_id = $1 AND id = $2 RETURNING {TEAM_COLUMNS}"
    )))
    .bind(actor.org_id)
    .bind(id)
    .bind(name)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| {
        if unique_violation(&e) {
            OrgError::Exists(format!("a team named `{name}` exists already"))
        } else {
            OrgError::from(e)
        }
    })?;
    let team = team.ok_or(OrgError::NotFound("team"))?;
    gw.audit()
        .record(
            &mut tx,
            actor,
            "team.rename",
            &id.to_string(),
            &format!("name={name}"),
        )
        .await?;
    tx.commit().await?;
    Ok(team)
}

/// Deletes a team. Its members and agents stay in the organisation, without a team; a team
/// that keys still name cannot be deleted.
pub async fn delete_team(gw: &Gateway, actor: &Principal, id: Uuid) -> Result<(), OrgError> {
    let mut tx = gw.db().pool().begin().await?;
    let (keys,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM api_keys WHERE org_id = $1 AND team_id = $2 AND revoked_at IS NULL",
    )
    .bind(actor.org_id)
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    if keys > 0 {
        return Err(OrgError::BadRequest(format!(
            "{keys} live keys belong to this team; revoke them first"
        )));
    }
    sqlx::query("UPDATE agents SET team_id = NULL WHERE org_id = $1 AND team_id = $2")
        .bind(actor.org_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE api_keys SET team_id = NULL WHERE org_id = $1 AND team_id = $2")
        .bind(actor.org_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let done = sqlx::query("DELETE FROM teams WHERE org_id = $1 AND id = $2")
        .bind(actor.org_id)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if done == 0 {
        return Err(OrgError::NotFound("team"));
    }
    gw.audit()
        .record(&mut tx, actor, "team.delete", &id.to_string(), "")
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A member.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Member {
    /// Its id.
    pub id: Uuid,
    /// Email, unique in the organisation.
    pub email: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Team.
    pub team_id: Option<Uuid>,
    /// When it was made (ms since the epoch).
    pub created_at_ms: i64,
}

/// A member to create or replace.
#[derive(Clone, Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberRequest {
    /// Email, 3 to 254 bytes with an `@`.
    pub email: String,
    /// Name, 1 to 128 bytes.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Team.
    #[serde(default)]
    pub team_id: Option<Uuid>,
}

const MEMBER_COLUMNS: &str = "id, email, name, role, team_id, (extract(epoch from created_at) * 1000)::bigint AS created_at_ms";

fn member_ok(m: &MemberRequest) -> Result<(), OrgError> {
    name_ok("name", &m.name)?;
    if m.email.len() < 3 || m.email.len() > 254 || !m.email.contains('@') {
        return Err(OrgError::BadRequest(
            "email must be 3 to 254 bytes and contain @".into(),
        ));
    }
    Ok(())
}

async fn team_in_org(
    conn: &mut sqlx::PgConnection,
    org: Uuid,
    team: Option<Uuid>,
) -> Result<(), OrgError> {
    if let Some(team) = team {
        let found: Option<(i32,)> =
            sqlx::query_as("SELECT 1 FROM teams WHERE id = $1 AND org_id = $2")
                .bind(team)
                .bind(org)
                .fetch_optional(&mut *conn)
                .await?;
        if found.is_none() {
            return Err(OrgError::BadRequest(format!(
                "team {team} is not in this organisation"
            )));
        }
    }
    Ok(())
}

/// Adds a member.
pub async fn create_member(
    gw: &Gateway,
    actor: &Principal,
    m: &MemberRequest,
) -> Result<Member, OrgError> {
    member_ok(m)?;
    let id = Uuid::new_v4();
    let mut tx = gw.db().pool().begin().await?;
    team_in_org(&mut tx, actor.org_id, m.team_id).await?;
    let member: Member = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO members (id, org_id, team_id, email, name, role) VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING {MEMBER_COLUMNS}"
    )))
    .bind(id)
    .bind(actor.org_id)
    .bind(m.team_id)
    .bind(&m.email)
    .bind(&m.name)
    .bind(m.role.as_str())
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| {
        if unique_violation(&e) {
            OrgError::Exists(format!("a member with email `{}` exists already", m.email))
        } else {
            e.into()
        }
    })?;
    gw.audit()
        .record(
            &mut tx,
            actor,
            "member.create",
            &id.to_string(),
            &format!(
                "email={}; role={}; team={:?}",
                m.email,
                m.role.as_str(),
                m.team_id
            ),
        )
        .await?;
    tx.commit().await?;
    Ok(member)
}

/// The organisation's members, by email.
pub async fn members(gw: &Gateway, actor: &Principal) -> Result<Vec<Member>, OrgError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MEMBER_COLUMNS} FROM members WHERE org_id = $1 ORDER BY email LIMIT 10000"
    )))
    .bind(actor.org_id)
    .fetch_all(gw.db().pool())
    .await?)
}

/// One member.
pub async fn member(gw: &Gateway, actor: &Principal, id: Uuid) -> Result<Member, OrgError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MEMBER_COLUMNS} FROM members WHERE org_id = $1 AND id = $2"
    )))
    .bind(actor.org_id)
    .bind(id)
    .fetch_optional(gw.db().pool())
    .await?
    .ok_or(OrgError::NotFound("member"))
}

/// Replaces a member's details.
pub async fn update_member(
    gw: &Gateway,
    actor: &Principal,
    id: Uuid,
    m: &MemberRequest,
) -> Result<Member, OrgError> {
    member_ok(m)?;
    let mut tx = gw.db().pool().begin().await?;
    team_in_org(&mut tx, actor.org_id, m.team_id).await?;
    let member: Option<Member> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE members SET email = $3, name = $4, role = $5, team_id = $6
          WHERE org_id = $1 AND id = $2 RETURNING {MEMBER_COLUMNS}"
    )))
    .bind(actor.org_id)
    .bind(id)
    .bind(&m.email)
    .bind(&m.name)
    .bind(m.role.as_str())
    .bind(m.team_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| {
        if unique_violation(&e) {
            OrgError::Exists(format!("a member with email `{}` exists already", m.email))
        } else {
            OrgError::from(e)
        }
    })?;
    let member = member.ok_or(OrgError::NotFound("member"))?;
    gw.audit()
        .record(
            &mut tx,
            actor,
            "member.update",
            &id.to_string(),
            &format!(
                "email={}; role={}; team={:?}",
                m.email,
                m.role.as_str(),
                m.team_id
            ),
        )
        .await?;
    tx.commit().await?;
    Ok(member)
}

/// Removes a member and revokes the keys that belong to it.
pub async fn delete_member(gw: &Gateway, actor: &Principal, id: Uuid) -> Result<(), OrgError> {
    let mut tx = gw.db().pool().begin().await?;
    let revoked = sqlx::query(
        "UPDATE api_keys SET revoked_at = now(), previous_valid_until = NULL
          WHERE org_id = $1 AND member_id = $2 AND revoked_at IS NULL",
    )
    .bind(actor.org_id)
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let done = sqlx::query("DELETE FROM members WHERE org_id = $1 AND id = $2")
        .bind(actor.org_id)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if done == 0 {
        return Err(OrgError::NotFound("member"));
    }
    gw.audit()
        .record(
            &mut tx,
            actor,
            "member.delete",
            &id.to_string(),
            &format!("keys_revoked={revoked}"),
        )
        .await?;
    tx.commit().await?;
    if revoked > 0 {
        gw.forget_key(None);
    }
    Ok(())
}

/// One of the organisation's agents.
#[derive(Clone, Debug, PartialEq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Agent {
    /// Its DID.
    pub did: String,
    /// Its name.
    pub name: String,
    /// Its team.
    pub team_id: Option<Uuid>,
    /// The membership credential the gateway issued: a W3C verifiable credential whose
    /// subject is the agent's DID. The agent puts it in its card.
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
    /// When it was added (ms since the epoch).
    pub created_at_ms: i64,
}

/// An agent to add or change.
#[derive(Clone, Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentRequest {
    /// Its `did:key`.
    pub did: String,
    /// Its name, 1 to 128 bytes.
    pub name: String,
    /// Its team.
    #[serde(default)]
    pub team_id: Option<Uuid>,
}

const AGENT_COLUMNS: &str = "did, name, team_id, credential, \
     (extract(epoch from created_at) * 1000)::bigint AS created_at_ms";

/// Checks that a team lead acts only within its team.
pub(crate) fn team_scope_ok(actor: &Principal, team: Option<Uuid>) -> Result<(), OrgError> {
    if actor.role == Role::TeamLead && (team.is_none() || team != actor.team_id) {
        return Err(OrgError::Forbidden(
            "a team lead acts only on its own team's agents".into(),
        ));
    }
    Ok(())
}

/// Adds an agent to the organisation and issues its membership credential.
pub async fn create_agent(
    gw: &Gateway,
    actor: &Principal,
    a: &AgentRequest,
) -> Result<Agent, OrgError> {
    name_ok("name", &a.name)?;
    let did: Did = a
        .did
        .parse()
        .map_err(|e| OrgError::BadRequest(format!("did: {e}")))?;
    team_scope_ok(actor, a.team_id)?;
    let org = org(gw, actor).await?;
    let credential = credentials::membership(gw.audit().key(), &did, actor.org_id, &org.name)
        .map_err(|e| OrgError::BadRequest(format!("cannot issue a credential: {e}")))?;
    let mut tx = gw.db().pool().begin().await?;
    team_in_org(&mut tx, actor.org_id, a.team_id).await?;
    let agent: Agent = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO agents (org_id, did, team_id, name, credential) VALUES ($1, $2, $3, $4, $5)
         RETURNING {AGENT_COLUMNS}"
    )))
    .bind(actor.org_id)
    .bind(did.as_str())
    .bind(a.team_id)
    .bind(&a.name)
    .bind(&credential)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| {
        if unique_violation(&e) {
            OrgError::Exists(format!(
                "agent {} belongs to an organisation of this gateway already",
                a.did
            ))
        } else {
            e.into()
        }
    })?;
    gw.audit()
        .record(
            &mut tx,
            actor,
            "agent.create",
            did.as_str(),
            &format!("name={}; team={:?}", a.name, a.team_id),
        )
        .await?;
    tx.commit().await?;
    Ok(agent)
}

/// The organisation's agents, by DID, after `after`.
pub async fn agents(
    gw: &Gateway,
    actor: &Principal,
    after: &str,
    limit: i64,
) -> Result<Vec<Agent>, OrgError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE org_id = $1 AND did > $2 ORDER BY did LIMIT $3"
    )))
    .bind(actor.org_id)
    .bind(after)
    .bind(limit)
    .fetch_all(gw.db().pool())
    .await?)
}

/// One agent.
pub async fn agent(gw: &Gateway, actor: &Principal, did: &str) -> Result<Agent, OrgError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE org_id = $1 AND did = $2"
    )))
    .bind(actor.org_id)
    .bind(did)
    .fetch_optional(gw.db().pool())
    .await?
    .ok_or(OrgError::NotFound("agent"))
}

/// Changes an agent's name or team (its DID is its identity and cannot change).
pub async fn update_agent(
    gw: &Gateway,
    actor: &Principal,
    did: &str,
    a: &AgentRequest,
) -> Result<Agent, OrgError> {
    name_ok("name", &a.name)?;
    if a.did != did {
        return Err(OrgError::BadRequest(
            "the body's did must match the path".into(),
        ));
    }
    let before = agent(gw, actor, did).await?;
    team_scope_ok(actor, before.team_id)?;
    team_scope_ok(actor, a.team_id)?;
    let mut tx = gw.db().pool().begin().await?;
    team_in_org(&mut tx, actor.org_id, a.team_id).await?;
    let agent: Agent = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE agents SET name = $3, team_id = $4 WHERE org_id = $1 AND did = $2
         RETURNING {AGENT_COLUMNS}"
    )))
    .bind(actor.org_id)
    .bind(did)
    .bind(&a.name)
    .bind(a.team_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(OrgError::NotFound("agent"))?;
    gw.audit()
        .record(
            &mut tx,
            actor,
            "agent.update",
            did,
            &format!("name={}; team={:?}", a.name, a.team_id),
        )
        .await?;
    tx.commit().await?;
    Ok(agent)
}

/// Removes an agent from the organisation.
pub async fn delete_agent(gw: &Gateway, actor: &Principal, did: &str) -> Result<(), OrgError> {
    let before = agent(gw, actor, did).await?;
    team_scope_ok(actor, before.team_id)?;
    let mut tx = gw.db().pool().begin().await?;
    let done = sqlx::query("DELETE FROM agents WHERE org_id = $1 AND did = $2")
        .bind(actor.org_id)
        .bind(did)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if done == 0 {
        return Err(OrgError::NotFound("agent"));
    }
    gw.audit()
        .record(&mut tx, actor, "agent.delete", did, "")
        .await?;
    tx.commit().await?;
    Ok(())
}
