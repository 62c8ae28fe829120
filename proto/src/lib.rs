//! The wire contract of Codex Gateway and the pieces of logic both planes must share exactly:
//! the hash-ring algorithm that interprets the snapshot's ring messages, key digests and the
//! bearer-token helpers used on every gRPC call, and the identifier and money types both planes
//! and the CLI hold.

pub mod auth;
pub mod csv;
pub mod digest;
pub mod ids;
pub mod money;
pub mod names;
mod redact;
pub mod ring;
pub mod spend;

/// Generated protobuf and gRPC types, package `codex_gateway.v1`.
#[allow(
    unreachable_pub,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic,
    rust_2018_idioms
)]
pub mod v1 {
    tonic::include_proto!("codex_gateway.v1");
}

/// Encoded `FileDescriptorSet` of the whole contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

/// Name of the metadata key that mutating admin calls answer with: the config version the
/// change produced.
pub const CONFIG_VERSION_METADATA: &str = "x-config-version";

/// Field of a usage stream entry that holds the protobuf-encoded `UsageEvent`.
pub const USAGE_EVENT_FIELD: &str = "event";

/// Default Redis stream of usage events.
pub const DEFAULT_USAGE_STREAM: &str = "codex-gateway:usage";
