//! The HTTP ceiling: axum returning a fixed JSON body, nothing else.
use axum::{Json, Router, routing::get};

#[tokio::main]
async fn main() {
    let app = Router::new().route(
        "/health/live",
        get(|| async { Json(serde_json::json!({"status": "ok"})) }),
    );
    let listener = castellan_bench_targets::listen().await;
    axum::serve(listener, app).await.expect("serve");
}
