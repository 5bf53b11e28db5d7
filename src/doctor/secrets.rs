//! Checks of the keys: the secret key, the audit key, Argon2 cost.

use super::{Grader, Status};
use crate::config::Config;

/// OWASP's Argon2id minimums (memory in KiB, iterations) for parallelism 1.
const ARGON2_MINIMUMS: &[(u32, u32)] = &[(47104, 1), (19456, 2), (12288, 3), (9216, 4), (7168, 5)];

/// Grades the keys and the password hashing cost.
pub(super) fn grade(config: &Config, g: &mut Grader) {
    match &config.secret_key {
        Some(key) => {
            let bytes = key.expose();
            let mut distinct = bytes.to_vec();
            distinct.sort_unstable();
            distinct.dedup();
            let random_looking = bytes.len() >= 32 && distinct.len() >= 16;
            g.add(
                "secret_key",
                3,
                if random_looking {
                    Status::Pass
                } else {
                    Status::Fail
                },
                if random_looking {
                    format!(
                        "secret key of {} bytes from the environment or a file",
                        bytes.len()
                    )
                } else {
                    format!(
                        "the secret key ({} bytes, {} distinct values) does not look random",
                        bytes.len(),
                        distinct.len()
                    )
                },
                "it keys every token hash and encrypts TOTP secrets",
                "set CASTELLAN_SECRET_KEY_FILE to a file holding `openssl rand -base64 32`",
            );
        }
        None => g.add(
            "secret_key",
            3,
            g.weak,
            "no secret key configured: the generated development key in the data directory is used"
                .into(),
            "it keys every token hash and encrypts TOTP secrets; a key generated on one machine is not backed up or shared by other nodes",
            "set CASTELLAN_SECRET_KEY_FILE to a file holding `openssl rand -base64 32`",
        ),
    }
    g.add(
        "audit_key",
        1,
        if config.audit_key.is_some() {
            Status::Pass
        } else {
            Status::Warn
        },
        if config.audit_key.is_some() {
            "audit events carry an HMAC under a key the database does not hold".into()
        } else {
            "no audit key: someone with database access can rewrite the whole chain undetected"
                .into()
        },
        "the HMAC makes the audit chain tamper-evident against the database's own administrators",
        "set CASTELLAN_AUDIT_KEY_FILE to a file holding `openssl rand -base64 32` (keep it outside the database)",
    );
    let a = config.hashing.argon2;
    let argon_ok = a.parallelism >= 1
        && ARGON2_MINIMUMS
            .iter()
            .any(|(m, t)| a.memory_kib >= *m && a.iterations >= *t);
    g.add(
        "argon2",
        2,
        if argon_ok { Status::Pass } else { Status::Fail },
        format!(
            "Argon2id m={} KiB, t={}, p={}",
            a.memory_kib, a.iterations, a.parallelism
        ),
        "below OWASP's minimum, stolen password hashes are cheap to crack",
        "set argon2_memory_kib = 19456 and argon2_iterations = 2 (or stronger)",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_minimums_follow_owasp() {
        let ok = |m, t| ARGON2_MINIMUMS.iter().any(|(mm, tt)| m >= *mm && t >= *tt);
        assert!(ok(19456, 2) && ok(47104, 1) && ok(7168, 5));
        assert!(!ok(19456, 1) && !ok(4096, 3));
    }
}
