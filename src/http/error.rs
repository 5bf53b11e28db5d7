//! The one place that turns errors into HTTP responses, in the contract's
//! shape: `{"error": {"code", "message", "request_id"}}`. Internal details
//! are logged here, once, with the request id, and never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::request_id::current_request_id;
use crate::auth::ServiceError;
use crate::auth::StoreError;
use crate::auth::accounts::RegisterError;
use crate::auth::login::LoginError;
use crate::auth::recovery::RecoveryError;
use crate::auth::sessions::{CheckError, RevokeError};
use crate::auth::throttle::Throttled;

/// Every error the API can answer with.
#[derive(Debug)]
pub enum ApiError {
    /// Malformed or invalid input; the message names the field.
    InvalidRequest(String),
    WeakPassword(String),
    Unauthenticated,
    /// Wrong credentials; 401 at login, 400 where the caller has a session.
    InvalidCredentials(StatusCode),
    MfaRequired,
    ReauthenticationRequired,
    AccountLocked,
    Forbidden(&'static str),
    NotFound,
    MethodNotAllowed,
    Conflict(&'static str),
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimited {
        retry_after_secs: u64,
    },
    Internal,
    Unavailable {
        retry_after_secs: u64,
    },
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    request_id: &'a str,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        use ApiError::*;
        match self {
            InvalidRequest(m) => (StatusCode::BAD_REQUEST, "invalid_request", m.clone()),
            WeakPassword(m) => (StatusCode::BAD_REQUEST, "weak_password", m.clone()),
            Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "a valid session is required".into(),
            ),
            InvalidCredentials(status) => (
                *status,
                "invalid_credentials",
                "the credentials are not valid".into(),
            ),
            MfaRequired => (
                StatusCode::FORBIDDEN,
                "mfa_required",
                "a second factor is required first".into(),
            ),
            ReauthenticationRequired => (
                StatusCode::FORBIDDEN,
                "reauthentication_required",
                "re-authenticate to do this".into(),
            ),
            AccountLocked => (
                StatusCode::FORBIDDEN,
                "account_locked",
                "the account is locked".into(),
            ),
            Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", (*m).into()),
            NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "no such resource".into(),
            ),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route".into(),
            ),
            Conflict(m) => (StatusCode::CONFLICT, "conflict", (*m).into()),
            PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the body is larger than 64 KiB".into(),
            ),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be application/json".into(),
            ),
            RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many attempts; retry later".into(),
            ),
            Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error".into(),
            ),
            Unavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "temporarily unavailable; retry later".into(),
            ),
        }
    }

    /// The contract's error code, e.g. `invalid_request`.
    pub fn code(&self) -> &'static str {
        self.parts().1
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        let request_id = current_request_id();
        let body = Body {
            error: Inner {
                code,
                message: &message,
                request_id: &request_id,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        let retry = match self {
            ApiError::RateLimited { retry_after_secs }
            | ApiError::Unavailable { retry_after_secs } => Some(retry_after_secs.max(1)),
            _ => None,
        };
        if let Some(secs) = retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => ApiError::Conflict("conflict"),
            StoreError::Unavailable(reason) => {
                tracing::warn!(%reason, "database unavailable");
                ApiError::Unavailable {
                    retry_after_secs: 2,
                }
            }
            StoreError::Unexpected(e) => {
                tracing::error!(error = %format!("{e:#}"), "storage error");
                ApiError::Internal
            }
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Busy => ApiError::Unavailable {
                retry_after_secs: 1,
            },
            ServiceError::Store(e) => e.into(),
            ServiceError::Unexpected(e) => {
                tracing::error!(error = %format!("{e:#}"), "unexpected error");
                ApiError::Internal
            }
        }
    }
}

impl From<RegisterError> for ApiError {
    fn from(e: RegisterError) -> Self {
        match e {
            RegisterError::EmailTaken => ApiError::Conflict("the email is already registered"),
            RegisterError::Throttled(t) => t.into(),
            RegisterError::Service(e) => e.into(),
        }
    }
}

impl From<LoginError> for ApiError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::InvalidCredentials => {
                ApiError::InvalidCredentials(StatusCode::UNAUTHORIZED)
            }
            LoginError::Locked => ApiError::AccountLocked,
            LoginError::SessionGone => ApiError::Unauthenticated,
            LoginError::Throttled(t) => t.into(),
            LoginError::Service(e) => e.into(),
        }
    }
}

impl From<Throttled> for ApiError {
    fn from(e: Throttled) -> Self {
        match e {
            Throttled::RetryAfter(secs) => ApiError::RateLimited {
                retry_after_secs: secs,
            },
            // The factor stays off until the reset flow (or an admin) clears it.
            Throttled::FactorDisabled => ApiError::RateLimited {
                retry_after_secs: 3600,
            },
            Throttled::Store(e) => e.into(),
        }
    }
}

impl From<RecoveryError> for ApiError {
    fn from(e: RecoveryError) -> Self {
        match e {
            RecoveryError::InvalidCredentials => {
                ApiError::InvalidCredentials(StatusCode::BAD_REQUEST)
            }
            RecoveryError::InvalidToken => {
                ApiError::InvalidRequest("token: invalid, used or expired".into())
            }
            RecoveryError::Throttled(t) => t.into(),
            RecoveryError::Service(e) => e.into(),
        }
    }
}

impl From<RevokeError> for ApiError {
    fn from(e: RevokeError) -> Self {
        match e {
            RevokeError::NotFound => ApiError::NotFound,
            RevokeError::ReauthenticationRequired => ApiError::ReauthenticationRequired,
            RevokeError::Service(e) => e.into(),
        }
    }
}

impl From<CheckError> for ApiError {
    fn from(e: CheckError) -> Self {
        match e {
            CheckError::Unauthenticated => ApiError::Unauthenticated,
            CheckError::Store(e) => e.into(),
        }
    }
}
