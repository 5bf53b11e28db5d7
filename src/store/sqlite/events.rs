//! The audit log: the hash-chained append, queries, and pruning.

use super::*;

const EVENT_COLUMNS: &str =
    "seq, id, at, kind, user_id, ip, user_agent, request_id, detail, prev_hash, hash, mac";

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<Event> {
    let user_id: Option<String> = r.get(4)?;
    let detail: String = r.get(8)?;
    Ok(Event {
        seq: r.get(0)?,
        id: parse_uuid(&r.get::<_, String>(1)?)?,
        at: from_ms(r.get(2)?)?,
        kind: r.get(3)?,
        user_id: user_id.as_deref().map(parse_uuid).transpose()?.map(UserId),
        ip: r.get(5)?,
        user_agent: r.get(6)?,
        request_id: r.get(7)?,
        detail: serde_json::from_str(&detail).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(8, rusqlite::types::Type::Text, Box::new(e))
        })?,
        prev_hash: r.get(9)?,
        hash: r.get(10)?,
        mac: r.get(11)?,
    })
}

fn read_head(conn: &Connection) -> Result<ChainHead, StoreError> {
    let (last_seq, last_hash, checkpoint_seq, checkpoint_hash): (i64, Vec<u8>, i64, Vec<u8>) = conn
        .query_row(
            "SELECT last_seq, last_hash, checkpoint_seq, checkpoint_hash FROM audit_chain WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
    Ok(ChainHead {
        last_seq,
        last_hash: stored_digest(last_hash)?,
        checkpoint_seq,
        checkpoint_hash: stored_digest(checkpoint_hash)?,
    })
}

/// Appends inside the caller's IMMEDIATE transaction (which holds SQLite's
/// write lock, so no other process can extend the chain meanwhile).
fn append_in(tx: &Connection, sealer: &ChainSealer, e: &NewEvent) -> Result<(), StoreError> {
    let head = read_head(tx)?;
    let seq = head.last_seq + 1;
    let link = sealer.link(&head.last_hash, &e.chained(seq));
    tx.prepare_cached(
        "INSERT INTO security_events
             (seq, id, at, kind, user_id, ip, user_agent, request_id, detail, prev_hash, hash, mac)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .and_then(|mut st| {
        st.execute(params![
            seq,
            e.id.to_string(),
            to_ms(e.at),
            e.kind,
            e.user_id.map(|u| u.0.to_string()),
            e.ip,
            e.user_agent,
            e.request_id,
            e.detail.to_string(),
            &link.prev_hash[..],
            &link.hash[..],
            link.mac.as_ref().map(|m| &m[..]),
        ])
    })?;
    tx.execute(
        "UPDATE audit_chain SET last_seq = ?1, last_hash = ?2 WHERE id = 1",
        params![seq, &link.hash[..]],
    )?;
    Ok(())
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append_event(&self, event: &NewEvent) -> Result<(), StoreError> {
        let e = event.clone();
        let sealer = self.sealer.clone();
        self.write_op(Op::AppendEvent, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            append_in(&tx, &sealer, &e)?;
            tx.commit().map_err(StoreError::from)
        })
        .await
    }

    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
        let f = filter.clone();
        self.read_op(Op::ListEvents, move |conn| {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM security_events
                 WHERE (?1 IS NULL OR user_id = ?1) AND (?2 IS NULL OR kind = ?2)
                   AND (?3 IS NULL OR at >= ?3) AND (?4 IS NULL OR at < ?4)
                   AND (?5 IS NULL OR seq < ?5)
                 ORDER BY seq DESC LIMIT ?6"
            );
            let mut st = conn.prepare_cached(&sql)?;
            let rows = st.query_map(
                params![
                    f.user.map(|u| u.0.to_string()),
                    f.kind,
                    f.since.map(to_ms),
                    f.until.map(to_ms),
                    f.before_seq,
                    f.limit
                ],
                event_from_row,
            )?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(StoreError::from)
        })
        .await
    }

    async fn chain_events(&self, after_seq: i64, limit: u32) -> Result<Vec<Event>, StoreError> {
        self.read_op(Op::ChainEvents, move |conn| {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM security_events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            );
            let mut st = conn.prepare_cached(&sql)?;
            let rows = st.query_map(params![after_seq, limit], event_from_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(StoreError::from)
        })
        .await
    }

    async fn chain_head(&self) -> Result<ChainHead, StoreError> {
        self.read_op(Op::ChainHead, read_head).await
    }

    async fn prune_events(
        &self,
        cutoff: OffsetDateTime,
        record: &NewEvent,
    ) -> Result<Option<PruneOutcome>, StoreError> {
        let mut record = record.clone();
        let sealer = self.sealer.clone();
        self.write_op(Op::PruneEvents, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let head = read_head(&tx)?;
            let last_old: Option<(i64, Option<Vec<u8>>)> = tx
                .query_row(
                    "SELECT seq, hash FROM security_events WHERE at < ?1 ORDER BY seq DESC LIMIT 1",
                    [to_ms(cutoff)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((through, hash)) = last_old else {
                return Ok(None);
            };
            let removed =
                tx.execute("DELETE FROM security_events WHERE seq <= ?1", [through])? as u64;
            let (checkpoint_seq, checkpoint_hash) =
                head.checkpoint_after_prune(through, hash.map(stored_digest).transpose()?);
            tx.execute(
                "UPDATE audit_chain SET checkpoint_seq = ?1, checkpoint_hash = ?2 WHERE id = 1",
                params![checkpoint_seq, &checkpoint_hash[..]],
            )?;
            record.detail = pruned_detail(checkpoint_seq, &checkpoint_hash, removed);
            append_in(&tx, &sealer, &record)?;
            tx.commit()?;
            Ok(Some(PruneOutcome {
                through_seq: checkpoint_seq,
                removed,
            }))
        })
        .await
    }
}
