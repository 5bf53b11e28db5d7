//! The security documents agree with the code, the dependency tree and the
//! running service (the DOC requirements of the security requirements).

use std::collections::{BTreeSet, HashMap};

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Backend, PASSWORD, TestEnv, email, spawn_app, sql};
use castellan::config::SETTINGS;

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The cells of the markdown table rows of `doc` whose first cell matches.
fn rows(doc: &str, first_cell: impl Fn(&str) -> bool) -> Vec<Vec<&str>> {
    doc.lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect::<Vec<_>>()
        })
        .filter(|cells| first_cell(cells[0]))
        .collect()
}

/// Every `backticked` word of a text.
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

fn default_of(key: &str) -> &'static str {
    SETTINGS
        .iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| panic!("no setting `{key}`"))
        .default
}

/// Names of the packages in Cargo.lock, each with its source (None for castellan itself).
fn locked_packages() -> Vec<(String, Option<String>)> {
    let lock: toml::Value = toml::from_str(&read("Cargo.lock")).unwrap();
    lock["package"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p.get("source").map(|s| s.as_str().unwrap().to_string()),
            )
        })
        .collect()
}

/// Whether a crate name looks cryptographic: any of its words is a known
/// primitive, protocol or crypto-support word.
fn is_crypto_crate(name: &str) -> bool {
    const WORDS: &[&str] = &[
        "aes",
        "gcm",
        "chacha20",
        "chacha20poly1305",
        "poly1305",
        "sha1",
        "sha2",
        "sha3",
        "md5",
        "md4",
        "md",
        "hmac",
        "argon2",
        "scrypt",
        "bcrypt",
        "pbkdf2",
        "hkdf",
        "blake2",
        "blake3",
        "rustls",
        "ring",
        "openssl",
        "lc",
        "getrandom",
        "rand",
        "webauthn",
        "p256",
        "p384",
        "p521",
        "ed25519",
        "x25519",
        "curve25519",
        "ecdsa",
        "elliptic",
        "rsa",
        "x509",
        "der",
        "pem",
        "pkcs1",
        "pkcs8",
        "spki",
        "sec1",
        "signature",
        "cipher",
        "digest",
        "crypto",
        "subtle",
        "zeroize",
        "secrecy",
        "totp",
        "ctr",
        "ghash",
        "polyval",
        "aead",
        "des",
        "ecb",
        "cbc",
        "webpki",
        "passkey",
        "cose",
        "fido",
        "ctap",
        "universal",
        "password",
        "block",
        "rcgen",
    ];
    name.split(['-', '_']).any(|w| WORDS.contains(&w))
}

// covers: ASVS-15.1.1
#[test]
fn the_security_policy_states_patch_deadlines_by_severity() {
    let policy = read("SECURITY.md");
    let deadlines: HashMap<String, String> = rows(&policy, |c| {
        c.starts_with("critical")
            || c.starts_with("high")
            || c.starts_with("medium")
            || c.starts_with("low")
    })
    .into_iter()
    .map(|r| {
        (
            r[0].split(' ').next().unwrap().to_string(),
            r[1].to_string(),
        )
    })
    .collect();
    assert_eq!(
        deadlines.get("critical").map(String::as_str),
        Some("7 days")
    );
    assert_eq!(deadlines.get("high").map(String::as_str), Some("30 days"));
    assert_eq!(deadlines.get("medium").map(String::as_str), Some("90 days"));
    assert!(deadlines.contains_key("low"), "{deadlines:?}");
    assert!(
        policy.contains("at least once a month"),
        "update cadence missing"
    );
}

// covers: ASVS-11.1.2, ASVS-11.2.1
#[test]
fn the_crypto_inventory_names_exactly_the_crypto_crates_in_the_lock_file() {
    let inventory = read("docs/security/crypto-inventory.md");
    let section = inventory
        .split("## Crates")
        .nth(1)
        .expect("a Crates section");
    let listed: BTreeSet<&str> = rows(section, |c| c.starts_with('`'))
        .iter()
        .map(|r| r[0].trim_matches('`'))
        .collect();
    let locked: BTreeSet<String> = locked_packages()
        .into_iter()
        .filter(|(name, source)| source.is_some() && is_crypto_crate(name))
        .map(|(name, _)| name)
        .collect();
    let unlisted: Vec<&String> = locked
        .iter()
        .filter(|n| !listed.contains(n.as_str()))
        .collect();
    assert!(
        unlisted.is_empty(),
        "cryptographic crates in Cargo.lock missing from docs/security/crypto-inventory.md: {unlisted:?}"
    );
    let stale: Vec<&&str> = listed.iter().filter(|n| !locked.contains(**n)).collect();
    assert!(
        stale.is_empty(),
        "inventory lists crates no longer in Cargo.lock: {stale:?}"
    );
    // The algorithm table documents the parameters the code uses.
    let argon = format!(
        "m = {} KiB, t = {}, p = {}",
        default_of("argon2_memory_kib"),
        default_of("argon2_iterations"),
        default_of("argon2_parallelism")
    );
    assert!(
        inventory.contains(&argon),
        "inventory does not state {argon}"
    );
}

// ASVS-11.3.1 is not claimed: webauthn-rs carries CBC and RSA PKCS#1 v1.5
// helpers in its dependency tree; this guards castellan's own code.
#[test]
fn no_ecb_helper_no_unauthenticated_padding_and_no_rsa_encryption() {
    for file in rust_sources("src") {
        let text = read(&file);
        for banned in ["Ecb", "ecb::", "Pkcs1v15Encrypt", "Cbc<", "cbc::"] {
            assert!(!text.contains(banned), "{file} uses {banned}");
        }
    }
    // The only symmetric cipher is an AEAD.
    let crypto_users: Vec<String> = rust_sources("src")
        .into_iter()
        .filter(|f| read(f).contains("aes_gcm::"))
        .collect();
    assert_eq!(crypto_users.len(), 1, "AES-GCM used in {crypto_users:?}");
}

// covers: N63B-15
#[test]
fn secrets_come_from_one_module_on_the_os_generator() {
    let callers: Vec<String> = rust_sources("src")
        .into_iter()
        .filter(|f| shipped_code(f).contains("getrandom::"))
        .collect();
    assert_eq!(
        callers.len(),
        1,
        "the OS generator is called from {callers:?}"
    );
    for file in rust_sources("src") {
        let text = read(&file);
        for weak in [
            "rand::thread_rng",
            "rand::rng()",
            "fastrand",
            "SmallRng",
            "StdRng",
        ] {
            assert!(!text.contains(weak), "{file} uses {weak} for randomness");
        }
    }
}

/// A source file without its unit tests (`#[cfg(test)]` to the end).
fn shipped_code(file: &str) -> String {
    let text = read(file);
    match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

fn rust_sources(dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![std::path::PathBuf::from(dir)];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// The SBOM of `scripts/sbom`, generated into a temporary file.
fn sbom() -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sbom.json");
    let out = std::process::Command::new("python3")
        .arg("scripts/sbom")
        .arg(&path)
        .output()
        .expect("python3 runs scripts/sbom");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&read(path.to_str().unwrap())).unwrap()
}

// covers: ASVS-15.1.2, ASVS-13.2.4
#[test]
fn the_sbom_lists_every_locked_crate_from_crates_io_and_no_http_client_is_built_in() {
    let sbom = sbom();
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    let components = sbom["components"].as_array().unwrap();
    let in_sbom: BTreeSet<(String, String)> = components
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["externalReferences"][0]["url"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    for (name, source) in locked_packages() {
        let Some(source) = source else { continue };
        assert_eq!(
            source, "registry+https://github.com/rust-lang/crates.io-index",
            "{name} does not come from crates.io"
        );
        assert!(
            in_sbom.contains(&(name.clone(), source)),
            "{name} missing from the SBOM"
        );
    }
    // 13.2.4: no destination can come from a request, because the service
    // has no HTTP client; reqwest is a test-only dependency.
    let required: BTreeSet<&str> = components
        .iter()
        .filter(|c| c["scope"] == "required")
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        required.contains("tokio") && required.contains("sqlx-postgres"),
        "{required:?}"
    );
    for client in [
        "reqwest",
        "ureq",
        "isahc",
        "surf",
        "attohttpc",
        "curl",
        "awc",
        "minreq",
    ] {
        assert!(
            !required.contains(client),
            "{client} is built into the service"
        );
    }
    assert!(
        components
            .iter()
            .any(|c| c["name"] == "reqwest" && c["scope"] == "excluded")
    );
}

// covers: ASVS-13.1.1
#[test]
fn every_setting_with_a_destination_is_in_the_communications_document() {
    let doc = read("docs/security/communications.md");
    let destinations: Vec<&str> = SETTINGS
        .iter()
        .map(|s| s.key)
        .filter(|k| {
            k.ends_with("listen")
                || k.ends_with("_url")
                || k.ends_with("_host")
                || k.ends_with("_port")
                || k.ends_with("_dir")
                || k.ends_with("_file")
                || k.ends_with("_transport")
        })
        .collect();
    assert!(destinations.len() >= 8, "{destinations:?}");
    for key in destinations {
        assert!(
            doc.contains(&format!("`{key}`")),
            "`{key}` is not in docs/security/communications.md"
        );
    }
    for (key, default) in [
        ("listen", default_of("listen")),
        ("admin_listen", default_of("admin_listen")),
    ] {
        let row = rows(&doc, |c| !c.is_empty())
            .into_iter()
            .find(|r| r.get(1) == Some(&format!("`{key}`").as_str()))
            .unwrap_or_else(|| panic!("no row for {key}"));
        assert_eq!(row[2], format!("`{default}`"), "{key}");
    }
}

// covers: ASVS-14.1.1, ASVS-14.1.2
#[test]
fn every_secret_is_classified_and_retention_matches_the_defaults() {
    let doc = read("docs/security/data-classification.md");
    for setting in SETTINGS.iter().filter(|s| s.secret) {
        assert!(
            doc.contains(&format!("`{}`", setting.key)),
            "secret setting `{}` is not classified",
            setting.key
        );
    }
    let classes = rows(&doc, |c| {
        c.len() > 3
            && c.starts_with('C')
            && c.as_bytes()[1].is_ascii_digit()
            && c.as_bytes()[2] == b' '
    });
    assert_eq!(classes.len(), 5, "five classes with handling rules");
    for class in &classes {
        assert_eq!(class.len(), 6, "{class:?}");
        assert!(
            class.iter().skip(1).take(3).all(|c| !c.is_empty()),
            "storage, logging and sharing rules for {class:?}"
        );
    }
    let inventory: Vec<Vec<&str>> = rows(&doc, |c| !c.is_empty())
        .into_iter()
        .filter(|r| r.len() == 4 && r[1].starts_with('C'))
        .collect();
    for data in [
        "password",
        "session token",
        "password-reset token",
        "email-verification token",
        "TOTP secret",
        "backup codes",
        "email address",
        "security events",
    ] {
        assert!(
            inventory.iter().any(|r| r[0] == data),
            "{data} is not classified"
        );
    }
    let retention = |data: &str| inventory.iter().find(|r| r[0] == data).unwrap()[3].to_string();
    for (data, key) in [
        ("password-reset token", "reset_token_ttl"),
        ("email-verification token", "verification_token_ttl"),
        ("security events", "audit_retention"),
        ("session token", "session_idle_timeout"),
        ("session token", "session_lifetime"),
        ("session token", "session_pending_lifetime"),
    ] {
        assert!(
            retention(data).contains(&format!("`{}`", default_of(key))),
            "{data}: {key} default not in {}",
            retention(data)
        );
    }
    assert!(doc.contains(&format!(
        "cut to {} characters",
        castellan::audit::USER_AGENT_MAX
    )));
}

// covers: ASVS-7.1.1
#[test]
fn the_documented_session_timeouts_are_the_defaults_and_map_to_nist() {
    let doc = read("docs/security.md");
    let lifetimes = doc
        .split("### Lifetimes")
        .nth(1)
        .expect("Lifetimes section");
    let table = rows(lifetimes, |c| !c.is_empty());
    for (key, words) in [
        ("session_idle_timeout", "30 minutes"),
        ("session_lifetime", "12 hours"),
        ("session_pending_lifetime", "5 minutes"),
        ("reauth_window", "10 minutes"),
    ] {
        let row = table
            .iter()
            .find(|r| r.get(1) == Some(&format!("`{key}`").as_str()))
            .unwrap_or_else(|| panic!("{key} not in the Lifetimes table"));
        assert_eq!(row[2], words, "{key}");
        let (n, unit) = words.split_once(' ').unwrap();
        let short = format!("{n}{}", if unit.starts_with("hour") { "h" } else { "m" });
        assert_eq!(default_of(key), short, "the docs say {words} for {key}");
    }
    assert!(lifetimes.contains("N63B-18"), "the NIST mapping is stated");
}

// covers: ASVS-15.1.3
#[test]
fn expensive_functions_are_documented_with_their_limits() {
    let doc = read("docs/security/resources.md");
    let table = rows(&doc, |c| !c.is_empty() && c != "function");
    assert!(table.len() >= 8, "{table:?}");
    for row in &table {
        let keys = backticked(row[3]);
        let defaults = backticked(row[4]);
        assert_eq!(keys.len(), defaults.len(), "{row:?}");
        for (key, default) in keys.iter().zip(defaults) {
            assert_eq!(
                default_of(key),
                default,
                "docs/security/resources.md: {key}"
            );
        }
    }
    for needed in [
        "password hashing",
        "sending mail",
        "database connections",
        "request bodies",
    ] {
        assert!(
            table.iter().any(|r| r[0].contains(needed)),
            "{needed} missing"
        );
    }
}

// covers: ASVS-6.1.1
#[test]
fn every_limiter_setting_is_documented_with_its_default() {
    let doc = read("docs/security/brute-force.md");
    let table = rows(&doc, |c| c.parse::<u32>().is_ok());
    assert!(table.len() >= 10, "{table:?}");
    let mut documented = BTreeSet::new();
    for row in &table {
        let keys = backticked(row[3]);
        let defaults = backticked(row[4]);
        for (key, default) in keys.iter().zip(defaults) {
            if SETTINGS.iter().any(|s| s.key == *key) {
                assert_eq!(
                    default_of(key),
                    default,
                    "docs/security/brute-force.md: {key}"
                );
                documented.insert(key.to_string());
            }
        }
    }
    for setting in SETTINGS {
        let k = setting.key;
        if k.starts_with("rate_")
            || k.starts_with("login_backoff")
            || k == "account_failures_per_hour"
            || k == "factor_hard_stop"
            || k.ends_with("_mails_per_account")
        {
            assert!(
                documented.contains(k),
                "limiter setting {k} is not in the brute-force table"
            );
        }
    }
    assert!(
        doc.contains("lock") || doc.contains("locking"),
        "how users are kept from being locked out"
    );
}

/// The authorization matrix: (method, path, anonymous admitted, pending MFA
/// cell: `yes`, `no` (403 `mfa_required`) or `401`).
fn public_matrix() -> Vec<(Method, String, bool, String)> {
    let doc = read("docs/security/authorization.md");
    let public = doc
        .split("## Public listener")
        .nth(1)
        .unwrap()
        .split("## Admin listener")
        .next()
        .unwrap();
    rows(public, |c| c.starts_with('`'))
        .into_iter()
        .map(|r| {
            let (method, path) = r[0].trim_matches('`').split_once(' ').unwrap();
            (
                method.parse().unwrap(),
                path.to_string(),
                r[2] == "yes",
                r[3].to_string(),
            )
        })
        .collect()
}

// covers: ASVS-8.1.1, ASVS-8.1.2, ASVS-8.3.1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_matrix_is_complete_and_the_server_enforces_it() {
    let mut env = TestEnv::new(Backend::Sqlite).await;
    env.with_admin();
    let app = env.spawn().await;
    let matrix = public_matrix();

    // Every operation of /openapi.json has a row, and every row an operation.
    let openapi = app
        .send(Method::GET, "/openapi.json", None, &[])
        .await
        .json();
    let mut documented: BTreeSet<(String, String)> = BTreeSet::new();
    for (path, ops) in openapi["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let rows: BTreeSet<(String, String)> = matrix
        .iter()
        .map(|(m, p, ..)| (m.to_string(), p.clone()))
        .collect();
    assert_eq!(
        rows, documented,
        "docs/security/authorization.md rows vs /openapi.json"
    );

    // Every admin route named in the code has a row, and each refuses no token.
    let doc = read("docs/security/authorization.md");
    let admin_section = doc
        .split("## Admin listener")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let admin_rows: BTreeSet<String> = rows_of(admin_section);
    let mut in_code = BTreeSet::new();
    for file in rust_sources("src/http") {
        for literal in read(&file).split('"').skip(1).step_by(2) {
            if literal.starts_with("/admin/v1/") || literal == "/metrics" {
                in_code.insert(literal.to_string());
            }
        }
    }
    let admin_paths: BTreeSet<String> = admin_rows
        .iter()
        .map(|r| r.split_once(' ').unwrap().1.to_string())
        .collect();
    assert_eq!(admin_paths, in_code, "admin routes in docs vs code");
    // The server enforces the anonymous and pending-MFA columns.
    let user = email("matrix");
    app.register(&user, PASSWORD).await;
    let full = app.token_for(&user, PASSWORD).await;
    app.enable_totp(&full).await;
    let user_id = app.get_bearer("/v1/session", &full).await.json()["user"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pending = app.login(&user, PASSWORD).await.json()["session_token"]
        .as_str()
        .unwrap()
        .to_string();
    let id = uuid::Uuid::new_v4().to_string();
    let mut logout_last = matrix.clone();
    logout_last.sort_by_key(|(_, p, ..)| p == "/v1/logout");
    for (method, path, anonymous, pending_ok) in logout_last {
        let path = path.replace("{id}", &id);
        let body = (method != Method::GET && method != Method::DELETE).then(|| json!({}));
        let r = app.send(method.clone(), &path, body.clone(), &[]).await;
        if anonymous {
            assert_ne!(
                r.status, 401,
                "{method} {path} must admit anonymous callers: {}",
                r.text
            );
        } else {
            r.assert_error(401, "unauthenticated");
        }
        let auth = format!("Bearer {pending}");
        let r = app
            .send(method.clone(), &path, body, &[("authorization", &auth)])
            .await;
        let refused_for_mfa = r.status == 403 && r.text.contains("mfa_required");
        match pending_ok.as_str() {
            "yes" => assert!(
                !refused_for_mfa && r.status != 401,
                "{method} {path} must admit a pending session: {} {}",
                r.status,
                r.text
            ),
            "401" => {
                r.assert_error(401, "unauthenticated");
            }
            _ => {
                r.assert_error(403, "mfa_required");
            }
        }
    }

    // Each admin route refuses a request without the token and serves one
    // with it (on a real user, so 404 can only mean a missing route).
    let admin_base = app.admin_base.clone().unwrap();
    for row in &admin_rows {
        let (method, path) = row.split_once(' ').unwrap();
        let url = format!("{admin_base}{}", path.replace("{id}", &user_id));
        let res = app
            .client
            .request(method.parse().unwrap(), &url)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{row} without the admin token");
        let res = app
            .client
            .request(method.parse().unwrap(), &url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert!(
            ![401, 404, 405].contains(&res.status().as_u16()),
            "{row} with the admin token: {}",
            res.status()
        );
    }
}

fn rows_of(section: &str) -> BTreeSet<String> {
    rows(section, |c| c.starts_with('`'))
        .into_iter()
        .map(|r| r[0].trim_matches('`').to_string())
        .collect()
}

// covers: ASVS-6.1.3
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_that_issues_a_session_is_a_documented_pathway() {
    let app = spawn_app(Backend::Sqlite).await;
    let openapi = app
        .send(Method::GET, "/openapi.json", None, &[])
        .await
        .json();
    let schemas = &openapi["components"]["schemas"];
    let issues_token = |response: &Value| -> bool {
        let schema = &response["content"]["application/json"]["schema"];
        let resolved = match schema["$ref"].as_str() {
            Some(r) => &schemas[r.rsplit('/').next().unwrap()],
            None => schema,
        };
        resolved["properties"].get("session_token").is_some()
    };
    let mut minting = BTreeSet::new();
    for (path, ops) in openapi["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if op["responses"]
                .as_object()
                .unwrap()
                .values()
                .any(issues_token)
            {
                minting.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    assert!(minting.contains("POST /v1/login"), "{minting:?}");
    let doc = read("docs/security/authorization.md");
    let pathways = doc.split("## Ways to authenticate").nth(1).unwrap();
    let routes: BTreeSet<String> = rows(pathways, |c| !c.is_empty() && c != "pathway")
        .iter()
        .flat_map(|r| {
            backticked(r[1])
                .into_iter()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    for route in &minting {
        assert!(
            routes.contains(route),
            "{route} issues a session but is not a documented pathway"
        );
    }
    for needed in ["password reset", "admin token"] {
        assert!(pathways.contains(needed), "{needed} pathway missing");
    }
}

// covers: ASVS-6.2.10, N63B-06
async fn passwords_never_expire_by_age(b: Backend) {
    for setting in SETTINGS {
        let k = setting.key;
        assert!(
            !(k.contains("password") && (k.contains("age") || k.contains("expir"))),
            "{k} looks like a password-age setting"
        );
    }
    let env = TestEnv::new(b).await;
    let app = env.spawn().await;
    let user = email("old");
    app.register(&user, PASSWORD).await;
    let shift = match b {
        Backend::Sqlite => {
            "UPDATE users SET password_changed_at = password_changed_at - 34560000000, created_at = created_at - 34560000000"
        }
        Backend::Postgres => {
            "UPDATE users SET password_changed_at = password_changed_at - interval '400 days', created_at = created_at - interval '400 days'"
        }
    };
    sql(&env, shift).await;
    let r = app.login(&user, PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let session = &r.json()["session"];
    assert_eq!(session["mfa_pending"], false);
    let token = r.json()["session_token"].as_str().unwrap().to_string();
    assert_eq!(
        app.get_bearer("/v1/sessions", &token).await.status,
        200,
        "no forced-change state"
    );
}

crate::on_both_backends!(passwords_never_expire_by_age);

// covers: ASVS-8.2.3
async fn user_facing_responses_carry_no_admin_only_or_secret_fields(b: Backend) {
    let app = spawn_app(b).await;
    let user = email("bopla");
    let registered = app.register(&user, PASSWORD).await;
    assert_eq!(registered.status, 201);
    let login = app.login(&user, PASSWORD).await;
    let token = login.json()["session_token"].as_str().unwrap().to_string();
    let mut responses = vec![registered.json(), login.json()];
    for path in ["/v1/session", "/v1/sessions", "/v1/mfa/backup-codes"] {
        let r = app.get_bearer(path, &token).await;
        assert_eq!(r.status, 200, "{path}");
        responses.push(r.json());
    }
    const FORBIDDEN: &[&str] = &[
        "locked",
        "last_login_at",
        "password",
        "password_hash",
        "token_hash",
        "secret",
        "totp_secret",
        "sealed_secret",
        "backup_codes",
        "code_hash",
        "email_key",
    ];
    fn walk(v: &Value, path: &str, found: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    if FORBIDDEN.contains(&k.as_str()) {
                        found.push(format!("{path}.{k}"));
                    }
                    walk(child, &format!("{path}.{k}"), found);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, path, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    for r in &responses {
        walk(r, "", &mut found);
    }
    assert!(found.is_empty(), "user-facing responses expose {found:?}");
    // The stored hash is nowhere in any response text.
    let all = serde_json::to_string(&responses).unwrap();
    assert!(!all.contains("$argon2id$"), "a password hash leaked");
    // Protected fields cannot be written by the client.
    let auth = format!("Bearer {token}");
    for body in [
        json!({"current_password": PASSWORD, "new_password": "another long passphrase here", "email_verified": true}),
        json!({"current_password": PASSWORD, "new_password": "another long passphrase here", "aal": "aal2"}),
    ] {
        app.send(
            Method::POST,
            "/v1/password/change",
            Some(body),
            &[("authorization", &auth)],
        )
        .await
        .assert_error(400, "invalid_request");
    }
    let session = app.get_bearer("/v1/session", &token).await.json();
    assert_eq!(session["user"]["email_verified"], false);
    assert_eq!(session["session"]["aal"], "aal1");
}

crate::on_both_backends!(user_facing_responses_carry_no_admin_only_or_secret_fields);
