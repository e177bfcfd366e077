//! Test scaffolding shared by the workspace's test suites (never published):
//!
//! - [`skip`]: the `KEYSTORE_TEST_SKIP` rule: a missing simulator or tool
//!   fails the test with an install hint, unless the variable names the
//!   backend, and then the test reports `SKIPPED` (never passes silently);
//! - [`actors`]: `Actor` values for the roles;
//! - [`keyctl`]: the `keyctl` command harness (clean environment, no stdin),
//!   output assertions, and a soft store unlocked by a key file with the
//!   security officer bootstrapped;
//! - [`daemon`]: a `keystored` process on a soft store in a temporary
//!   directory;
//! - [`postgres`]: a temporary PostgreSQL cluster on 127.0.0.1 (or the
//!   server named by `KEYSTORE_TEST_PG_URL`);
//! - [`python`]: a Python venv per name under the target directory with
//!   pinned PyPI packages (never skipped), and commands run with a time
//!   limit.
//!
//! The conformance suite's fixtures stay in `conformance-tests`: that crate
//! is itself the suite.

pub mod actors;
pub mod daemon;
pub mod keyctl;
pub mod postgres;
pub mod python;
pub mod skip;
