//! The caller's own session: read it, end it.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::clear_session_cookie;
use crate::audit::RequestMeta;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{Authenticated, EnrolmentAllowed, PendingAllowed};
use crate::http::views::{CurrentSession, ErrorEnvelope, SessionView, UserView};

/// The current session, its user and the session's CSRF token.
#[utoipa::path(get, path = "/v1/session", tag = "sessions", responses(
    (status = 200, body = CurrentSession),
    (status = 401, body = ErrorEnvelope),
    (status = 403, body = ErrorEnvelope, description = "mfa_required"),
), security(("bearer" = []), ("cookie" = [])))]
pub async fn current(State(state): State<AppState>, auth: Authenticated<EnrolmentAllowed>) -> Json<CurrentSession> {
    let idle = state.auth.config.session.idle_timeout;
    Json(CurrentSession {
        session: SessionView::new(&auth.session, idle, true),
        user: UserView::from(&auth.user),
        csrf_token: state.auth.keys.csrf_token(auth.session.id),
    })
}

/// Ends the current session; the token stops working at once.
#[utoipa::path(post, path = "/v1/logout", tag = "sessions", responses(
    (status = 204, description = "also expires the cookie"),
    (status = 401, body = ErrorEnvelope),
), security(("bearer" = []), ("cookie" = [])))]
pub async fn logout(
    State(state): State<AppState>,
    meta: RequestMeta,
    auth: Authenticated<PendingAllowed>,
) -> Result<Response, ApiError> {
    state.auth.logout(&auth.session, &meta).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    clear_session_cookie(&mut response);
    Ok(response)
}
