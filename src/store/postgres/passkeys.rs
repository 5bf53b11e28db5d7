//! PostgreSQL implementation of [`PasskeyStore`].

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgRow;
use time::OffsetDateTime;
use uuid::Uuid;

use super::PgStore;
use crate::domain::UserId;
use crate::store::{
    Ceremony, CeremonyPurpose, NewCeremony, NewPasskey, Op, PasskeyDeletion, PasskeyRecord,
    PasskeyStore, PasskeyUse, StoreError,
};

/// Reads the columns in the order of the SELECTs below.
fn passkey_from_row(row: &PgRow) -> Result<PasskeyRecord, sqlx::Error> {
    let count: i64 = row.try_get(5)?;
    Ok(PasskeyRecord {
        id: row.try_get(0)?,
        user_id: UserId(row.try_get(1)?),
        credential_id: row.try_get(2)?,
        name: row.try_get(3)?,
        credential: row.try_get(4)?,
        sign_count: u32::try_from(count).unwrap_or(u32::MAX),
        backup_eligible: row.try_get(6)?,
        backup_state: row.try_get(7)?,
        created_at: row.try_get(8)?,
        last_used_at: row.try_get(9)?,
        flagged_at: row.try_get(10)?,
    })
}

#[async_trait]
impl PasskeyStore for PgStore {
    async fn create_ceremony(&self, new: &NewCeremony) -> Result<(), StoreError> {
        let (mut tx, _timer) = self.begin(Op::CreateCeremony).await?;
        if let Some(session) = new.session_id {
            sqlx::query("DELETE FROM passkey_ceremonies WHERE session_id = $1 AND purpose = $2")
                .bind(session)
                .bind(new.purpose.as_str())
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO passkey_ceremonies
                 (id, purpose, session_id, user_id, state, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(new.id)
        .bind(new.purpose.as_str())
        .bind(new.session_id)
        .bind(new.user_id.map(|u| u.0))
        .bind(&new.state)
        .bind(new.now)
        .bind(new.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn take_ceremony(
        &self,
        id: Uuid,
        purpose: CeremonyPurpose,
    ) -> Result<Option<Ceremony>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::TakeCeremony).await?;
        let row = sqlx::query(
            "DELETE FROM passkey_ceremonies WHERE id = $1 AND purpose = $2
             RETURNING session_id, user_id, state, expires_at",
        )
        .bind(id)
        .bind(purpose.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        row.map(|r| -> Result<Ceremony, sqlx::Error> {
            let user: Option<Uuid> = r.try_get(1)?;
            Ok(Ceremony {
                session_id: r.try_get(0)?,
                user_id: user.map(UserId),
                state: r.try_get(2)?,
                expires_at: r.try_get(3)?,
            })
        })
        .transpose()
        .map_err(StoreError::from)
    }

    async fn purge_ceremonies(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let (mut conn, _timer) = self.conn(Op::PurgeCeremonies).await?;
        let done = sqlx::query("DELETE FROM passkey_ceremonies WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *conn)
            .await?;
        Ok(done.rows_affected())
    }

    async fn insert_passkey(
        &self,
        new: &NewPasskey,
        raise_session: Option<Uuid>,
    ) -> Result<(), StoreError> {
        let (mut tx, _timer) = self.begin(Op::InsertPasskey).await?;
        sqlx::query(
            "INSERT INTO passkeys (id, user_id, credential_id, name, credential, sign_count,
                 backup_eligible, backup_state, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(new.id)
        .bind(new.user_id.0)
        .bind(&new.credential_id)
        .bind(&new.name)
        .bind(&new.credential)
        .bind(i64::from(new.sign_count))
        .bind(new.backup_eligible)
        .bind(new.backup_state)
        .bind(new.now)
        .execute(&mut *tx)
        .await?;
        if let Some(session) = raise_session {
            sqlx::query("UPDATE sessions SET aal = 'aal2' WHERE id = $1")
                .bind(session)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_passkeys(&self, user: UserId) -> Result<Vec<PasskeyRecord>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::ListPasskeys).await?;
        let rows = sqlx::query(
            "SELECT id, user_id, credential_id, name, credential, sign_count, backup_eligible,
                    backup_state, created_at, last_used_at, flagged_at
             FROM passkeys WHERE user_id = $1 ORDER BY created_at, id",
        )
        .bind(user.0)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(passkey_from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::from)
    }

    async fn count_passkeys(&self, user: UserId) -> Result<u32, StoreError> {
        let (mut conn, _timer) = self.conn(Op::CountPasskeys).await?;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM passkeys WHERE user_id = $1")
            .bind(user.0)
            .fetch_one(&mut *conn)
            .await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn find_passkey(
        &self,
        credential_id: &[u8],
    ) -> Result<Option<PasskeyRecord>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::FindPasskey).await?;
        let row = sqlx::query(
            "SELECT id, user_id, credential_id, name, credential, sign_count, backup_eligible,
                    backup_state, created_at, last_used_at, flagged_at
             FROM passkeys WHERE credential_id = $1",
        )
        .bind(credential_id)
        .fetch_optional(&mut *conn)
        .await?;
        row.as_ref()
            .map(passkey_from_row)
            .transpose()
            .map_err(StoreError::from)
    }

    async fn record_passkey_use(&self, used: &PasskeyUse) -> Result<bool, StoreError> {
        let (mut conn, _timer) = self.conn(Op::RecordPasskeyUse).await?;
        let done = sqlx::query(
            "UPDATE passkeys SET credential = $1, sign_count = $2, backup_eligible = $3,
                 backup_state = $4, last_used_at = $5
             WHERE id = $6 AND flagged_at IS NULL
               AND (sign_count < $2 OR (sign_count = 0 AND $2 = 0))",
        )
        .bind(&used.credential)
        .bind(i64::from(used.sign_count))
        .bind(used.backup_eligible)
        .bind(used.backup_state)
        .bind(used.now)
        .bind(used.id)
        .execute(&mut *conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn flag_passkey(&self, id: Uuid, now: OffsetDateTime) -> Result<(), StoreError> {
        let (mut conn, _timer) = self.conn(Op::FlagPasskey).await?;
        sqlx::query("UPDATE passkeys SET flagged_at = $1 WHERE id = $2 AND flagged_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn rename_passkey(&self, user: UserId, id: Uuid, name: &str) -> Result<bool, StoreError> {
        let (mut conn, _timer) = self.conn(Op::RenamePasskey).await?;
        let done = sqlx::query("UPDATE passkeys SET name = $1 WHERE id = $2 AND user_id = $3")
            .bind(name)
            .bind(id)
            .bind(user.0)
            .execute(&mut *conn)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_passkey(
        &self,
        user: UserId,
        id: Uuid,
        keep_last_factor: bool,
    ) -> Result<PasskeyDeletion, StoreError> {
        let (mut tx, _timer) = self.begin(Op::DeletePasskey).await?;
        // The user row lock serialises concurrent deletions of one account's
        // passkeys, so two of them cannot both remove "the other one".
        let totp: Option<bool> =
            sqlx::query_scalar("SELECT mfa_enabled FROM users WHERE id = $1 FOR UPDATE")
                .bind(user.0)
                .fetch_optional(&mut *tx)
                .await?;
        let name: Option<String> =
            sqlx::query_scalar("SELECT name FROM passkeys WHERE id = $1 AND user_id = $2")
                .bind(id)
                .bind(user.0)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(name) = name else {
            return Ok(PasskeyDeletion::NotFound);
        };
        if keep_last_factor && !totp.unwrap_or(false) {
            let others: i64 =
                sqlx::query_scalar("SELECT count(*) FROM passkeys WHERE user_id = $1 AND id <> $2")
                    .bind(user.0)
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
            if others == 0 {
                return Ok(PasskeyDeletion::LastFactor);
            }
        }
        sqlx::query("DELETE FROM passkeys WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(PasskeyDeletion::Deleted(name))
    }

    async fn remove_passkeys(&self, user: UserId) -> Result<u64, StoreError> {
        let (mut conn, _timer) = self.conn(Op::RemovePasskeys).await?;
        let done = sqlx::query("DELETE FROM passkeys WHERE user_id = $1")
            .bind(user.0)
            .execute(&mut *conn)
            .await?;
        Ok(done.rows_affected())
    }
}
