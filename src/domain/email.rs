//! Email addresses: trimmed, validated once, compared case-insensitively.

use std::fmt;

/// The longest address accepted (RFC 5321 path limit).
pub const MAX_LEN: usize = 254;

/// A syntactically valid email address.
#[derive(Clone, PartialEq, Eq)]
pub struct Email {
    /// As entered, trimmed.
    display: String,
    /// Lower-cased form used for uniqueness and lookups.
    key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("email must not be empty")]
    Empty,
    #[error("email must be at most 254 characters")]
    TooLong,
    #[error("email must contain one @ with text on both sides")]
    Shape,
    #[error("email contains characters that are not allowed")]
    Characters,
    #[error("email domain is not valid")]
    Domain,
}

impl Email {
    /// Parses user input. Decoding happens exactly once, here: the value is
    /// taken literally (no percent-decoding), trimmed, then validated.
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        if trimmed.chars().count() > MAX_LEN {
            return Err(EmailError::TooLong);
        }
        let (local, domain) = trimmed.rsplit_once('@').ok_or(EmailError::Shape)?;
        if local.is_empty() || domain.is_empty() || local.len() > 64 {
            return Err(EmailError::Shape);
        }
        // Printable ASCII only, without the characters that would need
        // quoting; this also rules out CR/LF header injection.
        let local_ok = local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
        if !local_ok || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(EmailError::Characters);
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !domain_ok {
            return Err(EmailError::Domain);
        }
        Ok(Self {
            display: trimmed.to_string(),
            key: trimmed.to_ascii_lowercase(),
        })
    }

    /// The address as the user wrote it (trimmed).
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// The case-folded form used for uniqueness.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The part before the `@`, lower-cased (used by the password policy).
    pub fn local_part(&self) -> &str {
        self.key
            .rsplit_once('@')
            .map(|(l, _)| l)
            .unwrap_or(&self.key)
    }

    /// Rebuilds an address read back from storage (already validated).
    pub fn from_trusted(stored: String) -> Self {
        let key = stored.to_ascii_lowercase();
        Self {
            display: stored,
            key,
        }
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Personal data: keep it out of debug output and spans.
        f.write_str("Email(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // covers: ASVS-1.1.1, ASVS-2.2.1, ASVS-1.3.11
    #[test]
    fn parses_once_and_rejects_injection() {
        let e = Email::parse("  O'Hara+t@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "O'Hara+t@Example.COM");
        assert_eq!(e.key(), "o'hara+t@example.com");
        assert_eq!(e.local_part(), "o'hara+t");
        for bad in [
            "",
            "no-at",
            "@example.com",
            "a@",
            "a@b",
            "a@example.com\r\nBcc: x@evil.test",
            "a%40example.com",
            "a b@example.com",
            "a@exa mple.com",
            "a@-x.com",
            "a..b@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        // Percent-encoded input is taken literally, never decoded.
        assert_eq!(
            Email::parse("a%2540x@example.com").unwrap().as_str(),
            "a%2540x@example.com"
        );
        let long = format!("{}@example.com", "a".repeat(65));
        assert_eq!(Email::parse(&long), Err(EmailError::Shape));
        let too_long = format!("{}@{}.com", "a".repeat(60), "b".repeat(200));
        assert_eq!(Email::parse(&too_long), Err(EmailError::TooLong));
    }
}
