//! Hand-written `Debug` for the generated messages that carry secrets: the secret field prints
//! as `[redacted]`, everything else as usual.

use std::fmt;

use crate::v1::{
    CreateKeyResponse, CreateUpstreamRequest, SnapshotUpstream, UpdateUpstreamRequest,
};

const REDACTED: &str = "[redacted]";

impl fmt::Debug for SnapshotUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotUpstream")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &REDACTED)
            .field("priority", &self.priority)
            .field("weight", &self.weight)
            .field("max_retries", &self.max_retries)
            .field("timeout_ms", &self.timeout_ms)
            .field("healthy", &self.healthy)
            .field("models", &self.models)
            .finish()
    }
}

impl fmt::Debug for CreateUpstreamRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateUpstreamRequest")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &REDACTED)
            .field("priority", &self.priority)
            .field("weight", &self.weight)
            .field("max_retries", &self.max_retries)
            .field("timeout_ms", &self.timeout_ms)
            .field("disabled", &self.disabled)
            .field("probe_path", &self.probe_path)
            .field("models", &self.models)
            .finish()
    }
}

impl fmt::Debug for UpdateUpstreamRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateUpstreamRequest")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| REDACTED))
            .field("priority", &self.priority)
            .field("weight", &self.weight)
            .field("max_retries", &self.max_retries)
            .field("timeout_ms", &self.timeout_ms)
            .field("enabled", &self.enabled)
            .field("probe_path", &self.probe_path)
            .field("models", &self.models)
            .finish()
    }
}

impl fmt::Debug for CreateKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateKeyResponse")
            .field("key", &self.key)
            .field("secret", &REDACTED)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_reach_debug_output() {
        let up = SnapshotUpstream {
            api_key: "sk-live-very-secret".into(),
            ..Default::default()
        };
        let create = CreateUpstreamRequest {
            api_key: "sk-live-very-secret".into(),
            ..Default::default()
        };
        let update = UpdateUpstreamRequest {
            api_key: Some("sk-live-very-secret".into()),
            ..Default::default()
        };
        let key = CreateKeyResponse {
            key: None,
            secret: "cgw-very-secret".into(),
        };
        for text in [
            format!("{up:?}"),
            format!("{create:?}"),
            format!("{update:?}"),
            format!("{key:?}"),
        ] {
            assert!(!text.contains("very-secret"), "{text}");
            assert!(text.contains(REDACTED), "{text}");
        }
    }
}
