//! The names the wire's enums go by outside protobuf — in the ledger's columns, in logs and
//! metrics labels, in `gatewayctl` flags and JSON: lowercase words (`healthy`,
//! `client_cancelled`, `upstream`), one definition for every crate.

use std::str::FromStr;

use crate::v1::{AffinityMode, SpendWindow, SummaryBy, UpstreamHealth, UsageStatus};

/// An enum of the wire contract with a stable lowercase name per value.
pub trait Named: Sized + Copy + TryFrom<i32> + 'static {
    /// What the enum describes, for error messages.
    const WHAT: &'static str;
    /// Every value that has a name (the unspecified zero value, where there is one, has none).
    const ALL: &'static [Self];
    /// The value's name.
    fn name(self) -> &'static str;
}

/// A name that is none of an enum's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a {what} (expected one of: {expected})")]
pub struct UnknownName {
    what: &'static str,
    text: String,
    expected: String,
}

/// The value named `text`.
pub fn parse<T: Named>(text: &str) -> Result<T, UnknownName> {
    T::ALL
        .iter()
        .copied()
        .find(|v| v.name() == text)
        .ok_or_else(|| UnknownName {
            what: T::WHAT,
            text: text.to_owned(),
            expected: T::ALL
                .iter()
                .map(|v| v.name())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The name of a wire value (`i32`), or `"unspecified"` for one this build does not know.
pub fn name_of<T: Named>(value: i32) -> &'static str {
    T::try_from(value).map_or("unspecified", Named::name)
}

/// The value a stored name stands for. Unlike [`parse`], the zero value's name is accepted
/// too (`unspecified`): the ledger keeps an event whose status a data plane did not say rather
/// than lose its bill.
pub fn from_stored<T: Named>(text: &str) -> Result<T, UnknownName> {
    match T::try_from(0) {
        Ok(zero) if zero.name() == text => Ok(zero),
        _ => parse(text),
    }
}

/// Serializes an enum field (an `i32` in prost's structs) by its name.
pub(crate) fn serialize<S: serde::Serializer, T: Named>(
    value: &i32,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(name_of::<T>(*value))
}

impl Named for UpstreamHealth {
    const WHAT: &'static str = "health";
    const ALL: &'static [Self] = &[Self::Unknown, Self::Healthy, Self::Unhealthy];
    fn name(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        }
    }
}

impl Named for UsageStatus {
    const WHAT: &'static str = "usage status";
    const ALL: &'static [Self] = &[
        Self::Completed,
        Self::Incomplete,
        Self::Failed,
        Self::ClientCancelled,
        Self::UpstreamError,
    ];
    fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Completed => "completed",
            Self::Incomplete => "incomplete",
            Self::Failed => "failed",
            Self::ClientCancelled => "client_cancelled",
            Self::UpstreamError => "upstream_error",
        }
    }
}

impl Named for SummaryBy {
    const WHAT: &'static str = "summary grouping";
    const ALL: &'static [Self] = &[
        Self::User,
        Self::Model,
        Self::Upstream,
        Self::Day,
        Self::Key,
        Self::Hour,
    ];
    fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::User => "user",
            Self::Model => "model",
            Self::Upstream => "upstream",
            Self::Day => "day",
            Self::Key => "key",
            Self::Hour => "hour",
        }
    }
}

impl Named for AffinityMode {
    const WHAT: &'static str = "affinity";
    const ALL: &'static [Self] = &[Self::User, Self::UserSession];
    fn name(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::UserSession => "user-session",
        }
    }
}

impl Named for SpendWindow {
    const WHAT: &'static str = "spend window";
    const ALL: &'static [Self] = &[
        Self::Lifetime,
        Self::FiveHours,
        Self::Day,
        Self::Week,
        Self::Month,
    ];
    fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Lifetime => "lifetime",
            Self::FiveHours => "5h",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }
}

macro_rules! from_str_by_name {
    ($($t:ty),*) => {$(
        impl FromStr for $t {
            type Err = UnknownName;
            fn from_str(text: &str) -> Result<Self, UnknownName> {
                parse(text)
            }
        }
    )*};
}
from_str_by_name!(
    UpstreamHealth,
    UsageStatus,
    SummaryBy,
    AffinityMode,
    SpendWindow
);

#[cfg(feature = "clap")]
impl clap::ValueEnum for SummaryBy {
    fn value_variants<'a>() -> &'a [Self] {
        Self::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()))
    }
}

/// The wire's enums as TEXT columns holding their names — the words the columns held before
/// the wire had enums. Statements bind `name()`.
#[cfg(feature = "sqlx")]
mod column {
    use sqlx::{Database, Decode, Type, error::BoxDynError};

    use super::{UpstreamHealth, UsageStatus, from_stored};

    macro_rules! text_column {
        ($($t:ty),*) => {$(
            impl<DB: Database> Type<DB> for $t
            where
                String: Type<DB>,
            {
                fn type_info() -> DB::TypeInfo {
                    <String as Type<DB>>::type_info()
                }
                fn compatible(ty: &DB::TypeInfo) -> bool {
                    <String as Type<DB>>::compatible(ty)
                }
            }

            impl<'r, DB: Database> Decode<'r, DB> for $t
            where
                &'r str: Decode<'r, DB>,
            {
                fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
                    Ok(from_stored(<&'r str as Decode<'r, DB>>::decode(value)?)?)
                }
            }
        )*};
    }
    text_column!(UpstreamHealth, UsageStatus);
}

/// The control plane's `--affinity`.
#[cfg(feature = "clap")]
impl clap::ValueEnum for AffinityMode {
    fn value_variants<'a>() -> &'a [Self] {
        Self::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let help = match self {
            Self::User => "All of a user's keys and sessions reach the same upstream",
            Self::UserSession => "Each of a user's sessions is placed on its own",
        };
        Some(clap::builder::PossibleValue::new(self.name()).help(help))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for h in UpstreamHealth::ALL {
            assert_eq!(h.name().parse::<UpstreamHealth>(), Ok(*h));
        }
        for s in UsageStatus::ALL {
            assert_eq!(s.name().parse::<UsageStatus>(), Ok(*s));
        }
        assert_eq!("day".parse::<SummaryBy>(), Ok(SummaryBy::Day));
        assert_eq!(
            "user-session".parse::<AffinityMode>(),
            Ok(AffinityMode::UserSession)
        );
        assert_eq!(
            "week".parse::<SummaryBy>().unwrap_err().to_string(),
            "\"week\" is not a summary grouping (expected one of: user, model, upstream, day, key, \
             hour)"
        );
        assert_eq!(name_of::<UsageStatus>(99), "unspecified");
        // Stored names: the zero value's too, nothing else unknown.
        assert_eq!(from_stored("unspecified"), Ok(UsageStatus::Unspecified));
        assert_eq!(from_stored("unknown"), Ok(UpstreamHealth::Unknown));
        assert!(from_stored::<UsageStatus>("done").is_err());
        assert!(from_stored::<UpstreamHealth>("").is_err());
        assert!("unspecified".parse::<UsageStatus>().is_err());
    }

    #[test]
    fn json_carries_names() {
        let record = crate::v1::UsageRecord {
            status: UsageStatus::ClientCancelled as i32,
            ..Default::default()
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["status"], "client_cancelled");
        let upstream = crate::v1::Upstream::default();
        assert_eq!(
            serde_json::to_value(&upstream).unwrap()["health"],
            "unknown"
        );
    }
}
