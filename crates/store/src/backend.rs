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
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AuthRequest => "auth_request",
            Kind::AuthCode => "auth_code",
            Kind::RefreshToken => "refresh_token",
            Kind::SigningKeys => "signing_keys",
            Kind::Client => "client",
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
    /// A cheap round trip for readiness probes; writes nothing.
    async fn ping(&self) -> Result<(), StoreError>;
}
