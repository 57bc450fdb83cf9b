//! `meshd -config PATH [-test]`, `-version`, `-help`: the node front end.

use std::io::Write;

/// Runs the node front end; returns the exit code.
pub fn run(_args: &[String], _out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let _ = writeln!(err, "meshd: not implemented yet");
    1
}
