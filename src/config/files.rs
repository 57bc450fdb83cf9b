//! The only file reading of the config module: resolving `-config PATH` (a file, or a directory
//! whose `*.yml`/`*.yaml` files are read recursively in lexical order, as Nebula's `config.C`
//! does) into sources. Everything after that is pure.

use std::path::{Path, PathBuf};

use super::source::Source;
use super::{from_sources, ConfigError, Loaded};

/// Reads and loads the config at `path` (file or directory).
pub fn load_path(path: &Path) -> Result<Loaded, ConfigError> {
    from_sources(&read_sources(path)?)
}

/// The sources `path` names, in the order Nebula merges them.
pub fn read_sources(path: &Path) -> Result<Vec<Source>, ConfigError> {
    let mut files = Vec::new();
    collect(path, true, &mut files)?;
    if files.is_empty() {
        return Err(ConfigError::NoFiles {
            path: path.display().to_string(),
        });
    }
    // Nebula sorts the absolute paths of every file found, across directories.
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).map_err(|e| io_error(&f, &e))?;
            Ok(Source::new(f.display().to_string(), text))
        })
        .collect()
}

fn collect(path: &Path, direct: bool, out: &mut Vec<PathBuf>) -> Result<(), ConfigError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if direct => return Err(io_error(path, &e)),
        // Like Nebula, entries that vanish or dangle inside a config directory are skipped.
        Err(_) => return Ok(()),
    };
    if !meta.is_dir() {
        let yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yml" | "yaml")
        );
        if direct || yaml {
            out.push(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
        }
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| io_error(path, &e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        collect(&entry, false, out)?;
    }
    Ok(())
}

fn io_error(path: &Path, e: &std::io::Error) -> ConfigError {
    ConfigError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}
