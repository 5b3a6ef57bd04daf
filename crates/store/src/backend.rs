use async_trait::async_trait;

use crate::StoreError;

/// The kinds of objects the provider stores. The string form is the `kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    AuthRequest,
    AuthCode,
    RefreshToken,
    SigningKeys,
    Client,
    /// Per-user account state: failed-login streak and locks.
    UserState,
    /// Rate-limit buckets; only `expires_at` (the bucket's theoretical arrival time) matters.
    Limit,
    /// RFC 8628 device authorization requests.
    DeviceRequest,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AuthRequest => "auth_request",
            Kind::AuthCode => "auth_code",
            Kind::RefreshToken => "refresh_token",
            Kind::SigningKeys => "signing_keys",
            Kind::Client => "client",
            Kind::UserState => "user_state",
            Kind::Limit => "limit",
            Kind::DeviceRequest => "device_request",
        }
    }
}

/// One stored object: an opaque JSON payload plus the few columns a backend queries on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Secondary key for listing (for refresh tokens: the user), if any.
    pub owner: Option<String>,
    /// Unix seconds after which garbage collection may delete the object.
    pub expires_at: Option<i64>,
    /// The serialized object (JSON).
    pub data: String,
}

/// A record as read back, with the version a compare-and-swap must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub id: String,
    pub version: i64,
    pub record: Record,
}

/// The answer of [`Backend::take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Take {
    pub allowed: bool,
    /// Seconds until the next attempt would be allowed (0 when allowed).
    pub retry_after: i64,
}

/// What every storage engine provides. Each method is atomic on its own; `replace` is the
/// compare-and-swap every update goes through.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Inserts a new object at version 1; `AlreadyExists` when the id is taken.
    async fn create(&self, kind: Kind, id: &str, record: &Record) -> Result<(), StoreError>;
    async fn get(&self, kind: Kind, id: &str) -> Result<Option<Versioned>, StoreError>;
    /// Replaces the object only if it is still at `expected_version`; returns whether it did.
    /// The new version is `expected_version + 1`.
    async fn replace(
        &self,
        kind: Kind,
        id: &str,
        expected_version: i64,
        record: &Record,
    ) -> Result<bool, StoreError>;
    /// Deletes the object; returns whether it existed.
    async fn delete(&self, kind: Kind, id: &str) -> Result<bool, StoreError>;
    /// All objects of a kind, or only those of one owner, ordered by id.
    async fn list(&self, kind: Kind, owner: Option<&str>) -> Result<Vec<Versioned>, StoreError>;
    /// Deletes every object whose `expires_at` is at or before `now`; returns how many.
    async fn delete_expired(&self, now: i64) -> Result<u64, StoreError>;
    /// Takes one token from the rate-limit bucket `key`, atomically (one statement), if it has one.
    /// Buckets hold `burst` tokens and get one back every `interval` seconds (GCRA: the bucket is
    /// stored as the time at which it will be full again, in `expires_at`, so garbage collection
    /// drops full buckets).
    async fn take(
        &self,
        key: &str,
        now: i64,
        interval: i64,
        burst: i64,
    ) -> Result<Take, StoreError>;
    /// Puts one token back (a successful login does not count against the user).
    async fn give_back(&self, key: &str, now: i64, interval: i64) -> Result<(), StoreError>;
    /// A cheap round trip for readiness probes; writes nothing.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Closes connections cleanly (SQLite checkpoints its write-ahead log).
    async fn close(&self) {}
}
