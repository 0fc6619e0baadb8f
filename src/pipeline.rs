//! Runs a validated manifest: stage keys, the plan, and each cell's chain through the cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::cache::{Cache, Entry, Outcome, StageId};
use crate::cluster::{self, CLUSTER_VERSION, Clusters};
use crate::data::{self, Catalog, Dataset, LOAD_VERSION};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::filter::{self, FILTER_VERSION, FilterInput, Synthetic};
use crate::generate::{self, CallRecord, GENERATE_VERSION, Generation};
use crate::hash::file_hash;
use crate::llm::{self, Budget, CallJob};
use crate::manifest::{CellSpec, ClassifierKind, Manifest, SynthSpec};
use crate::metrics::{self, Metrics};
use crate::model::fasttext::{self, Trained};
use crate::model::{Scored, encoder_cls};
use crate::progress::Progress;
use crate::report;
use crate::split::{self, SPLIT_VERSION, Split};

pub const EVAL_VERSION: u32 = 2;
const TOP_K: usize = 5;

/// The stage ids every cell shares (load, split).
#[derive(Debug, Clone)]
pub struct Shared {
    pub data_path: PathBuf,
    pub attack_path: Option<PathBuf>,
    pub attack_hash: Option<String>,
    pub load: StageId,
    pub split: StageId,
    /// Where models train; part of the train key when not the CPU.
    pub backend: crate::manifest::Backend,
}

/// The stage ids of one synthetic-data chain.
#[derive(Debug, Clone)]
pub struct SynthStages {
    pub cluster: StageId,
    pub generate: StageId,
    /// The fastText model trained on real data that the `reference` filter asks.
    pub reference: Option<(CellSpec, StageId)>,
    pub filter: StageId,
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
        attack_hash,
        load,
        split,
        backend: m.raw.experiment.backend,
    })
}

/// The reference classifier of the `reference` filter: the default fastText configuration on
/// real data, seeded by the split seed (the same stage as a baseline cell with those settings).
fn reference_cell(m: &Manifest) -> CellSpec {
    let raw = crate::manifest::RawManifest {
        experiment: crate::manifest::Experiment {
            name: "reference".into(),
            seeds: crate::manifest::Grid::One(m.raw.split.seed),
            output_dir: PathBuf::new(),
            backend: m.raw.experiment.backend,
        },
        data: m.raw.data.clone(),
        split: m.raw.split.clone(),
        augment: Default::default(),
        classifier: vec![Default::default()],
        generator: Vec::new(),
    };
    crate::manifest::expand(&raw)
        .into_iter()
        .next()
        .expect("one reference cell")
}

/// The filter stage's id for a generation key (a partial generation has its own key).
fn filter_id(
    m: &Manifest,
    generate_key: &str,
    shared: &Shared,
    reference: Option<&StageId>,
) -> StageId {
    let mut inputs = vec![generate_key, shared.split.key.as_str()];
    if let Some(r) = reference {
        inputs.push(r.key.as_str());
    }
    StageId::new(
        "filter",
        FILTER_VERSION,
        &serde_json::json!({"filter": m.raw.augment.filter}),
        &inputs,
    )
}

pub fn synth_stages(m: &Manifest, shared: &Shared, spec: &SynthSpec) -> SynthStages {
    let a = &m.raw.augment;
    let mut params = serde_json::json!({
        "targets": a.targets,
        "k": spec.k,
        "embedding": a.embedding,
        "representatives": a.representatives,
        "seed": m.raw.split.seed,
    });
    match a.embedding {
        crate::manifest::ClusterEmbedding::TfidfSvd => params["svd_dim"] = a.svd_dim.into(),
        crate::manifest::ClusterEmbedding::Encoder => {
            params["encoder"] = crate::encoder::identity(Path::new(&a.encoder), false)
                .unwrap_or_else(|e| format!("unreadable: {}", e.message))
                .into()
        }
    }
    let cluster = StageId::new("cluster", CLUSTER_VERSION, &params, &[&shared.split.key]);
    let generator = &m.generators[&spec.generator];
    let template = &m.templates[&spec.template];
    // The generator's identity (not its name): a replay shares the entries of what it replays.
    let generate = StageId::new(
        "generate",
        GENERATE_VERSION,
        &serde_json::json!({
            "identity": generator.identity,
            "template": template.hash,
            "per_technique": spec.per_technique,
            "count": a.count,
            "per_call": a.per_call,
            "attack": shared.attack_hash,
        }),
        &[&cluster.key],
    );
    let reference = a.filter.reference_classifier.then(|| {
        let cell = reference_cell(m);
        let id = cell_stages(&cell, shared, None).train;
        (cell, id)
    });
    let filter = filter_id(m, &generate.key, shared, reference.as_ref().map(|r| &r.1));
    SynthStages {
        cluster,
        generate,
        reference,
        filter,
    }
}

/// `k3-cluster-guided-smollm2-n20`: a synthetic chain's settings in a name.
pub fn spec_label(spec: &SynthSpec) -> String {
    format!(
        "k{}-{}-{}-n{}",
        spec.k, spec.template, spec.generator, spec.per_technique
    )
}

/// A cell's stage ids; `synthetic` is the key of the filtered synthetic data it trains on.
pub fn cell_stages(cell: &CellSpec, shared: &Shared, synthetic: Option<&str>) -> CellStages {
    let mut inputs = vec![shared.split.key.as_str()];
    if let Some(k) = synthetic {
        inputs.push(k);
    }
    let mut params = serde_json::json!({
        "classifier": cell.classifier,
        "params": cell.params,
        "seed": cell.seed,
        "augment": cell.augment,
    });
    if !shared.backend.is_cpu() {
        params["backend"] = serde_json::Value::String(shared.backend.as_str().into());
    }
    let version = match cell.params.encoder() {
        None => fasttext::TRAIN_VERSION,
        Some(p) => {
            // The weights (or, from scratch, the tokenizer) the model starts from, by content.
            let tokenizer_only = cell.classifier == ClassifierKind::Transformer;
            let id = crate::encoder::identity(Path::new(&p.model), tokenizer_only)
                .unwrap_or_else(|e| format!("unreadable: {}", e.message));
            params["model_hash"] = serde_json::Value::String(id);
            if cell.classifier == ClassifierKind::EncoderFrozen {
                encoder_cls::HEAD_TRAIN_VERSION
            } else {
                encoder_cls::ENCODER_TRAIN_VERSION
            }
        }
    };
    let train = StageId::new("train", version, &params, &inputs);
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic: Option<SynthSpec>,
    pub stages: Vec<PlanStage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub experiment: String,
    pub manifest: String,
    pub data_file: String,
    pub cache_dir: String,
    pub cells: Vec<PlanCell>,
    /// What the data decides: target techniques, clipped k.
    #[serde(default)]
    pub notes: Vec<String>,
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
            let mut stages = vec![st(&shared.load), st(&shared.split)];
            let synth = c
                .synthetic
                .as_ref()
                .map(|spec| synth_stages(m, shared, spec));
            if let Some(ss) = &synth {
                stages.push(st(&ss.cluster));
                stages.push(st(&ss.generate));
                if let Some((_, r)) = &ss.reference {
                    stages.push(st(r));
                }
                stages.push(st(&ss.filter));
            }
            let cs = cell_stages(c, shared, synth.as_ref().map(|s| s.filter.key.as_str()));
            stages.push(st(&cs.train));
            stages.push(st(&cs.evaluate));
            PlanCell {
                cell: c.name.clone(),
                classifier: c.classifier.as_str().into(),
                augment: c.augment.as_str().into(),
                seed: c.seed,
                params: serde_json::to_value(&c.params).expect("params serialize"),
                synthetic: c.synthetic.clone(),
                stages,
            }
        })
        .collect();
    Ok(Plan {
        experiment: m.raw.experiment.name.clone(),
        manifest: m.source.display().to_string(),
        data_file: shared.data_path.display().to_string(),
        cache_dir: cache.root().display().to_string(),
        cells,
        notes: Vec::new(),
    })
}

/// The plan's notes (target techniques, clipped k): loads and splits the data through the cache.
pub fn plan_notes(m: &Manifest, shared: &Shared, cache: &Cache) -> Result<Vec<String>> {
    if synth_specs(m).is_empty() {
        return Ok(Vec::new());
    }
    let quiet = Progress::new(true);
    let ds = load_dataset(shared, m, cache, &quiet)?;
    let split = split_dataset(shared, m, &ds, cache, &quiet)?;
    Ok(cluster_all(m, shared, &ds, &split, cache)?.1)
}

/// The distinct synthetic chains of the grid, in a fixed order.
pub fn synth_specs(m: &Manifest) -> Vec<SynthSpec> {
    let set: std::collections::BTreeSet<SynthSpec> =
        m.cells.iter().filter_map(|c| c.synthetic.clone()).collect();
    set.into_iter().collect()
}

/// Real train sentences as (text, technique).
fn train_pairs(ds: &Dataset, s: &Split) -> Vec<(String, String)> {
    s.train
        .iter()
        .map(|&i| (ds.examples[i].text.clone(), ds.examples[i].label.clone()))
        .collect()
}

/// The cluster stage of each synthetic chain (cached), and the notes the plan shows: which
/// techniques are targets, and where k was clipped.
pub fn cluster_all(
    m: &Manifest,
    shared: &Shared,
    ds: &Dataset,
    s: &Split,
    cache: &Cache,
) -> Result<(BTreeMap<SynthSpec, Clusters>, Vec<String>)> {
    let mut out = BTreeMap::new();
    let mut notes = Vec::new();
    let specs = synth_specs(m);
    if specs.is_empty() {
        return Ok((out, notes));
    }
    let train = train_pairs(ds, s);
    for spec in specs {
        let ids = synth_stages(m, shared, &spec);
        let (entry, _) = cache.get_or_compute(&ids.cluster, |w| {
            let a = &m.raw.augment;
            let embedder = crate::encoder::Embedder::new(cache.root());
            let device = Device::flex();
            let quiet = Progress::new(true);
            let embed = |texts: &[String]| {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                embedder.embed(Path::new(&a.encoder), 128, &refs, &device, &quiet)
            };
            let with: Option<cluster::Embed> = match a.embedding {
                crate::manifest::ClusterEmbedding::Encoder => Some(&embed),
                crate::manifest::ClusterEmbedding::TfidfSvd => None,
            };
            let c = cluster::cluster_targets(&train, a, spec.k, m.raw.split.seed, with)?;
            w.write_json("clusters.json", &c)
        })?;
        let c: Clusters = entry.read_json("clusters.json")?;
        if c.targets.is_empty() {
            return Err(no_targets(m, &c, &train));
        }
        let label = spec_label(&spec);
        notes.push(format!(
            "{label}: {} target techniques ({}): {}",
            c.targets.len(),
            c.rule,
            c.targets
                .iter()
                .map(|t| format!("{} ({})", t.technique, t.train_count))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        for n in c.clipped_notes() {
            notes.push(format!("{label}: {n}"));
        }
        out.insert(spec, c);
    }
    Ok((out, notes))
}

/// The error for a target rule that selects no technique of the split: synthetic cells would get
/// no data, so the run stops before any work (as `plan` does), naming the rule and the counts.
fn no_targets(m: &Manifest, c: &Clusters, train: &[(String, String)]) -> Error {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, label) in train {
        *counts.entry(label.as_str()).or_insert(0) += 1;
    }
    let fewest = counts
        .iter()
        .min_by_key(|(id, n)| (**n, **id))
        .map(|(id, n)| format!("; the rarest is {id} with {n}"))
        .unwrap_or_default();
    Error::config(format!(
        "{}, key `augment.targets`: the rule ({}) selects none of the {} techniques of the train split{fewest}, so the synthetic cells would get no data; raise `below`, use `quantile`, or `list` techniques that are in the data",
        m.source.display(),
        c.rule,
        counts.len()
    ))
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
    /// Parameters the training updated (the head alone for `encoder-frozen`).
    #[serde(default)]
    pub trained_parameters: usize,
    pub train_key: String,
    pub evaluate_key: String,
    pub metrics: Metrics,
    /// Macro-F1 over the target techniques of `[augment.targets]` only.
    #[serde(default)]
    pub target_macro_f1: Option<f64>,
    /// On augmented cells: the synthetic data it trained on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic: Option<SynthSummary>,
}

/// The synthetic data of an augmented cell, in figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SynthSummary {
    pub k: usize,
    pub template: String,
    pub generator: String,
    pub per_technique: usize,
    pub targets: usize,
    pub requested: usize,
    pub kept: usize,
    pub usage: generate::Usage,
    pub filter_key: String,
}

/// A synthetic chain's result, ready for the cells that train on it.
pub struct SynthReady {
    /// The key the train stage takes as input (the filter stage's).
    pub key: String,
    pub data: Synthetic,
    pub summary: SynthSummary,
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

/// The target techniques of `[augment.targets]` on this split (for the target-only macro-F1).
fn target_techniques(m: &Manifest, ds: &Dataset, s: &Split) -> Vec<String> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for &i in &s.train {
        *counts.entry(ds.examples[i].label.clone()).or_insert(0) += 1;
    }
    cluster::select_targets(&counts, &m.raw.augment.targets).0
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
    embedder: &'a crate::encoder::Embedder,
    targets: &'a [String],
    ds: &'a Dataset,
    split: &'a Split,
    classes: &'a [String],
    index: &'a BTreeMap<String, usize>,
    cache: &'a Cache,
    device: &'a Device,
    progress: &'a Progress,
    shared: &'a Shared,
}

/// A trained classifier of any kind (one per cell at a time, so its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Model {
    FastText(Trained),
    Head {
        head: encoder_cls::Head,
        meta: encoder_cls::HeadMeta,
        log: crate::model::fasttext::TrainLog,
    },
    Seq(encoder_cls::SeqTrained),
}

impl Model {
    fn log(&self) -> &crate::model::fasttext::TrainLog {
        match self {
            Model::FastText(t) => &t.log,
            Model::Head { log, .. } => log,
            Model::Seq(t) => &t.log,
        }
    }

    fn load(kind: ClassifierKind, dir: &Path, device: &Device) -> Result<Self> {
        Ok(match kind {
            ClassifierKind::Fasttext => Model::FastText(Trained::load(dir, device)?),
            ClassifierKind::EncoderFrozen => {
                let (head, meta, log) = encoder_cls::load_head(dir, device)?;
                Model::Head { head, meta, log }
            }
            ClassifierKind::EncoderFinetune | ClassifierKind::Transformer => {
                Model::Seq(encoder_cls::SeqTrained::load(dir, device)?)
            }
        })
    }

    fn predict(&self, cx: &CellCtx, texts: &[&str], top_k: usize) -> Result<Vec<Scored>> {
        match self {
            Model::FastText(t) => Ok(t.predict(texts, cx.device, top_k)),
            Model::Head { head, meta, .. } => {
                let p = &meta.params;
                let emb = cx.embedder.embed(
                    Path::new(&p.model),
                    p.max_length,
                    texts,
                    cx.device,
                    cx.progress,
                )?;
                let rows: Vec<&[f32]> = emb.iter().map(Vec::as_slice).collect();
                Ok(encoder_cls::predict_head(head, &rows, cx.device, top_k))
            }
            Model::Seq(t) => t.predict(texts, cx.device, top_k),
        }
    }
}

/// Train a cell's classifier through the cache; returns the entry, whether it was trained now,
/// and the model when it was.
fn train_model(
    cx: &CellCtx,
    id: &StageId,
    cell: &CellSpec,
    train: &[(&str, usize)],
    what: &str,
) -> Result<(Entry, bool, Option<Model>)> {
    let mut trained_now: Option<Model> = None;
    let (entry, outcome) = cx.cache.get_or_compute(id, |w| {
        let val: Vec<(&str, usize)> = cx.pairs(&cx.split.validation);
        let pb = cx.progress.bar(0, &format!("train {what}"));
        let tick = |step: usize, total: usize, loss: f64| {
            pb.set_length(total as u64);
            pb.set_position(step as u64);
            pb.set_message(format!("loss {loss:.3}"));
        };
        let model = match &cell.params {
            crate::manifest::ModelParams::FastText(p) => {
                let t = fasttext::train(p, cell.seed, cx.classes, train, &val, cx.device, tick)?;
                t.save(&w.path(""))?;
                Model::FastText(t)
            }
            crate::manifest::ModelParams::Encoder(p)
                if cell.classifier == ClassifierKind::EncoderFrozen =>
            {
                let texts: Vec<&str> = train.iter().chain(&val).map(|x| x.0).collect();
                let emb = cx.embedder.embed(
                    Path::new(&p.model),
                    p.max_length,
                    &texts,
                    cx.device,
                    cx.progress,
                )?;
                let (tr, va) = emb.split_at(train.len());
                let tr: Vec<(&[f32], usize)> = tr
                    .iter()
                    .zip(train)
                    .map(|(e, x)| (e.as_slice(), x.1))
                    .collect();
                let va: Vec<(&[f32], usize)> = va
                    .iter()
                    .zip(&val)
                    .map(|(e, x)| (e.as_slice(), x.1))
                    .collect();
                let (head, log) = encoder_cls::train_head(
                    p,
                    cell.seed,
                    cx.classes.len(),
                    &tr,
                    &va,
                    cx.device,
                    tick,
                )?;
                let meta = encoder_cls::HeadMeta {
                    params: p.clone(),
                    classes: cx.classes.to_vec(),
                    dim: emb.first().map(Vec::len).unwrap_or(0),
                };
                encoder_cls::save_head(&head, &meta, &log, &w.path(""))?;
                Model::Head { head, meta, log }
            }
            crate::manifest::ModelParams::Encoder(p) => {
                let t = encoder_cls::train_seq(
                    cell.classifier,
                    p,
                    cell.seed,
                    cx.classes,
                    train,
                    &val,
                    cx.device,
                    tick,
                )?;
                t.save(&w.path(""))?;
                Model::Seq(t)
            }
        };
        pb.finish_and_clear();
        trained_now = Some(model);
        Ok(())
    })?;
    Ok((entry, outcome == Outcome::Computed, trained_now))
}

impl CellCtx<'_> {
    /// Examples as (text, class index).
    fn pairs(&self, idx: &[usize]) -> Vec<(&str, usize)> {
        idx.iter()
            .map(|&i| {
                let e = &self.ds.examples[i];
                (e.text.as_str(), self.index[&e.label])
            })
            .collect()
    }
}

fn run_cell(
    cx: &CellCtx,
    cell: &CellSpec,
    synth: Option<&SynthReady>,
) -> Result<(CellResult, Entry, bool)> {
    let stages = cell_stages(cell, cx.shared, synth.map(|s| s.key.as_str()));
    let mut train: Vec<(&str, usize)> = cx.pairs(&cx.split.train);
    if let Some(s) = synth {
        for (text, label) in s.data.kept() {
            let Some(&l) = cx.index.get(label) else {
                return Err(Error::internal(format!(
                    "synthetic sentence for {label}, a technique not in the split"
                )));
            };
            train.push((text, l));
        }
    }
    let (train_entry, trained, mut trained_now) =
        train_model(cx, &stages.train, cell, &train, &cell.name)?;
    let (eval_entry, _) = cx.cache.get_or_compute(&stages.evaluate, |w| {
        let model = match trained_now.take() {
            Some(t) => t,
            None => Model::load(cell.classifier, &train_entry.dir, cx.device)?,
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
        let scored = model.predict(cx, &texts, TOP_K)?;
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
            train_size: train.len(),
            validation_size: cx.split.validation.len(),
            test_size: test.len(),
            train_seconds: model.log().train_seconds,
            best_epoch: model.log().best_epoch,
            trained_parameters: model.log().parameters,
            train_key: stages.train.key.clone(),
            evaluate_key: stages.evaluate.key.clone(),
            metrics,
            target_macro_f1: None,
            synthetic: None,
        };
        w.write_json("metrics.json", &result)
    })?;
    let mut result: CellResult = eval_entry.read_json("metrics.json")?;
    // The entry may have been made by another experiment whose grid named the same configuration
    // differently: what it computed is shared, how this run names it is not.
    result.cell = cell.clone();
    result.experiment = cx.m.raw.experiment.name.clone();
    result.dataset = dataset_label(cx.m);
    result.train_size = train.len();
    result.target_macro_f1 = target_macro_f1(&result.metrics, cx.targets);
    result.synthetic = synth.map(|s| s.summary.clone());
    Ok((result, eval_entry, trained))
}

/// Macro-F1 over the target techniques that are in the test split.
fn target_macro_f1(m: &Metrics, targets: &[String]) -> Option<f64> {
    let f1s: Vec<f64> = m
        .per_class
        .iter()
        .filter(|c| c.support > 0 && targets.contains(&c.class))
        .map(|c| c.f1)
        .collect();
    (!f1s.is_empty()).then(|| f1s.iter().sum::<f64>() / f1s.len() as f64)
}

/// Run one synthetic chain after its cluster stage: prompts, calls (each through the call
/// cache), parse and filter. A generation with failed or skipped calls is used for this run but
/// not cached as a whole (a rerun retries the missing calls); its sentences get a key of their own.
/// A generation with no answer at all (every call failed or was over budget, or none was planned)
/// is an error: the cells that would train on it fail, saying why.
fn synthesize(
    cx: &CellCtx,
    spec: &SynthSpec,
    clusters: &Clusters,
    catalog: &std::sync::OnceLock<std::result::Result<Catalog, Error>>,
    budgets: &BTreeMap<String, Budget>,
) -> Result<SynthReady> {
    let m = cx.m;
    let ids = synth_stages(m, cx.shared, spec);
    let generator = &m.generators[&spec.generator];
    let template = &m.templates[&spec.template];
    let label = spec_label(spec);
    let (generation, gen_key) = match cx.cache.get(&ids.generate)? {
        Some(entry) => {
            let mut g: Generation = entry.read_json("generation.json")?;
            for c in &mut g.calls {
                if let llm::Outcome::Done { answer } = &c.outcome {
                    c.outcome = llm::Outcome::Cached {
                        answer: answer.clone(),
                    };
                }
            }
            (g, ids.generate.key.clone())
        }
        None => {
            let catalog = catalog
                .get_or_init(|| match &cx.shared.attack_path {
                    Some(p) => Catalog::load(p),
                    None => Err(Error::data("no ATT&CK bundle in the data folder")),
                })
                .as_ref()
                .map_err(Clone::clone)?;
            let a = &m.raw.augment;
            let (planned, requested) = generate::plan_calls(
                clusters,
                catalog,
                template,
                generator,
                spec.per_technique,
                a.count,
                a.per_call,
            )?;
            let jobs: Vec<CallJob> = planned.iter().map(|p| p.job.clone()).collect();
            cx.progress.log(format!(
                "generate {label}: {} calls for {} techniques with {}",
                jobs.len(),
                requested.len(),
                generator.describe()
            ));
            let budget = &budgets[&generator.config.name];
            let outcomes = llm::run_calls(
                generator,
                &jobs,
                cx.cache,
                budget,
                cx.progress,
                &format!("generate {label}"),
            )?;
            let calls: Vec<CallRecord> = planned
                .into_iter()
                .zip(outcomes)
                .map(|(p, outcome)| CallRecord {
                    technique: p.technique,
                    cluster: p.cluster,
                    sample: p.sample,
                    requested: p.requested,
                    prompt_key: p.prompt_key,
                    call_key: p.job.id.key,
                    outcome,
                })
                .collect();
            let g = Generation {
                generator: generator.name.clone(),
                identity: generator.identity.clone(),
                template: template.name.clone(),
                requested,
                calls,
            };
            let u = g.usage();
            let secs: f64 = g
                .calls
                .iter()
                .filter(|c| matches!(c.outcome, llm::Outcome::Done { .. }))
                .filter_map(|c| c.outcome.answer())
                .map(|a| a.seconds)
                .sum();
            let new_tokens: u64 = g
                .calls
                .iter()
                .filter(|c| matches!(c.outcome, llm::Outcome::Done { .. }))
                .filter_map(|c| c.outcome.answer())
                .map(|a| a.completion_tokens)
                .sum();
            cx.progress.log(format!(
                "generate {label}: {} calls: {} made, {} cached, {} failed, {} skipped; {} prompt + {} completion tokens{}{}",
                u.calls,
                u.made,
                u.cached,
                u.failed,
                u.skipped,
                u.prompt_tokens,
                u.completion_tokens,
                if u.estimated_answers > 0 {
                    format!(
                        ", {} of them estimated (no usage from the server for {} of the {} answers)",
                        u.estimated_tokens,
                        u.estimated_answers,
                        u.answered()
                    )
                } else {
                    String::new()
                },
                if u.made > 0 && secs > 0.0 && u.estimated_answers == 0 {
                    format!(" ({:.1} tokens/s over the calls made)", new_tokens as f64 / secs)
                } else {
                    String::new()
                }
            ));
            if g.complete() {
                cx.cache
                    .get_or_compute(&ids.generate, |w| w.write_json("generation.json", &g))?;
                (g, ids.generate.key.clone())
            } else {
                let answered: Vec<&str> = g
                    .calls
                    .iter()
                    .filter(|c| c.outcome.answer().is_some())
                    .map(|c| c.call_key.as_str())
                    .collect();
                let key = crate::hash::stage_key(
                    "generate-partial",
                    GENERATE_VERSION,
                    &serde_json::json!({"answered": answered}),
                    &[&ids.generate.key],
                );
                if !answered.is_empty() {
                    cx.progress.log(format!(
                        "generate {label}: incomplete ({} of {} calls unanswered); this run uses the {} answers it has, nothing partial is cached, and a rerun retries the missing calls",
                        u.failed + u.skipped,
                        u.calls,
                        answered.len()
                    ));
                }
                (g, key)
            }
        }
    };
    // An augmented cell without synthetic data is not a result: no call answered fails the chain.
    if let Some(why) = generation.unanswered() {
        return Err(Error::data(why));
    }
    // The reference classifier, when the filter asks for one.
    let mut reference_model: Option<Trained> = None;
    if let Some((cell, id)) = &ids.reference {
        let train: Vec<(&str, usize)> = cx.pairs(&cx.split.train);
        let (entry, _, now) = train_model(cx, id, cell, &train, "reference classifier")?;
        reference_model = Some(match now {
            Some(Model::FastText(t)) => t,
            _ => Trained::load(&entry.dir, cx.device)?,
        });
    }
    let fid = filter_id(m, &gen_key, cx.shared, ids.reference.as_ref().map(|r| &r.1));
    let (entry, outcome) = cx.cache.get_or_compute(&fid, |w| {
        let train = train_pairs(cx.ds, cx.split);
        let test: Vec<String> = cx
            .split
            .test
            .iter()
            .map(|&i| cx.ds.examples[i].text.clone())
            .collect();
        let predict = |texts: &[&str]| -> Vec<String> {
            let model = reference_model.as_ref().expect("reference model loaded");
            model
                .predict(texts, cx.device, 1)
                .into_iter()
                .map(|s| cx.classes[s.pred].clone())
                .collect()
        };
        let input = FilterInput {
            train: &train,
            test: &test,
            reference: if reference_model.is_some() {
                Some(&predict)
            } else {
                None
            },
        };
        let out = filter::filter(&generation, &input, &m.raw.augment.filter);
        w.write("synthetic.jsonl", out.jsonl().as_bytes())?;
        w.write_json("synthetic.json", &out)
    })?;
    let mut data: Synthetic = entry.read_json("synthetic.json")?;
    // Call counts are this run's (a cached filter entry may come from an earlier run).
    data.usage = generation.usage();
    for st in &data.techniques {
        if st.empty_answers > 0 && outcome == Outcome::Computed {
            cx.progress.log(format!(
                "filter {label}: {}: {} of {} answers had no usable sentence",
                st.technique, st.empty_answers, st.calls
            ));
        }
    }
    let removed: BTreeMap<String, usize> = data
        .techniques
        .iter()
        .flat_map(|t| t.removed.iter())
        .fold(BTreeMap::new(), |mut acc, (k, v)| {
            *acc.entry(k.clone()).or_insert(0) += v;
            acc
        });
    let requested: usize = generation.requested.values().sum();
    cx.progress.log(format!(
        "filter {label}: {} sentences parsed, {} kept of {} requested; removed: {}",
        data.sentences.len(),
        data.kept,
        requested,
        if removed.is_empty() {
            "none".to_string()
        } else {
            removed
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    let summary = SynthSummary {
        k: spec.k,
        template: spec.template.clone(),
        generator: spec.generator.clone(),
        per_technique: spec.per_technique,
        targets: clusters.targets.len(),
        requested,
        kept: data.kept,
        usage: data.usage.clone(),
        filter_key: fid.key.clone(),
    };
    Ok(SynthReady {
        key: fid.key,
        data,
        summary,
    })
}

/// The burn device of a backend.
pub fn device_for(backend: crate::manifest::Backend) -> Result<Device> {
    match backend {
        crate::manifest::Backend::Cpu => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        crate::manifest::Backend::Cuda => Ok(Device::cuda(0)),
        #[cfg(not(feature = "cuda"))]
        crate::manifest::Backend::Cuda => Err(Error::config(
            "`experiment.backend = \"cuda\"` needs a build with the CUDA backend: `cargo build --release --features cuda` (and an NVIDIA driver at run time)",
        )),
    }
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
    let device = device_for(m.raw.experiment.backend)?;
    let progress = Progress::new(opts.quiet);
    cache.sweep_tmp();
    let shared = shared_stages(m)?;
    let ds = load_dataset(&shared, m, cache, &progress)?;
    let split = split_dataset(&shared, m, &ds, cache, &progress)?;
    let (classes, index) = class_index(&ds, &split);
    let (clusters, notes) = cluster_all(m, &shared, &ds, &split, cache)?;
    for n in &notes {
        progress.log(format!("plan: {n}"));
    }
    let mut plan_before = plan(m, &shared, cache)?;
    plan_before.notes = notes;
    let targets = target_techniques(m, &ds, &split);

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

    let embedder = crate::encoder::Embedder::new(cache.root());
    let cx = CellCtx {
        m,
        embedder: &embedder,
        targets: &targets,
        ds: &ds,
        split: &split,
        classes: &classes,
        index: &index,
        cache,
        device: &device,
        progress: &progress,
        shared: &shared,
    };
    // Synthetic data first, one chain at a time (the LLM is the bottleneck); a chain that fails
    // fails the cells that need it, not the run.
    let catalog = std::sync::OnceLock::new();
    let budgets: BTreeMap<String, Budget> = m
        .generators
        .values()
        .map(|g| {
            (
                g.config.name.clone(),
                Budget::new(g.config.budget_calls, g.config.budget_tokens),
            )
        })
        .collect();
    // An augmented cell that gets no synthetic sentence is not a result: a chain whose calls all
    // failed, or whose filters kept nothing, fails its cells (with the figures of why).
    let mut ready: BTreeMap<SynthSpec, std::result::Result<SynthReady, String>> = BTreeMap::new();
    // Chains whose filters kept nothing: failed, but what was parsed and removed is still written.
    let mut unusable: BTreeMap<SynthSpec, Synthetic> = BTreeMap::new();
    for (spec, cl) in &clusters {
        let r = match synthesize(&cx, spec, cl, &catalog, &budgets) {
            Ok(r) => match r.data.nothing_kept() {
                None => Ok(r),
                Some(why) => {
                    unusable.insert(spec.clone(), r.data);
                    Err(why)
                }
            },
            Err(e) => Err(e.message),
        };
        if let Err(why) = &r {
            progress.log(format!("synthetic data {} failed: {why}", spec_label(spec)));
        }
        ready.insert(spec.clone(), r);
    }
    write(
        "synthetic.csv",
        report::synthetic_csv(
            &ready
                .iter()
                .filter_map(|(k, v)| {
                    let data = match v {
                        Ok(r) => Some(&r.data),
                        Err(_) => unusable.get(k),
                    };
                    data.map(|d| (spec_label(k), d))
                })
                .collect::<Vec<_>>(),
        )
        .as_bytes(),
    )?;
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
                    let synth = match &cell.synthetic {
                        None => Ok(None),
                        Some(spec) => match &ready[spec] {
                            Ok(r) => Ok(Some(r)),
                            Err(e) => Err(Error::data(format!(
                                "its synthetic data ({}) failed: {e}",
                                spec_label(spec)
                            ))),
                        },
                    };
                    let r = synth
                        .and_then(|synth| {
                            run_cell(&cx, cell, synth).map(|(res, entry, t)| (res, entry, t, synth))
                        })
                        .and_then(|(res, entry, trained, synth)| {
                            let dir = partial.join("cells").join(&cell.name);
                            write_cell(&res, &entry, &dir)?;
                            if let Some(s) = synth {
                                std::fs::write(dir.join("synthetic.jsonl"), s.data.jsonl())
                                    .io_ctx(ErrorKind::Internal, || {
                                        format!("writing {}/synthetic.jsonl", dir.display())
                                    })?;
                            }
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
                            if let Some(data) =
                                cell.synthetic.as_ref().and_then(|s| unusable.get(s))
                            {
                                let _ = std::fs::write(dir.join("synthetic.jsonl"), data.jsonl());
                            }
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
