//! What the AES-GCM encryption count costs: `Keystore::encrypt` with a key
//! at the default limit (2^32, counted in reserved blocks of 2^16) against
//! raw aws-lc-rs AES-256-GCM, in alternating batches in one process, so that
//! both see the same machine load. Prints, per plaintext size, the median
//! time per encryption of each and the median and quartiles of the per-round
//! ratio keystore/raw.
//!
//! The store lives in the system's temporary directory (on disk, not tmpfs),
//! so the reservations made during the run (one write transaction, fsync
//! included, per 65,536 encryptions) are in the figures.
//!
//! `cargo run --release -p benches --example encryption_limit -- [ROUNDS] [BATCH] [SIZE...]`
//! (defaults 60 rounds of 4,000 encryptions each per size and path; sizes
//! 64, 1024 and 65536 bytes).

use benches::{soft_keystore, standard_keys};
use std::hint::black_box;
use std::time::Instant;

fn quartiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.25), at(0.5), at(0.75))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(60)
        .max(3);
    let batch: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(4_000)
        .max(1);
    let dir = tempfile::Builder::new()
        .prefix("keystore-bench-limit-")
        .tempdir()
        .expect("temporary directory");
    let ks = soft_keystore(dir.path());
    standard_keys(&ks);
    let key = aws_lc_rs::aead::LessSafeKey::new(
        aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, &benches::K).expect("key"),
    );
    println!("| plaintext | keystore (counted) | raw aws-lc-rs | ratio, median [q1, q3] |");
    println!("|---:|---:|---:|---|");
    let sizes: Vec<usize> = args.filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() {
        vec![64, 1024, 64 * 1024]
    } else {
        sizes
    };
    for size in sizes {
        let pt = vec![0x5au8; size];
        let (mut ks_ns, mut raw_ns, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..=rounds {
            let t = Instant::now();
            for _ in 0..batch {
                black_box(ks.encrypt("aes", black_box(&pt), b"aad").expect("encrypt"));
            }
            let k = t.elapsed().as_nanos() as f64 / batch as f64;
            let t = Instant::now();
            for _ in 0..batch {
                let mut nonce = [0u8; 12];
                aws_lc_rs::rand::fill(&mut nonce).expect("rng");
                let mut buf = pt.clone();
                key.seal_in_place_append_tag(
                    aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
                    aws_lc_rs::aead::Aad::from(b"aad"),
                    &mut buf,
                )
                .expect("seal");
                black_box(buf);
            }
            let r = t.elapsed().as_nanos() as f64 / batch as f64;
            // Round 0 warms caches and the first reservation; not counted.
            if round > 0 {
                ks_ns.push(k);
                raw_ns.push(r);
                ratios.push(k / r);
            }
        }
        let (_, k, _) = quartiles(ks_ns);
        let (_, r, _) = quartiles(raw_ns);
        let (q1, m, q3) = quartiles(ratios);
        println!("| {size} B | {k:.0} ns | {r:.0} ns | {m:.3} [{q1:.3}, {q3:.3}] |");
    }
    let used = ks
        .info("aes")
        .ok()
        .and_then(|i| i.active().and_then(|v| v.encryptions));
    if let Some(u) = used {
        println!();
        println!(
            "{rounds} rounds of {batch} per size and path; the key has used {} of {} encryptions.",
            u.reserved, u.limit
        );
    }
}
