//! Key-encryption keys: where the key that wraps the store key comes from.

use crate::header::{Header, Reader, SealedKek};
use keystore_backend::{Component, CounterRef, Error, Result, SecretBytes};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a soft store is unlocked.
pub enum Unlock {
    /// A passphrase, stretched by the KDF recorded in the store header.
    Passphrase(SecretBytes),
    /// A file holding exactly 32 random bytes, used as the KEK directly.
    KeyFile(PathBuf),
    /// A KEK held by a device (a TPM), which the header keeps in sealed form.
    Provider(Arc<dyn KekProvider>),
}

impl std::fmt::Debug for Unlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unlock::Passphrase(_) => f.write_str("Unlock::Passphrase([REDACTED])"),
            Unlock::KeyFile(p) => write!(f, "Unlock::KeyFile({})", p.display()),
            Unlock::Provider(p) => write!(f, "Unlock::Provider({p:?})"),
        }
    }
}

/// A source of key-encryption keys that keeps them outside the store, such
/// as a TPM that seals them: the store header holds only the sealed form,
/// which is useless without the device.
///
/// Contract:
/// - [`KekProvider::create`] makes a new random 32-byte KEK and returns it
///   with its sealed form (at most [`MAX_SEALED_LEN`] bytes, not secret).
/// - [`KekProvider::unseal`] recovers that KEK from the sealed form. When the
///   device cannot (another device, a cleared device, a changed policy such
///   as PCR values, a wrong device credential) it answers [`ErrorKind::Auth`](keystore_backend::ErrorKind::Auth).
/// - [`KekProvider::kind`] names the provider (ASCII, 1 to 32 bytes); it is
///   recorded in the header and checked before unsealing.
/// - `Debug` output redacts every credential.
pub trait KekProvider: Send + Sync + std::fmt::Debug {
    /// A short stable name of the provider, e.g. `tpm2-sealed`.
    fn kind(&self) -> &str;
    /// A new random 32-byte KEK and its sealed form.
    fn create(&self) -> Result<(SecretBytes, Vec<u8>)>;
    /// The KEK sealed in `sealed`.
    fn unseal(&self, sealed: &[u8]) -> Result<SecretBytes>;

    /// A monotonic counter in the device, offered through the store's
    /// [`MonotonicCounter`](keystore_backend::MonotonicCounter); each `counter_*` method follows that trait's
    /// contract. The defaults: the provider has none (`Unsupported`).
    fn counter_create(&self) -> Result<(CounterRef, u64)> {
        Err(no_counter(self.kind()))
    }
    /// As [`MonotonicCounter::counter_read`](keystore_backend::MonotonicCounter::counter_read).
    fn counter_read(&self, counter: &[u8]) -> Result<u64> {
        let _ = counter;
        Err(no_counter(self.kind()))
    }
    /// As [`MonotonicCounter::counter_increment`](keystore_backend::MonotonicCounter::counter_increment).
    fn counter_increment(&self, counter: &[u8]) -> Result<u64> {
        let _ = counter;
        Err(no_counter(self.kind()))
    }
    /// As [`MonotonicCounter::counter_destroy`](keystore_backend::MonotonicCounter::counter_destroy).
    fn counter_destroy(&self, counter: &[u8]) -> Result<()> {
        let _ = counter;
        Err(no_counter(self.kind()))
    }
    /// As [`MonotonicCounter::counter_describe`](keystore_backend::MonotonicCounter::counter_describe).
    fn counter_describe(&self, counter: &[u8]) -> String {
        format!("{} counter {}", self.kind(), hex::encode(counter))
    }
}

fn no_counter(kind: &str) -> Error {
    Error::unsupported(format!(
        "the '{kind}' KEK provider has no monotonic counter"
    ))
}

/// Largest sealed form a provider may return.
pub const MAX_SEALED_LEN: usize = 4096;

/// The passphrase KDF and its cost parameters, recorded in the store header
/// so that they can be raised later with [`crate::SoftStore::change_unlock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kdf {
    /// PBKDF2-HMAC-SHA256 (NIST SP 800-132), with a 32-byte salt.
    Pbkdf2Sha256 {
        /// Iteration count; at least [`Kdf::MIN_PBKDF2_ITERATIONS`].
        iterations: u32,
    },
    /// Argon2id (RFC 9106), with a 32-byte salt.
    Argon2id {
        /// Memory in KiB; at least [`Kdf::MIN_ARGON2_MEMORY_KIB`].
        memory_kib: u32,
        /// Passes; at least 1.
        iterations: u32,
        /// Lanes; at least 1.
        parallelism: u32,
    },
    /// No KDF: the KEK is a 32-byte key file.
    KeyFile,
    /// No KDF: the KEK comes from a [`KekProvider`]; its kind and sealed form
    /// are in the header.
    Provider,
}

impl Kdf {
    /// Lowest PBKDF2 iteration count accepted when creating a store.
    pub const MIN_PBKDF2_ITERATIONS: u32 = 100_000;
    /// Lowest Argon2id memory accepted when creating a store (OWASP minimum, 19 MiB).
    pub const MIN_ARGON2_MEMORY_KIB: u32 = 19 * 1024;

    /// The default passphrase KDF: PBKDF2-HMAC-SHA256 with 600,000 iterations
    /// (the current OWASP figure for SP 800-132 PBKDF2-HMAC-SHA256).
    pub fn default_passphrase() -> Kdf {
        Kdf::Pbkdf2Sha256 {
            iterations: 600_000,
        }
    }

    /// The recommended Argon2id setting: 64 MiB, 3 passes, 1 lane.
    pub fn argon2id_default() -> Kdf {
        Kdf::Argon2id {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }

    /// Rejects parameters below the floors.
    pub fn check(self) -> Result<()> {
        match self {
            Kdf::Pbkdf2Sha256 { iterations } if iterations < Self::MIN_PBKDF2_ITERATIONS => {
                Err(Error::policy(format!(
                    "PBKDF2 needs at least {} iterations, got {iterations}",
                    Self::MIN_PBKDF2_ITERATIONS
                )))
            }
            Kdf::Argon2id {
                memory_kib,
                iterations,
                parallelism,
            } if memory_kib < Self::MIN_ARGON2_MEMORY_KIB
                || iterations == 0
                || parallelism == 0
                || parallelism > 16 =>
            {
                Err(Error::policy(format!(
                    "Argon2id needs at least {} KiB of memory, 1 pass and 1..=16 lanes",
                    Self::MIN_ARGON2_MEMORY_KIB
                )))
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn encode(self, out: &mut Vec<u8>) {
        match self {
            Kdf::Pbkdf2Sha256 { iterations } => {
                out.push(1);
                out.extend_from_slice(&iterations.to_be_bytes());
            }
            Kdf::Argon2id {
                memory_kib,
                iterations,
                parallelism,
            } => {
                out.push(2);
                out.extend_from_slice(&memory_kib.to_be_bytes());
                out.extend_from_slice(&iterations.to_be_bytes());
                out.extend_from_slice(&parallelism.to_be_bytes());
            }
            Kdf::KeyFile => out.push(3),
            Kdf::Provider => out.push(4),
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Kdf> {
        Ok(match r.u8()? {
            1 => Kdf::Pbkdf2Sha256 {
                iterations: r.u32()?,
            },
            2 => Kdf::Argon2id {
                memory_kib: r.u32()?,
                iterations: r.u32()?,
                parallelism: r.u32()?,
            },
            3 => Kdf::KeyFile,
            4 => Kdf::Provider,
            other => {
                return Err(Error::integrity(format!(
                    "soft store header names unknown KEK kind {other}"
                )))
            }
        })
    }
}

/// A 32-byte key-encryption key in zeroizing memory.
pub(crate) struct Kek(SecretBytes);

impl Kek {
    pub(crate) fn expose(&self) -> &[u8] {
        self.0.expose()
    }

    /// The KEK for a new header: derived from the passphrase or key file,
    /// or freshly made by the provider together with its sealed form.
    pub(crate) fn for_new_header(
        unlock: &Unlock,
        kdf: Kdf,
        salt: &[u8],
    ) -> Result<(Kek, Option<SealedKek>)> {
        match unlock {
            Unlock::Provider(p) => {
                let kind = provider_kind(p.as_ref())?;
                let (kek, blob) = p.create()?;
                if blob.is_empty() || blob.len() > MAX_SEALED_LEN {
                    return Err(Error::backend_msg(
                        Component::Soft,
                        format!(
                            "KEK provider '{kind}' returned a sealed KEK of {} bytes (1..={MAX_SEALED_LEN} allowed)",
                            blob.len()
                        ),
                    ));
                }
                Ok((Kek::checked(kek, &kind)?, Some(SealedKek { kind, blob })))
            }
            _ => Ok((Kek::derive(unlock, kdf, salt)?, None)),
        }
    }

    /// The KEK that opens `header`: the KDF runs, or the provider unseals.
    pub(crate) fn for_header(unlock: &Unlock, header: &Header) -> Result<Kek> {
        match (unlock, &header.sealed) {
            (Unlock::Provider(p), Some(sealed)) => {
                let kind = provider_kind(p.as_ref())?;
                if kind != sealed.kind {
                    return Err(Error::auth(format!(
                        "this soft store's KEK is sealed by a '{}' provider, not '{kind}'",
                        sealed.kind
                    )));
                }
                Kek::checked(p.unseal(&sealed.blob)?, &kind)
            }
            (Unlock::Provider(_), None) => Err(Error::auth(
                "this soft store is unlocked with a passphrase or key file, not a KEK provider",
            )),
            (_, Some(sealed)) => Err(Error::auth(format!(
                "this soft store is unlocked by a '{}' KEK provider",
                sealed.kind
            ))),
            (_, None) => Kek::derive(unlock, header.kdf, &header.salt),
        }
    }

    fn checked(kek: SecretBytes, kind: &str) -> Result<Kek> {
        if kek.len() != 32 {
            return Err(Error::backend_msg(
                Component::Soft,
                format!(
                    "KEK provider '{kind}' returned a {}-byte KEK, not 32",
                    kek.len()
                ),
            ));
        }
        Ok(Kek(kek))
    }

    /// Derives the KEK for `unlock` under `kdf` and `salt`. This is the only
    /// place a passphrase KDF runs: once per open or re-key.
    fn derive(unlock: &Unlock, kdf: Kdf, salt: &[u8]) -> Result<Kek> {
        match (unlock, kdf) {
            (Unlock::KeyFile(path), Kdf::KeyFile) => read_key_file(path),
            (Unlock::Passphrase(pw), Kdf::Pbkdf2Sha256 { iterations }) => {
                check_passphrase(pw)?;
                let mut out = SecretBytes::zeroed(32);
                pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
                    pw.expose(),
                    salt,
                    iterations,
                    out.expose_mut(),
                );
                Ok(Kek(out))
            }
            (
                Unlock::Passphrase(pw),
                Kdf::Argon2id {
                    memory_kib,
                    iterations,
                    parallelism,
                },
            ) => {
                check_passphrase(pw)?;
                let params = argon2::Params::new(memory_kib, iterations, parallelism, Some(32))
                    .map_err(|_| {
                        Error::integrity("soft store header has invalid Argon2id parameters")
                    })?;
                let a2 = argon2::Argon2::new(
                    argon2::Algorithm::Argon2id,
                    argon2::Version::V0x13,
                    params,
                );
                let mut out = SecretBytes::zeroed(32);
                a2.hash_password_into(pw.expose(), salt, out.expose_mut())
                    .map_err(|_| {
                        Error::invalid_input("Argon2id rejected the passphrase or salt")
                    })?;
                Ok(Kek(out))
            }
            (Unlock::Passphrase(_), Kdf::KeyFile) => Err(Error::auth(
                "this soft store is unlocked with a key file, not a passphrase",
            )),
            (Unlock::KeyFile(_), _) => Err(Error::auth(
                "this soft store is unlocked with a passphrase, not a key file",
            )),
            (_, Kdf::Provider) | (Unlock::Provider(_), _) => Err(Error::auth(
                "this soft store's KEK and its unlock source do not match",
            )),
        }
    }
}

fn provider_kind(p: &dyn KekProvider) -> Result<String> {
    let kind = p.kind();
    if kind.is_empty() || kind.len() > 32 || !kind.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid_input(format!(
            "a KEK provider kind is 1 to 32 printable ASCII bytes, got {kind:?}"
        )));
    }
    Ok(kind.to_string())
}

fn check_passphrase(pw: &SecretBytes) -> Result<()> {
    if pw.is_empty() {
        return Err(Error::invalid_input("the passphrase is empty"));
    }
    if pw.len() > 4096 {
        return Err(Error::invalid_input(
            "the passphrase is longer than 4096 bytes",
        ));
    }
    Ok(())
}

fn read_key_file(path: &Path) -> Result<Kek> {
    let bytes = std::fs::read(path).map(SecretBytes::new).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::not_found(format!("key file {} does not exist", path.display()))
        } else {
            Error::backend(
                Component::Soft,
                format!("cannot read key file {}", path.display()),
                e,
            )
        }
    })?;
    if bytes.len() != 32 {
        return Err(Error::invalid_input(format!(
            "key file {} must hold exactly 32 bytes, it holds {}",
            path.display(),
            bytes.len()
        )));
    }
    Ok(Kek(bytes))
}

/// Writes a new random 32-byte key file at `path` (mode 0600), failing if it exists.
pub fn create_key_file(path: &Path) -> Result<()> {
    use std::io::Write;
    let mut key = SecretBytes::zeroed(32);
    crate::random(key.expose_mut())?;
    // Mode 0600 from creation, whatever the umask.
    let mut f = keystore_backend::fsperm::create_private_file(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::already_exists(format!("key file {} already exists", path.display()))
        } else {
            Error::backend(
                Component::Soft,
                format!("cannot create key file {}", path.display()),
                e,
            )
        }
    })?;
    f.write_all(key.expose())
        .and_then(|_| f.sync_all())
        .map_err(|e| {
            Error::backend(
                Component::Soft,
                format!("cannot write key file {}", path.display()),
                e,
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SoftStore, MAX_SEALED_LEN};
    use keystore_backend::Algorithm;
    use keystore_backend::BackendKey;
    use keystore_backend::ErrorKind;
    use keystore_backend::KeyManagement;
    use keystore_backend::Mac;
    use keystore_backend::NewKey;
    use std::sync::Mutex;

    /// A provider that "seals" by keeping KEKs in memory under a random id:
    /// the sealed form is the id, and a provider without the id cannot unseal.
    #[derive(Default)]
    struct MemoryProvider {
        keks: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
        kind: &'static str,
    }

    impl std::fmt::Debug for MemoryProvider {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("MemoryProvider { .. }")
        }
    }

    impl KekProvider for MemoryProvider {
        fn kind(&self) -> &str {
            if self.kind.is_empty() {
                "memory"
            } else {
                self.kind
            }
        }
        fn create(&self) -> Result<(SecretBytes, Vec<u8>)> {
            let mut kek = SecretBytes::zeroed(32);
            crate::random(kek.expose_mut())?;
            let mut id = vec![0u8; 16];
            crate::random(&mut id)?;
            self.keks
                .lock()
                .unwrap()
                .push((id.clone(), kek.expose().to_vec()));
            Ok((kek, id))
        }
        fn unseal(&self, sealed: &[u8]) -> Result<SecretBytes> {
            self.keks
                .lock()
                .unwrap()
                .iter()
                .find(|(id, _)| id == sealed)
                .map(|(_, k)| SecretBytes::from_slice(k))
                .ok_or_else(|| Error::auth("not sealed by this provider"))
        }
    }

    /// The kind of `r`'s error; an `Ok` fails the test.
    #[track_caller]
    fn kind<T>(r: Result<T>) -> ErrorKind {
        match r {
            Ok(_) => panic!("expected an error, got Ok"),
            Err(e) => e.kind(),
        }
    }

    #[test]
    fn provider_store_round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("s");
        let p = Arc::new(MemoryProvider::default());
        let unlock = Unlock::Provider(p.clone());
        let store = SoftStore::create(&d, &unlock, Kdf::default_passphrase()).unwrap();
        assert_eq!(store.kdf(), Kdf::Provider);
        let h = store
            .generate(&NewKey::new(Algorithm::HmacSha256, "k"))
            .unwrap()
            .handle;
        let tag = store
            .hmac_sha256(&BackendKey::new(h.clone(), Algorithm::HmacSha256), b"m")
            .unwrap();
        drop(store);

        let header = std::fs::read(d.join("store.hdr")).unwrap();
        assert!(header.starts_with(b"KSSOFT\x02\x04\x06memory"));

        let store = SoftStore::open(&d, &unlock).unwrap();
        assert_eq!(
            store
                .hmac_sha256(&BackendKey::new(h.clone(), Algorithm::HmacSha256), b"m")
                .unwrap(),
            tag
        );
        drop(store);

        // Another provider instance of the same kind cannot unseal: Auth.
        let other = Unlock::Provider(Arc::new(MemoryProvider::default()));
        assert_eq!(kind(SoftStore::open(&d, &other)), ErrorKind::Auth);
        // A provider of another kind: Auth, without asking it to unseal.
        let foreign = Unlock::Provider(Arc::new(MemoryProvider {
            kind: "other",
            ..Default::default()
        }));
        assert_eq!(kind(SoftStore::open(&d, &foreign)), ErrorKind::Auth);
        // A passphrase or key file on a provider store: Auth.
        let pw = Unlock::Passphrase(SecretBytes::from_slice(b"pw"));
        assert_eq!(kind(SoftStore::open(&d, &pw)), ErrorKind::Auth);
        let kf = dir.path().join("kf");
        create_key_file(&kf).unwrap();
        assert_eq!(
            kind(SoftStore::open(&d, &Unlock::KeyFile(kf.clone()))),
            ErrorKind::Auth
        );

        // Re-keying to a key file and back to the provider.
        let store = SoftStore::open(&d, &unlock).unwrap();
        store
            .change_unlock(&Unlock::KeyFile(kf.clone()), Kdf::KeyFile)
            .unwrap();
        drop(store);
        assert_eq!(kind(SoftStore::open(&d, &unlock)), ErrorKind::Auth);
        let store = SoftStore::open(&d, &Unlock::KeyFile(kf)).unwrap();
        assert_eq!(store.kdf(), Kdf::KeyFile);
        store.change_unlock(&unlock, Kdf::KeyFile).unwrap();
        drop(store);
        let store = SoftStore::open(&d, &unlock).unwrap();
        assert_eq!(
            store
                .hmac_sha256(&BackendKey::new(h.clone(), Algorithm::HmacSha256), b"m")
                .unwrap(),
            tag
        );
    }

    #[test]
    fn provider_on_a_key_file_store_is_auth_and_key_file_headers_stay_format_1() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("s");
        let kf = dir.path().join("kf");
        create_key_file(&kf).unwrap();
        drop(SoftStore::create(&d, &Unlock::KeyFile(kf), Kdf::KeyFile).unwrap());
        let header = std::fs::read(d.join("store.hdr")).unwrap();
        assert!(header.starts_with(b"KSSOFT\x01\x03"), "format 1 unchanged");
        let p = Unlock::Provider(Arc::new(MemoryProvider::default()));
        assert_eq!(kind(SoftStore::open(&d, &p)), ErrorKind::Auth);
    }

    #[derive(Debug)]
    struct BadProvider(usize, usize);

    impl KekProvider for BadProvider {
        fn kind(&self) -> &str {
            "bad"
        }
        fn create(&self) -> Result<(SecretBytes, Vec<u8>)> {
            Ok((SecretBytes::zeroed(self.0), vec![1; self.1]))
        }
        fn unseal(&self, _: &[u8]) -> Result<SecretBytes> {
            Ok(SecretBytes::zeroed(self.0))
        }
    }

    #[test]
    fn misbehaving_providers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (i, p) in [
            BadProvider(31, 8),
            BadProvider(32, 0),
            BadProvider(32, MAX_SEALED_LEN + 1),
        ]
        .into_iter()
        .enumerate()
        {
            let d = dir.path().join(format!("s{i}"));
            let unlock = Unlock::Provider(Arc::new(p));
            assert_eq!(
                kind(SoftStore::create(&d, &unlock, Kdf::KeyFile)),
                ErrorKind::Backend
            );
        }
    }

    #[test]
    fn debug_of_a_provider_unlock_shows_the_provider_only() {
        let u = Unlock::Provider(Arc::new(MemoryProvider::default()));
        assert!(format!("{u:?}").starts_with("Unlock::Provider(MemoryProvider"));
    }
}
