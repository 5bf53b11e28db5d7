//! Liveness and readiness.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;

/// How long readiness waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Serialize, ToSchema)]
pub struct Status {
    #[schema(example = "ok")]
    status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, body = Status)))]
pub async fn live() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// The database answers; 503 when it does not within a second, and while
/// the node drains before shutting down.
#[utoipa::path(get, path = "/health/ready", tag = "health", responses(
    super::openapi::Unavailable,
    (status = 200, body = Status),
))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(ApiError::Unavailable {
            retry_after_secs: 2,
        });
    }
    match tokio::time::timeout(READY_TIMEOUT, state.auth.ready()).await {
        Ok(Ok(())) => Ok(Json(Status { status: "ok" })),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::Unavailable {
                retry_after_secs: 2,
            })
        }
        Err(_) => {
            tracing::warn!("readiness check timed out");
            Err(ApiError::Unavailable {
                retry_after_secs: 2,
            })
        }
    }
}
