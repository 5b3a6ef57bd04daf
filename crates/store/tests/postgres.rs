//! The conformance suite on a real PostgreSQL, started here on a free port and stopped by PID.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use keygate_store::testing::Postgres;
use keygate_store::{PostgresBackend, Store, conformance};

static DB: AtomicUsize = AtomicUsize::new(0);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backend_conforms() {
    let pg = Postgres::start();
    let admin = sqlx::PgPool::connect(&pg.url("postgres")).await.unwrap();
    let base = pg.url("");
    conformance::run(|| {
        let admin = admin.clone();
        let base = base.clone();
        async move {
            let name = format!("conformance_{}", DB.fetch_add(1, Ordering::SeqCst));
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&admin)
                .await
                .unwrap();
            Store::new(Arc::new(
                PostgresBackend::open(&format!("{base}{name}"))
                    .await
                    .unwrap(),
            ))
        }
    })
    .await;
    admin.close().await;
}

/// `sslmode=verify-full` with the server's CA: the connection is encrypted and the server's
/// certificate checked; a CA that did not issue it is refused at start, with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_verifies_the_server() {
    let (pg, ca) = Postgres::start_tls();
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url("postgres"),
        ca.display()
    );
    let store = Store::new(Arc::new(PostgresBackend::open(&url).await.unwrap()));
    drop(store);
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(ssl, "the connection is encrypted");
    pool.close().await;

    // Another CA: refused.
    let (_other, other_ca) = Postgres::start_tls();
    let wrong = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url("postgres"),
        other_ca.display()
    );
    let err = PostgresBackend::open(&wrong).await.err().expect("refused");
    let text = err.to_string();
    eprintln!("wrong CA: {text}");
    assert!(
        text.to_lowercase().contains("certificate") || text.to_lowercase().contains("tls"),
        "{text}"
    );
}
