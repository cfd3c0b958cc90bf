//! Incremental splitting of upstream streams: server-sent events ([`Splitter`]: bytes in,
//! `data:` payloads out) and newline-delimited JSON ([`Lines`]: bytes in, non-blank lines
//! out), as slices of the received bytes (no copy, no re-serialization).

use bytes::{Bytes, BytesMut};

/// What one complete SSE event carried.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// The `data:` payload.
    Data(Bytes),
    /// `data: [DONE]`.
    Done,
}

/// Buffers partial events across network reads.
#[derive(Default)]
pub struct Splitter {
    buf: BytesMut,
}

impl Splitter {
    /// Adds received bytes and returns the events completed by them.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some((end, delim)) = boundary(&self.buf) {
            let event = self.buf.split_to(end + delim).freeze();
            if let Some(e) = parse_event(event.slice(..end)) {
                out.push(e);
            }
        }
        out
    }

    /// Bytes of an incomplete event still buffered.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Buffers partial lines of an NDJSON stream across network reads.
#[derive(Default)]
pub struct Lines {
    buf: BytesMut,
}

impl Lines {
    /// Adds received bytes and returns the non-blank lines completed by them (each with its
    /// newline), as [`Event::Data`].
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(nl) = memchr::memchr(b'\n', &self.buf) {
            let line = self.buf.split_to(nl + 1).freeze();
            if !line.iter().all(u8::is_ascii_whitespace) {
                out.push(Event::Data(line));
            }
        }
        out
    }
}

/// The end of the first event and the length of its blank-line delimiter.
fn boundary(buf: &[u8]) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(p) = memchr::memchr(b'\n', &buf[from..]) {
        let p = from + p;
        match (buf.get(p + 1), buf.get(p + 2)) {
            (Some(b'\n'), _) => return Some((p, 2)),
            (Some(b'\r'), Some(b'\n')) => return Some((p, 3)),
            _ => from = p + 1,
        }
    }
    None
}

fn parse_event(event: Bytes) -> Option<Event> {
    let mut data: Option<Bytes> = None;
    let mut start = 0;
    while start < event.len() {
        let end = memchr::memchr(b'\n', &event[start..]).map_or(event.len(), |p| start + p);
        let mut line = event.slice(start..end);
        if line.ends_with(b"\r") {
            line = line.slice(..line.len() - 1);
        }
        start = end + 1;
        if let Some(rest) = line.strip_prefix(b"data:") {
            let off = line.len() - rest.len() + usize::from(rest.first() == Some(&b' '));
            let payload = line.slice(off..);
            data = Some(match data {
                None => payload,
                Some(prev) => Bytes::from([prev.as_ref(), b"\n", payload.as_ref()].concat()),
            });
        }
    }
    let data = data?;
    if data.as_ref() == b"[DONE]" {
        Some(Event::Done)
    } else {
        Some(Event::Data(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(s: &str) -> Event {
        Event::Data(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn splits_events_across_reads() {
        let mut s = Splitter::default();
        assert!(s.push(b"data: {\"a\"").is_empty());
        assert_eq!(
            s.push(b":1}\n\ndata: {\"b\":2}\n\nda"),
            vec![data("{\"a\":1}"), data("{\"b\":2}")]
        );
        assert_eq!(s.push(b"ta: [DONE]\n\n"), vec![Event::Done]);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn handles_crlf_comments_and_other_fields() {
        let mut s = Splitter::default();
        let got = s.push(b": keep-alive\r\n\r\nevent: x\r\ndata:{\"c\":3}\r\n\r\nid: 5\n\n");
        assert_eq!(got, vec![data("{\"c\":3}")]);
    }

    #[test]
    fn splits_lines_across_reads_and_skips_blank_ones() {
        let mut l = Lines::default();
        assert!(l.push(b"{\"a\"").is_empty());
        assert_eq!(
            l.push(b":1}\n\n  \r\n{\"b\":2}\n{"),
            vec![data("{\"a\":1}\n"), data("{\"b\":2}\n")]
        );
    }

    #[test]
    fn joins_multi_line_data() {
        let mut s = Splitter::default();
        assert_eq!(s.push(b"data: a\ndata: b\n\n"), vec![data("a\nb")]);
    }
}
