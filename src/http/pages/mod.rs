//! The hosted pages under `/ui/`: server-rendered HTML (askama templates in
//! `templates/`, compiled into the binary) for people, one module per page
//! group. Handlers are thin: parse the form, call the same `auth` use case
//! the JSON API calls, render. Everything works without JavaScript; the one
//! script only adds "show password" and "print".
//!
//! Security at the pages: the session cookie only (no token in a page, URL
//! or storage), a CSRF token in every form ([`forms`]), a strict CSP with no
//! inline script or style ([`page_headers`]), `Cache-Control: no-store`,
//! `Cross-Origin-Opener-Policy: same-origin`,
//! HTML error pages for HTML requests ([`errors`]).

use askama::Template;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use super::AppState;
use super::error::ApiError;
use crate::domain::return_to::ReturnTo;

pub mod account;
pub mod assets;
pub mod errors;
pub mod forms;
pub mod recovery;
pub mod sign_in;
pub mod sign_up;

/// Where the pages live.
pub const PREFIX: &str = "/ui";
/// Where a person lands when there is nowhere to return to.
pub const HOME: &str = "/ui/account";

/// The navigation bar's state, shared by every template through `_base.html`.
pub struct Nav {
    /// Shows the account link and the sign-out button.
    pub signed_in: bool,
    /// The session's CSRF token for the sign-out form (empty when signed out).
    pub csrf: String,
}

impl Nav {
    pub fn signed_out() -> Self {
        Self {
            signed_in: false,
            csrf: String::new(),
        }
    }
}

/// All page routes, to be merged into the public router.
pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to(HOME) }))
        .route("/ui/", get(|| async { Redirect::to(HOME) }))
        .route("/ui/static/{name}", get(assets::serve))
        .route("/ui/sign-in", get(sign_in::form).post(sign_in::submit))
        .route("/ui/mfa", get(sign_in::mfa_form).post(sign_in::mfa_submit))
        .route("/ui/sign-out", post(sign_in::sign_out))
        .route("/ui/sign-up", get(sign_up::form).post(sign_up::submit))
        .route("/ui/account", get(account::page))
        .route("/ui/account/password", post(account::change_password))
        .route("/ui/account/sessions/end", post(account::end_session))
        .route("/ui/account/sessions/end-others", post(account::end_others))
        .route("/ui/account/confirm", post(account::confirm))
        .route("/ui/account/totp", post(account::enroll))
        .route("/ui/account/totp/activate", post(account::activate))
        .route("/ui/account/totp/remove", post(account::remove_totp))
        .route("/ui/account/backup-codes", post(account::regenerate))
        .route(
            "/ui/account/backup-codes/download",
            post(account::download_codes),
        )
        .route("/ui/account/email", post(account::request_verification))
        .route(
            "/ui/password/forgot",
            get(recovery::forgot_form).post(recovery::forgot_submit),
        )
        .route(
            "/ui/password/reset",
            get(recovery::reset_form).post(recovery::reset_submit),
        )
        .route(
            "/ui/email/verify",
            get(recovery::verify_form).post(recovery::verify_submit),
        )
        .layer(axum::middleware::from_fn_with_state(state, page_headers))
}

/// The pages' Content-Security-Policy: only castellan's own stylesheet and
/// script, images from castellan or `data:` (the TOTP QR code), forms only
/// to castellan and the allowed return origins (Chromium applies
/// `form-action` to the redirect after a form post).
pub fn content_security_policy(form_targets: &[String]) -> String {
    let mut form_action = String::from("'self'");
    for origin in form_targets {
        form_action.push(' ');
        form_action.push_str(origin);
    }
    format!(
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self' data:; \
         form-action {form_action}; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    )
}

/// Sets the pages' headers on a response (assets set their own caching).
pub fn set_page_headers(state: &AppState, response: &mut Response) {
    let csp = content_security_policy(&state.auth.config().ui_return_origins);
    let h = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // A page opened from another site gets no handle on it (window.opener),
    // and it gets none on pages it opens (ASVS 3.4.8).
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
}

/// Headers of every page.
pub async fn page_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    set_page_headers(&state, &mut response);
    response
}

/// Renders a template, or the contract's 500 when rendering fails.
pub fn render<T: Template>(template: &T) -> Response {
    render_with(StatusCode::OK, template)
}

/// [`render`] with a status (a form shown again with its errors is 400).
pub fn render_with<T: Template>(status: StatusCode, template: &T) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            ApiError::Internal.into_response()
        }
    }
}

/// The allowed return origins: castellan's own and the configured ones.
pub fn allowed_origins(state: &AppState) -> Vec<String> {
    let config = state.auth.config();
    let mut origins = config.ui_return_origins.clone();
    if let Some(own) = crate::domain::return_to::parse_origin(&config.public_base_url) {
        origins.push(own);
    }
    origins
}

/// A checked `return_to`, or `None` for anything off the allow-list.
pub fn return_to(state: &AppState, raw: Option<&str>) -> Option<ReturnTo> {
    raw.and_then(|r| ReturnTo::parse(r, &allowed_origins(state)))
}

/// A 303 to the checked `return_to`, else to the account page.
pub fn go_back(target: Option<&ReturnTo>) -> Response {
    let to = target.map_or(HOME, ReturnTo::as_str);
    Redirect::to(to).into_response()
}

/// `path?return_to=<encoded>` (or just `path`).
pub fn with_return_to(path: &str, target: Option<&ReturnTo>) -> String {
    match target {
        Some(t) => format!(
            "{path}?return_to={}",
            percent_encoding::utf8_percent_encode(t.as_str(), percent_encoding::NON_ALPHANUMERIC)
        ),
        None => path.to_string(),
    }
}
