//! What every page handler starts with: the signed-in person (cookie only,
//! never a bearer token or a query parameter) and form bodies whose CSRF
//! token is checked before the handler sees them.
//!
//! Signed-in forms carry the session-bound token of the JSON API
//! (`Keys::csrf_token`), so it changes whenever the session token does.
//! Signed-out forms (sign in, sign up, forgot password, reset, verify) use a
//! double-submit token: a random `__Host-` cookie (only castellan's own
//! origin can set it) whose value the form must repeat.

use std::marker::PhantomData;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;

use crate::crypto::constant_time_eq;
use crate::domain::{Session, SessionToken, User};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{FullSession, Policy, SESSION_COOKIE, cookie};
use crate::http::middleware::MAX_BODY_BYTES;

/// Cookie holding the signed-out forms' CSRF token.
pub const CSRF_COOKIE: &str = "__Host-castellan_csrf";
/// Name of the hidden CSRF field in every form.
pub const CSRF_FIELD: &str = "csrf";

/// The signed-in person of a page request, admitted by policy `P`.
/// Without a live session the page redirects to sign-in (coming back
/// here); a session waiting for its second factor goes to the MFA step.
pub struct PageSession<P: Policy = FullSession> {
    pub session: Session,
    pub user: User,
    _policy: PhantomData<P>,
}

impl<P: Policy> PageSession<P> {
    /// The session's CSRF token for this page's forms.
    pub fn csrf(&self, state: &AppState) -> String {
        state.auth.csrf_token(self.session.id)
    }

    pub fn nav(&self, state: &AppState) -> super::Nav {
        super::Nav {
            signed_in: !self.session.mfa_pending,
            csrf: self.csrf(state),
        }
    }
}

/// The session behind the cookie, if it is alive.
pub async fn cookie_session(parts: &Parts, state: &AppState) -> Option<(Session, User)> {
    let raw = cookie(parts, SESSION_COOKIE)?;
    let token = SessionToken::parse(&raw).ok()?;
    state.auth.check_session(&token).await.ok()
}

fn sign_in_redirect(parts: &Parts) -> Response {
    let here = parts
        .uri
        .path_and_query()
        .map_or("/ui/account", |p| p.as_str());
    // Only GETs are worth coming back to; a form post starts over.
    let back = (parts.method == axum::http::Method::GET).then_some(here);
    let target = back.and_then(|b| crate::domain::return_to::ReturnTo::parse(b, &[]));
    Redirect::to(&super::with_return_to("/ui/sign-in", target.as_ref())).into_response()
}

impl<P: Policy> FromRequestParts<AppState> for PageSession<P> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Some((session, user)) = cookie_session(parts, state).await else {
            return Err(sign_in_redirect(parts));
        };
        if session.mfa_pending && !P::ALLOW_MFA_PENDING {
            return Err(Redirect::to("/ui/mfa").into_response());
        }
        if state.auth.config().require_mfa && !user.mfa_enabled && !P::ALLOW_WITHOUT_MFA {
            return Err(ApiError::MfaRequired.into_response());
        }
        Ok(Self {
            session,
            user,
            _policy: PhantomData,
        })
    }
}

/// Reads an urlencoded form body (415 for anything else, 413 over the cap)
/// and returns the raw pairs' CSRF value with the parsed form.
async fn read_form<T: DeserializeOwned>(req: Request) -> Result<(String, T), ApiError> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
        .map_err(|_| ApiError::InvalidRequest("the form could not be read".into()))?;
    let csrf = pairs
        .iter()
        .find(|(k, _)| k == CSRF_FIELD)
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let form = serde_urlencoded::from_bytes(&bytes)
        .map_err(|e| ApiError::InvalidRequest(format!("form: {e}")))?;
    Ok((csrf, form))
}

fn csrf_refused() -> Response {
    ApiError::Forbidden("the form's CSRF token is missing or wrong; reload the page and try again")
        .into_response()
}

/// A signed-in form: the session (policy `P`) and a body whose CSRF token
/// matches the session. Nothing runs when the token is missing or wrong.
pub struct SessionForm<T, P: Policy = FullSession> {
    pub auth: PageSession<P>,
    pub form: T,
}

impl<T: DeserializeOwned + Send, P: Policy> FromRequest<AppState> for SessionForm<T, P> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let auth = PageSession::<P>::from_request_parts(&mut parts, state).await?;
        let (csrf, form) = read_form::<T>(Request::from_parts(parts, body))
            .await
            .map_err(IntoResponse::into_response)?;
        if !state.auth.csrf_matches(auth.session.id, &csrf) {
            return Err(csrf_refused());
        }
        Ok(Self { auth, form })
    }
}

/// A signed-out form whose CSRF field repeats the CSRF cookie.
pub struct AnonForm<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequest<AppState> for AnonForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, _state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let expected = anon_cookie(&mut parts);
        let (csrf, form) = read_form::<T>(Request::from_parts(parts, body))
            .await
            .map_err(IntoResponse::into_response)?;
        match expected {
            Some(e) if constant_time_eq(e.as_bytes(), csrf.as_bytes()) => Ok(Self(form)),
            _ => Err(csrf_refused()),
        }
    }
}

/// The signed-out CSRF cookie's value, if it has the right shape.
fn anon_cookie(parts: &mut Parts) -> Option<String> {
    cookie(parts, CSRF_COOKIE).filter(|v| v.len() == 43 && URL_SAFE_NO_PAD.decode(v).is_ok())
}

/// The CSRF token for a signed-out form: the cookie's value, or a new one
/// (then `set_cookie` must be added to the response).
pub struct AnonCsrf {
    pub token: String,
    set_cookie: bool,
}

impl FromRequestParts<AppState> for AnonCsrf {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Response> {
        if let Some(token) = anon_cookie(parts) {
            return Ok(Self {
                token,
                set_cookie: false,
            });
        }
        let bytes =
            crate::crypto::random_bytes::<32>().map_err(|_| ApiError::Internal.into_response())?;
        Ok(Self {
            token: URL_SAFE_NO_PAD.encode(bytes),
            set_cookie: true,
        })
    }
}

impl AnonCsrf {
    /// Adds the cookie to `response` when it is new.
    pub fn apply(&self, mut response: Response) -> Response {
        if self.set_cookie {
            let value = format!(
                "{CSRF_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Strict",
                self.token
            );
            if let Ok(v) = HeaderValue::from_str(&value) {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        response
    }
}
