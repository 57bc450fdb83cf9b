//! meshd(8) (`src/cli/meshd.8`) in step with the binary: every flag `meshd -help` and
//! `meshd cert <mode> -h` print is documented under its heading, starting with the help text
//! word for word (so a changed default or usage line fails here), no flag or mode is documented
//! that the binary does not have, the version matches, the reserved control-commands section is
//! there, and the page renders without warnings under `groff -ww` and `man -l`.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

const PAGE: &str = include_str!("../src/cli/meshd.8");

/// One documented flag: whether the tag takes an argument, and its description as plain text.
#[derive(Debug, Clone)]
struct ManFlag {
    takes_value: bool,
    text: String,
}

/// One flag from a `-h` listing (Go's PrintDefaults layout).
#[derive(Debug)]
struct HelpFlag {
    takes_value: bool,
    usage: String,
}

/// Roff escapes and font changes the page uses, as plain text.
fn plain(roff: &str) -> String {
    let mut s = roff.to_string();
    for (from, to) in [
        ("\\(aq", "'"),
        ("\\(ga", "`"),
        ("\\(lq", "\""),
        ("\\(rq", "\""),
        ("\\fB", ""),
        ("\\fI", ""),
        ("\\fR", ""),
        ("\\fP", ""),
        ("\\&", ""),
        ("\\-", "-"),
        ("\\e", "\\"),
    ] {
        s = s.replace(from, to);
    }
    s
}

/// A macro line's arguments as text. Quotes group words; the alternating font macros
/// (`.BR a ", " b` → `a, b`) join their arguments, the others (`.B`, `.SH`) space them.
fn macro_text(line: &str) -> String {
    let (mac, args) = line.split_once(' ').unwrap_or((line, ""));
    let alternating = mac.len() == 3 && mac != ".SH" && mac != ".SS";
    let mut parts = vec![String::new()];
    let mut quoted = false;
    for c in args.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => parts.push(String::new()),
            c => parts.last_mut().expect("non-empty").push(c),
        }
    }
    plain(&parts.join(if alternating { "" } else { " " }))
}

fn words(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Headings (`.SH`/`.SS` text) → their flag entries (`.TP` then a `.B`/`.BI`/`.BR` tag), and
/// each heading's first text paragraph (the mode summary under a `.SS`).
struct Page {
    flags: BTreeMap<String, BTreeMap<String, ManFlag>>,
    intro: BTreeMap<String, String>,
}

fn parse_page(page: &str) -> Page {
    let mut flags: BTreeMap<String, BTreeMap<String, ManFlag>> = BTreeMap::new();
    let mut intro = BTreeMap::new();
    let mut heading = String::new();
    // A tag may name several flags (`.BR \-h ", " \-help`); each gets the entry.
    let mut current: Option<(Vec<String>, ManFlag)> = None;
    let mut lines = page.lines().peekable();
    let flush = |heading: &str,
                 current: &mut Option<(Vec<String>, ManFlag)>,
                 flags: &mut BTreeMap<String, BTreeMap<String, ManFlag>>| {
        if let Some((names, mut f)) = current.take() {
            f.text = words(&f.text);
            let section = flags.entry(heading.to_string()).or_default();
            for name in names {
                assert!(
                    section.insert(name.clone(), f.clone()).is_none(),
                    "-{name} documented twice under {heading}"
                );
            }
        }
    };
    while let Some(line) = lines.next() {
        if line.starts_with(".\\\"") {
            continue;
        }
        let mac = line.split(' ').next().unwrap_or("");
        match mac {
            ".SH" | ".SS" => {
                flush(&heading, &mut current, &mut flags);
                heading = macro_text(line);
                let mut text = String::new();
                while let Some(next) = lines.peek() {
                    if next.starts_with('.') {
                        break;
                    }
                    text.push_str(&plain(next));
                    text.push(' ');
                    lines.next();
                }
                intro.insert(heading.clone(), words(&text));
            }
            ".TP" => {
                flush(&heading, &mut current, &mut flags);
                let Some(tag) = lines.next_if(|l| !l.starts_with(".SH") && !l.starts_with(".SS"))
                else {
                    continue;
                };
                let tag_text = macro_text(tag);
                let names: Vec<String> = tag_text
                    .split(',')
                    .filter_map(|t| t.trim().strip_prefix('-'))
                    .map(|t| t.split(' ').next().unwrap_or(t).to_string())
                    .collect();
                if tag.starts_with(".B") && !names.is_empty() {
                    let takes_value = tag.starts_with(".BI ");
                    current = Some((
                        names,
                        ManFlag {
                            takes_value,
                            text: String::new(),
                        },
                    ));
                }
            }
            ".PP" | ".P" | ".LP" | ".RS" | ".RE" => flush(&heading, &mut current, &mut flags),
            _ => {
                if let Some((_, f)) = current.as_mut() {
                    let t = if line.starts_with('.') {
                        macro_text(line)
                    } else {
                        plain(line)
                    };
                    f.text.push_str(&t);
                    f.text.push(' ');
                }
            }
        }
    }
    flush(&heading, &mut current, &mut flags);
    Page { flags, intro }
}

/// Parses Go's PrintDefaults text: `  -name type` then `    \tusage (default x)`.
fn parse_help(text: &str) -> BTreeMap<String, HelpFlag> {
    let mut flags = BTreeMap::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(spec) = line.strip_prefix("  -") else {
            continue;
        };
        let mut parts = spec.split_whitespace();
        let name = parts.next().expect("flag name").to_string();
        let takes_value = parts.next().is_some();
        let usage = lines
            .next()
            .and_then(|l| l.strip_prefix("    \t"))
            .unwrap_or_else(|| panic!("no usage line for -{name}"));
        flags.insert(
            name,
            HelpFlag {
                takes_value,
                usage: words(usage),
            },
        );
    }
    flags
}

fn meshd(args: &[&str]) -> (String, String) {
    let out = Command::new(common::meshd_bin())
        .args(args)
        .output()
        .expect("run meshd");
    assert!(out.status.success(), "meshd {args:?} failed: {out:?}");
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Every help flag documented (same arity, text starting with the usage), and nothing more.
fn assert_in_step(page: &Page, heading: &str, help: &BTreeMap<String, HelpFlag>) {
    let empty = BTreeMap::new();
    let man = page.flags.get(heading).unwrap_or(&empty);
    for (name, h) in help {
        let m = man
            .get(name)
            .unwrap_or_else(|| panic!("meshd.8 \"{heading}\" does not document -{name}"));
        assert_eq!(
            m.takes_value, h.takes_value,
            "meshd.8 \"{heading}\" -{name}: argument in the tag (.BI) must match the help"
        );
        assert!(
            m.text.starts_with(&h.usage),
            "meshd.8 \"{heading}\" -{name} must start with the help text\n help: {}\n  man: {}",
            h.usage,
            m.text
        );
    }
    let extra: Vec<_> = man.keys().filter(|k| !help.contains_key(*k)).collect();
    assert!(
        extra.is_empty(),
        "meshd.8 \"{heading}\" documents flags the binary does not have: {extra:?}"
    );
}

#[test]
fn daemon_flags_match_meshd_help() {
    let page = parse_page(PAGE);
    let (help, _) = meshd(&["-help"]);
    let flags = parse_help(&help);
    assert!(
        flags.contains_key("config") && flags.contains_key("test"),
        "{help}"
    );
    assert_in_step(&page, "OPTIONS", &flags);
}

#[test]
fn cert_modes_and_flags_match_meshd_cert_help() {
    let page = parse_page(PAGE);
    let (_, global) = meshd(&["cert", "--help"]);
    let modes: Vec<(String, String)> = global
        .split_once("  Modes:\n")
        .expect("a Modes: list")
        .1
        .lines()
        .filter_map(|l| l.trim().split_once(' ').map(|(m, _)| (m, l.trim())))
        .map(|(m, summary)| (m.to_string(), summary.to_string()))
        .collect();
    assert!(modes.len() >= 5, "{global}");
    for (mode, summary) in &modes {
        let heading = format!("meshd cert {mode}");
        let intro = page
            .intro
            .get(&heading)
            .unwrap_or_else(|| panic!("meshd.8 has no section \"{heading}\""));
        assert_eq!(intro, summary, "meshd.8 \"{heading}\" summary");
        let (_, help) = meshd(&["cert", mode, "-h"]);
        assert_in_step(&page, &heading, &parse_help(&help));
    }
    let documented: Vec<_> = page
        .intro
        .keys()
        .filter_map(|h| h.strip_prefix("meshd cert "))
        .filter(|m| !modes.iter().any(|(mode, _)| mode == m))
        .collect();
    assert!(
        documented.is_empty(),
        "meshd.8 documents cert modes that do not exist: {documented:?}"
    );
    // The global flags `meshd cert --help` lists.
    let cert_globals = &page.flags["CERTIFICATES"];
    for flag in ["version", "h", "help"] {
        assert!(
            global.contains(&format!("-{flag}")),
            "meshd cert --help lost -{flag}"
        );
        assert!(
            cert_globals.contains_key(flag),
            "meshd.8 CERTIFICATES does not document -{flag}"
        );
    }
}

#[test]
fn version_and_reserved_sections() {
    let page = parse_page(PAGE);
    let th = PAGE
        .lines()
        .find(|l| l.starts_with(".TH "))
        .expect("a .TH line");
    assert!(
        th.contains(&format!("\"meshd {}\"", env!("CARGO_PKG_VERSION"))),
        "meshd.8 .TH must name version {}: {th}",
        env!("CARGO_PKG_VERSION")
    );
    for section in [
        "SYNOPSIS",
        "OPTIONS",
        "CERTIFICATES",
        "CONTROL COMMANDS",
        "SIGNALS",
        "FILES",
        "SYSTEMD",
    ] {
        assert!(page.intro.contains_key(section), "meshd.8 lacks {section}");
    }
    // Only what exists today: no control command is documented as a flag entry.
    assert!(
        !page.flags.contains_key("CONTROL COMMANDS"),
        "meshd.8 documents control commands that do not exist yet"
    );
}

#[test]
fn renders_without_warnings() {
    let test = "renders_without_warnings";
    if !common::require_tool(test, "groff") || !common::require_tool(test, "man") {
        return;
    }
    let page = concat!(env!("CARGO_MANIFEST_DIR"), "/src/cli/meshd.8");
    let groff = Command::new("groff")
        .args(["-ww", "-man", "-z", page])
        .output()
        .expect("run groff");
    assert!(
        groff.status.success() && groff.stderr.is_empty(),
        "groff -ww: {}",
        String::from_utf8_lossy(&groff.stderr)
    );
    let man = Command::new("man")
        .args(["--warnings", "-l", page])
        .env("MANWIDTH", "80")
        .output()
        .expect("run man");
    let stdout = String::from_utf8_lossy(&man.stdout);
    assert!(
        man.status.success() && man.stderr.is_empty(),
        "man -l: {}",
        String::from_utf8_lossy(&man.stderr)
    );
    for heading in ["NAME", "SYNOPSIS", "CONTROL COMMANDS", "meshd cert verify"] {
        assert!(stdout.contains(heading), "rendered page lacks {heading}");
    }
}

#[test]
fn parser_sees_a_drifted_page() {
    // The checks above only mean something if a drift is caught: a changed default, a missing
    // flag and an extra flag must each fail.
    let help = parse_help(
        "Usage:\n  -out string\n    \tOptional: where (default \"ca.crt\")\n  -json\n    \tOptional: json\n",
    );
    let good = ".SH OPTIONS\n.TP\n.BI \\-out \" path\"\nOptional: where (default \"ca.crt\")\nMore.\n.TP\n.B \\-json\nOptional: json\n";
    assert_in_step(&parse_page(good), "OPTIONS", &help);
    for bad in [
        good.replace("ca.crt", "ca.pem"),
        good.replace(".TP\n.B \\-json\nOptional: json\n", ""),
        format!("{good}.TP\n.B \\-extra\nOptional: extra\n"),
        good.replace(".BI \\-out \" path\"", ".B \\-out"),
    ] {
        let page = parse_page(&bad);
        let caught = std::panic::catch_unwind(|| assert_in_step(&page, "OPTIONS", &help)).is_err();
        assert!(caught, "drift not caught:\n{bad}");
    }
}
