//! Mapping `cryptoki` errors onto the keystore's one [`Error`] enum.
//!
//! | PKCS#11 return value | keystore error |
//! |---|---|
//! | `CKR_PIN_INCORRECT`, `CKR_PIN_LEN_RANGE`, `CKR_PIN_LOCKED`, `CKR_PIN_EXPIRED`, `CKR_USER_PIN_NOT_INITIALIZED` | [`ErrorKind::Auth`](keystore_backend::ErrorKind::Auth) |
//! | `CKR_OBJECT_HANDLE_INVALID`, `CKR_KEY_HANDLE_INVALID` | [`ErrorKind::Backend`](keystore_backend::ErrorKind::Backend) (transient: the object may have vanished or be rewritten; only a search that succeeds and finds nothing makes a key `NotFound`) |
//! | `CKR_ENCRYPTED_DATA_INVALID`, `CKR_ENCRYPTED_DATA_LEN_RANGE`, `CKR_SIGNATURE_INVALID` | [`ErrorKind::Integrity`](keystore_backend::ErrorKind::Integrity) |
//! | `CKR_MECHANISM_INVALID`, `CKR_MECHANISM_PARAM_INVALID`, `CKR_FUNCTION_NOT_SUPPORTED` | [`ErrorKind::Unsupported`](keystore_backend::ErrorKind::Unsupported) |
//! | `CKR_KEY_FUNCTION_NOT_PERMITTED`, `CKR_KEY_TYPE_INCONSISTENT` | [`ErrorKind::Policy`](keystore_backend::ErrorKind::Policy) |
//! | anything else | [`ErrorKind::Backend`](keystore_backend::ErrorKind::Backend) naming the `CKR_…` value and the call |
//!
//! Messages carry the operation and the return-value name, never data.

use cryptoki::error::{Error as CkError, RvError};
use keystore_backend::{Component, Error, ErrorKind};

/// The component name used in [`ErrorKind::Backend`](keystore_backend::ErrorKind::Backend).
pub(crate) const COMPONENT: Component = Component::Pkcs11;

/// `CKR_…` name of a return value, e.g. `CKR_PIN_INCORRECT`.
pub(crate) fn ckr_name(rv: RvError) -> String {
    match rv {
        RvError::VendorDefined(code) => format!("CKR_VENDOR_DEFINED({code:#x})"),
        RvError::UnknownErrorCode(code) => format!("CKR_UNKNOWN({code:#x})"),
        other => {
            // The variants are the CKR names in CamelCase.
            let camel = format!("{other:?}");
            let mut out = String::from("CKR");
            for c in camel.chars() {
                if c.is_ascii_uppercase() {
                    out.push('_');
                }
                out.push(c.to_ascii_uppercase());
            }
            out
        }
    }
}

/// The return value of a failed PKCS#11 call, if the error is one.
pub(crate) fn rv_of(e: &CkError) -> Option<RvError> {
    match e {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// Maps a `cryptoki` error raised while doing `what` (e.g. "sign with key
/// 4b53…") onto the keystore error taxonomy.
pub(crate) fn map(what: &str, e: CkError) -> Error {
    let Some(rv) = rv_of(&e) else {
        return Error::backend(COMPONENT, format!("{what}: {e}"), e);
    };
    let name = ckr_name(rv);
    match rv {
        RvError::PinIncorrect
        | RvError::PinLenRange
        | RvError::PinLocked
        | RvError::PinExpired
        | RvError::PinInvalid
        | RvError::UserPinNotInitialized => Error::auth(format!("{what}: {name}")),
        RvError::EncryptedDataInvalid
        | RvError::EncryptedDataLenRange
        | RvError::SignatureInvalid
        | RvError::SignatureLenRange => Error::integrity(format!("{what}: {name}")),
        RvError::MechanismInvalid
        | RvError::MechanismParamInvalid
        | RvError::FunctionNotSupported => Error::unsupported(format!("{what}: {name}")),
        RvError::KeyFunctionNotPermitted | RvError::KeyTypeInconsistent => {
            Error::policy(format!("{what}: {name}"))
        }
        _ => Error::backend(COMPONENT, format!("{what}: {name}"), e),
    }
}

/// True if `e` was mapped by [`map`] from the return value `rv`: the
/// source of an [`ErrorKind::Backend`](keystore_backend::ErrorKind::Backend), or the `CKR_…` name that ends the
/// message of the other variants.
pub(crate) fn mapped_from(e: &Error, rv: RvError) -> bool {
    if e.is(ErrorKind::Backend) {
        std::error::Error::source(e)
            .and_then(|src| src.downcast_ref::<CkError>())
            .and_then(rv_of)
            .is_some_and(|r| r == rv)
    } else {
        e.detail().ends_with(&format!(": {}", ckr_name(rv)))
    }
}

/// A closure for `map_err` that maps with [`map`].
pub(crate) fn ck(what: impl Into<String>) -> impl FnOnce(CkError) -> Error {
    let what = what.into();
    move |e| map(&what, e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::context::Function;

    #[test]
    fn names_follow_the_specification() {
        assert_eq!(ckr_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(
            ckr_name(RvError::CryptokiAlreadyInitialized),
            "CKR_CRYPTOKI_ALREADY_INITIALIZED"
        );
        assert_eq!(
            ckr_name(RvError::ObjectHandleInvalid),
            "CKR_OBJECT_HANDLE_INVALID"
        );
    }

    #[test]
    fn kinds() {
        let e = |rv| map("op", CkError::Pkcs11(rv, Function::Sign)).kind();
        assert_eq!(e(RvError::PinIncorrect), ErrorKind::Auth);
        assert_eq!(e(RvError::PinLenRange), ErrorKind::Auth);
        // A stale handle is not proof of absence: only a fresh search is.
        assert_eq!(e(RvError::KeyHandleInvalid), ErrorKind::Backend);
        assert_eq!(e(RvError::EncryptedDataInvalid), ErrorKind::Integrity);
        assert_eq!(e(RvError::MechanismInvalid), ErrorKind::Unsupported);
        assert_eq!(e(RvError::GeneralError), ErrorKind::Backend);
        let pin = map(
            "login",
            CkError::Pkcs11(RvError::UserPinNotInitialized, Function::Login),
        );
        assert!(mapped_from(&pin, RvError::UserPinNotInitialized));
        assert!(!mapped_from(&pin, RvError::PinIncorrect));
        let msg = map(
            "sign",
            CkError::Pkcs11(RvError::GeneralError, Function::Sign),
        )
        .to_string();
        assert!(msg.contains("CKR_GENERAL_ERROR"), "{msg}");
    }
}
