//! Shared rate-limit and back-off counters.

use super::*;

fn json_keys(keys: &[String]) -> String {
    serde_json::to_string(keys).unwrap_or_else(|_| "[]".into())
}

#[async_trait]
impl ThrottleStore for SqliteStore {
    async fn throttle_hit(
        &self,
        key: &str,
        now: OffsetDateTime,
        window: Duration,
    ) -> Result<(u64, OffsetDateTime), StoreError> {
        let key = key.to_string();
        self.write_op(Op::ThrottleHit, move |conn| {
            let (count, start): (i64, i64) = conn
                .prepare_cached(
                    "INSERT INTO throttles (key, count, window_start) VALUES (?1, 1, ?2)
                     ON CONFLICT (key) DO UPDATE SET
                         count = CASE WHEN throttles.window_start <= ?3 THEN 1 ELSE throttles.count + 1 END,
                         window_start = CASE WHEN throttles.window_start <= ?3 THEN ?2 ELSE throttles.window_start END
                     RETURNING count, window_start",
                )
                .and_then(|mut st| st.query_row(params![key, to_ms(now), to_ms(now - window)], |r| Ok((r.get(0)?, r.get(1)?))))?;
            Ok((u64::try_from(count).unwrap_or(0), from_ms(start)?))
        })
        .await
    }

    async fn throttle_block(
        &self,
        key: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let key = key.to_string();
        self.write_op(Op::ThrottleBlock, move |conn| {
            conn.execute(
                "INSERT INTO throttles (key, count, window_start, blocked_until) VALUES (?1, 0, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET blocked_until = max(coalesce(throttles.blocked_until, 0), ?3)",
                params![key, to_ms(now), to_ms(until)],
            )?;
            Ok(())
        })
        .await
    }

    async fn throttle_blocked_until(
        &self,
        keys: &[String],
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        let keys = json_keys(keys);
        self.read_op(Op::ThrottleBlockedUntil, move |conn| {
            let until: Option<i64> = conn
                .prepare_cached(
                    "SELECT max(blocked_until) FROM throttles
                     WHERE key IN (SELECT value FROM json_each(?1)) AND blocked_until > ?2",
                )
                .and_then(|mut st| st.query_row(params![keys, to_ms(now)], |r| r.get(0)))?;
            until.map(from_ms).transpose().map_err(StoreError::from)
        })
        .await
    }

    async fn throttle_count(&self, key: &str) -> Result<u64, StoreError> {
        let key = key.to_string();
        self.read_op(Op::ThrottleCount, move |conn| {
            let n: Option<i64> = conn
                .query_row("SELECT count FROM throttles WHERE key = ?1", [key], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
        })
        .await
    }

    async fn throttle_clear(&self, keys: &[String]) -> Result<(), StoreError> {
        let keys = json_keys(keys);
        self.write_op(Op::ThrottleClear, move |conn| {
            conn.execute(
                "DELETE FROM throttles WHERE key IN (SELECT value FROM json_each(?1))",
                [keys],
            )?;
            Ok(())
        })
        .await
    }

    async fn purge_throttles(
        &self,
        prefix: &str,
        started_before: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let prefix = prefix.to_string();
        self.write_op(Op::PurgeThrottles, move |conn| {
            let n = conn.execute(
                "DELETE FROM throttles
                     WHERE substr(key, 1, length(?1)) = ?1 AND window_start < ?2
                       AND (blocked_until IS NULL OR blocked_until <= ?3)",
                params![prefix, to_ms(started_before), to_ms(now)],
            )?;
            Ok(n as u64)
        })
        .await
    }
}
