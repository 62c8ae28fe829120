//! What each binary takes from its environment, by clap: env twins with their defaults, and
//! which are global. And which names an image's binaries refuse.

use std::collections::{BTreeMap, BTreeSet};

use clap::CommandFactory;

use crate::{FLAG_DEFAULTS, dockerfile::Image};

/// Variables a binary reads that are no clap flag, valid for every tool in an image: the
/// tracing filter (`tracing_subscriber::EnvFilter::try_from_default_env`, called by
/// `gateway_telemetry::init` in both planes and by `gatewayctl standalone`).
const NON_FLAG_ENV: &[&str] = &["RUST_LOG"];

/// What one binary takes from its environment, by clap.
#[derive(Debug, Default)]
pub(crate) struct Accepted {
    /// Every env twin of the command tree (subcommands too), with its default.
    env: BTreeMap<String, Option<String>>,
    /// The env twins of `global = true` flags: they apply to every subcommand.
    global: BTreeSet<String>,
}

fn accepted(command: &clap::Command) -> Accepted {
    let mut out = Accepted::default();
    collect(command, &mut out);
    for name in NON_FLAG_ENV {
        out.env.insert((*name).to_owned(), None);
        out.global.insert((*name).to_owned());
    }
    out
}

fn collect(command: &clap::Command, out: &mut Accepted) {
    for arg in command.get_arguments() {
        let Some(env) = arg.get_env() else { continue };
        let name = env.to_string_lossy().into_owned();
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        out.env.insert(
            name.clone(),
            (!defaults.is_empty()).then(|| defaults.join(",")),
        );
        if arg.is_global_set() {
            out.global.insert(name);
        }
    }
    for sub in command.get_subcommands() {
        collect(sub, out);
    }
}

/// The binaries our images can ship, by the name the Dockerfile copies them under.
pub(crate) fn binaries() -> BTreeMap<String, Accepted> {
    [
        control_plane::config::Config::command(),
        data_plane::config::Config::command(),
        gatewayctl::Cli::command(),
    ]
    .iter()
    .map(|command| (command.get_name().to_owned(), accepted(command)))
    .collect()
}

/// The names `image` gives its binaries that none accepts: neither a flag (or [`NON_FLAG_ENV`])
/// of its entrypoint nor a global flag of another binary it ships.
pub(crate) fn refused<'a>(
    image: &Image,
    names: impl IntoIterator<Item = &'a str>,
    binaries: &BTreeMap<String, Accepted>,
) -> Result<Vec<String>, String> {
    if !image.bins.contains(&image.entrypoint) {
        return Err(format!(
            "entrypoint {:?} is not a binary the image ships",
            image.entrypoint
        ));
    }
    let mut ok = BTreeSet::new();
    for bin in &image.bins {
        let accepted = binaries
            .get(bin)
            .ok_or_else(|| format!("binary {bin} has no clap command in env_parity.rs"))?;
        if *bin == image.entrypoint {
            ok.extend(accepted.env.keys().cloned());
        } else {
            ok.extend(accepted.global.iter().cloned());
        }
    }
    let others: Vec<&str> = image
        .bins
        .iter()
        .filter(|b| **b != image.entrypoint)
        .map(String::as_str)
        .collect();
    Ok(names
        .into_iter()
        .filter(|name| !ok.contains(*name))
        .map(|name| {
            let also = if others.is_empty() {
                String::new()
            } else {
                format!(" nor a global one of {}", others.join(", "))
            };
            format!("{name} is not a flag twin of {}{also}", image.entrypoint)
        })
        .collect())
}

/// Entries of flag_defaults.json (binary → env name → default) that are not clap's default.
pub(crate) fn defaults_findings(json: &str, binaries: &BTreeMap<String, Accepted>) -> Vec<String> {
    let doc: serde_json::Value = match serde_json::from_str(json) {
        Ok(doc) => doc,
        Err(e) => return vec![format!("{FLAG_DEFAULTS}: {e}")],
    };
    let mut findings = Vec::new();
    for (bin, defaults) in doc.as_object().into_iter().flatten() {
        if bin.starts_with("//") {
            continue;
        }
        let Some(accepted) = binaries.get(bin) else {
            findings.push(format!("{FLAG_DEFAULTS}: {bin} is not one of our binaries"));
            continue;
        };
        for (name, value) in defaults.as_object().into_iter().flatten() {
            let clap_default = match accepted.env.get(name) {
                None => "none: no flag has that env twin".to_owned(),
                Some(None) => "none".to_owned(),
                Some(Some(d)) if Some(d.as_str()) == value.as_str() => continue,
                Some(Some(d)) => format!("{d:?}"),
            };
            findings.push(format!(
                "{FLAG_DEFAULTS}: {bin} {name} = {value}, but clap's default is {clap_default}"
            ));
        }
    }
    findings
}

#[test]
fn clap_reports_env_twins_defaults_and_globals() {
    let binaries = binaries();
    let dp = &binaries["data-plane"];
    assert_eq!(dp.env["MAX_BODY_BYTES"].as_deref(), Some("33554432"));
    assert_eq!(
        dp.env["LOG_FORMAT"].as_deref(),
        Some("json"),
        "flattened TelemetryArgs"
    );
    assert_eq!(dp.env["SNAPSHOT_PATH"], None);
    assert_eq!(
        dp.env["STATE_DIR"], None,
        "a default computed at start, not clap's"
    );
    let ctl = &binaries["gatewayctl"];
    assert!(ctl.global.contains("GATEWAY_ADMIN_TOKEN"));
    assert!(
        ctl.env.contains_key("GATEWAY_DATA_DIR"),
        "subcommand flags count"
    );
    assert!(!ctl.global.contains("GATEWAY_DATA_DIR"));
}

#[test]
fn a_default_that_is_not_claps_is_refused() {
    let json = r#"{"//": "x", "data-plane": {"LISTEN_ADDR": "0.0.0.0:12321", "NODE_ID": "dp",
        "NO_SUCH_FLAG": "1"}, "nope": {}}"#;
    assert_eq!(
        defaults_findings(json, &binaries()),
        [
            "scripts/checks/flag_defaults.json: data-plane NODE_ID = \"dp\", but clap's default is \
             \"data-plane\"",
            "scripts/checks/flag_defaults.json: data-plane NO_SUCH_FLAG = \"1\", but clap's \
             default is none: no flag has that env twin",
            "scripts/checks/flag_defaults.json: nope is not one of our binaries",
        ]
    );
}
