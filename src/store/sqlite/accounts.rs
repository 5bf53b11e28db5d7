//! The account lifecycle: mailed single-use tokens, password reset and change.

use super::*;

fn claim_token_in(
    conn: &Connection,
    hash: &TokenHash,
    purpose: TokenPurpose,
    now: OffsetDateTime,
) -> Result<Option<UserId>, StoreError> {
    let owner: Option<String> = conn
        .query_row(
            "UPDATE account_tokens SET used_at = ?1
             WHERE token_hash = ?2 AND purpose = ?3 AND used_at IS NULL AND expires_at > ?1
             RETURNING user_id",
            params![to_ms(now), hash.0.as_slice(), purpose.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    owner
        .map(|o| parse_uuid(&o).map(UserId).map_err(StoreError::from))
        .transpose()
}

/// A new password: stores its hash and ends every session but `keep` and
/// every unused reset token (the rule both reset and change follow).
fn replace_password_in(
    tx: &rusqlite::Transaction<'_>,
    user: UserId,
    phc: &str,
    now: OffsetDateTime,
    keep: Option<Uuid>,
) -> Result<(), StoreError> {
    let id = user.0.to_string();
    tx.execute(
        "UPDATE users SET password_hash = ?1, password_changed_at = ?2 WHERE id = ?3",
        params![phc, to_ms(now), id],
    )?;
    tx.execute(
        "DELETE FROM sessions WHERE user_id = ?1 AND id IS NOT ?2",
        params![id, keep.map(|k| k.to_string())],
    )?;
    tx.execute(
        "DELETE FROM account_tokens WHERE user_id = ?1 AND purpose = 'password_reset' AND used_at IS NULL",
        [&id],
    )?;
    Ok(())
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn issue_token(
        &self,
        hash: &TokenHash,
        user: UserId,
        purpose: TokenPurpose,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let hash = *hash;
        self.write_op(Op::IssueToken, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "DELETE FROM account_tokens WHERE user_id = ?1 AND purpose = ?2 AND used_at IS NULL",
                params![user.0.to_string(), purpose.as_str()],
            )?;
            tx.execute(
                "INSERT INTO account_tokens (token_hash, user_id, purpose, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![hash.0.as_slice(), user.0.to_string(), purpose.as_str(), to_ms(now), to_ms(expires_at)],
            )?;
            tx.commit().map_err(StoreError::from)
        })
        .await
    }

    async fn claim_token(
        &self,
        hash: &TokenHash,
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Result<Option<UserId>, StoreError> {
        let hash = *hash;
        self.write_op(Op::ClaimToken, move |conn| {
            claim_token_in(conn, &hash, purpose, now)
        })
        .await
    }

    async fn reset_password(
        &self,
        hash: &TokenHash,
        phc: &str,
        now: OffsetDateTime,
    ) -> Result<Option<UserId>, StoreError> {
        let (hash, phc) = (*hash, phc.to_string());
        self.write_op(Op::ResetPassword, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(user) = claim_token_in(&tx, &hash, TokenPurpose::PasswordReset, now)? else {
                return Ok(None);
            };
            replace_password_in(&tx, user, &phc, now, None)?;
            tx.commit()?;
            Ok(Some(user))
        })
        .await
    }

    async fn change_password(
        &self,
        user: UserId,
        phc: &str,
        keep: Uuid,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let phc = phc.to_string();
        self.write_op(Op::ChangePassword, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            replace_password_in(&tx, user, &phc, now, Some(keep))?;
            tx.commit().map_err(StoreError::from)
        })
        .await
    }

    async fn mark_email_verified(&self, user: UserId) -> Result<(), StoreError> {
        self.write_op(Op::MarkEmailVerified, move |conn| {
            conn.execute(
                "UPDATE users SET email_verified = 1 WHERE id = ?1",
                [user.0.to_string()],
            )?;
            Ok(())
        })
        .await
    }

    async fn purge_account_tokens(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.write_op(Op::PurgeAccountTokens, move |conn| {
            let n = conn.execute(
                "DELETE FROM account_tokens WHERE expires_at < ?1",
                [to_ms(now)],
            )?;
            Ok(n as u64)
        })
        .await
    }
}
