//! Where sessions (sealed ID tokens and claims) live: Redis, shared by nothing but this replica in
//! Deckhouse's layout, or process memory. Every call is bounded in time: a slow or dead Redis
//! never blocks requests. While Redis is down, sessions written then are kept in this process's
//! memory, so each costs one refresh at the provider, not one per request.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Mutex;

/// How long one store call may take before we treat the store as unavailable.
const STORE_TIMEOUT: Duration = Duration::from_millis(300);
/// After a failure, how long before we try to reconnect to Redis.
const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);
/// Most sessions held in process memory; past it, new ones are not kept (each then costs a
/// refresh per request) rather than growing without bound.
const MEMORY_CAPACITY: usize = 100_000;

#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// `None` when missing or when the store is unavailable (the caller then refreshes).
    async fn get(&self, ticket: &str) -> Option<Vec<u8>>;
    /// Best effort: a failed write only costs a refresh later.
    async fn put(&self, ticket: &str, value: Vec<u8>, ttl_seconds: u64);
    async fn delete(&self, ticket: &str);
    /// Whether the store answers (for /readyz).
    async fn healthy(&self) -> bool;
    /// Calls that failed or timed out, for `/metrics` (`None`: this store cannot fail).
    fn failures(&self) -> Option<&keygate_oidc::Counter> {
        None
    }
}

#[derive(Default)]
pub struct MemoryStore {
    entries: Mutex<HashMap<String, (Vec<u8>, Instant)>>,
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn get(&self, ticket: &str) -> Option<Vec<u8>> {
        let mut entries = self.entries.lock().await;
        match entries.get(ticket) {
            Some((v, until)) if *until > Instant::now() => Some(v.clone()),
            Some(_) => {
                entries.remove(ticket);
                None
            }
            None => None,
        }
    }

    async fn put(&self, ticket: &str, value: Vec<u8>, ttl_seconds: u64) {
        let mut entries = self.entries.lock().await;
        let now = Instant::now();
        if entries.len() >= MEMORY_CAPACITY && !entries.contains_key(ticket) {
            entries.retain(|_, (_, until)| *until > now);
            if entries.len() >= MEMORY_CAPACITY {
                tracing::warn!(
                    capacity = MEMORY_CAPACITY,
                    "in-memory session store full; this session is not kept"
                );
                return;
            }
        }
        entries.insert(
            ticket.to_owned(),
            (value, now + Duration::from_secs(ttl_seconds)),
        );
    }

    async fn delete(&self, ticket: &str) {
        self.entries.lock().await.remove(ticket);
    }

    async fn healthy(&self) -> bool {
        true
    }
}

pub struct RedisStore {
    client: redis::Client,
    /// Sessions written while Redis could not take them.
    fallback: MemoryStore,
    conn: Mutex<Option<redis::aio::ConnectionManager>>,
    last_failure: Mutex<Option<Instant>>,
    /// After a failed call, requests skip Redis until then instead of each waiting out a timeout.
    down_until: std::sync::Mutex<Option<Instant>>,
    failures: keygate_oidc::Counter,
}

fn key(ticket: &str) -> String {
    format!("keygate:session:{ticket}")
}

impl RedisStore {
    /// `ca_file`: PEM CA certificates to trust for `rediss://` instead of the system's.
    pub fn new(url: &str, ca_file: Option<&std::path::Path>) -> Result<Self, String> {
        let client = match ca_file {
            None => redis::Client::open(url),
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("spec.sessionStore.caFile {}: {e}", path.display()))?;
                redis::Client::build_with_tls(
                    url,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
            }
        }
        .map_err(|e| format!("invalid Redis URL: {e}"))?;
        Ok(Self {
            client,
            fallback: MemoryStore::default(),
            conn: Mutex::new(None),
            last_failure: Mutex::new(None),
            down_until: std::sync::Mutex::new(None),
            failures: keygate_oidc::Counter::default(),
        })
    }

    /// A connection, (re)connecting at most once per backoff period.
    async fn connection(&self) -> Option<redis::aio::ConnectionManager> {
        if let Some(c) = self.conn.lock().await.as_ref() {
            return Some(c.clone());
        }
        {
            let mut last = self.last_failure.lock().await;
            if last.is_some_and(|t| t.elapsed() < RECONNECT_BACKOFF) {
                return None;
            }
            *last = Some(Instant::now());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(STORE_TIMEOUT))
            .set_response_timeout(Some(STORE_TIMEOUT))
            .set_number_of_retries(1);
        match tokio::time::timeout(
            STORE_TIMEOUT * 2,
            self.client.get_connection_manager_with_config(config),
        )
        .await
        {
            Ok(Ok(c)) => {
                *self.last_failure.lock().await = None;
                *self.conn.lock().await = Some(c.clone());
                Some(c)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Redis unavailable; sessions fall back to refreshing");
                None
            }
            Err(_) => {
                tracing::warn!("Redis connection timed out; sessions fall back to refreshing");
                None
            }
        }
    }

    async fn run<T, F, Fut>(&self, what: &str, op: F) -> Option<T>
    where
        F: FnOnce(redis::aio::ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let skip = self
            .down_until
            .lock()
            .ok()
            .and_then(|d| *d)
            .is_some_and(|until| Instant::now() < until);
        if skip {
            return None;
        }
        let result = match self.connection().await {
            None => None,
            Some(conn) => match tokio::time::timeout(STORE_TIMEOUT, op(conn)).await {
                Ok(Ok(v)) => Some(v),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, op = what, "Redis call failed");
                    None
                }
                Err(_) => {
                    tracing::warn!(op = what, "Redis call timed out");
                    None
                }
            },
        };
        if result.is_none() {
            self.failures.inc();
        }
        if let Ok(mut d) = self.down_until.lock() {
            *d = result.is_none().then(|| Instant::now() + RECONNECT_BACKOFF);
        }
        result
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn get(&self, ticket: &str) -> Option<Vec<u8>> {
        let k = key(ticket);
        let answer = self
            .run("GET", |mut c| async move {
                redis::cmd("GET")
                    .arg(&k)
                    .query_async::<Option<Vec<u8>>>(&mut c)
                    .await
            })
            .await;
        match answer {
            Some(Some(v)) => Some(v),
            // Missing in Redis, or Redis unreachable: perhaps written during an outage.
            Some(None) | None => self.fallback.get(ticket).await,
        }
    }

    async fn put(&self, ticket: &str, value: Vec<u8>, ttl_seconds: u64) {
        let k = key(ticket);
        let ttl = ttl_seconds.max(1);
        let sealed = value.as_slice();
        let stored = self
            .run("SET", |mut c| async move {
                redis::cmd("SET")
                    .arg(&k)
                    .arg(sealed)
                    .arg("EX")
                    .arg(ttl)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
        if stored.is_some() {
            // Redis has the newer record; an older copy here must not outlive it.
            self.fallback.delete(ticket).await;
        } else {
            self.fallback.put(ticket, value, ttl).await;
        }
    }

    async fn delete(&self, ticket: &str) {
        self.fallback.delete(ticket).await;
        let k = key(ticket);
        let _ = self
            .run("DEL", |mut c| async move {
                redis::cmd("DEL").arg(&k).query_async::<i64>(&mut c).await
            })
            .await;
    }

    fn failures(&self) -> Option<&keygate_oidc::Counter> {
        Some(&self.failures)
    }

    async fn healthy(&self) -> bool {
        self.run("PING", |mut c| async move {
            redis::cmd("PING").query_async::<String>(&mut c).await
        })
        .await
        .is_some()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn memory_store_stays_bounded() {
        let store = MemoryStore::default();
        for i in 0..MEMORY_CAPACITY {
            store.put(&format!("t{i}"), vec![1], 60).await;
        }
        store.put("one-too-many", vec![2], 60).await;
        assert_eq!(store.get("one-too-many").await, None, "not kept when full");
        // A session already held can still be updated, and expired ones make room.
        store.put("t0", vec![3], 60).await;
        assert_eq!(store.get("t0").await, Some(vec![3]));
        store.put("t1", vec![4], 0).await;
        store.put("after-expiry", vec![5], 60).await;
        assert_eq!(store.get("after-expiry").await, Some(vec![5]));
    }
}
