//! The server-sent-events decoder of `toolgraph-llm` on arbitrary bytes, cut into arbitrary
//! chunks, under an arbitrary event limit.
//!
//! The decoder is private to its crate and has no I/O-free public entry (the client reads
//! a `reqwest::Response`), so its source file is compiled into this target as a module of
//! its own (`#[path]`): the fuzzer runs the very code the client runs.
//!
//! Checked: nothing panics; how the bytes are cut into chunks changes nothing (the same
//! events, or an error either way); every event is what a plain reading of the documented
//! format gives (`data:` lines joined by `\n`, dispatched on a blank line or at the end,
//! `\r\n` or `\n` line ends, other fields ignored); no event and no line passes the limit
//! without an error.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/toolgraph-llm/src/sse.rs"]
mod sse;

use sse::{EventTooLarge, SseDecoder};

#[derive(Arbitrary, Debug)]
struct Case {
    max: u16,
    cuts: Vec<u16>,
    stream: Vec<u8>,
}

/// Feeds `chunks` then finishes; the events, or the error.
fn decode<'a>(
    max: usize,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<String>, EventTooLarge> {
    let mut decoder = SseDecoder::new(max);
    let mut events = Vec::new();
    for chunk in chunks {
        events.extend(decoder.feed(chunk)?);
    }
    events.extend(decoder.finish()?);
    Ok(events)
}

/// The documented format, read the plain way: the whole stream at once.
fn oracle(max: usize, stream: &[u8]) -> Result<Vec<String>, EventTooLarge> {
    let mut events = Vec::new();
    let mut data: Option<String> = None;
    let mut lines: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
    // The part after the last `\n` is a line only if it is not empty.
    let last = lines.pop().unwrap_or_default();
    let ended = lines.len();
    for (n, raw) in lines.into_iter().chain(std::iter::once(last)).enumerate() {
        if raw.len() > max {
            return Err(EventTooLarge);
        }
        let complete = n < ended;
        if !complete && raw.is_empty() {
            break;
        }
        let line = match raw.strip_suffix(b"\r") {
            Some(l) if complete => l,
            _ => raw,
        };
        if line.is_empty() {
            if let Some(d) = data.take() {
                events.push(d);
            }
            continue;
        }
        let text = String::from_utf8_lossy(line);
        let Some(rest) = text.strip_prefix("data:") else {
            continue;
        };
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        match &mut data {
            Some(d) => {
                if d.len() + 1 + rest.len() > max {
                    return Err(EventTooLarge);
                }
                d.push('\n');
                d.push_str(rest);
            }
            None => data = Some(rest.to_owned()),
        }
    }
    if let Some(d) = data {
        events.push(d);
    }
    Ok(events)
}

fuzz_target!(|case: Case| {
    let max = usize::from(case.max % 512) + 1;
    let stream = case.stream.as_slice();

    let whole = decode(max, [stream]);
    let mut chunks = Vec::new();
    let mut rest = stream;
    for cut in &case.cuts {
        let at = usize::from(*cut) % (rest.len() + 1);
        let (head, tail) = rest.split_at(at);
        chunks.push(head);
        rest = tail;
    }
    chunks.push(rest);
    let chunked = decode(max, chunks);
    let bytewise = decode(max, stream.chunks(1));

    assert_eq!(
        whole, chunked,
        "cutting the stream into chunks changed the events"
    );
    assert_eq!(whole, bytewise, "feeding byte by byte changed the events");
    assert_eq!(
        whole,
        oracle(max, stream),
        "the events differ from the format's reading"
    );
    if let Ok(events) = &whole {
        for e in events {
            assert!(
                e.len() <= max,
                "an event of {} bytes passed a limit of {max}",
                e.len()
            );
        }
    }
});
