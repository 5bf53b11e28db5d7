//! Property tests for the parsers of untrusted input that the library
//! exposes: generated inputs never panic, and what is accepted is in
//! canonical form and round-trips. (Parsers private to a module have their
//! property tests next to them: client address and forwarding headers in
//! `http/client_ip.rs`, request ids in `http/middleware.rs`, backup codes in
//! `domain/backup_code.rs`, limiter keys in `auth/throttle.rs`.)

use std::collections::BTreeMap;
use std::time::Duration;

use castellan::config::{Config, format_duration, parse_duration};
use castellan::domain::{Email, Password, PasswordPolicy, SessionToken, TotpCode};
use proptest::prelude::*;

use crate::helpers::TEST_SECRET_KEY;

fn policy() -> PasswordPolicy {
    PasswordPolicy {
        min_length: 15,
        max_length: 64,
        min_strength: 3,
        context_words: vec!["castellan".into()],
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    // Any text: no panic; an accepted email is trimmed, its key is its
    // lower-cased form, and parsing it again gives the same email.
    #[test]
    fn email_parse_is_total_and_canonical(input in "\\PC{0,300}") {
        if let Ok(e) = Email::parse(&input) {
            prop_assert_eq!(e.as_str(), input.trim());
            prop_assert_eq!(e.key(), e.as_str().to_ascii_lowercase());
            prop_assert!(!e.key().contains(':'), "limiter keys rely on it");
            prop_assert!(e.as_str().chars().count() <= 254);
            let again = Email::parse(e.as_str()).unwrap();
            prop_assert_eq!(again.key(), e.key());
            let upper = Email::parse(&e.key().to_uppercase()).unwrap();
            prop_assert_eq!(upper.key(), e.key());
        }
    }

    // Well-formed addresses are accepted whatever their case.
    #[test]
    fn plain_addresses_are_accepted(
        local in "[a-zA-Z0-9][a-zA-Z0-9._+-]{0,20}[a-zA-Z0-9]",
        domain in "[a-z0-9]{1,10}\\.[a-z]{2,6}",
    ) {
        prop_assume!(!local.contains(".."));
        let text = format!("{local}@{domain}");
        let e = Email::parse(&text).unwrap();
        prop_assert_eq!(e.key(), text.to_ascii_lowercase());
    }

    // Passwords: no panic on any text; an accepted one is NFC-normalised
    // (so parsing its bytes again is the identity), within the bounds and
    // free of control characters.
    #[test]
    fn password_parsers_are_total_and_normalising(input in "\\PC{0,80}|[\\x00-\\x7f]{0,80}") {
        let p = policy();
        if let Ok(pw) = Password::new_with_policy(&input, &p) {
            let text = std::str::from_utf8(pw.expose_bytes()).unwrap().to_string();
            let n = text.chars().count();
            prop_assert!((p.min_length..=p.max_length).contains(&n));
            prop_assert!(!text.chars().any(char::is_control));
            let again = Password::new_with_policy(&text, &p).unwrap();
            prop_assert_eq!(again.expose_bytes(), pw.expose_bytes());
        }
        let _ = Password::new_for_account(&input, &p, &["someone", "someone@example.com"]);
        if let Ok(pw) = Password::for_verification(&input, 64) {
            prop_assert!(std::str::from_utf8(pw.expose_bytes()).unwrap().chars().count() <= 64);
        }
    }

    // Session tokens: no panic; an accepted token is exactly its input,
    // `cst_` plus 43 canonical base64url characters.
    #[test]
    fn session_token_parse_is_total_and_canonical(input in "(cst_)?[A-Za-z0-9_=+/-]{0,50}|\\PC{0,60}") {
        if let Ok(t) = SessionToken::parse(&input) {
            prop_assert_eq!(t.expose(), input.as_str());
            prop_assert_eq!(input.len(), 47);
        }
    }

    // Every generated token parses; changing its last character to another
    // spelling of the same bits is refused (one spelling per token).
    #[test]
    fn generated_tokens_parse(_n in 0u8..8) {
        let t = SessionToken::generate().unwrap();
        prop_assert!(SessionToken::parse(t.expose()).is_ok());
    }

    // TOTP codes: exactly six ASCII digits, nothing else.
    #[test]
    fn totp_code_parse_is_exact(input in "[0-9]{0,8}|\\PC{0,10}") {
        let ok = TotpCode::parse(&input).is_ok();
        prop_assert_eq!(ok, input.len() == 6 && input.bytes().all(|b| b.is_ascii_digit()));
    }

    // Durations: no panic; the canonical form parses back to the same
    // duration, whatever the unit it was written in.
    #[test]
    fn durations_round_trip(input in "[0-9]{0,25}(ms|s|m|h|d|x|)|\\PC{0,12}", ms in 0u64..10_000_000_000) {
        if let Ok(d) = parse_duration(&input) {
            prop_assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        let d = Duration::from_millis(ms);
        prop_assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
    }

    // Whatever the value of a setting, loading never panics, and a refused
    // value is reported under that setting's name.
    #[test]
    fn settings_load_or_name_the_bad_setting(
        setting in prop::sample::select(vec![
            "rate_login_per_ip", "login_backoff_max", "login_backoff_after",
            "trusted_proxies", "forwarded_header", "ipv6_limit_prefix",
            "session_lifetime", "admin_token_backoff_after", "password_min_length",
            "hash_queue", "log_format",
        ]),
        value in "[0-9]{0,6}(/|ms|s|m|h|d|\\.|,|)[0-9a-z:/.]{0,12}|\\PC{0,20}",
    ) {
        let mut env = BTreeMap::new();
        env.insert("CASTELLAN_SECRET_KEY".to_string(), TEST_SECRET_KEY.to_string());
        env.insert(format!("CASTELLAN_{}", setting.to_uppercase()), value.clone());
        if let Err(e) = Config::load(None, &env) {
            let text = e.to_string();
            prop_assert!(
                text.contains(setting) || text.contains(&setting.to_uppercase()),
                "{value:?}: {text}"
            );
        }
    }
}
