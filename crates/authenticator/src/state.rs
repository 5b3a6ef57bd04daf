use std::collections::HashMap;
use std::sync::Arc;

use keygate_config::{AuthenticatorSettings, SessionStoreConfig};
use keygate_oidc::Clock;
use tokio::sync::Mutex;

use crate::handlers::SessionRecord;
use crate::metrics::AuthMetrics;
use crate::provider_client::ProviderClient;
use crate::proxy::Upstream;
use crate::recent::Recent;
use crate::session::{MemoryStore, RedisStore, SessionStore};
use keygate_oidc::Sealer;

/// What every authenticator handler gets.
#[derive(Clone)]
pub struct AuthState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub settings: AuthenticatorSettings,
    /// Seals the session cookie.
    pub cookies: Sealer,
    /// Seals the short-lived sign-in state cookie.
    pub states: Sealer,
    pub store: Box<dyn SessionStore>,
    /// Sessions opened in the current second, by raw cookie.
    pub recent: Recent<SessionRecord>,
    pub provider: ProviderClient,
    /// One refresh per session at a time in this process.
    pub refreshing: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    pub upstream: Option<Upstream>,
    pub clock: Arc<dyn Clock>,
    /// The themed pages (403, sign-in errors), the provider's templates.
    pub pages: keygate_pages::Pages,
    pub metrics: AuthMetrics,
}

pub fn build_state(
    settings: AuthenticatorSettings,
    clock: Arc<dyn Clock>,
) -> Result<AuthState, String> {
    let store: Box<dyn SessionStore> = match &settings.session_store {
        SessionStoreConfig::Memory => Box::new(MemoryStore::default()),
        SessionStoreConfig::Redis { url, ca_file } => {
            Box::new(RedisStore::new(url.expose(), ca_file.as_deref())?)
        }
    };
    let secret = settings.cookie_secret.expose().as_bytes().to_vec();
    let upstream = settings
        .upstream
        .as_deref()
        .map(Upstream::new)
        .transpose()?;
    let pages = keygate_pages::Pages::new(
        &settings.frontend,
        &settings.issuer,
        "/dex-authenticator/static/".into(),
    )
    .map_err(|e| format!("cannot load the page templates: {e}"))?;
    Ok(AuthState {
        inner: Arc::new(Inner {
            pages,
            metrics: AuthMetrics::default(),
            cookies: Sealer::derive(&secret, "session-cookie"),
            states: Sealer::derive(&secret, "sign-in-state"),
            provider: ProviderClient::new(&settings)?,
            store,
            recent: if settings.session_cache {
                Recent::default()
            } else {
                Recent::with_capacity(0)
            },
            refreshing: Mutex::new(HashMap::new()),
            upstream,
            clock,
            settings,
        }),
    })
}
