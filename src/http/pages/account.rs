//! The account page and its actions: sessions, password change, TOTP
//! enrolment and removal, backup codes, email verification. A sensitive
//! action outside the re-authentication window shows the confirmation form
//! (password, and the second factor when TOTP is on); once confirmed, the
//! action the person asked for runs at once, so they continue where they
//! were.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use uuid::Uuid;

use super::forms::{PageSession, SessionForm};
use super::sign_in::{FEW_BACKUP_CODES, issue_cookie, throttled_message, too_many};
use super::{Nav, render, render_with, return_to};
use crate::audit::RequestMeta;
use crate::auth::login::LoginError;
use crate::auth::mfa::{MfaError, SecondFactor};
use crate::auth::recovery::RecoveryError;
use crate::auth::sessions::RevokeError;
use crate::domain::return_to::ReturnTo;
use crate::domain::{BackupCode, Password, Session, TotpCode, User};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::EnrolmentAllowed;

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
            csrf: state.auth.keys.csrf_token(session.id),
        },
        csrf: state.auth.keys.csrf_token(session.id),
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
        min_length: state.auth.config.password_min_length,
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
    let max = state.auth.config.password_max_length;
    let Ok(current) = Password::for_verification(&f.current_password, max) else {
        again.current_password_error = Some("Enter your current password.".into());
        return Ok(render_with(StatusCode::BAD_REQUEST, &again));
    };
    let email = &auth.user.email;
    let new = match Password::new_for_account(
        &f.new_password,
        &state.auth.password_policy(),
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
    fn parse(then: &str, session_id: Option<&str>) -> Option<Self> {
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

fn confirm_page(
    state: &AppState,
    session: &Session,
    user: &User,
    action: Action,
    target: Option<&ReturnTo>,
) -> ConfirmPage {
    let csrf = state.auth.keys.csrf_token(session.id);
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

fn codes_page(
    state: &AppState,
    session: &Session,
    codes: &[BackupCode],
    target: Option<&ReturnTo>,
) -> CodesPage {
    let csrf = state.auth.keys.csrf_token(session.id);
    CodesPage {
        nav: Nav {
            signed_in: true,
            csrf: csrf.clone(),
        },
        csrf,
        codes: codes.iter().map(|c| c.display_form().to_string()).collect(),
        next: target.map_or(super::HOME, ReturnTo::as_str).to_string(),
    }
}

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

/// Runs `action` for the session; outside the re-authentication window (or
/// without `aal2` where that is needed) it shows the confirmation form.
async fn run(
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
                    csrf: state.auth.keys.csrf_token(session.id),
                },
                csrf: state.auth.keys.csrf_token(session.id),
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

fn mfa_error(e: MfaError) -> ApiError {
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
    run(
        &state,
        &auth.session,
        &auth.user,
        &meta,
        Action::EndSession(id),
        None,
    )
    .await
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
    run(
        &state,
        &auth.session,
        &auth.user,
        &meta,
        Action::EndOthers,
        None,
    )
    .await
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
    run(
        &state,
        &auth.session,
        &auth.user,
        &meta,
        Action::Regenerate,
        None,
    )
    .await
}

/// `POST /ui/account/totp/remove`
pub async fn remove_totp(
    State(state): State<AppState>,
    meta: RequestMeta,
    SessionForm { auth, .. }: SessionForm<ReturnForm>,
) -> Result<Response, ApiError> {
    run(
        &state,
        &auth.session,
        &auth.user,
        &meta,
        Action::RemoveTotp,
        None,
    )
    .await
}

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
        Password::for_verification(&f.password, state.auth.config.password_max_length)
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
        Err(LoginError::InvalidCredentials) => {
            again.password_error = Some("The password or code is not correct.".into());
            Ok(render_with(StatusCode::BAD_REQUEST, &again))
        }
        Err(LoginError::Throttled(t)) => match throttled_message(&t) {
            Some((message, secs)) => {
                again.password_error = Some(message);
                Ok(too_many(&again, secs))
            }
            None => Err(ApiError::from(t)),
        },
        Err(e) => Err(e.into()),
    }
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
