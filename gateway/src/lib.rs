//! The agentnet gateway: an organisation's control plane over its agents.
//!
//! It persists to Postgres (sqlx, migrations applied at start-up) and serves the REST
//! control plane under `/api/v1` (`specs/gateway-api.md`): organisations, teams, members and
//! API keys with roles and rotation; the organisation's agents and their membership
//! credentials; run and cost ingestion through a batching writer; budgets with exact
//! reservations under concurrency and the 80/100/120% ladder; policies and approvals; the
//! kill switch, whose pauses are signed `PauseNotice`s published on the network; and the
//! tamper-evident audit chain with signed checkpoints.
//!
//! [`Gateway`] holds the shared state; [`api::router`] serves it.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod api;
pub mod audit;
pub mod budgets;
pub mod credentials;
pub mod db;
pub mod ingest;
pub mod keys;
pub mod network;
pub mod orgs;
pub mod pauses;
pub mod policies;
mod reserver;
pub mod runs;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use agentnet_protocol::Keypair;

pub use db::{Db, DbError, DbOptions};

/// A role, from least to most privileged.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads.
    Viewer,
    /// Runs agents: reserves and settles budget, ingests runs.
    Developer,
    /// Manages a team's budgets, policies, approvals and pauses.
    TeamLead,
    /// Everything in the organisation.
    Admin,
}

impl Role {
    /// Its name in the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::TeamLead => "team_lead",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "developer" => Some(Role::Developer),
            "team_lead" => Some(Role::TeamLead),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The network as the gateway sees it: its embedded node.
pub trait Network: Send + Sync + std::fmt::Debug + 'static {
    /// Publishes one signed envelope (the gateway's pause notices) on the network.
    fn publish(
        &self,
        envelope: agentnet_protocol::SignedEnvelope,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;

    /// Agents whose cards the node holds, by DID, after `after`: at most `limit`.
    fn agents(&self, after: &str, limit: usize) -> Vec<SeenAgent>;
}

/// An agent seen on the network.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SeenAgent {
    /// Its DID.
    pub did: String,
    /// Its name.
    pub name: String,
    /// Its capabilities' names.
    pub capabilities: Vec<String>,
    /// The PeerId of the node that hosts it.
    pub host: String,
    /// Issuers of the credentials its card carries.
    pub credential_issuers: Vec<String>,
}

/// Settings of a gateway.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Requests per minute per API key.
    pub rate_per_minute: u32,
    /// Requests one key may send at once above the rate.
    pub rate_burst: u32,
    /// The batching writer's settings.
    pub ingest: ingest::WriterConfig,
    /// How long a webhook delivery may take.
    pub webhook_timeout: Duration,
    /// Whether alert webhooks may point at loopback, private and link-local addresses
    /// ([`webhooks`]). Default false: an admin's URL cannot reach inside the gateway's
    /// network.
    pub private_webhooks: bool,
    /// Key checks per minute one client address may send to the database (checks the
    /// cache answers are free), and the burst above that: bad keys cannot flood the
    /// database, and valid ones are looked up once a second at most
    /// ([`keys::AUTH_CACHE_TTL`]).
    pub lookups_per_minute: u32,
    /// The burst of key checks one address may send at once.
    pub lookups_burst: u32,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            rate_per_minute: 6_000,
            rate_burst: 1_000,
            ingest: ingest::WriterConfig::default(),
            webhook_timeout: Duration::from_secs(5),
            private_webhooks: false,
            lookups_per_minute: 3_000,
            lookups_burst: 600,
        }
    }
}

/// The gateway's shared state: cheap to clone.
#[derive(Clone, Debug)]
pub struct Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    db: Db,
    audit: audit::Auditor,
    ingest: ingest::Writer,
    reserver: reserver::Reserver,
    publisher: Option<Arc<dyn Network>>,
    limiter: api::KeyLimiter,
    metrics: api::Metrics,
    auth: keys::AuthCache,
    delivery: budgets::Delivery,
    lookups: api::AddrLimiter,
}

impl Gateway {
    /// A gateway on `db` that signs with `key`, publishing pauses through `publisher` if
    /// given. Starts the batching writer.
    pub fn new(
        db: Db,
        key: Keypair,
        network: Option<Arc<dyn Network>>,
        config: GatewayConfig,
    ) -> Gateway {
        let audit = audit::Auditor::new(key);
        let inner = Arc::new_cyclic(|weak| Inner {
            ingest: ingest::Writer::spawn(db.clone(), weak.clone(), config.ingest.clone()),
            reserver: reserver::Reserver::spawn(db.clone()),
            limiter: api::KeyLimiter::new(config.rate_per_minute, config.rate_burst),
            metrics: api::Metrics::default(),
            auth: keys::AuthCache::default(),
            lookups: api::AddrLimiter::new(config.lookups_per_minute, config.lookups_burst),
            delivery: budgets::Delivery {
                timeout: config.webhook_timeout,
                private: config.private_webhooks,
            },
            db,
            audit,
            publisher: network,
        });
        Gateway { inner }
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Gateway {
        Gateway { inner }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The audit writer, which holds the gateway's key.
    pub fn audit(&self) -> &audit::Auditor {
        &self.inner.audit
    }

    /// The batching ingestion writer.
    pub fn ingest(&self) -> &ingest::Writer {
        &self.inner.ingest
    }

    /// The gateway's DID: it signs checkpoints, pause notices and credentials.
    pub fn did(&self) -> agentnet_protocol::Did {
        self.inner.audit.did()
    }

    pub(crate) fn publisher(&self) -> Option<&Arc<dyn Network>> {
        self.inner.publisher.as_ref()
    }

    /// Checks a presented key (`agn_<id>_<secret>`) and returns who it is. A key checked in
    /// the last [`keys::AUTH_CACHE_TTL`] is not looked up again.
    pub async fn authenticate(&self, presented: &str) -> Result<keys::Principal, keys::KeyError> {
        self.authenticate_from(presented, None).await
    }

    /// [`Gateway::authenticate`] for a request from `addr`: a check the cache cannot answer
    /// takes one database lookup from that address's allowance
    /// ([`GatewayConfig::lookups_per_minute`]), or is refused with how long to wait.
    pub async fn authenticate_from(
        &self,
        presented: &str,
        addr: Option<std::net::IpAddr>,
    ) -> Result<keys::Principal, keys::KeyError> {
        let (key_id, secret) = keys::parse(presented)?;
        let hash = keys::hash(secret);
        if let Some(principal) = self.inner.auth.get(key_id, &hash) {
            return Ok(principal);
        }
        if let Some(addr) = addr {
            self.inner
                .lookups
                .check(&addr)
                .map_err(keys::KeyError::Throttled)?;
        }
        let principal = keys::authenticate(self.db(), presented).await?;
        self.inner.auth.put(key_id, hash, principal.clone());
        Ok(principal)
    }

    /// Forgets cached checks of `key_id`, or of every key.
    pub(crate) fn forget_key(&self, key_id: Option<&str>) {
        self.inner.auth.forget(key_id);
    }

    pub(crate) fn reserver(&self) -> &reserver::Reserver {
        &self.inner.reserver
    }

    /// How alert webhooks are delivered.
    pub fn delivery(&self) -> &budgets::Delivery {
        &self.inner.delivery
    }

    pub(crate) fn limiter(&self) -> &api::KeyLimiter {
        &self.inner.limiter
    }

    pub(crate) fn metrics(&self) -> &api::Metrics {
        &self.inner.metrics
    }

    /// Runs the gateway's periodic chores until the process ends: releasing expired
    /// reservations, signing audit checkpoints, keeping partitions ahead of time and
    /// delivering alert webhooks.
    pub async fn run_maintenance(self) {
        // Webhooks in a task of their own: a slow receiver must not hold up the rest.
        let db = self.db().clone();
        let delivery = self.delivery().clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                if let Err(e) = budgets::deliver_webhooks(&db, &delivery).await {
                    tracing::warn!(error = %e, "cannot deliver alert webhooks");
                }
            }
        });
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        let mut last_checkpoint = tokio::time::Instant::now();
        let mut last_partitions: Option<tokio::time::Instant> = None;
        loop {
            tick.tick().await;
            self.limiter().prune();
            self.inner.lookups.prune();
            if let Err(e) = budgets::release_expired(self.db()).await {
                tracing::warn!(error = %e, "cannot release expired reservations");
            }
            if last_checkpoint.elapsed() >= audit::CHECKPOINT_INTERVAL {
                last_checkpoint = tokio::time::Instant::now();
                if let Err(e) = self.audit().checkpoint_all(self.db().pool()).await {
                    tracing::warn!(error = %e, "cannot sign audit checkpoints");
                }
            }
            if last_partitions.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
                last_partitions = Some(tokio::time::Instant::now());
                if let Err(e) = self.db().ensure_partitions().await {
                    tracing::warn!(error = %e, "cannot create partitions");
                }
            }
        }
    }
}
