//! Forgot password, and the landing pages that mailed links open.
//!
//! Mailed links look like `<public_base_url>/ui/password/reset?token=...`:
//! the server must read the token because the pages work without
//! JavaScript. The token never stays in the address bar, the history or a
//! `Referer`: the landing `GET` moves it into a short-lived `__Host-`
//! cookie (HttpOnly, `SameSite=Lax` so it survives the click from a mail
//! program) and redirects to the bare path; access logs record paths
//! without query strings; every page sends `Referrer-Policy: no-referrer`.
//! Opening the link changes nothing (mail scanners follow links): the
//! person submits the form to use the token.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::forms::{AnonCsrf, AnonForm};
use super::sign_in::{NoticePage, throttled_message, too_many};
use super::{Nav, render, render_with};
use crate::audit::RequestMeta;
use crate::auth::recovery::RecoveryError;
use crate::domain::{Email, Password};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::header_cookie as cookie;

/// Cookie carrying a reset token between the landing and the form post.
pub const RESET_COOKIE: &str = "__Host-castellan_reset";
/// Cookie carrying a verification token likewise.
pub const VERIFY_COOKIE: &str = "__Host-castellan_verify";

#[derive(Template)]
#[template(path = "forgot.html")]
pub struct ForgotPage {
    pub nav: Nav,
    pub csrf: String,
    pub email: String,
    pub email_error: Option<String>,
}

/// `GET /ui/password/forgot`
pub async fn forgot_form(csrf: AnonCsrf) -> Response {
    csrf.apply(render(&ForgotPage {
        nav: Nav::signed_out(),
        csrf: csrf.token.clone(),
        email: String::new(),
        email_error: None,
    }))
}

#[derive(Deserialize)]
pub struct ForgotForm {
    #[serde(default)]
    pub email: String,
}

/// `POST /ui/password/forgot`: the same answer whether or not the account
/// exists (the same use case as `POST /v1/password/reset/request`).
pub async fn forgot_submit(
    State(state): State<AppState>,
    meta: RequestMeta,
    csrf: AnonCsrf,
    AnonForm(f): AnonForm<ForgotForm>,
) -> Result<Response, ApiError> {
    let mut again = ForgotPage {
        nav: Nav::signed_out(),
        csrf: csrf.token.clone(),
        email: f.email.clone(),
        email_error: None,
    };
    let Ok(email) = Email::parse(&f.email) else {
        again.email_error = Some("Enter your email address, like name@example.com.".into());
        return Ok(render_with(StatusCode::BAD_REQUEST, &again));
    };
    match state.auth.request_password_reset(&email, &meta).await {
        Ok(()) => Ok(render(&NoticePage {
            nav: Nav::signed_out(),
            title: "Check your mail".into(),
            message: "If an account uses that address, we sent it a link to set a new password. The link works once and expires soon.".into(),
            warning: None,
            next: "/ui/sign-in".into(),
            next_label: "Back to sign in".into(),
        })),
        Err(RecoveryError::Throttled(t)) => match throttled_message(&t) {
            Some((message, secs)) => {
                again.email_error = Some(message);
                Ok(too_many(&again, secs))
            }
            None => Err(ApiError::from(t)),
        },
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct TokenQuery {
    pub token: Option<String>,
}

/// Moves a mailed token from the URL into its cookie and redirects to the
/// bare path.
fn stash(name: &str, path: &str, token: &str, ttl: std::time::Duration) -> Response {
    let mut response = Redirect::to(path).into_response();
    // Only the token's alphabet is let through, so the cookie stays well-formed.
    if token.len() <= 128
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        let value = format!(
            "{name}={token}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
            ttl.as_secs()
        );
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

/// A landing page's first step: a mailed token in the URL moves into its
/// cookie (`Err` is that redirect); otherwise whether the cookie holds one.
fn land(
    parts: &HeaderMap,
    q: TokenQuery,
    name: &str,
    path: &str,
    ttl: std::time::Duration,
) -> Result<bool, Box<Response>> {
    if let Some(token) = q.token {
        return Err(Box::new(stash(name, path, &token, ttl)));
    }
    Ok(cookie(parts, name).is_some_and(|t| !t.is_empty()))
}

fn forget(response: &mut Response, name: &str) {
    let value = format!("{name}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

#[derive(Template)]
#[template(path = "reset.html")]
pub struct ResetPage {
    pub nav: Nav,
    pub csrf: String,
    pub has_token: bool,
    pub min_length: usize,
    pub password_error: Option<String>,
}

fn reset_page(state: &AppState, csrf: &AnonCsrf, has_token: bool) -> ResetPage {
    ResetPage {
        nav: Nav::signed_out(),
        csrf: csrf.token.clone(),
        has_token,
        min_length: state.auth.config().passwords.min_length,
        password_error: None,
    }
}

/// `GET /ui/password/reset`: the page mailed reset links open.
pub async fn reset_form(
    State(state): State<AppState>,
    parts: HeaderMap,
    csrf: AnonCsrf,
    Query(q): Query<TokenQuery>,
) -> Response {
    let has_token = match land(
        &parts,
        q,
        RESET_COOKIE,
        "/ui/password/reset",
        state.auth.config().token_lifetimes.reset,
    ) {
        Ok(has_token) => has_token,
        Err(redirect) => return *redirect,
    };
    csrf.apply(render(&reset_page(&state, &csrf, has_token)))
}

#[derive(Deserialize)]
pub struct ResetForm {
    #[serde(default)]
    pub new_password: String,
}

/// `POST /ui/password/reset`: the same use case as
/// `POST /v1/password/reset/confirm`; every session of the user ends.
pub async fn reset_submit(
    State(state): State<AppState>,
    meta: RequestMeta,
    parts: HeaderMap,
    csrf: AnonCsrf,
    AnonForm(f): AnonForm<ResetForm>,
) -> Result<Response, ApiError> {
    let token = cookie(&parts, RESET_COOKIE).unwrap_or_default();
    let mut again = reset_page(&state, &csrf, !token.is_empty());
    let password = match Password::new_with_policy(&f.new_password, state.auth.password_policy()) {
        Ok(p) => p,
        Err(e) => {
            again.password_error = Some(format!("Choose another password: {e}."));
            return Ok(render_with(StatusCode::BAD_REQUEST, &again));
        }
    };
    match state
        .auth
        .confirm_password_reset(&token, &password, &meta)
        .await
    {
        Ok(()) => {
            let mut response = render(&NoticePage {
                nav: Nav::signed_out(),
                title: "Password changed".into(),
                message: "Your new password is set, and every session of your account was ended. Sign in with the new password.".into(),
                warning: None,
                next: "/ui/sign-in".into(),
                next_label: "Sign in".into(),
            });
            forget(&mut response, RESET_COOKIE);
            Ok(response)
        }
        Err(RecoveryError::InvalidToken) => {
            again.has_token = false;
            let mut response = render_with(StatusCode::BAD_REQUEST, &again);
            forget(&mut response, RESET_COOKIE);
            Ok(response)
        }
        Err(RecoveryError::Throttled(t)) => match throttled_message(&t) {
            Some((message, secs)) => {
                again.password_error = Some(message);
                Ok(too_many(&again, secs))
            }
            None => Err(ApiError::from(t)),
        },
        Err(e) => Err(e.into()),
    }
}

#[derive(Template)]
#[template(path = "verify.html")]
pub struct VerifyPage {
    pub nav: Nav,
    pub csrf: String,
    pub has_token: bool,
}

/// `GET /ui/email/verify`: the page mailed verification links open.
pub async fn verify_form(
    State(state): State<AppState>,
    parts: HeaderMap,
    csrf: AnonCsrf,
    Query(q): Query<TokenQuery>,
) -> Response {
    let has_token = match land(
        &parts,
        q,
        VERIFY_COOKIE,
        "/ui/email/verify",
        state.auth.config().token_lifetimes.verification,
    ) {
        Ok(has_token) => has_token,
        Err(redirect) => return *redirect,
    };
    csrf.apply(render(&VerifyPage {
        nav: Nav::signed_out(),
        csrf: csrf.token.clone(),
        has_token,
    }))
}

#[derive(Deserialize)]
pub struct EmptyForm {}

/// `POST /ui/email/verify`: the same use case as
/// `POST /v1/email/verification/confirm`.
pub async fn verify_submit(
    State(state): State<AppState>,
    meta: RequestMeta,
    parts: HeaderMap,
    csrf: AnonCsrf,
    AnonForm(_): AnonForm<EmptyForm>,
) -> Result<Response, ApiError> {
    let token = cookie(&parts, VERIFY_COOKIE).unwrap_or_default();
    match state.auth.confirm_email_verification(&token, &meta).await {
        Ok(()) => {
            let mut response = render(&NoticePage {
                nav: Nav::signed_out(),
                title: "Email address verified".into(),
                message: "Thank you: your email address is verified.".into(),
                warning: None,
                next: super::HOME.into(),
                next_label: "Go to your account".into(),
            });
            forget(&mut response, VERIFY_COOKIE);
            Ok(response)
        }
        Err(RecoveryError::InvalidToken) => {
            let mut response = render_with(
                StatusCode::BAD_REQUEST,
                &VerifyPage {
                    nav: Nav::signed_out(),
                    csrf: csrf.token.clone(),
                    has_token: false,
                },
            );
            forget(&mut response, VERIFY_COOKIE);
            Ok(response)
        }
        Err(e) => Err(e.into()),
    }
}
