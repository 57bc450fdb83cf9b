//! Seal and open of one 1,300-byte payload with a 16-byte header as associated data (the shape of
//! a meshd data packet at `tun.mtu: 1300`), for each AEAD backend and both Nebula ciphers.
//!
//! `cargo bench --manifest-path benches/aead/Cargo.toml -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

const LEN: usize = 1300;
const AD: [u8; 16] = [0x11, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 9];
const KEY: [u8; 32] = [7; 32];
const NONCE: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];

/// One backend: seal in place returning the tag, open in place given the tag.
trait Backend {
    fn seal(&self, buf: &mut [u8]) -> [u8; 16];
    fn open(&self, buf: &mut [u8], tag: &[u8; 16]) -> bool;
}

mod rustcrypto {
    use aes_gcm::aead::{AeadInPlace, KeyInit};

    pub struct Aes(pub aes_gcm::Aes256Gcm);
    pub struct ChaCha(pub chacha20poly1305::ChaCha20Poly1305);

    impl Aes {
        pub fn new() -> Self {
            Aes(aes_gcm::Aes256Gcm::new((&super::KEY).into()))
        }
    }
    impl ChaCha {
        pub fn new() -> Self {
            ChaCha(chacha20poly1305::ChaCha20Poly1305::new(
                (&super::KEY).into(),
            ))
        }
    }

    macro_rules! backend {
        ($t:ty) => {
            impl super::Backend for $t {
                fn seal(&self, buf: &mut [u8]) -> [u8; 16] {
                    self.0
                        .encrypt_in_place_detached((&super::NONCE).into(), &super::AD, buf)
                        .unwrap()
                        .into()
                }
                fn open(&self, buf: &mut [u8], tag: &[u8; 16]) -> bool {
                    self.0
                        .decrypt_in_place_detached(
                            (&super::NONCE).into(),
                            &super::AD,
                            buf,
                            tag.into(),
                        )
                        .is_ok()
                }
            }
        };
    }
    backend!(Aes);
    backend!(ChaCha);
}

mod ring_backend {
    use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey};

    pub struct Key(LessSafeKey);

    impl Key {
        pub fn new(alg: &'static ring::aead::Algorithm) -> Self {
            Key(LessSafeKey::new(UnboundKey::new(alg, &super::KEY).unwrap()))
        }
    }

    impl super::Backend for Key {
        fn seal(&self, buf: &mut [u8]) -> [u8; 16] {
            let nonce = Nonce::assume_unique_for_key(super::NONCE);
            let tag = self
                .0
                .seal_in_place_separate_tag(nonce, Aad::from(super::AD), buf)
                .unwrap();
            tag.as_ref().try_into().unwrap()
        }
        fn open(&self, buf: &mut [u8], tag: &[u8; 16]) -> bool {
            let nonce = Nonce::assume_unique_for_key(super::NONCE);
            self.0
                .open_in_place_separate_tag(nonce, Aad::from(super::AD), Tag::from(*tag), buf, 0..)
                .is_ok()
        }
    }
}

mod awslc_backend {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey};

    pub struct Key(LessSafeKey);

    impl Key {
        pub fn new(alg: &'static aws_lc_rs::aead::Algorithm) -> Self {
            Key(LessSafeKey::new(UnboundKey::new(alg, &super::KEY).unwrap()))
        }
    }

    impl super::Backend for Key {
        fn seal(&self, buf: &mut [u8]) -> [u8; 16] {
            let nonce = Nonce::assume_unique_for_key(super::NONCE);
            let tag = self
                .0
                .seal_in_place_separate_tag(nonce, Aad::from(super::AD), buf)
                .unwrap();
            tag.as_ref().try_into().unwrap()
        }
        fn open(&self, buf: &mut [u8], tag: &[u8; 16]) -> bool {
            let nonce = Nonce::assume_unique_for_key(super::NONCE);
            self.0
                .open_in_place_separate_tag(nonce, Aad::from(super::AD), tag, buf)
                .is_ok()
        }
    }
}

fn backends() -> Vec<(&'static str, Box<dyn Backend>)> {
    vec![
        ("aes/rustcrypto", Box::new(rustcrypto::Aes::new())),
        (
            "aes/ring",
            Box::new(ring_backend::Key::new(&ring::aead::AES_256_GCM)),
        ),
        (
            "aes/aws-lc-rs",
            Box::new(awslc_backend::Key::new(&aws_lc_rs::aead::AES_256_GCM)),
        ),
        ("chachapoly/rustcrypto", Box::new(rustcrypto::ChaCha::new())),
        (
            "chachapoly/ring",
            Box::new(ring_backend::Key::new(&ring::aead::CHACHA20_POLY1305)),
        ),
        (
            "chachapoly/aws-lc-rs",
            Box::new(awslc_backend::Key::new(&aws_lc_rs::aead::CHACHA20_POLY1305)),
        ),
    ]
}

fn aead(c: &mut Criterion) {
    let all = backends();
    // Every backend must produce the same ciphertext and tag, or the comparison means nothing.
    let mut reference: Option<(Vec<u8>, [u8; 16])> = None;
    for (name, b) in &all {
        let mut buf = vec![0xa5u8; LEN];
        let tag = b.seal(&mut buf);
        if name.starts_with("aes") {
            match &reference {
                None => reference = Some((buf.clone(), tag)),
                Some((r, t)) => assert!(r == &buf && t == &tag, "{name} disagrees"),
            }
        }
        assert!(b.open(&mut buf, &tag), "{name} cannot open its own seal");
        assert_eq!(buf, vec![0xa5u8; LEN], "{name} round trip");
    }
    let mut g = c.benchmark_group("aead_1300");
    g.throughput(Throughput::Bytes(LEN as u64));
    for (name, b) in &all {
        let mut buf = vec![0xa5u8; LEN];
        g.bench_with_input(BenchmarkId::new("seal", name), b, |bench, b| {
            bench.iter(|| black_box(b.seal(black_box(&mut buf))))
        });
        let mut sealed = vec![0xa5u8; LEN];
        let tag = b.seal(&mut sealed);
        let mut work = sealed.clone();
        g.bench_with_input(BenchmarkId::new("open", name), b, |bench, b| {
            bench.iter(|| {
                work.copy_from_slice(&sealed);
                black_box(b.open(black_box(&mut work), &tag))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, aead);
criterion_main!(benches);
