//! Extractors: JSON bodies whose rejections use the contract's errors, the
//! request's metadata, and the session credential with its access policy.

use std::marker::PhantomData;
use std::net::SocketAddr;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, header};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;
use super::request_id::RequestId;
use crate::audit::RequestMeta;
use crate::audit::USER_AGENT_MAX;
use crate::domain::{Session, SessionToken, User};

/// Name of the browser session cookie (contract).
pub const SESSION_COOKIE: &str = "__Host-castellan_session";
/// Header carrying the CSRF token on cookie-authenticated writes.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// `axum::Json` with the contract's errors: 415 for a non-JSON body, 413
/// over the size cap, 400 naming the field for anything else.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(JsonRejection::JsonSyntaxError(_)) => Err(ApiError::InvalidRequest(
                "the body is not valid JSON".into(),
            )),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::InvalidRequest(
                describe_data_error(&e.body_text()),
            )),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::PayloadTooLarge)
            }
            Err(_) => Err(ApiError::InvalidRequest(
                "the body could not be read".into(),
            )),
        }
    }
}

/// serde's message names the field (`unknown field `x``, `missing field
/// `email``, `invalid type ... at line 1 column 9`); keep that part only.
fn describe_data_error(text: &str) -> String {
    let detail = text.split_once(": ").map(|(_, rest)| rest).unwrap_or(text);
    let detail = detail.split(" at line ").next().unwrap_or(detail);
    let detail: String = detail.chars().take(200).collect();
    format!("invalid body: {detail}")
}

/// Parses a UUID path parameter in its one canonical (lower-case,
/// hyphenated) spelling; anything else is 400 naming `field`. Path values
/// are percent-decoded once by the router and never again.
pub fn canonical_uuid(raw: &str, field: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw)
        .ok()
        .filter(|u| u.hyphenated().to_string() == raw.to_ascii_lowercase())
        .ok_or_else(|| ApiError::InvalidRequest(format!("{field}: must be a UUID")))
}

/// Keeps printable characters and caps the length (it ends up in the
/// database, the audit record and the UI).
pub fn clean_user_agent(raw: &str) -> String {
    raw.chars()
        .filter(|c| !c.is_control())
        .take(USER_AGENT_MAX)
        .collect()
}

impl FromRequestParts<AppState> for RequestMeta {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| {
                let config = state.auth.config();
                super::client_ip::resolve(
                    *peer,
                    &parts.headers,
                    &config.proxies.trusted,
                    config.proxies.header,
                )
                .to_string()
            })
            .unwrap_or_default();
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .map(|v| clean_user_agent(&String::from_utf8_lossy(v.as_bytes())))
            .unwrap_or_default();
        Ok(RequestMeta {
            request_id,
            ip,
            user_agent,
        })
    }
}

/// Which sessions a route accepts. Deny by default: a route must name a
/// policy to see a session at all.
pub trait Policy: Send + Sync + 'static {
    /// A session still waiting for its second factor is let through.
    const ALLOW_MFA_PENDING: bool;
    /// With `require_mfa`, a user without TOTP is let through (to enrol).
    const ALLOW_WITHOUT_MFA: bool;
}

/// Full sessions only (the default for every route).
pub struct FullSession;
impl Policy for FullSession {
    const ALLOW_MFA_PENDING: bool = false;
    const ALLOW_WITHOUT_MFA: bool = false;
}

/// Also pending sessions: only `/v1/login/mfa` and `/v1/logout`.
pub struct PendingAllowed;
impl Policy for PendingAllowed {
    const ALLOW_MFA_PENDING: bool = true;
    const ALLOW_WITHOUT_MFA: bool = true;
}

/// Full sessions of users who still have to enrol TOTP under
/// `require_mfa`: reading the session, enrolling and activating TOTP.
pub struct EnrolmentAllowed;
impl Policy for EnrolmentAllowed {
    const ALLOW_MFA_PENDING: bool = false;
    const ALLOW_WITHOUT_MFA: bool = true;
}

/// How the credential arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    Bearer,
    Cookie,
}

/// A checked session and its user, admitted by policy `P`.
pub struct Authenticated<P: Policy = FullSession> {
    pub session: Session,
    pub user: User,
    pub source: CredentialSource,
    _policy: PhantomData<P>,
}

/// Reads the credential: the Authorization header if present (and then it
/// must be a bearer token), else the session cookie. Query strings are
/// never consulted.
fn credential(parts: &Parts) -> Result<Option<(String, CredentialSource)>, ApiError> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let text = value.to_str().map_err(|_| ApiError::Unauthenticated)?;
        let (scheme, token) = text.split_once(' ').ok_or(ApiError::Unauthenticated)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::Unauthenticated);
        }
        return Ok(Some((token.trim().to_string(), CredentialSource::Bearer)));
    }
    Ok(cookie(parts, SESSION_COOKIE).map(|v| (v, CredentialSource::Cookie)))
}

/// The first cookie called `name`.
pub fn cookie(parts: &Parts, name: &str) -> Option<String> {
    header_cookie(&parts.headers, name)
}

/// The first cookie called `name` in `headers`.
pub fn header_cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl<P: Policy> FromRequestParts<AppState> for Authenticated<P> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (raw, source) = credential(parts)?.ok_or(ApiError::Unauthenticated)?;
        let token = SessionToken::parse(&raw).map_err(|_| ApiError::Unauthenticated)?;
        let (session, user) = state.auth.check_session(&token).await?;
        if source == CredentialSource::Cookie && changes_state(&parts.method) {
            let presented = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !state.auth.csrf_matches(session.id, presented) {
                return Err(ApiError::Forbidden(
                    "a valid X-CSRF-Token header is required",
                ));
            }
        }
        if session.mfa_pending && !P::ALLOW_MFA_PENDING {
            return Err(ApiError::MfaRequired);
        }
        // An aal2 session proves a second factor (TOTP, backup code or a
        // passkey), so it satisfies `require_mfa` without another lookup.
        let has_mfa = user.mfa_enabled || session.aal == crate::domain::Aal::Aal2;
        if state.auth.config().require_mfa && !has_mfa && !P::ALLOW_WITHOUT_MFA {
            return Err(ApiError::MfaRequired);
        }
        Ok(Self {
            session,
            user,
            source,
            _policy: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_errors_name_the_field_without_positions() {
        let text = "Failed to deserialize the JSON body into the target type: unknown field `admin`, expected `email` or `password` at line 1 column 9";
        let msg = describe_data_error(text);
        assert!(msg.contains("unknown field `admin`"), "{msg}");
        assert!(!msg.contains("line 1"), "{msg}");
    }

    // covers: ASVS-1.3.3
    #[test]
    fn user_agents_are_cut_and_cleaned() {
        let ua = clean_user_agent(&format!("a\r\nb\u{1b}[31m{}", "x".repeat(10_000)));
        assert!(ua.starts_with("ab[31m"));
        assert_eq!(ua.chars().count(), USER_AGENT_MAX);
    }
}
