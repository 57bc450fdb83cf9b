//! Configuration: Nebula 1.6.1 YAML (unchanged) into one typed `Config`, with Nebula's code
//! defaults, its lenient scalar reading, warnings for unknown keys and silent fallbacks, and the
//! load-time checks that stop start-up. Pure except `files` (reads `-config PATH`); the checks that
//! need files (`pki`: certificates, sshd host key) take the file reader and the clock as parameters.
//! Must not touch sockets, tun devices or the daemon's state.
//!
//! Flow: sources (text) → `source` (parse, merge) → `reader` + `build`/`sections`/`services`
//! (typed model, warnings, problems) → `checks` (cross-section) → `Loaded`. `check_startup` then
//! adds what needs the certificates (VPN network, key/cert match, CA pool) and `check_network`.

mod build;
mod checks;
pub mod coerce;
mod files;
mod model;
mod pki;
mod reader;
mod sections;
mod services;
mod source;
mod support;
pub mod types;

pub use checks::check_network;
pub use files::{load_path, read_sources};
pub use model::*;
pub use pki::{check_startup, PkiState, ReadFile, StartupReport};
pub use reader::{Problem, Warning};
pub use source::{merge_sources, Source};
pub use support::{Unsupported, NOT_SUPPORTED};
pub use types::{Cipher, Host, HostPort, IpNet, LogFormat, LogLevel, LookupNetwork, SendRecvError};

/// A loaded configuration and everything worth telling the operator about it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Warning>,
    /// The merged YAML tree (Nebula's `-test` prints it; subsystems with raw sections use it).
    pub tree: serde_yaml::Value,
    /// Source names in merge order.
    pub sources: Vec<String>,
}

/// Why a configuration cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    #[error("{source_name}:{line}:{column}: YAML syntax error: {message}")]
    Yaml {
        source_name: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{source_name}: the top level must be a map of keys")]
    NotAMap { source_name: String },
    #[error("no config files found at {path}")]
    NoFiles { path: String },
    #[error("cannot read {path}: {message}")]
    Io { path: String, message: String },
    /// Problems found while loading. `partial` is the model with defaults in place of the bad
    /// values, so callers such as `-test` can still run the certificate checks and report
    /// everything at once; it must never be used to start a node.
    #[error("{}", render_problems(.problems))]
    Invalid {
        problems: Vec<Problem>,
        warnings: Vec<Warning>,
        partial: Box<Config>,
    },
}

fn render_problems(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    format!("invalid configuration:\n  {}", lines.join("\n  "))
}

/// Loads one YAML document (named `<string>` in messages).
pub fn from_str(text: &str) -> Result<Loaded, ConfigError> {
    from_sources(&[Source::new("<string>", text)])
}

/// Loads and merges several YAML documents in order.
pub fn from_sources(sources: &[Source]) -> Result<Loaded, ConfigError> {
    let (tree, duplicates) = merge_sources(sources)?;
    let mut r = reader::Reader::new(&tree);
    r.warnings.extend(duplicates);
    let config = build::build(&mut r);
    checks::check_config(&mut r, &config);
    r.warnings.extend(support::report(&tree));
    let reader::Reader {
        warnings, problems, ..
    } = r;
    if !problems.is_empty() {
        return Err(ConfigError::Invalid {
            problems,
            warnings,
            partial: Box::new(config),
        });
    }
    let sources = sources.iter().map(|s| s.name.clone()).collect();
    Ok(Loaded {
        config,
        warnings,
        tree,
        sources,
    })
}

/// Every key path the reader accepts (normalised, `tun.routes[].mtu`), each section's keys
/// included whatever the file contains. The daemon must consume each one or list it in
/// [`NOT_SUPPORTED`].
pub fn accepted_keys() -> Vec<String> {
    let tree = serde_yaml::Value::Null;
    let mut r = reader::Reader::new(&tree);
    let _ = build::build(&mut r);
    r.asked().iter().cloned().collect()
}

/// The [`NOT_SUPPORTED`] entry covering `key` (normalised), if any.
pub fn unsupported_entry(key: &str) -> Option<&'static Unsupported> {
    support::entry_for(key)
}

#[cfg(test)]
mod tests;
