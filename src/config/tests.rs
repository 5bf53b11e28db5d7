use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_load_with_no_configuration() {
    let c = Config::load(None, &env(&[])).unwrap();
    assert_eq!(c.profile, Profile::Dev);
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.session.idle_timeout, Duration::from_secs(1800));
    assert_eq!(c.session.lifetime, Duration::from_secs(12 * 3600));
    assert_eq!(c.passwords.min_length, 15);
    assert!(matches!(
        c.database.location,
        DatabaseLocation::Sqlite { .. }
    ));
    assert_eq!(c.log.format, LogFormat::Pretty);
}

// covers: ASVS-1.4.2
#[test]
fn durations_parse_and_overflow_is_an_error() {
    assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
    assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert!(parse_duration("99999999999999999h").is_err());
    assert!(parse_duration("10").is_err());
    assert!(parse_duration("-1s").is_err());
    let err = Config::load(
        None,
        &env(&[("CASTELLAN_SESSION_LIFETIME", "99999999999h")]),
    )
    .unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert!(err.0[0].setting.contains("SESSION_LIFETIME"), "{err}");
}

#[test]
fn pool_settings_have_defaults_and_are_checked_together() {
    let c = Config::load(None, &env(&[])).unwrap();
    assert_eq!(c.database.pool.min_connections, 1);
    assert_eq!(c.database.pool.idle_timeout, Duration::from_secs(600));
    assert_eq!(c.database.pool.max_lifetime, Duration::from_secs(1800));
    assert_eq!(c.database.pool.size(), default_pool_size());
    let c = Config::load(
        None,
        &env(&[
            ("CASTELLAN_DB_MAX_CONNECTIONS", "4"),
            ("CASTELLAN_DB_MIN_CONNECTIONS", "4"),
            ("CASTELLAN_DB_IDLE_TIMEOUT", "1m"),
            ("CASTELLAN_DB_MAX_LIFETIME", "1m"),
        ]),
    )
    .unwrap();
    assert_eq!(
        (c.database.pool.size(), c.database.pool.min_connections),
        (4, 4)
    );
    assert_eq!(c.database.pool.idle_timeout, c.database.pool.max_lifetime);
    // Out of range and malformed values, each reported.
    let err = Config::load(
        None,
        &env(&[
            ("CASTELLAN_DB_MIN_CONNECTIONS", "-1"),
            ("CASTELLAN_DB_IDLE_TIMEOUT", "0s"),
            ("CASTELLAN_DB_MAX_LIFETIME", "8d"),
        ]),
    )
    .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.0.len(), 3, "{text}");
    for name in ["MIN_CONNECTIONS", "IDLE_TIMEOUT", "MAX_LIFETIME"] {
        assert!(text.contains(&format!("CASTELLAN_DB_{name}")), "{text}");
    }
    // Rules between settings, both reported.
    let err = Config::load(
        None,
        &env(&[
            ("CASTELLAN_DB_MAX_CONNECTIONS", "4"),
            ("CASTELLAN_DB_MIN_CONNECTIONS", "5"),
            ("CASTELLAN_DB_IDLE_TIMEOUT", "2h"),
            ("CASTELLAN_DB_MAX_LIFETIME", "1h"),
        ]),
    )
    .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.0.len(), 2, "{text}");
    assert!(
        text.contains("db_min_connections: must not exceed the pool size (4)"),
        "{text}"
    );
    assert!(
        text.contains("db_idle_timeout: must not exceed db_max_lifetime"),
        "{text}"
    );
    // With the default pool size the message says it is the default.
    let err = Config::load(None, &env(&[("CASTELLAN_DB_MIN_CONNECTIONS", "10000")])).unwrap_err();
    assert!(
        err.to_string().contains("the default for this machine"),
        "{err}"
    );
}

#[test]
fn unknown_variables_and_every_bad_value_are_reported_together() {
    let err = Config::load(
        None,
        &env(&[
            ("CASTELLAN_NOPE", "1"),
            ("CASTELLAN_PASSWORD_MIN_LENGTH", "7"),
            ("CASTELLAN_LISTEN", "nowhere"),
        ]),
    )
    .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.0.len(), 3, "{text}");
    assert!(text.contains("CASTELLAN_NOPE"));
    assert!(text.contains("CASTELLAN_PASSWORD_MIN_LENGTH: must be from 8 to 64"));
    assert!(text.contains("CASTELLAN_LISTEN"));
}

#[test]
fn toml_file_is_overridden_by_env_and_unknown_keys_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("castellan.toml");
    std::fs::write(
        &path,
        "session_idle_timeout = \"5m\"\nlisten = \"127.0.0.1:9000\"\n",
    )
    .unwrap();
    let c = Config::load(
        Some((&path, true)),
        &env(&[("CASTELLAN_LISTEN", "127.0.0.1:9001")]),
    )
    .unwrap();
    assert_eq!(c.session.idle_timeout, Duration::from_secs(300));
    assert_eq!(c.listen.port(), 9001);
    std::fs::write(&path, "sesion_idle_timeout = \"5m\"\n").unwrap();
    let err = Config::load(Some((&path, true)), &env(&[])).unwrap_err();
    assert!(err.to_string().contains("sesion_idle_timeout"));
}

// covers: ASVS-13.3.1
#[test]
fn secrets_come_from_files_and_are_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "c2hvcnQ=\n").unwrap();
    let err = Config::load(
        None,
        &env(&[("CASTELLAN_SECRET_KEY_FILE", key_file.to_str().unwrap())]),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("at least 32 random bytes"), "{text}");
    assert!(!text.contains("c2hvcnQ"), "secret value leaked: {text}");
    let good = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaA==";
    std::fs::write(&key_file, good).unwrap();
    let c = Config::load(
        None,
        &env(&[("CASTELLAN_SECRET_KEY_FILE", key_file.to_str().unwrap())]),
    )
    .unwrap();
    assert_eq!(c.secret_key.unwrap().expose().len(), 34);
}

// covers: ASVS-6.3.2, ASVS-13.4.2
#[test]
fn production_refuses_insecure_settings() {
    let err = Config::load(
        None,
        &env(&[
            ("CASTELLAN_PROFILE", "production"),
            ("CASTELLAN_LOG_LEVEL", "debug"),
        ]),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("secret_key"), "{text}");
    assert!(text.contains("behind_tls_proxy"), "{text}");
    assert!(text.contains("log_level"), "{text}");
    let err = Config::load(None, &env(&[("CASTELLAN_ADMIN_TOKEN", "short")])).unwrap_err();
    assert!(
        err.to_string()
            .contains("CASTELLAN_ADMIN_TOKEN: must be at least 32"),
        "{err}"
    );
    assert!(
        !err.to_string().contains("short"),
        "the token value must not be echoed: {err}"
    );
}

#[test]
fn password_minimum_never_goes_below_eight() {
    assert!(Config::load(None, &env(&[("CASTELLAN_PASSWORD_MIN_LENGTH", "7")])).is_err());
    let c = Config::load(None, &env(&[("CASTELLAN_PASSWORD_MIN_LENGTH", "8")])).unwrap();
    assert_eq!(c.passwords.min_length, 8);
}
