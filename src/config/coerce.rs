//! Nebula's lenient scalar reading (`config/config.go` at v1.6.1): every scalar is first formatted
//! the way Go's `fmt.Sprintf("%v")` would, then parsed as an int, bool or Go duration. Pure string
//! functions; knows nothing about keys, defaults or warnings.

use std::time::Duration;

use serde_yaml::Value;

/// Formats a YAML scalar like Go's `%v` does for what yaml.v2 decoded. Maps and lists give `None`:
/// Go would print them as `map[..]`/`[..]`, which never parses as anything useful.
pub fn go_string(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Tagged(t) => go_string(&t.value),
        Value::Sequence(_) | Value::Mapping(_) => None,
    }
}

/// Go's `strconv.Atoi` on the `%v` text: optional sign, decimal digits only.
pub fn parse_go_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok()
}

/// Go's `strconv.ParseBool` after lowercasing, plus the `y/yes/n/no` Nebula adds. `on`/`off` are
/// accepted too because yaml.v2 (YAML 1.1) already turns unquoted `on`/`off` into booleans, which
/// serde_yaml (YAML 1.2) leaves as strings.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "y" | "yes" | "on" => Some(true),
        "0" | "f" | "false" | "n" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// A parsed Go duration that may be negative (Go allows it; meshd's callers decide what to do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration {
    pub negative: bool,
    pub magnitude: Duration,
}

/// Go's `time.ParseDuration`: `[-+]` then one or more `<decimal><unit>` with units
/// ns, us, µs, μs, ms, s, m, h; a lone `0` is allowed; a bare number is not.
pub fn parse_go_duration(s: &str) -> Option<GoDuration> {
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(GoDuration {
            negative,
            magnitude: Duration::ZERO,
        });
    }
    if rest.is_empty() {
        return None;
    }
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let (nanos, after) = parse_duration_term(rest)?;
        total_ns = total_ns.checked_add(nanos)?;
        rest = after;
    }
    // Go's Duration is an int64 of nanoseconds; anything larger is an overflow error there.
    if total_ns > i64::MAX as u128 {
        return None;
    }
    let magnitude = Duration::from_nanos(u64::try_from(total_ns).ok()?);
    Some(GoDuration {
        negative,
        magnitude,
    })
}

/// One `<decimal><unit>` term; returns its length in nanoseconds and the remaining text.
fn parse_duration_term(s: &str) -> Option<(u128, &str)> {
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, rest) = s.split_at(num_end);
    let (int_part, frac_part) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return None;
    }
    let unit_end = rest
        .find(|c: char| c.is_ascii_digit() || c == '.')
        .unwrap_or(rest.len());
    let (unit, rest) = rest.split_at(unit_end);
    let unit_ns: u128 = match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    };
    let int_val: u128 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().ok()?
    };
    let mut nanos = int_val.checked_mul(unit_ns)?;
    // Fractions: keep up to 18 digits, enough for nanosecond precision on every unit.
    let frac: String = frac_part.chars().take(18).collect();
    if !frac.is_empty() {
        let frac_val: u128 = frac.parse().ok()?;
        let scale = 10u128.pow(frac.len() as u32);
        nanos = nanos.checked_add(frac_val * unit_ns / scale)?;
    }
    Some((nanos, rest))
}

/// Formats a duration the way Go prints one (`12m0s`, `100ms`, `1h30m0s`), for messages.
pub fn format_go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000_000_000 {
        return match ns {
            n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
            n if n % 1_000 == 0 => format!("{}µs", n / 1_000),
            n => format!("{n}ns"),
        };
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let sub = d.subsec_nanos();
    let sec_text = if sub == 0 {
        format!("{s}s")
    } else {
        let frac = format!("{sub:09}");
        format!("{s}.{}s", frac.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => sec_text,
        (0, m) => format!("{m}m{sec_text}"),
        (h, m) => format!("{h}h{m}m{sec_text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dur(s: &str) -> Option<Duration> {
        parse_go_duration(s)
            .filter(|d| !d.negative)
            .map(|d| d.magnitude)
    }

    #[test]
    fn go_durations() {
        assert_eq!(dur("12m"), Some(Duration::from_secs(720)));
        assert_eq!(dur("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(dur("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(dur("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(dur(".5s"), Some(Duration::from_millis(500)));
        assert_eq!(dur("2s500ms"), Some(Duration::from_millis(2500)));
        assert_eq!(dur("10us"), Some(Duration::from_micros(10)));
        assert_eq!(dur("10µs"), Some(Duration::from_micros(10)));
        assert_eq!(dur("0"), Some(Duration::ZERO));
        assert_eq!(dur("+3s"), Some(Duration::from_secs(3)));
        assert!(parse_go_duration("-3s").unwrap().negative);
    }

    #[test]
    fn go_durations_rejected() {
        for bad in [
            "",
            "5",
            "60",
            "1d",
            "m",
            "1.2.3s",
            "s1",
            "1 s",
            "-",
            "1h 30m",
            "9999999999h",
        ] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn go_duration_formatting() {
        assert_eq!(format_go_duration(Duration::from_secs(720)), "12m0s");
        assert_eq!(format_go_duration(Duration::from_millis(100)), "100ms");
        assert_eq!(format_go_duration(Duration::from_secs(5400)), "1h30m0s");
        assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_go_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn go_bools() {
        for t in ["true", "TRUE", "True", "t", "1", "yes", "Y", "on", "ON"] {
            assert_eq!(parse_go_bool(t), Some(true), "{t}");
        }
        for f in ["false", "F", "0", "no", "N", "off"] {
            assert_eq!(parse_go_bool(f), Some(false), "{f}");
        }
        for bad in ["", "2", "maybe", "yess", "tru"] {
            assert_eq!(parse_go_bool(bad), None, "{bad}");
        }
    }

    #[test]
    fn go_ints() {
        assert_eq!(parse_go_int("4242"), Some(4242));
        assert_eq!(parse_go_int("+7"), Some(7));
        assert_eq!(parse_go_int("-7"), Some(-7));
        for bad in [
            "",
            "1.5",
            "0x10",
            "4242 ",
            "1e3",
            "+",
            "99999999999999999999",
        ] {
            assert_eq!(parse_go_int(bad), None, "{bad}");
        }
    }

    #[test]
    fn go_string_formats_scalars_like_percent_v() {
        assert_eq!(go_string(&Value::from(4242)).as_deref(), Some("4242"));
        assert_eq!(go_string(&Value::from(true)).as_deref(), Some("true"));
        assert_eq!(go_string(&Value::from("x")).as_deref(), Some("x"));
        assert_eq!(go_string(&Value::Null), None);
    }
}
