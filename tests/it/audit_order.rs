//! The audit chain's order and its time order agree. Events reach the
//! chain's lock in a different order than their requests read the clock
//! (PostgreSQL's group commit, several nodes, concurrent requests of one
//! process); the store then times an event no earlier than the one before
//! it, so `GET /admin/v1/audit` (newest first by chain position) is also
//! newest first by time.

use std::time::Duration;

use castellan::audit::{self, EventKind, RequestMeta, chain};
use castellan::domain::audit_chain::truncate_to_millis;
use castellan::store::{self, EventFilter};
use serde_json::json;
use time::OffsetDateTime;

use crate::helpers::{Backend, TestEnv};
use crate::on_both_backends;

on_both_backends!(an_event_that_reaches_the_chain_late_is_not_timed_before_its_predecessor);

async fn an_event_that_reaches_the_chain_late_is_not_timed_before_its_predecessor(
    backend: Backend,
) {
    let env = TestEnv::new(backend).await;
    let s = store::open(&castellan::app::store_options(&env.config()))
        .await
        .unwrap();
    let t = truncate_to_millis(OffsetDateTime::now_utc());
    let meta = RequestMeta {
        request_id: "order".into(),
        ip: "192.0.2.9".into(),
        user_agent: "audit-order-test".into(),
    };
    // Read the clock at t+5s, t and t+7s, but reach the chain in this order.
    for (at, n) in [
        (t + Duration::from_secs(5), 1),
        (t, 2),
        (t + Duration::from_secs(7), 3),
    ] {
        audit::record(
            &*s,
            at,
            EventKind::LoginFailed,
            None,
            &meta,
            json!({ "n": n }),
        )
        .await
        .unwrap();
    }
    let events = s
        .list_events(&EventFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let listed: Vec<(i64, OffsetDateTime)> = events.iter().map(|e| (e.seq, e.at)).collect();
    assert_eq!(listed.len(), 3);
    assert!(
        listed
            .windows(2)
            .all(|w| w[0].0 > w[1].0 && w[0].1 >= w[1].1),
        "newest first by chain position must also be newest first by time: {listed:?}"
    );
    // The late one takes its predecessor's time; the others keep their own.
    assert_eq!(
        events.iter().map(|e| e.at).collect::<Vec<_>>(),
        vec![
            t + Duration::from_secs(7),
            t + Duration::from_secs(5),
            t + Duration::from_secs(5)
        ]
    );
    // The chain covers the time actually stored.
    let report = chain::verify(&*s, castellan::app::audit_sealer(&env.config()))
        .await
        .unwrap();
    assert!(report.is_ok(), "the chain verifies: {:?}", report.err());
}
