//! Command-line dispatch: `meshd cert <mode> ...` goes to the certificate tool, `meshd status`
//! and the other control commands to the control-socket client, everything else (`-config`,
//! `-test`, `-version`, `-help`) to the node front end. Owns argument parsing only;
//! never implements protocol or certificate logic itself.

pub mod cert;
pub mod flags;
pub mod node;
pub mod status;

/// Runs meshd with `args` (without the program name) and returns the process exit code.
pub fn main(args: &[String]) -> i32 {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    match args.first().map(String::as_str) {
        Some("cert") => cert::run(&args[1..], &mut out, &mut err),
        Some(c) if status::is_command(c) => status::run(args, &mut out, &mut err),
        _ => node::run(args, &mut out, &mut err),
    }
}
