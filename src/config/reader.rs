//! Reads typed values out of the merged YAML tree by dotted key, the way Nebula's `c.Get*` helpers
//! do, while recording every key asked for. That record is the schema: after loading, any key in
//! the tree that nobody asked for is reported as unknown (with a likely-typo suggestion). Owns
//! fallback warnings and per-key problems; knows nothing about what the keys mean.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use super::coerce::{
    format_go_duration, go_string, parse_go_bool, parse_go_duration, parse_go_int,
};

/// Something worth telling the operator that does not stop start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Dotted path of the key concerned (`lighthouse.interval`, `tun.routes[0].mtu`).
    pub key: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Something that stops start-up, naming the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Walks one merged YAML tree; collects warnings, problems and the set of known keys.
pub struct Reader<'a> {
    root: &'a Value,
    /// Normalised paths (`tun.routes[].mtu`) of every key the loader looked for.
    known: BTreeSet<String>,
    /// The subset of `known` asked for by name (not only as the parent of a longer key).
    asked: BTreeSet<String>,
    /// Normalised paths whose contents are free-form (map keys are data, e.g. CIDRs) or checked
    /// by someone else (firewall rules).
    opaque: BTreeSet<String>,
    warned_shape: BTreeSet<String>,
    pub warnings: Vec<Warning>,
    pub problems: Vec<Problem>,
}

impl<'a> Reader<'a> {
    pub fn new(root: &'a Value) -> Reader<'a> {
        Reader {
            root,
            known: BTreeSet::new(),
            asked: BTreeSet::new(),
            opaque: BTreeSet::new(),
            warned_shape: BTreeSet::new(),
            warnings: Vec::new(),
            problems: Vec::new(),
        }
    }

    pub fn warn(&mut self, key: &str, message: impl Into<String>) {
        self.warnings.push(Warning {
            key: key.to_string(),
            message: message.into(),
        });
    }

    pub fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// Marks `path` as a known key without reading it.
    pub fn know(&mut self, path: &str) {
        let norm = normalise(path);
        for (i, c) in norm.char_indices() {
            if c == '.' {
                self.known.insert(norm[..i].to_string());
            }
        }
        self.asked.insert(norm.clone());
        self.known.insert(norm);
    }

    /// Every key path asked for so far (normalised: `tun.routes[].mtu`).
    pub fn asked(&self) -> &BTreeSet<String> {
        &self.asked
    }

    /// Marks `path` known and everything under it free-form.
    pub fn opaque(&mut self, path: &str) -> Option<&'a Value> {
        self.know(path);
        self.opaque.insert(normalise(path));
        self.get(path)
    }

    /// The value at a dotted path (`null` counts as absent, as in Nebula), marking it known.
    /// A non-map in the middle of the path is reported once as a warning: Nebula silently
    /// treats every key below it as unset.
    pub fn get(&mut self, path: &str) -> Option<&'a Value> {
        self.know(path);
        let mut cur = self.root;
        let mut walked = String::new();
        for part in path.split('.') {
            let map = match cur {
                Value::Mapping(m) => m,
                Value::Null => return None,
                other => {
                    self.warn_shape(&walked, other);
                    return None;
                }
            };
            cur = lookup(map, part)?;
            if !walked.is_empty() {
                walked.push('.');
            }
            walked.push_str(part);
        }
        match cur {
            Value::Null => None,
            v => Some(v),
        }
    }

    fn warn_shape(&mut self, path: &str, found: &Value) {
        if path.is_empty() || !self.warned_shape.insert(path.to_string()) {
            return;
        }
        let msg = format!(
            "expected a map, found {}; every key below it uses its default",
            describe(found)
        );
        self.warn(path, msg);
    }

    /// `GetString`: any scalar as text; a map or list falls back to the default with a warning.
    pub fn string(&mut self, path: &str, default: &str) -> String {
        match self.get(path) {
            None => default.to_string(),
            Some(v) => match go_string(v) {
                Some(s) => s,
                None => {
                    self.fallback(path, v, &format!("{default:?}"), "a string");
                    default.to_string()
                }
            },
        }
    }

    /// Like `string` but `None` when unset or empty.
    pub fn opt_string(&mut self, path: &str) -> Option<String> {
        Some(self.string(path, "")).filter(|s| !s.is_empty())
    }

    /// `GetBool`, with a warning when Nebula would silently use the default.
    pub fn bool(&mut self, path: &str, default: bool) -> bool {
        let Some(v) = self.get(path) else {
            return default;
        };
        match go_string(v).as_deref().and_then(parse_go_bool) {
            Some(b) => b,
            None => {
                self.fallback(path, v, &default.to_string(), "a boolean");
                default
            }
        }
    }

    /// `GetInt`, with a warning when Nebula would silently use the default.
    pub fn int(&mut self, path: &str, default: i64) -> i64 {
        let Some(v) = self.get(path) else {
            return default;
        };
        match go_string(v).as_deref().and_then(parse_go_int) {
            Some(n) => n,
            None => {
                self.fallback(path, v, &default.to_string(), "an integer");
                default
            }
        }
    }

    /// An integer that must fit `lo..=hi`; out of range is a problem (Nebula would truncate or
    /// fail later at bind/ioctl time).
    pub fn int_in(&mut self, path: &str, default: i64, lo: i64, hi: i64) -> i64 {
        let n = self.int(path, default);
        if n < lo || n > hi {
            self.problem(path, format!("{n} is out of range ({lo}..={hi})"));
            return default;
        }
        n
    }

    /// `GetDuration`: Go syntax with units; a bare number or junk falls back with a warning.
    pub fn duration(&mut self, path: &str, default: Duration) -> Duration {
        let Some(v) = self.get(path) else {
            return default;
        };
        match go_string(v).as_deref().and_then(parse_go_duration) {
            Some(d) if !d.negative => d.magnitude,
            Some(_) => {
                let msg = format!(
                    "negative duration {} is not supported, using the default {}",
                    show(v),
                    format_go_duration(default)
                );
                self.warn(path, msg);
                default
            }
            None => {
                let shown = format_go_duration(default);
                self.fallback(
                    path,
                    v,
                    &shown,
                    "a duration with a unit such as 10s, 100ms, 1h30m",
                );
                default
            }
        }
    }

    /// `GetStringSlice`: a list of scalars; anything else falls back to the default (empty).
    pub fn string_list(&mut self, path: &str) -> Vec<String> {
        let Some(v) = self.get(path) else {
            return Vec::new();
        };
        let Value::Sequence(items) = v else {
            self.fallback(path, v, "[]", "a list");
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match go_string(item) {
                Some(s) => out.push(s),
                None => self.warn(
                    &format!("{path}[{i}]"),
                    format!("expected a string, found {}; ignored", describe(item)),
                ),
            }
        }
        out
    }

    /// A list of maps (routes, authorized users); a non-list is a problem.
    pub fn map_list(&mut self, path: &str) -> Vec<(String, &'a Mapping)> {
        let Some(v) = self.get(path) else {
            return Vec::new();
        };
        let Value::Sequence(items) = v else {
            self.problem(path, format!("expected a list, found {}", describe(v)));
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let key = format!("{path}[{i}]");
            match item {
                Value::Mapping(m) => out.push((key, m)),
                other => self.problem(&key, format!("expected a map, found {}", describe(other))),
            }
        }
        out
    }

    fn fallback(&mut self, path: &str, v: &Value, default: &str, wanted: &str) {
        let msg = format!(
            "invalid value {} (expected {wanted}), using the default {default}",
            show(v)
        );
        self.warn(path, msg);
    }

    /// Reports every key of the tree that no reader asked for, with a suggestion when a known key
    /// at the same level is a likely typo of it. Call after all sections are read.
    pub fn report_unknown(&mut self) {
        let mut found = Vec::new();
        collect_unknown(self.root, "", "", &self.known, &self.opaque, &mut found);
        for (display, norm) in found {
            let message = match suggest(&norm, &self.known) {
                Some(s) => format!("unknown key (did you mean `{s}`?); ignored"),
                None => "unknown key; ignored".to_string(),
            };
            self.warn(&display, message);
        }
    }
}

fn lookup<'v>(map: &'v Mapping, key: &str) -> Option<&'v Value> {
    map.iter()
        .find(|(k, _)| go_string(k).as_deref() == Some(key))
        .map(|(_, v)| v)
}

/// A short description of a value's kind for messages.
pub fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a map".into(),
        Value::Tagged(t) => describe(&t.value),
    }
}

/// A value as it appears in messages: scalars verbatim (quoted strings), containers by kind.
pub fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) | Value::Mapping(_) => describe(v),
        other => go_string(other).unwrap_or_else(|| describe(other)),
    }
}

/// Normalises list indexes away: `tun.routes[3].mtu` → `tun.routes[].mtu`.
fn normalise(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            c => out.push(c),
        }
    }
    out
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn collect_unknown(
    v: &Value,
    display: &str,
    norm: &str,
    known: &BTreeSet<String>,
    opaque: &BTreeSet<String>,
    out: &mut Vec<(String, String)>,
) {
    if opaque.contains(norm) {
        return;
    }
    match v {
        Value::Mapping(m) => {
            for (k, child) in m {
                let key = go_string(k).unwrap_or_else(|| describe(k));
                let (d, n) = (join(display, &key), join(norm, &key));
                if known.contains(&n) {
                    collect_unknown(child, &d, &n, known, opaque, out);
                } else {
                    out.push((d, n));
                }
            }
        }
        Value::Sequence(items) if !norm.is_empty() => {
            for (i, child) in items.iter().enumerate() {
                let (d, n) = (format!("{display}[{i}]"), format!("{norm}[]"));
                collect_unknown(child, &d, &n, known, opaque, out);
            }
        }
        _ => {}
    }
}

/// The known sibling of `norm` with the smallest edit distance, if it is close enough to be a
/// plausible typo (at most 2 edits, and fewer than half the key's length).
fn suggest(norm: &str, known: &BTreeSet<String>) -> Option<String> {
    let (parent, leaf) = match norm.rsplit_once('.') {
        Some((p, l)) => (Some(p), l),
        None => (None, norm),
    };
    let siblings = known
        .iter()
        .filter_map(|k| match (parent, k.rsplit_once('.')) {
            (Some(p), Some((kp, kl))) if kp == p => Some(kl),
            (None, None) => Some(k.as_str()),
            _ => None,
        });
    let (best, dist) = siblings
        .filter(|s| !s.ends_with("[]") || s.len() > 2)
        .map(|s| (s, edit_distance(leaf, s)))
        .min_by_key(|(_, d)| *d)?;
    let limit = 2.min(leaf.chars().count().max(2) / 2);
    (dist > 0 && dist <= limit.max(1)).then(|| best.to_string())
}

/// Levenshtein distance over chars.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Value {
        serde_yaml::from_str(s).unwrap()
    }

    #[test]
    fn lenient_reads_and_fallback_warnings() {
        let v = yaml("a: {b: '42', c: yes, d: 5, e: 1h30m, f: [1, 2]}");
        let mut r = Reader::new(&v);
        assert_eq!(r.int("a.b", 0), 42);
        assert!(r.bool("a.c", false));
        assert_eq!(
            r.duration("a.d", Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        assert_eq!(r.duration("a.e", Duration::ZERO), Duration::from_secs(5400));
        assert_eq!(r.string("a.f", "x"), "x");
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert_eq!(r.warnings[0].key, "a.d");
        assert!(r.warnings[0].message.contains("5") && r.warnings[0].message.contains("3s"));
        assert_eq!(r.warnings[1].key, "a.f");
    }

    #[test]
    fn unknown_keys_get_suggestions() {
        let v = yaml("lighthouse: {intervall: 5, hosts: []}\nlisten: {zzzzzz: 1}\ntun: {routes: [{mtu: 1, rout: x}]}");
        let mut r = Reader::new(&v);
        r.int("lighthouse.interval", 10);
        r.string_list("lighthouse.hosts");
        r.int("listen.port", 0);
        r.know("tun.routes");
        r.know("tun.routes[].mtu");
        r.know("tun.routes[].route");
        r.report_unknown();
        let w: Vec<String> = r.warnings.iter().map(|w| w.to_string()).collect();
        assert!(
            w.iter()
                .any(|w| w.starts_with("lighthouse.intervall:") && w.contains("`interval`")),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|w| w.starts_with("listen.zzzzzz:") && !w.contains("did you mean")),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|w| w.starts_with("tun.routes[0].rout:") && w.contains("`route`")),
            "{w:?}"
        );
    }

    #[test]
    fn non_map_parent_is_reported_once() {
        let v = yaml("lighthouse: 5");
        let mut r = Reader::new(&v);
        assert!(!r.bool("lighthouse.am_lighthouse", false));
        assert_eq!(r.int("lighthouse.interval", 10), 10);
        assert_eq!(r.warnings.len(), 1);
        assert_eq!(r.warnings[0].key, "lighthouse");
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("intervall", "interval"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("am_lighthose", "am_lighthouse"), 1);
    }
}
