//! One initialised PKCS#11 library per module per process.
//!
//! PKCS#11 allows one `C_Initialize` per process and keeps login state per
//! application and token, not per session. This registry, keyed by the
//! canonical module path, holds the loaded library with a count of its
//! users: the first user initialises it (accepting
//! `CKR_CRYPTOKI_ALREADY_INITIALIZED` when some other code in the process
//! did so first), the last one calls `C_Finalize` (only if this registry
//! initialised it).
//!
//! It also remembers, per token, a salted digest of the PIN that logged the
//! user in, so a second backend on an already logged-in token (where the
//! token answers `CKR_USER_ALREADY_LOGGED_IN` without checking the PIN)
//! still has its PIN verified.

use crate::error::{ck, rv_of, COMPONENT};
use crate::token::Found;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::session::{Session, UserType};
use keystore_backend::{Error, Result, SecretBytes};
use secrecy::SecretBox;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, MutexGuard};

struct Entry {
    pkcs11: Pkcs11,
    users: usize,
    /// True if this registry's `C_Initialize` succeeded (so it finalizes).
    initialised_here: bool,
    /// Token serial → the login our backends share.
    logins: HashMap<String, Login>,
}

struct Login {
    salt: [u8; 16],
    digest: [u8; 32],
    holders: usize,
    /// The token as found when the first holder logged in.
    token: Found,
}

fn pin_digest(salt: &[u8; 16], pin: &SecretBytes) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"keystore-pkcs11 login check\0");
    h.update(salt);
    h.update(pin.expose());
    h.finalize().into()
}

static REGISTRY: LazyLock<Mutex<HashMap<PathBuf, Entry>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn registry() -> MutexGuard<'static, HashMap<PathBuf, Entry>> {
    // Every critical section leaves the map consistent, so a poisoned lock
    // (a panic elsewhere while holding it) is safe to reuse.
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// A counted reference to the initialised library of one module.
pub(crate) struct Library {
    key: PathBuf,
    pkcs11: Pkcs11,
    released: bool,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library")
            .field("module", &self.key)
            .finish()
    }
}

impl Library {
    /// Loads and initialises the module at `module`, or shares the
    /// instance already initialised in this process.
    pub(crate) fn acquire(module: &Path) -> Result<Library> {
        let key = std::fs::canonicalize(module).map_err(|_| {
            Error::not_found(format!(
                "PKCS#11 module {} does not exist (install SoftHSM2 with \
                 `apt-get install softhsm2`, or point the configuration at your token's module)",
                module.display()
            ))
        })?;
        let mut reg = registry();
        if !reg.contains_key(&key) {
            // The module stays loaded for the life of the process; only its
            // initialisation follows the users (no dlopen/dlclose cycles).
            let pkcs11 = Pkcs11::new(&key).map_err(|e| {
                Error::backend(
                    COMPONENT,
                    format!("cannot load PKCS#11 module {}", key.display()),
                    e,
                )
            })?;
            reg.insert(
                key.clone(),
                Entry {
                    pkcs11,
                    users: 0,
                    initialised_here: false,
                    logins: HashMap::new(),
                },
            );
        }
        let entry = reg
            .get_mut(&key)
            .ok_or_else(|| Error::backend_msg(COMPONENT, "PKCS#11 library registry lost"))?;
        if entry.users == 0 {
            entry.initialised_here = match entry
                .pkcs11
                .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            {
                Ok(()) => true,
                Err(e) if rv_of(&e) == Some(RvError::CryptokiAlreadyInitialized) => false,
                Err(e) => return Err(ck(format!("C_Initialize of {}", key.display()))(e)),
            };
        }
        entry.users += 1;
        Ok(Library {
            pkcs11: entry.pkcs11.clone(),
            key,
            released: false,
        })
    }

    /// The library, for sessions and slot queries.
    pub(crate) fn pkcs11(&self) -> &Pkcs11 {
        &self.pkcs11
    }

    /// The canonical module path.
    pub(crate) fn module(&self) -> &Path {
        &self.key
    }

    /// Logs the user in on `session` (token `serial`), or, if this process
    /// is already logged in to that token, checks `pin` against the PIN
    /// that did. The returned ticket keeps the login registered until it
    /// drops. A wrong PIN is [`ErrorKind::Auth`](keystore_backend::ErrorKind::Auth).
    pub(crate) fn login(
        &self,
        session: &Session,
        token: &Found,
        pin: &SecretBytes,
    ) -> Result<LoginTicket> {
        let serial = token.serial.as_str();
        let mut reg = registry();
        let entry = reg
            .get_mut(&self.key)
            .ok_or_else(|| Error::backend_msg(COMPONENT, "PKCS#11 library registry lost"))?;
        let raw = SecretBox::new(Box::new(pin.expose().to_vec()));
        match session.login_with_raw(UserType::User, &raw) {
            Ok(()) => {
                let mut salt = [0u8; 16];
                crate::random(&mut salt)?;
                let digest = pin_digest(&salt, pin);
                let holders = entry.logins.get(serial).map_or(0, |l| l.holders) + 1;
                entry.logins.insert(
                    serial.to_string(),
                    Login {
                        salt,
                        digest,
                        holders,
                        token: token.clone(),
                    },
                );
            }
            Err(e) if rv_of(&e) == Some(RvError::UserAlreadyLoggedIn) => {
                // Without a recorded login, the user was logged in by code
                // outside this crate: the PIN cannot be checked without
                // logging that code out, so it is accepted.
                if let Some(login) = entry.logins.get_mut(serial) {
                    let d = pin_digest(&login.salt, pin);
                    if !ct_eq(&d, &login.digest) {
                        return Err(Error::auth(format!(
                            "user login to token {serial}: CKR_PIN_INCORRECT"
                        )));
                    }
                    login.holders += 1;
                }
            }
            Err(e) => return Err(ck(format!("user login to token {serial}"))(e)),
        }
        Ok(LoginTicket {
            key: self.key.clone(),
            serial: serial.to_string(),
        })
    }

    /// The tokens that backends of this process are logged in to, as they
    /// were found then. While such a login lasts the library has not been
    /// finalized, so the slot still holds that token: opening another
    /// backend on it, or looking through the slots for another token, uses
    /// this instead of asking `C_GetTokenInfo` again. (SoftHSM 2.6.1 marks
    /// a token unusable for the rest of the process when a `C_GetTokenInfo`
    /// reads its `token.object` while another process rewrites it, which
    /// would also freeze the view of the backend already open on it.)
    pub(crate) fn known_tokens(&self) -> Vec<Found> {
        registry()
            .get(&self.key)
            .map(|e| e.logins.values().map(|l| l.token.clone()).collect())
            .unwrap_or_default()
    }

    /// Releases this reference explicitly, reporting a `C_Finalize` error
    /// (dropping does the same and ignores it).
    pub(crate) fn release(mut self) -> Result<()> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.released, true) {
            return Ok(());
        }
        let mut reg = registry();
        let Some(entry) = reg.get_mut(&self.key) else {
            return Ok(());
        };
        entry.users = entry.users.saturating_sub(1);
        if entry.users > 0 {
            return Ok(());
        }
        entry.logins.clear();
        if std::mem::replace(&mut entry.initialised_here, false) {
            // `finalize` consumes a handle; the registry keeps its own.
            entry.pkcs11.clone().finalize().map_err(ck("C_Finalize"))?;
        }
        Ok(())
    }
}

impl Drop for Library {
    fn drop(&mut self) {
        let _ = self.release_inner();
    }
}

/// Keeps a token login registered while a backend relies on it.
pub(crate) struct LoginTicket {
    key: PathBuf,
    serial: String,
}

impl Drop for LoginTicket {
    fn drop(&mut self) {
        let mut reg = registry();
        if let Some(entry) = reg.get_mut(&self.key) {
            if let Some(login) = entry.logins.get_mut(&self.serial) {
                login.holders = login.holders.saturating_sub(1);
                if login.holders == 0 {
                    entry.logins.remove(&self.serial);
                }
            }
        }
    }
}

/// Constant-time equality for equal-length digests.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}
