//! Gateway keys and their spending caps, as the store reads and writes them.

use chrono::{DateTime, Utc};
use gateway_proto::{
    ids::{KeyId, UserId},
    money::Micros,
    v1::{SpendState, SpendWindow},
};

use super::TextList;

/// Changes to a key; `None` leaves a field as it is, `Some(None)` clears it (`null` in its
/// audit detail).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct KeyPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_allow: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<Option<i32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Option<i32>>,
    /// Replaces every cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caps: Option<SpendCaps>,
}

/// A gateway key (never its secret).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub id: KeyId,
    pub user_id: UserId,
    pub name: String,
    pub prefix: String,
    pub digest: Vec<u8>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    #[sqlx(try_from = "TextList")]
    pub models: Vec<String>,
    #[sqlx(try_from = "TextList")]
    pub ip_allow: Vec<String>,
    pub rpm: Option<i32>,
    pub concurrency: Option<i32>,
    pub created_at: DateTime<Utc>,
    #[sqlx(flatten)]
    pub caps: SpendCaps,
}

/// A new gateway key (its digest is never in its audit detail).
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewKey {
    pub user_id: UserId,
    pub name: String,
    pub prefix: String,
    #[serde(skip)]
    pub digest: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    pub models: Vec<String>,
    pub ip_allow: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<i32>,
    pub caps: SpendCaps,
}

/// A key's spending caps, one column per window; `None` = no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct SpendCaps {
    #[sqlx(rename = "spend_limit_micros")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<Micros>,
    #[sqlx(rename = "spend_limit_5h_micros")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub five_hours: Option<Micros>,
    #[sqlx(rename = "spend_limit_day_micros")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<Micros>,
    #[sqlx(rename = "spend_limit_week_micros")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub week: Option<Micros>,
    #[sqlx(rename = "spend_limit_month_micros")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub month: Option<Micros>,
}

impl SpendCaps {
    /// The caps set, by window, in the order of [`SpendWindow`].
    pub fn iter(&self) -> impl Iterator<Item = (SpendWindow, Micros)> + '_ {
        [
            (SpendWindow::Lifetime, self.lifetime),
            (SpendWindow::FiveHours, self.five_hours),
            (SpendWindow::Day, self.day),
            (SpendWindow::Week, self.week),
            (SpendWindow::Month, self.month),
        ]
        .into_iter()
        .filter_map(|(w, cap)| cap.map(|c| (w, c)))
    }

    /// The cap of `window`, to set.
    pub fn slot(&mut self, window: SpendWindow) -> Option<&mut Option<Micros>> {
        Some(match window {
            SpendWindow::Unspecified => return None,
            SpendWindow::Lifetime => &mut self.lifetime,
            SpendWindow::FiveHours => &mut self.five_hours,
            SpendWindow::Day => &mut self.day,
            SpendWindow::Week => &mut self.week,
            SpendWindow::Month => &mut self.month,
        })
    }

    /// Whether any cap is set.
    pub fn any(&self) -> bool {
        self.iter().next().is_some()
    }

    /// Each cap with what `spend` says was spent in its window, and when room frees.
    pub fn states(&self, spend: Option<&KeySpend>) -> Vec<SpendState> {
        self.iter()
            .map(|(window, limit)| {
                let (spent, oldest) = spend.map_or((Micros::ZERO, None), |s| s.window(window));
                let frees_at = oldest
                    .and_then(|h| window.leaves_at_ms(h.timestamp_millis()))
                    .unwrap_or(0);
                SpendState::new(window, limit, spent, frees_at)
            })
            .collect()
    }
}

/// What a key has spent in every window ending at one moment, and per rolling window the
/// oldest hour with spend in it (when room frees next).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KeySpend {
    pub key_id: KeyId,
    pub lifetime: Micros,
    pub five_hours: Micros,
    pub day: Micros,
    pub week: Micros,
    pub month: Micros,
    pub five_hours_oldest: Option<DateTime<Utc>>,
    pub day_oldest: Option<DateTime<Utc>>,
    pub week_oldest: Option<DateTime<Utc>>,
    pub month_oldest: Option<DateTime<Utc>>,
}

impl KeySpend {
    /// Spent in `window`, and the oldest hour of it (none for the lifetime).
    pub fn window(&self, window: SpendWindow) -> (Micros, Option<DateTime<Utc>>) {
        match window {
            SpendWindow::Unspecified => (Micros::ZERO, None),
            SpendWindow::Lifetime => (self.lifetime, None),
            SpendWindow::FiveHours => (self.five_hours, self.five_hours_oldest),
            SpendWindow::Day => (self.day, self.day_oldest),
            SpendWindow::Week => (self.week, self.week_oldest),
            SpendWindow::Month => (self.month, self.month_oldest),
        }
    }
}
