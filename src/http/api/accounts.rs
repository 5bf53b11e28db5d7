//! Registration and password login.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use super::set_session_cookie;
use crate::audit::RequestMeta;
use crate::domain::password::PasswordError;
use crate::domain::{Email, Password};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::ApiJson;
use crate::http::openapi::{BodyErrors, RateLimited, Unavailable};
use crate::http::views::{ErrorEnvelope, SessionIssued, SessionView, UserEnvelope, UserView};

/// `POST /v1/login` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    #[schema(format = Email, max_length = 254, example = "ada@example.com")]
    pub email: String,
    /// At most `password_max_length` characters.
    #[schema(format = Password, min_length = 1, max_length = 1024)]
    pub password: String,
}

/// `POST /v1/registration` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    #[schema(format = Email, max_length = 254, example = "ada@example.com")]
    pub email: String,
    /// `password_min_length` to `password_max_length` characters (15 to
    /// 1024 by default); common, breached and context passwords are refused.
    #[schema(format = Password, min_length = 15, max_length = 1024, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub password: String,
}

fn parse_email(raw: &str) -> Result<Email, ApiError> {
    Email::parse(raw).map_err(|e| ApiError::InvalidRequest(format!("email: {e}")))
}

/// Creates an account.
#[utoipa::path(post, path = "/v1/registration", tag = "accounts", request_body = Registration, responses(
    BodyErrors, RateLimited, Unavailable,
    (status = 201, body = UserEnvelope),
    (status = 400, body = ErrorEnvelope, description = "invalid_request (the message names the field) or weak_password (the message says why)"),
    (status = 409, body = ErrorEnvelope, description = "conflict: the email is already registered"),
))]
pub async fn register(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<Registration>,
) -> Result<Response, ApiError> {
    let email = parse_email(&body.email)?;
    let password = Password::new_for_account(
        &body.password,
        state.auth.password_policy(),
        &[email.local_part(), email.as_str()],
    )
    .map_err(|e| ApiError::WeakPassword(e.to_string()))?;
    let user = state.auth.register(email, &password, &meta).await?;
    Ok((
        StatusCode::CREATED,
        Json(UserEnvelope {
            user: UserView::from(&user),
        }),
    )
        .into_response())
}

/// Logs in with email and password.
#[utoipa::path(post, path = "/v1/login", tag = "sessions", request_body = Credentials, responses(
    BodyErrors, RateLimited, Unavailable,
    (status = 200, body = SessionIssued, description = "also sets the __Host-castellan_session cookie"),
    (status = 401, body = ErrorEnvelope, description = "invalid_credentials: wrong email or password"),
    (status = 403, body = ErrorEnvelope, description = "account_locked (only said after a correct password)"),
))]
pub async fn login(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Response, ApiError> {
    let email = parse_email(&body.email)?;
    let password =
        Password::for_verification(&body.password, state.auth.config().passwords.max_length)
            .map_err(|e: PasswordError| ApiError::InvalidRequest(format!("password: {e}")))?;
    let done = state.auth.login(&email, &password, &meta).await?;
    Ok(issued(&state, done.token, &done.session, None))
}

/// The response for every route that issues a token: JSON body plus cookie.
pub fn issued(
    state: &AppState,
    token: crate::domain::SessionToken,
    session: &crate::domain::Session,
    backup_codes_remaining: Option<u32>,
) -> Response {
    let idle = state.auth.config().session.idle_timeout;
    let max_age = (session.expires_at - session.created_at)
        .whole_seconds()
        .max(0);
    let mut response = Json(SessionIssued {
        session_token: token.expose().to_string(),
        session: SessionView::new(session, idle, true),
        backup_codes_remaining,
    })
    .into_response();
    set_session_cookie(&mut response, &token, u64::try_from(max_age).unwrap_or(0));
    response
}
