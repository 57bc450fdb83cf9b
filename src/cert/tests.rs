//! Unit tests for the certificate library: golden fixtures made once by nebula-cert 1.6.1
//! (tests/fixtures/cert), verification order and constraints with explicit `now`, malformed
//! input, handshake form, and a property test for encode/decode round trips.

use super::*;
use crate::cert::proto::{RawNebulaCertificate, RawNebulaCertificateDetails};
use proptest::prelude::*;
use prost::Message;

const CA: &[u8] = include_bytes!("../../tests/fixtures/cert/ca.crt");
const CA_KEY: &[u8] = include_bytes!("../../tests/fixtures/cert/ca.key");
const HOST1: &[u8] = include_bytes!("../../tests/fixtures/cert/host1.crt");
const HOST1_KEY: &[u8] = include_bytes!("../../tests/fixtures/cert/host1.key");
const OTHER_CA: &[u8] = include_bytes!("../../tests/fixtures/cert/other-ca.crt");
const PLAIN: &[u8] = include_bytes!("../../tests/fixtures/cert/plain.crt");
const KG: &[u8] = include_bytes!("../../tests/fixtures/cert/kg.crt");
const KG_PUB: &[u8] = include_bytes!("../../tests/fixtures/cert/kg.pub");
const BUNDLE: &[u8] = include_bytes!("../../tests/fixtures/cert/bundle.crt");

/// Fixture validity: CAs and 100-year certs from here to 2126; kg.crt for one year.
const MADE: i64 = 1_795_614_708;
const CA_END: i64 = 4_949_214_708;
const KG_END: i64 = 1_827_150_708;
const NOW: i64 = MADE + 3600;

fn cert(pem: &[u8]) -> NebulaCertificate {
    NebulaCertificate::from_pem(pem).unwrap().0
}

fn net(s: &str) -> Ipv4Net {
    Ipv4Net::parse_cidr(s).unwrap()
}

fn pool(pems: &[&[u8]]) -> CaPool {
    let mut pool = CaPool::new();
    for p in pems {
        pool.add_ca(cert(p), NOW).unwrap();
    }
    pool
}

#[test]
fn golden_ca_decodes() {
    let ca = cert(CA);
    assert_eq!(ca.name(), "Test CA");
    assert!(ca.is_ca());
    assert_eq!(ca.issuer(), None);
    assert_eq!(ca.ips(), &[net("10.42.0.0/16"), net("10.43.0.0/16")]);
    assert_eq!(ca.subnets(), &[net("192.168.0.0/16")]);
    assert_eq!(ca.groups(), &["ops", "dev", "laptop"]);
    assert_eq!((ca.not_before(), ca.not_after()), (MADE, CA_END));
    assert_eq!(
        ca.fingerprint().to_string(),
        "e501f0acb60595a68588fc0c2b865a2e49d0e9b40c47bfd0286f8ba16032da1d"
    );
    let key = CaSigningKey::from_pem(CA_KEY).unwrap().0;
    assert_eq!(key.public_key(), *ca.public_key());
    ca.verify_ca_key(&key).unwrap();
    assert!(ca.check_signature(ca.public_key()));
}

#[test]
fn golden_host_decodes() {
    let host = cert(HOST1);
    assert_eq!(host.name(), "host1");
    assert!(!host.is_ca());
    assert_eq!(host.ips(), &[net("10.42.1.5/16")]);
    assert_eq!(host.vpn_ip(), Some("10.42.1.5".parse().unwrap()));
    assert_eq!(host.subnets(), &[net("192.168.10.0/24")]);
    assert_eq!(host.groups(), &["ops", "laptop"]);
    assert_eq!((host.not_before(), host.not_after()), (MADE, CA_END - 1));
    assert_eq!(host.issuer(), Some(cert(CA).fingerprint()));
    assert_eq!(
        host.fingerprint().to_string(),
        "2627d54fada98b765dc6ac4b2c26acb57c5c555d1186e4185218aa9e068480a1"
    );
    let key = X25519PrivateKey::from_pem(HOST1_KEY).unwrap().0;
    host.verify_private_key(&key).unwrap();
    let other = X25519PrivateKey::from_bytes([1; 32]);
    assert_eq!(host.verify_private_key(&other), Err(CertError::KeyMismatch));
    let kg = cert(KG);
    assert_eq!(
        *kg.public_key(),
        x25519_public_key_from_pem(KG_PUB).unwrap().0
    );
    assert_eq!(kg.not_after(), KG_END);
}

#[test]
fn reencoding_is_byte_identical_to_nebula_cert() {
    for pem in [CA, HOST1, OTHER_CA, PLAIN, KG] {
        let c = cert(pem);
        assert_eq!(c.to_pem().as_bytes(), pem);
        let body = pem::decode(pem).unwrap().0.body;
        assert_eq!(c.to_bytes(), body);
        assert_eq!(c.fingerprint(), Fingerprint::of(&body));
        assert_eq!(NebulaCertificate::from_bytes(&body).unwrap(), c);
    }
}

#[test]
fn print_forms_match_nebula_cert_output() {
    let fixtures: [(&[u8], &str, &str); 4] = [
        (
            CA,
            include_str!("../../tests/fixtures/cert/ca.print.txt"),
            include_str!("../../tests/fixtures/cert/ca.print.json"),
        ),
        (
            HOST1,
            include_str!("../../tests/fixtures/cert/host1.print.txt"),
            include_str!("../../tests/fixtures/cert/host1.print.json"),
        ),
        (
            PLAIN,
            include_str!("../../tests/fixtures/cert/plain.print.txt"),
            include_str!("../../tests/fixtures/cert/plain.print.json"),
        ),
        (
            BUNDLE,
            include_str!("../../tests/fixtures/cert/bundle.print.txt"),
            include_str!("../../tests/fixtures/cert/bundle.print.json"),
        ),
    ];
    for (pem, text, json) in fixtures {
        let certs = NebulaCertificate::bundle_from_pem(pem).unwrap();
        let ours_text: String = certs.iter().map(|c| c.to_text(&Utc) + "\n").collect();
        let ours_json: String = certs.iter().map(|c| c.to_json(&Utc) + "\n").collect();
        assert_eq!(ours_text, text);
        assert_eq!(ours_json, json);
    }
}

#[test]
fn verify_accepts_good_and_follows_1_6_1_order() {
    let both = pool(&[CA, OTHER_CA]);
    assert_eq!(both.len(), 2);
    both.verify(&cert(HOST1), NOW).unwrap();
    both.verify(&cert(PLAIN), NOW).unwrap();
    both.verify(&cert(KG), KG_END).unwrap(); // inclusive end
    assert_eq!(both.verify(&cert(KG), KG_END + 1), Err(CertError::Expired));
    assert_eq!(
        both.verify(&cert(HOST1), CA_END + 1),
        Err(CertError::RootExpired)
    );
    assert_eq!(
        pool(&[CA]).verify(&cert(PLAIN), NOW),
        Err(CertError::UnknownCa)
    );
    assert_eq!(both.verify(&cert(CA), NOW), Err(CertError::NoIssuer));

    let mut blocked = both.clone();
    blocked.blocklist_fingerprint(cert(HOST1).fingerprint());
    assert_eq!(blocked.verify(&cert(HOST1), NOW), Err(CertError::Blocked));
    blocked.verify(&cert(PLAIN), NOW).unwrap();
    blocked.reset_blocklist();
    blocked.verify(&cert(HOST1), NOW).unwrap();
}

/// A blocklisted CA revokes its leaves (nebula#1824), not the leaves of other CAs.
#[test]
fn blocklisted_ca_revokes_everything_it_signed() {
    let mut pool = pool(&[CA, OTHER_CA]);
    pool.blocklist_fingerprint(cert(CA).fingerprint());
    assert_eq!(pool.verify(&cert(HOST1), NOW), Err(CertError::CaBlocked));
    assert_eq!(pool.verify(&cert(KG), NOW), Err(CertError::CaBlocked));
    pool.verify(&cert(PLAIN), NOW).unwrap();
    // A listed leaf still reports itself first.
    pool.blocklist_fingerprint(cert(HOST1).fingerprint());
    assert_eq!(pool.verify(&cert(HOST1), NOW), Err(CertError::Blocked));
}

#[test]
fn tampering_breaks_the_signature() {
    let pool = pool(&[CA]);
    let host = cert(HOST1);
    let mut sig = *host.signature();
    sig[10] ^= 0x40;
    let forged = NebulaCertificate::from_parts(host.details().clone(), sig);
    assert_eq!(pool.verify(&forged, NOW), Err(CertError::BadSignature));
    let mut details = host.details().clone();
    details.name = "host2".into();
    let renamed = NebulaCertificate::from_parts(details, *host.signature());
    assert_eq!(pool.verify(&renamed, NOW), Err(CertError::BadSignature));
}

/// A CA of our own with a narrow window, to test not-yet-valid and constraint rules.
fn own_ca(groups: &[&str], ips: &[&str], subnets: &[&str]) -> (NebulaCertificate, CaSigningKey) {
    let key = CaSigningKey::from_seed([42; 32]);
    let details = CertDetails {
        name: "own".into(),
        ips: ips.iter().map(|s| net(s)).collect(),
        subnets: subnets.iter().map(|s| net(s)).collect(),
        groups: groups.iter().map(|s| s.to_string()).collect(),
        not_before: 1000,
        not_after: 2000,
        public_key: key.public_key(),
        is_ca: true,
        issuer: None,
    };
    (details.sign(&key), key)
}

fn host_details(ip: &str, groups: &[&str], subnets: &[&str]) -> CertDetails {
    CertDetails {
        name: "h".into(),
        ips: vec![net(ip)],
        subnets: subnets.iter().map(|s| net(s)).collect(),
        groups: groups.iter().map(|s| s.to_string()).collect(),
        not_before: 1500,
        not_after: 1600,
        public_key: X25519PrivateKey::from_bytes([5; 32]).public_key(),
        is_ca: false,
        issuer: None,
    }
}

#[test]
fn validity_window_uses_now() {
    let (ca, key) = own_ca(&[], &[], &[]);
    let mut pool = CaPool::new();
    assert_eq!(pool.add_ca(ca.clone(), 1500).unwrap(), CaStatus::Valid);
    let host = sign_host(host_details("10.0.0.1/8", &[], &[]), &ca, &key, 1500).unwrap();
    assert_eq!(pool.verify(&host, 1499), Err(CertError::Expired)); // not yet valid
    pool.verify(&host, 1500).unwrap();
    pool.verify(&host, 1600).unwrap();
    assert_eq!(pool.verify(&host, 1601), Err(CertError::Expired));
    assert_eq!(pool.verify(&host, 999), Err(CertError::RootExpired));
    assert_eq!(pool.verify(&host, 2001), Err(CertError::RootExpired));
}

#[test]
fn ca_constraints_on_sign_and_verify() {
    let (ca, key) = own_ca(&["ops", "dev"], &["10.42.0.0/16"], &["192.168.0.0/16"]);
    let sign = |d: CertDetails| sign_host(d, &ca, &key, 1500);
    let ok = sign(host_details("10.42.1.5/24", &["ops"], &["192.168.10.0/24"])).unwrap();
    assert_eq!(ok.issuer(), Some(ca.fingerprint()));
    let refused = |d: CertDetails| match sign(d) {
        Err(SignError::Constraints(e)) => e,
        other => panic!("expected a constraint error, got {other:?}"),
    };
    assert_eq!(
        refused(host_details("10.42.1.5/16", &["ops", "web"], &[])),
        CertError::GroupNotAllowed("web".into())
    );
    assert_eq!(
        refused(host_details("10.43.1.5/16", &[], &[])),
        CertError::IpNotAllowed(net("10.43.1.5/16"))
    );
    assert_eq!(
        refused(host_details("10.42.1.5/8", &[], &[])),
        CertError::IpNotAllowed(net("10.42.1.5/8"))
    );
    assert_eq!(
        refused(host_details("10.42.1.5/16", &[], &["172.16.0.0/24"])),
        CertError::SubnetNotAllowed(net("172.16.0.0/24"))
    );
    let mut late = host_details("10.42.1.5/16", &[], &[]);
    late.not_after = 2001;
    assert_eq!(refused(late), CertError::ExpiresAfterSigner);
    let mut early = host_details("10.42.1.5/16", &[], &[]);
    early.not_before = 999;
    assert_eq!(refused(early), CertError::ValidBeforeSigner);
    assert_eq!(
        sign(host_details("10.42.1.5/16", &[], &[])).map(|_| ()),
        Ok(())
    );
    assert_eq!(
        sign_host(host_details("10.42.1.5/16", &[], &[]), &ca, &key, 2001).unwrap_err(),
        SignError::CaExpired
    );
    let wrong = CaSigningKey::from_seed([1; 32]);
    assert_eq!(
        sign_host(host_details("10.42.1.5/16", &[], &[]), &ca, &wrong, 1500).unwrap_err(),
        SignError::KeyMismatch
    );

    // the same rules at verify time, for a cert signed without checks
    let mut pool = CaPool::new();
    pool.add_ca(ca.clone(), 1500).unwrap();
    pool.verify(&ok, 1550).unwrap();
    let mut d = host_details("10.43.1.5/16", &[], &[]);
    d.issuer = Some(ca.fingerprint());
    let outside = d.sign(&key);
    assert_eq!(
        pool.verify(&outside, 1550),
        Err(CertError::IpNotAllowed(net("10.43.1.5/16")))
    );
}

#[test]
fn ca_pool_loading() {
    let loaded = CaPool::from_pem(BUNDLE, NOW).unwrap();
    assert_eq!(loaded.pool.len(), 2);
    assert!(loaded.expired.is_empty());
    assert_eq!(
        CaPool::from_pem(BUNDLE, CA_END + 1).unwrap_err(),
        CertError::NoValidCa
    );
    let (old, _) = own_ca(&[], &[], &[]);
    let mixed = format!("{}{}", old.to_pem(), String::from_utf8_lossy(CA));
    let loaded = CaPool::from_pem(mixed.as_bytes(), NOW).unwrap();
    assert_eq!(loaded.pool.len(), 2);
    assert_eq!(loaded.expired, vec![old.clone()]);
    let with_host = [CA, HOST1].concat();
    assert_eq!(
        CaPool::from_pem(&with_host, NOW).unwrap_err(),
        CertError::NotCa {
            name: "host1".into()
        }
    );
    let mut d = old.details().clone();
    d.name = "forged".into();
    let forged = NebulaCertificate::from_parts(d, *old.signature());
    assert_eq!(
        CaPool::new().add_ca(forged, 1500).unwrap_err(),
        CertError::NotSelfSigned {
            name: "forged".into()
        }
    );
    let trailing_garbage = [CA, b"garbage"].concat();
    assert_eq!(
        CaPool::from_pem(&trailing_garbage, NOW).unwrap_err(),
        CertError::NoPemBlock
    );
    assert_eq!(
        CaPool::from_pem(b"", NOW).unwrap_err(),
        CertError::NoPemBlock
    );
}

#[test]
fn handshake_form_round_trip() {
    let host = cert(HOST1);
    let wire = host.marshal_without_public_key();
    let raw = RawNebulaCertificate::decode(wire.as_slice()).unwrap();
    assert!(raw.details.as_ref().unwrap().public_key.is_empty());
    assert_eq!(wire.len(), host.to_bytes().len() - 34);
    let back = NebulaCertificate::from_handshake_bytes(&wire, *host.public_key()).unwrap();
    assert_eq!(back, host);
    // a different static key yields a different cert whose signature fails
    let wrong = NebulaCertificate::from_handshake_bytes(&wire, [7; 32]).unwrap();
    assert_ne!(wrong.fingerprint(), host.fingerprint());
    assert_eq!(
        pool(&[CA]).verify(&wrong, NOW),
        Err(CertError::BadSignature)
    );
    // a key already present is overwritten
    let full = NebulaCertificate::from_handshake_bytes(&host.to_bytes(), [7; 32]).unwrap();
    assert_eq!(full, wrong);
    assert_eq!(
        NebulaCertificate::from_handshake_bytes(&[], [0; 32]),
        Err(CertError::Empty)
    );
    assert_eq!(
        NebulaCertificate::from_handshake_bytes(&[0x12, 0x00], [0; 32]),
        Err(CertError::MissingDetails)
    );
}

fn raw_host() -> RawNebulaCertificate {
    RawNebulaCertificate::decode(cert(HOST1).to_bytes().as_slice()).unwrap()
}

fn parse_raw(raw: &RawNebulaCertificate) -> Result<NebulaCertificate, CertError> {
    NebulaCertificate::from_bytes(&raw.encode_to_vec())
}

#[test]
fn malformed_bodies_are_rejected_with_reasons() {
    let mut r = raw_host();
    r.details.as_mut().unwrap().ips.push(1);
    assert_eq!(parse_raw(&r), Err(CertError::OddIps));
    let mut r = raw_host();
    r.details.as_mut().unwrap().subnets.pop();
    assert_eq!(parse_raw(&r), Err(CertError::OddSubnets));
    let mut r = raw_host();
    r.details.as_mut().unwrap().public_key.truncate(31);
    assert_eq!(parse_raw(&r), Err(CertError::PublicKeyLength(31)));
    let mut r = raw_host();
    r.signature.pop();
    assert_eq!(parse_raw(&r), Err(CertError::SignatureLength(63)));
    let mut r = raw_host();
    r.details.as_mut().unwrap().issuer.push(0);
    assert_eq!(parse_raw(&r), Err(CertError::IssuerLength(33)));
    let mut r = raw_host();
    r.details.as_mut().unwrap().ips[1] = 0xFF00FF00;
    assert!(matches!(
        parse_raw(&r),
        Err(CertError::NonContiguousMask { .. })
    ));
    r.details = None;
    assert_eq!(parse_raw(&r), Err(CertError::MissingDetails));
    assert_eq!(NebulaCertificate::from_bytes(&[]), Err(CertError::Empty));
    let body = cert(HOST1).to_bytes();
    for cut in [1, 10, body.len() / 2, body.len() - 1] {
        assert!(
            NebulaCertificate::from_bytes(&body[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    // a non-UTF-8 name is a protobuf error, as in Go's proto3 decoder
    let mut bad = RawNebulaCertificateDetails::default().encode_to_vec();
    bad.extend_from_slice(&[0x0a, 0x01, 0xff]);
    let outer = [&[0x0a, bad.len() as u8][..], &bad].concat();
    assert!(matches!(
        NebulaCertificate::from_bytes(&outer),
        Err(CertError::Protobuf(_))
    ));
}

#[test]
fn bad_pem_is_rejected_with_reasons() {
    assert_eq!(
        NebulaCertificate::from_pem(b"").unwrap_err(),
        CertError::NoPemBlock
    );
    let truncated = &HOST1[..HOST1.len() - 30];
    assert_eq!(
        NebulaCertificate::from_pem(truncated).unwrap_err(),
        CertError::NoPemBlock
    );
    let garbled = String::from_utf8_lossy(HOST1)
        .replacen("CiQ", "C*Q", 1)
        .replacen('A', "*", 1);
    assert_eq!(
        NebulaCertificate::from_pem(garbled.as_bytes()).unwrap_err(),
        CertError::NoPemBlock
    );
    assert!(matches!(
        NebulaCertificate::from_pem(CA_KEY),
        Err(CertError::WrongBanner {
            expected: "certificate",
            ..
        })
    ));
    assert!(matches!(
        CaSigningKey::from_pem(HOST1_KEY),
        Err(CertError::WrongBanner { .. })
    ));
    let bundle = NebulaCertificate::bundle_from_pem(BUNDLE).unwrap();
    assert_eq!(bundle.len(), 2);
    assert!(NebulaCertificate::bundle_from_pem(&[BUNDLE, b"x"].concat()).is_err());
}

#[test]
fn fingerprint_parsing() {
    let fp = cert(CA).fingerprint();
    assert_eq!(fp.to_string().parse::<Fingerprint>().unwrap(), fp);
    assert_eq!(
        fp.to_string()
            .to_uppercase()
            .parse::<Fingerprint>()
            .unwrap(),
        fp
    );
    assert!("abc".parse::<Fingerprint>().is_err());
    assert!("zz".repeat(32).parse::<Fingerprint>().is_err());
}

fn arb_net() -> impl Strategy<Value = Ipv4Net> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, p)| Ipv4Net::new(a.into(), p).unwrap())
}

fn arb_details() -> impl Strategy<Value = CertDetails> {
    (
        ".{0,20}",
        prop::collection::vec(arb_net(), 0..4),
        prop::collection::vec(arb_net(), 0..4),
        prop::collection::vec("[a-z0-9 ,<>\"]{0,8}", 0..4),
        any::<i64>(),
        any::<i64>(),
        any::<[u8; 32]>(),
        any::<bool>(),
        prop::option::of(any::<[u8; 32]>()),
    )
        .prop_map(
            |(name, ips, subnets, groups, nb, na, pk, is_ca, issuer)| CertDetails {
                name,
                ips,
                subnets,
                groups,
                not_before: nb,
                not_after: na,
                public_key: pk,
                is_ca,
                issuer: issuer.map(Fingerprint::from_bytes),
            },
        )
}

proptest! {
    #[test]
    fn encode_decode_round_trip(details in arb_details(), seed in any::<[u8; 32]>()) {
        let key = CaSigningKey::from_seed(seed);
        let c = details.sign(&key);
        let back = NebulaCertificate::from_pem(c.to_pem().as_bytes()).unwrap().0;
        prop_assert_eq!(&back, &c);
        prop_assert_eq!(back.fingerprint(), Fingerprint::of(&c.to_bytes()));
        prop_assert!(back.check_signature(&key.public_key()));
        let hs = NebulaCertificate::from_handshake_bytes(
            &c.marshal_without_public_key(), *c.public_key()).unwrap();
        prop_assert_eq!(hs.fingerprint(), c.fingerprint());
        let _ = c.to_text(&Utc);
        let _ = c.to_json(&Utc);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = NebulaCertificate::from_bytes(&bytes);
        let _ = NebulaCertificate::from_pem(&bytes);
        let _ = NebulaCertificate::from_handshake_bytes(&bytes, [0; 32]);
    }
}
