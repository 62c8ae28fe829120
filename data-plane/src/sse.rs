//! An incremental Server-Sent Events parser for the metering tap. It sees the stream exactly as
//! the client does, chunk by chunk (events may be split anywhere, lines end in LF or CRLF), and
//! reports each complete event. It never alters or holds back the bytes being forwarded.

use std::borrow::Cow;

use memchr::memchr;

/// Upper bound on a single buffered line or event; longer input is dropped rather than letting
/// a hostile upstream grow memory without limit. Terminal events carry the full response
/// object, so the bound is generous.
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// One complete event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event:` field, empty when absent.
    pub event: &'a [u8],
    /// The `data:` lines joined by `\n`.
    pub data: &'a [u8],
}

impl<'a> Event<'a> {
    /// The event's name: its `event:` field, or — for upstreams that omit that line — the
    /// `type` of its JSON data; empty when neither is there.
    #[inline]
    pub fn name(&self) -> Cow<'a, [u8]> {
        if self.event.is_empty() {
            Cow::Owned(data_type(self.data))
        } else {
            Cow::Borrowed(self.event)
        }
    }
}

/// The `type` member of an event's JSON data (empty if none): the rare upstream that sends no
/// `event:` lines, kept off the common path.
#[cold]
fn data_type(data: &[u8]) -> Vec<u8> {
    #[derive(serde::Deserialize)]
    struct TypeOnly<'t> {
        #[serde(borrow, rename = "type")]
        kind: Option<Cow<'t, str>>,
    }
    match serde_json::from_slice::<TypeOnly<'_>>(data) {
        Ok(TypeOnly { kind: Some(kind) }) => kind.into_owned().into_bytes(),
        _ => Vec::new(),
    }
}

/// The event at the start of `chunk`, read in place, and what follows it; `None` when the
/// event does not end in `chunk`, has more than one `data:` line, is over the bound, or is
/// an empty one (the line-by-line path then takes it, with the same result).
fn whole_event(chunk: &[u8]) -> Option<(Event<'_>, &[u8])> {
    let mut rest = chunk;
    let mut event: &[u8] = b"";
    let mut data: Option<&[u8]> = None;
    loop {
        let end = memchr(b'\n', rest)?;
        let line = &rest[..end];
        rest = &rest[end + 1..];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if data.is_none() && event.is_empty() {
                return None;
            }
            let data = data.unwrap_or_default();
            return Some((Event { event, data }, rest));
        }
        if line[0] == b':' {
            continue;
        }
        match field(line) {
            (b"event", value) => event = value,
            (b"data", value) => {
                if data.is_some() || value.len() + 1 > MAX_EVENT_BYTES {
                    return None;
                }
                data = Some(value);
            }
            _ => {}
        }
    }
}

/// A line's field name and value (one leading space of the value dropped).
#[inline]
fn field(line: &[u8]) -> (&[u8], &[u8]) {
    match memchr(b':', line) {
        Some(i) => {
            let value = &line[i + 1..];
            (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
        }
        None => (line, &b""[..]),
    }
}

/// Parser state carried between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    event: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    overflowed: bool,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk; `on_event` is called for every event the chunk completes.
    ///
    /// An event that lies whole in the chunk, with at most one `data:` line (as every event of
    /// the Responses and chat streams does), is read where it lies; anything else — an event
    /// split across chunks, several `data:` lines — goes line by line through the buffers.
    pub fn feed(&mut self, mut chunk: &[u8], mut on_event: impl FnMut(Event<'_>)) {
        // Once an event of this chunk was not read in place, the rest of the chunk goes line
        // by line: trying again at every line could scan the chunk once per line.
        let mut in_place = true;
        while !chunk.is_empty() {
            if in_place && self.at_boundary() && !self.overflowed {
                if let Some((event, rest)) = whole_event(chunk) {
                    on_event(event);
                    chunk = rest;
                    continue;
                }
                in_place = false;
            }
            match memchr(b'\n', chunk) {
                Some(end) => {
                    let (head, rest) = chunk.split_at(end);
                    chunk = &rest[1..];
                    if self.line.is_empty() {
                        self.line_done(head, &mut on_event);
                    } else {
                        self.push_line(head);
                        let line = std::mem::take(&mut self.line);
                        self.line_done(&line, &mut on_event);
                        self.line = line;
                        self.line.clear();
                    }
                }
                None => {
                    self.push_line(chunk);
                    break;
                }
            }
        }
    }

    /// Whether the stream so far ends exactly at an event boundary (nothing partial pending).
    pub fn at_boundary(&self) -> bool {
        self.line.is_empty() && !self.has_data && self.event.is_empty()
    }

    fn push_line(&mut self, bytes: &[u8]) {
        if self.line.len() + bytes.len() > MAX_EVENT_BYTES {
            self.overflowed = true;
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn line_done(&mut self, line: &[u8], on_event: &mut impl FnMut(Event<'_>)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if (self.has_data || !self.event.is_empty()) && !self.overflowed {
                on_event(Event {
                    event: &self.event,
                    data: &self.data,
                });
            }
            self.event.clear();
            self.data.clear();
            self.has_data = false;
            self.overflowed = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = field(line);
        match field {
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            b"data" => {
                if self.data.len() + value.len() + 1 > MAX_EVENT_BYTES {
                    self.overflowed = true;
                    return;
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events_of(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, |e| {
                out.push((
                    String::from_utf8_lossy(e.event).into_owned(),
                    String::from_utf8_lossy(e.data).into_owned(),
                ));
            });
        }
        out
    }

    #[test]
    fn parses_named_events() {
        let got = events_of(&[
            b"event: response.created\ndata: {\"a\":1}\n\nevent: response.completed\ndata: {\"b\":2}\n\n",
        ]);
        assert_eq!(
            got,
            vec![
                ("response.created".into(), "{\"a\":1}".into()),
                ("response.completed".into(), "{\"b\":2}".into()),
            ]
        );
    }

    #[test]
    fn same_events_however_the_stream_is_split() {
        let stream: &[u8] = b"event: a\r\ndata: one\r\ndata: two\r\n\r\n: comment\n\ndata: [DONE]\n\nevent: b\ndata:x\n\n";
        let whole = events_of(&[stream]);
        assert_eq!(
            whole,
            vec![
                ("a".into(), "one\ntwo".into()),
                (String::new(), "[DONE]".into()),
                ("b".into(), "x".into()),
            ]
        );
        for split in 0..stream.len() {
            let (x, y) = stream.split_at(split);
            assert_eq!(events_of(&[x, y]), whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(events_of(&bytes), whole);
    }

    #[test]
    fn events_read_in_place_match_events_read_line_by_line() {
        // Byte by byte, no event is ever whole in a chunk: that is the line-by-line reading.
        let stream: &[u8] = b"event: response.created\ndata: {\"a\":\"b: c\"}\n\n\
            : keep-alive\n\nid: 7\nretry: 10\nevent: only-a-name\n\ndata:\n\n\
            event: first\nevent: last\r\ndata: x\r\n\r\n\n\ndata: one\ndata: two\n\n\
            event: response.output_text.delta\ndata: {\"delta\":\"hi\"}\n\ndata: [DONE]\n\n";
        let by_byte: Vec<&[u8]> = stream.chunks(1).collect();
        let expected = events_of(&by_byte);
        assert_eq!(
            expected,
            vec![
                ("response.created".into(), "{\"a\":\"b: c\"}".into()),
                ("only-a-name".into(), String::new()),
                (String::new(), String::new()),
                ("last".into(), "x".into()),
                (String::new(), "one\ntwo".into()),
                (
                    "response.output_text.delta".into(),
                    "{\"delta\":\"hi\"}".into()
                ),
                (String::new(), "[DONE]".into()),
            ]
        );
        assert_eq!(events_of(&[stream]), expected);
        for a in 0..stream.len() {
            for b in a..stream.len() {
                let chunks = [&stream[..a], &stream[a..b], &stream[b..]];
                assert_eq!(events_of(&chunks), expected, "split at {a} and {b}");
            }
        }
    }

    #[test]
    fn event_name_falls_back_on_the_data_type() {
        let named = Event {
            event: b"response.created",
            data: br#"{"type":"other"}"#,
        };
        assert_eq!(&*named.name(), b"response.created");
        let unnamed = Event {
            event: b"",
            data: br#"{"type":"response.completed","response":{}}"#,
        };
        assert_eq!(&*unnamed.name(), b"response.completed");
        let done = Event {
            event: b"",
            data: b"[DONE]",
        };
        assert_eq!(&*done.name(), b"");
    }

    #[test]
    fn incomplete_event_is_not_reported() {
        assert!(events_of(&[b"event: a\ndata: partial"]).is_empty());
    }
}
