//! A small command-line flag parser with Go's `flag` package semantics, so meshd accepts exactly
//! what nebula and nebula-cert accept: `-name value`, `-name=value`, `--name value`, bool flags
//! without a value (`-json`, `-json=false`), parsing stops at the first non-flag or `--`, and
//! `-h`/`-help` ask for help when not defined. Also Go's duration syntax (`8760h`, `1.5s`) and
//! `PrintDefaults` help layout. Owns argument parsing only.

use std::collections::BTreeMap;

/// What a flag holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagValue {
    Str(String),
    Bool(bool),
    /// Nanoseconds, like Go's `time.Duration`.
    Duration(i64),
}

#[derive(Debug, Clone)]
struct FlagDef {
    default: FlagValue,
    usage: &'static str,
}

/// Why parsing stopped without success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagError {
    /// `-h` or `-help` was given and is not a defined flag.
    Help,
    /// A malformed command line; the message is worded as Go's flag package words it.
    Invalid(String),
}

/// A set of defined flags and, after `parse`, their values.
#[derive(Debug, Clone, Default)]
pub struct FlagSet {
    defs: BTreeMap<&'static str, FlagDef>,
    values: BTreeMap<&'static str, FlagValue>,
}

impl FlagSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn string(mut self, name: &'static str, default: &str, usage: &'static str) -> Self {
        self.define(name, FlagValue::Str(default.to_string()), usage);
        self
    }

    pub fn bool(mut self, name: &'static str, default: bool, usage: &'static str) -> Self {
        self.define(name, FlagValue::Bool(default), usage);
        self
    }

    /// A duration flag; `default` in nanoseconds.
    pub fn duration(mut self, name: &'static str, default: i64, usage: &'static str) -> Self {
        self.define(name, FlagValue::Duration(default), usage);
        self
    }

    /// Parses `args`; returns the arguments left after the flags.
    pub fn parse(&mut self, args: &[String]) -> Result<Vec<String>, FlagError> {
        let mut i = 0;
        while i < args.len() {
            let s = args[i].as_str();
            if s.len() < 2 || !s.starts_with('-') {
                break;
            }
            if s == "--" {
                i += 1;
                break;
            }
            let name_part = s.strip_prefix("--").unwrap_or(&s[1..]);
            if name_part.is_empty() || name_part.starts_with('-') || name_part.starts_with('=') {
                return Err(FlagError::Invalid(format!("bad flag syntax: {s}")));
            }
            i += 1;
            let (name, inline) = match name_part.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (name_part, None),
            };
            let Some((&key, def)) = self.defs.get_key_value(name) else {
                if name == "help" || name == "h" {
                    return Err(FlagError::Help);
                }
                return Err(FlagError::Invalid(format!(
                    "flag provided but not defined: -{name}"
                )));
            };
            let value = match (&def.default, inline) {
                (FlagValue::Bool(_), None) => FlagValue::Bool(true),
                (FlagValue::Bool(_), Some(v)) => {
                    FlagValue::Bool(parse_go_bool(&v).ok_or_else(|| {
                        FlagError::Invalid(format!(
                            "invalid boolean value {v:?} for -{name}: parse error"
                        ))
                    })?)
                }
                (kind, inline) => {
                    let v = match inline {
                        Some(v) => v,
                        None if i < args.len() => {
                            i += 1;
                            args[i - 1].clone()
                        }
                        None => {
                            return Err(FlagError::Invalid(format!(
                                "flag needs an argument: -{name}"
                            )))
                        }
                    };
                    match kind {
                        FlagValue::Duration(_) => {
                            FlagValue::Duration(parse_go_duration(&v).ok_or_else(|| {
                                FlagError::Invalid(format!(
                                    "invalid value {v:?} for flag -{name}: parse error"
                                ))
                            })?)
                        }
                        _ => FlagValue::Str(v),
                    }
                }
            };
            self.values.insert(key, value);
        }
        Ok(args[i..].to_vec())
    }

    /// The string value of `name` (its default when not given; "" for an undefined flag).
    pub fn get_str(&self, name: &str) -> &str {
        match self.value(name) {
            Some(FlagValue::Str(s)) => s,
            _ => "",
        }
    }

    pub fn get_bool(&self, name: &str) -> bool {
        matches!(self.value(name), Some(FlagValue::Bool(true)))
    }

    /// Nanoseconds.
    pub fn get_duration(&self, name: &str) -> i64 {
        match self.value(name) {
            Some(FlagValue::Duration(d)) => *d,
            _ => 0,
        }
    }

    /// True if the flag appeared on the command line.
    pub fn is_set(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// Go's `FlagSet.PrintDefaults` text: flags sorted by name, usage indented, defaults shown.
    pub fn defaults_text(&self) -> String {
        let mut out = String::new();
        for (name, def) in &self.defs {
            let mut line = format!("  -{name}");
            let (type_name, default) = match &def.default {
                FlagValue::Str(s) => ("string", (!s.is_empty()).then(|| format!("{s:?}"))),
                FlagValue::Bool(b) => ("", b.then(|| "true".to_string())),
                FlagValue::Duration(d) => ("duration", (*d != 0).then(|| go_duration_string(*d))),
            };
            if !type_name.is_empty() {
                line.push(' ');
                line.push_str(type_name);
            }
            line.push_str(if line.len() <= 4 { "\t" } else { "\n    \t" });
            line.push_str(&def.usage.replace('\n', "\n    \t"));
            if let Some(d) = default {
                line.push_str(&format!(" (default {d})"));
            }
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    fn define(&mut self, name: &'static str, default: FlagValue, usage: &'static str) {
        self.defs.insert(name, FlagDef { default, usage });
    }

    fn value(&self, name: &str) -> Option<&FlagValue> {
        self.values
            .get(name)
            .or_else(|| self.defs.get(name).map(|d| &d.default))
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

const NS_PER_UNIT: [(&str, u64); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),
    ("\u{3bc}s", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Go's `time.ParseDuration`: `[-+]?([0-9]*(\.[0-9]*)?unit)+` or `0`, in nanoseconds.
pub fn parse_go_duration(input: &str) -> Option<i64> {
    let (neg, mut s) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if s == "0" {
        return Some(0);
    }
    if s.is_empty() {
        return None;
    }
    const LIMIT: u64 = 1 << 63;
    let mut total: u64 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let int_digits = &s[..int_len];
        s = &s[int_len..];
        let mut frac_digits = "";
        if let Some(rest) = s.strip_prefix('.') {
            let n = rest.bytes().take_while(u8::is_ascii_digit).count();
            frac_digits = &rest[..n];
            s = &rest[n..];
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return None;
        }
        let unit_len = s
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(s.len(), |(i, _)| i);
        let unit = NS_PER_UNIT.iter().find(|(u, _)| *u == &s[..unit_len])?.1;
        s = &s[unit_len..];
        let whole: u64 = if int_digits.is_empty() {
            0
        } else {
            int_digits.parse().ok()?
        };
        let mut v = whole.checked_mul(unit).filter(|v| *v <= LIMIT)?;
        v = v
            .checked_add(fraction_ns(frac_digits, unit))
            .filter(|v| *v <= LIMIT)?;
        total = total.checked_add(v).filter(|t| *t <= LIMIT)?;
    }
    if neg {
        // -(2^63) is representable.
        return Some((total as i128).wrapping_neg() as i64);
    }
    i64::try_from(total).ok()
}

/// The fraction part of a duration component, as Go computes it (float, truncated).
fn fraction_ns(digits: &str, unit: u64) -> u64 {
    let mut f: u64 = 0;
    let mut scale = 1f64;
    let mut overflow = false;
    for b in digits.bytes() {
        if overflow {
            continue;
        }
        match f
            .checked_mul(10)
            .and_then(|x| x.checked_add(u64::from(b - b'0')))
        {
            Some(x) if x < 1 << 63 => {
                f = x;
                scale *= 10.0;
            }
            _ => overflow = true,
        }
    }
    if f == 0 {
        return 0;
    }
    (f as f64 * (unit as f64 / scale)) as u64
}

/// Go's `time.Duration.String` (e.g. `8760h0m0s`, `1.5s`, `300ms`).
pub fn go_duration_string(ns: i64) -> String {
    if ns == 0 {
        return "0s".to_string();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let u = ns.unsigned_abs();
    if u < 1_000_000_000 {
        let (unit, div) = match u {
            0..=999 => ("ns", 1),
            1_000..=999_999 => ("\u{b5}s", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{sign}{}{unit}", decimal(u, div));
    }
    let secs = decimal(u % 60_000_000_000, 1_000_000_000);
    let mins = u / 60_000_000_000;
    match (mins / 60, mins % 60) {
        (0, 0) => format!("{sign}{secs}s"),
        (0, m) => format!("{sign}{m}m{secs}s"),
        (h, m) => format!("{sign}{h}h{m}m{secs}s"),
    }
}

/// `v / div` with the fraction written out and trailing zeros dropped.
fn decimal(v: u64, div: u64) -> String {
    let whole = v / div;
    let frac = v % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    fn set() -> FlagSet {
        FlagSet::new()
            .string("name", "", "Required: a name")
            .string("out", "ca.crt", "Optional: where")
            .bool("json", false, "Optional: json")
            .duration("duration", 3_600_000_000_000, "Optional: how long")
    }

    #[test]
    fn go_flag_forms() {
        let mut f = set();
        let rest = f
            .parse(&args(&[
                "-name",
                "a",
                "--out=b",
                "-json",
                "-duration=1.5h",
                "x",
                "-y",
            ]))
            .unwrap();
        assert_eq!(rest, args(&["x", "-y"]));
        assert_eq!(
            (f.get_str("name"), f.get_str("out"), f.get_bool("json")),
            ("a", "b", true)
        );
        assert_eq!(f.get_duration("duration"), 5_400_000_000_000);
        let mut f = set();
        assert_eq!(
            f.parse(&args(&["-json=false", "--", "-name"])).unwrap(),
            args(&["-name"])
        );
        assert!(!f.get_bool("json") && f.is_set("json") && !f.is_set("name"));
        assert_eq!(f.get_str("out"), "ca.crt");
        assert_eq!(
            set().parse(&args(&["-", "-name"])).unwrap(),
            args(&["-", "-name"])
        );
    }

    #[test]
    fn go_flag_errors() {
        let err = |a: &[&str]| set().parse(&args(a)).unwrap_err();
        assert_eq!(err(&["-h"]), FlagError::Help);
        assert_eq!(err(&["--help"]), FlagError::Help);
        let invalid = |a: &[&str]| match err(a) {
            FlagError::Invalid(m) => m,
            FlagError::Help => panic!("help"),
        };
        assert_eq!(
            invalid(&["-bogus"]),
            "flag provided but not defined: -bogus"
        );
        assert_eq!(invalid(&["-name"]), "flag needs an argument: -name");
        assert_eq!(invalid(&["---name"]), "bad flag syntax: ---name");
        assert_eq!(invalid(&["-=x"]), "bad flag syntax: -=x");
        assert_eq!(
            invalid(&["-json=x"]),
            "invalid boolean value \"x\" for -json: parse error"
        );
        assert_eq!(
            invalid(&["-duration", "5"]),
            "invalid value \"5\" for flag -duration: parse error"
        );
    }

    #[test]
    fn durations_like_go() {
        let d = |s: &str| parse_go_duration(s);
        assert_eq!(d("0"), Some(0));
        assert_eq!(d("8760h"), Some(31_536_000_000_000_000));
        assert_eq!(d("1h30m"), Some(5_400_000_000_000));
        assert_eq!(d("-1s"), Some(-1_000_000_000));
        assert_eq!(d(".5s"), Some(500_000_000));
        assert_eq!(d("1.s"), Some(1_000_000_000));
        assert_eq!(d("2\u{b5}s"), Some(2_000));
        for bad in [
            "",
            "5",
            "1d",
            "h",
            ".s",
            "-",
            "1.5",
            "9999999999999h",
            "1s2",
        ] {
            assert_eq!(d(bad), None, "{bad}");
        }
        assert_eq!(go_duration_string(31_536_000_000_000_000), "8760h0m0s");
        assert_eq!(go_duration_string(1_500_000_000), "1.5s");
        assert_eq!(go_duration_string(61_000_000_000), "1m1s");
        assert_eq!(go_duration_string(1_500_000), "1.5ms");
    }

    #[test]
    fn defaults_layout() {
        let text = FlagSet::new()
            .bool("h", false, "short")
            .string("out", "x", "Optional: out")
            .duration("duration", 0, "how long")
            .defaults_text();
        assert_eq!(
            text,
            "  -duration duration\n    \thow long\n  -h\tshort\n  -out string\n    \tOptional: out (default \"x\")\n"
        );
    }
}
