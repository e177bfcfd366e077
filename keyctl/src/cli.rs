//! Command-line types (clap derive).

use clap::{Args, Parser, Subcommand, ValueEnum};
use keystore_api::Algorithm;
use std::path::PathBuf;

/// The exit-code table, shown by `keyctl --help`.
pub const EXIT_CODES: &str = "\
Through keystored (--connect unix:PATH, or KEYCTL_CONNECT):
  key, sign, verify, pubkey, encrypt, decrypt, derive, agree, sweep and audit run
  through the daemon instead of opening a store here, with the same output,
  files and exit codes. The daemon identifies you by your OS uid and its
  policy gives your role and the keys you see: --store, the unlock options,
  --as and role credentials are not read. Key use (sign, encrypt, decrypt,
  derive, agree) needs the application role there. init, role, decommission, tour,
  ca, provision, renew, est and ocsp manage the store or its PKI: run them on
  the daemon's host as the daemon's user; over --connect they exit 2.

Unlocking (every command except `tour`, without --connect):
  --key-file PATH (or KEYCTL_KEY_FILE) names a 32-byte key file; it takes
  precedence. Otherwise the passphrase comes from --passphrase-file PATH,
  else from the environment variable named by --passphrase-env VAR (default
  KEYCTL_PASSPHRASE) if it is set, else from an interactive prompt when stdin
  is a terminal. Without a terminal and without a source, keyctl fails at
  once instead of waiting for input.
  With --backend pkcs11 (or KEYCTL_BACKEND=pkcs11) the keys live on a PKCS#11
  token named by --token-label, --token-serial or --pkcs11-uri; the user PIN
  comes from --pin-file, else the variable named by --pin-env (default
  KEYCTL_PKCS11_PIN). The module defaults to SoftHSM2 (--pkcs11-module).

Exit codes:
   0  success
   1  internal error (a bug, or a self-check such as `tour` failed)
   2  InvalidInput: bad argument or input (clap usage errors also exit 2)
   3  NotFound: no such key, version or store
   4  AlreadyExists: the key, store or file already exists
   5  Unsupported: the backend cannot do this
   6  KeyState: the key version's state forbids the operation
   7  Policy: the key's usages or the store's policy forbid the operation
   8  Auth: wrong passphrase, key file or PIN
   9  Integrity: a signature, ciphertext, AAD or stored record failed to verify
  10  Backend: the backend or the metadata database failed
  11  Io: a file named on the command line could not be read or written
  12  Busy: another process held the store's write lock past --lock-timeout
  13  Unavailable: the keystore service (--connect) could not be reached

Errors are reported on stderr as one line: `keyctl: <Kind>: <message>`.";

/// Operator CLI for the keystore (software sealed store backend).
///
/// The store directory holds `metadata.sqlite` (names, versions, public keys)
/// and `soft/` (the sealed key records). Private and secret keys never leave
/// the store; `derive` and `decrypt` output secret data that you must protect.
/// With --connect the key commands run through the keystored daemon instead.
#[derive(Debug, Parser)]
#[command(name = "keyctl", version, after_long_help = EXIT_CODES)]
pub struct Cli {
    /// Store directory (holds metadata.sqlite and soft/).
    #[arg(
        long,
        global = true,
        env = "KEYCTL_STORE",
        default_value = "./keystore-data",
        value_name = "DIR"
    )]
    pub store: PathBuf,

    /// Run the key commands (key, sign, verify, pubkey, encrypt, decrypt,
    /// derive, sweep, audit) through keystored at this socket, e.g.
    /// unix:/run/keystore/keystore.sock, instead of opening --store. The
    /// daemon knows you by your uid (no --as, no credential, no unlock);
    /// exit 13 when it cannot be reached.
    #[arg(long, global = true, env = "KEYCTL_CONNECT", value_name = "unix:PATH")]
    pub connect: Option<String>,

    /// Where the factory commands (provision, renew, ca, ocsp serve, est serve) keep
    /// the provisioning registry: a PostgreSQL URL
    /// (postgresql://USER:PASSWORD@HOST:PORT/DB, or host=… key=value form)
    /// shared by every station, or `sqlite` [default: the store's
    /// pki.sqlite]. Prefer the environment variable for a URL with a
    /// password.
    #[arg(
        long,
        global = true,
        env = "KEYCTL_REGISTRY",
        value_name = "URL",
        hide_env_values = true
    )]
    pub registry: Option<String>,

    #[command(flatten)]
    pub unlock: UnlockArgs,

    #[command(flatten)]
    pub actor: ActorArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Where the key-encryption key comes from.
#[derive(Debug, Clone, Args)]
pub struct UnlockArgs {
    /// A file holding exactly 32 random bytes that unlocks the store
    /// (takes precedence over any passphrase source).
    #[arg(long, global = true, env = "KEYCTL_KEY_FILE", value_name = "PATH")]
    pub key_file: Option<PathBuf>,

    /// Read the passphrase from this file (one trailing newline is removed).
    #[arg(long, global = true, value_name = "PATH")]
    pub passphrase_file: Option<PathBuf>,

    /// Read the passphrase from this environment variable
    /// [default: KEYCTL_PASSPHRASE, used only if set].
    #[arg(long, global = true, value_name = "VAR")]
    pub passphrase_env: Option<String>,

    /// The backend (soft or pkcs11) and, for PKCS#11, the token and its PIN.
    #[command(flatten)]
    pub backend: crate::backend::BackendArgs,

    /// How long a lifecycle command waits for another process's write to the
    /// store to finish before failing with exit code 12 (Busy), in seconds.
    #[arg(
        long,
        global = true,
        env = "KEYCTL_LOCK_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 5.0,
        value_parser = parse_lock_timeout
    )]
    pub lock_timeout: f64,
}

fn parse_lock_timeout(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a number of seconds from 0 to 3600")),
    }
}

/// Who performs lifecycle commands, and the role credential that proves it.
#[derive(Debug, Clone, Args)]
pub struct ActorArgs {
    /// Act in this role: security-officer (so), operator or auditor.
    /// Lifecycle commands need it; the credential comes from
    /// --role-secret-file, else KEYCTL_ROLE_SECRET, else a terminal prompt.
    /// Not used with --connect (the daemon's policy gives the role).
    #[arg(
        id = "acting_role",
        long = "as",
        global = true,
        env = "KEYCTL_ROLE",
        value_name = "ROLE"
    )]
    pub role: Option<String>,

    /// Your actor id, recorded in the audit trail [default: $USER].
    #[arg(long, global = true, env = "KEYCTL_ACTOR", value_name = "ID")]
    pub actor: Option<String>,

    /// File holding the role credential (one trailing newline is removed).
    #[arg(
        long,
        global = true,
        env = "KEYCTL_ROLE_SECRET_FILE",
        value_name = "PATH"
    )]
    pub role_secret_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new store (sealed soft store and metadata database).
    Init(InitArgs),
    /// Create, import, list, show and destroy keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Sign a file with the active version of a signing key.
    Sign(SignArgs),
    /// Verify a signature; prints "OK (version N)" or fails with exit 9.
    Verify(VerifyArgs),
    /// Write the PEM public key of a signing key's active version.
    Pubkey(PubkeyArgs),
    /// Encrypt a file with AES-256-GCM into a versioned envelope.
    Encrypt(CryptArgs),
    /// Decrypt an envelope made by `encrypt`.
    Decrypt(CryptArgs),
    /// Derive key material with HKDF-SHA256 keyed by an HMAC key.
    Derive(DeriveArgs),
    /// ECDH with an ecdh-p256 key and a peer's public key, then the one-step
    /// KDF of SP 800-56C with SHA-256 (OpenSSL's SSKDF).
    Agree(AgreeArgs),
    /// Destroy the material of every version whose grace period has ended.
    Sweep,
    /// Verify the tamper-evident audit trail (on the device, or an export
    /// offline), export it with signed checkpoints, manage its signing key.
    #[command(subcommand)]
    Audit(crate::audit::AuditCommand),
    /// Set the credential of a role (the first security-officer credential
    /// bootstraps the store's roles).
    #[command(subcommand)]
    Role(RoleCommand),
    /// Wipe every key, then the metadata; write the final audit trail and a
    /// signed erasure certificate. Irreversible.
    Decommission {
        /// Write the final audit trail (JSON lines, with checkpoints) here.
        #[arg(long, value_name = "FILE")]
        audit_out: PathBuf,
        /// Write the signed erasure certificate here [default:
        /// AUDIT_OUT.erasure.json].
        #[arg(long, value_name = "FILE")]
        certificate_out: Option<PathBuf>,
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
    /// A self-contained end-to-end demonstration in a temporary directory.
    Tour,
    /// Device PKI: offline root, production intermediate, revocation, CRLs,
    /// peer checks.
    #[command(subcommand)]
    Ca(crate::provision::CaCommand),
    /// Provision a device (or a batch): identity key, CSR, short-lived
    /// certificate, registry entry, record.
    Provision(crate::provision::ProvisionArgs),
    /// Renew a device certificate before expiry (rotates the identity key;
    /// with --est, over EST from the device's own store).
    Renew(crate::provision::RenewArgs),
    /// EST enrollment server (RFC 7030) on the production store.
    #[command(subcommand)]
    Est(crate::provision::EstCommand),
    /// OCSP responder (RFC 6960) for the production intermediate.
    #[command(subcommand)]
    Ocsp(crate::provision::OcspCommand),
    /// Write the store's key management policy (Markdown) from its actual
    /// configuration and state.
    Policy(crate::policy::PolicyArgs),
    /// The store's cryptographic assets as a CycloneDX 1.6 CBOM (auditor or
    /// security officer).
    Inventory(crate::inventory::InventoryArgs),
    /// Write an evidence pack for auditors: conformance results, the audit
    /// trail with signed checkpoints, CBOM, policy, provisioning records,
    /// and a SHA256SUMS signed by the audit key.
    Evidence(crate::evidence::EvidenceArgs),
}

#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Set ROLE's credential, read from --new-secret-file, else
    /// KEYCTL_NEW_ROLE_SECRET, else a terminal prompt.
    Set {
        /// security-officer (so), operator, auditor or application.
        role: String,
        /// File holding the new credential.
        #[arg(long, value_name = "PATH")]
        new_secret_file: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Passphrase KDF (ignored for key-file stores).
    #[arg(long, value_enum, default_value_t = KdfChoice::Pbkdf2)]
    pub kdf: KdfChoice,
    /// Generate a new 32-byte key file here (mode 0600) and unlock the store with it.
    #[arg(long, value_name = "PATH")]
    pub new_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KdfChoice {
    /// PBKDF2-HMAC-SHA256, 600,000 iterations.
    Pbkdf2,
    /// Argon2id, 64 MiB, 3 passes, 1 lane.
    Argon2id,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a key inside the store.
    Create {
        /// Key name: A-Z a-z 0-9 . _ - (not starting with . or -).
        name: String,
        /// Algorithm.
        #[arg(long, value_parser = algorithm_parser())]
        alg: Algorithm,
        /// Comma-separated usages (sign, verify, encrypt, decrypt, mac, derive,
        /// wrap); default: the algorithm's usual usages (hmac-sha256: mac). A
        /// key holds mac or derive, never both: create a derivation key with
        /// `--usages derive`.
        #[arg(long)]
        usages: Option<String>,
        /// Allow wrapped backups of this (symmetric) key. Fixed for life.
        #[arg(long)]
        backup_eligible: bool,
        /// Rotate after this long, e.g. 90d, 12h (see `key due`).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        cryptoperiod: Option<time::Duration>,
        /// aes-256-gcm only: at most N encryptions per version (1 to 2^32,
        /// the default: SP 800-38D with random nonces); fixed for life.
        #[arg(long, value_name = "N")]
        encryption_limit: Option<u64>,
    },
    /// Import a 32-byte secret for an aes-256-gcm or hmac-sha256 key.
    Import {
        /// Key name.
        name: String,
        /// Algorithm (symmetric only).
        #[arg(long, value_parser = algorithm_parser())]
        alg: Algorithm,
        /// File holding 32 raw bytes, or 64 hex characters and an optional newline.
        #[arg(long, value_name = "PATH")]
        secret_file: PathBuf,
        /// Comma-separated usages; default: the algorithm's usual usages
        /// (hmac-sha256: mac; `--usages derive` for a derivation key; never
        /// both).
        #[arg(long)]
        usages: Option<String>,
    },
    /// List live keys.
    List,
    /// Show every field of a key, with each version.
    Show {
        /// Key name.
        name: String,
    },
    /// Make a new active version; the old one verifies/decrypts until the grace ends.
    Rotate {
        /// Key name.
        name: String,
        /// Grace period for the old version, e.g. 7d, 24h, 0s.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        grace: time::Duration,
    },
    /// List keys whose cryptoperiod has ended or that used most of their
    /// AES-GCM encryption limit; with --rotate, rotate them.
    Due {
        /// Rotate every due key.
        #[arg(long)]
        rotate: bool,
        /// Grace period for rotated-away versions.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "7d")]
        grace: time::Duration,
    },
    /// Mark a version compromised: every use fails at once and its material is destroyed.
    Revoke {
        /// Key name.
        name: String,
        /// Version.
        #[arg(long)]
        version: u32,
        /// Why (recorded in the audit trail).
        #[arg(long)]
        reason: String,
    },
    /// Suspend a version (no use until resumed).
    Suspend {
        /// Key name.
        name: String,
        /// Version.
        #[arg(long)]
        version: u32,
    },
    /// Resume a suspended version.
    Resume {
        /// Key name.
        name: String,
        /// Version.
        #[arg(long)]
        version: u32,
    },
    /// Show every version with its state and grace end.
    Versions {
        /// Key name.
        name: String,
    },
    /// Write a wrapped backup of a backup-eligible key.
    Backup {
        /// Key name.
        name: String,
        /// Backup KEK: an aes-256-gcm key with the wrap usage.
        #[arg(long)]
        kek: String,
        /// Output file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Restore a backup made by `key backup`.
    Restore {
        /// Backup file.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Backup KEK holding the same key as when the backup was made.
        #[arg(long)]
        kek: String,
        /// Restore under this name instead of the original.
        #[arg(long)]
        name: Option<String>,
    },
    /// Destroy every version of a key (irreversible; the name stays reserved).
    Destroy {
        /// Key name.
        name: String,
        /// Confirm the destruction.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// Key name.
    pub name: String,
    /// Message file (`-` for stdin).
    #[arg(long = "in", value_name = "FILE")]
    pub input: PathBuf,
    /// Signature output file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// ECDSA signature encoding (RSA has one encoding).
    #[arg(long, value_enum, default_value_t = SigFormat::Der)]
    pub format: SigFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SigFormat {
    /// ASN.1 DER (OpenSSL, X.509).
    Der,
    /// Fixed-width r||s (JOSE, COSE).
    Fixed,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Key name.
    pub name: String,
    /// Message file (`-` for stdin).
    #[arg(long = "in", value_name = "FILE")]
    pub input: PathBuf,
    /// Signature file.
    #[arg(long, value_name = "FILE")]
    pub sig: PathBuf,
    /// Verify with this version only (default: every version allowed to verify).
    #[arg(long, value_name = "N")]
    pub version: Option<u32>,
}

#[derive(Debug, Args)]
pub struct PubkeyArgs {
    /// Key name.
    pub name: String,
    /// Output file (default: stdout).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CryptArgs {
    /// Key name.
    pub name: String,
    /// Input file (`-` for stdin).
    #[arg(long = "in", value_name = "FILE")]
    pub input: PathBuf,
    /// Output file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Additional authenticated data (must match between encrypt and decrypt).
    #[arg(long, value_name = "STRING", default_value = "")]
    pub aad: String,
}

#[derive(Debug, Args)]
pub struct DeriveArgs {
    /// HMAC key name.
    pub name: String,
    /// Output length in bytes (1..=8160).
    #[arg(long, value_name = "N")]
    pub len: usize,
    /// HKDF input (the IKM; the key itself is the HKDF salt), as hex.
    #[arg(long, value_name = "HEX", default_value = "")]
    pub salt_hex: String,
    /// HKDF info string.
    #[arg(long, value_name = "STRING", default_value = "")]
    pub info: String,
    /// Write the raw derived bytes here (mode 0600) instead of hex to stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AgreeArgs {
    /// ECDH key name (algorithm ecdh-p256).
    pub name: String,
    /// The peer's public key: PEM or DER SubjectPublicKeyInfo, or a raw SEC1
    /// point.
    #[arg(long, value_name = "FILE")]
    pub peer: PathBuf,
    /// The KDF's FixedInfo, as hex (empty by default).
    #[arg(long, value_name = "HEX", default_value = "")]
    pub info_hex: String,
    /// Output length in bytes (1..=8160).
    #[arg(long, value_name = "N")]
    pub len: usize,
    /// Write the raw derived bytes here (mode 0600) instead of hex to stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Parses `90d`, `12h`, `30m`, `45s` (or plain seconds).
pub fn parse_duration(s: &str) -> Result<time::Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 90d, 12h, 30m or 45s"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown duration unit in '{s}'; use s, m, h or d")),
    };
    n.checked_mul(secs)
        .filter(|v| *v <= 100 * 365 * 86_400)
        .map(time::Duration::seconds)
        .ok_or_else(|| format!("'{s}' is too long"))
}

fn algorithm_parser() -> impl clap::builder::TypedValueParser<Value = Algorithm> {
    use clap::builder::{PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(Algorithm::ALL.map(Algorithm::id)).try_map(|s: String| {
        s.parse::<Algorithm>()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90d"), Ok(time::Duration::days(90)));
        assert_eq!(parse_duration("12h"), Ok(time::Duration::hours(12)));
        assert_eq!(parse_duration("0s"), Ok(time::Duration::ZERO));
        assert_eq!(parse_duration("45"), Ok(time::Duration::seconds(45)));
        assert!(parse_duration("3w").is_err());
        assert!(parse_duration("-1d").is_err());
        assert!(parse_duration("999999999999d").is_err());
    }
}
