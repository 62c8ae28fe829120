//! A Dockerfile's stages as far as env parity cares: which binaries a runtime stage ships,
//! which it runs, and what its `ENV` sets.

use std::collections::BTreeMap;

use crate::flags::{Accepted, refused};

/// A runtime stage of a Dockerfile: the binary it runs, all it ships, and its `ENV`.
#[derive(Debug, Clone)]
pub(crate) struct Image {
    pub(crate) entrypoint: String,
    pub(crate) bins: Vec<String>,
    pub(crate) env: Vec<String>,
}

/// Stages in order (the last is compose's default target); `entrypoint` empty for a stage
/// without one (the builder).
pub(crate) fn dockerfile_images(text: &str) -> Vec<(String, Image)> {
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

/// Checks each runtime stage's own `ENV`. Returns the stages by target.
pub(crate) fn dockerfile_findings(
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

/// For the negative cases: a builder, and a control-plane image that also ships gatewayctl.
/// `SPOOL_PATHS` is no flag.
pub(crate) const SYNTHETIC_DOCKERFILE: &str = r#"
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
