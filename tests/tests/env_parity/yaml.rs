//! YAML documents as compose reads them: the first document, with merge keys applied.

use yaml_rust2::{Yaml, YamlLoader};

pub(crate) fn parse_yaml(path: &str, text: &str) -> Result<Yaml, String> {
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

pub(crate) fn yaml_entries(y: &Yaml) -> Vec<(&str, &Yaml)> {
    match y {
        Yaml::Hash(map) => map
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?, v)))
            .collect(),
        _ => Vec::new(),
    }
}
