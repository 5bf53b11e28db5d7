//! SQLite implementation of [`PasskeyStore`].

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{SqliteStore, from_ms, parse_uuid, to_ms};
use crate::domain::UserId;
use crate::store::{
    Ceremony, CeremonyPurpose, NewCeremony, NewPasskey, Op, PasskeyDeletion, PasskeyRecord,
    PasskeyStore, PasskeyUse, StoreError,
};

const PASSKEY_COLUMNS: &str = "id, user_id, credential_id, name, credential, sign_count, \
     backup_eligible, backup_state, created_at, last_used_at, flagged_at";

fn passkey_from_row(row: &Row<'_>) -> rusqlite::Result<PasskeyRecord> {
    let id: String = row.get(0)?;
    let user: String = row.get(1)?;
    let last_used: Option<i64> = row.get(9)?;
    let flagged: Option<i64> = row.get(10)?;
    let count: i64 = row.get(5)?;
    Ok(PasskeyRecord {
        id: parse_uuid(&id)?,
        user_id: UserId(parse_uuid(&user)?),
        credential_id: row.get(2)?,
        name: row.get(3)?,
        credential: row.get(4)?,
        sign_count: u32::try_from(count).unwrap_or(u32::MAX),
        backup_eligible: row.get(6)?,
        backup_state: row.get(7)?,
        created_at: from_ms(row.get(8)?)?,
        last_used_at: last_used.map(from_ms).transpose()?,
        flagged_at: flagged.map(from_ms).transpose()?,
    })
}

fn opt_uuid(s: Option<String>) -> rusqlite::Result<Option<Uuid>> {
    s.as_deref().map(parse_uuid).transpose()
}

#[async_trait]
impl PasskeyStore for SqliteStore {
    async fn create_ceremony(&self, new: &NewCeremony) -> Result<(), StoreError> {
        let new = new.clone();
        self.write_op(Op::CreateCeremony, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(session) = new.session_id {
                tx.execute(
                    "DELETE FROM passkey_ceremonies WHERE session_id = ?1 AND purpose = ?2",
                    params![session.to_string(), new.purpose.as_str()],
                )?;
            }
            tx.execute(
                "INSERT INTO passkey_ceremonies
                     (id, purpose, session_id, user_id, state, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    new.id.to_string(),
                    new.purpose.as_str(),
                    new.session_id.map(|s| s.to_string()),
                    new.user_id.map(|u| u.0.to_string()),
                    new.state,
                    to_ms(new.now),
                    to_ms(new.expires_at)
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn take_ceremony(
        &self,
        id: Uuid,
        purpose: CeremonyPurpose,
    ) -> Result<Option<Ceremony>, StoreError> {
        self.write_op(Op::TakeCeremony, move |conn| {
            conn.query_row(
                "DELETE FROM passkey_ceremonies WHERE id = ?1 AND purpose = ?2
                 RETURNING session_id, user_id, state, expires_at",
                params![id.to_string(), purpose.as_str()],
                |r| {
                    Ok(Ceremony {
                        session_id: opt_uuid(r.get(0)?)?,
                        user_id: opt_uuid(r.get(1)?)?.map(UserId),
                        state: r.get(2)?,
                        expires_at: from_ms(r.get(3)?)?,
                    })
                },
            )
            .optional()
            .map_err(StoreError::from)
        })
        .await
    }

    async fn purge_ceremonies(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.write_op(Op::PurgeCeremonies, move |conn| {
            let n = conn.execute(
                "DELETE FROM passkey_ceremonies WHERE expires_at <= ?1",
                [to_ms(now)],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn insert_passkey(
        &self,
        new: &NewPasskey,
        raise_session: Option<Uuid>,
    ) -> Result<(), StoreError> {
        let new = new.clone();
        self.write_op(Op::InsertPasskey, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO passkeys (id, user_id, credential_id, name, credential, sign_count,
                     backup_eligible, backup_state, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    new.id.to_string(),
                    new.user_id.0.to_string(),
                    new.credential_id,
                    new.name,
                    new.credential,
                    i64::from(new.sign_count),
                    new.backup_eligible,
                    new.backup_state,
                    to_ms(new.now)
                ],
            )?;
            if let Some(session) = raise_session {
                tx.execute(
                    "UPDATE sessions SET aal = 'aal2' WHERE id = ?1",
                    [session.to_string()],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn list_passkeys(&self, user: UserId) -> Result<Vec<PasskeyRecord>, StoreError> {
        self.read_op(Op::ListPasskeys, move |conn| {
            let mut st = conn.prepare_cached(&format!(
                "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE user_id = ?1
                     ORDER BY created_at, id"
            ))?;
            let rows = st.query_map([user.0.to_string()], passkey_from_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(StoreError::from)
        })
        .await
    }

    async fn count_passkeys(&self, user: UserId) -> Result<u32, StoreError> {
        self.read_op(Op::CountPasskeys, move |conn| {
            let n: i64 = conn.query_row(
                "SELECT count(*) FROM passkeys WHERE user_id = ?1",
                [user.0.to_string()],
                |r| r.get(0),
            )?;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        })
        .await
    }

    async fn find_passkey(
        &self,
        credential_id: &[u8],
    ) -> Result<Option<PasskeyRecord>, StoreError> {
        let credential_id = credential_id.to_vec();
        self.read_op(Op::FindPasskey, move |conn| {
            conn.query_row(
                &format!("SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE credential_id = ?1"),
                [credential_id],
                passkey_from_row,
            )
            .optional()
            .map_err(StoreError::from)
        })
        .await
    }

    async fn record_passkey_use(&self, used: &PasskeyUse) -> Result<bool, StoreError> {
        let used = used.clone();
        self.write_op(Op::RecordPasskeyUse, move |conn| {
            let n = conn.execute(
                "UPDATE passkeys SET credential = ?1, sign_count = ?2, backup_eligible = ?3,
                         backup_state = ?4, last_used_at = ?5
                     WHERE id = ?6 AND flagged_at IS NULL
                       AND (sign_count < ?2 OR (sign_count = 0 AND ?2 = 0))",
                params![
                    used.credential,
                    i64::from(used.sign_count),
                    used.backup_eligible,
                    used.backup_state,
                    to_ms(used.now),
                    used.id.to_string()
                ],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn flag_passkey(&self, id: Uuid, now: OffsetDateTime) -> Result<(), StoreError> {
        self.write_op(Op::FlagPasskey, move |conn| {
            conn.execute(
                "UPDATE passkeys SET flagged_at = ?1 WHERE id = ?2 AND flagged_at IS NULL",
                params![to_ms(now), id.to_string()],
            )?;
            Ok(())
        })
        .await
    }

    async fn rename_passkey(&self, user: UserId, id: Uuid, name: &str) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.write_op(Op::RenamePasskey, move |conn| {
            let n = conn.execute(
                "UPDATE passkeys SET name = ?1 WHERE id = ?2 AND user_id = ?3",
                params![name, id.to_string(), user.0.to_string()],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn delete_passkey(
        &self,
        user: UserId,
        id: Uuid,
        keep_last_factor: bool,
    ) -> Result<PasskeyDeletion, StoreError> {
        self.write_op(Op::DeletePasskey, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let uid = user.0.to_string();
            let name: Option<String> = tx
                .query_row(
                    "SELECT name FROM passkeys WHERE id = ?1 AND user_id = ?2",
                    params![id.to_string(), uid],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(name) = name else {
                return Ok(PasskeyDeletion::NotFound);
            };
            if keep_last_factor {
                let (others, totp): (i64, bool) = tx.query_row(
                    "SELECT (SELECT count(*) FROM passkeys WHERE user_id = ?1 AND id <> ?2),
                                (SELECT mfa_enabled FROM users WHERE id = ?1)",
                    params![uid, id.to_string()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                if others == 0 && !totp {
                    return Ok(PasskeyDeletion::LastFactor);
                }
            }
            tx.execute("DELETE FROM passkeys WHERE id = ?1", [id.to_string()])?;
            tx.commit()?;
            Ok(PasskeyDeletion::Deleted(name))
        })
        .await
    }

    async fn remove_passkeys(&self, user: UserId) -> Result<u64, StoreError> {
        self.write_op(Op::RemovePasskeys, move |conn| {
            let n = conn.execute(
                "DELETE FROM passkeys WHERE user_id = ?1",
                [user.0.to_string()],
            )?;
            Ok(n as u64)
        })
        .await
    }
}
