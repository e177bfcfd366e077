//! The `keyctl` harness: commands with a clean environment and no stdin,
//! assertions on their output, role credentials, and a soft store in a
//! temporary directory unlocked by a key file.
//!
//! The binary's path comes from the caller (`env!("CARGO_BIN_EXE_keyctl")`
//! exists only in keyctl's own tests).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The variables every `keyctl` command starts without, so that the test
/// runner's environment never leaks into a test; a test sets what it needs
/// after [`Keyctl::command`].
pub const CLEAN_ENV: &[&str] = &[
    "KEYCTL_STORE",
    "KEYCTL_KEY_FILE",
    "KEYCTL_PASSPHRASE",
    "KEYCTL_ROLE",
    "KEYCTL_ROLE_SECRET",
    "KEYCTL_ROLE_SECRET_FILE",
    "KEYCTL_NEW_ROLE_SECRET",
    "KEYCTL_ROOT_SECRET",
    "KEYCTL_ROOT_PASSPHRASE",
    "KEYCTL_BACKEND",
    "KEYCTL_LOCK_TIMEOUT",
    "KEYCTL_TOKEN_SERIAL",
    "KEYCTL_PKCS11_URI",
    "KEYCTL_PKCS11_PIN_FILE",
    "KEYCTL_PKCS11_VERIFY",
    "KEYSTORE_TPM_OWNER_AUTH",
    "KEYSTORE_TPM_OWNER_AUTH_FILE",
    "TPM2TOOLS_TCTI",
    "TCTI",
];

/// How to start `keyctl`: its path and, optionally, a umask that a shell
/// sets before it `exec`s the binary.
#[derive(Clone, Debug)]
pub struct Keyctl {
    bin: PathBuf,
    umask: Option<String>,
}

impl Keyctl {
    /// The binary at `bin` (in keyctl's tests `env!("CARGO_BIN_EXE_keyctl")`).
    pub fn new(bin: impl Into<PathBuf>) -> Keyctl {
        Keyctl {
            bin: bin.into(),
            umask: None,
        }
    }

    /// Every command started by `sh -c 'umask <umask>; exec keyctl …'`.
    pub fn with_umask(self, umask: &str) -> Keyctl {
        Keyctl {
            umask: Some(umask.to_owned()),
            ..self
        }
    }

    /// A `keyctl` command without the [`CLEAN_ENV`] variables and no stdin.
    pub fn command(&self) -> Command {
        let mut c = match &self.umask {
            None => Command::new(&self.bin),
            Some(umask) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c")
                    .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
                    .arg(&self.bin);
                c
            }
        };
        for v in CLEAN_ENV {
            c.env_remove(v);
        }
        c.stdin(Stdio::null());
        c
    }
}

/// Bytes as text, invalid UTF-8 replaced.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Standard output then standard error, as text.
pub fn all_text(out: &Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// A path as `&str` (temporary paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Asserts success; returns standard output as text.
#[track_caller]
pub fn assert_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs `c` and asserts success.
#[track_caller]
pub fn run_ok(c: &mut Command) -> Output {
    let out = c.output().expect("run keyctl");
    assert_ok(&out);
    out
}

/// Asserts a failure with `code` and exactly one stderr line
/// `keyctl: <kind>: <message>`.
#[track_caller]
pub fn assert_fails(out: &Output, code: i32, kind: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}; stderr: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got: {stderr:?}");
    let prefix = format!("keyctl: {kind}: ");
    assert!(
        lines[0].starts_with(&prefix) && lines[0].len() > prefix.len(),
        "expected '{prefix}<message>', got: {stderr:?}"
    );
}

/// Asserts a failure with `code` whose last stderr line starts
/// `keyctl: <kind>: ` (warnings may come before it); returns stderr.
#[track_caller]
pub fn assert_fails_last_line(out: &Output, code: i32, kind: &str) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{}", all_text(out));
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("keyctl: {kind}: ")),
        "expected '{kind}', got: {stderr}"
    );
    stderr
}

/// Asserts a failure with `code` whose stderr starts `keyctl: <kind>: `.
#[track_caller]
pub fn assert_fails_with(out: &Output, code: i32, kind: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(stderr.starts_with(&format!("keyctl: {kind}: ")), "{stderr}");
}

/// A role's credential, and optionally the actor name it acts as.
#[derive(Clone, Copy, Debug)]
pub struct Credential {
    pub role: &'static str,
    pub secret: &'static str,
    pub actor: Option<&'static str>,
}

impl Credential {
    /// The security officer with `secret`.
    pub const fn officer(secret: &'static str) -> Credential {
        Credential {
            role: "security-officer",
            secret,
            actor: None,
        }
    }

    /// The operator with `secret`.
    pub const fn operator(secret: &'static str) -> Credential {
        Credential {
            role: "operator",
            secret,
            actor: None,
        }
    }

    /// The same credential, acting as `actor` (`KEYCTL_ACTOR`).
    pub const fn by(self, actor: &'static str) -> Credential {
        Credential {
            actor: Some(actor),
            ..self
        }
    }

    /// Sets `KEYCTL_ROLE`, `KEYCTL_ROLE_SECRET` (and `KEYCTL_ACTOR`) on `c`.
    pub fn apply<'c>(&self, c: &'c mut Command) -> &'c mut Command {
        c.env("KEYCTL_ROLE", self.role)
            .env("KEYCTL_ROLE_SECRET", self.secret);
        if let Some(actor) = self.actor {
            c.env("KEYCTL_ACTOR", actor);
        }
        c
    }
}

/// `c role set <role>` with `cred`'s secret as the new one; asserts success.
/// On a bare command (no role) this bootstraps the security officer.
#[track_caller]
pub fn set_role(c: &mut Command, cred: Credential) {
    run_ok(
        c.args(["role", "set", cred.role])
            .env("KEYCTL_NEW_ROLE_SECRET", cred.secret),
    );
}

/// A soft store in a temporary directory, unlocked by a key file, and its
/// security officer's credential.
pub struct KeyFileStore {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    pub key_file: PathBuf,
    pub keyctl: Keyctl,
    pub officer: Credential,
}

impl KeyFileStore {
    /// The paths only: `store` and `key_file` relative to a new temporary
    /// directory; nothing is created until [`KeyFileStore::init`].
    pub fn new(keyctl: Keyctl, store: &str, key_file: &str, officer: Credential) -> KeyFileStore {
        let dir = tempfile::tempdir().expect("tempdir");
        KeyFileStore {
            store: dir.path().join(store),
            key_file: dir.path().join(key_file),
            dir,
            keyctl,
            officer,
        }
    }

    /// [`KeyFileStore::new`] then [`KeyFileStore::init`].
    pub fn create(
        keyctl: Keyctl,
        store: &str,
        key_file: &str,
        officer: Credential,
    ) -> KeyFileStore {
        let st = KeyFileStore::new(keyctl, store, key_file, officer);
        st.init();
        st
    }

    /// `keyctl --store <store> init --new-key-file <key_file>`, then the
    /// security officer's credential set (bootstrap, no role).
    #[track_caller]
    pub fn init(&self) {
        run_ok(
            self.keyctl
                .command()
                .arg("--store")
                .arg(&self.store)
                .arg("init")
                .arg("--new-key-file")
                .arg(&self.key_file),
        );
        set_role(&mut self.bare(), self.officer);
    }

    /// A command on this store with no role.
    pub fn bare(&self) -> Command {
        let mut c = self.keyctl.command();
        c.arg("--store")
            .arg(&self.store)
            .arg("--key-file")
            .arg(&self.key_file);
        c
    }

    /// A command on this store acting with `cred`.
    pub fn with(&self, cred: Credential) -> Command {
        let mut c = self.bare();
        cred.apply(&mut c);
        c
    }

    /// A command on this store acting as the security officer.
    pub fn so(&self) -> Command {
        self.with(self.officer)
    }

    /// The security officer sets `cred`'s role credential.
    #[track_caller]
    pub fn set_role(&self, cred: Credential) {
        set_role(&mut self.so(), cred);
    }

    /// `name` in the temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `bytes` to `name` in the temporary directory.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).expect("write test file");
        p
    }

    /// Runs `args` as the security officer.
    pub fn run(&self, args: &[&str]) -> Output {
        self.so().args(args).output().expect("run keyctl")
    }

    /// Runs `args` as the security officer and asserts success.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert_ok(&out);
        out
    }
}

/// Runs `<openssl> dgst -sha256 -verify <pem> -signature <sig> <extra…> <msg>`
/// (`openssl` a path or a name on PATH); the caller asserts on the output.
#[track_caller]
pub fn openssl_dgst_verify(
    openssl: &str,
    pem: &Path,
    sig: &Path,
    msg: &Path,
    extra: &[&str],
) -> Output {
    Command::new(openssl)
        .args(["dgst", "-sha256", "-verify", s(pem), "-signature", s(sig)])
        .args(extra)
        .arg(s(msg))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {openssl} (install openssl): {e}"))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn output(code: i32, stderr: &str) -> Output {
        Output {
            status: std::process::ExitStatus::from_raw(code << 8),
            stdout: Vec::new(),
            stderr: stderr.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_failure_assertions_accept_the_right_failure() {
        let out = output(8, "keyctl: Auth: wrong secret\n");
        assert_fails(&out, 8, "Auth");
        assert_fails_with(&out, 8, "Auth");
        assert_fails_last_line(
            &output(8, "keyctl: warning: x\nkeyctl: Auth: no\n"),
            8,
            "Auth",
        );
    }

    #[test]
    #[should_panic(expected = "expected exit 3")]
    fn assert_fails_rejects_another_exit_code() {
        assert_fails(&output(8, "keyctl: Auth: wrong secret\n"), 3, "Auth");
    }

    #[test]
    #[should_panic(expected = "expected one stderr line")]
    fn assert_fails_rejects_a_second_line() {
        assert_fails(
            &output(8, "keyctl: warning: x\nkeyctl: Auth: no\n"),
            8,
            "Auth",
        );
    }

    #[test]
    #[should_panic(expected = "<message>")]
    fn assert_fails_rejects_another_kind_or_no_message() {
        assert_fails(&output(8, "keyctl: Auth: \n"), 8, "Auth");
    }

    #[test]
    #[should_panic(expected = "exit Some(8)")]
    fn assert_ok_rejects_a_failure() {
        assert_ok(&output(8, "keyctl: Auth: no\n"));
    }

    #[test]
    fn the_clean_environment_removes_the_variables_and_stdin() {
        let c = Keyctl::new("/bin/keyctl").with_umask("022").command();
        assert_eq!(c.get_program(), "/bin/sh");
        let removed: Vec<_> = c.get_envs().filter(|(_, v)| v.is_none()).collect();
        assert_eq!(removed.len(), CLEAN_ENV.len());
    }
}
