//! TOTP (RFC 6238): HMAC-SHA-1, 6 digits, 30-second steps, T0 = 0.
//!
//! Verification takes the time as an argument and returns the time step
//! that matched, so the caller can refuse any step not later than the last
//! one accepted (replay protection lives in the database).

use std::fmt;

use totp_rs::{Algorithm, Builder, Totp};
use zeroize::Zeroizing;

use subtle::ConstantTimeEq;

/// Seconds per step.
pub const STEP_SECONDS: u64 = 30;
/// Digits per code.
pub const DIGITS: u8 = 6;
/// Secret length: 160 bits, the size of the HMAC-SHA-1 output.
pub const SECRET_BYTES: usize = 20;
/// Steps accepted on each side of the current one: one step of clock drift
/// or network delay (RFC 6238 section 5.2), so T-1, T and T+1.
pub const ALLOWED_DRIFT_STEPS: u64 = 1;

/// A TOTP shared secret. `Debug` redacts it.
#[derive(Clone)]
pub struct TotpSecret(Zeroizing<Vec<u8>>);

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret([redacted])")
    }
}

/// A six-digit code as typed by the user.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpCode(String);

impl fmt::Debug for TotpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpCode([redacted])")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("totp_code must be exactly 6 digits (0-9)")]
pub struct MalformedCode;

impl TotpCode {
    /// Exactly six ASCII digits: no spaces, no other scripts' digits.
    pub fn parse(input: &str) -> Result<Self, MalformedCode> {
        if input.len() == usize::from(DIGITS) && input.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(input.to_string()))
        } else {
            Err(MalformedCode)
        }
    }
}

impl TotpSecret {
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn expose_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Base32 without padding, as authenticator apps expect.
    pub fn to_base32(&self) -> Zeroizing<String> {
        Zeroizing::new(base32::encode(
            base32::Alphabet::Rfc4648 { padding: false },
            &self.0,
        ))
    }

    fn totp(&self, digits: u8) -> Option<Totp> {
        Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(digits)
            .with_step_duration(STEP_SECONDS)
            .with_secret(self.0.to_vec())
            .build()
            .ok()
    }

    /// The code for the step containing `unix_time`, with `digits` digits.
    pub fn code_at(&self, unix_time: u64, digits: u8) -> Option<String> {
        Some(self.totp(digits)?.generate(unix_time).to_string())
    }

    /// Checks `code` against steps T-1, T and T+1 around `unix_time`;
    /// returns the step that matched.
    pub fn verify(&self, code: &TotpCode, unix_time: u64) -> Option<u64> {
        let totp = self.totp(DIGITS)?;
        let now_step = unix_time / STEP_SECONDS;
        let first = now_step.saturating_sub(ALLOWED_DRIFT_STEPS);
        let mut matched = None;
        // Every candidate is computed and compared, so timing does not tell
        // which step matched.
        for step in first..=now_step.saturating_add(ALLOWED_DRIFT_STEPS) {
            let expected = totp.generate(step.saturating_mul(STEP_SECONDS)).to_string();
            if bool::from(expected.as_bytes().ct_eq(code.0.as_bytes())) {
                matched = Some(step);
            }
        }
        matched
    }
}

/// The `otpauth://` URI for authenticator apps: issuer and email are
/// percent-encoded in the label and the `issuer` parameter.
pub fn otpauth_uri(secret: &TotpSecret, issuer: &str, account: &str) -> Zeroizing<String> {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    Zeroizing::new(format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        enc(issuer),
        enc(account),
        secret.to_base32().as_str(),
        enc(issuer)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(b"12345678901234567890".to_vec())
    }

    // covers: RFC-01, RFC-02, RFC-04, ASVS-1.4.2
    #[test]
    fn rfc6238_sha1_vectors() {
        let s = rfc_secret();
        for (time, eight, six) in [
            (59u64, "94287082", "287082"),
            (1_111_111_109, "07081804", "081804"),
            (1_111_111_111, "14050471", "050471"),
            (1_234_567_890, "89005924", "005924"),
            (2_000_000_000, "69279037", "279037"),
            (20_000_000_000, "65353130", "353130"),
        ] {
            assert_eq!(s.code_at(time, 8).unwrap(), eight, "8 digits at {time}");
            assert_eq!(s.code_at(time, 6).unwrap(), six, "6 digits at {time}");
        }
    }

    // covers: RFC-01
    #[test]
    fn rfc4226_hotp_vectors_via_step_times() {
        // HOTP(count) equals TOTP at time count * 30 with T0 = 0.
        let expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        for (count, code) in expected.iter().enumerate() {
            assert_eq!(rfc_secret().code_at(count as u64 * 30, 6).unwrap(), *code);
        }
    }

    // covers: RFC-05, ASVS-6.5.5
    #[test]
    fn window_accepts_one_step_either_side_only() {
        let s = rfc_secret();
        let t = 1_700_000_000u64;
        let step = t / 30;
        for (offset, accepted) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
            let at = (step as i64 + offset) as u64 * 30;
            let code = TotpCode::parse(&s.code_at(at, 6).unwrap()).unwrap();
            let got = s.verify(&code, t);
            assert_eq!(got.is_some(), accepted, "offset {offset}");
            if accepted {
                assert_eq!(got, Some((step as i64 + offset) as u64));
            }
        }
    }

    // covers: ASVS-2.2.1
    #[test]
    fn codes_are_exactly_six_ascii_digits() {
        for bad in ["12345", "1234567", "12 345", "١٢٣٤٥٦", "abcdef", ""] {
            assert!(TotpCode::parse(bad).is_err(), "{bad}");
        }
        assert!(TotpCode::parse("012345").is_ok());
    }

    // covers: RFC-03, RFC-04, ASVS-1.2.2
    #[test]
    fn secrets_are_160_bits_and_the_uri_round_trips() {
        let a = TotpSecret::generate().unwrap();
        let b = TotpSecret::generate().unwrap();
        assert_eq!(a.expose_bytes().len(), 20);
        assert_ne!(a.expose_bytes(), b.expose_bytes());
        let uri = otpauth_uri(&a, "castellan & co", "o'hara+t@example.com");
        assert!(
            uri.starts_with("otpauth://totp/castellan%20%26%20co:o%27hara%2Bt%40example%2Ecom?")
        );
        assert!(uri.contains("&algorithm=SHA1&digits=6&period=30"));
        assert!(uri.contains(&format!("secret={}", a.to_base32().as_str())));
        assert!(!format!("{a:?}").contains(a.to_base32().as_str()));
    }
}
