//! The structured sections whose keys are data rather than names: `static_host_map`
//! (`lighthouse.go` loadStaticMap), the allow lists (`allow_list.go`) and the tun route lists
//! (`overlay/route.go`). Shape checks only; containment in the VPN network is in `checks`.

use std::net::{IpAddr, Ipv4Addr};

use serde_yaml::{Mapping, Value};

use super::build::parse_or_problem;
use super::coerce::{go_string, parse_go_bool, parse_go_int};
use super::model::defaults as d;
use super::model::{
    AllowList, CalculatedRemote, LocalAllowList, StaticHost, TunRoute, UnsafeRoute,
};
use super::reader::{describe, Reader};
use super::types::{HostPort, IpNet};

/// `static_host_map`: VPN IP → one address or a list of them.
pub fn static_host_map(r: &mut Reader<'_>) -> Vec<StaticHost> {
    let Some(v) = r.opaque("static_host_map") else {
        return Vec::new();
    };
    let Value::Mapping(m) = v else {
        r.problem(
            "static_host_map",
            format!(
                "expected a map of VPN IP to addresses, found {}",
                describe(v)
            ),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in m {
        let name = go_string(k).unwrap_or_else(|| describe(k));
        let key = format!("static_host_map.{name}");
        let vpn_ip = match name.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => ip,
            _ => {
                r.problem(&key, format!("{name:?} is not an IPv4 VPN address"));
                continue;
            }
        };
        let raw: Vec<(String, &Value)> = match v {
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(i, x)| (format!("{key}[{i}]"), x))
                .collect(),
            Value::Null => Vec::new(),
            other => vec![(key.clone(), other)],
        };
        let mut addrs = Vec::new();
        for (item_key, item) in raw {
            match go_string(item) {
                Some(s) => addrs.extend(parse_or_problem::<HostPort>(r, &item_key, &s)),
                None => r.problem(
                    &item_key,
                    format!("expected \"ip:port\", found {}", describe(item)),
                ),
            }
        }
        out.push(StaticHost { vpn_ip, addrs });
    }
    out
}

type AllowLists = (
    Option<AllowList>,
    Vec<(IpNet, AllowList)>,
    Option<LocalAllowList>,
);

/// `lighthouse.remote_allow_list`, `remote_allow_ranges`, `local_allow_list`.
pub fn allow_lists(r: &mut Reader<'_>) -> AllowLists {
    let remote = r
        .opaque("lighthouse.remote_allow_list")
        .and_then(|v| allow_list(r, "lighthouse.remote_allow_list", v, false).map(|(l, _)| l));
    let mut ranges = Vec::new();
    match r.opaque("lighthouse.remote_allow_ranges") {
        None => {}
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                let name = go_string(k).unwrap_or_else(|| describe(k));
                let key = format!("lighthouse.remote_allow_ranges.{name}");
                let range = parse_or_problem::<IpNet>(r, &key, &name);
                let list = allow_list(r, &key, v, false).map(|(l, _)| l);
                if let (Some(range), Some(list)) = (range, list) {
                    ranges.push((range, list));
                }
            }
        }
        Some(other) => r.problem(
            "lighthouse.remote_allow_ranges",
            format!("expected a map, found {}", describe(other)),
        ),
    }
    let local = r
        .opaque("lighthouse.local_allow_list")
        .and_then(|v| allow_list(r, "lighthouse.local_allow_list", v, true))
        .map(|(cidrs, interfaces)| LocalAllowList { cidrs, interfaces });
    (remote, ranges, local)
}

/// One CIDR → bool map (plus `interfaces` when `local`); `None` after recording a problem.
fn allow_list(
    r: &mut Reader<'_>,
    key: &str,
    v: &Value,
    local: bool,
) -> Option<(AllowList, Vec<(regex::Regex, bool)>)> {
    let Value::Mapping(m) = v else {
        r.problem(
            key,
            format!(
                "expected a map of CIDR to true/false, found {}",
                describe(v)
            ),
        );
        return None;
    };
    let mut rules = Vec::new();
    let mut interfaces = Vec::new();
    let mut ok = true;
    for (k, v) in m {
        let name = go_string(k).unwrap_or_else(|| describe(k));
        let entry = format!("{key}.{name}");
        if local && name == "interfaces" {
            ok &= interface_rules(r, &entry, v, &mut interfaces);
            continue;
        }
        let allow = yaml_bool(v);
        let net = parse_or_problem::<IpNet>(r, &entry, &name);
        match (net, allow) {
            (Some(net), Some(allow)) => rules.push((net, allow)),
            (_, None) => {
                r.problem(
                    &entry,
                    format!("expected true or false, found {}", describe(v)),
                );
                ok = false;
            }
            (None, _) => ok = false,
        }
    }
    ok &= add_implicit_default(r, key, &mut rules, true);
    ok &= add_implicit_default(r, key, &mut rules, false);
    ok.then_some((AllowList { rules }, interfaces))
}

/// If every rule of a family agrees, the family's /0 gets the opposite value; mixed values need
/// an explicit /0 (§5.5).
fn add_implicit_default(
    r: &mut Reader<'_>,
    key: &str,
    rules: &mut Vec<(IpNet, bool)>,
    v4: bool,
) -> bool {
    let family: Vec<&(IpNet, bool)> = rules.iter().filter(|(n, _)| n.is_ipv4() == v4).collect();
    if family.iter().any(|(n, _)| n.prefix() == 0) {
        return true;
    }
    let zero = if v4 { "0.0.0.0/0" } else { "::/0" };
    let first = family.first().map(|(_, a)| *a).unwrap_or(false);
    if family.iter().any(|(_, a)| *a != first) {
        r.problem(
            key,
            format!("contains both true and false rules, but no default set for {zero}"),
        );
        return false;
    }
    let any: IpNet = if v4 {
        IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
    } else {
        IpNet::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0)
    }
    .expect("prefix 0 is valid for both families");
    rules.push((any, !first));
    true
}

/// `local_allow_list.interfaces`: regex (whole name) → bool, all values identical.
fn interface_rules(
    r: &mut Reader<'_>,
    key: &str,
    v: &Value,
    out: &mut Vec<(regex::Regex, bool)>,
) -> bool {
    let Value::Mapping(m) = v else {
        r.problem(
            key,
            format!(
                "expected a map of interface name regex to true/false, found {}",
                describe(v)
            ),
        );
        return false;
    };
    let mut ok = true;
    for (k, v) in m {
        let name = go_string(k).unwrap_or_else(|| describe(k));
        let entry = format!("{key}.{name}");
        let Some(allow) = yaml_bool(v) else {
            r.problem(
                &entry,
                format!("expected true or false, found {}", describe(v)),
            );
            ok = false;
            continue;
        };
        match regex::Regex::new(&format!("^(?:{name})$")) {
            Ok(re) => out.push((re, allow)),
            Err(e) => {
                r.problem(&entry, format!("invalid regular expression: {e}"));
                ok = false;
            }
        }
    }
    if out.iter().any(|(_, a)| *a != out[0].1) {
        r.problem(key, "values must all be the same true/false value");
        ok = false;
    }
    ok
}

/// A YAML 1.1 boolean as yaml.v2 decodes it (true/false, yes/no, on/off, y/n in any case).
fn yaml_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if !matches!(s.as_str(), "1" | "0" | "t" | "f" | "T" | "F") => {
            parse_go_bool(s)
        }
        _ => None,
    }
}

/// `lighthouse.calculated_remotes` (since v1.7.0): VPN CIDR → list of `{mask, port}`. 1.6.1
/// ignores the key, so every mistake here is a warning and the entry is dropped.
pub fn calculated_remotes(r: &mut Reader<'_>) -> Vec<(IpNet, Vec<CalculatedRemote>)> {
    let key = "lighthouse.calculated_remotes";
    let Some(v) = r.opaque(key) else {
        return Vec::new();
    };
    let Value::Mapping(m) = v else {
        r.warn(
            key,
            format!(
                "expected a map of VPN CIDR to a list of {{mask, port}}, found {}; ignored",
                describe(v)
            ),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in m {
        let name = go_string(k).unwrap_or_else(|| describe(k));
        let entry = format!("{key}.{name}");
        let Ok(range) = name.parse::<IpNet>() else {
            r.warn(&entry, format!("{name:?} is not a CIDR; ignored"));
            continue;
        };
        let Value::Sequence(items) = v else {
            r.warn(
                &entry,
                format!(
                    "expected a list of {{mask, port}}, found {}; ignored",
                    describe(v)
                ),
            );
            continue;
        };
        let mut remotes = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_key = format!("{entry}[{i}]");
            match calculated_remote(item) {
                Ok(c) => remotes.push(c),
                Err(msg) => r.warn(&item_key, format!("{msg}; ignored")),
            }
        }
        out.push((range, remotes));
    }
    out
}

fn calculated_remote(v: &Value) -> Result<CalculatedRemote, String> {
    let Value::Mapping(m) = v else {
        return Err(format!(
            "expected a map with mask and port, found {}",
            describe(v)
        ));
    };
    if let Some(extra) = m
        .keys()
        .filter_map(go_string)
        .find(|k| k != "mask" && k != "port")
    {
        return Err(format!("unknown key {extra:?} (mask, port)"));
    }
    let mask = m.get("mask").and_then(go_string).ok_or("mask is missing")?;
    let mask = mask.parse::<IpNet>().map_err(|e| format!("mask: {e}"))?;
    let port = m
        .get("port")
        .and_then(go_string)
        .and_then(|p| parse_go_int(&p))
        .ok_or("port is missing or not a number")?;
    let port = u16::try_from(port).map_err(|_| format!("port {port} is out of range"))?;
    Ok(CalculatedRemote { mask, port })
}

/// `tun.routes`: MTU overrides for ranges inside the VPN network (`mtu` ≥ 500 required).
pub fn tun_routes(r: &mut Reader<'_>) -> Vec<TunRoute> {
    r.know("tun.routes[].mtu");
    r.know("tun.routes[].route");
    let mut out = Vec::new();
    for (key, m) in r.map_list("tun.routes") {
        let mtu = match route_int(r, &key, m, "mtu") {
            Some(Some(mtu)) if mtu < d::MIN_ROUTE_MTU => {
                r.problem(
                    &format!("{key}.mtu"),
                    format!("{mtu} is below {}", d::MIN_ROUTE_MTU),
                );
                None
            }
            Some(Some(mtu)) => Some(mtu as usize),
            Some(None) => {
                r.problem(&format!("{key}.mtu"), "is not present");
                None
            }
            None => None,
        };
        let route = route_cidr(r, &key, m);
        if let (Some(mtu), Some(route)) = (mtu, route) {
            out.push(TunRoute { route, mtu });
        }
    }
    out
}

/// `tun.unsafe_routes`: ranges outside the VPN network reached through a `via` host.
pub fn unsafe_routes(r: &mut Reader<'_>) -> Vec<UnsafeRoute> {
    for k in ["route", "via", "mtu", "metric", "install"] {
        r.know(&format!("tun.unsafe_routes[].{k}"));
    }
    let mut out = Vec::new();
    for (key, m) in r.map_list("tun.unsafe_routes") {
        let mtu = match route_int(r, &key, m, "mtu") {
            Some(Some(0)) | Some(None) => Some(None),
            Some(Some(mtu)) if mtu < d::MIN_ROUTE_MTU => {
                r.problem(
                    &format!("{key}.mtu"),
                    format!("{mtu} is below {}", d::MIN_ROUTE_MTU),
                );
                None
            }
            Some(Some(mtu)) => Some(Some(mtu as usize)),
            None => None,
        };
        let metric = match route_int(r, &key, m, "metric") {
            Some(Some(n)) if !(0..=i64::from(i32::MAX)).contains(&n) => {
                r.problem(
                    &format!("{key}.metric"),
                    format!("{n} is not in range (0-{})", i32::MAX),
                );
                None
            }
            Some(n) => Some(n.unwrap_or(0) as u32),
            None => None,
        };
        let via = route_via(r, &key, m);
        let route = route_cidr(r, &key, m);
        let install = match m.get("install") {
            None | Some(Value::Null) => true,
            Some(v) => go_string(v)
                .as_deref()
                .and_then(parse_go_bool)
                .unwrap_or_else(|| {
                    r.warn(
                        &format!("{key}.install"),
                        format!("invalid value {}, using the default true", describe(v)),
                    );
                    true
                }),
        };
        if let (Some(mtu), Some(metric), Some(via), Some(route)) = (mtu, metric, via, route) {
            out.push(UnsafeRoute {
                route,
                via,
                mtu,
                metric,
                install,
            });
        }
    }
    out
}

/// `Some(None)` = absent, `Some(Some(n))` = integer (or numeric string), `None` = bad (recorded).
fn route_int(r: &mut Reader<'_>, key: &str, m: &Mapping, field: &str) -> Option<Option<i64>> {
    let v = match m.get(field) {
        None | Some(Value::Null) => return Some(None),
        Some(v) => v,
    };
    let n = match v {
        Value::Number(_) | Value::String(_) => go_string(v).as_deref().and_then(parse_go_int),
        _ => None,
    };
    match n {
        Some(n) => Some(Some(n)),
        None => {
            r.problem(
                &format!("{key}.{field}"),
                format!("is not an integer: {}", describe(v)),
            );
            None
        }
    }
}

fn route_cidr(r: &mut Reader<'_>, key: &str, m: &Mapping) -> Option<IpNet> {
    let field = format!("{key}.route");
    match m.get("route").and_then(go_string) {
        None => {
            r.problem(&field, "is not present");
            None
        }
        Some(s) => parse_or_problem::<IpNet>(r, &field, &s),
    }
}

fn route_via(r: &mut Reader<'_>, key: &str, m: &Mapping) -> Option<Ipv4Addr> {
    let field = format!("{key}.via");
    match m.get("via") {
        None | Some(Value::Null) => {
            r.problem(&field, "is not present");
            None
        }
        Some(Value::String(s)) => match s.parse::<Ipv4Addr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                r.problem(&field, format!("{s:?} is not an IPv4 VPN address"));
                None
            }
        },
        Some(other) => {
            r.problem(
                &field,
                format!("is not a string: found {}", describe(other)),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists(yaml: &str) -> (AllowLists, Vec<String>) {
        let v: Value = serde_yaml::from_str(yaml).unwrap();
        let mut r = Reader::new(&v);
        let out = allow_lists(&mut r);
        (out, r.problems.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn allow_list_implicit_defaults() {
        let ((remote, _, _), problems) =
            lists("lighthouse: {remote_allow_list: {'172.16.0.0/12': false}}");
        assert!(problems.is_empty(), "{problems:?}");
        let l = remote.unwrap();
        assert!(!l.allows("172.16.5.5".parse().unwrap()));
        assert!(l.allows("8.8.8.8".parse().unwrap()));
        assert!(l.allows("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn allow_list_mixed_values_need_explicit_default() {
        let (_, problems) =
            lists("lighthouse: {remote_allow_list: {'10.0.0.0/8': false, '10.42.42.0/24': true}}");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("lighthouse.remote_allow_list:")
                && problems[0].contains("0.0.0.0/0")
        );
        let ((remote, _, _), problems) =
            lists("lighthouse: {remote_allow_list: {'0.0.0.0/0': true, '10.0.0.0/8': false, '10.42.42.0/24': true}}");
        assert!(problems.is_empty());
        let l = remote.unwrap();
        assert!(l.allows("10.42.42.7".parse().unwrap()));
        assert!(!l.allows("10.1.1.1".parse().unwrap()));
    }

    #[test]
    fn local_allow_list_interfaces() {
        let ((_, _, local), problems) =
            lists("lighthouse: {local_allow_list: {interfaces: {tun0: false, 'docker.*': false}, '10.0.0.0/8': true}}");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(local.unwrap().interfaces.len(), 2);
        let (_, problems) =
            lists("lighthouse: {local_allow_list: {interfaces: {tun0: false, eth0: true}}}");
        assert!(problems[0].contains("same true/false"), "{problems:?}");
        let (_, problems) = lists("lighthouse: {local_allow_list: {interfaces: {'(': false}}}");
        assert!(
            problems[0].starts_with("lighthouse.local_allow_list.interfaces.("),
            "{problems:?}"
        );
    }

    #[test]
    fn bad_allow_list_entries_name_the_entry() {
        let (_, problems) =
            lists("lighthouse: {remote_allow_list: {'10.0.0.0/8': maybe, 'nope': true}}");
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("lighthouse.remote_allow_list.10.0.0.0/8:")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("lighthouse.remote_allow_list.nope:")),
            "{problems:?}"
        );
    }
}
