//! `meshd cert <mode>`: a nebula-cert 1.6.1 compatible certificate tool.

use std::io::Write;

/// Runs the certificate tool; returns the exit code.
pub fn run(_args: &[String], _out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let _ = writeln!(err, "meshd cert: not implemented yet");
    1
}
