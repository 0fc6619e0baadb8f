//! Run folders as things to find and compare: provenance written into each
//! (`provenance.json`, MLflow-style), the `latest` link to the last complete run, and the listing
//! `synthcti runs` prints.
//!
//! A run holds an exclusive lock on `<run>/.running` while it works (released by the OS if it is
//! killed), so a listing tells a run in progress from one that was killed.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::manifest::Manifest;
use crate::output::Table;

/// The file a run keeps locked while it works.
pub const RUNNING: &str = ".running";
/// The link, beside the run folders of an experiment, to the last complete run.
pub const LATEST: &str = "latest";

/// A data file the run read: path, size in bytes and SHA-256 of its content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DataFile {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// What made a run folder (`provenance.json`): the binary, the command, the overrides, the data
/// and the machine. Written when the run starts (`ended` empty) and again when it ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Provenance {
    /// `synthcti` version (Cargo.toml).
    pub version: String,
    /// `git describe --always --dirty` of the source the binary was built from, or `unknown`.
    pub git_commit: String,
    /// The full command line, program first.
    pub command_line: Vec<String>,
    /// The working folder the command ran in.
    pub cwd: String,
    /// Environment overrides and `--set`s, lowest first, as the manifest loader applied them.
    pub overrides: Vec<String>,
    pub manifest: String,
    pub data_files: Vec<DataFile>,
    /// RFC 3339, UTC.
    pub started: String,
    /// RFC 3339, UTC; empty while the run works (or if it was killed).
    #[serde(default)]
    pub ended: String,
    /// Logical cores the machine offers (`std::thread::available_parallelism`).
    pub cores: usize,
    pub host: String,
}

/// The `git describe` of the build, or `unknown` (see build.rs).
pub const GIT_COMMIT: &str = env!("SYNTHCTI_GIT_COMMIT");

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<DataFile> {
    use sha2::{Digest, Sha256};
    let mut f = fs::File::open(path).io_ctx(ErrorKind::Data, || {
        format!("cannot read {}", path.display())
    })?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).io_ctx(ErrorKind::Data, || {
            format!("cannot read {}", path.display())
        })?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        h.update(&buf[..n]);
    }
    Ok(DataFile {
        path: path.display().to_string(),
        bytes,
        sha256: format!("{:x}", h.finalize()),
    })
}

/// A run in progress: holds `<run>/.running` locked; [`RunGuard::finish`] records the end.
pub struct RunGuard {
    dir: PathBuf,
    provenance: Provenance,
    lock: Option<fs::File>,
}

/// Start a run in `dir`: take its lock and write `provenance.json` with `data_files` hashed.
pub fn start(dir: &Path, m: &Manifest, data_files: &[PathBuf]) -> Result<RunGuard> {
    let lock_path = dir.join(RUNNING);
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .io_ctx(ErrorKind::Internal, || {
            format!("cannot create {}", lock_path.display())
        })?;
    if lock.try_lock().is_err() {
        return Err(Error::config(format!(
            "{} is being written by another run; choose another --out",
            dir.display()
        )));
    }
    let mut files = Vec::new();
    for p in data_files {
        files.push(sha256_file(p)?);
    }
    let provenance = Provenance {
        version: env!("CARGO_PKG_VERSION").into(),
        git_commit: GIT_COMMIT.into(),
        command_line: std::env::args().collect(),
        cwd: std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        overrides: m.overrides.clone(),
        manifest: m.source.display().to_string(),
        data_files: files,
        started: now(),
        ended: String::new(),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        host: crate::cache::hostname(),
    };
    let g = RunGuard {
        dir: dir.to_path_buf(),
        provenance,
        lock: Some(lock),
    };
    g.write()?;
    Ok(g)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl RunGuard {
    fn write(&self) -> Result<()> {
        let p = self.dir.join("provenance.json");
        fs::write(
            &p,
            serde_json::to_vec_pretty(&self.provenance).expect("provenance serializes"),
        )
        .io_ctx(ErrorKind::Internal, || {
            format!("cannot write {}", p.display())
        })
    }

    /// Record the end time, release the lock, and when `complete` (every cell has a result)
    /// point `<experiment folder>/latest` at this run if `experiment_dir` is its parent.
    pub fn finish(mut self, complete: bool, experiment_dir: &Path) -> Result<()> {
        self.provenance.ended = now();
        self.write()?;
        drop(self.lock.take());
        let _ = fs::remove_file(self.dir.join(RUNNING));
        if complete && self.dir.parent() == Some(experiment_dir) {
            link_latest(&self.dir)?;
        }
        Ok(())
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if self.lock.take().is_some() {
            let _ = fs::remove_file(self.dir.join(RUNNING));
        }
    }
}

/// Point `<parent>/latest` at `run_dir` (a relative link, replaced atomically by a rename).
#[cfg(unix)]
pub fn link_latest(run_dir: &Path) -> Result<()> {
    let (Some(parent), Some(name)) = (run_dir.parent(), run_dir.file_name()) else {
        return Ok(());
    };
    let tmp = parent.join(format!(".{LATEST}.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(name, &tmp)
        .and_then(|_| fs::rename(&tmp, parent.join(LATEST)))
        .io_ctx(ErrorKind::Internal, || {
            format!("cannot link {}/{LATEST}", parent.display())
        })
}

/// Links are a Unix affair here; elsewhere `latest` is not written.
#[cfg(not(unix))]
pub fn link_latest(_run_dir: &Path) -> Result<()> {
    Ok(())
}

/// One past run, as `synthcti runs` lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunInfo {
    pub experiment: String,
    pub id: String,
    pub path: PathBuf,
    /// When it started (RFC 3339), from provenance.json, else the folder's time.
    pub started: String,
    pub cells: usize,
    pub ok: usize,
    pub failed: usize,
    pub skipped: usize,
    pub best_macro_f1: Option<f64>,
    pub best_cell: String,
    /// `running`, `killed` (no summary and no live lock), `failed` (some cell failed) or
    /// `complete`.
    pub status: String,
}

/// The runs under `results` (`<results>/<experiment>/<run-id>/`), of `experiment` only if
/// given, oldest first. A folder is a run if it holds `plan.json`.
pub fn list(results: &Path, experiment: Option<&str>) -> Result<Vec<RunInfo>> {
    if !results.is_dir() {
        return Err(Error::config(format!(
            "no results folder {}; pass --results DIR (the manifest's `experiment.output_dir`), or run an experiment first",
            results.display()
        )));
    }
    let mut exps: Vec<PathBuf> = match experiment {
        Some(e) => {
            let d = results.join(e);
            if !d.is_dir() {
                return Err(Error::config(format!(
                    "no runs of experiment `{e}` in {}; experiments there: {}",
                    results.display(),
                    subdirs(results)
                        .iter()
                        .filter_map(|p| p.file_name())
                        .map(|n| n.to_string_lossy().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            vec![d]
        }
        None => subdirs(results),
    };
    exps.sort();
    let mut out = Vec::new();
    for e in exps {
        for r in subdirs(&e) {
            if r.join("plan.json").is_file() {
                out.push(info(&r));
            }
        }
    }
    out.sort_by(|a, b| (&a.started, &a.id).cmp(&(&b.started, &b.id)));
    Ok(out)
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn info(dir: &Path) -> RunInfo {
    let name = |p: &Path| {
        p.file_name()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default()
    };
    let prov: Option<Provenance> = fs::read(dir.join("provenance.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let started = prov.as_ref().map(|p| p.started.clone()).unwrap_or_else(|| {
        fs::metadata(dir)
            .and_then(|m| m.modified())
            .map(|t| {
                chrono::DateTime::<chrono::Utc>::from(t)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            })
            .unwrap_or_default()
    });
    let cells = fs::read(dir.join("plan.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("cells").and_then(|c| c.as_array()).map(|a| a.len()))
        .unwrap_or(0);
    let running = fs::OpenOptions::new()
        .write(true)
        .open(dir.join(RUNNING))
        .is_ok_and(|f| f.try_lock().is_err());
    let (mut ok, mut failed, mut skipped, mut best, mut best_cell) = (0, 0, 0, None, String::new());
    let summary = dir.join("summary.csv");
    let have_summary = summary.is_file();
    if let Ok(mut rd) = csv::Reader::from_path(&summary) {
        let headers = rd.headers().cloned().unwrap_or_default();
        let col = |n: &str| headers.iter().position(|h| h == n);
        let (c_cell, c_f1, c_status) = (col("cell"), col("macro_f1"), col("status"));
        for rec in rd.records().flatten() {
            let get = |c: Option<usize>| c.and_then(|i| rec.get(i)).unwrap_or_default();
            match get(c_status) {
                "failed" => failed += 1,
                "skipped" => skipped += 1,
                _ => {
                    ok += 1;
                    if let Ok(f) = get(c_f1).parse::<f64>()
                        && best.is_none_or(|b| f > b)
                    {
                        best = Some(f);
                        best_cell = get(c_cell).to_string();
                    }
                }
            }
        }
    }
    let status = if running {
        "running"
    } else if !have_summary {
        "killed"
    } else if failed + skipped > 0 {
        "failed"
    } else {
        "complete"
    };
    RunInfo {
        experiment: dir.parent().map(name).unwrap_or_default(),
        id: name(dir),
        path: dir.to_path_buf(),
        started,
        cells,
        ok,
        failed,
        skipped,
        best_macro_f1: best,
        best_cell,
        status: status.into(),
    }
}

/// The runs as a table: experiment, id, started, cells, ok, failed, skipped, best macro-F1 (and
/// its cell), status, path.
pub fn table(runs: &[RunInfo]) -> Table {
    let mut t = Table::new(&[
        "experiment",
        "id",
        "started",
        "cells",
        "ok",
        "failed",
        "skipped",
        "best_macro_f1",
        "best_cell",
        "status",
        "path",
    ]);
    for r in runs {
        t.rows.push(vec![
            r.experiment.clone(),
            r.id.clone(),
            r.started.clone(),
            r.cells.to_string(),
            r.ok.to_string(),
            r.failed.to_string(),
            r.skipped.to_string(),
            r.best_macro_f1
                .map(|f| format!("{f:.4}"))
                .unwrap_or_default(),
            r.best_cell.clone(),
            r.status.clone(),
            r.path.display().to_string(),
        ]);
    }
    t
}
