//! toolgraph's cache of idempotent calls, and single-flight: identical calls in flight at
//! the same time run once.
//!
//! - [`cache_key`]: a call's key — its tool, the tool's version and the canonical JSON of
//!   its resolved arguments, hashed (SHA-256), the same in every process and build;
//! - [`CacheBackend`]: where entries live (dyn-compatible, boxed futures), with
//!   [`MemoryBackend`] (moka, bounded), [`RedisBackend`] (shared by processes, with the
//!   lock that single-flights calls across them) and [`Tiered`] (memory in front of
//!   another); the store's `tool_cache` table is adapted to it by the `toolgraph` crate;
//! - [`CacheLayer`]: the engine [`Layer`](toolgraph_engine::layer::Layer) that answers hits,
//!   marks them cached on the call's `Meter`, and runs misses once per key.
//!
//! The only crate with moka and redis. Invariant: the cache never fails a call — a backend
//! that is down or an entry that cannot be read is a miss.

mod backend;
mod key;
mod layer;
mod memory;
mod redis;

pub use backend::{CacheBackend, CacheError, Entry};
pub use key::{cache_key, canonical_json};
pub use layer::{CacheCounts, CacheLayer, CachePolicy, ToolCachePolicy};
pub use memory::{MemoryBackend, Tiered};
pub use redis::{OP_TIMEOUT, RECONNECT_AFTER, RedisBackend};
