//! The cache key of a call: a SHA-256 of its tool's name, the tool's version and the
//! canonical JSON of its *resolved* arguments (object keys sorted, no whitespace), so two
//! calls that mean the same thing share a key in every process and every build.
//!
//! Pure: no I/O, no clock.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Version of the key's layout: bumping it retires every stored entry.
const LAYOUT: &str = "toolgraph-cache/1";

/// The key of a call of `tool` at `version` with `args`: 64 hexadecimal digits.
///
/// ```
/// use serde_json::json;
/// use toolgraph_cache::cache_key;
///
/// let a = cache_key("http_fetch", "1", &json!({"url": "https://a.test", "method": "GET"}));
/// let b = cache_key("http_fetch", "1", &json!({"method": "GET", "url": "https://a.test"}));
/// assert_eq!(a, b, "key order does not matter");
/// assert_ne!(a, cache_key("http_fetch", "2", &json!({"url": "https://a.test", "method": "GET"})));
/// ```
pub fn cache_key(tool: &str, version: &str, args: &Value) -> String {
    let mut hasher = Sha256::new();
    // Lengths first: no two (tool, version) pairs hash the same bytes.
    for part in [LAYOUT, tool, version] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let mut sink = HashSink(&mut hasher);
    canonical(args, &mut sink);
    let digest = hasher.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut key = String::with_capacity(64);
    for byte in digest.iter() {
        key.push(char::from(HEX[usize::from(byte >> 4)]));
        key.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    key
}

/// The canonical JSON text of `value` (object keys sorted, no whitespace) — what the key
/// hashes.
pub fn canonical_json(value: &Value) -> String {
    let mut out = StringSink(String::new());
    canonical(value, &mut out);
    out.0
}

trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

/// A sink as an `io::Write`, so serde_json writes strings and numbers straight into it.
struct Writer<'a>(&'a mut dyn Sink);

impl std::io::Write for Writer<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.put(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct HashSink<'a>(&'a mut Sha256);

impl Sink for HashSink<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

struct StringSink(String);

impl Sink for StringSink {
    fn put(&mut self, bytes: &[u8]) {
        self.0.push_str(&String::from_utf8_lossy(bytes));
    }
}

fn canonical(value: &Value, out: &mut dyn Sink) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.put(b"{");
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.put(b",");
                }
                string(k, out);
                out.put(b":");
                if let Some(v) = map.get(k) {
                    canonical(v, out);
                }
            }
            out.put(b"}");
        }
        Value::Array(items) => {
            out.put(b"[");
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.put(b",");
                }
                canonical(v, out);
            }
            out.put(b"]");
        }
        Value::String(s) => string(s, out),
        Value::Null => out.put(b"null"),
        Value::Bool(true) => out.put(b"true"),
        Value::Bool(false) => out.put(b"false"),
        Value::Number(n) => {
            let _ = serde_json::to_writer(Writer(out), n);
        }
    }
}

fn string(s: &str, out: &mut dyn Sink) {
    // serde_json's escaping: the same text for the same string everywhere.
    let _ = serde_json::to_writer(Writer(out), s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth_and_drops_whitespace() {
        let v: Value =
            serde_json::from_str(r#"{ "b": [ {"z": 1, "a": "x y"} ], "a": null }"#).expect("json");
        assert_eq!(canonical_json(&v), r#"{"a":null,"b":[{"a":"x y","z":1}]}"#);
    }

    #[test]
    fn keys_are_stable_and_tell_tools_versions_and_arguments_apart() {
        let args = json!({"q": "rust", "n": 3});
        let key = cache_key("search", "1", &args);
        assert_eq!(key.len(), 64);
        // A fixed value: keys must not change between builds or processes.
        assert_eq!(key, cache_key("search", "1", &json!({"n": 3, "q": "rust"})));
        assert_ne!(key, cache_key("searc", "h1", &args), "parts are delimited");
        assert_ne!(key, cache_key("search", "1", &json!({"q": "rust", "n": 4})));
        assert_ne!(
            key,
            cache_key("search", "1", &json!({"q": "rust", "n": "3"}))
        );
    }

    #[test]
    fn the_key_of_a_known_call_never_changes() {
        // Pinned: a change here retires every stored entry (bump LAYOUT on purpose only).
        let key = cache_key("echo", "", &json!({"text": "hi"}));
        assert_eq!(key, PINNED);
    }

    const PINNED: &str = "105079c16945fbbaddf17b34c6d56ae7d7979cc952450fdd4229afccc5906c60";
}
