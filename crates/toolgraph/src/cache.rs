//! The cache of idempotent calls, as a configuration describes it: the backend (`[cache]
//! backend`: the store's `tool_cache` table through [`StoreCache`], `memory`, or `redis`,
//! with an optional memory front) and the policy (ttls, per-tool opt-out, ttl and version)
//! handed to `toolgraph_cache::CacheLayer`.
//!
//! A tool's version is part of its keys: `[tools.NAME] version` when the operator gives
//! one; for an MCP tool, `mcp:SERVER:VERSION` otherwise (the server's name and the version
//! its `initialize` answer gave; `mcp:SERVER` when it gave none); empty for the rest.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use toolgraph_cache::{
    CacheBackend, CacheError, CacheLayer, CachePolicy, Entry, MemoryBackend, RedisBackend, Tiered,
    ToolCachePolicy,
};
use toolgraph_mcp::McpServer;
use toolgraph_store::ExecutionStore;

use crate::SetupError;
use crate::config::{CacheBackendKind, Config};

/// The store's `tool_cache` table as a cache backend.
pub struct StoreCache {
    store: Arc<dyn ExecutionStore>,
}

impl StoreCache {
    /// A backend over `store`'s `tool_cache` table.
    pub fn new(store: Arc<dyn ExecutionStore>) -> StoreCache {
        StoreCache { store }
    }
}

fn backend_error(e: toolgraph_store::StoreError) -> CacheError {
    CacheError::Backend(e.to_string())
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

impl CacheBackend for StoreCache {
    fn describe(&self) -> String {
        format!("store {}", self.store.describe())
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>, CacheError>> {
        Box::pin(async move {
            let text = self.store.cache_get(key).await.map_err(backend_error)?;
            text.map(|t| Entry::from_text(&t)).transpose()
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
            self.store
                .cache_put(key, tool, &entry.to_text(), ttl_ms(ttl))
                .await
                .map_err(backend_error)
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            self.store
                .cache_delete(key)
                .await
                .map(|_| ())
                .map_err(backend_error)
        })
    }
}

/// The policy `config` gives: ttls, and per tool its opt-out, ttl and version.
pub fn cache_policy(config: &Config, servers: &[Arc<McpServer>]) -> CachePolicy {
    let c = &config.cache;
    let mut policy = CachePolicy {
        ttl: Duration::from_millis(c.ttl_ms),
        negative_ttl: (c.negative_ttl_ms > 0).then(|| Duration::from_millis(c.negative_ttl_ms)),
        lock_lease: Duration::from_millis(c.lock_lease_ms.max(1)),
        ..CachePolicy::default()
    };
    for server in servers {
        for tool in server.tools() {
            let name = toolgraph_core::Tool::spec(&tool).name.clone();
            policy.tools.insert(
                name,
                ToolCachePolicy {
                    enabled: true,
                    ttl: None,
                    version: match server.server_version() {
                        Some(v) => format!("mcp:{}:{v}", server.name()),
                        None => format!("mcp:{}", server.name()),
                    },
                },
            );
        }
    }
    for (name, settings) in &config.tools {
        let entry = policy
            .tools
            .entry(name.clone())
            .or_insert_with(|| ToolCachePolicy {
                enabled: true,
                ..ToolCachePolicy::default()
            });
        if let Some(enabled) = settings.cache {
            entry.enabled = enabled;
        }
        if let Some(ms) = settings.cache_ttl_ms {
            entry.ttl = Some(Duration::from_millis(ms));
        }
        if let Some(version) = &settings.version {
            entry.version.clone_from(version);
        }
    }
    policy
}

/// The cache layer `config` asks for (`None` when `[cache] enabled` is false). `store` is
/// the runtime's store, used by the `store` backend (opened here from `[store] url` when
/// recording is off).
pub async fn cache_layer(
    config: &Config,
    store: Option<&Arc<dyn ExecutionStore>>,
    servers: &[Arc<McpServer>],
) -> Result<Option<CacheLayer>, SetupError> {
    let c = &config.cache;
    if !c.enabled {
        return Ok(None);
    }
    let back: Arc<dyn CacheBackend> = match c.backend {
        CacheBackendKind::Memory => Arc::new(MemoryBackend::new(c.max_entries)),
        CacheBackendKind::Redis => {
            let url = c.redis_url.as_deref().map(str::trim).unwrap_or_default();
            if url.is_empty() {
                return Err(SetupError::Cache(
                    "[cache] backend = \"redis\" needs [cache] redis_url (TOOLGRAPH_CACHE_REDIS_URL)"
                        .into(),
                ));
            }
            Arc::new(
                RedisBackend::new(url, &c.key_prefix)
                    .map_err(|e| SetupError::Cache(e.to_string()))?,
            )
        }
        CacheBackendKind::Store => {
            let store = match store {
                Some(store) => store.clone(),
                None => toolgraph_store::open(&config.store.url)
                    .await
                    .map_err(|source| SetupError::Store {
                        url: toolgraph_store::hide_password(&config.store.url),
                        source,
                    })?,
            };
            // Expired entries go when a process starts: the table stays as small as the
            // entries that can still answer.
            if let Err(e) = store.cache_prune().await {
                tracing::warn!(error = %e, "cache: pruning expired entries failed");
            }
            Arc::new(StoreCache::new(store))
        }
    };
    let backend: Arc<dyn CacheBackend> = if c.memory_front && c.backend != CacheBackendKind::Memory
    {
        Arc::new(Tiered::new(
            MemoryBackend::new(c.max_entries),
            back,
            Duration::from_millis(c.ttl_ms),
        ))
    } else {
        back
    };
    tracing::info!(backend = %backend.describe(), "cache on");
    Ok(Some(CacheLayer::new(
        backend,
        cache_policy(config, servers),
    )))
}
