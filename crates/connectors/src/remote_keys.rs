//! A remote provider's signing keys (JWKS), for verifying its tokens as a relying party: fetched
//! on first use and fetched again, at most every 10 s, when a token is signed by a key we do not
//! have yet (the provider rotated).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Mutex;

const MIN_REFETCH: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct RemoteKeys {
    cache: RwLock<Arc<Vec<Value>>>,
    fetched: Mutex<Option<Instant>>,
}

impl RemoteKeys {
    async fn keys(
        &self,
        http: &reqwest::Client,
        jwks_uri: &str,
        force: bool,
    ) -> Result<Arc<Vec<Value>>, String> {
        let mut fetched = self.fetched.lock().await;
        let current = self.cache.read().map(|c| c.clone()).unwrap_or_default();
        if !current.is_empty() && (!force || fetched.is_some_and(|t| t.elapsed() < MIN_REFETCH)) {
            return Ok(current);
        }
        let body: Value = http
            .get(jwks_uri)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .error_for_status()
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let keys = Arc::new(
            body.get("keys")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        );
        if let Ok(mut c) = self.cache.write() {
            *c = keys.clone();
        }
        *fetched = Some(Instant::now());
        Ok(keys)
    }

    /// The payload of `token` if one of the provider's keys verifies it (`Ok(None)`: none does);
    /// `Err` when the keys cannot be fetched.
    pub async fn verify(
        &self,
        http: &reqwest::Client,
        jwks_uri: &str,
        token: &str,
    ) -> Result<Option<Vec<u8>>, String> {
        if let Some(p) = keygate_oidc::verify_jws(token, &self.keys(http, jwks_uri, false).await?) {
            return Ok(Some(p));
        }
        Ok(keygate_oidc::verify_jws(
            token,
            &self.keys(http, jwks_uri, true).await?,
        ))
    }
}
