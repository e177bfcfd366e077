//! The whole conformance suite on the soft backend.

conformance_tests::suite!(conformance_tests::fixtures::soft::SoftFixture);
