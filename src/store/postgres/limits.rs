//! Attempt reservations on PostgreSQL: one transaction takes a
//! transaction-scoped advisory lock per key (in key order, so reservations
//! sharing keys cannot deadlock), reads the rows, decides and writes. Every
//! process on the database takes the same locks, so the limit holds across
//! nodes; a lock also covers a key whose row does not exist yet.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::PgStore;
use crate::domain::TokenHash;
use crate::domain::{Email, UserId};
use crate::store::limits::{
    AttemptCounter, CounterRow, LimitStore, Reserved, decide, sorted_unique,
};
use crate::store::{Op, StoreError};

#[async_trait]
impl LimitStore for PgStore {
    async fn reserve_attempt(
        &self,
        counters: &[AttemptCounter],
        backoff_max: Duration,
        now: OffsetDateTime,
    ) -> Result<Reserved, StoreError> {
        let (mut tx, _timer) = self.begin(Op::ReserveAttempt).await?;
        for key in sorted_unique(counters) {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        let mut rows = Vec::with_capacity(counters.len());
        for c in counters {
            let row = sqlx::query(
                "SELECT count, window_start, blocked_until FROM throttles WHERE key = $1",
            )
            .bind(&c.key)
            .fetch_optional(&mut *tx)
            .await?;
            rows.push(match row {
                Some(r) => Some(CounterRow {
                    count: u64::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0),
                    window_start: r.try_get(1)?,
                    blocked_until: r.try_get(2)?,
                }),
                None => None,
            });
        }
        let (answer, writes) = decide(counters, &rows, backoff_max, now);
        for (c, w) in counters.iter().zip(&writes) {
            sqlx::query(
                "INSERT INTO throttles (key, count, window_start, blocked_until) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (key) DO UPDATE SET count = $2, window_start = $3, blocked_until = $4",
            )
            .bind(&c.key)
            .bind(i64::try_from(w.count).unwrap_or(i64::MAX))
            .bind(w.window_start)
            .bind(w.blocked_until)
            .execute(&mut *tx)
            .await
            ?;
        }
        tx.commit().await?;
        Ok(answer)
    }

    async fn reserve_mfa_attempt(
        &self,
        session: Uuid,
        max: u32,
    ) -> Result<Option<u32>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::ReserveMfaAttempt).await?;
        let n: Option<i32> = sqlx::query_scalar(
            "UPDATE sessions SET mfa_failures = mfa_failures + 1
             WHERE id = $1 AND mfa_pending AND mfa_failures < $2
             RETURNING mfa_failures",
        )
        .bind(session)
        .bind(i32::try_from(max).unwrap_or(i32::MAX))
        .fetch_optional(&mut *conn)
        .await?;
        Ok(n.and_then(|n| u32::try_from(n).ok()))
    }

    async fn enforce_session_cap(&self, user: UserId, max: usize) -> Result<Vec<Uuid>, StoreError> {
        let (mut tx, _timer) = self.begin(Op::EnforceSessionCap).await?;
        // The same row lock as create_session: the cap is decided by one
        // transaction at a time per user.
        sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
            .bind(user.0)
            .execute(&mut *tx)
            .await?;
        let evicted = sqlx::query_scalar(
            "DELETE FROM sessions WHERE id IN (
                 SELECT id FROM sessions WHERE user_id = $1 AND NOT mfa_pending
                 ORDER BY created_at DESC, id DESC OFFSET $2)
             RETURNING id",
        )
        .bind(user.0)
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(evicted)
    }

    async fn reset_token_owner(
        &self,
        hash: &TokenHash,
        now: OffsetDateTime,
    ) -> Result<Option<Email>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::ResetTokenOwner).await?;
        let email: Option<String> = sqlx::query_scalar(
            "SELECT u.email FROM account_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = $1 AND t.purpose = 'password_reset'
               AND t.used_at IS NULL AND t.expires_at > $2",
        )
        .bind(hash.0.as_slice())
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(email.map(Email::from_trusted))
    }

    async fn purge_unowned_throttles(
        &self,
        prefixes: &[String],
        idle_since: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let (mut conn, _timer) = self.conn(Op::PurgeUnownedThrottles).await?;
        let mut purged = 0;
        for prefix in prefixes {
            // `<prefix><email>` or `<prefix><email>:<address>`; an email
            // never holds a colon.
            purged += sqlx::query(
                "DELETE FROM throttles
                 WHERE starts_with(key, $1)
                   AND window_start < $2
                   AND (blocked_until IS NULL OR blocked_until < $2)
                   AND NOT EXISTS (
                       SELECT 1 FROM users
                       WHERE email_key = split_part(substr(throttles.key, length($1) + 1), ':', 1))",
            )
            .bind(prefix)
            .bind(idle_since)
            .execute(&mut *conn)
            .await
            ?
            .rows_affected();
        }
        Ok(purged)
    }
}
