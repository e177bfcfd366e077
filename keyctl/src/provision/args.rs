//! The command-line arguments of the PKI commands, and their day counts.

use crate::cli::parse_duration;
use crate::error::{CliError, CliResult};
use clap::{Args, Subcommand};
use keystore_api::Algorithm;
use std::path::PathBuf;
use time::Duration;

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create the offline root CA: a new store in --root-store holding the
    /// root key, and a self-signed root certificate (ROOT/root-ca.pem). The
    /// root custodian's credential (--root-secret-file or KEYCTL_ROOT_SECRET)
    /// becomes that store's security-officer credential.
    InitRoot {
        #[command(flatten)]
        root: RootArgs,
        /// Generate a new 32-byte key file here that unlocks the root store
        /// (otherwise a passphrase: --root-passphrase-file or KEYCTL_ROOT_PASSPHRASE).
        #[arg(long, value_name = "PATH")]
        new_root_key_file: Option<PathBuf>,
        /// The root certificate's common name.
        #[arg(long, default_value = "Keystore Device Root CA")]
        cn: String,
        /// Root certificate validity in days.
        #[arg(long, default_value_t = 3650)]
        validity_days: u32,
        /// The root key's algorithm.
        #[arg(long, value_name = "ALG", value_parser = parse_pki_algorithm, default_value = "ecdsa-p256-sha256")]
        algorithm: Algorithm,
    },
    /// The ceremony: the production store (--store, --as security-officer)
    /// generates the intermediate key and CSR; the root (--root-store, the
    /// custodian's credential) signs it; the production store installs it.
    SignIntermediate {
        #[command(flatten)]
        root: RootArgs,
        /// The intermediate certificate's common name.
        #[arg(long, default_value = "Keystore Production CA")]
        cn: String,
        /// Intermediate certificate validity in days (never beyond the root).
        #[arg(long, default_value_t = 1095)]
        validity_days: u32,
        /// The intermediate key's algorithm, when the production store does
        /// not hold that key yet (a rotated key keeps its own).
        #[arg(long, value_name = "ALG", value_parser = parse_pki_algorithm, default_value = "ecdsa-p256-sha256")]
        algorithm: Algorithm,
    },
    /// Root custodian: revoke an intermediate this root signed and issue the
    /// root's new CRL (ROOT/root-crl.pem, and --out). Opens the root's store
    /// alone, with the custodian's credential (--root-secret-file or
    /// KEYCTL_ROOT_SECRET). Publish the CRL to relying parties (for `ca
    /// check`: STORE/pki/root-crl.pem): every device under the intermediate
    /// is then rejected.
    RevokeIntermediate {
        #[command(flatten)]
        root: RootArgs,
        /// The intermediate's serial (hex; `ca show` prints it).
        #[arg(long)]
        serial: String,
        /// Why (recorded; a leading keyword such as ca-compromise,
        /// key-compromise or superseded sets the CRL reason code).
        #[arg(long)]
        reason: String,
        /// Time to the root CRL's nextUpdate, e.g. 180d (at most 366d).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "180d")]
        next_update: Duration,
        /// Also write the root's CRL (PEM) here.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Root custodian: reissue the root's CRL (before the last one's
    /// nextUpdate) to ROOT/root-crl.pem and --out. Opens the root's store alone.
    RootCrl {
        #[command(flatten)]
        root: RootArgs,
        /// Time to the root CRL's nextUpdate, e.g. 180d (at most 366d).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "180d")]
        next_update: Duration,
        /// Also write the root's CRL (PEM) here.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Show the production store's root, intermediate, CRL and device count.
    Show,
    /// Revoke a device certificate (by serial, or every certificate of a
    /// device) and issue a new CRL to STORE/pki/crl.pem. Security officer.
    Revoke {
        /// Certificate serial (hex).
        #[arg(
            long,
            conflicts_with = "device_id",
            required_unless_present = "device_id"
        )]
        serial: Option<String>,
        /// Revoke every unrevoked certificate of this device.
        #[arg(long)]
        device_id: Option<String>,
        /// Why (recorded; a leading keyword such as key-compromise,
        /// superseded or cessation-of-operation sets the CRL reason code).
        #[arg(long)]
        reason: String,
    },
    /// Issue a fresh CRL from the intermediate (before the last one's nextUpdate).
    Crl {
        /// Time to the CRL's nextUpdate, e.g. 7d.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "7d")]
        next_update: Duration,
        /// Also write the CRL (PEM) here.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Check a peer's chain: path to the root, revocation of every
    /// certificate on it (the device against the intermediate's CRL, the
    /// intermediate against the root's CRL; nextUpdate enforced), validity
    /// and pins. Exit 0 if accepted; 6 (KeyState) if a certificate on the
    /// path is revoked, expired or not yet valid, or a CRL is missing or
    /// stale; 8 (Auth) for an unknown issuer or a pin mismatch. Needs no unlock.
    Check {
        /// PEM chain: the peer's certificate first, then intermediates.
        #[arg(long, value_name = "FILE")]
        chain: PathBuf,
        /// Trust anchor [default: STORE/pki/root.pem].
        #[arg(long, value_name = "FILE")]
        root: Option<PathBuf>,
        /// CRL files (PEM or DER; repeat, or several in one PEM file). With
        /// --crl, only the CRLs named here and by --root-crl are used
        /// [default: STORE/pki/crl.pem and STORE/pki/root-crl.pem; a missing
        /// default file leaves that CA's status unknown, which rejects].
        #[arg(long, value_name = "FILE")]
        crl: Vec<PathBuf>,
        /// The root's CRL (PEM or DER), which covers the intermediate
        /// [default without --crl: STORE/pki/root-crl.pem].
        #[arg(long, value_name = "FILE")]
        root_crl: Option<PathBuf>,
        /// Require one of these SPKI pins (sha256:HEX) on the path; repeat
        /// for old and new pins during a transition.
        #[arg(long, value_name = "PIN")]
        pin: Vec<String>,
        /// Check at this RFC 3339 time instead of now.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// Verify the provisioning event log (hash chain, MACs, head) and print
    /// it. Any authenticated role (auditors included).
    Events,
    /// Issue (or renew) the delegated OCSP signing certificate: a key
    /// generated in the production store (a fresh version at each renewal),
    /// certified by the intermediate for OCSPSigning with ocsp-nocheck and
    /// a short validity; writes STORE/pki/ocsp-signer.pem. Security officer.
    /// Renew it before it expires (`keyctl ocsp serve` answers tryLater
    /// after).
    OcspSigner {
        /// The signing certificate's common name.
        #[arg(long, default_value = "Keystore OCSP Responder")]
        cn: String,
        /// Validity in days (1 to 90).
        #[arg(long, default_value_t = 7)]
        validity_days: u32,
        /// The signing key's algorithm, when the production store does not
        /// hold that key yet (a renewal rotates it and keeps its algorithm).
        #[arg(long, value_name = "ALG", value_parser = parse_pki_algorithm, default_value = "ecdsa-p256-sha256")]
        algorithm: Algorithm,
    },
}

/// The offline root's store.
#[derive(Debug, Clone, Args)]
pub struct RootArgs {
    /// The root CA's store directory (kept offline).
    #[arg(long, value_name = "DIR")]
    pub root_store: PathBuf,
    /// Key file unlocking the root store.
    #[arg(long, value_name = "PATH")]
    pub root_key_file: Option<PathBuf>,
    /// File holding the root store's passphrase (else KEYCTL_ROOT_PASSPHRASE).
    #[arg(long, value_name = "PATH")]
    pub root_passphrase_file: Option<PathBuf>,
    /// File holding the root custodian's credential (else KEYCTL_ROOT_SECRET).
    #[arg(long, value_name = "PATH")]
    pub root_secret_file: Option<PathBuf>,
    /// The root custodian's actor id [default: $USER].
    #[arg(long, value_name = "ID")]
    pub root_actor: Option<String>,
}

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// The unit's id (CN and serialNumber of its certificate).
    #[arg(long, required_unless_present = "batch", conflicts_with = "batch")]
    pub device_id: Option<String>,
    /// Provision every device in FILE: one id per line, or `id,operator`.
    #[arg(long, value_name = "FILE")]
    pub batch: Option<PathBuf>,
    /// The production line or station, recorded in the provisioning record
    /// (for a batch: the default for lines without one).
    #[arg(long, value_name = "OP")]
    pub operator: Option<String>,
    /// In a batch, report and skip a device id that is already provisioned
    /// (by another station sharing the registry, or an earlier run) instead
    /// of stopping there; the exit code is then 4 (already exists) once the
    /// batch is done.
    #[arg(long, requires = "batch")]
    pub skip_provisioned: bool,
    /// Certificate validity in days.
    #[arg(long, default_value_t = 30)]
    pub validity_days: u32,
    /// The algorithm of the identity keys generated (a key left by an
    /// interrupted provisioning keeps its own).
    #[arg(long, value_name = "ALG", value_parser = parse_pki_algorithm, default_value = "ecdsa-p256-sha256")]
    pub algorithm: Algorithm,
    #[command(flatten)]
    pub device: DeviceStoreArgs,
    /// The backend of --device-store: `soft` (with --device-key-file) or
    /// `tpm` (a store made with `keyctl --backend tpm --store DIR init`; the
    /// TPM options --tpm-tcti and --tpm-owner-auth-file apply to it). One
    /// TPM holds one unit's identity: no --batch.
    #[arg(long, value_enum, default_value = "soft", requires = "device_store")]
    pub device_backend: DeviceBackend,
    /// Prove the identity key's TPM residence before issuing (needs
    /// --device-backend tpm): the EK certificate must chain to one of the
    /// manufacturer CA certificates in FILE (PEM), the AK must activate a
    /// credential made for the EK, and TPM2_Certify must show the key fixed
    /// to the TPM and generated in it.
    #[arg(long, value_name = "FILE")]
    pub ek_ca: Option<PathBuf>,
    /// This product line's keys must be attested: refuse (exit 7, audited)
    /// any unit provisioned without a passing TPM key attestation.
    #[arg(long)]
    pub require_attestation: bool,
    /// OCSP responder URL (http://HOST:PORT/PATH; port and path optional) the certificates carry
    /// in their authorityInfoAccess.
    #[arg(long, value_name = "URL")]
    pub ocsp_url: Option<String>,
    // The help text is an attribute, not a doc comment, because rustdoc
    // would read `<device-id>` as an HTML tag.
    #[arg(
        long,
        value_name = "DIR",
        help = "Write cert.pem, chain.pem and record.yaml under DIR/<device-id>/ [default: STORE/provisioned]"
    )]
    pub out_dir: Option<PathBuf>,
}

/// The backend that holds a unit's identity key in its own store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceBackend {
    /// A soft store unlocked by a key file.
    Soft,
    /// A TPM 2.0 store (cargo feature `tpm`).
    Tpm,
}

/// Where device identity keys live.
#[derive(Debug, Clone, Args)]
pub struct DeviceStoreArgs {
    /// The device's own keystore (soft; created with `keyctl --store DIR init`
    /// and the same role credential). Default: the production store, with
    /// one key `device.<id>.identity` per device.
    #[arg(long, value_name = "DIR")]
    pub device_store: Option<PathBuf>,
    /// Key file unlocking a soft --device-store.
    #[arg(long, value_name = "PATH")]
    pub device_key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RenewArgs {
    /// The unit's id (with --est: optional, checked against the store's identity).
    #[arg(long, required_unless_present = "est")]
    pub device_id: Option<String>,
    /// Renew when the certificate expires within this time.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "7d")]
    pub threshold: Duration,
    /// How long the old key and certificate stay valid after renewal.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "7d")]
    pub grace: Duration,
    /// New certificate validity in days.
    #[arg(long, default_value_t = 30)]
    pub validity_days: u32,
    #[command(flatten)]
    pub device: DeviceStoreArgs,
    /// Output directory [default: STORE/provisioned; with --est, none].
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Renew over EST from the device's own store (--device-store, else
    /// --store, any backend) with its current certificate: the EST server's
    /// https://HOST:PORT (`keyctl est serve`). The next key is staged and
    /// becomes active only with its certificate; the production store is
    /// not opened, and --validity-days is the server's.
    #[arg(long, value_name = "URL")]
    pub est: Option<String>,
    /// With --est: the trust anchor for the server and the new chain (PEM or
    /// DER) [default: STORE/pki/root.pem].
    #[arg(long, value_name = "FILE", requires = "est")]
    pub root: Option<PathBuf>,
    /// With --est: seconds one EST request may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, requires = "est")]
    pub timeout: u32,
}

/// `--algorithm` of the PKI commands: a key algorithm of the device PKI
/// (`provisioning::PKI_ALGORITHMS`).
fn parse_pki_algorithm(s: &str) -> Result<Algorithm, String> {
    let alg: Algorithm = s.parse().map_err(|e: keystore_api::Error| e.to_string())?;
    if provisioning::PKI_ALGORITHMS.contains(&alg) {
        return Ok(alg);
    }
    let names: Vec<&str> = provisioning::PKI_ALGORITHMS
        .iter()
        .map(|a| a.id())
        .collect();
    Err(format!(
        "the device PKI takes {}, not {alg}",
        names.join(", ")
    ))
}

pub(super) fn days(n: u32) -> CliResult<Duration> {
    if n == 0 || n > 7305 {
        return Err(CliError::invalid("a validity is 1 to 7305 days"));
    }
    Ok(Duration::days(i64::from(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pki_algorithms_parse_and_others_are_refused() {
        assert_eq!(
            parse_pki_algorithm("ecdsa-p384-sha384"),
            Ok(Algorithm::EcdsaP384Sha384)
        );
        assert_eq!(parse_pki_algorithm("ed25519"), Ok(Algorithm::Ed25519));
        for bad in [
            "ml-dsa-65",
            "ecdh-p256",
            "rsa-2048-pss-sha256",
            "aes-256-gcm",
            "x",
        ] {
            assert!(parse_pki_algorithm(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validity_days_are_bounded() {
        assert!(days(0).is_err());
        assert!(days(7306).is_err());
        assert_eq!(days(30).unwrap(), Duration::days(30));
    }
}
