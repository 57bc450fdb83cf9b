//! The `port` / `code` value of a rule: nebula 1.6.1 `parsePort` plus the range check of
//! `addRule`. Owns that parsing only.

use super::rules::PortSpec;

/// Parses a port/code value like nebula 1.6.1 `parsePort` (+ the `start > end` check of
/// `addRule`): `any`, `fragment`, `N`, `a-b` (spaces around the dash allowed). Returns a warning
/// for values that can never match.
pub fn parse_port(s: &str) -> Result<(PortSpec, Option<String>), String> {
    match s {
        "any" => return Ok((PortSpec::Any, None)),
        "fragment" => return Ok((PortSpec::Fragment, None)),
        _ => {}
    }
    let Some((a, b)) = s.split_once('-') else {
        let n = go_atoi(s).ok_or_else(|| format!("{s:?} is not a port number"))?;
        return Ok(port_range(n, n));
    };
    let (a, b) = (a.trim_matches(' '), b.trim_matches(' '));
    if a.is_empty() || b.is_empty() {
        return Err(format!("{s:?} looks like a range but is not a-b"));
    }
    let start = go_atoi(a).ok_or_else(|| format!("range start {a:?} is not a number"))?;
    let end = go_atoi(b).ok_or_else(|| format!("range end {b:?} is not a number"))?;
    if start == 0 {
        return Ok((PortSpec::Any, None));
    }
    if start > end {
        return Err(format!("range {start}-{end} starts after it ends"));
    }
    Ok(port_range(start, end))
}

fn port_range(start: i64, end: i64) -> (PortSpec, Option<String>) {
    const MAX: i64 = 65535;
    match (start, end) {
        (0, _) => (PortSpec::Any, None),
        (s, _) if s > MAX => (
            PortSpec::Never,
            Some(format!("port {s} is above 65535 and never matches")),
        ),
        (s, e) if e > MAX => (
            PortSpec::Range {
                start: s as u16,
                end: MAX as u16,
            },
            Some(format!("range end {e} is above 65535; using 65535")),
        ),
        // Both within 1..=65535 here: start >= 1 (0 handled above, negatives cannot be written).
        (s, e) => (
            PortSpec::Range {
                start: s as u16,
                end: e as u16,
            },
            None,
        ),
    }
}

/// Go's `strconv.Atoi`: optional sign, ASCII decimal digits, fits in i64. Negative values are
/// refused here since no port spelling can produce one without a `-` range split first.
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Go's Atoi fails beyond i64 as well. (1.6.1 then truncates big values to int32, which could
    // land on an unrelated port; we treat every value above 65535 as never matching instead.)
    digits.parse::<i64>().ok()
}
