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
    ("REQ-KEY-KDF-01", "HKDF per-session keys"),
    ("REQ-KEY-WIPE-01", "wipe on decommission"),
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
pub const BACKENDS: &[&str] = &["soft"];

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
}
