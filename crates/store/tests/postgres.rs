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
