//! The account page and its actions: sessions, password change, TOTP
//! enrolment and removal, backup codes, email verification. A sensitive
//! action outside the re-authentication window shows the confirmation form
//! (password, and the second factor when TOTP is on); once confirmed, the
//! action the person asked for runs at once, so they continue where they
//! were.

mod actions;
mod confirm;
mod two_factor;

pub use confirm::confirm;
pub use two_factor::{activate, download_codes, enroll, regenerate, remove_totp};

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::forms::{PageSession, SessionForm};
use super::sign_in::{FEW_BACKUP_CODES, throttled_message, too_many};
use super::{Nav, render, render_with};
use crate::audit::RequestMeta;
use crate::auth::recovery::RecoveryError;
use crate::domain::{Password, Session, User};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::EnrolmentAllowed;
use actions::{Action, run_for};

/// One row of the sessions table.
pub struct SessionRow {
    pub id: String,
    pub device: String,
    pub ip: String,
    pub last_seen: String,
    pub created: String,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "account.html")]
pub struct AccountPage {
    pub nav: Nav,
    pub csrf: String,
    pub email: String,
    pub email_verified: bool,
    pub mfa_enabled: bool,
    pub backup_remaining: u32,
    pub backup_total: u32,
    pub few_backup_codes: bool,
    pub sessions: Vec<SessionRow>,
    pub notice: Option<&'static str>,
    pub current_password_error: Option<String>,
    pub new_password_error: Option<String>,
    pub min_length: usize,
    /// Show the Passkeys section (only when passkeys are configured).
    pub passkeys: bool,
}

/// Fixed notices named in `?done=` after a redirect (nothing from the
/// request is shown).
fn notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "password" => "Your password was changed. Your other sessions were ended.",
        "session" => "The session was ended.",
        "others" => "All your other sessions were ended.",
        "totp-removed" => "Two-factor authentication was removed.",
        "verification-sent" => "We sent you a link to verify your email address.",
        _ => return None,
    })
}

fn when(t: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    t.format(&format).unwrap_or_default()
}

async fn account_page(
    state: &AppState,
    session: &Session,
    user: &User,
    done: Option<&str>,
) -> Result<AccountPage, ApiError> {
    let sessions = state.auth.list_sessions(user.id).await?;
    let (remaining, total) = if user.mfa_enabled {
        state.auth.backup_code_status(user.id).await?
    } else {
        (0, 0)
    };
    Ok(AccountPage {
        nav: Nav {
            signed_in: true,
            csrf: state.auth.csrf_token(session.id),
        },
        csrf: state.auth.csrf_token(session.id),
        email: user.email.as_str().to_string(),
        email_verified: user.email_verified,
        mfa_enabled: user.mfa_enabled,
        backup_remaining: remaining,
        backup_total: total,
        few_backup_codes: remaining <= FEW_BACKUP_CODES,
        sessions: sessions
            .iter()
            .map(|s| SessionRow {
                id: s.id.to_string(),
                device: if s.user_agent.is_empty() {
                    "unknown device".into()
                } else {
                    s.user_agent.clone()
                },
                ip: s.ip.clone(),
                last_seen: when(s.last_seen_at),
                created: when(s.created_at),
                current: s.id == session.id,
            })
            .collect(),
        notice: notice(done),
        current_password_error: None,
        new_password_error: None,
        min_length: state.auth.config().passwords.min_length,
        passkeys: state.auth.config().passkeys.enabled(),
    })
}

#[derive(Deserialize)]
pub struct AccountQuery {
    pub done: Option<String>,
}

/// `GET /ui/account`
pub async fn page(
    State(state): State<AppState>,
    auth: PageSession<EnrolmentAllowed>,
    Query(q): Query<AccountQuery>,
) -> Result<Response, ApiError> {
    Ok(render(
        &account_page(&state, &auth.session, &auth.user, q.done.as_deref()).await?,
    ))
}

fn done(what: &str) -> Response {
    Redirect::to(&format!("/ui/account?done={what}")).into_response()
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    pub current_password: String,
    #[serde(default)]
    pub new_password: String,
}

/// `POST /ui/account/password`: the same use case as `POST /v1/password/change`.
pub async fn change_password(
    State(state): State<AppState>,
    meta: RequestMeta,
    SessionForm { auth, form: f }: SessionForm<PasswordForm>,
) -> Result<Response, ApiError> {
    let mut again = account_page(&state, &auth.session, &auth.user, None).await?;
    let max = state.auth.config().passwords.max_length;
    let Ok(current) = Password::for_verification(&f.current_password, max) else {
        again.current_password_error = Some("Enter your current password.".into());
        return Ok(render_with(StatusCode::BAD_REQUEST, &again));
    };
    let email = &auth.user.email;
    let new = match Password::new_for_account(
        &f.new_password,
        state.auth.password_policy(),
        &[email.local_part(), email.as_str()],
    ) {
        Ok(p) => p,
        Err(e) => {
            again.new_password_error = Some(format!("Choose another password: {e}."));
            return Ok(render_with(StatusCode::BAD_REQUEST, &again));
        }
    };
    match state
        .auth
        .change_password(&auth.session, &auth.user, &current, &new, &meta)
        .await
    {
        Ok(()) => Ok(done("password")),
        Err(RecoveryError::InvalidCredentials) => {
            again.current_password_error = Some("Your current password is not correct.".into());
            Ok(render_with(StatusCode::BAD_REQUEST, &again))
        }
        Err(RecoveryError::Throttled(t)) => match throttled_message(&t) {
            Some((message, secs)) => {
                again.current_password_error = Some(message);
                Ok(too_many(&again, secs))
            }
            None => Err(ApiError::from(t)),
        },
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct SessionIdForm {
    #[serde(default)]
    pub session_id: String,
}

/// `POST /ui/account/sessions/end`
pub async fn end_session(
    State(state): State<AppState>,
    meta: RequestMeta,
    SessionForm { auth, form }: SessionForm<SessionIdForm>,
) -> Result<Response, ApiError> {
    let id = crate::http::extract::canonical_uuid(&form.session_id, "session_id")?;
    run_for(&state, &meta, &auth, Action::EndSession(id)).await
}

#[derive(Deserialize)]
pub struct ReturnForm {
    pub return_to: Option<String>,
}

/// `POST /ui/account/sessions/end-others`
pub async fn end_others(
    State(state): State<AppState>,
    meta: RequestMeta,
    SessionForm { auth, .. }: SessionForm<ReturnForm>,
) -> Result<Response, ApiError> {
    run_for(&state, &meta, &auth, Action::EndOthers).await
}

/// `POST /ui/account/email`: mails a verification link.
pub async fn request_verification(
    State(state): State<AppState>,
    meta: RequestMeta,
    SessionForm { auth, .. }: SessionForm<ReturnForm>,
) -> Result<Response, ApiError> {
    state
        .auth
        .request_email_verification(&auth.user, &meta)
        .await?;
    Ok(done("verification-sent"))
}
