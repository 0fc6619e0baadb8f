//! Runs a validated manifest: stage keys, the plan, and each cell's chain through the cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::cache::{Cache, Entry, Outcome, StageId};
use crate::cluster::{self, Clusters};
use crate::data::{self, Catalog, Dataset};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::filter::{self, FilterInput, Synthetic};
use crate::generate::{self, CallRecord, GENERATE_VERSION, Generation};
use crate::llm::{self, Budget, CallJob};
use crate::manifest::{AugmentKind, CellSpec, ClassifierKind, Manifest, SynthSpec};
use crate::metrics::{self, Metrics};
use crate::ml::{Device, TrainContext, device_for};
use crate::progress::Progress;
pub use crate::record::{CellResult, SynthSummary};
use crate::report;
use crate::split::{self, Split};

/// Version of the evaluate stage's output. 3: predictions.jsonl rows carry the source `row` and `group`. 4: macro averages over one class set L, recorded as `macro_classes`. 5: single-label cells are scored on the validation split too (`validation` in metrics.json).
pub const EVAL_VERSION: u32 = 5;
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
    /// On a multi-label task (`data.multi_label = "keep"`), how classifiers output techniques
    /// (`data.multi_label_head`); `None` on a single-label task.
    pub multi_label_head: Option<crate::data::config::MultiLabelHead>,
}

/// The stage ids of one synthetic-data chain.
#[derive(Debug, Clone)]
pub struct SynthStages {
    /// The cluster stage's parameters (its key's input) and id.
    pub cluster_params: cluster::Params,
    pub cluster: StageId,
    pub generate: StageId,
    /// The classifier trained on real data that the `reference` filter asks (see
    /// [`crate::filter::ReferenceClassifier`]), and its train stage.
    pub reference: Option<(CellSpec, StageId)>,
    /// The filter over the first round's answers.
    pub first_filter: StageId,
    /// Each top-up round (`augment.top_up`): its stage, keyed by the generation before it and
    /// that generation's filter entry, and the filter over all answers after it. A round with
    /// nothing to ask is an entry with no calls, so these keys do not depend on the answers.
    pub top_ups: Vec<(StageId, StageId)>,
    /// The filter whose sentences the cells train on: the last round's.
    pub filter: StageId,
}

/// A cell's stage ids.
#[derive(Debug, Clone)]
pub struct CellStages {
    pub train: StageId,
    pub evaluate: StageId,
}

pub fn shared_stages(m: &Manifest) -> Result<Shared> {
    let cfg = &m.data;
    let data_path = data::check_dataset_file(cfg, &m.data_dir)?;
    let attack_path = data::attack_path(cfg, &m.data_dir)?;
    let data_hash = crate::hash::input_hash(&data_path).io_ctx(ErrorKind::Data, || {
        format!("cannot read {}", data_path.display())
    })?;
    let attack_hash = match &attack_path {
        Some(p) => Some(
            crate::hash::input_hash(p)
                .io_ctx(ErrorKind::Data, || format!("cannot read {}", p.display()))?,
        ),
        None => None,
    };
    let load = StageId::of(
        &data::LoadParams::new(cfg, &data_hash, attack_hash.as_deref()),
        &[],
    );
    let split = StageId::of(&m.split, &[&load.key]);
    Ok(Shared {
        data_path,
        attack_path,
        attack_hash,
        load,
        split,
        backend: m.experiment.backend,
        multi_label_head: (cfg.multi_label == crate::data::config::MultiLabelPolicy::Keep)
            .then_some(cfg.multi_label_head),
    })
}

/// The stage ids of replicate manifest `mr` (see [`Manifest::replicate`]): the load stage is
/// every replicate's, the split its own.
pub fn shared_for(mr: &Manifest, shared: &Shared) -> Shared {
    Shared {
        split: StageId::of(&mr.split, &[&shared.load.key]),
        ..shared.clone()
    }
}

/// The stage id of a cheap arm (`oversample`, `attack-description`) on this split; `None` for the
/// other kinds.
pub fn arm_stage(m: &Manifest, shared: &Shared, cell: &CellSpec) -> Option<StageId> {
    let a = &m.augment;
    match cell.augment {
        AugmentKind::Oversample => Some(StageId::of(
            &crate::arms::OversampleParams {
                targets: &a.targets,
                per_technique: cell.oversample.unwrap_or(0),
                count: a.count,
            },
            &[&shared.split.key],
        )),
        AugmentKind::AttackDescription => Some(StageId::of(
            &crate::arms::DescriptionParams {
                targets: &a.targets,
                attack: shared.attack_hash.as_deref().unwrap_or("none"),
            },
            &[&shared.split.key],
        )),
        AugmentKind::None | AugmentKind::Synthetic => None,
    }
}

/// The reference classifier of the `reference` filter (`augment.filter.reference_classifier`):
/// the default configuration of its kind on real data, seeded by the split seed — the same train
/// stage (and so the same cache entry) as a baseline cell with those settings. `encoder-frozen`
/// embeds with `augment.encoder` (all-MiniLM-L6-v2 unless set), which enters the key by content.
/// `None` when the filter is off.
fn reference_cell(m: &Manifest) -> Option<CellSpec> {
    use crate::filter::ReferenceClassifier;
    let classifier = match m.augment.filter.reference_classifier {
        ReferenceClassifier::None => return None,
        ReferenceClassifier::Fasttext => crate::manifest::ClassifierConfig::default(),
        ReferenceClassifier::EncoderFrozen => {
            crate::manifest::ClassifierConfig::EncoderFrozen(crate::ml::config::FrozenConfig {
                model: crate::manifest::Grid::One(m.augment.encoder.clone()),
                ..Default::default()
            })
        }
    };
    let raw = crate::manifest::RawManifest {
        experiment: crate::manifest::Experiment {
            name: "reference".into(),
            seeds: crate::manifest::Grid::One(m.split.seed),
            replicates: 1,
            pin: Vec::new(),
            output_dir: PathBuf::new(),
            backend: m.experiment.backend,
        },
        data: m.data.clone(),
        split: m.split.clone(),
        augment: Default::default(),
        classifier: vec![classifier],
        generator: Vec::new(),
        study: Default::default(),
        evaluate: Vec::new(),
        executor: Default::default(),
    };
    Some(
        crate::manifest::expand(&raw)
            .into_iter()
            .next()
            .expect("one reference cell"),
    )
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
    StageId::of(
        &filter::FilterParams {
            filter: &m.augment.filter,
        },
        &inputs,
    )
}

pub fn synth_stages(m: &Manifest, shared: &Shared, spec: &SynthSpec) -> SynthStages {
    let a = &m.augment;
    let cluster_params = cluster::Params {
        targets: a.targets.clone(),
        k: spec.k,
        representatives: a.representatives,
        seed: m.split.seed,
        embedding: match a.embedding {
            crate::manifest::ClusterEmbedding::TfidfSvd => {
                cluster::EmbeddingParams::TfidfSvd { svd_dim: a.svd_dim }
            }
            crate::manifest::ClusterEmbedding::Encoder => cluster::EmbeddingParams::Encoder {
                model: crate::ml::encoder::identity(Path::new(&a.encoder), false)
                    .unwrap_or_else(|e| format!("unreadable: {}", e.message)),
            },
        },
    };
    let cluster = StageId::of(&cluster_params, &[&shared.split.key]);
    let generator = &m.generators[&spec.generator];
    let template = &m.templates[&spec.template];
    // The generator's identity (not its name): a replay shares the entries of what it replays.
    let generate = StageId::of(
        &generate::GenerateParams {
            identity: &generator.identity,
            template: &template.hash,
            per_technique: spec.per_technique,
            count: a.count,
            per_call: a.per_call,
            attack: shared.attack_hash.as_deref(),
        },
        &[&cluster.key],
    );
    let reference = reference_cell(m).map(|cell| {
        let id = cell_stages(&cell, shared, None).train;
        (cell, id)
    });
    let reference_id = reference.as_ref().map(|r| &r.1);
    let first_filter = filter_id(m, &generate.key, shared, reference_id);
    let mut top_ups: Vec<(StageId, StageId)> = Vec::new();
    for round in 1..=a.top_up {
        let (before, filtered) = match top_ups.last() {
            Some((t, f)) => (t.key.clone(), f.key.clone()),
            None => (generate.key.clone(), first_filter.key.clone()),
        };
        let top = StageId::of(&generate::TopUpParams { round }, &[&before, &filtered]);
        let filter = filter_id(m, &top.key, shared, reference_id);
        top_ups.push((top, filter));
    }
    let filter = top_ups
        .last()
        .map_or_else(|| first_filter.clone(), |(_, f)| f.clone());
    SynthStages {
        cluster_params,
        cluster,
        generate,
        reference,
        first_filter,
        top_ups,
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

/// The train stage's parameters, which are exactly its cache key (inputs: the split's key and,
/// on augmented cells, the filter's): the classifier kind and its settings with the model folder
/// named by content, the training seed, the augmentation, and the backend when not the CPU.
#[derive(Debug, Serialize)]
struct TrainParams {
    /// The trainer's version (the stage version, not part of the parameters' JSON).
    #[serde(skip)]
    version: u32,
    classifier: ClassifierKind,
    params: crate::manifest::ModelParams,
    seed: u64,
    augment: crate::manifest::AugmentKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    backend: Option<&'static str>,
    /// `"real"` on augmented cells: balanced class weights count the real train sentences only
    /// (absent on real-only cells, whose keys are unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    weights_over: Option<&'static str>,
    /// `"sigmoid"` on a multi-label task trained with independent sigmoids
    /// (`data.multi_label_head`); absent with a `none` class and on single-label tasks, whose
    /// keys are unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    multi_label_head: Option<crate::data::config::MultiLabelHead>,
    /// `"train"` for a model that otherwise fits on train + validation (linear) on a multi-label
    /// task: the validation split stays held out for choosing the threshold. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    fit_on: Option<&'static str>,
}

/// Whether a cell's model trains without the validation split although its kind usually fits
/// on it: on a multi-label task, whose threshold is chosen on validation.
fn holds_out_validation(cell: &CellSpec, shared: &Shared) -> bool {
    shared.multi_label_head.is_some()
        && crate::ml::trainer(cell.classifier, &cell.params).fits_validation()
}

impl crate::cache::StageParams for TrainParams {
    const STAGE: &'static str = "train";
    fn version(&self) -> u32 {
        self.version
    }
}

/// The evaluate stage's parameters (inputs: the train and split keys).
#[derive(Debug, Serialize)]
struct EvaluateParams {
    /// Classes kept per prediction in predictions.jsonl.
    top_k: usize,
}

impl crate::cache::StageParams for EvaluateParams {
    const STAGE: &'static str = "evaluate";
    fn version(&self) -> u32 {
        EVAL_VERSION
    }
}

/// A cell's stage ids; `synthetic` is the key of the filtered synthetic data it trains on.
pub fn cell_stages(cell: &CellSpec, shared: &Shared, synthetic: Option<&str>) -> CellStages {
    let mut inputs = vec![shared.split.key.as_str()];
    if let Some(k) = synthetic {
        inputs.push(k);
    }
    // The model folder enters the key by content, never by path: a cache shared between
    // checkouts or machines hits wherever the same weights sit.
    let version = crate::ml::trainer(cell.classifier, &cell.params).version();
    let mut key_params = cell.params.clone();
    if let crate::manifest::ModelParams::Encoder(p) = &mut key_params {
        // The weights (or, from scratch, the tokenizer) the model starts from.
        // A Hub id counts by the files of its resolved snapshot, as a folder does: the revision
        // names them and the hash covers them, so the revision itself stays out of the key.
        let tokenizer_only = cell.classifier == ClassifierKind::Transformer;
        let id = crate::hub::model_dir(p)
            .and_then(|dir| crate::ml::encoder::identity(&dir, tokenizer_only))
            .unwrap_or_else(|e| format!("unreadable: {}", e.message));
        p.model = format!("blake3:{id}");
        p.revision = None;
    }
    let params = TrainParams {
        version,
        classifier: cell.classifier,
        params: key_params,
        seed: cell.seed,
        augment: cell.augment,
        backend: (!shared.backend.is_cpu()).then(|| shared.backend.as_str()),
        weights_over: (cell.augment != AugmentKind::None).then_some("real"),
        multi_label_head: shared
            .multi_label_head
            .filter(|h| *h == crate::data::config::MultiLabelHead::Sigmoid),
        fit_on: holds_out_validation(cell, shared).then_some("train"),
    };
    let train = StageId::of(&params, &inputs);
    let evaluate = StageId::of(
        &EvaluateParams { top_k: TOP_K },
        &[&train.key, &shared.split.key],
    );
    CellStages { train, evaluate }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanStage {
    pub stage: String,
    pub key: String,
    pub cached: bool,
    /// The `[[evaluate]]` set's name, on an `external` stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanCell {
    pub cell: String,
    pub classifier: String,
    pub augment: String,
    pub seed: u64,
    /// The replicate (absent: 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replicate: usize,
    pub params: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic: Option<SynthSpec>,
    pub stages: Vec<PlanStage>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
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

/// `synthcti plan`: every cell and stage key, what is cached, and what the data decides
/// (targets, clipped k) — computed without writing anything (`cache` is opened read-only).
pub fn dry_run(m: &Manifest, cache: &Cache) -> Result<Plan> {
    let shared = shared_stages(m)?;
    let mut plan = plan(m, &shared, cache)?;
    plan.notes = plan_notes(m, &shared, cache)?;
    plan.notes.extend(crate::hub::plan_notes(&m.cells));
    Ok(plan)
}

impl Plan {
    /// The plan as the terminal shows it: a header, the notes, then each cell with its stages'
    /// short keys and whether they are cached.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "experiment {} ({} cells)\ndata  {}\ncache {}",
            self.experiment,
            self.cells.len(),
            self.data_file,
            self.cache_dir
        );
        for n in &self.notes {
            let _ = writeln!(out, "note  {n}");
        }
        for c in &self.cells {
            let _ = writeln!(
                out,
                "\n{}  [{} seed {} augment {}]",
                c.cell, c.classifier, c.seed, c.augment
            );
            if let Some(s) = &c.synthetic {
                let _ = writeln!(out, "  synthetic {}", spec_label(s));
            }
            let _ = writeln!(out, "  params {}", c.params);
            for s in &c.stages {
                let _ = writeln!(
                    out,
                    "  {:<9} {}  {}{}",
                    s.stage,
                    &s.key[..16],
                    if s.cached { "cached" } else { "to run" },
                    s.set
                        .as_ref()
                        .map(|n| format!("  [{n}]"))
                        .unwrap_or_default()
                );
            }
        }
        out
    }
}

pub fn plan(m: &Manifest, shared: &Shared, cache: &Cache) -> Result<Plan> {
    let st = |id: &StageId| PlanStage {
        stage: id.stage.to_string(),
        key: id.key.clone(),
        cached: cache.contains(id),
        set: None,
    };
    let externals = external_sets(m)?;
    let mut cells = Vec::new();
    for r in 0..m.replicates() {
        let mr = m.replicate(r);
        let shared = &shared_for(&mr, shared);
        for c in &mr.cells {
            let mut stages = vec![st(&shared.load), st(&shared.split)];
            let synth = c
                .synthetic
                .as_ref()
                .map(|spec| synth_stages(&mr, shared, spec));
            if let Some(ss) = &synth {
                stages.push(st(&ss.cluster));
                stages.push(st(&ss.generate));
                if let Some((_, r)) = &ss.reference {
                    stages.push(st(r));
                }
                stages.push(st(&ss.first_filter));
                for (top, filter) in &ss.top_ups {
                    stages.push(st(top));
                    stages.push(st(filter));
                }
            }
            let arm = arm_stage(&mr, shared, c);
            if let Some(a) = &arm {
                stages.push(st(a));
            }
            let added = synth
                .as_ref()
                .map(|s| s.filter.key.as_str())
                .or(arm.as_ref().map(|a| a.key.as_str()));
            let cs = cell_stages(c, shared, added);
            stages.push(st(&cs.train));
            stages.push(st(&cs.evaluate));
            for x in &externals {
                stages.push(PlanStage {
                    set: Some(x.set.name.clone()),
                    ..st(&x.stage(shared, &cs.train.key))
                });
            }
            cells.push(PlanCell {
                cell: c.name.clone(),
                classifier: c.classifier.as_str().into(),
                augment: c.augment.as_str().into(),
                seed: c.seed,
                replicate: c.replicate,
                params: serde_json::to_value(&c.params).expect("params serialize"),
                synthetic: c.synthetic.clone(),
                stages,
            });
        }
    }
    Ok(Plan {
        experiment: m.experiment.name.clone(),
        manifest: m.source.display().to_string(),
        data_file: shared.data_path.display().to_string(),
        cache_dir: cache.root().display().to_string(),
        cells,
        notes: Vec::new(),
    })
}

/// The plan's notes (target techniques, clipped k), as a dry run: stages found in the cache are
/// read from it, the others (load, split) are computed in memory; nothing is written to the
/// cache, and nothing is embedded, clustered, generated or trained.
pub fn plan_notes(m: &Manifest, shared: &Shared, cache: &Cache) -> Result<Vec<String>> {
    if synth_specs(m).is_empty() {
        return Ok(Vec::new());
    }
    let ds: Dataset = match cache.get(&shared.load)? {
        Some(e) => e.read_json("dataset.json")?,
        None => compute_dataset(shared, m)?,
    };
    let mut notes = Vec::new();
    for r in 0..m.replicates() {
        let mr = m.replicate(r);
        let sh = shared_for(&mr, shared);
        let mut n = replicate_notes(&mr, &sh, cache, &ds)?;
        if m.replicates() > 1 {
            n = n
                .into_iter()
                .map(|x| format!("replicate {r}: {x}"))
                .collect();
        }
        notes.extend(n);
    }
    Ok(notes)
}

/// [`plan_notes`] for one replicate's manifest.
fn replicate_notes(
    m: &Manifest,
    shared: &Shared,
    cache: &Cache,
    ds: &Dataset,
) -> Result<Vec<String>> {
    let specs = synth_specs(m);
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let s: Split = match cache.get(&shared.split)? {
        Some(e) => e.read_json("split.json")?,
        None => split::split(ds, &m.split)?,
    };
    let counts = train_counts(ds, &s);
    let mut notes = Vec::new();
    for spec in specs {
        let ids = synth_stages(m, shared, &spec);
        let label = spec_label(&spec);
        let c = match cache.get(&ids.cluster)? {
            Some(e) => e.read_json::<Clusters>("clusters.json")?,
            None => {
                // What the cluster stage will decide, from the train counts alone.
                let (targets, rule) = cluster::select_targets(&counts, &m.augment.targets);
                Clusters {
                    rule,
                    targets: targets
                        .into_iter()
                        .map(|t| {
                            let n = counts.get(&t).copied().unwrap_or(0);
                            cluster::TechniqueClusters {
                                technique: t,
                                train_count: n,
                                k_requested: spec.k,
                                k: spec.k.clamp(1, n.max(1)),
                                texts: Vec::new(),
                                clusters: Vec::new(),
                            }
                        })
                        .collect(),
                }
            }
        };
        if c.targets.is_empty() {
            return Err(no_targets(m, &c, &counts));
        }
        notes.extend(cluster_notes(&label, &c));
    }
    Ok(notes)
}

/// The plan's lines for one synthetic chain's clusters: its targets, and where k was clipped.
fn cluster_notes(label: &str, c: &Clusters) -> Vec<String> {
    let mut notes = vec![format!(
        "{label}: {} target techniques ({}): {}",
        c.targets.len(),
        c.rule,
        c.targets
            .iter()
            .map(|t| format!("{} ({})", t.technique, t.train_count))
            .collect::<Vec<_>>()
            .join(", ")
    )];
    notes.extend(
        c.clipped_notes()
            .into_iter()
            .map(|n| format!("{label}: {n}")),
    );
    notes
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
            let a = &m.augment;
            let embedder = crate::ml::encoder::Embedder::new(cache.root());
            let device = Device::flex();
            let quiet = Progress::new(true);
            let embed = |texts: &[String]| {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                embedder.embed(Path::new(&a.encoder), 128, &refs, &device, &quiet)
            };
            let with: Option<cluster::Embed> = match ids.cluster_params.embedding {
                cluster::EmbeddingParams::Encoder { .. } => Some(&embed),
                cluster::EmbeddingParams::TfidfSvd { .. } => None,
            };
            let c = cluster::cluster_targets(&train, &ids.cluster_params, with)?;
            w.write_json("clusters.json", &c)
        })?;
        let c: Clusters = entry.read_json("clusters.json")?;
        if c.targets.is_empty() {
            return Err(no_targets(m, &c, &train_counts(ds, s)));
        }
        notes.extend(cluster_notes(&spec_label(&spec), &c));
        out.insert(spec, c);
    }
    Ok((out, notes))
}

/// The error for a target rule that selects no technique of the split: synthetic cells would get
/// no data, so the run stops before any work (as `plan` does), naming the rule and the counts.
fn no_targets(m: &Manifest, c: &Clusters, counts: &BTreeMap<String, usize>) -> Error {
    let fewest = counts
        .iter()
        .min_by_key(|(id, n)| (**n, *id))
        .map(|(id, n)| format!("; the rarest is {id} with {n}"))
        .unwrap_or_default();
    Error::config(format!(
        "{}, key `augment.targets`: the rule ({}) selects none of the {} techniques of the train split{fewest}, so the synthetic cells would get no data; raise `below`, use `quantile`, or `list` techniques that are in the data",
        m.source.display(),
        c.rule,
        counts.len()
    ))
}

/// Train sentences per technique.
fn train_counts(ds: &Dataset, s: &Split) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for &i in &s.train {
        *counts.entry(ds.examples[i].label.clone()).or_insert(0) += 1;
    }
    counts
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
    /// The example's position in the source file (see `data::Example::row`).
    row: usize,
    /// Its group (the report it comes from), when the data has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
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
    /// One task of a Slurm job array (`synthcti task`): `out` is the task's own folder inside
    /// the run folder; the split files, provenance and `latest` link are the submitter's.
    pub task: bool,
}

pub struct RunOutcome {
    pub run_dir: PathBuf,
    pub results: Vec<CellResult>,
    pub failed: Vec<(String, String)>,
    pub trained: usize,
    pub cached: usize,
}

/// The load stage's computation: the dataset file (and ATT&CK bundle) read and cleaned.
pub(crate) fn compute_dataset(shared: &Shared, m: &Manifest) -> Result<Dataset> {
    let catalog = match &shared.attack_path {
        Some(p) => Some(Catalog::load(p)?),
        None => None,
    };
    data::load(&m.data, &shared.data_path, catalog.as_ref())
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
        let ds = compute_dataset(shared, m)?;
        sp.finish_and_clear();
        w.write_json("dataset.json", &ds)
    })?;
    let ds: Dataset = entry.read_json("dataset.json")?;
    let s = &ds.stats;
    // Every run folder's log accounts for its data, also when the load came from the cache.
    let cached = if outcome == Outcome::Hit {
        " (from the cache)"
    } else {
        ""
    };
    progress.log(format!(
        "load: {}{}{cached}",
        s.account().line(),
        s.labels_note(&m.data)
    ));
    for note in s
        .technique_notes(&m.data)
        .into_iter()
        .chain(s.long_text_note())
    {
        progress.log(format!("load: {note}"));
    }
    if shared.attack_path.is_none() && m.data.attack == crate::data::config::AttackSource::Auto {
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
        let s = split::split(ds, &m.split)?;
        w.write_json("split.json", &s)
    })?;
    let s: Split = entry.read_json("split.json")?;
    for w in &s.warnings {
        progress.log(format!("split: warning: {w}"));
    }
    progress.log(format!(
        "split: {} train, {} validation, {} test ({:?}, seed {}){}",
        s.train.len(),
        s.validation.len(),
        s.test.len(),
        m.split.method,
        m.split.seed,
        if outcome == Outcome::Hit {
            " (from the cache)"
        } else {
            ""
        }
    ));
    Ok(s)
}

/// The target techniques of `[augment.targets]` on this split (for the target-only macro-F1).
fn target_techniques(m: &Manifest, ds: &Dataset, s: &Split) -> Vec<String> {
    cluster::select_targets(&train_counts(ds, s), &m.augment.targets).0
}

/// Classes in a fixed order: every label of the split, sorted (on a multi-label task each label
/// of a row, and `none` for negatives).
fn class_index(ds: &Dataset, s: &Split) -> (Vec<String>, BTreeMap<String, usize>) {
    let mut set = std::collections::BTreeSet::new();
    for &i in s.train.iter().chain(&s.validation).chain(&s.test) {
        set.extend(ds.examples[i].gold().into_iter().map(str::to_string));
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
    embedder: &'a crate::ml::encoder::Embedder,
    targets: &'a [String],
    ds: &'a Dataset,
    split: &'a Split,
    classes: &'a [String],
    index: &'a BTreeMap<String, usize>,
    cache: &'a Cache,
    device: &'a Device,
    progress: &'a Progress,
    shared: &'a Shared,
    /// The replicate, when the run has several (`experiment.replicates` > 1): its chains' labels
    /// in the log and `timings.json` carry it ([`CellCtx::chain_label`]).
    replicate: Option<usize>,
}

impl CellCtx<'_> {
    /// A synthetic chain's label ([`spec_label`]), prefixed `r<replicate>-` when the run has
    /// several replicates (as `synthetic.csv` names chains), so that each replicate's generate
    /// lines and times read apart.
    fn chain_label(&self, spec: &SynthSpec) -> String {
        match self.replicate {
            Some(r) => format!("r{r}-{}", spec_label(spec)),
            None => spec_label(spec),
        }
    }
}

/// A classifier trained in this process (not read back from the cache).
type TrainedNow = Box<dyn crate::ml::Classifier>;

/// Train a cell's classifier through the cache; returns the entry, whether it was trained now,
/// and the model when it was.
fn train_model(
    cx: &CellCtx,
    id: &StageId,
    cell: &CellSpec,
    train: &[(&str, usize)],
    real: usize,
    what: &str,
) -> Result<(Entry, bool, Option<TrainedNow>)> {
    let trainer = crate::ml::trainer(cell.classifier, &cell.params);
    let mut trained_now = None;
    let (entry, outcome) = cx.cache.get_or_compute(id, |w| {
        let pb = cx.progress.bar(0, &format!("train {what}"));
        let mut tick = |step: usize, total: usize, loss: f64| {
            pb.set_length(total as u64);
            pb.set_position(step as u64);
            pb.set_message(format!("loss {loss:.3}"));
        };
        // A kind that fits on validation too (linear) leaves it out on a multi-label task, so
        // the threshold is chosen on sentences the model has not seen.
        let validation: &[usize] = if holds_out_validation(cell, cx.shared) {
            &[]
        } else {
            &cx.split.validation
        };
        let model =
            if cx.shared.multi_label_head == Some(crate::data::config::MultiLabelHead::Sigmoid) {
                // One row per sentence with its technique set (multi-label tasks refuse
                // augmentation, so `train` holds the real split only).
                trainer.train_sigmoid(
                    &cx.tcx(),
                    cell.seed,
                    cx.classes,
                    &cx.sets(&cx.split.train),
                    &cx.sets(validation),
                    &mut tick,
                )?
            } else {
                let val: Vec<(&str, usize)> = cx.pairs(validation);
                trainer.train(
                    &cx.tcx(),
                    cell.seed,
                    cx.classes,
                    train,
                    real,
                    &val,
                    &mut tick,
                )?
            };
        model.save(&w.path(""))?;
        pb.finish_and_clear();
        trained_now = Some(model);
        Ok(())
    })?;
    Ok((entry, outcome == Outcome::Computed, trained_now))
}

impl CellCtx<'_> {
    /// What the trainers and classifiers may use.
    fn tcx(&self) -> TrainContext<'_> {
        TrainContext {
            device: self.device,
            embedder: self.embedder,
            progress: self.progress,
        }
    }

    /// Rows as (text, technique indices without `none`), for sigmoid heads.
    fn sets(&self, idx: &[usize]) -> Vec<(&str, Vec<usize>)> {
        crate::multilabel::gold_sets(self.ds, idx, self.index)
            .into_iter()
            .zip(idx)
            .map(|(s, &i)| (self.ds.examples[i].text.as_str(), s))
            .collect()
    }

    /// Examples as (text, class index); on a multi-label task a pair per label of a row (see
    /// [`crate::multilabel`]).
    fn pairs(&self, idx: &[usize]) -> Vec<(&str, usize)> {
        idx.iter()
            .flat_map(|&i| {
                let e = &self.ds.examples[i];
                e.gold()
                    .into_iter()
                    .map(|l| (e.text.as_str(), self.index[l]))
            })
            .collect()
    }
}

/// What an augmented cell adds to the real train split: the key of the stage that made it (the
/// train stage's input), the (text, technique) pairs, and for synthetic cells their figures.
pub struct AddedData {
    pub key: String,
    pub pairs: Vec<(String, String)>,
    pub synthetic: Option<SynthSummary>,
}

impl AddedData {
    fn of_synthetic(r: &SynthReady) -> Self {
        AddedData {
            key: r.key.clone(),
            pairs: r
                .data
                .kept()
                .map(|(t, l)| (t.to_string(), l.to_string()))
                .collect(),
            synthetic: Some(r.summary.clone()),
        }
    }
}

fn run_cell(
    cx: &CellCtx,
    cell: &CellSpec,
    added: Option<&AddedData>,
) -> Result<(CellResult, Entry, bool)> {
    let stages = cell_stages(cell, cx.shared, added.map(|s| s.key.as_str()));
    let mut train: Vec<(&str, usize)> = cx.pairs(&cx.split.train);
    let real = train.len();
    if let Some(s) = added {
        for (text, label) in &s.pairs {
            let Some(&l) = cx.index.get(label) else {
                return Err(Error::internal(format!(
                    "an added sentence for {label}, a technique not in the split"
                )));
            };
            train.push((text, l));
        }
    }
    let (train_entry, trained, mut trained_now) =
        train_model(cx, &stages.train, cell, &train, real, &cell.name)?;
    let (eval_entry, _) = cx.cache.get_or_compute(&stages.evaluate, |w| {
        let model = match trained_now.take() {
            Some(t) => t,
            None => crate::ml::trainer(cell.classifier, &cell.params)
                .load(&cx.tcx(), &train_entry.dir)?,
        };
        if cx.ds.multi_label {
            return evaluate_multi_label(cx, cell, &stages, model.as_ref(), train.len(), w);
        }
        let test = &cx.split.test;
        let texts: Vec<&str> = test
            .iter()
            .map(|&i| cx.ds.examples[i].text.as_str())
            .collect();
        let gold: Vec<usize> = test
            .iter()
            .map(|&i| cx.index[&cx.ds.examples[i].label])
            .collect();
        let scored = model.predict(&cx.tcx(), &texts, TOP_K)?;
        let pred: Vec<usize> = scored.iter().map(|s| s.pred).collect();
        // L: every class with a test sentence, so each cell of the split averages the same set.
        let mut labels = gold.clone();
        labels.sort_unstable();
        labels.dedup();
        let metrics = metrics::evaluate_over(&gold, &pred, cx.classes, &labels, 20);
        // A model fitted on the validation sentences (linear) has no held-out validation figure.
        let validation = if crate::ml::trainer(cell.classifier, &cell.params).fits_validation() {
            None
        } else {
            score_validation(cx, model.as_ref())?
        };
        let mut lines = String::new();
        for (((t, g), s), &i) in texts.iter().zip(&gold).zip(&scored).zip(test) {
            let ex = &cx.ds.examples[i];
            let p = Prediction {
                row: ex.row,
                group: ex.group.as_deref(),
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
            experiment: cx.m.experiment.name.clone(),
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
            target_classes: Vec::new(),
            train_counts: BTreeMap::new(),
            synthetic: None,
            added: 0,
            multi_label: None,
            validation,
            external: Vec::new(),
        };
        w.write_json("metrics.json", &result)
    })?;
    let mut result: CellResult = eval_entry.read_json("metrics.json")?;
    // The entry may have been made by another experiment whose grid named the same configuration
    // differently: what it computed is shared, how this run names it is not.
    result.cell = cell.clone();
    result.experiment = cx.m.experiment.name.clone();
    result.dataset = dataset_label(cx.m);
    result.train_size = train.len();
    result.target_macro_f1 = target_macro_f1(&result.metrics, cx.targets);
    result.target_classes = cx
        .targets
        .iter()
        .filter(|t| result.metrics.macro_classes.contains(t))
        .cloned()
        .collect();
    if let Some(v) = &mut result.validation {
        // The targets are this run's (as for test): the entry may come from another grid.
        v.target_macro_f1 = target_macro_f1(&v.metrics, cx.targets);
    }
    result.synthetic = added.and_then(|s| s.synthetic.clone());
    result.added = added.map(|s| s.pairs.len()).unwrap_or(0);
    result.train_counts = cx.split.train.iter().fold(BTreeMap::new(), |mut m, &i| {
        for l in cx.ds.examples[i].gold() {
            *m.entry(l.to_string()).or_insert(0) += 1;
        }
        m
    });
    result.external = evaluate_external(cx, cell, &stages.train.key, &train_entry.dir)?;
    Ok((result, eval_entry, trained))
}

/// An `[[evaluate]]` set with what its `external` stage key reads besides the train key: how it
/// is loaded, its file and the file's content hash.
struct ExternalSet<'a> {
    set: &'a crate::external::EvalSetConfig,
    cfg: crate::data::config::DataConfig,
    path: PathBuf,
    hash: String,
}

impl ExternalSet<'_> {
    /// The `external` stage of scoring the model `train_key` on this set.
    fn stage(&self, shared: &Shared, train_key: &str) -> StageId {
        crate::external::stage_id(
            &self.cfg,
            self.set.unknown_labels,
            &self.hash,
            shared.attack_hash.as_deref(),
            train_key,
        )
    }
}

/// The manifest's `[[evaluate]]` sets, each file hashed once.
fn external_sets(m: &Manifest) -> Result<Vec<ExternalSet<'_>>> {
    m.evaluate
        .iter()
        .map(|set| {
            let path = set.path(&m.data_dir);
            let hash = crate::hash::file_hash(&path).io_ctx(ErrorKind::Data, || {
                format!("cannot read {}", path.display())
            })?;
            Ok(ExternalSet {
                set,
                cfg: set.data_config(&m.data),
                path,
                hash,
            })
        })
        .collect()
}

/// Score a trained cell on every `[[evaluate]]` set, each through its own `external` stage
/// ([`crate::external`]); the model is loaded only when some set is not in the cache.
fn evaluate_external(
    cx: &CellCtx,
    cell: &CellSpec,
    train_key: &str,
    train_dir: &Path,
) -> Result<Vec<crate::external::ExternalResult>> {
    let mut out = Vec::new();
    let mut model: Option<TrainedNow> = None;
    let mut catalog: Option<Option<Catalog>> = None;
    for x in external_sets(cx.m)? {
        let (set, cfg, path) = (x.set, &x.cfg, &x.path);
        let id = x.stage(cx.shared, train_key);
        let (entry, _) = cx.cache.get_or_compute(&id, |w| {
            if catalog.is_none() {
                catalog = Some(match &cx.shared.attack_path {
                    Some(p) => Some(Catalog::load(p)?),
                    None => None,
                });
            }
            let ds = data::load(cfg, path, catalog.as_ref().and_then(Option::as_ref))?;
            if model.is_none() {
                model = Some(
                    crate::ml::trainer(cell.classifier, &cell.params).load(&cx.tcx(), train_dir)?,
                );
            }
            let m = model.as_ref().expect("loaded above");
            let mut predict = |texts: &[&str]| -> Result<Vec<usize>> {
                Ok(m.predict(&cx.tcx(), texts, 1)?
                    .into_iter()
                    .map(|s| s.pred)
                    .collect())
            };
            let r = crate::external::score(set, &ds, cx.classes, &mut predict, &id.key)?;
            w.write_json("external.json", &r)
        })?;
        let mut r: crate::external::ExternalResult = entry.read_json("external.json")?;
        r.name = set.name.clone();
        r.file = set.file.clone();
        cx.progress.log(format!(
            "external {} on {}: macro-F1 {:.4}, micro-F1 {:.4} over {} rows; {} rows with labels the model lacks ({}: {})",
            r.name,
            cell.name,
            r.metrics.macro_f1,
            r.metrics.micro_f1,
            r.scored,
            r.unknown_rows,
            set.unknown_labels.as_str(),
            if set.unknown_labels == crate::external::UnknownLabels::Skip {
                "skipped"
            } else {
                "scored as misses"
            }
        ));
        out.push(r);
    }
    Ok(out)
}

/// A multi-label prediction line of `predictions.jsonl`: gold and predicted technique sets at
/// the validation threshold, and the top scores.
#[derive(Serialize)]
struct MultiPrediction<'a> {
    row: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
    text: &'a str,
    gold: Vec<&'a str>,
    pred: Vec<&'a str>,
    top: Vec<(&'a str, f32)>,
}

/// The evaluate stage of a multi-label cell ([`crate::multilabel`]): the threshold chosen on
/// validation, then every figure on test at it; writes `predictions.jsonl` and `metrics.json`.
fn evaluate_multi_label(
    cx: &CellCtx,
    cell: &CellSpec,
    stages: &CellStages,
    model: &dyn crate::ml::Classifier,
    train_size: usize,
    w: &crate::cache::EntryWriter,
) -> Result<()> {
    use crate::multilabel as ml;
    let n = cx.classes.len();
    let none = ml::none_index(cx.classes);
    let probs = |idx: &[usize]| -> Result<Vec<Vec<f32>>> {
        let texts: Vec<&str> = idx
            .iter()
            .map(|&i| cx.ds.examples[i].text.as_str())
            .collect();
        Ok(model
            .predict(&cx.tcx(), &texts, n)?
            .into_iter()
            .map(|s| {
                let mut row = vec![0f32; n];
                for (k, v) in s.top {
                    row[k] = v;
                }
                row
            })
            .collect())
    };
    let (val, test) = (&cx.split.validation, &cx.split.test);
    let chosen = ml::choose_threshold(&probs(val)?, &ml::gold_sets(cx.ds, val, cx.index), none);
    let test_probs = probs(test)?;
    let gold = ml::gold_sets(cx.ds, test, cx.index);
    let pred: Vec<Vec<usize>> = test_probs
        .iter()
        .map(|r| ml::decide(r, chosen.threshold, none))
        .collect();
    let groups: Vec<Option<&str>> = test
        .iter()
        .map(|&i| cx.ds.examples[i].group.as_deref())
        .collect();
    let (metrics, mut figures) = ml::evaluate(&gold, &pred, &groups, cx.classes, none, chosen);
    figures.rule = ml::threshold_rule(cx.shared.multi_label_head.unwrap_or_default()).to_string();
    let mut lines = String::new();
    for (((&i, g), p), row) in test.iter().zip(&gold).zip(&pred).zip(&test_probs) {
        let ex = &cx.ds.examples[i];
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        order.truncate(TOP_K);
        let line = MultiPrediction {
            row: ex.row,
            group: ex.group.as_deref(),
            text: &ex.text,
            gold: g.iter().map(|&k| cx.classes[k].as_str()).collect(),
            pred: p.iter().map(|&k| cx.classes[k].as_str()).collect(),
            top: order
                .iter()
                .map(|&k| (cx.classes[k].as_str(), row[k]))
                .collect(),
        };
        lines.push_str(&serde_json::to_string(&line).expect("prediction serializes"));
        lines.push('\n');
    }
    w.write("predictions.jsonl", lines.as_bytes())?;
    let result = CellResult {
        cell: cell.clone(),
        experiment: cx.m.experiment.name.clone(),
        dataset: dataset_label(cx.m),
        train_size,
        validation_size: val.len(),
        test_size: test.len(),
        train_seconds: model.log().train_seconds,
        best_epoch: model.log().best_epoch,
        trained_parameters: model.log().parameters,
        train_key: stages.train.key.clone(),
        evaluate_key: stages.evaluate.key.clone(),
        metrics,
        target_macro_f1: None,
        target_classes: Vec::new(),
        synthetic: None,
        added: 0,
        train_counts: Default::default(),
        multi_label: Some(figures),
        validation: None,
        external: Vec::new(),
    };
    w.write_json("metrics.json", &result)
}

/// A single-label model's figures on the validation split (`None` when it is empty): macro
/// averages over the classes with a validation sentence, as test's run over those with a test
/// sentence. The target-only figure is filled in by the caller, whose targets are this run's.
fn score_validation(
    cx: &CellCtx,
    model: &dyn crate::ml::Classifier,
) -> Result<Option<crate::record::ValidationScore>> {
    let val = &cx.split.validation;
    if val.is_empty() {
        return Ok(None);
    }
    let texts: Vec<&str> = val
        .iter()
        .map(|&i| cx.ds.examples[i].text.as_str())
        .collect();
    let gold: Vec<usize> = val
        .iter()
        .map(|&i| cx.index[&cx.ds.examples[i].label])
        .collect();
    let pred: Vec<usize> = model
        .predict(&cx.tcx(), &texts, 1)?
        .iter()
        .map(|s| s.pred)
        .collect();
    let mut labels = gold.clone();
    labels.sort_unstable();
    labels.dedup();
    Ok(Some(crate::record::ValidationScore {
        metrics: metrics::evaluate_over(&gold, &pred, cx.classes, &labels, 20),
        target_macro_f1: None,
    }))
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
    // Prompt states kept for this generation and its top-up rounds only: another chain's
    // generation never depends on what this one evaluated.
    let generator = &m.generators[&spec.generator].with_fresh_prompt_states();
    let template = &m.templates[&spec.template];
    let label = cx.chain_label(spec);
    let load_catalog = || {
        catalog
            .get_or_init(|| match &cx.shared.attack_path {
                Some(p) => Catalog::load(p),
                None => Err(Error::data("no ATT&CK bundle in the data folder")),
            })
            .as_ref()
            .map_err(Clone::clone)
    };
    let (generation, gen_key) = match cx.cache.get(&ids.generate)? {
        Some(entry) => {
            let mut g: Generation = entry.read_json("generation.json")?;
            mark_cached(&mut g.calls);
            let u = g.usage();
            cx.progress.log(format!(
                "generate {label}: {} calls for {} techniques, {} prompt + {} completion tokens (from the cache)",
                u.calls,
                g.requested.len(),
                u.prompt_tokens,
                u.completion_tokens
            ));
            (g, ids.generate.key.clone())
        }
        None => {
            let catalog = load_catalog()?;
            let a = &m.augment;
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
            let started = std::time::Instant::now();
            let outcomes = llm::run_calls(
                generator,
                &jobs,
                cx.cache,
                budget,
                cx.progress,
                &format!("generate {label}"),
            )?;
            let calls = generate::records(planned, outcomes);
            let g = Generation {
                generator: generator.name.clone(),
                identity: generator.identity.clone(),
                template: template.name.clone(),
                requested,
                calls,
            };
            let u = g.usage();
            // Wall time of the calls made: an answer's `seconds` is its batch's (parallel
            // sequences) or overlaps others (concurrent requests), so their sum is not the time.
            let secs = started.elapsed().as_secs_f64();
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
                    // A local model loads in the stage; a remote one's time is the server's and
                    // the network's. Short stages (a test server) get a decimal.
                    format!(
                        " ({:.1} completion tokens/s over the stage's {}{})",
                        new_tokens as f64 / secs,
                        if secs < 10.0 {
                            format!("{secs:.1} s")
                        } else {
                            format!("{secs:.0} s")
                        },
                        if generator.provider == llm::config::ProviderKind::Local {
                            ", model load included"
                        } else {
                            ""
                        }
                    )
                } else {
                    String::new()
                }
            ));
            if g.complete() {
                cx.cache
                    .get_or_compute(&ids.generate, |w| w.write_json("generation.json", &g))?;
                (g, ids.generate.key.clone())
            } else {
                let key = partial_key(&g, &ids.generate.key);
                if u.answered() > 0 {
                    cx.progress.log(format!(
                        "generate {label}: incomplete ({} of {} calls unanswered); this run uses the {} answers it has, nothing partial is cached, and a rerun retries the missing calls",
                        u.failed + u.skipped,
                        u.calls,
                        u.answered()
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
    // The reference classifier, when the filter asks for one: trained through the cache (the
    // entry a baseline cell with the same settings uses), or read back from it.
    let mut reference_model: Option<TrainedNow> = None;
    if let Some((cell, id)) = &ids.reference {
        let train: Vec<(&str, usize)> = cx.pairs(&cx.split.train);
        let what = format!(
            "reference classifier ({})",
            m.augment.filter.reference_classifier.as_str()
        );
        let (entry, _, now) = train_model(cx, id, cell, &train, train.len(), &what)?;
        reference_model = Some(match now {
            Some(model) => model,
            None => {
                crate::ml::trainer(cell.classifier, &cell.params).load(&cx.tcx(), &entry.dir)?
            }
        });
    }
    let run_filter = |generation: &Generation, fid: &StageId| {
        cx.cache.get_or_compute(fid, |w| {
            let train = train_pairs(cx.ds, cx.split);
            let test: Vec<String> = cx
                .split
                .test
                .iter()
                .map(|&i| cx.ds.examples[i].text.clone())
                .collect();
            // The filter asks for predictions it cannot fail on; a prediction that fails (an
            // unreadable model file) is kept here and fails the stage after the filter returns, so
            // nothing is cached from it.
            let failed: Mutex<Option<Error>> = Mutex::new(None);
            let predict = |texts: &[&str]| -> Vec<String> {
                let model = reference_model.as_ref().expect("reference model loaded");
                match model.predict(&cx.tcx(), texts, 1) {
                    Ok(scored) => scored
                        .into_iter()
                        .map(|s| cx.classes[s.pred].clone())
                        .collect(),
                    Err(e) => {
                        *failed.lock().expect("reference error") = Some(e);
                        vec![String::new(); texts.len()]
                    }
                }
            };
            let input = FilterInput {
                train: &train,
                test: &test,
                template: Some(&m.templates[&spec.template].text),
                reference: if reference_model.is_some() {
                    Some(&predict)
                } else {
                    None
                },
            };
            let out = filter::filter(generation, &input, &m.augment.filter);
            if let Some(e) = failed.into_inner().expect("reference error") {
                return Err(e);
            }
            w.write("synthetic.jsonl", out.jsonl().as_bytes())?;
            w.write_json("synthetic.json", &out)
        })
    };
    let mut generation = generation;
    let mut fid = filter_id(m, &gen_key, cx.shared, ids.reference.as_ref().map(|r| &r.1));
    let (mut entry, mut outcome) = run_filter(&generation, &fid)?;
    // Top-up rounds: what each cluster lacks, asked again, then the filter over all answers.
    // Every round runs, one with nothing to ask too, so the keys are those `synth_stages` gives
    // (and `plan` lists); a generation with unanswered calls is used as it is, never cached.
    for (round, (top_id, next_fid)) in (1..).zip(&ids.top_ups) {
        if !generation.complete() {
            break;
        }
        let extra: Vec<CallRecord> = match cx.cache.get(top_id)? {
            Some(entry) => {
                let mut calls: Vec<CallRecord> = entry.read_json("calls.json")?;
                mark_cached(&mut calls);
                calls
            }
            None => {
                let data: Synthetic = entry.read_json("synthetic.json")?;
                let planned = generate::plan_top_up(
                    &generation,
                    &data,
                    clusters,
                    load_catalog()?,
                    template,
                    generator,
                    m.augment.per_call,
                )?;
                let calls = if planned.is_empty() {
                    Vec::new()
                } else {
                    let sentences: usize = planned.iter().map(|p| p.requested).sum();
                    cx.progress.log(format!(
                        "generate {label}: top-up round {round}: {} calls for the {sentences} sentences the filter left missing",
                        planned.len()
                    ));
                    let jobs: Vec<CallJob> = planned.iter().map(|p| p.job.clone()).collect();
                    let outcomes = llm::run_calls(
                        generator,
                        &jobs,
                        cx.cache,
                        &budgets[&generator.config.name],
                        cx.progress,
                        &format!("generate {label} top-up {round}"),
                    )?;
                    generate::records(planned, outcomes)
                };
                let unanswered = calls
                    .iter()
                    .filter(|c| c.outcome.answer().is_none())
                    .count();
                if unanswered == 0 {
                    cx.cache
                        .get_or_compute(top_id, |w| w.write_json("calls.json", &calls))?;
                } else {
                    cx.progress.log(format!(
                        "generate {label}: top-up round {round} incomplete ({unanswered} of {} calls unanswered); this run uses the answers it has, nothing partial is cached, and a rerun retries the missing calls",
                        calls.len()
                    ));
                }
                calls
            }
        };
        generation.calls.extend(extra);
        fid = if generation.complete() {
            next_fid.clone()
        } else {
            filter_id(
                m,
                &partial_key(&generation, &top_id.key),
                cx.shared,
                ids.reference.as_ref().map(|r| &r.1),
            )
        };
        (entry, outcome) = run_filter(&generation, &fid)?;
    }
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
        "filter {label}: {} sentences parsed, {} kept of {} requested; removed: {}{}",
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
        },
        if outcome == Outcome::Hit {
            " (from the cache)"
        } else {
            ""
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

/// Calls read back from the cache: what this run made is `Done`, what it read is `Cached`.
fn mark_cached(calls: &mut [CallRecord]) {
    for c in calls {
        if let llm::Outcome::Done { answer } = &c.outcome {
            c.outcome = llm::Outcome::Cached {
                answer: answer.clone(),
            };
        }
    }
}

/// The key of a generation with unanswered calls, which is used for this run but never cached
/// as a whole: the calls it has answers for, under the key of the complete one.
fn partial_key(generation: &Generation, complete_key: &str) -> String {
    let answered: Vec<&str> = generation
        .calls
        .iter()
        .filter(|c| c.outcome.answer().is_some())
        .map(|c| c.call_key.as_str())
        .collect();
    crate::hash::stage_key(
        "generate-partial",
        GENERATE_VERSION,
        &serde_json::json!({"answered": answered}),
        &[complete_key],
    )
}

/// The dataset column of the summary, e.g. `tram-single` or `cti-to-mitre:label_subtec`.
pub fn dataset_label(m: &Manifest) -> String {
    let d = &m.data;
    match &d.label {
        Some(l) if l != d.kind.default_label() => format!("{}:{l}", d.kind.as_str()),
        _ => d.kind.as_str().to_string(),
    }
}

/// Refuse an `--out` that cannot take a new run, before any work: a file, or a folder that is
/// not empty (another run's results, or a run writing there now).
pub(crate) fn check_out(out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        return Err(Error::config(format!(
            "--out {} is a file, not a folder; choose a folder path",
            out.display()
        )));
    }
    if let Some(file) = out.ancestors().skip(1).find(|a| a.is_file()) {
        return Err(Error::config(format!(
            "--out {}: {} is a file, so no folder can be made under it; choose a folder path",
            out.display(),
            file.display()
        )));
    }
    if out.is_dir()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    {
        return Err(Error::config(format!(
            "--out {} already exists and is not empty; choose another folder or remove it",
            out.display()
        )));
    }
    Ok(())
}

/// Create the run folder and return it. `--out` is used as given (it was checked empty);
/// otherwise `<output_dir>/<experiment>/<UTC time>`, with `-2`, `-3`, … when that name is taken.
/// The folder is claimed with a single `create_dir`, which fails when it exists, so two runs
/// started in the same second never share one.
pub fn claim_run_dir(base: &Path, stamp: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(base).io_ctx(ErrorKind::Internal, || {
        format!("cannot create {}", base.display())
    })?;
    for n in 1.. {
        let dir = if n == 1 {
            base.join(stamp)
        } else {
            base.join(format!("{stamp}-{n}"))
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).io_ctx(ErrorKind::Internal, || {
                    format!("cannot create {}", dir.display())
                });
            }
        }
    }
    unreachable!("some run folder name is free")
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Test-only fault injection: in debug builds, `FAILPOINT_PANIC_CELL=<cell name>` makes
/// that cell panic, so the tests can prove a panicking cell fails alone.
fn failpoint_panic(cell: &str) {
    if cfg!(debug_assertions) && std::env::var("FAILPOINT_PANIC_CELL").is_ok_and(|v| v == cell) {
        panic!("failpoint: cell {cell} panics on purpose");
    }
}

/// One replicate's prepared inputs: its manifest (seeds raised, its cells only), stage ids,
/// split, classes, clusters and targets.
struct Replicate {
    m: Manifest,
    shared: Shared,
    split: Split,
    classes: Vec<String>,
    index: BTreeMap<String, usize>,
    clusters: BTreeMap<SynthSpec, Clusters>,
    targets: Vec<String>,
}

/// The folder of replicate `r`'s split files: `split/` for replicate 0, `split/r<r>/` for the
/// others.
pub fn split_dir(run_dir: &Path, r: usize) -> PathBuf {
    if r == 0 {
        run_dir.join("split")
    } else {
        run_dir.join("split").join(format!("r{r}"))
    }
}

/// The ATT&CK catalog, read once per run when an arm needs it.
fn catalog_of<'c>(
    shared: &Shared,
    once: &'c std::sync::OnceLock<std::result::Result<Catalog, Error>>,
) -> Result<&'c Catalog> {
    once.get_or_init(|| match &shared.attack_path {
        Some(p) => Catalog::load(p),
        None => Err(Error::data("no ATT&CK bundle in the data folder")),
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// The `oversample` or `attack-description` stage of a cell, through the cache. An arm that adds
/// no sentence (no target has train sentences or a description) is an error: its cells fail.
fn compute_arm(
    cx: &CellCtx,
    cell: &CellSpec,
    id: &StageId,
    catalog: &std::sync::OnceLock<std::result::Result<Catalog, Error>>,
) -> Result<AddedData> {
    let (entry, _) = cx.cache.get_or_compute(id, |w| {
        let train = train_pairs(cx.ds, cx.split);
        let a = &cx.m.augment;
        let added = match cell.augment {
            AugmentKind::Oversample => {
                crate::arms::oversample(&train, &a.targets, cell.oversample.unwrap_or(0), a.count)
            }
            AugmentKind::AttackDescription => {
                crate::arms::attack_description(&train, &a.targets, catalog_of(cx.shared, catalog)?)
            }
            AugmentKind::None | AugmentKind::Synthetic => {
                return Err(Error::internal("compute_arm on a cell without a cheap arm"));
            }
        };
        w.write_json("added.json", &added)
    })?;
    let added: crate::arms::Added = entry.read_json("added.json")?;
    cx.progress.log(format!(
        "{}: {} sentences for {} target techniques ({}): {}",
        cell.augment.as_str(),
        added.sentences.len(),
        added.per_technique.len(),
        added.rule,
        added
            .per_technique
            .iter()
            .map(|(t, n)| format!("{t} +{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if added.sentences.is_empty() {
        return Err(Error::data(format!(
            "the {} arm added no sentence to the {} target techniques ({})",
            cell.augment.as_str(),
            added.per_technique.len(),
            added.rule
        )));
    }
    Ok(AddedData {
        key: id.key.clone(),
        pairs: added.sentences,
        synthetic: None,
    })
}

pub fn run(m: &Manifest, cache: &Cache, opts: &RunOptions) -> Result<RunOutcome> {
    let device = device_for(m.experiment.backend)?;
    let progress = Progress::new(opts.quiet);
    // `--out` is claimed (checked, created, locked) before any work, and held to the end.
    let out_claim = opts
        .out
        .as_deref()
        .map(crate::out_lock::claim)
        .transpose()?;
    let sink = progress.clone();
    let cache = &cache
        .clone()
        .with_log(std::sync::Arc::new(move |line| sink.log(line)));
    cache.sweep_tmp();
    let shared = shared_stages(m)?;
    // What was cached before this run computed anything.
    let mut plan_before = plan(m, &shared, cache)?;
    let timer = crate::timings::Timer::default();
    let run_started = Instant::now();
    let ds = timer.time("load", "", || load_dataset(&shared, m, cache, &progress))?;
    // Every replicate's split and clusters before anything is written: a bad split or target
    // rule stops the run before it claims a folder.
    let n_reps = m.replicates();
    let mut reps: Vec<Replicate> = Vec::with_capacity(n_reps);
    let mut all_notes = Vec::new();
    for r in 0..n_reps {
        let mr = m.replicate(r);
        let sh = shared_for(&mr, &shared);
        if n_reps > 1 {
            progress.log(format!(
                "replicate {r}: split seed {}, generator seed +{}, training seeds {}",
                mr.split.seed,
                mr.cells.first().map(|c| c.generation_offset).unwrap_or(0),
                mr.cells
                    .iter()
                    .map(|c| c.seed)
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let what = if n_reps > 1 {
            format!("replicate {r}")
        } else {
            String::new()
        };
        let split = timer.time("split", &what, || {
            split_dataset(&sh, &mr, &ds, cache, &progress)
        })?;
        let (classes, index) = class_index(&ds, &split);
        let (clusters, notes) = timer.time("cluster", &what, || {
            cluster_all(&mr, &sh, &ds, &split, cache)
        })?;
        for n in notes {
            let n = if n_reps > 1 {
                format!("replicate {r}: {n}")
            } else {
                n
            };
            progress.log(format!("plan: {n}"));
            all_notes.push(n);
        }
        let targets = target_techniques(&mr, &ds, &split);
        reps.push(Replicate {
            m: mr,
            shared: sh,
            split,
            classes,
            index,
            clusters,
            targets,
        });
    }
    plan_before.notes = all_notes;

    // Everything that can fail on bad input has been checked; now claim the run folder and write
    // into it as the run goes (run.log first, so a killed run leaves its log).
    let run_dir = match &out_claim {
        Some(claim) => claim.dir().to_path_buf(),
        None => claim_run_dir(
            &m.experiment.output_dir.join(&m.experiment.name),
            &chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string(),
        )?,
    };
    progress
        .log_to(&run_dir.join("run.log"))
        .io_ctx(ErrorKind::Internal, || {
            format!("cannot write {}/run.log", run_dir.display())
        })?;
    std::fs::create_dir_all(run_dir.join("cells")).io_ctx(ErrorKind::Internal, || {
        format!("cannot create {}", run_dir.display())
    })?;
    let write = |name: &str, body: &[u8]| -> Result<()> {
        std::fs::write(run_dir.join(name), body)
            .io_ctx(ErrorKind::Internal, || format!("cannot write {name}"))
    };
    // A Slurm task's folder sits inside the run folder, whose split files and leakage counts the
    // submitter wrote: a task does not redo them.
    let splits: Vec<&Split> = if opts.task {
        Vec::new()
    } else {
        reps.iter().map(|rep| &rep.split).collect()
    };
    write_run_inputs(
        &run_dir,
        m,
        &plan_before,
        &shared.data_path,
        &ds,
        &splits,
        &progress,
    )?;
    let mut data_files = vec![shared.data_path.clone()];
    data_files.extend(crate::data::attack_path(&m.data, &m.data_dir)?);
    let guard = if opts.task {
        None
    } else {
        Some(crate::runs::start(&run_dir, m, &data_files)?)
    };
    // The input hashes learnt while checking: worth keeping now that the run is under way.
    crate::hash::flush_stat_memo();

    let embedder = crate::ml::encoder::Embedder::new(cache.root());
    let catalog = std::sync::OnceLock::new();
    let budgets = generator_budgets(m);
    let order: BTreeMap<&str, usize> = m
        .cells
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let stop = AtomicBool::new(false);
    // (cell index, its result and whether it trained, or why it failed)
    type Done = (usize, std::result::Result<(CellResult, bool), String>);
    let results: Mutex<Vec<Done>> = Mutex::new(Vec::new());
    let mut synth_rows: Vec<(String, Synthetic)> = Vec::new();
    let started = Instant::now();
    let overall = progress.bar(m.cells.len() as u64, "cells");
    for (r, rep) in reps.iter().enumerate() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let cx = CellCtx {
            m: &rep.m,
            embedder: &embedder,
            targets: &rep.targets,
            ds: &ds,
            split: &rep.split,
            classes: &rep.classes,
            index: &rep.index,
            cache,
            device: &device,
            progress: &progress,
            shared: &rep.shared,
            replicate: (n_reps > 1).then_some(r),
        };
        let tag = |label: String| {
            if n_reps > 1 {
                format!("r{r}-{label}")
            } else {
                label
            }
        };
        // Synthetic data first, one chain at a time (the LLM is the bottleneck); a chain that
        // fails fails the cells that need it, not the run. An augmented cell that gets no
        // synthetic sentence is not a result: a chain whose calls all failed, or whose filters
        // kept nothing, fails its cells (with the figures of why).
        let mut ready: BTreeMap<SynthSpec, std::result::Result<AddedData, String>> =
            BTreeMap::new();
        // Kept synthetic data per chain, and chains whose filters kept nothing: failed, but
        // what was parsed and removed is still written.
        let mut kept_data: BTreeMap<SynthSpec, Synthetic> = BTreeMap::new();
        let mut unusable: BTreeMap<SynthSpec, Synthetic> = BTreeMap::new();
        for (spec, cl) in &rep.clusters {
            let res = match timer.time("synthesize", &cx.chain_label(spec), || {
                synthesize(&cx, spec, cl, &catalog, &budgets)
            }) {
                Ok(x) => match x.data.nothing_kept() {
                    None => {
                        let added = AddedData::of_synthetic(&x);
                        kept_data.insert(spec.clone(), x.data);
                        Ok(added)
                    }
                    Some(why) => {
                        unusable.insert(spec.clone(), x.data);
                        Err(why)
                    }
                },
                Err(e) => Err(e.message),
            };
            if let Err(why) = &res {
                progress.log(format!(
                    "synthetic data {} failed: {why}",
                    cx.chain_label(spec)
                ));
            }
            ready.insert(spec.clone(), res);
        }
        for spec in ready.keys() {
            if let Some(d) = kept_data.get(spec).or(unusable.get(spec)) {
                synth_rows.push((tag(spec_label(spec)), d.clone()));
            }
        }
        // The cheap arms, one stage per distinct key.
        let mut arms: BTreeMap<String, std::result::Result<AddedData, String>> = BTreeMap::new();
        for c in &rep.m.cells {
            if let Some(id) = arm_stage(&rep.m, &rep.shared, c)
                && !arms.contains_key(&id.key)
            {
                let res = compute_arm(&cx, c, &id, &catalog).map_err(|e| e.message);
                if let Err(why) = &res {
                    progress.log(format!("{} data failed: {why}", c.augment.as_str()));
                }
                arms.insert(id.key.clone(), res);
            }
        }
        let queue = Mutex::new(rep.m.cells.iter());
        std::thread::scope(|s| {
            for _ in 0..opts.jobs.max(1).min(rep.m.cells.len().max(1)) {
                s.spawn(|| {
                    loop {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let next = queue.lock().expect("queue").next();
                        let Some(cell) = next else { break };
                        let i = order[cell.name.as_str()];
                        let added = match (&cell.synthetic, arm_stage(&rep.m, &rep.shared, cell)) {
                            (Some(spec), _) => match &ready[spec] {
                                Ok(r) => Ok(Some(r)),
                                Err(e) => Err(Error::data(format!(
                                    "its synthetic data ({}) failed: {e}",
                                    spec_label(spec)
                                ))),
                            },
                            (None, Some(id)) => match &arms[&id.key] {
                                Ok(r) => Ok(Some(r)),
                                Err(e) => Err(Error::data(format!(
                                    "its {} data failed: {e}",
                                    cell.augment.as_str()
                                ))),
                            },
                            (None, None) => Ok(None),
                        };
                        // A panic inside a cell (a bug, or a library's assertion) fails that cell.
                        let cell_started = Instant::now();
                        let res = added
                            .and_then(|added| {
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    failpoint_panic(&cell.name);
                                    run_cell(&cx, cell, added)
                                }))
                                .unwrap_or_else(|p| {
                                    Err(Error::internal(format!(
                                        "panicked: {} (a bug in synthcti or a library; please report it with this run's run.log)",
                                        panic_message(p.as_ref())
                                    )))
                                })
                            })
                            .and_then(|(res, entry, trained)| {
                                let dir = run_dir.join("cells").join(&cell.name);
                                write_cell(&res, &entry, &dir)?;
                                if let Some(d) = cell.synthetic.as_ref().and_then(|s| kept_data.get(s)) {
                                    std::fs::write(dir.join("synthetic.jsonl"), d.jsonl())
                                        .io_ctx(ErrorKind::Internal, || {
                                            format!("writing {}/synthetic.jsonl", dir.display())
                                        })?;
                                }
                                Ok((res, trained))
                            });
                        timer.record(
                            "cell",
                            &cell.name,
                            cell_started.elapsed().as_secs_f64(),
                            res.as_ref().ok().map(|x| !x.1),
                        );
                        let res = match res {
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
                                let dir = run_dir.join("cells").join(&cell.name);
                                let _ = std::fs::create_dir_all(&dir);
                                let _ = std::fs::write(dir.join("error.txt"), &e.message);
                                if let Some(data) =
                                    cell.synthetic.as_ref().and_then(|s| unusable.get(s))
                                {
                                    let _ =
                                        std::fs::write(dir.join("synthetic.jsonl"), data.jsonl());
                                }
                                if opts.fail_fast {
                                    stop.store(true, Ordering::SeqCst);
                                }
                                Err(e.message)
                            }
                        };
                        overall.inc(1);
                        results.lock().expect("results").push((i, res));
                    }
                });
            }
        });
    }
    overall.finish_and_clear();
    write(
        "synthetic.csv",
        report::synthetic_csv(
            &synth_rows
                .iter()
                .map(|(l, d)| (l.clone(), d))
                .collect::<Vec<_>>(),
        )
        .as_bytes(),
    )?;
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
            failed.push((c.name.clone(), report::NOT_RUN.into()));
        }
    }
    timer.record("run", "", run_started.elapsed().as_secs_f64(), None);
    timer.write(&run_dir)?;
    report::write_all(&run_dir, &ok, &failed)?;
    if let Some(guard) = guard {
        guard.finish(
            failed.is_empty(),
            &m.experiment.output_dir.join(&m.experiment.name),
        )?;
    }
    progress.log(format!(
        "{} cells: {} trained, {} from cache, {} failed, in {:.1}s",
        m.cells.len(),
        trained,
        cached,
        failed.len(),
        started.elapsed().as_secs_f64()
    ));
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

/// What a run folder records of its inputs before the first cell, the same for every executor:
/// `manifest.resolved.toml`, `plan.json`, `load.json` (where every row of the dataset went,
/// from the load stage's output, cached or not), each replicate's split files
/// ([`split_dir`]) and `leakage.json` (test sentences with
/// an exact or near duplicate in train, logged per replicate). `splits[r]` is replicate r's.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_run_inputs(
    run_dir: &Path,
    m: &Manifest,
    plan: &impl Serialize,
    data_path: &Path,
    ds: &Dataset,
    splits: &[&Split],
    progress: &Progress,
) -> Result<()> {
    let write = |name: &str, body: &[u8]| -> Result<()> {
        std::fs::write(run_dir.join(name), body)
            .io_ctx(ErrorKind::Internal, || format!("cannot write {name}"))
    };
    write(
        "manifest.resolved.toml",
        crate::manifest::resolved_toml(m).as_bytes(),
    )?;
    write(
        "plan.json",
        &serde_json::to_vec_pretty(plan).expect("plan serializes"),
    )?;
    write(
        "load.json",
        &serde_json::to_vec_pretty(&serde_json::json!({
            "file": data_path.display().to_string(),
            "account": ds.stats.account(),
            "stats": &ds.stats,
        }))
        .expect("load stats serialize"),
    )?;
    let mut leakage = Vec::with_capacity(splits.len());
    for (r, split) in splits.iter().enumerate() {
        write_split_files(&split_dir(run_dir, r), ds, split)?;
        let l = crate::leakage::overlap(ds, split, crate::leakage::NEAR);
        progress.log(format!("leakage: {}", l.sentence(r, splits.len())));
        leakage.push(l);
    }
    write(
        "leakage.json",
        &serde_json::to_vec_pretty(&leakage).expect("leakage serializes"),
    )
}

/// The split itself, so anyone can retrain a peer on exactly the same examples.
pub(crate) fn write_split_files(dir: &Path, ds: &Dataset, s: &Split) -> Result<()> {
    std::fs::create_dir_all(dir).io_ctx(ErrorKind::Internal, || dir.display().to_string())?;
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
        std::fs::write(dir.join(format!("{name}.jsonl")), body)
            .io_ctx(ErrorKind::Internal, || {
                format!("writing split/{name}.jsonl")
            })?;
    }
    Ok(())
}

/// One call and token budget per generator, shared by every chain that uses it in this run.
fn generator_budgets(m: &Manifest) -> BTreeMap<String, Budget> {
    m.generators
        .values()
        .map(|g| {
            (
                g.config.name.clone(),
                Budget::new(g.config.budget_calls, g.config.budget_tokens),
            )
        })
        .collect()
}

/// One synthetic chain's outcome in `synthcti generate`: the replicate it belongs to, its
/// settings, and its filtered data or why it has none.
pub type ChainOutcome = (usize, SynthSpec, std::result::Result<Synthetic, String>);

/// `synthcti generate`: every synthetic chain of the grid in every replicate — load, split,
/// cluster, generate, filter, all through the cache — and no training (a reference-classifier
/// filter still trains its model). Replicate r's chains use its own split and generator seeds
/// ([`Manifest::replicate`]), the same stages `run` uses for them. Returns each chain, replicate
/// by replicate, with its filtered data, or why it has none (every call failed, or the filters
/// kept nothing); an error only for what stops everything (bad data, no synthetic cell in the
/// grid).
pub fn synthesize_only(
    m: &Manifest,
    cache: &Cache,
    progress: &Progress,
) -> Result<Vec<ChainOutcome>> {
    if synth_specs(m).is_empty() {
        return Err(Error::config(
            "the grid has no synthetic cell, so there is nothing to generate; add \"synthetic\" to `augment.kind`",
        ));
    }
    let device = device_for(m.experiment.backend)?;
    cache.sweep_tmp();
    let shared = shared_stages(m)?;
    let ds = load_dataset(&shared, m, cache, progress)?;
    let embedder = crate::ml::encoder::Embedder::new(cache.root());
    let catalog = std::sync::OnceLock::new();
    let budgets = generator_budgets(m);
    let n_reps = m.replicates();
    let mut out = Vec::new();
    for r in 0..n_reps {
        let mr = &m.replicate(r);
        if synth_specs(mr).is_empty() {
            continue;
        }
        let tag = |line: &str| {
            if n_reps > 1 {
                format!("replicate {r}: {line}")
            } else {
                line.to_string()
            }
        };
        let sh = shared_for(mr, &shared);
        let split = split_dataset(&sh, mr, &ds, cache, progress)?;
        let (classes, index) = class_index(&ds, &split);
        let (clusters, notes) = cluster_all(mr, &sh, &ds, &split, cache)?;
        crate::hash::flush_stat_memo();
        for n in &notes {
            progress.log(tag(&format!("plan: {n}")));
        }
        let targets = target_techniques(mr, &ds, &split);
        let cx = CellCtx {
            m: mr,
            embedder: &embedder,
            targets: &targets,
            ds: &ds,
            split: &split,
            classes: &classes,
            index: &index,
            cache,
            device: &device,
            progress,
            shared: &sh,
            replicate: (n_reps > 1).then_some(r),
        };
        for (spec, cl) in &clusters {
            let res = match synthesize(&cx, spec, cl, &catalog, &budgets) {
                Ok(x) => match x.data.nothing_kept() {
                    None => Ok(x.data),
                    Some(why) => Err(why),
                },
                Err(e) => Err(e.message),
            };
            if let Err(why) = &res {
                progress.log(format!(
                    "synthetic data {} failed: {why}",
                    cx.chain_label(spec)
                ));
            }
            out.push((r, spec.clone(), res));
        }
    }
    Ok(out)
}
