//! A minimal server-sent-events decoder: bytes in, the `data` of each event out.
//!
//! Only what the two providers use (`data:` lines, blank-line dispatch, `\r\n` or `\n`);
//! `event:`, `id:` and comments are ignored. It buffers at most one incomplete line and
//! never panics on arbitrary bytes (invalid UTF-8 is replaced).

/// Incremental decoder.
#[derive(Debug, Default)]
pub(crate) struct SseDecoder {
    line: Vec<u8>,
    data: Option<String>,
}

impl SseDecoder {
    /// Feeds bytes; returns the data of every event they complete.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.line_done(&line, &mut out);
            } else {
                self.line.push(b);
            }
        }
        out
    }

    /// Ends the stream: an event without its closing blank line still counts.
    pub(crate) fn finish(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let line = std::mem::take(&mut self.line);
        if !line.is_empty() {
            self.line_done(&line, &mut out);
        }
        if let Some(data) = self.data.take() {
            out.push(data);
        }
        out
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<String>) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(data);
            }
            return;
        }
        let text = String::from_utf8_lossy(line);
        if let Some(rest) = text.strip_prefix("data:") {
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(rest);
                }
                None => self.data = Some(rest.to_owned()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_are_reassembled() {
        let stream = b"event: x\ndata: {\"a\":1}\r\n\r\n: comment\ndata: [DONE]\n\ndata: tail";
        for split in 0..stream.len() {
            let mut d = SseDecoder::default();
            let mut got = d.feed(&stream[..split]);
            got.extend(d.feed(&stream[split..]));
            got.extend(d.finish());
            assert_eq!(got, ["{\"a\":1}", "[DONE]", "tail"], "split at {split}");
        }
    }
}
