//! The Slurm executor: a grid's cells as a job array over a shared stage cache.
//!
//! `synthcti run --executor slurm` (or `[executor] kind = "slurm"`):
//!
//! 1. checks everything a local run checks (manifest, data, targets — a dry run, nothing written
//!    to the cache), that `sbatch` and `squeue` are on PATH, that the cache folder was named
//!    explicitly, and each job's resources with `sbatch --test-only` (an unknown partition or
//!    account fails here, before any work);
//! 2. claims the run folder and writes what a local run writes first (run.log, plan.json,
//!    manifest.resolved.toml, split/, provenance.json), then `slurm/tasks.json`: the cells that
//!    are not cached, one array index each;
//! 3. when cells train on synthetic data that is not cached, submits one generation job
//!    (`synthcti task --prepare`: load, split, cluster, generate, filter through the cache), so
//!    every LLM call is made once, by one process; the arrays depend on it (`afterok`);
//! 4. submits one `sbatch --array` per classifier kind (each kind has its own resources), every
//!    task running `synthcti task slurm/tasks.json --index $SLURM_ARRAY_TASK_ID`: the ordinary
//!    runner on one cell, against the same cache, its log in `slurm/logs/task-<i>.log`;
//! 5. computes the cached cells in this process (cache hits), then waits with a progress bar of
//!    tasks pending / running / done / failed, polling `squeue` and the result files the tasks
//!    write (no accounting database needed), or returns at once with `--detach`;
//! 6. collects: each task's cell folder is already in `cells/`; a task that left no result (killed
//!    by `scancel`, its time limit or a node failure) gets an `error.txt` with the exit reason
//!    Slurm gave (its state, or the `slurmstepd` line of its log); the run log gets a line per
//!    task; the tables are written as a local run writes them. `synthcti report RUN_DIR` collects
//!    the same way after `--detach`.
//!
//! Tasks share nothing but the cache and the run folder: stages are coordinated by the cache's
//! per-key locks (which hold across hosts, see [`crate::cache`]), and a killed task leaves no
//! entry behind (entries are renamed into place only when complete), so `synthcti run` again
//! submits only what is missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::executor::{GENERATE_JOB, SlurmResources};
use crate::manifest::{Manifest, SetArg};
use crate::pipeline::{self, RunOptions, RunOutcome};
use crate::progress::Progress;
use crate::record::CellResult;

/// The task list inside a run folder.
pub const TASKS_FILE: &str = "slurm/tasks.json";

/// What every task reads: how to rebuild the manifest, where the cache and the run folder are,
/// and which cell each array index runs. Written by the submitter before it submits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskPlan {
    /// The run folder (absolute).
    pub run_dir: PathBuf,
    /// The manifest file (absolute) and the `--set`s given with it (`executor.kind`, `backend`
    /// included); `SYNTHCTI_*` variables reach the tasks through sbatch's `--export=ALL`.
    pub manifest: PathBuf,
    pub sets: Vec<String>,
    /// The shared stage cache (absolute).
    pub cache_dir: PathBuf,
    /// The folder the submitter ran in; the tasks run there too.
    pub cwd: PathBuf,
    /// Every cell of the grid, in grid order.
    pub grid: Vec<String>,
    /// Array index → cell: the cells submitted.
    pub cells: Vec<String>,
    /// The jobs submitted (filled in after submission).
    #[serde(default)]
    pub jobs: Vec<Job>,
}

/// One submitted job: the generation job, or a classifier kind's array.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// `generate`, or a classifier kind.
    pub kind: String,
    pub job_id: String,
    /// The array indices (empty for the generation job).
    pub indices: Vec<usize>,
}

/// What a task writes when it ends by itself (`slurm/results/<index>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskResult {
    pub index: usize,
    pub cell: String,
    pub host: String,
    /// The Slurm node (`SLURMD_NODENAME`).
    pub node: String,
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
    /// Whether the cell was trained by this task (false: a cache hit).
    pub trained: bool,
    /// RFC 3339 UTC.
    pub started: String,
    pub seconds: f64,
}

/// How a Slurm run ended for `synthcti run`.
pub enum SlurmOutcome {
    /// Waited, collected, tables written.
    Finished(RunOutcome),
    /// `--detach`: submitted; `synthcti report RUN_DIR` collects.
    Detached { run_dir: PathBuf, jobs: Vec<Job> },
}

/// Where a program is on PATH.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// `sbatch`, `squeue` and `scancel` must be on PATH: the error says which is missing and how to fix it.
pub fn check_commands() -> Result<()> {
    for program in ["sbatch", "squeue"] {
        if which(program).is_none() {
            return Err(Error::config(format!(
                "executor `slurm`: `{program}` is not on PATH, so no job can be submitted; run on a Slurm login node (or install Slurm's client commands, Debian package slurm-client), or use `--executor local`"
            )));
        }
    }
    Ok(())
}

fn run_cmd(cmd: &mut Command) -> std::result::Result<String, String> {
    let shown = format!("{cmd:?}");
    match cmd.output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        Ok(o) => Err(format!(
            "{} failed ({}): {}",
            shown,
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run {shown}: {e}")),
    }
}

/// Ask `sbatch --test-only` whether these resources can be scheduled; the error names the
/// manifest table they come from and what sbatch said.
fn test_resources(m: &Manifest, job: &str, r: &SlurmResources) -> Result<()> {
    let mut cmd = Command::new("sbatch");
    cmd.arg("--test-only")
        .args(r.args())
        .arg("--job-name=synthcti-check")
        .arg("--wrap=true");
    let out = cmd.output().map_err(|e| {
        Error::config(format!(
            "executor `slurm`: cannot run sbatch ({e}); check that Slurm's client commands work on this host"
        ))
    })?;
    // `--test-only` reports on stderr, and exits non-zero when the job could never run.
    if !out.status.success() {
        let table = if m.executor.resources.contains_key(job) {
            format!("[executor.resources.{job}] over [executor.slurm]")
        } else {
            "[executor.slurm]".to_string()
        };
        return Err(Error::config(format!(
            "{}, {table}: Slurm refuses the {job} job ({}): {}; fix the partition, account, time, mem or gres there (`sinfo -s` lists the partitions)",
            m.source.display(),
            r.args().join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// `synthcti run` through Slurm. `sets` are the manifest overrides given on the command line
/// (as the tasks will give them to the manifest loader); `cache_explicit` whether the cache
/// folder was named (`--cache-dir` or `SYNTHCTI_CACHE_DIR`), which Slurm requires.
pub fn run(
    m: &Manifest,
    cache: &Cache,
    opts: &RunOptions,
    sets: &[String],
    cache_explicit: bool,
    detach: bool,
) -> Result<SlurmOutcome> {
    // Everything that can be wrong is checked before anything is written or submitted.
    check_commands()?;
    if !cache_explicit {
        return Err(Error::config(
            "executor `slurm`: the tasks share the stage cache, so name it: `--cache-dir DIR` or SYNTHCTI_CACHE_DIR, a folder on a file system every node mounts at the same path",
        ));
    }
    if let Some(out) = &opts.out {
        pipeline::check_out(out)?;
    }
    let progress = Progress::new(opts.quiet);
    let abs = |p: &Path| -> Result<PathBuf> {
        std::path::absolute(p).io_ctx(ErrorKind::Internal, || {
            format!("cannot resolve {}", p.display())
        })
    };
    let cache_dir = abs(cache.root())?;
    let read_only = Cache::open_read_only(&cache_dir);
    let plan = pipeline::dry_run(m, &read_only)?;
    // Cells whose evaluate entry is cached are collected here; the others are submitted.
    let (cached, todo): (Vec<_>, Vec<_>) = plan
        .cells
        .iter()
        .partition(|c| c.stages.last().is_some_and(|s| s.cached));
    let needs_generation = todo.iter().any(|c| {
        c.synthetic.is_some() && c.stages.iter().any(|s| s.stage == "filter" && !s.cached)
    });
    let mut by_kind: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, c) in todo.iter().enumerate() {
        by_kind.entry(c.classifier.clone()).or_default().push(i);
    }
    for kind in by_kind.keys() {
        test_resources(m, kind, &m.executor.resources_for(kind))?;
    }
    if needs_generation {
        test_resources(m, GENERATE_JOB, &m.executor.resources_for(GENERATE_JOB))?;
    }

    // The run folder, as a local run writes it before its first cell.
    let run_dir = match &opts.out {
        Some(out) => {
            std::fs::create_dir_all(out).io_ctx(ErrorKind::Internal, || {
                format!("cannot create {}", out.display())
            })?;
            abs(out)?
        }
        None => abs(&pipeline::claim_run_dir(
            &m.experiment.output_dir.join(&m.experiment.name),
            &chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string(),
        )?)?,
    };
    progress
        .log_to(&run_dir.join("run.log"))
        .io_ctx(ErrorKind::Internal, || {
            format!("cannot write {}/run.log", run_dir.display())
        })?;
    for n in &plan.notes {
        progress.log(format!("plan: {n}"));
    }
    for sub in ["cells", "slurm/logs", "slurm/results", "slurm/work"] {
        std::fs::create_dir_all(run_dir.join(sub)).io_ctx(ErrorKind::Internal, || {
            format!("cannot create {}/{sub}", run_dir.display())
        })?;
    }
    {
        // The run folder's inputs as a local run writes them; the dataset and splits come from
        // the cache or are computed in memory (nothing is written to the cache here: the tasks
        // compute the load and split stages once, under the cache's locks).
        let shared = pipeline::shared_stages(m)?;
        let ds: crate::data::Dataset = match read_only.get(&shared.load)? {
            Some(e) => e.read_json("dataset.json")?,
            None => pipeline::compute_dataset(&shared, m)?,
        };
        let mut splits = Vec::new();
        for r in 0..m.replicates() {
            let mr = m.replicate(r);
            let sh = pipeline::shared_for(&mr, &shared);
            splits.push(match read_only.get(&sh.split)? {
                Some(e) => e.read_json::<crate::split::Split>("split.json")?,
                None => crate::split::split(&ds, &mr.split)?,
            });
        }
        pipeline::write_run_inputs(
            &run_dir,
            m,
            &plan,
            &shared.data_path,
            &ds,
            &splits.iter().collect::<Vec<_>>(),
            &progress,
        )?;
    }
    let mut data_files = vec![pipeline::shared_stages(m)?.data_path];
    data_files.extend(crate::data::attack_path(&m.data, &m.data_dir)?);
    let guard = crate::runs::start(&run_dir, m, &data_files)?;

    let mut tasks = TaskPlan {
        run_dir: run_dir.clone(),
        manifest: abs(&m.source)?,
        sets: sets.to_vec(),
        cache_dir: cache_dir.clone(),
        cwd: std::env::current_dir().io_ctx(ErrorKind::Internal, || "the current folder".into())?,
        grid: m.cells.iter().map(|c| c.name.clone()).collect(),
        cells: todo.iter().map(|c| c.cell.clone()).collect(),
        jobs: Vec::new(),
    };
    write_tasks(&run_dir, &tasks)?;
    let exe = std::env::current_exe()
        .io_ctx(ErrorKind::Internal, || "the synthcti binary's path".into())?;
    let plan_path = run_dir.join(TASKS_FILE);
    let script =
        |name: &str, args: &str| -> Result<PathBuf> {
            let p = run_dir.join("slurm").join(name);
            std::fs::write(
            &p,
            format!(
                "#!/bin/sh\n# Written by synthcti run --executor slurm.\nexec {} task {} {args}\n",
                shell_quote(&exe.display().to_string()),
                shell_quote(&plan_path.display().to_string()),
            ),
        )
        .io_ctx(ErrorKind::Internal, || format!("cannot write {}", p.display()))?;
            Ok(p)
        };
    let submit = |args: Vec<String>, script: &Path| -> Result<String> {
        let mut cmd = Command::new("sbatch");
        cmd.arg("--parsable")
            .arg(format!("--chdir={}", tasks.cwd.display()))
            .arg("--export=ALL")
            .args(args)
            .arg(script);
        let out = run_cmd(&mut cmd).map_err(|e| Error::config(format!("executor `slurm`: {e}")))?;
        // `--parsable`: `jobid` or `jobid;cluster`.
        Ok(out.split(';').next().unwrap_or_default().trim().to_string())
    };
    let name = format!("--job-name=synthcti-{}", m.experiment.name);
    let mut dependency = None;
    if needs_generation {
        let s = script("generate.sh", "--prepare")?;
        let mut args = m.executor.resources_for(GENERATE_JOB).args();
        args.push(name.clone());
        args.push(format!(
            "--output={}",
            run_dir.join("slurm/logs/generate.log").display()
        ));
        let id = submit(args, &s)?;
        progress.log(format!(
            "slurm: job {id} makes the synthetic data the cells share (log: slurm/logs/generate.log)"
        ));
        tasks.jobs.push(Job {
            kind: GENERATE_JOB.into(),
            job_id: id.clone(),
            indices: Vec::new(),
        });
        dependency = Some(id);
    }
    if !by_kind.is_empty() {
        let s = script("task.sh", "--index \"$SLURM_ARRAY_TASK_ID\"")?;
        for (kind, indices) in &by_kind {
            let mut args = m.executor.resources_for(kind).args();
            args.push(name.clone());
            args.push(format!(
                "--array={}",
                indices
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ));
            args.push(format!(
                "--output={}",
                run_dir.join("slurm/logs/task-%a.log").display()
            ));
            if let Some(d) = &dependency {
                args.push(format!("--dependency=afterok:{d}"));
                args.push("--kill-on-invalid-dep=yes".into());
            }
            let id = match submit(args, &s) {
                Ok(id) => id,
                Err(e) => {
                    cancel(&tasks.jobs);
                    return Err(e);
                }
            };
            progress.log(format!(
                "slurm: job array {id}: {} {kind} cells (logs: slurm/logs/task-<index>.log)",
                indices.len()
            ));
            tasks.jobs.push(Job {
                kind: kind.clone(),
                job_id: id,
                indices: indices.clone(),
            });
        }
    }
    write_tasks(&run_dir, &tasks)?;
    progress.log(format!(
        "slurm: {} cells submitted, {} cached (collected here), cache {}",
        tasks.cells.len(),
        cached.len(),
        cache_dir.display()
    ));
    // The cached cells: cache hits, in this process.
    if !cached.is_empty() {
        let mut mm = m.clone();
        mm.cells.retain(|c| cached.iter().any(|p| p.cell == c.name));
        let work = run_dir.join("slurm/work/local");
        let cache = Cache::open(&cache_dir)?;
        let o = pipeline::run(
            &mm,
            &cache,
            &RunOptions {
                out: Some(work.clone()),
                jobs: 1,
                fail_fast: false,
                quiet: true,
                task: true,
            },
        )?;
        for c in &mm.cells {
            move_cell(&work, &run_dir, &c.name)?;
        }
        let _ = std::fs::remove_dir_all(&work);
        let _ = o;
    }
    if detach {
        drop(guard);
        return Ok(SlurmOutcome::Detached {
            run_dir,
            jobs: tasks.jobs,
        });
    }
    let seen = wait(&tasks, m.executor.poll, &progress);
    let outcome = collect(&run_dir, &tasks, &seen, &progress)?;
    guard.finish(
        outcome.failed.is_empty(),
        &m.experiment.output_dir.join(&m.experiment.name),
    )?;
    Ok(SlurmOutcome::Finished(outcome))
}

fn write_tasks(run_dir: &Path, t: &TaskPlan) -> Result<()> {
    let p = run_dir.join(TASKS_FILE);
    let tmp = p.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(t).expect("tasks serialize"))
        .and_then(|_| std::fs::rename(&tmp, &p))
        .io_ctx(ErrorKind::Internal, || {
            format!("cannot write {}", p.display())
        })
}

fn read_tasks(run_dir: &Path) -> Result<TaskPlan> {
    let p = run_dir.join(TASKS_FILE);
    let bytes = std::fs::read(&p).io_ctx(ErrorKind::Config, || {
        format!(
            "cannot read {} (not a run folder of `--executor slurm`?)",
            p.display()
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::data(format!(
            "{} is not a task list synthcti wrote: {e}",
            p.display()
        ))
    })
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Move a cell's folder from a task's work folder into the run folder (replacing a stale one).
fn move_cell(work: &Path, run_dir: &Path, cell: &str) -> Result<()> {
    let from = work.join("cells").join(cell);
    let to = run_dir.join("cells").join(cell);
    if !from.is_dir() {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(&to);
    std::fs::rename(&from, &to).io_ctx(ErrorKind::Internal, || {
        format!("cannot move {} to {}", from.display(), to.display())
    })
}

fn cancel(jobs: &[Job]) {
    for j in jobs {
        let _ = Command::new("scancel").arg(&j.job_id).output();
    }
}

/// A task's state as `squeue` last showed it (`PENDING`, `RUNNING`, `CANCELLED`, …) and why
/// (`%r`: `Dependency`, `DependencyNeverSatisfied`, `NonZeroExitCode`, …).
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub state: String,
    pub reason: String,
    pub node: String,
}

/// States of a job that has not ended.
fn active(state: &str) -> bool {
    matches!(
        state,
        "PENDING"
            | "RUNNING"
            | "CONFIGURING"
            | "COMPLETING"
            | "SUSPENDED"
            | "REQUEUED"
            | "REQUEUE_HOLD"
            | "REQUEUE_FED"
            | "RESIZING"
            | "SIGNALING"
            | "STAGE_OUT"
            | "STOPPED"
    )
}

/// Every task of these jobs that `squeue` knows (also ended ones, for MinJobAge): array index
/// (or `generate`) → state. An error (a purged job id) is an empty answer.
fn squeue(jobs: &[Job]) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    if jobs.is_empty() {
        return out;
    }
    let ids: Vec<&str> = jobs.iter().map(|j| j.job_id.as_str()).collect();
    let Ok(text) = run_cmd(Command::new("squeue").args([
        "-h",
        "-r",
        "-t",
        "all",
        "-j",
        &ids.join(","),
        "-o",
        "%F|%K|%T|%r|%N",
    ])) else {
        return out;
    };
    for line in text.lines() {
        let f: Vec<&str> = line.split('|').collect();
        if f.len() < 5 {
            continue;
        }
        let Some(job) = jobs.iter().find(|j| j.job_id == f[0]) else {
            continue;
        };
        let key = if job.kind == GENERATE_JOB {
            GENERATE_JOB.to_string()
        } else {
            f[1].to_string()
        };
        out.insert(
            key,
            Seen {
                state: f[2].to_string(),
                reason: f[3].to_string(),
                node: f[4].to_string(),
            },
        );
    }
    out
}

fn read_result(run_dir: &Path, index: usize) -> Option<TaskResult> {
    let p = run_dir.join("slurm/results").join(format!("{index}.json"));
    serde_json::from_slice(&std::fs::read(p).ok()?).ok()
}

/// Wait until no task is pending or running, with a bar of pending / running / done / failed.
/// Returns the last state `squeue` showed for each task (for the exit reasons).
fn wait(tasks: &TaskPlan, poll: Duration, progress: &Progress) -> BTreeMap<String, Seen> {
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let bar = progress.bar(tasks.cells.len() as u64, "slurm tasks");
    let started = Instant::now();
    let mut last_line = String::new();
    loop {
        let now = squeue(&tasks.jobs);
        let any_active = now.values().any(|s| active(&s.state));
        for (k, s) in now {
            seen.insert(k, s);
        }
        let (mut pending, mut running, mut done, mut failed) = (0, 0, 0, 0);
        for i in 0..tasks.cells.len() {
            match read_result(&tasks.run_dir, i) {
                Some(r) if r.ok => done += 1,
                Some(_) => failed += 1,
                None => match seen.get(&i.to_string()).map(|s| s.state.as_str()) {
                    Some("PENDING") | None if any_active => pending += 1,
                    Some(s) if active(s) => running += 1,
                    _ => failed += 1,
                },
            }
        }
        let generate = seen
            .get(GENERATE_JOB)
            .map(|s| format!(", generate {}", s.state.to_lowercase()))
            .unwrap_or_default();
        let line =
            format!("{pending} pending, {running} running, {done} done, {failed} failed{generate}");
        bar.set_position((done + failed) as u64);
        bar.set_message(line.clone());
        if line != last_line {
            progress.log(format!(
                "slurm: {line} ({:.0}s)",
                started.elapsed().as_secs_f64()
            ));
            last_line = line;
        }
        if !any_active {
            break;
        }
        std::thread::sleep(poll);
    }
    bar.finish_and_clear();
    seen
}

/// The `slurmstepd` line a killed task's log ends with (`*** JOB 12 ON n1 CANCELLED AT … ***`,
/// `… DUE TO TIME LIMIT ***`, `… DUE TO NODE FAILURE ***`), or its last non-empty line.
fn log_reason(log: &Path) -> (Option<String>, Option<String>) {
    let Ok(text) = std::fs::read_to_string(log) else {
        return (None, None);
    };
    let stepd = text
        .lines()
        .rev()
        .find(|l| l.contains("***") && l.contains("JOB"))
        .map(|l| l.trim().to_string());
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string());
    (stepd, last)
}

/// Ask sacct (when the cluster keeps accounting) how a task ended: `STATE exit CODE`.
fn sacct_reason(job_id: &str, index: usize) -> Option<String> {
    let text = run_cmd(Command::new("sacct").args([
        "-n",
        "-P",
        "-X",
        "-j",
        &format!("{job_id}_{index}"),
        "-o",
        "State,ExitCode",
    ]))
    .ok()?;
    let line = text.lines().next()?.trim().to_string();
    let (state, code) = line.split_once('|')?;
    (!state.is_empty()).then(|| format!("{state} (exit {code})"))
}

/// Build the run's tables from the tasks' results: a task without a result gets an `error.txt`
/// saying how it ended; the run log gets one line per task.
pub fn collect(
    run_dir: &Path,
    tasks: &TaskPlan,
    seen: &BTreeMap<String, Seen>,
    progress: &Progress,
) -> Result<RunOutcome> {
    let job_of = |i: usize| tasks.jobs.iter().find(|j| j.indices.contains(&i));
    // The generation job: when it did not complete, its cells' tasks were never started
    // (`--kill-on-invalid-dep`); its log says why.
    if let Some(g) = tasks.jobs.iter().find(|j| j.kind == GENERATE_JOB) {
        let s = seen.get(GENERATE_JOB).cloned().unwrap_or_default();
        if !s.state.is_empty() && s.state != "COMPLETED" && !active(&s.state) {
            let (stepd, last) = log_reason(&run_dir.join("slurm/logs/generate.log"));
            progress.log(format!(
                "slurm: the generation job {} ended {}{}; its log: slurm/logs/generate.log",
                g.job_id,
                s.state,
                stepd
                    .or(last)
                    .map(|l| format!(" (last line: {l})"))
                    .unwrap_or_default()
            ));
        }
    }
    let mut still = 0;
    let (mut trained, mut cached) = (0, 0);
    for (i, cell) in tasks.cells.iter().enumerate() {
        let log = run_dir.join("slurm/logs").join(format!("task-{i}.log"));
        let rel = format!("slurm/logs/task-{i}.log");
        match read_result(run_dir, i) {
            Some(r) if r.ok => {
                if r.trained {
                    trained += 1;
                } else {
                    cached += 1;
                }
                progress.log(format!(
                    "slurm: task {i} ({cell}) on {}: done in {:.1}s{}",
                    r.node,
                    r.seconds,
                    if r.trained { "" } else { " (cached)" }
                ));
            }
            Some(r) => {
                progress.log(format!(
                    "slurm: task {i} ({cell}) on {}: FAILED: {} (log: {rel})",
                    r.node,
                    r.error.as_deref().unwrap_or("no reason given")
                ));
            }
            None => {
                let s = seen.get(&i.to_string()).cloned().unwrap_or_default();
                if active(&s.state) {
                    still += 1;
                    progress.log(format!(
                        "slurm: task {i} ({cell}): still {} in Slurm; `synthcti report {}` again when it ends",
                        s.state.to_lowercase(),
                        run_dir.display()
                    ));
                    continue;
                }
                let job = job_of(i);
                let (stepd, last) = log_reason(&log);
                let state = if !s.state.is_empty() {
                    Some(if s.reason.is_empty() || s.reason == "None" {
                        s.state.clone()
                    } else {
                        format!("{} ({})", s.state, s.reason)
                    })
                } else {
                    job.and_then(|j| sacct_reason(&j.job_id, i))
                };
                let mut why = format!(
                    "the Slurm task ended without a result: {}",
                    state.unwrap_or_else(|| "killed (scancel, time limit or node failure; Slurm no longer knows the job)".into())
                );
                if let Some(l) = stepd.or(last) {
                    why.push_str(&format!("; its log's last line: {l}"));
                }
                why.push_str(&format!(
                    "; job {}_{i}, log {rel}; `synthcti run` again submits only what is missing",
                    job.map(|j| j.job_id.as_str()).unwrap_or("?")
                ));
                progress.log(format!("slurm: task {i} ({cell}): FAILED: {why}"));
                let dir = run_dir.join("cells").join(cell);
                let _ = std::fs::create_dir_all(&dir);
                let _ = std::fs::write(dir.join("error.txt"), &why);
            }
        }
    }
    // The tables, in grid order, as a local run writes them.
    let mut ok: Vec<CellResult> = Vec::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    for cell in &tasks.grid {
        let dir = run_dir.join("cells").join(cell);
        let metrics = dir.join("metrics.json");
        if metrics.is_file() {
            let bytes = std::fs::read(&metrics)
                .io_ctx(ErrorKind::Internal, || metrics.display().to_string())?;
            let r: CellResult = serde_json::from_slice(&bytes).map_err(|e| {
                Error::data(format!(
                    "{} is not a metrics.json written by synthcti: {e}",
                    metrics.display()
                ))
            })?;
            ok.push(r);
        } else {
            let why = std::fs::read_to_string(dir.join("error.txt"))
                .unwrap_or_else(|_| crate::report::NOT_RUN.into());
            failed.push((cell.clone(), why));
        }
    }
    crate::report::write_all(run_dir, &ok, &failed)?;
    progress.log(format!(
        "{} cells: {} trained, {} from cache, {} failed{}",
        tasks.grid.len(),
        trained,
        cached + (tasks.grid.len() - tasks.cells.len()),
        failed.len(),
        if still > 0 {
            format!(" ({still} still in Slurm)")
        } else {
            String::new()
        }
    ));
    Ok(RunOutcome {
        run_dir: run_dir.to_path_buf(),
        results: ok,
        failed,
        trained,
        cached,
    })
}

/// `synthcti report RUN_DIR` on a Slurm run folder: collect what the tasks have written so far.
pub fn collect_report(run_dir: &Path) -> Result<RunOutcome> {
    let tasks = read_tasks(run_dir)?;
    let progress = Progress::new(true);
    progress
        .log_to(&run_dir.join("run.log"))
        .io_ctx(ErrorKind::Internal, || {
            format!("cannot write {}/run.log", run_dir.display())
        })?;
    let seen = squeue(&tasks.jobs);
    collect(run_dir, &tasks, &seen, &progress)
}

/// Whether a run folder was written by the Slurm executor.
pub fn is_slurm_run(run_dir: &Path) -> bool {
    run_dir.join(TASKS_FILE).is_file()
}

/// `synthcti task PLAN --index I` (one array task: one cell) or `--prepare` (the generation
/// job: every synthetic chain the submitted cells train on). Returns the exit code.
pub fn task(plan_path: &Path, index: Option<usize>, prepare: bool) -> Result<i32> {
    let bytes = std::fs::read(plan_path).io_ctx(ErrorKind::Config, || {
        format!("cannot read {}", plan_path.display())
    })?;
    let plan: TaskPlan = serde_json::from_slice(&bytes).map_err(|e| {
        Error::data(format!(
            "{} is not a task list synthcti wrote: {e}",
            plan_path.display()
        ))
    })?;
    let sets = plan
        .sets
        .iter()
        .map(|s| SetArg::parse(s))
        .collect::<Result<Vec<_>>>()?;
    let mut m = crate::manifest::load(&plan.manifest, &sets)?;
    let cache = Cache::open(&plan.cache_dir)?;
    if prepare {
        m.cells.retain(|c| plan.cells.contains(&c.name));
        let progress = Progress::new(false);
        let chains = pipeline::synthesize_only(&m, &cache, &progress)?;
        for (rep, spec, r) in &chains {
            if let Err(why) = r {
                // The cells that need it fail on their own, saying why; the others go on.
                eprintln!(
                    "synthetic data {} (replicate {rep}) failed: {why}",
                    pipeline::spec_label(spec)
                );
            }
        }
        return Ok(0);
    }
    let index = index.ok_or_else(|| Error::config("synthcti task: give --index or --prepare"))?;
    let cell = plan.cells.get(index).ok_or_else(|| {
        Error::config(format!(
            "synthcti task: index {index} is not in {} ({} tasks)",
            plan_path.display(),
            plan.cells.len()
        ))
    })?;
    m.cells.retain(|c| &c.name == cell);
    let started = chrono::Utc::now();
    let clock = Instant::now();
    let work = plan.run_dir.join("slurm/work").join(index.to_string());
    // A requeued task starts over (its stages come from the cache).
    let _ = std::fs::remove_dir_all(&work);
    let r = pipeline::run(
        &m,
        &cache,
        &RunOptions {
            out: Some(work.clone()),
            jobs: 1,
            fail_fast: false,
            quiet: false,
            task: true,
        },
    );
    let (ok, error, trained) = match &r {
        Ok(o) => {
            move_cell(&work, &plan.run_dir, cell)?;
            match o.failed.first() {
                None => (true, None, o.trained > 0),
                Some((_, why)) => (false, Some(why.clone()), false),
            }
        }
        Err(e) => {
            let dir = plan.run_dir.join("cells").join(cell);
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(dir.join("error.txt"), &e.message);
            (false, Some(e.message.clone()), false)
        }
    };
    let result = TaskResult {
        index,
        cell: cell.clone(),
        host: crate::cache::hostname(),
        node: std::env::var("SLURMD_NODENAME").unwrap_or_default(),
        ok,
        error,
        trained,
        started: started.to_rfc3339(),
        seconds: clock.elapsed().as_secs_f64(),
    };
    let p = plan
        .run_dir
        .join("slurm/results")
        .join(format!("{index}.json"));
    let tmp = p.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&result).expect("result serializes"),
    )
    .and_then(|_| std::fs::rename(&tmp, &p))
    .io_ctx(ErrorKind::Internal, || {
        format!("cannot write {}", p.display())
    })?;
    let _ = std::fs::remove_dir_all(&work);
    r?;
    Ok(if ok {
        0
    } else {
        ErrorKind::CellsFailed.exit_code()
    })
}
