//! The embedded default: one SQLite file, WAL mode, shared safely by several processes on one
//! host.
//!
//! Point reads and point writes run on the calling thread. In WAL mode a reader never waits for a
//! writer, and a primary-key lookup or one-row write takes microseconds: less than handing the
//! query to a database thread and waking the request again, which cost a refresh grant a fifth of
//! its CPU (a rotating one a quarter). Writers in this process queue for their turn without
//! holding a thread. A statement that finds the database busy (another process writing, or
//! recovering the WAL) is retried on tokio's blocking pool, where it may wait (`busy_timeout`).
//! Scans and bulk deletes always run there.
//!
//! What syncs the file to disk stays off the request threads. Connections used there do not
//! checkpoint on commit; every `CHECKPOINT_EVERY` writes a checkpoint runs on the blocking pool
//! instead, and, when it copied the whole WAL, also the write that starts the WAL again from its
//! beginning (SQLite syncs the new WAL header), which the next request's write would do otherwise.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

use crate::{Backend, Kind, Record, StoreError, Take, Versioned};

/// Several `keygate serve` processes may share the file: wait this long for another writer
/// instead of failing with SQLITE_BUSY (on the blocking pool only).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections kept for reuse; more may exist at once under load, and are closed after use.
/// Reads run on the request threads, so this is well above any runtime's worker count.
const IDLE_CONNECTIONS: usize = 32;
/// The schema's version (`PRAGMA user_version`), for migrations to come. Databases made through
/// sqlx's migrator have 0 and the same schema.
const SCHEMA_VERSION: i64 = 1;
/// Writes on request threads between two checkpoints on the blocking pool. A point write adds a
/// few pages to the WAL: this keeps it near SQLite's default of a checkpoint per 1000 pages.
const CHECKPOINT_EVERY: u64 = 256;
/// A WAL this many pages long after a passive checkpoint (which other processes' writes can keep
/// from ever reaching its end) gets a checkpoint that waits for them, so the WAL cannot grow
/// without bound. 4096 pages: 16 MiB.
const WAL_PAGES_RESTART: i64 = 4096;
/// Keygate's mark in the database header (`PRAGMA application_id`, "KGTE"). Written again after
/// each complete checkpoint: an unchanged value is still a write, which restarts the WAL.
const APPLICATION_ID: i64 = 0x4B47_5445;
/// The size the WAL file is cut back to after a checkpoint has emptied it.
const WAL_SIZE_LIMIT: i64 = 16 << 20;

/// The schema, idempotent. Databases made by earlier versions (through sqlx's migrator, which
/// also left a `_sqlx_migrations` table) already have it.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS objects (
    kind       TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    owner      TEXT,
    expires_at INTEGER,
    data       TEXT    NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX IF NOT EXISTS objects_owner ON objects (kind, owner) WHERE owner IS NOT NULL;
CREATE INDEX IF NOT EXISTS objects_expiry ON objects (expires_at) WHERE expires_at IS NOT NULL;
";

const GET: &str =
    "SELECT id, version, owner, expires_at, data FROM objects WHERE kind = ?1 AND id = ?2";
const LIST: &str =
    "SELECT id, version, owner, expires_at, data FROM objects WHERE kind = ?1 ORDER BY id";
const LIST_OWNED: &str = "SELECT id, version, owner, expires_at, data FROM objects \
                          WHERE kind = ?1 AND owner = ?2 ORDER BY id";

pub struct SqliteBackend {
    pool: Arc<Pool>,
    /// SQLite has one writer at a time: in this process, writers queue here (fairly, without
    /// holding a thread), and `busy_timeout` only waits for other processes.
    writer: Arc<tokio::sync::Semaphore>,
    /// Writes since the database was opened, to schedule checkpoints.
    writes: AtomicU64,
    /// A checkpoint is running on the blocking pool.
    checkpointing: Arc<AtomicBool>,
}

struct Pool {
    path: String,
    /// Connections that wait for locks (`busy_timeout`): used on the blocking pool.
    patient: Mutex<Vec<Connection>>,
    /// Connections that never wait: used on the calling thread.
    immediate: Mutex<Vec<Connection>>,
}

impl Pool {
    fn connect(&self, busy_timeout: Duration) -> rusqlite::Result<Connection> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(busy_timeout)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        if busy_timeout.is_zero() {
            // Used on request threads: the checkpoint a commit may run (and its fsync) is left
            // to `SqliteBackend::checkpoint_soon`.
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        }
        Ok(conn)
    }

    fn with<T>(
        &self,
        patient: bool,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let idle = if patient {
            &self.patient
        } else {
            &self.immediate
        };
        let pooled = idle.lock().ok().and_then(|mut v| v.pop());
        let conn = match pooled {
            Some(c) => c,
            None => self.connect(if patient {
                BUSY_TIMEOUT
            } else {
                Duration::ZERO
            })?,
        };
        let result = f(&conn);
        if let Ok(mut v) = idle.lock()
            && v.len() < IDLE_CONNECTIONS
        {
            v.push(conn);
        }
        result
    }
}

/// Copies the WAL into the database file without waiting for anyone; if that left a long WAL
/// behind (other processes' writers or readers kept it from the end), again waiting for them
/// (`busy_timeout`). When the whole WAL was copied, one write (of `APPLICATION_ID`, unchanged)
/// starts it again from its beginning here, with the sync of its new header, rather than in the
/// next request's write.
fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    let run = |mode: &str| {
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
    };
    let (mut busy, mut log, mut copied) = run("PASSIVE")?;
    if log - copied >= WAL_PAGES_RESTART {
        (busy, log, copied) = run("RESTART")?;
    }
    if busy == 0 && log > 0 && log == copied {
        conn.pragma_update(None, "application_id", APPLICATION_ID)?;
    } else if log != copied {
        tracing::debug!(
            busy,
            log,
            copied,
            "SQLite checkpoint incomplete: another connection is using the WAL"
        );
    }
    Ok(())
}

fn store_error(e: rusqlite::Error) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::AlreadyExists
    } else {
        StoreError::Backend(e.to_string())
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

fn row_to_versioned(row: &rusqlite::Row<'_>) -> rusqlite::Result<Versioned> {
    Ok(Versioned {
        id: row.get(0)?,
        version: row.get(1)?,
        record: Record {
            owner: row.get(2)?,
            expires_at: row.get(3)?,
            data: row.get(4)?,
        },
    })
}

fn get_row(conn: &Connection, kind: Kind, id: &str) -> rusqlite::Result<Option<Versioned>> {
    conn.prepare_cached(GET)?
        .query_row(params![kind.as_str(), id], row_to_versioned)
        .optional()
}

impl SqliteBackend {
    /// Opens (creating if needed) the database file and creates the schema if missing.
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
        let pool = Arc::new(Pool {
            path: path.to_owned(),
            patient: Mutex::new(Vec::new()),
            immediate: Mutex::new(Vec::new()),
        });
        let backend = Self {
            pool,
            writer: Arc::new(tokio::sync::Semaphore::new(1)),
            writes: AtomicU64::new(0),
            checkpointing: Arc::new(AtomicBool::new(false)),
        };
        backend
            .blocking(|conn| {
                // WAL is a property of the file: set once, every later connection uses it.
                let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
                if !mode.eq_ignore_ascii_case("wal") {
                    tracing::warn!(mode, "SQLite did not switch to WAL mode");
                }
                conn.execute_batch(SCHEMA)?;
                let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
                if version > SCHEMA_VERSION {
                    return Err(rusqlite::Error::InvalidParameterName(format!(
                        "schema version {version} was written by a newer Keygate \
                         (this one knows {SCHEMA_VERSION})"
                    )));
                }
                conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
                conn.pragma_update(None, "application_id", APPLICATION_ID)
            })
            .await
            .map_err(|e| StoreError::Backend(format!("cannot open {path}: {e}")))?;
        Ok(backend)
    }

    /// A point write (one statement): one at a time in this process, here and now, or on the
    /// blocking pool if another process holds the database. A statement refused as busy has had
    /// no effect, so running it again is safe.
    async fn write<T: Send + 'static>(
        &self,
        f: impl Fn(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let _turn = self
            .writer
            .acquire()
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let result = match self.pool.with(false, &f) {
            Err(e) if is_busy(&e) => self.blocking(f).await,
            other => other.map_err(store_error),
        };
        self.checkpoint_soon();
        result
    }

    /// A write that may touch many rows: one at a time in this process, on the blocking pool.
    async fn bulk_write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let _turn = self
            .writer
            .acquire()
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        self.blocking(f).await
    }

    /// Every `CHECKPOINT_EVERY` writes, runs `checkpoint` on the blocking pool, unless one is
    /// still running. It takes the writers' turn: with this process's writers appending meanwhile
    /// it would never reach the end of the WAL, and only a checkpoint that did lets the WAL start
    /// again from its beginning.
    fn checkpoint_soon(&self) {
        if !(self.writes.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(CHECKPOINT_EVERY)
            || self.checkpointing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let (pool, writer, running) = (
            self.pool.clone(),
            self.writer.clone(),
            self.checkpointing.clone(),
        );
        tokio::spawn(async move {
            if let Ok(_turn) = writer.acquire_owned().await {
                let done = tokio::task::spawn_blocking(move || pool.with(true, checkpoint)).await;
                match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "SQLite checkpoint failed; the next one will retry")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "SQLite checkpoint task failed; the next one will retry")
                    }
                }
            }
            running.store(false, Ordering::Release);
        });
    }

    /// Runs `f` on tokio's blocking pool with a connection that waits for locks.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || pool.with(true, f))
            .await
            .map_err(|e| StoreError::Backend(format!("SQLite task failed: {e}")))?
            .map_err(store_error)
    }

    /// Runs a read here and now, or on the blocking pool if the database is busy.
    async fn read<T: Send + 'static>(
        &self,
        f: impl Fn(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        match self.pool.with(false, &f) {
            Err(e) if is_busy(&e) => self.blocking(f).await,
            other => other.map_err(store_error),
        }
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

#[async_trait]
impl Backend for SqliteBackend {
    async fn create(&self, kind: Kind, id: &str, record: &Record) -> Result<(), StoreError> {
        let (id, record) = (id.to_owned(), record.clone());
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO objects (kind, id, version, owner, expires_at, data) \
                 VALUES (?1, ?2, 1, ?3, ?4, ?5)",
            )?
            .execute(params![
                kind.as_str(),
                id,
                record.owner,
                record.expires_at,
                record.data
            ])
            .map(|_| ())
        })
        .await
    }

    async fn get(&self, kind: Kind, id: &str) -> Result<Option<Versioned>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| get_row(c, kind, &id)).await
    }

    async fn replace(
        &self,
        kind: Kind,
        id: &str,
        expected_version: i64,
        record: &Record,
    ) -> Result<bool, StoreError> {
        let (id, record) = (id.to_owned(), record.clone());
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE objects SET version = version + 1, owner = ?1, expires_at = ?2, data = ?3 \
                 WHERE kind = ?4 AND id = ?5 AND version = ?6",
            )?
            .execute(params![
                record.owner,
                record.expires_at,
                record.data,
                kind.as_str(),
                id,
                expected_version
            ])
            .map(|n| n == 1)
        })
        .await
    }

    async fn delete(&self, kind: Kind, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM objects WHERE kind = ?1 AND id = ?2")?
                .execute(params![kind.as_str(), id])
                .map(|n| n == 1)
        })
        .await
    }

    async fn list(&self, kind: Kind, owner: Option<&str>) -> Result<Vec<Versioned>, StoreError> {
        let owner = owner.map(str::to_owned);
        self.blocking(move |c| match &owner {
            Some(owner) => c
                .prepare_cached(LIST_OWNED)?
                .query_map(params![kind.as_str(), owner], row_to_versioned)?
                .collect(),
            None => c
                .prepare_cached(LIST)?
                .query_map(params![kind.as_str()], row_to_versioned)?
                .collect(),
        })
        .await
    }

    async fn delete_expired(&self, now: i64) -> Result<u64, StoreError> {
        self.bulk_write(move |c| {
            c.prepare_cached(
                "DELETE FROM objects WHERE expires_at IS NOT NULL AND expires_at <= ?1",
            )?
            .execute(params![now])
            .map(|n| n as u64)
        })
        .await
    }

    async fn take(
        &self,
        key: &str,
        now: i64,
        interval: i64,
        burst: i64,
    ) -> Result<Take, StoreError> {
        let key = key.to_owned();
        // One statement: insert a fresh bucket, or update it only if it has a token. The SET
        // expressions all see the row as it was; `data` records the decision for RETURNING.
        let (tat, decision): (i64, String) = self
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO objects (kind, id, version, owner, expires_at, data) \
                     VALUES ('limit', ?1, 1, NULL, ?2 + ?3, 'allowed') \
                     ON CONFLICT (kind, id) DO UPDATE SET \
                       expires_at = CASE WHEN max(expires_at, ?2) - ?2 <= ?4 THEN max(expires_at, ?2) + ?3 ELSE expires_at END, \
                       version = version + 1, \
                       data = CASE WHEN max(expires_at, ?2) - ?2 <= ?4 THEN 'allowed' ELSE 'refused' END \
                     RETURNING expires_at, data",
                )?
                .query_row(params![key, now, interval, (burst - 1) * interval], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
            })
            .await?;
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
        let key = key.to_owned();
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE objects SET expires_at = max(expires_at - ?3, ?2), version = version + 1 \
                 WHERE kind = 'limit' AND id = ?1",
            )?
            .execute(params![key, now, interval])
            .map(|_| ())
        })
        .await
    }

    async fn close(&self) {
        // The writers' turn: no write, and no checkpoint task, is running or can start after.
        let _turn = self.writer.acquire().await;
        self.writer.close();
        // Closing the last connection checkpoints the WAL into the database file and syncs it:
        // on the blocking pool, like every sync.
        let pool = self.pool.clone();
        let closed = tokio::task::spawn_blocking(move || {
            for idle in [&pool.patient, &pool.immediate] {
                if let Ok(mut v) = idle.lock() {
                    v.clear();
                }
            }
        })
        .await;
        if let Err(e) = closed {
            tracing::warn!(error = %e, "closing the SQLite connections failed");
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A directory of this test's own and the path of a database in it (the test removes the
    /// directory at its end).
    fn scratch(name: &str) -> (std::path::PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("keygate-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db.sqlite").to_str().unwrap().to_owned();
        (dir, path)
    }

    /// The first call (on `request_thread`) finds the database busy; later calls must run
    /// elsewhere, and run `then`.
    fn busy_once<T>(
        calls: Arc<AtomicUsize>,
        request_thread: std::thread::ThreadId,
        then: impl Fn(&Connection) -> rusqlite::Result<T>,
    ) -> impl Fn(&Connection) -> rusqlite::Result<T> {
        move |c| {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                assert_eq!(std::thread::current().id(), request_thread);
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                    None,
                ));
            }
            assert_ne!(
                std::thread::current().id(),
                request_thread,
                "retried elsewhere"
            );
            then(c)
        }
    }

    /// In WAL mode a reader finds the database busy only in rare moments (another connection
    /// recovering the WAL): the read is then retried on the blocking pool, where it may wait.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_read_is_retried_off_the_request_thread() {
        let (dir, path) = scratch("busy");
        let backend = SqliteBackend::open(&path).await.unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let answer = backend
            .read(busy_once(calls.clone(), std::thread::current().id(), |c| {
                c.query_row("SELECT 42", [], |r| r.get::<_, i64>(0))
            }))
            .await
            .unwrap();
        assert_eq!(answer, 42);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Other errors are not retried.
        let err = backend
            .read(|c| c.query_row("SELECT nope", [], |r| r.get::<_, i64>(0)))
            .await;
        assert!(matches!(err, Err(StoreError::Backend(_))), "{err:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Point writes run on the calling thread; one refused as busy (another process writing) is
    /// run again on the blocking pool; a duplicate key is `AlreadyExists` either way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_write_is_retried_off_the_request_thread() {
        let (dir, path) = scratch("busy-write");
        let backend = SqliteBackend::open(&path).await.unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        backend
            .write(busy_once(calls.clone(), std::thread::current().id(), |c| {
                c.execute(
                    "INSERT INTO objects (kind, id, version, data) VALUES ('t', 'a', 1, '')",
                    [],
                )
            }))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let here = backend
            .write(|c| {
                c.execute(
                    "INSERT INTO objects (kind, id, version, data) VALUES ('t', 'a', 1, '')",
                    [],
                )
            })
            .await;
        assert!(matches!(here, Err(StoreError::AlreadyExists)), "{here:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Two backends on one file stand for two processes: a write that finds the other one
    /// writing is refused as busy at once and retried on the blocking pool, and no update is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_backends_on_one_file_lose_no_update() {
        let (dir, path) = scratch("two");
        let a = Arc::new(SqliteBackend::open(&path).await.unwrap());
        let b = Arc::new(SqliteBackend::open(&path).await.unwrap());
        let record = Record {
            owner: None,
            expires_at: None,
            data: "counter".into(),
        };
        a.create(Kind::UserState, "counter", &record).await.unwrap();
        let tasks: Vec<_> = (0..200)
            .map(|n| {
                let backend = if n % 2 == 0 { a.clone() } else { b.clone() };
                let record = record.clone();
                tokio::spawn(async move {
                    loop {
                        let current = backend.get(Kind::UserState, "counter").await.unwrap();
                        let version = current.unwrap().version;
                        if backend
                            .replace(Kind::UserState, "counter", version, &record)
                            .await
                            .unwrap()
                        {
                            return;
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let last = b.get(Kind::UserState, "counter").await.unwrap().unwrap();
        assert_eq!(last.version, 201);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    async fn wait_for_checkpoint(backend: &SqliteBackend) {
        for _ in 0..250 {
            if !backend.checkpointing.load(Ordering::Acquire) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the checkpoint did not finish");
    }

    fn refresh_record(n: i64) -> Record {
        Record {
            owner: Some("jane".into()),
            expires_at: Some(n),
            data: "x".repeat(1500),
        }
    }

    /// Writes on request threads do not checkpoint, so the backend must: without it the WAL
    /// grows by every write (about 40 MB here) instead of being reused from its start. And the
    /// write that starts the WAL again (and syncs its header) is the checkpoint task's, not the
    /// next request's: right after a checkpoint the WAL holds that one write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_is_checkpointed_and_restarted_off_the_request_threads() {
        let (dir, path) = scratch("wal");
        let backend = SqliteBackend::open(&path).await.unwrap();
        backend
            .create(Kind::RefreshToken, "family", &refresh_record(0))
            .await
            .unwrap();
        // 4000 writes in all; the last one (the create counts) schedules a checkpoint.
        let writes = 4000 - 4000 % CHECKPOINT_EVERY as i64;
        for version in 1..writes {
            assert!(
                backend
                    .replace(
                        Kind::RefreshToken,
                        "family",
                        version,
                        &refresh_record(version)
                    )
                    .await
                    .unwrap()
            );
        }
        wait_for_checkpoint(&backend).await;
        let wal = std::fs::metadata(dir.join("db.sqlite-wal")).unwrap().len();
        assert!(wal < 8 << 20, "WAL of {wal} bytes after {writes} writes");
        let frames: i64 = backend
            .read(|c| c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1)))
            .await
            .unwrap();
        assert_eq!(
            frames, 1,
            "the WAL was started again by the checkpoint task"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Closing waits for a running write or checkpoint, copies the WAL into the file (the last
    /// connection's close removes it), and refuses writes from then on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn close_leaves_no_wal_and_refuses_later_writes() {
        let (dir, path) = scratch("close");
        let backend = SqliteBackend::open(&path).await.unwrap();
        backend
            .create(Kind::RefreshToken, "family", &refresh_record(0))
            .await
            .unwrap();
        for version in 1..CHECKPOINT_EVERY as i64 {
            backend
                .replace(
                    Kind::RefreshToken,
                    "family",
                    version,
                    &refresh_record(version),
                )
                .await
                .unwrap();
        }
        backend.close().await;
        assert!(
            !dir.join("db.sqlite-wal").exists(),
            "the WAL was copied and removed"
        );
        let late = backend.delete(Kind::RefreshToken, "family").await;
        assert!(matches!(late, Err(StoreError::Backend(_))), "{late:?}");
        let reopened = SqliteBackend::open(&path).await.unwrap();
        let row = reopened
            .get(Kind::RefreshToken, "family")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            row.version, CHECKPOINT_EVERY as i64,
            "every write is in the file"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A reader of an old snapshot (another process) keeps a passive checkpoint from reaching
    /// the end of a long WAL: the checkpoint then waits for it, and the WAL starts again.
    #[test]
    fn a_long_wal_gets_a_checkpoint_that_waits_for_readers() {
        let (dir, path) = scratch("wal-reader");
        let writer = Connection::open(&path).unwrap();
        writer
            .query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .unwrap();
        writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        writer.execute_batch(SCHEMA).unwrap();
        let reader = Connection::open(&path).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        reader
            .query_row("SELECT count(*) FROM objects", [], |r| r.get::<_, i64>(0))
            .unwrap();
        // More than WAL_PAGES_RESTART pages written after the reader's snapshot.
        let row = "x".repeat(3000);
        for n in 0..WAL_PAGES_RESTART + 100 {
            writer
                .execute(
                    "INSERT INTO objects (kind, id, version, data) VALUES ('t', ?1, 1, ?2)",
                    params![n.to_string(), row],
                )
                .unwrap();
        }
        let done = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            reader.execute_batch("COMMIT").unwrap();
        });
        let checkpointer = Connection::open(&path).unwrap();
        checkpointer.busy_timeout(BUSY_TIMEOUT).unwrap();
        checkpoint(&checkpointer).unwrap();
        done.join().unwrap();
        let frames: i64 = checkpointer
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
            .unwrap();
        assert_eq!(frames, 1, "the WAL was copied and started again");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Two processes writing at once, each checkpointing only between its own writes: the WAL
    /// stays bounded (unchecked, about 100 MB).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_bounded_with_two_writers_on_one_file() {
        let (dir, path) = scratch("wal-two");
        let a = Arc::new(SqliteBackend::open(&path).await.unwrap());
        let b = Arc::new(SqliteBackend::open(&path).await.unwrap());
        let writer = |backend: Arc<SqliteBackend>, id: &'static str| {
            tokio::spawn(async move {
                backend
                    .create(Kind::RefreshToken, id, &refresh_record(0))
                    .await
                    .unwrap();
                for version in 1..6000 {
                    assert!(
                        backend
                            .replace(Kind::RefreshToken, id, version, &refresh_record(version))
                            .await
                            .unwrap()
                    );
                }
            })
        };
        let (x, y) = (writer(a.clone(), "a"), writer(b.clone(), "b"));
        x.await.unwrap();
        y.await.unwrap();
        wait_for_checkpoint(&a).await;
        wait_for_checkpoint(&b).await;
        let wal = std::fs::metadata(dir.join("db.sqlite-wal")).unwrap().len();
        // Unchecked, 12,000 writes of 1.5 kB rows leave a WAL of about 100 MB.
        assert!(wal < 40 << 20, "WAL of {wal} bytes after 12,000 writes");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
