//! Mutation tests over the example configs: an unknown key injected into every map must produce a
//! message naming its dotted path, and a wrong type in every leaf must produce a message naming the
//! leaf's path. Plus property tests: the loader never panics on YAML-ish noise or on random trees
//! built from real key names.

use std::path::{Path, PathBuf};

use meshd::config::{self, ConfigError, Source};
use proptest::prelude::*;
use serde_yaml::{Mapping, Value};

const DEBIAN_EXAMPLE: &str = "/usr/share/doc/nebula/examples/config.yml";
const BOGUS: &str = "zzbogus_key";

fn example_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files = vec![
        dir.join("config.yaml"),
        dir.join("lighthouse.yaml"),
        dir.join("host.yaml"),
    ];
    if Path::new(DEBIAN_EXAMPLE).exists() {
        files.push(PathBuf::from(DEBIAN_EXAMPLE));
    }
    files
}

fn load_tree(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("read example");
    serde_yaml::from_str(&text).expect("example parses")
}

#[derive(Clone)]
enum Seg {
    Key(Value),
    Index(usize),
}

/// A node's dotted path in reader notation (`a.b`, `a[0].c`) and the steps to reach it (keys
/// may contain dots, e.g. `static_host_map.192.168.100.1`, so the text alone is ambiguous).
#[derive(Clone)]
struct Loc {
    path: String,
    segs: Vec<Seg>,
}

/// Every map and every leaf of the tree.
fn walk(v: &Value, loc: Loc, maps: &mut Vec<Loc>, leaves: &mut Vec<Loc>) {
    match v {
        Value::Mapping(m) => {
            maps.push(loc.clone());
            for (k, child) in m {
                let name = k
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| serde_yaml::to_string(k).unwrap().trim().to_string());
                let path = if loc.path.is_empty() {
                    name
                } else {
                    format!("{}.{name}", loc.path)
                };
                let mut segs = loc.segs.clone();
                segs.push(Seg::Key(k.clone()));
                walk(child, Loc { path, segs }, maps, leaves);
            }
        }
        Value::Sequence(items) => {
            for (i, child) in items.iter().enumerate() {
                let mut segs = loc.segs.clone();
                segs.push(Seg::Index(i));
                walk(
                    child,
                    Loc {
                        path: format!("{}[{i}]", loc.path),
                        segs,
                    },
                    maps,
                    leaves,
                );
            }
        }
        _ => leaves.push(loc),
    }
}

fn locations(tree: &Value) -> (Vec<Loc>, Vec<Loc>) {
    let (mut maps, mut leaves) = (Vec::new(), Vec::new());
    walk(
        tree,
        Loc {
            path: String::new(),
            segs: Vec::new(),
        },
        &mut maps,
        &mut leaves,
    );
    (maps, leaves)
}

fn node_mut<'a>(v: &'a mut Value, segs: &[Seg]) -> &'a mut Value {
    let mut cur = v;
    for seg in segs {
        cur = match seg {
            Seg::Key(k) => cur
                .as_mapping_mut()
                .and_then(|m| m.get_mut(k))
                .expect("key exists"),
            Seg::Index(i) => cur
                .as_sequence_mut()
                .and_then(|s| s.get_mut(*i))
                .expect("index exists"),
        };
    }
    cur
}

/// Loads a tree and returns every (key, message) the loader produced.
fn messages(tree: &Value) -> Vec<(String, String)> {
    let text = serde_yaml::to_string(tree).expect("serialise");
    match config::from_sources(&[Source::new("mutated.yml", text)]) {
        Ok(l) => l.warnings.into_iter().map(|w| (w.key, w.message)).collect(),
        Err(ConfigError::Invalid {
            problems, warnings, ..
        }) => problems
            .into_iter()
            .map(|p| (p.key, p.message))
            .chain(warnings.into_iter().map(|w| (w.key, w.message)))
            .collect(),
        Err(e) => vec![("<load>".into(), e.to_string())],
    }
}

fn names(key: &str, path: &str) -> bool {
    key == path || key.starts_with(&format!("{path}.")) || key.starts_with(&format!("{path}["))
}

#[test]
fn unknown_key_in_every_map_is_named() {
    let mut checked = 0;
    for file in example_files() {
        let tree = load_tree(&file);
        let (maps, _) = locations(&tree);
        for loc in &maps {
            let map_path = &loc.path;
            let mut mutated = tree.clone();
            let node = node_mut(&mut mutated, &loc.segs);
            node.as_mapping_mut()
                .expect("a map")
                .insert(Value::from(BOGUS), Value::from(1));
            let want = if map_path.is_empty() {
                BOGUS.to_string()
            } else {
                format!("{map_path}.{BOGUS}")
            };
            let msgs = messages(&mutated);
            assert!(
                msgs.iter().any(|(k, _)| k == &want),
                "{}: injecting {want} gave no message naming it: {msgs:?}",
                file.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} maps checked");
}

#[test]
fn wrong_type_in_every_leaf_is_named() {
    let mut checked = 0;
    for file in example_files() {
        let tree = load_tree(&file);
        let (_, leaves) = locations(&tree);
        for loc in &leaves {
            let leaf = &loc.path;
            let mut mutated = tree.clone();
            let mut wrong = Mapping::new();
            wrong.insert(Value::from("zzwrong"), Value::from(1));
            *node_mut(&mut mutated, &loc.segs) = Value::Mapping(wrong);
            let msgs = messages(&mutated);
            assert!(
                msgs.iter().any(|(k, _)| names(k, leaf)),
                "{}: a map in place of {leaf} gave no message naming it: {msgs:?}",
                file.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 80, "only {checked} leaves checked");
}

#[test]
fn examples_load_without_warnings_or_problems() {
    for file in example_files() {
        let text = std::fs::read_to_string(&file).expect("read");
        let loaded = config::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            loaded.warnings.is_empty(),
            "{}: {:?}",
            file.display(),
            loaded.warnings
        );
    }
}

/// Real key names, to steer random trees into the loader's interesting paths.
const KEYS: &[&str] = &[
    "pki",
    "ca",
    "cert",
    "key",
    "static_host_map",
    "lighthouse",
    "am_lighthouse",
    "hosts",
    "interval",
    "remote_allow_list",
    "remote_allow_ranges",
    "local_allow_list",
    "interfaces",
    "listen",
    "port",
    "host",
    "punchy",
    "punch",
    "delay",
    "tun",
    "routes",
    "unsafe_routes",
    "route",
    "via",
    "mtu",
    "metric",
    "firewall",
    "inbound",
    "outbound",
    "proto",
    "conntrack",
    "tcp_timeout",
    "logging",
    "level",
    "stats",
    "type",
    "sshd",
    "enabled",
    "authorized_users",
    "keys",
    "user",
    "relay",
    "relays",
    "cipher",
    "preferred_ranges",
    "routines",
    "10.0.0.0/8",
    "10.1.2.3",
    "any",
    "yes",
];

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(KEYS).prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Sequence),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                Value::Mapping(kv.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn loader_never_panics_on_yamlish_text(text in "[ -~\n\t]{0,200}") {
        let _ = config::from_str(&text);
    }

    #[test]
    fn loader_never_panics_on_random_trees(tree in arb_value()) {
        let text = serde_yaml::to_string(&tree).unwrap_or_default();
        if let Ok(loaded) = config::from_str(&text) {
            let read = |_: &Path| -> std::io::Result<Vec<u8>> { Ok(text.as_bytes().to_vec()) };
            let _ = config::check_startup(&loaded.config, &read, 1_700_000_000);
        }
    }
}
