//! [`StoreOptions`]: how long a store waits, and how hard it tries, before it gives up on
//! the database — when opening it, when making a call's start durable, and when writing a
//! running execution's rows — and how many rows a recorder may hold in memory.
//!
//! The policy is data: one value, with defaults, handed to [`Store::open_with`]
//! (or [`open_with`](crate::open_with)). Retrying a failed write is done here
//! ([`StoreOptions::retrying`]) so every write of the store gives up the same way.
//! Nothing here touches the database.
//!
//! [`Store::open_with`]: crate::Store::open_with

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// How long a store waits for the database and how many rows a recorder queues. The
/// defaults suit a local SQLite file and a PostgreSQL server on the network alike.
///
/// ```
/// use toolgraph_store::StoreOptions;
///
/// let options = StoreOptions {
///     durable_timeout_ms: 2_000,
///     ..StoreOptions::default()
/// };
/// assert_eq!(options.write_retries, 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreOptions {
    /// How long opening a store may take to make its first connection, in ms. The error of
    /// that connection (refused, not a database, wrong password…) is reported as it is.
    pub connect_timeout_ms: u64,
    /// How long a call whose tool is not idempotent waits for its start to be durable, in
    /// ms. After that the call goes ahead (recording never stops the work) and the
    /// recorder's `close` reports that its start was not durable in time.
    pub durable_timeout_ms: u64,
    /// How long one attempt at a write may take — a batch of a recorder's rows (at most
    /// 16,384), or an execution's figures — in ms.
    pub write_timeout_ms: u64,
    /// How many times a failed write is tried again (with exponential backoff from 100 ms,
    /// jittered, at most 2 s) before the recorder stops recording.
    pub write_retries: u32,
    /// How many rows a recorder holds before calls wait for room (at most the durability
    /// timeout, then they go ahead); at least 2 (a call's start and end). The writer may
    /// hold as many more while it writes them.
    pub queue_rows: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            connect_timeout_ms: 5_000,
            durable_timeout_ms: 5_000,
            write_timeout_ms: 5_000,
            write_retries: 3,
            queue_rows: 1 << 16,
        }
    }
}

impl StoreOptions {
    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub(crate) fn durable_timeout(&self) -> Duration {
        Duration::from_millis(self.durable_timeout_ms)
    }

    pub(crate) fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    /// Runs `attempt` until it succeeds, fails for good (see [`StoreError::is_transient`]),
    /// or has been tried `1 + write_retries` times; each attempt may take
    /// `write_timeout_ms`. `what` names the write in messages.
    pub(crate) async fn retrying<T, F, Fut>(
        &self,
        what: &'static str,
        mut attempt: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let timeout = self.write_timeout();
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(self.write_retries as usize)
            .with_jitter();
        (|| {
            let attempt = attempt();
            async move {
                match tokio::time::timeout(timeout, attempt).await {
                    Ok(result) => result,
                    Err(_) => Err(StoreError::TimedOut {
                        what,
                        after_ms: self.write_timeout_ms,
                    }),
                }
            }
        })
        .retry(backoff)
        .when(StoreError::is_transient)
        .notify(|e, after| {
            tracing::debug!(error = %e, retry_in_ms = after.as_millis() as u64, "{what} failed; trying again");
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn quick() -> StoreOptions {
        StoreOptions {
            write_timeout_ms: 50,
            write_retries: 2,
            ..StoreOptions::default()
        }
    }

    #[tokio::test]
    async fn a_transient_failure_is_tried_again_up_to_the_bound() {
        let tries = AtomicU32::new(0);
        let r: Result<(), _> = quick()
            .retrying("a write", || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err(StoreError::Recorder("flaky".into()))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 3, "one try and two retries");
    }

    #[tokio::test]
    async fn a_hung_attempt_times_out_and_a_later_one_succeeds() {
        let tries = AtomicU32::new(0);
        let r = quick()
            .retrying("a write", || {
                let n = tries.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        std::future::pending::<()>().await;
                    }
                    Ok(n)
                }
            })
            .await;
        assert_eq!(r.ok(), Some(1));
    }

    #[tokio::test]
    async fn a_permanent_failure_is_not_tried_again() {
        let tries = AtomicU32::new(0);
        let r: Result<(), _> = quick()
            .retrying("a write", || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err(StoreError::not_found("x", "memory:"))
            })
            .await;
        assert!(matches!(r, Err(StoreError::NotFound { .. })));
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }
}
