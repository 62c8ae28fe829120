//! The Helm chart's container env: literal names in its templates (following `include`s into
//! defines) and the `extraEnv` of its values files, per workload.

use std::collections::{BTreeMap, BTreeSet};

use yaml_rust2::Yaml;

use crate::{
    CHART,
    dockerfile::{Image, SYNTHETIC_DOCKERFILE, dockerfile_images},
    flags::{Accepted, binaries, refused},
    yaml::parse_yaml,
};

/// The chart's templates that set container `env`, with the values key holding their
/// `extraEnv` and the Dockerfile target of the image they run. A template with `env:` that is
/// not listed fails the test, so a new workload cannot go unchecked.
pub(crate) const CHART_WORKLOADS: &[(&str, &str, &str)] = &[
    (
        "control-plane-deployment.yaml",
        "controlPlane",
        "control-plane",
    ),
    ("data-plane-deployment.yaml", "dataPlane", "data-plane"),
    ("migration-job.yaml", "migration", "control-plane"),
];

/// Removes `{{/* ... */}}` and `{{- /* ... */ -}}` template comments (they quote example
/// calls with names in them).
pub(crate) fn strip_template_comments(text: &str) -> String {
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
pub(crate) fn defines(templates: &BTreeMap<String, String>) -> BTreeMap<String, String> {
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
pub(crate) fn workload_env_names(
    text: &str,
    defines: &BTreeMap<String, String>,
) -> BTreeSet<String> {
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
pub(crate) struct Chart {
    pub(crate) templates: BTreeMap<String, String>,
    pub(crate) values: Vec<(String, String)>,
}

pub(crate) fn chart_findings(
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

// Negative case: the same functions on a synthetic chart.

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
