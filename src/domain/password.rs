//! Passwords and the policy they must meet (NIST SP 800-63B).
//!
//! One normalisation, NFC, is applied both when a password is set and when
//! it is checked; length is counted in Unicode scalar values after it. There
//! are no composition rules. A new password is refused when the whole of it
//! is a known common or breached password, when it contains a context word
//! (the service name, the organisation, the user's email) or when its
//! zxcvbn strength estimate is below the configured score.

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

/// What a new password must satisfy.
#[derive(Debug, Clone)]
pub struct PasswordPolicy {
    pub min_length: usize,
    pub max_length: usize,
    /// Lowest zxcvbn score (0 to 4) accepted.
    pub min_strength: u8,
    /// Words a password may not contain (lower case, no spaces).
    pub context_words: Vec<String>,
}

/// The built-in context words, from `assets/context-words.txt`.
pub fn builtin_context_words() -> Vec<String> {
    include_str!("../../assets/context-words.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(fold_context)
        .collect()
}

/// Lower case without white space: how context words are compared.
pub fn fold_context(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// zxcvbn's cost grows with length; beyond this prefix a password is
/// long enough that the estimate adds nothing.
const STRENGTH_PREFIX: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("password must be at least {0} characters long")]
    TooShort(usize),
    #[error("password must be at most {0} characters long")]
    TooLong(usize),
    #[error("password must not contain control characters")]
    Control,
    #[error("password is a commonly used or breached password; choose another")]
    Common,
    #[error(
        "password must not contain the service name, the organisation name or your email address"
    )]
    Context,
    #[error("password is too easy to guess; a longer phrase of unrelated words works well")]
    Guessable,
}

impl Password {
    /// Normalises a candidate for a new password and applies the whole
    /// policy; `account_words` are the user's own (e.g. the email's local part).
    pub fn new_for_account(
        input: &str,
        policy: &PasswordPolicy,
        account_words: &[&str],
    ) -> Result<Self, PasswordError> {
        let candidate = Self::new_with_policy(input, policy)?;
        let text = candidate.0.expose_secret();
        if super::password_blocklist::is_common(text) {
            return Err(PasswordError::Common);
        }
        let folded = zeroize::Zeroizing::new(fold_context(text));
        let own: Vec<String> = account_words
            .iter()
            .map(|w| fold_context(w))
            .filter(|w| w.chars().count() >= 3)
            .collect();
        if policy
            .context_words
            .iter()
            .chain(own.iter())
            .any(|w| !w.is_empty() && folded.contains(w.as_str()))
        {
            return Err(PasswordError::Context);
        }
        let prefix: String = text.chars().take(STRENGTH_PREFIX).collect();
        let inputs: Vec<&str> = own
            .iter()
            .map(String::as_str)
            .chain(policy.context_words.iter().map(String::as_str))
            .collect();
        let score = zxcvbn::zxcvbn(&prefix, &inputs).score() as u8;
        if score < policy.min_strength {
            return Err(PasswordError::Guessable);
        }
        Ok(candidate)
    }

    /// Normalises a candidate and checks length and characters only.
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
        min_strength: 0,
        context_words: Vec::new(),
    };

    fn full_policy() -> PasswordPolicy {
        let mut words = builtin_context_words();
        words.push(fold_context("Example Corp"));
        PasswordPolicy {
            min_strength: 3,
            context_words: words,
            ..POLICY
        }
    }

    // covers: ASVS-6.2.4, ASVS-6.2.11, ASVS-6.2.12, ASVS-6.1.2, N63B-05
    #[test]
    fn common_context_and_guessable_passwords_are_refused_with_the_reason() {
        let p = full_policy();
        assert!(builtin_context_words().contains(&"castellan".to_string()));
        let check = |pw: &str| Password::new_for_account(pw, &p, &["ada.lovelace"]);
        assert_eq!(check("123456789012345").unwrap_err(), PasswordError::Common);
        assert_eq!(
            check("QwertyuiopAsdfghjkl").unwrap_err(),
            PasswordError::Common
        );
        assert_eq!(
            check("castellancastellan").unwrap_err(),
            PasswordError::Context
        );
        assert_eq!(
            check("my Example Corp password!").unwrap_err(),
            PasswordError::Context
        );
        assert_eq!(
            check("ada.lovelace-2024-rocks").unwrap_err(),
            PasswordError::Context
        );
        assert_eq!(
            check("zyxwzyxwzyxwzyxwzyxw").unwrap_err(),
            PasswordError::Guessable
        );
        assert!(check("correct horse battery staple").is_ok());
        assert!(check("vQ9#mL2!xR7$kT4@").is_ok());
        assert!(PasswordError::Common.to_string().contains("common"));
    }

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
            "928374651029384",
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
