//! Registering, listing, renaming and deleting passkeys.

use serde_json::json;
use uuid::Uuid;
use webauthn_rs::prelude::{PasskeyRegistration, RegisterPublicKeyCredential};

use super::{
    CeremonyPurpose, PasskeyError, PasskeyName, PasskeyRecord, Started, load_passkey,
    passkey_facts, reason, unexpected,
};
use crate::audit::{EventKind, RequestMeta};
use crate::auth::Auth;
use crate::auth::throttle::Bucket;
use crate::domain::{Aal, Session, User};
use crate::mail::Notice;
use crate::store::{NewPasskey, PasskeyDeletion, StoreError};

impl Auth {
    /// Who may register a passkey: a full session inside the
    /// re-authentication window, at aal2 when the account already has a
    /// second factor (so a stolen password alone cannot add one).
    async fn may_register(&self, session: &Session, user: &User) -> Result<(), PasskeyError> {
        if session.aal != Aal::Aal2 && self.has_second_factor(user).await? {
            return Err(PasskeyError::Aal2Required);
        }
        if !session.in_reauth_window(self.clock.now(), self.config.session.reauth_window) {
            return Err(PasskeyError::ReauthenticationRequired);
        }
        Ok(())
    }

    /// Starts registering a passkey for the session's user.
    pub async fn start_passkey_registration(
        &self,
        session: &Session,
        user: &User,
        meta: &RequestMeta,
    ) -> Result<Started, PasskeyError> {
        let webauthn = self.webauthn()?;
        self.may_register(session, user).await?;
        let existing = self
            .store
            .list_passkeys(user.id)
            .await?
            .iter()
            .map(load_passkey)
            .collect::<Result<Vec<_>, _>>()?;
        let exclude = existing.iter().map(|p| p.cred_id().clone()).collect();
        let (ccr, state) = webauthn
            .start_passkey_registration(
                user.id.0,
                user.email.as_str(),
                user.email.as_str(),
                Some(exclude),
            )
            .map_err(|e| unexpected("start registration", e))?;
        let mut options = serde_json::to_value(&ccr).map_err(|e| unexpected("options", e))?;
        // Ask for a discoverable credential, so the passkey can later sign in
        // without a user name (browsers treat "preferred" like "required").
        if let Some(sel) = options["publicKey"]["authenticatorSelection"].as_object_mut() {
            sel.insert("residentKey".into(), json!("preferred"));
        }
        self.begin_ceremony(
            CeremonyPurpose::Register,
            Some(session),
            Some(user.id),
            &state,
            options,
            meta,
        )
        .await
    }

    /// Finishes a registration: verifies the response against the stored
    /// state and stores the passkey. A first second factor raises the
    /// session to aal2 (password plus a verified possession factor).
    pub async fn finish_passkey_registration(
        &self,
        session: &Session,
        user: &User,
        ceremony_id: Uuid,
        name: &PasskeyName,
        response: &RegisterPublicKeyCredential,
        meta: &RequestMeta,
    ) -> Result<PasskeyRecord, PasskeyError> {
        let webauthn = self.webauthn()?;
        self.count_attempt(Bucket::Mfa, meta).await?;
        let state: PasskeyRegistration = match self
            .take_ceremony(ceremony_id, CeremonyPurpose::Register, Some(session))
            .await?
        {
            Ok(s) => s,
            Err(why) => {
                self.passkey_failed(
                    EventKind::MfaFailed,
                    Some(user.id),
                    "registration",
                    why,
                    meta,
                )
                .await?;
                return Err(PasskeyError::InvalidCeremony);
            }
        };
        self.may_register(session, user).await?;
        let passkey = match webauthn.finish_passkey_registration(response, &state) {
            Ok(p) => p,
            Err(e) => {
                self.passkey_failed(
                    EventKind::MfaFailed,
                    Some(user.id),
                    "registration",
                    reason(&e),
                    meta,
                )
                .await?;
                return Err(PasskeyError::InvalidCredential);
            }
        };
        let (credential, sign_count, backup_eligible, backup_state) = passkey_facts(&passkey)?;
        let now = self.clock.now();
        let new = NewPasskey {
            id: Uuid::new_v4(),
            user_id: user.id,
            credential_id: passkey.cred_id().clone(),
            name: name.as_str().to_string(),
            credential,
            sign_count,
            backup_eligible,
            backup_state,
            now,
        };
        let raise = (session.aal == Aal::Aal1).then_some(session.id);
        match self.store.insert_passkey(&new, raise).await {
            Err(StoreError::Conflict) => {
                self.passkey_failed(
                    EventKind::MfaFailed,
                    Some(user.id),
                    "registration",
                    "credential_already_registered",
                    meta,
                )
                .await?;
                return Err(PasskeyError::AlreadyRegistered);
            }
            other => other?,
        }
        self.record_event(
            EventKind::PasskeyRegistered,
            Some(user.id),
            meta,
            json!({"passkey_id": new.id, "backup_eligible": backup_eligible,
                   "backup_state": backup_state, "session_raised": raise.is_some()}),
        )
        .await?;
        self.mailer.notify(&user.email, Notice::PasskeyAdded).await;
        Ok(PasskeyRecord {
            id: new.id,
            user_id: user.id,
            credential_id: new.credential_id,
            name: new.name,
            credential: new.credential,
            sign_count,
            backup_eligible,
            backup_state,
            created_at: now,
            last_used_at: None,
            flagged_at: None,
        })
    }

    /// The user's passkeys, oldest first.
    pub async fn list_passkeys(&self, user: &User) -> Result<Vec<PasskeyRecord>, PasskeyError> {
        Ok(self.store.list_passkeys(user.id).await?)
    }

    /// Renames one of the user's passkeys.
    pub async fn rename_passkey(
        &self,
        user: &User,
        id: Uuid,
        name: &PasskeyName,
        meta: &RequestMeta,
    ) -> Result<(), PasskeyError> {
        if !self
            .store
            .rename_passkey(user.id, id, name.as_str())
            .await?
        {
            return Err(PasskeyError::NotFound);
        }
        self.record_event(
            EventKind::PasskeyRenamed,
            Some(user.id),
            meta,
            json!({"passkey_id": id}),
        )
        .await?;
        Ok(())
    }

    /// Deletes one of the user's passkeys: needs aal2 and the window. When
    /// MFA is required, the account's last second factor stays.
    pub async fn delete_passkey(
        &self,
        session: &Session,
        user: &User,
        id: Uuid,
        meta: &RequestMeta,
    ) -> Result<(), PasskeyError> {
        if session.aal != Aal::Aal2 {
            return Err(PasskeyError::Aal2Required);
        }
        if !session.in_reauth_window(self.clock.now(), self.config.session.reauth_window) {
            return Err(PasskeyError::ReauthenticationRequired);
        }
        match self
            .store
            .delete_passkey(user.id, id, self.config.require_mfa)
            .await?
        {
            PasskeyDeletion::Deleted(_) => {}
            PasskeyDeletion::NotFound => return Err(PasskeyError::NotFound),
            PasskeyDeletion::LastFactor => return Err(PasskeyError::LastFactor),
        }
        self.record_event(
            EventKind::PasskeyRemoved,
            Some(user.id),
            meta,
            json!({"passkey_id": id, "by": "user"}),
        )
        .await?;
        self.mailer
            .notify(&user.email, Notice::PasskeyRemoved)
            .await;
        Ok(())
    }
}
