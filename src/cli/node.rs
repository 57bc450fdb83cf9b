//! `meshd -config PATH [-test]`, `-version`, `-help`: the node front end, with Go `flag`-style
//! options (`-config x`, `-config=x`, `--config x`; booleans as `-test` or `-test=true`). Owns
//! argument parsing and the `-test` report; the daemon itself is `daemon::run`.

use std::io::Write;
use std::path::Path;

use super::flags::{FlagError, FlagSet};
use crate::config::{self, ConfigError};

fn flag_set() -> FlagSet {
    FlagSet::new()
        .string(
            "config",
            "",
            "Path to either a file or directory to load configuration from",
        )
        .bool(
            "test",
            false,
            "Test the config and print the end result. Non zero exit indicates a faulty config",
        )
        .bool("version", false, "Print version")
        .bool("help", false, "Print command line usage")
}

fn usage(flags: &FlagSet) -> String {
    format!(
        "Usage of meshd:\n{}  cert <mode> ...\n    \tCertificate tool (nebula-cert compatible); see `meshd cert -h`\n  \
         status [--json] [-socket PATH | -config PATH]\n    \tShow the running daemon (also: {})\n",
        flags.defaults_text(),
        crate::daemon::control::COMMANDS[1..].join(", ")
    )
}

/// Runs the node front end; returns the exit code (Go's: 2 for a bad command line).
pub fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut flags = flag_set();
    match flags.parse(args) {
        Ok(_) => {}
        Err(FlagError::Help) => {
            let _ = write!(err, "{}", usage(&flags));
            return 0;
        }
        Err(FlagError::Invalid(msg)) => {
            let _ = write!(err, "{msg}\n{}", usage(&flags));
            return 2;
        }
    }
    if flags.get_bool("version") {
        let _ = writeln!(out, "Version: {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    if flags.get_bool("help") {
        let _ = write!(out, "{}", usage(&flags));
        return 0;
    }
    let path = flags.get_str("config").to_string();
    if path.is_empty() {
        let _ = write!(err, "-config flag must be set\n{}", usage(&flags));
        return 1;
    }
    if flags.get_bool("test") {
        return test_config(Path::new(&path), out, err);
    }
    match crate::daemon::run::main(Path::new(&path)) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "meshd: {e:#}");
            1
        }
    }
}

/// `-test`: load, check everything start-up checks, print each warning and problem; exit 0 only
/// if the node would start.
fn test_config(path: &Path, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let (config, sources, mut warnings, mut problems) = match config::load_path(path) {
        Ok(l) => (l.config, l.sources.len(), l.warnings, Vec::new()),
        Err(ConfigError::Invalid {
            problems,
            warnings,
            partial,
        }) => (*partial, 0, warnings, problems),
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return 1;
        }
    };
    let read = |p: &Path| std::fs::read(p);
    let (_, report) = config::check_startup(&config, &read, unix_now());
    warnings.extend(report.warnings);
    // A key already reported while loading (e.g. a missing pki.cert) is not reported twice.
    for p in report.problems {
        if !problems.iter().any(|q: &config::Problem| q.key == p.key) {
            problems.push(p);
        }
    }
    for w in &warnings {
        let _ = writeln!(err, "warning: {w}");
    }
    for p in &problems {
        let _ = writeln!(err, "error: {p}");
    }
    if !problems.is_empty() {
        let _ = writeln!(
            err,
            "{}: configuration is invalid ({} problem(s))",
            path.display(),
            problems.len()
        );
        return 1;
    }
    let _ = writeln!(
        out,
        "{}: configuration OK ({sources} file(s))",
        path.display()
    );
    0
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> (i32, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let code = run(&args, &mut out, &mut err);
        (
            code,
            String::from_utf8_lossy(&out).into(),
            String::from_utf8_lossy(&err).into(),
        )
    }

    #[test]
    fn go_style_flags_reach_the_config_loader() {
        for args in [
            &["-config", "/nonexistent/x.yml", "-test"][..],
            &["-config=/nonexistent/x.yml", "-test"],
            &["--config", "/nonexistent/x.yml", "--test=true"],
        ] {
            let (code, _, err) = run_args(args);
            assert_eq!(code, 1, "{args:?}");
            assert!(
                err.contains("cannot read /nonexistent/x.yml"),
                "{args:?}: {err}"
            );
        }
        // Without -test the daemon starts, and fails on the unreadable config before any I/O.
        let (code, _, err) = run_args(&["-config=/nonexistent/x.yml", "-test=false"]);
        assert_eq!(code, 1);
        assert!(err.contains("cannot read /nonexistent/x.yml"), "{err}");
    }

    #[test]
    fn version_help_and_bad_flags() {
        let (code, out, _) = run_args(&["-version"]);
        assert_eq!(code, 0);
        assert!(out.starts_with("Version: "));
        let (code, out, _) = run_args(&["-help"]);
        assert_eq!(code, 0);
        assert!(out.contains("-config string"), "{out}");
        assert_eq!(run_args(&["-h"]).0, 0);
        let (code, _, err) = run_args(&["-bogus"]);
        assert_eq!(code, 2);
        assert!(err.contains("-bogus"), "{err}");
        assert_eq!(run_args(&["-config"]).0, 2);
        assert_eq!(run_args(&["-test=maybe"]).0, 2);
    }

    #[test]
    fn run_without_config_fails() {
        let (code, _, err) = run_args(&[]);
        assert_eq!(code, 1);
        assert!(err.contains("-config flag must be set"));
    }
}
