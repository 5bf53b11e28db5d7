//! The passkey role on both backends: ceremonies taken once and only for
//! their purpose, credentials unique across accounts, counters that only
//! move forward, and deletion that keeps an account's last second factor.

use std::time::Duration;

use castellan::domain::{Aal, UserId};
use castellan::store::{
    CeremonyPurpose, NewCeremony, NewPasskey, PasskeyDeletion, PasskeyUse, StoreError,
};
use uuid::Uuid;

use super::{codes, now, open, session, user};
use crate::helpers::Backend;
use crate::on_both_backends;

on_both_backends!(
    ceremonies_are_taken_once_for_their_purpose_and_purged_when_expired,
    passkeys_are_unique_found_and_used_with_a_rising_counter,
    renames_and_deletions_touch_only_the_owners_passkeys,
);

const MINUTES_5: Duration = Duration::from_secs(300);

fn passkey(user: UserId, credential_id: &[u8], name: &str, at: time::OffsetDateTime) -> NewPasskey {
    NewPasskey {
        id: Uuid::new_v4(),
        user_id: user,
        credential_id: credential_id.to_vec(),
        name: name.into(),
        credential: format!("{{\"name\":\"{name}\"}}"),
        sign_count: 0,
        backup_eligible: true,
        backup_state: false,
        now: at,
    }
}

fn used(id: Uuid, sign_count: u32, at: time::OffsetDateTime) -> PasskeyUse {
    PasskeyUse {
        id,
        credential: format!("{{\"count\":{sign_count}}}"),
        sign_count,
        backup_eligible: true,
        backup_state: true,
        now: at,
    }
}

async fn ceremonies_are_taken_once_for_their_purpose_and_purged_when_expired(b: Backend) {
    let (s, _env) = open(b).await;
    let t = now();
    let u = user(&*s, "ceremony@example.com").await;
    let sess = session(u, t, false);
    s.create_session(&sess, 10).await.unwrap();
    let ceremony = |purpose, session_id, expires_at| NewCeremony {
        id: Uuid::new_v4(),
        purpose,
        session_id,
        user_id: Some(u),
        state: format!("{{\"challenge\":\"{}\"}}", Uuid::new_v4()),
        now: t,
        expires_at,
    };
    let first = ceremony(CeremonyPurpose::Register, Some(sess.id), t + MINUTES_5);
    let second = ceremony(CeremonyPurpose::Register, Some(sess.id), t + MINUTES_5);
    s.create_ceremony(&first).await.unwrap();
    s.create_ceremony(&second).await.unwrap();
    assert!(
        s.take_ceremony(first.id, CeremonyPurpose::Register)
            .await
            .unwrap()
            .is_none(),
        "a newer ceremony of the session and purpose replaced it"
    );
    assert!(
        s.take_ceremony(second.id, CeremonyPurpose::Login)
            .await
            .unwrap()
            .is_none(),
        "another purpose"
    );
    let taken = s
        .take_ceremony(second.id, CeremonyPurpose::Register)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken.session_id, Some(sess.id));
    assert_eq!(taken.user_id, Some(u));
    assert_eq!(taken.state, second.state);
    assert_eq!(taken.expires_at, t + MINUTES_5);
    assert!(
        s.take_ceremony(second.id, CeremonyPurpose::Register)
            .await
            .unwrap()
            .is_none(),
        "taken once"
    );
    // Of many finishes sent at once, exactly one takes the ceremony.
    let mut raced = ceremony(CeremonyPurpose::Login, None, t + MINUTES_5);
    raced.user_id = None;
    s.create_ceremony(&raced).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.take_ceremony(raced.id, CeremonyPurpose::Login).await })
        })
        .collect();
    let mut takers = 0;
    for task in tasks {
        takers += usize::from(task.await.unwrap().unwrap().is_some());
    }
    assert_eq!(takers, 1);
    // Only expired ceremonies are purged.
    let expired = ceremony(
        CeremonyPurpose::SecondFactor,
        Some(sess.id),
        t - Duration::from_secs(1),
    );
    let live = ceremony(
        CeremonyPurpose::Reauthenticate,
        Some(sess.id),
        t + MINUTES_5,
    );
    s.create_ceremony(&expired).await.unwrap();
    s.create_ceremony(&live).await.unwrap();
    assert_eq!(s.purge_ceremonies(t).await.unwrap(), 1);
    assert_eq!(s.purge_ceremonies(t).await.unwrap(), 0);
    assert!(
        s.take_ceremony(live.id, CeremonyPurpose::Reauthenticate)
            .await
            .unwrap()
            .is_some()
    );
}

async fn passkeys_are_unique_found_and_used_with_a_rising_counter(b: Backend) {
    let (s, _env) = open(b).await;
    let t = now();
    let u = user(&*s, "keys@example.com").await;
    let other = user(&*s, "other-keys@example.com").await;
    let sess = session(u, t, false);
    s.create_session(&sess, 10).await.unwrap();
    let laptop = passkey(u, b"cred-1", "laptop", t);
    let phone = passkey(u, b"cred-2", "phone", t + Duration::from_secs(1));
    // Registering raises the session that registered in the same step.
    s.insert_passkey(&laptop, Some(sess.id)).await.unwrap();
    let (raised, _) = s.find_session(&sess.token_hash).await.unwrap().unwrap();
    assert_eq!(raised.aal, Aal::Aal2);
    s.insert_passkey(&phone, None).await.unwrap();
    assert!(matches!(
        s.insert_passkey(&passkey(other, b"cred-1", "copy", t), None)
            .await,
        Err(StoreError::Conflict)
    ));
    let names: Vec<_> = s
        .list_passkeys(u)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["laptop", "phone"], "oldest first");
    assert!(s.list_passkeys(other).await.unwrap().is_empty());
    assert_eq!(s.count_passkeys(u).await.unwrap(), 2);
    assert_eq!(s.count_passkeys(other).await.unwrap(), 0);
    let found = s.find_passkey(b"cred-2").await.unwrap().unwrap();
    assert_eq!((found.id, found.user_id), (phone.id, u));
    assert_eq!(found.credential, phone.credential);
    assert_eq!((found.sign_count, found.backup_eligible), (0, true));
    assert_eq!((found.last_used_at, found.flagged_at), (None, None));
    assert!(s.find_passkey(b"nope").await.unwrap().is_none());
    // An authenticator without a counter reports zero each time; one with a
    // counter must report more than the last time.
    assert!(s.record_passkey_use(&used(laptop.id, 0, t)).await.unwrap());
    assert!(s.record_passkey_use(&used(laptop.id, 5, t)).await.unwrap());
    assert!(!s.record_passkey_use(&used(laptop.id, 5, t)).await.unwrap());
    assert!(!s.record_passkey_use(&used(laptop.id, 3, t)).await.unwrap());
    let after = s.find_passkey(b"cred-1").await.unwrap().unwrap();
    assert_eq!(after.sign_count, 5);
    assert_eq!(
        after.credential, "{\"count\":5}",
        "the refused uses wrote nothing"
    );
    assert!(after.backup_state);
    assert_eq!(after.last_used_at, Some(t));
    // A flagged passkey takes no further use, and still counts.
    s.flag_passkey(laptop.id, t).await.unwrap();
    let flagged = s.find_passkey(b"cred-1").await.unwrap().unwrap();
    assert_eq!(flagged.flagged_at, Some(t));
    assert!(!s.record_passkey_use(&used(laptop.id, 9, t)).await.unwrap());
    assert_eq!(s.count_passkeys(u).await.unwrap(), 2);
}

async fn renames_and_deletions_touch_only_the_owners_passkeys(b: Backend) {
    let (s, _env) = open(b).await;
    let t = now();
    let u = user(&*s, "owner@example.com").await;
    let other = user(&*s, "stranger@example.com").await;
    let laptop = passkey(u, b"own-1", "laptop", t);
    let phone = passkey(u, b"own-2", "phone", t + Duration::from_secs(1));
    for p in [&laptop, &phone] {
        s.insert_passkey(p, None).await.unwrap();
    }
    assert!(s.rename_passkey(u, laptop.id, "work laptop").await.unwrap());
    assert!(!s.rename_passkey(other, laptop.id, "taken").await.unwrap());
    assert!(!s.rename_passkey(u, Uuid::new_v4(), "none").await.unwrap());
    assert_eq!(s.list_passkeys(u).await.unwrap()[0].name, "work laptop");
    assert_eq!(
        s.delete_passkey(other, laptop.id, false).await.unwrap(),
        PasskeyDeletion::NotFound
    );
    assert_eq!(
        s.delete_passkey(u, laptop.id, true).await.unwrap(),
        PasskeyDeletion::Deleted("work laptop".into())
    );
    // Without TOTP the last passkey is the last second factor.
    assert_eq!(
        s.delete_passkey(u, phone.id, true).await.unwrap(),
        PasskeyDeletion::LastFactor
    );
    assert_eq!(s.count_passkeys(u).await.unwrap(), 1);
    // With TOTP on, it may go.
    let sess = session(u, t, false);
    s.create_session(&sess, 10).await.unwrap();
    s.put_pending_totp(u, b"sealed", t).await.unwrap();
    assert!(s.activate_totp(u, 1, &codes(10), sess.id, t).await.unwrap());
    assert_eq!(
        s.delete_passkey(u, phone.id, true).await.unwrap(),
        PasskeyDeletion::Deleted("phone".into())
    );
    // The administrator's reset removes every passkey of one account.
    let theirs = [
        passkey(other, b"theirs-1", "a", t),
        passkey(other, b"theirs-2", "b", t),
    ];
    for p in &theirs {
        s.insert_passkey(p, None).await.unwrap();
    }
    let mine = passkey(u, b"own-3", "tablet", t);
    s.insert_passkey(&mine, None).await.unwrap();
    assert_eq!(s.remove_passkeys(other).await.unwrap(), 2);
    assert_eq!(s.remove_passkeys(other).await.unwrap(), 0);
    assert_eq!(s.count_passkeys(u).await.unwrap(), 1);
}
