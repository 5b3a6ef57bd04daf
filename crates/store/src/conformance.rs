//! The one conformance suite every backend must pass. Backend crates and tests call [`run`] with a
//! factory that returns a fresh, empty store.

use std::future::Future;

use crate::model::{AuthCode, Identity, RefreshToken, SigningKeys, StoredSigningKey};
use crate::{Store, StoreError, UpdateError};

fn identity(user: &str) -> Identity {
    Identity {
        user_id: user.into(),
        username: user.into(),
        preferred_username: user.into(),
        email: format!("{user}@example.com"),
        email_verified: true,
        groups: vec!["devs".into()],
    }
}

fn refresh(id: &str, user: &str, expires_at: i64) -> RefreshToken {
    RefreshToken {
        id: id.into(),
        token: format!("secret-{id}"),
        obsolete_token: None,
        client_id: "app".into(),
        connector_id: "local".into(),
        scopes: vec!["openid".into(), "offline_access".into()],
        nonce: None,
        identity: identity(user),
        connector_data: None,
        created_at: 100,
        last_used: 100,
        expires_at,
    }
}

fn code(id: &str, expires_at: i64) -> AuthCode {
    AuthCode {
        id: id.into(),
        client_id: "app".into(),
        redirect_uri: "https://app.example.com/cb".into(),
        scopes: vec!["openid".into()],
        nonce: Some("n".into()),
        code_challenge: None,
        code_challenge_method: None,
        connector_id: "local".into(),
        identity: identity("jane"),
        auth_time: 100,
        expires_at,
        connector_data: None,
        redeemed: false,
        refresh_token_id: None,
    }
}

/// Runs every check against stores made by `fresh`. Panics (it is a test suite) on the first failure.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub async fn run<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    create_get_delete(&fresh().await).await;
    compare_and_swap(&fresh().await).await;
    update_retries_concurrent_writers(&fresh().await).await;
    update_refusals_change_nothing(&fresh().await).await;
    list_by_owner(&fresh().await).await;
    garbage_collection(&fresh().await).await;
    rate_limit_buckets(&fresh().await).await;
}

#[allow(clippy::unwrap_used, clippy::panic)]
async fn create_get_delete(store: &Store) {
    let token = refresh("r1", "jane", 1_000);
    store.create(&token).await.unwrap();
    assert_eq!(
        store.get::<RefreshToken>("r1").await.unwrap(),
        Some(token.clone())
    );
    assert!(matches!(
        store.create(&token).await,
        Err(StoreError::AlreadyExists)
    ));
    // Kinds are separate namespaces: an auth code may share an id with a refresh token.
    store.create(&code("r1", 1_000)).await.unwrap();
    assert!(
        store
            .get::<RefreshToken>("missing")
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.delete::<RefreshToken>("r1").await.unwrap());
    assert!(!store.delete::<RefreshToken>("r1").await.unwrap());
    assert!(store.get::<RefreshToken>("r1").await.unwrap().is_none());
    assert!(store.get::<AuthCode>("r1").await.unwrap().is_some());
    store.ping().await.unwrap();
}

#[allow(clippy::unwrap_used)]
async fn compare_and_swap(store: &Store) {
    store.create(&code("c1", 1_000)).await.unwrap();
    let (mut stored, version) = store
        .get_versioned::<AuthCode>("c1")
        .await
        .unwrap()
        .unwrap();
    stored.redeemed = true;
    assert!(store.compare_and_swap(version, &stored).await.unwrap());
    // The same expected version now loses: exactly one redeemer wins.
    assert!(!store.compare_and_swap(version, &stored).await.unwrap());
    let (again, next) = store
        .get_versioned::<AuthCode>("c1")
        .await
        .unwrap()
        .unwrap();
    assert!(again.redeemed);
    assert_eq!(next, version + 1);
    // A swap on a missing object does nothing.
    assert!(!store.compare_and_swap(1, &code("nope", 1)).await.unwrap());
    assert!(store.get::<AuthCode>("nope").await.unwrap().is_none());
}

#[allow(clippy::unwrap_used)]
async fn update_retries_concurrent_writers(store: &Store) {
    store
        .create(&refresh("counter", "jane", 1_000))
        .await
        .unwrap();
    let writers = 24;
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .update::<RefreshToken, (), _>("counter", |mut t| {
                    t.last_used += 1;
                    Ok(t)
                })
                .await
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let t = store.get::<RefreshToken>("counter").await.unwrap().unwrap();
    assert_eq!(
        t.last_used,
        100 + writers,
        "every concurrent update must land exactly once"
    );
}

#[allow(clippy::unwrap_used, clippy::panic)]
async fn update_refusals_change_nothing(store: &Store) {
    let original = refresh("r2", "jane", 1_000);
    store.create(&original).await.unwrap();
    let refused = store
        .update::<RefreshToken, &str, _>("r2", |_| Err("no"))
        .await;
    assert!(matches!(refused, Err(UpdateError::Rejected("no"))));
    assert_eq!(
        store.get::<RefreshToken>("r2").await.unwrap(),
        Some(original)
    );
    let missing = store.update::<RefreshToken, (), _>("absent", Ok).await;
    assert!(matches!(missing, Err(UpdateError::NotFound)));
    let renamed = store
        .update::<RefreshToken, (), _>("r2", |mut t| {
            t.id = "other".into();
            Ok(t)
        })
        .await;
    assert!(matches!(renamed, Err(UpdateError::Store(_))));
    assert!(store.get::<RefreshToken>("other").await.unwrap().is_none());
}

#[allow(clippy::unwrap_used)]
async fn list_by_owner(store: &Store) {
    store.create(&refresh("a", "jane", 1_000)).await.unwrap();
    store.create(&refresh("b", "jane", 1_000)).await.unwrap();
    store.create(&refresh("c", "john", 1_000)).await.unwrap();
    let jane: Vec<String> = store
        .list_owned::<RefreshToken>("local/jane")
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(jane, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(store.list::<RefreshToken>().await.unwrap().len(), 3);
    assert!(
        store
            .list_owned::<RefreshToken>("local/nobody")
            .await
            .unwrap()
            .is_empty()
    );
}

#[allow(clippy::unwrap_used)]
async fn garbage_collection(store: &Store) {
    store.create(&refresh("old", "jane", 500)).await.unwrap();
    store.create(&refresh("edge", "jane", 600)).await.unwrap();
    store.create(&refresh("young", "jane", 601)).await.unwrap();
    store.create(&code("code", 10)).await.unwrap();
    let keys = SigningKeys {
        id: SigningKeys::ID.into(),
        signing: StoredSigningKey {
            kid: "k".into(),
            alg: "RS256".into(),
            private_pkcs8: "AAAA".into(),
            created_at: 0,
        },
        next: None,
        verification: vec![],
        next_rotation: 0,
        signing_since: 0,
    };
    store.create(&keys).await.unwrap();
    assert_eq!(store.collect_garbage(600).await.unwrap(), 3);
    assert!(store.get::<RefreshToken>("young").await.unwrap().is_some());
    assert!(store.get::<RefreshToken>("edge").await.unwrap().is_none());
    assert!(
        store
            .get::<SigningKeys>(SigningKeys::ID)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.collect_garbage(600).await.unwrap(), 0);
}

#[allow(clippy::unwrap_used)]
async fn rate_limit_buckets(store: &Store) {
    // 20 tokens, one back every 6 s.
    for i in 0..20 {
        let t = store.take("login:local:jane", 1_000, 6, 20).await.unwrap();
        assert!(t.allowed, "attempt {} of 20", i + 1);
    }
    let t = store.take("login:local:jane", 1_000, 6, 20).await.unwrap();
    assert_eq!((t.allowed, t.retry_after), (false, 6));
    // Refused attempts do not dig the hole deeper.
    let t = store.take("login:local:jane", 1_003, 6, 20).await.unwrap();
    assert_eq!((t.allowed, t.retry_after), (false, 3));
    assert!(
        !store
            .take("login:local:jane", 1_005, 6, 20)
            .await
            .unwrap()
            .allowed
    );
    // After 6 s exactly one more.
    assert!(
        store
            .take("login:local:jane", 1_006, 6, 20)
            .await
            .unwrap()
            .allowed
    );
    assert!(
        !store
            .take("login:local:jane", 1_006, 6, 20)
            .await
            .unwrap()
            .allowed
    );
    // Buckets are independent.
    assert!(
        store
            .take("login:local:john", 1_006, 6, 20)
            .await
            .unwrap()
            .allowed
    );
    // Giving a token back allows one more.
    store.give_back("login:local:jane", 1_006, 6).await.unwrap();
    assert!(
        store
            .take("login:local:jane", 1_006, 6, 20)
            .await
            .unwrap()
            .allowed
    );
    store
        .give_back("login:local:nobody", 1_006, 6)
        .await
        .unwrap();
    // A full bucket is garbage: jane's is full again at 1_000 + 21 * 6 + ... ; john's at 1_012.
    assert_eq!(store.collect_garbage(1_011).await.unwrap(), 0);
    assert_eq!(store.collect_garbage(1_012).await.unwrap(), 1);
    // Concurrent takers: exactly `burst` get through.
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .take("login:local:storm", 5_000, 6, 20)
                .await
                .unwrap()
                .allowed
        }));
    }
    let mut allowed = 0;
    for t in tasks {
        allowed += usize::from(t.await.unwrap());
    }
    assert_eq!(
        allowed, 20,
        "the bucket is shared exactly under concurrency"
    );
}
