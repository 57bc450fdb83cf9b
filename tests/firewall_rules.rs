//! Rule parsing: every field, every error nebula 1.6.1 raises (checked with `nebula -test` on
//! small configs), and the messages naming the dotted path.

use meshd::firewall::{
    parse_port, parse_rules, Action, CidrSpec, ConntrackTimeouts, Direction, Ipv4Net, PortSpec,
    Proto, Rule,
};
use serde_yaml::Value;
use std::net::Ipv4Addr;
use std::time::Duration;

fn yaml(s: &str) -> Value {
    serde_yaml::from_str(s).expect("test yaml parses")
}

fn one(rule_yaml: &str) -> Result<(Rule, Vec<String>), Vec<String>> {
    let v = yaml(&format!("- {rule_yaml}"));
    match parse_rules(Direction::Inbound, &v, "firewall.inbound") {
        Ok((mut rules, warnings)) => {
            assert_eq!(rules.len(), 1);
            Ok((rules.remove(0), warnings))
        }
        Err(errs) => Err(errs.iter().map(|e| e.to_string()).collect()),
    }
}

fn ok(rule_yaml: &str) -> Rule {
    match one(rule_yaml) {
        Ok((r, _)) => r,
        Err(e) => panic!("{rule_yaml} refused: {e:?}"),
    }
}

fn err(rule_yaml: &str) -> String {
    match one(rule_yaml) {
        Ok((r, _)) => panic!("{rule_yaml} accepted: {r:?}"),
        Err(e) => e.join("\n"),
    }
}

fn warnings(rule_yaml: &str) -> Vec<String> {
    match one(rule_yaml) {
        Ok((_, w)) => w,
        Err(e) => panic!("{rule_yaml} refused: {e:?}"),
    }
}

fn net(a: [u8; 4], p: u8) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::from(a), p).expect("valid prefix")
}

#[test]
fn null_and_empty_lists_have_no_rules() {
    for text in ["~", "[]"] {
        let (rules, w) =
            parse_rules(Direction::Outbound, &yaml(text), "firewall.outbound").expect("accepted");
        assert!(rules.is_empty() && w.is_empty());
    }
}

#[test]
fn a_map_instead_of_a_list_is_refused() {
    let e = parse_rules(Direction::Inbound, &yaml("{port: 1}"), "firewall.inbound")
        .expect_err("refused");
    assert_eq!(e[0].path, "firewall.inbound");
    assert!(e[0].message.contains("list of rules"), "{}", e[0]);
}

#[test]
fn every_field_parses() {
    let r = ok("{port: 80, proto: tcp, host: web, cidr: 10.1.2.3/16, local_cidr: 192.168.0.0/24, ca_name: myca, ca_sha: abcd}");
    assert_eq!(r.direction, Direction::Inbound);
    assert_eq!(r.proto, Proto::Tcp);
    assert_eq!(r.port, PortSpec::Range { start: 80, end: 80 });
    assert_eq!(r.host.as_deref(), Some("web"));
    assert_eq!(r.cidr, Some(CidrSpec::V4(net([10, 1, 0, 0], 16))));
    assert_eq!(r.local_cidr, Some(CidrSpec::V4(net([192, 168, 0, 0], 24))));
    assert_eq!(r.ca_name.as_deref(), Some("myca"));
    assert_eq!(r.ca_sha.as_deref(), Some("abcd"));
    assert!(r.groups.is_empty());

    let r = ok("{code: any, proto: icmp, group: ops}");
    assert_eq!((r.proto, r.port), (Proto::Icmp, PortSpec::Any));
    assert_eq!(r.groups, vec!["ops".to_string()]);

    let r = ok("{port: fragment, proto: any, groups: [a, b]}");
    assert_eq!(r.port, PortSpec::Fragment);
    assert_eq!(r.groups, vec!["a".to_string(), "b".to_string()]);

    assert_eq!(ok("{port: 1, proto: udp, host: x}").proto, Proto::Udp);
    assert_eq!(ok("{port: 1, proto: any, host: x}").proto, Proto::Any);
}

#[test]
fn port_spellings() {
    let cases: &[(&str, PortSpec)] = &[
        ("any", PortSpec::Any),
        ("0", PortSpec::Any),
        ("fragment", PortSpec::Fragment),
        (
            "443",
            PortSpec::Range {
                start: 443,
                end: 443,
            },
        ),
        (
            "\"443\"",
            PortSpec::Range {
                start: 443,
                end: 443,
            },
        ),
        ("80.0", PortSpec::Range { start: 80, end: 80 }),
        ("0x50", PortSpec::Range { start: 80, end: 80 }),
        ("\"+5\"", PortSpec::Range { start: 5, end: 5 }),
        (
            "1000-2000",
            PortSpec::Range {
                start: 1000,
                end: 2000,
            },
        ),
        ("\" 5 - 6 \"", PortSpec::Range { start: 5, end: 6 }),
        ("0-5", PortSpec::Any),
        (
            "1-70000",
            PortSpec::Range {
                start: 1,
                end: 65535,
            },
        ),
        ("70000", PortSpec::Never),
        ("4294967376", PortSpec::Never),
    ];
    for (text, want) in cases {
        let r = ok(&format!("{{port: {text}, proto: tcp, host: a}}"));
        assert_eq!(r.port, *want, "port {text}");
    }
    assert_eq!(
        parse_port("22").map(|p| p.0),
        Ok(PortSpec::Range { start: 22, end: 22 })
    );
    assert!(!warnings("{port: 70000, proto: tcp, host: a}").is_empty());
}

#[test]
fn port_errors_name_the_field() {
    let cases: &[(&str, &str)] = &[
        ("{proto: tcp, host: a}", "firewall.inbound[0].port: missing"),
        (
            "{port: \"\", proto: tcp, host: a}",
            "firewall.inbound[0].port: missing",
        ),
        (
            "{port: 1.5, proto: tcp, host: a}",
            "firewall.inbound[0].port: \"1.5\" is not a port number",
        ),
        ("{port: http, proto: tcp, host: a}", "is not a port number"),
        ("{port: \"-5\", proto: tcp, host: a}", "looks like a range"),
        ("{port: 5-, proto: tcp, host: a}", "looks like a range"),
        (
            "{port: 90-80, proto: tcp, host: a}",
            "firewall.inbound[0].port: range 90-80 starts after it ends",
        ),
        (
            "{port: a-80, proto: tcp, host: a}",
            "range start \"a\" is not a number",
        ),
        (
            "{port: 80-b, proto: tcp, host: a}",
            "range end \"b\" is not a number",
        ),
        (
            "{code: x, proto: icmp, host: a}",
            "firewall.inbound[0].code: \"x\" is not a port number",
        ),
        (
            "{port: \"99999999999999999999\", proto: tcp, host: a}",
            "is not a port number",
        ),
    ];
    for (rule, want) in cases {
        let e = err(rule);
        assert!(e.contains(want), "{rule}: got {e:?}, want {want:?}");
    }
}

#[test]
fn whole_rule_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "{port: 80, code: 1, proto: tcp, host: a}",
            "firewall.inbound[0]: only one of port or code",
        ),
        (
            "{port: 80, proto: tcp}",
            "firewall.inbound[0]: at least one of host, group, groups, cidr",
        ),
        ("{port: 80, proto: tcp, host: \"\"}", "at least one of host"),
        ("{port: 80, proto: tcp, groups: []}", "at least one of host"),
        (
            "{port: 80, proto: tcp, group: a, groups: [b]}",
            "firewall.inbound[0]: only one of group or groups",
        ),
        ("[1]", "firewall.inbound[0]: a rule must be a map"),
        ("x", "firewall.inbound[0]: a rule must be a map"),
    ];
    for (rule, want) in cases {
        let e = err(rule);
        assert!(e.contains(want), "{rule}: got {e:?}, want {want:?}");
    }
}

#[test]
fn field_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "{port: 80, proto: tpc, host: a}",
            "firewall.inbound[0].proto: unknown protocol \"tpc\" (expected any, tcp, udp, icmp)",
        ),
        (
            "{port: 80, proto: TCP, host: a}",
            "unknown protocol \"TCP\"",
        ),
        ("{port: 80, proto: 6, host: a}", "unknown protocol \"6\""),
        ("{port: 80, host: a}", "firewall.inbound[0].proto: missing"),
        (
            "{port: 80, proto: tcp, cidr: 10.0.0.0}",
            "firewall.inbound[0].cidr: \"10.0.0.0\" is not a CIDR",
        ),
        ("{port: 80, proto: tcp, cidr: 010.0.0.0/8}", "is not a CIDR"),
        ("{port: 80, proto: tcp, cidr: 10.0.0.0/33}", "is not a CIDR"),
        (
            "{port: 80, proto: tcp, host: a, local_cidr: nope}",
            "firewall.inbound[0].local_cidr: \"nope\" is not a CIDR",
        ),
        // Each of these makes nebula 1.6.1 panic; we refuse them with a message instead.
        (
            "{port: 80, proto: tcp, group: []}",
            "firewall.inbound[0].group: an empty list",
        ),
        (
            "{port: 80, proto: tcp, groups: [1, 2]}",
            "firewall.inbound[0].groups[0]: group names must be strings",
        ),
        (
            "{port: 80, proto: tcp, groups: ~}",
            "firewall.inbound[0].groups: empty",
        ),
        (
            "{port: 80, proto: tcp, group: [a, b]}",
            "firewall.inbound[0].group: a list with more than one group",
        ),
    ];
    for (rule, want) in cases {
        let e = err(rule);
        assert!(e.contains(want), "{rule}: got {e:?}, want {want:?}");
    }
}

#[test]
fn errors_from_several_rules_are_all_reported_with_their_index() {
    let v = yaml("[{port: 1, proto: tcp, host: a}, {port: 1, proto: tpc, host: a}, {port: x, proto: udp, host: a}]");
    let e = parse_rules(Direction::Outbound, &v, "firewall.outbound").expect_err("refused");
    let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["firewall.outbound[1].proto", "firewall.outbound[2].port"]
    );
}

#[test]
fn tolerated_oddities_match_nebula() {
    // One-element group list: accepted with a warning.
    let r = ok("{port: any, proto: tcp, group: [a]}");
    assert_eq!(r.groups, vec!["a".to_string()]);
    assert!(
        warnings("{port: any, proto: tcp, group: [a]}")[0].contains("firewall.inbound[0].group")
    );
    // `groups` as a single value.
    assert_eq!(
        ok("{port: any, proto: tcp, groups: a}").groups,
        vec!["a".to_string()]
    );
    assert_eq!(
        ok("{port: any, proto: tcp, groups: 5}").groups,
        vec!["5".to_string()]
    );
    // Null host is Go's "<nil>" text: accepted, matches no real host.
    assert_eq!(
        ok("{port: any, proto: tcp, host: ~}").host.as_deref(),
        Some("<nil>")
    );
    // Numbers as names.
    assert_eq!(
        ok("{port: any, proto: tcp, host: 123}").host.as_deref(),
        Some("123")
    );
    // Prefix with leading zero, as Go's ParseCIDR allows.
    assert_eq!(
        ok("{port: any, proto: tcp, cidr: 10.0.0.0/08}").cidr,
        Some(CidrSpec::V4(net([10, 0, 0, 0], 8)))
    );
    // IPv6 cidr: accepted (as 1.6.1 does), never matches, warned.
    assert_eq!(
        ok("{port: any, proto: tcp, cidr: \"fd00::/8\"}").cidr,
        Some(CidrSpec::V6Never)
    );
    // ca_sha alone is a selector.
    assert_eq!(
        ok("{port: any, proto: tcp, ca_sha: abc}").ca_sha.as_deref(),
        Some("abc")
    );
    // Master additions: cidr any, local_cidr alone.
    assert_eq!(
        ok("{port: any, proto: tcp, cidr: any}").cidr,
        Some(CidrSpec::Any)
    );
    assert!(ok("{port: any, proto: tcp, local_cidr: 10.0.0.0/8}").matches_any_peer());
}

#[test]
fn unknown_keys_warn_with_their_path() {
    let w = warnings("{port: any, proto: tcp, host: a, bogus: 1}");
    assert_eq!(
        w,
        vec!["firewall.inbound[0].bogus: unknown key, ignored".to_string()]
    );
    let w = warnings("{port: 8, proto: icmp, host: a}");
    assert!(w[0].starts_with("firewall.inbound[0].port:") && w[0].contains("never matches"));
}

#[test]
fn any_peer_collapse() {
    assert!(ok("{port: any, proto: tcp, host: any}").matches_any_peer());
    assert!(ok("{port: any, proto: tcp, groups: [x, any]}").matches_any_peer());
    assert!(ok("{port: any, proto: tcp, cidr: 0.0.0.0/0}").matches_any_peer());
    assert!(ok("{port: any, proto: tcp, cidr: 0.0.0.0/8}").matches_any_peer());
    assert!(ok("{port: any, proto: tcp, ca_name: x}").matches_any_peer());
    assert!(!ok("{port: any, proto: tcp, cidr: 10.0.0.0/8}").matches_any_peer());
    assert!(!ok("{port: any, proto: tcp, host: a}").matches_any_peer());
}

#[test]
fn actions_and_timeouts() {
    assert_eq!(
        Action::parse(None, "firewall.inbound_action"),
        (Action::Drop, None)
    );
    assert_eq!(
        Action::parse(Some(&yaml("reject")), "k"),
        (Action::Reject, None)
    );
    assert_eq!(
        Action::parse(Some(&yaml("drop")), "k"),
        (Action::Drop, None)
    );
    let (a, w) = Action::parse(Some(&yaml("deny")), "firewall.outbound_action");
    assert_eq!(a, Action::Drop);
    assert!(w
        .expect("warning")
        .starts_with("firewall.outbound_action: unknown action \"deny\""));
    let t = ConntrackTimeouts::default();
    assert_eq!(t.tcp, Duration::from_secs(720));
    assert_eq!(t.udp, Duration::from_secs(180));
    assert_eq!(t.default, Duration::from_secs(600));
    assert_eq!(t.for_protocol(6), t.tcp);
    assert_eq!(t.for_protocol(17), t.udp);
    assert_eq!(t.for_protocol(1), t.default);
}

#[test]
fn example_configs_parse() {
    // The tutorial's configs as the repository ships them (examples/host.yaml, lighthouse.yaml).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let entries = std::fs::read_dir(&dir).expect("examples dir readable");
    let mut checked = 0;
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Ok(doc) = serde_yaml::from_str::<Value>(&text) else {
            continue;
        };
        let Some(fw) = doc.get("firewall") else {
            continue;
        };
        for dir in [Direction::Inbound, Direction::Outbound] {
            let key = match dir {
                Direction::Inbound => "inbound",
                Direction::Outbound => "outbound",
            };
            let v = fw.get(key).cloned().unwrap_or(Value::Null);
            if let Err(e) = parse_rules(dir, &v, dir.config_key()) {
                panic!("{}: {e:?}", entry.path().display());
            }
        }
        checked += 1;
    }
    // config.yaml, host.yaml and lighthouse.yaml all carry a firewall section.
    assert!(
        checked >= 3,
        "only {checked} example configs with a firewall section"
    );
}

#[test]
fn sanity_warnings_for_overridden_selectors() {
    let w = warnings("{port: any, proto: tcp, host: any, group: ops}");
    assert!(
        w.iter()
            .any(|w| w.starts_with("firewall.inbound[0].host: is `any`")),
        "{w:?}"
    );
    let w = warnings("{port: any, proto: tcp, groups: [any, ops]}");
    assert!(
        w.iter().any(|w| w.contains("other groups are ignored")),
        "{w:?}"
    );
    let w = warnings("{port: any, proto: tcp, group: any, cidr: 10.0.0.0/8}");
    assert!(
        w.iter()
            .any(|w| w.contains("host/cidr in this rule are ignored")),
        "{w:?}"
    );
    let w = warnings("{code: any, proto: icmp, host: a}");
    assert!(
        w.iter().any(|w| w.starts_with("firewall.inbound[0].code:")),
        "{w:?}"
    );
    assert!(warnings("{port: 22, proto: tcp, groups: [a, b], host: c}").is_empty());
}
