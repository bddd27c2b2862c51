//! A minimal server-sent-events decoder: bytes in, the `data` of each event out.
//!
//! Only what the two providers use (`data:` lines, blank-line dispatch, `\r\n` or `\n`);
//! `event:`, `id:` and comments are ignored. It buffers at most one incomplete line and one
//! incomplete event, each at most the limit it was built with (a longer one is an
//! [`EventTooLarge`] error, not a bigger buffer), and never panics on arbitrary bytes
//! (invalid UTF-8 is replaced).

/// A line or an event passed the decoder's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventTooLarge;

/// Incremental decoder.
#[derive(Debug)]
pub(crate) struct SseDecoder {
    line: Vec<u8>,
    data: Option<String>,
    /// The most bytes one line, or one event's data, may hold.
    max: usize,
}

impl SseDecoder {
    /// A decoder refusing lines and events longer than `max_event_bytes`.
    pub(crate) fn new(max_event_bytes: usize) -> Self {
        SseDecoder {
            line: Vec::new(),
            data: None,
            max: max_event_bytes,
        }
    }

    /// Feeds bytes; returns the data of every event they complete.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<Vec<String>, EventTooLarge> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.extend_line(rest.get(..end).unwrap_or_default())?;
            rest = rest.get(end + 1..).unwrap_or_default();
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.line_done(&line, &mut out)?;
            // Keep the allocation for the next line.
            line.clear();
            self.line = line;
        }
        self.extend_line(rest)?;
        Ok(out)
    }

    /// Ends the stream: an event without its closing blank line still counts.
    pub(crate) fn finish(&mut self) -> Result<Vec<String>, EventTooLarge> {
        let mut out = Vec::new();
        let line = std::mem::take(&mut self.line);
        if !line.is_empty() {
            self.line_done(&line, &mut out)?;
        }
        if let Some(data) = self.data.take() {
            out.push(data);
        }
        Ok(out)
    }

    /// Appends to the incomplete line, unless that makes it longer than the limit.
    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), EventTooLarge> {
        if self.line.len().saturating_add(bytes.len()) > self.max {
            return Err(EventTooLarge);
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<String>) -> Result<(), EventTooLarge> {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(data);
            }
            return Ok(());
        }
        let text = String::from_utf8_lossy(line);
        if let Some(rest) = text.strip_prefix("data:") {
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            match &mut self.data {
                Some(data) => {
                    if data.len().saturating_add(1 + rest.len()) > self.max {
                        return Err(EventTooLarge);
                    }
                    data.push('\n');
                    data.push_str(rest);
                }
                None => self.data = Some(rest.to_owned()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_are_reassembled() {
        let stream = b"event: x\ndata: {\"a\":1}\r\n\r\n: comment\ndata: [DONE]\n\ndata: tail";
        for split in 0..stream.len() {
            let mut d = SseDecoder::new(64);
            let mut got = d.feed(&stream[..split]).expect("small events");
            got.extend(d.feed(&stream[split..]).expect("small events"));
            got.extend(d.finish().expect("small events"));
            assert_eq!(got, ["{\"a\":1}", "[DONE]", "tail"], "split at {split}");
        }
    }

    #[test]
    fn a_line_longer_than_the_limit_is_refused_however_it_arrives() {
        let mut d = SseDecoder::new(16);
        assert_eq!(d.feed(b"data: 0123456789"), Ok(Vec::new()));
        assert_eq!(
            d.feed(b"a"),
            Err(EventTooLarge),
            "17 bytes without a newline"
        );
        let mut d = SseDecoder::new(16);
        assert_eq!(d.feed(b"data: 01234567890\n\n"), Err(EventTooLarge));
        // Exactly at the limit is fine, and `\r\n` endings count the `\r`.
        let mut d = SseDecoder::new(16);
        assert_eq!(
            d.feed(b"data: 0123456789\n\n"),
            Ok(vec!["0123456789".to_owned()])
        );
        let mut d = SseDecoder::new(16);
        assert_eq!(d.feed(b"data: 0123456789\r\n"), Err(EventTooLarge));
    }

    #[test]
    fn an_event_of_many_short_lines_is_bounded_too() {
        let mut d = SseDecoder::new(16);
        assert_eq!(d.feed(b"data: 01234\ndata: 56789\n"), Ok(Vec::new()));
        assert_eq!(
            d.feed(b"data: abcde\n"),
            Err(EventTooLarge),
            "18 bytes of data"
        );
        let mut d = SseDecoder::new(16);
        let got = d.feed(b"data: 0123\ndata: 4567\ndata: 89a\n\n");
        assert_eq!(got, Ok(vec!["0123\n4567\n89a".to_owned()]));
    }
}
