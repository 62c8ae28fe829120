//! Money: integer micro-units (1e-6 of the currency), never floating point. Operators type
//! and read currency units (`10.00`); the wire, the ledger and every computation use
//! [`Micros`].

use std::{fmt, iter::Sum, ops::Neg, str::FromStr};

/// Micro-units per currency unit.
pub const MICROS_PER_UNIT: i64 = 1_000_000;

/// An amount of money in micro-units. `Display` prints currency units (`10.00`); `FromStr`
/// parses them exactly (at most 6 decimals).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
#[serde(transparent)]
pub struct Micros(pub i64);

impl Micros {
    /// Nothing.
    pub const ZERO: Self = Self(0);

    /// The amount in micro-units, as it travels on the wire.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// `self + other`, saturating at the bounds.
    pub const fn saturating_add(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }

    /// `self - other`, saturating at the bounds.
    pub const fn saturating_sub(self, other: Self) -> Self {
        Self(self.0.saturating_sub(other.0))
    }

    /// Whether the amount is above zero.
    pub const fn is_positive(self) -> bool {
        self.0 > 0
    }
}

impl Neg for Micros {
    type Output = Self;
    fn neg(self) -> Self {
        Self(self.0.saturating_neg())
    }
}

impl Sum for Micros {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::ZERO, Self::saturating_add)
    }
}

impl From<Micros> for i64 {
    fn from(m: Micros) -> i64 {
        m.0
    }
}

/// Text that is not an amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadAmount {
    #[error("{0:?} is not an amount (expected e.g. 10.00, at most 6 decimals)")]
    Malformed(String),
    #[error("{0:?} is too large")]
    TooLarge(String),
}

impl FromStr for Micros {
    type Err = BadAmount;

    /// Parses `12`, `12.5`, `-0.000001` (currency units) exactly.
    fn from_str(text: &str) -> Result<Self, BadAmount> {
        let t = text.trim();
        let (negative, digits) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let bad = || BadAmount::Malformed(text.to_owned());
        let all_digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
        if (whole.is_empty() && frac.is_empty())
            || !all_digits(whole)
            || !all_digits(frac)
            || frac.len() > 6
        {
            return Err(bad());
        }
        let whole: i64 = if whole.is_empty() {
            0
        } else {
            whole
                .parse()
                .map_err(|_| BadAmount::TooLarge(text.to_owned()))?
        };
        let frac_micros: i64 = format!("{frac:0<6}").parse().map_err(|_| bad())?;
        let micros = whole
            .checked_mul(MICROS_PER_UNIT)
            .and_then(|w| w.checked_add(frac_micros))
            .ok_or_else(|| BadAmount::TooLarge(text.to_owned()))?;
        Ok(Self(if negative { -micros } else { micros }))
    }
}

impl fmt::Display for Micros {
    /// Currency units with 6 decimals, trailing zeros trimmed to 2 (`10.00`, `0.000001`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let unit = MICROS_PER_UNIT.unsigned_abs();
        let frac = format!("{:06}", abs % unit);
        let mut frac = frac.trim_end_matches('0').to_owned();
        while frac.len() < 2 {
            frac.push('0');
        }
        write!(f, "{sign}{}.{frac}", abs / unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<i64, BadAmount> {
        text.parse::<Micros>().map(Micros::get)
    }

    #[test]
    fn parses_exactly() {
        assert_eq!(parse("10.00").unwrap(), 10_000_000);
        assert_eq!(parse("0.1").unwrap(), 100_000);
        assert_eq!(parse("1.25").unwrap(), 1_250_000);
        assert_eq!(parse(".5").unwrap(), 500_000);
        assert_eq!(parse("-0.000001").unwrap(), -1);
        assert_eq!(parse("3").unwrap(), 3_000_000);
        for bad in ["", "abc", "1.2.3", "1.0000001", "1e3", "-", "."] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            parse("99999999999999999999"),
            Err(BadAmount::TooLarge(_))
        ));
    }

    #[test]
    fn formats() {
        assert_eq!(Micros(10_000_000).to_string(), "10.00");
        assert_eq!(Micros(1_250_000).to_string(), "1.25");
        assert_eq!(Micros(1).to_string(), "0.000001");
        assert_eq!(Micros(-1_500_000).to_string(), "-1.50");
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Micros(i64::MAX).saturating_add(Micros(1)), Micros(i64::MAX));
        assert_eq!(Micros(5).saturating_sub(Micros(7)), Micros(-2));
        assert_eq!(
            [Micros(1), Micros(2)].into_iter().sum::<Micros>(),
            Micros(3)
        );
        assert!(!Micros::ZERO.is_positive());
    }
}
