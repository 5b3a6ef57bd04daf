use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};

use crate::{Backend, Kind, Record, StoreError, Take, Versioned};

/// PostgreSQL: several `keygate serve` replicas on several hosts share one database. The same
/// statements as SQLite, in PostgreSQL's dialect; compare-and-swap is `UPDATE ... WHERE version`.
pub struct PostgresBackend {
    pool: PgPool,
}

impl PostgresBackend {
    /// Connects (with bounded timeouts) and applies pending migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| {
            StoreError::Backend(format!("invalid PostgreSQL URL: {e}"))
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }
}

fn row_to_versioned(row: &sqlx::postgres::PgRow) -> Result<Versioned, StoreError> {
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

#[async_trait]
impl Backend for PostgresBackend {
    async fn create(&self, kind: Kind, id: &str, record: &Record) -> Result<(), StoreError> {
        let result = sqlx::query("INSERT INTO objects (kind, id, version, owner, expires_at, data) VALUES ($1, $2, 1, $3, $4, $5)")
            .bind(kind.as_str())
            .bind(id)
            .bind(&record.owner)
            .bind(record.expires_at)
            .bind(&record.data)
            .execute(&self.pool)
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                Err(StoreError::AlreadyExists)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn get(&self, kind: Kind, id: &str) -> Result<Option<Versioned>, StoreError> {
        let row = sqlx::query(
            "SELECT id, version, owner, expires_at, data FROM objects WHERE kind = $1 AND id = $2",
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
            "UPDATE objects SET version = version + 1, owner = $1, expires_at = $2, data = $3 WHERE kind = $4 AND id = $5 AND version = $6",
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
        let done = sqlx::query("DELETE FROM objects WHERE kind = $1 AND id = $2")
            .bind(kind.as_str())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list(&self, kind: Kind, owner: Option<&str>) -> Result<Vec<Versioned>, StoreError> {
        let rows = match owner {
            Some(owner) => {
                sqlx::query("SELECT id, version, owner, expires_at, data FROM objects WHERE kind = $1 AND owner = $2 ORDER BY id")
                    .bind(kind.as_str())
                    .bind(owner)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => sqlx::query("SELECT id, version, owner, expires_at, data FROM objects WHERE kind = $1 ORDER BY id").bind(kind.as_str()).fetch_all(&self.pool).await?,
        };
        rows.iter().map(row_to_versioned).collect()
    }

    async fn delete_expired(&self, now: i64) -> Result<u64, StoreError> {
        let done =
            sqlx::query("DELETE FROM objects WHERE expires_at IS NOT NULL AND expires_at <= $1")
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
        // One statement, as for SQLite; SET expressions see the row as it was.
        let row = sqlx::query(
            "INSERT INTO objects AS o (kind, id, version, owner, expires_at, data) \
             VALUES ('limit', $1, 1, NULL, $2 + $3, 'allowed') \
             ON CONFLICT (kind, id) DO UPDATE SET \
               expires_at = CASE WHEN GREATEST(o.expires_at, $2) - $2 <= $4 THEN GREATEST(o.expires_at, $2) + $3 ELSE o.expires_at END, \
               version = o.version + 1, \
               data = CASE WHEN GREATEST(o.expires_at, $2) - $2 <= $4 THEN 'allowed' ELSE 'refused' END \
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
        sqlx::query("UPDATE objects SET expires_at = GREATEST(expires_at - $3, $2), version = version + 1 WHERE kind = 'limit' AND id = $1")
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
