//! The whole conformance suite on the soft backend with the pure-Rust
//! RustCrypto provider (RSA proven `Unsupported`: the `rsa` crate's private
//! operations are variable-time).

conformance_tests::suite!(conformance_tests::fixtures::soft::SoftRustCryptoFixture);
