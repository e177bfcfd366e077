//! Backend selection: the soft sealed store (default) or a PKCS#11 token.
//!
//! `--backend pkcs11` keeps the keys on a token; the store directory then
//! holds only `metadata.sqlite`. The token is named by label or serial (or a
//! `pkcs11:` URI), the module defaults to SoftHSM2, and the user PIN comes
//! from a file or an environment variable, never from the command line.

use crate::error::{CliError, CliResult};
use backend_pkcs11::uri::Pkcs11Uri;
use backend_pkcs11::{PinSource, Pkcs11Backend, Pkcs11Config, SignatureCheck, TokenSelector};
use clap::{Args, ValueEnum};
use keystore_api::Backend;
use std::path::PathBuf;

/// Which kind of backend holds the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum BackendChoice {
    /// The sealed software store in DIR/soft (unlocked by key file or passphrase).
    #[default]
    Soft,
    /// A PKCS#11 token (HSM, smart card, SoftHSM2).
    Pkcs11,
    /// A TPM 2.0 (keyctl built with `--features tpm`); registry in DIR/tpm.
    #[cfg(feature = "tpm")]
    Tpm,
}

/// `--pkcs11-verify`: see [`SignatureCheck`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerifySignatures {
    /// The first signature of each key object after it is found or re-checked
    /// (catches a mismatched or substituted key pair).
    FirstUse,
    /// Every signature (for tokens whose arithmetic is not trusted).
    Always,
}

impl From<VerifySignatures> for SignatureCheck {
    fn from(v: VerifySignatures) -> Self {
        match v {
            VerifySignatures::FirstUse => SignatureCheck::FirstUse,
            VerifySignatures::Always => SignatureCheck::Always,
        }
    }
}

/// Backend selection and PKCS#11 token options.
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// Where the keys live.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "KEYCTL_BACKEND",
        default_value_t = BackendChoice::Soft
    )]
    pub backend: BackendChoice,

    /// PKCS#11: the module (shared library) [default: SoftHSM2, or
    /// $KEYSTORE_PKCS11_MODULE].
    #[arg(long, global = true, env = "KEYCTL_PKCS11_MODULE", value_name = "PATH")]
    pub pkcs11_module: Option<PathBuf>,

    /// PKCS#11: the token's label.
    #[arg(long, global = true, env = "KEYCTL_TOKEN_LABEL", value_name = "LABEL")]
    pub token_label: Option<String>,

    /// PKCS#11: the token's serial number (takes precedence over the label).
    #[arg(
        long,
        global = true,
        env = "KEYCTL_TOKEN_SERIAL",
        value_name = "SERIAL"
    )]
    pub token_serial: Option<String>,

    /// PKCS#11: a `pkcs11:` URI (RFC 7512) naming the token, and optionally
    /// module-path and pin-source; explicit options take precedence.
    #[arg(long, global = true, env = "KEYCTL_PKCS11_URI", value_name = "URI")]
    pub pkcs11_uri: Option<String>,

    /// PKCS#11: read the user PIN from this file (one trailing newline removed).
    #[arg(
        long,
        global = true,
        env = "KEYCTL_PKCS11_PIN_FILE",
        value_name = "PATH"
    )]
    pub pin_file: Option<PathBuf>,

    /// PKCS#11: read the user PIN from this environment variable
    /// [default: KEYCTL_PKCS11_PIN].
    #[arg(long, global = true, value_name = "VAR")]
    pub pin_env: Option<String>,

    /// PKCS#11: the namespace of this store's keys on the token (one per
    /// store on a shared token).
    #[arg(
        long,
        global = true,
        env = "KEYCTL_PKCS11_NAMESPACE",
        default_value = backend_pkcs11::config::DEFAULT_NAMESPACE,
        value_name = "NAME"
    )]
    pub pkcs11_namespace: String,

    /// PKCS#11: which signatures the token makes are verified on the host
    /// against the key's public key object before they are returned.
    #[arg(
        long,
        global = true,
        env = "KEYCTL_PKCS11_VERIFY",
        value_enum,
        default_value_t = VerifySignatures::FirstUse,
        value_name = "WHICH"
    )]
    pub pkcs11_verify: VerifySignatures,

    /// TPM: the TCTI, e.g. `device:/dev/tpmrm0` or `swtpm:host=127.0.0.1,port=2321`
    /// [default: $TPM2TOOLS_TCTI, else $TCTI, else device:/dev/tpmrm0].
    #[cfg(feature = "tpm")]
    #[arg(long, global = true, env = "KEYCTL_TPM_TCTI", value_name = "TCTI")]
    pub tpm_tcti: Option<String>,

    /// TPM: read the owner hierarchy auth from this file (one trailing newline
    /// removed) [default: $KEYSTORE_TPM_OWNER_AUTH, else the file named by
    /// $KEYSTORE_TPM_OWNER_AUTH_FILE, else empty].
    #[cfg(feature = "tpm")]
    #[arg(long, global = true, value_name = "PATH")]
    pub tpm_owner_auth_file: Option<PathBuf>,
}

impl BackendArgs {
    /// True if the keys live in a TPM.
    #[cfg(feature = "tpm")]
    pub fn is_tpm(&self) -> bool {
        self.backend == BackendChoice::Tpm
    }

    /// Opens the TPM backend with its registry in `dir`.
    #[cfg(feature = "tpm")]
    pub fn open_tpm(&self, dir: &std::path::Path) -> CliResult<backend_tpm::TpmBackend> {
        let mut config = backend_tpm::TpmConfig::from_env()?;
        if let Some(tcti) = &self.tpm_tcti {
            config = config.with_tcti(tcti.clone());
        }
        if let Some(path) = &self.tpm_owner_auth_file {
            config = config.with_owner_auth(backend_tpm::read_auth_file(path)?)?;
        }
        Ok(backend_tpm::TpmBackend::open(config, dir)?)
    }

    /// True if the keys live on a PKCS#11 token.
    pub fn is_pkcs11(&self) -> bool {
        self.backend == BackendChoice::Pkcs11
    }

    /// The backend configuration the options describe.
    pub fn pkcs11_config(&self) -> CliResult<Pkcs11Config> {
        let uri = self
            .pkcs11_uri
            .as_deref()
            .map(Pkcs11Uri::parse)
            .transpose()?;
        let token = match (&self.token_serial, &self.token_label, &uri) {
            (Some(s), _, _) => TokenSelector::Serial(s.clone()),
            (None, Some(l), _) => TokenSelector::Label(l.clone()),
            (None, None, Some(u)) => u.token_selector()?,
            (None, None, None) => {
                return Err(CliError::invalid(
                    "--backend pkcs11 needs --token-label, --token-serial or --pkcs11-uri",
                ))
            }
        };
        let pin = match (&self.pin_file, &self.pin_env, &uri) {
            (Some(f), _, _) => PinSource::File(f.clone()),
            (None, Some(v), _) => PinSource::Env(v.clone()),
            (None, None, Some(u)) if u.pin_source.is_some() || u.pin_value.is_some() => {
                u.to_config(None)?.user_pin
            }
            _ => PinSource::Env("KEYCTL_PKCS11_PIN".into()),
        };
        let mut config = Pkcs11Config::new(token, pin)
            .with_namespace(&self.pkcs11_namespace)
            .with_signature_check(self.pkcs11_verify.into());
        match (
            &self.pkcs11_module,
            uri.as_ref().and_then(|u| u.module_path.clone()),
        ) {
            (Some(m), _) => config = config.with_module(m),
            (None, Some(m)) => config = config.with_module(m),
            (None, None) => {}
        }
        Ok(config)
    }

    /// Opens the PKCS#11 backend the options describe.
    pub fn open_pkcs11(&self) -> CliResult<Pkcs11Backend> {
        Ok(Pkcs11Backend::open(&self.pkcs11_config()?)?)
    }
}

/// The backend of a keyctl store, chosen at run time. `keystore-api`
/// forwards every `Backend` method through the box, so no method (and no
/// backend's own override of a defaulted one) can be missed here.
pub type AnyBackend = Box<dyn Backend>;
