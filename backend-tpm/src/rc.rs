//! TSS2 return codes: decoding, names, and their mapping onto the keystore's
//! [`Error`] variants.
//!
//! [`TpmRc`] and the [`code`] table are public (as `TpmRc` and `rc_code`)
//! with the `test-support` feature only, for probe results and tests.

#![cfg_attr(not(feature = "test-support"), allow(unreachable_pub))]

use keystore_backend::{Component, Error};

/// A non-success TSS2 return code (`TSS2_RC`): a TPM response code (layer 0)
/// or an error of a TSS layer (ESYS, TCTI, …).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TpmRc(pub u32);

const LAYER_MASK: u32 = 0x00FF_0000;
const TCTI_LAYER: u32 = 10 << 16;
const ESYS_LAYER: u32 = 7 << 16;
const MU_LAYER: u32 = 9 << 16;
const RC_FMT1: u32 = 0x080;
const RC_P: u32 = 0x040;
const RC_VER1: u32 = 0x100;
const RC_WARN: u32 = 0x900;

/// Response codes this crate reacts to, by their TPM 2.0 names (the
/// format-one codes are given without parameter/handle/session numbers).
#[allow(missing_docs)]
pub mod code {
    pub const INITIALIZE: u32 = 0x100;
    pub const FAILURE: u32 = 0x101;
    pub const NO_RESULT: u32 = 0x158;
    pub const AUTH_TYPE: u32 = 0x124;
    pub const AUTH_MISSING: u32 = 0x125;
    pub const POLICY: u32 = 0x126;
    pub const PCR_CHANGED: u32 = 0x128;
    pub const ASYMMETRIC: u32 = 0x081;
    pub const ATTRIBUTES: u32 = 0x082;
    pub const HASH: u32 = 0x083;
    pub const VALUE: u32 = 0x084;
    pub const HIERARCHY: u32 = 0x085;
    pub const KEY_SIZE: u32 = 0x087;
    pub const MGF: u32 = 0x088;
    pub const MODE: u32 = 0x089;
    pub const TYPE: u32 = 0x08A;
    pub const HANDLE: u32 = 0x08B;
    pub const KDF: u32 = 0x08C;
    pub const RANGE: u32 = 0x08D;
    pub const AUTH_FAIL: u32 = 0x08E;
    pub const NONCE: u32 = 0x08F;
    pub const SCHEME: u32 = 0x092;
    pub const SIZE: u32 = 0x095;
    pub const SYMMETRIC: u32 = 0x096;
    pub const TAG: u32 = 0x097;
    pub const SELECTOR: u32 = 0x098;
    pub const INSUFFICIENT: u32 = 0x09A;
    pub const SIGNATURE: u32 = 0x09B;
    pub const KEY: u32 = 0x09C;
    pub const POLICY_FAIL: u32 = 0x09D;
    pub const INTEGRITY: u32 = 0x09F;
    pub const TICKET: u32 = 0x0A0;
    pub const RESERVED_BITS: u32 = 0x0A1;
    pub const BAD_AUTH: u32 = 0x0A2;
    pub const EXPIRED: u32 = 0x0A3;
    pub const POLICY_CC: u32 = 0x0A4;
    pub const BINDING: u32 = 0x0A5;
    pub const CURVE: u32 = 0x0A6;
    pub const ECC_POINT: u32 = 0x0A7;
    pub const CONTEXT_GAP: u32 = 0x901;
    pub const OBJECT_MEMORY: u32 = 0x902;
    pub const SESSION_MEMORY: u32 = 0x903;
    pub const MEMORY: u32 = 0x904;
    pub const SESSION_HANDLES: u32 = 0x905;
    pub const OBJECT_HANDLES: u32 = 0x906;
    pub const RETRY: u32 = 0x922;
    pub const LOCKOUT: u32 = 0x921;
    pub const NV_RATE: u32 = 0x920;
    pub const TESTING: u32 = 0x90A;
    pub const REFERENCE_H0: u32 = 0x910;
    pub const REFERENCE_S0: u32 = 0x918;
}

const NAMES: &[(u32, &str)] = &[
    (code::INITIALIZE, "TPM_RC_INITIALIZE"),
    (code::FAILURE, "TPM_RC_FAILURE"),
    (code::NO_RESULT, "TPM_RC_NO_RESULT"),
    (code::AUTH_TYPE, "TPM_RC_AUTH_TYPE"),
    (code::AUTH_MISSING, "TPM_RC_AUTH_MISSING"),
    (code::POLICY, "TPM_RC_POLICY"),
    (code::PCR_CHANGED, "TPM_RC_PCR_CHANGED"),
    (code::ASYMMETRIC, "TPM_RC_ASYMMETRIC"),
    (code::ATTRIBUTES, "TPM_RC_ATTRIBUTES"),
    (code::HASH, "TPM_RC_HASH"),
    (code::VALUE, "TPM_RC_VALUE"),
    (code::HIERARCHY, "TPM_RC_HIERARCHY"),
    (code::KEY_SIZE, "TPM_RC_KEY_SIZE"),
    (code::MGF, "TPM_RC_MGF"),
    (code::MODE, "TPM_RC_MODE"),
    (code::TYPE, "TPM_RC_TYPE"),
    (code::HANDLE, "TPM_RC_HANDLE"),
    (code::KDF, "TPM_RC_KDF"),
    (code::RANGE, "TPM_RC_RANGE"),
    (code::AUTH_FAIL, "TPM_RC_AUTH_FAIL"),
    (code::NONCE, "TPM_RC_NONCE"),
    (code::SCHEME, "TPM_RC_SCHEME"),
    (code::SIZE, "TPM_RC_SIZE"),
    (code::SYMMETRIC, "TPM_RC_SYMMETRIC"),
    (code::TAG, "TPM_RC_TAG"),
    (code::SELECTOR, "TPM_RC_SELECTOR"),
    (code::INSUFFICIENT, "TPM_RC_INSUFFICIENT"),
    (code::SIGNATURE, "TPM_RC_SIGNATURE"),
    (code::KEY, "TPM_RC_KEY"),
    (code::POLICY_FAIL, "TPM_RC_POLICY_FAIL"),
    (code::INTEGRITY, "TPM_RC_INTEGRITY"),
    (code::TICKET, "TPM_RC_TICKET"),
    (code::RESERVED_BITS, "TPM_RC_RESERVED_BITS"),
    (code::BAD_AUTH, "TPM_RC_BAD_AUTH"),
    (code::EXPIRED, "TPM_RC_EXPIRED"),
    (code::POLICY_CC, "TPM_RC_POLICY_CC"),
    (code::BINDING, "TPM_RC_BINDING"),
    (code::CURVE, "TPM_RC_CURVE"),
    (code::ECC_POINT, "TPM_RC_ECC_POINT"),
    (code::CONTEXT_GAP, "TPM_RC_CONTEXT_GAP"),
    (code::OBJECT_MEMORY, "TPM_RC_OBJECT_MEMORY"),
    (code::SESSION_MEMORY, "TPM_RC_SESSION_MEMORY"),
    (code::MEMORY, "TPM_RC_MEMORY"),
    (code::SESSION_HANDLES, "TPM_RC_SESSION_HANDLES"),
    (code::OBJECT_HANDLES, "TPM_RC_OBJECT_HANDLES"),
    (code::RETRY, "TPM_RC_RETRY"),
    (code::LOCKOUT, "TPM_RC_LOCKOUT"),
    (code::NV_RATE, "TPM_RC_NV_RATE"),
    (code::TESTING, "TPM_RC_TESTING"),
    (code::REFERENCE_H0, "TPM_RC_REFERENCE_H0"),
    (code::REFERENCE_H0 + 1, "TPM_RC_REFERENCE_H1"),
    (code::REFERENCE_H0 + 2, "TPM_RC_REFERENCE_H2"),
    (code::REFERENCE_S0, "TPM_RC_REFERENCE_S0"),
    (code::REFERENCE_S0 + 1, "TPM_RC_REFERENCE_S1"),
    (code::REFERENCE_S0 + 2, "TPM_RC_REFERENCE_S2"),
];

impl TpmRc {
    /// A local "bad value" (`TSS2_ESYS_RC_BAD_VALUE`): a structure that did
    /// not fit or an output ESYS failed to produce.
    pub const LOCAL_BAD_VALUE: TpmRc = TpmRc(ESYS_LAYER | 11);

    /// The TPM response code without its parameter, handle or session
    /// number, if this came from the TPM (layer 0) or the resource manager.
    pub fn tpm_code(self) -> Option<u32> {
        let layer = self.0 & LAYER_MASK;
        // Layer 0 is the TPM; 11 (TSS2_RESMGR_TPM_RC_LAYER) relays TPM codes.
        if layer != 0 && layer != 11 << 16 {
            return None;
        }
        let rc = self.0 & 0xFFFF;
        Some(if rc & RC_FMT1 != 0 {
            RC_FMT1 | (rc & 0x3F)
        } else if rc & RC_VER1 != 0 {
            rc & (RC_WARN | 0x7F)
        } else {
            rc
        })
    }

    /// The number of the command parameter a format-one TPM response code
    /// is about (`TPM_RC_P` set), if it names one.
    pub fn parameter(self) -> Option<u32> {
        self.tpm_code()?;
        let rc = self.0 & 0xFFFF;
        (rc & RC_FMT1 != 0 && rc & RC_P != 0).then_some((rc >> 8) & 0xF)
    }

    /// True if the response is the TPM code `c` (see [`code`]).
    pub fn is(self, c: u32) -> bool {
        self.tpm_code() == Some(c)
    }

    /// True for failures of the transport (TCTI layer): the TPM or simulator
    /// went away, or the connection broke.
    pub fn is_transport(self) -> bool {
        self.0 & LAYER_MASK == TCTI_LAYER
    }

    /// True when the TPM no longer holds an object or session we loaded:
    /// it was reset (restarted) behind a transport that reconnects by itself.
    pub fn is_reference_lost(self) -> bool {
        matches!(self.tpm_code(), Some(c) if (code::REFERENCE_H0..=code::REFERENCE_S0 + 6).contains(&c))
    }

    /// True for host-side marshalling failures (malformed blob bytes).
    pub fn is_marshalling(self) -> bool {
        self.0 & LAYER_MASK == MU_LAYER
    }

    /// True for refusals of an authorisation: wrong auth value, wrong
    /// policy, dictionary-attack lockout.
    pub fn is_auth(self) -> bool {
        matches!(
            self.tpm_code(),
            Some(
                code::AUTH_FAIL
                    | code::BAD_AUTH
                    | code::LOCKOUT
                    | code::POLICY_FAIL
                    | code::PCR_CHANGED
                    | code::AUTH_MISSING
            )
        )
    }

    /// The code's TPM 2.0 name, if known.
    pub fn name(self) -> Option<&'static str> {
        let c = self.tpm_code()?;
        NAMES.iter().find(|(k, _)| *k == c).map(|(_, n)| *n)
    }
}

impl std::fmt::Display for TpmRc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.name(), self.0 & LAYER_MASK) {
            (Some(n), _) => write!(f, "{n} (0x{:08X})", self.0),
            (None, TCTI_LAYER) => write!(f, "TCTI error 0x{:08X} (TPM unreachable?)", self.0),
            (None, ESYS_LAYER) => write!(f, "ESYS error 0x{:08X}", self.0),
            (None, MU_LAYER) => write!(f, "marshalling error 0x{:08X}", self.0),
            (None, _) => write!(f, "TSS2 error 0x{:08X}", self.0),
        }
    }
}

impl std::fmt::Debug for TpmRc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TpmRc({self})")
    }
}

impl std::error::Error for TpmRc {}

/// A TPM failure while doing `what`, as a keystore error. Authorisation
/// refusals are [`ErrorKind::Auth`](keystore_backend::ErrorKind::Auth); everything else is [`ErrorKind::Backend`](keystore_backend::ErrorKind::Backend) with
/// the code as its source. Call sites that know better (a blob that fails to
/// load is [`ErrorKind::Integrity`](keystore_backend::ErrorKind::Integrity)) map before calling this.
pub(crate) fn to_error(what: &str, rc: TpmRc) -> Error {
    if rc.is_auth() {
        Error::auth(format!("the TPM refused the authorisation to {what}: {rc}"))
    } else {
        Error::backend(
            Component::Tpm,
            format!("TPM failure while trying to {what}"),
            rc,
        )
    }
}

/// Failures of `TPM2_Load` on a stored blob: the TPM checks the private
/// area's integrity HMAC (bound to the public area's Name and to the parent's
/// seed), so a corrupted, truncated or foreign blob, or a blob from before an
/// owner clear, fails here.
pub(crate) fn is_blob_rejection(rc: TpmRc) -> bool {
    rc.is_marshalling()
        || matches!(
            rc.tpm_code(),
            Some(
                code::INTEGRITY
                    | code::SIZE
                    | code::VALUE
                    | code::KEY
                    | code::BINDING
                    | code::HASH
                    | code::TYPE
                    | code::ATTRIBUTES
                    | code::SCHEME
                    | code::SYMMETRIC
                    | code::ASYMMETRIC
                    | code::KEY_SIZE
                    | code::CURVE
                    | code::ECC_POINT
                    | code::INSUFFICIENT
                    | code::RESERVED_BITS
                    | code::TAG
                    | code::SELECTOR
                    | code::MODE
                    | code::KDF
                    | code::MGF
            )
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_format_one_and_warnings() {
        // TPM_RC_INTEGRITY for parameter 1 of TPM2_Load.
        assert!(TpmRc(0x19F).is(code::INTEGRITY));
        // TPM_RC_BAD_AUTH for session 1.
        assert!(TpmRc(0x9A2).is(code::BAD_AUTH));
        assert!(TpmRc(0x9A2).is_auth());
        // TPM_RC_AUTH_FAIL for session 1.
        assert!(TpmRc(0x98E).is_auth());
        assert!(TpmRc(0x902).is(code::OBJECT_MEMORY));
        assert!(TpmRc(0x903).is(code::SESSION_MEMORY));
        assert!(TpmRc(0x000A_000A).is_transport());
        assert_eq!(TpmRc(0x000A_000A).tpm_code(), None);
        assert!(TpmRc(0x2C2).is(code::ATTRIBUTES));
        assert_eq!(TpmRc(0x19F).to_string(), "TPM_RC_INTEGRITY (0x0000019F)");
        // TPM_RC_ECC_POINT for parameter 1, TPM_RC_KEY for handle 1.
        assert!(TpmRc(0x1E7).is(code::ECC_POINT));
        assert_eq!(TpmRc(0x1E7).parameter(), Some(1));
        assert_eq!(TpmRc(0x19C).parameter(), None);
        assert_eq!(TpmRc(0x9A2).parameter(), None);
        assert_eq!(TpmRc(0x000A_01E7).parameter(), None);
        assert!(TpmRc(0x158).is(code::NO_RESULT));
    }
}
