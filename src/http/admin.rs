//! The admin listener: its own address (loopback by default), present only
//! when an admin token is configured. Every route needs
//! `Authorization: Bearer <admin token>`, compared in constant time;
//! cookies are ignored. Query strings are never logged (emails are PII).

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use secrecy::ExposeSecret;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::middleware;
use super::views::UserView;
use crate::audit::{EventKind, RequestMeta};
use crate::auth::EventFilter;
use crate::auth::admin::{AdminAction, AdminError};
use crate::domain::{Email, User, UserId};

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::NotFound => ApiError::NotFound,
            AdminError::Service(e) => e.into(),
        }
    }
}

/// The admin view of a user: the contract's User plus admin-only fields.
#[derive(Serialize)]
pub struct AdminUserView {
    #[serde(flatten)]
    pub user: UserView,
    pub locked: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_login_at: Option<OffsetDateTime>,
}

impl From<&User> for AdminUserView {
    fn from(u: &User) -> Self {
        Self {
            user: UserView::from(u),
            locked: u.locked,
            last_login_at: u.last_login_at,
        }
    }
}

/// Refuses anything without the admin bearer token.
async fn require_admin(
    State(state): State<AppState>,
    meta: RequestMeta,
    req: Request,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let expected = state
        .auth
        .config()
        .admin_token
        .as_ref()
        .map(|t| t.expose_secret().to_string())
        .unwrap_or_default();
    if expected.is_empty()
        || !crate::crypto::constant_time_eq(presented.as_bytes(), expected.as_bytes())
    {
        let _ = state
            .auth
            .record_event(
                EventKind::AccessDenied,
                None,
                &meta,
                serde_json::json!({"reason": "admin_token"}),
            )
            .await;
        return ApiError::Unauthenticated.into_response();
    }
    next.run(req).await
}

fn parse_id(raw: &str) -> Result<UserId, ApiError> {
    super::extract::canonical_uuid(raw, "id").map(UserId)
}

/// Parses a query string where every key may appear once.
fn single_params(
    raw: Option<&str>,
    allowed: &[&str],
) -> Result<std::collections::HashMap<String, String>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded_pairs(raw.unwrap_or_default())?;
    let mut out = std::collections::HashMap::new();
    for (k, v) in pairs {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::InvalidRequest(format!(
                "{k}: unknown query parameter"
            )));
        }
        if out.insert(k.clone(), v).is_some() {
            return Err(ApiError::InvalidRequest(format!(
                "{k}: given more than once"
            )));
        }
    }
    Ok(out)
}

fn serde_urlencoded_pairs(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
    let q: Query<Vec<(String, String)>> = Query::try_from_uri(
        &format!("/?{raw}")
            .parse()
            .map_err(|_| ApiError::InvalidRequest("query: malformed".into()))?,
    )
    .map_err(|_| ApiError::InvalidRequest("query: malformed".into()))?;
    Ok(q.0)
}

#[derive(Serialize)]
struct UserList {
    users: Vec<AdminUserView>,
}

/// `GET /admin/v1/users?email=` (exact, case-insensitive match).
async fn find_users(
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<UserList>, ApiError> {
    let params = single_params(req.uri().query(), &["email"])?;
    let raw = params
        .get("email")
        .ok_or_else(|| ApiError::InvalidRequest("email: required".into()))?;
    let email = Email::parse(raw).map_err(|e| ApiError::InvalidRequest(format!("email: {e}")))?;
    let found = state.auth.admin_find_user(&email).await?;
    Ok(Json(UserList {
        users: found.iter().map(AdminUserView::from).collect(),
    }))
}

#[derive(Serialize)]
struct OneUser {
    user: AdminUserView,
}

async fn get_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<OneUser>, ApiError> {
    let id = parse_id(&id)?;
    let user = state
        .auth
        .admin_get_user(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(OneUser {
        user: AdminUserView::from(&user),
    }))
}

async fn act(
    state: &AppState,
    action: AdminAction,
    id: &str,
    meta: &RequestMeta,
) -> Result<StatusCode, ApiError> {
    state.auth.admin_act(action, parse_id(id)?, meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn lock(
    State(s): State<AppState>,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    act(&s, AdminAction::Lock, &id, &meta).await
}

async fn unlock(
    State(s): State<AppState>,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    act(&s, AdminAction::Unlock, &id, &meta).await
}

async fn revoke_user_sessions(
    State(s): State<AppState>,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    act(&s, AdminAction::RevokeUserSessions, &id, &meta).await
}

async fn reset_mfa(
    State(s): State<AppState>,
    meta: RequestMeta,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    act(&s, AdminAction::ResetMfa, &id, &meta).await
}

async fn revoke_all(State(s): State<AppState>, meta: RequestMeta) -> Result<StatusCode, ApiError> {
    s.auth.admin_revoke_all(&meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct EventView {
    /// Position in the audit chain; also the pagination cursor.
    seq: i64,
    id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
    kind: String,
    user_id: Option<Uuid>,
    ip: String,
    user_agent: String,
    request_id: String,
    detail: serde_json::Value,
}

#[derive(Serialize)]
struct Events {
    events: Vec<EventView>,
    /// Pass as `before` for the next (older) page; null on the last page.
    next_before: Option<i64>,
}

fn parse_time(raw: &str, name: &str) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339).map_err(|_| {
        ApiError::InvalidRequest(format!(
            "{name}: must be an RFC 3339 time, e.g. 2026-01-31T00:00:00Z"
        ))
    })
}

/// Reads `GET /admin/v1/audit`'s query: every parameter optional, each at
/// most once, anything unknown refused.
fn audit_filter(query: Option<&str>) -> Result<EventFilter, ApiError> {
    let params = single_params(
        query,
        &["user_id", "kind", "since", "until", "before", "limit"],
    )?;
    let kind = params
        .get("kind")
        .map(|k| {
            EventKind::ALL
                .iter()
                .find(|known| known.as_str() == k)
                .map(|known| known.as_str().to_string())
                .ok_or_else(|| ApiError::InvalidRequest("kind: unknown event kind".into()))
        })
        .transpose()?;
    let before_seq = params
        .get("before")
        .map(|b| {
            b.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                ApiError::InvalidRequest("before: must be a positive whole number".into())
            })
        })
        .transpose()?;
    let limit = match params.get("limit") {
        None => 100,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                ApiError::InvalidRequest("limit: must be a whole number from 1 to 1000".into())
            })?,
    };
    let filter = EventFilter {
        user: params.get("user_id").map(|u| parse_id(u)).transpose()?,
        kind,
        since: params
            .get("since")
            .map(|t| parse_time(t, "since"))
            .transpose()?,
        until: params
            .get("until")
            .map(|t| parse_time(t, "until"))
            .transpose()?,
        before_seq,
        limit,
    };
    if let (Some(since), Some(until)) = (filter.since, filter.until)
        && since >= until
    {
        return Err(ApiError::InvalidRequest(
            "until: must be later than since".into(),
        ));
    }
    Ok(filter)
}

/// `GET /admin/v1/audit?user_id=&kind=&since=&until=&before=&limit=`,
/// newest first.
async fn audit(State(state): State<AppState>, req: Request) -> Result<Json<Events>, ApiError> {
    let filter = audit_filter(req.uri().query())?;
    let events = state.auth.audit_events(&filter).await?;
    let next_before = (events.len() == filter.limit as usize)
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    Ok(Json(Events {
        events: events
            .into_iter()
            .map(|e| EventView {
                seq: e.seq,
                id: e.id,
                at: e.at,
                kind: e.kind,
                user_id: e.user_id.map(|u| u.0),
                ip: e.ip,
                user_agent: e.user_agent,
                request_id: e.request_id,
                detail: e.detail,
            })
            .collect(),
        next_before,
    }))
}

/// Prometheus text format; gauges are read now.
async fn metrics_text(State(state): State<AppState>) -> Response {
    let stats = state.auth.runtime_stats();
    metrics::gauge!(crate::metrics::HASH_QUEUE).set(stats.hash_queue as f64);
    if let Some((size, idle, max)) = stats.pool {
        metrics::gauge!(crate::metrics::DB_POOL_SIZE).set(f64::from(size));
        metrics::gauge!(crate::metrics::DB_POOL_IDLE).set(idle as f64);
        let in_use = u64::from(size).saturating_sub(idle as u64);
        metrics::gauge!(crate::metrics::DB_POOL_IN_USE).set(in_use as f64);
        metrics::gauge!(crate::metrics::DB_POOL_MAX).set(f64::from(max));
    }
    let stats = stats.mail;
    metrics::counter!(crate::metrics::MAIL_SENT).absolute(stats.sent);
    metrics::counter!(crate::metrics::MAIL_FAILED_ATTEMPTS).absolute(stats.failed_attempts);
    metrics::counter!(crate::metrics::MAIL_DROPPED).absolute(stats.dropped);
    let body = crate::metrics::handle().render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// The admin listener's application.
pub fn admin_app(state: AppState) -> Router {
    Router::new()
        .route("/admin/v1/users", get(find_users))
        .route("/admin/v1/users/{id}", get(get_user))
        .route("/admin/v1/users/{id}/lock", post(lock))
        .route("/admin/v1/users/{id}/unlock", post(unlock))
        .route(
            "/admin/v1/users/{id}/sessions",
            delete(revoke_user_sessions),
        )
        .route("/admin/v1/users/{id}/mfa", delete(reset_mfa))
        .route("/admin/v1/sessions", delete(revoke_all))
        .route("/admin/v1/audit", get(audit))
        .route("/metrics", get(metrics_text))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(from_fn_with_state(state.clone(), require_admin))
        .layer(from_fn(middleware::limit_body))
        .layer(from_fn_with_state(
            state.clone(),
            middleware::security_headers,
        ))
        .layer(from_fn(middleware::request_context))
        .with_state(state)
}
