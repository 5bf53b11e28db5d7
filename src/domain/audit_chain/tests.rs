//! Unit tests of the chain rules.

use super::*;
use serde_json::json;

struct Row {
    seq: i64,
    id: Uuid,
    at: OffsetDateTime,
    kind: String,
    detail: Value,
    link: Link,
}

impl Row {
    fn content(&self) -> ChainedContent<'_> {
        ChainedContent {
            seq: self.seq,
            id: self.id,
            at: self.at,
            kind: &self.kind,
            user_id: None,
            ip: "192.0.2.1",
            user_agent: "test",
            request_id: "req",
            detail: &self.detail,
        }
    }

    fn stored(&self) -> StoredLink<'_> {
        StoredLink {
            content: self.content(),
            prev_hash: Some(&self.link.prev_hash),
            hash: Some(&self.link.hash),
            mac: self.link.mac.as_ref().map(|m| &m[..]),
        }
    }
}

fn chain(sealer: &ChainSealer, n: i64) -> (Vec<Row>, ChainHead) {
    let mut rows: Vec<Row> = Vec::new();
    let mut prev = GENESIS;
    for seq in 1..=n {
        let mut row = Row {
            seq,
            id: Uuid::new_v4(),
            at: truncate_to_millis(OffsetDateTime::now_utc()),
            kind: "login_succeeded".into(),
            detail: json!({"b": 1, "a": {"z": [1, "x"], "c": null}}),
            link: Link {
                prev_hash: GENESIS,
                hash: GENESIS,
                mac: None,
            },
        };
        row.link = sealer.link(&prev, &row.content());
        prev = row.link.hash;
        rows.push(row);
    }
    let head = ChainHead {
        last_seq: n,
        last_hash: prev,
        checkpoint_seq: 0,
        checkpoint_hash: GENESIS,
    };
    (rows, head)
}

fn verify(
    sealer: &ChainSealer,
    rows: &[Row],
    head: &ChainHead,
) -> Result<VerifyReport, ChainBreak> {
    let mut v = ChainVerifier::new(sealer.clone(), head);
    for r in rows {
        v.check(&r.stored())?;
    }
    v.finish(head)
}

// covers: ASVS-11.4.3 (SHA-256 chain)
#[test]
fn an_untouched_chain_verifies() {
    let sealer = ChainSealer::new(None);
    let (rows, head) = chain(&sealer, 5);
    let report = verify(&sealer, &rows, &head).unwrap();
    assert_eq!(report.events, 5);
    assert_eq!(report.authenticated, None);
}

#[test]
fn detail_key_order_does_not_change_the_hash() {
    let a = json!({"x": 1, "y": {"b": 2, "a": 1}});
    let b: Value = serde_json::from_str(r#"{"y": {"a": 1, "b": 2}, "x": 1}"#).unwrap();
    assert_eq!(canonical_json(&a), canonical_json(&b));
    assert_eq!(canonical_json(&a), r#"{"x":1,"y":{"a":1,"b":2}}"#);
}

#[test]
fn each_field_is_protected() {
    let sealer = ChainSealer::new(None);
    let (rows, _) = chain(&sealer, 1);
    let base = rows[0].content();
    let original = chain_hash(&GENESIS, &base);
    let detail = json!({"b": 2});
    let variants = [
        ChainedContent { seq: 2, ..base },
        ChainedContent {
            id: Uuid::new_v4(),
            ..base
        },
        ChainedContent {
            at: base.at + time::Duration::milliseconds(1),
            ..base
        },
        ChainedContent {
            kind: "login_failed",
            ..base
        },
        ChainedContent {
            user_id: Some(Uuid::new_v4()),
            ..base
        },
        ChainedContent {
            ip: "192.0.2.2",
            ..base
        },
        ChainedContent {
            user_agent: "other",
            ..base
        },
        ChainedContent {
            request_id: "other",
            ..base
        },
        ChainedContent {
            detail: &detail,
            ..base
        },
    ];
    for v in variants {
        assert_ne!(chain_hash(&GENESIS, &v), original, "{v:?}");
    }
    assert_ne!(chain_hash(&[1; 32], &base), original);
}

#[test]
fn an_altered_event_is_reported() {
    let sealer = ChainSealer::new(None);
    let (mut rows, head) = chain(&sealer, 5);
    rows[2].kind = "login_failed".into();
    assert_eq!(
        verify(&sealer, &rows, &head),
        Err(ChainBreak::Altered { seq: 3 })
    );
}

#[test]
fn a_removed_event_is_reported() {
    let sealer = ChainSealer::new(None);
    let (mut rows, head) = chain(&sealer, 5);
    rows.remove(1);
    assert_eq!(
        verify(&sealer, &rows, &head),
        Err(ChainBreak::Removed { from: 2, to: 2 })
    );
    let (mut rows, head) = chain(&sealer, 5);
    rows.truncate(3);
    assert_eq!(
        verify(&sealer, &rows, &head),
        Err(ChainBreak::Removed { from: 4, to: 5 })
    );
}

#[test]
fn a_replaced_event_breaks_the_link_to_its_successor() {
    let sealer = ChainSealer::new(None);
    let (mut rows, head) = chain(&sealer, 5);
    // A forger who knows the algorithm recomputes event 3's hash.
    rows[2].kind = "logout".into();
    let prev = rows[1].link.hash;
    rows[2].link = sealer.link(&prev, &rows[2].content());
    assert_eq!(
        verify(&sealer, &rows, &head),
        Err(ChainBreak::Unlinked { seq: 4, suspect: 3 })
    );
}

#[test]
fn an_event_appended_behind_the_head_is_reported() {
    let sealer = ChainSealer::new(None);
    let (rows, head) = chain(&sealer, 4);
    let (more, _) = chain(&sealer, 5);
    let mut rows = rows;
    let mut forged = more.into_iter().nth(4).unwrap();
    forged.link = sealer.link(&head.last_hash, &forged.content());
    rows.push(forged);
    assert_eq!(
        verify(&sealer, &rows, &head),
        Err(ChainBreak::BeyondHead { seq: 5, head: 4 })
    );
}

#[test]
fn the_hmac_detects_a_rewrite_of_the_whole_chain() {
    let keyed = ChainSealer::new(Some(&[7; 32]));
    let (rows, head) = chain(&keyed, 3);
    assert_eq!(verify(&keyed, &rows, &head).unwrap().authenticated, Some(3));
    // Recomputed without the key: hashes are right, HMACs are gone.
    let (forged, forged_head) = chain(&ChainSealer::new(None), 3);
    assert_eq!(
        verify(&keyed, &forged, &forged_head),
        Err(ChainBreak::MacMissing { seq: 3 })
    );
    // Recomputed under another key.
    let (forged, forged_head) = chain(&ChainSealer::new(Some(&[8; 32])), 3);
    assert_eq!(
        verify(&keyed, &forged, &forged_head),
        Err(ChainBreak::MacInvalid { seq: 1 })
    );
    // Without the key the verifier checks the hashes only.
    assert_eq!(
        verify(&ChainSealer::new(None), &rows, &head)
            .unwrap()
            .authenticated,
        None
    );
}

#[test]
fn a_checkpoint_without_a_prune_record_is_reported() {
    let sealer = ChainSealer::new(None);
    let (rows, head) = chain(&sealer, 5);
    // Drop events 1-2 and pretend a prune happened.
    let moved = ChainHead {
        checkpoint_seq: 2,
        checkpoint_hash: rows[1].link.hash,
        ..head.clone()
    };
    assert_eq!(
        verify(&sealer, &rows[2..], &moved),
        Err(ChainBreak::CheckpointMismatch { checkpoint_seq: 2 })
    );
}

#[test]
fn events_from_before_the_key_may_lead_the_chain() {
    // Two events written before audit_key was set, then three with it.
    let keyed = ChainSealer::new(Some(&[7; 32]));
    let (mut rows, _) = chain(&ChainSealer::new(None), 2);
    let mut prev = rows[1].link.hash;
    let (later, _) = chain(&keyed, 3);
    for (i, mut row) in later.into_iter().enumerate() {
        row.seq = 3 + i as i64;
        row.link = keyed.link(&prev, &row.content());
        prev = row.link.hash;
        rows.push(row);
    }
    let head = ChainHead {
        last_seq: 5,
        last_hash: prev,
        checkpoint_seq: 0,
        checkpoint_hash: GENESIS,
    };
    assert_eq!(verify(&keyed, &rows, &head).unwrap().authenticated, Some(3));
    // But not after an authenticated one.
    rows[3].link.mac = None;
    assert_eq!(
        verify(&keyed, &rows, &head),
        Err(ChainBreak::MacMissing { seq: 4 })
    );
}

#[test]
fn a_prune_moves_the_checkpoint_only_past_chained_rows() {
    let head = ChainHead {
        last_seq: 9,
        last_hash: [9; 32],
        checkpoint_seq: 3,
        checkpoint_hash: GENESIS,
    };
    assert_eq!(head.checkpoint_after_prune(6, Some([6; 32])), (6, [6; 32]));
    // Rows at or before the checkpoint, or without a hash, predate the chain.
    assert_eq!(head.checkpoint_after_prune(2, Some([2; 32])), (3, GENESIS));
    assert_eq!(head.checkpoint_after_prune(6, None), (3, GENESIS));
}

#[test]
fn times_keep_millisecond_precision() {
    let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
    assert_eq!(
        truncate_to_millis(at).unix_timestamp_nanos(),
        1_700_000_000_123_000_000
    );
}
