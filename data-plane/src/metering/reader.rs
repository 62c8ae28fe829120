//! What the tap reads from a response as it passes: how the response ended (its terminal
//! event, `[DONE]`, or the JSON body's status) and the usage it reported, counting content
//! chunks for an estimate when it reported none; and the filter that hides the usage-only
//! chat chunk the gateway asked for on a client's behalf. Only looks; never alters the bytes
//! the client gets, except for that one chunk.

use bytes::Bytes;

use super::{
    Outcome, TokenUsage,
    extract::{from_json_body, from_response_event},
};
use crate::sse::SseParser;

/// Largest JSON body kept for reading its usage; larger bodies are still forwarded whole.
const MAX_JSON_TAP_BYTES: usize = 8 * 1024 * 1024;

/// Which parser looks at the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapKind {
    /// A Responses-API SSE stream; usage is in the terminal event.
    ResponsesSse,
    /// A chat/completions SSE stream; usage is in a final chunk with `choices: []`. With
    /// `strip_usage_chunk`, that chunk is removed from what the client sees (the gateway asked
    /// for it, the client did not).
    ChatSse { strip_usage_chunk: bool },
    /// A single JSON document with a top-level `usage`.
    Json,
}

#[derive(Debug)]
pub(super) enum Tap {
    Sse {
        parser: SseParser,
        /// How the stream ended, from its own terminal marker.
        terminal: Option<(Outcome, Option<TokenUsage>)>,
        /// Usage from a chat usage chunk (before `[DONE]`).
        chat_usage: Option<TokenUsage>,
        content_chunks: u64,
        responses: bool,
    },
    Json {
        /// The body while it came in one chunk: that chunk, shared, not copied.
        first: Bytes,
        /// The body once a second chunk came: all of it, joined.
        joined: Vec<u8>,
        overflowed: bool,
    },
}

impl Tap {
    pub(super) fn new(kind: TapKind) -> Self {
        match kind {
            TapKind::ResponsesSse | TapKind::ChatSse { .. } => Self::Sse {
                parser: SseParser::new(),
                terminal: None,
                chat_usage: None,
                content_chunks: 0,
                responses: kind == TapKind::ResponsesSse,
            },
            TapKind::Json => Self::Json {
                first: Bytes::new(),
                joined: Vec::new(),
                overflowed: false,
            },
        }
    }

    #[inline]
    pub(super) fn feed(&mut self, chunk: &Bytes) {
        match self {
            Self::Sse {
                parser,
                terminal,
                chat_usage,
                content_chunks,
                responses: false,
            } => parser.feed(chunk, |event| {
                if event.data == b"[DONE]" {
                    *terminal = Some((Outcome::Completed, *chat_usage));
                    return;
                }
                if memchr::memmem::find(event.data, b"\"usage\"").is_some()
                    && let (Some(usage), _) = from_json_body(event.data)
                {
                    *chat_usage = Some(usage);
                    if is_usage_only_chunk(event.data) {
                        return;
                    }
                }
                *content_chunks += 1;
            }),
            Self::Sse {
                parser,
                terminal,
                content_chunks,
                responses: true,
                ..
            } => parser.feed(chunk, |event| {
                let outcome = match &*event.name() {
                    b"response.completed" => Outcome::Completed,
                    b"response.incomplete" => Outcome::Incomplete,
                    b"response.failed" => Outcome::Failed,
                    n if n.ends_with(b".delta") => {
                        *content_chunks += 1;
                        return;
                    }
                    _ => return,
                };
                *terminal = Some((outcome, from_response_event(event.data)));
            }),
            Self::Json {
                first,
                joined,
                overflowed,
            } => {
                if *overflowed {
                    return;
                }
                if first.len() + joined.len() + chunk.len() > MAX_JSON_TAP_BYTES {
                    *overflowed = true;
                    *first = Bytes::new();
                    *joined = Vec::new();
                } else if first.is_empty() && joined.is_empty() {
                    *first = chunk.clone();
                } else {
                    if joined.is_empty() {
                        joined.extend_from_slice(&std::mem::take(first));
                    }
                    joined.extend_from_slice(chunk);
                }
            }
        }
    }

    /// Whether the stream's own end marker (terminal event or `[DONE]`) has been seen.
    #[inline]
    pub(super) fn has_terminal(&self) -> bool {
        matches!(
            self,
            Self::Sse {
                terminal: Some(_),
                ..
            }
        )
    }

    pub(super) fn is_responses(&self) -> bool {
        matches!(
            self,
            Self::Sse {
                responses: true,
                ..
            }
        )
    }

    /// The event that ends a failed SSE stream, if this is one.
    pub(super) fn error_event(&self, message: &str) -> Option<Bytes> {
        let Self::Sse {
            parser, responses, ..
        } = self
        else {
            return None;
        };
        // Close any event the upstream left half-sent, so ours parses on its own.
        let separator = if parser.at_boundary() { "" } else { "\n\n" };
        let error = serde_json::json!({"code": "upstream_error", "message": message});
        let text = if *responses {
            let data = serde_json::json!({
                "type": "response.failed",
                "response": {"status": "failed", "error": error},
            });
            format!("{separator}event: response.failed\ndata: {data}\n\n")
        } else {
            let data = serde_json::json!({"error": {"message": message, "type": "server_error", "code": "upstream_error"}});
            format!("{separator}data: {data}\n\n")
        };
        Some(Bytes::from(text))
    }

    /// The result when the body ended (`ended`) or was dropped before its end.
    pub(super) fn result(&self, ended: bool) -> (Outcome, Option<TokenUsage>, u64) {
        match self {
            Self::Sse {
                terminal: Some((outcome, usage)),
                content_chunks,
                ..
            } => (*outcome, *usage, *content_chunks),
            Self::Sse {
                terminal: None,
                chat_usage: Some(usage),
                content_chunks,
                ..
            } if ended => (Outcome::Completed, Some(*usage), *content_chunks),
            Self::Sse {
                terminal: None,
                content_chunks,
                ..
            } => {
                // A stream that stops without a terminal event was cut by the upstream; one
                // that is dropped early was abandoned by the client.
                let outcome = if ended {
                    Outcome::UpstreamError
                } else {
                    Outcome::ClientCancelled
                };
                (outcome, None, *content_chunks)
            }
            Self::Json { first, joined, .. } => {
                let body = if joined.is_empty() {
                    first
                } else {
                    &joined[..]
                };
                let (usage, status) = from_json_body(body);
                let outcome = match (status.as_deref(), ended || usage.is_some()) {
                    (_, false) => Outcome::ClientCancelled,
                    (Some("incomplete"), true) => Outcome::Incomplete,
                    (Some("failed"), true) => Outcome::Failed,
                    (_, true) => Outcome::Completed,
                };
                (outcome, usage, u64::from(!body.is_empty()))
            }
        }
    }
}

/// Whether a chat/completions chunk carries only usage (`choices: []`).
fn is_usage_only_chunk(data: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Chunk {
        #[serde(default)]
        choices: Option<Vec<serde::de::IgnoredAny>>,
        #[serde(default)]
        usage: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Chunk>(data)
        .is_ok_and(|c| c.usage.is_some() && c.choices.is_some_and(|c| c.is_empty()))
}

/// Passes SSE bytes through event by event, keeping each event's bytes exactly, except the
/// usage-only chat chunk. A partial event is held until it completes.
#[derive(Debug, Default)]
pub(super) struct UsageChunkFilter {
    pending: Vec<u8>,
}

impl UsageChunkFilter {
    pub(super) fn pass(&mut self, data: &[u8]) -> Bytes {
        self.pending.extend_from_slice(data);
        let mut out = Vec::with_capacity(self.pending.len());
        let mut start = 0;
        while let Some(end) = event_end(&self.pending[start..]) {
            let event = &self.pending[start..start + end];
            if !event_data(event).is_some_and(is_usage_only_chunk) {
                out.extend_from_slice(event);
            }
            start += end;
        }
        self.pending.drain(..start);
        Bytes::from(out)
    }

    pub(super) fn rest(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.pending))
    }
}

/// Length of the first complete event (through its blank line), if there is one.
fn event_end(buf: &[u8]) -> Option<usize> {
    let lf = memchr::memmem::find(buf, b"\n\n").map(|i| i + 2);
    let crlf = memchr::memmem::find(buf, b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The `data:` payload of a single-line event.
fn event_data(event: &[u8]) -> Option<&[u8]> {
    let text = event
        .strip_suffix(b"\n\n")
        .or_else(|| event.strip_suffix(b"\r\n\r\n"))?;
    let data = text.strip_prefix(b"data:")?;
    Some(data.strip_prefix(b" ").unwrap_or(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_only_the_usage_only_chunk() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n",
            "data: [DONE]\n\n"
        );
        for split in 1..stream.len() {
            let (a, b) = stream.as_bytes().split_at(split);
            let mut f = UsageChunkFilter::default();
            let mut out = f.pass(a).to_vec();
            out.extend_from_slice(&f.pass(b));
            out.extend_from_slice(&f.rest());
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\ndata: [DONE]\n\n",
                "split at {split}"
            );
        }
    }

    #[test]
    fn chat_usage_comes_from_the_usage_chunk() {
        let mut tap = Tap::new(TapKind::ChatSse {
            strip_usage_chunk: false,
        });
        tap.feed(&Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
        ));
        tap.feed(&Bytes::from_static(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"prompt_tokens_details\":{\"cached_tokens\":10},\"completion_tokens\":5}}\n\ndata: [DONE]\n\n"));
        let (outcome, usage, chunks) = tap.result(true);
        assert_eq!(outcome, Outcome::Completed);
        assert_eq!(
            usage,
            Some(TokenUsage {
                input: 30,
                cached: 10,
                output: 5,
                reasoning: 0
            })
        );
        assert_eq!(chunks, 1);
    }

    #[test]
    fn a_json_answer_is_read_whether_it_came_in_one_chunk_or_many() {
        let body: &[u8] = br#"{"status":"completed","output":[{"text":"a \"quoted\" word"}],"usage":{"input_tokens":12,"input_tokens_details":{"cached_tokens":4},"output_tokens":3}}"#;
        let expected = Some(TokenUsage {
            input: 12,
            cached: 4,
            output: 3,
            reasoning: 0,
        });
        for split in [body.len(), 1, 17, body.len() / 2, body.len() - 1] {
            let mut tap = Tap::new(TapKind::Json);
            let (a, b) = body.split_at(split);
            tap.feed(&Bytes::copy_from_slice(a));
            if !b.is_empty() {
                // Two more chunks: the first two are joined, then the third appended.
                let (b1, b2) = b.split_at(b.len() / 2);
                tap.feed(&Bytes::copy_from_slice(b1));
                tap.feed(&Bytes::copy_from_slice(b2));
            }
            let (outcome, usage, chunks) = tap.result(true);
            assert_eq!(outcome, Outcome::Completed, "split at {split}");
            assert_eq!(usage, expected, "split at {split}");
            assert_eq!(chunks, 1, "split at {split}");
        }
        // A cut answer with no usage is the client's leaving, not a completion.
        let mut tap = Tap::new(TapKind::Json);
        tap.feed(&Bytes::copy_from_slice(&body[..20]));
        assert_eq!(tap.result(false).0, Outcome::ClientCancelled);
    }
}
