//! `GET /v1/forward-auth`: the session check for reverse proxies (nginx
//! `auth_request`, Caddy `forward_auth`, Traefik ForwardAuth). With a live
//! session: 200 and the identity headers. Without: 401 (or 403 when the
//! session lacks what `?require=` asks for), with the hosted page to send
//! the person to in `X-Castellan-Redirect` (nginx turns that into its own
//! redirect), or as a 302 with `?redirect=1` (Caddy, Traefik). The original
//! URL, read from the proxy's `X-Forwarded-Proto/Host/Uri` (or
//! `X-Original-URL`), becomes `return_to` only if its origin is allowed.

use axum::extract::{RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::domain::return_to::ReturnTo;
use crate::domain::{Aal, SessionToken};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{SESSION_COOKIE, cookie};
use crate::http::openapi::Unavailable;
use crate::http::views::ErrorEnvelope;

pub static USER_ID: HeaderName = HeaderName::from_static("x-castellan-user-id");
pub static EMAIL: HeaderName = HeaderName::from_static("x-castellan-email");
pub static EMAIL_VERIFIED: HeaderName = HeaderName::from_static("x-castellan-email-verified");
pub static AAL: HeaderName = HeaderName::from_static("x-castellan-aal");
/// Where a refused person should go (absolute URL), for proxies that build
/// their own redirect (nginx).
pub static REDIRECT: HeaderName = HeaderName::from_static("x-castellan-redirect");

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ForwardQuery {
    require: Option<String>,
    redirect: Option<String>,
}

/// What `?require=` may ask for (comma-separated).
#[derive(Default)]
struct Requirements {
    aal2: bool,
    verified_email: bool,
}

fn requirements(raw: Option<&str>) -> Result<Requirements, ApiError> {
    let mut r = Requirements::default();
    for item in raw.unwrap_or_default().split(',').filter(|s| !s.is_empty()) {
        match item {
            "aal2" => r.aal2 = true,
            "verified_email" => r.verified_email = true,
            _ => {
                return Err(ApiError::InvalidRequest(
                    "require: must be `aal2`, `verified_email` or both, comma-separated".into(),
                ));
            }
        }
    }
    Ok(r)
}

/// The URL the proxy was asked for, from its forwarding headers.
fn original_url(headers: &HeaderMap) -> Option<String> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(url) = get("x-original-url") {
        return Some(url.to_string());
    }
    let proto = get("x-forwarded-proto")?;
    let host = get("x-forwarded-host")?;
    let uri = get("x-forwarded-uri").unwrap_or("/");
    Some(format!("{proto}://{host}{uri}"))
}

/// The session's credential: the bearer header if present, else the cookie.
fn credential(parts: &Parts) -> Option<String> {
    match parts.headers.get(header::AUTHORIZATION) {
        Some(v) => {
            let (scheme, token) = v.to_str().ok()?.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_string())
        }
        None => cookie(parts, SESSION_COOKIE),
    }
}

/// Checks the caller's session for a reverse proxy.
#[utoipa::path(get, path = "/v1/forward-auth", tag = "sessions",
    params(
        ("require" = Option<String>, Query, description = "`aal2`, `verified_email`, or both comma-separated"),
        ("redirect" = Option<String>, Query, description = "`1`: refuse with a 302 to the hosted page instead of 401/403"),
    ),
    responses(
        Unavailable,
        (status = 200, description = "a live session; empty body", headers(
            ("X-Castellan-User-Id" = uuid::Uuid, description = "the user's id"),
            ("X-Castellan-Email" = String, description = "the user's email address"),
            ("X-Castellan-Email-Verified" = String, description = "`true` or `false`"),
            ("X-Castellan-Aal" = String, description = "`aal1` or `aal2`"),
        )),
        (status = 302, description = "with redirect=1: to the sign-in page or the MFA step, return_to set to the original URL when allowed", headers(
            ("Location" = String, description = "the hosted page"),
        )),
        (status = 400, body = ErrorEnvelope, description = "invalid_request: an unknown query parameter, or `require` names something else"),
        (status = 401, body = ErrorEnvelope, description = "no live session (a pending MFA session counts as none); X-Castellan-Redirect names the sign-in page"),
        (status = 403, body = ErrorEnvelope, description = "mfa_required (require=aal2) or forbidden (require=verified_email)"),
    ), security(("bearer" = []), ("cookie" = [])))]
pub async fn check(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let q: ForwardQuery = match serde_urlencoded::from_str(query.as_deref().unwrap_or_default()) {
        Ok(q) => q,
        Err(e) => return ApiError::InvalidRequest(format!("query: {e}")).into_response(),
    };
    let needs = match requirements(q.require.as_deref()) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let redirect = matches!(q.redirect.as_deref(), Some("1" | "true"));
    let origins = crate::http::pages::allowed_origins(&state);
    let back = original_url(&parts.headers).and_then(|u| ReturnTo::parse(&u, &origins));
    let base = &state.auth.config().public_base_url;
    let refuse = |error: ApiError, page: &str| {
        let target = format!(
            "{base}{}",
            crate::http::pages::with_return_to(page, back.as_ref())
        );
        let mut response = if redirect {
            let mut r = StatusCode::FOUND.into_response();
            if let Ok(v) = HeaderValue::from_str(&target) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        } else {
            error.into_response()
        };
        if let Ok(v) = HeaderValue::from_str(&target) {
            response.headers_mut().insert(REDIRECT.clone(), v);
        }
        response
    };
    let checked = match credential(&parts).and_then(|raw| SessionToken::parse(&raw).ok()) {
        Some(token) => state.auth.check_session(&token).await,
        None => return refuse(ApiError::Unauthenticated, "/ui/sign-in"),
    };
    let (session, user) = match checked {
        Ok((s, _)) if s.mfa_pending => return refuse(ApiError::Unauthenticated, "/ui/sign-in"),
        Ok(found) => found,
        Err(crate::auth::sessions::CheckError::Unauthenticated) => {
            return refuse(ApiError::Unauthenticated, "/ui/sign-in");
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let mfa_missing = state.auth.config().require_mfa && !user.mfa_enabled;
    if mfa_missing || (needs.aal2 && session.aal != Aal::Aal2) {
        return refuse(ApiError::MfaRequired, "/ui/mfa");
    }
    if needs.verified_email && !user.email_verified {
        return refuse(
            ApiError::Forbidden("the email address is not verified"),
            "/ui/account",
        );
    }
    let mut response = StatusCode::OK.into_response();
    let h = response.headers_mut();
    let mut set = |name: &HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name.clone(), v);
        }
    };
    set(&USER_ID, &user.id.0.to_string());
    set(&EMAIL, user.email.as_str());
    set(
        &EMAIL_VERIFIED,
        if user.email_verified { "true" } else { "false" },
    );
    set(&AAL, session.aal.as_str());
    response
}
