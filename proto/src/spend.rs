//! Key spending caps as operators write and read them (`50.00` for a lifetime cap, `5.00/day`
//! for a rolling one), the windows' lengths, and the refusal a data plane gives a key at a
//! cap. The control plane counts spend per window from its hourly rollups; both planes and
//! the CLI share these definitions.

use std::{fmt, str::FromStr};

use crate::{
    money::{BadAmount, Micros},
    names::{Named, UnknownName, parse},
    v1::{SpendLimit, SpendState, SpendWindow},
};

/// Milliseconds per hour: rolling windows are counted in whole UTC hours.
pub const HOUR_MS: i64 = 3_600_000;

impl SpendWindow {
    /// The window's length in hours; `None` for the lifetime (and the unspecified value).
    pub const fn hours(self) -> Option<i64> {
        match self {
            Self::Unspecified | Self::Lifetime => None,
            Self::FiveHours => Some(5),
            Self::Day => Some(24),
            Self::Week => Some(24 * 7),
            Self::Month => Some(24 * 30),
        }
    }

    /// Unix ms of the start of the first hour a window ending now (`now_ms`) counts: the hour
    /// `hours` before now began in. `None` for the lifetime, which counts everything.
    pub fn start_ms(self, now_ms: i64) -> Option<i64> {
        let hours = self.hours()?;
        let since = now_ms.saturating_sub(hours.saturating_mul(HOUR_MS));
        Some(since.div_euclid(HOUR_MS).saturating_mul(HOUR_MS))
    }

    /// When spend made in the hour starting at `hour_ms` leaves the window: the moment the
    /// window's first hour is the next one. `None` for the lifetime.
    pub fn leaves_at_ms(self, hour_ms: i64) -> Option<i64> {
        let hours = self.hours()?;
        Some(
            hour_ms
                .div_euclid(HOUR_MS)
                .saturating_add(hours)
                .saturating_add(1)
                .saturating_mul(HOUR_MS),
        )
    }
}

/// A cap as typed: an amount, optionally `/window`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadSpendLimit {
    #[error("spend limit {text:?}: {source}")]
    Amount {
        text: String,
        #[source]
        source: BadAmount,
    },
    #[error("spend limit {text:?}: {source}")]
    Window {
        text: String,
        #[source]
        source: UnknownName,
    },
    #[error("spend limit {0:?} must be above zero")]
    NotPositive(String),
}

impl FromStr for SpendLimit {
    type Err = BadSpendLimit;

    /// `50.00` (lifetime) or `5.00/day`; windows are `5h`, `day`, `week`, `month` (and
    /// `lifetime`, the same as none).
    fn from_str(text: &str) -> Result<Self, BadSpendLimit> {
        let (amount, window) = match text.split_once('/') {
            Some((amount, window)) => (
                amount,
                parse::<SpendWindow>(window.trim()).map_err(|source| BadSpendLimit::Window {
                    text: text.to_owned(),
                    source,
                })?,
            ),
            None => (text, SpendWindow::Lifetime),
        };
        let limit: Micros = amount.parse().map_err(|source| BadSpendLimit::Amount {
            text: text.to_owned(),
            source,
        })?;
        if !limit.is_positive() {
            return Err(BadSpendLimit::NotPositive(text.to_owned()));
        }
        Ok(Self {
            window: window as i32,
            limit_micros: limit.get(),
        })
    }
}

impl fmt::Display for SpendLimit {
    /// The form [`FromStr`] reads: `50.00` or `5.00/day`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_cap(f, self.window, self.limit_micros)
    }
}

impl fmt::Display for SpendState {
    /// `5.00/day: 1.25 spent, 3.75 left`; a lifetime cap says so (`50.00 lifetime: …`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_cap(f, self.window, self.limit_micros)?;
        if self.window == SpendWindow::Lifetime as i32 {
            f.write_str(" lifetime")?;
        }
        write!(
            f,
            ": {} spent, {} left",
            Micros(self.spent_micros),
            Micros(self.left_micros)
        )
    }
}

fn write_cap(f: &mut fmt::Formatter<'_>, window: i32, limit_micros: i64) -> fmt::Result {
    match SpendWindow::try_from(window) {
        Ok(SpendWindow::Lifetime) | Err(_) | Ok(SpendWindow::Unspecified) => {
            write!(f, "{}", Micros(limit_micros))
        }
        Ok(w) => write!(f, "{}/{}", Micros(limit_micros), w.name()),
    }
}

impl SpendState {
    /// The state of a cap of `limit` in `window` after `spent`, freeing room at `frees_at_ms`.
    pub fn new(window: SpendWindow, limit: Micros, spent: Micros, frees_at_ms: i64) -> Self {
        Self {
            window: window as i32,
            limit_micros: limit.get(),
            spent_micros: spent.get(),
            left_micros: limit.saturating_sub(spent).get().max(0),
            frees_at_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(text: &str) -> Result<SpendLimit, String> {
        text.parse::<SpendLimit>().map_err(|e| e.to_string())
    }

    #[test]
    fn caps_parse_as_typed_and_print_back() {
        let lifetime = limit("50.00").unwrap();
        assert_eq!(lifetime.window, SpendWindow::Lifetime as i32);
        assert_eq!(lifetime.limit_micros, 50_000_000);
        assert_eq!(lifetime.to_string(), "50.00");
        let day = limit("5/day").unwrap();
        assert_eq!(day.window, SpendWindow::Day as i32);
        assert_eq!(day.limit_micros, 5_000_000);
        assert_eq!(day.to_string(), "5.00/day");
        assert_eq!(limit("0.5/5h").unwrap().to_string(), "0.50/5h");
        assert_eq!(limit("1/lifetime").unwrap().to_string(), "1.00");
        for window in SpendWindow::ALL {
            let text = SpendLimit {
                window: *window as i32,
                limit_micros: 1_250_000,
            }
            .to_string();
            assert_eq!(limit(&text).unwrap().window, *window as i32, "{text}");
        }
    }

    #[test]
    fn bad_caps_say_what_is_wrong() {
        assert_eq!(
            limit("5.00/fortnight").unwrap_err(),
            "spend limit \"5.00/fortnight\": \"fortnight\" is not a spend window \
             (expected one of: lifetime, 5h, day, week, month)"
        );
        assert!(limit("five/day").unwrap_err().contains("is not an amount"));
        assert_eq!(
            limit("0/day").unwrap_err(),
            "spend limit \"0/day\" must be above zero"
        );
        assert!(limit("-1").unwrap_err().contains("must be above zero"));
        assert!(limit("").unwrap_err().contains("is not an amount"));
    }

    #[test]
    fn windows_count_whole_hours() {
        // 2026-12-02T10:59:59.999Z and the hour it is in.
        let hour = 1_796_205_600_000;
        let now = hour + HOUR_MS - 1;
        assert_eq!(SpendWindow::Lifetime.start_ms(now), None);
        // A day back from 10:59 is 10:59 yesterday, whose hour began at 10:00.
        assert_eq!(SpendWindow::Day.start_ms(now), Some(hour - 24 * HOUR_MS));
        assert_eq!(SpendWindow::Day.start_ms(hour), Some(hour - 24 * HOUR_MS));
        assert_eq!(
            SpendWindow::Day.start_ms(hour + HOUR_MS),
            Some(hour - 23 * HOUR_MS)
        );
        // Spend of 10:00's hour is counted until 11:00 the next day: 24 to 25 hours.
        assert_eq!(
            SpendWindow::Day.leaves_at_ms(hour),
            Some(hour + 25 * HOUR_MS)
        );
        let leaves = SpendWindow::FiveHours.leaves_at_ms(hour).unwrap();
        assert!(SpendWindow::FiveHours.start_ms(leaves - 1).unwrap() <= hour);
        assert!(SpendWindow::FiveHours.start_ms(leaves).unwrap() > hour);
        assert_eq!(SpendWindow::Month.hours(), Some(720));
        assert_eq!(SpendWindow::Week.hours(), Some(168));
    }

    #[test]
    fn state_never_has_less_than_nothing_left() {
        let s = SpendState::new(SpendWindow::Day, Micros(5_000_000), Micros(6_000_000), 0);
        assert_eq!(s.left_micros, 0);
        assert_eq!(s.to_string(), "5.00/day: 6.00 spent, 0.00 left");
        let life = SpendState::new(SpendWindow::Lifetime, Micros(50_000_000), Micros(0), 0);
        assert_eq!(life.to_string(), "50.00 lifetime: 0.00 spent, 50.00 left");
    }
}
