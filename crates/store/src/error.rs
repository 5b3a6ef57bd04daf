use thiserror::Error;

/// Failures of the storage layer itself. Callers map these to `server_error`: none of them is a
/// client's mistake.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("object already exists")]
    AlreadyExists,
    #[error("stored object is corrupt: {0}")]
    Corrupt(String),
    #[error("storage backend error: {0}")]
    Backend(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Backend(format!("migration failed: {e}"))
    }
}
