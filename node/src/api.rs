//! The local HTTP API for agents (`specs/local-api.md`): JSON in and out, OpenAPI at
//! `/v1/openapi.json`, Prometheus metrics at `/metrics`.
//!
//! It listens on 127.0.0.1 by default. Bound to any other address it requires
//! `Authorization: Bearer <token>`, the token being the contents of `api-token` in the data
//! directory (created with mode 0600 on first use).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentnet_discovery::SearchQuery;
use agentnet_protocol::{
    AgentCard, Capability, Did, Intent, IntentId, IntentStatus, Kind, Outcome, Price,
    SignedEnvelope, Usage,
};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use crate::handle::{AgentSpec, IntentRequest, NodeHandle};
use crate::intent::AgentReply;
use crate::node::NodeError;

/// The token file's name in the data directory.
pub const API_TOKEN_FILE: &str = "api-token";
/// The largest request body.
pub const MAX_API_BODY: usize = 256 * 1024;
/// Requests handled at once.
pub const MAX_API_CONCURRENCY: usize = 512;
/// The longest an inbox long-poll waits.
pub const MAX_POLL_WAIT: Duration = Duration::from_secs(60);
/// The default API address.
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:7340";

/// Where and how the API listens.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ApiConfig {
    /// The address to bind. Default 127.0.0.1:7340.
    pub listen: SocketAddr,
    /// The data directory, where `api-token` lives.
    pub data_dir: PathBuf,
}

impl ApiConfig {
    /// The API on `listen`, with its token (when one is needed) in `data_dir`.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        ApiConfig {
            listen,
            data_dir: data_dir.into(),
        }
    }
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiStartError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The token file could not be read or created.
    #[error("api token {path}: {reason}")]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// A running API server.
#[derive(Debug)]
pub struct ApiServer {
    local_addr: SocketAddr,
    token: Option<String>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bearer token it requires, if it requires one.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Stops serving.
    pub fn stop(self) {
        self.task.abort();
    }

    /// Waits until the server stops (it runs until stopped or the process ends).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Reads the API token from `data_dir`, creating a random one (mode 0600) if there is none.
pub fn api_token(data_dir: &Path) -> Result<String, ApiStartError> {
    let path = data_dir.join(API_TOKEN_FILE);
    let token_err = |reason: String| ApiStartError::Token {
        path: path.clone(),
        reason,
    };
    match std::fs::read_to_string(&path) {
        Ok(token) => {
            let token = token.trim().to_owned();
            if token.len() < 32 {
                return Err(token_err("the token is shorter than 32 characters".into()));
            }
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| token_err(e.to_string()))?;
            let token = hex::encode(bytes);
            std::fs::create_dir_all(data_dir).map_err(|e| token_err(e.to_string()))?;
            write_private(&path, token.as_bytes()).map_err(|e| token_err(e.to_string()))?;
            Ok(token)
        }
        Err(e) => Err(token_err(e.to_string())),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Starts the API for `node`.
pub async fn serve(node: NodeHandle, config: ApiConfig) -> Result<ApiServer, ApiStartError> {
    let token = if config.listen.ip().is_loopback() {
        None
    } else {
        Some(api_token(&config.data_dir)?)
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ApiStartError::Bind {
            addr: config.listen,
            reason: e.to_string(),
        })?;
    let local_addr = listener.local_addr().map_err(|e| ApiStartError::Bind {
        addr: config.listen,
        reason: e.to_string(),
    })?;
    let app = router(node, token.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the local API stopped");
        }
    });
    Ok(ApiServer {
        local_addr,
        token,
        task,
    })
}

/// The API's routes, for `node`, requiring `token` when it is set.
pub fn router(node: NodeHandle, token: Option<String>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/agents", post(register_agent).get(list_agents))
        .route("/v1/agents/{did}", get(get_agent).delete(remove_agent))
        .route("/v1/agents/{did}/intents", get(inbox))
        .route("/v1/search", get(search))
        .route("/v1/intents", post(send_intent))
        .route("/v1/intents/{id}/result", post(post_result))
        .route("/v1/trust/{did}", get(trust))
        .route("/v1/peers", get(peers).post(dial))
        .route("/v1/peers/block", post(block))
        .route("/v1/peers/unblock", post(unblock))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(token, authorise))
        .layer(DefaultBodyLimit::max(MAX_API_BODY))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            MAX_API_CONCURRENCY,
        ))
        .with_state(node)
}

/// Every error: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code, such as `bad_request` or `not_found`.
    pub code: String,
    /// What was wrong, for people.
    pub message: String,
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        use crate::intent::BudgetError;
        use crate::store::StoreError;
        match e {
            NodeError::Invalid(m) | NodeError::Refused(m) => ApiError::bad_request(m),
            NodeError::Search(e) => ApiError::bad_request(e.to_string()),
            NodeError::UnknownAgent(m) => ApiError::not_found(m),
            NodeError::Paused(did) => {
                ApiError::new(StatusCode::CONFLICT, "paused", format!("{did} is paused"))
            }
            NodeError::Budget(BudgetError::Denied(m)) => {
                ApiError::new(StatusCode::PAYMENT_REQUIRED, "budget_denied", m)
            }
            NodeError::Budget(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "gateway_unavailable",
                e.to_string(),
            ),
            NodeError::Busy(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", m),
            NodeError::Store(StoreError::Full { .. }) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "storage_full",
                "the node's disk is full; nothing was changed",
            ),
            NodeError::Stopped => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "stopped",
                "the node is stopping",
            ),
            other => {
                // Never leak internals: log them, answer generically.
                tracing::error!(error = %other, "local API internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the node's log",
                )
            }
        }
    }
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    match body {
        Ok(Json(t)) => Ok(t),
        Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        )),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than {MAX_API_BODY} bytes"),
        )),
        Err(e) => Err(ApiError::bad_request(e.body_text())),
    }
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

fn path<T>(p: Result<UrlPath<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|UrlPath(t)| t)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

fn did(s: &str) -> Result<Did, ApiError> {
    s.parse::<Did>()
        .map_err(|e| ApiError::bad_request(format!("`{s}` is not a valid DID: {e}")))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authorise(
    State(token): State<Option<String>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if token.is_none() {
        // Loopback without a token: only programs on this machine may call, so refuse what
        // a browser page could send (DNS rebinding, cross-site requests).
        let host_ok = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .is_none_or(is_loopback_host);
        if !host_ok || headers.contains_key(header::ORIGIN) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this API answers local programs only: no `Origin` header, and `Host` must be localhost or a loopback address",
            )
            .into_response();
        }
    }
    if let Some(token) = token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("send `Authorization: Bearer <token>` with the token in the data directory's `{API_TOKEN_FILE}`"),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(request).await
}

/// Whether a `Host` header names this machine: `localhost`, `127.x.x.x` or `[::1]`, with
/// any port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /v1/openapi.json")
}

/// `GET /v1/status`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatusBody {
    /// The node's libp2p PeerId.
    pub peer_id: String,
    /// Addresses it listens on.
    pub listen_addrs: Vec<String>,
    /// Connected peers.
    pub connected_peers: usize,
    /// Agents hosted here.
    pub agents: usize,
    /// Capabilities in the search index.
    pub capabilities: usize,
    /// The embedder's id.
    pub embedder: String,
    /// Indexed capabilities whose vectors were embedded with older corpus statistics
    /// (they are re-embedded in the background).
    pub stale_capabilities: usize,
    /// Connected peers subscribed to the registry topic.
    pub registry_peers: usize,
}

#[utoipa::path(get, path = "/v1/status", responses((status = 200, body = StatusBody)))]
async fn status(State(node): State<NodeHandle>) -> Result<Json<StatusBody>, ApiError> {
    Ok(Json(StatusBody {
        peer_id: node.peer_id().to_string(),
        listen_addrs: node
            .listen_addrs()
            .await?
            .iter()
            .map(|a| a.to_string())
            .collect(),
        connected_peers: node.connected_peers().await?.len(),
        agents: node.agents().len(),
        capabilities: node.capabilities(),
        embedder: node.embedder(),
        stale_capabilities: node.stale_capabilities(),
        registry_peers: node.registry_peers().await?,
    }))
}

/// A capability in a registration.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapabilityBody {
    /// A token, unique within the agent.
    pub name: String,
    /// What it does (searched).
    pub description: String,
    /// Tags for filtering.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Version, free text.
    #[serde(default)]
    pub version: String,
    /// Price per call, in micros of `currency`.
    #[serde(default)]
    pub price_micros: Option<u64>,
    /// The price's currency, such as `USD`.
    #[serde(default)]
    pub currency: Option<String>,
}

/// `POST /v1/agents`: a new agent, or a card its agent signed (`card`, hex).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// What the agent is.
    #[serde(default)]
    pub description: String,
    /// What it can do.
    #[serde(default)]
    pub capabilities: Vec<CapabilityBody>,
    /// Where else it can be reached.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// A pre-signed card envelope, hex-encoded, instead of the fields above.
    #[serde(default)]
    pub card: Option<String>,
}

impl From<Capability> for CapabilityBody {
    fn from(c: Capability) -> Self {
        CapabilityBody {
            price_micros: c.price.as_ref().map(|p| p.amount_micros),
            currency: c.price.map(|p| p.currency),
            name: c.name,
            description: c.description,
            tags: c.tags,
            version: c.version,
        }
    }
}

/// The DID of a registered agent.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DidBody {
    /// The agent's did:key.
    pub did: String,
}

fn capability(c: CapabilityBody) -> Result<Capability, ApiError> {
    let price = match (c.price_micros, c.currency) {
        (Some(amount_micros), Some(currency)) => Some(Price {
            amount_micros,
            currency,
        }),
        (None, None) => None,
        _ => {
            return Err(ApiError::bad_request(format!(
                "capability `{}`: give both price_micros and currency, or neither",
                c.name
            )));
        }
    };
    Ok(Capability {
        name: c.name,
        description: c.description,
        tags: c.tags,
        version: c.version,
        price,
    })
}

#[utoipa::path(post, path = "/v1/agents", request_body = RegisterBody,
    responses((status = 201, body = DidBody), (status = 400, body = ErrorBody)))]
async fn register_agent(
    State(node): State<NodeHandle>,
    body: Result<Json<RegisterBody>, JsonRejection>,
) -> Result<(StatusCode, Json<DidBody>), ApiError> {
    let body = json_body(body)?;
    if let Some(card) = body.card {
        if !body.name.is_empty() || !body.capabilities.is_empty() {
            return Err(ApiError::bad_request(
                "give either `card` or the agent's fields, not both",
            ));
        }
        let bytes = hex::decode(card.trim())
            .map_err(|e| ApiError::bad_request(format!("`card` is not hex: {e}")))?;
        let envelope = SignedEnvelope::from_bytes_of_kind(&bytes, Kind::AgentCard)
            .map_err(|e| ApiError::bad_request(format!("`card`: {e}")))?;
        let did = envelope.signer().clone();
        node.publish(&envelope).await?;
        return Ok((
            StatusCode::CREATED,
            Json(DidBody {
                did: did.to_string(),
            }),
        ));
    }
    if body.name.is_empty() {
        return Err(ApiError::bad_request("`name` is required"));
    }
    if body.capabilities.is_empty() {
        return Err(ApiError::bad_request("at least one capability is required"));
    }
    let capabilities = body
        .capabilities
        .into_iter()
        .map(capability)
        .collect::<Result<Vec<_>, _>>()?;
    let mut spec = AgentSpec::new(body.name, body.description, capabilities);
    spec.endpoints = body.endpoints;
    let did = node.register_agent(spec).await?;
    Ok((
        StatusCode::CREATED,
        Json(DidBody {
            did: did.to_string(),
        }),
    ))
}

/// `GET /v1/agents`: the agents hosted here.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AgentsBody {
    /// Their DIDs.
    pub agents: Vec<String>,
}

#[utoipa::path(get, path = "/v1/agents", responses((status = 200, body = AgentsBody)))]
async fn list_agents(State(node): State<NodeHandle>) -> Json<AgentsBody> {
    Json(AgentsBody {
        agents: node.agents().iter().map(|d| d.to_string()).collect(),
    })
}

/// An agent's card.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CardBody {
    /// The agent.
    pub did: String,
    /// Whether its capabilities are in this node's search index (searchable here).
    pub indexed: bool,
    /// Display name.
    pub name: String,
    /// What it is.
    pub description: String,
    /// What it can do.
    pub capabilities: Vec<CapabilityBody>,
    /// Other endpoints.
    pub endpoints: Vec<String>,
    /// The PeerId of its host node.
    pub host: String,
    /// The card's version.
    pub seq: u64,
    /// When it was signed (ms since the epoch).
    pub issued_at_ms: u64,
    /// When it expires (ms since the epoch).
    pub expires_at_ms: u64,
    /// Whether this node hosts it.
    pub hosted_here: bool,
    /// Whether a gateway this node obeys has paused it.
    pub paused: bool,
}

fn card_body(node: &NodeHandle, card: AgentCard) -> CardBody {
    CardBody {
        hosted_here: card.host == node.peer_id(),
        paused: node.is_paused(&card.did),
        indexed: node.is_indexed(&card.did),
        did: card.did.to_string(),
        name: card.name,
        description: card.description,
        capabilities: card
            .capabilities
            .into_iter()
            .map(CapabilityBody::from)
            .collect(),
        endpoints: card.endpoints,
        host: card.host.to_string(),
        seq: card.seq,
        issued_at_ms: card.issued_at.as_millis(),
        expires_at_ms: card.expires_at.as_millis(),
    }
}

#[utoipa::path(get, path = "/v1/agents/{did}", params(("did" = String, Path)),
    responses((status = 200, body = CardBody), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
async fn get_agent(
    State(node): State<NodeHandle>,
    p: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<CardBody>, ApiError> {
    let did = did(&path(p)?)?;
    if node.is_removed(&did)? {
        return Err(ApiError::new(
            StatusCode::GONE,
            "removed",
            format!("{did} was withdrawn"),
        ));
    }
    match node.agent(&did)? {
        Some(card) => Ok(Json(card_body(&node, card))),
        None => Err(ApiError::not_found(format!("no card for {did}"))),
    }
}

#[utoipa::path(delete, path = "/v1/agents/{did}", params(("did" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn remove_agent(
    State(node): State<NodeHandle>,
    p: Result<UrlPath<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let did = did(&path(p)?)?;
    node.remove_agent(&did).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/search` parameters.
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// What to find, in words.
    pub q: String,
    /// Page size, 1 to 100. Default 10.
    #[serde(default)]
    pub k: Option<usize>,
    /// Comma-separated tags; a result carries all of them.
    #[serde(default)]
    pub tags: Option<String>,
    /// The least trust, in [0, 1].
    #[serde(default)]
    pub min_trust: Option<f64>,
    /// The previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// One search result.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchResult {
    /// The agent.
    pub did: String,
    /// Its name.
    pub name: String,
    /// The matching capability.
    pub capability: String,
    /// The composite score.
    pub score: f64,
    /// How the score was made (similarity, trust, freshness, price and the ranks).
    #[schema(value_type = Object)]
    pub breakdown: serde_json::Value,
}

/// A page of results.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchBody {
    /// Best first.
    pub results: Vec<SearchResult>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/search", params(SearchParams),
    responses((status = 200, body = SearchBody), (status = 400, body = ErrorBody)))]
async fn search(
    State(node): State<NodeHandle>,
    q: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Json<SearchBody>, ApiError> {
    let params = query(q)?;
    let mut search = SearchQuery::new(params.q, params.k.unwrap_or(10));
    search.tags = params
        .tags
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    search.min_trust = params.min_trust;
    search.cursor = params.cursor;
    let node2 = node.clone();
    // Search embeds and ranks on a blocking thread, off the async workers.
    let page = tokio::task::spawn_blocking(move || node2.search(&search))
        .await
        .map_err(|_| ApiError::from(NodeError::Stopped))??;
    Ok(Json(SearchBody {
        results: page
            .hits
            .into_iter()
            .map(|h| SearchResult {
                did: h.did.to_string(),
                name: h.name,
                capability: h.capability,
                score: h.score,
                breakdown: serde_json::to_value(h.breakdown).unwrap_or_default(),
            })
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// A cost.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CostBody {
    /// Micros of `currency`.
    pub amount_micros: u64,
    /// Such as `USD`.
    pub currency: String,
}

/// `POST /v1/intents`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntentBody {
    /// The sending agent (hosted here).
    pub from: String,
    /// The agent asked to act.
    pub to: String,
    /// The capability invoked.
    pub capability: String,
    /// The input, any JSON.
    #[schema(value_type = Object)]
    #[serde(default)]
    pub input: serde_json::Value,
    /// Milliseconds the callee has; default 30,000, at most 3,600,000.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The most the caller pays.
    #[serde(default)]
    pub max_cost: Option<CostBody>,
}

/// How an intent ended.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IntentOutcomeBody {
    /// The intent's id (hex).
    pub intent_id: String,
    /// `success`, `failure`, `timeout` or `declined`.
    pub outcome: String,
    /// The callee's output, if it completed.
    #[schema(value_type = Object)]
    pub output: Option<serde_json::Value>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// What the callee says it cost.
    pub cost: Option<CostBody>,
    /// Milliseconds from sending to the answer.
    pub latency_ms: u64,
    /// The caller's receipt (content id, hex).
    pub receipt: String,
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
        Outcome::Timeout => "timeout",
        _ => "declined",
    }
}

#[utoipa::path(post, path = "/v1/intents", request_body = IntentBody,
    responses((status = 200, body = IntentOutcomeBody), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 402, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn send_intent(
    State(node): State<NodeHandle>,
    body: Result<Json<IntentBody>, JsonRejection>,
) -> Result<Json<IntentOutcomeBody>, ApiError> {
    let body = json_body(body)?;
    let timeout = Duration::from_millis(body.timeout_ms.unwrap_or(30_000));
    if timeout.is_zero() || timeout > agentnet_protocol::limits::MAX_INTENT_TTL {
        return Err(ApiError::bad_request(
            "timeout_ms must be between 1 and 3600000",
        ));
    }
    let mut request = IntentRequest::new(
        did(&body.from)?,
        did(&body.to)?,
        body.capability,
        body.input,
    )
    .with_timeout(timeout);
    if let Some(cost) = body.max_cost {
        request = request.with_max_cost(Price {
            amount_micros: cost.amount_micros,
            currency: cost.currency,
        });
    }
    let outcome = node.send_intent(request).await?;
    let (output, cost) = match &outcome.result {
        Some(r) if r.status == IntentStatus::Completed => {
            (serde_json::from_slice(&r.output).ok(), r.cost.clone())
        }
        Some(r) => (None, r.cost.clone()),
        None => (None, None),
    };
    Ok(Json(IntentOutcomeBody {
        intent_id: outcome.intent_id.to_string(),
        outcome: outcome_name(outcome.outcome).to_owned(),
        output,
        error: outcome.error,
        cost: cost.map(|c| CostBody {
            amount_micros: c.amount_micros,
            currency: c.currency,
        }),
        latency_ms: outcome.latency.as_millis() as u64,
        receipt: hex::encode(outcome.receipt.0),
    }))
}

/// An intent waiting in an agent's inbox.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InboxIntent {
    /// Its id (hex); answer at `POST /v1/intents/{id}/result`.
    pub id: String,
    /// The calling agent.
    pub from: String,
    /// The agent asked (this inbox's owner).
    pub to: String,
    /// The capability invoked.
    pub capability: String,
    /// The input.
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
    /// The most the caller pays.
    pub max_cost: Option<CostBody>,
    /// When it was issued (ms since the epoch).
    pub issued_at_ms: u64,
    /// When the caller stops waiting (ms since the epoch).
    pub deadline_ms: u64,
}

fn inbox_intent(intent: Intent) -> InboxIntent {
    InboxIntent {
        id: intent.id.to_string(),
        from: intent.from.to_string(),
        to: intent.to.to_string(),
        capability: intent.capability,
        input: serde_json::from_slice(&intent.input).unwrap_or_default(),
        max_cost: intent.max_cost.map(|c| CostBody {
            amount_micros: c.amount_micros,
            currency: c.currency,
        }),
        issued_at_ms: intent.issued_at.as_millis(),
        deadline_ms: intent.deadline.as_millis(),
    }
}

/// `GET /v1/agents/{did}/intents` parameters.
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PollParams {
    /// How long to wait for an intent, in ms; default 30,000, at most 60,000.
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

#[utoipa::path(get, path = "/v1/agents/{did}/intents", params(("did" = String, Path), PollParams),
    responses((status = 200, body = InboxIntent, description = "the next intent; with `Accept: text/event-stream`, a stream of `intent` events"),
              (status = 204, description = "none arrived in time"), (status = 404, body = ErrorBody)))]
async fn inbox(
    State(node): State<NodeHandle>,
    headers: HeaderMap,
    p: Result<UrlPath<String>, PathRejection>,
    q: Result<Query<PollParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let did = did(&path(p)?)?;
    let params = query(q)?;
    if !node.agents().contains(&did) {
        return Err(ApiError::not_found(format!("{did} is not hosted here")));
    }
    let wants_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if wants_sse {
        let stream = futures::stream::unfold((node, did), |(node, did)| async move {
            loop {
                match node.next_intent(&did, MAX_POLL_WAIT).await {
                    Ok(Some(intent)) => {
                        let event = Event::default()
                            .event("intent")
                            .json_data(inbox_intent(intent))
                            .map_err(|e| std::io::Error::other(e.to_string()));
                        return Some((event, (node, did)));
                    }
                    Ok(None) => continue,
                    Err(_) => return None,
                }
            }
        });
        return Ok(Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let wait = Duration::from_millis(params.wait_ms.unwrap_or(30_000)).min(MAX_POLL_WAIT);
    match node.next_intent(&did, wait).await? {
        Some(intent) => Ok(Json(inbox_intent(intent)).into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// `POST /v1/intents/{id}/result`: the agent's answer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultBody {
    /// `completed`, `failed` or `declined`.
    pub status: String,
    /// The output if completed, any JSON.
    #[schema(value_type = Object)]
    #[serde(default)]
    pub output: Option<serde_json::Value>,
    /// Why it failed or was declined.
    #[serde(default)]
    pub error: String,
    /// What it cost.
    #[serde(default)]
    pub cost: Option<CostBody>,
    /// Input tokens used.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens used.
    #[serde(default)]
    pub output_tokens: u64,
    /// Compute time used, in ms.
    #[serde(default)]
    pub compute_ms: u64,
}

#[utoipa::path(post, path = "/v1/intents/{id}/result", params(("id" = String, Path)), request_body = ResultBody,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn post_result(
    State(node): State<NodeHandle>,
    p: Result<UrlPath<String>, PathRejection>,
    body: Result<Json<ResultBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let id: IntentId = path(p)?
        .parse()
        .map_err(|e| ApiError::bad_request(format!("the intent id must be 32 hex digits: {e}")))?;
    let body = json_body(body)?;
    let status = match body.status.as_str() {
        "completed" => IntentStatus::Completed,
        "failed" => IntentStatus::Failed,
        "declined" => IntentStatus::Declined,
        other => {
            return Err(ApiError::bad_request(format!(
                "status must be completed, failed or declined, not `{other}`"
            )));
        }
    };
    let mut reply = match status {
        IntentStatus::Completed => {
            AgentReply::completed(body.output.unwrap_or(serde_json::Value::Null))
        }
        IntentStatus::Failed => AgentReply::failed(body.error),
        _ => AgentReply::declined(body.error),
    };
    if let Some(cost) = body.cost {
        reply = reply.with_cost(Price {
            amount_micros: cost.amount_micros,
            currency: cost.currency,
        });
    }
    reply.usage = Usage {
        input_tokens: body.input_tokens,
        output_tokens: body.output_tokens,
        compute_ms: body.compute_ms,
    };
    node.answer(id, reply)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/trust/{did}` parameters.
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TrustParams {
    /// A capability, for the per-capability score.
    #[serde(default)]
    pub capability: Option<String>,
}

/// This node's trust in an agent.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TrustBody {
    /// The agent.
    pub did: String,
    /// The capability, if one was asked for.
    pub capability: Option<String>,
    /// The score in [0, 1] that ranking uses.
    pub score: f64,
    /// Reputation through the trust graph.
    pub reputation: f64,
    /// Evidence from others' attestations.
    pub network_evidence: f64,
    /// Evidence from this node's own receipts.
    pub direct_evidence: f64,
}

#[utoipa::path(get, path = "/v1/trust/{did}", params(("did" = String, Path), TrustParams),
    responses((status = 200, body = TrustBody), (status = 400, body = ErrorBody)))]
async fn trust(
    State(node): State<NodeHandle>,
    p: Result<UrlPath<String>, PathRejection>,
    q: Result<Query<TrustParams>, QueryRejection>,
) -> Result<Json<TrustBody>, ApiError> {
    let did = did(&path(p)?)?;
    let params = query(q)?;
    let score = node.trust(&did, params.capability.as_deref());
    Ok(Json(TrustBody {
        did: did.to_string(),
        capability: params.capability,
        score: score.score,
        reputation: score.reputation,
        network_evidence: score.network_evidence,
        direct_evidence: score.direct_evidence,
    }))
}

/// A connected peer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PeerBody {
    /// Its PeerId.
    pub peer_id: String,
    /// This node's penalty score of it (0 is clean).
    pub penalty: f64,
    /// Gossipsub's score of it.
    pub gossip_score: Option<f64>,
}

/// `GET /v1/peers`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PeersBody {
    /// Connected peers.
    pub peers: Vec<PeerBody>,
}

#[utoipa::path(get, path = "/v1/peers", responses((status = 200, body = PeersBody)))]
async fn peers(State(node): State<NodeHandle>) -> Result<Json<PeersBody>, ApiError> {
    Ok(Json(PeersBody {
        peers: node
            .peers()
            .await?
            .into_iter()
            .map(|p| PeerBody {
                peer_id: p.peer_id,
                penalty: p.penalty,
                gossip_score: p.gossip_score,
            })
            .collect(),
    }))
}

/// `POST /v1/peers`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DialBody {
    /// The peer's multiaddr, ending in `/p2p/<PeerId>`.
    pub addr: String,
}

#[utoipa::path(post, path = "/v1/peers", request_body = DialBody,
    responses((status = 202, description = "the dial started"), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn dial(
    State(node): State<NodeHandle>,
    body: Result<Json<DialBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let body = json_body(body)?;
    let addr: libp2p::Multiaddr = body
        .addr
        .parse()
        .map_err(|e| ApiError::bad_request(format!("addr `{}`: {e}", body.addr)))?;
    if !addr
        .iter()
        .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
    {
        return Err(ApiError::bad_request(format!(
            "addr `{addr}` must end in /p2p/<PeerId>"
        )));
    }
    match node.dial(addr).await {
        Ok(()) => Ok(StatusCode::ACCEPTED),
        // Refused at once: the peer is blocked, is this node, or the address is unusable.
        Err(NodeError::Network(m)) => Err(ApiError::new(StatusCode::CONFLICT, "dial_refused", m)),
        Err(e) => Err(e.into()),
    }
}

/// `POST /v1/peers/block` and `/v1/peers/unblock`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockBody {
    /// PeerIds, at most [`crate::MAX_BLOCKED_PER_COMMAND`].
    pub peers: Vec<String>,
}

fn peer_ids(body: BlockBody) -> Result<Vec<libp2p::PeerId>, ApiError> {
    if body.peers.len() > crate::MAX_BLOCKED_PER_COMMAND {
        return Err(ApiError::bad_request(format!(
            "{} peers in one call; at most {}",
            body.peers.len(),
            crate::MAX_BLOCKED_PER_COMMAND
        )));
    }
    body.peers
        .iter()
        .map(|p| {
            p.parse()
                .map_err(|e| ApiError::bad_request(format!("peer `{p}`: {e}")))
        })
        .collect()
}

#[utoipa::path(post, path = "/v1/peers/block", request_body = BlockBody,
    responses((status = 204), (status = 400, body = ErrorBody)))]
async fn block(
    State(node): State<NodeHandle>,
    body: Result<Json<BlockBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    node.block_peers(peer_ids(json_body(body)?)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/peers/unblock", request_body = BlockBody,
    responses((status = 204), (status = 400, body = ErrorBody)))]
async fn unblock(
    State(node): State<NodeHandle>,
    body: Result<Json<BlockBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    node.unblock_peers(peer_ids(json_body(body)?)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
async fn metrics(State(node): State<NodeHandle>) -> Result<Response, ApiError> {
    let m = node.metrics();
    let peers = node.connected_peers().await?.len();
    let mut out = String::new();
    let mut put = |name: &str, kind: &str, help: &str, value: u64| {
        out.push_str(&format!(
            "# HELP agentnet_{name} {help}\n# TYPE agentnet_{name} {kind}\nagentnet_{name} {value}\n"
        ));
    };
    put(
        "gossip_accepted_total",
        "counter",
        "Gossip messages accepted.",
        m.gossip_accepted,
    );
    put(
        "gossip_rejected_total",
        "counter",
        "Gossip messages rejected as invalid.",
        m.gossip_rejected,
    );
    put(
        "gossip_ignored_total",
        "counter",
        "Gossip messages ignored as stale.",
        m.gossip_ignored,
    );
    put(
        "gossip_received_total",
        "counter",
        "Gossip messages received.",
        m.gossip_received,
    );
    put(
        "gossip_received_bytes_total",
        "counter",
        "Payload bytes of the gossip messages received.",
        m.gossip_bytes,
    );
    put(
        "gossip_dropped_total",
        "counter",
        "Gossip messages dropped by fault injection.",
        m.gossip_dropped,
    );
    put(
        "gossip_repaired_total",
        "counter",
        "Records sync brought that this node gossiped again.",
        m.gossip_repaired,
    );
    put(
        "synced_records_total",
        "counter",
        "Records learnt by anti-entropy.",
        m.synced_records,
    );
    put(
        "sync_requests_total",
        "counter",
        "Sync requests sent: openings, ranges and fetches.",
        m.sync_requests,
    );
    put(
        "sync_answered_total",
        "counter",
        "Sync requests from peers answered.",
        m.sync_answered,
    );
    put(
        "intents_sent_total",
        "counter",
        "Intents sent by local agents.",
        m.intents_sent,
    );
    put(
        "intents_received_total",
        "counter",
        "Intents delivered to local agents.",
        m.intents_received,
    );
    put(
        "intents_rejected_total",
        "counter",
        "Intents refused before delivery.",
        m.intents_rejected,
    );
    put(
        "intents_completed_total",
        "counter",
        "Intents local agents completed.",
        m.intents_completed,
    );
    put(
        "intent_timeouts_total",
        "counter",
        "Sent intents that timed out.",
        m.intent_timeouts,
    );
    put(
        "peer_penalties_total",
        "counter",
        "Penalties given to peers.",
        m.penalties,
    );
    put("agents", "gauge", "Agents hosted here.", m.agents);
    put(
        "capabilities",
        "gauge",
        "Capabilities in the search index.",
        m.capabilities,
    );
    put(
        "replay_cache_entries",
        "gauge",
        "Intents remembered against replay.",
        m.replay_cache,
    );
    put("connected_peers", "gauge", "Connected peers.", peers as u64);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "agentnet node local API",
        description = "The API a node serves to its agents. See specs/local-api.md."
    ),
    paths(
        status,
        register_agent,
        list_agents,
        get_agent,
        remove_agent,
        inbox,
        search,
        send_intent,
        post_result,
        trust,
        peers,
        dial,
        block,
        unblock,
        metrics
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        StatusBody,
        CapabilityBody,
        RegisterBody,
        DidBody,
        AgentsBody,
        CardBody,
        SearchResult,
        SearchBody,
        CostBody,
        IntentBody,
        IntentOutcomeBody,
        InboxIntent,
        ResultBody,
        TrustBody,
        DialBody,
        BlockBody,
        PeerBody,
        PeersBody
    ))
)]
struct ApiDoc;

/// The API's OpenAPI document.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_owned())
}

#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, description = "this document")))]
async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}
