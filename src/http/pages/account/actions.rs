//! The sensitive actions of the account page and the pages they show:
//! each runs at once, or shows the confirmation form outside the
//! re-authentication window.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use uuid::Uuid;

use super::done;
use crate::audit::RequestMeta;
use crate::auth::mfa::MfaError;
use crate::auth::sessions::RevokeError;
use crate::domain::return_to::ReturnTo;
use crate::domain::{BackupCode, Session, User};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::pages::forms::PageSession;
use crate::http::pages::{Nav, render};

/// A sensitive action, carried through the confirmation form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    EndSession(Uuid),
    EndOthers,
    Enroll,
    Regenerate,
    RemoveTotp,
}

impl Action {
    pub(super) fn parse(then: &str, session_id: Option<&str>) -> Option<Self> {
        Some(match then {
            "end-session" => Action::EndSession(Uuid::parse_str(session_id?).ok()?),
            "end-others" => Action::EndOthers,
            "enroll" => Action::Enroll,
            "regenerate" => Action::Regenerate,
            "remove-totp" => Action::RemoveTotp,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Action::EndSession(_) => "end-session",
            Action::EndOthers => "end-others",
            Action::Enroll => "enroll",
            Action::Regenerate => "regenerate",
            Action::RemoveTotp => "remove-totp",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Action::EndSession(_) => "end that session",
            Action::EndOthers => "end all your other sessions",
            Action::Enroll => "set up two-factor authentication",
            Action::Regenerate => "create new backup codes",
            Action::RemoveTotp => "remove two-factor authentication",
        }
    }
}

#[derive(Template)]
#[template(path = "confirm.html")]
pub struct ConfirmPage {
    pub nav: Nav,
    pub csrf: String,
    pub what: &'static str,
    pub then: &'static str,
    pub session_id: String,
    pub return_to: String,
    pub mfa_enabled: bool,
    pub password_error: Option<String>,
    pub code_error: Option<String>,
}

pub(super) fn confirm_page(
    state: &AppState,
    session: &Session,
    user: &User,
    action: Action,
    target: Option<&ReturnTo>,
) -> ConfirmPage {
    let csrf = state.auth.csrf_token(session.id);
    ConfirmPage {
        nav: Nav {
            signed_in: true,
            csrf: csrf.clone(),
        },
        csrf,
        what: action.describe(),
        then: action.name(),
        session_id: match action {
            Action::EndSession(id) => id.to_string(),
            _ => String::new(),
        },
        return_to: target.map(|t| t.as_str().to_string()).unwrap_or_default(),
        mfa_enabled: user.mfa_enabled,
        password_error: None,
        code_error: None,
    }
}

#[derive(Template)]
#[template(path = "totp_enroll.html")]
pub struct EnrolPage {
    pub nav: Nav,
    pub csrf: String,
    pub secret: String,
    pub qr_data_uri: String,
    pub return_to: String,
    pub code_error: Option<String>,
}

#[derive(Template)]
#[template(path = "backup_codes.html")]
pub struct CodesPage {
    pub nav: Nav,
    pub csrf: String,
    pub codes: Vec<String>,
    pub next: String,
}

pub(super) fn codes_page(
    state: &AppState,
    session: &Session,
    codes: &[BackupCode],
    target: Option<&ReturnTo>,
) -> CodesPage {
    let csrf = state.auth.csrf_token(session.id);
    CodesPage {
        nav: Nav {
            signed_in: true,
            csrf: csrf.clone(),
        },
        csrf,
        codes: codes.iter().map(|c| c.display_form().to_string()).collect(),
        next: target
            .map_or(crate::http::pages::HOME, ReturnTo::as_str)
            .to_string(),
    }
}

/// Runs `action` for the session; outside the re-authentication window (or
/// without `aal2` where that is needed) it shows the confirmation form.
pub(super) async fn run(
    state: &AppState,
    session: &Session,
    user: &User,
    meta: &RequestMeta,
    action: Action,
    target: Option<&ReturnTo>,
) -> Result<Response, ApiError> {
    let confirm = || render(&confirm_page(state, session, user, action, target));
    match action {
        Action::EndSession(id) => match state.auth.revoke_session(session, id, meta).await {
            Ok(()) if id == session.id => {
                let mut r = Redirect::to("/ui/sign-in").into_response();
                crate::http::api::clear_session_cookie(&mut r);
                Ok(r)
            }
            Ok(()) => Ok(done("session")),
            Err(RevokeError::ReauthenticationRequired) => Ok(confirm()),
            Err(e) => Err(e.into()),
        },
        Action::EndOthers => match state.auth.revoke_other_sessions(session, meta).await {
            Ok(_) => Ok(done("others")),
            Err(RevokeError::ReauthenticationRequired) => Ok(confirm()),
            Err(e) => Err(e.into()),
        },
        Action::Enroll => match state.auth.enroll_totp(session, user, meta).await {
            Ok(e) => Ok(render(&EnrolPage {
                nav: Nav {
                    signed_in: true,
                    csrf: state.auth.csrf_token(session.id),
                },
                csrf: state.auth.csrf_token(session.id),
                secret: e.secret_base32.to_string(),
                qr_data_uri: format!("data:image/svg+xml;base64,{}", STANDARD.encode(&e.qr_svg)),
                return_to: target.map(|t| t.as_str().to_string()).unwrap_or_default(),
                code_error: None,
            })),
            Err(MfaError::ReauthenticationRequired) => Ok(confirm()),
            Err(e) => Err(mfa_error(e)),
        },
        Action::Regenerate => match state
            .auth
            .regenerate_backup_codes(session, user, meta)
            .await
        {
            Ok(codes) => Ok(render(&codes_page(state, session, &codes, target))),
            Err(MfaError::ReauthenticationRequired | MfaError::Aal2Required) => Ok(confirm()),
            Err(e) => Err(mfa_error(e)),
        },
        Action::RemoveTotp => match state.auth.remove_totp(session, user, meta).await {
            Ok(()) => Ok(done("totp-removed")),
            Err(MfaError::ReauthenticationRequired | MfaError::Aal2Required) => Ok(confirm()),
            Err(e) => Err(mfa_error(e)),
        },
    }
}

/// [`run`] for a form that carries no return target.
pub(super) async fn run_for(
    state: &AppState,
    meta: &RequestMeta,
    auth: &PageSession,
    action: Action,
) -> Result<Response, ApiError> {
    run(state, &auth.session, &auth.user, meta, action, None).await
}

pub(super) fn mfa_error(e: MfaError) -> ApiError {
    match e {
        MfaError::AlreadyEnabled => ApiError::Conflict("two-factor authentication is already on"),
        MfaError::NothingToActivate => {
            ApiError::InvalidRequest("two-factor authentication is not set up".into())
        }
        MfaError::Aal2Required => ApiError::MfaRequired,
        MfaError::ReauthenticationRequired => ApiError::ReauthenticationRequired,
        MfaError::SessionGone => ApiError::Unauthenticated,
        MfaError::InvalidCode => ApiError::InvalidCredentials(StatusCode::BAD_REQUEST),
        MfaError::NotPending => ApiError::InvalidRequest("no second factor is pending".into()),
        MfaError::Throttled(t) => t.into(),
        MfaError::Service(e) => e.into(),
    }
}
