//! Where a namespace's traffic lives: the stream, its subjects, the consumers and the
//! worker bucket, all prefixed by the namespace so clusters sharing one NATS server never
//! see each other's calls.
//!
//! A tool's name becomes one subject token and one consumer name: ASCII letters, digits
//! and `_` stay, every other byte becomes `-XX` (hex). `-` always starts an escape, so the
//! encoding is unambiguous, and the result is safe as a subject token, a consumer name and
//! a file name (JetStream stores consumers in directories named after them).

use std::fmt::Write as _;

use crate::ClusterError;

/// A validated namespace and the names derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// The namespace used when none is given.
    pub const DEFAULT: &'static str = "default";

    /// Checks `name`: 1–64 characters of ASCII letters, digits, `_` and `-`.
    pub fn new(name: &str) -> Result<Namespace, ClusterError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(ClusterError::Config(format!(
                "namespace `{name}`: use 1 to 64 ASCII letters, digits, `_` or `-`"
            )));
        }
        Ok(Namespace {
            name: name.to_owned(),
        })
    }

    /// The namespace's name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The work-queue stream that holds dispatched calls.
    pub fn stream(&self) -> String {
        format!("toolgraph-{}-calls", self.name)
    }

    /// Every call subject of the namespace (the stream's subjects).
    pub fn call_subjects(&self) -> String {
        format!("toolgraph.{}.call.>", self.name)
    }

    /// The subject calls of `tool` are published on.
    pub fn call_subject(&self, tool: &str) -> String {
        format!("toolgraph.{}.call.{}", self.name, token(tool))
    }

    /// The durable pull consumer that hands out calls of `tool`, shared by every worker
    /// serving it; its `max_ack_pending` is the tool's cluster-wide limit.
    pub fn consumer(&self, tool: &str) -> String {
        format!("tool_{}", token(tool))
    }

    /// Where a coordinator receives its workers' answers.
    pub fn reply_subject(&self, coordinator: &str) -> String {
        format!("toolgraph.{}.reply.{coordinator}", self.name)
    }

    /// Where a coordinator announces cancelled calls.
    pub fn cancel_subject(&self, coordinator: &str) -> String {
        format!("toolgraph.{}.cancel.{coordinator}", self.name)
    }

    /// Every coordinator's cancellations (what workers listen to).
    pub fn cancel_subjects(&self) -> String {
        format!("toolgraph.{}.cancel.>", self.name)
    }

    /// The key-value bucket of live workers' heartbeats.
    pub fn workers_bucket(&self) -> String {
        format!("toolgraph-{}-workers", self.name)
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Namespace {
            name: Namespace::DEFAULT.to_owned(),
        }
    }
}

/// `tool` as one subject token (see the module docs).
pub fn token(tool: &str) -> String {
    let mut out = String::with_capacity(tool.len());
    for b in tool.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "-{b:02X}");
        }
    }
    if out.is_empty() {
        out.push_str("-00");
    }
    out
}

/// The tool name a [`token`] stands for (`None` if it is not one).
pub fn untoken(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'-' {
            let hex = token.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if out == [0] {
        out.clear();
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_become_distinct_safe_tokens() {
        assert_eq!(token("file_read"), "file_read");
        assert_eq!(token("fs.read"), "fs-2Eread");
        assert_eq!(token("a-b"), "a-2Db");
        assert_ne!(token("a.b"), token("a__b"));
        assert_ne!(token("a-2Eb"), token("a.b"));
        for name in ["file_read", "fs.read", "a-b", "ü/x", "a b"] {
            assert_eq!(untoken(&token(name)).as_deref(), Some(name));
        }
        assert_eq!(untoken("a-Z"), None);
        for name in ["a b", "x>y", "*", "ü", "a/b", ""] {
            let t = token(name);
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{name:?} -> {t}"
            );
        }
    }

    #[test]
    fn namespaces_are_checked_and_prefix_everything() {
        let ns = Namespace::new("team-a").expect("valid");
        assert_eq!(ns.stream(), "toolgraph-team-a-calls");
        assert_eq!(ns.call_subject("sleep"), "toolgraph.team-a.call.sleep");
        assert_eq!(ns.workers_bucket(), "toolgraph-team-a-workers");
        for bad in ["", "a.b", "a b", "x>", &"n".repeat(65)] {
            let e = Namespace::new(bad).expect_err(bad);
            assert!(e.to_string().contains("namespace"), "{e}");
        }
    }
}
