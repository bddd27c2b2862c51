//! The `redis` backend: entries shared by every process and worker that names the same
//! server and key prefix, and the lock by which one process runs a call the others wait for
//! (`SET prefix+key.lock TOKEN NX PX lease`, given back only by its holder).
//!
//! Every request is bounded ([`OP_TIMEOUT`]); the connection is made on first use and, when
//! the server is down, tried again at most every [`RECONNECT_AFTER`] — meanwhile each request
//! fails at once (the layer takes that for a miss), so a dead Redis costs the calls nothing.

use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::backend::{CacheBackend, CacheError, Entry};

/// The longest one request (or the first connection) may take.
pub const OP_TIMEOUT: Duration = Duration::from_secs(1);

/// After a failed connection, how long requests fail at once before the next try.
pub const RECONNECT_AFTER: Duration = Duration::from_secs(5);

/// Extends the lock only when it still holds this process's token.
const EXTEND: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";

/// Gives the lock back only when it still holds this process's token.
const UNLOCK: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// Entries in one Redis server under one key prefix.
pub struct RedisBackend {
    client: redis::Client,
    url: String,
    prefix: String,
    /// This process's lock token.
    token: String,
    connection: OnceCell<ConnectionManager>,
    failed_at: Mutex<Option<Instant>>,
}

impl RedisBackend {
    /// A backend for the server at `url` (`redis://host:port/db`); keys start with
    /// `prefix`. Only the URL is checked here: the connection is made on first use.
    pub fn new(url: &str, prefix: &str) -> Result<RedisBackend, CacheError> {
        let client = redis::Client::open(url)
            .map_err(|e| CacheError::Backend(format!("redis URL {}: {e}", hide(url))))?;
        Ok(RedisBackend {
            client,
            url: hide(url),
            prefix: prefix.to_owned(),
            token: uuid::Uuid::new_v4().simple().to_string(),
            connection: OnceCell::new(),
            failed_at: Mutex::new(None),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, CacheError> {
        if let Some(c) = self.connection.get() {
            return Ok(c.clone());
        }
        let recent = self
            .failed_at
            .lock()
            .ok()
            .and_then(|f| *f)
            .is_some_and(|at| at.elapsed() < RECONNECT_AFTER);
        if recent {
            return Err(CacheError::Backend(format!("{} is unreachable", self.url)));
        }
        let made = self
            .connection
            .get_or_try_init(|| async {
                // One try, bounded: the manager's default is six tries with backoff, which
                // made a refused connection cost each process a whole OP_TIMEOUT.
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_number_of_retries(1)
                    .set_connection_timeout(Some(OP_TIMEOUT));
                let made = self.client.get_connection_manager_with_config(config);
                match tokio::time::timeout(OP_TIMEOUT, made).await {
                    Ok(Ok(c)) => Ok(c),
                    Ok(Err(e)) => Err(CacheError::Backend(format!("{}: {e}", self.url))),
                    Err(_) => Err(CacheError::Backend(format!(
                        "{}: no connection within {} ms",
                        self.url,
                        OP_TIMEOUT.as_millis()
                    ))),
                }
            })
            .await;
        match made {
            Ok(c) => Ok(c.clone()),
            Err(e) => {
                if let Ok(mut f) = self.failed_at.lock() {
                    *f = Some(Instant::now());
                }
                Err(e)
            }
        }
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, CacheError> {
        let mut c = self.connection().await?;
        match tokio::time::timeout(OP_TIMEOUT, cmd.query_async::<T>(&mut c)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(CacheError::Backend(format!("{}: {e}", self.url))),
            Err(_) => Err(CacheError::Backend(format!(
                "{}: no answer within {} ms",
                self.url,
                OP_TIMEOUT.as_millis()
            ))),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn lock_key(&self, key: &str) -> String {
        format!("{}{key}.lock", self.prefix)
    }
}

/// A URL without its password.
fn hide(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl CacheBackend for RedisBackend {
    fn describe(&self) -> String {
        format!("redis {} (keys {}…)", self.url, self.prefix)
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>, CacheError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("GET");
            cmd.arg(self.key(key));
            let text: Option<String> = self.run(cmd).await?;
            text.map(|t| Entry::from_text(&t)).transpose()
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        _tool: &'a str,
        entry: &'a Entry,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.key(key))
                .arg(entry.to_text())
                .arg("PX")
                .arg(millis(ttl));
            self.run::<()>(cmd).await
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("DEL");
            cmd.arg(self.key(key));
            self.run::<()>(cmd).await
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn try_lock<'a>(
        &'a self,
        key: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, CacheError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.lock_key(key))
                .arg(&self.token)
                .arg("NX")
                .arg("PX")
                .arg(millis(lease));
            let set: Option<String> = self.run(cmd).await?;
            Ok(set.is_some())
        })
    }

    fn extend_lock<'a>(
        &'a self,
        key: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, CacheError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(EXTEND)
                .arg(1)
                .arg(self.lock_key(key))
                .arg(&self.token)
                .arg(millis(lease));
            self.run::<i64>(cmd).await.map(|n| n == 1)
        })
    }

    fn unlock<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(UNLOCK)
                .arg(1)
                .arg(self.lock_key(key))
                .arg(&self.token);
            self.run::<i64>(cmd).await.map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::hide;

    #[test]
    fn a_redis_url_is_shown_without_its_password() {
        assert_eq!(hide("redis://:pw@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(hide("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
