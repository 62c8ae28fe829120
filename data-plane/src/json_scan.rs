//! Members of a JSON object, found without parsing what they hold.
//!
//! Request bodies (a Codex history of hundreds of kilobytes) and upstream answers (a whole
//! response object beside its `usage`) are mostly text the gateway never reads. The walker
//! goes through an object member by member and steps over each value: a string by jumping
//! from quote to quote (`memchr`), a nested array or object by counting brackets
//! outside strings. The object itself is checked as strictly as a JSON parser would (member
//! names, separators, nothing after it); what lies inside a skipped value is left alone.

use std::{borrow::Cow, fmt};

use memchr::memchr;

/// Why a body is not a JSON object the gateway can read, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanError {
    what: &'static str,
    at: usize,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

impl std::error::Error for ScanError {}

pub(crate) fn error<T>(what: &'static str, at: usize) -> Result<T, ScanError> {
    Err(ScanError { what, at })
}

/// A value's place in the body: `start..end`.
pub(crate) type Span = std::ops::Range<usize>;

/// Walks the members of the object that opens at `at`, calling `member(key, value, key_at)`
/// for each; returns the index after the closing brace.
pub(crate) fn members(
    body: &[u8],
    at: usize,
    mut member: impl FnMut(&str, Span, usize) -> Result<(), ScanError>,
) -> Result<usize, ScanError> {
    if body.get(at) != Some(&b'{') {
        return error("expected a JSON object", at);
    }
    let mut i = skip_ws(body, at + 1);
    if body.get(i) == Some(&b'}') {
        return Ok(i + 1);
    }
    loop {
        if body.get(i) != Some(&b'"') {
            return error("expected a member name", i);
        }
        let key_end = skip_string(body, i)?;
        let key = decode(body, i..key_end)?;
        i = skip_ws(body, key_end);
        if body.get(i) != Some(&b':') {
            return error("expected `:`", i);
        }
        let value_at = skip_ws(body, i + 1);
        let value_end = skip_value(body, value_at)?;
        member(&key, value_at..value_end, i)?;
        i = skip_ws(body, value_end);
        match body.get(i) {
            Some(b',') => i = skip_ws(body, i + 1),
            Some(b'}') => return Ok(i + 1),
            _ => return error("expected `,` or `}`", i),
        }
    }
}

pub(crate) fn skip_ws(body: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = body.get(i) {
        i += 1;
    }
    i
}

/// The index after the string that opens at `at` (a quote). Jumps from quote to quote: a
/// quote after an odd run of backslashes is escaped, any other ends the string. Histories are
/// dense with escapes (`\n` on every line of a file), and stopping at each one cost more than
/// the text between them.
fn skip_string(body: &[u8], at: usize) -> Result<usize, ScanError> {
    let mut i = at + 1;
    loop {
        let Some(quote) = next_quote(body, i) else {
            return error("unterminated string", at);
        };
        // The opening quote bounds the run: it is not a backslash.
        let backslashes = body[..quote]
            .iter()
            .rev()
            .take_while(|&&b| b == b'\\')
            .count();
        if backslashes % 2 == 0 {
            return Ok(quote + 1);
        }
        i = quote + 1;
    }
}

/// The index of the first quote at or after `from`. Most strings are short (member names,
/// types, ids), and for them a look at the next few bytes is cheaper than a `memchr` call.
fn next_quote(body: &[u8], from: usize) -> Option<usize> {
    let rest = body.get(from..)?;
    let (near, far) = rest.split_at(rest.len().min(16));
    match near.iter().position(|&b| b == b'"') {
        Some(k) => Some(from + k),
        None => memchr(b'"', far).map(|k| from + near.len() + k),
    }
}

/// The index after the value that starts at `at`.
fn skip_value(body: &[u8], at: usize) -> Result<usize, ScanError> {
    match body.get(at) {
        Some(b'"') => skip_string(body, at),
        Some(b'{' | b'[') => skip_container(body, at),
        Some(b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
            let mut i = at;
            while body
                .get(i)
                .is_some_and(|b| !matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
            {
                i += 1;
            }
            Ok(i)
        }
        _ => error("expected a value", at),
    }
}

/// The index after the array or object that opens at `at`; brackets must pair up.
fn skip_container(body: &[u8], at: usize) -> Result<usize, ScanError> {
    let mut open = Brackets::default();
    let mut i = at;
    while let Some(&b) = body.get(i) {
        match b {
            b'"' => {
                i = skip_string(body, i)?;
                continue;
            }
            b'{' => open.push(b'}'),
            b'[' => open.push(b']'),
            b'}' | b']' => {
                if open.pop() != Some(b) {
                    return error("mismatched bracket", i);
                }
                if open.is_empty() {
                    return Ok(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    error("unterminated array or object", at)
}

/// The closing brackets still owed, innermost last: on the stack up to a depth no Codex body
/// reaches, on the heap beyond it (a skipped value costs no allocation).
#[derive(Default)]
struct Brackets {
    shallow: [u8; 32],
    depth: usize,
    deeper: Vec<u8>,
}

impl Brackets {
    fn push(&mut self, close: u8) {
        match self.shallow.get_mut(self.depth) {
            Some(slot) => *slot = close,
            None => self.deeper.push(close),
        }
        self.depth += 1;
    }

    fn pop(&mut self) -> Option<u8> {
        self.depth = self.depth.checked_sub(1)?;
        match self.shallow.get(self.depth) {
            Some(&close) => Some(close),
            None => self.deeper.pop(),
        }
    }

    fn is_empty(&self) -> bool {
        self.depth == 0
    }
}

/// The text of the string at `span` (quotes included), unescaped only when it has escapes.
pub(crate) fn decode(body: &[u8], span: Span) -> Result<Cow<'_, str>, ScanError> {
    let at = span.start;
    let raw = &body[span.start + 1..span.end - 1];
    if !raw.contains(&b'\\') {
        return std::str::from_utf8(raw)
            .map(Cow::Borrowed)
            .or_else(|_| error("invalid UTF-8 in a string", at));
    }
    serde_json::from_slice::<String>(&body[span])
        .map(Cow::Owned)
        .or_else(|_| error("invalid string", at))
}

/// Walks the members of `body`, which must be one JSON object and nothing else, calling
/// `member(name, value, name_at)` for each.
pub(crate) fn object(
    body: &[u8],
    member: impl FnMut(&str, Span, usize) -> Result<(), ScanError>,
) -> Result<(), ScanError> {
    let end = members(body, skip_ws(body, 0), member)?;
    let rest = skip_ws(body, end);
    if rest != body.len() {
        return error("unexpected bytes after the object", rest);
    }
    Ok(())
}

/// The literal at `span`, if it is exactly `word`.
pub(crate) fn is_literal(body: &[u8], span: &Span, word: &[u8]) -> bool {
    &body[span.clone()] == word
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn never_panics_on_any_bytes(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = object(&body, |_, _, _| Ok(()));
        }
    }

    #[test]
    fn a_quote_ends_a_string_only_after_an_even_run_of_backslashes() {
        // Values as a JSON encoder writes them: `\\` is one backslash, `\"` a quote.
        for (text, value) in [
            ("", r#""""#),
            ("\\", r#""\\""#),
            ("\\\\", r#""\\\\""#),
            ("\"", r#""\"""#),
            ("\\\"", r#""\\\"""#),
            ("a\nb\"c\\", r#""a\nb\"c\\""#),
        ] {
            let body = format!(r#"{{"v":{value},"w":"{{\"x\":[1]}}"}}"#);
            let mut seen = Vec::new();
            object(body.as_bytes(), |name, span, _| {
                seen.push((name.to_owned(), decode(body.as_bytes(), span)?.into_owned()));
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(
                seen,
                [
                    ("v".into(), text.into()),
                    ("w".into(), r#"{"x":[1]}"#.into())
                ],
                "{value}"
            );
        }
        // An escaped quote does not end the string: the body has no end.
        assert!(object(br#"{"v":"a\"}"#, |_, _, _| Ok(())).is_err());
    }

    #[test]
    fn nesting_deeper_than_the_stack_part_still_pairs_up() {
        for depth in [1, 31, 32, 33, 100] {
            let value = format!("{}{}", "[{\"a\":".repeat(depth), "1}]".repeat(depth));
            let body = format!(r#"{{"v":{value},"w":2}}"#);
            let mut names = Vec::new();
            object(body.as_bytes(), |name, _, _| {
                names.push(name.to_owned());
                Ok(())
            })
            .unwrap_or_else(|e| panic!("depth {depth}: {e}"));
            assert_eq!(names, ["v", "w"], "depth {depth}");
            let crossed = format!(
                r#"{{"v":{}{}]}}"#,
                "[".repeat(depth),
                "]".repeat(depth - 1) + "}"
            );
            assert!(
                object(crossed.as_bytes(), |_, _, _| Ok(())).is_err(),
                "depth {depth}"
            );
        }
    }

    #[test]
    fn every_member_is_seen_with_its_value_and_nested_text_is_stepped_over() {
        let body = br#" {"a":"x}\"]","b":[{"c":[1,{"d":"]"}]}],"e":null,"f":-1.5e3} "#;
        let mut seen = Vec::new();
        object(body, |name, value, _| {
            seen.push((
                name.to_owned(),
                String::from_utf8_lossy(&body[value]).into_owned(),
            ));
            Ok(())
        })
        .unwrap();
        let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "e", "f"]);
        assert_eq!(seen[0].1, r#""x}\"]""#);
        assert_eq!(seen[1].1, r#"[{"c":[1,{"d":"]"}]}]"#);
        assert_eq!(seen[3].1, "-1.5e3");
    }
}
