//! Wires configuration, storage and the protocol core into a ready [`Provider`].

use std::sync::Arc;

use keygate_config::{Config, StorageConfig};
use keygate_oidc::{Client, ClientRegistry, Clock, KeyManager, Provider, UserDirectory};
use keygate_store::{MemoryBackend, PostgresBackend, SqliteBackend, Store, StoreError};

/// The id of the built-in client behind the `/demo` page.
pub const DEMO_CLIENT_ID: &str = "keygate-demo";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Provider(#[from] keygate_oidc::ProviderError),
    #[error("{0}")]
    Unsupported(String),
}

pub struct Built {
    pub provider: Provider,
    /// Clients whose secret Keygate generated during this start.
    pub generated_secrets: Vec<String>,
}

/// Opens the configured storage; with `create`, a missing SQLite file is created.
pub async fn open_store(storage: &StorageConfig, create: bool) -> Result<Store, BuildError> {
    Ok(match storage {
        StorageConfig::Memory => Store::new(Arc::new(MemoryBackend::new())),
        StorageConfig::Sqlite { path } => {
            let path = path.to_str().ok_or_else(|| {
                BuildError::Unsupported("the SQLite path is not valid UTF-8".into())
            })?;
            let backend = if create {
                SqliteBackend::open(path).await?
            } else {
                SqliteBackend::open_existing(path).await?
            };
            Store::new(Arc::new(backend))
        }
        StorageConfig::Postgres { url } => {
            Store::new(Arc::new(PostgresBackend::open(url.expose()).await?))
        }
    })
}

pub async fn build_provider(config: &Config, clock: Arc<dyn Clock>) -> Result<Built, BuildError> {
    let settings = config.provider.clone();
    let store = open_store(&settings.storage, true).await?;
    let now = clock.now();
    let keys =
        KeyManager::start(store.clone(), settings.signing, settings.id_token_ttl, now).await?;
    let mut specs = config.clients.clone();
    specs.extend(builtin_clients(config));
    let (mut clients, generated_secrets) = ClientRegistry::build(&specs, &store, now).await?;
    if settings.demo {
        clients.insert(Client {
            id: DEMO_CLIENT_ID.into(),
            name: "Keygate demo".into(),
            secret: None,
            public: true,
            redirect_uris: vec![keygate_oidc_endpoint(&settings.issuer, "demo/callback")],
            trusted_peers: Vec::new(),
            allowed_groups: Vec::new(),
            allowed_emails: Vec::new(),
        });
    }
    let users = keygate_oidc::accounts::resolve_expiry(
        &store,
        keygate_oidc::LOCAL_CONNECTOR,
        &config.users,
        now,
    )
    .await?;
    let users = tokio::task::spawn_blocking(move || {
        UserDirectory::new(&users, keygate_oidc::default_hashing_permits())
    })
    .await
    .map_err(|e| BuildError::Unsupported(e.to_string()))?;
    let connectors = config
        .connectors
        .iter()
        .map(|c| {
            keygate_connectors::build(c)
                .map_err(|e| BuildError::Unsupported(format!("DexProvider {}: {e}", c.id)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let provider = Provider::new(settings, store, keys, clients, users, clock, connectors);
    Ok(Built {
        provider,
        generated_secrets,
    })
}

/// The client of the kubeconfig generator page.
pub const KUBECONFIG_CLIENT_ID: &str = "kubeconfig-generator";
/// The client of `keygate login` (kubectl's exec plugin): public, loopback redirects and the
/// device flow, like Dex's rules for public clients without redirect URIs.
pub const LOGIN_CLIENT_ID: &str = "keygate-login";

/// The clients Keygate adds to the configured ones: `keygate login`'s, and the kubeconfig
/// generator's when clusters are configured. Both may request tokens for kube-apiserver
/// (`aud` gains `kubernetes`).
pub fn builtin_clients(config: &Config) -> Vec<keygate_config::ClientSpec> {
    let issuer = &config.provider.issuer;
    let generator = !config.provider.kubeconfig_generator.is_empty();
    let client = |id: &str, name: &str, redirect_uris: Vec<String>| keygate_config::ClientSpec {
        id: id.into(),
        legacy_id: None,
        display_name: name.into(),
        secret: None,
        public: true,
        redirect_uris,
        trusted_peers: Vec::new(),
        allowed_groups: Vec::new(),
        allowed_emails: Vec::new(),
        allow_access_to_kubernetes: true,
    };
    let mut clients = vec![client(
        LOGIN_CLIENT_ID,
        "kubectl (keygate login)",
        Vec::new(),
    )];
    if generator {
        clients.push(client(
            KUBECONFIG_CLIENT_ID,
            "Kubeconfig generator",
            vec![keygate_oidc_endpoint(issuer, "kubeconfig/callback")],
        ));
    }
    clients
}

fn keygate_oidc_endpoint(issuer: &str, path: &str) -> String {
    format!("{}/{path}", issuer.trim_end_matches('/'))
}
