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
use crate::http::openapi::{BodyErrors, RateLimited, SessionErrors};
use crate::http::views::{CurrentSession, ErrorEnvelope, SessionView, UserView};

/// The current session, its user and the session's CSRF token.
#[utoipa::path(get, path = "/v1/session", tag = "sessions", responses(
    SessionErrors,
    (status = 200, body = CurrentSession),
), security(("bearer" = []), ("cookie" = [])))]
pub async fn current(
    State(state): State<AppState>,
    auth: Authenticated<EnrolmentAllowed>,
) -> Json<CurrentSession> {
    let idle = state.auth.config().session.idle_timeout;
    Json(CurrentSession {
        session: SessionView::new(&auth.session, idle, true),
        user: UserView::from(&auth.user),
        csrf_token: state.auth.csrf_token(auth.session.id),
    })
}

/// Ends the current session; the token stops working at once.
#[utoipa::path(post, path = "/v1/logout", tag = "sessions", responses(
    SessionErrors,
    (status = 204, description = "also expires the cookie"),
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

/// `GET /v1/sessions`
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

/// The caller's own live sessions; `current` marks this one.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", responses(
    SessionErrors,
    (status = 200, body = SessionList),
), security(("bearer" = []), ("cookie" = [])))]
pub async fn list(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<SessionList>, ApiError> {
    let idle = state.auth.config().session.idle_timeout;
    let sessions = state.auth.list_sessions(auth.user.id).await?;
    Ok(Json(SessionList {
        sessions: sessions
            .iter()
            .map(|s| SessionView::new(s, idle, s.id == auth.session.id))
            .collect(),
    }))
}

/// Ends one of the caller's sessions (another one needs the
/// re-authentication window; another user's id is 404).
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = uuid::Uuid, Path, description = "session id", format = Uuid)),
    responses(
        SessionErrors,
        (status = 204, description = "also expires the cookie when it is the current session"),
        (status = 400, body = ErrorEnvelope, description = "invalid_request: the id is not a UUID"),
        (status = 403, body = ErrorEnvelope, description = "reauthentication_required (another session, outside the window), mfa_required, or forbidden (cookie without a valid X-CSRF-Token)"),
        (status = 404, body = ErrorEnvelope, description = "not_found: no such session of the caller"),
    ), security(("bearer" = []), ("cookie" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    meta: RequestMeta,
    auth: Authenticated,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let id = crate::http::extract::canonical_uuid(&id, "id")?;
    state.auth.revoke_session(&auth.session, id, &meta).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if id == auth.session.id {
        clear_session_cookie(&mut response);
    }
    Ok(response)
}

/// Ends every session of the caller except the current one.
#[utoipa::path(delete, path = "/v1/sessions", tag = "sessions", responses(
    SessionErrors,
    (status = 204),
    (status = 403, body = ErrorEnvelope, description = "reauthentication_required, mfa_required, or forbidden (cookie without a valid X-CSRF-Token)"),
), security(("bearer" = []), ("cookie" = [])))]
pub async fn revoke_others(
    State(state): State<AppState>,
    meta: RequestMeta,
    auth: Authenticated,
) -> Result<StatusCode, ApiError> {
    state
        .auth
        .revoke_other_sessions(&auth.session, &meta)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/reauthenticate` body. A user with MFA must add exactly one
/// of `totp_code` and `backup_code`; a user without MFA sends neither.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reauthenticate {
    #[schema(format = Password, min_length = 1, max_length = 1024)]
    pub password: String,
    #[schema(pattern = "^[0-9]{6}$", max_length = 6)]
    pub totp_code: Option<String>,
    #[schema(pattern = "^[ -]*([A-Za-z2-7][ -]*){16}$", max_length = 64)]
    pub backup_code: Option<String>,
}

/// Proves the password again: opens the re-authentication window and
/// rotates the token.
#[utoipa::path(post, path = "/v1/reauthenticate", tag = "sessions", request_body = Reauthenticate, responses(
    SessionErrors, BodyErrors, RateLimited,
    (status = 200, body = crate::http::views::SessionIssued, description = "new token; also sets the cookie"),
    (status = 400, body = ErrorEnvelope, description = "invalid_credentials (wrong password or code) or invalid_request (the message names the field)"),
    (status = 403, body = ErrorEnvelope, description = "account_locked, mfa_required, or forbidden (cookie without a valid X-CSRF-Token)"),
), security(("bearer" = []), ("cookie" = [])))]
pub async fn reauthenticate(
    State(state): State<AppState>,
    meta: RequestMeta,
    auth: Authenticated,
    crate::http::extract::ApiJson(body): crate::http::extract::ApiJson<Reauthenticate>,
) -> Result<Response, ApiError> {
    let password = crate::domain::Password::for_verification(
        &body.password,
        state.auth.config().passwords.max_length,
    )
    .map_err(|e| ApiError::InvalidRequest(format!("password: {e}")))?;
    let second = super::mfa::second_factor(body.totp_code.as_deref(), body.backup_code.as_deref())?;
    match (&second, auth.user.mfa_enabled) {
        (None, true) => {
            return Err(ApiError::InvalidRequest(
                "totp_code or backup_code is required: the account has two-factor authentication"
                    .into(),
            ));
        }
        (Some(_), false) => {
            return Err(ApiError::InvalidRequest(
                "totp_code and backup_code are only for accounts with two-factor authentication"
                    .into(),
            ));
        }
        _ => {}
    }
    let (token, session) = state
        .auth
        .reauthenticate(&auth.session, &auth.user, &password, second.as_ref(), &meta)
        .await
        .map_err(|e| match e {
            crate::auth::login::LoginError::InvalidCredentials => {
                ApiError::InvalidCredentials(StatusCode::BAD_REQUEST)
            }
            other => other.into(),
        })?;
    Ok(super::accounts::issued(&state, token, &session, None))
}
