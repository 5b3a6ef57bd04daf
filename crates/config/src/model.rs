//! The validated runtime model the rest of Keygate consumes.

use std::path::PathBuf;

use crate::{PasswordHash, Secret};

/// Everything `keygate serve` needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The files the configuration was read from.
    pub sources: Vec<PathBuf>,
    pub provider: ProviderSettings,
    pub users: Vec<StaticUser>,
    pub clients: Vec<ClientSpec>,
    /// Upstream identity providers (`DexProvider`), in manifest order.
    pub connectors: Vec<crate::ConnectorSpec>,
    /// Non-fatal findings (settings with no effect here, dangling group members...).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// Exactly as configured (trailing slash kept): it is the `iss` claim.
    pub issuer: String,
    pub listen: String,
    /// A second address serving only `/metrics` (`spec.metricsListen`); then the main address
    /// does not serve it.
    pub metrics_listen: Option<String>,
    pub tls: Option<TlsFiles>,
    pub storage: StorageConfig,
    pub id_token_ttl: i64,
    /// `accessTokenFormat: JWT`: a second JWT as the access token, with `at_hash` in the ID token
    /// (Dex's way); by default the access token is the ID token itself.
    pub separate_access_token: bool,
    pub auth_request_ttl: i64,
    pub auth_code_ttl: i64,
    pub refresh: RefreshPolicy,
    pub signing: SigningSettings,
    pub kubeconfig_generator: Vec<KubeconfigCluster>,
    pub high_availability: bool,
    pub logging: Logging,
    pub frontend: Frontend,
    pub demo: bool,
    pub brute_force: BruteForce,
    pub lockout: Option<Lockout>,
}

/// Login rate limits (DESIGN.md §3): a bucket per connector and username shared by all replicas,
/// and a per-address bucket in each replica for failed logins and failed token requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BruteForce {
    pub attempts: u32,
    /// Seconds for one attempt to come back.
    pub refill_every: i64,
    pub per_ip_attempts: u32,
    pub per_ip_refill_every: i64,
    /// Peers whose `X-Forwarded-For`/`X-Real-IP` are believed.
    pub trusted_proxies: Vec<crate::IpNet>,
}

impl Default for BruteForce {
    fn default() -> Self {
        Self {
            attempts: 20,
            refill_every: 6,
            per_ip_attempts: 100,
            per_ip_refill_every: 1,
            trusted_proxies: Vec::new(),
        }
    }
}

/// `passwordPolicy.lockout`: after `max_attempts` failed logins in a row, the user is locked for
/// `lock_duration` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    pub max_attempts: u32,
    pub lock_duration: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    Memory,
    Sqlite { path: PathBuf },
    Postgres { url: Secret },
}

/// Refresh-token policy (durations in seconds). Defaults follow Deckhouse's Dex configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    pub reuse_interval: i64,
    /// Idle expiry; `None` means never.
    pub valid_if_not_used_for: Option<i64>,
    /// Expiry counted from the family's creation; `None` means never.
    pub absolute_lifetime: Option<i64>,
    pub disable_rotation: bool,
    /// Replay detection: an obsolete token presented outside the window revokes the family.
    pub revoke_on_reuse: bool,
    /// At most this many families per user and client; the oldest goes first.
    pub max_sessions_per_client: Option<u32>,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            reuse_interval: 120,
            valid_if_not_used_for: Some(2190 * 3600),
            absolute_lifetime: Some(24 * 3600),
            disable_rotation: false,
            revoke_on_reuse: false,
            max_sessions_per_client: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    Rs256,
    Es256,
}

impl SigningAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::Rs256 => "RS256",
            SigningAlgorithm::Es256 => "ES256",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigningSettings {
    pub algorithm: SigningAlgorithm,
    /// Seconds between key rotations.
    pub rotation_period: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeconfigCluster {
    pub id: String,
    pub master_uri: String,
    pub master_ca: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logging {
    pub level: String,
    pub json: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frontend {
    pub product_name: Option<String>,
    pub logo_url: Option<String>,
    pub extra_css_url: Option<String>,
    pub templates_dir: Option<PathBuf>,
}

/// A `User` manifest, with its groups resolved through nested `Group`s.
#[derive(Debug, Clone)]
pub struct StaticUser {
    /// `metadata.name`: the stable user id (Dex's `userID`).
    pub name: String,
    /// Lower-cased.
    pub email: String,
    pub password: PasswordHash,
    /// `Group.spec.name`s, sorted, without duplicates.
    pub groups: Vec<String>,
    /// Unix seconds after which the user may no longer log in or refresh.
    pub expires_at: Option<i64>,
    /// `spec.ttl` in seconds when no start is known from the manifest: it counts from the moment
    /// Keygate first saw the user (kept in storage).
    pub ttl: Option<i64>,
}

/// A `DexClient` manifest.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// `dex-client-<name>@<namespace>`.
    pub id: String,
    /// Deckhouse also registers `dex-client-<name>:<namespace>`; accepted as an alias.
    pub legacy_id: Option<String>,
    pub display_name: String,
    /// `None` for public clients, and for confidential clients whose secret Keygate generates.
    pub secret: Option<Secret>,
    pub public: bool,
    pub redirect_uris: Vec<String>,
    pub trusted_peers: Vec<String>,
    pub allowed_groups: Vec<String>,
    pub allowed_emails: Vec<String>,
    /// Annotated to be trusted by the built-in `kubernetes` client.
    pub allow_access_to_kubernetes: bool,
}
