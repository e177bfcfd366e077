//! Shared set-up for the benchmarks: keystores with ready keys, and the raw
//! primitives they are compared with, holding the same kind of key.
//!
//! Naming: every criterion group is one operation; inside it, `raw-*`
//! functions are baselines and `keystore-*` functions go through
//! `Keystore<B>`. `bench-report` pairs each keystore path with its baseline.

use backend_soft::{create_key_file, Kdf, SoftStore, Unlock};
use keystore_api::{Actor, Algorithm, KeySpec, Keystore, Role, SecretBytes};
use std::path::{Path, PathBuf};

/// The HMAC/HKDF key every derive benchmark uses (raw and keystore alike).
pub const K: [u8; 32] = [0x42; 32];

/// The actor benchmarks create keys as.
pub fn officer() -> Actor {
    Actor::new("bench", Role::SecurityOfficer).expect("valid actor")
}

/// A directory for a benchmark store: on tmpfs when there is one, so that
/// set-up (thousands of fsyncs) does not dominate and the measured paths,
/// which do no I/O, are unaffected either way.
pub fn bench_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("keystore-bench-");
        b
    };
    if shm.is_dir() {
        if let Ok(d) = builder.tempdir_in(shm) {
            return d;
        }
    }
    builder.tempdir().expect("temporary directory")
}

/// Opens (creating on first use) a soft keystore in `dir`.
pub fn soft_keystore(dir: &Path) -> Keystore<SoftStore> {
    soft_keystore_with(dir, keystore_api::OpenOptions::new())
}

/// As [`soft_keystore`], with `options`.
pub fn soft_keystore_with(dir: &Path, options: keystore_api::OpenOptions) -> Keystore<SoftStore> {
    let kf: PathBuf = dir.join("kek");
    let unlock = Unlock::KeyFile(kf.clone());
    let store = if SoftStore::exists(&dir.join("soft")) {
        SoftStore::open(&dir.join("soft"), &unlock).expect("open soft store")
    } else {
        create_key_file(&kf).expect("key file");
        SoftStore::create(&dir.join("soft"), &unlock, Kdf::KeyFile).expect("create soft store")
    };
    Keystore::open_with(
        store,
        &dir.join("metadata.sqlite"),
        std::sync::Arc::new(keystore_api::SystemClock),
        options,
    )
    .expect("open keystore")
}

/// How many keys [`standard_keys`] creates.
pub const STANDARD_KEY_COUNT: usize = 5;

/// Creates the standard benchmark keys: `ecdsa`, `rsa` (RSA-2048 PKCS#1),
/// `hmac` (imported K, usage mac), `kdf` (the same K, usage derive: a key
/// holds mac or derive, never both) and `aes`.
pub fn standard_keys<B: keystore_api::Backend>(ks: &Keystore<B>) {
    let so = officer();
    ks.create(&so, "ecdsa", KeySpec::new(Algorithm::EcdsaP256Sha256))
        .expect("ecdsa");
    let _ = ks.create(&so, "rsa", KeySpec::new(Algorithm::Rsa2048Pkcs1Sha256));
    ks.import(
        &so,
        "hmac",
        KeySpec::new(Algorithm::HmacSha256),
        &SecretBytes::from_slice(&K),
    )
    .expect("hmac");
    ks.import(
        &so,
        "kdf",
        KeySpec::new(Algorithm::HmacSha256).with_usages(keystore_api::Usages::DERIVE),
        &SecretBytes::from_slice(&K),
    )
    .expect("kdf");
    let _ = ks.create(&so, "aes", KeySpec::new(Algorithm::Aes256Gcm));
}

/// Adds `n` filler HMAC keys named `filler-<i>` (for the scale benchmarks).
pub fn filler_keys<B: keystore_api::Backend>(ks: &Keystore<B>, n: usize) {
    let so = officer();
    for i in 0..n {
        ks.create(
            &so,
            &format!("filler-{i}"),
            KeySpec::new(Algorithm::HmacSha256),
        )
        .expect("filler key");
    }
}

/// Runs `op` `iters` times spread over one thread per element of `states`
/// (each thread gets its own state: a session, or `()`), and returns the
/// wall time scaled to exactly `iters` operations. Criterion divides it by
/// `iters`, so the reported time is wall time per operation across all
/// threads (the inverse of throughput): with perfect scaling, two threads
/// report half the time of one.
pub fn spread<S: Send>(
    iters: u64,
    states: &mut [S],
    op: impl Fn(&mut S) + Sync,
) -> std::time::Duration {
    let n = states.len().max(1) as u64;
    let per = iters.div_ceil(n);
    let start = std::time::Instant::now();
    std::thread::scope(|scope| {
        for st in states.iter_mut() {
            let op = &op;
            scope.spawn(move || {
                for _ in 0..per {
                    op(st);
                }
            });
        }
    });
    start.elapsed().mul_f64(iters as f64 / (per * n) as f64)
}

/// Raw baselines in the same process.
pub mod raw {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    /// An aws-lc-rs ECDSA P-256 key.
    pub fn aws_lc_ecdsa() -> EcdsaKeyPair {
        EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("ecdsa")
    }

    /// An aws-lc-rs RSA-2048 key.
    pub fn aws_lc_rsa() -> RsaKeyPair {
        RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa")
    }

    /// The RNG aws-lc-rs signs with.
    pub fn rng() -> SystemRandom {
        SystemRandom::new()
    }

    /// The raw `hkdf` crate, per the derivation contract.
    pub fn hkdf_derive(k: &[u8], salt: &[u8], info: &[u8], out: &mut [u8]) {
        hkdf::Hkdf::<sha2::Sha256>::new(Some(k), salt)
            .expand(info, out)
            .expect("hkdf length");
    }
}
