//! Passwords and the policy they must meet (NIST SP 800-63B).
//!
//! One normalisation, NFC, is applied both when a password is set and when
//! it is checked; length is counted in Unicode scalar values after it. There
//! are no composition rules.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use unicode_normalization::UnicodeNormalization;

/// A password, NFC-normalised. `Debug` redacts it and there is no `Display`.
#[derive(Clone)]
pub struct Password(SecretString);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// Length bounds; the blocklist and context checks join it with the
/// account-lifecycle work.
#[derive(Debug, Clone, Copy)]
pub struct PasswordPolicy {
    pub min_length: usize,
    pub max_length: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("password must be at least {0} characters long")]
    TooShort(usize),
    #[error("password must be at most {0} characters long")]
    TooLong(usize),
    #[error("password must not contain control characters")]
    Control,
}

impl Password {
    /// Normalises a candidate for a new password and applies the policy.
    pub fn new_with_policy(input: &str, policy: &PasswordPolicy) -> Result<Self, PasswordError> {
        let normalised: String = input.nfc().collect();
        let len = normalised.chars().count();
        if len < policy.min_length {
            return Err(PasswordError::TooShort(policy.min_length));
        }
        if len > policy.max_length {
            return Err(PasswordError::TooLong(policy.max_length));
        }
        if normalised.chars().any(|c| c.is_control()) {
            return Err(PasswordError::Control);
        }
        Ok(Self(SecretString::from(normalised)))
    }

    /// Normalises a password given to log in. Only the upper bound applies,
    /// to protect the hasher; policy changes must not lock anyone out.
    pub fn for_verification(input: &str, max_length: usize) -> Result<Self, PasswordError> {
        let normalised: String = input.nfc().collect();
        if normalised.chars().count() > max_length {
            return Err(PasswordError::TooLong(max_length));
        }
        Ok(Self(SecretString::from(normalised)))
    }

    /// The bytes to hash. The name makes every use visible in review.
    pub fn expose_bytes(&self) -> &[u8] {
        self.0.expose_secret().as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: PasswordPolicy = PasswordPolicy {
        min_length: 15,
        max_length: 1024,
    };

    // covers: ASVS-6.2.1, ASVS-6.2.5, ASVS-6.2.9, N63B-01, N63B-02, N63B-03, N63B-04
    #[test]
    fn length_counts_scalar_values_after_nfc() {
        assert!(Password::new_with_policy(&"a".repeat(14), &POLICY).is_err());
        assert!(Password::new_with_policy(&"a".repeat(15), &POLICY).is_ok());
        // 15 emoji are 60 bytes but 15 characters.
        assert!(Password::new_with_policy(&"🦀".repeat(15), &POLICY).is_ok());
        assert!(Password::new_with_policy(&"🦀".repeat(14), &POLICY).is_err());
        // Decomposed "é" (e + combining acute) normalises to one character.
        let decomposed = "e\u{301}".repeat(15);
        let composed = "\u{e9}".repeat(15);
        let a = Password::new_with_policy(&decomposed, &POLICY).unwrap();
        let b = Password::new_with_policy(&composed, &POLICY).unwrap();
        assert_eq!(a.expose_bytes(), b.expose_bytes());
        assert!(Password::new_with_policy(&"x".repeat(1025), &POLICY).is_err());
        assert!(Password::new_with_policy(&"x".repeat(1024), &POLICY).is_ok());
        // No composition rules: digits only, spaces, CJK all fine.
        for ok in [
            "123456789012345",
            "correct horse battery",
            "密码密码密码密码密码密码密码密码",
        ] {
            assert!(Password::new_with_policy(ok, &POLICY).is_ok(), "{ok}");
        }
    }

    #[test]
    fn debug_never_shows_the_password() {
        let p = Password::new_with_policy("a very secret passphrase", &POLICY).unwrap();
        assert!(!format!("{p:?}").contains("secret"));
    }
}
