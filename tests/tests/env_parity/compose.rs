//! deploy/compose.yaml: the services built from our Dockerfile, and the names their
//! `environment` and `env_file` give them.

use std::{
    collections::BTreeMap,
    path::{Component, Path, PathBuf},
};

use yaml_rust2::Yaml;

use crate::{
    COMPOSE,
    dockerfile::{Image, SYNTHETIC_DOCKERFILE, dockerfile_findings},
    flags::{Accepted, binaries, refused},
    yaml::{parse_yaml, yaml_entries},
};

/// Reads a file of the repository by its path from the repository root.
pub(crate) type Read<'a> = dyn Fn(&Path) -> Result<String, String> + 'a;

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
pub(crate) fn compose_findings(
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

// Negative case: the same functions on a synthetic compose file and Dockerfile.

/// A misspelt name merged from an anchor, a non-global gatewayctl flag in the control-plane
/// image, and a service not built here (not checked).
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

/// A repository of SYNTHETIC_COMPOSE and SYNTHETIC_DOCKERFILE.
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
