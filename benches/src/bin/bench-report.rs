//! Reads criterion's results (`target/criterion/**/new/`) and prints a
//! Markdown table: median time and ops/s of every benchmark, and the ratio of
//! each keystore path to its raw baseline from the same run.
//!
//! Baselines: `keystore-soft` → `raw-aws-lc` (else `raw-hkdf`);
//! `keystore-pkcs11` → `raw-pkcs11`; `keystore-tpm` → `raw-tpm`.
//! Parameterised groups compare their parameters: threads `2` vs `1`,
//! store size `10000` vs `10`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
struct Result {
    group: String,
    function: String,
    value: Option<String>,
    median_ns: f64,
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "new") && p.join("estimates.json").is_file() {
                out.push(p);
            } else {
                walk(&p, out);
            }
        }
    }
}

fn load(dir: &Path) -> Option<Result> {
    let bench: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("benchmark.json")).ok()?).ok()?;
    let est: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("estimates.json")).ok()?).ok()?;
    Some(Result {
        group: bench["group_id"].as_str()?.to_string(),
        function: bench["function_id"].as_str().unwrap_or("").to_string(),
        value: bench["value_str"].as_str().map(str::to_string),
        median_ns: est["median"]["point_estimate"].as_f64()?,
    })
}

fn fmt_time(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn baseline_for(function: &str) -> &'static [&'static str] {
    match function {
        "keystore-soft" => &["raw-aws-lc", "raw-hkdf"],
        "keystore-pkcs11" => &["raw-pkcs11"],
        "keystore-tpm" => &["raw-tpm"],
        _ => &[],
    }
}

fn main() {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
                .join("criterion")
        });
    let mut dirs = Vec::new();
    walk(&root, &mut dirs);
    let mut results: Vec<Result> = dirs.iter().filter_map(|d| load(d)).collect();
    if results.is_empty() {
        eprintln!(
            "bench-report: no criterion results under {}; run ./scripts/bench first",
            root.display()
        );
        std::process::exit(1);
    }
    results
        .sort_by(|a, b| (&a.group, &a.function, &a.value).cmp(&(&b.group, &b.function, &b.value)));
    let mut by_group: BTreeMap<&str, Vec<&Result>> = BTreeMap::new();
    for r in &results {
        by_group.entry(&r.group).or_default().push(r);
    }
    println!("| operation | path | median | ops/s | vs baseline (throughput) |");
    println!("|---|---|---:|---:|---|");
    for (group, rs) in &by_group {
        for r in rs {
            let path = match &r.value {
                Some(v) => format!("{} [{v}]", r.function),
                None => r.function.clone(),
            };
            let ratio = if let Some(v) = &r.value {
                // Parameterised: compare with the group's first parameter.
                let first = rs
                    .iter()
                    .find(|o| o.function == r.function && o.value.is_some());
                match first {
                    Some(f) if f.value.as_ref() != Some(v) => {
                        format!(
                            "{:.2}× of [{}]",
                            f.median_ns / r.median_ns,
                            f.value.as_deref().unwrap_or("")
                        )
                    }
                    _ => "reference".to_string(),
                }
            } else {
                baseline_for(&r.function)
                    .iter()
                    .find_map(|b| rs.iter().find(|o| o.function == *b && o.value.is_none()))
                    .map(|b| format!("{:.2}× {}", b.median_ns / r.median_ns, b.function))
                    .unwrap_or_else(|| {
                        if r.function.starts_with("raw-") {
                            "baseline".into()
                        } else {
                            "-".into()
                        }
                    })
            };
            println!(
                "| {group} | {path} | {} | {:.0} | {ratio} |",
                fmt_time(r.median_ns),
                1e9 / r.median_ns
            );
        }
    }
    println!();
    println!("Throughput ratio = baseline median / path median (1.00× = as fast as the baseline).");
}
