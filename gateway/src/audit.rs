//! The tamper-evident audit log (`specs/gateway-api.md#audit`).
//!
//! Each organisation has one hash chain. A row's hash covers the previous row's hash and the
//! row's own content, so editing or deleting a row breaks the chain from there on. One
//! writer per chain at a time (a transaction-scoped advisory lock) keeps it linear. Every
//! [`CHECKPOINT_EVERY`] rows, and every [`CHECKPOINT_INTERVAL`] while rows keep coming, the
//! gateway signs the chain's head with its key; a checkpoint pins the chain up to its row, so
//! truncating the tail or rewriting the whole chain with fresh hashes is detected too.

use std::time::Duration;

use agentnet_protocol::{Did, Keypair, PublicKey};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Advisory-lock class of the audit chains (the second key is the org's).
const CHAIN_LOCK_CLASS: i32 = 0x6175_6474; // "audt"

/// A checkpoint is signed at least every this many rows of a chain.
pub const CHECKPOINT_EVERY: i64 = 100;
/// A chain with rows past its last checkpoint gets one after at most this long.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);

/// Domain tag of a row hash.
const ROW_DOMAIN: &[u8] = b"agentnet/v1/audit-row\0";
/// Domain tag of a checkpoint signature.
const CHECKPOINT_DOMAIN: &[u8] = b"agentnet/v1/audit-checkpoint\0";

/// The hash of one audit row.
#[allow(clippy::too_many_arguments)]
pub fn row_hash(
    prev: &[u8],
    org: Uuid,
    seq: i64,
    at_ms: i64,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(ROW_DOMAIN);
    h.update(prev);
    h.update(org.as_bytes());
    h.update(seq.to_be_bytes());
    h.update(at_ms.to_be_bytes());
    for field in [actor, action, subject, detail] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.finalize().into()
}

/// The bytes a checkpoint's signature covers.
pub fn checkpoint_message(org: Uuid, seq: i64, hash: &[u8], at_ms: i64) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + 16 + 8 + 32 + 8);
    m.extend_from_slice(CHECKPOINT_DOMAIN);
    m.extend_from_slice(org.as_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m.extend_from_slice(&at_ms.to_be_bytes());
    m
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Takes the chain's lock for the rest of the transaction.
async fn lock_chain(tx: &mut sqlx::PgConnection, org: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(CHAIN_LOCK_CLASS)
        .bind(org.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// One action to record.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    /// Who did it: a key id, `bootstrap` or `gateway`.
    pub actor: &'a str,
    /// What, such as `budget.create`.
    pub action: &'a str,
    /// What it was done to.
    pub subject: &'a str,
    /// The particulars.
    pub detail: &'a str,
}

/// The audit writer: appends rows and signs checkpoints with the gateway's key.
#[derive(Debug)]
pub struct Auditor {
    key: Keypair,
}

impl Auditor {
    /// An auditor that signs with `key`.
    pub fn new(key: Keypair) -> Self {
        Auditor { key }
    }

    /// The DID checkpoints are signed by.
    pub fn did(&self) -> Did {
        self.key.did()
    }

    /// The gateway's key (pause notices and credentials are signed with it too).
    pub fn key(&self) -> &Keypair {
        &self.key
    }

    /// Appends a row to `org`'s chain inside the caller's transaction: it commits or rolls
    /// back with the action it records. Every [`CHECKPOINT_EVERY`]th row is checkpointed in
    /// the same transaction.
    pub async fn append(
        &self,
        tx: &mut sqlx::PgConnection,
        org: Uuid,
        entry: Entry<'_>,
    ) -> Result<i64, sqlx::Error> {
        lock_chain(tx, org).await?;
        let last: Option<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, hash FROM audit_log WHERE org_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(org)
        .fetch_optional(&mut *tx)
        .await?;
        let (seq, prev) = match last {
            Some((seq, hash)) => (seq + 1, hash),
            None => (1, vec![0u8; 32]),
        };
        let at_ms = now_ms();
        let hash = row_hash(
            &prev,
            org,
            seq,
            at_ms,
            entry.actor,
            entry.action,
            entry.subject,
            entry.detail,
        );
        sqlx::query(
            "INSERT INTO audit_log (org_id, seq, at_ms, actor, action, subject, detail, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(org)
        .bind(seq)
        .bind(at_ms)
        .bind(entry.actor)
        .bind(entry.action)
        .bind(entry.subject)
        .bind(entry.detail)
        .bind(prev)
        .bind(&hash[..])
        .execute(&mut *tx)
        .await?;
        if seq % CHECKPOINT_EVERY == 0 {
            self.insert_checkpoint(tx, org, seq, &hash).await?;
        }
        Ok(seq)
    }

    /// Appends what `actor` did to its organisation's chain, inside the transaction of the
    /// change (see [`append`](Self::append)).
    pub async fn record(
        &self,
        tx: &mut sqlx::PgConnection,
        actor: &crate::keys::Principal,
        action: &str,
        subject: &str,
        detail: &str,
    ) -> Result<i64, sqlx::Error> {
        let entry = Entry {
            actor: &actor.key_id,
            action,
            subject,
            detail,
        };
        self.append(tx, actor.org_id, entry).await
    }

    async fn insert_checkpoint(
        &self,
        tx: &mut sqlx::PgConnection,
        org: Uuid,
        seq: i64,
        hash: &[u8],
    ) -> Result<(), sqlx::Error> {
        let at_ms = now_ms();
        let signature = self.key.sign(&checkpoint_message(org, seq, hash, at_ms));
        sqlx::query(
            "INSERT INTO audit_checkpoints (org_id, seq, hash, at_ms, signer, signature)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(org)
        .bind(seq)
        .bind(hash)
        .bind(at_ms)
        .bind(self.key.did().as_str())
        .bind(&signature[..])
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Checkpoints the head of every chain that has rows past its last checkpoint; returns
    /// how many. The gateway calls this every [`CHECKPOINT_INTERVAL`].
    pub async fn checkpoint_all(&self, pool: &sqlx::PgPool) -> Result<usize, sqlx::Error> {
        let behind: Vec<(Uuid,)> = sqlx::query_as(
            "SELECT l.org_id FROM (SELECT org_id, max(seq) AS seq FROM audit_log GROUP BY org_id) l
               LEFT JOIN (SELECT org_id, max(seq) AS seq FROM audit_checkpoints GROUP BY org_id) c
                 ON c.org_id = l.org_id
              WHERE c.seq IS NULL OR c.seq < l.seq",
        )
        .fetch_all(pool)
        .await?;
        for (org,) in &behind {
            let mut tx = pool.begin().await?;
            lock_chain(&mut tx, *org).await?;
            let head: Option<(i64, Vec<u8>)> = sqlx::query_as(
                "SELECT seq, hash FROM audit_log WHERE org_id = $1 ORDER BY seq DESC LIMIT 1",
            )
            .bind(org)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((seq, hash)) = head {
                self.insert_checkpoint(&mut tx, *org, seq, &hash).await?;
            }
            tx.commit().await?;
        }
        Ok(behind.len())
    }
}

/// What walking a chain found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Verification {
    /// Rows checked.
    pub rows: i64,
    /// Checkpoints checked.
    pub checkpoints: i64,
    /// The last row covered by a valid checkpoint.
    pub checkpointed_seq: Option<i64>,
    /// Whether every link, hash and checkpoint holds.
    pub intact: bool,
    /// The first row whose link or content does not match, if any.
    pub first_broken: Option<i64>,
    /// Why it is broken.
    pub reason: Option<String>,
}

type Row = (i64, i64, String, String, String, String, Vec<u8>, Vec<u8>);
/// A checkpoint: seq, hash, at, signer, signature.
type CheckpointRow = (i64, Vec<u8>, i64, String, Vec<u8>);

/// Walks `org`'s chain in order, in pages, recomputing every hash, and checks every
/// checkpoint's signature (by `gateway`, the gateway's public key) and that the row it pins
/// is there with the hash it signed.
pub async fn verify(
    pool: &sqlx::PgPool,
    org: Uuid,
    gateway: &PublicKey,
) -> Result<Verification, sqlx::Error> {
    let checkpoints: Vec<CheckpointRow> = sqlx::query_as(
        "SELECT seq, hash, at_ms, signer, signature FROM audit_checkpoints
          WHERE org_id = $1 ORDER BY seq",
    )
    .bind(org)
    .fetch_all(pool)
    .await?;
    let mut v = Verification {
        rows: 0,
        checkpoints: checkpoints.len() as i64,
        checkpointed_seq: None,
        intact: true,
        first_broken: None,
        reason: None,
    };
    let broken = |mut v: Verification, seq: i64, reason: String| {
        v.intact = false;
        v.first_broken = Some(seq);
        v.reason = Some(reason);
        v
    };
    // Checkpoints first: a bad signature is a forged checkpoint.
    let gateway_did = gateway.to_did();
    for (seq, hash, at_ms, signer, signature) in &checkpoints {
        let sig: Option<[u8; 64]> = signature.as_slice().try_into().ok();
        let valid = signer == gateway_did.as_str()
            && sig
                .is_some_and(|s| gateway.verify(&checkpoint_message(org, *seq, hash, *at_ms), &s));
        if !valid {
            return Ok(broken(
                v,
                *seq,
                format!("the checkpoint at row {seq} is not signed by this gateway"),
            ));
        }
    }
    let pins: Vec<(i64, Vec<u8>)> = checkpoints
        .into_iter()
        .map(|(seq, hash, ..)| (seq, hash))
        .collect();
    let mut next_pin = 0usize;
    let mut prev = vec![0u8; 32];
    let mut expected_seq = 1i64;
    loop {
        let page: Vec<Row> = sqlx::query_as(
            "SELECT seq, at_ms, actor, action, subject, detail, prev_hash, hash
               FROM audit_log WHERE org_id = $1 AND seq >= $2 ORDER BY seq LIMIT 1000",
        )
        .bind(org)
        .bind(expected_seq)
        .fetch_all(pool)
        .await?;
        if page.is_empty() {
            break;
        }
        for (seq, at_ms, actor, action, subject, detail, prev_hash, hash) in page {
            if seq != expected_seq {
                return Ok(broken(
                    v,
                    expected_seq,
                    format!("row {expected_seq} is missing"),
                ));
            }
            if prev_hash != prev {
                return Ok(broken(
                    v,
                    seq,
                    "the link to the previous row does not match".into(),
                ));
            }
            if row_hash(&prev, org, seq, at_ms, &actor, &action, &subject, &detail)[..] != hash[..]
            {
                return Ok(broken(
                    v,
                    seq,
                    "the row's content does not match its hash".into(),
                ));
            }
            while let Some((pin_seq, pin_hash)) = pins.get(next_pin) {
                let pin_seq = *pin_seq;
                if pin_seq > seq {
                    break;
                }
                // pin_seq == seq here: an earlier pin would have been passed already.
                if pin_seq < seq || pin_hash[..] != hash[..] {
                    return Ok(broken(
                        v,
                        pin_seq,
                        format!("row {pin_seq} differs from what its checkpoint signed"),
                    ));
                }
                v.checkpointed_seq = Some(seq);
                next_pin += 1;
            }
            v.rows += 1;
            prev = hash;
            expected_seq = seq + 1;
        }
    }
    if let Some((pin_seq, _)) = pins.get(next_pin) {
        return Ok(broken(
            v,
            expected_seq,
            format!("rows {expected_seq} to {pin_seq} were removed after they were checkpointed"),
        ));
    }
    Ok(v)
}

/// One audit row, as the API lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditRow {
    /// Position in the organisation's chain, from 1.
    pub seq: i64,
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// To what.
    pub subject: String,
    /// Particulars.
    pub detail: String,
    /// This row's hash, hex.
    pub hash: String,
}

/// Rows of `org`'s chain after `after`, oldest first.
pub async fn list(
    pool: &sqlx::PgPool,
    org: Uuid,
    after: i64,
    limit: i64,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seq, at_ms, actor, action, subject, detail, encode(hash, 'hex') AS hash
           FROM audit_log WHERE org_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(org)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}
