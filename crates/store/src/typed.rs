use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Backend, Kind, Record, StoreError};

/// A model the store can persist.
pub trait Object: Serialize + DeserializeOwned + Send + Sync {
    const KIND: Kind;
    fn id(&self) -> &str;
    /// Secondary key for [`Store::list_owned`].
    fn owner(&self) -> Option<String> {
        None
    }
    /// When garbage collection may delete the object (unix seconds).
    fn expires_at(&self) -> Option<i64>;
}

/// Why an [`Store::update`] did not apply.
#[derive(Debug)]
pub enum UpdateError<E> {
    NotFound,
    /// The updater refused the current value.
    Rejected(E),
    Store(StoreError),
}

impl<E> From<StoreError> for UpdateError<E> {
    fn from(e: StoreError) -> Self {
        UpdateError::Store(e)
    }
}

/// Typed access to any backend. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

/// How many times an update re-reads after losing a compare-and-swap race before giving up.
const UPDATE_ATTEMPTS: usize = 64;

fn encode<T: Object>(obj: &T) -> Result<Record, StoreError> {
    Ok(Record {
        owner: obj.owner(),
        expires_at: obj.expires_at(),
        data: serde_json::to_string(obj).map_err(|e| StoreError::Corrupt(e.to_string()))?,
    })
}

fn decode<T: Object>(record: &Record) -> Result<T, StoreError> {
    serde_json::from_str(&record.data)
        .map_err(|e| StoreError::Corrupt(format!("{}: {e}", T::KIND.as_str())))
}

impl Store {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend }
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub async fn create<T: Object>(&self, obj: &T) -> Result<(), StoreError> {
        self.backend.create(T::KIND, obj.id(), &encode(obj)?).await
    }

    /// The object and its version, for a later [`Store::compare_and_swap`].
    pub async fn get_versioned<T: Object>(&self, id: &str) -> Result<Option<(T, i64)>, StoreError> {
        match self.backend.get(T::KIND, id).await? {
            Some(v) => Ok(Some((decode(&v.record)?, v.version))),
            None => Ok(None),
        }
    }

    pub async fn get<T: Object>(&self, id: &str) -> Result<Option<T>, StoreError> {
        Ok(self.get_versioned(id).await?.map(|(obj, _)| obj))
    }

    /// Writes `obj` only if the stored version is still `version`.
    pub async fn compare_and_swap<T: Object>(
        &self,
        version: i64,
        obj: &T,
    ) -> Result<bool, StoreError> {
        self.backend
            .replace(T::KIND, obj.id(), version, &encode(obj)?)
            .await
    }

    /// Read-modify-write with compare-and-swap, re-reading on conflict. The updater may run several
    /// times, so it must not have side effects; it returns the new value or refuses the update.
    pub async fn update<T, E, F>(&self, id: &str, mut updater: F) -> Result<T, UpdateError<E>>
    where
        T: Object,
        F: FnMut(T) -> Result<T, E> + Send,
        E: Send,
    {
        for _ in 0..UPDATE_ATTEMPTS {
            let Some((current, version)) = self.get_versioned::<T>(id).await? else {
                return Err(UpdateError::NotFound);
            };
            let next = updater(current).map_err(UpdateError::Rejected)?;
            if next.id() != id {
                return Err(UpdateError::Store(StoreError::Corrupt(
                    "an update may not change the object id".into(),
                )));
            }
            if self.compare_and_swap(version, &next).await? {
                return Ok(next);
            }
        }
        Err(UpdateError::Store(StoreError::Backend(format!(
            "{}: gave up after {UPDATE_ATTEMPTS} conflicting updates",
            T::KIND.as_str()
        ))))
    }

    pub async fn delete<T: Object>(&self, id: &str) -> Result<bool, StoreError> {
        self.backend.delete(T::KIND, id).await
    }

    pub async fn list<T: Object>(&self) -> Result<Vec<T>, StoreError> {
        self.backend
            .list(T::KIND, None)
            .await?
            .iter()
            .map(|v| decode(&v.record))
            .collect()
    }

    pub async fn list_owned<T: Object>(&self, owner: &str) -> Result<Vec<T>, StoreError> {
        self.backend
            .list(T::KIND, Some(owner))
            .await?
            .iter()
            .map(|v| decode(&v.record))
            .collect()
    }

    /// Deletes what has expired at `now`; returns how many objects went.
    pub async fn collect_garbage(&self, now: i64) -> Result<u64, StoreError> {
        self.backend.delete_expired(now).await
    }

    /// See [`Backend::take`].
    pub async fn take(
        &self,
        key: &str,
        now: i64,
        interval: i64,
        burst: i64,
    ) -> Result<crate::Take, StoreError> {
        self.backend.take(key, now, interval, burst).await
    }

    /// See [`Backend::give_back`].
    pub async fn give_back(&self, key: &str, now: i64, interval: i64) -> Result<(), StoreError> {
        self.backend.give_back(key, now, interval).await
    }

    pub async fn close(&self) {
        self.backend.close().await;
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.backend.ping().await
    }
}
