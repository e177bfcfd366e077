//! Monotonic counters in TPM NV indices, on a swtpm of their own per test:
//! the `MonotonicCounter` family of `TpmBackend`, checked against tpm2-tools
//! (an independent implementation), and the same counter through a soft
//! store sealed by the TPM (`TpmSealedKek`). A passphrase soft store has
//! none.

use backend_soft::{Kdf, SoftStore, Unlock};
use backend_tpm::swtpm::Swtpm;
use backend_tpm::{admin, TpmBackend, TpmConfig, TpmSealedKek};
use keystore_api::SecretBytes;
use keystore_backend::{ErrorKind, MonotonicCounter};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use tempfile::TempDir;

struct Env {
    dir: TempDir,
    swtpm: Swtpm,
    owner: SecretBytes,
}

impl Env {
    /// A fresh swtpm whose owner auth is set, so that a command sent with
    /// another (or an empty) owner auth fails.
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let swtpm = Swtpm::start(&dir.path().join("swtpm")).unwrap_or_else(|e| panic!("{e}"));
        let owner = SecretBytes::from_slice(b"owner secret");
        admin::change_owner_auth(&swtpm.tcti(), &SecretBytes::default(), &owner)
            .expect("set owner auth");
        Env { dir, swtpm, owner }
    }

    fn config(&self) -> TpmConfig {
        TpmConfig::new(self.swtpm.tcti())
            .with_owner_auth(SecretBytes::from_slice(self.owner.expose()))
            .expect("config")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn open(&self, store: &str) -> TpmBackend {
        TpmBackend::open(self.config(), &self.path(store)).unwrap_or_else(|e| panic!("open: {e:?}"))
    }

    fn owner_hex(&self) -> String {
        format!("hex:{}", hex::encode(self.owner.expose()))
    }

    /// Runs a tpm2-tools command on this simulator (nothing of ours may
    /// hold it: swtpm serves one client); its stdout.
    fn tool(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new(args[0])
            .args(&args[1..])
            .env("TPM2TOOLS_TCTI", self.swtpm.tcti())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}); install tpm2-tools: apt-get install tpm2-tools",
                    args[0]
                )
            });
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The NV indices the TPM holds (`tpm2_getcap handles-nv-index`).
    fn nv_indices(&self) -> Vec<u32> {
        String::from_utf8_lossy(&self.tool(&["tpm2_getcap", "handles-nv-index"]))
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- 0x"))
            .map(|h| u32::from_str_radix(h, 16).expect("hex handle"))
            .collect()
    }
}

/// The kind of `r`'s error; an `Ok` fails the test.
#[track_caller]
fn kind<T: std::fmt::Debug>(r: keystore_api::Result<T>) -> ErrorKind {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.kind(),
    }
}

fn index(reference: &[u8]) -> u32 {
    u32::from_be_bytes(reference.try_into().expect("a 4-byte reference"))
}

#[test]
fn counters_rise_by_one_and_tpm2_tools_read_the_same_counter() {
    let env = Env::new();
    let be = env.open("store");
    let (c, v) = be.counter_create().expect("create");
    let i = index(c.reference());
    assert!((0x0100_0000..=0x013F_FFFF).contains(&i), "{i:#x}");
    assert_eq!(c.description(), format!("TPM NV index 0x{i:08x}"));
    assert_eq!(be.counter_describe(c.reference()), c.description());
    assert!(v >= 1, "the first increment starts a counter above zero");
    assert_eq!(be.counter_read(c.reference()).expect("read"), v);
    assert_eq!(be.counter_increment(c.reference()).expect("inc"), v + 1);
    assert_eq!(be.counter_increment(c.reference()).expect("inc"), v + 2);
    assert_eq!(be.counter_read(c.reference()).expect("read"), v + 2);

    // A second counter is another index, and rises on its own.
    let (d, w) = be.counter_create().expect("create");
    assert_ne!(d.reference(), c.reference());
    assert_eq!(be.counter_increment(d.reference()).expect("inc"), w + 1);
    assert_eq!(be.counter_read(c.reference()).expect("read"), v + 2);

    // Another backend (another registry directory) on the same TPM.
    drop(be);
    let be2 = env.open("other-store");
    assert_eq!(be2.counter_read(c.reference()).expect("read"), v + 2);
    assert_eq!(be2.counter_read(d.reference()).expect("read"), w + 1);
    drop(be2);

    // tpm2-tools: an 8-byte counter with the documented attributes, and
    // the same big-endian value, read with the index's empty auth and with
    // the owner auth.
    let name = format!("0x{i:x}");
    let public = String::from_utf8_lossy(&env.tool(&["tpm2_nvreadpublic", &name])).into_owned();
    let friendly = public
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("attributes:"))
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string();
    assert_eq!(
        friendly, "friendly: ownerwrite|nt=0x1|ownerread|authread|no_da|written",
        "{public}"
    );
    assert!(public.contains("value: 0x22060012"), "{public}");
    assert!(public.contains("size: 8"), "{public}");
    assert!(public.contains("friendly: sha256"), "{public}");
    let by_index = env.tool(&["tpm2_nvread", &name, "-C", &name, "-s", "8"]);
    assert_eq!(by_index, (v + 2).to_be_bytes());
    let owner = env.owner_hex();
    let by_owner = env.tool(&["tpm2_nvread", &name, "-C", "o", "-P", &owner, "-s", "8"]);
    assert_eq!(by_owner, (v + 2).to_be_bytes());
    // Raised by tpm2-tools (owner auth): the backend sees it.
    env.tool(&["tpm2_nvincrement", &name, "-C", "o", "-P", &owner]);

    let be = env.open("store");
    assert_eq!(be.counter_read(c.reference()).expect("read"), v + 3);

    // Destroy: gone from the TPM, NotFound after, destroying again is Ok.
    be.counter_destroy(c.reference()).expect("destroy");
    assert_eq!(kind(be.counter_read(c.reference())), ErrorKind::NotFound);
    assert_eq!(
        kind(be.counter_increment(c.reference())),
        ErrorKind::NotFound
    );
    be.counter_destroy(c.reference()).expect("destroy again");
    let e = be.counter_read(c.reference()).unwrap_err();
    assert!(e.to_string().contains(&format!("0x{i:08x}")), "{e}");
    // A counter made after a destroyed one starts above it (the TPM keeps
    // its highest counter value), so re-creating never goes back.
    let (f, x) = be.counter_create().expect("create");
    assert!(x > v + 3, "{x} after a destroyed counter at {}", v + 3);
    be.counter_destroy(f.reference()).expect("destroy");
    be.counter_destroy(d.reference()).expect("destroy");
    drop(be);
    let left = env.nv_indices();
    for r in [&c, &d, &f] {
        assert!(!left.contains(&index(r.reference())), "{left:x?}");
    }
}

#[test]
fn malformed_references_are_invalid_input_and_foreign_indices_are_left_alone() {
    let env = Env::new();
    let be = env.open("store");
    for bad in [
        &[][..],
        &[1, 0, 0][..],
        &[1, 0, 0, 0, 0][..],
        &0x0140_0000u32.to_be_bytes()[..],
        &0x00FF_FFFFu32.to_be_bytes()[..],
        &0x81_00_00_01u32.to_be_bytes()[..],
        &0x01C0_000Au32.to_be_bytes()[..],
    ] {
        assert_eq!(
            kind(be.counter_read(bad)),
            ErrorKind::InvalidInput,
            "{bad:x?}"
        );
        assert_eq!(kind(be.counter_increment(bad)), ErrorKind::InvalidInput);
        assert_eq!(kind(be.counter_destroy(bad)), ErrorKind::InvalidInput);
        assert!(be.counter_describe(bad).starts_with("TPM NV index"));
    }
    // Never defined: NotFound; destroy is Ok.
    let absent = 0x013F_FF00u32.to_be_bytes();
    assert_eq!(kind(be.counter_read(&absent)), ErrorKind::NotFound);
    be.counter_destroy(&absent)
        .expect("destroy of an absent counter");
    drop(be);

    // Another program's indices in the owner range: an ordinary index and
    // a counter with other attributes. Neither is read, raised or deleted.
    let owner = env.owner_hex();
    let (ordinary, counter) = ("0x13fff01", "0x13fff02");
    env.tool(&[
        "tpm2_nvdefine",
        ordinary,
        "-C",
        "o",
        "-P",
        &owner,
        "-s",
        "8",
        "-a",
        "ownerwrite|ownerread|authread|authwrite",
    ]);
    let zeros = env.path("zeros");
    std::fs::write(&zeros, [0u8; 8]).expect("write");
    let zeros = zeros.to_str().expect("utf-8 path");
    env.tool(&["tpm2_nvwrite", ordinary, "-C", ordinary, "-i", zeros]);
    env.tool(&[
        "tpm2_nvdefine",
        counter,
        "-C",
        "o",
        "-P",
        &owner,
        "-s",
        "8",
        "-a",
        "nt=counter|ownerwrite|ownerread|authread",
    ]);
    env.tool(&["tpm2_nvincrement", counter, "-C", "o", "-P", &owner]);
    let be = env.open("store");
    for foreign in [0x013F_FF01u32, 0x013F_FF02] {
        let r = foreign.to_be_bytes();
        assert_eq!(kind(be.counter_read(&r)), ErrorKind::NotFound);
        assert_eq!(kind(be.counter_increment(&r)), ErrorKind::NotFound);
        be.counter_destroy(&r).expect("nothing of ours to destroy");
    }
    drop(be);
    let left = env.nv_indices();
    assert!(
        left.contains(&0x013F_FF01) && left.contains(&0x013F_FF02),
        "{left:x?}"
    );
    let value = env.tool(&["tpm2_nvread", counter, "-C", counter, "-s", "8"]);
    assert_eq!(
        value,
        1u64.to_be_bytes(),
        "the foreign counter was not raised"
    );
}

fn sealed_store(env: &Env, dir: &Path, create: bool) -> SoftStore {
    let unlock = Unlock::Provider(Arc::new(TpmSealedKek::new(env.config())));
    let r = if create {
        SoftStore::create(dir, &unlock, Kdf::KeyFile)
    } else {
        SoftStore::open(dir, &unlock)
    };
    r.unwrap_or_else(|e| panic!("sealed soft store: {e:?}"))
}

#[test]
fn a_soft_store_sealed_by_the_tpm_has_the_tpm_counter_and_a_passphrase_store_has_none() {
    let env = Env::new();
    let soft = env.path("soft");
    let store = sealed_store(&env, &soft, true);
    let (c, v) = store.counter_create().expect("create");
    let i = index(c.reference());
    assert!((0x0100_0000..=0x013F_FFFF).contains(&i), "{i:#x}");
    assert_eq!(
        store.counter_describe(c.reference()),
        format!("TPM NV index 0x{i:08x}")
    );
    assert_eq!(store.counter_increment(c.reference()).expect("inc"), v + 1);
    assert_eq!(store.counter_increment(c.reference()).expect("inc"), v + 2);
    assert_eq!(kind(store.counter_read(&[1, 2])), ErrorKind::InvalidInput);
    drop(store);
    let store = sealed_store(&env, &soft, false);
    assert_eq!(store.counter_read(c.reference()).expect("read"), v + 2);
    drop(store);

    // The same NV index, seen by the TPM backend and by tpm2-tools.
    let be = env.open("tpm-store");
    assert_eq!(be.counter_read(c.reference()).expect("read"), v + 2);
    drop(be);
    let name = format!("0x{i:x}");
    assert_eq!(
        env.tool(&["tpm2_nvread", &name, "-C", &name, "-s", "8"]),
        (v + 2).to_be_bytes()
    );

    let store = sealed_store(&env, &soft, false);
    store.counter_destroy(c.reference()).expect("destroy");
    assert_eq!(kind(store.counter_read(c.reference())), ErrorKind::NotFound);
    store.counter_destroy(c.reference()).expect("destroy again");

    // A provider with a wrong owner auth cannot define a counter.
    let wrong = TpmSealedKek::new(
        TpmConfig::new(env.swtpm.tcti())
            .with_owner_auth(SecretBytes::from_slice(b"wrong"))
            .expect("config"),
    );
    assert_eq!(
        kind(backend_soft::KekProvider::counter_create(&wrong)),
        ErrorKind::Auth
    );

    // Re-keyed to a key file, the store has no counter any more.
    let key_file = env.path("store.key");
    backend_soft::create_key_file(&key_file).expect("key file");
    store
        .change_unlock(&Unlock::KeyFile(key_file), Kdf::KeyFile)
        .expect("re-key");
    assert_eq!(kind(store.counter_create()), ErrorKind::Unsupported);
    drop(store);

    // A passphrase store alone: Unsupported from every method.
    let pw = Unlock::Passphrase(SecretBytes::from_slice(b"correct horse"));
    let kdf = Kdf::Pbkdf2Sha256 {
        iterations: Kdf::MIN_PBKDF2_ITERATIONS,
    };
    let plain = SoftStore::create(&env.path("plain"), &pw, kdf).expect("passphrase store");
    let e = plain.counter_create().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("soft store alone"), "{e}");
    assert_eq!(
        kind(plain.counter_read(c.reference())),
        ErrorKind::Unsupported
    );
    assert_eq!(
        kind(plain.counter_increment(c.reference())),
        ErrorKind::Unsupported
    );
    assert_eq!(
        kind(plain.counter_destroy(c.reference())),
        ErrorKind::Unsupported
    );
}
