//! Where cached outcomes live: the [`CacheBackend`] trait (dyn-compatible, boxed futures)
//! and what an entry holds ([`Entry`]) and how it reads as text ([`Entry::to_text`],
//! [`Entry::from_text`]) for backends that keep text (the store's `tool_cache` table, Redis).
//!
//! A backend only keeps and answers entries; what to cache, for how long, and what a
//! failure of the backend means (a miss) is the layer's business.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use serde_json::Value;
use toolgraph_core::{CallError, ErrorKind};

/// A cached outcome: the tool's output, or a permanent error (`negative_ttl`).
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// The output of a call that succeeded.
    Output(Arc<Value>),
    /// The error of a call that failed for good.
    Error(CallError),
}

/// The text form of an entry.
#[derive(Serialize)]
enum Stored<'a> {
    #[serde(rename = "ok")]
    Output(&'a Value),
    #[serde(rename = "error")]
    Error { kind: ErrorKind, message: &'a str },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
enum Owned {
    #[serde(rename = "ok")]
    Output(Value),
    #[serde(rename = "error")]
    Error { kind: ErrorKind, message: String },
}

impl Entry {
    /// The entry as JSON text: `{"ok": OUTPUT}` or `{"error": {"kind": …, "message": …}}`.
    pub fn to_text(&self) -> String {
        let stored = match self {
            Entry::Output(v) => Stored::Output(v),
            Entry::Error(e) => Stored::Error {
                kind: e.kind,
                message: &e.message,
            },
        };
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// An entry read back from its text; anything else is [`CacheError::Corrupt`].
    pub fn from_text(text: &str) -> Result<Entry, CacheError> {
        match serde_json::from_str::<Owned>(text) {
            Ok(Owned::Output(v)) => Ok(Entry::Output(Arc::new(v))),
            Ok(Owned::Error { kind, message }) => Ok(Entry::Error(CallError { kind, message })),
            Err(e) => Err(CacheError::Corrupt(e.to_string())),
        }
    }
}

/// Why a backend could not answer. The layer treats every one as a miss.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    /// The backend is down or refused the request.
    #[error("cache backend: {0}")]
    Backend(String),
    /// An entry could not be read (it will be overwritten).
    #[error("corrupt cache entry: {0}")]
    Corrupt(String),
}

/// Where entries live. Dyn-compatible: held as `Arc<dyn CacheBackend>`.
///
/// Every method is bounded by the backend's own timeouts; none may panic on what it reads.
pub trait CacheBackend: Send + Sync + 'static {
    /// A short description for logs (`memory (10000 entries)`, `redis://…`, `store sqlite:…`).
    fn describe(&self) -> String;

    /// The entry under `key`, unless there is none or it expired.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>, CacheError>>;

    /// Keeps `entry` under `key` for `ttl`, replacing what was there. `tool` names the
    /// call's tool (kept by backends that can show it).
    fn put<'a>(
        &'a self,
        key: &'a str,
        tool: &'a str,
        entry: &'a Entry,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), CacheError>>;

    /// Removes the entry under `key`, if any.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), CacheError>>;

    /// True when other processes see this backend's entries (Redis): the layer then
    /// single-flights calls across processes through [`try_lock`](CacheBackend::try_lock).
    fn shared(&self) -> bool {
        false
    }

    /// Takes the lock of `key` for `lease` (the process that holds it runs the call; the
    /// others wait for its entry). True when taken. A backend that is not shared always
    /// grants it.
    fn try_lock<'a>(
        &'a self,
        key: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, CacheError>> {
        let _ = (key, lease);
        Box::pin(async { Ok(true) })
    }

    /// Extends this backend's lock of `key` to `lease` from now, while the call it guards
    /// runs; false when the lock is not this backend's any more.
    fn extend_lock<'a>(
        &'a self,
        key: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<bool, CacheError>> {
        let _ = (key, lease);
        Box::pin(async { Ok(true) })
    }

    /// Gives the lock of `key` back (only if this backend took it).
    fn unlock<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), CacheError>> {
        let _ = key;
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entries_read_back_from_their_text_and_anything_else_is_corrupt() {
        let ok = Entry::Output(Arc::new(json!({"a": [1, 2]})));
        assert_eq!(Entry::from_text(&ok.to_text()).expect("reads"), ok);
        let err = Entry::Error(CallError {
            kind: ErrorKind::Permanent,
            message: "404 Not Found".into(),
        });
        assert_eq!(Entry::from_text(&err.to_text()).expect("reads"), err);
        for garbage in [
            "",
            "not json",
            "{\"ok\": 1, \"x\": 2}",
            "{\"other\": 1}",
            "[1]",
        ] {
            assert!(
                matches!(Entry::from_text(garbage), Err(CacheError::Corrupt(_))),
                "{garbage:?}"
            );
        }
    }
}
