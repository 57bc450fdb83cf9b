//! YAML text → one merged `serde_yaml::Value`, the way Nebula's `config.C` builds its settings:
//! each source parsed on its own (errors name the source, line and column), then merged in order
//! (maps merged key by key, later scalars win, lists appended). Pure: sources arrive as text.

use std::cell::RefCell;

use serde::de::{
    DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use serde_yaml::value::{Tag, TaggedValue};
use serde_yaml::{Mapping, Value};

use super::reader::Warning;
use super::ConfigError;

/// One piece of configuration text and the name used for it in messages (usually a file path).
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: String,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Source {
        Source {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// Parses one source. An empty document is an empty map; a document that is not a map is an error.
/// A key repeated in one map keeps its last value, as yaml.v2 does; each repeat is returned as a
/// warning because the earlier block is silently lost (a classic: two `firewall:` sections).
pub fn parse_source(src: &Source) -> Result<(Value, Vec<Warning>), ConfigError> {
    let dups = RefCell::new(Vec::new());
    let de = serde_yaml::Deserializer::from_str(&src.text);
    let seed = LenientSeed {
        path: String::new(),
        dups: &dups,
    };
    let mut value = seed
        .deserialize(de)
        .map_err(|e| yaml_error(&src.name, &e))?;
    let warnings = dups
        .into_inner()
        .into_iter()
        .map(|key| Warning {
            key,
            message: format!(
                "defined more than once in {}; only the last one is used",
                src.name
            ),
        })
        .collect();
    // yaml.v2 applies `<<` merge keys while decoding; serde_yaml leaves them for us to apply.
    value.apply_merge().map_err(|e| yaml_error(&src.name, &e))?;
    match value {
        Value::Null => Ok((Value::Mapping(Mapping::new()), warnings)),
        Value::Mapping(_) => Ok((value, warnings)),
        Value::Tagged(t) if matches!(t.value, Value::Mapping(_)) => Ok((t.value, warnings)),
        _ => Err(ConfigError::NotAMap {
            source_name: src.name.clone(),
        }),
    }
}

/// Builds a `Value` like serde_yaml's own, except that repeated map keys replace earlier ones
/// (recorded with their dotted path) instead of failing.
struct LenientSeed<'a> {
    path: String,
    dups: &'a RefCell<Vec<String>>,
}

impl<'a> LenientSeed<'a> {
    fn child(&self, path: String) -> LenientSeed<'a> {
        LenientSeed {
            path,
            dups: self.dups,
        }
    }
}

impl<'de> DeserializeSeed<'de> for LenientSeed<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LenientSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) =
            seq.next_element_seed(self.child(format!("{}[{}]", self.path, items.len())))?
        {
            items.push(v);
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut m = Mapping::new();
        while let Some(k) = map.next_key_seed(self.child(self.path.clone()))? {
            let name = super::coerce::go_string(&k).unwrap_or_default();
            let path = if self.path.is_empty() {
                name
            } else {
                format!("{}.{name}", self.path)
            };
            let v = map.next_value_seed(self.child(path.clone()))?;
            if m.insert(k, v).is_some() {
                self.dups.borrow_mut().push(path);
            }
        }
        Ok(Value::Mapping(m))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        // serde_yaml hands non-core tags (`!foo value`) over as enums: keep the tag.
        let (tag, variant): (String, _) = data.variant()?;
        let value = variant.newtype_variant_seed(self.child(self.path.clone()))?;
        Ok(Value::Tagged(Box::new(TaggedValue {
            tag: Tag::new(tag),
            value,
        })))
    }
}

fn yaml_error(name: &str, e: &serde_yaml::Error) -> ConfigError {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    ConfigError::Yaml {
        source_name: name.to_string(),
        line,
        column,
        message: e.to_string(),
    }
}

/// Parses and merges sources in the order given; returns the tree and the duplicate-key warnings.
pub fn merge_sources(sources: &[Source]) -> Result<(Value, Vec<Warning>), ConfigError> {
    let mut merged = Value::Mapping(Mapping::new());
    let mut warnings = Vec::new();
    for src in sources {
        let (value, w) = parse_source(src)?;
        warnings.extend(w);
        merge(&mut merged, value);
    }
    Ok((merged, warnings))
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
        let (v, _) = merge_sources(&[a, b]).unwrap();
        let want: Value =
            serde_yaml::from_str("x: {p: 1, q: 3, r: 4}\nl: [1, 2]\nk: keep").unwrap();
        assert_eq!(v, want);
    }

    #[test]
    fn syntax_errors_name_source_line_column() {
        let err = merge_sources(&[Source::new("/etc/meshd/bad.yml", "a: 1\nb: [1, 2\nc: 3\n")])
            .unwrap_err();
        match err {
            ConfigError::Yaml {
                source_name, line, ..
            } => {
                assert_eq!(source_name, "/etc/meshd/bad.yml");
                assert!(line >= 2, "line {line}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn duplicate_keys_keep_the_last_and_warn() {
        let (v, w) = merge_sources(&[Source::new(
            "d.yml",
            "firewall: {a: 1}\nx: {y: 1, y: 2}\nfirewall: {b: 2}",
        )])
        .unwrap();
        let want: Value = serde_yaml::from_str("firewall: {b: 2}\nx: {y: 2}").unwrap();
        assert_eq!(v, want);
        let keys: Vec<&str> = w.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(keys, ["x.y", "firewall"]);
    }

    #[test]
    fn anchors_merge_keys_and_tags() {
        let (v, _) = merge_sources(&[Source::new(
            "a.yml",
            "base: &b {p: 1}\nuse: {<<: *b, q: 2}\nt: !custom 5",
        )])
        .unwrap();
        let want: Value = serde_yaml::from_str("{p: 1, q: 2}").unwrap();
        assert_eq!(v.get("use"), Some(&want));
        assert!(matches!(v.get("t"), Some(Value::Tagged(_))));
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
