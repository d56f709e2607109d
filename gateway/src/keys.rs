//! API keys: `agn_<key_id>_<secret>`, 16 hex digits of id and 64 of secret
//! (`specs/gateway-api.md#auth`). Only SHA-256 of the secret is stored. A rotation keeps the
//! previous secret valid for a grace period and keeps the id, so nothing scoped to the key
//! (its budgets, its rate limit) starts over.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::audit::Entry;
use crate::db::{Db, DbError};
use crate::{Gateway, Role};

/// What a key may be used for, on top of its role. A key with no scopes may do all its role
/// allows.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum KeyScope {
    /// Read anything the role can see.
    Read,
    /// Ingest runs and events.
    Ingest,
    /// Reserve and settle budget.
    Spend,
    /// Change the organisation: teams, members, keys, agents, budgets, policies, approvals,
    /// pauses.
    Manage,
}

impl KeyScope {
    fn as_str(self) -> &'static str {
        match self {
            KeyScope::Read => "read",
            KeyScope::Ingest => "ingest",
            KeyScope::Spend => "spend",
            KeyScope::Manage => "manage",
        }
    }

    fn parse(s: &str) -> Option<KeyScope> {
        match s {
            "read" => Some(KeyScope::Read),
            "ingest" => Some(KeyScope::Ingest),
            "spend" => Some(KeyScope::Spend),
            "manage" => Some(KeyScope::Manage),
            _ => None,
        }
    }
}

/// Who a request comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The key's id.
    pub key_id: String,
    /// Its organisation.
    pub org_id: Uuid,
    /// Its role.
    pub role: Role,
    /// The team a team lead's (or any team-bound) key belongs to.
    pub team_id: Option<Uuid>,
    /// Its scopes; empty for all the role allows.
    pub scopes: Vec<KeyScope>,
}

impl Principal {
    /// Whether the key's scopes allow `scope`.
    pub fn has_scope(&self, scope: KeyScope) -> bool {
        self.scopes.is_empty() || self.scopes.contains(&scope)
    }
}

/// Why a key call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not of the form `agn_<16 hex>_<64 hex>`.
    #[error("malformed API key: expected agn_<key id>_<secret>")]
    Malformed,
    /// Unknown id, wrong secret, revoked or expired: one answer for all, so a caller learns
    /// nothing about which.
    #[error("invalid API key")]
    Invalid,
    /// Bad input.
    #[error("{0}")]
    BadRequest(String),
    /// No such key in the caller's organisation.
    #[error("no such key")]
    NotFound,
    /// This address asked the database about keys too often; retry after the wait.
    #[error("too many key checks from this address; retry in {} ms", .0.as_millis())]
    Throttled(std::time::Duration),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for KeyError {
    fn from(e: sqlx::Error) -> Self {
        KeyError::Db(e.into())
    }
}

/// How long a checked key is trusted without asking the database again. Revoking or
/// rotating a key through this gateway takes effect at once; through another gateway on the
/// same database, within this long.
pub const AUTH_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);
/// Keys the cache holds at most.
const AUTH_CACHE_MAX: usize = 10_000;

/// A checked key: the hash of the secret presented, who it is, and when it was checked.
type Checked = (Vec<u8>, Principal, std::time::Instant);

/// Recently checked keys, by key id.
#[derive(Debug, Default)]
pub(crate) struct AuthCache {
    entries: std::sync::Mutex<HashMap<String, Checked>>,
}

impl AuthCache {
    pub(crate) fn get(&self, key_id: &str, secret_hash: &[u8]) -> Option<Principal> {
        let entries = self.entries.lock().ok()?;
        let (hash, principal, at) = entries.get(key_id)?;
        (at.elapsed() < AUTH_CACHE_TTL && constant_time_eq(hash, secret_hash))
            .then(|| principal.clone())
    }

    pub(crate) fn put(&self, key_id: &str, secret_hash: Vec<u8>, principal: Principal) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= AUTH_CACHE_MAX {
                entries.retain(|_, (_, _, at)| at.elapsed() < AUTH_CACHE_TTL);
                if entries.len() >= AUTH_CACHE_MAX {
                    entries.clear();
                }
            }
            entries.insert(
                key_id.to_owned(),
                (secret_hash, principal, std::time::Instant::now()),
            );
        }
    }

    pub(crate) fn forget(&self, key_id: Option<&str>) {
        if let Ok(mut entries) = self.entries.lock() {
            match key_id {
                Some(id) => {
                    entries.remove(id);
                }
                None => entries.clear(),
            }
        }
    }
}

pub(crate) fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_hex(bytes: usize) -> Result<String, KeyError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| KeyError::Db(DbError::Config(format!("no randomness: {e}"))))?;
    Ok(hex::encode(buf))
}

/// Splits `agn_<id>_<secret>`.
pub fn parse(key: &str) -> Result<(&str, &str), KeyError> {
    let rest = key.strip_prefix("agn_").ok_or(KeyError::Malformed)?;
    let (id, secret) = rest.split_once('_').ok_or(KeyError::Malformed)?;
    let hex_of = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !hex_of(id, 16) || !hex_of(secret, 64) {
        return Err(KeyError::Malformed);
    }
    Ok((id, secret))
}

/// A key just created or rotated: the full key is shown once.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct NewKey {
    /// The stable id.
    pub key_id: String,
    /// `agn_<key_id>_<secret>`; store it now, it is not kept.
    pub key: String,
    /// Its role.
    pub role: Role,
}

/// A key to create.
#[derive(Clone, Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// What it is for, 1 to 128 bytes.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The team it belongs to; required for `team_lead`.
    #[serde(default)]
    pub team_id: Option<Uuid>,
    /// The member it belongs to.
    #[serde(default)]
    pub member_id: Option<Uuid>,
    /// Its scopes; none for all the role allows.
    #[serde(default)]
    pub scopes: Vec<KeyScope>,
    /// When it stops working (ms since the epoch).
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
}

/// A key as listed: never its secret.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct KeyInfo {
    /// The stable id.
    pub key_id: String,
    /// What it is for.
    pub name: String,
    /// `viewer`, `developer`, `team_lead` or `admin`.
    pub role: String,
    /// Its team.
    pub team_id: Option<Uuid>,
    /// Its member.
    pub member_id: Option<Uuid>,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// When it stops working (ms since the epoch).
    pub expires_at_ms: Option<i64>,
    /// When it was revoked.
    pub revoked_at_ms: Option<i64>,
    /// When the previous secret of a rotation stops working.
    pub previous_valid_until_ms: Option<i64>,
    /// When it was made.
    pub created_at_ms: i64,
}

/// Creates an organisation and its first admin key (`agentnet-gateway admin init`).
pub async fn init_org(gw: &Gateway, name: &str) -> Result<(Uuid, NewKey), KeyError> {
    if name.is_empty() || name.len() > 128 {
        return Err(KeyError::BadRequest(
            "the organisation's name must be 1 to 128 bytes".into(),
        ));
    }
    let org = Uuid::new_v4();
    let mut tx = gw.db().pool().begin().await?;
    let created = sqlx::query("INSERT INTO orgs (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(org)
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if created == 0 {
        return Err(KeyError::BadRequest(format!(
            "an organisation named `{name}` exists already"
        )));
    }
    let request = KeyRequest {
        name: "bootstrap admin".into(),
        role: Role::Admin,
        team_id: None,
        member_id: None,
        scopes: Vec::new(),
        expires_at_ms: None,
    };
    let key = insert_key(&mut tx, org, &request).await?;
    gw.audit()
        .append(
            &mut tx,
            org,
            Entry {
                actor: "bootstrap",
                action: "org.create",
                subject: &org.to_string(),
                detail: &format!("name={name}; admin key {}", key.key_id),
            },
        )
        .await?;
    tx.commit().await?;
    Ok((org, key))
}

async fn insert_key(
    tx: &mut sqlx::PgConnection,
    org: Uuid,
    request: &KeyRequest,
) -> Result<NewKey, KeyError> {
    let key_id = random_hex(8)?;
    let secret = random_hex(32)?;
    let scopes: Vec<&str> = request.scopes.iter().map(|s| s.as_str()).collect();
    sqlx::query(
        "INSERT INTO api_keys (key_id, org_id, team_id, member_id, name, role, scopes, secret_hash, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, to_timestamp($9::float8 / 1000))",
    )
    .bind(&key_id)
    .bind(org)
    .bind(request.team_id)
    .bind(request.member_id)
    .bind(&request.name)
    .bind(request.role.as_str())
    .bind(&scopes)
    .bind(hash(&secret))
    .bind(request.expires_at_ms.map(|ms| ms as f64))
    .execute(&mut *tx)
    .await?;
    Ok(NewKey {
        key: format!("agn_{key_id}_{secret}"),
        key_id,
        role: request.role,
    })
}

/// Creates a key in the actor's organisation (the caller checks the role may do so).
pub async fn create_key(
    gw: &Gateway,
    actor: &Principal,
    request: &KeyRequest,
) -> Result<NewKey, KeyError> {
    if request.name.is_empty() || request.name.len() > 128 {
        return Err(KeyError::BadRequest("name must be 1 to 128 bytes".into()));
    }
    if request
        .expires_at_ms
        .is_some_and(|ms| !(0..=253_402_300_799_000).contains(&ms))
    {
        return Err(KeyError::BadRequest(
            "expires_at_ms must be a time before the year 10000".into(),
        ));
    }
    if request.role == Role::TeamLead && request.team_id.is_none() {
        return Err(KeyError::BadRequest(
            "a team_lead key needs a team_id".into(),
        ));
    }
    let mut tx = gw.db().pool().begin().await?;
    for (what, id, table) in [
        ("team_id", request.team_id, "teams"),
        ("member_id", request.member_id, "members"),
    ] {
        if let Some(id) = id {
            let found: Option<(i32,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT 1 FROM {table} WHERE id = $1 AND org_id = $2"
            )))
            .bind(id)
            .bind(actor.org_id)
            .fetch_optional(&mut *tx)
            .await?;
            if found.is_none() {
                return Err(KeyError::BadRequest(format!(
                    "{what} {id} is not in this organisation"
                )));
            }
        }
    }
    let key = insert_key(&mut tx, actor.org_id, request).await?;
    gw.audit()
        .record(
            &mut tx,
            actor,
            "key.create",
            &key.key_id,
            &format!(
                "name={}; role={}; team={:?}; scopes={:?}; expires_at_ms={:?}",
                request.name,
                request.role.as_str(),
                request.team_id,
                request.scopes,
                request.expires_at_ms
            ),
        )
        .await?;
    tx.commit().await?;
    Ok(key)
}

/// The organisation's keys, newest first.
pub async fn list(db: &Db, actor: &Principal) -> Result<Vec<KeyInfo>, KeyError> {
    Ok(sqlx::query_as(
        "SELECT key_id, name, role, team_id, member_id, scopes,
                (extract(epoch from expires_at) * 1000)::bigint AS expires_at_ms,
                (extract(epoch from revoked_at) * 1000)::bigint AS revoked_at_ms,
                (extract(epoch from previous_valid_until) * 1000)::bigint AS previous_valid_until_ms,
                (extract(epoch from created_at) * 1000)::bigint AS created_at_ms
           FROM api_keys WHERE org_id = $1 ORDER BY created_at DESC, key_id LIMIT 10000",
    )
    .bind(actor.org_id)
    .fetch_all(db.pool())
    .await?)
}

/// Checks a presented key and returns who it is.
pub async fn authenticate(db: &Db, presented: &str) -> Result<Principal, KeyError> {
    type Row = (
        Uuid,
        String,
        Option<Uuid>,
        Vec<String>,
        Vec<u8>,
        Option<Vec<u8>>,
        bool,
        bool,
    );
    let (key_id, secret) = parse(presented)?;
    let row: Option<Row> = sqlx::query_as(
        "SELECT org_id, role, team_id, scopes, secret_hash, previous_hash,
                COALESCE(previous_valid_until > now(), false),
                revoked_at IS NOT NULL OR COALESCE(expires_at <= now(), false)
           FROM api_keys WHERE key_id = $1",
    )
    .bind(key_id)
    .fetch_optional(db.pool())
    .await?;
    let Some((org_id, role, team_id, scopes, current, previous, previous_live, dead)) = row else {
        return Err(KeyError::Invalid);
    };
    let presented = hash(secret);
    let matches = constant_time_eq(&presented, &current)
        || (previous_live && previous.is_some_and(|p| constant_time_eq(&presented, &p)));
    if !matches || dead {
        return Err(KeyError::Invalid);
    }
    let role = Role::parse(&role).ok_or(KeyError::Invalid)?;
    Ok(Principal {
        key_id: key_id.to_owned(),
        org_id,
        role,
        team_id,
        scopes: scopes.iter().filter_map(|s| KeyScope::parse(s)).collect(),
    })
}

/// Rotates a key's secret; the old one stays valid for `grace_secs`. The key id, and so every
/// budget scoped to the key, is unchanged.
pub async fn rotate(
    gw: &Gateway,
    actor: &Principal,
    key_id: &str,
    grace_secs: u32,
) -> Result<NewKey, KeyError> {
    let secret = random_hex(32)?;
    let mut tx = gw.db().pool().begin().await?;
    let role: Option<(String,)> = sqlx::query_as(
        "UPDATE api_keys SET previous_hash = secret_hash, secret_hash = $3,
                previous_valid_until = now() + make_interval(secs => $4)
          WHERE key_id = $1 AND org_id = $2 AND revoked_at IS NULL
          RETURNING role",
    )
    .bind(key_id)
    .bind(actor.org_id)
    .bind(hash(&secret))
    .bind(f64::from(grace_secs))
    .fetch_optional(&mut *tx)
    .await?;
    let Some((role,)) = role else {
        return Err(KeyError::NotFound);
    };
    gw.audit()
        .record(
            &mut tx,
            actor,
            "key.rotate",
            key_id,
            &format!("grace_secs={grace_secs}"),
        )
        .await?;
    tx.commit().await?;
    gw.forget_key(Some(key_id));
    Ok(NewKey {
        key: format!("agn_{key_id}_{secret}"),
        key_id: key_id.to_owned(),
        role: Role::parse(&role).unwrap_or(Role::Viewer),
    })
}

/// Revokes a key at once, both its secrets.
pub async fn revoke(gw: &Gateway, actor: &Principal, key_id: &str) -> Result<(), KeyError> {
    let mut tx = gw.db().pool().begin().await?;
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_at = now(), previous_valid_until = NULL
          WHERE key_id = $1 AND org_id = $2 AND revoked_at IS NULL",
    )
    .bind(key_id)
    .bind(actor.org_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if done == 0 {
        return Err(KeyError::NotFound);
    }
    gw.audit()
        .record(&mut tx, actor, "key.revoke", key_id, "")
        .await?;
    tx.commit().await?;
    gw.forget_key(Some(key_id));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_strictly() {
        let good = format!("agn_{}_{}", "0123456789abcdef", "a".repeat(64));
        assert_eq!(parse(&good).expect("good").0, "0123456789abcdef");
        for bad in [
            "agn_0123456789abcdef",
            "sk_0123456789abcdef_aaaa",
            &format!("agn_0123456789ABCDEF_{}", "a".repeat(64)),
            &format!("agn_0123456789abcdef_{}", "a".repeat(63)),
            &format!("agn_0123456789abcdef_{}_", "a".repeat(64)),
            "",
        ] {
            assert!(matches!(parse(bad), Err(KeyError::Malformed)), "{bad}");
        }
    }

    #[test]
    fn secrets_compare_in_full() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
