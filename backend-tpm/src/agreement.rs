//! Key agreement ([`KeyAgreement`]) for [`TpmBackend`]: `TPM2_ECDH_ZGen` of
//! the key's private scalar and the peer's point, its result encrypted on
//! the bus by the connection's parameter-encryption session, then the
//! contract's one-step KDF on the host over `Z` in zeroizing memory.

use crate::rc::{code, TpmRc};
use crate::TpmBackend;
use keystore_backend::agreement::{check_kdf_input, one_step_kdf_sha256};
use keystore_backend::{
    Algorithm, BackendKey, EcCurve, Error, KeyAgreement, PeerPublicKey, Result, SecretBytes,
};

/// ECDH on P-256 in the TPM, then `one_step_kdf_sha256(Z, fixed_info, len)`.
///
/// `Z` (the x-coordinate of `d·P`, 32 bytes) crosses the host–TPM bus only
/// encrypted (the response parameter of `TPM2_ECDH_ZGen` under the
/// parameter-encryption session, whatever
/// [`TpmConfig::with_prk_in_clear_on_the_bus`](crate::TpmConfig::with_prk_in_clear_on_the_bus)
/// says), lives in zeroizing host memory for the KDF, and is never returned,
/// logged or put in an error.
///
/// # Errors
/// [`ErrorKind::Integrity`](keystore_backend::ErrorKind::Integrity) for a
/// key that is not an `ecdh-p256` key (or a handle of another algorithm, or
/// damaged); [`ErrorKind::NotFound`](keystore_backend::ErrorKind::NotFound)
/// for a key this store does not hold;
/// [`ErrorKind::InvalidInput`](keystore_backend::ErrorKind::InvalidInput)
/// for a peer key on another curve, a point the TPM refuses
/// (`TPM_RC_ECC_POINT`, …), or a `fixed_info` or `len` out of bounds;
/// [`ErrorKind::Backend`](keystore_backend::ErrorKind::Backend) when the
/// TPM fails.
impl KeyAgreement for TpmBackend {
    fn agree_sha256_kdf(
        &self,
        key: &BackendKey,
        peer: &PeerPublicKey,
        fixed_info: &[u8],
        len: usize,
    ) -> Result<SecretBytes> {
        let algorithm = key.algorithm();
        if algorithm != Algorithm::EcdhP256 {
            return Err(Error::integrity(format!(
                "{algorithm} keys do no key agreement; use an ecdh-p256 key"
            )));
        }
        if peer.curve() != EcCurve::P256 {
            return Err(Error::invalid_input(format!(
                "peer public key refused for ecdh-p256: a {:?} key (wrong curve)",
                peer.curve()
            )));
        }
        self.agree_point(key, peer.x(), peer.y(), fixed_info, len)
    }
}

impl TpmBackend {
    /// The agreement of [`KeyAgreement::agree_sha256_kdf`] with the peer
    /// point given by its coordinates, unchecked on the host (the TPM
    /// checks it).
    fn agree_point(
        &self,
        key: &BackendKey,
        x: &[u8],
        y: &[u8],
        fixed_info: &[u8],
        len: usize,
    ) -> Result<SecretBytes> {
        check_kdf_input(fixed_info, len)?;
        let field_len = EcCurve::P256.field_len();
        let z = self
            .run(
                key.handle(),
                Algorithm::EcdhP256,
                "compute an ECDH shared secret",
                // A refusal of the peer point is kept apart from TPM
                // failures (mapped by `run`).
                |conn, loaded| match conn.esys.ecdh_zgen(loaded, x, y, field_len) {
                    Err(rc) if peer_point_refused(rc) => Ok(Err(rc)),
                    other => other.map(Ok),
                },
            )?
            .map_err(|rc| {
                Error::invalid_input(format!(
                    "the TPM refused the peer public key for ecdh-p256 ({rc})"
                ))
            })?;
        one_step_kdf_sha256(&z, fixed_info, len)
    }

    /// Test support (`test-support` feature): the agreement of
    /// [`KeyAgreement::agree_sha256_kdf`] with a peer point that was *not*
    /// validated on the host (a [`PeerPublicKey`] always is), to show what
    /// the TPM refuses and how that is reported.
    #[cfg(feature = "test-support")]
    pub fn agree_with_unchecked_point(
        &self,
        key: &BackendKey,
        x: &[u8],
        y: &[u8],
        fixed_info: &[u8],
        len: usize,
    ) -> Result<SecretBytes> {
        if key.algorithm() != Algorithm::EcdhP256 {
            return Err(Error::integrity(format!(
                "{} keys do no key agreement",
                key.algorithm()
            )));
        }
        self.agree_point(key, x, y, fixed_info, len)
    }
}

/// True when `TPM2_ECDH_ZGen` refused its input point (its one parameter):
/// not on the curve, a coordinate too long, or a product at infinity.
fn peer_point_refused(rc: TpmRc) -> bool {
    rc.is(code::ECC_POINT) || rc.is(code::NO_RESULT) || rc.parameter() == Some(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_refusals_are_told_from_tpm_failures() {
        // TPM_RC_ECC_POINT and TPM_RC_SIZE on parameter 1 (inPoint).
        assert!(peer_point_refused(TpmRc(0x1E7)));
        assert!(peer_point_refused(TpmRc(0x1D5)));
        assert!(peer_point_refused(TpmRc(code::NO_RESULT)));
        // TPM_RC_KEY on handle 1, TPM_RC_BAD_AUTH on session 1, a lost
        // transport, TPM_RC_FAILURE.
        for rc in [0x19C, 0x9A2, 0x000A_000A, 0x101] {
            assert!(!peer_point_refused(TpmRc(rc)), "{rc:x}");
        }
    }
}
