//! The grants: authorization requests, password login, code exchange, refresh, userinfo,
//! introspection. One file per flow; this one holds the types and the provider itself.

mod authorize;
mod device;
mod introspect;
mod refresh;
mod token;
mod upstream;

pub use device::{DeviceAuthorization, normalize_user_code};
pub use refresh::{SessionInfo, sessions};
pub use upstream::ConnectorInfo;

use std::sync::{Arc, RwLock};

use keygate_config::ProviderSettings;
use keygate_store::Store;
use keygate_store::model::{AuthCode, AuthRequest, Identity, RefreshToken};
use serde::Serialize;
use serde_json::{Value, json};

use crate::claims::{Audience, FederatedClaims, IdTokenClaims, dex_subject};
use crate::clients::{Client, ClientAuth, ClientRegistry};
use crate::jose::{half_hash, s256};
use crate::users::{LoginResult, UserDirectory};
use crate::{
    Clock, ErrorCode, KeyManager, OAuthError, ProviderError, Scopes, discovery, random_id,
};

/// Upper bounds on what we parse, so that garbage cannot cost us memory or CPU.
const MAX_PARAM: usize = 2048;
const MAX_TOKEN: usize = 512;

/// The query of an authorization request.
#[derive(Debug, Clone, Default)]
pub struct AuthorizeParams {
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub response_type: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
}

/// Why an authorization request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// The client or redirect URI cannot be trusted: show the error, never redirect.
    Page(OAuthError),
    /// The redirect URI is valid: send the error back to the client there.
    Redirect { url: String, error: OAuthError },
}

/// The result of a password login attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    /// Redirect the browser here (the client's redirect URI with `code` or `error`).
    Redirect(String),
    /// Wrong login or password: show the form again.
    InvalidCredentials,
    /// Too many attempts: refused before the password was checked. Try again after this many
    /// seconds.
    RateLimited { retry_after: i64 },
}

/// A token endpoint request, already parsed from the form.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
    pub device_code: Option<String>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub id_token: String,
}

pub struct Provider {
    settings: ProviderSettings,
    store: Store,
    keys: KeyManager,
    clients: ClientRegistry,
    users: UserDirectory,
    clock: Arc<dyn Clock>,
    discovery: RwLock<Discovery>,
    metrics: crate::Metrics,
    ip_limiter: crate::IpLimiter,
    connectors: Vec<Arc<dyn crate::Connector>>,
}

fn append_query(uri: &str, params: &[(&str, &str)]) -> String {
    let encoded = serde_urlencoded_pairs(params);
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{encoded}")
}

fn serde_urlencoded_pairs(params: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().filter(|(_, v)| !v.is_empty()))
        .finish()
}

/// RFC 7636: 43 to 128 characters of `[A-Za-z0-9-._~]`.
fn valid_pkce_value(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

fn too_long(v: &Option<String>, max: usize) -> bool {
    v.as_ref().is_some_and(|s| s.len() > max)
}

/// The discovery document, and the key algorithms it lists.
struct Discovery {
    algorithms: Arc<[String]>,
    bytes: Arc<[u8]>,
}

impl Provider {
    pub fn new(
        settings: ProviderSettings,
        store: Store,
        keys: KeyManager,
        clients: ClientRegistry,
        users: UserDirectory,
        clock: Arc<dyn Clock>,
        connectors: Vec<Arc<dyn crate::Connector>>,
    ) -> Self {
        let algorithms = keys.algorithms();
        let discovery = RwLock::new(Discovery {
            bytes: discovery::document(&settings.issuer, &algorithms).into(),
            algorithms,
        });
        let settings_bf = settings.brute_force.clone();
        Self {
            settings,
            store,
            keys,
            clients,
            users,
            clock,
            discovery,
            metrics: crate::Metrics::default(),
            connectors,
            ip_limiter: crate::IpLimiter::new(
                settings_bf.per_ip_attempts,
                settings_bf.per_ip_refill_every,
            ),
        }
    }

    pub fn metrics(&self) -> &crate::Metrics {
        &self.metrics
    }

    pub fn settings(&self) -> &ProviderSettings {
        &self.settings
    }
    pub fn now(&self) -> i64 {
        self.clock.now()
    }
    pub fn store(&self) -> &Store {
        &self.store
    }
    pub fn client(&self, id: &str) -> Option<Arc<Client>> {
        self.clients.get(id)
    }
    /// The discovery document, serialized again only when the published keys' algorithms change
    /// (a change of `signing.algorithm`, on this replica or another one).
    pub fn discovery_bytes(&self) -> Arc<[u8]> {
        let algorithms = self.keys.algorithms();
        // The key state's own list: the same allocation until the keys change.
        if let Ok(cached) = self.discovery.read()
            && Arc::ptr_eq(&cached.algorithms, &algorithms)
        {
            return cached.bytes.clone();
        }
        let bytes: Arc<[u8]> = discovery::document(&self.settings.issuer, &algorithms).into();
        if let Ok(mut cached) = self.discovery.write() {
            *cached = Discovery {
                algorithms,
                bytes: bytes.clone(),
            };
        }
        bytes
    }
    pub fn jwks_bytes(&self) -> Arc<[u8]> {
        self.keys.jwks_bytes()
    }
    pub fn endpoint(&self, path: &str) -> String {
        discovery::endpoint(&self.settings.issuer, path)
    }
    pub fn has_local_users(&self) -> bool {
        !self.users.is_empty()
    }

    /// Key rotation and garbage collection; the server calls this every few seconds.
    pub async fn maintain(&self) -> Result<u64, ProviderError> {
        let now = self.now();
        self.keys.refresh(now).await?;
        self.ip_limiter.prune(now);
        Ok(self.store.collect_garbage(now).await?)
    }

    pub async fn ready(&self) -> bool {
        self.store.ping().await.is_ok()
    }
}
