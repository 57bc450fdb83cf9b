//! The `meshd` binary: hands the command line to the CLI dispatcher and turns its result into an
//! exit status. Owns nothing else.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = meshd::cli::main(&args);
    std::process::exit(code);
}
