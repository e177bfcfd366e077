//! Test support for attestation (`test-support` feature; never in
//! production builds): credentials made by the TPM itself, and keystore
//! keys that a verifier must refuse.

use crate::attest::{selected_ek, with_ek};
use crate::esys::unmarshal_public;
use crate::rc::{self, TpmRc};
use crate::{templates, TpmBackend};
use keystore_backend::{Algorithm, Component, Error, KeyHandle, Result};
use tss_esapi::constants::tss as c;
use tss_esapi::structures::Digest;
use tss_esapi::traits::Marshall;

/// `TPMA_OBJECT_FIXEDTPM`.
const FIXED_TPM: u32 = 1 << 1;
/// `TPMA_OBJECT_FIXEDPARENT`.
const FIXED_PARENT: u32 = 1 << 4;

fn fail(what: &'static str) -> impl Fn(TpmRc) -> (TpmRc, Error) {
    move |rc| (rc, rc::to_error(what, rc))
}

impl TpmBackend {
    /// Test support: `TPM2_MakeCredential` done by this TPM with the public
    /// key of `ek_public` (a marshalled `TPMT_PUBLIC`, e.g. from
    /// [`TpmBackend::ek_public`], loaded with `TPM2_LoadExternal` into the
    /// NULL hierarchy and flushed again) for the object Name `name` (34
    /// bytes for a SHA-256 Name) and the secret `credential` (at most 32
    /// bytes). Returns `(credential_blob, encrypted_secret)` in the forms
    /// [`TpmBackend::activate_credential`] takes: the `TPM2B_ID_OBJECT` and
    /// `TPM2B_ENCRYPTED_SECRET` buffers without size prefixes. A reference
    /// for a software MakeCredential.
    pub fn make_credential_for_tests(
        &self,
        ek_public: &[u8],
        name: &[u8],
        credential: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let public = unmarshal_public(ek_public)
            .ok_or_else(|| Error::invalid_input("ek_public is not a marshalled TPMT_PUBLIC"))?;
        let mut st = self.lock();
        self.with_conn(&mut st, |conn| {
            conn.make_room(1, None);
            let esys = &mut conn.esys;
            let tr = esys
                .load_external_public(&public)
                .map_err(fail("load the EK public area"))?;
            let r = esys
                .make_credential(tr, credential, name)
                .map_err(fail("make a credential"));
            let _ = esys.flush(tr);
            r
        })
    }

    /// Test support: the Name of the selected EK (`nameAlg ‖
    /// H(public area)`), for checks against [`TpmBackend::ek_public`].
    pub fn ek_name_for_tests(&self) -> Result<Vec<u8>> {
        let mut st = self.lock();
        self.with_conn(&mut st, |conn| {
            let alg = selected_ek(&mut conn.esys)?;
            with_ek(conn, &self.config, alg, 0, |esys, ek, _| {
                esys.read_public(ek)
                    .map(|(_, name)| name)
                    .map_err(fail("read the EK's Name"))
            })
        })
    }

    /// Test support: generates a keystore key of `algorithm` (any algorithm
    /// [`KeyManagement::generate`](keystore_backend::KeyManagement::generate)
    /// accepts here) that is **duplicable**: the usual template with
    /// `fixedTPM` and `fixedParent` clear and an `authPolicy` of
    /// `TPM2_PolicyCommandCode(TPM2_CC_Duplicate)`, so that the TPM would
    /// export it (`TpmBackend::try_duplicate` complies). It is registered
    /// like any other key: the handle works with the `Signing`/`Mac`
    /// traits, [`TpmBackend::certify`] and [`TpmBackend::key_public_area`]
    /// (it is not in a `Keystore`'s metadata). A verifier must refuse to
    /// certify it (`fixedTPM` clear in the certified public area).
    pub fn create_duplicable_key_for_tests(&self, algorithm: Algorithm) -> Result<KeyHandle> {
        let digest = {
            let mut st = self.lock();
            self.with_conn(&mut st, |conn| {
                let esys = &mut conn.esys;
                let trial = esys
                    .start_policy_session(true)
                    .map_err(fail("start a trial session"))?;
                let d = esys
                    .policy_command_code(trial, c::TPM2_CC_Duplicate)
                    .and_then(|()| esys.policy_get_digest(trial));
                let _ = esys.flush(trial);
                d.map_err(fail("compute a policy digest"))
            })?
        };
        let policy = Digest::try_from(digest)
            .map_err(|e| Error::backend(Component::Tpm, "policy digest too long", e))?;
        let template = templates::key(algorithm, true, policy)?;
        let mut area = template
            .marshall()
            .map_err(|e| Error::backend(Component::Tpm, "marshalling a template failed", e))?;
        // TPMT_PUBLIC: type (u16) | nameAlg (u16) | objectAttributes (u32) | …
        let attrs = u32::from_be_bytes([area[4], area[5], area[6], area[7]]);
        let attrs = attrs & !(FIXED_TPM | FIXED_PARENT);
        area[4..8].copy_from_slice(&attrs.to_be_bytes());
        let template = unmarshal_public(&area).ok_or_else(|| {
            Error::backend_msg(Component::Tpm, "the edited template does not parse")
        })?;
        Ok(self.create_key(algorithm, &template, &[])?.0)
    }
}
