//! The config module is pure apart from `files.rs` (reading `-config PATH`): no other file in
//! src/config may touch files, clocks, randomness, sockets, the environment or tokio. The pki
//! checks get file reading and `now` as parameters instead.

use std::path::Path;

const FORBIDDEN: [&str; 10] = [
    "std::fs",
    "File::",
    "SystemTime",
    "Instant::now",
    "OsRng",
    "thread_rng",
    "tokio",
    "UdpSocket",
    "std::env",
    "to_socket_addrs",
];

#[test]
fn config_module_is_pure_except_files_rs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("src/config exists") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !name.ends_with(".rs") || name == "files.rs" || name == "tests.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read source");
        for word in FORBIDDEN {
            assert!(!text.contains(word), "{} uses {word}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} files checked");
}
