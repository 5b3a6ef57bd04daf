//! The manifests as users write them. Strict: unknown fields are errors.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// Kubernetes object metadata. Server-set fields are accepted (so `kubectl get -o yaml` output
/// loads) and ignored.
// Some fields are accepted for compatibility with Deckhouse and have no effect here.
#[allow(dead_code)]
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub creation_timestamp: Option<String>,
    #[serde(default)]
    pub uid: Option<Value>,
    #[serde(default)]
    pub resource_version: Option<Value>,
    #[serde(default)]
    pub generation: Option<Value>,
    #[serde(default)]
    pub managed_fields: Option<Value>,
    #[serde(default)]
    pub finalizers: Option<Value>,
    #[serde(default)]
    pub owner_references: Option<Value>,
    #[serde(default)]
    pub self_link: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeygateConfigSpec {
    pub issuer: String,
    #[serde(default)]
    pub listen: Option<String>,
    #[serde(default)]
    pub metrics_listen: Option<String>,
    #[serde(default)]
    pub tls: Option<TlsSpec>,
    #[serde(default)]
    pub storage: Option<StorageSpec>,
    #[serde(default, rename = "idTokenTTL")]
    pub id_token_ttl: Option<String>,
    #[serde(default)]
    pub access_token_format: Option<String>,
    #[serde(default, rename = "authRequestTTL")]
    pub auth_request_ttl: Option<String>,
    #[serde(default, rename = "authCodeTTL")]
    pub auth_code_ttl: Option<String>,
    #[serde(default)]
    pub refresh_tokens: Option<RefreshTokensSpec>,
    #[serde(default)]
    pub signing: Option<SigningSpec>,
    #[serde(default)]
    pub kubeconfig_generator: Option<Vec<KubeconfigClusterSpec>>,
    #[serde(default)]
    pub high_availability: Option<bool>,
    #[serde(default)]
    pub logging: Option<LoggingSpec>,
    #[serde(default)]
    pub frontend: Option<FrontendSpec>,
    #[serde(default)]
    pub demo: Option<DemoSpec>,
    #[serde(default)]
    pub brute_force: Option<BruteForceSpec>,
    #[serde(default)]
    pub password_policy: Option<PasswordPolicySpec>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BruteForceSpec {
    #[serde(default)]
    pub attempts: Option<u32>,
    #[serde(default)]
    pub refill_every: Option<String>,
    #[serde(default, rename = "perIP")]
    pub per_ip: Option<PerIpSpec>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PerIpSpec {
    #[serde(default)]
    pub attempts: Option<u32>,
    #[serde(default)]
    pub refill_every: Option<String>,
}

/// Deckhouse's `passwordPolicy`. Only `lockout` applies: Keygate never sees plain passwords set
/// by users (hashes come from manifests), so complexity, history and rotation have nothing to act on.
// Some fields are accepted for compatibility with Deckhouse and have no effect here.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordPolicySpec {
    #[serde(default)]
    pub complexity_level: Option<String>,
    #[serde(default)]
    pub password_history_limit: Option<u32>,
    #[serde(default)]
    pub rotation: Option<Value>,
    #[serde(default)]
    pub lockout: Option<LockoutSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LockoutSpec {
    pub max_attempts: u32,
    pub lock_duration: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsSpec {
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageSpec {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub url_from_env: Option<String>,
    #[serde(default)]
    pub url_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshTokensSpec {
    #[serde(default)]
    pub reuse_interval: Option<String>,
    #[serde(default)]
    pub valid_if_not_used_for: Option<String>,
    #[serde(default)]
    pub absolute_lifetime: Option<String>,
    #[serde(default)]
    pub disable_rotation: Option<bool>,
    #[serde(default)]
    pub revoke_on_reuse: Option<bool>,
    #[serde(default)]
    pub max_sessions_per_client: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SigningSpec {
    #[serde(default)]
    pub algorithm: Option<String>,
    #[serde(default)]
    pub rotation_period: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeconfigClusterSpec {
    pub id: String,
    #[serde(rename = "masterURI")]
    pub master_uri: String,
    #[serde(default, rename = "masterCA")]
    pub master_ca: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoggingSpec {
    #[serde(default)]
    pub level: Option<String>,
    #[serde(default)]
    pub format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FrontendSpec {
    #[serde(default)]
    pub product_name: Option<String>,
    #[serde(default, rename = "logoURL")]
    pub logo_url: Option<String>,
    #[serde(default, rename = "extraCSSURL")]
    pub extra_css_url: Option<String>,
    #[serde(default)]
    pub templates_dir: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DemoSpec {
    pub enabled: bool,
}

/// `ModuleConfig` `user-authn`: Deckhouse's module settings. Settings that only steer the
/// Kubernetes deployment are accepted and reported as having no effect.
// Some fields are accepted for compatibility with Deckhouse and have no effect here.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModuleConfigSpec {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub version: Option<Value>,
    #[serde(default)]
    pub settings: Option<UserAuthnSettings>,
    #[serde(default)]
    pub maintenance: Option<Value>,
    #[serde(default)]
    pub update_policy: Option<Value>,
    #[serde(default)]
    pub source: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserAuthnSettings {
    #[serde(default, rename = "idTokenTTL")]
    pub id_token_ttl: Option<String>,
    #[serde(default)]
    pub refresh_token_absolute_lifetime: Option<String>,
    #[serde(default)]
    pub kubeconfig_generator: Option<Vec<KubeconfigClusterSpec>>,
    #[serde(default)]
    pub high_availability: Option<bool>,
    #[serde(default)]
    pub password_policy: Option<PasswordPolicySpec>,
    #[serde(default, rename = "publishAPI")]
    pub publish_api: Option<Value>,
    #[serde(default, rename = "staticUsers2FA")]
    pub static_users_2fa: Option<Value>,
    #[serde(default)]
    pub node_selector: Option<Value>,
    #[serde(default)]
    pub tolerations: Option<Value>,
    #[serde(default)]
    pub ingress_class: Option<Value>,
    #[serde(default)]
    pub https: Option<Value>,
    #[serde(default)]
    pub control_plane_configurator: Option<Value>,
    #[serde(default)]
    pub resources: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserSpec {
    pub email: String,
    pub password: String,
    #[serde(default, rename = "userID")]
    pub user_id: Option<String>,
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    #[serde(default)]
    pub ttl: Option<String>,
}

/// `User.status`, written by Deckhouse; only `expireAt` matters here.
// Some fields are accepted for compatibility with Deckhouse and have no effect here.
#[allow(dead_code)]
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserStatus {
    #[serde(default)]
    pub expire_at: Option<String>,
    #[serde(default)]
    pub groups: Option<Value>,
    #[serde(default)]
    pub lock: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupSpec {
    pub name: String,
    #[serde(default)]
    pub members: Vec<GroupMember>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupMember {
    pub kind: MemberKind,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum MemberKind {
    User,
    Group,
}

// Some fields are accepted for compatibility with Deckhouse and have no effect here.
#[allow(dead_code)]
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DexClientSpec {
    #[serde(default, rename = "redirectURIs")]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub trusted_peers: Vec<String>,
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    #[serde(default)]
    pub allowed_emails: Vec<String>,
    #[serde(default)]
    pub secret_metadata: Option<Value>,
    /// Keygate extensions: where the secret comes from outside Kubernetes, and public clients.
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub secret_from_env: Option<String>,
    #[serde(default)]
    pub secret_file: Option<String>,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub name: Option<String>,
}
