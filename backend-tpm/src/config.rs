//! How to reach the TPM and authorise to its owner hierarchy.

use keystore_backend::{Component, Error, Result, SecretBytes};
use std::path::Path;

/// Environment variables read for the TCTI, in order (tpm2-tools' own).
pub const TCTI_ENV: [&str; 2] = ["TPM2TOOLS_TCTI", "TCTI"];
/// The TCTI used when no environment variable names one: the kernel's
/// resource manager, which multiplexes the TPM between processes.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";
/// Environment variable holding the owner hierarchy auth value.
pub const OWNER_AUTH_ENV: &str = "KEYSTORE_TPM_OWNER_AUTH";
/// Environment variable naming a file that holds the owner hierarchy auth
/// value (one trailing newline is removed).
pub const OWNER_AUTH_FILE_ENV: &str = "KEYSTORE_TPM_OWNER_AUTH_FILE";
/// Largest hierarchy auth value a TPM accepts (a SHA-512 digest).
pub const MAX_AUTH_LEN: usize = 64;

/// The TCTI string (`device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`, …)
/// and the owner hierarchy auth value. `Debug` redacts the auth value.
pub struct TpmConfig {
    tcti: String,
    owner_auth: SecretBytes,
    endorsement_auth: SecretBytes,
    prk_in_clear: bool,
}

impl std::fmt::Debug for TpmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmConfig")
            .field("tcti", &self.tcti)
            .field("owner_auth", &"[REDACTED]")
            .field("endorsement_auth", &"[REDACTED]")
            .field("prk_in_clear", &self.prk_in_clear)
            .finish()
    }
}

impl Clone for TpmConfig {
    fn clone(&self) -> Self {
        TpmConfig {
            tcti: self.tcti.clone(),
            owner_auth: SecretBytes::from_slice(self.owner_auth.expose()),
            endorsement_auth: SecretBytes::from_slice(self.endorsement_auth.expose()),
            prk_in_clear: self.prk_in_clear,
        }
    }
}

impl TpmConfig {
    /// A configuration for `tcti` with an empty owner auth.
    pub fn new(tcti: impl Into<String>) -> TpmConfig {
        TpmConfig {
            tcti: tcti.into(),
            owner_auth: SecretBytes::default(),
            endorsement_auth: SecretBytes::default(),
            prk_in_clear: false,
        }
    }

    /// Lets the HKDF extract result (the PRK of `derive`) cross the
    /// host–TPM bus in clear. By default it comes back encrypted under the
    /// parameter-encryption session, which protects it from a bus sniffer
    /// but costs ESYS's session cryptography per derive (about 3.8 ms of
    /// host CPU with libtss2-esys 3.2.1 and OpenSSL 3, against ~0.1 ms for
    /// the TPM2_HMAC itself). Only for devices whose TPM bus is not
    /// physically reachable, or whose derive rate cannot afford it.
    pub fn with_prk_in_clear_on_the_bus(mut self, in_clear: bool) -> TpmConfig {
        self.prk_in_clear = in_clear;
        self
    }

    /// Whether the PRK may cross the bus in clear.
    pub(crate) fn prk_in_clear(&self) -> bool {
        self.prk_in_clear
    }

    /// The TCTI from `TPM2TOOLS_TCTI` or `TCTI`, else [`DEFAULT_TCTI`]; the
    /// owner auth from [`OWNER_AUTH_ENV`] or the file named by
    /// [`OWNER_AUTH_FILE_ENV`], else empty (a TPM whose owner auth was never
    /// set).
    pub fn from_env() -> Result<TpmConfig> {
        let mut cfg = TpmConfig::new(default_tcti());
        if let Some(v) = std::env::var_os(OWNER_AUTH_ENV) {
            cfg = cfg.with_owner_auth(SecretBytes::new(v.into_encoded_bytes()))?;
        } else if let Some(p) = std::env::var_os(OWNER_AUTH_FILE_ENV) {
            cfg = cfg.with_owner_auth(read_auth_file(Path::new(&p))?)?;
        }
        Ok(cfg)
    }

    /// Replaces the TCTI string.
    pub fn with_tcti(mut self, tcti: impl Into<String>) -> TpmConfig {
        self.tcti = tcti.into();
        self
    }

    /// Replaces the owner hierarchy auth value (at most [`MAX_AUTH_LEN`] bytes).
    pub fn with_owner_auth(mut self, auth: SecretBytes) -> Result<TpmConfig> {
        check_auth(&auth, "owner")?;
        self.owner_auth = auth;
        Ok(self)
    }

    /// Replaces the endorsement hierarchy auth value (at most
    /// [`MAX_AUTH_LEN`] bytes; empty by default, as on a factory-fresh TPM
    /// and swtpm). Used only by attestation (`TpmBackend::ek_public`,
    /// `create_attestation_key`, `activate_credential`, `certify`), to
    /// re-create the endorsement key and satisfy its policy.
    pub fn with_endorsement_auth(mut self, auth: SecretBytes) -> Result<TpmConfig> {
        check_auth(&auth, "endorsement")?;
        self.endorsement_auth = auth;
        Ok(self)
    }

    /// The endorsement hierarchy auth value.
    pub(crate) fn endorsement_auth(&self) -> &[u8] {
        self.endorsement_auth.expose()
    }

    /// The TCTI string.
    pub fn tcti(&self) -> &str {
        &self.tcti
    }

    /// The owner hierarchy auth value.
    pub(crate) fn owner_auth(&self) -> &[u8] {
        self.owner_auth.expose()
    }
}

/// The TCTI named by the environment, else [`DEFAULT_TCTI`].
pub fn default_tcti() -> String {
    TCTI_ENV
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| DEFAULT_TCTI.to_string())
}

pub(crate) fn check_auth(auth: &SecretBytes, which: &str) -> Result<()> {
    if auth.len() > MAX_AUTH_LEN {
        return Err(Error::invalid_input(format!(
            "the TPM {which} auth value is {} bytes; a TPM accepts at most {MAX_AUTH_LEN}",
            auth.len()
        )));
    }
    Ok(())
}

/// Reads an auth value from a file, removing one trailing newline.
pub fn read_auth_file(path: &Path) -> Result<SecretBytes> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::backend(
            Component::Tpm,
            format!("cannot read auth file {}", path.display()),
            e,
        )
    })?;
    if meta.len() > 4 * MAX_AUTH_LEN as u64 {
        return Err(Error::invalid_input(format!(
            "auth file {} is too large for a TPM auth value",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map(SecretBytes::new).map_err(|e| {
        Error::backend(
            Component::Tpm,
            format!("cannot read auth file {}", path.display()),
            e,
        )
    })?;
    let b = bytes.expose();
    let len = if b.ends_with(b"\r\n") {
        b.len() - 2
    } else if b.ends_with(b"\n") {
        b.len() - 1
    } else {
        b.len()
    };
    let out = SecretBytes::from_slice(&b[..len]);
    check_auth(&out, "auth file")?;
    Ok(out)
}
