#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use keygate_store::{MemoryBackend, SqliteBackend, Store, conformance};

#[tokio::test]
async fn memory_backend_conforms() {
    conformance::run(|| async { Store::new(Arc::new(MemoryBackend::new())) }).await;
}

static DB_COUNTER: AtomicUsize = AtomicUsize::new(0);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backend_conforms() {
    let dir = std::env::temp_dir().join(format!("keygate-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir2 = dir.clone();
    conformance::run(move || {
        let path = dir2.join(format!(
            "db-{}.sqlite",
            DB_COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        async move {
            let backend = SqliteBackend::open(path.to_str().unwrap()).await.unwrap();
            Store::new(Arc::new(backend))
        }
    })
    .await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn sqlite_data_survives_reopen() {
    use keygate_store::model::GeneratedClientSecret;
    let dir = std::env::temp_dir().join(format!("keygate-reopen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("db.sqlite");
    let path = path.to_str().unwrap();
    let secret = GeneratedClientSecret {
        id: "c".into(),
        secret: "s".into(),
        created_at: 1,
    };
    {
        let store = Store::new(Arc::new(SqliteBackend::open(path).await.unwrap()));
        store.create(&secret).await.unwrap();
    }
    let store = Store::new(Arc::new(SqliteBackend::open(path).await.unwrap()));
    assert_eq!(
        store.get::<GeneratedClientSecret>("c").await.unwrap(),
        Some(secret)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Databases written by Keygate before the SQLite backend moved off sqlx: the schema came from
/// sqlx's migrator (which also left its `_sqlx_migrations` table). They open and read as before.
#[tokio::test]
async fn sqlite_database_from_the_sqlx_migrator_opens() {
    use keygate_store::model::GeneratedClientSecret;
    let dir = std::env::temp_dir().join(format!("keygate-old-db-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("old.sqlite");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
                 installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL,
                 checksum BLOB NOT NULL, execution_time BIGINT NOT NULL);
             INSERT INTO _sqlx_migrations VALUES (1, 'objects', CURRENT_TIMESTAMP, 1, x'00', 1);
             CREATE TABLE objects (kind TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
                 owner TEXT, expires_at INTEGER, data TEXT NOT NULL, PRIMARY KEY (kind, id));
             CREATE INDEX objects_owner ON objects (kind, owner) WHERE owner IS NOT NULL;
             CREATE INDEX objects_expiry ON objects (expires_at) WHERE expires_at IS NOT NULL;
             INSERT INTO objects VALUES ('client', 'old', 3, NULL, NULL,
                 '{\"id\":\"old\",\"secret\":\"kept\",\"created_at\":7}');",
        )
        .unwrap();
    }
    let store = Store::new(Arc::new(
        SqliteBackend::open_existing(path.to_str().unwrap())
            .await
            .unwrap(),
    ));
    assert_eq!(
        store.get::<GeneratedClientSecret>("old").await.unwrap(),
        Some(GeneratedClientSecret {
            id: "old".into(),
            secret: "kept".into(),
            created_at: 7,
        })
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
