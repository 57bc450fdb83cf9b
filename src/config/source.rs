//! YAML text → one merged `serde_yaml::Value`, the way Nebula's `config.C` builds its settings:
//! each source parsed on its own (errors name the source, line and column), then merged in order
//! (maps merged key by key, later scalars win, lists appended). Pure: sources arrive as text.

use serde_yaml::{Mapping, Value};

use super::ConfigError;

/// One piece of configuration text and the name used for it in messages (usually a file path).
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: String,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Source {
        Source { name: name.into(), text: text.into() }
    }
}

/// Parses one source. An empty document is an empty map; a document that is not a map is an error.
pub fn parse_source(src: &Source) -> Result<Value, ConfigError> {
    let mut value: Value = serde_yaml::from_str(&src.text).map_err(|e| yaml_error(&src.name, &e))?;
    // yaml.v2 applies `<<` merge keys while decoding; serde_yaml leaves them for us to apply.
    value.apply_merge().map_err(|e| yaml_error(&src.name, &e))?;
    match value {
        Value::Null => Ok(Value::Mapping(Mapping::new())),
        Value::Mapping(_) => Ok(value),
        Value::Tagged(t) if matches!(t.value, Value::Mapping(_)) => Ok(t.value),
        _ => Err(ConfigError::NotAMap { source_name: src.name.clone() }),
    }
}

fn yaml_error(name: &str, e: &serde_yaml::Error) -> ConfigError {
    let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
    ConfigError::Yaml { source_name: name.to_string(), line, column, message: e.to_string() }
}

/// Parses and merges sources in the order given.
pub fn merge_sources(sources: &[Source]) -> Result<Value, ConfigError> {
    let mut merged = Value::Mapping(Mapping::new());
    for src in sources {
        let value = parse_source(src)?;
        merge(&mut merged, value);
    }
    Ok(merged)
}

/// Merges `later` into `acc`: maps recursively, lists appended (earlier items first), scalars
/// replaced; a `null` in a later file does not erase an earlier value (mergo keeps non-empty).
pub fn merge(acc: &mut Value, later: Value) {
    match (acc, later) {
        (_, Value::Null) => {}
        (Value::Mapping(a), Value::Mapping(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (Value::Sequence(a), Value::Sequence(b)) => a.extend(b),
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_maps_appends_lists_later_scalars_win() {
        let a = Source::new("a.yml", "x: {p: 1, q: 2}\nl: [1]\nk: keep");
        let b = Source::new("b.yml", "x: {q: 3, r: 4}\nl: [2]\nk:");
        let v = merge_sources(&[a, b]).unwrap();
        let want: Value = serde_yaml::from_str("x: {p: 1, q: 3, r: 4}\nl: [1, 2]\nk: keep").unwrap();
        assert_eq!(v, want);
    }

    #[test]
    fn syntax_errors_name_source_line_column() {
        let err = merge_sources(&[Source::new("/etc/meshd/bad.yml", "a: 1\nb: [1, 2\nc: 3\n")]).unwrap_err();
        match err {
            ConfigError::Yaml { source_name, line, .. } => {
                assert_eq!(source_name, "/etc/meshd/bad.yml");
                assert!(line >= 2, "line {line}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn top_level_must_be_a_map() {
        assert!(matches!(
            merge_sources(&[Source::new("l.yml", "- 1\n- 2")]),
            Err(ConfigError::NotAMap { .. })
        ));
        assert!(merge_sources(&[Source::new("e.yml", "")]).is_ok());
    }
}
