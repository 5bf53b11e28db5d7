//! Accounts: creation, credentials lookup, lock state, last login.

use super::*;

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, new: &NewUser) -> Result<User, StoreError> {
        let new = new.clone();
        self.write_op(Op::CreateUser, move |conn| {
            conn.prepare_cached(
                "INSERT INTO users (id, email, email_key, password_hash, created_at, password_changed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    new.id.0.to_string(),
                    new.email.as_str(),
                    new.email.key(),
                    new.password_hash,
                    to_ms(new.now)
                ])
            })?;
            Ok(User {
                id: new.id,
                email: new.email,
                email_verified: false,
                mfa_enabled: false,
                created_at: new.now,
                locked: false,
                last_login_at: None,
            })
        })
        .await
    }

    async fn find_credentials(&self, email_key: &str) -> Result<Option<Credentials>, StoreError> {
        let key = email_key.to_string();
        self.read_op(Op::FindCredentials, move |conn| {
            let sql = format!(
                "SELECT {USER_COLUMNS}, u.password_hash FROM users u WHERE u.email_key = ?1"
            );
            conn.prepare_cached(&sql)
                .and_then(|mut st| {
                    st.query_row([key], |r| {
                        Ok(Credentials {
                            user: user_from_row(r, 0)?,
                            password_hash: r.get(7)?,
                        })
                    })
                    .optional()
                })
                .map_err(StoreError::from)
        })
        .await
    }

    async fn find_user(&self, email_key: &str) -> Result<Option<User>, StoreError> {
        let key = email_key.to_string();
        self.read_op(Op::FindUser, move |conn| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.email_key = ?1");
            conn.prepare_cached(&sql)
                .and_then(|mut st| st.query_row([key], |r| user_from_row(r, 0)).optional())
                .map_err(StoreError::from)
        })
        .await
    }

    async fn get_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.read_op(Op::GetUser, move |conn| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?1");
            conn.prepare_cached(&sql)
                .and_then(|mut st| {
                    st.query_row([id.0.to_string()], |r| user_from_row(r, 0))
                        .optional()
                })
                .map_err(StoreError::from)
        })
        .await
    }

    async fn set_password_hash(&self, id: UserId, phc: &str) -> Result<(), StoreError> {
        let phc = phc.to_string();
        self.write_op(Op::SetPasswordHash, move |conn| {
            conn.execute(
                "UPDATE users SET password_hash = ?1 WHERE id = ?2",
                params![phc, id.0.to_string()],
            )?;
            Ok(())
        })
        .await
    }

    async fn set_locked(
        &self,
        id: UserId,
        locked: bool,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.write_op(Op::SetLocked, move |conn| {
            let locked_at = locked.then(|| to_ms(at));
            let n = conn.execute(
                "UPDATE users SET locked_at = ?1 WHERE id = ?2",
                params![locked_at, id.0.to_string()],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn record_login(&self, id: UserId, at: OffsetDateTime) -> Result<(), StoreError> {
        self.write_op(Op::RecordLogin, move |conn| {
            conn.prepare_cached("UPDATE users SET last_login_at = ?1 WHERE id = ?2")
                .and_then(|mut st| st.execute(params![to_ms(at), id.0.to_string()]))?;
            Ok(())
        })
        .await
    }
}
