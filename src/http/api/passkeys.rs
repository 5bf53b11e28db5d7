//! Passkey routes: managing passkeys under `/v1/passkeys`, and the three
//! ceremonies that use one under `/v1/login/passkey` (passwordless
//! sign-in, the second factor of a pending session, re-authentication).
//!
//! Every ceremony has a `start` that returns `{ceremony_id, options}` (pass
//! `options` to `navigator.credentials.create`/`get` after decoding the
//! base64url fields) and a `finish` that takes the ceremony id and the
//! browser's credential as JSON (binary fields base64url).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use crate::audit::RequestMeta;
use crate::auth::passkeys::{CeremonyPurpose, PasskeyError, PasskeyName, PasskeyRecord, Started};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, Authenticated, EnrolmentAllowed, PendingAllowed};
use crate::http::openapi::{BodyErrors, RateLimited, SessionErrors, Unavailable};
use crate::http::views::{ErrorEnvelope, SessionIssued};

/// Maps passkey outcomes; `wrong` is the status for a response that does
/// not verify (401 when signing in, 400 where the caller holds a session).
fn passkey_error(e: PasskeyError, wrong: StatusCode) -> ApiError {
    match e {
        PasskeyError::NotConfigured => {
            ApiError::Forbidden("passkeys are not configured on this server")
        }
        PasskeyError::InvalidCeremony => {
            ApiError::InvalidRequest("ceremony_id: unknown, already used or expired".into())
        }
        PasskeyError::InvalidCredential => ApiError::InvalidCredentials(wrong),
        PasskeyError::AlreadyRegistered => ApiError::Conflict("this passkey is already registered"),
        PasskeyError::Aal2Required => ApiError::MfaRequired,
        PasskeyError::ReauthenticationRequired => ApiError::ReauthenticationRequired,
        PasskeyError::NotPending => {
            ApiError::InvalidRequest("this session is not waiting for a second factor".into())
        }
        PasskeyError::NoPasskey => {
            ApiError::InvalidRequest("the account has no usable passkey".into())
        }
        PasskeyError::NotFound => ApiError::NotFound,
        PasskeyError::LastFactor => ApiError::Conflict(
            "the last second factor cannot be removed while MFA is required; add another first",
        ),
        PasskeyError::Locked => ApiError::AccountLocked,
        PasskeyError::SessionGone => ApiError::Unauthenticated,
        PasskeyError::Throttled(t) => t.into(),
        PasskeyError::Service(e) => e.into(),
    }
}

/// A started ceremony.
#[derive(Serialize, ToSchema)]
pub struct CeremonyStarted {
    /// Send back with `finish`; single use, valid for `passkey_challenge_ttl`.
    pub ceremony_id: Uuid,
    /// WebAuthn options, `{"publicKey": {...}}`, binary fields base64url.
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
}

impl From<Started> for CeremonyStarted {
    fn from(s: Started) -> Self {
        Self {
            ceremony_id: s.ceremony_id,
            options: s.options,
        }
    }
}

/// A passkey as its owner sees it (never the public key or the credential id).
#[derive(Serialize, ToSchema)]
pub struct PasskeyView {
    pub id: Uuid,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<OffsetDateTime>,
    /// The authenticator may sync it (a multi-device passkey).
    pub backup_eligible: bool,
    /// It is currently backed up or synced.
    pub backup_state: bool,
    /// The last signature counter seen (0 for authenticators without one).
    pub sign_count: u32,
    /// Blocked after its signature counter went backwards; delete and add it again.
    pub flagged: bool,
}

impl From<&PasskeyRecord> for PasskeyView {
    fn from(r: &PasskeyRecord) -> Self {
        Self {
            id: r.id,
            name: r.name.clone(),
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            backup_eligible: r.backup_eligible,
            backup_state: r.backup_state,
            sign_count: r.sign_count,
            flagged: r.flagged_at.is_some(),
        }
    }
}

/// `GET /v1/passkeys`
#[derive(Serialize, ToSchema)]
pub struct PasskeyList {
    pub passkeys: Vec<PasskeyView>,
}

/// `POST /v1/passkeys/registration/finish` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishRegistration {
    pub ceremony_id: Uuid,
    /// 1 to 64 characters, e.g. "Laptop": no control characters and not
    /// only white space (`PasskeyName::parse`).
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    /// The `PublicKeyCredential` from `navigator.credentials.create`
    /// (`credential.toJSON()`: base64url binary fields).
    #[schema(schema_with = webauthn_credential)]
    pub credential: RegisterPublicKeyCredential,
}

/// `PATCH /v1/passkeys/{id}` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
}

/// The `finish` body of the sign-in ceremonies.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishAssertion {
    pub ceremony_id: Uuid,
    /// The `PublicKeyCredential` from `navigator.credentials.get`
    /// (`credential.toJSON()`: base64url binary fields).
    #[schema(schema_with = webauthn_credential)]
    pub credential: PublicKeyCredential,
}

/// A WebAuthn credential as JSON (`credential.toJSON()`), checked by
/// webauthn-rs; the schema names its format so clients know what to send.
fn webauthn_credential() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Object)
        .format(Some(utoipa::openapi::schema::SchemaFormat::Custom(
            "webauthn-credential".into(),
        )))
        .build()
}

fn name(raw: &str) -> Result<PasskeyName, ApiError> {
    PasskeyName::parse(raw).map_err(|e| ApiError::InvalidRequest(e.into()))
}

/// Starts registering a passkey. Needs the re-authentication window, and
/// an aal2 session when the account already has a second factor.
#[utoipa::path(post, path = "/v1/passkeys/registration/start", tag = "passkeys", responses(
    SessionErrors,
    (status = 200, body = CeremonyStarted),
    (status = 403, body = ErrorEnvelope, description = "mfa_required, reauthentication_required, or forbidden (passkeys are not configured on this server, or a cookie request without a valid X-CSRF-Token)"),
), security(("bearer" = []), ("cookie" = [])))]
pub async fn registration_start(
    State(state): State<AppState>,
    meta: RequestMeta,
    auth: Authenticated<EnrolmentAllowed>,
) -> Result<Json<CeremonyStarted>, ApiError> {
    let started = state
        .auth
        .start_passkey_registration(&auth.session, &auth.user, &meta)
        .await
        .map_err(|e| passkey_error(e, StatusCode::BAD_REQUEST))?;
    Ok(Json(started.into()))
}

/// Finishes a registration and stores the passkey; the user is mailed. A
/// first second factor raises the calling session to aal2.
#[utoipa::path(post, path = "/v1/passkeys/registration/finish", tag = "passkeys", request_body = FinishRegistration, responses(
    SessionErrors, BodyErrors, RateLimited,
    (status = 201, body = PasskeyView),
    (status = 400, body = ErrorEnvelope, description = "invalid_request (unknown, used or expired ceremony, or another field) or invalid_credentials (the response does not verify: origin, RP id, challenge, user verification)"),
    (status = 403, body = ErrorEnvelope, description = "mfa_required, reauthentication_required, or forbidden (passkeys are not configured on this server, or a cookie request without a valid X-CSRF-Token)"),
    (status = 409, body = ErrorEnvelope, description = "conflict: the credential is already registered"),
), security(("bearer" = []), ("cookie" = [])))]
pub async fn registration_finish(
    State(state): State<AppState>,
    meta: RequestMeta,
    auth: Authenticated<EnrolmentAllowed>,
    ApiJson(body): ApiJson<FinishRegistration>,
) -> Result<Response, ApiError> {
    let name = name(&body.name)?;
    let record = state
        .auth
        .finish_passkey_registration(
            &auth.session,
            &auth.user,
            body.ceremony_id,
            &name,
            &body.credential,
            &meta,
        )
        .await
        .map_err(|e| passkey_error(e, StatusCode::BAD_REQUEST))?;
    Ok((StatusCode::CREATED, Json(PasskeyView::from(&record))).into_response())
}

/// Lists the caller's passkeys.
#[utoipa::path(get, path = "/v1/passkeys", tag = "passkeys", responses(
    SessionErrors,
    (status = 200, body = PasskeyList),
), security(("bearer" = []), ("cookie" = [])))]
pub async fn list(
    State(state): State<AppState>,
    auth: Authenticated<EnrolmentAllowed>,
) -> Result<Json<PasskeyList>, ApiError> {
    let records = state
        .auth
        .list_passkeys(&auth.user)
        .await
        .map_err(|e| passkey_error(e, StatusCode::BAD_REQUEST))?;
    Ok(Json(PasskeyList {
        passkeys: records.iter().map(PasskeyView::from).collect(),
    }))
}

/// Renames one of the caller's passkeys.
#[utoipa::path(patch, path = "/v1/passkeys/{id}", tag = "passkeys", request_body = Rename,
    params(("id" = uuid::Uuid, Path, description = "passkey id", format = Uuid)),
    responses(
        SessionErrors, BodyErrors,
        (status = 204),
        (status = 400, body = ErrorEnvelope, description = "invalid_request: the id is not a UUID, or the name or another field is invalid"),
        (status = 404, body = ErrorEnvelope, description = "not_found: no such passkey on this account"),
    ), security(("bearer" = []), ("cookie" = [])))]
pub async fn rename(
    State(state): State<AppState>,
    meta: RequestMeta,
    auth: Authenticated,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Rename>,
) -> Result<StatusCode, ApiError> {
    let id = crate::http::extract::canonical_uuid(&id, "id")?;
    let name = name(&body.name)?;
    state
        .auth
        .rename_passkey(&auth.user, id, &name, &meta)
        .await
        .map_err(|e| passkey_error(e, StatusCode::BAD_REQUEST))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes one of the caller's passkeys (aal2 and the re-authentication
/// window); the user is mailed. With `require_mfa`, the account's last
/// second factor cannot be deleted.
#[utoipa::path(delete, path = "/v1/passkeys/{id}", tag = "passkeys",
    params(("id" = uuid::Uuid, Path, description = "passkey id", format = Uuid)),
    responses(
        SessionErrors,
        (status = 204),
        (status = 400, body = ErrorEnvelope, description = "invalid_request: the id is not a UUID"),
        (status = 403, body = ErrorEnvelope, description = "mfa_required (needs aal2), reauthentication_required, or forbidden (a cookie request without a valid X-CSRF-Token)"),
        (status = 404, body = ErrorEnvelope, description = "not_found: no such passkey on this account"),
        (status = 409, body = ErrorEnvelope, description = "conflict: the last second factor while MFA is required"),
    ), security(("bearer" = []), ("cookie" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    meta: RequestMeta,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = crate::http::extract::canonical_uuid(&id, "id")?;
    state
        .auth
        .delete_passkey(&auth.session, &auth.user, id, &meta)
        .await
        .map_err(|e| passkey_error(e, StatusCode::BAD_REQUEST))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts a passwordless sign-in with a discoverable credential (the
/// browser offers the passkeys it holds for this site). Counted against
/// the per-address login rate.
#[utoipa::path(post, path = "/v1/login/passkey/start", tag = "passkeys", responses(
    RateLimited, Unavailable,
    (status = 200, body = CeremonyStarted),
    (status = 403, body = ErrorEnvelope, description = "forbidden (passkeys are not configured on this server)"),
))]
pub async fn login_start(
    State(state): State<AppState>,
    meta: RequestMeta,
) -> Result<Json<CeremonyStarted>, ApiError> {
    let started = state
        .auth
        .start_passkey_login(&meta)
        .await
        .map_err(|e| passkey_error(e, StatusCode::UNAUTHORIZED))?;
    Ok(Json(started.into()))
}

/// Finishes a passwordless sign-in: a full `aal2` session (a passkey with
/// user verification is a multi-factor cryptographic authenticator).
#[utoipa::path(post, path = "/v1/login/passkey/finish", tag = "passkeys", request_body = FinishAssertion, responses(
    BodyErrors, RateLimited, Unavailable,
    (status = 200, body = SessionIssued, description = "aal2 session; also sets the __Host-castellan_session cookie"),
    (status = 400, body = ErrorEnvelope, description = "invalid_request: unknown, used or expired ceremony, or a malformed field"),
    (status = 401, body = ErrorEnvelope, description = "invalid_credentials: the assertion does not verify"),
    (status = 403, body = ErrorEnvelope, description = "account_locked, or forbidden (passkeys are not configured on this server)"),
))]
pub async fn login_finish(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<FinishAssertion>,
) -> Result<Response, ApiError> {
    let done = state
        .auth
        .finish_passkey_login(body.ceremony_id, &body.credential, &meta)
        .await
        .map_err(|e| passkey_error(e, StatusCode::UNAUTHORIZED))?;
    Ok(super::accounts::issued(
        &state,
        done.token,
        &done.session,
        None,
    ))
}

/// Starts the second factor of a pending (password-first) session with a passkey.
#[utoipa::path(post, path = "/v1/login/passkey/mfa/start", tag = "passkeys", responses(
    SessionErrors, RateLimited,
    (status = 200, body = CeremonyStarted),
    (status = 400, body = ErrorEnvelope, description = "invalid_request: the session is not waiting for a second factor, or the account has no usable passkey"),
    (status = 403, body = ErrorEnvelope, description = "forbidden (passkeys are not configured on this server, or a cookie request without a valid X-CSRF-Token)"),
), security(("bearer" = []), ("cookie" = [])))]
pub async fn mfa_start(
    State(state): State<AppState>,
    meta: RequestMeta,
    auth: Authenticated<PendingAllowed>,
) -> Result<Json<CeremonyStarted>, ApiError> {
    let started = state
        .auth
        .start_passkey_assertion(
            &auth.session,
            &auth.user,
            CeremonyPurpose::SecondFactor,
            &meta,
        )
        .await
        .map_err(|e| passkey_error(e, StatusCode::UNAUTHORIZED))?;
    Ok(Json(started.into()))
}

/// Completes a pending login with a passkey, like `/v1/login/mfa` with a
/// TOTP code: a new aal2 token; the pending one stops working.
#[utoipa::path(post, path = "/v1/login/passkey/mfa/finish", tag = "passkeys", request_body = FinishAssertion, responses(
    SessionErrors, BodyErrors, RateLimited,
    (status = 200, body = SessionIssued, description = "new aal2 token; the pending one stops working; also sets the cookie"),
    (status = 400, body = ErrorEnvelope, description = "invalid_request: unknown, used or expired ceremony, not waiting for a second factor, or a malformed field"),
    (status = 401, body = ErrorEnvelope, description = "invalid_credentials (the assertion does not verify) or unauthenticated"),
    (status = 403, body = ErrorEnvelope, description = "forbidden (passkeys are not configured on this server, or a cookie request without a valid X-CSRF-Token)"),
), security(("bearer" = []), ("cookie" = [])))]
pub async fn mfa_finish(
    State(state): State<AppState>,
    meta: RequestMeta,
    auth: Authenticated<PendingAllowed>,
    ApiJson(body): ApiJson<FinishAssertion>,
) -> Result<Response, ApiError> {
    let (token, session) = state
        .auth
        .finish_passkey_second_factor(
            &auth.session,
            &auth.user,
            body.ceremony_id,
            &body.credential,
            &meta,
        )
        .await
        .map_err(|e| passkey_error(e, StatusCode::UNAUTHORIZED))?;
    Ok(super::accounts::issued(&state, token, &session, None))
}

/// Starts re-authentication with a passkey.
#[utoipa::path(post, path = "/v1/login/passkey/reauthenticate/start", tag = "passkeys", responses(
    SessionErrors, RateLimited,
    (status = 200, body = CeremonyStarted),
    (status = 400, body = ErrorEnvelope, description = "invalid_request: the account has no usable passkey"),
    (status = 403, body = ErrorEnvelope, description = "mfa_required, or forbidden (passkeys are not configured on this server, or a cookie request without a valid X-CSRF-Token)"),
), security(("bearer" = []), ("cookie" = [])))]
pub async fn reauth_start(
    State(state): State<AppState>,
    meta: RequestMeta,
    auth: Authenticated<EnrolmentAllowed>,
) -> Result<Json<CeremonyStarted>, ApiError> {
    let started = state
        .auth
        .start_passkey_assertion(
            &auth.session,
            &auth.user,
            CeremonyPurpose::Reauthenticate,
            &meta,
        )
        .await
        .map_err(|e| passkey_error(e, StatusCode::BAD_REQUEST))?;
    Ok(Json(started.into()))
}

/// Re-authenticates with a passkey: opens the re-authentication window
/// and rotates the token (aal2).
#[utoipa::path(post, path = "/v1/login/passkey/reauthenticate/finish", tag = "passkeys", request_body = FinishAssertion, responses(
    SessionErrors, BodyErrors, RateLimited,
    (status = 200, body = SessionIssued, description = "new aal2 token; also sets the cookie"),
    (status = 400, body = ErrorEnvelope, description = "invalid_credentials (the assertion does not verify) or invalid_request (unknown, used or expired ceremony, or a malformed field)"),
    (status = 403, body = ErrorEnvelope, description = "mfa_required, or forbidden (passkeys are not configured on this server, or a cookie request without a valid X-CSRF-Token)"),
), security(("bearer" = []), ("cookie" = [])))]
pub async fn reauth_finish(
    State(state): State<AppState>,
    meta: RequestMeta,
    auth: Authenticated<EnrolmentAllowed>,
    ApiJson(body): ApiJson<FinishAssertion>,
) -> Result<Response, ApiError> {
    let (token, session) = state
        .auth
        .finish_passkey_reauthentication(
            &auth.session,
            &auth.user,
            body.ceremony_id,
            &body.credential,
            &meta,
        )
        .await
        .map_err(|e| passkey_error(e, StatusCode::BAD_REQUEST))?;
    Ok(super::accounts::issued(&state, token, &session, None))
}
