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
//! functions on synthetic inputs (in the module each exercises).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod chart;
mod compose;
mod dockerfile;
mod flags;
mod yaml;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use crate::{
    chart::{
        CHART_WORKLOADS, Chart, chart_findings, defines, strip_template_comments,
        workload_env_names,
    },
    compose::compose_findings,
    dockerfile::dockerfile_images,
    flags::{binaries, defaults_findings},
};

pub(crate) const COMPOSE: &str = "deploy/compose.yaml";
pub(crate) const CHART: &str = "helm/codex-gateway";
pub(crate) const FLAG_DEFAULTS: &str = "scripts/checks/flag_defaults.json";

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
        data_plane.env.contains(&"STATE_DIR".to_owned()),
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
