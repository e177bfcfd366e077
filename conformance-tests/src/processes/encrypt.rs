//! The worker side of TEST-KEY-59: encrypting with one AES-GCM key until
//! the keystore refuses, with the block size the parent chose.

use super::{Summary, WorkerSpec};
use keystore_api::{Backend, Keystore, OpenOptions};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Worker parameter: the key [`Role::EncryptUntilRefused`](super::Role::EncryptUntilRefused) encrypts with.
pub const LIMIT_KEY_PARAM: &str = "limit_key";
/// Worker parameter: the worker's [`OpenOptions::encryption_block`].
pub const ENCRYPTION_BLOCK_PARAM: &str = "encryption_block";
/// Worker parameter: microseconds to pause after each encryption.
pub const PACE_PARAM: &str = "pace_us";
/// Worker parameter: a file whose appearance starts the encryptions, so
/// that workers started one after another encrypt at the same time.
pub const START_FILE_PARAM: &str = "start_file";
/// The AAD of every [`Role::EncryptUntilRefused`](super::Role::EncryptUntilRefused) encryption.
pub const LIMIT_AAD: &[u8] = b"TEST-KEY-59";

/// The options a worker opens its store with: `check_material`, and the
/// encryption block the spec's [`ENCRYPTION_BLOCK_PARAM`] names, if any.
pub fn worker_options(spec: &WorkerSpec, check_material: bool) -> OpenOptions {
    let options = OpenOptions::new().check_material(check_material);
    match spec
        .params
        .get(ENCRYPTION_BLOCK_PARAM)
        .and_then(|b| b.parse().ok())
    {
        Some(block) => options.encryption_block(block),
        None => options,
    }
}

/// [`Role::EncryptUntilRefused`](super::Role::EncryptUntilRefused): at most `count` encryptions; stops at the
/// first error, which the summary carries as the refusal.
pub(super) fn until_refused<B: Backend>(
    ks: &Keystore<B>,
    spec: &WorkerSpec,
    count: u64,
    start: Instant,
) -> Summary {
    let mut sum = Summary::default();
    let key = match spec.param(LIMIT_KEY_PARAM) {
        Ok(k) => k.to_string(),
        Err(e) => {
            sum.failed += 1;
            sum.errors.push(e);
            return sum;
        }
    };
    let pace = spec
        .params
        .get(PACE_PARAM)
        .and_then(|p| p.parse().ok())
        .map(Duration::from_micros);
    if let Some(go) = spec.params.get(START_FILE_PARAM).map(PathBuf::from) {
        while !go.exists() {
            if start.elapsed() > Duration::from_secs(120) {
                sum.failed += 1;
                sum.errors.push("the start file never appeared".into());
                return sum;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    while sum.ok < count {
        let msg = format!("message {} from {}", sum.ok + 1, std::process::id());
        match ks.encrypt(&key, msg.as_bytes(), LIMIT_AAD) {
            Ok(envelope) => {
                sum.ok += 1;
                if sum.sample.is_none() {
                    sum.sample = Some(hex::encode(&envelope));
                }
                println!("ENC {}", sum.ok);
            }
            Err(e) => {
                sum.refusal = Some(format!(
                    "{}: {e} (key {}, version {})",
                    e.kind(),
                    e.key().unwrap_or("-"),
                    e.version()
                        .map_or_else(|| "-".to_string(), |v| v.to_string())
                ));
                break;
            }
        }
        if let Some(p) = pace {
            std::thread::sleep(p);
        }
    }
    sum.seconds = start.elapsed().as_secs_f64();
    sum
}
