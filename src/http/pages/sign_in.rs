//! Sign in (password, then the MFA step), step-up to `aal2`, sign out.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::forms::{AnonCsrf, AnonForm, PageSession, SessionForm};
use super::{Nav, go_back, render, render_with, return_to, with_return_to};
use crate::audit::RequestMeta;
use crate::auth::login::LoginError;
use crate::auth::mfa::{MfaError, SecondFactor};
use crate::auth::throttle::Throttled;
use crate::domain::return_to::ReturnTo;
use crate::domain::{BackupCode, Email, Password, Session, SessionToken, TotpCode};
use crate::http::AppState;
use crate::http::api::{clear_session_cookie, set_session_cookie};
use crate::http::error::ApiError;
use crate::http::extract::PendingAllowed;

/// Backup codes left at or below which the pages warn.
pub const FEW_BACKUP_CODES: u32 = 3;

/// `?return_to=` on GET pages.
#[derive(Deserialize, Default)]
pub struct ReturnQuery {
    pub return_to: Option<String>,
}

#[derive(Template)]
#[template(path = "sign_in.html")]
pub struct SignInPage {
    pub nav: Nav,
    pub csrf: String,
    pub email: String,
    pub return_to: String,
    pub email_error: Option<String>,
    pub password_error: Option<String>,
    pub notice: Option<String>,
    /// Offer passkey sign-in (only when passkeys are configured).
    pub passkeys: bool,
}

fn page(state: &AppState, csrf: &AnonCsrf, target: Option<&ReturnTo>) -> SignInPage {
    SignInPage {
        nav: Nav::signed_out(),
        csrf: csrf.token.clone(),
        email: String::new(),
        return_to: target.map(|t| t.as_str().to_string()).unwrap_or_default(),
        email_error: None,
        password_error: None,
        notice: None,
        passkeys: state.auth.config().passkeys.enabled(),
    }
}

/// `GET /ui/sign-in`
pub async fn form(
    State(state): State<AppState>,
    csrf: AnonCsrf,
    Query(q): Query<ReturnQuery>,
) -> Response {
    let target = return_to(&state, q.return_to.as_deref());
    csrf.apply(render(&page(&state, &csrf, target.as_ref())))
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub password: String,
    pub return_to: Option<String>,
}

/// Sets the session cookie for a newly issued token.
pub fn issue_cookie(response: &mut Response, token: &SessionToken, session: &Session) {
    let max_age = (session.expires_at - session.created_at)
        .whole_seconds()
        .max(0);
    set_session_cookie(response, token, u64::try_from(max_age).unwrap_or(0));
}

/// A throttled form answers 429 with `Retry-After` and says so in the page.
pub fn throttled_message(t: &Throttled) -> Option<(String, u64)> {
    match t {
        Throttled::RetryAfter(secs) => Some((
            format!("Too many attempts. Try again in {secs} seconds."),
            *secs,
        )),
        Throttled::FactorDisabled => Some((
            "Too many failed attempts: this sign-in method is blocked. Reset your password to unblock it.".into(),
            3600,
        )),
        Throttled::Store(_) => None,
    }
}

/// Redraws a re-authentication form after a refusal: a wrong password or
/// code (400), or too many attempts (429 when the wait can be shown).
pub fn reauth_refused<P: Template>(
    mut again: P,
    set_error: impl FnOnce(&mut P, String),
    e: LoginError,
) -> Result<Response, ApiError> {
    match e {
        LoginError::InvalidCredentials => {
            set_error(&mut again, "The password or code is not correct.".into());
            Ok(render_with(StatusCode::BAD_REQUEST, &again))
        }
        LoginError::Throttled(t) => match throttled_message(&t) {
            Some((message, secs)) => {
                set_error(&mut again, message);
                Ok(too_many(&again, secs))
            }
            None => Err(ApiError::from(t)),
        },
        e => Err(e.into()),
    }
}

/// Renders a form page with status 429 and `Retry-After`.
pub fn too_many<T: Template>(template: &T, retry_after: u64) -> Response {
    let mut response = render_with(StatusCode::TOO_MANY_REQUESTS, template);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
    response
}

/// `POST /ui/sign-in`: the same use case as `POST /v1/login`.
pub async fn submit(
    State(state): State<AppState>,
    meta: RequestMeta,
    csrf: AnonCsrf,
    AnonForm(f): AnonForm<SignInForm>,
) -> Result<Response, ApiError> {
    let target = return_to(&state, f.return_to.as_deref());
    let mut again = page(&state, &csrf, target.as_ref());
    again.email = f.email.clone();
    let Ok(email) = Email::parse(&f.email) else {
        again.email_error = Some("Enter your email address, like name@example.com.".into());
        return Ok(render_with(StatusCode::BAD_REQUEST, &again));
    };
    let Ok(password) =
        Password::for_verification(&f.password, state.auth.config().passwords.max_length)
    else {
        again.password_error = Some("Enter your password.".into());
        return Ok(render_with(StatusCode::BAD_REQUEST, &again));
    };
    match state.auth.login(&email, &password, &meta).await {
        Ok(done) => {
            let next = if done.session.mfa_pending {
                Redirect::to(&with_return_to("/ui/mfa", target.as_ref())).into_response()
            } else {
                go_back(target.as_ref())
            };
            let mut response = next;
            issue_cookie(&mut response, &done.token, &done.session);
            Ok(response)
        }
        // Same words for an unknown email and a wrong password.
        Err(LoginError::InvalidCredentials) => {
            again.password_error = Some("The email address or password is not correct.".into());
            Ok(render_with(StatusCode::UNAUTHORIZED, &again))
        }
        Err(LoginError::Locked) => {
            again.password_error =
                Some("This account is locked. Contact your administrator.".into());
            Ok(render_with(StatusCode::FORBIDDEN, &again))
        }
        Err(LoginError::Throttled(t)) => match throttled_message(&t) {
            Some((message, secs)) => {
                again.password_error = Some(message);
                Ok(too_many(&again, secs))
            }
            None => Err(LoginError::Throttled(t).into()),
        },
        Err(e) => Err(e.into()),
    }
}

#[derive(Template)]
#[template(path = "mfa.html")]
pub struct MfaPage {
    pub nav: Nav,
    pub csrf: String,
    pub return_to: String,
    /// `login`: the second step of sign-in; `step_up`: an aal1 session of a
    /// user with TOTP proves it; `enrol`: the user has no second factor yet.
    pub mode: &'static str,
    pub backup_remaining: u32,
    pub few_backup_codes: bool,
    pub totp_error: Option<String>,
    pub backup_error: Option<String>,
    pub password_error: Option<String>,
}

async fn mfa_page(
    state: &AppState,
    auth: &PageSession<PendingAllowed>,
    target: Option<&ReturnTo>,
) -> Result<MfaPage, ApiError> {
    let mode = if auth.session.mfa_pending {
        "login"
    } else if auth.user.mfa_enabled {
        "step_up"
    } else {
        "enrol"
    };
    let (remaining, _) = if auth.user.mfa_enabled {
        state.auth.backup_code_status(auth.user.id).await?
    } else {
        (0, 0)
    };
    Ok(MfaPage {
        nav: auth.nav(state),
        csrf: auth.csrf(state),
        return_to: target.map(|t| t.as_str().to_string()).unwrap_or_default(),
        mode,
        backup_remaining: remaining,
        few_backup_codes: remaining <= FEW_BACKUP_CODES,
        totp_error: None,
        backup_error: None,
        password_error: None,
    })
}

/// `GET /ui/mfa`: the second step of sign-in, or the step up to `aal2`
/// that forward auth sends an `aal1` session to.
pub async fn mfa_form(
    State(state): State<AppState>,
    auth: PageSession<PendingAllowed>,
    Query(q): Query<ReturnQuery>,
) -> Result<Response, ApiError> {
    let target = return_to(&state, q.return_to.as_deref());
    if !auth.session.mfa_pending && auth.session.aal == crate::domain::Aal::Aal2 {
        return Ok(go_back(target.as_ref()));
    }
    Ok(render(&mfa_page(&state, &auth, target.as_ref()).await?))
}

#[derive(Deserialize)]
pub struct MfaForm {
    pub totp_code: Option<String>,
    pub backup_code: Option<String>,
    pub password: Option<String>,
    pub return_to: Option<String>,
}

fn present(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

#[derive(Template)]
#[template(path = "notice.html")]
pub struct NoticePage {
    pub nav: Nav,
    pub title: String,
    pub message: String,
    pub warning: Option<String>,
    pub next: String,
    pub next_label: String,
}

/// `POST /ui/mfa`: a TOTP or backup code (the same use cases as
/// `POST /v1/login/mfa` and, for the step up, `POST /v1/reauthenticate`).
pub async fn mfa_submit(
    State(state): State<AppState>,
    meta: RequestMeta,
    SessionForm { auth, form: f }: SessionForm<MfaForm, PendingAllowed>,
) -> Result<Response, ApiError> {
    let target = return_to(&state, f.return_to.as_deref());
    let mut again = mfa_page(&state, &auth, target.as_ref()).await?;
    let factor = match (present(&f.totp_code), present(&f.backup_code)) {
        (Some(code), _) => match TotpCode::parse(code) {
            Ok(c) => SecondFactor::Totp(c),
            Err(_) => {
                again.totp_error = Some("Enter the 6 digits your authenticator app shows.".into());
                return Ok(render_with(StatusCode::BAD_REQUEST, &again));
            }
        },
        (None, Some(code)) => match BackupCode::parse(code) {
            Ok(c) => SecondFactor::Backup(c),
            Err(_) => {
                again.backup_error =
                    Some("Enter one of your backup codes exactly as written.".into());
                return Ok(render_with(StatusCode::BAD_REQUEST, &again));
            }
        },
        (None, None) => {
            again.totp_error = Some("Enter a code from your authenticator app.".into());
            return Ok(render_with(StatusCode::BAD_REQUEST, &again));
        }
    };
    let is_backup = matches!(factor, SecondFactor::Backup(_));
    let wrong = |again: &mut MfaPage| {
        let msg = "That code is not valid. Try again.".to_string();
        if is_backup {
            again.backup_error = Some(msg);
        } else {
            again.totp_error = Some(msg);
        }
    };
    if auth.session.mfa_pending {
        match state
            .auth
            .complete_mfa_login(&auth.session, &auth.user, &factor, &meta)
            .await
        {
            Ok((token, session, used)) => {
                let mut response = match used.backup_codes_remaining {
                    Some(left) => render(&backup_used(
                        &state,
                        &token,
                        &session,
                        left,
                        target.as_ref(),
                    )),
                    None => go_back(target.as_ref()),
                };
                issue_cookie(&mut response, &token, &session);
                Ok(response)
            }
            Err(MfaError::InvalidCode) => {
                wrong(&mut again);
                Ok(render_with(StatusCode::UNAUTHORIZED, &again))
            }
            Err(MfaError::SessionGone) => Ok(Redirect::to("/ui/sign-in").into_response()),
            Err(MfaError::Throttled(t)) => match throttled_message(&t) {
                Some((message, secs)) => {
                    again.totp_error = Some(message);
                    Ok(too_many(&again, secs))
                }
                None => Err(ApiError::from(t)),
            },
            Err(_) => Err(ApiError::InvalidRequest(
                "the second factor could not be checked".into(),
            )),
        }
    } else if auth.user.mfa_enabled {
        let Some(password) = present(&f.password).and_then(|p| {
            Password::for_verification(p, state.auth.config().passwords.max_length).ok()
        }) else {
            again.password_error = Some("Enter your password.".into());
            return Ok(render_with(StatusCode::BAD_REQUEST, &again));
        };
        match state
            .auth
            .reauthenticate(&auth.session, &auth.user, &password, Some(&factor), &meta)
            .await
        {
            Ok((token, session)) => {
                let mut response = go_back(target.as_ref());
                issue_cookie(&mut response, &token, &session);
                Ok(response)
            }
            Err(e) => reauth_refused(again, |p, m| p.password_error = Some(m), e),
        }
    } else {
        Ok(render_with(StatusCode::BAD_REQUEST, &again))
    }
}

fn backup_used(
    state: &AppState,
    _token: &SessionToken,
    session: &Session,
    left: u32,
    target: Option<&ReturnTo>,
) -> NoticePage {
    NoticePage {
        nav: Nav {
            signed_in: true,
            csrf: state.auth.csrf_token(session.id),
        },
        title: "Signed in with a backup code".into(),
        message: format!("That backup code is now used up. You have {left} backup codes left."),
        warning: (left <= FEW_BACKUP_CODES).then(|| {
            "You are running out of backup codes: create new ones on your account page.".into()
        }),
        next: target.map_or(super::HOME, ReturnTo::as_str).to_string(),
        next_label: "Continue".into(),
    }
}

#[derive(Deserialize)]
pub struct Empty {}

/// `POST /ui/sign-out`: the session ends at once, the cookie is expired.
pub async fn sign_out(
    State(state): State<AppState>,
    meta: RequestMeta,
    SessionForm { auth, .. }: SessionForm<Empty, PendingAllowed>,
) -> Result<Response, ApiError> {
    state.auth.logout(&auth.session, &meta).await?;
    let mut response = render(&NoticePage {
        nav: Nav::signed_out(),
        title: "Signed out".into(),
        message: "You are signed out.".into(),
        warning: None,
        next: "/ui/sign-in".into(),
        next_label: "Sign in again".into(),
    });
    clear_session_cookie(&mut response);
    Ok(response)
}
