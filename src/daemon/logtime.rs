//! Log timestamps as `logging.timestamp_format` asks: a Go time layout (reference time
//! `Mon Jan 2 15:04:05 MST 2006`) parsed once into chunks and rendered in local time, as logrus
//! does. Owns only the layout and the clock read for a log line.

use std::fmt;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// One piece of a Go layout.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Chunk {
    Lit(String),
    Year4,
    Year2,
    MonthName,
    MonthAbbr,
    Month2,
    Month1,
    WeekdayName,
    WeekdayAbbr,
    Day2,
    DaySpace,
    Day1,
    Hour24,
    Hour12Pad,
    Hour12,
    Minute2,
    Minute1,
    Second2,
    Second1,
    PmUpper,
    PmLower,
    ZoneName,
    /// `Z07:00` (`z` = write Z for UTC), `-07:00`, `-0700`, `Z0700`, `-07`.
    Offset {
        z: bool,
        colon: bool,
        minutes: bool,
    },
    /// `.000` (fixed) or `.999` (trailing zeros trimmed), `digits` long.
    Fraction {
        sep: char,
        digits: usize,
        trim: bool,
    },
}

/// A parsed Go time layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoLayout {
    chunks: Vec<Chunk>,
}

/// Longest first where one token is a prefix of another.
const TOKENS: &[(&str, Chunk)] = &[
    ("January", Chunk::MonthName),
    ("Jan", Chunk::MonthAbbr),
    ("Monday", Chunk::WeekdayName),
    ("Mon", Chunk::WeekdayAbbr),
    ("MST", Chunk::ZoneName),
    ("2006", Chunk::Year4),
    (
        "Z07:00",
        Chunk::Offset {
            z: true,
            colon: true,
            minutes: true,
        },
    ),
    (
        "Z0700",
        Chunk::Offset {
            z: true,
            colon: false,
            minutes: true,
        },
    ),
    (
        "-07:00",
        Chunk::Offset {
            z: false,
            colon: true,
            minutes: true,
        },
    ),
    (
        "-0700",
        Chunk::Offset {
            z: false,
            colon: false,
            minutes: true,
        },
    ),
    (
        "-07",
        Chunk::Offset {
            z: false,
            colon: false,
            minutes: false,
        },
    ),
    ("01", Chunk::Month2),
    ("02", Chunk::Day2),
    ("_2", Chunk::DaySpace),
    ("03", Chunk::Hour12Pad),
    ("04", Chunk::Minute2),
    ("05", Chunk::Second2),
    ("06", Chunk::Year2),
    ("15", Chunk::Hour24),
    ("PM", Chunk::PmUpper),
    ("pm", Chunk::PmLower),
    ("1", Chunk::Month1),
    ("2", Chunk::Day1),
    ("3", Chunk::Hour12),
    ("4", Chunk::Minute1),
    ("5", Chunk::Second1),
];

impl GoLayout {
    /// Any text is a layout (Go prints what it does not recognise as is).
    pub fn parse(layout: &str) -> GoLayout {
        let mut chunks = Vec::new();
        let mut lit = String::new();
        let mut rest = layout;
        while !rest.is_empty() {
            if let Some((len, chunk)) = fraction(rest).or_else(|| token(rest)) {
                if !lit.is_empty() {
                    chunks.push(Chunk::Lit(std::mem::take(&mut lit)));
                }
                chunks.push(chunk);
                rest = &rest[len..];
                continue;
            }
            let c = rest.chars().next().unwrap_or_default();
            lit.push(c);
            rest = &rest[c.len_utf8()..];
        }
        if !lit.is_empty() {
            chunks.push(Chunk::Lit(lit));
        }
        GoLayout { chunks }
    }

    /// Renders `t` (broken-down local time plus nanoseconds).
    fn render(&self, t: &LocalTime, out: &mut impl fmt::Write) -> fmt::Result {
        for c in &self.chunks {
            render_chunk(c, t, out)?;
        }
        Ok(())
    }

    /// The layout applied to a given instant (tests and `-test` previews).
    pub fn format_unix(&self, secs: i64, nanos: u32) -> String {
        let mut s = String::new();
        let _ = self.render(&LocalTime::at(secs, nanos), &mut s);
        s
    }
}

fn token(s: &str) -> Option<(usize, Chunk)> {
    TOKENS
        .iter()
        .find(|(t, _)| s.starts_with(t))
        .map(|(t, c)| (t.len(), c.clone()))
}

/// `.000…` or `.999…` (also with `,`), only when not followed by another digit.
fn fraction(s: &str) -> Option<(usize, Chunk)> {
    let mut chars = s.chars();
    let sep = chars.next().filter(|c| *c == '.' || *c == ',')?;
    let digit = chars.next().filter(|c| *c == '0' || *c == '9')?;
    let n = 1 + s[2..].chars().take_while(|c| *c == digit).count();
    if s[1 + n..].starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some((
        1 + n,
        Chunk::Fraction {
            sep,
            digits: n.min(9),
            trim: digit == '9',
        },
    ))
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

fn render_chunk(c: &Chunk, t: &LocalTime, out: &mut impl fmt::Write) -> fmt::Result {
    let h12 = match t.hour % 12 {
        0 => 12,
        h => h,
    };
    match c {
        Chunk::Lit(s) => out.write_str(s),
        Chunk::Year4 => write!(out, "{:04}", t.year),
        Chunk::Year2 => write!(out, "{:02}", t.year.rem_euclid(100)),
        Chunk::MonthName => out.write_str(MONTHS[t.month0 % 12]),
        Chunk::MonthAbbr => out.write_str(&MONTHS[t.month0 % 12][..3]),
        Chunk::Month2 => write!(out, "{:02}", t.month0 + 1),
        Chunk::Month1 => write!(out, "{}", t.month0 + 1),
        Chunk::WeekdayName => out.write_str(DAYS[t.weekday % 7]),
        Chunk::WeekdayAbbr => out.write_str(&DAYS[t.weekday % 7][..3]),
        Chunk::Day2 => write!(out, "{:02}", t.day),
        Chunk::DaySpace => write!(out, "{:>2}", t.day),
        Chunk::Day1 => write!(out, "{}", t.day),
        Chunk::Hour24 => write!(out, "{:02}", t.hour),
        Chunk::Hour12Pad => write!(out, "{h12:02}"),
        Chunk::Hour12 => write!(out, "{h12}"),
        Chunk::Minute2 => write!(out, "{:02}", t.minute),
        Chunk::Minute1 => write!(out, "{}", t.minute),
        Chunk::Second2 => write!(out, "{:02}", t.second),
        Chunk::Second1 => write!(out, "{}", t.second),
        Chunk::PmUpper => out.write_str(if t.hour >= 12 { "PM" } else { "AM" }),
        Chunk::PmLower => out.write_str(if t.hour >= 12 { "pm" } else { "am" }),
        Chunk::ZoneName => out.write_str(&t.zone),
        Chunk::Offset { z, colon, minutes } => {
            if *z && t.offset_secs == 0 {
                return out.write_char('Z');
            }
            let sign = if t.offset_secs < 0 { '-' } else { '+' };
            let off = t.offset_secs.unsigned_abs();
            write!(out, "{sign}{:02}", off / 3600)?;
            match (minutes, colon) {
                (false, _) => Ok(()),
                (true, true) => write!(out, ":{:02}", (off / 60) % 60),
                (true, false) => write!(out, "{:02}", (off / 60) % 60),
            }
        }
        Chunk::Fraction { sep, digits, trim } => {
            let frac = format!("{:09}", t.nanos);
            let mut shown = &frac[..*digits];
            if *trim {
                shown = shown.trim_end_matches('0');
                if shown.is_empty() {
                    return Ok(());
                }
            }
            write!(out, "{sep}{shown}")
        }
    }
}

/// Broken-down local time (the process's time zone, as Go's `time.Now()` gives logrus).
struct LocalTime {
    year: i64,
    month0: usize,
    day: u32,
    weekday: usize,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
    offset_secs: i64,
    zone: String,
}

impl LocalTime {
    fn now() -> LocalTime {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        LocalTime::at(d.as_secs() as i64, d.subsec_nanos())
    }

    fn at(secs: i64, nanos: u32) -> LocalTime {
        let t = secs as libc::time_t;
        // SAFETY: localtime_r writes only into `tm`, which lives across the call; a zeroed tm
        // is a valid value of the plain C struct.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        let ok = !unsafe { libc::localtime_r(&t, &mut tm) }.is_null();
        if !ok {
            tm = unsafe { std::mem::zeroed() };
        }
        let zone = if tm.tm_zone.is_null() {
            String::new()
        } else {
            // SAFETY: tm_zone points at a NUL-terminated static string owned by libc.
            unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) }
                .to_string_lossy()
                .into_owned()
        };
        LocalTime {
            year: i64::from(tm.tm_year) + 1900,
            month0: tm.tm_mon.clamp(0, 11) as usize,
            day: tm.tm_mday.max(0) as u32,
            weekday: tm.tm_wday.clamp(0, 6) as usize,
            hour: tm.tm_hour.max(0) as u32,
            minute: tm.tm_min.max(0) as u32,
            second: tm.tm_sec.max(0) as u32,
            nanos,
            offset_secs: tm.tm_gmtoff,
            zone,
        }
    }
}

impl FormatTime for GoLayout {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        self.render(&LocalTime::now(), w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_layouts_render_like_go() {
        // TZ is the process's; the test sets none, so compare within the local offset.
        let t = LocalTime::at(1_136_239_445, 123_456_789);
        let l = GoLayout::parse("2006-01-02 15:04:05.000 Jan Mon _2 3PM 06 .999999999 ,00");
        let s = l.format_unix(1_136_239_445, 123_456_789);
        let want = format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.123 {} {} {:>2} ",
            t.year,
            t.month0 + 1,
            t.day,
            t.hour,
            t.minute,
            t.second,
            &MONTHS[t.month0][..3],
            &DAYS[t.weekday][..3],
            t.day
        );
        assert!(s.starts_with(&want), "{s} vs {want}");
        assert!(s.ends_with(" .123456789 ,12"), "{s}");
        assert_eq!(
            GoLayout::parse("x.999").format_unix(0, 0),
            "x",
            "trimmed fraction of zero vanishes"
        );
        assert_eq!(
            GoLayout::parse("plain text!").format_unix(0, 0),
            "plain text!"
        );
        let rfc = GoLayout::parse("Z07:00").format_unix(0, 0);
        assert!(rfc == "Z" || rfc.len() == 6, "{rfc}");
    }
}
