//! Documentation and code agree.

use castellan::config::SETTINGS;

// covers: ASVS-2.1.3
#[test]
fn every_setting_is_documented_with_its_default() {
    let doc =
        std::fs::read_to_string("docs/configuration.md").expect("docs/configuration.md exists");
    for setting in SETTINGS {
        let env = setting.env_name();
        let row = doc
            .lines()
            .find(|l| l.starts_with('|') && l.contains(&format!("`{env}`")))
            .unwrap_or_else(|| {
                panic!("{env} is not in the settings table of docs/configuration.md")
            });
        if !setting.default.is_empty() {
            assert!(
                row.contains(&format!("`{}`", setting.default)),
                "{env}: default `{}` not in: {row}",
                setting.default
            );
        }
        assert!(
            row.contains(&format!("`{}`", setting.key)),
            "{env}: TOML key `{}` not in: {row}",
            setting.key
        );
    }
}

// covers: ASVS-16.1.1
#[test]
fn every_security_event_kind_is_documented() {
    let doc = std::fs::read_to_string("docs/logging.md").expect("docs/logging.md exists");
    for kind in castellan::audit::EventKind::ALL {
        assert!(
            doc.contains(&format!("`{}`", kind.as_str())),
            "{} missing from docs/logging.md",
            kind.as_str()
        );
    }
}

#[test]
fn every_metric_and_query_operation_is_documented() {
    let doc = std::fs::read_to_string("docs/operations.md").expect("docs/operations.md exists");
    let source = std::fs::read_to_string("src/metrics.rs").unwrap();
    let names: Vec<&str> = source
        .split('"')
        .filter(|s| s.starts_with("castellan_") && !s.ends_with('_'))
        .collect();
    assert!(names.len() >= 15, "metric names found: {names:?}");
    for name in names {
        assert!(
            doc.contains(&format!("| `{name}` |")),
            "{name} is not in the metrics table of docs/operations.md"
        );
    }
    for op in castellan::store::Op::ALL {
        assert!(
            doc.contains(&format!("`{}`", op.as_str())),
            "query operation {} is not in docs/operations.md",
            op.as_str()
        );
    }
}

// covers: ASVS-1.4.1
#[test]
fn unsafe_code_is_forbidden() {
    let lib = std::fs::read_to_string("src/lib.rs").unwrap();
    assert!(lib.contains("#![forbid(unsafe_code)]"));
    let manifest = std::fs::read_to_string("Cargo.toml").unwrap();
    assert!(manifest.contains("unsafe_code = \"forbid\""));
}

// covers: ASVS-1.4.2
#[test]
fn release_builds_keep_overflow_checks() {
    let manifest = std::fs::read_to_string("Cargo.toml").unwrap();
    let release = manifest
        .split("[profile.release]")
        .nth(1)
        .expect("a release profile");
    let release = release.split("\n[").next().unwrap();
    assert!(release.contains("overflow-checks = true"));
}

/// The root package's enabled features when cargo resolves `edges`.
fn features_resolved(edges: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "tree",
            "--locked",
            "--offline",
            "--depth",
            "0",
            "--prefix",
            "none",
        ])
        .args(["--edges", edges, "--format", "{p} features: {f}"])
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

// covers: ASVS-15.2.3
#[test]
fn test_code_stays_out_of_release_builds() {
    // A build of the service (normal and build edges): no test-hooks.
    let service = features_resolved("normal,build,features");
    assert!(service.starts_with("castellan "), "{service}");
    assert!(!service.contains("test-hooks"), "{service}");
    // The same question with dev edges sees it: the check can fail.
    let tests = features_resolved("normal,build,dev,features");
    assert!(tests.contains("test-hooks"), "{tests}");
    // And nothing but the manual clock sits behind it.
    let clock = std::fs::read_to_string("src/clock.rs").unwrap();
    assert!(clock.contains("#[cfg(any(test, feature = \"test-hooks\"))]\nmod manual {"));
}

// covers: ASVS-1.2.4
#[test]
fn sql_is_never_built_from_strings_in_the_store() {
    for file in ["src/store/postgres.rs", "src/store/sqlite.rs"] {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(!text.contains("AssertSqlSafe"), "{file}: dynamic SQL");
        for (i, line) in text.lines().enumerate() {
            if line.contains("format!(") {
                // The only format! calls build SQL from constant column lists.
                let window: String = text.lines().skip(i).take(3).collect();
                assert!(
                    window.contains("_COLUMNS}") || !window.to_uppercase().contains("SELECT"),
                    "{file}:{}: SQL assembled with format!: {line}",
                    i + 1
                );
            }
        }
    }
}

#[test]
fn the_traceability_table_is_current() {
    let out = std::process::Command::new("python3")
        .args(["scripts/security-grade", "--check-table"])
        .output()
        .expect("python3 runs scripts/security-grade");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
