//! Everything HTTP: routes, extractors, errors, headers. Status codes,
//! cookies and headers are decided here and nowhere else.

use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use std::sync::Arc;

use crate::auth::Auth;

pub mod admin;
pub mod api;
pub mod client_ip;
pub mod error;
pub mod extract;
pub mod health;
pub mod middleware;
pub mod openapi;
pub mod pages;
pub mod request_id;
pub mod views;

use error::ApiError;

/// Shared state of the public listener. Handlers take it by value, so it
/// is one reference count: cloning `Auth` itself copies (and wipes on drop)
/// its keys on every request.
#[derive(Clone)]
pub struct AppState {
    /// The use cases: HTTP reaches storage only through them.
    pub auth: Arc<Auth>,
    /// Set on SIGTERM: readiness answers 503 so a load balancer drains the node.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "castellan", description = "Authentication and session service (HTTP contract v1)"),
    components(schemas(views::ErrorEnvelope)),
    modifiers(&SecuritySchemes),
)]
struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(extract::SESSION_COOKIE))),
        );
    }
}

/// The public API's routes and their OpenAPI description, built together
/// so neither can miss a route.
pub fn public_routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api::accounts::register))
        .routes(routes!(api::accounts::login))
        .routes(routes!(api::session::logout))
        .routes(routes!(api::session::current))
        .routes(routes!(api::session::list, api::session::revoke_others))
        .routes(routes!(api::session::revoke))
        .routes(routes!(api::session::reauthenticate))
        .routes(routes!(api::mfa::login_mfa))
        .routes(routes!(api::mfa::enroll))
        .routes(routes!(api::mfa::activate))
        .routes(routes!(api::mfa::remove))
        .routes(routes!(api::mfa::backup_status))
        .routes(routes!(api::mfa::regenerate))
        .routes(routes!(api::passkeys::registration_start))
        .routes(routes!(api::passkeys::registration_finish))
        .routes(routes!(api::passkeys::list))
        .routes(routes!(api::passkeys::rename, api::passkeys::delete))
        .routes(routes!(api::passkeys::login_start))
        .routes(routes!(api::passkeys::login_finish))
        .routes(routes!(api::passkeys::mfa_start))
        .routes(routes!(api::passkeys::mfa_finish))
        .routes(routes!(api::passkeys::reauth_start))
        .routes(routes!(api::passkeys::reauth_finish))
        .routes(routes!(api::recovery::change))
        .routes(routes!(api::recovery::reset_request))
        .routes(routes!(api::recovery::reset_confirm))
        .routes(routes!(api::recovery::verification_request))
        .routes(routes!(api::recovery::verification_confirm))
        .routes(routes!(api::forward_auth::check))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .split_for_parts()
}

/// The public listener's complete application.
pub fn public_app(state: AppState) -> Router {
    let (router, mut openapi) = public_routes();
    let config = state.auth.config();
    openapi::apply_password_lengths(
        &mut openapi,
        config.passwords.min_length,
        config.passwords.max_length,
    );
    let openapi = std::sync::Arc::new(openapi);
    router
        .merge(pages::routes(state.clone()))
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = openapi.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(middleware::MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(from_fn(middleware::limit_body))
        .layer(from_fn_with_state(
            state.clone(),
            pages::errors::html_errors,
        ))
        .layer(from_fn_with_state(
            state.auth.config().profile == crate::config::Profile::Production,
            middleware::security_headers,
        ))
        .layer(from_fn(middleware::request_context))
        .with_state(state)
}
