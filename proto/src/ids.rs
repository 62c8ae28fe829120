//! Identifiers of the gateway's records, one type each, so a user id cannot be passed where a
//! key id belongs. On the wire they are plain `int64` fields; these types are what code on
//! either side of the wire holds. With the `sqlx` feature they are stored as `BIGINT`.

use std::{fmt, str::FromStr};

/// An id that is not a positive integer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a valid {what} id (expected a positive integer)")]
pub struct BadId {
    what: &'static str,
    text: String,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize,
            serde::Deserialize,
        )]
        #[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl $name {
            /// The id as it travels on the wire.
            pub const fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = BadId;

            fn from_str(text: &str) -> Result<Self, BadId> {
                match text.trim().parse::<i64>() {
                    Ok(id) if id > 0 => Ok(Self(id)),
                    _ => Err(BadId {
                        what: $what,
                        text: text.to_owned(),
                    }),
                }
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> i64 {
                id.0
            }
        }
    };
}

id_type!(
    /// An upstream account pool.
    UpstreamId,
    "upstream"
);
id_type!(
    /// A user: the holder of a balance, whose keys share it.
    UserId,
    "user"
);
id_type!(
    /// A gateway key.
    KeyId,
    "key"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        assert_eq!("42".parse::<UserId>(), Ok(UserId(42)));
        assert_eq!(UserId(42).to_string(), "42");
        let err = "0".parse::<KeyId>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"0\" is not a valid key id (expected a positive integer)"
        );
        assert!("x".parse::<UpstreamId>().is_err());
        assert_eq!(serde_json::to_string(&UpstreamId(7)).unwrap(), "7");
    }
}
