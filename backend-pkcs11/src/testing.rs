//! SoftHSM2 test tokens, shared by this crate's tests and the conformance
//! fixture (feature `test-support`; never in production builds).
//!
//! - [`softhsm`] sets up, once per process, a temporary SoftHSM2
//!   configuration and token directory and points `SOFTHSM2_CONF` at it
//!   (SoftHSM reads it at `C_Initialize`, so this happens before the first
//!   backend opens). Directories of earlier test processes that are no
//!   longer running are removed.
//! - [`SoftHsm::new_token`] initialises a fresh token with a unique label
//!   and random SO and user PINs through [`crate::admin::init_token`]
//!   (found again by label: SoftHSM renumbers slots).
//! - [`TestToken`] opens backends, raw sessions for probes below the
//!   backend, and reads and damages SoftHSM's object files (format:
//!   [`ObjectFile`]).
//!
//! A missing SoftHSM2 module is an error with an install hint.

use crate::admin;
use crate::config::{default_module_path, PinSource, Pkcs11Config, TokenSelector};
use crate::context::Library;
use crate::Pkcs11Backend;
use cryptoki::object::Attribute;
use cryptoki::session::{Session, UserType};
use keystore_backend::SecretBytes;
use secrecy::SecretBox;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// The process-wide SoftHSM2 environment.
#[derive(Debug)]
pub struct SoftHsm {
    dir: PathBuf,
    tokens: PathBuf,
    module: PathBuf,
}

static SOFTHSM: OnceLock<Result<SoftHsm, String>> = OnceLock::new();
static TOKEN_INIT: Mutex<()> = Mutex::new(());
static COUNTER: AtomicUsize = AtomicUsize::new(0);

const DIR_PREFIX: &str = "keystore-softhsm-";

/// The SoftHSM2 environment of this process, set up on first use.
pub fn softhsm() -> Result<&'static SoftHsm, String> {
    SOFTHSM
        .get_or_init(SoftHsm::create)
        .as_ref()
        .map_err(Clone::clone)
}

/// True if `KEYSTORE_TEST_SKIP` (comma separated) names the pkcs11 backend.
pub fn skip_requested() -> bool {
    std::env::var("KEYSTORE_TEST_SKIP")
        .map(|v| v.split(',').any(|b| b.trim() == "pkcs11"))
        .unwrap_or(false)
}

/// For tests: the SoftHSM2 environment, or `None` (after printing SKIPPED)
/// when it is missing and `KEYSTORE_TEST_SKIP` names pkcs11. Missing
/// without that, it panics with the install hint.
pub fn softhsm_or_skip() -> Option<&'static SoftHsm> {
    match softhsm() {
        Ok(h) => Some(h),
        Err(why) if skip_requested() => {
            eprintln!("SKIPPED (KEYSTORE_TEST_SKIP names pkcs11): {why}");
            None
        }
        Err(why) => {
            panic!("{why}\n(set KEYSTORE_TEST_SKIP=pkcs11 to skip knowingly; CI never does)")
        }
    }
}

fn hex_random(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::getrandom(&mut b).expect("OS random generator");
    hex::encode(b)
}

impl SoftHsm {
    fn create() -> Result<SoftHsm, String> {
        let module = default_module_path();
        if !module.is_file() {
            return Err(format!(
                "the SoftHSM2 PKCS#11 module is missing ({}): install it with \
                 `sudo apt-get install softhsm2 opensc` (Debian/Ubuntu), or set {} to its path",
                module.display(),
                crate::config::MODULE_ENV
            ));
        }
        let base = std::env::temp_dir();
        sweep_stale(&base);
        let dir = base.join(format!(
            "{DIR_PREFIX}{}-{}",
            std::process::id(),
            hex_random(4)
        ));
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens)
            .map_err(|e| format!("cannot create {}: {e}", tokens.display()))?;
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n\
                 slots.removable = false\nslots.mechanisms = ALL\nlibrary.reset_on_fork = false\n",
                tokens.display()
            ),
        )
        .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        // SoftHSM reads SOFTHSM2_CONF in C_Initialize; this runs before the
        // first backend of the process opens.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        Ok(SoftHsm {
            dir,
            tokens,
            module,
        })
    }

    /// The module path.
    pub fn module(&self) -> &Path {
        &self.module
    }

    /// The directory holding every token directory.
    pub fn token_root(&self) -> &Path {
        &self.tokens
    }

    /// The directory of this environment (configuration and tokens).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Initialises a fresh token labelled `<prefix>-<n>-<random>` with
    /// random SO and user PINs.
    pub fn new_token(&self, prefix: &str) -> Result<TestToken, String> {
        let _guard = TOKEN_INIT.lock().unwrap_or_else(|p| p.into_inner());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut label = format!("{prefix}-{n}-{}", hex_random(3));
        label.truncate(32);
        let so_pin = hex_random(8);
        let user_pin = hex_random(6);
        let token = admin::init_token(
            &self.module,
            &label,
            &SecretBytes::from_slice(so_pin.as_bytes()),
            &SecretBytes::from_slice(user_pin.as_bytes()),
        )
        .map_err(|e| format!("cannot initialise SoftHSM token '{label}': {e}"))?;
        let dir = self.token_dir(&token.serial)?;
        Ok(TestToken {
            label: token.label,
            serial: token.serial,
            module: self.module.clone(),
            user_pin,
            so_pin,
            dir,
        })
    }

    /// SoftHSM names a token's directory by a UUID whose last 16 hex
    /// digits are the token serial.
    fn token_dir(&self, serial: &str) -> Result<PathBuf, String> {
        let entries = std::fs::read_dir(&self.tokens)
            .map_err(|e| format!("cannot list {}: {e}", self.tokens.display()))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().replace('-', "");
            if name
                .to_ascii_lowercase()
                .ends_with(&serial.to_ascii_lowercase())
            {
                return Ok(e.path());
            }
        }
        Err(format!("no token directory for serial {serial}"))
    }
}

/// Removes the SoftHSM directories of test processes that have ended
/// (where `/proc` tells which processes run; elsewhere nothing is removed).
fn sweep_stale(base: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix(DIR_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A token initialised for one test.
#[derive(Debug, Clone)]
pub struct TestToken {
    /// Its label.
    pub label: String,
    /// Its serial number.
    pub serial: String,
    /// The module path.
    pub module: PathBuf,
    /// The user PIN.
    pub user_pin: String,
    /// The SO PIN.
    pub so_pin: String,
    /// SoftHSM's directory for this token.
    pub dir: PathBuf,
}

impl TestToken {
    /// A backend configuration with the right PIN.
    pub fn config(&self) -> Pkcs11Config {
        self.config_with_pin(&self.user_pin)
    }

    /// A backend configuration with `pin`.
    pub fn config_with_pin(&self, pin: &str) -> Pkcs11Config {
        Pkcs11Config::new(
            TokenSelector::Label(self.label.clone()),
            PinSource::Value(SecretBytes::from_slice(pin.as_bytes())),
        )
        .with_module(&self.module)
    }

    /// Opens a backend on this token.
    pub fn open(&self) -> keystore_backend::Result<Pkcs11Backend> {
        Pkcs11Backend::open(&self.config())
    }

    /// A raw `cryptoki` session on this token, for checks below the
    /// backend. It shares the login of any backend open on the token (login
    /// state belongs to the application); [`RawSession::login`] logs in if
    /// none is.
    pub fn raw_session(&self) -> Result<RawSession, String> {
        let lib = Library::acquire(&self.module).map_err(|e| e.to_string())?;
        let found = crate::token::find_waiting(
            &lib,
            &TokenSelector::Serial(self.serial.clone()),
            crate::config::DEFAULT_TOKEN_WAIT,
        )
        .map_err(|e| e.to_string())?;
        let session = lib
            .pkcs11()
            .open_rw_session(found.slot)
            .map_err(|e| format!("open a raw session: {e}"))?;
        Ok(RawSession {
            session: Some(session),
            user_pin: self.user_pin.clone(),
            _lib: lib,
        })
    }

    /// Every file in the token's directory.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.path().is_file() {
                    out.push(e.path());
                }
            }
        }
        out.sort();
        out
    }

    /// Every object file of the token, parsed.
    pub fn object_files(&self) -> Vec<(PathBuf, Result<ObjectFile, String>)> {
        self.files()
            .into_iter()
            .filter(|p| {
                p.extension().is_some_and(|e| e == "object")
                    && p.file_name().is_some_and(|n| n != "token.object")
            })
            .map(|p| {
                let parsed = std::fs::read(&p)
                    .map_err(|e| e.to_string())
                    .and_then(|b| ObjectFile::parse(&b));
                (p, parsed)
            })
            .collect()
    }

    /// Finds the file of the object that `present` reports: each object file
    /// of class `class` is hidden in turn (SoftHSM then drops the object
    /// from searches), `present` is asked whether the object is still
    /// found, and the file is put back with a new generation number so
    /// SoftHSM reloads it. Private objects' attributes are encrypted on
    /// disk, so this is the only way to tell which file holds which key.
    pub fn locate_object_file(
        &self,
        class: u64,
        present: &dyn Fn() -> Result<bool, String>,
    ) -> Result<PathBuf, String> {
        if !present()? {
            return Err("the object to locate is not on the token".into());
        }
        for (path, parsed) in self.object_files() {
            let Ok(obj) = parsed else { continue };
            if obj.ulong(CKA_CLASS) != Some(class) {
                continue;
            }
            let hidden = path.with_extension("hidden");
            std::fs::rename(&path, &hidden).map_err(|e| e.to_string())?;
            let still = present();
            std::fs::rename(&hidden, &path).map_err(|e| e.to_string())?;
            bump_generation(&path)?;
            if !still? {
                if !present()? {
                    return Err(format!("{} did not come back", path.display()));
                }
                return Ok(path);
            }
        }
        Err("no object file holds the object".into())
    }
}

/// A raw session on a test token; closes before its library reference.
pub struct RawSession {
    session: Option<Session>,
    user_pin: String,
    _lib: Library,
}

impl RawSession {
    /// Logs the user in (accepting an existing login of this process).
    pub fn login(&self) -> Result<(), String> {
        let pin = SecretBox::new(Box::new(self.user_pin.as_bytes().to_vec()));
        match self.login_with_raw(UserType::User, &pin) {
            Ok(()) => Ok(()),
            Err(e) => match crate::error::rv_of(&e) {
                Some(cryptoki::error::RvError::UserAlreadyLoggedIn) => Ok(()),
                Some(rv) => Err(format!("user login: {}", crate::error::ckr_name(rv))),
                None => Err(format!("user login: {e}")),
            },
        }
    }

    /// `C_FindObjects` with `template`, as a count.
    pub fn count(&self, template: &[Attribute]) -> Result<usize, String> {
        self.find_objects(template)
            .map(|v| v.len())
            .map_err(|e| e.to_string())
    }
}

impl std::ops::Deref for RawSession {
    type Target = Session;
    fn deref(&self) -> &Session {
        self.session.as_ref().expect("session is open until drop")
    }
}

impl Drop for RawSession {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.close();
        }
    }
}

/// `CKA_CLASS`.
pub const CKA_CLASS: u64 = 0x0;
/// `CKA_VALUE`.
pub const CKA_VALUE: u64 = 0x11;
/// `CKO_PRIVATE_KEY`.
pub const CKO_PRIVATE_KEY: u64 = 3;
/// `CKO_SECRET_KEY`.
pub const CKO_SECRET_KEY: u64 = 4;

/// One attribute in a SoftHSM object file.
#[derive(Debug, Clone)]
pub struct FileAttr {
    /// The PKCS#11 attribute type.
    pub ty: u64,
    /// SoftHSM's value kind: 1 bool, 2 ulong, 3 bytes, 4 attribute map, 5 mechanism set.
    pub kind: u64,
    /// Offset of the value's bytes in the file (after any length field).
    pub offset: usize,
    /// Length of the value's bytes.
    pub len: usize,
}

/// A parsed SoftHSM 2.6 object file: an 8-byte big-endian generation
/// number, then per attribute its type (u64), kind (u64) and value (bool:
/// 1 byte; ulong: 8; bytes: u64 length and bytes; attribute map: u64 byte
/// length and entries; mechanism set: u64 count and u64 each). Private
/// objects' byte values are encrypted (IV ‖ AES-256-CBC under the token
/// key).
#[derive(Debug, Clone)]
pub struct ObjectFile {
    /// The generation number SoftHSM compares to notice changes.
    pub generation: u64,
    /// The attributes, in file order.
    pub attrs: Vec<FileAttr>,
    bytes: Vec<u8>,
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_be_bytes(s.try_into().unwrap_or([0; 8])))
}

impl ObjectFile {
    /// Parses an object file.
    pub fn parse(bytes: &[u8]) -> Result<ObjectFile, String> {
        let bad = |at: usize| format!("object file is malformed at byte {at}");
        let generation = be_u64(bytes, 0).ok_or_else(|| bad(0))?;
        let mut at = 8;
        let mut attrs = Vec::new();
        while at < bytes.len() {
            let ty = be_u64(bytes, at).ok_or_else(|| bad(at))?;
            let kind = be_u64(bytes, at + 8).ok_or_else(|| bad(at + 8))?;
            at += 16;
            let (offset, len) = match kind {
                1 => (at, 1),
                2 => (at, 8),
                3 | 4 => {
                    let n = be_u64(bytes, at).ok_or_else(|| bad(at))? as usize;
                    (at + 8, n)
                }
                5 => {
                    let n = be_u64(bytes, at).ok_or_else(|| bad(at))? as usize;
                    (at + 8, n.checked_mul(8).ok_or_else(|| bad(at))?)
                }
                _ => return Err(bad(at - 8)),
            };
            let end = offset.checked_add(len).ok_or_else(|| bad(at))?;
            if end > bytes.len() {
                return Err(bad(at));
            }
            attrs.push(FileAttr {
                ty,
                kind,
                offset,
                len,
            });
            at = end;
        }
        Ok(ObjectFile {
            generation,
            attrs,
            bytes: bytes.to_vec(),
        })
    }

    /// The attribute of type `ty`.
    pub fn attr(&self, ty: u64) -> Option<&FileAttr> {
        self.attrs.iter().find(|a| a.ty == ty)
    }

    /// A ulong attribute's value.
    pub fn ulong(&self, ty: u64) -> Option<u64> {
        self.attr(ty)
            .filter(|a| a.kind == 2)
            .and_then(|a| be_u64(&self.bytes, a.offset))
    }
}

/// Increments a SoftHSM object file's generation number in place, so a
/// running SoftHSM re-reads the file on the object's next use (as it does
/// after another process writes it).
pub fn bump_generation(path: &Path) -> Result<(), String> {
    let mut b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let g = be_u64(&b, 0).ok_or("object file shorter than its generation number")?;
    set_generation(&mut b, g.wrapping_add(1).max(1));
    std::fs::write(path, b).map_err(|e| format!("{}: {e}", path.display()))
}

/// Sets the generation number in an object file's bytes.
pub fn set_generation(bytes: &mut [u8], generation: u64) {
    if bytes.len() >= 8 {
        bytes[..8].copy_from_slice(&generation.to_be_bytes());
    }
}

/// The template of the ECDH shared-secret session object the backend
/// derives (sensitive, non-extractable, `C_DigestKey` with SHA-256 only), for
/// raw-session baselines that must make the same object.
pub fn shared_secret_template() -> Vec<cryptoki::object::Attribute> {
    crate::objects::shared_secret_template()
}
