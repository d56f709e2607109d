//! The reservation batcher: holds budget for many reservations in one transaction
//! (`specs/gateway-api.md#exactness`).
//!
//! Reservations that race for one hot budget serialise on its row lock, and a lock is held
//! until the commit is flushed. One transaction per reservation therefore caps a hot budget
//! at one flush per reservation. The batcher takes every reservation waiting (up to
//! [`MAX_BATCH`]) and, in one transaction:
//!
//! 1. locks every budget that applies to any of them, in budget-id order (`FOR UPDATE`), so
//!    the totals it reads are current and no other writer, in this process or another
//!    gateway on the same database, can change them until the commit;
//! 2. decides each reservation in arrival order against those totals: admitted only if every
//!    budget it touches stays within `spent + reserved + amount <= limit` (or `<= 120%` once
//!    re-authorised), all or none; a period that has ended starts over first;
//! 3. writes the new totals, the reservations and their holds, and the 80% alerts;
//! 4. commits, then answers each reservation.
//!
//! Exactness rests on the locks of step 1, not on the batching: a batch admits exactly what
//! one-at-a-time conditional updates in the same order would.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::budgets::{Alert, MAX_HOLD_MS, Reservation, ReserveRequest};
use crate::db::Db;
use crate::policies;

/// The most reservations one transaction decides.
pub(crate) const MAX_BATCH: usize = 512;
/// Reservations waiting for a batch; beyond it callers wait for room.
pub(crate) const QUEUE: usize = 4_096;
/// Tries of a batch that hit a deadlock or a lost connection.
const TRIES: usize = 3;

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
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut result = decide(&db, &jobs).await;
        for _ in 1..TRIES {
            match &result {
                Err(e) if retryable(e) => result = decide(&db, &jobs).await,
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

/// A locked budget's totals as the batch goes.
#[derive(Clone, Copy, Debug)]
struct Totals {
    spent: i64,
    reserved: i64,
    limit: i64,
    reauthorised: bool,
    stale: bool,
    changed: bool,
}

/// What the batch learns of each job before it locks anything.
#[derive(Debug, Default)]
struct Context {
    team: Option<Uuid>,
    paused: bool,
    /// A `deny` or `max_cost` policy that refuses it.
    denied: Option<(Uuid, String)>,
    /// An `approval` policy that holds it.
    hold: Option<Uuid>,
}

/// The agents' teams, pauses and policies of every job, in one query, before the lock.
async fn context(db: &Db, jobs: &[HoldJob]) -> Result<Vec<Context>, sqlx::Error> {
    let orgs: Vec<Uuid> = jobs.iter().map(|j| j.org).collect();
    let agents: Vec<&str> = jobs.iter().map(|j| j.request.agent.as_str()).collect();
    let capabilities: Vec<&str> = jobs.iter().map(|j| j.request.capability.as_str()).collect();
    type Row = (
        i64,
        Option<Uuid>,
        bool,
        Option<Uuid>,
        Option<String>,
        Option<String>,
        Option<i64>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "WITH j AS (
             SELECT u.i, u.o, u.a, u.c,
                    (SELECT ag.team_id FROM agents ag WHERE ag.org_id = u.o AND ag.did = u.a) AS t,
                    EXISTS (SELECT 1 FROM paused_agents pa WHERE pa.org_id = u.o AND pa.did = u.a) AS paused
               FROM UNNEST($1::uuid[], $2::text[], $3::text[]) WITH ORDINALITY AS u(o, a, c, i))
         SELECT j.i, j.t, j.paused, p.id, p.kind, p.capability, p.max_cost_micros
           FROM j LEFT JOIN policies p
             ON p.org_id = j.o
            AND (p.scope = 'org' OR (p.scope = 'agent' AND p.scope_id = j.a)
                 OR (p.scope = 'team' AND p.scope_id = j.t::text))
            AND (p.capability IS NULL OR p.capability = j.c)
          ORDER BY j.i, CASE p.kind WHEN 'deny' THEN 0 WHEN 'max_cost' THEN 1 ELSE 2 END, p.id",
    )
    .bind(&orgs)
    .bind(&agents)
    .bind(&capabilities)
    .fetch_all(db.pool())
    .await?;
    let mut out: Vec<Context> = (0..jobs.len()).map(|_| Context::default()).collect();
    for (i, team, paused, policy, kind, capability, max_cost) in rows {
        let Some(j) = usize::try_from(i - 1).ok().filter(|j| *j < jobs.len()) else {
            continue;
        };
        let c = &mut out[j];
        c.team = team;
        c.paused = paused;
        let (Some(policy), Some(kind)) = (policy, kind) else {
            continue;
        };
        if c.denied.is_some() {
            continue;
        }
        let amount = jobs[j].request.amount_micros;
        match kind.as_str() {
            "deny" => {
                c.denied = Some((
                    policy,
                    match capability {
                        Some(cap) => format!("intents to `{cap}` are not allowed"),
                        None => "intents are not allowed".into(),
                    },
                ));
            }
            "max_cost" => {
                let max = max_cost.unwrap_or(0);
                if amount > max {
                    c.denied = Some((
                        policy,
                        format!("the intent may cost {amount} micros; the most allowed is {max}"),
                    ));
                }
            }
            _ => {
                c.hold.get_or_insert(policy);
            }
        }
    }
    Ok(out)
}

/// Begins the batch's transaction and locks every budget that applies to any job, in id
/// order. A job's team budget is found through the agent's team, looked up in the same
/// statement, so this does not wait for [`context`].
async fn lock(
    db: &Db,
    jobs: &[HoldJob],
) -> Result<
    (
        sqlx::Transaction<'static, sqlx::Postgres>,
        Vec<(i64, Uuid, i64, i64, i64, bool, bool)>,
    ),
    sqlx::Error,
> {
    let mut tx = db.pool().begin().await?;
    let orgs: Vec<Uuid> = jobs.iter().map(|j| j.org).collect();
    let currencies: Vec<&str> = jobs.iter().map(|j| j.request.currency.as_str()).collect();
    let agents: Vec<&str> = jobs.iter().map(|j| j.request.agent.as_str()).collect();
    let keys: Vec<&str> = jobs.iter().map(|j| j.key_id.as_str()).collect();
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT u.i, b.id, b.spent_micros, b.reserved_micros, b.limit_micros, b.reauthorised,
                (b.period <> 'total' AND b.period_start < {start})
           FROM budgets b
           JOIN UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY
                AS u(o, c, a, k, i)
             ON b.org_id = u.o AND b.currency = u.c
            AND ((b.scope = 'org' AND b.scope_id = u.o::text)
              OR (b.scope = 'agent' AND b.scope_id = u.a)
              OR (b.scope = 'team' AND b.scope_id =
                    (SELECT ag.team_id::text FROM agents ag WHERE ag.org_id = u.o AND ag.did = u.a))
              OR (b.scope = 'key' AND b.scope_id = u.k))
          ORDER BY b.id
          FOR UPDATE OF b",
        start = crate::budgets::PERIOD_START,
    )))
    .bind(&orgs)
    .bind(&currencies)
    .bind(&agents)
    .bind(&keys)
    .fetch_all(&mut *tx)
    .await?;
    Ok((tx, rows))
}

async fn decide(db: &Db, jobs: &[HoldJob]) -> Result<Vec<Outcome>, sqlx::Error> {
    let n = jobs.len();
    // 1. The jobs' pauses and policies, and the locks, at once on two connections.
    let (ctx, locked) = tokio::join!(context(db, jobs), lock(db, jobs));
    let (mut tx, rows) = locked?;
    let ctx = ctx?;
    let mut totals: HashMap<Uuid, Totals> = HashMap::new();
    let mut of_job: Vec<Vec<Uuid>> = vec![Vec::new(); n];
    for (i, id, spent, reserved, limit, reauthorised, stale) in rows {
        totals.entry(id).or_insert(Totals {
            spent: if stale { 0 } else { spent },
            reserved,
            limit,
            reauthorised: reauthorised && !stale,
            stale,
            changed: stale,
        });
        if let Some(list) = usize::try_from(i - 1).ok().and_then(|i| of_job.get_mut(i)) {
            list.push(id);
        }
    }

    // 2. Decide in arrival order.
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(n);
    let mut crossed: Vec<(usize, Uuid)> = Vec::new();
    let mut held: Vec<usize> = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        if ctx[j].paused {
            outcomes.push(Some(Outcome::Paused));
            continue;
        }
        if let Some((policy, why)) = &ctx[j].denied {
            outcomes.push(Some(Outcome::Denied {
                policy: *policy,
                why: why.clone(),
            }));
            continue;
        }
        let mut used = None;
        if let Some(policy) = ctx[j].hold {
            match policies::consume(&mut tx, job.org, policy, &job.request).await? {
                Some(approval) => used = Some(approval),
                None => {
                    outcomes.push(Some(Outcome::NeedsApproval { policy }));
                    continue;
                }
            }
        }
        let amount = job.request.amount_micros;
        let refusal = of_job[j].iter().find_map(|id| {
            let t = totals.get(id)?;
            let after = t.spent + t.reserved + amount;
            if after > t.limit + t.limit / 5 {
                Some(Outcome::Refused {
                    budget: *id,
                    hard: true,
                })
            } else if after > t.limit && !t.reauthorised {
                Some(Outcome::Refused {
                    budget: *id,
                    hard: false,
                })
            } else {
                None
            }
        });
        if let Some(refusal) = refusal {
            if let Some(approval) = used {
                policies::unconsume(&mut tx, approval).await?;
            }
            outcomes.push(Some(refusal));
            continue;
        }
        for id in &of_job[j] {
            if let Some(t) = totals.get_mut(id) {
                let before = t.spent + t.reserved;
                t.reserved += amount;
                t.changed = true;
                if before * 5 < t.limit * 4 && (before + amount) * 5 >= t.limit * 4 {
                    crossed.push((j, *id));
                }
            }
        }
        held.push(j);
        outcomes.push(None);
    }

    // 3. New totals, reservations and holds in one statement; then the alerts.
    let changed: Vec<(&Uuid, &Totals)> = totals.iter().filter(|(_, t)| t.changed).collect();
    let b_ids: Vec<Uuid> = changed.iter().map(|(id, _)| **id).collect();
    let b_spent: Vec<i64> = changed.iter().map(|(_, t)| t.spent).collect();
    let b_reserved: Vec<i64> = changed.iter().map(|(_, t)| t.reserved).collect();
    let b_reauthorised: Vec<bool> = changed.iter().map(|(_, t)| t.reauthorised).collect();
    let b_stale: Vec<bool> = changed.iter().map(|(_, t)| t.stale).collect();
    let now_ms = crate::audit::now_ms();
    let mut ids = Vec::with_capacity(held.len());
    let (
        mut r_org,
        mut r_key,
        mut r_intent,
        mut r_agent,
        mut r_cap,
        mut r_cur,
        mut r_amount,
        mut r_exp,
    ) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let (mut h_res, mut h_budget, mut h_amount) = (Vec::new(), Vec::new(), Vec::new());
    for &j in &held {
        let job = &jobs[j];
        let id = Uuid::new_v4();
        ids.push(id);
        r_org.push(job.org);
        r_key.push(job.key_id.as_str());
        r_intent.push(job.request.intent_id.as_str());
        r_agent.push(job.request.agent.as_str());
        r_cap.push(job.request.capability.as_str());
        r_cur.push(job.request.currency.as_str());
        r_amount.push(job.request.amount_micros);
        // Held until the intent's deadline, and never longer than MAX_HOLD_MS from now.
        let expires = job
            .request
            .expires_at_ms
            .clamp(0, now_ms.saturating_add(MAX_HOLD_MS));
        r_exp.push(expires as f64 / 1000.0);
        for budget in &of_job[j] {
            h_res.push(id);
            h_budget.push(*budget);
            h_amount.push(job.request.amount_micros);
        }
    }
    if !b_ids.is_empty() || !ids.is_empty() {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH b AS (
                 UPDATE budgets SET spent_micros = u.s, reserved_micros = u.r, reauthorised = u.re,
                        period_start = CASE WHEN u.st THEN {start} ELSE period_start END
                   FROM UNNEST($1::uuid[], $2::int8[], $3::int8[], $4::bool[], $5::bool[]) AS u(id, s, r, re, st)
                  WHERE budgets.id = u.id
                 RETURNING 1),
             r AS (
                 INSERT INTO budget_reservations (id, org_id, key_id, intent_id, agent, capability, currency,
                                                  amount_micros, status, expires_at)
                 SELECT i, o, k, n, a, c, cur, m, 'held', to_timestamp(e)
                   FROM UNNEST($6::uuid[], $7::uuid[], $8::text[], $9::text[], $10::text[], $11::text[],
                               $12::text[], $13::int8[], $14::float8[]) AS u(i, o, k, n, a, c, cur, m, e)
                 RETURNING 1),
             h AS (
                 INSERT INTO budget_holds (reservation_id, budget_id, amount_micros)
                 SELECT * FROM UNNEST($15::uuid[], $16::uuid[], $17::int8[])
                 RETURNING 1)
             SELECT (SELECT count(*) FROM b), (SELECT count(*) FROM r), (SELECT count(*) FROM h)",
            start = crate::budgets::PERIOD_START,
        )))
        .bind(&b_ids)
        .bind(&b_spent)
        .bind(&b_reserved)
        .bind(&b_reauthorised)
        .bind(&b_stale)
        .bind(&ids)
        .bind(&r_org)
        .bind(&r_key)
        .bind(&r_intent)
        .bind(&r_agent)
        .bind(&r_cap)
        .bind(&r_cur)
        .bind(&r_amount)
        .bind(&r_exp)
        .bind(&h_res)
        .bind(&h_budget)
        .bind(&h_amount)
        .execute(&mut *tx)
        .await?;
    }
    let mut fired: Vec<Uuid> = Vec::new();
    if !crossed.is_empty() {
        let budgets: Vec<Uuid> = crossed.iter().map(|(_, b)| *b).collect();
        let rows: Vec<(Uuid,)> = sqlx::query_as(
            "INSERT INTO budget_alerts (org_id, budget_id, threshold, period_start)
             SELECT org_id, id, 80, period_start FROM budgets WHERE id = ANY($1)
             ON CONFLICT (budget_id, threshold, period_start) DO NOTHING
             RETURNING budget_id",
        )
        .bind(&budgets)
        .fetch_all(&mut *tx)
        .await?;
        fired = rows.into_iter().map(|(b,)| b).collect();
    }
    tx.commit().await?;

    // 4. Answers.
    let mut held_ids = held.iter().zip(ids);
    let mut next_held = held_ids.next();
    let mut out = Vec::with_capacity(n);
    for (j, outcome) in outcomes.into_iter().enumerate() {
        if let Some(o) = outcome {
            out.push(o);
            continue;
        }
        match next_held {
            Some((&hj, id)) if hj == j => {
                let alerts = crossed
                    .iter()
                    .filter(|(cj, b)| *cj == j && fired.contains(b))
                    .map(|(_, b)| Alert {
                        budget: *b,
                        threshold: 80,
                    })
                    .collect();
                out.push(Outcome::Held(Reservation {
                    reservation_id: id,
                    budgets: of_job[j].clone(),
                    alerts,
                }));
                next_held = held_ids.next();
            }
            _ => return Err(sqlx::Error::Protocol("reservation bookkeeping".into())),
        }
    }
    Ok(out)
}
