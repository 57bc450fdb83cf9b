//! Human and JSON renderings of a certificate, byte-identical to `nebula-cert print` (1.6.1):
//! Go's `NebulaCertificate.String()` and `MarshalJSON` (keys sorted, Go's string escaping, times
//! as Go's `time.Time` prints them). The time zone is a parameter because nebula-cert prints in
//! the machine's local zone; this module never asks the OS.

use std::fmt::Write as _;

use super::certificate::NebulaCertificate;
use crate::net::Ipv4Net;

/// A zone's offset and abbreviation at some instant (e.g. `3600`, `"CET"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneOffset {
    pub seconds_east: i32,
    /// Go prints the numeric offset instead when this is empty.
    pub abbrev: String,
}

/// Maps a unix time to the local zone's offset at that time.
pub trait TimeZone {
    fn offset_at(&self, unix: i64) -> ZoneOffset;
}

/// Coordinated Universal Time (`+0000 UTC`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Utc;

impl TimeZone for Utc {
    fn offset_at(&self, _unix: i64) -> ZoneOffset {
        ZoneOffset {
            seconds_east: 0,
            abbrev: "UTC".to_string(),
        }
    }
}

impl NebulaCertificate {
    /// `nebula-cert print` text form (without the trailing newline the tool adds).
    pub fn to_text(&self, tz: &dyn TimeZone) -> String {
        let d = self.details();
        let mut s = String::from("NebulaCertificate {\n\tDetails {\n");
        let _ = writeln!(s, "\t\tName: {}", d.name);
        list(&mut s, "Ips", d.ips.iter().map(Ipv4Net::to_string));
        list(&mut s, "Subnets", d.subnets.iter().map(Ipv4Net::to_string));
        list(
            &mut s,
            "Groups",
            d.groups.iter().map(|g| format!("\"{g}\"")),
        );
        let _ = writeln!(s, "\t\tNot before: {}", go_time_string(d.not_before, tz));
        let _ = writeln!(s, "\t\tNot After: {}", go_time_string(d.not_after, tz));
        let _ = writeln!(s, "\t\tIs CA: {}", d.is_ca);
        let issuer = d.issuer.map(|f| f.to_string()).unwrap_or_default();
        let _ = writeln!(s, "\t\tIssuer: {issuer}");
        let _ = writeln!(s, "\t\tPublic key: {}", hex::encode(d.public_key));
        s.push_str("\t}\n");
        let _ = writeln!(s, "\tFingerprint: {}", self.fingerprint());
        let _ = writeln!(s, "\tSignature: {}", hex::encode(self.signature()));
        s.push('}');
        s
    }

    /// `nebula-cert print -json` form (one line, no newline). Go's encoder refuses times outside
    /// years 0..=9999 and nebula-cert then prints nothing; this returns "" in that case too.
    pub fn to_json(&self, tz: &dyn TimeZone) -> String {
        let d = self.details();
        let (Some(not_after), Some(not_before)) =
            (go_rfc3339(d.not_after, tz), go_rfc3339(d.not_before, tz))
        else {
            return String::new();
        };
        let strings = |items: Vec<String>| {
            let quoted: Vec<String> = items.iter().map(|i| json_string(i)).collect();
            format!("[{}]", quoted.join(","))
        };
        let mut s = String::from("{\"details\":{");
        let _ = write!(s, "\"groups\":{},", strings(d.groups.clone()));
        let _ = write!(
            s,
            "\"ips\":{},",
            strings(d.ips.iter().map(Ipv4Net::to_string).collect())
        );
        let _ = write!(s, "\"isCa\":{},", d.is_ca);
        let issuer = d.issuer.map(|f| f.to_string()).unwrap_or_default();
        let _ = write!(s, "\"issuer\":{},", json_string(&issuer));
        let _ = write!(s, "\"name\":{},", json_string(&d.name));
        let _ = write!(s, "\"notAfter\":{},", json_string(&not_after));
        let _ = write!(s, "\"notBefore\":{},", json_string(&not_before));
        let _ = write!(s, "\"publicKey\":\"{}\",", hex::encode(d.public_key));
        let subnets = d.subnets.iter().map(Ipv4Net::to_string).collect();
        let _ = write!(s, "\"subnets\":{}}},", strings(subnets));
        let _ = write!(s, "\"fingerprint\":\"{}\",", self.fingerprint());
        let _ = write!(s, "\"signature\":\"{}\"}}", hex::encode(self.signature()));
        s
    }
}

fn list(s: &mut String, label: &str, items: impl Iterator<Item = String>) {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        let _ = writeln!(s, "\t\t{label}: []");
        return;
    }
    let _ = writeln!(s, "\t\t{label}: [");
    for item in items {
        let _ = writeln!(s, "\t\t\t{item}");
    }
    s.push_str("\t\t]\n");
}

/// Broken-down civil time in some zone.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    offset: ZoneOffset,
}

fn civil(unix: i64, tz: &dyn TimeZone) -> Civil {
    let offset = tz.offset_at(unix);
    let local = i128::from(unix) + i128::from(offset.seconds_east);
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400) as u32; // 0..86400 fits
                                                // Howard Hinnant's days-to-civil, in i128 so no input can overflow.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32; // 1..=31
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // 1..=12
    let year = yoe + era * 400 + i128::from(month <= 2);
    Civil {
        year: i64::try_from(year).unwrap_or(i64::MAX),
        month,
        day,
        hour: secs / 3600,
        minute: secs / 60 % 60,
        second: secs % 60,
        offset,
    }
}

/// Go's `time.Time.String()` for a whole-second time: `2026-11-25 13:51:48 +0000 UTC`.
fn go_time_string(unix: i64, tz: &dyn TimeZone) -> String {
    let c = civil(unix, tz);
    let year = if c.year < 0 {
        format!("-{:04}", c.year.unsigned_abs())
    } else {
        format!("{:04}", c.year)
    };
    let east = c.offset.seconds_east;
    let sign = if east < 0 { '-' } else { '+' };
    let mins = east.unsigned_abs() / 60;
    let zone = if c.offset.abbrev.is_empty() {
        format!("{sign}{:02}{:02}", mins / 60, mins % 60)
    } else {
        c.offset.abbrev.clone()
    };
    format!(
        "{year}-{:02}-{:02} {:02}:{:02}:{:02} {sign}{:02}{:02} {zone}",
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        mins / 60,
        mins % 60
    )
}

/// Go's `time.Time.MarshalJSON` (RFC 3339); `None` where Go errors (year outside 0..=9999).
fn go_rfc3339(unix: i64, tz: &dyn TimeZone) -> Option<String> {
    let c = civil(unix, tz);
    if !(0..=9999).contains(&c.year) {
        return None;
    }
    let east = c.offset.seconds_east;
    let zone = if east == 0 {
        "Z".to_string()
    } else {
        let mins = east.unsigned_abs() / 60;
        let sign = if east < 0 { '-' } else { '+' };
        format!("{sign}{:02}:{:02}", mins / 60, mins % 60)
    };
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{zone}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    ))
}

/// A JSON string escaped the way Go's `encoding/json` does (HTML-safe, U+2028/2029 escaped).
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{0}'..='\u{1f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(i32, &'static str);
    impl TimeZone for Fixed {
        fn offset_at(&self, _: i64) -> ZoneOffset {
            ZoneOffset {
                seconds_east: self.0,
                abbrev: self.1.to_string(),
            }
        }
    }

    #[test]
    fn go_time_formats() {
        assert_eq!(
            go_time_string(1795607957, &Utc),
            "2026-11-25 11:59:17 +0000 UTC"
        );
        assert_eq!(
            go_time_string(0, &Fixed(3600, "CET")),
            "1970-01-01 01:00:00 +0100 CET"
        );
        assert_eq!(
            go_time_string(0, &Fixed(-16200, "")),
            "1969-12-31 19:30:00 -0430 -0430"
        );
        assert_eq!(
            go_rfc3339(951_782_400, &Utc).unwrap(),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            go_rfc3339(0, &Fixed(-16200, "x")).unwrap(),
            "1969-12-31T19:30:00-04:30"
        );
        assert_eq!(go_rfc3339(253_402_300_800, &Utc), None); // year 10000
        assert_eq!(
            go_rfc3339(-62_167_219_200, &Utc).unwrap(),
            "0000-01-01T00:00:00Z"
        );
        // extremes must not panic
        let _ = go_time_string(i64::MIN, &Fixed(-50000, ""));
        let _ = go_time_string(i64::MAX, &Fixed(50000, ""));
    }

    #[test]
    fn json_escaping_like_go() {
        assert_eq!(
            json_string("a\"b\\<>&\u{8}\n\u{2028}é"),
            r#""a\"b\\\u003c\u003e\u0026\u0008\n\u2028é""#
        );
    }
}
