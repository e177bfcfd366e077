//! Transient token errors and bounded retries.
//!
//! SoftHSM 2.6.1 keeps a token as one file per object and rewrites files
//! on every change (a login rewrites `token.object`). Another process
//! reading meanwhile sees `CKR_GENERAL_ERROR`, `CKR_OBJECT_HANDLE_INVALID`,
//! `CKR_KEY_HANDLE_INVALID`, a token with a blank label, or no token at
//! all. None of these means that a key is missing: they are retried with
//! short sleeps for a bounded time, and a key is reported absent
//! ([`ErrorKind::NotFound`](keystore_backend::ErrorKind::NotFound)) only when a search that succeeded
//! does not find it. Rationale and measurements:
//! `docs/design/pkcs11-concurrency.md` in the workspace.

use crate::error::rv_of;
use cryptoki::error::{Error as CkError, RvError};
use keystore_backend::{Error, ErrorKind};
use std::time::{Duration, Instant};

/// How long a key operation, a listing or a search keeps retrying
/// transient errors before it reports the last one.
pub(crate) const OPERATION_WAIT: Duration = Duration::from_secs(1);

/// How long "the key's object is missing while other objects of the key
/// remain" is re-checked before it is reported as `Integrity`: a destroy
/// by another process removes the key object first and its companion a
/// moment later.
pub(crate) const SETTLE_WAIT: Duration = Duration::from_millis(250);

/// Sleeps between attempts, in milliseconds; the last one repeats.
const STEPS_MS: [u64; 9] = [1, 2, 5, 10, 20, 40, 80, 160, 250];

/// Return values that can come from another process writing the token
/// (or from a session that went away) rather than from the request.
pub(crate) fn transient_rv(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::GeneralError
            | RvError::FunctionFailed
            | RvError::DeviceError
            | RvError::DeviceMemory
            | RvError::DeviceRemoved
            | RvError::ObjectHandleInvalid
            | RvError::KeyHandleInvalid
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::SessionCount
            | RvError::OperationActive
    )
}

/// The PKCS#11 return value behind a keystore error, if any.
pub(crate) fn rv_in(e: &Error) -> Option<RvError> {
    if !e.is(ErrorKind::Backend) {
        return None;
    }
    std::error::Error::source(e)
        .and_then(|src| src.downcast_ref::<CkError>())
        .and_then(rv_of)
}

/// True if `e` is worth retrying: a [`transient_rv`] return value.
pub(crate) fn is_transient(e: &Error) -> bool {
    rv_in(e).is_some_and(transient_rv)
}

/// True if `e` says a PKCS#11 object handle is not (or no longer) valid.
pub(crate) fn is_handle_invalid(e: &Error) -> bool {
    matches!(
        rv_in(e),
        Some(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid)
    )
}

/// A bounded series of attempts with growing sleeps in between.
#[derive(Debug)]
pub(crate) struct Backoff {
    start: Instant,
    budget: Duration,
    attempts: u32,
}

impl Backoff {
    pub(crate) fn new(budget: Duration) -> Backoff {
        Backoff {
            start: Instant::now(),
            budget,
            attempts: 1,
        }
    }

    /// Sleeps before the next attempt and returns true, or returns false
    /// (without sleeping) once the budget is spent. The last sleep is cut
    /// short so that the last attempt starts when the budget ends.
    pub(crate) fn wait(&mut self) -> bool {
        let elapsed = self.start.elapsed();
        if elapsed >= self.budget {
            return false;
        }
        let i = (self.attempts as usize - 1).min(STEPS_MS.len() - 1);
        let step = Duration::from_millis(STEPS_MS[i]).min(self.budget - elapsed);
        std::thread::sleep(step);
        self.attempts += 1;
        true
    }

    /// True while less than `d` has passed since the first attempt.
    pub(crate) fn within(&self, d: Duration) -> bool {
        self.start.elapsed() < d
    }

    /// `e`, with how long it was retried added to its message when it was.
    pub(crate) fn annotate(&self, e: Error) -> Error {
        if self.attempts <= 1 {
            return e;
        }
        let (n, ms) = (self.attempts, self.start.elapsed().as_millis());
        let note = format!(
            " (still failing after {n} attempts over {ms} ms; another process may be writing the \
             token)"
        );
        match e.kind() {
            ErrorKind::NotFound => {
                let m = format!("{} (looked {n} times over {ms} ms)", e.detail());
                e.with_message(m)
            }
            ErrorKind::Backend => {
                let m = format!("{}{note}", e.detail());
                e.with_message(m)
            }
            _ => e,
        }
    }
}

/// Runs `f` until it succeeds, fails with a non-transient error, or
/// [`OPERATION_WAIT`] is spent.
pub(crate) fn retrying<T>(
    mut f: impl FnMut() -> keystore_backend::Result<T>,
) -> keystore_backend::Result<T> {
    let mut backoff = Backoff::new(OPERATION_WAIT);
    loop {
        match f() {
            Err(e) if is_transient(&e) => {
                if !backoff.wait() {
                    return Err(backoff.annotate(e));
                }
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::map;
    use cryptoki::context::Function;

    #[test]
    fn transient_errors_are_recognised_through_the_mapping() {
        let e = |rv| map("op", CkError::Pkcs11(rv, Function::Sign));
        assert!(is_transient(&e(RvError::GeneralError)));
        assert!(is_transient(&e(RvError::ObjectHandleInvalid)));
        assert!(is_handle_invalid(&e(RvError::KeyHandleInvalid)));
        assert!(!is_transient(&e(RvError::PinIncorrect)));
        assert!(!is_transient(&e(RvError::MechanismInvalid)));
        assert!(!is_transient(&Error::not_found("x")));
    }

    #[test]
    fn retrying_is_bounded_and_stops_on_success_or_a_lasting_error() {
        let mut n = 0;
        let r: keystore_backend::Result<u32> = retrying(|| {
            n += 1;
            if n < 3 {
                Err(map(
                    "op",
                    CkError::Pkcs11(RvError::GeneralError, Function::Sign),
                ))
            } else {
                Ok(n)
            }
        });
        assert_eq!(r.expect("third attempt"), 3);

        let mut n = 0;
        let r: keystore_backend::Result<()> = retrying(|| {
            n += 1;
            Err(Error::not_found("gone"))
        });
        assert_eq!(r.unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(n, 1);

        let start = Instant::now();
        let e = retrying(|| -> keystore_backend::Result<()> {
            Err(map(
                "op",
                CkError::Pkcs11(RvError::GeneralError, Function::Sign),
            ))
        })
        .unwrap_err();
        let took = start.elapsed();
        assert!(took >= OPERATION_WAIT, "{took:?}");
        assert!(
            took <= OPERATION_WAIT + Duration::from_millis(200),
            "{took:?}"
        );
        assert_eq!(e.kind(), ErrorKind::Backend);
        assert!(e.to_string().contains("attempts"), "{e}");
    }
}
