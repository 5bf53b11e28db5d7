//! The second factor: the MFA step of login, TOTP enrolment and removal,
//! backup codes.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::RequestMeta;
use crate::auth::mfa::{MfaError, SecondFactor};
use crate::domain::{BackupCode, TotpCode};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, Authenticated, EnrolmentAllowed, PendingAllowed};
use crate::http::openapi::{BodyErrors, RateLimited, SessionErrors};
use crate::http::views::{ErrorEnvelope, SessionIssued};

/// Parses the "exactly one of" pair of second-factor fields; `None` when
/// neither is present.
pub fn second_factor(
    totp: Option<&str>,
    backup: Option<&str>,
) -> Result<Option<SecondFactor>, ApiError> {
    match (totp, backup) {
        (Some(_), Some(_)) => Err(ApiError::InvalidRequest(
            "give either totp_code or backup_code, not both".into(),
        )),
        (Some(t), None) => TotpCode::parse(t)
            .map(|c| Some(SecondFactor::Totp(c)))
            .map_err(|e| ApiError::InvalidRequest(e.to_string())),
        (None, Some(b)) => BackupCode::parse(b)
            .map(|c| Some(SecondFactor::Backup(c)))
            .map_err(|e| ApiError::InvalidRequest(e.to_string())),
        (None, None) => Ok(None),
    }
}

/// Maps MFA outcomes; `wrong` is the status for a wrong code (401 at
/// login, 400 where the caller holds a full session).
fn mfa_error(e: MfaError, wrong: StatusCode) -> ApiError {
    match e {
        MfaError::InvalidCode => ApiError::InvalidCredentials(wrong),
        MfaError::NotPending => {
            ApiError::InvalidRequest("this session is not waiting for a second factor".into())
        }
        MfaError::NothingToActivate => {
            ApiError::InvalidRequest("no TOTP enrolment is pending: call enroll first".into())
        }
        MfaError::AlreadyEnabled => ApiError::Conflict("TOTP is already enabled"),
        MfaError::Aal2Required => ApiError::MfaRequired,
        MfaError::ReauthenticationRequired => ApiError::ReauthenticationRequired,
        MfaError::SessionGone => ApiError::Unauthenticated,
        MfaError::Throttled(t) => t.into(),
        MfaError::Service(e) => e.into(),
    }
}

/// `POST /v1/login/mfa` body: exactly one of the two.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaLogin {
    #[schema(pattern = "^[0-9]{6}$", max_length = 6)]
    pub totp_code: Option<String>,
    #[schema(pattern = "^[ -]*([A-Za-z2-7][ -]*){16}$", max_length = 64)]
    pub backup_code: Option<String>,
}

/// Completes a login that waits for its second factor; returns a new token.
#[utoipa::path(post, path = "/v1/login/mfa", tag = "sessions", request_body = MfaLogin, responses(
    SessionErrors, BodyErrors, RateLimited,
    (status = 200, body = SessionIssued, description = "new aal2 token; the pending one stops working"),
    (status = 400, body = ErrorEnvelope, description = "invalid_request: no code, both codes, a malformed code, or the session is not waiting for a second factor"),
    (status = 401, body = ErrorEnvelope, description = "invalid_credentials (wrong or reused code) or unauthenticated"),
), security(("bearer" = []), ("cookie" = [])))]
pub async fn login_mfa(
    State(state): State<AppState>,
    meta: RequestMeta,
    auth: Authenticated<PendingAllowed>,
    ApiJson(body): ApiJson<MfaLogin>,
) -> Result<Response, ApiError> {
    let factor = second_factor(body.totp_code.as_deref(), body.backup_code.as_deref())?
        .ok_or_else(|| ApiError::InvalidRequest("totp_code or backup_code is required".into()))?;
    let (token, session, used) = state
        .auth
        .complete_mfa_login(&auth.session, &auth.user, &factor, &meta)
        .await
        .map_err(|e| mfa_error(e, StatusCode::UNAUTHORIZED))?;
    Ok(super::accounts::issued(
        &state,
        token,
        &session,
        used.backup_codes_remaining,
    ))
}

/// `POST /v1/mfa/totp/enroll` answer, shown once.
#[derive(Serialize, ToSchema)]
pub struct TotpEnrolment {
    /// Base32, 160 bits.
    pub secret: String,
    pub otpauth_uri: String,
    /// The URI as a QR code (SVG).
    pub qr_svg: String,
}

/// Starts TOTP enrolment (nothing is enabled until activation).
#[utoipa::path(post, path = "/v1/mfa/totp/enroll", tag = "mfa", responses(
    SessionErrors,
    (status = 200, body = TotpEnrolment),
    (status = 403, body = ErrorEnvelope, description = "reauthentication_required, mfa_required, or forbidden (cookie without a valid X-CSRF-Token)"),
    (status = 409, body = ErrorEnvelope, description = "conflict: TOTP is already enabled"),
), security(("bearer" = []), ("cookie" = [])))]
pub async fn enroll(
    State(state): State<AppState>,
    meta: RequestMeta,
    auth: Authenticated<EnrolmentAllowed>,
) -> Result<Json<TotpEnrolment>, ApiError> {
    let e = state
        .auth
        .enroll_totp(&auth.session, &auth.user, &meta)
        .await
        .map_err(|e| mfa_error(e, StatusCode::BAD_REQUEST))?;
    Ok(Json(TotpEnrolment {
        secret: e.secret_base32.to_string(),
        otpauth_uri: e.otpauth_uri.to_string(),
        qr_svg: e.qr_svg,
    }))
}

/// `POST /v1/mfa/totp/activate` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Activate {
    #[schema(pattern = "^[0-9]{6}$", max_length = 6)]
    pub code: String,
}

/// Freshly issued backup codes, shown this once.
#[derive(Serialize, ToSchema)]
pub struct BackupCodes {
    pub backup_codes: Vec<String>,
}

fn show(codes: &[BackupCode]) -> BackupCodes {
    BackupCodes {
        backup_codes: codes.iter().map(|c| c.display_form().to_string()).collect(),
    }
}

/// Enables TOTP with a first code; the session becomes aal2.
#[utoipa::path(post, path = "/v1/mfa/totp/activate", tag = "mfa", request_body = Activate, responses(
    SessionErrors, BodyErrors, RateLimited,
    (status = 200, body = BackupCodes),
    (status = 400, body = ErrorEnvelope, description = "invalid_credentials (wrong code) or invalid_request (malformed code, or no enrolment pending)"),
    (status = 409, body = ErrorEnvelope, description = "conflict: TOTP is already enabled"),
), security(("bearer" = []), ("cookie" = [])))]
pub async fn activate(
    State(state): State<AppState>,
    meta: RequestMeta,
    auth: Authenticated<EnrolmentAllowed>,
    ApiJson(body): ApiJson<Activate>,
) -> Result<Json<BackupCodes>, ApiError> {
    let code = TotpCode::parse(&body.code)
        .map_err(|_| ApiError::InvalidRequest("code must be exactly 6 digits (0-9)".into()))?;
    let codes = state
        .auth
        .activate_totp(&auth.session, &auth.user, &code, &meta)
        .await
        .map_err(|e| mfa_error(e, StatusCode::BAD_REQUEST))?;
    Ok(Json(show(&codes)))
}

/// Removes TOTP and backup codes (needs aal2 and the window).
#[utoipa::path(delete, path = "/v1/mfa/totp", tag = "mfa", responses(
    SessionErrors,
    (status = 204),
    (status = 400, body = ErrorEnvelope, description = "invalid_request: TOTP is not enabled"),
    (status = 403, body = ErrorEnvelope, description = "mfa_required (needs aal2), reauthentication_required, or forbidden (cookie without a valid X-CSRF-Token)"),
), security(("bearer" = []), ("cookie" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    meta: RequestMeta,
    auth: Authenticated,
) -> Result<StatusCode, ApiError> {
    state
        .auth
        .remove_totp(&auth.session, &auth.user, &meta)
        .await
        .map_err(|e| mfa_error(e, StatusCode::BAD_REQUEST))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/mfa/backup-codes`
#[derive(Serialize, ToSchema)]
pub struct BackupCodeStatus {
    pub remaining: u32,
    pub total: u32,
}

/// How many backup codes are left.
#[utoipa::path(get, path = "/v1/mfa/backup-codes", tag = "mfa", responses(
    SessionErrors,
    (status = 200, body = BackupCodeStatus),
), security(("bearer" = []), ("cookie" = [])))]
pub async fn backup_status(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<BackupCodeStatus>, ApiError> {
    let (remaining, total) = state.auth.backup_code_status(auth.user.id).await?;
    Ok(Json(BackupCodeStatus { remaining, total }))
}

/// Replaces all backup codes (needs aal2 and the window).
#[utoipa::path(post, path = "/v1/mfa/backup-codes/regenerate", tag = "mfa", responses(
    SessionErrors,
    (status = 200, body = BackupCodes),
    (status = 400, body = ErrorEnvelope, description = "invalid_request: TOTP is not enabled"),
    (status = 403, body = ErrorEnvelope, description = "mfa_required (needs aal2), reauthentication_required, or forbidden (cookie without a valid X-CSRF-Token)"),
), security(("bearer" = []), ("cookie" = [])))]
pub async fn regenerate(
    State(state): State<AppState>,
    meta: RequestMeta,
    auth: Authenticated,
) -> Result<Json<BackupCodes>, ApiError> {
    let codes = state
        .auth
        .regenerate_backup_codes(&auth.session, &auth.user, &meta)
        .await
        .map_err(|e| mfa_error(e, StatusCode::BAD_REQUEST))?;
    Ok(Json(show(&codes)))
}
