//! The endpoints, each with its OpenAPI description.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::{ApiError, Caller, ErrorBody, ErrorDetail, body, path_id, path_str, query, require};
use crate::audit::{self, AuditRow, Verification};
use crate::budgets::{
    self, AlertRow, Budget, BudgetUpdate, NewBudget, Reservation, ReserveRequest, Settlement,
    Webhook,
};
use crate::ingest::{IngestReport, IngestRequest};
use crate::keys::{self, KeyInfo, KeyRequest, KeyScope, NewKey};
use crate::orgs::{self, Agent, AgentRequest, Member, MemberRequest, Org, Team};
use crate::pauses::{self, PauseRecord, PauseRequest};
use crate::policies::{self, Approval, NewPolicy, Policy};
use crate::runs::{
    self, CostLine, CostQuery, Event, EventPage, EventQuery, NewPrice, Price, Run, RunPage,
    RunQuery,
};
use crate::{Gateway, Role, SeenAgent};

type R<T> = Result<T, ApiError>;
type JsonBody<T> = Result<Json<T>, JsonRejection>;
type PathArg = Result<Path<String>, PathRejection>;

fn created<T>(t: T) -> (StatusCode, Json<T>) {
    (StatusCode::CREATED, Json(t))
}

/// Readiness.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Ready {
    /// `up`.
    database: String,
}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Ready), (status = 503, body = ErrorBody)))]
pub(crate) async fn readyz(State(gw): State<Gateway>) -> Response {
    if gw.db().ready().await {
        Json(Ready {
            database: "up".into(),
        })
        .into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database does not answer",
        )
        .into_response()
    }
}

#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(crate) async fn metrics(State(gw): State<Gateway>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        gw.metrics().render(&gw),
    )
        .into_response()
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "health",
    responses((status = 200, description = "this document")))]
pub(crate) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

// ---- organisation, teams, members ----

#[utoipa::path(get, path = "/api/v1/org", tag = "org", security(("key" = [])),
    responses((status = 200, body = Org), (status = 401, body = ErrorBody)))]
pub(crate) async fn get_org(State(gw): State<Gateway>, Caller(c): Caller) -> R<Json<Org>> {
    require(&c, Role::Viewer, KeyScope::Read)?;
    Ok(Json(orgs::org(&gw, &c).await?))
}

/// A new name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NameBody {
    /// 1 to 128 bytes.
    name: String,
}

#[utoipa::path(patch, path = "/api/v1/org", tag = "org", security(("key" = [])), request_body = NameBody,
    responses((status = 200, body = Org), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn rename_org(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    b: JsonBody<NameBody>,
) -> R<Json<Org>> {
    require(&c, Role::Admin, KeyScope::Manage)?;
    let b = body(b)?;
    Ok(Json(orgs::rename_org(&gw, &c, &b.name).await?))
}

#[utoipa::path(get, path = "/api/v1/teams", tag = "org", security(("key" = [])),
    responses((status = 200, body = [Team])))]
pub(crate) async fn list_teams(State(gw): State<Gateway>, Caller(c): Caller) -> R<Json<Vec<Team>>> {
    require(&c, Role::Viewer, KeyScope::Read)?;
    Ok(Json(orgs::teams(&gw, &c).await?))
}

#[utoipa::path(post, path = "/api/v1/teams", tag = "org", security(("key" = [])), request_body = NameBody,
    responses((status = 201, body = Team), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_team(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    b: JsonBody<NameBody>,
) -> R<(StatusCode, Json<Team>)> {
    require(&c, Role::Admin, KeyScope::Manage)?;
    let b = body(b)?;
    Ok(created(orgs::create_team(&gw, &c, &b.name).await?))
}

#[utoipa::path(get, path = "/api/v1/teams/{id}", tag = "org", security(("key" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Team), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_team(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    p: PathArg,
) -> R<Json<Team>> {
    require(&c, Role::Viewer, KeyScope::Read)?;
    Ok(Json(orgs::team(&gw, &c, path_id(p)?).await?))
}

#[utoipa::path(patch, path = "/api/v1/teams/{id}", tag = "org", security(("key" = [])), params(("id" = String, Path)),
    request_body = NameBody, responses((status = 200, body = Team), (status = 404, body = ErrorBody)))]
pub(crate) async fn rename_team(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    p: PathArg,
    b: JsonBody<NameBody>,
) -> R<Json<Team>> {
    require(&c, Role::Admin, KeyScope::Manage)?;
    let id = path_id(p)?;
    let b = body(b)?;
    Ok(Json(orgs::rename_team(&gw, &c, id, &b.name).await?))
}

#[utoipa::path(delete, path = "/api/v1/teams/{id}", tag = "org", security(("key" = [])), params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_team(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    p: PathArg,
) -> R<StatusCode> {
    require(&c, Role::Admin, KeyScope::Manage)?;
    orgs::delete_team(&gw, &c, path_id(p)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/members", tag = "org", security(("key" = [])),
    responses((status = 200, body = [Member])))]
pub(crate) async fn list_members(
    State(gw): State<Gateway>,
    Caller(c): Caller,
) -> R<Json<Vec<Member>>> {
    require(&c, Role::Viewer, KeyScope::Read)?;
    Ok(Json(orgs::members(&gw, &c).await?))
}

#[utoipa::path(post, path = "/api/v1/members", tag = "org", security(("key" = [])), request_body = MemberRequest,
    responses((status = 201, body = Member), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_member(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    b: JsonBody<MemberRequest>,
) -> R<(StatusCode, Json<Member>)> {
    require(&c, Role::Admin, KeyScope::Manage)?;
    let b = body(b)?;
    Ok(created(orgs::create_member(&gw, &c, &b).await?))
}

#[utoipa::path(get, path = "/api/v1/members/{id}", tag = "org", security(("key" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Member), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_member(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    p: PathArg,
) -> R<Json<Member>> {
    require(&c, Role::Viewer, KeyScope::Read)?;
    Ok(Json(orgs::member(&gw, &c, path_id(p)?).await?))
}

#[utoipa::path(put, path = "/api/v1/members/{id}", tag = "org", security(("key" = [])), params(("id" = String, Path)),
    request_body = MemberRequest, responses((status = 200, body = Member), (status = 404, body = ErrorBody)))]
pub(crate) async fn update_member(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    p: PathArg,
    b: JsonBody<MemberRequest>,
) -> R<Json<Member>> {
    require(&c, Role::Admin, KeyScope::Manage)?;
    let id = path_id(p)?;
    let b = body(b)?;
    Ok(Json(orgs::update_member(&gw, &c, id, &b).await?))
}

#[utoipa::path(delete, path = "/api/v1/members/{id}", tag = "org", security(("key" = [])), params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_member(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    p: PathArg,
) -> R<StatusCode> {
    require(&c, Role::Admin, KeyScope::Manage)?;
    orgs::delete_member(&gw, &c, path_id(p)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- keys ----

#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", security(("key" = [])),
    responses((status = 200, body = [KeyInfo]), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_keys(
    State(gw): State<Gateway>,
    Caller(c): Caller,
) -> R<Json<Vec<KeyInfo>>> {
    require(&c, Role::Admin, KeyScope::Read)?;
    Ok(Json(keys::list(gw.db(), &c).await?))
}

#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", security(("key" = [])), request_body = KeyRequest,
    responses((status = 201, body = NewKey), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn create_key(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    b: JsonBody<KeyRequest>,
) -> R<(StatusCode, Json<NewKey>)> {
    require(&c, Role::Admin, KeyScope::Manage)?;
    let b = body(b)?;
    Ok(created(keys::create_key(&gw, &c, &b).await?))
}

/// How long the old secret keeps working.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateBody {
    /// Seconds, at most a week (default an hour).
    #[serde(default)]
    grace_secs: Option<u32>,
}

#[utoipa::path(post, path = "/api/v1/keys/{id}/rotate", tag = "keys", security(("key" = [])),
    params(("id" = String, Path)), request_body = RotateBody,
    responses((status = 200, body = NewKey), (status = 404, body = ErrorBody)))]
pub(crate) async fn rotate_key(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    p: PathArg,
    b: Option<Json<RotateBody>>,
) -> R<Json<NewKey>> {
    let key_id = path_str(p)?;
    // A key may always rotate itself; rotating another key is an admin's job.
    if key_id != c.key_id {
        require(&c, Role::Admin, KeyScope::Manage)?;
    }
    let grace = b
        .map(|Json(b)| b)
        .unwrap_or_default()
        .grace_secs
        .unwrap_or(3600)
        .min(7 * 24 * 3600);
    Ok(Json(keys::rotate(&gw, &c, &key_id, grace).await?))
}

#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys", security(("key" = [])), params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke_key(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    p: PathArg,
) -> R<StatusCode> {
    let key_id = path_str(p)?;
    if key_id != c.key_id {
        require(&c, Role::Admin, KeyScope::Manage)?;
    }
    keys::revoke(&gw, &c, &key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- agents ----

/// A page of agents.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentQuery {
    /// DIDs after this one.
    after: Option<String>,
    /// 1 to 1000 (default 100).
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", security(("key" = [])), params(AgentQuery),
    responses((status = 200, body = [Agent])))]
pub(crate) async fn list_agents(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    q: Result<Query<AgentQuery>, QueryRejection>,
) -> R<Json<Vec<Agent>>> {
    require(&c, Role::Viewer, KeyScope::Read)?;
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1 to 1000"));
    }
    Ok(Json(
        orgs::agents(&gw, &c, q.after.as_deref().unwrap_or(""), limit).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/agents", tag = "agents", security(("key" = [])), request_body = AgentRequest,
    responses((status = 201, body = Agent), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_agent(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    b: JsonBody<AgentRequest>,
) -> R<(StatusCode, Json<Agent>)> {
    require(&c, Role::TeamLead, KeyScope::Manage)?;
    let b = body(b)?;
    Ok(created(orgs::create_agent(&gw, &c, &b).await?))
}

#[utoipa::path(get, path = "/api/v1/agents/{did}", tag = "agents", security(("key" = [])), params(("did" = String, Path)),
    responses((status = 200, body = Agent), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_agent(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    p: PathArg,
) -> R<Json<Agent>> {
    require(&c, Role::Viewer, KeyScope::Read)?;
    Ok(Json(orgs::agent(&gw, &c, &path_str(p)?).await?))
}

#[utoipa::path(put, path = "/api/v1/agents/{did}", tag = "agents", security(("key" = [])), params(("did" = String, Path)),
    request_body = AgentRequest, responses((status = 200, body = Agent), (status = 404, body = ErrorBody)))]
pub(crate) async fn update_agent(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    p: PathArg,
    b: JsonBody<AgentRequest>,
) -> R<Json<Agent>> {
    require(&c, Role::TeamLead, KeyScope::Manage)?;
    let did = path_str(p)?;
    let b = body(b)?;
    Ok(Json(orgs::update_agent(&gw, &c, &did, &b).await?))
}

#[utoipa::path(delete, path = "/api/v1/agents/{did}", tag = "agents", security(("key" = [])), params(("did" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_agent(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    p: PathArg,
) -> R<StatusCode> {
    require(&c, Role::TeamLead, KeyScope::Manage)?;
    orgs::delete_agent(&gw, &c, &path_str(p)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Agents the gateway's node has seen on the network.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NetworkAgents {
    /// Whether the gateway runs a node; without one the list is empty.
    connected: bool,
    /// Cards in the node's registry, by DID.
    agents: Vec<SeenAgent>,
}

#[utoipa::path(get, path = "/api/v1/network/agents", tag = "agents", security(("key" = [])), params(AgentQuery),
    responses((status = 200, body = NetworkAgents)))]
pub(crate) async fn network_agents(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    q: Result<Query<AgentQuery>, QueryRejection>,
) -> R<Json<NetworkAgents>> {
    require(&c, Role::Viewer, KeyScope::Read)?;
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1 to 1000"));
    }
    Ok(Json(match gw.publisher() {
        Some(network) => NetworkAgents {
            connected: true,
            agents: network.agents(q.after.as_deref().unwrap_or(""), limit as usize),
        },
        None => NetworkAgents {
            connected: false,
            agents: Vec::new(),
        },
    }))
}

// ---- ingestion, runs, events, costs, prices ----

#[utoipa::path(post, path = "/api/v1/ingest/runs", tag = "runs", security(("key" = [])), request_body = IngestRequest,
    responses((status = 200, body = IngestReport, description = "committed"), (status = 400, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "busy or the database is unavailable: retry")))]
pub(crate) async fn ingest_runs(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    b: JsonBody<IngestRequest>,
) -> R<Json<IngestReport>> {
    require(&c, Role::Developer, KeyScope::Ingest)?;
    let b = body(b)?;
    let report = gw.ingest().ingest(&c, b).await?;
    let m = gw.metrics();
    m.runs.fetch_add(report.accepted as u64, Ordering::Relaxed);
    m.events.fetch_add(report.events as u64, Ordering::Relaxed);
    m.duplicates
        .fetch_add(report.duplicates as u64, Ordering::Relaxed);
    Ok(Json(report))
}

#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", security(("key" = [])), params(RunQuery),
    responses((status = 200, body = RunPage), (status = 400, body = ErrorBody)))]
pub(crate) async fn list_runs(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    q: Result<Query<RunQuery>, QueryRejection>,
) -> R<Json<RunPage>> {
    require(&c, Role::Viewer, KeyScope::Read)?;
    Ok(Json(runs::list(&gw, &c, &query(q)?).await?))
}

/// A run with its events.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RunWithEvents {
    run: Run,
    events: Vec<Event>,
}

#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs", security(("key" = [])), params(("id" = String, Path)),
    responses((status = 200, body = RunWithEvents), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_run(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    p: PathArg,
) -> R<Json<RunWithEvents>> {
    require(&c, Role::Viewer, KeyScope::Read)?;
    let (run, events) = runs::get(&gw, &c, path_id(p)?).await?;
    Ok(Json(RunWithEvents { run, events }))
}

#[utoipa::path(get, path = "/api/v1/events", tag = "runs", security(("key" = [])), params(EventQuery),
    responses((status = 200, body = EventPage), (status = 400, body = ErrorBody)))]
pub(crate) async fn list_events(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    q: Result<Query<EventQuery>, QueryRejection>,
) -> R<Json<EventPage>> {
    require(&c, Role::Viewer, KeyScope::Read)?;
    Ok(Json(runs::events(&gw, &c, &query(q)?).await?))
}

#[utoipa::path(get, path = "/api/v1/costs", tag = "runs", security(("key" = [])), params(CostQuery),
    responses((status = 200, body = [CostLine]), (status = 400, body = ErrorBody)))]
pub(crate) async fn costs(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    q: Result<Query<CostQuery>, QueryRejection>,
) -> R<Json<Vec<CostLine>>> {
    require(&c, Role::Viewer, KeyScope::Read)?;
    Ok(Json(runs::costs(&gw, &c, &query(q)?).await?))
}

#[utoipa::path(get, path = "/api/v1/prices", tag = "runs", security(("key" = [])),
    responses((status = 200, body = [Price])))]
pub(crate) async fn list_prices(
    State(gw): State<Gateway>,
    Caller(c): Caller,
) -> R<Json<Vec<Price>>> {
    require(&c, Role::Viewer, KeyScope::Read)?;
    Ok(Json(runs::prices(&gw, &c).await?))
}

#[utoipa::path(post, path = "/api/v1/prices", tag = "runs", security(("key" = [])), request_body = NewPrice,
    responses((status = 201, body = Price), (status = 400, body = ErrorBody)))]
pub(crate) async fn add_price(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    b: JsonBody<NewPrice>,
) -> R<(StatusCode, Json<Price>)> {
    require(&c, Role::Admin, KeyScope::Manage)?;
    let b = body(b)?;
    Ok(created(runs::add_price(&gw, &c, &b).await?))
}

// ---- budgets ----

#[utoipa::path(get, path = "/api/v1/budgets", tag = "budgets", security(("key" = [])),
    responses((status = 200, body = [Budget])))]
pub(crate) async fn list_budgets(
    State(gw): State<Gateway>,
    Caller(c): Caller,
) -> R<Json<Vec<Budget>>> {
    require(&c, Role::Viewer, KeyScope::Read)?;
    Ok(Json(budgets::list(gw.db(), &c).await?))
}

#[utoipa::path(post, path = "/api/v1/budgets", tag = "budgets", security(("key" = [])), request_body = NewBudget,
    responses((status = 201, body = Budget), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_budget(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    b: JsonBody<NewBudget>,
) -> R<(StatusCode, Json<Budget>)> {
    require(&c, Role::TeamLead, KeyScope::Manage)?;
    let b = body(b)?;
    Ok(created(budgets::create(&gw, &c, &b).await?))
}

#[utoipa::path(get, path = "/api/v1/budgets/{id}", tag = "budgets", security(("key" = [])), params(("id" = String, Path)),
    responses((status = 200, body = Budget), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_budget(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    p: PathArg,
) -> R<Json<Budget>> {
    require(&c, Role::Viewer, KeyScope::Read)?;
    budgets::get(gw.db(), &c, path_id(p)?)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("budget not found"))
}

#[utoipa::path(patch, path = "/api/v1/budgets/{id}", tag = "budgets", security(("key" = [])), params(("id" = String, Path)),
    request_body = BudgetUpdate, responses((status = 200, body = Budget), (status = 404, body = ErrorBody)))]
pub(crate) async fn update_budget(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    p: PathArg,
    b: JsonBody<BudgetUpdate>,
) -> R<Json<Budget>> {
    require(&c, Role::TeamLead, KeyScope::Manage)?;
    let id = path_id(p)?;
    let b = body(b)?;
    Ok(Json(budgets::update(&gw, &c, id, &b).await?))
}

#[utoipa::path(delete, path = "/api/v1/budgets/{id}", tag = "budgets", security(("key" = [])), params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_budget(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    p: PathArg,
) -> R<StatusCode> {
    require(&c, Role::TeamLead, KeyScope::Manage)?;
    budgets::delete(&gw, &c, path_id(p)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/budgets/{id}/alerts", tag = "budgets", security(("key" = [])), params(("id" = String, Path)),
    responses((status = 200, body = [AlertRow]), (status = 404, body = ErrorBody)))]
pub(crate) async fn budget_alerts(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    p: PathArg,
) -> R<Json<Vec<AlertRow>>> {
    require(&c, Role::Viewer, KeyScope::Read)?;
    let id = path_id(p)?;
    if budgets::get(gw.db(), &c, id).await?.is_none() {
        return Err(ApiError::not_found("budget not found"));
    }
    Ok(Json(budgets::alerts(gw.db(), &c, id).await?))
}

#[utoipa::path(post, path = "/api/v1/budgets/{id}/reauthorise", tag = "budgets", security(("key" = [])),
    params(("id" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn reauthorise(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    p: PathArg,
) -> R<StatusCode> {
    require(&c, Role::TeamLead, KeyScope::Manage)?;
    budgets::reauthorise(&gw, &c, path_id(p)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/budgets/reserve", tag = "budgets", security(("key" = [])), request_body = ReserveRequest,
    responses((status = 201, body = Reservation),
        (status = 402, body = ErrorBody, description = "approval_required (past 100%) or hard_stop (past 120%)"),
        (status = 403, body = ErrorBody, description = "policy_denied, approval_required by a policy, or paused")))]
pub(crate) async fn reserve(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    b: JsonBody<ReserveRequest>,
) -> R<(StatusCode, Json<Reservation>)> {
    require(&c, Role::Developer, KeyScope::Spend)?;
    let b = body(b)?;
    match budgets::reserve(&gw, &c, &b).await {
        Ok(r) => {
            gw.metrics().reserved.fetch_add(1, Ordering::Relaxed);
            Ok(created(r))
        }
        Err(e) => {
            gw.metrics().refused.fetch_add(1, Ordering::Relaxed);
            Err(e.into())
        }
    }
}

/// A settlement.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettleBody {
    /// From the reservation.
    reservation_id: String,
    /// What the intent cost; at most what was reserved is charged.
    amount_micros: i64,
}

#[utoipa::path(post, path = "/api/v1/budgets/settle", tag = "budgets", security(("key" = [])), request_body = SettleBody,
    responses((status = 200, body = Settlement), (status = 404, body = ErrorBody)))]
pub(crate) async fn settle(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    b: JsonBody<SettleBody>,
) -> R<Json<Settlement>> {
    require(&c, Role::Developer, KeyScope::Spend)?;
    let b = body(b)?;
    let reservation = b
        .reservation_id
        .parse()
        .map_err(|_| ApiError::bad_request("reservation_id is not a UUID"))?;
    Ok(Json(
        budgets::settle(gw.db(), &c, reservation, b.amount_micros).await?,
    ))
}

#[utoipa::path(put, path = "/api/v1/webhook", tag = "budgets", security(("key" = [])), request_body = Webhook,
    responses((status = 204), (status = 400, body = ErrorBody)))]
pub(crate) async fn set_webhook(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    b: JsonBody<Webhook>,
) -> R<StatusCode> {
    require(&c, Role::Admin, KeyScope::Manage)?;
    let b = body(b)?;
    budgets::set_webhook(&gw, &c, &b).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- policies and approvals ----

#[utoipa::path(get, path = "/api/v1/policies", tag = "policies", security(("key" = [])),
    responses((status = 200, body = [Policy])))]
pub(crate) async fn list_policies(
    State(gw): State<Gateway>,
    Caller(c): Caller,
) -> R<Json<Vec<Policy>>> {
    require(&c, Role::Viewer, KeyScope::Read)?;
    Ok(Json(policies::list(&gw, &c).await?))
}

#[utoipa::path(post, path = "/api/v1/policies", tag = "policies", security(("key" = [])), request_body = NewPolicy,
    responses((status = 201, body = Policy), (status = 400, body = ErrorBody)))]
pub(crate) async fn create_policy(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    b: JsonBody<NewPolicy>,
) -> R<(StatusCode, Json<Policy>)> {
    require(&c, Role::TeamLead, KeyScope::Manage)?;
    let b = body(b)?;
    Ok(created(policies::create(&gw, &c, &b).await?))
}

#[utoipa::path(delete, path = "/api/v1/policies/{id}", tag = "policies", security(("key" = [])), params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_policy(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    p: PathArg,
) -> R<StatusCode> {
    require(&c, Role::TeamLead, KeyScope::Manage)?;
    policies::delete(&gw, &c, path_id(p)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Which approvals.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApprovalQuery {
    /// `pending`, `approved` or `denied`.
    status: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/approvals", tag = "policies", security(("key" = [])), params(ApprovalQuery),
    responses((status = 200, body = [Approval])))]
pub(crate) async fn list_approvals(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    q: Result<Query<ApprovalQuery>, QueryRejection>,
) -> R<Json<Vec<Approval>>> {
    require(&c, Role::Viewer, KeyScope::Read)?;
    let q = query(q)?;
    Ok(Json(
        policies::approvals(&gw, &c, q.status.as_deref()).await?,
    ))
}

/// A decision's reason.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecisionBody {
    /// Why, at most 1024 bytes.
    #[serde(default)]
    reason: Option<String>,
}

async fn decide(
    gw: Gateway,
    c: crate::keys::Principal,
    p: PathArg,
    b: Option<Json<DecisionBody>>,
    approve: bool,
) -> R<Json<Approval>> {
    require(&c, Role::TeamLead, KeyScope::Manage)?;
    let id = path_id(p)?;
    let b = b.map(|Json(b)| b).unwrap_or_default();
    Ok(Json(
        policies::decide(&gw, &c, id, approve, b.reason.as_deref()).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/approvals/{id}/approve", tag = "policies", security(("key" = [])),
    params(("id" = String, Path)), request_body = DecisionBody,
    responses((status = 200, body = Approval), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn approve(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    p: PathArg,
    b: Option<Json<DecisionBody>>,
) -> R<Json<Approval>> {
    decide(gw, c, p, b, true).await
}

#[utoipa::path(post, path = "/api/v1/approvals/{id}/deny", tag = "policies", security(("key" = [])),
    params(("id" = String, Path)), request_body = DecisionBody,
    responses((status = 200, body = Approval), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn deny(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    p: PathArg,
    b: Option<Json<DecisionBody>>,
) -> R<Json<Approval>> {
    decide(gw, c, p, b, false).await
}

// ---- kill switch ----

#[utoipa::path(get, path = "/api/v1/pauses", tag = "pauses", security(("key" = [])),
    responses((status = 200, body = [PauseRecord])))]
pub(crate) async fn list_pauses(
    State(gw): State<Gateway>,
    Caller(c): Caller,
) -> R<Json<Vec<PauseRecord>>> {
    require(&c, Role::Viewer, KeyScope::Read)?;
    Ok(Json(pauses::list(&gw, &c).await?))
}

#[utoipa::path(post, path = "/api/v1/pauses", tag = "pauses", security(("key" = [])), request_body = PauseRequest,
    responses((status = 201, body = PauseRecord), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn create_pause(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    b: JsonBody<PauseRequest>,
) -> R<(StatusCode, Json<PauseRecord>)> {
    require(&c, Role::TeamLead, KeyScope::Manage)?;
    let b = body(b)?;
    Ok(created(pauses::issue(&gw, &c, &b).await?))
}

#[utoipa::path(get, path = "/api/v1/paused", tag = "pauses", security(("key" = [])),
    responses((status = 200, body = [String], description = "DIDs of the agents paused now")))]
pub(crate) async fn list_paused(
    State(gw): State<Gateway>,
    Caller(c): Caller,
) -> R<Json<Vec<String>>> {
    require(&c, Role::Viewer, KeyScope::Read)?;
    Ok(Json(pauses::paused(&gw, &c).await?))
}

// ---- audit ----

/// A page of the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    /// Rows after this `seq` (default 0).
    after: Option<i64>,
    /// 1 to 1000 (default 100).
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", security(("key" = [])), params(AuditQuery),
    responses((status = 200, body = [AuditRow]), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_audit(
    State(gw): State<Gateway>,
    Caller(c): Caller,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> R<Json<Vec<AuditRow>>> {
    require(&c, Role::Admin, KeyScope::Read)?;
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1 to 1000"));
    }
    Ok(Json(
        audit::list(gw.db().pool(), c.org_id, q.after.unwrap_or(0), limit).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", security(("key" = [])),
    responses((status = 200, body = Verification), (status = 403, body = ErrorBody)))]
pub(crate) async fn verify_audit(
    State(gw): State<Gateway>,
    Caller(c): Caller,
) -> R<Json<Verification>> {
    require(&c, Role::Admin, KeyScope::Read)?;
    let key = gw.audit().key().public();
    Ok(Json(audit::verify(gw.db().pool(), c.org_id, &key).await?))
}

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("agn_<key id>_<secret>")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "agentnet gateway API",
        description = "An organisation's control plane over its agents. See specs/gateway-api.md."
    ),
    modifiers(&SecurityAddon),
    paths(
        readyz, metrics, openapi,
        get_org, rename_org, list_teams, create_team, get_team, rename_team, delete_team,
        list_members, create_member, get_member, update_member, delete_member,
        list_keys, create_key, rotate_key, revoke_key,
        list_agents, create_agent, get_agent, update_agent, delete_agent, network_agents,
        ingest_runs, list_runs, get_run, list_events, costs, list_prices, add_price,
        list_budgets, create_budget, get_budget, update_budget, delete_budget, budget_alerts,
        reauthorise, reserve, settle, set_webhook,
        list_policies, create_policy, delete_policy, list_approvals, approve, deny,
        list_pauses, create_pause, list_paused,
        list_audit, verify_audit
    ),
    components(schemas(
        ErrorBody, ErrorDetail, Ready, NameBody, Org, Team, Member, MemberRequest, Role,
        KeyInfo, KeyRequest, KeyScope, NewKey, RotateBody, Agent, AgentRequest, SeenAgent,
        NetworkAgents, IngestRequest, crate::ingest::RunIn, crate::ingest::EventIn, IngestReport,
        crate::ingest::RunOutcome, Run, RunPage, Event, EventPage, RunWithEvents, CostLine,
        crate::runs::GroupBy, NewPrice, Price, Budget, NewBudget, BudgetUpdate, budgets::Scope,
        budgets::Period, AlertRow, ReserveRequest, Reservation, budgets::Alert, SettleBody,
        Settlement, Webhook, Policy, NewPolicy, policies::PolicyKind, policies::PolicyScope,
        Approval, DecisionBody, PauseRecord, PauseRequest, pauses::PauseScope, pauses::PauseVerb,
        AuditRow, Verification
    ))
)]
struct ApiDoc;

/// The API's OpenAPI document.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_owned())
}
