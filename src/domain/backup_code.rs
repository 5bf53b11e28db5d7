//! Backup codes: single-use look-up secrets, also the recovery path.
//!
//! A code is 16 characters of the RFC 4648 base32 alphabet, shown in four
//! groups (`CKQ4-7ZJD-M2XA-P5HT`). The first character is a public slot
//! index (0-9 of the batch), so verification checks one hash, not ten; the
//! other 15 characters carry 75 random bits. Input is accepted in any
//! case, with or without dashes and spaces.

use std::fmt;

use zeroize::Zeroizing;

/// Codes per batch.
pub const BATCH_SIZE: usize = 10;
const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
pub const RANDOM_CHARS: usize = 15;

/// A backup code (normalised: upper case, no separators).
#[derive(Clone, PartialEq, Eq)]
pub struct BackupCode(Zeroizing<String>);

impl fmt::Debug for BackupCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BackupCode([redacted])")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("backup_code must be 16 characters of A-Z and 2-7 (dashes and spaces allowed)")]
pub struct MalformedBackupCode;

impl BackupCode {
    /// Normalises and validates typed input.
    pub fn parse(input: &str) -> Result<Self, MalformedBackupCode> {
        if input.len() > 64 {
            return Err(MalformedBackupCode);
        }
        let normalised: String = input
            .chars()
            .filter(|c| *c != '-' && *c != ' ')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let valid = normalised.len() == 1 + RANDOM_CHARS
            && normalised.bytes().all(|b| ALPHABET.contains(&b))
            && Self::slot_of(normalised.as_bytes()[0]).is_some();
        if valid {
            Ok(Self(Zeroizing::new(normalised)))
        } else {
            Err(MalformedBackupCode)
        }
    }

    fn slot_of(c: u8) -> Option<u8> {
        let i = ALPHABET.iter().position(|a| *a == c)?;
        (i < BATCH_SIZE).then(|| u8::try_from(i).ok()).flatten()
    }

    /// The code for `slot` from `RANDOM_CHARS` random bytes (drawn by the
    /// caller: `crypto` adds `BackupCode::generate_batch`).
    pub fn from_random(slot: usize, random: [u8; RANDOM_CHARS]) -> Self {
        let mut code = String::with_capacity(1 + RANDOM_CHARS);
        code.push(char::from(ALPHABET[slot % BATCH_SIZE]));
        // 256 is a multiple of 32, so `b % 32` is uniform.
        code.extend(
            random
                .iter()
                .map(|b| char::from(ALPHABET[usize::from(*b % 32)])),
        );
        Self(Zeroizing::new(code))
    }

    /// The public slot index (0-9).
    pub fn slot(&self) -> u8 {
        Self::slot_of(self.0.as_bytes()[0]).unwrap_or(0)
    }

    /// The normalised text, for hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Grouped for display: `XXXX-XXXX-XXXX-XXXX`.
    pub fn display_form(&self) -> Zeroizing<String> {
        let groups: Vec<&str> = (0..4).map(|i| &self.0[i * 4..i * 4 + 4]).collect();
        Zeroizing::new(groups.join("-"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // covers: ASVS-6.5.4, ASVS-6.5.3, N63B-12
    #[test]
    fn batches_have_ten_distinct_codes_with_over_64_bits() {
        assert!((RANDOM_CHARS as f64) * 5.0 >= 64.0);
        let batch = BackupCode::generate_batch().unwrap();
        assert_eq!(batch.len(), 10);
        let mut seen = std::collections::HashSet::new();
        for (i, code) in batch.iter().enumerate() {
            assert_eq!(usize::from(code.slot()), i);
            let shown = code.display_form();
            assert_eq!(shown.len(), 19);
            assert!(seen.insert(shown.to_string()));
            assert_eq!(&BackupCode::parse(&shown).unwrap(), code);
            assert_eq!(
                &BackupCode::parse(&shown.to_lowercase().replace('-', " ")).unwrap(),
                code
            );
        }
    }

    // covers: ASVS-2.2.1
    #[test]
    fn malformed_codes_are_refused() {
        for bad in [
            "",
            "ABCD",
            "ABCD-EFGH-IJKL-MNO1",
            "ZBCD-EFGH-IJKL-MNOP",
            "ABCD-EFGH-IJKL-MNOPQ",
            &"A".repeat(100),
        ] {
            assert!(BackupCode::parse(bad).is_err(), "{bad}");
        }
    }
}
