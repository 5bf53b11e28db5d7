//! Two-factor actions of the account page: TOTP enrolment, activation
//! and removal, new backup codes and their download.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::ReturnForm;
use super::actions::{Action, EnrolPage, codes_page, mfa_error, run, run_for};
use crate::audit::RequestMeta;
use crate::auth::mfa::MfaError;
use crate::domain::{BackupCode, TotpCode};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::EnrolmentAllowed;
use crate::http::pages::forms::SessionForm;
use crate::http::pages::{render, render_with, return_to};

/// `POST /ui/account/backup-codes/download`: the codes just shown, sent
/// back by the page's form, as a text file. castellan keeps only their
/// hashes, so the page is the one place that still has them; they are
/// checked for shape and never stored or logged.
pub async fn download_codes(
    SessionForm { form, .. }: SessionForm<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let codes: Vec<&str> = form
        .iter()
        .filter(|(k, _)| k == "code")
        .map(|(_, v)| v.as_str())
        .collect();
    if codes.is_empty() || codes.len() > 20 || codes.iter().any(|c| BackupCode::parse(c).is_err()) {
        return Err(ApiError::InvalidRequest(
            "code: not a list of backup codes".into(),
        ));
    }
    let text = format!(
        "castellan backup codes\nEach code works once.\n\n{}\n",
        codes.join("\n")
    );
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                "attachment; filename=\"castellan-backup-codes.txt\"",
            ),
        ],
        text,
    )
        .into_response())
}

/// `POST /ui/account/totp`: starts enrolment and shows the QR code.
pub async fn enroll(
    State(state): State<AppState>,
    meta: RequestMeta,
    SessionForm { auth, form }: SessionForm<ReturnForm, EnrolmentAllowed>,
) -> Result<Response, ApiError> {
    let target = return_to(&state, form.return_to.as_deref());
    run(
        &state,
        &auth.session,
        &auth.user,
        &meta,
        Action::Enroll,
        target.as_ref(),
    )
    .await
}

#[derive(Deserialize)]
pub struct ActivateForm {
    #[serde(default)]
    pub code: String,
    pub return_to: Option<String>,
}

/// `POST /ui/account/totp/activate`: the first code turns TOTP on; the
/// backup codes are shown this once.
pub async fn activate(
    State(state): State<AppState>,
    meta: RequestMeta,
    SessionForm { auth, form }: SessionForm<ActivateForm, EnrolmentAllowed>,
) -> Result<Response, ApiError> {
    let target = return_to(&state, form.return_to.as_deref());
    let outcome = match TotpCode::parse(form.code.trim()) {
        Ok(code) => {
            state
                .auth
                .activate_totp(&auth.session, &auth.user, &code, &meta)
                .await
        }
        Err(_) => Err(MfaError::InvalidCode),
    };
    match outcome {
        Ok(codes) => Ok(render(&codes_page(
            &state,
            &auth.session,
            &codes,
            target.as_ref(),
        ))),
        Err(MfaError::InvalidCode) => {
            // The pending secret is sealed and never shown again: start
            // over with a new one.
            let e = state
                .auth
                .enroll_totp(&auth.session, &auth.user, &meta)
                .await
                .map_err(mfa_error)?;
            let page = EnrolPage {
                nav: auth.nav(&state),
                csrf: auth.csrf(&state),
                secret: e.secret_base32.to_string(),
                qr_data_uri: format!("data:image/svg+xml;base64,{}", STANDARD.encode(&e.qr_svg)),
                return_to: target.map(|t| t.as_str().to_string()).unwrap_or_default(),
                code_error: Some(
                    "That code did not match. Here is a new key: add it to your app again and enter its code.".into(),
                ),
            };
            Ok(render_with(StatusCode::BAD_REQUEST, &page))
        }
        Err(MfaError::Throttled(t)) => Err(t.into()),
        Err(e) => Err(mfa_error(e)),
    }
}

/// `POST /ui/account/backup-codes`: new codes; the old ones stop working.
pub async fn regenerate(
    State(state): State<AppState>,
    meta: RequestMeta,
    SessionForm { auth, .. }: SessionForm<ReturnForm>,
) -> Result<Response, ApiError> {
    run_for(&state, &meta, &auth, Action::Regenerate).await
}

/// `POST /ui/account/totp/remove`
pub async fn remove_totp(
    State(state): State<AppState>,
    meta: RequestMeta,
    SessionForm { auth, .. }: SessionForm<ReturnForm>,
) -> Result<Response, ApiError> {
    run_for(&state, &meta, &auth, Action::RemoveTotp).await
}
