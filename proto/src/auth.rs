//! Bearer tokens on gRPC calls: a secret type that never prints itself, and constant-time
//! checking of the `authorization` metadata.

use std::{fmt, str::FromStr};

use subtle::ConstantTimeEq;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};

/// A secret string (token, API key). `Debug` and `Display` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send or hash it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares against a presented value in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }

    /// `Bearer <secret>` as a metadata value.
    pub fn bearer(&self) -> Result<AsciiMetadataValue, InvalidToken> {
        format!("Bearer {}", self.0)
            .parse()
            .map_err(|_| InvalidToken)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// A token that cannot travel in gRPC metadata (it contains non-visible-ASCII characters).
#[derive(Debug, thiserror::Error)]
#[error("token contains characters that cannot be sent as gRPC metadata")]
pub struct InvalidToken;

/// The token of an `authorization: Bearer <token>` metadata entry, if present.
pub fn bearer_token(metadata: &MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether `metadata` carries `expected` as its bearer token.
pub fn check_bearer(metadata: &MetadataMap, expected: &Secret) -> bool {
    bearer_token(metadata).is_some_and(|token| !expected.is_empty() && expected.matches(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn bearer_round_trip() {
        let s = Secret::new("tok-123");
        let mut md = MetadataMap::new();
        md.insert("authorization", s.bearer().unwrap());
        assert_eq!(bearer_token(&md), Some("tok-123"));
        assert!(check_bearer(&md, &s));
        assert!(!check_bearer(&md, &Secret::new("tok-124")));
        assert!(!check_bearer(&md, &Secret::new("")));
        assert!(!check_bearer(&MetadataMap::new(), &s));
    }
}
