//! The [`MonotonicCounter`] family of [`SoftStore`]: the counter of the
//! device whose [`KekProvider`] wraps the store key (a TPM for
//! `soft+tpm-sealed`), else none.

use crate::{KekProvider, SoftStore};
use keystore_backend::{CounterRef, Error, MonotonicCounter, Result};
use std::sync::Arc;

fn no_counter() -> Error {
    Error::unsupported(
        "a soft store alone has no monotonic counter (only one unlocked by a KEK provider \
         whose device has counters, such as a TPM): a restored older copy of the store's \
         metadata cannot be detected",
    )
}

impl SoftStore {
    /// The KEK provider the store is unlocked with, if any.
    fn counter_provider(&self) -> Result<Arc<dyn KekProvider>> {
        self.kek_provider
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(no_counter)
    }
}

/// Delegated to the [`KekProvider`] when the store was created, opened or
/// last re-keyed ([`SoftStore::change_unlock`]) with
/// [`Unlock::Provider`](crate::Unlock::Provider); the provider answers
/// `Unsupported` if its device has no counters. With a passphrase or a key
/// file every method is `Unsupported`.
impl MonotonicCounter for SoftStore {
    fn counter_create(&self) -> Result<(CounterRef, u64)> {
        self.counter_provider()?.counter_create()
    }

    fn counter_read(&self, counter: &[u8]) -> Result<u64> {
        self.counter_provider()?.counter_read(counter)
    }

    fn counter_increment(&self, counter: &[u8]) -> Result<u64> {
        self.counter_provider()?.counter_increment(counter)
    }

    fn counter_destroy(&self, counter: &[u8]) -> Result<()> {
        self.counter_provider()?.counter_destroy(counter)
    }

    fn counter_describe(&self, counter: &[u8]) -> String {
        match self.counter_provider() {
            Ok(p) => p.counter_describe(counter),
            Err(_) => format!("soft counter {}", hex::encode(counter)),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{create_key_file, Kdf, KekProvider, SoftStore, Unlock};
    use keystore_backend::{CounterRef, ErrorKind, MonotonicCounter, Result, SecretBytes};
    use std::sync::{Arc, Mutex};

    /// A provider whose "sealed" form is the KEK itself, with one counter
    /// when `counter` is `Some` (else the trait's defaults).
    #[derive(Debug)]
    struct Plain {
        counter: Option<Mutex<u64>>,
    }

    impl KekProvider for Plain {
        fn kind(&self) -> &str {
            "plain"
        }
        fn create(&self) -> Result<(SecretBytes, Vec<u8>)> {
            Ok((SecretBytes::from_slice(&[7; 32]), vec![7; 32]))
        }
        fn unseal(&self, sealed: &[u8]) -> Result<SecretBytes> {
            Ok(SecretBytes::from_slice(sealed))
        }
        fn counter_create(&self) -> Result<(CounterRef, u64)> {
            match &self.counter {
                Some(_) => Ok((CounterRef::new(vec![1], "plain #1".into()), 5)),
                None => Err(keystore_backend::Error::unsupported("none")),
            }
        }
        fn counter_increment(&self, counter: &[u8]) -> Result<u64> {
            assert_eq!(counter, [1]);
            let mut v = self.counter.as_ref().expect("counter").lock().unwrap();
            *v += 1;
            Ok(*v)
        }
    }

    fn kind<T: std::fmt::Debug>(r: Result<T>) -> ErrorKind {
        r.expect_err("an error").kind()
    }

    #[test]
    fn a_provider_store_delegates_and_other_stores_have_no_counter() {
        let dir = tempfile::tempdir().unwrap();
        let with = Unlock::Provider(Arc::new(Plain {
            counter: Some(Mutex::new(5)),
        }));
        let store = SoftStore::create(&dir.path().join("a"), &with, Kdf::KeyFile).unwrap();
        let (c, v) = store.counter_create().unwrap();
        assert_eq!((c.reference(), v), (&[1u8][..], 5));
        assert_eq!(store.counter_increment(&[1]).unwrap(), 6);
        drop(store);
        let store = SoftStore::open(&dir.path().join("a"), &with).unwrap();
        assert_eq!(store.counter_increment(&[1]).unwrap(), 7);
        // Methods the provider does not implement: its default Unsupported.
        let e = store.counter_read(&[1]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("'plain' KEK provider"), "{e}");
        assert_eq!(kind(store.counter_destroy(&[1])), ErrorKind::Unsupported);
        assert_eq!(store.counter_describe(&[1]), "plain counter 01");

        // Re-keyed to a key file: no counter; back to a provider: its.
        let kf = dir.path().join("kf");
        create_key_file(&kf).unwrap();
        store
            .change_unlock(&Unlock::KeyFile(kf.clone()), Kdf::KeyFile)
            .unwrap();
        let e = store.counter_increment(&[1]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("soft store alone"), "{e}");
        assert_eq!(store.counter_describe(&[1]), "soft counter 01");
        store.change_unlock(&with, Kdf::KeyFile).unwrap();
        assert_eq!(store.counter_increment(&[1]).unwrap(), 8);
        drop(store);

        // A provider without counters, and a key-file store.
        let without = Unlock::Provider(Arc::new(Plain { counter: None }));
        let store = SoftStore::create(&dir.path().join("b"), &without, Kdf::KeyFile).unwrap();
        assert_eq!(kind(store.counter_create()), ErrorKind::Unsupported);
        let store =
            SoftStore::create(&dir.path().join("c"), &Unlock::KeyFile(kf), Kdf::KeyFile).unwrap();
        assert_eq!(kind(store.counter_create()), ErrorKind::Unsupported);
        assert_eq!(kind(store.counter_read(&[1])), ErrorKind::Unsupported);
        assert_eq!(kind(store.counter_increment(&[1])), ErrorKind::Unsupported);
        assert_eq!(kind(store.counter_destroy(&[1])), ErrorKind::Unsupported);
    }
}
