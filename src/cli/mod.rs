//! Command-line dispatch: `meshd cert <mode> ...` goes to the certificate tool, everything else
//! (`-config`, `-test`, `-version`, `-help`) to the node front end. Owns argument parsing only;
//! never implements protocol or certificate logic itself.

pub mod cert;
pub mod flags;
pub mod node;

/// Runs meshd with `args` (without the program name) and returns the process exit code.
pub fn main(args: &[String]) -> i32 {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    match args.first().map(String::as_str) {
        Some("cert") => cert::run(&args[1..], &mut out, &mut err),
        _ => node::run(args, &mut out, &mut err),
    }
}
