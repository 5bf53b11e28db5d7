//! Message content: the fixed texts of each notice, rendered as plain text
//! and HTML with every inserted value escaped.

use std::fmt;
use std::time::Duration;

use lettre::message::Body;
use lettre::message::header::ContentTransferEncoding;

use super::*;

/// The notifications castellan sends.
#[derive(Clone, PartialEq, Eq)]
pub enum Notice {
    TotpEnabled,
    PasskeyAdded,
    PasskeyRemoved,
    /// A passkey's signature counter went backwards: it may have been copied.
    PasskeyFlagged,
    TotpRemoved {
        by_admin: bool,
    },
    BackupCodesRegenerated,
    BackupCodeUsed {
        remaining: u32,
    },
    /// The right password, then too many wrong second factors: the sign-in
    /// was stopped, and someone may know the password.
    SecondFactorFailed,
    PasswordChanged,
    PasswordReset,
    EmailVerified,
    /// A password-reset link; `url` must be an absolute `http(s)` URL.
    PasswordResetLink {
        url: String,
    },
    /// An email-verification link; `url` must be an absolute `http(s)` URL.
    VerificationLink {
        url: String,
    },
}

impl fmt::Debug for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Links carry one-time tokens: keep them out of debug output.
        match self {
            Self::TotpRemoved { by_admin } => write!(f, "TotpRemoved {{ by_admin: {by_admin} }}"),
            Self::BackupCodeUsed { remaining } => {
                write!(f, "BackupCodeUsed {{ remaining: {remaining} }}")
            }
            Self::PasswordResetLink { .. } => f.write_str("PasswordResetLink { url: [redacted] }"),
            Self::VerificationLink { .. } => f.write_str("VerificationLink { url: [redacted] }"),
            other => f.write_str(other.kind()),
        }
    }
}

/// What every notice about a change tells the user.
pub(super) const NOT_YOU: &str =
    "If this was not you, reset your password at once and contact your administrator.";

/// One paragraph of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Block {
    Text(String),
    /// A URL, on its own line in the text part and as a link in HTML.
    Link(String),
}

/// A rendered notice: fixed subject and paragraphs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Content {
    pub(super) subject: &'static str,
    pub(super) blocks: Vec<Block>,
}

impl Notice {
    /// A stable name for logs.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Self::TotpEnabled => "TotpEnabled",
            Self::PasskeyAdded => "PasskeyAdded",
            Self::PasskeyRemoved => "PasskeyRemoved",
            Self::PasskeyFlagged => "PasskeyFlagged",
            Self::TotpRemoved { .. } => "TotpRemoved",
            Self::BackupCodesRegenerated => "BackupCodesRegenerated",
            Self::BackupCodeUsed { .. } => "BackupCodeUsed",
            Self::SecondFactorFailed => "SecondFactorFailed",
            Self::PasswordChanged => "PasswordChanged",
            Self::PasswordReset => "PasswordReset",
            Self::EmailVerified => "EmailVerified",
            Self::PasswordResetLink { .. } => "PasswordResetLink",
            Self::VerificationLink { .. } => "VerificationLink",
        }
    }

    pub(super) fn render(&self, ttls: TokenLifetimes) -> Result<Content, &'static str> {
        let text = |s: &str| Block::Text(s.to_string());
        let not_you = || text(NOT_YOU);
        let (subject, blocks) = match self {
            Self::TotpEnabled => (
                "Two-factor authentication was turned on",
                vec![
                    text("Two-factor authentication was turned on for your account."),
                    text(
                        "An authenticator app was added to your account and 10 backup codes were issued.",
                    ),
                    not_you(),
                ],
            ),
            Self::TotpRemoved { by_admin } => (
                "Two-factor authentication was turned off",
                vec![
                    Block::Text(format!(
                        "Two-factor authentication was removed from your account{}.",
                        if *by_admin {
                            " by an administrator"
                        } else {
                            ""
                        }
                    )),
                    text(if *by_admin {
                        "Your backup codes and passkeys no longer work."
                    } else {
                        "Your backup codes no longer work."
                    }),
                    not_you(),
                ],
            ),
            Self::PasskeyAdded => (
                "A passkey was added to your account",
                vec![
                    text("A passkey was added to your account; it can now be used to sign in."),
                    not_you(),
                ],
            ),
            Self::PasskeyRemoved => (
                "A passkey was removed from your account",
                vec![
                    text(
                        "A passkey was removed from your account and can no longer be used to sign in.",
                    ),
                    not_you(),
                ],
            ),
            Self::PasskeyFlagged => (
                "A passkey of your account was blocked",
                vec![
                    text(
                        "A sign-in with one of your passkeys was refused because its signature counter went backwards, which can mean the passkey was copied. The passkey is blocked: remove it on your account page and add it again.",
                    ),
                    not_you(),
                ],
            ),
            Self::BackupCodesRegenerated => (
                "New backup codes were created",
                vec![
                    text(
                        "New backup codes were created for your account; the earlier codes no longer work.",
                    ),
                    not_you(),
                ],
            ),
            Self::BackupCodeUsed { remaining } => (
                "A backup code was used to sign in",
                vec![
                    text("A backup code was used to sign in to your account."),
                    Block::Text(format!(
                        "{remaining} unused codes remain; create new ones when few are left."
                    )),
                    not_you(),
                ],
            ),
            Self::SecondFactorFailed => (
                "A sign-in to your account was stopped",
                vec![
                    text(
                        "Someone entered the correct password for your account, then a wrong second-factor code several times, so that sign-in was stopped.",
                    ),
                    not_you(),
                ],
            ),
            Self::PasswordChanged => (
                "Your password was changed",
                vec![text("The password of your account was changed."), not_you()],
            ),
            Self::PasswordReset => (
                "Your password was reset",
                vec![
                    text("The password of your account was reset with a password-reset link."),
                    not_you(),
                ],
            ),
            Self::EmailVerified => (
                "Your email address was confirmed",
                vec![
                    text("This email address was confirmed for your account."),
                    text(
                        "If this was not you, do not use the account and contact your administrator.",
                    ),
                ],
            ),
            Self::PasswordResetLink { url } => (
                "Reset your password",
                vec![
                    text("A password reset was requested for your account."),
                    text("To choose a new password, open this link:"),
                    Block::Link(checked_url(url)?.to_string()),
                    Block::Text(format!(
                        "The link is valid for {}. Do not share it with anyone.",
                        human_duration(ttls.reset)
                    )),
                    text(
                        "If you did not ask for this, ignore this message: your password stays unchanged.",
                    ),
                ],
            ),
            Self::VerificationLink { url } => (
                "Confirm your email address",
                vec![
                    text("To confirm this email address for your account, open this link:"),
                    Block::Link(checked_url(url)?.to_string()),
                    Block::Text(format!(
                        "The link is valid for {}.",
                        human_duration(ttls.verification)
                    )),
                    text(
                        "If you did not create an account, ignore this message; nothing changes without the link.",
                    ),
                ],
            ),
        };
        Ok(Content { subject, blocks })
    }
}

/// An absolute `http(s)` URL without whitespace or control characters.
pub(super) fn checked_url(url: &str) -> Result<&str, &'static str> {
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= MAX_URL_LEN
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(url)
    } else {
        Err("the link is not an absolute http(s) URL without spaces")
    }
}

/// `30 minutes`, `24 hours`, `1 day`, `90 seconds`.
pub(super) fn human_duration(d: Duration) -> String {
    let secs = d.as_secs().max(1);
    let (n, unit) = if secs.is_multiple_of(86_400) {
        (secs / 86_400, "day")
    } else if secs.is_multiple_of(3_600) {
        (secs / 3_600, "hour")
    } else if secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub(super) fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl Content {
    pub(super) fn plain(&self) -> String {
        let mut out = String::new();
        for block in &self.blocks {
            match block {
                Block::Text(t) | Block::Link(t) => out.push_str(t),
            }
            out.push_str("\n\n");
        }
        out.push_str("-- \ncastellan\n");
        out
    }

    pub(super) fn html(&self) -> String {
        let mut out = format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width\">\n<title>{}</title>\n</head>\n\
             <body style=\"font-family: sans-serif; line-height: 1.5; max-width: 40em\">\n",
            escape_html(self.subject)
        );
        for block in &self.blocks {
            match block {
                Block::Text(t) => {
                    out.push_str("<p>");
                    out.push_str(&escape_html(t));
                    out.push_str("</p>\n");
                }
                Block::Link(url) => {
                    let url = escape_html(url);
                    out.push_str("<p><a href=\"");
                    out.push_str(&url);
                    out.push_str("\">");
                    out.push_str(&url);
                    out.push_str("</a></p>\n");
                }
            }
        }
        out.push_str("<p style=\"color: #666\">castellan</p>\n</body>\n</html>\n");
        out
    }
}

/// A part as `7bit` (ASCII) or `8bit`, so the body stays readable in `.eml`
/// files and links are never split; quoted-printable only for a line over
/// 998 bytes (the RFC 5322 limit).
pub(super) fn readable_body(text: String) -> Body {
    let lines_ok =
        text.lines().all(|l| l.len() <= 998) && !text.chars().any(|c| c.is_control() && c != '\n');
    if !lines_ok {
        return Body::new(text);
    }
    let encoding = if text.is_ascii() {
        ContentTransferEncoding::SevenBit
    } else {
        ContentTransferEncoding::EightBit
    };
    Body::dangerous_pre_encoded(text.replace('\n', "\r\n").into_bytes(), encoding)
}
