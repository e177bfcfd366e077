//! The catalogue of conformance tests and the requirements they prove.
//!
//! Test ids follow the source numbering: `TEST-KEY-04` is the HKDF vector
//! test and `TEST-KEY-07` is reserved for the revoked/expired rejection test
//! of the lifecycle layer.

/// One conformance test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    /// `TEST-KEY-NN`.
    pub id: &'static str,
    /// The Rust test function name stamped out per backend.
    pub name: &'static str,
    /// The requirement it proves (`REQ-KEY-…`).
    pub req: &'static str,
    /// What it checks, in one line.
    pub title: &'static str,
}

/// Requirements, with their one-line statements. The `REQ-KEY-OPS-01` and
/// `REQ-KEY-INP-01` ids are project requirements from DESIGN.md ("Algorithms",
/// "Errors and bad input"); the rest come from the source specification.
pub const REQUIREMENTS: &[(&str, &str)] = &[
    (
        "REQ-KEY-GEN-01",
        "keys generated inside the backend with its RNG",
    ),
    ("REQ-KEY-STO-01", "non-extractable, no plaintext at rest"),
    ("REQ-KEY-ROT-01", "rotation with grace"),
    ("REQ-KEY-REV-03", "revocation and expiry rejection"),
    (
        "REQ-KEY-CERT-01",
        "short-lived certificates renewed before expiry",
    ),
    (
        "REQ-KEY-PROV-02",
        "secure manufacturing key injection with audit trails: every unit and its key registered once, no device key reused across units",
    ),
    (
        "REQ-KEY-BAK-01",
        "no escrow of signing keys; wrapped, least-privilege backup of operational keys",
    ),
    (
        "REQ-KEY-SOD-01",
        "separation of duties: offline root, production intermediate, roles",
    ),
    ("REQ-KEY-KDF-01", "HKDF per-session keys"),
    ("REQ-KEY-WIPE-01", "wipe on decommission"),
    ("REQ-KEY-AUD-01", "events logged with ids and timestamps"),
    (
        "REQ-KEY-OPS-01",
        "every operation is correct and checked by an independent implementation",
    ),
    (
        "REQ-KEY-INP-01",
        "bad input gets a clear error, never a panic, and leaves other keys intact",
    ),
];

/// Backends the workspace tests; each must report a result for every case.
pub const BACKENDS: &[&str] = &[
    "soft",
    "soft-rustcrypto",
    "pkcs11",
    "tpm",
    "soft+tpm-sealed",
];

macro_rules! cases {
    ($($id:literal $name:ident $req:literal $title:literal;)*) => {
        /// Every conformance case, in id order.
        pub const CASES: &[Case] = &[$(Case { id: $id, name: stringify!($name), req: $req, title: $title }),*];
        /// Case constants by test name.
        #[allow(non_upper_case_globals)]
        pub mod by_name {
            use super::Case;
            $(
                #[doc = $title]
                pub const $name: Case = Case { id: $id, name: stringify!($name), req: $req, title: $title };
            )*
        }
    };
}

cases! {
    "TEST-KEY-01" ecdsa_p256_sign_verify "REQ-KEY-GEN-01" "ECDSA P-256 key generated in the backend; DER and fixed signatures verify with the p256 crate";
    "TEST-KEY-02" rsa_2048_pss_sign_verify "REQ-KEY-GEN-01" "RSA-2048 PSS-SHA256 signatures verify with the rsa crate";
    "TEST-KEY-03" rsa_2048_pkcs1_sign_verify "REQ-KEY-GEN-01" "RSA-2048 PKCS#1 v1.5-SHA256 signatures verify with the rsa crate";
    "TEST-KEY-04" hkdf_cross_backend_vectors "REQ-KEY-KDF-01" "import K, derive: output equals the committed cross-backend vectors";
    "TEST-KEY-05" rsa_3072_pss_sign_verify "REQ-KEY-GEN-01" "RSA-3072 PSS-SHA256 signatures verify with the rsa crate";
    "TEST-KEY-06" rsa_3072_pkcs1_sign_verify "REQ-KEY-GEN-01" "RSA-3072 PKCS#1 v1.5-SHA256 signatures verify with the rsa crate";
    "TEST-KEY-07" revoked_and_expired_rejected "REQ-KEY-REV-03" "a revoked version and a version past its grace are rejected for every use; a device certificate for a backend identity key is rejected after revocation by CRL and stapled OCSP, and by a pin set without its key";
    "TEST-KEY-08" aead_envelope_interop "REQ-KEY-OPS-01" "AES-256-GCM envelopes decrypt with the aes-gcm crate and round-trip with AAD";
    "TEST-KEY-09" hmac_matches_reference "REQ-KEY-OPS-01" "HMAC-SHA256 tags equal the hmac crate's; verify_mac rejects a wrong tag";
    "TEST-KEY-10" prop_sign_verify_random_messages "REQ-KEY-OPS-01" "property: signatures over random messages verify independently";
    "TEST-KEY-11" prop_aead_round_trip "REQ-KEY-OPS-01" "property: AEAD round trip over random plaintexts and AAD";
    "TEST-KEY-12" prop_aead_bit_flip_rejected "REQ-KEY-OPS-01" "property: flipping any bit of header, nonce, ciphertext, tag or AAD is rejected";
    "TEST-KEY-13" prop_derive_matches_hkdf "REQ-KEY-KDF-01" "property: derive equals the hkdf crate for random K, S, I and L";
    "TEST-KEY-14" derive_length_bounds "REQ-KEY-KDF-01" "derive rejects L=0 and L>8160 with InvalidInput; accepts 1 and 8160";
    "TEST-KEY-15" non_extractable_probe "REQ-KEY-STO-01" "backend-level probe: no key material can be read out of the backend";
    "TEST-KEY-16" no_plaintext_at_rest "REQ-KEY-STO-01" "no file the store writes holds key bytes raw, in hex or in base64";
    "TEST-KEY-17" persistence_across_restart "REQ-KEY-STO-01" "after a restart: same public keys, keys still sign, decrypt and derive";
    "TEST-KEY-18" destroy_removes_material "REQ-KEY-WIPE-01" "destroy: then NotFound, and the material is gone from the backend and disk";
    "TEST-KEY-19" unknown_key_not_found "REQ-KEY-INP-01" "every operation on an unknown key is NotFound";
    "TEST-KEY-20" wrong_usage_is_policy "REQ-KEY-INP-01" "usage policy: a signing key cannot decrypt or derive, and so on";
    "TEST-KEY-21" empty_and_oversized_inputs "REQ-KEY-INP-01" "empty or oversized inputs are InvalidInput and leave other keys intact";
    "TEST-KEY-22" wrong_credentials_rejected "REQ-KEY-STO-01" "wrong passphrase/PIN/key file is Auth; keys intact with the right one";
    "TEST-KEY-23" corrupted_record_detected "REQ-KEY-INP-01" "a corrupted stored record is Integrity; every other key survives";
    "TEST-KEY-24" truncated_record_detected "REQ-KEY-INP-01" "a truncated stored record is Integrity; every other key survives";
    "TEST-KEY-25" swapped_record_detected "REQ-KEY-STO-01" "a record swapped onto another key is Integrity; every other key survives";
    "TEST-KEY-26" import_symmetric_only "REQ-KEY-GEN-01" "only symmetric keys import (origin=imported); private keys are Policy";
    "TEST-KEY-27" duplicate_name_rejected "REQ-KEY-INP-01" "a taken name is AlreadyExists; the original key and backend are untouched";
    "TEST-KEY-28" list_and_info_metadata "REQ-KEY-GEN-01" "list and info report algorithm, usages, origin and fingerprint";
    "TEST-KEY-29" debug_output_redacts_secrets "REQ-KEY-STO-01" "Debug and error output never contain key bytes";
    "TEST-KEY-30" generated_keys_are_unique "REQ-KEY-GEN-01" "independently generated keys differ (backend RNG)";
    "TEST-KEY-31" concurrent_operations "REQ-KEY-OPS-01" "two threads sign and derive on one keystore; all results verify";
    "TEST-KEY-32" backend_wipe_removes_everything "REQ-KEY-WIPE-01" "wipe leaves no key in the backend and none usable";
    "TEST-KEY-33" verify_rejects_forgeries "REQ-KEY-OPS-01" "verify rejects tampered signatures, wrong messages and other keys' signatures";
    "TEST-KEY-34" rotation_with_grace_period "REQ-KEY-ROT-01" "rotate: new version signs; old verifies/decrypts only until grace end; sweep leaves a tombstone";
    "TEST-KEY-35" illegal_transitions_change_nothing "REQ-KEY-ROT-01" "an illegal state transition is KeyState and changes nothing";
    "TEST-KEY-36" suspend_and_resume "REQ-KEY-REV-03" "a suspended version is unusable until resumed, across restarts";
    "TEST-KEY-37" scheduled_rotation_when_due "REQ-KEY-ROT-01" "cryptoperiod: due(now) and rotate_due(now) rotate exactly the keys due";
    "TEST-KEY-38" backup_policy_refusals "REQ-KEY-BAK-01" "signing keys are never backed up; eligibility is fixed at creation; only the security officer backs up";
    "TEST-KEY-39" backup_restore_round_trip "REQ-KEY-BAK-01" "a wrapped backup restores into another store with the same KEK, and nowhere else";
    "TEST-KEY-40" roles_enforced_and_refusals_audited "REQ-KEY-SOD-01" "admin operations need the security officer; refusals are Policy and audited; credentials per role";
    "TEST-KEY-41" audit_records_lifecycle_events "REQ-KEY-AUD-01" "every lifecycle event is audited with id, RFC 3339 UTC time, actor, key, version";
    "TEST-KEY-42" audit_detects_edit "REQ-KEY-AUD-01" "an edited entry or forged MAC is named as the first bad entry";
    "TEST-KEY-43" audit_detects_deletion "REQ-KEY-AUD-01" "a deleted entry is named as the first bad entry";
    "TEST-KEY-44" audit_detects_reordering "REQ-KEY-AUD-01" "reordered entries are named at the first bad position";
    "TEST-KEY-45" audit_detects_truncation "REQ-KEY-AUD-01" "a truncated trail (with or without its head) is named at the first bad entry";
    "TEST-KEY-46" decommission_leaves_nothing_usable "REQ-KEY-WIPE-01" "decommission: audit exported, backend wiped, metadata gone, no key usable";
    "TEST-KEY-47" crash_during_create_or_rotate_recovers "REQ-KEY-ROT-01" "a crash between backend and metadata in create/rotate reopens in the old state, no orphan";
    "TEST-KEY-48" crash_during_destroy_sweep_revoke_recovers "REQ-KEY-WIPE-01" "a crash in destroy/sweep/revoke reopens in the new state, no dangling handle";
    "TEST-KEY-49" missing_material_is_marked_not_dropped "REQ-KEY-STO-01" "material missing at open is reported, marked compromised and audited, not dropped";
    "TEST-KEY-50" damaged_metadata_never_destroys_a_key "REQ-KEY-STO-01" "a damaged handle in metadata leaves the genuine backend object intact and reported";
    "TEST-KEY-51" many_processes_share_one_store "REQ-KEY-ROT-01" "4 using processes, 1 rotating and sweeping, 1 re-opening and listing, plus the holder: 0 failed uses, nothing compromised, all material present, audit intact";
    "TEST-KEY-52" killed_writers_lose_nothing "REQ-KEY-STO-01" "200 writers SIGKILLed at random points under load: nothing compromised, no orphan after a quiet open, every surviving version works, audit intact";
    "TEST-KEY-53" wrong_backend_fails_open_and_changes_nothing "REQ-KEY-STO-01" "metadata opened over the wrong token, TPM registry or directory fails the open (NotFound) and changes nothing";
    "TEST-KEY-54" mac_and_derive_never_share_a_key "REQ-KEY-KDF-01" "mac and derive on one key are Policy at create and import; hmac defaults to mac; old keys with both work and are warned about";
    "TEST-KEY-55" audit_never_claims_unchecked_macs "REQ-KEY-AUD-01" "audit key reference NULLed or replaced on a live store is Integrity; after decommission the chain only is checked and the report says MACs were not";
    "TEST-KEY-56" store_files_are_private "REQ-KEY-STO-01" "under umask 022 every store directory is 0700 and every file (records, header, lock, metadata and its -wal/-shm/-gen) 0600; loosened modes are tightened and reported at open";
    "TEST-KEY-57" device_identity_over_mtls "REQ-KEY-CERT-01" "the backend's ECDSA P-256 identity key, certified, completes a real TLS 1.3 handshake on 127.0.0.1 against a rustls server requiring client auth; once revoked it cannot";
    "TEST-KEY-58" device_renews_over_est "REQ-KEY-CERT-01" "EST renewal with the identity key in the backend: the new version is active with its certificate, the old pair current until then; with the server stopped a renewal fails and the current pair stays";
    "TEST-KEY-59" aes_gcm_limit_across_processes "REQ-KEY-ROT-01" "AES-GCM limit 1,000 (SP 800-38D) counted across processes in reserved blocks: 3 processes until refused make exactly 1,000; with one SIGKILLed mid-run and restarted never more, at most its block lost; then KeyState naming the limit, decrypt works, rotation starts a new count";
    "TEST-KEY-60" ecdsa_p384_sign_verify "REQ-KEY-OPS-01" "ECDSA P-384/SHA-384: DER and fixed r‖s signatures verified by the p384 crate and openssl, or Unsupported";
    "TEST-KEY-61" ed25519_sign_verify "REQ-KEY-OPS-01" "Ed25519 (RFC 8032): signatures verified strictly by ed25519-dalek and by openssl, or Unsupported";
    "TEST-KEY-62" ml_dsa_65_sign_verify "REQ-KEY-OPS-01" "ML-DSA-65 (FIPS 204): 1,952-byte keys and 3,309-byte signatures verified by RustCrypto ml-dsa, or Unsupported";
    "TEST-KEY-63" new_algorithms_rotate_and_revoke "REQ-KEY-ROT-01" "P-384, Ed25519, ML-DSA-65 and ECDH keys rotate (old signatures verify in grace) and, once revoked, refuse use with KeyState";
    "TEST-KEY-64" ecdh_p256_agreement "REQ-KEY-OPS-01" "ECDH P-256 + SP 800-56C one-step KDF (SHA-256): the same bytes as p256 + SHA-256 and as openssl pkeyutl -derive + kdf SSKDF, for 16 to 8,160 bytes, across a restart";
    "TEST-KEY-65" ecdh_peer_keys_validated "REQ-KEY-INP-01" "peer keys off the curve, the identity, wrong lengths, another curve or key type are InvalidInput; ECDH keys do not sign, ECDSA keys do not agree; other keys intact";
    "TEST-KEY-66" shared_registry_across_stations "REQ-KEY-PROV-02" "stations with their own stores (one on the backend) share one PostgreSQL registry: every unit registered once (a taken id is AlreadyExists on the other station, nothing written), records and counts the same from both, one event chain verified by each station with its own key, certificates verified by openssl";
    "TEST-KEY-67" registry_key_uniqueness_fleet_wide "REQ-KEY-GEN-01" "a public key generated in the backend is registered to one unit fleet-wide: CSRs of one key for two ids sent to two stations at once (own PostgreSQL connections, 5 rounds) are issued once, the other gets AlreadyExists with nothing written";
    "TEST-KEY-68" registry_events_accountable_per_station "REQ-KEY-SOD-01" "each station's registry events are MAC'd by its own key in its backend: an edited detail or a relabelled station is Integrity at that event, relabelled with the chain recomputed a bad MAC; an operator cannot revoke (Policy, audited, nothing changed)";
    "TEST-KEY-69" tpm_key_attestation "REQ-KEY-GEN-01" "an identity key generated in the backend is proven TPM-resident (EK certificate to the manufacturer CA, checked by openssl too; credential activation; TPM2_Certify with fixedTPM, fixedParent and sensitiveDataOrigin) before the factory issues; the registry records attested-tpm with the evidence digest, or Unsupported";
    "TEST-KEY-70" forged_attestation_refused "REQ-KEY-SOD-01" "forged evidence is refused and audited once each, nothing registered: an EK certificate from an unknown manufacturer (Policy), a certify of another key (Integrity), a replayed certify (Integrity); the genuine exchange then passes, or Unsupported";
    "TEST-KEY-71" mandatory_attestation_policy "REQ-KEY-PROV-02" "a product line requiring attestation refuses an unattested unit (Policy, audited, nothing registered) and issues only attested ones (a key without a TPM is refused, Unsupported); without the policy the same unit and key are recorded unattested";
    "TEST-KEY-72" audit_checkpoints_verify_offline "REQ-KEY-AUD-01" "an exported trail verifies off the device with only the trusted signing key (checkpoints also by OpenSSL); an edited entry, a rewritten chain, a cut-off tail and an untrusted key are each named; after a signer rotation the old key's handover suffices";
    "TEST-KEY-73" metadata_rollback_detected "REQ-KEY-AUD-01" "an older copy of the metadata (or of its audit tables alone) restored after a checkpoint is refused at open as Integrity naming the monotonic counter and the head; the newest copy opens; without a counter the backend proves Unsupported and the export says NONE";
    "TEST-KEY-74" decommission_erasure_certificate "REQ-KEY-WIPE-01" "decommission ends with an erasure certificate signed by the audit key that lists every key, the method and the final checkpoint; it and the final trail verify offline (signature also by OpenSSL), an edited certificate does not, and the backend holds nothing";
}
