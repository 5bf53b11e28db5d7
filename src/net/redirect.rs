//! The optional plain-HTTP listener next to native TLS. Browser pages are
//! sent to HTTPS with a 301; API calls fail instead, so a client that
//! mistakenly speaks plain HTTP learns it at once rather than having its
//! credentials sent in clear and then redirected.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Paths that belong to machines, never redirected.
fn is_api(path: &str) -> bool {
    ["/v1", "/admin", "/health", "/metrics", "/openapi.json"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

/// `https_origin` is the public base URL (`https://auth.example.com`).
pub fn app(https_origin: String) -> Router {
    Router::new().fallback(answer).with_state(https_origin)
}

async fn answer(State(origin): State<String>, req: Request) -> Response {
    let path = req.uri().path();
    let page = matches!(*req.method(), Method::GET | Method::HEAD) && !is_api(path);
    if !page {
        let body = serde_json::json!({"error": {
            "code": "https_required",
            "message": "this port only redirects browser pages; call the API over https",
            "request_id": uuid::Uuid::new_v4().to_string(),
        }});
        return (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    }
    // The target is built from the configured origin, never from the Host
    // header, so this cannot become an open redirect.
    let target = match req.uri().path_and_query() {
        Some(pq) => format!("{origin}{pq}"),
        None => format!("{origin}/"),
    };
    let mut response = StatusCode::MOVED_PERMANENTLY.into_response();
    if let Ok(value) = HeaderValue::from_str(&target) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::is_api;

    #[test]
    fn api_paths_are_recognised_by_whole_segments() {
        for p in [
            "/v1",
            "/v1/login",
            "/admin/v1/users",
            "/health/ready",
            "/openapi.json",
        ] {
            assert!(is_api(p), "{p}");
        }
        for p in ["/", "/login", "/v10", "/healthy", "/static/app.js"] {
            assert!(!is_api(p), "{p}");
        }
    }
}
