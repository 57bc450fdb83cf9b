//! Lighthouse DNS (`dns_server.go` in 1.6.1), the pure part: parsing a DNS query datagram and
//! building the reply with A records for names the lighthouse knows (`<cert name>.` → the host's
//! VPN IP, added when its tunnel completes) and TXT records with the certificate of an established
//! peer asked for by VPN IP (`10.0.0.2.`), only for queriers inside the VPN network or 127.0.0.1,
//! as 1.6.1 does. The UDP server task lives in the daemon; this file must not touch sockets.
//!
//! Message layout (RFC 1035 §4.1), all integers big-endian:
//!
//! ```text
//!  0      2      4        6        8        10       12
//! +------+------+--------+--------+--------+--------+---------------------------------+
//! |  id  |flags |qdcount |ancount |nscount |arcount | questions: name, qtype, qclass  |
//! +------+------+--------+--------+--------+--------+---------------------------------+
//! flags: QR(15) opcode(14..11) AA TC RD(8) RA Z AD CD(4) rcode(3..0)
//! answer RR: name | type u16 | class u16 | ttl u32 | rdlength u16 | rdata (4 bytes for A)
//! ```

use std::net::Ipv4Addr;

use thiserror::Error;

/// Record types and class we handle.
pub const TYPE_A: u16 = 1;
pub const TYPE_TXT: u16 = 16;
pub const CLASS_IN: u16 = 1;
/// miekg/dns' default TTL for records built from text, which 1.6.1 uses.
pub const ANSWER_TTL: u32 = 3600;
/// More questions than this in one query is not worth answering.
const MAX_QUESTIONS: usize = 8;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DnsError {
    #[error("DNS message shorter than its header")]
    Short,
    #[error("DNS message is a response, not a query")]
    NotQuery,
    #[error("DNS query has {0} questions (at most {MAX_QUESTIONS} accepted)")]
    TooManyQuestions(u16),
    #[error("DNS question name is malformed")]
    BadName,
    #[error("DNS question is truncated")]
    Truncated,
}

/// One question: the name as text (`label.label.`, lower/upper case as sent), type and class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    /// Wire form of the name, echoed in the answer.
    pub wire_name: Vec<u8>,
    pub qtype: u16,
    pub qclass: u16,
}

/// A parsed query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    pub flags: u16,
    pub questions: Vec<Question>,
}

/// Parses a query datagram; hostile input yields an error, never a panic.
pub fn parse_query(b: &[u8]) -> Result<Query, DnsError> {
    if b.len() < 12 {
        return Err(DnsError::Short);
    }
    let id = u16::from_be_bytes([b[0], b[1]]);
    let flags = u16::from_be_bytes([b[2], b[3]]);
    if flags & 0x8000 != 0 {
        return Err(DnsError::NotQuery);
    }
    let qd = u16::from_be_bytes([b[4], b[5]]);
    if usize::from(qd) > MAX_QUESTIONS {
        return Err(DnsError::TooManyQuestions(qd));
    }
    let mut pos = 12;
    let mut questions = Vec::with_capacity(usize::from(qd));
    for _ in 0..qd {
        let (name, wire_name, next) = read_name(b, pos)?;
        let fixed = b.get(next..next + 4).ok_or(DnsError::Truncated)?;
        questions.push(Question {
            name,
            wire_name,
            qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
            qclass: u16::from_be_bytes([fixed[2], fixed[3]]),
        });
        pos = next + 4;
    }
    Ok(Query {
        id,
        flags,
        questions,
    })
}

/// Reads an uncompressed name at `pos`: its text form, wire bytes and the offset after it.
/// Queries have no reason to use compression pointers, so they are refused.
fn read_name(b: &[u8], mut pos: usize) -> Result<(String, Vec<u8>, usize), DnsError> {
    let start = pos;
    let mut text = String::new();
    loop {
        let len = usize::from(*b.get(pos).ok_or(DnsError::Truncated)?);
        if len == 0 {
            pos += 1;
            break;
        }
        // 255 bytes of wire form at most, counting the root label's zero byte (RFC 1035 §3.1).
        if len > 63 || pos - start + 1 + len + 1 > 255 {
            return Err(DnsError::BadName);
        }
        let label = b.get(pos + 1..pos + 1 + len).ok_or(DnsError::Truncated)?;
        for &c in label {
            push_escaped(&mut text, c);
        }
        text.push('.');
        pos += 1 + len;
    }
    if text.is_empty() {
        text.push('.');
    }
    Ok((text, b[start..pos].to_vec(), pos))
}

/// Presentation form like miekg/dns: `\.`/`\\` and `\DDD` for non-printable bytes.
fn push_escaped(out: &mut String, c: u8) {
    match c {
        b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b' ' | b'@' | b'$' => {
            out.push('\\');
            out.push(char::from(c));
        }
        0x21..=0x7e => out.push(char::from(c)),
        _ => out.push_str(&format!("\\{c:03}")),
    }
}

/// Builds the reply to `q`: every A question whose name `lookup` knows gets one A record; other
/// questions get nothing; rcode is always NOERROR (as 1.6.1).
pub fn build_answer(q: &Query, lookup: impl Fn(&str) -> Option<Ipv4Addr>) -> Vec<u8> {
    let answers: Vec<(&Question, u16, Vec<u8>)> = q
        .questions
        .iter()
        .filter(|qu| qu.qtype == TYPE_A)
        .filter_map(|qu| lookup(&qu.name).map(|ip| (qu, TYPE_A, ip.octets().to_vec())))
        .collect();
    build_reply(q, &answers)
}

/// The reply to `q` carrying `answers` (question, record type, rdata), NOERROR.
pub fn build_reply(q: &Query, answers: &[(&Question, u16, Vec<u8>)]) -> Vec<u8> {
    // Reply: QR set, opcode, RD and CD copied from the query (miekg's SetReply).
    let flags = 0x8000 | (q.flags & 0x7800) | (q.flags & 0x0100) | (q.flags & 0x0010);
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&q.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&(q.questions.len() as u16).to_be_bytes());
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    for qu in &q.questions {
        out.extend_from_slice(&qu.wire_name);
        out.extend_from_slice(&qu.qtype.to_be_bytes());
        out.extend_from_slice(&qu.qclass.to_be_bytes());
    }
    for (qu, rtype, rdata) in answers {
        out.extend_from_slice(&qu.wire_name);
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&ANSWER_TTL.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(rdata);
    }
    out
}

/// 1.6.1's TXT text for a certificate, one DNS character-string per quoted part:
/// `Name: n`, `Ips: [a/p ...]`, `Subnets [..]`, `Groups [..]`, `NotBefore <time>`,
/// `NotAFter <time>` (sic), `PublicKey <hex>`, `IsCA <bool>`, `Issuer <hex>`. Times are Go's
/// `Time.String()` in UTC (1.6.1 uses the lighthouse's local zone; the node has no clock zone).
/// `None` where 1.6.1's zone-file parse of the text would fail (a quote or backslash inside).
pub fn cert_txt(cert: &crate::cert::NebulaCertificate) -> Option<Vec<String>> {
    let list = |items: Vec<String>| format!("[{}]", items.join(" "));
    let parts = vec![
        format!("Name: {}", cert.name()),
        format!(
            "Ips: {}",
            list(cert.ips().iter().map(|n| n.to_string()).collect())
        ),
        format!(
            "Subnets {}",
            list(cert.subnets().iter().map(|n| n.to_string()).collect())
        ),
        format!("Groups {}", list(cert.groups().to_vec())),
        format!("NotBefore {}", go_time_utc(cert.not_before())),
        format!("NotAFter {}", go_time_utc(cert.not_after())),
        format!("PublicKey {}", hex::encode(cert.public_key())),
        format!("IsCA {}", cert.is_ca()),
        format!(
            "Issuer {}",
            cert.issuer().map(|f| f.to_string()).unwrap_or_default()
        ),
    ];
    parts
        .iter()
        .all(|p| !p.contains('"') && !p.contains('\\'))
        .then_some(parts)
}

/// TXT rdata: each string as length-prefixed character-strings of at most 255 bytes.
fn txt_rdata(parts: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        let bytes = p.as_bytes();
        if bytes.is_empty() {
            out.push(0);
        }
        for chunk in bytes.chunks(255) {
            out.push(chunk.len() as u8);
            out.extend_from_slice(chunk);
        }
    }
    out
}

/// Go's `Time.String()` of `time.Unix(secs, 0).UTC()`: `2006-01-02 15:04:05 +0000 UTC`.
fn go_time_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} +0000 UTC",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

impl super::Node {
    /// Records `<cert name>.` → `vpn_ip` (bounded by `max_hosts`; never removed, as 1.6.1).
    pub(super) fn add_dns_record(&mut self, vpn_ip: super::VpnIp) {
        let Some(h) = self.hostmap.host(vpn_ip) else {
            return;
        };
        let name = format!("{}.", h.peer.name);
        let dns = &mut self.lh.dns;
        if dns.contains_key(&name) || dns.len() < self.config.max_hosts {
            dns.insert(name, vpn_ip);
        }
    }

    /// The VPN IP recorded for a DNS name (`name.` exactly as asked).
    pub fn dns_lookup(&self, name: &str) -> Option<Ipv4Addr> {
        self.lh.dns.get(name).map(|ip| ip.addr())
    }

    /// Answers a DNS query datagram from the lighthouse records (`lighthouse.serve_dns`), as
    /// for a querier outside the VPN network (A records only).
    pub fn dns_answer(&self, query: &[u8]) -> Result<Vec<u8>, DnsError> {
        self.dns_answer_from(query, std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    /// Answers a query from `from`: A records for certificate names, and TXT records with the
    /// certificate of an established peer named by VPN IP. As 1.6.1, a TXT question from outside
    /// the VPN network (127.0.0.1 aside) ends the answering: earlier answers are still sent.
    pub fn dns_answer_from(
        &self,
        query: &[u8],
        from: std::net::IpAddr,
    ) -> Result<Vec<u8>, DnsError> {
        let q = parse_query(query)?;
        let trusted = match from.to_canonical() {
            std::net::IpAddr::V4(ip) => {
                ip == Ipv4Addr::LOCALHOST || self.identity.vpn_net.contains(ip)
            }
            std::net::IpAddr::V6(_) => false,
        };
        let mut answers = Vec::new();
        for qu in &q.questions {
            match qu.qtype {
                TYPE_A => {
                    if let Some(ip) = self.dns_lookup(&qu.name) {
                        answers.push((qu, TYPE_A, ip.octets().to_vec()));
                    }
                }
                TYPE_TXT if !trusted => break,
                TYPE_TXT => {
                    if let Some(parts) = self.cert_txt_for(&qu.name) {
                        answers.push((qu, TYPE_TXT, txt_rdata(&parts)));
                    }
                }
                _ => {}
            }
        }
        Ok(build_reply(&q, &answers))
    }

    /// The TXT parts for `10.0.0.2.`: an established peer's certificate.
    fn cert_txt_for(&self, name: &str) -> Option<Vec<String>> {
        let ip: Ipv4Addr = name.strip_suffix('.')?.parse().ok()?;
        let host = self.hostmap.host(super::VpnIp::from(ip))?;
        cert_txt(host.peer.cert.as_deref()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dig host1 A` as sent by dig: id 0xbeef, RD set, one question.
    fn query_bytes(name: &str, qtype: u16) -> Vec<u8> {
        let mut b = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.').filter(|l| !l.is_empty()) {
            b.push(l.len() as u8);
            b.extend_from_slice(l.as_bytes());
        }
        b.push(0);
        b.extend_from_slice(&qtype.to_be_bytes());
        b.extend_from_slice(&1u16.to_be_bytes());
        b
    }

    #[test]
    fn parse_and_answer_a_exact_bytes() {
        let q = parse_query(&query_bytes("host1", TYPE_A)).unwrap();
        assert_eq!(q.questions[0].name, "host1.");
        let ans = build_answer(&q, |n| {
            (n == "host1.").then_some(Ipv4Addr::new(10, 0, 0, 7))
        });
        let expected = hex::decode(concat!(
            "beef",
            "8100",
            "0001",
            "0001",
            "0000",
            "0000", // header: QR|RD, 1 q, 1 answer
            "05686f73743100",
            "0001",
            "0001", // question echoed
            "05686f73743100",
            "0001",
            "0001",
            "00000e10",
            "0004",
            "0a000007"
        ))
        .unwrap();
        assert_eq!(ans, expected);
    }

    #[test]
    fn unknown_name_and_other_types_get_no_answer() {
        let q = parse_query(&query_bytes("nobody", TYPE_A)).unwrap();
        let ans = build_answer(&q, |_| None);
        assert_eq!(&ans[6..8], &[0, 0], "ancount 0");
        assert_eq!(&ans[2..4], &[0x81, 0x00], "NOERROR");
        let q = parse_query(&query_bytes("host1", 16)).unwrap();
        let ans = build_answer(&q, |_| Some(Ipv4Addr::LOCALHOST));
        assert_eq!(&ans[6..8], &[0, 0], "TXT not answered with A");
    }

    #[test]
    fn case_is_kept_and_lookup_is_exact() {
        let q = parse_query(&query_bytes("Host1", TYPE_A)).unwrap();
        assert_eq!(q.questions[0].name, "Host1.");
    }

    #[test]
    fn name_limit_counts_the_root_byte() {
        // Found by the dns_query fuzz target: 255 bytes of labels plus the root byte passed.
        let l63 = "a".repeat(63);
        let longest = format!("{l63}.{l63}.{l63}.{}", "b".repeat(61));
        let q = parse_query(&query_bytes(&longest, TYPE_A)).unwrap();
        assert_eq!(q.questions[0].wire_name.len(), 255);
        let over = format!("{l63}.{l63}.{l63}.{}", "b".repeat(62));
        assert_eq!(
            parse_query(&query_bytes(&over, TYPE_A)),
            Err(DnsError::BadName)
        );
    }

    #[test]
    fn hostile_queries_are_errors() {
        assert_eq!(parse_query(&[0; 5]), Err(DnsError::Short));
        let mut resp = query_bytes("a", TYPE_A);
        resp[2] |= 0x80;
        assert_eq!(parse_query(&resp), Err(DnsError::NotQuery));
        let mut trunc = query_bytes("abc", TYPE_A);
        trunc.truncate(15);
        assert_eq!(parse_query(&trunc), Err(DnsError::Truncated));
        let mut ptr = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1];
        assert_eq!(parse_query(&ptr), Err(DnsError::BadName));
        ptr[5] = 200;
        assert_eq!(parse_query(&ptr), Err(DnsError::TooManyQuestions(200)));
        let mut weird = query_bytes("a", TYPE_A);
        weird[13] = 0x01;
        assert_eq!(parse_query(&weird).unwrap().questions[0].name, "\\001.");
    }
}
