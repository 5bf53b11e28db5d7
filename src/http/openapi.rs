//! Error responses shared by many operations of `/openapi.json`, declared
//! once and named in each handler's `responses(...)` after the status it
//! stems from (an extractor, a limiter, the database). Every one carries
//! the contract's error body (`ErrorEnvelope`).
//!
//! In a handler's list these go first: a tuple for the same status that
//! follows replaces the shared entry, so a handler can name its own codes.

use std::collections::BTreeMap;

use utoipa::IntoResponses;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{Object, ObjectBuilder, Ref, Schema, Type};
use utoipa::openapi::{OpenApi, RefOr, Response, ResponseBuilder};

/// The components name of the contract's error body.
const ERROR_SCHEMA: &str = "ErrorEnvelope";

/// An error response: the contract's error body and `description`.
pub fn error(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(ERROR_SCHEMA)))
            .build(),
    )
}

/// An error response that also carries `Retry-After` (seconds).
fn error_with_retry_after(description: &str) -> ResponseBuilder {
    error(description).header(
        "Retry-After",
        HeaderBuilder::new()
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1)),
            ))
            .description(Some("seconds to wait before retrying"))
            .build(),
    )
}

fn map<const N: usize>(entries: [(&str, ResponseBuilder); N]) -> BTreeMap<String, RefOr<Response>> {
    entries
        .into_iter()
        .map(|(status, response)| (status.to_string(), response.into()))
        .collect()
}

/// The rejections of a JSON request body (`ApiJson`): malformed JSON,
/// unknown fields, wrong types or invalid values (400), over 64 KiB
/// (413), not `application/json` (415).
pub struct BodyErrors;

impl IntoResponses for BodyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        map([
            (
                "400",
                error(
                    "invalid_request: malformed JSON, an unknown field, a wrong type or an invalid value (the message names the field)",
                ),
            ),
            ("413", error("payload_too_large: the body is over 64 KiB")),
            (
                "415",
                error("unsupported_media_type: the body is not application/json"),
            ),
        ])
    }
}

/// The rejections of the session credential (`Authenticated<P>`): none,
/// unknown, expired or revoked (401); a session the route's policy does not
/// admit, or a cookie write without the CSRF token (403); the database
/// unreachable while checking it (503).
pub struct SessionErrors;

impl IntoResponses for SessionErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        map([
            (
                "401",
                error("unauthenticated: no, unknown, expired or revoked session credential"),
            ),
            (
                "403",
                error(
                    "mfa_required (the session has not finished its second factor, or `require_mfa` and no second factor yet), or forbidden (a cookie request that changes state without a valid X-CSRF-Token)",
                ),
            ),
            (
                "503",
                error_with_retry_after("unavailable: the database is unreachable"),
            ),
        ])
    }
}

/// A limiter refused the attempt (429, with `Retry-After`).
pub struct RateLimited;

impl IntoResponses for RateLimited {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        map([(
            "429",
            error_with_retry_after(
                "rate_limited: too many attempts; retry after Retry-After seconds",
            ),
        )])
    }
}

/// The database is unreachable, or password hashing is saturated (503,
/// with `Retry-After`).
pub struct Unavailable;

impl IntoResponses for Unavailable {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        map([(
            "503",
            error_with_retry_after(
                "unavailable: the database is unreachable, the server is saturated, or the node is draining",
            ),
        )])
    }
}

/// Password fields of the request bodies: (schema, property, whether it
/// sets a new password and so has the policy's minimum).
const PASSWORD_FIELDS: [(&str, &str, bool); 6] = [
    ("Registration", "password", true),
    ("PasswordChange", "new_password", true),
    ("ResetConfirm", "new_password", true),
    ("Credentials", "password", false),
    ("Reauthenticate", "password", false),
    ("PasswordChange", "current_password", false),
];

/// Writes the configured password lengths into the request schemas, so
/// the document a node serves describes that node's policy (the
/// annotations carry the defaults).
pub fn apply_password_lengths(doc: &mut OpenApi, min: usize, max: usize) {
    for (schema, field, new) in PASSWORD_FIELDS {
        if let Some(property) = property_mut(doc, schema, field) {
            if new {
                property.min_length = Some(min);
            }
            property.max_length = Some(max);
        }
    }
}

fn property_mut<'a>(doc: &'a mut OpenApi, schema: &str, field: &str) -> Option<&'a mut Object> {
    let components = doc.components.as_mut()?;
    let RefOr::T(Schema::Object(object)) = components.schemas.get_mut(schema)? else {
        return None;
    };
    match object.properties.get_mut(field)? {
        RefOr::T(Schema::Object(property)) => Some(property),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_password_field_gets_the_configured_lengths() {
        let (_, mut doc) = crate::http::public_routes();
        apply_password_lengths(&mut doc, 9, 2000);
        for (schema, field, new) in PASSWORD_FIELDS {
            let property = property_mut(&mut doc, schema, field)
                .unwrap_or_else(|| panic!("{schema}.{field} is not in the document"));
            assert_eq!(property.max_length, Some(2000), "{schema}.{field}");
            let min = if new { Some(9) } else { Some(1) };
            assert_eq!(property.min_length, min, "{schema}.{field}");
        }
    }

    #[test]
    fn shared_errors_use_the_contract_error_body() {
        let (_, doc) = crate::http::public_routes();
        let json = serde_json::to_value(&doc).unwrap();
        assert!(json["components"]["schemas"][ERROR_SCHEMA].is_object());
        let login = &json["paths"]["/v1/login"]["post"]["responses"];
        for status in ["400", "401", "403", "413", "415", "429", "503"] {
            assert_eq!(
                login[status]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorEnvelope",
                "{status}"
            );
        }
        assert!(login["429"]["headers"]["Retry-After"].is_object());
    }
}
