//! `sslrootcert` replaces the trusted roots (libpq's meaning): castellan's
//! own check trusts only the configured file, before the pool opens and for
//! every new pooled connection.

use std::time::Duration;

use castellan::store::postgres::server_trust::ServerTrust;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use secrecy::SecretString;

use crate::helpers::{Backend, TestEnv};
use crate::pg_cluster::{ClusterOptions, PgCluster};

fn roots(path: &std::path::Path) -> RootCertStore {
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).unwrap() {
        store.add(cert.unwrap()).unwrap();
    }
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_configured_ca_is_trusted_for_the_database() {
    let cluster = PgCluster::start_new(ClusterOptions::tls());
    let right = cluster.ca_file();
    let other = cluster.other_ca_file();
    let limit = Duration::from_secs(5);

    // The check itself: the server's CA passes, another CA does not, and a
    // store holding only another CA is not widened by anything else.
    let ok = ServerTrust::new("localhost".into(), cluster.port(), roots(&right), true).unwrap();
    ok.check(limit).await.expect("the configured CA is trusted");
    let refused =
        ServerTrust::new("localhost".into(), cluster.port(), roots(&other), true).unwrap();
    let err = refused.check(limit).await.unwrap_err().to_string();
    assert!(err.contains("sslrootcert"), "{err}");

    // verify-ca skips the name, not the CA.
    let by_ip = ServerTrust::new("127.0.0.1".into(), cluster.port(), roots(&other), false).unwrap();
    assert!(by_ip.check(limit).await.is_err());

    // End to end: castellan with sslrootcert naming another CA refuses to
    // open the pool, with the check's message.
    let url = cluster.url(
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={}", other.display()),
    );
    let mut env = TestEnv::new(Backend::Sqlite).await;
    env.set("CASTELLAN_DATABASE_URL", &url)
        .set("CASTELLAN_DB_ACQUIRE_TIMEOUT", "2s");
    let config = env.config();
    let secret = SecretString::from(url.clone());
    let err = castellan::store::postgres::PgStore::connect(
        &secret,
        &castellan::app::store_options(&config),
    )
    .await
    .err()
    .expect("refused")
    .to_string();
    assert!(err.contains("PostgreSQL"), "{err}");
    let chain = format!(
        "{:#}",
        castellan::store::postgres::PgStore::connect(
            &secret,
            &castellan::app::store_options(&config)
        )
        .await
        .err()
        .unwrap()
    );
    assert!(
        chain.contains("not signed by a CA in sslrootcert"),
        "{chain}"
    );

    // And with the right file it connects.
    let url = cluster.url(
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={}", right.display()),
    );
    env.set("CASTELLAN_DATABASE_URL", &url);
    let store = castellan::store::postgres::PgStore::connect(
        &SecretString::from(url),
        &castellan::app::store_options(&env.config()),
    )
    .await
    .expect("connects with the configured CA");
    store.pool().close().await;
}
