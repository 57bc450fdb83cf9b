//! Nebula reads every scalar rule field with Go's `fmt.Sprintf("%v", v)`: this renders a YAML
//! value the same way so that `port: 80`, `port: "80"` and `port: 80.0` all mean port 80, as they
//! do for nebula 1.6.1. Owns only that rendering; it must not decide what a field means.

use serde_yaml::Value;

/// Go's `%v` text of a decoded YAML value (`<nil>` for null, `[a b]` for lists, `map[k:v]` for maps).
pub(crate) fn go_text(v: &Value) -> String {
    let mut out = String::new();
    push_go_text(v, &mut out);
    out
}

/// A short human name for the kind of a YAML value, for error messages.
pub(crate) fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

fn push_go_text(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => push_number(n, out),
        Value::String(s) => out.push_str(s),
        Value::Sequence(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                push_go_text(item, out);
            }
            out.push(']');
        }
        Value::Mapping(m) => {
            // Go prints map entries sorted by key.
            let mut entries: Vec<(String, String)> =
                m.iter().map(|(k, v)| (go_text(k), go_text(v))).collect();
            entries.sort();
            out.push_str("map[");
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                out.push_str(v);
            }
            out.push(']');
        }
        Value::Tagged(t) => push_go_text(&t.value, out),
    }
}

fn push_number(n: &serde_yaml::Number, out: &mut String) {
    use std::fmt::Write;
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        push_float(f, out);
    }
}

/// Go's `%v` for a float64 uses the shortest representation and drops a zero fraction, so 80.0
/// prints as `80`; exponents appear from 1e21 up.
fn push_float(f: f64, out: &mut String) {
    use std::fmt::Write;
    if f.is_nan() {
        out.push_str("NaN");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "+Inf" } else { "-Inf" });
    } else if f.fract() == 0.0 && f.abs() < 1e21 {
        let _ = write!(out, "{}", f as i128);
    } else if f.abs() >= 1e21 {
        let _ = write!(out, "{f:e}");
    } else {
        let _ = write!(out, "{f}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(s: &str) -> Value {
        serde_yaml::from_str(s).expect("test yaml")
    }

    #[test]
    fn renders_like_go() {
        assert_eq!(go_text(&y("80")), "80");
        assert_eq!(go_text(&y("80.0")), "80");
        assert_eq!(go_text(&y("1.5")), "1.5");
        assert_eq!(go_text(&y("~")), "<nil>");
        assert_eq!(go_text(&y("true")), "true");
        assert_eq!(go_text(&y("[a, 1]")), "[a 1]");
        assert_eq!(go_text(&y("{b: 1, a: x}")), "map[a:x b:1]");
        assert_eq!(go_text(&y("-3")), "-3");
    }
}
