//! The top-level fields of a request body the gateway needs, found without parsing the rest.
//!
//! A Codex request is mostly its `input`: a history that grows to hundreds of kilobytes and
//! that only the upstream reads. The outer object is walked member by member
//! (`crate::json_scan`) and only `model`, `stream`, `prompt_cache_key` and
//! `stream_options.include_usage` are read; what lies inside a skipped value is the
//! upstream's to judge, which answers a broken body with its own 400.
//!
//! For every body a JSON parser accepts as an object, the scanner finds the same fields (a
//! property test holds it to `serde_json`).

use std::borrow::Cow;

use crate::json_scan::{ScanError, Span, decode, error, is_literal, members, object};

/// What the gateway reads from a request body.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Fields<'a> {
    pub(super) model: Option<Cow<'a, str>>,
    pub(super) stream: Option<bool>,
    pub(super) prompt_cache_key: Option<Cow<'a, str>>,
    /// `Some` when the body has a `stream_options` object: its `include_usage`.
    pub(super) stream_options: Option<StreamOptions>,
}

/// The part of `stream_options` the gateway reads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct StreamOptions {
    pub(super) include_usage: Option<bool>,
}

/// The fields of `body`, which must be one JSON object.
pub(super) fn scan(body: &[u8]) -> Result<Fields<'_>, ScanError> {
    let mut fields = Fields::default();
    let mut seen = [false; 4];
    object(body, |key, value, at| {
        let slot = match key {
            "model" => 0,
            "stream" => 1,
            "prompt_cache_key" => 2,
            "stream_options" => 3,
            _ => return Ok(()),
        };
        if std::mem::replace(&mut seen[slot], true) {
            return error("duplicate field", at);
        }
        match slot {
            0 => fields.model = string_or_null(body, value)?,
            1 => fields.stream = bool_or_null(body, value)?,
            2 => fields.prompt_cache_key = string_or_null(body, value)?,
            _ => fields.stream_options = stream_options(body, value)?,
        }
        Ok(())
    })?;
    Ok(fields)
}

fn string_or_null(body: &[u8], span: Span) -> Result<Option<Cow<'_, str>>, ScanError> {
    match body[span.start] {
        b'"' => decode(body, span).map(Some),
        _ if is_literal(body, &span, b"null") => Ok(None),
        _ => error("expected a string", span.start),
    }
}

fn bool_or_null(body: &[u8], span: Span) -> Result<Option<bool>, ScanError> {
    if is_literal(body, &span, b"true") {
        Ok(Some(true))
    } else if is_literal(body, &span, b"false") {
        Ok(Some(false))
    } else if is_literal(body, &span, b"null") {
        Ok(None)
    } else {
        error("expected true or false", span.start)
    }
}

fn stream_options(body: &[u8], span: Span) -> Result<Option<StreamOptions>, ScanError> {
    if is_literal(body, &span, b"null") {
        return Ok(None);
    }
    let mut options = StreamOptions::default();
    let mut seen = false;
    members(body, span.start, |key, value, at| {
        if key != "include_usage" {
            return Ok(());
        }
        if std::mem::replace(&mut seen, true) {
            return error("duplicate field", at);
        }
        options.include_usage = bool_or_null(body, value)?;
        Ok(())
    })?;
    Ok(Some(options))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What `serde_json` reads of the same fields (the parse the scanner replaced).
    fn by_serde(body: &[u8]) -> Option<Fields<'static>> {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        let object = value.as_object()?;
        let string = |name: &str| match object.get(name) {
            None | Some(serde_json::Value::Null) => Some(None),
            Some(serde_json::Value::String(s)) => Some(Some(Cow::Owned(s.clone()))),
            Some(_) => None,
        };
        let stream = match object.get("stream") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Bool(b)) => Some(*b),
            Some(_) => return None,
        };
        let stream_options = match object.get("stream_options") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Object(o)) => Some(StreamOptions {
                include_usage: match o.get("include_usage") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::Bool(b)) => Some(*b),
                    Some(_) => return None,
                },
            }),
            Some(_) => return None,
        };
        Some(Fields {
            model: string("model")?,
            stream,
            prompt_cache_key: string("prompt_cache_key")?,
            stream_options,
        })
    }

    fn text() -> impl Strategy<Value = String> {
        // Quotes, backslashes, brackets, escapes and non-ASCII: what could fool a skipper.
        proptest::string::string_regex(r#"([a-z0-9 {}\[\]:,"\\/]|é|😀|\n|\t){0,12}"#)
            .expect("regex")
    }

    fn value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| serde_json::json!(n)),
            (-1e6f64..1e6).prop_map(|n| serde_json::json!(n)),
            text().prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                proptest::collection::vec((text(), inner), 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("model".to_owned()),
            Just("stream".to_owned()),
            Just("prompt_cache_key".to_owned()),
            Just("stream_options".to_owned()),
            Just("include_usage".to_owned()),
            Just("input".to_owned()),
            text(),
        ]
    }

    fn member_value() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            value(),
            text().prop_map(serde_json::Value::String),
            any::<bool>().prop_map(serde_json::Value::Bool),
            (proptest::option::of(any::<bool>()), value()).prop_map(|(usage, extra)| {
                let mut o = serde_json::Map::new();
                if let Some(u) = usage {
                    o.insert("include_usage".into(), u.into());
                }
                o.insert("include_obfuscation".into(), extra);
                serde_json::Value::Object(o)
            }),
        ]
    }

    /// A body as a client might write it: members in any order, pretty or compact.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::collection::vec((key(), member_value()), 0..8),
            any::<bool>(),
        )
            .prop_map(|(members, pretty)| {
                let object: serde_json::Map<_, _> = members.into_iter().collect();
                let value = serde_json::Value::Object(object);
                if pretty {
                    serde_json::to_vec_pretty(&value).expect("json")
                } else {
                    serde_json::to_vec(&value).expect("json")
                }
            })
    }

    proptest! {
        #[test]
        fn finds_what_a_json_parser_finds(body in body()) {
            let expected = by_serde(&body);
            let got = scan(&body);
            match expected {
                Some(fields) => prop_assert_eq!(got, Ok(fields)),
                None => prop_assert!(got.is_err(), "accepted {:?}", String::from_utf8_lossy(&body)),
            }
        }

        #[test]
        fn never_panics_on_cut_or_changed_bodies(body in body(), cut in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut changed = body.clone();
            if !changed.is_empty() {
                let at = cut.index(changed.len());
                changed[at] = byte;
                let _ = scan(&changed);
                let _ = scan(&body[..at]);
            }
        }
    }

    #[test]
    fn escaped_names_and_values_are_read_as_a_parser_reads_them() {
        let body = br#"{"mod\u0065l":"gpt-\u0035","stream":true,"input":[{"a":"}\"]"}]}"#;
        let fields = scan(body).unwrap();
        assert_eq!(fields.model.as_deref(), Some("gpt-5"));
        assert_eq!(fields.stream, Some(true));
    }

    #[test]
    fn the_outer_object_is_checked_and_the_rest_is_left_to_the_upstream() {
        for bad in [
            &b""[..],
            b"[]",
            b"{\"model\":\"m\"",
            b"{\"model\":\"m\"} x",
            b"{\"model\" \"m\"}",
            b"{\"model\":\"m\",}",
            b"{\"model\":1}",
            b"{\"stream\":\"yes\"}",
            b"{\"model\":\"a\",\"model\":\"b\"}",
            b"{\"input\":[1,2}",
        ] {
            assert!(scan(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        // Inside a skipped value only strings and brackets are followed.
        let fields = scan(br#"{"input":[01, tru],"model":"m"}"#).unwrap();
        assert_eq!(fields.model.as_deref(), Some("m"));
    }
}
