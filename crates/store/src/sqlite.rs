use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::{Backend, Kind, Record, StoreError, Take, Versioned};

/// The embedded default: one SQLite file, WAL mode, shared safely by several processes on one host.
pub struct SqliteBackend {
    pool: SqlitePool,
}

impl SqliteBackend {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub async fn open(path: &str) -> Result<Self, StoreError> {
        if !std::path::Path::new(path).exists() {
            create_private_file(path)?;
        }
        Self::connect(path).await
    }

    /// Opens a database that must already exist (administrative commands must not create one
    /// at a mistyped path).
    pub async fn open_existing(path: &str) -> Result<Self, StoreError> {
        if !std::path::Path::new(path).is_file() {
            return Err(StoreError::Backend(format!("no SQLite database at {path}")));
        }
        Self::connect(path).await
    }

    async fn connect(path: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // Several `keygate serve` processes may share the file: wait for the writer instead of
            // failing with SQLITE_BUSY.
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }
}

/// The database holds the private signing keys: create it readable by its owner only. SQLite
/// gives its -wal and -shm files the same permissions.
fn create_private_file(path: &str) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Backend(format!("cannot create {path}: {e}"))),
    }
}

fn row_to_versioned(row: &sqlx::sqlite::SqliteRow) -> Result<Versioned, StoreError> {
    Ok(Versioned {
        id: row.try_get("id")?,
        version: row.try_get("version")?,
        record: Record {
            owner: row.try_get("owner")?,
            expires_at: row.try_get("expires_at")?,
            data: row.try_get("data")?,
        },
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn create(&self, kind: Kind, id: &str, record: &Record) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO objects (kind, id, version, owner, expires_at, data) VALUES (?, ?, 1, ?, ?, ?)",
        )
        .bind(kind.as_str())
        .bind(id)
        .bind(&record.owner)
        .bind(record.expires_at)
        .bind(&record.data)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists),
            Err(e) => Err(e.into()),
        }
    }

    async fn get(&self, kind: Kind, id: &str) -> Result<Option<Versioned>, StoreError> {
        let row = sqlx::query(
            "SELECT id, version, owner, expires_at, data FROM objects WHERE kind = ? AND id = ?",
        )
        .bind(kind.as_str())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(row_to_versioned).transpose()
    }

    async fn replace(
        &self,
        kind: Kind,
        id: &str,
        expected_version: i64,
        record: &Record,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE objects SET version = version + 1, owner = ?, expires_at = ?, data = ? \
             WHERE kind = ? AND id = ? AND version = ?",
        )
        .bind(&record.owner)
        .bind(record.expires_at)
        .bind(&record.data)
        .bind(kind.as_str())
        .bind(id)
        .bind(expected_version)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete(&self, kind: Kind, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM objects WHERE kind = ? AND id = ?")
            .bind(kind.as_str())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list(&self, kind: Kind, owner: Option<&str>) -> Result<Vec<Versioned>, StoreError> {
        let rows = match owner {
            Some(owner) => {
                sqlx::query(
                    "SELECT id, version, owner, expires_at, data FROM objects \
                     WHERE kind = ? AND owner = ? ORDER BY id",
                )
                .bind(kind.as_str())
                .bind(owner)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT id, version, owner, expires_at, data FROM objects WHERE kind = ? ORDER BY id",
                )
                .bind(kind.as_str())
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(row_to_versioned).collect()
    }

    async fn delete_expired(&self, now: i64) -> Result<u64, StoreError> {
        let done =
            sqlx::query("DELETE FROM objects WHERE expires_at IS NOT NULL AND expires_at <= ?")
                .bind(now)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }

    async fn take(
        &self,
        key: &str,
        now: i64,
        interval: i64,
        burst: i64,
    ) -> Result<Take, StoreError> {
        // One statement: insert a fresh bucket, or update it only if it has a token. The SET
        // expressions all see the row as it was; `data` records the decision for RETURNING.
        let row = sqlx::query(
            "INSERT INTO objects (kind, id, version, owner, expires_at, data) \
             VALUES ('limit', ?1, 1, NULL, ?2 + ?3, 'allowed') \
             ON CONFLICT (kind, id) DO UPDATE SET \
               expires_at = CASE WHEN max(expires_at, ?2) - ?2 <= ?4 THEN max(expires_at, ?2) + ?3 ELSE expires_at END, \
               version = version + 1, \
               data = CASE WHEN max(expires_at, ?2) - ?2 <= ?4 THEN 'allowed' ELSE 'refused' END \
             RETURNING expires_at, data",
        )
        .bind(key)
        .bind(now)
        .bind(interval)
        .bind((burst - 1) * interval)
        .fetch_one(&self.pool)
        .await?;
        let tat: i64 = row.try_get("expires_at")?;
        let decision: String = row.try_get("data")?;
        Ok(if decision == "allowed" {
            Take {
                allowed: true,
                retry_after: 0,
            }
        } else {
            Take {
                allowed: false,
                retry_after: tat - now - (burst - 1) * interval,
            }
        })
    }

    async fn give_back(&self, key: &str, now: i64, interval: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE objects SET expires_at = max(expires_at - ?3, ?2), version = version + 1 \
             WHERE kind = 'limit' AND id = ?1",
        )
        .bind(key)
        .bind(now)
        .bind(interval)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
