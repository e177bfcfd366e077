//! The soft backend through the Keystore against raw aws-lc-rs and
//! RustCrypto in the same run.

use benches::{
    bench_dir, filler_keys, raw, soft_keystore, soft_keystore_with, spread, standard_keys, K,
    STANDARD_KEY_COUNT,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keystore_api::SignatureFormat;
use std::hint::black_box;
use std::time::Duration;

const MSG: &[u8] = b"gateway telemetry frame: 64 bytes of typical payload..........";

/// ECDSA P-384, Ed25519, ML-DSA-65 and ECDH P-256 (`soft/algorithms.rs`).
#[path = "soft/algorithms.rs"]
mod algorithms;

fn sign(c: &mut Criterion) {
    let dir = bench_dir();
    let ks = soft_keystore(dir.path());
    standard_keys(&ks);

    let mut g = c.benchmark_group("ecdsa-p256-sign");
    let kp = raw::aws_lc_ecdsa();
    let rng = raw::rng();
    g.bench_function("raw-aws-lc", |b| {
        b.iter(|| kp.sign(&rng, black_box(MSG)).expect("sign"))
    });
    let sk = p256::ecdsa::SigningKey::from_bytes(&[7u8; 32].into()).expect("p256 key");
    g.bench_function("raw-rustcrypto", |b| {
        use p256::ecdsa::signature::Signer;
        b.iter(|| -> p256::ecdsa::Signature { sk.sign(black_box(MSG)) })
    });
    g.bench_function("keystore-soft", |b| {
        b.iter(|| {
            ks.sign("ecdsa", black_box(MSG), SignatureFormat::Fixed)
                .expect("sign")
        })
    });
    g.finish();

    let mut g = c.benchmark_group("rsa-2048-sign");
    let rsa = raw::aws_lc_rsa();
    let mut sig = vec![0u8; rsa.public_modulus_len()];
    g.bench_function("raw-aws-lc", |b| {
        b.iter(|| {
            rsa.sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &rng,
                black_box(MSG),
                &mut sig,
            )
            .expect("sign")
        })
    });
    g.bench_function("keystore-soft", |b| {
        b.iter(|| {
            ks.sign("rsa", black_box(MSG), SignatureFormat::Der)
                .expect("sign")
        })
    });
    g.finish();
}

fn derive_and_mac(c: &mut Criterion) {
    let dir = bench_dir();
    let ks = soft_keystore(dir.path());
    standard_keys(&ks);
    let salt = b"session-nonce-000000000001";
    let info = b"tls 1.3 exporter";

    let mut g = c.benchmark_group("hkdf-derive-32");
    g.bench_function("raw-hkdf", |b| {
        let mut out = [0u8; 32];
        b.iter(|| {
            raw::hkdf_derive(&K, black_box(salt), info, &mut out);
            out
        })
    });
    g.bench_function("keystore-soft", |b| {
        b.iter(|| {
            ks.derive_hkdf_sha256("kdf", black_box(salt), info, 32)
                .expect("derive")
        })
    });
    g.finish();

    let mut g = c.benchmark_group("hmac-sha256-64");
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &K);
    g.bench_function("raw-aws-lc", |b| {
        b.iter(|| aws_lc_rs::hmac::sign(&key, black_box(MSG)))
    });
    g.bench_function("raw-rustcrypto", |b| {
        use hmac::Mac;
        b.iter(|| {
            let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&K).expect("key");
            m.update(black_box(MSG));
            m.finalize()
        })
    });
    g.bench_function("keystore-soft", |b| {
        b.iter(|| ks.mac("hmac", black_box(MSG)).expect("mac"))
    });
    g.finish();
}

/// AES-256-GCM encryption through the keystore against raw aws-lc-rs. The
/// `aes` key has the default encryption limit (2^32, SP 800-38D), so the
/// keystore path includes the counting: an atomic decrement per encryption
/// and, every 2^16 encryptions, one reservation (a write transaction).
/// 64 bytes shows the per-call cost best.
fn aead(c: &mut Criterion) {
    let dir = bench_dir();
    let ks = soft_keystore(dir.path());
    standard_keys(&ks);
    for size in [64usize, 1024, 64 * 1024] {
        let label = if size < 1024 {
            format!("{size}b")
        } else {
            format!("{}k", size / 1024)
        };
        let mut g = c.benchmark_group(format!("aes-256-gcm-encrypt-{label}"));
        g.throughput(Throughput::Bytes(size as u64));
        let pt = vec![0x5au8; size];
        let key = aws_lc_rs::aead::LessSafeKey::new(
            aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, &K).expect("key"),
        );
        g.bench_function("raw-aws-lc", |b| {
            b.iter(|| {
                let mut nonce = [0u8; 12];
                aws_lc_rs::rand::fill(&mut nonce).expect("rng");
                let mut buf = pt.clone();
                key.seal_in_place_append_tag(
                    aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
                    aws_lc_rs::aead::Aad::from(b"aad"),
                    &mut buf,
                )
                .expect("seal");
                buf
            })
        });
        g.bench_function("keystore-soft", |b| {
            b.iter(|| ks.encrypt("aes", black_box(&pt), b"aad").expect("encrypt"))
        });
        g.finish();
    }
}

/// The slow path of the encryption count: a store on disk (not tmpfs, so
/// each reservation pays its fsync) that reserves one encryption at a time,
/// so every call is a reservation. At the default block (2^16) this cost is
/// paid once per 65,536 encryptions; `docs/usage-limits.md` amortises it.
fn aead_reservation(c: &mut Criterion) {
    let dir = tempfile::Builder::new()
        .prefix("keystore-bench-disk-")
        .tempdir()
        .expect("temporary directory");
    {
        let ks = soft_keystore(dir.path());
        standard_keys(&ks);
    }
    let ks = soft_keystore_with(
        dir.path(),
        keystore_api::OpenOptions::new().encryption_block(1),
    );
    let mut g = c.benchmark_group("aes-256-gcm-encrypt-64b-reserve-each");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let pt = [0x5au8; 64];
    g.bench_function("keystore-soft-block-1", |b| {
        b.iter(|| ks.encrypt("aes", black_box(&pt), b"aad").expect("encrypt"))
    });
    g.finish();
}

/// One and two threads against one keystore, and raw aws-lc-rs on one and
/// two threads (the machine's own scaling, the ceiling for the keystore's):
/// wall time per operation across the threads.
fn threads(c: &mut Criterion) {
    let dir = bench_dir();
    let ks = soft_keystore(dir.path());
    standard_keys(&ks);
    let kp = raw::aws_lc_ecdsa();
    let rng = raw::rng();
    let mut g = c.benchmark_group("ecdsa-p256-sign-threads");
    for n in [1usize, 2] {
        g.bench_with_input(BenchmarkId::new("raw-aws-lc", n), &n, |b, &n| {
            let mut threads = vec![(); n];
            b.iter_custom(|iters| {
                spread(iters, &mut threads, |_| {
                    black_box(kp.sign(&rng, MSG).expect("sign"));
                })
            })
        });
        g.bench_with_input(BenchmarkId::new("keystore-soft", n), &n, |b, &n| {
            // Wall time per operation across the threads (see `spread`).
            let mut threads = vec![(); n];
            b.iter_custom(|iters| {
                spread(iters, &mut threads, |_| {
                    black_box(ks.sign("ecdsa", MSG, SignatureFormat::Fixed).expect("sign"));
                })
            })
        });
    }
    g.finish();
}

/// Sign through a store holding 10 keys and one holding 10,000; and how long
/// opening the large store takes.
fn scale(c: &mut Criterion) {
    // KEYSTORE_BENCH_KEYS lowers the large store's size for smoke runs.
    let n: usize = std::env::var("KEYSTORE_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
        .max(10);
    let mut g = c.benchmark_group("ecdsa-p256-sign-store-size");
    let small = bench_dir();
    let large = bench_dir();
    {
        let ks = soft_keystore(small.path());
        standard_keys(&ks);
        filler_keys(&ks, 10 - STANDARD_KEY_COUNT);
        let ks = soft_keystore(large.path());
        standard_keys(&ks);
        filler_keys(&ks, n - STANDARD_KEY_COUNT);
    }
    let n_label = n.to_string();
    for (label, dir) in [("10", &small), (n_label.as_str(), &large)] {
        let ks = soft_keystore(dir.path());
        g.bench_function(BenchmarkId::new("keystore-soft", label), |b| {
            b.iter(|| {
                ks.sign("ecdsa", black_box(MSG), SignatureFormat::Fixed)
                    .expect("sign")
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group(format!("open-store-{n}-keys"));
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("keystore-soft", |b| b.iter(|| soft_keystore(large.path())));
    g.finish();
}

/// A signed audit checkpoint (one write transaction with its fsync, one
/// ECDSA P-256 signature in the backend) against the raw signature alone.
fn audit_checkpoint(c: &mut Criterion) {
    let dir = bench_dir();
    let ks = soft_keystore(dir.path());
    let mut g = c.benchmark_group("audit-checkpoint");
    let kp = raw::aws_lc_ecdsa();
    let rng = raw::rng();
    g.bench_function("raw-aws-lc-sign", |b| {
        b.iter(|| kp.sign(&rng, black_box(MSG)).expect("sign"))
    });
    let officer = benches::officer();
    g.bench_function("keystore-soft", |b| {
        b.iter(|| ks.checkpoint(&officer).expect("checkpoint"))
    });
    g.finish();
}

criterion_group!(
    benches,
    audit_checkpoint,
    sign,
    derive_and_mac,
    aead,
    aead_reservation,
    threads,
    scale,
    algorithms::sign,
    algorithms::agree
);
criterion_main!(benches);
