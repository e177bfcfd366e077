//! Builds the conformance matrix from recorded results.
//!
//! Writes `target/conformance/matrix.md` and `matrix.json`, and with
//! `--traceability PATH` the traceability document, with `--matrix-json
//! PATH` a copy of `matrix.json` (committed under docs/, embedded in
//! `keyctl evidence`). Exits non-zero if any
//! cell failed or did not run, or if a cell was skipped without
//! `KEYSTORE_TEST_SKIP` naming its backend or the tool it was skipped for.

use conformance_tests::results::{output_dir, Matrix};
use conformance_tests::Status;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let traceability = args
        .iter()
        .position(|a| a == "--traceability")
        .and_then(|i| args.get(i + 1).cloned());
    let matrix_json = args
        .iter()
        .position(|a| a == "--matrix-json")
        .and_then(|i| args.get(i + 1).cloned());
    let matrix = Matrix::load();
    let out = output_dir();
    let written = std::fs::create_dir_all(&out)
        .and_then(|_| std::fs::write(out.join("matrix.md"), matrix.to_markdown()))
        .and_then(|_| {
            let json =
                serde_json::to_vec_pretty(&matrix.to_json()).map_err(std::io::Error::other)?;
            std::fs::write(out.join("matrix.json"), json)
        });
    if let Err(e) = written {
        eprintln!("conformance-matrix: cannot write {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    if let Some(path) = matrix_json {
        let json = serde_json::to_string_pretty(&matrix.to_json()).unwrap_or_default() + "\n";
        if let Err(e) = std::fs::write(&path, json) {
            eprintln!("conformance-matrix: cannot write {path}: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(path) = traceability {
        if let Err(e) = std::fs::write(&path, matrix.traceability()) {
            eprintln!("conformance-matrix: cannot write {path}: {e}");
            return ExitCode::FAILURE;
        }
    }
    print!("{}", matrix.to_markdown());
    let skip = std::env::var("KEYSTORE_TEST_SKIP").unwrap_or_default();
    let mut bad = Vec::new();
    for case in conformance_tests::CASES {
        for b in &matrix.backends {
            let st = matrix.status(case, b);
            let ok = match st {
                Status::Passed | Status::UnsupportedVerified => true,
                Status::Skipped => matrix.skip_allowed(case, b, &skip),
                Status::Failed | Status::NotRun => false,
            };
            if !ok {
                bad.push(format!("{} on {b}: {}", case.id, st.label()));
            }
        }
    }
    let [passed, unsupported, ..] = matrix.counts();
    println!(
        "conformance: {} passed, {} failed",
        passed + unsupported,
        bad.len()
    );
    if bad.is_empty() {
        println!("matrix written to {}", out.display());
        ExitCode::SUCCESS
    } else {
        for b in &bad {
            eprintln!("conformance-matrix: {b}");
        }
        ExitCode::FAILURE
    }
}
