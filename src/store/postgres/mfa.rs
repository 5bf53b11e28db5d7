//! Second factors: TOTP enrolment and replay guard, backup codes, failure counts.

use super::*;

async fn insert_codes(
    tx: &mut Transaction<'static, Postgres>,
    user: UserId,
    codes: &[BackupCodeHash],
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM backup_codes WHERE user_id = $1")
        .bind(user.0)
        .execute(&mut **tx)
        .await?;
    for c in codes {
        sqlx::query("INSERT INTO backup_codes (user_id, slot, code_hash) VALUES ($1, $2, $3)")
            .bind(user.0)
            .bind(i16::from(c.slot))
            .bind(&c.code_hash)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

fn step_to_sql(step: u64) -> i64 {
    i64::try_from(step).unwrap_or(i64::MAX)
}

#[async_trait]
impl MfaStore for PgStore {
    async fn put_pending_totp(
        &self,
        user: UserId,
        sealed: &[u8],
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (mut conn, _timer) = self.conn(Op::PutPendingTotp).await?;
        let done = sqlx::query(
            "INSERT INTO totp_credentials (user_id, sealed_secret, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (user_id) DO UPDATE SET sealed_secret = excluded.sealed_secret,
                 created_at = excluded.created_at, last_used_step = NULL
             WHERE totp_credentials.enabled_at IS NULL",
        )
        .bind(user.0)
        .bind(sealed)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() == 0 {
            Err(StoreError::Conflict)
        } else {
            Ok(())
        }
    }

    async fn get_totp(&self, user: UserId) -> Result<Option<TotpRecord>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::GetTotp).await?;
        let row: Option<(Vec<u8>, Option<OffsetDateTime>, Option<i64>)> = sqlx::query_as(
            "SELECT sealed_secret, enabled_at, last_used_step FROM totp_credentials WHERE user_id = $1",
        )
        .bind(user.0)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(row.map(|(sealed_secret, enabled, step)| TotpRecord {
            sealed_secret,
            enabled: enabled.is_some(),
            last_used_step: step.and_then(|s| u64::try_from(s).ok()),
        }))
    }

    async fn activate_totp(
        &self,
        user: UserId,
        step: u64,
        codes: &[BackupCodeHash],
        session: Uuid,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (mut tx, _timer) = self.begin(Op::ActivateTotp).await?;
        let done = sqlx::query(
            "UPDATE totp_credentials SET enabled_at = $1, last_used_step = $2
             WHERE user_id = $3 AND enabled_at IS NULL",
        )
        .bind(now)
        .bind(step_to_sql(step))
        .bind(user.0)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("UPDATE users SET mfa_enabled = TRUE WHERE id = $1")
            .bind(user.0)
            .execute(&mut *tx)
            .await?;
        insert_codes(&mut tx, user, codes).await?;
        sqlx::query("UPDATE sessions SET aal = 'aal2' WHERE id = $1")
            .bind(session)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn reseal_totp(&self, user: UserId, sealed: &[u8]) -> Result<(), StoreError> {
        let (mut conn, _timer) = self.conn(Op::ResealTotp).await?;
        sqlx::query("UPDATE totp_credentials SET sealed_secret = $1 WHERE user_id = $2")
            .bind(sealed)
            .bind(user.0)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn claim_totp_step(&self, user: UserId, step: u64) -> Result<bool, StoreError> {
        let (mut conn, _timer) = self.conn(Op::ClaimTotpStep).await?;
        let done = sqlx::query(
            "UPDATE totp_credentials SET last_used_step = $1
             WHERE user_id = $2 AND enabled_at IS NOT NULL
               AND (last_used_step IS NULL OR last_used_step < $1)",
        )
        .bind(step_to_sql(step))
        .bind(user.0)
        .execute(&mut *conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn remove_mfa(&self, user: UserId) -> Result<bool, StoreError> {
        let (mut tx, _timer) = self.begin(Op::RemoveMfa).await?;
        let done = sqlx::query("DELETE FROM totp_credentials WHERE user_id = $1")
            .bind(user.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM backup_codes WHERE user_id = $1")
            .bind(user.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE users SET mfa_enabled = FALSE WHERE id = $1")
            .bind(user.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn replace_backup_codes(
        &self,
        user: UserId,
        codes: &[BackupCodeHash],
    ) -> Result<(), StoreError> {
        let (mut tx, _timer) = self.begin(Op::ReplaceBackupCodes).await?;
        insert_codes(&mut tx, user, codes).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn unused_backup_code(
        &self,
        user: UserId,
        slot: u8,
    ) -> Result<Option<String>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::UnusedBackupCode).await?;
        sqlx::query_scalar("SELECT code_hash FROM backup_codes WHERE user_id = $1 AND slot = $2 AND used_at IS NULL")
            .bind(user.0)
            .bind(i16::from(slot))
            .fetch_optional(&mut *conn)
            .await
            .map_err(StoreError::from)
    }

    async fn claim_backup_code(
        &self,
        user: UserId,
        slot: u8,
        code_hash: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (mut conn, _timer) = self.conn(Op::ClaimBackupCode).await?;
        let done = sqlx::query(
            "UPDATE backup_codes SET used_at = $1
             WHERE user_id = $2 AND slot = $3 AND code_hash = $4 AND used_at IS NULL",
        )
        .bind(now)
        .bind(user.0)
        .bind(i16::from(slot))
        .bind(code_hash)
        .execute(&mut *conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn backup_code_counts(&self, user: UserId) -> Result<(u32, u32), StoreError> {
        let (mut conn, _timer) = self.conn(Op::BackupCodeCounts).await?;
        let (remaining, total): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE used_at IS NULL), COUNT(*) FROM backup_codes WHERE user_id = $1",
        )
        .bind(user.0)
        .fetch_one(&mut *conn)
        .await?;
        Ok((
            u32::try_from(remaining).unwrap_or(0),
            u32::try_from(total).unwrap_or(0),
        ))
    }

    async fn record_mfa_failure(&self, session: Uuid) -> Result<u32, StoreError> {
        let (mut conn, _timer) = self.conn(Op::RecordMfaFailure).await?;
        let n: Option<i32> =
            sqlx::query_scalar("UPDATE sessions SET mfa_failures = mfa_failures + 1 WHERE id = $1 RETURNING mfa_failures")
                .bind(session)
                .fetch_optional(&mut *conn)
                .await?;
        Ok(n.and_then(|n| u32::try_from(n).ok()).unwrap_or(u32::MAX))
    }
}
