//! Differential test against the reference: each rule is given to `nebula -test` (1.6.1) and to
//! `parse_rules`; both must accept or both must refuse. A short second list holds the documented
//! cases where meshd deliberately accepts more (nebula master syntax).

mod common;

use std::path::Path;
use std::process::Command;

use meshd::firewall::{parse_rules, Direction};

/// Rules on which meshd and nebula 1.6.1 must agree.
const SAME: &[&str] = &[
    "{port: 80, proto: tcp, host: any}",
    "{port: 80, proto: tcp}",
    "{port: 80, code: 1, proto: tcp, host: a}",
    "{proto: tcp, host: a}",
    "{port: 80, host: a}",
    "{port: 70000, proto: tcp, host: a}",
    "{port: 4294967376, proto: tcp, host: a}",
    "{port: 1-70000, proto: tcp, host: a}",
    "{port: 90-80, proto: tcp, host: a}",
    "{port: 0-5, proto: tcp, host: a}",
    "{port: \"-5\", proto: tcp, host: a}",
    "{port: \" 5 - 6 \", proto: tcp, host: a}",
    "{port: \"+5\", proto: tcp, host: a}",
    "{port: 80.0, proto: tcp, host: a}",
    "{port: 1.5, proto: tcp, host: a}",
    "{port: fragment, proto: tcp, host: a}",
    "{port: any, proto: TCP, host: a}",
    "{port: any, proto: 6, host: a}",
    "{port: any, proto: icmp, host: ~}",
    "{port: any, proto: udp, group: []}",
    "{port: any, proto: tcp, group: [a, b]}",
    "{port: any, proto: tcp, group: [a]}",
    "{port: any, proto: tcp, groups: [1, 2]}",
    "{port: any, proto: tcp, groups: ~}",
    "{port: any, proto: tcp, groups: []}",
    "{port: any, proto: tcp, groups: a}",
    "{port: any, proto: tcp, groups: 5}",
    "{port: any, proto: tcp, group: a, groups: [b]}",
    "{port: any, proto: tcp, cidr: 10.0.0.0}",
    "{port: any, proto: tcp, cidr: \"fd00::/8\"}",
    "{port: any, proto: tcp, cidr: 010.0.0.0/8}",
    "{port: any, proto: tcp, cidr: 10.0.0.0/08}",
    "{port: any, proto: tcp, cidr: 10.0.0.1/33}",
    "{port: any, proto: tcp, cidr: 0.0.0.0/0}",
    "{port: any, proto: tcp, host: a, bogus: 1}",
    "{port: any, proto: tcp, ca_sha: abc}",
    "{port: any, proto: tcp, ca_name: myca}",
    "{port: 0x50, proto: tcp, host: a}",
    "{port: \"080\", proto: tcp, host: a}",
    "{port: \"\", proto: tcp, host: a}",
    "{port: any, proto: tcp, host: \"\"}",
    "{port: 5-, proto: tcp, host: a}",
    "{port: a-5, proto: tcp, host: a}",
    "{port: http, proto: tcp, host: a}",
    "{port: [80], proto: tcp, host: a}",
    "{code: any, proto: icmp, host: a}",
    "{code: 8, proto: icmp, host: a}",
    "[1]",
    "x",
];

/// Accepted by meshd (as by nebula master), refused by nebula 1.6.1.
const MESHD_ONLY: &[&str] = &[
    "{port: any, proto: tcp, cidr: any}",
    "{port: any, proto: tcp, local_cidr: 10.0.0.0/8}",
];

fn nebula_accepts(dir: &Path, rule: &str) -> bool {
    let cfg = dir.join("c.yml");
    let text = format!(
        "pki:\n  ca: {d}/ca.crt\n  cert: {d}/h.crt\n  key: {d}/h.key\nfirewall:\n  inbound:\n    - {rule}\n",
        d = dir.display()
    );
    std::fs::write(&cfg, text).expect("write config");
    let out = Command::new("nebula")
        .arg("-test")
        .arg("-config")
        .arg(&cfg)
        .output()
        .expect("run nebula");
    out.status.success()
}

fn meshd_accepts(rule: &str) -> bool {
    let v: serde_yaml::Value =
        serde_yaml::from_str(&format!("- {rule}")).expect("rule yaml parses");
    parse_rules(Direction::Inbound, &v, "firewall.inbound").is_ok()
}

fn make_cert(dir: &Path) {
    let run = |args: &[&str]| {
        let st = Command::new("nebula-cert")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run nebula-cert");
        assert!(st.status.success(), "nebula-cert {args:?}: {st:?}");
    };
    run(&["ca", "-name", "test-ca"]);
    run(&["sign", "-name", "h", "-ip", "10.1.0.1/16"]);
}

#[test]
fn rule_acceptance_matches_nebula_1_6_1() {
    let t = "rule_acceptance_matches_nebula_1_6_1";
    if !common::require_tool(t, "nebula") || !common::require_tool(t, "nebula-cert") {
        return;
    }
    let dir = common::tempdir();
    make_cert(dir.path());
    // Sanity: the harness tells a good rule from a bad one.
    assert!(nebula_accepts(dir.path(), SAME[0]));
    assert!(!nebula_accepts(dir.path(), SAME[1]));
    let mut mismatches = Vec::new();
    for rule in SAME {
        let (n, m) = (nebula_accepts(dir.path(), rule), meshd_accepts(rule));
        if n != m {
            mismatches.push(format!("{rule}: nebula accepts={n}, meshd accepts={m}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    for rule in MESHD_ONLY {
        assert!(
            !nebula_accepts(dir.path(), rule),
            "{rule}: nebula 1.6.1 now accepts it"
        );
        assert!(meshd_accepts(rule), "{rule}: meshd refuses it");
    }
}

/// Random rules built from tricky values of every key; acceptance must agree with nebula.
#[test]
fn random_rules_acceptance_matches_nebula_1_6_1() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let t = "random_rules_acceptance_matches_nebula_1_6_1";
    if !common::require_tool(t, "nebula") || !common::require_tool(t, "nebula-cert") {
        return;
    }
    let dir = common::tempdir();
    make_cert(dir.path());

    const PORTS: &[&str] = &[
        "80",
        "\"80\"",
        "any",
        "0",
        "fragment",
        "1-100",
        "100-1",
        "\"0-5\"",
        "70000",
        "x",
        "\"\"",
        "1.5",
        "\"-5\"",
        "\"5-\"",
        "[80]",
        "~",
        "\" 7 - 9 \"",
    ];
    const PROTOS: &[&str] = &[
        "any", "tcp", "udp", "icmp", "any", "tcp", "udp", "icmp", "TCP", "6", "\"\"", "~",
    ];
    const HOSTS: &[&str] = &["a", "any", "\"\"", "~", "5", "[a]"];
    const GROUP: &[&str] = &["a", "any", "[a]", "[a, b]", "[]", "~", "\"\""];
    const GROUPS: &[&str] = &["[a, b]", "[]", "a", "[any]", "~", "[1]", "\"\""];
    const CIDRS: &[&str] = &[
        "10.0.0.0/8",
        "0.0.0.0/0",
        "10.0.0.0",
        "\"fd00::/8\"",
        "\"\"",
        "x",
        "10.0.0.1/33",
    ];
    const CAS: &[&str] = &["a", "\"\""];

    fn field(key: &'static str, pool: &'static [&'static str]) -> BoxedStrategy<Option<String>> {
        prop::option::weighted(0.45, prop::sample::select(pool))
            .prop_map(move |v| v.map(|v| format!("{key}: {v}")))
            .boxed()
    }
    let strategy = (
        prop::option::weighted(0.85, prop::sample::select(PORTS))
            .prop_map(|v| v.map(|v| format!("port: {v}"))),
        prop::option::weighted(0.1, prop::sample::select(PORTS))
            .prop_map(|v| v.map(|v| format!("code: {v}"))),
        prop::option::weighted(0.9, prop::sample::select(PROTOS))
            .prop_map(|v| v.map(|v| format!("proto: {v}"))),
        field("host", HOSTS),
        field("group", GROUP),
        field("groups", GROUPS),
        field("cidr", CIDRS),
        field("ca_name", CAS),
        field("ca_sha", CAS),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(a, b, c, d, e, f, g, h, i, bogus)| {
            let mut parts: Vec<String> =
                [a, b, c, d, e, f, g, h, i].into_iter().flatten().collect();
            if bogus {
                parts.push("bogus: 1".to_string());
            }
            format!("{{{}}}", parts.join(", "))
        });
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |rule| {
        let n = nebula_accepts(dir.path(), &rule);
        let m = meshd_accepts(&rule);
        prop_assert_eq!(n, m, "{}: nebula accepts={}, meshd accepts={}", rule, n, m);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
