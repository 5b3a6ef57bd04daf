//! The persisted shapes. They are serialized as JSON; new fields must be `#[serde(default)]` so that
//! objects written by an older version still load.

use serde::{Deserialize, Serialize};

use crate::{Kind, Object};

/// Who logged in, as a connector reported it. Claims are derived from this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Identity {
    /// Stable id of the user at the connector (for static users: `User.metadata.name`).
    pub user_id: String,
    pub username: String,
    #[serde(default)]
    pub preferred_username: String,
    pub email: String,
    pub email_verified: bool,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// An authorization request between `/auth` and the login that completes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRequest {
    pub id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub state: String,
    #[serde(default)]
    pub nonce: Option<String>,
    #[serde(default)]
    pub code_challenge: Option<String>,
    #[serde(default)]
    pub code_challenge_method: Option<String>,
    pub connector_id: String,
    pub expires_at: i64,
    /// A random secret of this sign-in, from which a redirect connector derives the PKCE
    /// verifier and the nonce it sends upstream; kept here, so any replica can finish the
    /// sign-in. Empty in requests stored by earlier versions.
    #[serde(default)]
    pub upstream_secret: String,
}

impl Object for AuthRequest {
    const KIND: Kind = Kind::AuthRequest;
    fn id(&self) -> &str {
        &self.id
    }
    fn expires_at(&self) -> Option<i64> {
        Some(self.expires_at)
    }
}

/// An issued authorization code. Kept after redemption (with `redeemed`) until it expires so that a
/// replay can be detected and the tokens issued from it revoked (RFC 6749 §4.1.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthCode {
    pub id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub nonce: Option<String>,
    #[serde(default)]
    pub code_challenge: Option<String>,
    #[serde(default)]
    pub code_challenge_method: Option<String>,
    pub connector_id: String,
    pub identity: Identity,
    pub auth_time: i64,
    pub expires_at: i64,
    /// What the connector keeps for refreshes (e.g. the upstream refresh token).
    #[serde(default)]
    pub connector_data: Option<String>,
    #[serde(default)]
    pub redeemed: bool,
    /// The refresh token issued when the code was redeemed, if any.
    #[serde(default)]
    pub refresh_token_id: Option<String>,
}

impl Object for AuthCode {
    const KIND: Kind = Kind::AuthCode;
    fn id(&self) -> &str {
        &self.id
    }
    fn expires_at(&self) -> Option<i64> {
        Some(self.expires_at)
    }
}

/// A refresh token family. `token` is the current secret, `obsolete_token` the previous one, still
/// honoured within the reuse interval after `last_used` (Flant's "obsolete tokens").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshToken {
    pub id: String,
    pub token: String,
    #[serde(default)]
    pub obsolete_token: Option<String>,
    pub client_id: String,
    pub connector_id: String,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub nonce: Option<String>,
    pub identity: Identity,
    /// What the connector keeps for refreshes (e.g. the upstream refresh token), updated when the
    /// family rotates.
    #[serde(default)]
    pub connector_data: Option<String>,
    pub created_at: i64,
    pub last_used: i64,
    /// When garbage collection may delete it: the earliest of the idle and absolute expiries.
    pub expires_at: i64,
}

impl Object for RefreshToken {
    const KIND: Kind = Kind::RefreshToken;
    fn id(&self) -> &str {
        &self.id
    }
    fn owner(&self) -> Option<String> {
        Some(refresh_owner(&self.connector_id, &self.identity.user_id))
    }
    fn expires_at(&self) -> Option<i64> {
        Some(self.expires_at)
    }
}

/// The owner key under which a user's refresh tokens are listed.
pub fn refresh_owner(connector_id: &str, user_id: &str) -> String {
    format!("{connector_id}/{user_id}")
}

/// One signing key, private part as base64 PKCS#8 DER.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSigningKey {
    pub kid: String,
    pub alg: String,
    pub private_pkcs8: String,
    pub created_at: i64,
}

impl std::fmt::Debug for StoredSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("private_pkcs8", &"<redacted>")
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// A retired key whose public half stays in JWKS until tokens it signed have expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationKey {
    pub kid: String,
    /// The public JWK, as served.
    pub jwk: serde_json::Value,
    pub expires_at: i64,
}

/// The key set shared by all replicas. There is exactly one, with id [`SigningKeys::ID`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeys {
    pub id: String,
    pub signing: StoredSigningKey,
    /// The key that signs after the next rotation. Published in JWKS from the moment it exists,
    /// so every verifier (and every replica's cached JWKS) knows it before the first token it signs.
    #[serde(default)]
    pub next: Option<StoredSigningKey>,
    #[serde(default)]
    pub verification: Vec<VerificationKey>,
    pub next_rotation: i64,
    /// When `signing` started signing (0: before this was recorded).
    #[serde(default)]
    pub signing_since: i64,
}

impl SigningKeys {
    pub const ID: &'static str = "signing-keys";
}

impl Object for SigningKeys {
    const KIND: Kind = Kind::SigningKeys;
    fn id(&self) -> &str {
        &self.id
    }
    fn expires_at(&self) -> Option<i64> {
        None
    }
}

/// A client secret generated by Keygate for a DexClient that declares none.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratedClientSecret {
    pub id: String,
    pub secret: String,
    pub created_at: i64,
}

impl std::fmt::Debug for GeneratedClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedClientSecret")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Object for GeneratedClientSecret {
    const KIND: Kind = Kind::Client;
    fn id(&self) -> &str {
        &self.id
    }
    fn expires_at(&self) -> Option<i64> {
        None
    }
}

/// What Keygate keeps about a user beyond the manifests: the failed-login streak, locks, and when
/// it first saw the user (for `User.spec.ttl`). Id: `<connector>/<user id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    pub id: String,
    #[serde(default)]
    pub failed_streak: u32,
    #[serde(default)]
    pub locked_until: Option<i64>,
    /// `PasswordPolicyLockout` or `LockedByAdministrator` (Deckhouse's `User.status.lock.reason`).
    #[serde(default)]
    pub lock_reason: Option<String>,
    pub first_seen: i64,
}

impl UserState {
    pub fn id_for(connector_id: &str, user_id: &str) -> String {
        format!("{connector_id}/{user_id}")
    }

    pub fn new(id: String, now: i64) -> Self {
        Self {
            id,
            failed_streak: 0,
            locked_until: None,
            lock_reason: None,
            first_seen: now,
        }
    }

    pub fn locked_at(&self, now: i64) -> bool {
        self.locked_until.is_some_and(|until| now < until)
    }
}

impl Object for UserState {
    const KIND: Kind = Kind::UserState;
    fn id(&self) -> &str {
        &self.id
    }
    fn expires_at(&self) -> Option<i64> {
        None
    }
}

/// An RFC 8628 device authorization: polled by the device with `id` (the device code), approved
/// in a browser with `user_code` (the owner column, for lookup).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRequest {
    pub id: String,
    pub user_code: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub expires_at: i64,
    /// Seconds the device must wait between polls.
    pub interval: i64,
    #[serde(default)]
    pub last_poll: Option<i64>,
    /// Set once approved: the token response (JSON) for the device's next poll.
    #[serde(default)]
    pub tokens: Option<String>,
    #[serde(default)]
    pub denied: bool,
}

impl std::fmt::Debug for DeviceRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceRequest")
            .field("user_code", &self.user_code)
            .field("client_id", &self.client_id)
            .field("approved", &self.tokens.is_some())
            .finish()
    }
}

impl Object for DeviceRequest {
    const KIND: Kind = Kind::DeviceRequest;
    fn id(&self) -> &str {
        &self.id
    }
    fn owner(&self) -> Option<String> {
        Some(self.user_code.clone())
    }
    fn expires_at(&self) -> Option<i64> {
        Some(self.expires_at)
    }
}
