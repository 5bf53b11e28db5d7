//! The confirmation form: re-authenticates, then runs the action the
//! person asked for.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::actions::{Action, confirm_page, run};
use crate::audit::RequestMeta;
use crate::auth::mfa::SecondFactor;
use crate::domain::{BackupCode, Password, TotpCode};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::EnrolmentAllowed;
use crate::http::pages::forms::SessionForm;
use crate::http::pages::sign_in::{issue_cookie, reauth_refused};
use crate::http::pages::{render_with, return_to};

#[derive(Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    pub password: String,
    pub totp_code: Option<String>,
    pub backup_code: Option<String>,
    #[serde(default)]
    pub then: String,
    pub session_id: Option<String>,
    pub return_to: Option<String>,
}

/// `POST /ui/account/confirm`: re-authenticates (the same use case as
/// `POST /v1/reauthenticate`; the token rotates) and runs the action.
pub async fn confirm(
    State(state): State<AppState>,
    meta: RequestMeta,
    SessionForm { auth, form: f }: SessionForm<ConfirmForm, EnrolmentAllowed>,
) -> Result<Response, ApiError> {
    let action = Action::parse(&f.then, f.session_id.as_deref())
        .ok_or_else(|| ApiError::InvalidRequest("then: unknown action".into()))?;
    let target = return_to(&state, f.return_to.as_deref());
    let mut again = confirm_page(&state, &auth.session, &auth.user, action, target.as_ref());
    let Ok(password) =
        Password::for_verification(&f.password, state.auth.config().passwords.max_length)
    else {
        again.password_error = Some("Enter your password.".into());
        return Ok(render_with(StatusCode::BAD_REQUEST, &again));
    };
    let present = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let second = if auth.user.mfa_enabled {
        let parsed = match (present(&f.totp_code), present(&f.backup_code)) {
            (Some(c), _) => TotpCode::parse(&c).ok().map(SecondFactor::Totp),
            (None, Some(c)) => BackupCode::parse(&c).ok().map(SecondFactor::Backup),
            (None, None) => None,
        };
        match parsed {
            Some(s) => Some(s),
            None => {
                again.code_error =
                    Some("Enter a code from your authenticator app or a backup code.".into());
                return Ok(render_with(StatusCode::BAD_REQUEST, &again));
            }
        }
    } else {
        None
    };
    match state
        .auth
        .reauthenticate(&auth.session, &auth.user, &password, second.as_ref(), &meta)
        .await
    {
        Ok((token, session)) => {
            let mut response =
                run(&state, &session, &auth.user, &meta, action, target.as_ref()).await?;
            issue_cookie(&mut response, &token, &session);
            Ok(response)
        }
        Err(e) => reauth_refused(again, |p, m| p.password_error = Some(m), e),
    }
}
