//! Fuzz the lighthouse DNS query parser and answer builder (`node::dns`) against a naive
//! reference parser written from RFC 1035 §4.1: both must accept the same datagrams and see the
//! same questions; every accepted query's answer is checked byte by byte; and a lighthouse
//! node's `dns_answer` (with the record `n1.` from a real tunnel) must agree with both.
#![no_main]

#[path = "node_common.rs"]
mod node_common;

use std::net::Ipv4Addr;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use meshd::node::dns::{build_answer, parse_query, DnsError, ANSWER_TTL, CLASS_IN, TYPE_A};
use meshd::node::{Node, NodeConfig};
use node_common::NodeOpts;

/// One question as the reference sees it: labels, type, class.
type RefQuestion = (Vec<Vec<u8>>, u16, u16);

/// Straight from the RFC: 12-byte header, QR clear, at most 8 questions (meshd's bound), each
/// an uncompressed name of labels 1..=63 bytes, at most 255 bytes in wire form, then type and
/// class.
fn reference(b: &[u8]) -> Option<(u16, u16, Vec<RefQuestion>)> {
    let be = |i: usize| Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]));
    let (id, flags, qd) = (be(0)?, be(2)?, be(4)?);
    if b.len() < 12 || flags & 0x8000 != 0 || qd > 8 {
        return None;
    }
    let mut pos = 12;
    let mut out = Vec::new();
    for _ in 0..qd {
        let mut labels = Vec::new();
        let mut wire_len = 0;
        loop {
            let len = usize::from(*b.get(pos)?);
            wire_len += 1 + len;
            if len > 63 || wire_len > 255 {
                return None;
            }
            if len == 0 {
                pos += 1;
                break;
            }
            labels.push(b.get(pos + 1..pos + 1 + len)?.to_vec());
            pos += 1 + len;
        }
        out.push((labels, be(pos)?, be(pos + 2)?));
        pos += 4;
    }
    Some((id, flags, out))
}

/// Undoes the presentation form (`\X` and `\DDD` escapes, `.` separators) into labels.
fn labels_from_text(text: &str) -> Vec<Vec<u8>> {
    if text == "." {
        return Vec::new();
    }
    let b = text.as_bytes();
    let (mut labels, mut cur, mut i) = (Vec::new(), Vec::new(), 0);
    while i < b.len() {
        match b[i] {
            b'\\' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let d = std::str::from_utf8(&b[i + 1..i + 4]).expect("three digits");
                cur.push(d.parse::<u8>().expect("escape is a byte"));
                i += 4;
            }
            b'\\' => {
                cur.push(b[i + 1]);
                i += 2;
            }
            b'.' => {
                labels.push(std::mem::take(&mut cur));
                i += 1;
            }
            c => {
                cur.push(c);
                i += 1;
            }
        }
    }
    assert!(cur.is_empty(), "name text ends with a dot: {text}");
    labels
}

/// A lighthouse (10.0.0.2) that learned `n1.` from its tunnel to 10.0.0.1.
fn lighthouse() -> Node {
    let base = NodeConfig {
        am_lighthouse: true,
        serve_dns: true,
        ..NodeConfig::default()
    };
    let (_a, b) = node_common::established_opts(Instant::now(), &NodeOpts::default(), base);
    assert_eq!(b.dns_lookup("n1."), Some(Ipv4Addr::new(10, 0, 0, 1)));
    b
}

thread_local! {
    static LIGHTHOUSE: Node = lighthouse();
}

fn known(name: &str) -> Option<Ipv4Addr> {
    (name == "n1.").then_some(Ipv4Addr::new(10, 0, 0, 1))
}

/// The answer must echo header bits and questions and carry one A record per known A question.
fn check_answer(data: &[u8], ans: &[u8], questions: &[RefQuestion], question_len: usize) {
    assert_eq!(ans[..2], data[..2], "id echoed");
    let flags = u16::from_be_bytes([data[2], data[3]]);
    let want = 0x8000 | (flags & 0x7800) | (flags & 0x0100) | (flags & 0x0010);
    assert_eq!(u16::from_be_bytes([ans[2], ans[3]]), want, "reply flags");
    assert_eq!(ans[4..6], data[4..6], "qdcount echoed");
    assert_eq!(
        ans[8..12],
        [0, 0, 0, 0],
        "no authority or additional records"
    );
    assert_eq!(ans[12..12 + question_len], data[12..12 + question_len]);
    let mut pos = 12 + question_len;
    let mut answered = 0u16;
    for (labels, qtype, _) in questions {
        let mut text: String = labels
            .iter()
            .map(|l| format!("{}.", String::from_utf8_lossy(l)))
            .collect();
        if text.is_empty() {
            text.push('.');
        }
        let plain = labels.iter().flatten().all(|c| c.is_ascii_alphanumeric());
        if *qtype != TYPE_A || !plain || known(&text).is_none() {
            continue;
        }
        answered += 1;
        let mut rr: Vec<u8> = labels
            .iter()
            .flat_map(|l| std::iter::once(l.len() as u8).chain(l.iter().copied()))
            .collect();
        rr.push(0);
        rr.extend_from_slice(&TYPE_A.to_be_bytes());
        rr.extend_from_slice(&CLASS_IN.to_be_bytes());
        rr.extend_from_slice(&ANSWER_TTL.to_be_bytes());
        rr.extend_from_slice(&[0, 4, 10, 0, 0, 1]);
        assert_eq!(
            ans.get(pos..pos + rr.len()),
            Some(rr.as_slice()),
            "A record"
        );
        pos += rr.len();
    }
    assert_eq!(u16::from_be_bytes([ans[6], ans[7]]), answered, "ancount");
    assert_eq!(pos, ans.len(), "nothing after the answers");
    assert_eq!(
        parse_query(ans),
        Err(DnsError::NotQuery),
        "answer is a response"
    );
}

fuzz_target!(|data: &[u8]| {
    let parsed = parse_query(data);
    let naive = reference(data);
    let from_node = LIGHTHOUSE.with(|lh| lh.dns_answer(data));
    let (q, (id, flags, questions)) = match (parsed, naive) {
        (Ok(q), Some(r)) => (q, r),
        (Err(e), None) => {
            assert_eq!(from_node, Err(e));
            return;
        }
        (p, n) => panic!("parser {p:?} but reference {n:?}"),
    };
    assert_eq!((q.id, q.flags), (id, flags));
    assert_eq!(q.questions.len(), questions.len());
    let mut question_len = 0;
    for (qu, (labels, qtype, qclass)) in q.questions.iter().zip(&questions) {
        assert_eq!((qu.qtype, qu.qclass), (*qtype, *qclass));
        assert_eq!(&labels_from_text(&qu.name), labels, "name text {}", qu.name);
        assert_eq!(
            qu.wire_name,
            data[12 + question_len..12 + question_len + qu.wire_name.len()]
        );
        question_len += qu.wire_name.len() + 4;
    }
    let ans = build_answer(&q, known);
    check_answer(data, &ans, &questions, question_len);
    assert_eq!(
        from_node,
        Ok(ans),
        "the lighthouse answers from its records"
    );
});
