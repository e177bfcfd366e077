//! Recording case results and building the matrix.

use crate::catalog::{Case, BACKENDS, CASES, REQUIREMENTS};
use crate::Outcome;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A case's result on one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Every check passed.
    Passed,
    /// The backend proved the operation `Unsupported`.
    UnsupportedVerified,
    /// A check failed or the environment was missing.
    Failed,
    /// `KEYSTORE_TEST_SKIP` named the backend.
    Skipped,
    /// No result was recorded (the case did not run).
    NotRun,
}

impl Status {
    /// The matrix cell text.
    pub fn label(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::UnsupportedVerified => "unsupported-verified",
            Status::Failed => "FAILED",
            Status::Skipped => "SKIPPED",
            Status::NotRun => "NOT RUN",
        }
    }
}

/// One recorded result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Backend name.
    pub backend: String,
    /// `TEST-KEY-NN`.
    pub id: String,
    /// Test function name.
    pub name: String,
    /// Requirement id.
    pub req: String,
    /// Result.
    pub status: Status,
    /// Detail (the unsupported operation, the failure cause).
    pub detail: String,
    /// For a case skipped for a missing tool (not its backend): the tool's
    /// name in `KEYSTORE_TEST_SKIP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_for: Option<String>,
}

/// `target/conformance` of this workspace, or `$KEYSTORE_CONFORMANCE_DIR`.
pub fn output_dir() -> PathBuf {
    if let Ok(d) = std::env::var("KEYSTORE_CONFORMANCE_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("conformance")
}

fn results_dir() -> PathBuf {
    output_dir().join("results")
}

/// Writes one result file. Failing to write is reported, not fatal: the
/// matrix then shows the case as NOT RUN, which fails the run.
pub fn record(backend: &str, case: &Case, status: Status, detail: &str) {
    write_record(backend, case, status, detail, None);
}

fn write_record(
    backend: &str,
    case: &Case,
    status: Status,
    detail: &str,
    skipped_for: Option<&str>,
) {
    let dir = results_dir().join(backend);
    let rec = Record {
        backend: backend.into(),
        id: case.id.into(),
        name: case.name.into(),
        req: case.req.into(),
        status,
        detail: detail.into(),
        skipped_for: skipped_for.map(str::to_string),
    };
    let write = std::fs::create_dir_all(&dir).and_then(|_| {
        let json = serde_json::to_vec_pretty(&rec).map_err(std::io::Error::other)?;
        std::fs::write(dir.join(format!("{}.json", case.id)), json)
    });
    if let Err(e) = write {
        eprintln!("warning: cannot record {} on {backend}: {e}", case.id);
    }
}

/// Records FAILED if dropped during a panic, so a failing case always leaves
/// a result behind.
pub(crate) struct Guard {
    backend: &'static str,
    case: &'static Case,
    done: bool,
}

impl Guard {
    pub fn new(backend: &'static str, case: &'static Case) -> Self {
        Guard {
            backend,
            case,
            done: false,
        }
    }

    pub fn finish(mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Passed => record(self.backend, self.case, Status::Passed, ""),
            Outcome::UnsupportedVerified(what) => {
                record(self.backend, self.case, Status::UnsupportedVerified, what)
            }
            Outcome::Skipped { tool, why } => {
                eprintln!(
                    "SKIPPED {} on {} (KEYSTORE_TEST_SKIP names {tool}): {why}",
                    self.case.id, self.backend
                );
                write_record(self.backend, self.case, Status::Skipped, why, Some(tool))
            }
        }
        self.done = true;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            record(
                self.backend,
                self.case,
                Status::Failed,
                "the test panicked; see its output",
            );
        }
    }
}

/// The matrix: case × backend → record.
pub struct Matrix {
    /// Backends, in column order.
    pub backends: Vec<String>,
    /// Results by (case id, backend).
    pub cells: BTreeMap<(String, String), Record>,
}

impl Matrix {
    /// Loads every recorded result for the known backends.
    pub fn load() -> Matrix {
        let mut cells = BTreeMap::new();
        for b in BACKENDS {
            let dir = results_dir().join(b);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let Ok(bytes) = std::fs::read(e.path()) else {
                    continue;
                };
                if let Ok(rec) = serde_json::from_slice::<Record>(&bytes) {
                    cells.insert((rec.id.clone(), rec.backend.clone()), rec);
                }
            }
        }
        Matrix {
            backends: BACKENDS.iter().map(|s| s.to_string()).collect(),
            cells,
        }
    }

    /// The status of `case` on `backend`.
    pub fn status(&self, case: &Case, backend: &str) -> Status {
        self.cells
            .get(&(case.id.to_string(), backend.to_string()))
            .map(|r| r.status)
            .unwrap_or(Status::NotRun)
    }

    /// Whether a SKIPPED cell is allowed by `skip` (`KEYSTORE_TEST_SKIP`):
    /// it names the backend, or the tool the case was skipped for.
    pub fn skip_allowed(&self, case: &Case, backend: &str, skip: &str) -> bool {
        let named = |name: &str| skip.split(',').any(|s| s.trim() == name);
        named(backend)
            || self
                .cells
                .get(&(case.id.to_string(), backend.to_string()))
                .and_then(|r| r.skipped_for.as_deref())
                .is_some_and(named)
    }

    /// (passed, unsupported-verified, failed, skipped, not run) over every cell.
    pub fn counts(&self) -> [usize; 5] {
        let mut c = [0; 5];
        for case in CASES {
            for b in &self.backends {
                let i = match self.status(case, b) {
                    Status::Passed => 0,
                    Status::UnsupportedVerified => 1,
                    Status::Failed => 2,
                    Status::Skipped => 3,
                    Status::NotRun => 4,
                };
                c[i] += 1;
            }
        }
        c
    }

    /// The matrix as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let rows: Vec<_> = CASES
            .iter()
            .map(|c| {
                let results: serde_json::Map<String, serde_json::Value> = self
                    .backends
                    .iter()
                    .map(|b| (b.clone(), serde_json::json!(self.status(c, b).label())))
                    .collect();
                serde_json::json!({
                    "id": c.id, "name": c.name, "req": c.req, "title": c.title, "results": results
                })
            })
            .collect();
        serde_json::json!({ "backends": self.backends, "tests": rows })
    }

    /// The matrix as a Markdown table.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = write!(s, "| test | requirement | case |");
        for b in &self.backends {
            let _ = write!(s, " {b} |");
        }
        s.push('\n');
        s.push_str("|---|---|---|");
        for _ in &self.backends {
            s.push_str("---|");
        }
        s.push('\n');
        for c in CASES {
            let _ = write!(s, "| {} | {} | {} |", c.id, c.req, c.title);
            for b in &self.backends {
                let _ = write!(s, " {} |", self.status(c, b).label());
            }
            s.push('\n');
        }
        let [p, u, f, sk, nr] = self.counts();
        let _ = writeln!(
            s,
            "\n{p} passed, {u} unsupported-verified, {f} failed, {sk} skipped, {nr} not run."
        );
        s
    }

    /// `docs/traceability.md`: requirement → tests → per-backend result.
    pub fn traceability(&self) -> String {
        let mut s = String::from(
            "# Traceability: requirements → conformance tests → backends\n\n\
             Generated by `cargo run -p conformance-tests --bin conformance-matrix` from the results of\n\
             the last full test run (`./scripts/test`). Do not edit by hand.\n\n",
        );
        for (req, text) in REQUIREMENTS {
            let _ = writeln!(s, "## {req}: {text}\n");
            let _ = write!(s, "| test | case |");
            for b in &self.backends {
                let _ = write!(s, " {b} |");
            }
            s.push('\n');
            s.push_str("|---|---|");
            for _ in &self.backends {
                s.push_str("---|");
            }
            s.push('\n');
            for c in CASES.iter().filter(|c| c.req == *req) {
                let _ = write!(s, "| {} `{}` | {} |", c.id, c.name, c.title);
                for b in &self.backends {
                    let _ = write!(s, " {} |", self.status(c, b).label());
                }
                s.push('\n');
            }
            s.push('\n');
        }
        s.push_str("## Matrix\n\n");
        s.push_str(&self.to_markdown());
        s
    }
}
