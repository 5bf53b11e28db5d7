//! Operations on the stored chain: verify it, export it, prune old events.
//! The hashing rules live in [`crate::domain::audit_chain`]; this module
//! only reads and writes through the store.

use std::io::Write;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{EventKind, RequestMeta};
use crate::domain::audit_chain::{
    ChainBreak, ChainSealer, ChainVerifier, VerifyReport, truncate_to_millis,
};
use crate::store::{Event, NewEvent, PruneOutcome, Store, StoreError};

/// Events read per query while walking the chain.
const BATCH: u32 = 1000;

/// Walks the whole chain from the checkpoint; the outer error is a
/// storage failure, the inner one the first break found.
pub async fn verify(
    store: &dyn Store,
    sealer: ChainSealer,
) -> Result<Result<VerifyReport, ChainBreak>, StoreError> {
    let start = store.chain_head().await?;
    let mut verifier = ChainVerifier::new(sealer, &start);
    let mut after = start.checkpoint_seq;
    // At the end of the rows, the head row is read again: a running service
    // may have appended meanwhile, and those events are checked too. Only a
    // head that stays ahead of the rows twice in a row means rows are gone.
    let mut missing_at: Option<i64> = None;
    loop {
        let batch = store.chain_events(after, BATCH).await?;
        if let Some(last) = batch.last() {
            after = last.seq;
            for event in &batch {
                if let Err(broken) = verifier.check(&event.as_link()) {
                    return Ok(Err(broken));
                }
            }
            continue;
        }
        let head = store.chain_head().await?;
        if head.last_seq <= verifier.last_seq() || missing_at == Some(head.last_seq) {
            return Ok(verifier.finish(&head));
        }
        missing_at = Some(head.last_seq);
    }
}

/// One exported event: everything stored, hashes in hex, so the receiver
/// can verify the chain without castellan.
#[derive(Serialize)]
struct ExportLine<'a> {
    seq: i64,
    id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
    kind: &'a str,
    user_id: Option<Uuid>,
    ip: &'a str,
    user_agent: &'a str,
    request_id: &'a str,
    detail: &'a serde_json::Value,
    prev_hash: Option<String>,
    hash: Option<String>,
    mac: Option<String>,
}

impl<'a> From<&'a Event> for ExportLine<'a> {
    fn from(e: &'a Event) -> Self {
        Self {
            seq: e.seq,
            id: e.id,
            at: e.at,
            kind: &e.kind,
            user_id: e.user_id.map(|u| u.0),
            ip: &e.ip,
            user_agent: &e.user_agent,
            request_id: &e.request_id,
            detail: &e.detail,
            prev_hash: e.prev_hash.as_ref().map(hex::encode),
            hash: e.hash.as_ref().map(hex::encode),
            mac: e.mac.as_ref().map(hex::encode),
        }
    }
}

/// Writes every event with `seq > after_seq` as one JSON object per line,
/// in chain order; returns how many.
pub async fn export(store: &dyn Store, after_seq: i64, out: &mut dyn Write) -> anyhow::Result<u64> {
    let mut after = after_seq;
    let mut written = 0u64;
    loop {
        let batch = store.chain_events(after, BATCH).await?;
        let Some(last) = batch.last() else {
            out.flush()?;
            return Ok(written);
        };
        after = last.seq;
        for event in &batch {
            serde_json::to_writer(&mut *out, &ExportLine::from(event))?;
            out.write_all(b"\n")?;
            written += 1;
        }
    }
}

/// Deletes events older than `retention`, leaving a checkpoint and an
/// `audit_pruned` event so the rest still verifies.
pub async fn prune(
    store: &dyn Store,
    now: OffsetDateTime,
    retention: Duration,
    meta: &RequestMeta,
) -> Result<Option<PruneOutcome>, StoreError> {
    let record = NewEvent {
        id: Uuid::new_v4(),
        at: truncate_to_millis(now),
        kind: EventKind::AuditPruned.as_str(),
        user_id: None,
        ip: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
        request_id: meta.request_id.clone(),
        detail: serde_json::Value::Null,
    };
    let outcome = store.prune_events(now - retention, &record).await?;
    if let Some(o) = &outcome {
        tracing::info!(
            event = EventKind::AuditPruned.as_str(),
            through_seq = o.through_seq,
            removed = o.removed,
            "security event"
        );
        metrics::counter!(crate::metrics::SECURITY_EVENTS, "kind" => EventKind::AuditPruned.as_str())
            .increment(1);
    }
    Ok(outcome)
}
