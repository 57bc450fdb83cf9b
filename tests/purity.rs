//! The pure core (net, cert, config except `config/files.rs`, wire, crypto, firewall, node) is
//! sans-IO: no files, clocks, OS randomness, sockets, DNS, threads, the environment or tokio.
//! Checked on the source text, comments included, so a stray import or a doc promising one fails.
//! Unit-test tails (`#[cfg(test)]` onwards) and `tests.rs` files may use whatever they like.

use std::path::{Path, PathBuf};

const FORBIDDEN: &[&str] = &[
    "std::fs",
    "File::",
    "SystemTime",
    "Instant::now",
    "OsRng",
    "thread_rng",
    "getrandom",
    "tokio",
    "UdpSocket",
    "std::env",
    "std::thread",
    "to_socket_addrs",
];

/// Each pure module, the files it may exempt, and how many files must at least be checked (so a
/// moved directory cannot make the test pass vacuously).
const MODULES: &[(&str, &[&str], usize)] = &[
    ("net.rs", &[], 1),
    ("cert", &[], 8),
    ("config", &["files.rs"], 10),
    ("wire", &[], 3),
    ("crypto", &[], 4),
    ("firewall", &[], 11),
    ("node", &[], 9),
];

fn sources(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read src dir") {
            sources(&entry.expect("dir entry").path(), out);
        }
    } else if path.extension().and_then(|e| e.to_str()) == Some("rs") {
        out.push(path.to_path_buf());
    }
}

fn library_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read source");
    text.split("#[cfg(test)]")
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn pure_modules_are_sans_io() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut hits = Vec::new();
    for (module, exempt, min_files) in MODULES {
        let mut files = Vec::new();
        sources(&src.join(module), &mut files);
        files.retain(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name != "tests.rs" && !exempt.contains(&name)
        });
        assert!(
            files.len() >= *min_files,
            "{module}: only {} files checked",
            files.len()
        );
        for path in &files {
            let code = library_code(path);
            for word in FORBIDDEN {
                if code.contains(word) {
                    hits.push(format!("{}: {word}", path.display()));
                }
            }
        }
    }
    assert!(
        hits.is_empty(),
        "I/O or nondeterminism in the pure core: {hits:#?}"
    );
}
