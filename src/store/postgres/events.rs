//! The audit log: the hash-chained append, queries, and pruning.

use super::*;

/// The columns `event_from_row` reads (a macro so queries stay static text).
macro_rules! event_columns {
    () => {
        "seq, id, at, kind, user_id, ip, user_agent, request_id, detail, prev_hash, hash, mac"
    };
}

fn event_from_row(r: &PgRow) -> Result<Event, sqlx::Error> {
    let user_id: Option<Uuid> = r.try_get(4)?;
    Ok(Event {
        seq: r.try_get(0)?,
        id: r.try_get(1)?,
        at: r.try_get(2)?,
        kind: r.try_get(3)?,
        user_id: user_id.map(UserId),
        ip: r.try_get(5)?,
        user_agent: r.try_get(6)?,
        request_id: r.try_get(7)?,
        detail: r.try_get(8)?,
        prev_hash: r.try_get(9)?,
        hash: r.try_get(10)?,
        mac: r.try_get(11)?,
    })
}

fn events_from_rows(rows: &[PgRow]) -> Result<Vec<Event>, StoreError> {
    rows.iter()
        .map(event_from_row)
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

fn head_from_row(r: &PgRow) -> Result<ChainHead, StoreError> {
    Ok(ChainHead {
        last_seq: r.try_get(0)?,
        last_hash: stored_digest(r.try_get(1)?)?,
        checkpoint_seq: r.try_get(2)?,
        checkpoint_hash: stored_digest(r.try_get(3)?)?,
    })
}

/// Locks the chain head for the rest of the transaction: this row lock is
/// what serialises appends across connections and nodes.
async fn lock_head(tx: &mut Transaction<'static, Postgres>) -> Result<ChainHead, StoreError> {
    let row = sqlx::query(
        "SELECT last_seq, last_hash, checkpoint_seq, checkpoint_hash
         FROM audit_chain WHERE id = 1 FOR UPDATE",
    )
    .fetch_one(&mut **tx)
    .await?;
    head_from_row(&row)
}

/// Inserts `e` after `head` (whose row the caller has locked) and returns
/// the new head; the caller writes the head row back.
async fn insert_linked(
    tx: &mut Transaction<'static, Postgres>,
    sealer: &ChainSealer,
    head: ChainHead,
    e: &NewEvent,
) -> Result<ChainHead, StoreError> {
    let seq = head.last_seq + 1;
    let link = sealer.link(&head.last_hash, &e.chained(seq));
    sqlx::query(
        "INSERT INTO security_events
             (seq, id, at, kind, user_id, ip, user_agent, request_id, detail, prev_hash, hash, mac)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(seq)
    .bind(e.id)
    .bind(e.at)
    .bind(e.kind)
    .bind(e.user_id.map(|u| u.0))
    .bind(&e.ip)
    .bind(&e.user_agent)
    .bind(&e.request_id)
    .bind(&e.detail)
    .bind(&link.prev_hash[..])
    .bind(&link.hash[..])
    .bind(link.mac.as_ref().map(|m| &m[..]))
    .execute(&mut **tx)
    .await?;
    Ok(ChainHead {
        last_seq: seq,
        last_hash: link.hash,
        ..head
    })
}

/// Appends `events` in order in one transaction: lock the head, insert,
/// write the head back.
async fn append_all(
    pool: &PgPool,
    sealer: &ChainSealer,
    events: &[&NewEvent],
) -> Result<(), StoreError> {
    let (mut tx, _timer) = checkout(Op::AppendEvent, pool.begin()).await?;
    append_in(&mut tx, sealer, events).await?;
    tx.commit().await.map_err(StoreError::from)
}

/// Appends inside the caller's transaction.
async fn append_in(
    tx: &mut Transaction<'static, Postgres>,
    sealer: &ChainSealer,
    events: &[&NewEvent],
) -> Result<(), StoreError> {
    let mut head = lock_head(tx).await?;
    for e in events {
        head = insert_linked(tx, sealer, head, e).await?;
    }
    sqlx::query("UPDATE audit_chain SET last_seq = $1, last_hash = $2 WHERE id = 1")
        .bind(head.last_seq)
        .bind(&head.last_hash[..])
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The same failure for every waiter of a batch (`StoreError` is not
/// `Clone`: it may hold an `anyhow::Error`).
fn share(e: &StoreError) -> StoreError {
    match e {
        StoreError::Conflict => StoreError::Conflict,
        StoreError::Unavailable(why) => StoreError::Unavailable(why.clone()),
        StoreError::Unexpected(err) => StoreError::Unexpected(anyhow::anyhow!("{err:#}")),
    }
}

/// Group commit for security events. Request handlers queue their event
/// and wait for the outcome without holding a pool connection; this task
/// takes whatever has queued up (up to [`APPEND_BATCH`]) and appends it in
/// one transaction. Waiting on the chain's row lock thus costs one
/// connection per process instead of one per concurrent event, so a flood
/// of failed logins cannot take the connections session checks need. A
/// batch refused for its content is retried one event at a time, so one
/// bad event fails only its own request; an unreachable database fails
/// the whole batch at once.
pub(super) async fn run_appender(
    pool: PgPool,
    sealer: ChainSealer,
    mut queue: mpsc::Receiver<PendingEvent>,
) {
    let mut batch = Vec::with_capacity(APPEND_BATCH);
    while queue.recv_many(&mut batch, APPEND_BATCH).await > 0 {
        let events: Vec<&NewEvent> = batch.iter().map(|(e, _)| e).collect();
        match append_all(&pool, &sealer, &events).await {
            Ok(()) => {
                for (_, done) in batch.drain(..) {
                    let _ = done.send(Ok(()));
                }
            }
            // One event, or the database is away: everyone gets the answer.
            Err(e) if batch.len() == 1 || matches!(e, StoreError::Unavailable(_)) => {
                for (_, done) in batch.drain(..) {
                    let _ = done.send(Err(share(&e)));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, events = batch.len(), "audit batch failed; appending one by one");
                for (event, done) in batch.drain(..) {
                    let _ = done.send(
                        append_all(&pool, &sealer, &[&event])
                            .await
                            .map_err(|e| share(&e)),
                    );
                }
            }
        }
    }
}

#[async_trait]
impl EventStore for PgStore {
    async fn append_event(&self, e: &NewEvent) -> Result<(), StoreError> {
        let stopped = || StoreError::Unexpected(anyhow::anyhow!("the audit appender stopped"));
        let (done, outcome) = oneshot::channel();
        self.appender
            .send((e.clone(), done))
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    async fn list_events(&self, f: &EventFilter) -> Result<Vec<Event>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::ListEvents).await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM security_events
             WHERE ($1::uuid IS NULL OR user_id = $1) AND ($2::text IS NULL OR kind = $2)
               AND ($3::timestamptz IS NULL OR at >= $3) AND ($4::timestamptz IS NULL OR at < $4)
               AND ($5::bigint IS NULL OR seq < $5)
             ORDER BY seq DESC LIMIT $6"
        ))
        .bind(f.user.map(|u| u.0))
        .bind(f.kind.as_deref())
        .bind(f.since)
        .bind(f.until)
        .bind(f.before_seq)
        .bind(i64::from(f.limit))
        .fetch_all(&mut *conn)
        .await?;
        events_from_rows(&rows)
    }

    async fn chain_events(&self, after_seq: i64, limit: u32) -> Result<Vec<Event>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::ChainEvents).await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM security_events WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
        events_from_rows(&rows)
    }

    async fn chain_head(&self) -> Result<ChainHead, StoreError> {
        let (mut conn, _timer) = self.conn(Op::ChainHead).await?;
        let row = sqlx::query(
            "SELECT last_seq, last_hash, checkpoint_seq, checkpoint_hash FROM audit_chain WHERE id = 1",
        )
        .fetch_one(&mut *conn)
        .await?;
        head_from_row(&row)
    }

    async fn prune_events(
        &self,
        cutoff: OffsetDateTime,
        record: &NewEvent,
    ) -> Result<Option<PruneOutcome>, StoreError> {
        let (mut tx, _timer) = self.begin(Op::PruneEvents).await?;
        let head = lock_head(&mut tx).await?;
        let last_old: Option<(i64, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT seq, hash FROM security_events WHERE at < $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(cutoff)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((through, hash)) = last_old else {
            return Ok(None);
        };
        let removed = sqlx::query("DELETE FROM security_events WHERE seq <= $1")
            .bind(through)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let (checkpoint_seq, checkpoint_hash) =
            head.checkpoint_after_prune(through, hash.map(stored_digest).transpose()?);
        sqlx::query(
            "UPDATE audit_chain SET checkpoint_seq = $1, checkpoint_hash = $2 WHERE id = 1",
        )
        .bind(checkpoint_seq)
        .bind(&checkpoint_hash[..])
        .execute(&mut *tx)
        .await?;
        let mut record = record.clone();
        record.detail = pruned_detail(checkpoint_seq, &checkpoint_hash, removed);
        append_in(&mut tx, &self.sealer, &[&record]).await?;
        tx.commit().await?;
        Ok(Some(PruneOutcome {
            through_seq: checkpoint_seq,
            removed,
        }))
    }
}
