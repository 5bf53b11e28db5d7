//! Sessions: creation with the per-user cap, the token lookup, rotation, revocation, purge.

use super::*;

fn insert_session(conn: &Connection, new: &NewSession) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO sessions (id, token_hash, user_id, aal, mfa_pending, created_at,
             authenticated_at, last_seen_at, expires_at, user_agent, ip)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut st| {
        st.execute(params![
            new.id.to_string(),
            new.token_hash.0.as_slice(),
            new.user_id.0.to_string(),
            new.aal.as_str(),
            new.mfa_pending,
            to_ms(new.now),
            to_ms(new.expires_at),
            new.user_agent,
            new.ip
        ])
    })?;
    Ok(())
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(
        &self,
        new: &NewSession,
        max_full_sessions: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        let new = new.clone();
        self.write_op(Op::CreateSession, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            insert_session(&tx, &new)?;
            let mut evicted = Vec::new();
            if !new.mfa_pending {
                let keep = i64::try_from(max_full_sessions).unwrap_or(i64::MAX);
                let mut st = tx.prepare_cached(
                    "DELETE FROM sessions WHERE id IN (
                             SELECT id FROM sessions WHERE user_id = ?1 AND mfa_pending = 0
                             ORDER BY created_at DESC, id DESC LIMIT -1 OFFSET ?2)
                         RETURNING id",
                )?;
                let rows = st.query_map(params![new.user_id.0.to_string(), keep], |r| {
                    parse_uuid(&r.get::<_, String>(0)?)
                })?;
                for id in rows {
                    evicted.push(id?);
                }
            }
            tx.commit()?;
            Ok(evicted)
        })
        .await
    }

    async fn find_session(&self, hash: &TokenHash) -> Result<Option<(Session, User)>, StoreError> {
        let hash = *hash;
        self.read_op(Op::FindSession, move |conn| {
            let sql = format!(
                "SELECT {SESSION_COLUMNS}, {USER_COLUMNS} FROM sessions s
                 JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?1"
            );
            conn.prepare_cached(&sql)
                .and_then(|mut st| {
                    st.query_row([hash.0.as_slice()], |r| {
                        Ok((session_from_row(r, 0)?, user_from_row(r, 10)?))
                    })
                    .optional()
                })
                .map_err(StoreError::from)
        })
        .await
    }

    async fn touch_session(
        &self,
        id: Uuid,
        now: OffsetDateTime,
        older_than: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.write_op(Op::TouchSession, move |conn| {
            conn.prepare_cached(
                "UPDATE sessions SET last_seen_at = ?1 WHERE id = ?2 AND last_seen_at < ?3",
            )
            .and_then(|mut st| {
                st.execute(params![to_ms(now), id.to_string(), to_ms(older_than)])
            })?;
            Ok(())
        })
        .await
    }

    async fn rotate_session(&self, old: Uuid, new: &NewSession) -> Result<bool, StoreError> {
        let new = new.clone();
        self.write_op(Op::RotateSession, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let gone = tx.execute("DELETE FROM sessions WHERE id = ?1", [old.to_string()])?;
            if gone == 0 {
                return Ok(false);
            }
            insert_session(&tx, &new)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn delete_session(&self, id: Uuid) -> Result<bool, StoreError> {
        self.write_op(Op::DeleteSession, move |conn| {
            let n = conn.execute("DELETE FROM sessions WHERE id = ?1", [id.to_string()])?;
            Ok(n > 0)
        })
        .await
    }

    async fn list_sessions(&self, user: UserId) -> Result<Vec<Session>, StoreError> {
        self.read_op(Op::ListSessions, move |conn| {
            let sql = format!(
                "SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.user_id = ?1
                 ORDER BY s.created_at DESC, s.id"
            );
            let mut st = conn.prepare_cached(&sql)?;
            let rows = st.query_map([user.0.to_string()], |r| session_from_row(r, 0))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(StoreError::from)
        })
        .await
    }

    async fn delete_user_sessions(
        &self,
        user: UserId,
        except: Option<Uuid>,
    ) -> Result<u64, StoreError> {
        self.write_op(Op::DeleteUserSessions, move |conn| {
            let keep = except.map(|id| id.to_string()).unwrap_or_default();
            let n = conn.execute(
                "DELETE FROM sessions WHERE user_id = ?1 AND id <> ?2",
                params![user.0.to_string(), keep],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn delete_all_sessions(&self) -> Result<u64, StoreError> {
        self.write_op(Op::DeleteAllSessions, |conn| {
            let n = conn.execute("DELETE FROM sessions", [])?;
            Ok(n as u64)
        })
        .await
    }

    async fn purge_expired_sessions(
        &self,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
        batch: u32,
    ) -> Result<Vec<(Uuid, UserId)>, StoreError> {
        self.write_op(Op::PurgeExpiredSessions, move |conn| {
            let mut st = conn
                .prepare_cached(
                    "DELETE FROM sessions WHERE id IN (
                         SELECT id FROM sessions WHERE expires_at <= ?1 OR last_seen_at <= ?2 LIMIT ?3)
                     RETURNING id, user_id",
                )?;
            let rows = st
                .query_map(params![to_ms(now), to_ms(idle_cutoff), batch], |r| {
                    Ok((
                        parse_uuid(&r.get::<_, String>(0)?)?,
                        UserId(parse_uuid(&r.get::<_, String>(1)?)?),
                    ))
                })?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(StoreError::from)
        })
        .await
    }
}
