//! # conformance-tests
//!
//! The one suite every keystore backend must pass. A backend supplies a
//! [`Fixture`] (fresh storage, restart, a backend-level extraction probe,
//! tampering with stored records) and stamps out the whole suite with
//! [`suite!`] in one test file, so `cargo test` lists every case per backend.
//!
//! Each case records its result (passed, unsupported-verified, failed or
//! skipped) under `target/conformance/results/<backend>/`; the
//! `conformance-matrix` binary turns those into `matrix.md`, `matrix.json`
//! and `docs/traceability.md`.
//!
//! A backend whose environment cannot be set up (a missing simulator) fails
//! with an install hint, unless `KEYSTORE_TEST_SKIP` names it (comma
//! separated), in which case it is recorded as SKIPPED. The same holds for a
//! tool a case needs besides its backend (`postgres`, [`Outcome::Skipped`]).
//! CI never sets it.

pub mod cases;
pub mod catalog;
pub mod fixtures;
pub mod processes;
pub mod results;
mod support;

use keystore_api::{Backend, Clock, KeyHandle, Keystore, SystemClock};
use std::path::PathBuf;
use std::sync::Arc;

pub use catalog::{Case, BACKENDS, CASES};
pub use results::Status;

/// How a case ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check passed.
    Passed,
    /// The backend does not offer the operation, and the case proved that it
    /// answers `Error::Unsupported` and says so in its capabilities.
    UnsupportedVerified(String),
    /// A tool the case needs besides its backend (PostgreSQL) is missing and
    /// `KEYSTORE_TEST_SKIP` names it: recorded as SKIPPED, which the matrix
    /// accepts only while the variable names the tool (or the backend).
    Skipped {
        /// The tool's name in `KEYSTORE_TEST_SKIP` (`postgres`).
        tool: &'static str,
        /// What is missing.
        why: String,
    },
}

/// A way to damage a stored record, for the bad-input cases.
#[derive(Debug, Clone, Copy)]
pub enum Tamper<'a> {
    /// Flip bits inside the record.
    Corrupt,
    /// Cut the record short.
    Truncate,
    /// Replace the record with another key's record (named here).
    SwapWith(&'a str),
}

/// What a backend provides so the shared cases can run on it.
pub trait Fixture: Sized {
    /// The backend under test.
    type Backend: Backend + 'static;
    /// The backend's name in the matrix (`soft`, `pkcs11`, `tpm`, …).
    const NAME: &'static str;

    /// Fresh, empty storage. `Err` means the environment is missing (say how
    /// to install it); the harness turns it into a failure or, when
    /// `KEYSTORE_TEST_SKIP` names the backend, a SKIPPED record.
    fn setup() -> Result<Self, String>;

    /// Opens a keystore on this fixture's storage (creating it the first
    /// time) with `clock`. Panics with context if it cannot.
    fn open_with_clock(&mut self, clock: Arc<dyn Clock>) -> Keystore<Self::Backend>;

    /// Opens a keystore with the system clock, returning the keystore's
    /// error (the backend opening must succeed: it panics with context).
    fn try_open(&mut self) -> keystore_api::Result<Keystore<Self::Backend>>;

    /// Opens a keystore with the system clock.
    fn open(&mut self) -> Keystore<Self::Backend> {
        self.open_with_clock(Arc::new(SystemClock))
    }

    /// The metadata database the keystore uses (the audit-tamper cases edit
    /// it directly, as an attacker with file access would).
    fn metadata_path(&self) -> PathBuf;

    /// Drops `ks` and opens the same storage again, as after a restart.
    fn restart(&mut self, ks: Keystore<Self::Backend>) -> Keystore<Self::Backend> {
        drop(ks);
        self.open()
    }

    /// Opens the storage with wrong credentials (passphrase, PIN, key file).
    /// The suite expects `Err(Error::Auth)`.
    fn open_with_wrong_credentials(&mut self) -> keystore_api::Result<Keystore<Self::Backend>>;

    /// Every file the store (backend and metadata) has written.
    fn files(&self) -> Vec<PathBuf>;

    /// The backend-level extraction probe for key `name`: tries every way the
    /// device offers to read its material and checks the stored form. Returns
    /// what it checked, or what it found.
    fn probe_extraction(
        &self,
        ks: &Keystore<Self::Backend>,
        name: &str,
    ) -> Result<Vec<String>, String>;

    /// Checks, below the keystore API, that the material of `handle` no longer
    /// exists in the backend.
    fn assert_material_gone(
        &self,
        ks: &Keystore<Self::Backend>,
        handle: &KeyHandle,
    ) -> Result<(), String>;

    /// Damages the stored record of key `name` (active version) at rest. The
    /// suite restarts the keystore afterwards so no cache hides the damage.
    fn tamper(&self, ks: &Keystore<Self::Backend>, name: &str, how: Tamper<'_>);

    /// Starts what other processes need to share this fixture's store (a
    /// TPM resource manager) and says how they open it (the multi-process
    /// cases hand it to the `conformance-worker` binary).
    fn worker_spec(&mut self) -> Result<processes::WorkerSpec, String>;

    /// Stops what [`Fixture::worker_spec`] started; the fixture's own opens
    /// work again afterwards.
    fn stop_workers(&mut self) {}

    /// Whether this process may keep a keystore open while workers run (not
    /// when its device admits one connection and the workers share it
    /// through a resource manager).
    fn parent_shares_device(&self) -> bool {
        true
    }

    /// Opens the store `spec` describes, in a worker process, with
    /// `check_material` as in [`keystore_api::OpenOptions`].
    fn open_for_worker(
        spec: &processes::WorkerSpec,
        check_material: bool,
    ) -> Result<Keystore<Self::Backend>, String>;

    /// Opens this fixture's metadata over other, empty backend storage (a
    /// fresh store directory, token or registry): the wrong device.
    fn open_elsewhere(&mut self) -> keystore_api::Result<Keystore<Self::Backend>>;

    /// The certificates (PEM, intermediate then root) of the manufacturer
    /// CA that issued the backend's endorsement key certificate, which a
    /// factory trusts to attest keys in this backend (TEST-KEY-69..71);
    /// `None` when the backend has no endorsement key.
    fn manufacturer_ca_pem(&self) -> Option<String> {
        None
    }
}

/// Runs `body` as conformance case `case` on fixture `F` and records the result.
pub fn run<F: Fixture>(case: &'static Case, body: fn(&mut F) -> Outcome) {
    let skip = skip_requested(F::NAME);
    let mut fx = match F::setup() {
        Ok(fx) => fx,
        Err(why) if skip => {
            results::record(F::NAME, case, Status::Skipped, &why);
            eprintln!("SKIPPED {} on {}: {why}", case.id, F::NAME);
            return;
        }
        Err(why) => {
            results::record(F::NAME, case, Status::Failed, &why);
            panic!(
                "{} cannot run on backend '{}': {why}\n(set KEYSTORE_TEST_SKIP={} to skip it knowingly; CI never does)",
                case.id,
                F::NAME,
                F::NAME
            );
        }
    };
    let guard = results::Guard::new(F::NAME, case);
    let outcome = body(&mut fx);
    guard.finish(&outcome);
}

fn skip_requested(backend: &str) -> bool {
    std::env::var("KEYSTORE_TEST_SKIP")
        .map(|v| v.split(',').any(|b| b.trim() == backend))
        .unwrap_or(false)
}

/// Stamps out every conformance case as a `#[test]` for a fixture type.
///
/// ```ignore
/// conformance_tests::suite!(conformance_tests::fixtures::soft::SoftFixture);
/// ```
#[macro_export]
macro_rules! suite {
    ($fixture:ty) => {
        $crate::suite!(@stamp $fixture;
            ecdsa_p256_sign_verify,
            rsa_2048_pss_sign_verify,
            rsa_2048_pkcs1_sign_verify,
            hkdf_cross_backend_vectors,
            rsa_3072_pss_sign_verify,
            rsa_3072_pkcs1_sign_verify,
            revoked_and_expired_rejected,
            aead_envelope_interop,
            hmac_matches_reference,
            prop_sign_verify_random_messages,
            prop_aead_round_trip,
            prop_aead_bit_flip_rejected,
            prop_derive_matches_hkdf,
            derive_length_bounds,
            non_extractable_probe,
            no_plaintext_at_rest,
            persistence_across_restart,
            destroy_removes_material,
            unknown_key_not_found,
            wrong_usage_is_policy,
            empty_and_oversized_inputs,
            wrong_credentials_rejected,
            corrupted_record_detected,
            truncated_record_detected,
            swapped_record_detected,
            import_symmetric_only,
            duplicate_name_rejected,
            list_and_info_metadata,
            debug_output_redacts_secrets,
            generated_keys_are_unique,
            concurrent_operations,
            backend_wipe_removes_everything,
            verify_rejects_forgeries,
            rotation_with_grace_period,
            illegal_transitions_change_nothing,
            suspend_and_resume,
            scheduled_rotation_when_due,
            backup_policy_refusals,
            backup_restore_round_trip,
            roles_enforced_and_refusals_audited,
            audit_records_lifecycle_events,
            audit_detects_edit,
            audit_detects_deletion,
            audit_detects_reordering,
            audit_detects_truncation,
            decommission_leaves_nothing_usable,
            crash_during_create_or_rotate_recovers,
            crash_during_destroy_sweep_revoke_recovers,
            missing_material_is_marked_not_dropped,
            damaged_metadata_never_destroys_a_key,
            many_processes_share_one_store,
            killed_writers_lose_nothing,
            wrong_backend_fails_open_and_changes_nothing,
            mac_and_derive_never_share_a_key,
            audit_never_claims_unchecked_macs,
            store_files_are_private,
            device_identity_over_mtls,
            device_renews_over_est,
            aes_gcm_limit_across_processes,
            ecdsa_p384_sign_verify,
            ed25519_sign_verify,
            ml_dsa_65_sign_verify,
            new_algorithms_rotate_and_revoke,
            ecdh_p256_agreement,
            ecdh_peer_keys_validated,
            shared_registry_across_stations,
            registry_key_uniqueness_fleet_wide,
            registry_events_accountable_per_station,
            tpm_key_attestation,
            forged_attestation_refused,
            mandatory_attestation_policy,
            audit_checkpoints_verify_offline,
            metadata_rollback_detected,
            decommission_erasure_certificate,
        );
    };
    (@stamp $fixture:ty; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::run::<$fixture>(&$crate::catalog::by_name::$name, $crate::cases::$name::<$fixture>);
            }
        )*

        /// The stamped list matches the catalogue exactly.
        #[test]
        fn suite_covers_catalogue() {
            let stamped: &[&str] = &[$(stringify!($name)),*];
            let catalogue: Vec<&str> = $crate::CASES.iter().map(|c| c.name).collect();
            assert_eq!(stamped, catalogue.as_slice(), "suite! and catalog.rs disagree");
        }
    };
}
