//! Leases: an execution is run by one process at a time. `run` holds the lease of the
//! execution it records and renews it with a heartbeat; `resume` must take it, which it can
//! only when nobody holds it or the holder's heartbeat is stale (the holder crashed).
//!
//! A claim is one conditional `UPDATE`, so two processes racing for one execution cannot
//! both win, on SQLite as on PostgreSQL.

use crate::StoreError;
use crate::database::Store;

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The lease is the claimant's now.
    Granted,
    /// Another owner holds it and is alive.
    Held {
        /// Who holds it (`pid 4242 on host (ab12cd34)`).
        owner: String,
        /// How long ago its last heartbeat was, in ms.
        heartbeat_age_ms: i64,
    },
}

impl Store {
    pub(crate) async fn claim_lease(
        &self,
        id: &str,
        owner: &str,
        stale_ms: i64,
        dead: Option<&str>,
    ) -> Result<Claim, StoreError> {
        let now = crate::now_ms();
        let done = sqlx::query(
            "UPDATE executions SET owner = $1, heartbeat_at = $2 WHERE id = $3 \
             AND (owner IS NULL OR owner = $1 OR heartbeat_at IS NULL OR heartbeat_at < $4 \
             OR owner = $5)",
        )
        .bind(owner)
        .bind(now)
        .bind(id)
        .bind(now.saturating_sub(stale_ms))
        // No dead holder: a value no owner has (names are never empty).
        .bind(dead.unwrap_or(""))
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 1 {
            return Ok(Claim::Granted);
        }
        let row = sqlx::query("SELECT owner, heartbeat_at FROM executions WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else {
            return Err(StoreError::not_found(id, &self.shown()));
        };
        use sqlx::Row;
        let holder: Option<String> = row.try_get("owner")?;
        let beat: Option<i64> = row.try_get("heartbeat_at")?;
        Ok(Claim::Held {
            owner: holder.unwrap_or_default(),
            heartbeat_age_ms: now.saturating_sub(beat.unwrap_or(now)),
        })
    }

    pub(crate) async fn renew_lease(&self, id: &str, owner: &str) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE executions SET heartbeat_at = $1 WHERE id = $2 AND owner = $3")
                .bind(crate::now_ms())
                .bind(id)
                .bind(owner)
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn release_lease(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE executions SET owner = NULL, heartbeat_at = NULL WHERE id = $1 AND owner = $2",
        )
        .bind(id)
        .bind(owner)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
