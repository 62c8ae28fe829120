//! Amounts as operators type them (`10.00`, currency units) ↔ integer micro-units, exactly:
//! no floating point touches money.

/// Micro-units per currency unit.
pub const MICROS_PER_UNIT: i64 = 1_000_000;

/// Parses `12`, `12.5`, `-0.000001` into micro-units.
pub fn parse_amount(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let bad = || format!("{text:?} is not an amount (expected e.g. 10.00, at most 6 decimals)");
    if whole.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    if !whole.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    if frac.len() > 6 {
        return Err(bad());
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac_micros: i64 = format!("{frac:0<6}").parse().map_err(|_| bad())?;
    let micros = whole
        .checked_mul(MICROS_PER_UNIT)
        .and_then(|w| w.checked_add(frac_micros))
        .ok_or_else(|| format!("{text:?} is too large"))?;
    Ok(if negative { -micros } else { micros })
}

/// Formats micro-units as a currency amount with 6 decimals, trailing zeros trimmed to 2.
pub fn format_amount(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let whole = abs / MICROS_PER_UNIT as u64;
    let frac = format!("{:06}", abs % MICROS_PER_UNIT as u64);
    let mut frac = frac.trim_end_matches('0').to_owned();
    while frac.len() < 2 {
        frac.push('0');
    }
    format!("{sign}{whole}.{frac}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly() {
        assert_eq!(parse_amount("10.00").unwrap(), 10_000_000);
        assert_eq!(parse_amount("0.1").unwrap(), 100_000);
        assert_eq!(parse_amount("1.25").unwrap(), 1_250_000);
        assert_eq!(parse_amount(".5").unwrap(), 500_000);
        assert_eq!(parse_amount("-0.000001").unwrap(), -1);
        assert_eq!(parse_amount("3").unwrap(), 3_000_000);
        for bad in ["", "abc", "1.2.3", "1.0000001", "1e3", "-", "."] {
            assert!(parse_amount(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format_amount(10_000_000), "10.00");
        assert_eq!(format_amount(1_250_000), "1.25");
        assert_eq!(format_amount(1), "0.000001");
        assert_eq!(format_amount(-1_500_000), "-1.50");
    }
}
