//! The account lifecycle: mailed single-use tokens, password reset and change.

use super::*;

async fn claim_token_in(
    tx: &mut Transaction<'static, Postgres>,
    hash: &TokenHash,
    purpose: TokenPurpose,
    now: OffsetDateTime,
) -> Result<Option<UserId>, StoreError> {
    let owner: Option<Uuid> = sqlx::query_scalar(
        "UPDATE account_tokens SET used_at = $1
         WHERE token_hash = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1
         RETURNING user_id",
    )
    .bind(now)
    .bind(hash.0.as_slice())
    .bind(purpose.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    Ok(owner.map(UserId))
}

/// A new password: stores its hash and ends every session but `keep` and
/// every unused reset token (the rule both reset and change follow).
async fn replace_password_in(
    tx: &mut Transaction<'static, Postgres>,
    user: UserId,
    phc: &str,
    now: OffsetDateTime,
    keep: Option<Uuid>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET password_hash = $1, password_changed_at = $2 WHERE id = $3")
        .bind(phc)
        .bind(now)
        .bind(user.0)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id IS DISTINCT FROM $2")
        .bind(user.0)
        .bind(keep)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "DELETE FROM account_tokens WHERE user_id = $1 AND purpose = 'password_reset' AND used_at IS NULL",
    )
    .bind(user.0)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[async_trait]
impl AccountStore for PgStore {
    async fn issue_token(
        &self,
        hash: &TokenHash,
        user: UserId,
        purpose: TokenPurpose,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (mut tx, _timer) = self.begin(Op::IssueToken).await?;
        sqlx::query(
            "DELETE FROM account_tokens WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL",
        )
        .bind(user.0)
        .bind(purpose.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO account_tokens (token_hash, user_id, purpose, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash.0.as_slice())
        .bind(user.0)
        .bind(purpose.as_str())
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await.map_err(StoreError::from)
    }

    async fn claim_token(
        &self,
        hash: &TokenHash,
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Result<Option<UserId>, StoreError> {
        let (mut tx, _timer) = self.begin(Op::ClaimToken).await?;
        let owner = claim_token_in(&mut tx, hash, purpose, now).await?;
        tx.commit().await?;
        Ok(owner)
    }

    async fn reset_password(
        &self,
        hash: &TokenHash,
        phc: &str,
        now: OffsetDateTime,
    ) -> Result<Option<UserId>, StoreError> {
        let (mut tx, _timer) = self.begin(Op::ResetPassword).await?;
        let Some(user) = claim_token_in(&mut tx, hash, TokenPurpose::PasswordReset, now).await?
        else {
            return Ok(None);
        };
        replace_password_in(&mut tx, user, phc, now, None).await?;
        tx.commit().await?;
        Ok(Some(user))
    }

    async fn change_password(
        &self,
        user: UserId,
        phc: &str,
        keep: Uuid,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (mut tx, _timer) = self.begin(Op::ChangePassword).await?;
        replace_password_in(&mut tx, user, phc, now, Some(keep)).await?;
        tx.commit().await.map_err(StoreError::from)
    }

    async fn mark_email_verified(&self, user: UserId) -> Result<(), StoreError> {
        let (mut conn, _timer) = self.conn(Op::MarkEmailVerified).await?;
        sqlx::query("UPDATE users SET email_verified = TRUE WHERE id = $1")
            .bind(user.0)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn purge_account_tokens(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let (mut conn, _timer) = self.conn(Op::PurgeAccountTokens).await?;
        let done = sqlx::query("DELETE FROM account_tokens WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *conn)
            .await?;
        Ok(done.rows_affected())
    }
}
