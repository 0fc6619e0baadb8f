//! Runs a validated manifest: stage keys, the plan, and each cell's chain through the cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::cache::{Cache, Entry, Outcome, StageId};
use crate::data::{self, Catalog, Dataset, LOAD_VERSION};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::hash::file_hash;
use crate::manifest::{CellSpec, Manifest};
use crate::metrics::{self, Metrics};
use crate::model::fasttext::{self, Trained};
use crate::progress::Progress;
use crate::report;
use crate::split::{self, SPLIT_VERSION, Split};

pub const EVAL_VERSION: u32 = 1;
const TOP_K: usize = 5;

/// The stage ids every cell shares (load, split).
#[derive(Debug, Clone)]
pub struct Shared {
    pub data_path: PathBuf,
    pub attack_path: Option<PathBuf>,
    pub load: StageId,
    pub split: StageId,
}

/// A cell's stage ids.
#[derive(Debug, Clone)]
pub struct CellStages {
    pub train: StageId,
    pub evaluate: StageId,
}

pub fn shared_stages(m: &Manifest) -> Result<Shared> {
    let cfg = &m.raw.data;
    let data_path = data::check_dataset_file(cfg, &m.data_dir)?;
    let attack_path = data::attack_path(cfg, &m.data_dir)?;
    let data_hash = file_hash(&data_path).io_ctx(ErrorKind::Data, || {
        format!("cannot read {}", data_path.display())
    })?;
    let attack_hash = match &attack_path {
        Some(p) => {
            Some(file_hash(p).io_ctx(ErrorKind::Data, || format!("cannot read {}", p.display()))?)
        }
        None => None,
    };
    // What the load stage reads: the file contents and every setting that shapes its output. The
    // folder and file name are left out: the same bytes elsewhere give the same dataset.
    let mut load_params = serde_json::to_value(cfg).expect("data config serializes");
    if let Some(o) = load_params.as_object_mut() {
        o.remove("dir");
        o.remove("file");
        o.remove("attack");
    }
    let load = StageId::new(
        "load",
        LOAD_VERSION,
        &serde_json::json!({"config": load_params, "file": data_hash, "attack": attack_hash}),
        &[],
    );
    let split = StageId::new("split", SPLIT_VERSION, &m.raw.split, &[&load.key]);
    Ok(Shared {
        data_path,
        attack_path,
        load,
        split,
    })
}

pub fn cell_stages(cell: &CellSpec, shared: &Shared) -> CellStages {
    let train = StageId::new(
        "train",
        fasttext::TRAIN_VERSION,
        &serde_json::json!({
            "classifier": cell.classifier,
            "params": cell.params,
            "seed": cell.seed,
            "augment": cell.augment,
        }),
        &[&shared.split.key],
    );
    let evaluate = StageId::new(
        "evaluate",
        EVAL_VERSION,
        &serde_json::json!({"top_k": TOP_K}),
        &[&train.key, &shared.split.key],
    );
    CellStages { train, evaluate }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanStage {
    pub stage: String,
    pub key: String,
    pub cached: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanCell {
    pub cell: String,
    pub classifier: String,
    pub augment: String,
    pub seed: u64,
    pub params: serde_json::Value,
    pub stages: Vec<PlanStage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub experiment: String,
    pub manifest: String,
    pub data_file: String,
    pub cache_dir: String,
    pub cells: Vec<PlanCell>,
}

pub fn plan(m: &Manifest, shared: &Shared, cache: &Cache) -> Result<Plan> {
    let st = |id: &StageId| PlanStage {
        stage: id.stage.to_string(),
        key: id.key.clone(),
        cached: cache.contains(id),
    };
    let cells = m
        .cells
        .iter()
        .map(|c| {
            let cs = cell_stages(c, shared);
            PlanCell {
                cell: c.name.clone(),
                classifier: c.classifier.as_str().into(),
                augment: c.augment.as_str().into(),
                seed: c.seed,
                params: serde_json::to_value(&c.params).expect("params serialize"),
                stages: vec![
                    st(&shared.load),
                    st(&shared.split),
                    st(&cs.train),
                    st(&cs.evaluate),
                ],
            }
        })
        .collect();
    Ok(Plan {
        experiment: m.raw.experiment.name.clone(),
        manifest: m.source.display().to_string(),
        data_file: shared.data_path.display().to_string(),
        cache_dir: cache.root().display().to_string(),
        cells,
    })
}

/// What a finished cell wrote as `metrics.json`: enough to rebuild every table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellResult {
    pub cell: CellSpec,
    pub experiment: String,
    pub dataset: String,
    pub train_size: usize,
    pub validation_size: usize,
    pub test_size: usize,
    pub train_seconds: f64,
    pub best_epoch: usize,
    pub train_key: String,
    pub evaluate_key: String,
    pub metrics: Metrics,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Prediction<'a> {
    text: &'a str,
    gold: &'a str,
    pred: &'a str,
    top: Vec<(&'a str, f32)>,
}

/// Options of one `run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub out: Option<PathBuf>,
    pub jobs: usize,
    pub fail_fast: bool,
    pub quiet: bool,
}

pub struct RunOutcome {
    pub run_dir: PathBuf,
    pub results: Vec<CellResult>,
    pub failed: Vec<(String, String)>,
    pub trained: usize,
    pub cached: usize,
}

fn load_dataset(
    shared: &Shared,
    m: &Manifest,
    cache: &Cache,
    progress: &Progress,
) -> Result<Dataset> {
    let (entry, outcome) = cache.get_or_compute(&shared.load, |w| {
        let sp = progress.spinner("load");
        sp.set_message(shared.data_path.display().to_string());
        let catalog = match &shared.attack_path {
            Some(p) => Some(Catalog::load(p)?),
            None => None,
        };
        let ds = data::load(&m.raw.data, &shared.data_path, catalog.as_ref())?;
        sp.finish_and_clear();
        w.write_json("dataset.json", &ds)
    })?;
    let ds: Dataset = entry.read_json("dataset.json")?;
    let s = &ds.stats;
    if outcome == Outcome::Computed {
        progress.log(format!(
            "load: {} rows read, {} examples in {} classes ({} duplicates and {} conflicting rows dropped, {} revoked IDs mapped, {} rare classes dropped)",
            s.rows_read,
            s.examples,
            s.classes,
            s.duplicates_dropped,
            s.conflict_rows_dropped,
            s.revoked_mapped.values().map(|v| v.1).sum::<usize>(),
            s.rare_classes_dropped.len()
        ));
    }
    if shared.attack_path.is_none() && m.raw.data.attack == "auto" && outcome == Outcome::Computed {
        progress.log(
            "warning: no ATT&CK bundle in the data folder; revoked technique IDs are not mapped",
        );
    }
    Ok(ds)
}

fn split_dataset(
    shared: &Shared,
    m: &Manifest,
    ds: &Dataset,
    cache: &Cache,
    progress: &Progress,
) -> Result<Split> {
    let (entry, outcome) = cache.get_or_compute(&shared.split, |w| {
        let s = split::split(ds, &m.raw.split)?;
        w.write_json("split.json", &s)
    })?;
    let s: Split = entry.read_json("split.json")?;
    if outcome == Outcome::Computed {
        for w in &s.warnings {
            progress.log(format!("split: warning: {w}"));
        }
        progress.log(format!(
            "split: {} train, {} validation, {} test ({:?}, seed {})",
            s.train.len(),
            s.validation.len(),
            s.test.len(),
            m.raw.split.method,
            m.raw.split.seed
        ));
    }
    Ok(s)
}

/// Classes in a fixed order: every label of the split, sorted.
fn class_index(ds: &Dataset, s: &Split) -> (Vec<String>, BTreeMap<String, usize>) {
    let mut set = std::collections::BTreeSet::new();
    for &i in s.train.iter().chain(&s.validation).chain(&s.test) {
        set.insert(ds.examples[i].label.clone());
    }
    let classes: Vec<String> = set.into_iter().collect();
    let index = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.clone(), i))
        .collect();
    (classes, index)
}

struct CellCtx<'a> {
    m: &'a Manifest,
    ds: &'a Dataset,
    split: &'a Split,
    classes: &'a [String],
    index: &'a BTreeMap<String, usize>,
    cache: &'a Cache,
    device: &'a Device,
    progress: &'a Progress,
    shared: &'a Shared,
}

fn run_cell(cx: &CellCtx, cell: &CellSpec) -> Result<(CellResult, Entry, bool)> {
    let stages = cell_stages(cell, cx.shared);
    let pairs = |idx: &[usize]| -> Vec<(&str, usize)> {
        idx.iter()
            .map(|&i| {
                let e = &cx.ds.examples[i];
                (e.text.as_str(), cx.index[&e.label])
            })
            .collect()
    };
    let mut trained_now: Option<Trained> = None;
    let (train_entry, train_outcome) = cx.cache.get_or_compute(&stages.train, |w| {
        let train = pairs(&cx.split.train);
        let val = pairs(&cx.split.validation);
        let total = train.len().div_ceil(cell.params.batch_size) * cell.params.epochs;
        let pb = cx
            .progress
            .bar(total as u64, &format!("train {}", cell.name));
        let t = fasttext::train(
            &cell.params,
            cell.seed,
            cx.classes,
            &train,
            &val,
            cx.device,
            |step, _, loss| {
                pb.set_position(step as u64);
                pb.set_message(format!("loss {loss:.3}"));
            },
        )?;
        pb.finish_and_clear();
        t.save(&w.path(""))?;
        trained_now = Some(t);
        Ok(())
    })?;
    let (eval_entry, _) = cx.cache.get_or_compute(&stages.evaluate, |w| {
        let model = match trained_now.take() {
            Some(t) => t,
            None => Trained::load(&train_entry.dir, cx.device)?,
        };
        let test = &cx.split.test;
        let texts: Vec<&str> = test
            .iter()
            .map(|&i| cx.ds.examples[i].text.as_str())
            .collect();
        let gold: Vec<usize> = test
            .iter()
            .map(|&i| cx.index[&cx.ds.examples[i].label])
            .collect();
        let scored = model.predict(&texts, cx.device, TOP_K);
        let pred: Vec<usize> = scored.iter().map(|s| s.pred).collect();
        let metrics = metrics::evaluate(&gold, &pred, cx.classes, 20);
        let mut lines = String::new();
        for ((t, g), s) in texts.iter().zip(&gold).zip(&scored) {
            let p = Prediction {
                text: t,
                gold: &cx.classes[*g],
                pred: &cx.classes[s.pred],
                top: s
                    .top
                    .iter()
                    .map(|(k, v)| (cx.classes[*k].as_str(), *v))
                    .collect(),
            };
            lines.push_str(&serde_json::to_string(&p).expect("prediction serializes"));
            lines.push('\n');
        }
        w.write("predictions.jsonl", lines.as_bytes())?;
        let result = CellResult {
            cell: cell.clone(),
            experiment: cx.m.raw.experiment.name.clone(),
            dataset: dataset_label(cx.m),
            train_size: cx.split.train.len(),
            validation_size: cx.split.validation.len(),
            test_size: test.len(),
            train_seconds: model.log.train_seconds,
            best_epoch: model.log.best_epoch,
            train_key: stages.train.key.clone(),
            evaluate_key: stages.evaluate.key.clone(),
            metrics,
        };
        w.write_json("metrics.json", &result)
    })?;
    let mut result: CellResult = eval_entry.read_json("metrics.json")?;
    // The entry may have been made by another experiment whose grid named the same configuration
    // differently: what it computed is shared, how this run names it is not.
    result.cell = cell.clone();
    result.experiment = cx.m.raw.experiment.name.clone();
    result.dataset = dataset_label(cx.m);
    Ok((result, eval_entry, train_outcome == Outcome::Computed))
}

/// The dataset column of the summary, e.g. `tram-single` or `cti-to-mitre:label_subtec`.
pub fn dataset_label(m: &Manifest) -> String {
    let d = &m.raw.data;
    match &d.label {
        Some(l) if l != d.kind.default_label() => format!("{}:{l}", d.kind.as_str()),
        _ => d.kind.as_str().to_string(),
    }
}

/// Remove half-written run folders left by runs that died.
fn sweep_partial_runs(parent: &Path) {
    let Ok(rd) = std::fs::read_dir(parent) else {
        return;
    };
    for item in rd.flatten() {
        let name = item.file_name().to_string_lossy().to_string();
        if let Some(pid) = name
            .rsplit_once(".partial-")
            .and_then(|(_, p)| p.parse::<u32>().ok())
            && !crate::cache::pid_alive(pid)
        {
            let _ = std::fs::remove_dir_all(item.path());
        }
    }
}

fn pick_run_dir(m: &Manifest, opts: &RunOptions) -> PathBuf {
    if let Some(o) = &opts.out {
        return o.clone();
    }
    let base = m.raw.experiment.output_dir.join(&m.raw.experiment.name);
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string();
    let mut dir = base.join(&stamp);
    let mut n = 2;
    while dir.exists() {
        dir = base.join(format!("{stamp}-{n}"));
        n += 1;
    }
    dir
}

pub fn run(m: &Manifest, cache: &Cache, opts: &RunOptions) -> Result<RunOutcome> {
    let progress = Progress::new(opts.quiet);
    cache.sweep_tmp();
    let shared = shared_stages(m)?;
    let plan_before = plan(m, &shared, cache)?;
    let ds = load_dataset(&shared, m, cache, &progress)?;
    let split = split_dataset(&shared, m, &ds, cache, &progress)?;
    let (classes, index) = class_index(&ds, &split);

    // Everything that can fail on bad input has been checked; now write the run folder, under a
    // temporary name until it is complete.
    let run_dir = pick_run_dir(m, opts);
    if run_dir.exists()
        && std::fs::read_dir(&run_dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    {
        return Err(Error::config(format!(
            "--out {} already exists and is not empty; choose another folder or remove it",
            run_dir.display()
        )));
    }
    let parent = run_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&parent).io_ctx(ErrorKind::Internal, || {
        format!("cannot create {}", parent.display())
    })?;
    sweep_partial_runs(&parent);
    let partial = parent.join(format!(
        ".{}.partial-{}",
        run_dir
            .file_name()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default(),
        std::process::id()
    ));
    std::fs::create_dir_all(partial.join("cells")).io_ctx(ErrorKind::Internal, || {
        format!("cannot create {}", partial.display())
    })?;
    let write = |name: &str, body: &[u8]| -> Result<()> {
        std::fs::write(partial.join(name), body)
            .io_ctx(ErrorKind::Internal, || format!("cannot write {name}"))
    };
    write(
        "manifest.resolved.toml",
        crate::manifest::resolved_toml(m).as_bytes(),
    )?;
    write(
        "plan.json",
        &serde_json::to_vec_pretty(&plan_before).expect("plan serializes"),
    )?;
    write_split_files(&partial, &ds, &split)?;

    let device = Device::flex();
    let cx = CellCtx {
        m,
        ds: &ds,
        split: &split,
        classes: &classes,
        index: &index,
        cache,
        device: &device,
        progress: &progress,
        shared: &shared,
    };
    let queue = Mutex::new(m.cells.iter().enumerate());
    let stop = AtomicBool::new(false);
    // (cell index, its result and whether it trained, or why it failed)
    type Done = (usize, std::result::Result<(CellResult, bool), String>);
    let results: Mutex<Vec<Done>> = Mutex::new(Vec::new());
    let started = Instant::now();
    let overall = progress.bar(m.cells.len() as u64, "cells");
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.max(1).min(m.cells.len().max(1)) {
            s.spawn(|| {
                loop {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let next = queue.lock().expect("queue").next();
                    let Some((i, cell)) = next else { break };
                    let r = run_cell(&cx, cell).and_then(|(res, entry, trained)| {
                        write_cell(&res, &entry, &partial.join("cells").join(&cell.name))?;
                        Ok((res, trained))
                    });
                    let r = match r {
                        Ok(x) => {
                            progress.log(format!(
                                "cell {}: macro-F1 {:.4}, accuracy {:.4}{}",
                                cell.name,
                                x.0.metrics.macro_f1,
                                x.0.metrics.accuracy,
                                if x.1 { "" } else { " (cached)" }
                            ));
                            Ok(x)
                        }
                        Err(e) => {
                            progress.log(format!("cell {} failed: {}", cell.name, e.message));
                            let dir = partial.join("cells").join(&cell.name);
                            let _ = std::fs::create_dir_all(&dir);
                            let _ = std::fs::write(dir.join("error.txt"), &e.message);
                            if opts.fail_fast {
                                stop.store(true, Ordering::SeqCst);
                            }
                            Err(e.message)
                        }
                    };
                    overall.inc(1);
                    results.lock().expect("results").push((i, r));
                }
            });
        }
    });
    overall.finish_and_clear();
    let mut results = results.into_inner().expect("results");
    results.sort_by_key(|(i, _)| *i);
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    let (mut trained, mut cached) = (0, 0);
    for (i, r) in results {
        match r {
            Ok((res, t)) => {
                if t {
                    trained += 1;
                } else {
                    cached += 1;
                }
                ok.push(res);
            }
            Err(e) => failed.push((m.cells[i].name.clone(), e)),
        }
    }
    let done: std::collections::BTreeSet<String> = ok
        .iter()
        .map(|r| r.cell.name.clone())
        .chain(failed.iter().map(|f| f.0.clone()))
        .collect();
    for c in &m.cells {
        if !done.contains(&c.name) {
            failed.push((
                c.name.clone(),
                "not run: an earlier cell failed and --fail-fast is set".into(),
            ));
        }
    }
    report::write_all(&partial, &ok, &failed)?;
    progress.log(format!(
        "{} cells: {} trained, {} from cache, {} failed, in {:.1}s",
        m.cells.len(),
        trained,
        cached,
        failed.len(),
        started.elapsed().as_secs_f64()
    ));
    write("run.log", (progress.lines().join("\n") + "\n").as_bytes())?;
    if run_dir.exists() {
        let _ = std::fs::remove_dir(&run_dir);
    }
    std::fs::rename(&partial, &run_dir).io_ctx(ErrorKind::Internal, || {
        format!("cannot move the finished run to {}", run_dir.display())
    })?;
    Ok(RunOutcome {
        run_dir,
        results: ok,
        failed,
        trained,
        cached,
    })
}

/// A cell's folder in the run: its metrics and per-class table under this run's names, and the
/// predictions as the evaluate stage wrote them.
fn write_cell(result: &CellResult, entry: &Entry, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).io_ctx(ErrorKind::Internal, || dest.display().to_string())?;
    std::fs::copy(
        entry.path("predictions.jsonl"),
        dest.join("predictions.jsonl"),
    )
    .io_ctx(ErrorKind::Internal, || {
        format!("copying predictions.jsonl into {}", dest.display())
    })?;
    let metrics = serde_json::to_vec_pretty(result).expect("metrics serialize");
    std::fs::write(dest.join("metrics.json"), metrics).io_ctx(ErrorKind::Internal, || {
        format!("writing {}/metrics.json", dest.display())
    })?;
    std::fs::write(
        dest.join("per_class.csv"),
        report::per_class_csv(std::slice::from_ref(result)),
    )
    .io_ctx(ErrorKind::Internal, || {
        format!("writing {}/per_class.csv", dest.display())
    })
}

/// The split itself, so anyone can retrain a peer on exactly the same examples.
fn write_split_files(dir: &Path, ds: &Dataset, s: &Split) -> Result<()> {
    std::fs::create_dir_all(dir.join("split"))
        .io_ctx(ErrorKind::Internal, || dir.display().to_string())?;
    for (name, idx) in [
        ("train", &s.train),
        ("validation", &s.validation),
        ("test", &s.test),
    ] {
        let mut body = String::new();
        for &i in idx.iter() {
            body.push_str(&serde_json::to_string(&ds.examples[i]).expect("example serializes"));
            body.push('\n');
        }
        std::fs::write(dir.join("split").join(format!("{name}.jsonl")), body)
            .io_ctx(ErrorKind::Internal, || {
                format!("writing split/{name}.jsonl")
            })?;
    }
    Ok(())
}
