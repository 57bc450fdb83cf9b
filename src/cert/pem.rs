//! PEM armour with the exact acceptance rules of Go's `encoding/pem` (which Nebula 1.6.1 uses):
//! a block starts at `-----BEGIN <label>-----` at the start of the input or of a line, may carry
//! `Key: value` header lines, ends at `-----END <label>-----`; a block that looks right but fails
//! (wrong END, bad base64) is skipped and the search continues after its BEGIN line.
//! Pure: bytes in, bytes out. Knows the banners but not what the bodies mean.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use zeroize::Zeroizing;

pub const CERT_BANNER: &str = "NEBULA CERTIFICATE";
pub const X25519_PRIVATE_KEY_BANNER: &str = "NEBULA X25519 PRIVATE KEY";
pub const X25519_PUBLIC_KEY_BANNER: &str = "NEBULA X25519 PUBLIC KEY";
pub const ED25519_PRIVATE_KEY_BANNER: &str = "NEBULA ED25519 PRIVATE KEY";
pub const ED25519_PUBLIC_KEY_BANNER: &str = "NEBULA ED25519 PUBLIC KEY";

const BEGIN: &[u8] = b"-----BEGIN ";
const END: &[u8] = b"-----END ";
const DASHES: &[u8] = b"-----";

/// Go's StdEncoding: padding required, non-zero trailing bits tolerated.
const GO_STD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// One decoded PEM block. Headers are accepted but dropped (Nebula never writes any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemBlock {
    pub label: String,
    pub body: Vec<u8>,
}

/// Finds and decodes the first PEM block; returns it with the input that follows its END line.
pub fn decode(data: &[u8]) -> Option<(PemBlock, &[u8])> {
    let mut cursor = data;
    loop {
        match try_block(cursor) {
            Attempt::Found(block, rest) => return Some((block, rest)),
            Attempt::Retry(after) => cursor = after,
            Attempt::GiveUp => return None,
        }
    }
}

/// Encodes a block exactly like Go's `pem.EncodeToMemory` (64-column base64, trailing newline).
pub fn encode(label: &str, body: &[u8]) -> String {
    let b64 = GO_STD.encode(body);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every 64-byte chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// [`encode`] for private keys: the same bytes, with every intermediate buffer sized up front
/// (no reallocation leaves a copy behind) and wiped.
pub fn encode_secret(label: &str, body: &[u8]) -> Zeroizing<String> {
    let mut b64 = Zeroizing::new(String::with_capacity(body.len().div_ceil(3) * 4));
    GO_STD.encode_string(body, &mut b64);
    let lines = b64.len().div_ceil(64);
    let mut out = Zeroizing::new(String::with_capacity(
        2 * (label.len() + 17) + b64.len() + lines,
    ));
    for part in ["-----BEGIN ", label, "-----\n"] {
        out.push_str(part);
    }
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    for part in ["-----END ", label, "-----\n"] {
        out.push_str(part);
    }
    out
}

/// True if `rest` holds nothing but whitespace (Go's `strings.TrimSpace(rest) == ""`).
pub fn is_blank(rest: &[u8]) -> bool {
    match std::str::from_utf8(rest) {
        Ok(s) => s.trim().is_empty(),
        Err(_) => false,
    }
}

enum Attempt<'a> {
    Found(PemBlock, &'a [u8]),
    Retry(&'a [u8]),
    GiveUp,
}

fn try_block(data: &[u8]) -> Attempt<'_> {
    let Some(after_begin) = find_begin(data) else {
        return Attempt::GiveUp;
    };
    let (type_line, mut rest) = get_line(after_begin);
    let Some(label) = type_line.strip_suffix(DASHES) else {
        return Attempt::Retry(rest);
    };
    let mut had_headers = false;
    loop {
        if rest.is_empty() {
            return Attempt::GiveUp;
        }
        let (line, next) = get_line(rest);
        if !line.contains(&b':') {
            break;
        }
        had_headers = true;
        rest = next;
    }
    let (end_index, trailer_index) = if !had_headers && rest.starts_with(END) {
        (0, END.len())
    } else {
        match find(rest, b"\n-----END ") {
            Some(i) => (i, i + 1 + END.len()),
            None => return Attempt::Retry(rest),
        }
    };
    let trailer = &rest[trailer_index..];
    let trailer_len = label.len() + DASHES.len();
    if trailer.len() < trailer_len
        || !trailer[..trailer_len].starts_with(label)
        || !trailer[..trailer_len].ends_with(DASHES)
        || !get_line(&trailer[trailer_len..]).0.is_empty()
    {
        return Attempt::Retry(rest);
    }
    // The body may be a private key: sized once (no reallocation copies) and wiped after use.
    let mut b64 = Zeroizing::new(Vec::with_capacity(end_index));
    b64.extend(
        rest[..end_index]
            .iter()
            .copied()
            .filter(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n')),
    );
    let Ok(body) = GO_STD.decode(&b64[..]) else {
        return Attempt::Retry(rest);
    };
    let Ok(label) = String::from_utf8(label.to_vec()) else {
        // Go would accept a non-UTF-8 label, but no Nebula banner can match it anyway.
        return Attempt::Retry(rest);
    };
    let (_, after) = get_line(&trailer[trailer_len..]);
    Attempt::Found(PemBlock { label, body }, after)
}

fn find_begin(data: &[u8]) -> Option<&[u8]> {
    if let Some(after) = data.strip_prefix(BEGIN) {
        return Some(after);
    }
    find(data, b"\n-----BEGIN ").map(|i| &data[i + 1 + BEGIN.len()..])
}

/// Splits off one line; the line loses its `\r\n`/`\n` and trailing spaces and tabs.
fn get_line(data: &[u8]) -> (&[u8], &[u8]) {
    let (mut line, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let line = &data[..i];
            (line.strip_suffix(b"\r").unwrap_or(line), &data[i + 1..])
        }
        None => (data, &data[data.len()..]),
    };
    while let Some((last, init)) = line.split_last() {
        if *last != b' ' && *last != b'\t' {
            break;
        }
        line = init;
    }
    (line, rest)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rest() {
        let body: Vec<u8> = (0..=200).collect();
        let pem = encode(CERT_BANNER, &body);
        assert!(pem.lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
        let twice = format!("{pem}{pem}");
        let (b, rest) = decode(twice.as_bytes()).unwrap();
        assert_eq!(b.label, CERT_BANNER);
        assert_eq!(b.body, body);
        assert_eq!(rest, pem.as_bytes());
        let (_, rest) = decode(rest).unwrap();
        assert!(rest.is_empty() && is_blank(rest));
    }

    #[test]
    fn empty_body_and_crlf() {
        let (b, _) = decode(b"-----BEGIN X-----\r\n-----END X-----\r\n").unwrap();
        assert_eq!((b.label.as_str(), b.body.len()), ("X", 0));
        let (b, _) =
            decode(b"junk\n-----BEGIN A B-----\r\nAAEC\r\n-----END A B-----  \r\n").unwrap();
        assert_eq!(b.body, vec![0, 1, 2]);
    }

    #[test]
    fn bad_blocks_are_skipped() {
        assert!(decode(b"").is_none());
        assert!(decode(b"nothing here").is_none());
        assert!(decode(b"-----BEGIN X-----\nAAEC\n-----END Y-----\n").is_none());
        assert!(decode(b"-----BEGIN X-----\nAA!C\n-----END X-----\n").is_none());
        assert!(decode(b"-----BEGIN X-----\nAAE\n-----END X-----\n").is_none());
        let two =
            b"-----BEGIN X-----\nAA!C\n-----END X-----\n-----BEGIN Y-----\nAAEC\n-----END Y-----\n";
        assert_eq!(decode(two).unwrap().0.label, "Y");
        // a BEGIN that is not at a line start does not count
        assert!(decode(b"x-----BEGIN X-----\nAAEC\n-----END X-----\n").is_none());
    }
}
