//! Bearer tokens on gRPC calls: a secret type that never prints itself, the one client-side
//! interceptor that sends it, and constant-time checking of the `authorization` metadata.

use std::{fmt, str::FromStr};

use subtle::ConstantTimeEq;
use tonic::{
    Request, Status,
    metadata::{AsciiMetadataValue, MetadataMap},
    service::Interceptor,
};

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

/// A client interceptor that sends `authorization: Bearer <token>` on every call.
///
/// The value is marked sensitive, so HTTP/2 never puts it in its header-compression table,
/// and `Debug` prints `[redacted]`.
#[derive(Clone)]
pub struct BearerAuth(Option<AsciiMetadataValue>);

impl BearerAuth {
    /// Sends `token` on every call.
    pub fn new(token: &Secret) -> Result<Self, InvalidToken> {
        let mut value = token.bearer()?;
        value.set_sensitive(true);
        Ok(Self(Some(value)))
    }

    /// [`BearerAuth::new`] when there is a token; without one, sends no `authorization` at
    /// all, so the server's refusal says what is missing.
    pub fn optional(token: Option<&Secret>) -> Result<Self, InvalidToken> {
        match token {
            Some(token) => Self::new(token),
            None => Ok(Self(None)),
        }
    }
}

impl fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(_) => f.write_str("BearerAuth([redacted])"),
            None => f.write_str("BearerAuth(none)"),
        }
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

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

    #[test]
    fn bearer_auth_sends_the_token_the_server_checks() {
        let token = Secret::new("tok-123");
        let mut auth = BearerAuth::new(&token).unwrap();
        let mut request = Request::new(());
        // A caller's own authorization is replaced, never sent twice.
        request
            .metadata_mut()
            .insert("authorization", "Bearer stale".parse().unwrap());
        let request = auth.call(request).unwrap();
        let values: Vec<_> = request.metadata().get_all("authorization").iter().collect();
        assert_eq!(values.len(), 1);
        assert!(values[0].is_sensitive());
        assert!(check_bearer(request.metadata(), &token));
    }

    #[test]
    fn bearer_auth_without_a_token_sends_nothing() {
        let mut auth = BearerAuth::optional(None).unwrap();
        let request = auth.call(Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());
        let mut auth = BearerAuth::optional(Some(&Secret::new("tok-123"))).unwrap();
        let request = auth.call(Request::new(())).unwrap();
        assert_eq!(bearer_token(request.metadata()), Some("tok-123"));
    }

    #[test]
    fn bearer_auth_refuses_tokens_metadata_cannot_carry_and_never_prints_one() {
        assert!(BearerAuth::new(&Secret::new("tok\n123")).is_err());
        let auth = BearerAuth::new(&Secret::new("hunter2")).unwrap();
        assert_eq!(format!("{auth:?}"), "BearerAuth([redacted])");
        assert_eq!(
            format!("{:?}", BearerAuth::optional(None).unwrap()),
            "BearerAuth(none)"
        );
    }
}
