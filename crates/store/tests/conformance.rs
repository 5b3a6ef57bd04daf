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
