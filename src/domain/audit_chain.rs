//! The audit log's hash chain: each event stores SHA-256 over its content
//! and the previous event's hash, so editing, deleting or inserting a row
//! breaks the chain at that point. Optionally each hash is also
//! authenticated with HMAC-SHA-256 under a key the database never holds,
//! which detects a rewrite of the whole chain as well.
//!
//! This module is pure: the stores call [`ChainSealer::link`] while they
//! hold the database's append lock, and `castellan audit verify` feeds
//! stored events through a [`ChainVerifier`].

use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

/// A SHA-256 or HMAC-SHA-256 output.
pub type Digest32 = [u8; 32];

/// The "previous hash" of the first event, and the checkpoint of a chain
/// that was never pruned.
pub const GENESIS: Digest32 = [0; 32];

/// The kind of the event a prune appends; its detail names the checkpoint.
pub const PRUNED_KIND: &str = "audit_pruned";

/// Separates this hash from any other SHA-256 use; bump the version if the
/// encoding ever changes.
const DOMAIN_TAG: &[u8] = b"castellan.audit.v1\0";

/// The protected fields of one event, in the form they are stored.
#[derive(Debug, Clone, Copy)]
pub struct ChainedContent<'a> {
    pub seq: i64,
    pub id: Uuid,
    pub at: OffsetDateTime,
    pub kind: &'a str,
    pub user_id: Option<Uuid>,
    pub ip: &'a str,
    pub user_agent: &'a str,
    pub request_id: &'a str,
    pub detail: &'a Value,
}

/// What a new event stores to join the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub prev_hash: Digest32,
    pub hash: Digest32,
    /// HMAC of `hash`, when an audit key is configured.
    pub mac: Option<Digest32>,
}

/// The chain's bookkeeping row: the newest event and the checkpoint that
/// pruning leaves behind (the hash of the last event it removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub last_seq: i64,
    pub last_hash: Digest32,
    pub checkpoint_seq: i64,
    pub checkpoint_hash: Digest32,
}

impl ChainHead {
    /// The checkpoint after a prune removed every event up to `through`,
    /// whose stored hash is `hash`. Rows from before the chain existed (at
    /// or before the checkpoint, or without a hash) move nothing.
    pub fn checkpoint_after_prune(&self, through: i64, hash: Option<Digest32>) -> (i64, Digest32) {
        match hash {
            Some(h) if through > self.checkpoint_seq => (through, h),
            _ => (self.checkpoint_seq, self.checkpoint_hash),
        }
    }
}

/// One stored event as the verifier sees it.
#[derive(Debug, Clone, Copy)]
pub struct StoredLink<'a> {
    pub content: ChainedContent<'a>,
    pub prev_hash: Option<&'a [u8]>,
    pub hash: Option<&'a [u8]>,
    pub mac: Option<&'a [u8]>,
}

/// Computes links; holds the optional HMAC key.
#[derive(Clone, Default)]
pub struct ChainSealer {
    key: Option<Arc<zeroize::Zeroizing<Vec<u8>>>>,
}

impl std::fmt::Debug for ChainSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainSealer")
            .field("hmac", &self.key.is_some())
            .finish()
    }
}

impl ChainSealer {
    /// A sealer that authenticates hashes when `key` is given.
    pub fn new(key: Option<&[u8]>) -> Self {
        Self {
            key: key.map(|k| Arc::new(zeroize::Zeroizing::new(k.to_vec()))),
        }
    }

    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// The link for `content` following an event whose hash is `prev`.
    pub fn link(&self, prev: &Digest32, content: &ChainedContent<'_>) -> Link {
        let hash = chain_hash(prev, content);
        Link {
            prev_hash: *prev,
            mac: self.mac(&hash),
            hash,
        }
    }

    fn hmac(&self) -> Option<Hmac<Sha256>> {
        let key = self.key.as_ref()?;
        Hmac::<Sha256>::new_from_slice(key).ok()
    }

    fn mac(&self, hash: &Digest32) -> Option<Digest32> {
        let mut mac = self.hmac()?;
        mac.update(hash);
        Some(mac.finalize().into_bytes().into())
    }

    /// Whether `mac` authenticates `hash` (constant time); `None` without a key.
    fn mac_matches(&self, hash: &[u8], mac: &[u8]) -> Option<bool> {
        let mut m = self.hmac()?;
        m.update(hash);
        Some(m.verify_slice(mac).is_ok())
    }
}

/// SHA-256 over the previous hash and an unambiguous encoding of the
/// event: fixed-width integers and length-prefixed strings, with the
/// detail as JSON with sorted keys (PostgreSQL's JSONB reorders keys, so
/// the encoding must not depend on the order).
pub fn chain_hash(prev: &Digest32, c: &ChainedContent<'_>) -> Digest32 {
    let mut h = Sha256::new();
    h.update(DOMAIN_TAG);
    h.update(prev);
    h.update(c.seq.to_be_bytes());
    h.update(c.id.as_bytes());
    h.update(unix_millis(c.at).to_be_bytes());
    let mut text = |s: &str| {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    };
    text(c.kind);
    text(&c.user_id.map(|u| u.to_string()).unwrap_or_default());
    text(c.ip);
    text(c.user_agent);
    text(c.request_id);
    text(&canonical_json(c.detail));
    h.finalize().into()
}

/// Event times are kept to the millisecond, the precision both backends
/// store, so the hash survives a round trip through the database.
pub fn truncate_to_millis(at: OffsetDateTime) -> OffsetDateTime {
    let ms = unix_millis(at);
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(at)
}

fn unix_millis(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000_000)).unwrap_or(i64::MAX)
}

/// JSON text with object keys sorted at every level.
pub fn canonical_json(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&map[k], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// The detail of the event a prune appends.
pub fn pruned_detail(through_seq: i64, checkpoint: &Digest32, removed: u64) -> Value {
    serde_json::json!({
        "through_seq": through_seq,
        "checkpoint_hash": hex::encode(checkpoint),
        "events_removed": removed,
    })
}

/// Where and how the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("event {seq} was altered: its stored hash does not match its content")]
    Altered { seq: i64 },
    #[error("events {from} to {to} were removed")]
    Removed { from: i64, to: i64 },
    #[error(
        "event {seq} does not follow event {suspect}: event {suspect} was inserted, replaced or rewritten"
    )]
    Unlinked { seq: i64, suspect: i64 },
    #[error("event {seq} was inserted after the newest recorded event ({head})")]
    BeyondHead { seq: i64, head: i64 },
    #[error("event {seq} has no HMAC although events before it have one (forged or rewritten)")]
    MacMissing { seq: i64 },
    #[error("event {seq} has a wrong HMAC (forged or rewritten)")]
    MacInvalid { seq: i64 },
    #[error(
        "the checkpoint (event {checkpoint_seq}) does not match the last recorded prune: old events were removed outside of pruning"
    )]
    CheckpointMismatch { checkpoint_seq: i64 },
}

impl ChainBreak {
    /// The event the break points at.
    pub fn seq(&self) -> i64 {
        match *self {
            ChainBreak::Altered { seq }
            | ChainBreak::Unlinked { seq, .. }
            | ChainBreak::BeyondHead { seq, .. }
            | ChainBreak::MacMissing { seq }
            | ChainBreak::MacInvalid { seq } => seq,
            ChainBreak::Removed { from, .. } => from,
            ChainBreak::CheckpointMismatch { checkpoint_seq } => checkpoint_seq,
        }
    }
}

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Events checked (those after the checkpoint).
    pub events: u64,
    pub checkpoint_seq: i64,
    pub last_seq: i64,
    /// Events whose HMAC was checked; `None` when no key was given.
    pub authenticated: Option<u64>,
}

/// Walks stored events in sequence order and stops at the first break.
#[derive(Debug)]
pub struct ChainVerifier {
    sealer: ChainSealer,
    checkpoint_seq: i64,
    checkpoint_hash: Digest32,
    last_seq: i64,
    last_hash: Digest32,
    events: u64,
    authenticated: u64,
    last_had_mac: bool,
    latest_prune: Option<(i64, String)>,
}

impl ChainVerifier {
    /// Starts after the checkpoint of `head` (read before the first event).
    pub fn new(sealer: ChainSealer, head: &ChainHead) -> Self {
        Self {
            sealer,
            checkpoint_seq: head.checkpoint_seq,
            checkpoint_hash: head.checkpoint_hash,
            last_seq: head.checkpoint_seq,
            last_hash: head.checkpoint_hash,
            events: 0,
            authenticated: 0,
            last_had_mac: false,
            latest_prune: None,
        }
    }

    /// The sequence number of the last event checked.
    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    /// Checks the next stored event.
    pub fn check(&mut self, e: &StoredLink<'_>) -> Result<(), ChainBreak> {
        let seq = e.content.seq;
        // Rows at or before the checkpoint predate the chain.
        if seq <= self.checkpoint_seq {
            return Ok(());
        }
        if seq > self.last_seq + 1 {
            return Err(ChainBreak::Removed {
                from: self.last_seq + 1,
                to: seq - 1,
            });
        }
        let (Some(prev), Some(stored)) = (e.prev_hash, e.hash) else {
            return Err(ChainBreak::Altered { seq });
        };
        if prev != self.last_hash {
            return Err(ChainBreak::Unlinked {
                seq,
                suspect: self.last_seq,
            });
        }
        let hash = chain_hash(&self.last_hash, &e.content);
        if stored != hash {
            return Err(ChainBreak::Altered { seq });
        }
        if self.sealer.has_key() {
            match e.mac.map(|m| self.sealer.mac_matches(&hash, m)) {
                Some(Some(true)) => self.authenticated += 1,
                Some(_) => return Err(ChainBreak::MacInvalid { seq }),
                // Events from before the key was configured come first.
                None if self.authenticated > 0 => return Err(ChainBreak::MacMissing { seq }),
                None => {}
            }
            self.last_had_mac = e.mac.is_some();
        }
        if e.content.kind == PRUNED_KIND {
            let through = e.content.detail["through_seq"].as_i64().unwrap_or(-1);
            let hash = e.content.detail["checkpoint_hash"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            self.latest_prune = Some((through, hash));
        }
        self.last_seq = seq;
        self.last_hash = hash;
        self.events += 1;
        Ok(())
    }

    /// Compares the walk with the head row (read after the last event).
    pub fn finish(self, head: &ChainHead) -> Result<VerifyReport, ChainBreak> {
        if self.last_seq > head.last_seq {
            return Err(ChainBreak::BeyondHead {
                seq: head.last_seq + 1,
                head: head.last_seq,
            });
        }
        if self.last_seq < head.last_seq {
            return Err(ChainBreak::Removed {
                from: self.last_seq + 1,
                to: head.last_seq,
            });
        }
        if self.last_hash != head.last_hash {
            return Err(ChainBreak::Altered { seq: head.last_seq });
        }
        let checkpoint_recorded = match &self.latest_prune {
            Some((seq, hash)) => {
                *seq == self.checkpoint_seq && *hash == hex::encode(self.checkpoint_hash)
            }
            None => self.checkpoint_hash == GENESIS,
        };
        if !checkpoint_recorded {
            return Err(ChainBreak::CheckpointMismatch {
                checkpoint_seq: self.checkpoint_seq,
            });
        }
        // A rewrite that drops every HMAC would otherwise pass.
        if self.sealer.has_key() && self.events > 0 && !self.last_had_mac {
            return Err(ChainBreak::MacMissing { seq: self.last_seq });
        }
        Ok(VerifyReport {
            events: self.events,
            checkpoint_seq: self.checkpoint_seq,
            last_seq: self.last_seq,
            authenticated: self.sealer.has_key().then_some(self.authenticated),
        })
    }
}

#[cfg(test)]
mod tests;
