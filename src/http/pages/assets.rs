//! The pages' stylesheet and script, compiled into the binary: nothing is
//! read from disk at run time, and any other name (traversal attempts
//! included) is 404. There is no listing of the folder.

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;

const STYLESHEET: &str = include_str!("../../../static/castellan.css");
const SCRIPT: &str = include_str!("../../../static/castellan.js");
/// Passkey registration and sign-in (calls the JSON API; see the file).
const PASSKEYS: &str = include_str!("../../../static/passkeys.js");

/// `GET /ui/static/{name}`: one of the two embedded files.
pub async fn serve(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "castellan.css" => (STYLESHEET, "text/css; charset=utf-8"),
        "castellan.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "passkeys.js" => (PASSKEYS, "text/javascript; charset=utf-8"),
        _ => return ApiError::NotFound.into_response(),
    };
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}
