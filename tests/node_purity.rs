//! The protocol core (wire, crypto, node) stays sans-IO: no sockets, files, clocks, OS
//! randomness or tokio. Checked on the source text so a stray import fails CI.

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "tokio",
    "std::net::UdpSocket",
    "UdpSocket",
    "std::fs",
    "Instant::now",
    "SystemTime::now",
    "thread_rng",
    "OsRng",
    "getrandom",
    "std::thread",
];

fn scan(dir: &Path, hits: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            scan(&path, hits);
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read source");
        // Unit tests at the bottom of a file may use whatever they like.
        let before_tests = text.split("#[cfg(test)]").next().unwrap_or("");
        let code: String = before_tests
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for word in FORBIDDEN {
            if code.contains(word) {
                hits.push(format!("{}: {word}", path.display()));
            }
        }
    }
}

#[test]
fn core_modules_are_sans_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut hits = Vec::new();
    for module in ["wire", "crypto", "node"] {
        scan(&root.join(module), &mut hits);
    }
    assert!(
        hits.is_empty(),
        "I/O or nondeterminism in the pure core: {hits:#?}"
    );
}
