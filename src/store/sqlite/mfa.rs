//! Second factors: TOTP enrolment and replay guard, backup codes, failure counts.

use super::*;

fn insert_codes(tx: &Connection, user: UserId, codes: &[BackupCodeHash]) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM backup_codes WHERE user_id = ?1",
        [user.0.to_string()],
    )?;
    let mut st = tx.prepare_cached(
        "INSERT INTO backup_codes (user_id, slot, code_hash) VALUES (?1, ?2, ?3)",
    )?;
    for c in codes {
        st.execute(params![user.0.to_string(), c.slot, c.code_hash])?;
    }
    Ok(())
}

fn step_to_sql(step: u64) -> i64 {
    i64::try_from(step).unwrap_or(i64::MAX)
}

#[async_trait]
impl MfaStore for SqliteStore {
    async fn put_pending_totp(
        &self,
        user: UserId,
        sealed: &[u8],
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let sealed = sealed.to_vec();
        self.write_op(Op::PutPendingTotp, move |conn| {
            let n = conn
                .execute(
                    "INSERT INTO totp_credentials (user_id, sealed_secret, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (user_id) DO UPDATE SET sealed_secret = excluded.sealed_secret,
                         created_at = excluded.created_at, last_used_step = NULL
                     WHERE totp_credentials.enabled_at IS NULL",
                    params![user.0.to_string(), sealed, to_ms(now)],
                )?;
            if n == 0 { Err(StoreError::Conflict) } else { Ok(()) }
        })
        .await
    }

    async fn get_totp(&self, user: UserId) -> Result<Option<TotpRecord>, StoreError> {
        self.read_op(Op::GetTotp, move |conn| {
            conn.query_row(
                "SELECT sealed_secret, enabled_at, last_used_step FROM totp_credentials WHERE user_id = ?1",
                [user.0.to_string()],
                |r| {
                    let enabled: Option<i64> = r.get(1)?;
                    let step: Option<i64> = r.get(2)?;
                    Ok(TotpRecord {
                        sealed_secret: r.get(0)?,
                        enabled: enabled.is_some(),
                        last_used_step: step.and_then(|s| u64::try_from(s).ok()),
                    })
                },
            )
            .optional()
            .map_err(StoreError::from)
        })
        .await
    }

    async fn activate_totp(
        &self,
        user: UserId,
        step: u64,
        codes: &[BackupCodeHash],
        session: Uuid,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let codes = codes.to_vec();
        self.write_op(Op::ActivateTotp, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE totp_credentials SET enabled_at = ?1, last_used_step = ?2
                     WHERE user_id = ?3 AND enabled_at IS NULL",
                params![to_ms(now), step_to_sql(step), user.0.to_string()],
            )?;
            if n == 0 {
                return Ok(false);
            }
            tx.execute(
                "UPDATE users SET mfa_enabled = 1 WHERE id = ?1",
                [user.0.to_string()],
            )?;
            insert_codes(&tx, user, &codes)?;
            tx.execute(
                "UPDATE sessions SET aal = 'aal2' WHERE id = ?1",
                [session.to_string()],
            )?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn reseal_totp(&self, user: UserId, sealed: &[u8]) -> Result<(), StoreError> {
        let sealed = sealed.to_vec();
        self.write_op(Op::ResealTotp, move |conn| {
            conn.execute(
                "UPDATE totp_credentials SET sealed_secret = ?1 WHERE user_id = ?2",
                params![sealed, user.0.to_string()],
            )?;
            Ok(())
        })
        .await
    }

    async fn claim_totp_step(&self, user: UserId, step: u64) -> Result<bool, StoreError> {
        self.write_op(Op::ClaimTotpStep, move |conn| {
            let n = conn.execute(
                "UPDATE totp_credentials SET last_used_step = ?1
                     WHERE user_id = ?2 AND enabled_at IS NOT NULL
                       AND (last_used_step IS NULL OR last_used_step < ?1)",
                params![step_to_sql(step), user.0.to_string()],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn remove_mfa(&self, user: UserId) -> Result<bool, StoreError> {
        self.write_op(Op::RemoveMfa, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let id = user.0.to_string();
            let n = tx.execute("DELETE FROM totp_credentials WHERE user_id = ?1", [&id])?;
            tx.execute("DELETE FROM backup_codes WHERE user_id = ?1", [&id])?;
            tx.execute("UPDATE users SET mfa_enabled = 0 WHERE id = ?1", [&id])?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    async fn replace_backup_codes(
        &self,
        user: UserId,
        codes: &[BackupCodeHash],
    ) -> Result<(), StoreError> {
        let codes = codes.to_vec();
        self.write_op(Op::ReplaceBackupCodes, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            insert_codes(&tx, user, &codes)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn unused_backup_code(
        &self,
        user: UserId,
        slot: u8,
    ) -> Result<Option<String>, StoreError> {
        self.read_op(Op::UnusedBackupCode, move |conn| {
            conn.query_row(
                "SELECT code_hash FROM backup_codes WHERE user_id = ?1 AND slot = ?2 AND used_at IS NULL",
                params![user.0.to_string(), slot],
                |r| r.get(0),
            )
            .optional()
            .map_err(StoreError::from)
        })
        .await
    }

    async fn claim_backup_code(
        &self,
        user: UserId,
        slot: u8,
        code_hash: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let code_hash = code_hash.to_string();
        self.write_op(Op::ClaimBackupCode, move |conn| {
            let n = conn.execute(
                "UPDATE backup_codes SET used_at = ?1
                     WHERE user_id = ?2 AND slot = ?3 AND code_hash = ?4 AND used_at IS NULL",
                params![to_ms(now), user.0.to_string(), slot, code_hash],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn backup_code_counts(&self, user: UserId) -> Result<(u32, u32), StoreError> {
        self.read_op(Op::BackupCodeCounts, move |conn| {
            conn.query_row(
                "SELECT COUNT(*) FILTER (WHERE used_at IS NULL), COUNT(*) FROM backup_codes WHERE user_id = ?1",
                [user.0.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(StoreError::from)
        })
        .await
    }

    async fn record_mfa_failure(&self, session: Uuid) -> Result<u32, StoreError> {
        self.write_op(Op::RecordMfaFailure, move |conn| {
            conn.query_row(
                "UPDATE sessions SET mfa_failures = mfa_failures + 1 WHERE id = ?1 RETURNING mfa_failures",
                [session.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map(|n| n.unwrap_or(u32::MAX))
            .map_err(StoreError::from)
        })
        .await
    }
}
