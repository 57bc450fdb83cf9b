//! `meshd -config PATH [-test]`, `-version`, `-help`: the node front end, with Go `flag`-style
//! options (`-config x`, `-config=x`, `--config x`; booleans as `-test` or `-test=true`). Owns
//! argument parsing and the `-test` report; the daemon itself lives in `daemon` (not written yet).

use std::io::Write;
use std::path::Path;

use crate::config::{self, ConfigError};

const USAGE: &str = "Usage of meshd:
  -config string
    \tPath to either a file or directory to load configuration from
  -help
    \tPrint command line usage
  -test
    \tTest the config and print the end result. Non zero exit indicates a faulty config
  -version
    \tPrint version
  cert <mode> ...
    \tCertificate tool (nebula-cert compatible); see `meshd cert -h`
";

/// Parsed node flags.
#[derive(Debug, Default, PartialEq, Eq)]
struct Flags {
    config: Option<String>,
    test: bool,
    version: bool,
    help: bool,
}

/// Runs the node front end; returns the exit code.
pub fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let flags = match parse_flags(args) {
        Ok(f) => f,
        Err(msg) => {
            let _ = writeln!(err, "{msg}\n{USAGE}");
            return 2;
        }
    };
    if flags.version {
        let _ = writeln!(out, "Version: {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    if flags.help {
        let _ = write!(out, "{USAGE}");
        return 0;
    }
    let Some(path) = flags.config.filter(|p| !p.is_empty()) else {
        let _ = writeln!(err, "-config flag must be set\n{USAGE}");
        return 1;
    };
    if flags.test {
        return test_config(Path::new(&path), out, err);
    }
    let _ = writeln!(
        err,
        "meshd: the daemon is not implemented yet; only `meshd -config {path} -test` works"
    );
    1
}

/// Go's `flag` package rules: one or two dashes, `=value` or the next argument, booleans take
/// only the `=` form; parsing stops at the first non-flag argument or `--`.
fn parse_flags(args: &[String]) -> Result<Flags, String> {
    let mut flags = Flags::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" || !arg.starts_with('-') || arg == "-" {
            return match arg.as_str() {
                "--" if i == args.len() => Ok(flags),
                _ => Err(format!("unexpected argument {arg:?}")),
            };
        }
        let body = arg.strip_prefix("--").unwrap_or(&arg[1..]);
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        match name {
            "config" => {
                let value = match inline {
                    Some(v) => v.to_string(),
                    None => {
                        let v = args.get(i).ok_or("flag needs an argument: -config")?;
                        i += 1;
                        v.clone()
                    }
                };
                flags.config = Some(value);
            }
            "test" => flags.test = bool_flag(name, inline)?,
            "version" => flags.version = bool_flag(name, inline)?,
            "help" | "h" => flags.help = bool_flag(name, inline)?,
            _ => return Err(format!("flag provided but not defined: -{name}")),
        }
    }
    Ok(flags)
}

fn bool_flag(name: &str, inline: Option<&str>) -> Result<bool, String> {
    match inline {
        None => Ok(true),
        Some(v) => match v {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
            _ => Err(format!("invalid boolean value {v:?} for -{name}")),
        },
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

    fn parse(args: &[&str]) -> Result<Flags, String> {
        parse_flags(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn go_style_flags() {
        let want = Flags {
            config: Some("x.yml".into()),
            test: true,
            ..Flags::default()
        };
        assert_eq!(parse(&["-config", "x.yml", "-test"]).unwrap(), want);
        assert_eq!(parse(&["-config=x.yml", "-test"]).unwrap(), want);
        assert_eq!(parse(&["--config", "x.yml", "--test=true"]).unwrap(), want);
        assert!(!parse(&["-config=x", "-test=false"]).unwrap().test);
        assert!(parse(&["-version"]).unwrap().version);
        assert!(parse(&["-h"]).unwrap().help);
    }

    #[test]
    fn bad_flags_are_errors() {
        assert!(parse(&["-config"])
            .unwrap_err()
            .contains("needs an argument"));
        assert!(parse(&["-bogus"]).unwrap_err().contains("-bogus"));
        assert!(parse(&["-test=maybe"]).is_err());
        assert!(parse(&["stray"]).is_err());
    }

    #[test]
    fn run_without_config_fails() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run(&[], &mut out, &mut err), 1);
        assert!(String::from_utf8_lossy(&err).contains("-config flag must be set"));
        assert_eq!(run(&["-version".into()], &mut out, &mut err), 0);
    }
}
