//! The REST control plane under `/api/v1` (`specs/gateway-api.md`).
//!
//! Every error is `{"error": {"code", "message"}}`; internal errors are logged, never
//! returned. Every endpoint authenticates its caller (`Authorization: Bearer agn_…`),
//! enforces a role and the key's scopes, and rate-limits per key (429 with `Retry-After`).
//! The OpenAPI document is served at `/api/v1/openapi.json`.

mod handlers;

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::Serialize;
use tower::ServiceExt;
use uuid::Uuid;

use crate::budgets::BudgetError;
use crate::ingest::IngestError;
use crate::keys::{KeyError, KeyScope, Principal};
use crate::orgs::OrgError;
use crate::pauses::PauseError;
use crate::policies::{PolicyError, PolicyRefusal};
use crate::runs::RunsError;
use crate::{Gateway, Role};

pub use handlers::openapi_json;

/// The largest request body, except ingestion's.
pub const MAX_BODY: usize = 1024 * 1024;
/// The largest ingestion body.
pub const MAX_INGEST_BODY: usize = 32 * 1024 * 1024;

/// The error body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable code, such as `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `conflict`, `approval_required`, `hard_stop`, `policy_denied`, `paused`,
    /// `rate_limited`, `busy`, `database_unavailable` or `internal`.
    pub code: String,
    /// For people.
    pub message: String,
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn internal(e: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the gateway's log",
        )
    }

    fn unavailable() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is unavailable; retry later",
        );
        e.retry_after = Some(5);
        e
    }

    fn db(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_) => {
                tracing::warn!(error = %e, "database unavailable");
                Self::unavailable()
            }
            sqlx::Error::Database(d)
                if d.code()
                    .as_deref()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")) =>
            {
                tracing::warn!(error = %e, "database unavailable");
                Self::unavailable()
            }
            _ => Self::internal(&e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code: self.code.to_owned(),
                    message: self.message,
                },
            }),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        r
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::db(e)
    }
}

impl From<crate::DbError> for ApiError {
    fn from(e: crate::DbError) -> Self {
        match e {
            crate::DbError::Query(e) => ApiError::db(e),
            other => ApiError::internal(&other),
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Malformed | KeyError::Invalid => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
            }
            KeyError::BadRequest(m) => ApiError::bad_request(m),
            KeyError::NotFound => ApiError::not_found(e.to_string()),
            KeyError::Throttled(wait) => {
                let mut api =
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", e.to_string());
                api.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
                api
            }
            KeyError::Db(e) => e.into(),
        }
    }
}

impl From<OrgError> for ApiError {
    fn from(e: OrgError) -> Self {
        match e {
            OrgError::BadRequest(m) => ApiError::bad_request(m),
            OrgError::NotFound(_) => ApiError::not_found(e.to_string()),
            OrgError::Exists(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            OrgError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            OrgError::Db(e) => e.into(),
        }
    }
}

impl From<PolicyRefusal> for ApiError {
    fn from(e: PolicyRefusal) -> Self {
        match e {
            PolicyRefusal::Denied { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "policy_denied", e.to_string())
            }
            PolicyRefusal::NeedsApproval { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "approval_required", e.to_string())
            }
        }
    }
}

impl From<BudgetError> for ApiError {
    fn from(e: BudgetError) -> Self {
        match e {
            BudgetError::Invalid(m) => ApiError::bad_request(m),
            BudgetError::NotFound(_) => ApiError::not_found(e.to_string()),
            BudgetError::Exists => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            BudgetError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            BudgetError::ApprovalRequired { .. } => ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "approval_required",
                e.to_string(),
            ),
            BudgetError::HardStop { .. } => {
                ApiError::new(StatusCode::PAYMENT_REQUIRED, "hard_stop", e.to_string())
            }
            BudgetError::Policy(p) => p.into(),
            BudgetError::Paused(_) => ApiError::new(StatusCode::FORBIDDEN, "paused", e.to_string()),
            BudgetError::Db(e) => e.into(),
        }
    }
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::Invalid(m) => ApiError::bad_request(m),
            PolicyError::NotFound(_) => ApiError::not_found(e.to_string()),
            PolicyError::Decided(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            PolicyError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            PolicyError::Budget(b) => b.into(),
            PolicyError::Db(e) => e.into(),
        }
    }
}

impl From<PauseError> for ApiError {
    fn from(e: PauseError) -> Self {
        match e {
            PauseError::Invalid(m) => ApiError::bad_request(m),
            PauseError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            PauseError::Sign(_) => ApiError::internal(&e),
            PauseError::Db(e) => e.into(),
        }
    }
}

impl From<RunsError> for ApiError {
    fn from(e: RunsError) -> Self {
        match e {
            RunsError::Invalid(m) => ApiError::bad_request(m),
            RunsError::NotFound => ApiError::not_found(e.to_string()),
            RunsError::Db(e) => e.into(),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Invalid(m) => ApiError::bad_request(m),
            IngestError::Busy => {
                let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string());
                e.retry_after = Some(1);
                e
            }
            IngestError::Stopped => ApiError::internal(&e),
            IngestError::Db(e) => e.into(),
        }
    }
}

/// GCRA rate limits per key (an API key's id, a client address).
pub(crate) struct Limiter<K: std::hash::Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
}

/// Per-key rate limits.
pub(crate) type KeyLimiter = Limiter<String>;
/// Per-address limits on key checks that reach the database.
pub(crate) type AddrLimiter = Limiter<std::net::IpAddr>;

impl<K: std::hash::Hash + Eq + Clone> std::fmt::Debug for Limiter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("keys", &self.limiter.len())
            .finish()
    }
}

impl<K: std::hash::Hash + Eq + Clone> Limiter<K> {
    pub(crate) fn new(per_minute: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Limiter {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst)),
        }
    }

    /// Takes one request from `key`'s allowance, or says how long to wait.
    pub(crate) fn check(&self, key: &K) -> Result<(), Duration> {
        self.limiter.check_key(key).map_err(|not_until| {
            not_until.wait_time_from(governor::clock::DefaultClock::default().now())
        })
    }

    /// Forgets keys whose allowance is full again, so memory stays bounded by the keys
    /// active within the last refill time.
    pub(crate) fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// Counters served at `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    by_class: [AtomicU64; 5],
    duration_buckets: [AtomicU64; BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum_us: AtomicU64,
    pub(crate) runs: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) reserved: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
}

impl Metrics {
    fn observe(&self, status: StatusCode, elapsed: Duration) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.duration_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.duration_count.fetch_add(1, Ordering::Relaxed);
        self.duration_sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, gw: &Gateway) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(out, "# TYPE agentnet_gateway_http_requests_total counter");
        for (i, c) in self.by_class.iter().enumerate() {
            let _ = writeln!(
                out,
                "agentnet_gateway_http_requests_total{{class=\"{}xx\"}} {}",
                i + 1,
                g(c)
            );
        }
        let _ = writeln!(
            out,
            "# TYPE agentnet_gateway_http_request_duration_seconds histogram"
        );
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "agentnet_gateway_http_request_duration_seconds_bucket{{le=\"{b}\"}} {}",
                g(&self.duration_buckets[i])
            );
        }
        let count = g(&self.duration_count);
        let _ = writeln!(
            out,
            "agentnet_gateway_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "agentnet_gateway_http_request_duration_seconds_sum {}",
            g(&self.duration_sum_us) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "agentnet_gateway_http_request_duration_seconds_count {count}"
        );
        for (name, help, v) in [
            ("ingested_runs_total", "runs written", &self.runs),
            ("ingested_events_total", "events written", &self.events),
            (
                "ingested_duplicates_total",
                "runs sent again and not counted",
                &self.duplicates,
            ),
            (
                "reservations_total",
                "budget reservations granted",
                &self.reserved,
            ),
            (
                "reservations_refused_total",
                "budget reservations refused",
                &self.refused,
            ),
            (
                "rate_limited_total",
                "requests refused by a key's rate limit",
                &self.rate_limited,
            ),
        ] {
            let _ = writeln!(out, "# HELP agentnet_gateway_{name} {help}");
            let _ = writeln!(out, "# TYPE agentnet_gateway_{name} counter");
            let _ = writeln!(out, "agentnet_gateway_{name} {}", g(v));
        }
        let pool = gw.db().pool();
        let _ = writeln!(out, "# TYPE agentnet_gateway_db_connections gauge");
        let _ = writeln!(
            out,
            "agentnet_gateway_db_connections{{state=\"open\"}} {}",
            pool.size()
        );
        let _ = writeln!(
            out,
            "agentnet_gateway_db_connections{{state=\"idle\"}} {}",
            pool.num_idle()
        );
        out
    }
}

/// The caller, from `Authorization: Bearer agn_…`, after its key's rate limit.
#[derive(Debug)]
pub(crate) struct Caller(pub(crate) Principal);

impl FromRequestParts<Gateway> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> Result<Self, ApiError> {
        let key = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "send `Authorization: Bearer agn_<key id>_<secret>`",
                )
            })?;
        // Authenticated first: a caller who knows only a key's id cannot spend its allowance.
        // A check the cache cannot answer costs the caller's address one database lookup
        // from its own allowance, so that bad keys cannot flood the database.
        let ip = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let principal = gw.authenticate_from(key, ip).await?;
        if let Err(wait) = gw.limiter().check(&principal.key_id) {
            gw.metrics().rate_limited.fetch_add(1, Ordering::Relaxed);
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "this key's rate limit is used up; retry in {} ms",
                    wait.as_millis()
                ),
            );
            e.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
            return Err(e);
        }
        Ok(Caller(principal))
    }
}

/// Checks the caller's role and scope.
pub(crate) fn require(caller: &Principal, role: Role, scope: KeyScope) -> Result<(), ApiError> {
    if caller.role < role {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this needs the {} role", role.as_str()),
        ));
    }
    if !caller.has_scope(scope) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this key's scopes do not include {scope:?}"),
        ));
    }
    Ok(())
}

pub(crate) fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(t)| t).map_err(|e| {
        let status = e.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            "unsupported_media_type"
        } else {
            "bad_request"
        };
        let status = if status.is_client_error() {
            status
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, code, e.body_text())
    })
}

pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

pub(crate) fn path_str(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(s)| s)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

pub(crate) fn path_id(p: Result<Path<String>, PathRejection>) -> Result<Uuid, ApiError> {
    let s = path_str(p)?;
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("`{s}` is not a UUID")))
}

async fn observe(State(gw): State<Gateway>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    gw.metrics().observe(response.status(), elapsed);
    tracing::info!(
        %method, %path, status = response.status().as_u16(),
        micros = elapsed.as_micros() as u64, "request"
    );
    response
}

/// The gateway's routes.
pub fn router(gw: Gateway) -> Router {
    use axum::routing::{delete, put};
    use handlers as h;
    let ingest = Router::new()
        .route("/api/v1/ingest/runs", post(h::ingest_runs))
        .layer(DefaultBodyLimit::max(MAX_INGEST_BODY));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(h::readyz))
        .route("/metrics", get(h::metrics))
        .route("/api/v1/openapi.json", get(h::openapi))
        .route("/api/v1/org", get(h::get_org).patch(h::rename_org))
        .route("/api/v1/teams", get(h::list_teams).post(h::create_team))
        .route(
            "/api/v1/teams/{id}",
            get(h::get_team)
                .patch(h::rename_team)
                .delete(h::delete_team),
        )
        .route(
            "/api/v1/members",
            get(h::list_members).post(h::create_member),
        )
        .route(
            "/api/v1/members/{id}",
            get(h::get_member)
                .put(h::update_member)
                .delete(h::delete_member),
        )
        .route("/api/v1/keys", get(h::list_keys).post(h::create_key))
        .route("/api/v1/keys/{id}/rotate", post(h::rotate_key))
        .route("/api/v1/keys/{id}", delete(h::revoke_key))
        .route("/api/v1/agents", get(h::list_agents).post(h::create_agent))
        .route(
            "/api/v1/agents/{did}",
            get(h::get_agent)
                .put(h::update_agent)
                .delete(h::delete_agent),
        )
        .route("/api/v1/network/agents", get(h::network_agents))
        .merge(ingest)
        .route("/api/v1/runs", get(h::list_runs))
        .route("/api/v1/runs/{id}", get(h::get_run))
        .route("/api/v1/events", get(h::list_events))
        .route("/api/v1/costs", get(h::costs))
        .route("/api/v1/prices", get(h::list_prices).post(h::add_price))
        .route(
            "/api/v1/budgets",
            get(h::list_budgets).post(h::create_budget),
        )
        .route("/api/v1/budgets/reserve", post(h::reserve))
        .route("/api/v1/budgets/settle", post(h::settle))
        .route(
            "/api/v1/budgets/{id}",
            get(h::get_budget)
                .patch(h::update_budget)
                .delete(h::delete_budget),
        )
        .route("/api/v1/budgets/{id}/alerts", get(h::budget_alerts))
        .route("/api/v1/budgets/{id}/reauthorise", post(h::reauthorise))
        .route("/api/v1/webhook", put(h::set_webhook))
        .route(
            "/api/v1/policies",
            get(h::list_policies).post(h::create_policy),
        )
        .route("/api/v1/policies/{id}", delete(h::delete_policy))
        .route("/api/v1/approvals", get(h::list_approvals))
        .route("/api/v1/approvals/{id}/approve", post(h::approve))
        .route("/api/v1/approvals/{id}/deny", post(h::deny))
        .route("/api/v1/pauses", get(h::list_pauses).post(h::create_pause))
        .route("/api/v1/paused", get(h::list_paused))
        .route("/api/v1/audit", get(h::list_audit))
        .route("/api/v1/audit/verify", get(h::verify_audit))
        .fallback(|| async { ApiError::not_found("no such endpoint; see /api/v1/openapi.json") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method; see /api/v1/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(gw.clone(), observe))
        .with_state(gw)
        .layer(tower::limit::ConcurrencyLimitLayer::new(MAX_IN_FLIGHT))
        .layer(axum::middleware::from_fn(
            |r: Request, n: Next| async move {
                match tokio::time::timeout(REQUEST_TIMEOUT, n.run(r)).await {
                    Ok(resp) => resp,
                    Err(_) => ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "timeout",
                        "the request took too long",
                    )
                    .into_response(),
                }
            },
        ))
}

/// Requests served at once; more wait.
pub const MAX_IN_FLIGHT: usize = 1_024;
/// The longest a request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the gateway serves before its database is up: `/healthz`, a `/readyz` that says why
/// it is not ready, and `database_unavailable` for everything else. Once [`Startup::ready`]
/// is given the gateway, requests go to [`router`].
#[derive(Clone, Debug, Default)]
pub struct Startup {
    ready: Arc<OnceLock<Router>>,
    last_error: Arc<std::sync::Mutex<String>>,
}

impl Startup {
    /// Records why the database cannot be used yet (shown by `/readyz`).
    pub fn failed(&self, why: String) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = why;
        }
    }

    /// Switches to the real routes.
    pub fn ready(&self, gw: Gateway) {
        let _ = self.ready.set(router(gw));
    }

    /// The router that dispatches by the state above.
    pub fn router(&self) -> Router {
        Router::new().fallback(dispatch).with_state(self.clone())
    }
}

async fn dispatch(State(startup): State<Startup>, request: Request) -> Response {
    if let Some(router) = startup.ready.get() {
        return match router.clone().oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
    }
    match request.uri().path() {
        "/healthz" => "ok".into_response(),
        _ => {
            let why = startup
                .last_error
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default();
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                format!("the gateway is waiting for its database: {why}"),
            );
            e.retry_after = Some(5);
            e.into_response()
        }
    }
}
