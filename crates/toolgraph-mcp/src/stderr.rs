//! [`StderrTail`]: the last few KiB a server wrote to stderr, kept for error messages.
//!
//! A background task drains the child's stderr pipe (a full pipe would block the server)
//! into a bounded buffer; readers copy the tail out. It must never grow past its bound,
//! never block the drain on a reader, and never panic on bytes that are not UTF-8.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;

/// Bytes of stderr kept per server.
pub(crate) const STDERR_TAIL_BYTES: usize = 4096;

/// The tail of a server's stderr, shared by the drain task and the server.
#[derive(Debug, Clone, Default)]
pub(crate) struct StderrTail(Arc<Mutex<VecDeque<u8>>>);

impl StderrTail {
    fn buffer(&self) -> MutexGuard<'_, VecDeque<u8>> {
        // A panic while holding the lock cannot leave the bytes inconsistent.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends bytes, dropping the oldest beyond the bound.
    pub(crate) fn push(&self, bytes: &[u8]) {
        let mut buf = self.buffer();
        buf.extend(bytes);
        let excess = buf.len().saturating_sub(STDERR_TAIL_BYTES);
        buf.drain(..excess);
    }

    /// Spawns the task that drains `pipe` into the tail until end of file.
    pub(crate) fn drain<R>(&self, mut pipe: R) -> JoinHandle<()>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let tail = self.clone();
        tokio::spawn(async move {
            let mut chunk = [0u8; 1024];
            while let Ok(n) = pipe.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                tail.push(&chunk[..n]);
            }
        })
    }

    /// Everything kept, as text.
    pub(crate) fn text(&self) -> String {
        let buf = self.buffer();
        let (a, b) = buf.as_slices();
        let mut bytes = Vec::with_capacity(buf.len());
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(b);
        String::from_utf8_lossy(&bytes).trim().to_owned()
    }

    /// The last `n` non-empty lines, as text.
    pub(crate) fn last_lines(&self, n: usize) -> String {
        let text = self.text();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_bytes_and_lines() {
        let tail = StderrTail::default();
        for i in 0..2000 {
            tail.push(format!("line {i}\n").as_bytes());
        }
        let text = tail.text();
        assert!(text.len() <= STDERR_TAIL_BYTES);
        assert!(text.ends_with("line 1999"));
        assert_eq!(tail.last_lines(2), "line 1998\nline 1999");
        tail.push(&[0xff, 0xfe, b'\n']);
        assert!(tail.text().ends_with('\u{fffd}'));
    }
}
