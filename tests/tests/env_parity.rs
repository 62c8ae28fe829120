//! Every environment variable a deploy artefact gives one of our images is the `env` twin of a
//! flag of the binary that image runs, as clap itself declares it (`CommandFactory::command()`),
//! so a renamed or removed flag cannot leave a variable behind that the binary silently
//! ignores. The artefacts: `environment` and `env_file` of the compose services built from our
//! Dockerfile, the Dockerfile's `ENV`, and the Helm chart's container `env` (its templates and
//! the `extraEnv` of its values files). An image also takes the global flags of the other tools
//! it ships (gatewayctl in the control-plane image, run with `exec`).
//!
//! Also: the defaults scripts/check-deploy assumes for variables compose leaves unset
//! (scripts/checks/flag_defaults.json) are the binaries' clap defaults.
//!
//! The artefacts are read from the repository as text; the negative cases run the same
//! functions on synthetic inputs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Component, Path, PathBuf},
};

use clap::CommandFactory;
use yaml_rust2::{Yaml, YamlLoader};

/// Variables a binary reads that are no clap flag, valid for every tool in an image: the
/// tracing filter (`tracing_subscriber::EnvFilter::try_from_default_env`, called by
/// `gateway_telemetry::init` in both planes and by `gatewayctl standalone`).
const NON_FLAG_ENV: &[&str] = &["RUST_LOG"];

/// The chart's templates that set container `env`, with the values key holding their
/// `extraEnv` and the Dockerfile target of the image they run. A template with `env:` that is
/// not listed fails the test, so a new workload cannot go unchecked.
const CHART_WORKLOADS: &[(&str, &str, &str)] = &[
    (
        "control-plane-deployment.yaml",
        "controlPlane",
        "control-plane",
    ),
    ("data-plane-deployment.yaml", "dataPlane", "data-plane"),
    ("migration-job.yaml", "migration", "control-plane"),
];

const COMPOSE: &str = "deploy/compose.yaml";
const CHART: &str = "helm/codex-gateway";
const FLAG_DEFAULTS: &str = "scripts/checks/flag_defaults.json";

// ------------------------------------------------------------------------------ the binaries

/// What one binary takes from its environment, by clap.
#[derive(Debug, Default)]
struct Accepted {
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
fn binaries() -> BTreeMap<String, Accepted> {
    [
        control_plane::config::Config::command(),
        data_plane::config::Config::command(),
        gatewayctl::Cli::command(),
    ]
    .iter()
    .map(|command| (command.get_name().to_owned(), accepted(command)))
    .collect()
}

// ------------------------------------------------------------------------------ images

/// A runtime stage of a Dockerfile: the binary it runs, all it ships, and its `ENV`.
#[derive(Debug, Clone)]
struct Image {
    entrypoint: String,
    bins: Vec<String>,
    env: Vec<String>,
}

/// Stages in order (the last is compose's default target); `entrypoint` empty for a stage
/// without one (the builder).
fn dockerfile_images(text: &str) -> Vec<(String, Image)> {
    let joined = text.replace("\\\n", " ");
    let mut stages: Vec<(String, Image)> = Vec::new();
    for line in joined.lines().map(str::trim) {
        let (instruction, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let words: Vec<&str> = rest.split_whitespace().collect();
        match instruction.to_ascii_uppercase().as_str() {
            "FROM" => {
                let name = match words.iter().position(|w| w.eq_ignore_ascii_case("as")) {
                    Some(i) => words.get(i + 1).copied().unwrap_or_default().to_owned(),
                    None => format!("#{}", stages.len()),
                };
                let image = Image {
                    entrypoint: String::new(),
                    bins: Vec::new(),
                    env: Vec::new(),
                };
                stages.push((name, image));
            }
            "COPY" if rest.contains("--from=") => {
                if let Some((_, stage)) = stages.last_mut() {
                    stage.bins.extend(
                        words
                            .iter()
                            .filter_map(|w| w.strip_prefix("/out/bin/"))
                            .map(String::from),
                    );
                }
            }
            "ENV" => {
                if let Some((_, stage)) = stages.last_mut() {
                    stage.env.extend(env_instruction_names(rest));
                }
            }
            "ENTRYPOINT" => {
                if let Some((_, stage)) = stages.last_mut() {
                    let mut words = rest.trim_start_matches(['[', ' ']).split([',', ' ', ']']);
                    let program = words.next().unwrap_or_default().trim_matches('"');
                    stage.entrypoint = program.rsplit('/').next().unwrap_or_default().to_owned();
                }
            }
            _ => {}
        }
    }
    stages
}

/// Names set by an `ENV` instruction: `K=V K2="V 2"`, or the legacy `K V`.
fn env_instruction_names(args: &str) -> Vec<String> {
    let args = args.trim();
    let first = args.split_whitespace().next().unwrap_or_default();
    if !first.contains('=') {
        return vec![first.to_owned()];
    }
    let (mut names, mut in_quotes, mut token) = (Vec::new(), false, String::new());
    for c in args.chars().chain([' ']) {
        match c {
            '"' => in_quotes = !in_quotes,
            c if c.is_whitespace() && !in_quotes => {
                if let Some((name, _)) = token.split_once('=') {
                    names.push(name.to_owned());
                }
                token.clear();
                continue;
            }
            _ => {}
        }
        token.push(c);
    }
    names
}

/// The names `image` gives its binaries that none accepts: neither a flag (or [`NON_FLAG_ENV`])
/// of its entrypoint nor a global flag of another binary it ships.
fn refused<'a>(
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

/// Checks each runtime stage's own `ENV`. Returns the stages by target.
fn dockerfile_findings(
    path: &str,
    text: &str,
    binaries: &BTreeMap<String, Accepted>,
    findings: &mut Vec<String>,
) -> Vec<(String, Image)> {
    let stages = dockerfile_images(text);
    for (target, image) in stages
        .iter()
        .filter(|(_, image)| !image.entrypoint.is_empty())
    {
        match refused(image, image.env.iter().map(String::as_str), binaries) {
            Ok(bad) => {
                findings.extend(bad.into_iter().map(|b| format!("{path} {target}: ENV {b}")))
            }
            Err(e) => findings.push(format!("{path} {target}: {e}")),
        }
    }
    stages
}

// ------------------------------------------------------------------------------ YAML

fn parse_yaml(path: &str, text: &str) -> Result<Yaml, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("{path}: {e}"))?;
    Ok(docs
        .into_iter()
        .next()
        .map(|doc| merged(&doc))
        .unwrap_or(Yaml::Null))
}

/// `doc` with YAML merge keys (`<<: *anchor`, `<<: [*a, *b]`) applied, as compose applies
/// them: keys written in the mapping win over merged ones, earlier merged ones over later.
fn merged(doc: &Yaml) -> Yaml {
    match doc {
        Yaml::Array(items) => Yaml::Array(items.iter().map(merged).collect()),
        Yaml::Hash(map) => {
            let mut out = yaml_rust2::yaml::Hash::new();
            for (key, value) in map {
                if key.as_str() != Some("<<") {
                    out.insert(key.clone(), merged(value));
                }
            }
            let sources = map.get(&Yaml::String("<<".to_owned()));
            let sources = match sources {
                Some(Yaml::Array(list)) => list.clone(),
                Some(single) => vec![single.clone()],
                None => Vec::new(),
            };
            for source in sources {
                if let Yaml::Hash(source) = merged(&source) {
                    for (key, value) in source {
                        if !out.contains_key(&key) {
                            out.insert(key, value);
                        }
                    }
                }
            }
            Yaml::Hash(out)
        }
        other => other.clone(),
    }
}

fn yaml_entries(y: &Yaml) -> Vec<(&str, &Yaml)> {
    match y {
        Yaml::Hash(map) => map
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?, v)))
            .collect(),
        _ => Vec::new(),
    }
}

// ------------------------------------------------------------------------------ compose

/// Reads a file of the repository by its path from the repository root.
type Read<'a> = dyn Fn(&Path) -> Result<String, String> + 'a;

/// Lexically resolves `.` and `..` (the paths compose builds from context and dockerfile).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Variable names of a compose `environment` (mapping, or `KEY=VALUE` / `KEY` list).
fn compose_env_names(env: &Yaml) -> Vec<String> {
    match env {
        Yaml::Array(items) => items
            .iter()
            .filter_map(Yaml::as_str)
            .map(|item| item.split('=').next().unwrap_or_default().to_owned())
            .collect(),
        _ => yaml_entries(env)
            .into_iter()
            .map(|(k, _)| k.to_owned())
            .collect(),
    }
}

/// Variable names of a .env file (`KEY=VALUE` lines, `export ` allowed, `#` comments).
fn env_file_names(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.trim_start_matches("export ").split_once('='))
        .map(|(name, _)| name.trim().to_owned())
        .collect()
}

/// The services of `compose_path` built from a Dockerfile: what their Dockerfile's stages set
/// and what compose gives them.
fn compose_findings(
    compose_path: &str,
    read: &Read<'_>,
    binaries: &BTreeMap<String, Accepted>,
    findings: &mut Vec<String>,
) -> Result<usize, String> {
    let doc = parse_yaml(compose_path, &read(Path::new(compose_path))?)?;
    let dir = Path::new(compose_path).parent().unwrap_or(Path::new(""));
    let mut checked = 0;
    let mut dockerfiles: BTreeMap<PathBuf, Vec<(String, Image)>> = BTreeMap::new();
    for (service, spec) in yaml_entries(&doc["services"]) {
        let build = &spec["build"];
        let (context, dockerfile, target) = match build {
            Yaml::BadValue | Yaml::Null => continue,
            Yaml::String(context) => (context.as_str(), "Dockerfile", None),
            _ => (
                build["context"].as_str().unwrap_or("."),
                build["dockerfile"].as_str().unwrap_or("Dockerfile"),
                build["target"].as_str(),
            ),
        };
        let path = normalize(&dir.join(context).join(dockerfile));
        if !dockerfiles.contains_key(&path) {
            let text = read(&path)?;
            let stages = dockerfile_findings(&path.to_string_lossy(), &text, binaries, findings);
            dockerfiles.insert(path.clone(), stages);
        }
        let stages = &dockerfiles[&path];
        let stage = match target {
            Some(t) => stages.iter().find(|(name, _)| name == t),
            None => stages.last(),
        };
        let Some((_, image)) = stage else {
            findings.push(format!(
                "{compose_path} {service}: no target {target:?} in {path:?}"
            ));
            continue;
        };
        let mut names = compose_env_names(&spec["environment"]);
        let env_files = match &spec["env_file"] {
            Yaml::Array(list) => list.clone(),
            Yaml::BadValue | Yaml::Null => Vec::new(),
            single => vec![single.clone()],
        };
        for env_file in env_files {
            let file = env_file
                .as_str()
                .or(env_file["path"].as_str())
                .unwrap_or_default();
            // A missing env_file is check-deploy's finding; here it adds no names.
            if let Ok(text) = read(&normalize(&dir.join(file))) {
                names.extend(env_file_names(&text));
            }
        }
        match refused(image, names.iter().map(String::as_str), binaries) {
            Ok(bad) => findings.extend(
                bad.into_iter()
                    .map(|b| format!("{compose_path} {service}: {b}")),
            ),
            Err(e) => findings.push(format!("{compose_path} {service}: {e}")),
        }
        checked += 1;
    }
    Ok(checked)
}

// ------------------------------------------------------------------------------ chart

/// Removes `{{/* ... */}}` and `{{- /* ... */ -}}` template comments (they quote example
/// calls with names in them).
fn strip_template_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let inner = rest[open + 2..].trim_start_matches('-').trim_start();
        let comment_end = inner
            .strip_prefix("/*")
            .and_then(|body| body.find("*/").map(|end| &body[end + 2..]))
            .and_then(|after| after.find("}}").map(|end| &after[end + 2..]));
        match comment_end {
            Some(after) => {
                out.push_str(&rest[..open]);
                rest = after;
            }
            None => {
                out.push_str(&rest[..open + 2]);
                rest = &rest[open + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// An env name as the chart writes it. Kubernetes names of containers, ports, volumes and
/// Secrets are DNS labels (lowercase, digits, `-`), so a `name` with an uppercase letter or
/// `_` can only be an env var's.
fn env_like(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.chars().any(|c| c.is_ascii_uppercase() || c == '_')
}

/// Literal env names in template text: `- name: NAME` list items, and `"name" "NAME"` given
/// to a helper (`codex-gateway.secretEnv`).
fn template_env_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(value) = line.trim().strip_prefix("- name:") {
            let value = value.trim().trim_matches(['"', '\'']);
            if env_like(value) {
                names.insert(value.to_owned());
            }
        }
        let mut rest = line;
        while let Some(i) = rest.find("\"name\" \"") {
            rest = &rest[i + 8..];
            if let Some(end) = rest.find('"')
                && env_like(&rest[..end])
            {
                names.insert(rest[..end].to_owned());
            }
        }
    }
    names
}

/// Names of the templates `{{ include "NAME" ... }}` (and `template`) calls.
fn included(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for keyword in ["include \"", "template \""] {
        let mut rest = text;
        while let Some(i) = rest.find(keyword) {
            rest = &rest[i + keyword.len()..];
            if let Some(end) = rest.find('"') {
                out.insert(rest[..end].to_owned());
            }
        }
    }
    out
}

/// `{{ define "NAME" }}` bodies of all templates: the text up to the next define (defines do
/// not nest).
fn defines(templates: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for text in templates.values() {
        for part in text.split("define \"").skip(1) {
            if let Some((name, body)) = part.split_once('"') {
                out.insert(name.to_owned(), body.to_owned());
            }
        }
    }
    out
}

/// Env names a template sets, with those of the defines it includes (transitively).
fn workload_env_names(text: &str, defines: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut names = template_env_names(text);
    let mut seen = BTreeSet::new();
    let mut queue: Vec<String> = included(text).into_iter().collect();
    while let Some(name) = queue.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(body) = defines.get(&name) {
            names.extend(template_env_names(body));
            queue.extend(included(body));
        }
    }
    names
}

/// `KEY.extraEnv[*].name` of a values file.
fn extra_env_names(values: &Yaml, key: &str) -> Vec<String> {
    match &values[key]["extraEnv"] {
        Yaml::Array(list) => list
            .iter()
            .filter_map(|e| e["name"].as_str())
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    }
}

/// Templates (by file name, comments stripped) and values files (by path) of a chart.
#[derive(Debug)]
struct Chart {
    templates: BTreeMap<String, String>,
    values: Vec<(String, String)>,
}

fn chart_findings(
    chart: &Chart,
    stages: &[(String, Image)],
    binaries: &BTreeMap<String, Accepted>,
    findings: &mut Vec<String>,
) -> Result<usize, String> {
    let defines = defines(&chart.templates);
    let values = chart
        .values
        .iter()
        .map(|(path, text)| Ok((path.as_str(), parse_yaml(path, text)?)))
        .collect::<Result<Vec<_>, String>>()?;
    for (file, text) in &chart.templates {
        let listed = CHART_WORKLOADS.iter().any(|(f, _, _)| f == file);
        if text.lines().any(|l| l.trim() == "env:") && !listed {
            findings.push(format!(
                "{CHART}/templates/{file} sets env: add it to CHART_WORKLOADS"
            ));
        }
    }
    let mut checked = 0;
    for (file, key, target) in CHART_WORKLOADS {
        let Some(text) = chart.templates.get(*file) else {
            findings.push(format!(
                "{CHART}/templates/{file} (CHART_WORKLOADS) is missing"
            ));
            continue;
        };
        let Some((_, image)) = stages.iter().find(|(name, _)| name == target) else {
            findings.push(format!("{file}: no Dockerfile target {target}"));
            continue;
        };
        let mut sources: Vec<(String, Vec<String>)> = vec![(
            format!("templates/{file}"),
            workload_env_names(text, &defines).into_iter().collect(),
        )];
        for (path, doc) in &values {
            sources.push((format!("{path} {key}.extraEnv"), extra_env_names(doc, key)));
        }
        for (source, names) in sources {
            match refused(image, names.iter().map(String::as_str), binaries) {
                Ok(bad) => {
                    findings.extend(bad.into_iter().map(|b| format!("{CHART}/{source}: {b}")))
                }
                Err(e) => findings.push(format!("{CHART}/{source}: {e}")),
            }
        }
        checked += 1;
    }
    Ok(checked)
}

// ------------------------------------------------------------------------------ defaults

/// Entries of flag_defaults.json (binary → env name → default) that are not clap's default.
fn defaults_findings(json: &str, binaries: &BTreeMap<String, Accepted>) -> Vec<String> {
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

// ------------------------------------------------------------------------------ the tests

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read_repo(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(repo_root().join(path)).map_err(|e| format!("{}: {e}", path.display()))
}

fn repo_chart() -> Chart {
    let dir = repo_root().join(CHART);
    let mut templates = BTreeMap::new();
    for entry in std::fs::read_dir(dir.join("templates")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".yaml") || name.ends_with(".tpl") {
            templates.insert(
                name,
                strip_template_comments(&std::fs::read_to_string(&path).unwrap()),
            );
        }
    }
    let mut values = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("values") && name.ends_with(".yaml") {
            values.push((name, std::fs::read_to_string(&path).unwrap()));
        }
    }
    values.sort();
    Chart { templates, values }
}

#[test]
fn deploy_artefacts_give_our_images_only_their_flags_env_twins() {
    let binaries = binaries();
    let mut findings = Vec::new();
    let services = compose_findings(COMPOSE, &read_repo, &binaries, &mut findings).unwrap();
    let dockerfile = read_repo(Path::new("deploy/Dockerfile")).unwrap();
    let stages = dockerfile_images(&dockerfile);
    let chart = repo_chart();
    let workloads = chart_findings(&chart, &stages, &binaries, &mut findings).unwrap();
    assert!(
        findings.is_empty(),
        "env vars no flag takes:\n  {}",
        findings.join("\n  ")
    );
    // Guards against a parser that silently finds nothing.
    assert!(
        services >= 3,
        "only {services} compose services built from our Dockerfile"
    );
    assert_eq!(workloads, CHART_WORKLOADS.len());
    let data_plane = &stages.iter().find(|(t, _)| t == "data-plane").unwrap().1;
    assert!(
        data_plane.env.contains(&"SPOOL_PATH".to_owned()),
        "{data_plane:?}"
    );
    // The chart scan follows includes: a literal item, a helper's argument, a define, and a
    // define inside a define.
    let defines = defines(&chart.templates);
    let dp = workload_env_names(&chart.templates["data-plane-deployment.yaml"], &defines);
    for name in ["NODE_ID", "DATA_PLANE_TOKEN", "LOG_FORMAT"] {
        assert!(
            dp.contains(name),
            "{name} not found in the data-plane Deployment: {dp:?}"
        );
    }
    let job = workload_env_names(&chart.templates["migration-job.yaml"], &defines);
    assert!(
        job.contains("DATABASE_URL") && job.contains("LOG_FORMAT"),
        "{job:?}"
    );
}

#[test]
fn check_deploy_assumes_the_binaries_clap_defaults() {
    let json = read_repo(Path::new(FLAG_DEFAULTS)).unwrap();
    let findings = defaults_findings(&json, &binaries());
    assert!(findings.is_empty(), "{}", findings.join("\n"));
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
    let ctl = &binaries["gatewayctl"];
    assert!(ctl.global.contains("GATEWAY_ADMIN_TOKEN"));
    assert!(
        ctl.env.contains_key("GATEWAY_DATA_DIR"),
        "subcommand flags count"
    );
    assert!(!ctl.global.contains("GATEWAY_DATA_DIR"));
}

// Negative cases: the same functions on synthetic artefacts.

const SYNTHETIC_DOCKERFILE: &str = r#"
FROM rust AS builder
RUN cargo build --release
FROM distroless AS control-plane
COPY --from=builder /out/bin/control-plane /out/bin/gatewayctl /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/control-plane"]
FROM distroless AS data-plane
COPY --from=builder /out/bin/data-plane /usr/local/bin/data-plane
ENV SPOOL_PATH=/var/lib/x/usage.spool \
    SPOOL_PATHS="/a b"
ENTRYPOINT ["/usr/local/bin/data-plane"]
"#;

const SYNTHETIC_COMPOSE: &str = r#"
x-env: &env
  LISTEN_ADDR: 0.0.0.0:1
  LISTEN_ADRR: 0.0.0.0:2
services:
  dp:
    build: {context: .., dockerfile: deploy/Dockerfile, target: data-plane}
    environment:
      <<: *env
      RUST_LOG: info
  cp:
    build: {context: .., dockerfile: deploy/Dockerfile, target: control-plane}
    environment: [GRPC_ADDR=0.0.0.0:1, GATEWAY_ENDPOINT=http://x, GATEWAY_DATA_DIR=/d]
  redis:
    image: redis
    environment: {NOT_OURS: x}
"#;

fn synthetic_read(path: &Path) -> Result<String, String> {
    match path.to_str() {
        Some("deploy/compose.yaml") => Ok(SYNTHETIC_COMPOSE.to_owned()),
        Some("deploy/Dockerfile") => Ok(SYNTHETIC_DOCKERFILE.to_owned()),
        _ => Err(format!("{path:?} not in the synthetic repository")),
    }
}

#[test]
fn compose_and_dockerfile_names_no_flag_has_are_refused() {
    let mut findings = Vec::new();
    let checked = compose_findings(COMPOSE, &synthetic_read, &binaries(), &mut findings).unwrap();
    assert_eq!(checked, 2, "only services built from our Dockerfile");
    assert_eq!(
        findings,
        [
            "deploy/Dockerfile data-plane: ENV SPOOL_PATHS is not a flag twin of data-plane",
            // Merged from an anchor; the explicit RUST_LOG and LISTEN_ADDR pass.
            "deploy/compose.yaml dp: LISTEN_ADRR is not a flag twin of data-plane",
            // gatewayctl's global flags pass in the control-plane image, its others do not.
            "deploy/compose.yaml cp: GATEWAY_DATA_DIR is not a flag twin of control-plane \
             nor a global one of gatewayctl",
        ]
    );
}

#[test]
fn chart_names_no_flag_has_are_refused() {
    let helpers = strip_template_comments(
        r#"{{/* call with (dict "ctx" $ "name" "IN_A_COMMENT") */}}
{{- define "t.secretEnv" -}}
- name: {{ .name }}
{{- end }}
{{- define "t.env" -}}
{{ include "t.secretEnv" (dict "ctx" . "name" "DATA_PLANE_TOKEN") }}
{{ include "t.secretEnv" (dict "ctx" . "name" "DATA_PLANE_TOKN") }}
- name: LOG_FORMAT
{{- end }}
{{- define "t.unused" -}}
- name: NEVER_INCLUDED
{{- end }}"#,
    );
    let deployment = r#"
      containers:
        - name: data-plane
          env:
            - name: NODE_ID
            - name: "NODE_IDS"
            {{- include "t.env" . | nindent 12 }}
          volumeMounts:
            - name: state
"#;
    let chart = Chart {
        templates: [
            ("_helpers.tpl", helpers),
            ("data-plane-deployment.yaml", deployment.to_owned()),
            (
                "control-plane-deployment.yaml",
                "env:\n  - name: GRPC_ADDR\n".to_owned(),
            ),
            (
                "migration-job.yaml",
                "env:\n  - name: MIGRATE_ONLY\n".to_owned(),
            ),
            ("worker.yaml", "env:\n  - name: X\n".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
        values: vec![(
            "values.yaml".to_owned(),
            "dataPlane:\n  extraEnv:\n    - name: MAX_BODY_BYTES\n    - name: MAX_BODY\n"
                .to_owned(),
        )],
    };
    let stages = dockerfile_images(SYNTHETIC_DOCKERFILE);
    let mut findings = Vec::new();
    chart_findings(&chart, &stages, &binaries(), &mut findings).unwrap();
    assert_eq!(
        findings,
        [
            "helm/codex-gateway/templates/worker.yaml sets env: add it to CHART_WORKLOADS",
            "helm/codex-gateway/templates/data-plane-deployment.yaml: DATA_PLANE_TOKN is not a \
             flag twin of data-plane",
            "helm/codex-gateway/templates/data-plane-deployment.yaml: NODE_IDS is not a flag \
             twin of data-plane",
            "helm/codex-gateway/values.yaml dataPlane.extraEnv: MAX_BODY is not a flag twin of \
             data-plane",
        ]
    );
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
