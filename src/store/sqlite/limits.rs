//! Attempt reservations on SQLite: the one writer connection runs each
//! reservation as an IMMEDIATE transaction, so it is atomic also against
//! other processes sharing the file.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{SqliteStore, from_ms, parse_uuid, to_ms};
use crate::domain::TokenHash;
use crate::domain::{Email, UserId};
use crate::store::limits::{AttemptCounter, CounterRow, LimitStore, Reserved, decide};
use crate::store::{Op, StoreError};

#[async_trait]
impl LimitStore for SqliteStore {
    async fn reserve_attempt(
        &self,
        counters: &[AttemptCounter],
        backoff_max: Duration,
        now: OffsetDateTime,
    ) -> Result<Reserved, StoreError> {
        let counters = counters.to_vec();
        self.write_op(Op::ReserveAttempt, move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                ?;
            let mut rows = Vec::with_capacity(counters.len());
            for c in &counters {
                let row: Option<(i64, i64, Option<i64>)> = tx
                    .prepare_cached(
                        "SELECT count, window_start, blocked_until FROM throttles WHERE key = ?1",
                    )
                    .and_then(|mut st| {
                        st.query_row([&c.key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                            .optional()
                    })
                    ?;
                rows.push(
                    row.map(|(count, start, until)| {
                        Ok::<_, rusqlite::Error>(CounterRow {
                            count: u64::try_from(count).unwrap_or(0),
                            window_start: from_ms(start)?,
                            blocked_until: until.map(from_ms).transpose()?,
                        })
                    })
                    .transpose()
                    ?,
                );
            }
            let (answer, writes) = decide(&counters, &rows, backoff_max, now);
            for (c, w) in counters.iter().zip(&writes) {
                tx.prepare_cached(
                    "INSERT INTO throttles (key, count, window_start, blocked_until) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (key) DO UPDATE SET count = ?2, window_start = ?3, blocked_until = ?4",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        c.key,
                        i64::try_from(w.count).unwrap_or(i64::MAX),
                        to_ms(w.window_start),
                        w.blocked_until.map(to_ms)
                    ])
                })
                ?;
            }
            tx.commit()?;
            Ok(answer)
        })
        .await
    }

    async fn reserve_mfa_attempt(
        &self,
        session: Uuid,
        max: u32,
    ) -> Result<Option<u32>, StoreError> {
        self.write_op(Op::ReserveMfaAttempt, move |conn| {
            conn.query_row(
                "UPDATE sessions SET mfa_failures = mfa_failures + 1
                 WHERE id = ?1 AND mfa_pending = 1 AND mfa_failures < ?2
                 RETURNING mfa_failures",
                params![session.to_string(), max],
                |r| r.get(0),
            )
            .optional()
            .map_err(StoreError::from)
        })
        .await
    }

    async fn enforce_session_cap(&self, user: UserId, max: usize) -> Result<Vec<Uuid>, StoreError> {
        self.write_op(Op::EnforceSessionCap, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let evicted = tx
                .prepare_cached(
                    "DELETE FROM sessions WHERE id IN (
                         SELECT id FROM sessions WHERE user_id = ?1 AND mfa_pending = 0
                         ORDER BY created_at DESC, id DESC LIMIT -1 OFFSET ?2)
                     RETURNING id",
                )
                .and_then(|mut st| {
                    st.query_map(
                        params![user.0.to_string(), i64::try_from(max).unwrap_or(i64::MAX)],
                        |r| parse_uuid(&r.get::<_, String>(0)?),
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })?;
            tx.commit()?;
            Ok(evicted)
        })
        .await
    }

    async fn reset_token_owner(
        &self,
        hash: &TokenHash,
        now: OffsetDateTime,
    ) -> Result<Option<Email>, StoreError> {
        let hash = *hash;
        self.read_op(Op::ResetTokenOwner, move |conn| {
            conn.query_row(
                "SELECT u.email FROM account_tokens t JOIN users u ON u.id = t.user_id
                 WHERE t.token_hash = ?1 AND t.purpose = 'password_reset'
                   AND t.used_at IS NULL AND t.expires_at > ?2",
                params![hash.0.as_slice(), to_ms(now)],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map(|e| e.map(Email::from_trusted))
            .map_err(StoreError::from)
        })
        .await
    }

    async fn purge_unowned_throttles(
        &self,
        prefixes: &[String],
        idle_since: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let prefixes = prefixes.to_vec();
        self.write_op(Op::PurgeUnownedThrottles, move |conn| {
            let mut purged = 0;
            for prefix in prefixes {
                // `<prefix><email>` or `<prefix><email>:<address>`; an
                // email never holds a colon.
                purged += conn
                    .prepare_cached(
                        "DELETE FROM throttles
                         WHERE substr(key, 1, length(?1)) = ?1
                           AND window_start < ?2
                           AND (blocked_until IS NULL OR blocked_until < ?2)
                           AND NOT EXISTS (
                               SELECT 1 FROM users WHERE email_key = substr(
                                   substr(throttles.key, length(?1) + 1), 1,
                                   instr(substr(throttles.key, length(?1) + 1) || ':', ':') - 1))",
                    )
                    .and_then(|mut st| st.execute(params![prefix, to_ms(idle_since)]))?
                    as u64;
            }
            Ok(purged)
        })
        .await
    }
}
