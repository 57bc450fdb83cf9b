//! Fuzzes the config loader: arbitrary bytes as one YAML source, split at the first NUL into two
//! merged sources, then the start-up checks with every pki file reading back the input. Any
//! panic is a bug; errors are expected.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshd::config::{self, Source};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let sources: Vec<Source> = match text.split_once('\0') {
        Some((a, b)) => vec![Source::new("a.yml", a), Source::new("b.yml", b)],
        None => vec![Source::new("fuzz.yml", text.as_ref())],
    };
    if let Ok(loaded) = config::from_sources(&sources) {
        let read = |_: &std::path::Path| -> std::io::Result<Vec<u8>> { Ok(data.to_vec()) };
        let _ = config::check_startup(&loaded.config, &read, 1_700_000_000);
    }
});
