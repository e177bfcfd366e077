//! Optional hardware monotonic counters, for rollback protection: a value
//! outside the store's files that only goes up and survives power loss (for
//! a TPM 2.0, an NV index of type `TPM_NT_COUNTER`). The store records the
//! counter's value in its signed audit checkpoints; a database older than the
//! counter is then detectable at open.

use crate::backend::KeyManagement;
use crate::error::{Error, Result};

/// A counter the backend defined: an opaque reference, recorded by the
/// store, and a human-readable name for reports (e.g. `TPM NV index
/// 0x01a3b2c1`). Neither is secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterRef {
    reference: Vec<u8>,
    description: String,
}

impl CounterRef {
    /// A counter known to the backend by `reference`, described as `description`.
    pub fn new(reference: Vec<u8>, description: String) -> Self {
        CounterRef {
            reference,
            description,
        }
    }

    /// What the backend finds the counter by.
    pub fn reference(&self) -> &[u8] {
        &self.reference
    }

    /// The counter, named for people (the device and its index).
    pub fn description(&self) -> &str {
        &self.description
    }
}

fn unsupported(backend: &str) -> Error {
    Error::unsupported(format!(
        "the {backend} backend has no hardware monotonic counter: a restored older copy of the \
         store's metadata cannot be detected"
    ))
}

/// Optional monotonic counters. The default of every method is
/// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported): a soft store
/// alone and a PKCS#11 token without such a counter have none.
///
/// Contract:
/// - [`MonotonicCounter::counter_create`] defines a new counter, initialises
///   it, and returns it with its current value. Two calls never return the
///   same counter while the first exists.
/// - [`MonotonicCounter::counter_increment`] raises the value by exactly one
///   and returns the new value; it never goes down, also across power loss.
/// - [`MonotonicCounter::counter_read`] of a counter the device no longer
///   holds is [`ErrorKind::NotFound`](crate::ErrorKind::NotFound).
pub trait MonotonicCounter: KeyManagement {
    /// Defines and initialises a new counter; returns it and its value.
    ///
    /// # Errors
    /// `Unsupported` without counters; `Backend` when the device fails or
    /// has no room for another counter.
    fn counter_create(&self) -> Result<(CounterRef, u64)> {
        Err(unsupported(self.name()))
    }

    /// The counter's current value.
    ///
    /// # Errors
    /// `Unsupported` without counters; `NotFound` when the device does not
    /// hold `counter`; `Backend` when the device fails.
    fn counter_read(&self, counter: &[u8]) -> Result<u64> {
        let _ = counter;
        Err(unsupported(self.name()))
    }

    /// Raises the counter by one; returns the new value.
    ///
    /// # Errors
    /// As [`MonotonicCounter::counter_read`].
    fn counter_increment(&self, counter: &[u8]) -> Result<u64> {
        let _ = counter;
        Err(unsupported(self.name()))
    }

    /// Removes the counter from the device (at decommission). A counter the
    /// device does not hold is not an error.
    ///
    /// # Errors
    /// `Unsupported` without counters; `Backend` when the device fails.
    fn counter_destroy(&self, counter: &[u8]) -> Result<()> {
        let _ = counter;
        Err(unsupported(self.name()))
    }

    /// The counter, named for people.
    fn counter_describe(&self, counter: &[u8]) -> String {
        format!("{} counter {}", self.name(), hex_of(counter))
    }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
