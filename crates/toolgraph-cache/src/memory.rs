//! The `memory` backend: a bounded in-process cache (moka's `sync` cache: a lookup never
//! waits, so it is not a future — half the cost of moka's `future` cache on a hit), the
//! fastest and the only one a process does not share. Each entry keeps its own expiry on tokio's clock (so a paused
//! clock in tests moves it), and moka drops it on its own clock too, so an expired entry
//! neither answers nor stays in memory.

use std::time::Duration;

use futures_util::future::BoxFuture;
use moka::Expiry;
use moka::sync::Cache;
use tokio::time::Instant;

use crate::backend::{CacheBackend, CacheError, Entry};

#[derive(Clone)]
struct Slot {
    entry: Entry,
    expires: Instant,
    ttl: Duration,
}

struct PerEntry;

impl Expiry<String, Slot> for PerEntry {
    fn expire_after_create(
        &self,
        _key: &String,
        slot: &Slot,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(slot.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        slot: &Slot,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(slot.ttl)
    }
}

/// At most `max_entries` entries in this process; the least useful go first.
pub struct MemoryBackend {
    cache: Cache<String, Slot>,
    max_entries: u64,
}

impl MemoryBackend {
    /// A cache of at most `max_entries` entries.
    pub fn new(max_entries: u64) -> MemoryBackend {
        MemoryBackend {
            cache: Cache::builder()
                .max_capacity(max_entries)
                .expire_after(PerEntry)
                .build(),
            max_entries,
        }
    }

    /// The entry under `key`, without the future (the hit path of the layer).
    pub(crate) fn lookup(&self, key: &str) -> Option<Entry> {
        let slot = self.cache.get(key)?;
        if slot.expires <= Instant::now() {
            self.cache.invalidate(key);
            return None;
        }
        Some(slot.entry)
    }
}

impl CacheBackend for MemoryBackend {
    fn describe(&self) -> String {
        format!("memory ({} entries at most)", self.max_entries)
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>, CacheError>> {
        let found = self.lookup(key);
        Box::pin(async move { Ok(found) })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        _tool: &'a str,
        entry: &'a Entry,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            let slot = Slot {
                entry: entry.clone(),
                expires: Instant::now() + ttl,
                ttl,
            };
            self.cache.insert(key.to_owned(), slot);
            Ok(())
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            self.cache.invalidate(key);
            Ok(())
        })
    }
}

/// How long an entry read from behind stays in front (the front keeps what this process
/// wrote for its own ttl).
const REFILL_TTL: Duration = Duration::from_secs(1);

/// `memory` in front of another backend (the service's choice): reads try memory first, and
/// fill it from the backend behind; writes go to both. An entry read from behind is kept in
/// front for `front_ttl` at most, so the front may answer that long after the entry behind
/// was replaced.
pub struct Tiered {
    front: MemoryBackend,
    back: std::sync::Arc<dyn CacheBackend>,
    front_ttl: Duration,
}

impl Tiered {
    /// `front` before `back`; entries read from `back` stay in front for `front_ttl`.
    pub fn new(
        front: MemoryBackend,
        back: std::sync::Arc<dyn CacheBackend>,
        front_ttl: Duration,
    ) -> Tiered {
        Tiered {
            front,
            back,
            front_ttl,
        }
    }
}

impl CacheBackend for Tiered {
    fn describe(&self) -> String {
        format!(
            "{} in front of {}",
            self.front.describe(),
            self.back.describe()
        )
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>, CacheError>> {
        Box::pin(async move {
            if let Some(entry) = self.front.lookup(key) {
                return Ok(Some(entry));
            }
            let found = self.back.get(key).await?;
            if let Some(entry) = &found {
                // How long the entry has left behind is not known here: kept in front at
                // most REFILL_TTL, so an entry that expired behind (a tool's shorter ttl, a
                // failure notice) answers at most that much longer.
                self.front
                    .put(key, "", entry, self.front_ttl.min(REFILL_TTL))
                    .await?;
            }
            Ok(found)
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        tool: &'a str,
        entry: &'a Entry,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            self.front
                .put(key, tool, entry, ttl.min(self.front_ttl))
                .await?;
            self.back.put(key, tool, entry, ttl).await
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            self.front.delete(key).await?;
            self.back.delete(key).await
        })
    }

    fn shared(&self) -> bool {
        self.back.shared()
    }

    fn try_lock<'a>(
        &'a self,
        key: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, CacheError>> {
        self.back.try_lock(key, lease)
    }

    fn extend_lock<'a>(
        &'a self,
        key: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, CacheError>> {
        self.back.extend_lock(key, lease)
    }

    fn unlock<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), CacheError>> {
        self.back.unlock(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn a_memory_entry_expires_on_the_tokio_clock() {
        let cache = MemoryBackend::new(10);
        let entry = Entry::Output(Arc::new(json!(1)));
        cache
            .put("k", "t", &entry, Duration::from_secs(60))
            .await
            .expect("put");
        assert_eq!(cache.get("k").await.expect("get"), Some(entry));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(cache.get("k").await.expect("get"), None, "expired");
    }

    #[tokio::test(start_paused = true)]
    async fn a_memory_front_answers_from_memory_and_fills_itself_from_behind() {
        let back = Arc::new(MemoryBackend::new(10));
        let tiered = Tiered::new(
            MemoryBackend::new(10),
            back.clone(),
            Duration::from_secs(10),
        );
        let entry = Entry::Output(Arc::new(json!("v")));
        // Written through to both.
        tiered
            .put("a", "t", &entry, Duration::from_secs(60))
            .await
            .expect("put");
        assert_eq!(back.get("a").await.expect("get"), Some(entry.clone()));
        back.delete("a").await.expect("delete");
        assert_eq!(
            tiered.get("a").await.expect("get"),
            Some(entry.clone()),
            "answered in front"
        );
        // Read from behind, then kept in front for the front's ttl.
        back.put("b", "t", &entry, Duration::from_secs(60))
            .await
            .expect("put");
        assert_eq!(tiered.get("b").await.expect("get"), Some(entry.clone()));
        back.delete("b").await.expect("delete");
        assert_eq!(tiered.get("b").await.expect("get"), Some(entry));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(
            tiered.get("b").await.expect("get"),
            None,
            "the front's copy expired"
        );
        assert!(!tiered.shared());
    }

    #[tokio::test]
    async fn a_memory_cache_holds_at_most_its_bound() {
        let cache = MemoryBackend::new(5);
        for i in 0..50 {
            let entry = Entry::Output(Arc::new(json!(i)));
            cache
                .put(&format!("k{i}"), "t", &entry, Duration::from_secs(60))
                .await
                .expect("put");
        }
        cache.cache.run_pending_tasks();
        assert!(
            cache.cache.entry_count() <= 5,
            "{}",
            cache.cache.entry_count()
        );
    }
}
