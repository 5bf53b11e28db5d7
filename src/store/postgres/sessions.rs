//! Sessions: creation with the per-user cap, the token lookup, rotation, revocation, purge.

use super::*;

async fn insert_session(
    tx: &mut Transaction<'static, Postgres>,
    new: &NewSession,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sessions (id, token_hash, user_id, aal, mfa_pending, created_at,
             authenticated_at, last_seen_at, expires_at, user_agent, ip)
         VALUES ($1, $2, $3, $4, $5, $6, $6, $6, $7, $8, $9)",
    )
    .bind(new.id)
    .bind(new.token_hash.0.as_slice())
    .bind(new.user_id.0)
    .bind(new.aal.as_str())
    .bind(new.mfa_pending)
    .bind(new.now)
    .bind(new.expires_at)
    .bind(&new.user_agent)
    .bind(&new.ip)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[async_trait]
impl SessionStore for PgStore {
    async fn create_session(
        &self,
        new: &NewSession,
        max_full_sessions: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        let (mut tx, _timer) = self.begin(Op::CreateSession).await?;
        if !new.mfa_pending {
            // Serialise concurrent logins of one user so the cap holds. The
            // row lock comes first: taken after the insert (whose foreign
            // key holds a weaker lock on the same row) two logins deadlock.
            sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
                .bind(new.user_id.0)
                .execute(&mut *tx)
                .await?;
        }
        insert_session(&mut tx, new).await?;
        let mut evicted = Vec::new();
        if !new.mfa_pending {
            evicted = sqlx::query_scalar(
                "DELETE FROM sessions WHERE id IN (
                     SELECT id FROM sessions WHERE user_id = $1 AND NOT mfa_pending
                     ORDER BY created_at DESC, id DESC OFFSET $2)
                 RETURNING id",
            )
            .bind(new.user_id.0)
            .bind(i64::try_from(max_full_sessions).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(evicted)
    }

    async fn find_session(&self, hash: &TokenHash) -> Result<Option<(Session, User)>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::FindSession).await?;
        let row = sqlx::query(
            "SELECT s.id, s.user_id, s.aal, s.mfa_pending, s.created_at, s.authenticated_at,
                    s.last_seen_at, s.expires_at, s.user_agent, s.ip,
                    u.id, u.email, u.email_verified, u.mfa_enabled, u.created_at, u.locked_at,
                    u.last_login_at
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = $1",
        )
        .bind(hash.0.as_slice())
        .fetch_optional(&mut *conn)
        .await?;
        row.map(|r| Ok::<_, sqlx::Error>((session_from_row(&r, 0)?, user_from_row(&r, 10)?)))
            .transpose()
            .map_err(StoreError::from)
    }

    async fn touch_session(
        &self,
        id: Uuid,
        now: OffsetDateTime,
        older_than: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (mut conn, _timer) = self.conn(Op::TouchSession).await?;
        sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2 AND last_seen_at < $3")
            .bind(now)
            .bind(id)
            .bind(older_than)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn rotate_session(&self, old: Uuid, new: &NewSession) -> Result<bool, StoreError> {
        let (mut tx, _timer) = self.begin(Op::RotateSession).await?;
        let gone = sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(old)
            .execute(&mut *tx)
            .await?;
        if gone.rows_affected() == 0 {
            return Ok(false);
        }
        insert_session(&mut tx, new).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn delete_session(&self, id: Uuid) -> Result<bool, StoreError> {
        let (mut conn, _timer) = self.conn(Op::DeleteSession).await?;
        let done = sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_sessions(&self, user: UserId) -> Result<Vec<Session>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::ListSessions).await?;
        let rows = sqlx::query(
            "SELECT s.id, s.user_id, s.aal, s.mfa_pending, s.created_at, s.authenticated_at,
                    s.last_seen_at, s.expires_at, s.user_agent, s.ip
             FROM sessions s WHERE s.user_id = $1 ORDER BY s.created_at DESC, s.id",
        )
        .bind(user.0)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|r| session_from_row(r, 0))
            .collect::<Result<_, _>>()
            .map_err(StoreError::from)
    }

    async fn delete_user_sessions(
        &self,
        user: UserId,
        except: Option<Uuid>,
    ) -> Result<u64, StoreError> {
        let (mut conn, _timer) = self.conn(Op::DeleteUserSessions).await?;
        let done = sqlx::query(
            "DELETE FROM sessions WHERE user_id = $1 AND ($2::uuid IS NULL OR id <> $2)",
        )
        .bind(user.0)
        .bind(except)
        .execute(&mut *conn)
        .await?;
        Ok(done.rows_affected())
    }

    async fn delete_all_sessions(&self) -> Result<u64, StoreError> {
        let (mut conn, _timer) = self.conn(Op::DeleteAllSessions).await?;
        let done = sqlx::query("DELETE FROM sessions")
            .execute(&mut *conn)
            .await?;
        Ok(done.rows_affected())
    }

    async fn purge_expired_sessions(
        &self,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
        batch: u32,
    ) -> Result<Vec<(Uuid, UserId)>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::PurgeExpiredSessions).await?;
        let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "DELETE FROM sessions WHERE id IN (
                 SELECT id FROM sessions WHERE expires_at <= $1 OR last_seen_at <= $2
                 LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING id, user_id",
        )
        .bind(now)
        .bind(idle_cutoff)
        .bind(i64::from(batch))
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, user)| (id, UserId(user)))
            .collect())
    }
}
