//! Handlers of the public JSON API, one file per area. Handlers parse, call
//! one use case, and map the result.

pub mod accounts;
pub mod forward_auth;
pub mod mfa;
pub mod passkeys;
pub mod recovery;
pub mod session;

use axum::http::{HeaderValue, header};
use axum::response::Response;

use super::extract::SESSION_COOKIE;
use crate::domain::SessionToken;

/// Sets the session cookie to a newly issued token.
pub fn set_session_cookie(response: &mut Response, token: &SessionToken, max_age_secs: u64) {
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}",
        token.expose()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// Expires the session cookie and asks the browser to drop cached data.
pub fn clear_session_cookie(response: &mut Response) {
    let cookie = format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response.headers_mut().insert(
        "clear-site-data",
        HeaderValue::from_static("\"cache\", \"cookies\", \"storage\""),
    );
}
