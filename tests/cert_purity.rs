//! The certificate library is sans-IO: no files, clocks, OS randomness, sockets or tokio inside
//! src/cert. This test reads its sources and fails if one of those creeps in.

use std::path::Path;

const FORBIDDEN: [&str; 9] = [
    "std::fs",
    "File::",
    "SystemTime",
    "Instant::now",
    "OsRng",
    "thread_rng",
    "tokio",
    "UdpSocket",
    "std::env",
];

#[test]
fn cert_library_has_no_io() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cert");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("src/cert exists") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") || path.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for word in FORBIDDEN {
            assert!(!text.contains(word), "{} uses {word}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} files checked");
}
