//! A worker process of the multi-process conformance cases: opens the store
//! that `KEYSTORE_WORKER_SPEC` describes and runs one role.
//!
//! `conformance-worker BACKEND ROLE COUNT` prints `READY` once the store is
//! open and `SUMMARY {json}` at the end; it exits 0 when no operation failed,
//! 1 when some did and 2 on bad arguments.

use conformance_tests::fixtures::pkcs11::Pkcs11Fixture;
use conformance_tests::fixtures::soft::{SoftFixture, SoftRustCryptoFixture};
use conformance_tests::fixtures::tpm::TpmFixture;
use conformance_tests::fixtures::tpm_sealed::TpmSealedFixture;
use conformance_tests::processes::{run_worker, Role, WorkerSpec, SPEC_ENV};
use conformance_tests::Fixture;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [backend, role, count] = args.as_slice() else {
        eprintln!("usage: conformance-worker BACKEND ROLE COUNT (spec in {SPEC_ENV})");
        return ExitCode::from(2);
    };
    let (Some(role), Ok(count)) = (Role::parse(role), count.parse::<u64>()) else {
        eprintln!("conformance-worker: unknown role '{role}' or bad count '{count}'");
        return ExitCode::from(2);
    };
    let spec: WorkerSpec = match std::env::var(SPEC_ENV)
        .map_err(|e| e.to_string())
        .and_then(|j| serde_json::from_str(&j).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("conformance-worker: no usable {SPEC_ENV}: {e}");
            return ExitCode::from(2);
        }
    };
    let summary = match backend.as_str() {
        b if b == SoftFixture::NAME => run_worker::<SoftFixture>(&spec, role, count),
        b if b == SoftRustCryptoFixture::NAME => {
            run_worker::<SoftRustCryptoFixture>(&spec, role, count)
        }
        b if b == Pkcs11Fixture::NAME => run_worker::<Pkcs11Fixture>(&spec, role, count),
        b if b == TpmFixture::NAME => run_worker::<TpmFixture>(&spec, role, count),
        b if b == TpmSealedFixture::NAME => run_worker::<TpmSealedFixture>(&spec, role, count),
        other => {
            eprintln!("conformance-worker: unknown backend '{other}'");
            return ExitCode::from(2);
        }
    };
    let json = serde_json::to_string(&summary).unwrap_or_else(|_| "{}".into());
    println!("SUMMARY {json}");
    if summary.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
