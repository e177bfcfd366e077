//! The whole conformance suite on the PKCS#11 backend, against a fresh
//! SoftHSM2 token per case (see `conformance_tests::fixtures::pkcs11`).

conformance_tests::suite!(conformance_tests::fixtures::pkcs11::Pkcs11Fixture);
