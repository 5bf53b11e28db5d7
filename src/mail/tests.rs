use super::*;
use crate::config::Config;

const TTLS: TokenLifetimes = TokenLifetimes {
    reset: Duration::from_secs(1800),
    verification: Duration::from_secs(86_400),
};

#[test]
fn html_escaping_covers_markup_and_quotes() {
    assert_eq!(
        escape_html(r#"<a href="x">'&'</a>"#),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
}

#[test]
fn links_must_be_absolute_http_urls_without_spaces() {
    let url = |u: &str| Notice::PasswordResetLink { url: u.into() }.render(TTLS);
    assert!(url("https://auth.example.com/reset?token=abc&x=1").is_ok());
    for bad in [
        "javascript:alert(1)",
        "/reset?token=abc",
        "https://a.example/\r\nBcc: x@evil.test",
        "https://a.example/ x",
    ] {
        assert!(url(bad).is_err(), "{bad:?} accepted");
    }
}

// covers: N63B-20
#[test]
fn every_change_notice_says_what_to_do_if_it_was_not_you() {
    for notice in [
        Notice::TotpEnabled,
        Notice::PasskeyAdded,
        Notice::PasskeyRemoved,
        Notice::PasskeyFlagged,
        Notice::TotpRemoved { by_admin: true },
        Notice::BackupCodesRegenerated,
        Notice::BackupCodeUsed { remaining: 3 },
        Notice::SecondFactorFailed,
        Notice::PasswordChanged,
        Notice::PasswordReset,
        Notice::EmailVerified,
    ] {
        let text = notice.render(TTLS).unwrap().plain();
        assert!(text.contains("If this was not you"), "{notice:?}: {text}");
    }
}

#[test]
fn link_mails_put_the_url_on_its_own_line_and_quote_the_lifetime() {
    let url = "https://auth.example.com/reset?token=a<b>&c=\"d\"";
    let content = Notice::PasswordResetLink { url: url.into() }
        .render(TTLS)
        .unwrap();
    let plain = content.plain();
    assert!(plain.lines().any(|l| l == url), "{plain}");
    assert!(plain.contains("valid for 30 minutes"), "{plain}");
    let html = content.html();
    let escaped = "https://auth.example.com/reset?token=a&lt;b&gt;&amp;c=&quot;d&quot;";
    assert!(
        html.contains(&format!("<a href=\"{escaped}\">{escaped}</a>")),
        "{html}"
    );
    assert!(!html.contains("a<b>"), "{html}");
    let verify = Notice::VerificationLink {
        url: "https://auth.example.com/verify?t=x".into(),
    }
    .render(TTLS)
    .unwrap()
    .plain();
    assert!(verify.contains("valid for 1 day"), "{verify}");
}

// covers: ASVS-1.3.11
#[test]
fn messages_have_one_recipient_and_readable_parts() {
    let config = Config::load(None, &Default::default()).unwrap();
    let mailer = Mailer::new(&config.mail, config.token_lifetimes);
    let to = Email::parse("O'Hara+x@Example.com").unwrap();
    let url = "https://auth.example.com/reset?token=AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcdefghijklmnop";
    let (envelope, bytes) = mailer
        .build(&to, &Notice::PasswordResetLink { url: url.into() })
        .unwrap();
    assert_eq!(envelope.to().len(), 1);
    assert_eq!(envelope.to()[0].to_string(), "O'Hara+x@Example.com");
    let raw = String::from_utf8(bytes).unwrap();
    let head = raw.split("\r\n\r\n").next().unwrap();
    assert_eq!(head.matches("\r\nTo: ").count(), 1, "{head}");
    assert!(!head.contains("Cc:") && !head.contains("Bcc:"), "{head}");
    assert!(
        head.contains("Content-Type: multipart/alternative"),
        "{head}"
    );
    assert!(
        raw.contains("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit")
    );
    assert!(
        raw.contains("Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit")
    );
    assert!(!raw.contains("quoted-printable"), "{raw}");
    assert!(
        raw.contains(&format!("\r\n{url}\r\n")),
        "URL on its own line: {raw}"
    );
    assert!(
        raw.contains(&format!("<a href=\"{url}\">{url}</a>")),
        "{raw}"
    );
}

#[test]
fn durations_read_naturally() {
    assert_eq!(human_duration(Duration::from_secs(1800)), "30 minutes");
    assert_eq!(human_duration(Duration::from_secs(3600)), "1 hour");
    assert_eq!(human_duration(Duration::from_secs(7 * 86_400)), "7 days");
    assert_eq!(human_duration(Duration::from_secs(90)), "90 seconds");
}

#[test]
fn backoff_doubles_and_is_capped() {
    assert_eq!(backoff(1), Duration::from_secs(1));
    assert_eq!(backoff(2), Duration::from_secs(2));
    assert_eq!(backoff(4), Duration::from_secs(8));
    assert_eq!(backoff(40), MAX_BACKOFF);
}

#[test]
fn debug_output_hides_links() {
    let n = Notice::PasswordResetLink {
        url: "https://x.example/r?token=secret".into(),
    };
    assert!(!format!("{n:?}").contains("secret"));
}
