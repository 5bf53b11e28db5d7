//! Shared rate-limit and back-off counters.

use super::*;

#[async_trait]
impl ThrottleStore for PgStore {
    async fn throttle_hit(
        &self,
        key: &str,
        now: OffsetDateTime,
        window: std::time::Duration,
    ) -> Result<(u64, OffsetDateTime), StoreError> {
        let (mut conn, _timer) = self.conn(Op::ThrottleHit).await?;
        let (count, start): (i64, OffsetDateTime) = sqlx::query_as(
            "INSERT INTO throttles (key, count, window_start) VALUES ($1, 1, $2)
             ON CONFLICT (key) DO UPDATE SET
                 count = CASE WHEN throttles.window_start <= $3 THEN 1 ELSE throttles.count + 1 END,
                 window_start = CASE WHEN throttles.window_start <= $3 THEN $2 ELSE throttles.window_start END
             RETURNING count, window_start",
        )
        .bind(key)
        .bind(now)
        .bind(now - window)
        .fetch_one(&mut *conn)
        .await?;
        Ok((u64::try_from(count).unwrap_or(0), start))
    }

    async fn throttle_block(
        &self,
        key: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (mut conn, _timer) = self.conn(Op::ThrottleBlock).await?;
        sqlx::query(
            "INSERT INTO throttles (key, count, window_start, blocked_until) VALUES ($1, 0, $2, $3)
             ON CONFLICT (key) DO UPDATE SET blocked_until = GREATEST(throttles.blocked_until, $3)",
        )
        .bind(key)
        .bind(now)
        .bind(until)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn throttle_blocked_until(
        &self,
        keys: &[String],
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::ThrottleBlockedUntil).await?;
        sqlx::query_scalar(
            "SELECT max(blocked_until) FROM throttles WHERE key = ANY($1) AND blocked_until > $2",
        )
        .bind(keys)
        .bind(now)
        .fetch_one(&mut *conn)
        .await
        .map_err(StoreError::from)
    }

    async fn throttle_count(&self, key: &str) -> Result<u64, StoreError> {
        let (mut conn, _timer) = self.conn(Op::ThrottleCount).await?;
        let n: Option<i64> = sqlx::query_scalar("SELECT count FROM throttles WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
        Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }

    async fn throttle_clear(&self, keys: &[String]) -> Result<(), StoreError> {
        let (mut conn, _timer) = self.conn(Op::ThrottleClear).await?;
        sqlx::query("DELETE FROM throttles WHERE key = ANY($1)")
            .bind(keys)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn purge_throttles(
        &self,
        prefix: &str,
        started_before: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let (mut conn, _timer) = self.conn(Op::PurgeThrottles).await?;
        let done = sqlx::query(
            "DELETE FROM throttles
             WHERE left(key, length($1)) = $1 AND window_start < $2
               AND (blocked_until IS NULL OR blocked_until <= $3)",
        )
        .bind(prefix)
        .bind(started_before)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        Ok(done.rows_affected())
    }
}
