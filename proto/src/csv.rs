//! Usage events as CSV, the same from `gatewayctl usage export` and the console's download:
//! one header line of the JSON field names, then one RFC 4180 row per event.

use crate::v1;

/// The columns: the JSON names of a usage event, in the order `usage list -o json` prints them.
pub fn usage_columns() -> Vec<String> {
    match serde_json::to_value(v1::UsageRecord::default()) {
        Ok(serde_json::Value::Object(fields)) => fields.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// One CSV row of `event`'s `columns` (RFC 4180: a field with a comma, quote or line break is
/// quoted, quotes doubled; an absent value is empty).
pub fn row(columns: &[String], event: &serde_json::Value) -> String {
    columns
        .iter()
        .map(|c| {
            let field = match &event[c.as_str()] {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if field.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", field.replace('"', "\"\""))
            } else {
                field
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// One event's row.
pub fn usage_row(columns: &[String], event: &v1::UsageRecord) -> String {
    row(
        columns,
        &serde_json::to_value(event).unwrap_or(serde_json::Value::Null),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_quote_what_needs_it() {
        let columns = usage_columns();
        for name in [
            "id",
            "user_id",
            "upstream_id",
            "cost_micros",
            "status",
            "estimated",
        ] {
            assert!(columns.iter().any(|c| c == name), "{columns:?}");
        }
        let row = row(
            &["a".into(), "b".into(), "c".into(), "d".into()],
            &serde_json::json!({"a": "plain", "b": "x,\"y\"", "c": null, "d": 7}),
        );
        assert_eq!(row, "plain,\"x,\"\"y\"\"\",,7");
    }
}
