//! The provisioning throughput driver (`src/bin/provision-throughput.rs`)
//! runs end to end in its smoke mode: 20 devices per station, 1 repeat, the
//! three configurations (4 stations at once in the last) on a temporary
//! PostgreSQL cluster. Nothing is timed against a target here;
//! `./scripts/bench` measures.
//!
//! It needs the keyctl binary of the same profile (`target/debug/keyctl`,
//! which `cargo test --workspace` builds for keyctl's own tests, or `cargo
//! build -p keyctl`), or `KEYCTL_BIN`.

use std::process::Command;

#[test]
fn the_provisioning_throughput_driver_runs_in_smoke_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("result.json");
    let out = Command::new(env!("CARGO_BIN_EXE_provision-throughput"))
        .args(["--smoke", "--timeout", "300", "--json"])
        .arg(&json)
        .output()
        .expect("run provision-throughput");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status.code()
    );
    if stderr.contains("SKIPPED") && !json.exists() {
        return; // KEYSTORE_TEST_SKIP names postgres and PostgreSQL is missing.
    }
    for row in [
        "| SQLite (the station's pki.sqlite), 1 station | 1 | 20 |",
        "| PostgreSQL, 1 station | 1 | 20 |",
        "| PostgreSQL, 4 stations at once | 4 | 80 |",
        "| PostgreSQL 1 station ÷ SQLite 1 station |",
        "| PostgreSQL 4 stations (aggregate) ÷ SQLite 1 station |",
    ] {
        assert!(stdout.contains(row), "no '{row}' in:\n{stdout}");
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON result")).expect("JSON");
    let configs = doc["configurations"].as_array().expect("configurations");
    assert_eq!(configs.len(), 3, "{doc}");
    for c in configs {
        let rate = c["median_devices_per_s"].as_f64().expect("rate");
        assert!(rate.is_finite() && rate > 0.0, "{c}");
    }
    for r in ["postgres_1_over_sqlite_1", "postgres_n_over_sqlite_1"] {
        let v = doc["ratios"][r].as_f64().expect("ratio");
        assert!(v.is_finite() && v > 0.0, "{r}: {doc}");
    }
    // The registry's URL (with its password) is never printed.
    assert!(!stdout.contains("postgresql://") && !stderr.contains("postgresql://"));
}
