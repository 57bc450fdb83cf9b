//! Fuzz target: arbitrary bytes into every certificate parser (PEM armour, certificate protobuf,
//! handshake form, key PEMs, CA bundle). None may panic; whatever parses must re-encode to
//! something that parses back to the same certificate with the same fingerprint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshd::cert::{pem, CaPool, CaSigningKey, NebulaCertificate, Utc, X25519PrivateKey};

fuzz_target!(|data: &[u8]| {
    if let Ok(cert) = NebulaCertificate::from_bytes(data) {
        let again = NebulaCertificate::from_bytes(&cert.to_bytes()).expect("re-encoded cert parses");
        assert_eq!(again, cert);
        assert_eq!(again.fingerprint(), cert.fingerprint());
        let _ = cert.to_text(&Utc);
        let _ = cert.to_json(&Utc);
        let hs = NebulaCertificate::from_handshake_bytes(&cert.marshal_without_public_key(), *cert.public_key())
            .expect("handshake form parses");
        assert_eq!(hs, cert);
    }
    let _ = NebulaCertificate::from_handshake_bytes(data, [9; 32]);
    let _ = NebulaCertificate::bundle_from_pem(data);
    let _ = CaPool::from_pem(data, 1_800_000_000);
    let _ = X25519PrivateKey::from_pem(data);
    let _ = CaSigningKey::from_pem(data);
    if let Some((block, _)) = pem::decode(data) {
        let text = pem::encode(&block.label, &block.body);
        let (back, rest) = pem::decode(text.as_bytes()).expect("re-encoded PEM decodes");
        assert_eq!(back, block);
        assert!(rest.is_empty());
    }
});
