//! The memory backend: moka's bounded cache with a TTL per entry.

use std::time::{Duration, Instant};

use moka::future::Cache as Moka;
use moka::Expiry;

#[derive(Clone)]
pub(super) struct Entry {
    value: std::sync::Arc<[u8]>,
    ttl: Option<Duration>,
}

struct EntryTtl;

impl Expiry<String, Entry> for EntryTtl {
    fn expire_after_create(&self, _key: &String, entry: &Entry, _now: Instant) -> Option<Duration> {
        entry.ttl
    }

    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Entry,
        _now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        entry.ttl
    }
}

pub(crate) struct MemoryStore {
    cache: Moka<String, Entry>,
}

impl MemoryStore {
    pub(super) fn new(max_size: u64) -> Self {
        Self {
            cache: Moka::builder()
                .max_capacity(max_size)
                .expire_after(EntryTtl)
                .build(),
        }
    }

    pub(super) async fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.cache.get(key).await.map(|e| e.value.to_vec())
    }

    pub(super) async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) {
        self.cache
            .insert(
                key.to_owned(),
                Entry {
                    value: value.into(),
                    ttl,
                },
            )
            .await;
    }

    pub(super) async fn delete(&self, key: &str) -> bool {
        self.cache.remove(key).await.is_some()
    }

    pub(super) async fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }
}
