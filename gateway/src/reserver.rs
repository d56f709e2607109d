//! The reservation batcher: holds budget for many reservations in one transaction
//! (`specs/gateway-api.md#exactness`).
//!
//! Reservations that race for one hot budget serialise on its row lock, and a lock is held
//! until the commit is flushed. One transaction per reservation therefore caps a hot budget
//! at one flush per reservation. The batcher takes every reservation waiting (up to
//! [`MAX_BATCH`]) and decides them all in **one autocommit statement**, the function
//! `agentnet_reserve_batch` (`gateway/migrations/0002_reserve_batch.sql`), which:
//!
//! 1. reads each reservation's pause and policies;
//! 2. locks every budget that applies to any of them, in budget-id order (`FOR UPDATE`), so
//!    the totals it reads are current and no other writer, in this process or another
//!    gateway on the same database, can change them until the commit;
//! 3. decides each reservation in arrival order against those totals: admitted only if every
//!    budget it touches stays within `spent + reserved + amount <= limit` (or `<= 120%` once
//!    re-authorised), all or none; a period that has ended starts over first;
//! 4. writes the new totals, the reservations and their holds, and the 80% alerts;
//!
//! and the statement's commit makes all of it durable before the answers come back. That is
//! one round trip to Postgres per batch, on a connection the batcher keeps (so its prepared
//! statement and the function's plans stay warm).
//!
//! Exactness rests on the locks of step 2, not on the batching: a batch admits exactly what
//! one-at-a-time conditional updates in the same order would.

use std::time::{Duration, Instant};

use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::budgets::{Alert, MAX_HOLD_MS, Reservation, ReserveRequest};
use crate::db::Db;

/// The most reservations one transaction decides.
pub(crate) const MAX_BATCH: usize = 512;
/// Reservations waiting for a batch; beyond it callers wait for room.
pub(crate) const QUEUE: usize = 4_096;
/// Tries of a batch that hit a deadlock or a serialisation failure.
const TRIES: usize = 3;
/// The batcher's connection is checked (one ping) before a batch if it has been idle this
/// long, as the pool checks the connections it hands out.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// One reservation to decide.
#[derive(Debug)]
pub(crate) struct HoldJob {
    pub(crate) org: Uuid,
    pub(crate) key_id: String,
    pub(crate) request: ReserveRequest,
    pub(crate) reply: oneshot::Sender<Result<Outcome, sqlx::Error>>,
}

/// How a reservation was decided.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Held.
    Held(Reservation),
    /// `budget` refused it; `hard` if past 120%, else past 100% without re-authorisation.
    Refused { budget: Uuid, hard: bool },
    /// No approved approval of this policy was left.
    NeedsApproval { policy: Uuid },
    /// A `deny` or `max_cost` policy refuses it.
    Denied { policy: Uuid, why: String },
    /// The agent is paused.
    Paused,
}

/// The batcher's handle.
#[derive(Clone, Debug)]
pub(crate) struct Reserver {
    queue: mpsc::Sender<HoldJob>,
}

impl Reserver {
    pub(crate) fn spawn(db: Db) -> Reserver {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(db, rx));
        Reserver { queue: tx }
    }

    /// Decides one reservation; returns once its batch has committed.
    pub(crate) async fn hold(
        &self,
        org: Uuid,
        key_id: &str,
        request: ReserveRequest,
    ) -> Result<Outcome, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        let job = HoldJob {
            org,
            key_id: key_id.to_owned(),
            request,
            reply,
        };
        match tokio::time::timeout(Duration::from_secs(10), self.queue.send(job)).await {
            Ok(Ok(())) => {}
            _ => return Err(sqlx::Error::PoolTimedOut),
        }
        answer.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

async fn run(db: Db, mut rx: mpsc::Receiver<HoldJob>) {
    let mut link = Link { db, conn: None };
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut result = link.decide(&jobs).await;
        for _ in 1..TRIES {
            match &result {
                Err(e) if retryable(e) => result = link.decide(&jobs).await,
                _ => break,
            }
        }
        match result {
            Ok(outcomes) => {
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, reservations = jobs.len(), "a reservation batch failed");
                let kind = e.to_string();
                for job in jobs {
                    let _ = job.reply.send(Err(sqlx::Error::Protocol(kind.clone())));
                }
            }
        }
    }
}

/// Only a deadlock or a serialisation failure is retried: Postgres aborted that
/// transaction, so nothing of it was committed. An I/O error may have come from the commit
/// itself, after the holds were made durable, and a retry would hold them twice.
fn retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => matches!(d.code().as_deref(), Some("40P01" | "40001")),
        _ => false,
    }
}

/// The batcher's own connection, taken from the pool and kept: one batch at a time uses it.
struct Link {
    db: Db,
    /// The connection, and when it last answered.
    conn: Option<(PoolConnection<Postgres>, Instant)>,
}

/// One row of `agentnet_reserve_batch`.
type Decision = (
    i32,
    String,
    Option<Uuid>,
    bool,
    Option<String>,
    Vec<Uuid>,
    Vec<Uuid>,
);

impl Link {
    /// The connection, checked first if it has been idle, or a new one from the pool.
    async fn connection(&mut self) -> Result<&mut PoolConnection<Postgres>, sqlx::Error> {
        use sqlx::Connection;
        if let Some((conn, at)) = &mut self.conn
            && at.elapsed() >= IDLE_CHECK
        {
            if conn.ping().await.is_ok() {
                *at = Instant::now();
            } else if let Some((conn, _)) = self.conn.take() {
                drop(conn.detach());
            }
        }
        if self.conn.is_none() {
            self.conn = Some((self.db.pool().acquire().await?, Instant::now()));
        }
        match &mut self.conn {
            Some((conn, _)) => Ok(conn),
            None => Err(sqlx::Error::PoolClosed),
        }
    }

    /// Decides a batch in one statement; see the module's documentation.
    async fn decide(&mut self, jobs: &[HoldJob]) -> Result<Vec<Outcome>, sqlx::Error> {
        let now_ms = crate::audit::now_ms();
        let ids: Vec<Uuid> = jobs.iter().map(|_| Uuid::new_v4()).collect();
        let orgs: Vec<Uuid> = jobs.iter().map(|j| j.org).collect();
        let keys: Vec<&str> = jobs.iter().map(|j| j.key_id.as_str()).collect();
        let intents: Vec<&str> = jobs.iter().map(|j| j.request.intent_id.as_str()).collect();
        let agents: Vec<&str> = jobs.iter().map(|j| j.request.agent.as_str()).collect();
        let capabilities: Vec<&str> = jobs.iter().map(|j| j.request.capability.as_str()).collect();
        let currencies: Vec<&str> = jobs.iter().map(|j| j.request.currency.as_str()).collect();
        let amounts: Vec<i64> = jobs.iter().map(|j| j.request.amount_micros).collect();
        // Held until the intent's deadline, and never longer than MAX_HOLD_MS from now.
        let expires: Vec<f64> = jobs
            .iter()
            .map(|j| {
                j.request
                    .expires_at_ms
                    .clamp(0, now_ms.saturating_add(MAX_HOLD_MS)) as f64
                    / 1000.0
            })
            .collect();
        let conn = self.connection().await?;
        let result: Result<Vec<Decision>, sqlx::Error> = sqlx::query_as(
            "SELECT o_index, o_outcome, o_subject, o_hard, o_why, o_budgets, o_alerts
               FROM agentnet_reserve_batch($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&orgs)
        .bind(&keys)
        .bind(&intents)
        .bind(&agents)
        .bind(&capabilities)
        .bind(&currencies)
        .bind(&amounts)
        .bind(&expires)
        .bind(&ids)
        .fetch_all(&mut **conn)
        .await;
        let rows = match result {
            Ok(rows) => {
                if let Some((_, at)) = &mut self.conn {
                    *at = Instant::now();
                }
                rows
            }
            Err(e) => {
                // Postgres answered: the connection is sound. Anything else (I/O, protocol)
                // may have left it in an unknown state; a new one serves the next batch.
                if !matches!(e, sqlx::Error::Database(_))
                    && let Some((conn, _)) = self.conn.take()
                {
                    drop(conn.detach());
                }
                return Err(e);
            }
        };
        outcomes(jobs, &ids, rows)
    }
}

/// The function's rows as outcomes, one per job in order.
fn outcomes(
    jobs: &[HoldJob],
    ids: &[Uuid],
    rows: Vec<Decision>,
) -> Result<Vec<Outcome>, sqlx::Error> {
    let bookkeeping = || sqlx::Error::Protocol("reservation bookkeeping".into());
    if rows.len() != jobs.len() {
        return Err(bookkeeping());
    }
    let mut out = Vec::with_capacity(rows.len());
    for (j, (index, outcome, subject, hard, why, budgets, alerts)) in rows.into_iter().enumerate() {
        if usize::try_from(index).ok() != Some(j + 1) {
            return Err(bookkeeping());
        }
        out.push(match (outcome.as_str(), subject) {
            ("held", _) => Outcome::Held(Reservation {
                reservation_id: *ids.get(j).ok_or_else(bookkeeping)?,
                budgets,
                alerts: alerts
                    .into_iter()
                    .map(|budget| Alert {
                        budget,
                        threshold: 80,
                    })
                    .collect(),
            }),
            ("paused", _) => Outcome::Paused,
            ("denied", Some(policy)) => Outcome::Denied {
                policy,
                why: why.unwrap_or_default(),
            },
            ("approval", Some(policy)) => Outcome::NeedsApproval { policy },
            ("refused", Some(budget)) => Outcome::Refused { budget, hard },
            _ => return Err(bookkeeping()),
        });
    }
    Ok(out)
}
