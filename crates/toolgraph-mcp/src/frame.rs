//! [`FrameReader`]: a stdio server's stdout as rmcp reads it, with the two guards rmcp's
//! line reader lacks.
//!
//! rmcp reads one JSON-RPC message per line and drops a line longer than its limit without
//! a word, so the call waiting for that answer waits forever. This reader enforces the
//! server's `max_frame_bytes` itself: a line over it is cut short where the limit is reached
//! (rmcp receives an unparsable line, which it ignores), the rest is scanned but not kept,
//! and — when the line was an answer to one of our requests — an error answer to the same
//! request id takes its place, so exactly that call fails, with a message naming the size
//! and the limit. (The TypeScript SDK writes the `id` after the result, so the id is found
//! by scanning the top level of the whole line.) A message the server sent on its own
//! (a request or notification) that is too large is dropped, with a note in the stderr tail.
//!
//! It also reports the first line that is not a JSON-RPC message, so a server answering the
//! handshake with garbage fails fast instead of after the startup timeout.
//!
//! It must never keep more than the first bytes of a line and a few counters, and never
//! panic on any bytes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use serde_json::{Value, json};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::watch;

use crate::stderr::StderrTail;

/// The JSON-RPC error code of the answer that replaces one over the limit (in the range
/// JSON-RPC leaves to implementations).
pub(crate) const FRAME_TOO_LARGE: i32 = -32_050;

/// Bytes of a line quoted when it is not JSON-RPC.
const QUOTE_BYTES: usize = 200;
/// Bytes of an `id` value kept; a longer one is not a request id of ours.
const ID_BYTES: usize = 64;
/// Bytes read from the pipe at once.
const CHUNK: usize = 64 << 10;

/// The top-level keys that matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Id,
    Method,
    Result,
    Error,
    Other,
}

/// What is known about the line being read, from a scan of its top level.
#[derive(Debug, Default)]
struct LineScan {
    /// Bytes of the line so far, the newline not counted.
    len: usize,
    /// The line's first bytes, for quoting it.
    head: Vec<u8>,
    /// A byte other than whitespace was seen.
    started: bool,
    /// Something that cannot be a JSON-RPC message was seen (not an object, text after it).
    malformed: bool,
    /// The top-level object closed.
    closed: bool,
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// At depth 1, the next string is a key.
    expect_key: bool,
    /// The key being read (at most a few bytes; `None` when longer or escaped).
    key: Option<Vec<u8>>,
    reading_key: bool,
    /// The last key read at depth 1.
    last_key: Option<Key>,
    /// The raw text of the `id` value while it is read, and after.
    id: Option<Vec<u8>>,
    reading_id: bool,
    has_method: bool,
    has_result: bool,
    has_error: bool,
}

impl LineScan {
    /// Scans `bytes`, a piece of the line without newlines.
    fn feed(&mut self, mut bytes: &[u8]) {
        self.len = self.len.saturating_add(bytes.len());
        let room = QUOTE_BYTES.saturating_sub(self.head.len());
        self.head.extend_from_slice(&bytes[..room.min(bytes.len())]);
        while !bytes.is_empty() {
            if self.in_string && !self.escaped && !self.reading_key && !self.reading_id {
                // The bulk of a large message is string content: skip to its end at once.
                match bytes.iter().position(|&c| c == b'"' || c == b'\\') {
                    Some(i) => bytes = &bytes[i..],
                    None => return,
                }
            }
            let Some((&b, rest)) = bytes.split_first() else {
                return;
            };
            self.byte(b);
            bytes = rest;
        }
    }

    fn byte(&mut self, b: u8) {
        if self.reading_id {
            self.push_id(b);
        }
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
                self.key = None;
            } else if b == b'"' {
                self.in_string = false;
                if self.reading_key {
                    self.end_key();
                }
            } else if self.reading_key
                && let Some(key) = &mut self.key
            {
                if key.len() < 8 {
                    key.push(b);
                } else {
                    self.key = None;
                }
            }
            return;
        }
        if matches!(b, b' ' | b'\t' | b'\r') {
            return;
        }
        if !self.started {
            self.started = true;
            if b != b'{' {
                self.malformed = true;
            }
        }
        if self.closed {
            self.malformed = true;
            return;
        }
        match b {
            b'"' => {
                self.in_string = true;
                if self.depth == 1 && self.expect_key {
                    self.reading_key = true;
                    self.key = Some(Vec::new());
                }
            }
            b'{' | b'[' => {
                self.depth = self.depth.saturating_add(1);
                self.expect_key = self.depth == 1 && b == b'{';
            }
            b'}' | b']' => {
                if self.depth == 0 {
                    self.malformed = true;
                    return;
                }
                self.depth -= 1;
                if self.depth == 0 {
                    self.closed = true;
                    self.end_id();
                }
            }
            b',' if self.depth == 1 => {
                self.expect_key = true;
                self.end_id();
            }
            b':' if self.depth == 1 => {
                self.expect_key = false;
                if self.last_key == Some(Key::Id) {
                    self.reading_id = true;
                    self.id = Some(Vec::new());
                }
            }
            _ => {
                if self.depth == 0 {
                    self.malformed = true;
                }
            }
        }
    }

    fn end_key(&mut self) {
        self.reading_key = false;
        let key = match self.key.take().as_deref() {
            Some(b"id") => Key::Id,
            Some(b"method") => Key::Method,
            Some(b"result") => Key::Result,
            Some(b"error") => Key::Error,
            _ => Key::Other,
        };
        match key {
            Key::Method => self.has_method = true,
            Key::Result => self.has_result = true,
            Key::Error => self.has_error = true,
            Key::Id | Key::Other => {}
        }
        self.last_key = Some(key);
    }

    fn push_id(&mut self, b: u8) {
        if let Some(id) = &mut self.id {
            if id.len() < ID_BYTES {
                id.push(b);
            } else {
                self.id = Some(b"null".to_vec());
                self.reading_id = false;
            }
        }
    }

    /// Ends the `id` value (its text holds the `,` or `}` that ended it).
    fn end_id(&mut self) {
        if !self.reading_id {
            return;
        }
        self.reading_id = false;
        if let Some(id) = &mut self.id {
            id.pop();
        }
    }

    /// The request id this line answers, when it is an answer (no `method`) with an id
    /// that is a number or a string.
    fn answered_id(&self) -> Option<Value> {
        if self.has_method {
            return None;
        }
        let id: Value = serde_json::from_slice(self.id.as_deref()?).ok()?;
        (id.is_number() || id.is_string()).then_some(id)
    }

    /// True when the line cannot be a JSON-RPC message: not one object, or an object with
    /// neither `method` nor `result` nor `error`. An empty line is neither.
    fn is_garbage(&self) -> bool {
        if !self.started {
            return false;
        }
        self.malformed
            || !self.closed
            || self.in_string
            || !(self.has_method || self.has_result || self.has_error)
    }

    fn quote(&self) -> String {
        let text = String::from_utf8_lossy(&self.head);
        let text = text.trim();
        if self.len > self.head.len() {
            format!("{text}…")
        } else {
            text.to_owned()
        }
    }
}

/// Reads a stdio server's stdout for rmcp, enforcing `limit` bytes per message.
pub(crate) struct FrameReader<R> {
    inner: R,
    limit: usize,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Bytes to hand out before any more of the server's.
    injected: Vec<u8>,
    injected_at: usize,
    scan: LineScan,
    /// The line went over the limit: scanned, not passed on.
    oversized: bool,
    /// The first line that was not JSON-RPC, quoted.
    garbage: watch::Sender<Option<String>>,
    stderr: StderrTail,
}

impl<R> FrameReader<R> {
    /// A reader of `inner` passing on messages of at most `limit` bytes. Garbage is reported
    /// on the returned channel; dropped messages are noted in `stderr`.
    pub(crate) fn new(
        inner: R,
        limit: usize,
        stderr: StderrTail,
    ) -> (FrameReader<R>, watch::Receiver<Option<String>>) {
        let (garbage, seen) = watch::channel(None);
        let reader = FrameReader {
            inner,
            limit,
            buf: vec![0; CHUNK].into_boxed_slice(),
            start: 0,
            end: 0,
            injected: Vec::new(),
            injected_at: 0,
            scan: LineScan::default(),
            oversized: false,
            garbage,
            stderr,
        };
        (reader, seen)
    }

    /// A line was passed on whole.
    fn line_passed(&mut self) {
        let scan = std::mem::take(&mut self.scan);
        if scan.is_garbage() {
            let quote = scan.quote();
            self.garbage.send_if_modified(|first| {
                if first.is_some() {
                    return false;
                }
                *first = Some(quote);
                true
            });
        }
    }

    /// An oversized line ended: what takes its place (an error answer, or nothing).
    fn oversized_line_ended(&mut self) {
        let scan = std::mem::take(&mut self.scan);
        self.oversized = false;
        let (bytes, limit) = (scan.len, self.limit);
        match scan.answered_id() {
            Some(id) => {
                let message = format!(
                    "its answer is {bytes} bytes, over the limit of {limit} bytes for one message \
                     (`max_frame_bytes` in the server's configuration); the answer was dropped"
                );
                let answer = json!({
                    "jsonrpc": "2.0",
                    "id": id,
                    "error": {
                        "code": FRAME_TOO_LARGE,
                        "message": message,
                        "data": {"bytes": bytes, "max_frame_bytes": limit},
                    },
                });
                self.injected = answer.to_string().into_bytes();
                self.injected.push(b'\n');
            }
            None => {
                let what = if scan.has_method {
                    "a request or notification"
                } else {
                    "a message without a request id"
                };
                self.stderr.push(
                    format!(
                        "\n--- toolgraph: dropped {what} of {bytes} bytes from the server \
                         (over max_frame_bytes, {limit}) ---\n"
                    )
                    .as_bytes(),
                );
                self.injected.clear();
            }
        }
        self.injected_at = 0;
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for FrameReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.injected_at < this.injected.len() {
                let pending = &this.injected[this.injected_at..];
                let n = pending.len().min(out.remaining());
                out.put_slice(&pending[..n]);
                this.injected_at += n;
                return Poll::Ready(Ok(()));
            }
            if this.start == this.end {
                let mut read = ReadBuf::new(&mut this.buf);
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
                let n = read.filled().len();
                if n == 0 {
                    // End of file: an unfinished line is no message.
                    return Poll::Ready(Ok(()));
                }
                this.start = 0;
                this.end = n;
            }
            let chunk = &this.buf[this.start..this.end];
            let newline = chunk.iter().position(|&b| b == b'\n');
            let line_part = newline.unwrap_or(chunk.len());
            if this.oversized {
                this.scan.feed(&chunk[..line_part]);
                this.start += line_part;
                if newline.is_some() {
                    this.start += 1;
                    this.oversized_line_ended();
                }
                continue;
            }
            let room = this.limit.saturating_sub(this.scan.len);
            if line_part <= room {
                // Within the limit: pass it on, with its newline when it has one.
                let whole = line_part + usize::from(newline.is_some());
                let n = whole.min(out.remaining());
                this.scan.feed(&chunk[..n.min(line_part)]);
                out.put_slice(&chunk[..n]);
                this.start += n;
                if newline.is_some() && n == whole {
                    this.line_passed();
                }
                return Poll::Ready(Ok(()));
            }
            // Over the limit: pass on what fits, end the line there, scan the rest.
            let n = room.min(out.remaining());
            this.scan.feed(&chunk[..n]);
            out.put_slice(&chunk[..n]);
            this.start += n;
            if n == room {
                this.oversized = true;
                this.injected = b"\n".to_vec();
                this.injected_at = 0;
            }
            if n > 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn scan(line: &str) -> LineScan {
        let mut scan = LineScan::default();
        // In uneven pieces, as a pipe delivers them.
        for piece in line.as_bytes().chunks(3) {
            scan.feed(piece);
        }
        scan
    }

    #[test]
    fn the_answered_id_is_found_wherever_it_is() {
        let ts = r#"{"result":{"content":[{"type":"text","text":"a \"quoted\" id:7, }"}]},"jsonrpc":"2.0","id":7}"#;
        assert_eq!(scan(ts).answered_id(), Some(json!(7)));
        let first = r#"{"jsonrpc":"2.0","id":"req-1","result":{"id":99}}"#;
        assert_eq!(scan(first).answered_id(), Some(json!("req-1")));
        let request = r#"{"jsonrpc":"2.0","id":3,"method":"sampling/createMessage"}"#;
        assert_eq!(scan(request).answered_id(), None, "a request of the server");
        let nested_only = r#"{"result":{"id":5},"jsonrpc":"2.0"}"#;
        assert_eq!(scan(nested_only).answered_id(), None);
        assert!(!scan(ts).is_garbage() && !scan(request).is_garbage());
    }

    #[test]
    fn lines_that_are_not_json_rpc_are_garbage() {
        for line in [
            "garbage",
            "Server started on stdio",
            "{not json",
            r#"{"hello":1}"#,
            r#"{"result":1} trailing"#,
            "[1,2]",
        ] {
            assert!(scan(line).is_garbage(), "{line}");
        }
        assert!(!scan("   ").is_garbage(), "an empty line is nothing");
        let long = format!("x{}", "y".repeat(500));
        let quoted = scan(&long).quote();
        assert!(quoted.ends_with('…') && quoted.len() < 300, "{quoted}");
    }

    async fn read_all(input: Vec<u8>, limit: usize) -> (String, Option<String>, String) {
        let tail = StderrTail::default();
        let (mut reader, garbage) = FrameReader::new(&input[..], limit, tail.clone());
        let mut out = Vec::new();
        // A small buffer, so every path that stops part-way is taken.
        let mut buf = [0u8; 7];
        loop {
            let n = reader.read(&mut buf).await.expect("reads");
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        let garbage = garbage.borrow().clone();
        (
            String::from_utf8_lossy(&out).into_owned(),
            garbage,
            tail.text(),
        )
    }

    #[tokio::test]
    async fn an_oversized_answer_becomes_an_error_answer_to_its_id() {
        let big = format!(
            r#"{{"result":{{"content":[{{"type":"text","text":"{}"}}]}},"jsonrpc":"2.0","id":12}}"#,
            "x".repeat(5000)
        );
        let small = r#"{"result":{},"jsonrpc":"2.0","id":13}"#;
        let input = format!("{small}\n{big}\n{small}\n").into_bytes();
        let (out, garbage, _) = read_all(input, 1024).await;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert_eq!(lines[0], small);
        assert_eq!(lines[1].len(), 1024, "cut where the limit was reached");
        let error: Value = serde_json::from_str(lines[2]).expect("JSON");
        assert_eq!(error["id"], 12);
        assert_eq!(error["error"]["code"], FRAME_TOO_LARGE);
        assert_eq!(error["error"]["data"]["bytes"], big.len());
        assert_eq!(error["error"]["data"]["max_frame_bytes"], 1024);
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("{} bytes", big.len())),
            "{message}"
        );
        assert!(message.contains("1024 bytes"), "{message}");
        assert_eq!(lines[3], small);
        assert_eq!(garbage, None, "the cut line is not reported as garbage");
    }

    #[tokio::test]
    async fn an_oversized_notification_is_dropped_with_a_note() {
        let big = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{{"data":"{}"}}}}"#,
            "x".repeat(3000)
        );
        let input = format!("{big}\n").into_bytes();
        let (out, _, stderr) = read_all(input, 1024).await;
        assert_eq!(out.lines().count(), 1, "only the cut line: {out}");
        assert!(
            stderr.contains("dropped a request or notification of 3"),
            "{stderr}"
        );
    }

    #[tokio::test]
    async fn a_line_of_exactly_the_limit_passes_and_garbage_is_reported() {
        let filler = "x".repeat(1024 - r#"{"result":"","jsonrpc":"2.0","id":1}"#.len());
        let exact = format!(r#"{{"result":"{filler}","jsonrpc":"2.0","id":1}}"#);
        assert_eq!(exact.len(), 1024);
        let input = format!("{exact}\ngarbage\n{exact}\n").into_bytes();
        let (out, garbage, _) = read_all(input.clone(), 1024).await;
        assert_eq!(out.as_bytes(), &input[..]);
        assert_eq!(garbage.as_deref(), Some("garbage"));
    }
}
