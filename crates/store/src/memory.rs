use std::collections::BTreeMap;

use async_trait::async_trait;
use tokio::sync::Mutex;

use crate::{Backend, Kind, Record, StoreError, Take, Versioned};

/// Process-local storage for tests and throwaway instances. Lost on restart.
#[derive(Default)]
pub struct MemoryBackend {
    objects: Mutex<BTreeMap<(Kind, String), (i64, Record)>>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }
}

fn versioned(id: &str, version: i64, record: &Record) -> Versioned {
    Versioned {
        id: id.to_owned(),
        version,
        record: record.clone(),
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn create(&self, kind: Kind, id: &str, record: &Record) -> Result<(), StoreError> {
        let mut objects = self.objects.lock().await;
        let key = (kind, id.to_owned());
        if objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists);
        }
        objects.insert(key, (1, record.clone()));
        Ok(())
    }

    async fn get(&self, kind: Kind, id: &str) -> Result<Option<Versioned>, StoreError> {
        let objects = self.objects.lock().await;
        Ok(objects
            .get(&(kind, id.to_owned()))
            .map(|(v, r)| versioned(id, *v, r)))
    }

    async fn replace(
        &self,
        kind: Kind,
        id: &str,
        expected_version: i64,
        record: &Record,
    ) -> Result<bool, StoreError> {
        let mut objects = self.objects.lock().await;
        match objects.get_mut(&(kind, id.to_owned())) {
            Some((version, stored)) if *version == expected_version => {
                *version += 1;
                *stored = record.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete(&self, kind: Kind, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .objects
            .lock()
            .await
            .remove(&(kind, id.to_owned()))
            .is_some())
    }

    async fn list(&self, kind: Kind, owner: Option<&str>) -> Result<Vec<Versioned>, StoreError> {
        let objects = self.objects.lock().await;
        Ok(objects
            .iter()
            .filter(|((k, _), (_, r))| {
                *k == kind && owner.is_none_or(|o| r.owner.as_deref() == Some(o))
            })
            .map(|((_, id), (v, r))| versioned(id, *v, r))
            .collect())
    }

    async fn delete_expired(&self, now: i64) -> Result<u64, StoreError> {
        let mut objects = self.objects.lock().await;
        let before = objects.len();
        objects.retain(|_, (_, r)| r.expires_at.is_none_or(|e| e > now));
        Ok((before - objects.len()) as u64)
    }

    async fn take(
        &self,
        key: &str,
        now: i64,
        interval: i64,
        burst: i64,
    ) -> Result<Take, StoreError> {
        let mut objects = self.objects.lock().await;
        let entry = objects
            .entry((Kind::Limit, key.to_owned()))
            .or_insert_with(|| {
                (
                    0,
                    Record {
                        owner: None,
                        expires_at: Some(now),
                        data: String::new(),
                    },
                )
            });
        let tat = entry.1.expires_at.unwrap_or(now).max(now);
        let tolerance = (burst - 1) * interval;
        if tat - now <= tolerance {
            entry.0 += 1;
            entry.1.expires_at = Some(tat + interval);
            Ok(Take {
                allowed: true,
                retry_after: 0,
            })
        } else {
            Ok(Take {
                allowed: false,
                retry_after: tat - now - tolerance,
            })
        }
    }

    async fn give_back(&self, key: &str, now: i64, interval: i64) -> Result<(), StoreError> {
        let mut objects = self.objects.lock().await;
        if let Some((version, record)) = objects.get_mut(&(Kind::Limit, key.to_owned())) {
            *version += 1;
            record.expires_at = record.expires_at.map(|tat| (tat - interval).max(now));
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
