//! Compiles the wire contract with protox (pure Rust), so `cargo build` needs no system protoc,
//! and keeps the encoded descriptor set for gRPC server reflection.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "codex_gateway/v1/admin.proto",
    "codex_gateway/v1/discovery.proto",
    "codex_gateway/v1/usage.proto",
];

/// Messages that carry a secret get a hand-written `Debug` that redacts it.
const REDACTED_DEBUG: &[&str] = &[
    ".codex_gateway.v1.SnapshotUpstream",
    ".codex_gateway.v1.CreateUpstreamRequest",
    ".codex_gateway.v1.UpdateUpstreamRequest",
    ".codex_gateway.v1.CreateKeyResponse",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .type_attribute(".codex_gateway.v1", "#[derive(serde::Serialize)]")
        .skip_debug(REDACTED_DEBUG)
        // Enums print by their lowercase names in JSON (what scripts read), not as numbers.
        .field_attribute(
            ".codex_gateway.v1.Upstream.health",
            "#[serde(serialize_with = \"crate::names::serialize::<_, UpstreamHealth>\")]",
        )
        .field_attribute(
            ".codex_gateway.v1.UsageRecord.status",
            "#[serde(serialize_with = \"crate::names::serialize::<_, UsageStatus>\")]",
        )
        .field_attribute(
            ".codex_gateway.v1.UsageEvent.status",
            "#[serde(serialize_with = \"crate::names::serialize::<_, UsageStatus>\")]",
        )
        .field_attribute(
            ".codex_gateway.v1.SummarizeUsageResponse.by",
            "#[serde(serialize_with = \"crate::names::serialize::<_, SummaryBy>\")]",
        )
        .field_attribute(
            ".codex_gateway.v1.SpendLimit.window",
            "#[serde(serialize_with = \"crate::names::serialize::<_, SpendWindow>\")]",
        )
        .field_attribute(
            ".codex_gateway.v1.SpendState.window",
            "#[serde(serialize_with = \"crate::names::serialize::<_, SpendWindow>\")]",
        )
        .compile_fds(fds)?;
    Ok(())
}
