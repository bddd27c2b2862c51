//! The `tool_cache` table: the `store` backend of toolgraph's call cache. One row per key
//! (text the caller chose — a hash of tool, version and arguments), its value as text, and
//! when it expires; an expired row answers nothing and is replaced by the next write.
//!
//! This module stores text: it never parses a value, and knows nothing of tools or calls.

use sqlx::Row;

use crate::database::Store;
use crate::{StoreError, now_ms};

impl Store {
    pub(crate) async fn cache_read(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM tool_cache WHERE key = $1 AND expires_at > $2")
            .bind(key)
            .bind(now_ms())
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(row) => Some(row.try_get("value")?),
            None => None,
        })
    }

    pub(crate) async fn cache_write(
        &self,
        key: &str,
        tool: &str,
        value: &str,
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO tool_cache (key, tool, value, created_at, expires_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (key) DO UPDATE SET tool = excluded.tool, value = excluded.value, \
             created_at = excluded.created_at, expires_at = excluded.expires_at",
        )
        .bind(key)
        .bind(tool)
        .bind(value)
        .bind(now)
        .bind(now.saturating_add(ttl_ms.max(0)))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub(crate) async fn cache_remove(&self, key: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM tool_cache WHERE key = $1")
            .bind(key)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(crate) async fn cache_remove_expired(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM tool_cache WHERE expires_at <= $1")
            .bind(now_ms())
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}
