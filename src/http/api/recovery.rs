//! Password change and reset, email verification.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::audit::RequestMeta;
use crate::domain::{Email, Password};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, Authenticated};
use crate::http::openapi::{BodyErrors, RateLimited, SessionErrors, Unavailable};
use crate::http::views::ErrorEnvelope;

/// `POST /v1/password/change` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    #[schema(format = Password, min_length = 1, max_length = 1024)]
    pub current_password: String,
    #[schema(format = Password, min_length = 15, max_length = 1024, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub new_password: String,
}

fn new_password(state: &AppState, raw: &str, email: &Email) -> Result<Password, ApiError> {
    Password::new_for_account(
        raw,
        state.auth.password_policy(),
        &[email.local_part(), email.as_str()],
    )
    .map_err(|e| ApiError::WeakPassword(e.to_string()))
}

/// Changes the password; every other session ends.
#[utoipa::path(post, path = "/v1/password/change", tag = "accounts", request_body = PasswordChange, responses(
    SessionErrors, BodyErrors, RateLimited,
    (status = 204),
    (status = 400, body = ErrorEnvelope, description = "invalid_credentials (wrong current password), weak_password or invalid_request"),
), security(("bearer" = []), ("cookie" = [])))]
pub async fn change(
    State(state): State<AppState>,
    meta: RequestMeta,
    auth: Authenticated,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<StatusCode, ApiError> {
    let current = Password::for_verification(
        &body.current_password,
        state.auth.config().passwords.max_length,
    )
    .map_err(|e| ApiError::InvalidRequest(format!("current_password: {e}")))?;
    let new = new_password(&state, &body.new_password, &auth.user.email)?;
    state
        .auth
        .change_password(&auth.session, &auth.user, &current, &new, &meta)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/password/reset/request` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
}

/// Mails a single-use reset link if the account exists; always 202.
#[utoipa::path(post, path = "/v1/password/reset/request", tag = "accounts", request_body = ResetRequest, responses(
    BodyErrors, RateLimited, Unavailable,
    (status = 202, description = "the same answer whether or not the email is registered"),
))]
pub async fn reset_request(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<ResetRequest>,
) -> Result<StatusCode, ApiError> {
    let email =
        Email::parse(&body.email).map_err(|e| ApiError::InvalidRequest(format!("email: {e}")))?;
    state.auth.request_password_reset(&email, &meta).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `POST /v1/password/reset/confirm` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetConfirm {
    /// The token from the mailed link (43 base64url characters).
    #[schema(pattern = "^[A-Za-z0-9_-]{43}$", max_length = 43)]
    pub token: String,
    #[schema(format = Password, min_length = 15, max_length = 1024, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub new_password: String,
}

/// Sets a new password with a mailed token; every session ends.
#[utoipa::path(post, path = "/v1/password/reset/confirm", tag = "accounts", request_body = ResetConfirm, responses(
    BodyErrors, RateLimited, Unavailable,
    (status = 204),
    (status = 400, body = ErrorEnvelope, description = "invalid_request (the token is invalid, used or expired, or another field) or weak_password"),
))]
pub async fn reset_confirm(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<ResetConfirm>,
) -> Result<StatusCode, ApiError> {
    // The global policy first (no hashing for a weak password); the use
    // case adds the account's own words once the token names the account.
    let new = Password::new_for_account(&body.new_password, state.auth.password_policy(), &[])
        .map_err(|e| ApiError::WeakPassword(e.to_string()))?;
    state
        .auth
        .confirm_password_reset(&body.token, &new, &meta)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Mails a single-use verification link to the caller's address.
#[utoipa::path(post, path = "/v1/email/verification/request", tag = "accounts", responses(
    SessionErrors, RateLimited,
    (status = 202),
), security(("bearer" = []), ("cookie" = [])))]
pub async fn verification_request(
    State(state): State<AppState>,
    meta: RequestMeta,
    auth: Authenticated,
) -> Result<StatusCode, ApiError> {
    state
        .auth
        .request_email_verification(&auth.user, &meta)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

/// `POST /v1/email/verification/confirm` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerificationConfirm {
    #[schema(pattern = "^[A-Za-z0-9_-]{43}$", max_length = 43)]
    pub token: String,
}

/// Marks the address verified.
#[utoipa::path(post, path = "/v1/email/verification/confirm", tag = "accounts", request_body = VerificationConfirm, responses(
    BodyErrors, RateLimited, Unavailable,
    (status = 204),
    (status = 400, body = ErrorEnvelope, description = "invalid_request: the token is invalid, used or expired, or malformed"),
))]
pub async fn verification_confirm(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<VerificationConfirm>,
) -> Result<StatusCode, ApiError> {
    state
        .auth
        .confirm_email_verification(&body.token, &meta)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
