//! Usage as the upstream reports it: the terminal Responses event's `response.usage`, a JSON
//! body's `usage`, or a chat/completions usage chunk (`prompt_tokens`/`completion_tokens`).

use serde::Deserialize;

use crate::json_scan;

/// Token counts with `cached ⊂ input` and `reasoning ⊂ output`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub input: u64,
    pub cached: u64,
    pub output: u64,
    pub reasoning: u64,
}

impl TokenUsage {
    /// Subsets never exceed their totals.
    pub fn normalized(self) -> Self {
        Self {
            cached: self.cached.min(self.input),
            reasoning: self.reasoning.min(self.output),
            ..self
        }
    }
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default, alias = "prompt_tokens")]
    input_tokens: u64,
    #[serde(default, alias = "prompt_tokens_details")]
    input_tokens_details: Option<InputDetails>,
    #[serde(default, alias = "completion_tokens")]
    output_tokens: u64,
    #[serde(default, alias = "completion_tokens_details")]
    output_tokens_details: Option<OutputDetails>,
}

#[derive(Deserialize)]
struct InputDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct OutputDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl From<WireUsage> for TokenUsage {
    fn from(w: WireUsage) -> Self {
        Self {
            input: w.input_tokens,
            cached: w
                .input_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            output: w.output_tokens,
            reasoning: w
                .output_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
        .normalized()
    }
}

/// The raw values of the first members of the object `json` with these `names`, or `None`
/// when `json` is not one object. The rest of it (a whole response, its output text) is
/// stepped over, never parsed.
fn members<'a, const N: usize>(json: &'a [u8], names: [&str; N]) -> Option<[Option<&'a [u8]>; N]> {
    let mut found: [Option<json_scan::Span>; N] = std::array::from_fn(|_| None);
    json_scan::object(json, |key, value, _| {
        if let Some(slot) = names.iter().position(|name| *name == key)
            && found[slot].is_none()
        {
            found[slot] = Some(value);
        }
        Ok(())
    })
    .ok()?;
    Some(found.map(|span| span.map(|span| &json[span])))
}

/// A `usage` value as the upstream wrote it (`null` or unreadable: none).
fn usage(raw: &[u8]) -> Option<TokenUsage> {
    serde_json::from_slice::<Option<WireUsage>>(raw)
        .ok()?
        .map(Into::into)
}

/// The usage inside a terminal Responses event's data (`{"response":{"usage":…}}`).
pub(crate) fn from_response_event(data: &[u8]) -> Option<TokenUsage> {
    let [response] = members(data, ["response"])?;
    let [raw] = members(response?, ["usage"])?;
    usage(raw?)
}

/// The usage and status of a JSON body (`{"status":…,"usage":…}`).
pub(crate) fn from_json_body(body: &[u8]) -> (Option<TokenUsage>, Option<String>) {
    let Some([raw_usage, raw_status]) = members(body, ["usage", "status"]) else {
        return (None, None);
    };
    let status =
        raw_status.and_then(|raw| serde_json::from_slice::<Option<String>>(raw).ok().flatten());
    (raw_usage.and_then(usage), status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_terminal_event() {
        let data = br#"{"type":"response.completed","sequence_number":9,"response":{"id":"r","status":"completed","output":[{"type":"message"}],"usage":{"input_tokens":120,"input_tokens_details":{"cached_tokens":100},"output_tokens":30,"output_tokens_details":{"reasoning_tokens":12},"total_tokens":150}}}"#;
        assert_eq!(
            from_response_event(data),
            Some(TokenUsage {
                input: 120,
                cached: 100,
                output: 30,
                reasoning: 12
            })
        );
        assert_eq!(from_response_event(br#"{"response":{"usage":null}}"#), None);
        assert_eq!(from_response_event(b"not json"), None);
    }

    #[test]
    fn json_bodies_of_both_apis() {
        let (usage, status) = from_json_body(
            br#"{"id":"r","status":"completed","usage":{"input_tokens":5,"output_tokens":7}}"#,
        );
        assert_eq!(status.as_deref(), Some("completed"));
        assert_eq!(
            usage,
            Some(TokenUsage {
                input: 5,
                cached: 0,
                output: 7,
                reasoning: 0
            })
        );
        let (usage, _) = from_json_body(
            br#"{"choices":[],"usage":{"prompt_tokens":50,"prompt_tokens_details":{"cached_tokens":20},"completion_tokens":8,"completion_tokens_details":{"reasoning_tokens":3}}}"#,
        );
        assert_eq!(
            usage,
            Some(TokenUsage {
                input: 50,
                cached: 20,
                output: 8,
                reasoning: 3
            })
        );
    }
}
