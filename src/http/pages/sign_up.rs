//! Sign up: the same use case as `POST /v1/registration`, then sign in.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::forms::{AnonCsrf, AnonForm};
use super::sign_in::{ReturnQuery, issue_cookie, throttled_message, too_many};
use super::{Nav, render, render_with, return_to};
use crate::audit::RequestMeta;
use crate::auth::accounts::RegisterError;
use crate::auth::login::LoginError;
use crate::domain::return_to::ReturnTo;
use crate::domain::{Email, Password};
use crate::http::AppState;
use crate::http::error::ApiError;

#[derive(Template)]
#[template(path = "sign_up.html")]
pub struct SignUpPage {
    pub nav: Nav,
    pub csrf: String,
    pub email: String,
    pub return_to: String,
    pub min_length: usize,
    pub max_length: usize,
    pub email_error: Option<String>,
    pub password_error: Option<String>,
}

fn page(state: &AppState, csrf: &AnonCsrf, target: Option<&ReturnTo>) -> SignUpPage {
    SignUpPage {
        nav: Nav::signed_out(),
        csrf: csrf.token.clone(),
        email: String::new(),
        return_to: target.map(|t| t.as_str().to_string()).unwrap_or_default(),
        min_length: state.auth.config().passwords.min_length,
        max_length: state.auth.config().passwords.max_length,
        email_error: None,
        password_error: None,
    }
}

/// `GET /ui/sign-up`
pub async fn form(
    State(state): State<AppState>,
    csrf: AnonCsrf,
    Query(q): Query<ReturnQuery>,
) -> Response {
    let target = return_to(&state, q.return_to.as_deref());
    csrf.apply(render(&page(&state, &csrf, target.as_ref())))
}

#[derive(Deserialize)]
pub struct SignUpForm {
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub password: String,
    pub return_to: Option<String>,
}

/// `POST /ui/sign-up`: registers, mails nothing yet (verification is asked
/// for from the account page), and signs the new user in.
pub async fn submit(
    State(state): State<AppState>,
    meta: RequestMeta,
    csrf: AnonCsrf,
    AnonForm(f): AnonForm<SignUpForm>,
) -> Result<Response, ApiError> {
    let target = return_to(&state, f.return_to.as_deref());
    let mut again = page(&state, &csrf, target.as_ref());
    again.email = f.email.clone();
    let email = match Email::parse(&f.email) {
        Ok(e) => e,
        Err(e) => {
            again.email_error = Some(format!("Enter a valid email address ({e})."));
            return Ok(render_with(StatusCode::BAD_REQUEST, &again));
        }
    };
    let password = match Password::new_for_account(
        &f.password,
        state.auth.password_policy(),
        &[email.local_part(), email.as_str()],
    ) {
        Ok(p) => p,
        Err(e) => {
            again.password_error = Some(format!("Choose another password: {e}."));
            return Ok(render_with(StatusCode::BAD_REQUEST, &again));
        }
    };
    match state.auth.register(email.clone(), &password, &meta).await {
        Ok(_) => {}
        Err(RegisterError::EmailTaken) => {
            again.email_error = Some(
                "This address cannot be registered. If it is yours, sign in or reset your password."
                    .into(),
            );
            return Ok(render_with(StatusCode::CONFLICT, &again));
        }
        Err(RegisterError::Throttled(t)) => {
            return match throttled_message(&t) {
                Some((message, secs)) => {
                    again.email_error = Some(message);
                    Ok(too_many(&again, secs))
                }
                None => Err(ApiError::from(t)),
            };
        }
        Err(e) => return Err(e.into()),
    }
    match state.auth.login(&email, &password, &meta).await {
        Ok(done) => {
            let mut response = super::go_back(target.as_ref());
            issue_cookie(&mut response, &done.token, &done.session);
            Ok(response)
        }
        // The account exists; a throttled login just goes to sign-in.
        Err(LoginError::Throttled(_)) => Ok(Redirect::to("/ui/sign-in").into_response()),
        Err(e) => Err(e.into()),
    }
}
