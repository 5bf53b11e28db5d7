//! Accounts: creation, credentials lookup, lock state, last login.

use super::*;

#[async_trait]
impl UserStore for PgStore {
    async fn create_user(&self, new: &NewUser) -> Result<User, StoreError> {
        let (mut conn, _timer) = self.conn(Op::CreateUser).await?;
        sqlx::query(
            "INSERT INTO users (id, email, email_key, password_hash, created_at, password_changed_at)
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(new.id.0)
        .bind(new.email.as_str())
        .bind(new.email.key())
        .bind(&new.password_hash)
        .bind(new.now)
        .execute(&mut *conn)
        .await?;
        Ok(User {
            id: new.id,
            email: new.email.clone(),
            email_verified: false,
            mfa_enabled: false,
            created_at: new.now,
            locked: false,
            last_login_at: None,
        })
    }

    async fn find_credentials(&self, email_key: &str) -> Result<Option<Credentials>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::FindCredentials).await?;
        let row = sqlx::query(
            "SELECT u.id, u.email, u.email_verified, u.mfa_enabled, u.created_at, u.locked_at,
                    u.last_login_at, u.password_hash
             FROM users u WHERE u.email_key = $1",
        )
        .bind(email_key)
        .fetch_optional(&mut *conn)
        .await?;
        row.map(|r| {
            Ok::<_, sqlx::Error>(Credentials {
                user: user_from_row(&r, 0)?,
                password_hash: r.try_get(7)?,
            })
        })
        .transpose()
        .map_err(StoreError::from)
    }

    async fn find_user(&self, email_key: &str) -> Result<Option<User>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::FindUser).await?;
        let row = sqlx::query(
            "SELECT u.id, u.email, u.email_verified, u.mfa_enabled, u.created_at, u.locked_at,
                    u.last_login_at
             FROM users u WHERE u.email_key = $1",
        )
        .bind(email_key)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(row.map(|r| user_from_row(&r, 0)).transpose()?)
    }

    async fn get_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::GetUser).await?;
        let row = sqlx::query(
            "SELECT u.id, u.email, u.email_verified, u.mfa_enabled, u.created_at, u.locked_at,
                    u.last_login_at
             FROM users u WHERE u.id = $1",
        )
        .bind(id.0)
        .fetch_optional(&mut *conn)
        .await?;
        row.map(|r| user_from_row(&r, 0))
            .transpose()
            .map_err(StoreError::from)
    }

    async fn set_password_hash(&self, id: UserId, phc: &str) -> Result<(), StoreError> {
        let (mut conn, _timer) = self.conn(Op::SetPasswordHash).await?;
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(phc)
            .bind(id.0)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn set_locked(
        &self,
        id: UserId,
        locked: bool,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (mut conn, _timer) = self.conn(Op::SetLocked).await?;
        let done = sqlx::query("UPDATE users SET locked_at = $1 WHERE id = $2")
            .bind(locked.then_some(at))
            .bind(id.0)
            .execute(&mut *conn)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_login(&self, id: UserId, at: OffsetDateTime) -> Result<(), StoreError> {
        let (mut conn, _timer) = self.conn(Op::RecordLogin).await?;
        sqlx::query("UPDATE users SET last_login_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id.0)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}
