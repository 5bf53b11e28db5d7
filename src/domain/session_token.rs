//! Session tokens: `cst_` + 256 bits from the OS CSPRNG, base64url without
//! padding. Only a keyed hash of a token is ever stored.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};

const PREFIX: &str = "cst_";
pub const RANDOM_BYTES: usize = 32;
/// Length of the base64url text of 32 bytes.
const ENCODED_LEN: usize = 43;

/// A keyed hash of a session or mailed token: what the database stores and
/// looks up (computed by `crypto::Keys`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// A session token as handed to a client. `Debug` redacts it.
#[derive(Clone)]
pub struct SessionToken(SecretString);

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken([redacted])")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a castellan session token")]
pub struct MalformedToken;

impl SessionToken {
    /// The token for 32 random bytes (the caller draws them: see
    /// `crypto`, which adds `SessionToken::generate`).
    pub fn from_random(bytes: [u8; RANDOM_BYTES]) -> Self {
        Self(SecretString::from(format!(
            "{PREFIX}{}",
            URL_SAFE_NO_PAD.encode(bytes)
        )))
    }

    /// Checks the shape of a presented token before any lookup, so garbage
    /// and oversized values cost nothing.
    pub fn parse(input: &str) -> Result<Self, MalformedToken> {
        let body = input.strip_prefix(PREFIX).ok_or(MalformedToken)?;
        if body.len() != ENCODED_LEN
            || !body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(MalformedToken);
        }
        // Non-canonical encodings (stray low bits in the last character) are
        // refused so each token has exactly one spelling.
        let decoded = URL_SAFE_NO_PAD.decode(body).map_err(|_| MalformedToken)?;
        if decoded.len() != RANDOM_BYTES {
            return Err(MalformedToken);
        }
        Ok(Self(SecretString::from(input.to_string())))
    }

    /// The token text, for the response that issues it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_token() -> SessionToken {
        let mut bytes = [0u8; RANDOM_BYTES];
        getrandom::fill(&mut bytes).unwrap();
        SessionToken::from_random(bytes)
    }

    // covers: ASVS-7.2.3, ASVS-11.5.1
    #[test]
    fn generated_tokens_have_the_contract_shape_and_parse() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let t = random_token();
            let text = t.expose().to_string();
            assert!(text.starts_with("cst_"));
            assert_eq!(text.len(), 4 + 43);
            assert_eq!(URL_SAFE_NO_PAD.decode(&text[4..]).unwrap().len(), 32);
            assert!(SessionToken::parse(&text).is_ok());
            assert!(seen.insert(text));
        }
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = random_token().expose().to_string();
        for bad in [
            String::new(),
            "cst_".into(),
            good[4..].to_string(),
            format!("{good}A"),
            good.replace("cst_", "cSt_"),
            format!("cst_{}", "!".repeat(43)),
            "x".repeat(10_000),
        ] {
            assert!(SessionToken::parse(&bad).is_err(), "{bad:?}");
        }
        assert!(!format!("{:?}", SessionToken::parse(&good).unwrap()).contains(&good[4..]));
    }
}
