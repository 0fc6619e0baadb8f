//! The manifest schema, in one place: raw (serde, unknown keys rejected) → validated.
//!
//! Layering, lowest first: the defaults written here < the manifest file < `SYNTHCTI_*`
//! environment variables (`SYNTHCTI_SPLIT__SEED=7`; `__` nests; `SYNTHCTI_DATA_DIR` is
//! `data.dir`) < `--set key.path=value` on the command line.
//!
//! Environment variables reach `[[classifier]]` and `[[generator]]` tables the way `--set` does:
//! `SYNTHCTI_CLASSIFIER__DIM=32` is `--set classifier.dim=32` (every table whose kind has the
//! field), `SYNTHCTI_CLASSIFIER__0__DIM=32` is `--set classifier.0.dim=32` (the first table).
//! A `SYNTHCTI_*` variable whose first part names no manifest section (nor a tool setting such
//! as `SYNTHCTI_CACHE_DIR`) is ignored with a warning; one inside a section that names no key
//! there is an error naming the variable.
//!
//! Any list-valued grid field (`experiment.seeds`, every field of a `[[classifier]]` but `kind`,
//! `augment.kind`, and on synthetic cells `augment.k`, `template`, `generator`, `per_technique`)
//! expands as a cartesian product into cells.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

// The stages own their settings' types; the manifest composes them.
pub use crate::cluster::{ClusterEmbedding, TargetConfig};
pub use crate::data::config::{
    AttackSource, ConflictPolicy, DataConfig, DataKind, DeprecatedPolicy, DuplicatePolicy,
    MultiLabelPolicy, NegativePolicy, UnknownTechniquePolicy,
};
pub use crate::filter::FilterConfig;
pub use crate::generate::CountMode;
pub use crate::grid::Grid;
pub use crate::llm::config::{DEFAULT_GGUF, GeneratorConfig, ProviderKind};
pub use crate::ml::config::ClassifierConfig;
pub use crate::ml::params::{
    Backend, ClassWeight, ClassifierKind, DEFAULT_ENCODER, EncoderParams, FastTextParams,
    ModelParams, Weighting,
};
pub use crate::split::{SmallClassPolicy, SplitConfig, SplitMethod};

/// Environment variables with the `SYNTHCTI_` prefix that are settings of the tool, not manifest
/// keys.
pub const NON_MANIFEST_ENV: &[&str] = &["cache_dir", "log", "data_mirror"];

// ---------------------------------------------------------------------------------------------
// Raw schema.

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawManifest {
    pub experiment: Experiment,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub split: SplitConfig,
    #[serde(default)]
    pub augment: AugmentConfig,
    #[serde(default = "default_classifiers")]
    pub classifier: Vec<ClassifierConfig>,
    #[serde(default = "default_generators")]
    pub generator: Vec<GeneratorConfig>,
    /// `[study]`: how the paired comparison is computed.
    #[serde(default)]
    pub study: crate::study::StudyConfig,
    /// `[[evaluate]]`: external test sets every cell is scored on ([`crate::external`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evaluate: Vec<crate::external::EvalSetConfig>,
    /// `[executor]`: where the cells run (local, or a Slurm job array); left out of
    /// manifest.resolved.toml when it is the default (local).
    #[serde(
        default,
        skip_serializing_if = "crate::executor::ExecutorConfig::is_default"
    )]
    pub executor: crate::executor::ExecutorConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Name of the experiment: results go to `<output_dir>/<name>/<run-id>/`.
    pub name: String,
    /// Training seeds; a list sweeps them (inside each replicate).
    #[serde(default = "default_seeds")]
    pub seeds: Grid<u64>,
    /// Replicates (a grid axis): replicate r (0-based) runs the whole chain with the split seed,
    /// every generator's sampling seed and the training seed each raised by r (replicate 0 is
    /// the manifest's seeds as written), unless `pin` names that part.
    #[serde(default = "default_replicates", skip_serializing_if = "is_one")]
    pub replicates: usize,
    /// Parts of a replicate that keep the manifest's seed in every replicate: `split`,
    /// `generation`, `training`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pin: Vec<ReplicatePart>,
    /// Where runs are written (default `results`), relative to the current folder.
    #[serde(default = "default_output_dir")]
    pub output_dir: PathBuf,
    /// Where burn trains and runs models: `cpu`, or `cuda` (a build with `--features cuda`).
    #[serde(default, skip_serializing_if = "Backend::is_cpu")]
    pub backend: Backend,
}

fn default_seeds() -> Grid<u64> {
    Grid::One(42)
}
fn default_replicates() -> usize {
    1
}
fn is_one(n: &usize) -> bool {
    *n == 1
}

/// What a replicate varies; `experiment.pin` lists those that stay fixed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicatePart {
    /// `split.seed`.
    Split,
    /// Every `[[generator]]`'s `seed` (the LLM's sampling seed).
    Generation,
    /// The training seeds (`experiment.seeds`).
    Training,
}

/// The seed replicate `r` uses for a part whose manifest seed is `base`: `base + r`, or `base`
/// when the part is pinned. Replicate 0 is always the manifest as written, so a one-replicate
/// run and replicate 0 of a larger one share every cache entry.
pub fn replicate_seed(base: u64, r: usize, part: ReplicatePart, pin: &[ReplicatePart]) -> u64 {
    if pin.contains(&part) {
        base
    } else {
        base.wrapping_add(r as u64)
    }
}
fn default_output_dir() -> PathBuf {
    PathBuf::from("results")
}
fn default_classifiers() -> Vec<ClassifierConfig> {
    vec![ClassifierConfig::default()]
}
fn default_generators() -> Vec<GeneratorConfig> {
    vec![GeneratorConfig::default()]
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum AugmentKind {
    /// Real data only.
    None,
    /// Real data + LLM-written sentences for the target techniques.
    Synthetic,
    /// Real data + the targets' own real train sentences repeated (cycling in train order) to
    /// the count the synthetic arm requests per technique (`per_technique`, or what `count =
    /// "up-to"` leaves): what more sentences buy when they say nothing new.
    Oversample,
    /// Real data + the sentences of each target technique's ATT&CK description (citations
    /// removed, links reduced to their text, split by the segmenter): what free, expert-written
    /// text buys (You & Park 2024 add description sentences to rare TRAM classes).
    AttackDescription,
}

impl AugmentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AugmentKind::None => "none",
            AugmentKind::Synthetic => "synthetic",
            AugmentKind::Oversample => "oversample",
            AugmentKind::AttackDescription => "attack-description",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// `none` (real data only), `synthetic`, `oversample`, `attack-description`; a list puts
    /// them side by side in the grid.
    pub kind: Grid<AugmentKind>,
    /// Clusters per target technique (1 = no clustering); clipped to the technique's size.
    pub k: Grid<usize>,
    /// Prompt template: a name in `templates_dir` (`<name>.j2`, falling back to the shipped
    /// ones) or a path to a `.j2` file.
    pub template: Grid<String>,
    /// Name of a `[[generator]]` table.
    pub generator: Grid<String>,
    /// Sentences per target technique (see `count`).
    pub per_technique: Grid<usize>,
    pub count: CountMode,
    /// Sentences asked for in one LLM call.
    pub per_call: usize,
    /// Top-up rounds: after the filter, each cluster that kept fewer sentences than its share of
    /// the technique's requested count is asked again for what it lacks (its prompt, asking for
    /// that many, under a new sample index), and the filter runs over all answers; this many
    /// rounds (0: none).
    pub top_up: usize,
    /// Sentences nearest each cluster centroid shown in the prompt.
    pub representatives: usize,
    pub embedding: ClusterEmbedding,
    /// Dimensions kept by the truncated SVD.
    pub svd_dim: usize,
    /// `embedding = "encoder"`: the Hugging Face model folder.
    pub encoder: String,
    /// Folder of prompt templates; a relative one resolves against the manifest's folder
    /// (default: `templates/` beside the manifest, falling back to the shipped templates).
    pub templates_dir: PathBuf,
    pub targets: TargetConfig,
    pub filter: FilterConfig,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            kind: Grid::One(AugmentKind::None),
            k: Grid::One(3),
            template: Grid::One("cluster-guided".into()),
            generator: Grid::One("smollm2".into()),
            per_technique: Grid::One(20),
            count: CountMode::Fixed,
            per_call: 5,
            top_up: 0,
            representatives: 3,
            embedding: ClusterEmbedding::TfidfSvd,
            svd_dim: 32,
            encoder: DEFAULT_ENCODER.into(),
            templates_dir: PathBuf::from("templates"),
            targets: TargetConfig::default(),
            filter: FilterConfig::default(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validated form.

/// The swept settings of one synthetic-data chain (cluster → prompt → generate → filter).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SynthSpec {
    pub k: usize,
    pub template: String,
    pub generator: String,
    pub per_technique: usize,
}

/// One cell of the grid.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellSpec {
    pub name: String,
    pub classifier: ClassifierKind,
    pub params: ModelParams,
    /// The training seed (the replicate's).
    pub seed: u64,
    pub augment: AugmentKind,
    /// Set on `augment = synthetic` cells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic: Option<SynthSpec>,
    /// Set on `augment = oversample` cells: sentences per target technique, as `per_technique`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oversample: Option<usize>,
    /// The replicate (0-based; `experiment.replicates`). Records of an older synthcti read 0.
    #[serde(default)]
    pub replicate: usize,
    /// The split seed of the replicate.
    #[serde(default)]
    pub split_seed: u64,
    /// The generators' sampling seed offset of the replicate (added to each `[[generator]]`'s
    /// `seed`; 0 when `generation` is pinned).
    #[serde(default)]
    pub generation_offset: u64,
    /// The classifier configuration, the same in every arm and replicate: the kind and its swept
    /// settings as the cell name spells them (`fasttext`, `fasttext-dim16`), with `-s<seed>` of
    /// `experiment.seeds` when that is swept. Tables group by (config, augment arm) over
    /// replicates. Empty in records of an older synthcti.
    #[serde(default)]
    pub config: String,
}

impl CellSpec {
    /// What identifies the classifier configuration across arms and replicates: [`Self::config`],
    /// or for older records (no `config`) the kind, settings and training seed.
    pub fn config_key(&self) -> String {
        if !self.config.is_empty() {
            return self.config.clone();
        }
        format!(
            "{}|{}|{}",
            self.classifier.as_str(),
            serde_json::to_string(&self.params).expect("params serialize"),
            self.seed
        )
    }

    /// What pairs an augmented cell with its baseline: the configuration and the replicate.
    pub fn pair_key(&self) -> String {
        format!("{}|r{}", self.config_key(), self.replicate)
    }

    /// The arm's variant as it reads in tables: the synthetic chain's settings, oversample's
    /// count, or the arm alone.
    pub fn arm_label(&self) -> String {
        match (&self.synthetic, self.oversample) {
            (Some(s), _) => format!(
                "{} (k{}, {}, {}, n{})",
                self.augment.as_str(),
                s.k,
                s.template,
                s.generator,
                s.per_technique
            ),
            (None, Some(n)) => format!("{} (n{n})", self.augment.as_str()),
            (None, None) => self.augment.as_str().to_string(),
        }
    }
}

/// A manifest that passed validation: every path exists, every number is in range.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub source: PathBuf,
    /// `[experiment]`, validated.
    pub experiment: Experiment,
    /// `[data]`, validated (`exclude` respelled as ATT&CK IDs).
    pub data: DataConfig,
    /// `[split]`, validated.
    pub split: SplitConfig,
    /// `[augment]`, validated (`targets.list` respelled and mapped).
    pub augment: AugmentConfig,
    /// `[study]`, validated: the bootstrap of the paired comparison.
    pub study: crate::stats::Bootstrap,
    /// `[executor]`, validated.
    pub executor: crate::executor::Executor,
    /// Every effective value, for `manifest.resolved.toml` only: the raw grids are read once, by
    /// [`expand`], and nothing downstream reads the raw form.
    resolved: RawManifest,
    pub data_dir: PathBuf,
    /// External test sets, checked (names distinct, files present).
    pub evaluate: Vec<crate::external::EvalSetConfig>,
    pub cells: Vec<CellSpec>,
    /// The prompt templates synthetic cells use, checked.
    pub templates: BTreeMap<String, crate::prompt::PromptTemplate>,
    /// The generators synthetic cells use, resolved (model hashed, replay linked).
    pub generators: BTreeMap<String, crate::llm::Generator>,
    /// Every override applied, lowest first, as its source names it
    /// (`environment variable SYNTHCTI_SPLIT__SEED=7`, `--set split.seed=7`): for provenance.
    pub overrides: Vec<String>,
    /// What the user should know but that stops nothing (stray `SYNTHCTI_*` variables).
    pub warnings: Vec<String>,
}

impl Manifest {
    /// `experiment.replicates`, at least 1.
    pub fn replicates(&self) -> usize {
        self.experiment.replicates.max(1)
    }

    /// The manifest as replicate `r` runs it: `split.seed` and every generator's `seed` raised by
    /// `r` (unless `experiment.pin` names them; see [`replicate_seed`]), and only the cells of
    /// replicate `r`. Replicate 0 is the manifest as written.
    pub fn replicate(&self, r: usize) -> Manifest {
        let pin = &self.experiment.pin;
        let mut m = self.clone();
        m.split.seed = replicate_seed(self.split.seed, r, ReplicatePart::Split, pin);
        let off = replicate_seed(0, r, ReplicatePart::Generation, pin);
        for g in m.generators.values_mut() {
            g.identity.seed = g.identity.seed.wrapping_add(off);
            g.config.seed = g.config.seed.wrapping_add(off);
        }
        m.cells.retain(|c| c.replicate == r);
        m
    }
}

/// A `--set key.path=value` override, or a `SYNTHCTI_*` environment variable read as one.
#[derive(Debug, Clone)]
pub struct SetArg {
    pub key: String,
    pub value: Value,
    pub raw: String,
    /// Where it came from, as errors name it: `--set split.seed=7` or
    /// `environment variable SYNTHCTI_SPLIT__SEED=7`.
    pub origin: String,
}

impl SetArg {
    pub fn parse(s: &str) -> Result<Self> {
        let (key, val) = s.split_once('=').ok_or_else(|| {
            Error::config(format!(
                "--set {s}: expected KEY=VALUE, for example `--set split.seed=7` or `--set 'experiment.seeds=[1,2,3]'`"
            ))
        })?;
        let key = key.trim();
        if key.is_empty() || key.split('.').any(|p| p.is_empty()) {
            return Err(Error::config(format!(
                "--set {s}: `{key}` is not a key path; write dotted keys such as `classifier.dim`"
            )));
        }
        // Parse the value as TOML (numbers, booleans, lists, inline tables); bare words stay strings.
        let value: Value = match toml::from_str::<toml::Table>(&format!("v = {val}")) {
            Ok(t) => {
                let v = t
                    .get("v")
                    .cloned()
                    .unwrap_or(toml::Value::String(val.into()));
                Value::serialize(v).map_err(|e| Error::config(format!("--set {s}: {e}")))?
            }
            Err(_) => Value::from(val.to_string()),
        };
        Ok(Self {
            key: key.to_string(),
            value,
            raw: s.to_string(),
            origin: format!("--set {s}"),
        })
    }

    /// The override an environment variable `name` (`SYNTHCTI_CLASSIFIER__0__DIM`) with `value`
    /// stands for, or `None` when the name is no manifest key (a tool setting such as
    /// `SYNTHCTI_CACHE_DIR`, or a stray variable: see [`env_overrides`]).
    pub fn from_env(name: &str, value: &str) -> Option<Result<Self>> {
        let rest = name.strip_prefix("SYNTHCTI_")?.to_ascii_lowercase();
        if NON_MANIFEST_ENV.contains(&rest.as_str()) {
            return None;
        }
        let key = if rest == "data_dir" {
            "data.dir".to_string()
        } else {
            rest.replace("__", ".")
        };
        let head = key.split('.').next().unwrap_or_default();
        if !SECTIONS.contains(&head) {
            return None;
        }
        let origin = format!("environment variable {name}={value}");
        Some(
            Self::parse(&format!("{key}={value}"))
                .map(|mut s| {
                    s.origin = origin.clone();
                    s
                })
                .map_err(|e| Error::config(format!("{origin}: {}", e.message))),
        )
    }
}

/// The manifest's top-level sections: the first part of a `SYNTHCTI_*` variable that is a key.
pub const SECTIONS: &[&str] = &[
    "experiment",
    "data",
    "split",
    "augment",
    "classifier",
    "generator",
];

/// The `SYNTHCTI_*` environment variables of `vars` as overrides (sorted by name, so the order
/// is stable), and a warning for each that is neither a manifest key nor a tool setting.
pub fn env_overrides(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(Vec<SetArg>, Vec<String>)> {
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        // `cargo run` also hands the program the build script's `SYNTHCTI_GIT_COMMIT`.
        .filter(|(k, _)| k.starts_with("SYNTHCTI_") && k != "SYNTHCTI_GIT_COMMIT")
        .collect();
    vars.sort();
    let mut sets = Vec::new();
    let mut warnings = Vec::new();
    for (k, v) in vars {
        match SetArg::from_env(&k, &v) {
            Some(s) => sets.push(s?),
            None => {
                let rest = k["SYNTHCTI_".len()..].to_ascii_lowercase();
                if !NON_MANIFEST_ENV.contains(&rest.as_str()) {
                    warnings.push(format!(
                        "environment variable {k} is not a manifest key and is ignored; manifest keys are SYNTHCTI_<SECTION>__<KEY> with a section of {} (e.g. SYNTHCTI_SPLIT__SEED, SYNTHCTI_CLASSIFIER__DIM); settings are {}",
                        SECTIONS.join(", "),
                        NON_MANIFEST_ENV
                            .iter()
                            .map(|s| format!("SYNTHCTI_{}", s.to_ascii_uppercase()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
    }
    Ok((sets, warnings))
}

impl Provider for SetArg {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.origin.clone())
    }
    fn data(&self) -> std::result::Result<Map<Profile, Dict>, figment::Error> {
        // `classifier.dim=…` applies to every [[classifier]] table.
        let dict = figment::util::nest(&self.key, self.value.clone())
            .into_dict()
            .expect("nest gives a dict");
        Ok(Profile::Default.collect(dict))
    }
}

/// The manifest file's table after [`crate::paths::resolve`], named as the file it came from.
struct ManifestFile {
    path: PathBuf,
    table: toml::Table,
}

impl Provider for ManifestFile {
    fn metadata(&self) -> Metadata {
        Metadata::from("TOML file", self.path.as_path())
    }
    fn data(&self) -> std::result::Result<Map<Profile, Dict>, figment::Error> {
        figment::providers::Serialized::defaults(&self.table).data()
    }
}

/// Keys that hold arrays of tables (`[[classifier]]`, `[[generator]]`).
const TABLE_ARRAYS: &[&str] = &["classifier", "generator"];

/// `--set classifier.dim=32` sets `dim` in every `[[classifier]]` table, `--set classifier.1.dim=32`
/// in the second one only. Figment cannot address into arrays, so such overrides are applied to
/// the file's array here and passed on as one override of the whole array.
fn apply_sets_to_tables(file: &toml::Table, sets: &[SetArg]) -> Result<Vec<SetArg>> {
    let mut out = Vec::new();
    let mut arrays: BTreeMap<String, Vec<toml::Value>> = BTreeMap::new();
    for s in sets {
        let mut parts = s.key.splitn(2, '.');
        let head = parts.next().unwrap_or_default();
        let rest = parts.next();
        let Some(rest) = rest.filter(|_| TABLE_ARRAYS.contains(&head)) else {
            out.push(s.clone());
            continue;
        };
        let arr = arrays
            .entry(head.to_string())
            .or_insert_with(|| match file.get(head) {
                Some(toml::Value::Array(a)) => a.clone(),
                _ if head == "generator" => vec![toml::Value::Table(toml::Table::new())],
                _ => vec![toml::Value::Table(toml::Table::from_iter([(
                    "kind".to_string(),
                    toml::Value::String("fasttext".into()),
                )]))],
            });
        let value: toml::Value = s
            .value
            .deserialize()
            .map_err(|e| Error::config(format!("{}: {e}", s.origin)))?;
        let (targets, path): (Vec<usize>, &str) = match rest.split_once('.') {
            Some((i, p)) if i.parse::<usize>().is_ok() => (vec![i.parse().expect("checked")], p),
            _ if rest.parse::<usize>().is_ok() => {
                return Err(Error::config(format!(
                    "{}: name a key inside the table, such as `{head}.{rest}.dim=32`",
                    s.origin
                )));
            }
            _ => {
                let all: Vec<usize> = (0..arr.len()).collect();
                if head != "classifier" || rest.contains('.') {
                    (all, rest)
                } else {
                    // `classifier.dim=…` on a grid that mixes kinds sets it in the tables
                    // whose kind has the field, and is an error only if none has it.
                    let has = |t: &toml::Value| {
                        let kind = t.get("kind").and_then(|k| k.as_str()).unwrap_or("fasttext");
                        crate::ml::config::KINDS
                            .iter()
                            .find(|k| k.as_str() == kind)
                            .is_none_or(|k| {
                                ClassifierConfig::field_names(*k).iter().any(|f| f == rest)
                            })
                    };
                    let some: Vec<usize> = all.into_iter().filter(|i| has(&arr[*i])).collect();
                    if some.is_empty() {
                        let kinds: Vec<String> = crate::ml::config::KINDS
                            .iter()
                            .filter(|k| {
                                ClassifierConfig::field_names(**k).iter().any(|f| f == rest)
                            })
                            .map(|k| format!("`{}`", k.as_str()))
                            .collect();
                        return Err(Error::config(format!(
                            "{}: no [[classifier]] of this manifest has `{rest}`{}",
                            s.origin,
                            if kinds.is_empty() {
                                " (no kind has it)".to_string()
                            } else {
                                format!(" (it is a key of {})", kinds.join(", "))
                            }
                        )));
                    }
                    (some, rest)
                }
            }
        };
        for i in targets {
            let Some(toml::Value::Table(t)) = arr.get_mut(i) else {
                return Err(Error::config(format!(
                    "{}: there is no [[{head}]] number {i} (the manifest has {}; counting from 0)",
                    s.origin,
                    arr.len()
                )));
            };
            let mut cur = t;
            let keys: Vec<&str> = path.split('.').collect();
            for k in &keys[..keys.len() - 1] {
                cur = cur
                    .entry(k.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .ok_or_else(|| Error::config(format!("{}: `{k}` is not a table", s.origin)))?;
            }
            cur.insert(keys[keys.len() - 1].to_string(), value.clone());
        }
        out.push(SetArg {
            key: head.to_string(),
            value: Value::serialize(toml::Value::Array(arr.clone()))
                .map_err(|e| Error::config(format!("{}: {e}", s.origin)))?,
            raw: s.raw.clone(),
            origin: s.origin.clone(),
        });
    }
    Ok(out)
}

/// Describe where a key's value came from: the manifest, an env var, or a --set.
fn origin(fig: &Figment, path: &str, manifest: &Path) -> String {
    // A field of a `[[classifier]]`/`[[generator]]` table: overrides replace the whole array,
    // so the override that named this field (`classifier.dim` or `classifier.0.dim`) is found
    // by its key.
    let mut parts = path.split('.');
    if let (Some(head), Some(idx), Some(field)) = (parts.next(), parts.next(), parts.next())
        && TABLE_ARRAYS.contains(&head)
        && idx.parse::<usize>().is_ok()
    {
        let field_path = [field]
            .into_iter()
            .chain(parts)
            .collect::<Vec<_>>()
            .join(".");
        let wanted = [
            format!("{head}.{field_path}"),
            format!("{head}.{idx}.{field_path}"),
        ];
        let named = fig
            .metadata()
            .filter(|m| {
                let key = if let Some(r) = m.name.strip_prefix("--set ") {
                    r.split('=').next().unwrap_or_default().trim().to_string()
                } else if let Some(r) = m.name.strip_prefix("environment variable SYNTHCTI_") {
                    r.split('=')
                        .next()
                        .unwrap_or_default()
                        .to_ascii_lowercase()
                        .replace("__", ".")
                } else {
                    return false;
                };
                wanted.contains(&key)
            })
            .last();
        if let Some(m) = named {
            return m.name.to_string();
        }
        if fig.find_metadata(head).is_some_and(|m| m.source.is_none()) {
            // The array was replaced by an override of another field: the value is the file's.
            return manifest.display().to_string();
        }
    }
    match fig.find_metadata(path) {
        Some(meta) => describe_meta(meta),
        None => format!("{}", manifest.display()),
    }
}

fn describe_meta(meta: &Metadata) -> String {
    match &meta.source {
        Some(figment::Source::File(p)) => format!("{}", p.display()),
        _ => meta.name.to_string(),
    }
}

/// `a`, `b`, `c`
fn backticked(names: &[&str]) -> String {
    names
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn format_figment_error(e: figment::Error, manifest: &Path) -> Error {
    let mut lines = Vec::new();
    for err in e {
        let key = err.path.join(".");
        let place = match &err.metadata {
            Some(m) => describe_meta(m),
            None => manifest.display().to_string(),
        };
        let what = match &err.kind {
            figment::error::Kind::UnknownField(field, expected) => format!(
                "unknown key `{field}`; valid keys here: {}",
                backticked(expected)
            ),
            figment::error::Kind::UnknownVariant(found, expected) => format!(
                "unknown value `{found}`; valid values: {}",
                backticked(expected)
            ),
            figment::error::Kind::MissingField(field) => {
                format!("missing key `{field}`; add it to the manifest")
            }
            figment::error::Kind::InvalidType(figment::error::Actual::Seq, expected) => format!(
                "a list was given where one value is expected ({expected}): `{key}` is not a grid axis; give one value. Keys that take a list and sweep: {GRID_AXES}"
            ),
            other => other.to_string(),
        };
        if key.is_empty() {
            lines.push(format!("{place}: {what}"));
        } else {
            lines.push(format!("{place}, key `{key}`: {what}"));
        }
    }
    Error::config(lines.join("\n"))
}

/// The keys that take a list and expand into cells, as errors list them.
pub const GRID_AXES: &str = "`experiment.seeds`, every `[[classifier]]` field but `kind`, `augment.kind`, `augment.k`, `augment.template`, `augment.generator`, `augment.per_technique` (and `experiment.replicates`, a count)";

/// The most replicates `experiment.replicates` accepts.
pub const MAX_REPLICATES: usize = 100;

/// Read, layer and validate a manifest, with the process's `SYNTHCTI_*` variables as overrides
/// below `sets`. Nothing is written and nothing runs before this passes.
pub fn load(path: &Path, sets: &[SetArg]) -> Result<Manifest> {
    load_with_env(path, sets, std::env::vars())
}

/// [`load`] with the environment given: `env` is read for `SYNTHCTI_*` variables only.
pub fn load_with_env(
    path: &Path,
    sets: &[SetArg],
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Manifest> {
    if !path.is_file() {
        return Err(Error::config(format!(
            "manifest {} not found; pass the path of a TOML manifest such as experiments/tram.toml",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::config(format!("cannot read manifest {}: {e}", path.display())))?;
    if let Err(e) = text.parse::<toml::Table>() {
        return Err(Error::config(format!(
            "{} is not valid TOML: {}",
            path.display(),
            e.to_string().trim_end()
        )));
    }
    let mut table: toml::Table = text.parse().expect("checked above");
    // The file's own relative paths resolve against its folder; overrides' against the current one.
    crate::paths::resolve(&mut table, &crate::paths::manifest_base(path));
    let (mut all, warnings) = env_overrides(env)?;
    all.extend(sets.iter().cloned());
    let overrides: Vec<String> = all.iter().map(|s| s.origin.clone()).collect();
    let sets = apply_sets_to_tables(&table, &all)?;
    let mut fig = Figment::new().merge(ManifestFile {
        path: path.to_path_buf(),
        table,
    });
    for s in &sets {
        fig = fig.merge(s.clone());
    }
    let raw: RawManifest = fig.extract().map_err(|e| format_figment_error(e, path))?;
    let mut m = validate(path, &fig, raw)?;
    m.overrides = overrides;
    m.warnings = warnings;
    Ok(m)
}

fn range_err(fig: &Figment, manifest: &Path, key: &str, msg: String) -> Error {
    Error::config(format!(
        "{}, key `{key}`: {msg}",
        origin(fig, key, manifest)
    ))
}

/// Check every number is in range and every path exists; expand the grid.
pub fn validate(path: &Path, fig: &Figment, mut raw: RawManifest) -> Result<Manifest> {
    let e = |key: &str, msg: String| range_err(fig, path, key, msg);
    let x = &raw.experiment;
    if x.name.trim().is_empty() || x.name.contains(['/', '\\']) || x.name.starts_with('.') {
        return Err(e(
            "experiment.name",
            format!(
                "`{}` cannot name a results folder; use letters, digits, `-` or `_`",
                x.name
            ),
        ));
    }
    let s = &raw.split;
    if !(s.test_fraction > 0.0 && s.test_fraction < 1.0) {
        return Err(e(
            "split.test_fraction",
            format!(
                "{} is out of range; it must be > 0 and < 1, e.g. 0.2",
                s.test_fraction
            ),
        ));
    }
    if !(s.validation_fraction >= 0.0 && s.validation_fraction < 1.0) {
        return Err(e(
            "split.validation_fraction",
            format!(
                "{} is out of range; it must be >= 0 and < 1 (0 disables early stopping), e.g. 0.1",
                s.validation_fraction
            ),
        ));
    }
    let d = &raw.data;
    if d.min_examples == 0 {
        return Err(e("data.min_examples", "must be at least 1".into()));
    }
    if matches!(d.kind, DataKind::Jsonl | DataKind::Csv) && d.file.is_none() {
        return Err(e(
            "data.file",
            format!(
                "a `{}` dataset needs `data.file`, the path of your file (relative to the manifest's folder, or absolute)",
                d.kind.as_str()
            ),
        ));
    }
    if d.kind == DataKind::CtiToMitre
        && let Some(l) = &d.label
        && l != "label_tec"
        && l != "label_subtec"
    {
        return Err(e(
            "data.label",
            format!(
                "`{l}` is not a CTI-to-MITRE label field; valid: `label_tec` (188 techniques) or `label_subtec` (566 labels)"
            ),
        ));
    }
    if d.kind == DataKind::TramBootstrap
        && let Some(l) = &d.label
        && l != "attack_id"
    {
        return Err(e(
            "data.label",
            format!(
                "`{l}`: TRAM bootstrap labels come from `sentences[].mappings[].attack_id`; leave `data.label` unset or `attack_id`"
            ),
        ));
    }
    let mut exclude = Vec::with_capacity(d.exclude.len());
    for x in &d.exclude {
        match crate::data::labels::technique_id(x) {
            Some(id) => exclude.push(id),
            None => {
                return Err(e(
                    "data.exclude",
                    format!(
                        "`{x}` is not a technique ID; give ATT&CK IDs such as [\"T1059.001\", \"T1105\"]"
                    ),
                ));
            }
        }
    }
    let data_dir = resolve_data_dir(d.dir.as_deref());
    // The data folder holds the publishers' files: a user's own file (`data.file`) needs none,
    // and `attack = "auto"` only looks there.
    let needs_folder = d.file.is_none()
        || matches!(&d.attack, AttackSource::Path(p) if p.is_relative())
        || d.dir.is_some();
    if needs_folder && !data_dir.is_dir() {
        return Err(Error::data(format!(
            "data folder {} does not exist; set `data.dir` in the manifest or SYNTHCTI_DATA_DIR, or run `synthcti data pull --dir {}`",
            data_dir.display(),
            data_dir.display()
        )));
    }

    for (ci, c) in raw.classifier.iter().enumerate() {
        let k = |f: &str| format!("classifier.{ci}.{f}");
        if let Err((field, msg)) = c.check() {
            return Err(e(&k(&field), msg));
        }
        let need = crate::hub::need_for(c.kind());
        let revisions = c.revisions();
        if let Some(r) = revisions
            .iter()
            .find(|r| r.trim().is_empty() || r.contains(".."))
        {
            return Err(e(
                &k("revision"),
                format!(
                    "`{r}` is not a revision; give a branch, tag or commit sha (default `{}`)",
                    crate::hub::DEFAULT_REVISION
                ),
            ));
        }
        for m in c.models() {
            let dir = match crate::hub::ModelRef::parse(&m) {
                // A Hub id is resolved by `run` before any work (`plan` only reads the cache):
                // its config.json is checked here when the cache has it, else when downloaded.
                crate::hub::ModelRef::Hub(id) => {
                    let env = crate::hub::HubEnv::from_env();
                    for r in &revisions {
                        if need == crate::ml::model_files::Need::Model
                            && let Some(snap) = crate::hub::cached(&env, &id, r, need)
                            && let Err(err) = crate::ml::encoder::read_config(&snap)
                        {
                            return Err(e(
                                &k("model"),
                                format!(
                                    "the Hugging Face model `{id}` at revision `{r}` (in the cache): {}; synthcti runs BERT, RoBERTa, XLM-RoBERTa and ALBERT encoders",
                                    err.message
                                ),
                            ));
                        }
                    }
                    continue;
                }
                crate::hub::ModelRef::Folder(dir) => dir,
            };
            if let Some(r) = revisions
                .iter()
                .find(|r| r.as_str() != crate::hub::DEFAULT_REVISION)
            {
                return Err(e(
                    &k("revision"),
                    format!(
                        "revision `{r}` applies to a Hugging Face id, but `{m}` is a local folder; remove `revision`, or give the id (`owner/name`) as `model`"
                    ),
                ));
            }
            if let Err(missing) =
                crate::ml::model_files::Layout::resolve(need, |f| dir.join(f).is_file())
            {
                return Err(e(
                    &k("model"),
                    format!(
                        "the model folder {m} lacks {}; run `just models` (or scripts/fetch-models.sh) for {DEFAULT_ENCODER}, give a Hugging Face model folder with {}, or a Hugging Face id (`owner/name`, e.g. `albert/albert-base-v2`)",
                        missing.join("; "),
                        crate::ml::model_files::wanted(need)
                    ),
                ));
            }
            if need == crate::ml::model_files::Need::Model
                && let Err(err) = crate::ml::encoder::read_config(&dir)
            {
                return Err(e(
                    &k("model"),
                    format!(
                        "{}; synthcti runs BERT, RoBERTa, XLM-RoBERTa and ALBERT encoders",
                        err.message
                    ),
                ));
            }
        }
    }
    if raw.classifier.is_empty() {
        return Err(e(
            "classifier",
            "no classifier; add a [[classifier]] table with `kind = \"fasttext\"` (or `encoder-frozen`, `encoder-finetune`, `transformer`)".into(),
        ));
    }
    if !(1..=MAX_REPLICATES).contains(&raw.experiment.replicates) {
        return Err(e(
            "experiment.replicates",
            format!(
                "{} is out of range; use 1 to {MAX_REPLICATES} (3 to 5 is usual: each replicate reruns the split, the generation and the training)",
                raw.experiment.replicates
            ),
        ));
    }
    let study = raw.study.check().map_err(|m| e("study.resamples", m))?;
    crate::external::validate(&raw.evaluate, &data_dir, &e)?;
    let executor = raw.executor.check().map_err(|(key, m)| e(&key, m))?;
    raw.data.exclude = exclude;
    let cells = expand(&raw);
    if raw.data.multi_label == MultiLabelPolicy::Keep
        && cells.iter().any(|c| c.augment == AugmentKind::Synthetic)
    {
        return Err(e(
            "augment.kind",
            "synthetic cells need a single-label task, but `data.multi_label = \"keep\"` makes it multi-label; set `augment.kind = \"none\"`".into(),
        ));
    }
    if raw.data.multi_label == MultiLabelPolicy::Keep
        && raw.data.multi_label_head == crate::data::config::MultiLabelHead::Sigmoid
        && let Some(c) = cells.iter().find(|c| {
            !matches!(
                c.classifier,
                ClassifierKind::Fasttext | ClassifierKind::EncoderFrozen | ClassifierKind::Linear
            )
        })
    {
        return Err(e(
            "data.multi_label_head",
            format!(
                "\"sigmoid\" heads exist for `fasttext`, `encoder-frozen` and `linear`, but cell {} is `{}`; set `data.multi_label_head = \"none-class\"` or drop that [[classifier]]",
                c.name,
                c.classifier.as_str()
            ),
        ));
    }
    let (templates, generators) = validate_augment(&raw, &cells, &data_dir, &e)?;
    if let Some(list) = resolve_target_list(&raw, &data_dir, &e)? {
        raw.augment.targets.list = Some(list);
    }
    Ok(Manifest {
        evaluate: raw.evaluate.clone(),
        source: path.to_path_buf(),
        experiment: raw.experiment.clone(),
        data: raw.data.clone(),
        split: raw.split.clone(),
        augment: raw.augment.clone(),
        study,
        executor,
        resolved: raw,
        data_dir,
        cells,
        templates,
        generators,
        overrides: Vec::new(),
        warnings: Vec::new(),
    })
}

type Templates = BTreeMap<String, crate::prompt::PromptTemplate>;
type Generators = BTreeMap<String, crate::llm::Generator>;

/// Check the synthetic-data settings the grid uses: targets, numbers, templates (and the
/// variables they read), generators (model files, API key variables). Only what synthetic cells
/// use is checked, so a real-only manifest never needs a model.
fn validate_augment(
    raw: &RawManifest,
    cells: &[CellSpec],
    data_dir: &Path,
    e: &dyn Fn(&str, String) -> Error,
) -> Result<(Templates, Generators)> {
    let mut templates = BTreeMap::new();
    let mut generators = BTreeMap::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, g) in raw.generator.iter().enumerate() {
        if g.name.trim().is_empty() {
            return Err(e(
                &format!("generator.{i}.name"),
                "must not be empty".into(),
            ));
        }
        if !names.insert(g.name.clone()) {
            return Err(e(
                &format!("generator.{i}.name"),
                format!(
                    "two [[generator]] tables are named `{}`; names must be unique",
                    g.name
                ),
            ));
        }
    }
    if cells.iter().all(|c| c.augment == AugmentKind::None) {
        return Ok((templates, generators));
    }
    let synthetic = cells.iter().any(|c| c.synthetic.is_some());
    let a = &raw.augment;
    let t = &a.targets;
    let rules = [t.below.is_some(), t.quantile.is_some(), t.list.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if rules > 1 {
        return Err(e(
            "augment.targets",
            "give one of `below`, `quantile` or `list`, not several".into(),
        ));
    }
    if t.below == Some(0) {
        return Err(e("augment.targets.below", "must be at least 1".into()));
    }
    if let Some(q) = t.quantile
        && !(q > 0.0 && q < 1.0)
    {
        return Err(e(
            "augment.targets.quantile",
            format!("{q} is out of range; it must be > 0 and < 1, e.g. 0.25"),
        ));
    }
    let range = |key: &str, vals: Vec<usize>, lo: usize, hi: usize| -> Result<()> {
        for v in vals {
            if v < lo || v > hi {
                return Err(e(
                    key,
                    format!("{v} is out of range; it must be between {lo} and {hi}"),
                ));
            }
        }
        Ok(())
    };
    range("augment.k", a.k.values(), 1, 64)?;
    range("augment.per_technique", a.per_technique.values(), 1, 10_000)?;
    range("augment.per_call", vec![a.per_call], 1, 100)?;
    range("augment.top_up", vec![a.top_up], 0, 5)?;
    range("augment.representatives", vec![a.representatives], 0, 50)?;
    range("augment.svd_dim", vec![a.svd_dim], 1, 1024)?;
    if a.embedding == ClusterEmbedding::Encoder {
        crate::ml::encoder::identity(Path::new(&a.encoder), false).map_err(|err| {
            e(
                "augment.encoder",
                format!(
                    "{}; `embedding = \"encoder\"` needs a model folder",
                    err.message
                ),
            )
        })?;
    }
    let f = &a.filter;
    range("augment.filter.min_words", vec![f.min_words], 1, 100)?;
    range("augment.filter.max_chars", vec![f.max_chars], 10, 100_000)?;
    if f.repeated_ngram == 1 || f.repeated_ngram > 20 {
        return Err(e(
            "augment.filter.repeated_ngram",
            format!(
                "{} is out of range; use 0 (off) or 2 to 20 words (1 would remove any sentence that repeats a word)",
                f.repeated_ngram
            ),
        ));
    }
    for (key, v) in [
        ("augment.filter.near_duplicate", f.near_duplicate),
        ("augment.filter.leakage", f.leakage),
    ] {
        if !(v > 0.0 && v <= 1.0) {
            return Err(e(
                key,
                format!("{v} is out of range; it must be > 0 and <= 1 (a cosine similarity)"),
            ));
        }
    }
    if synthetic && f.reference_classifier == crate::filter::ReferenceClassifier::EncoderFrozen {
        crate::ml::encoder::identity(Path::new(&a.encoder), false).map_err(|err| {
            e(
                "augment.filter.reference_classifier",
                format!(
                    "\"encoder-frozen\" embeds with `augment.encoder`, and {}; set `augment.encoder` to a model folder (run `just models` for {DEFAULT_ENCODER}), or use \"fasttext\"",
                    err.message
                ),
            )
        })?;
    }
    let needs_bundle = synthetic
        || cells
            .iter()
            .any(|c| c.augment == AugmentKind::AttackDescription);
    if !needs_bundle {
        return Ok((templates, generators));
    }
    if raw.data.attack == AttackSource::None {
        return Err(e(
            "data.attack",
            "synthetic and attack-description cells need the ATT&CK bundle for technique names and descriptions; set `data.attack` to `auto` or a bundle path".into(),
        ));
    }
    if crate::data::attack_path(&raw.data, data_dir)?.is_none() {
        return Err(Error::data(format!(
            "synthetic and attack-description cells need the ATT&CK bundle (technique names and descriptions) and there is none in {}; run `synthcti data pull` or set `data.attack`",
            data_dir.display()
        )));
    }
    if !synthetic {
        return Ok((templates, generators));
    }
    for name in a.template.values() {
        let t = crate::prompt::PromptTemplate::resolve(&name, &a.templates_dir)
            .map_err(|err| e("augment.template", err.message))?;
        templates.insert(name, t);
    }
    for name in a.generator.values() {
        let Some((gi, g)) = raw
            .generator
            .iter()
            .enumerate()
            .find(|(_, g)| g.name == name)
        else {
            return Err(e(
                "augment.generator",
                format!(
                    "no [[generator]] named `{name}`; defined: {}",
                    raw.generator
                        .iter()
                        .map(|g| format!("`{}`", g.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        let k = |f: &str| format!("generator.{gi}.{f}");
        if g.provider == ProviderKind::Replay {
            if g.of.is_none() {
                return Err(e(
                    &k("of"),
                    "a replay generator needs `of`, the name of the generator whose cached calls it replays".into(),
                ));
            }
        } else {
            if g.of.is_some() {
                return Err(e(&k("of"), "only a `replay` generator takes `of`".into()));
            }
            if g.model.trim().is_empty() {
                return Err(e(
                    &k("model"),
                    "must name a model (a GGUF path or a model id)".into(),
                ));
            }
            if !(0.0..=2.0).contains(&g.temperature) {
                return Err(e(
                    &k("temperature"),
                    format!(
                        "{} is out of range; it must be between 0 and 2",
                        g.temperature
                    ),
                ));
            }
            if !(g.top_p > 0.0 && g.top_p <= 1.0) {
                return Err(e(
                    &k("top_p"),
                    format!("{} is out of range; it must be > 0 and <= 1", g.top_p),
                ));
            }
            range(&k("max_tokens"), vec![g.max_tokens as usize], 1, 32_768)?;
            range(&k("threads"), vec![g.threads], 1, 256)?;
            range(&k("context"), vec![g.context as usize], 128, 1 << 20)?;
            range(&k("parallel"), vec![g.parallel as usize], 1, 64)?;
            range(&k("item_chars"), vec![g.item_chars], 20, 4000)?;
            if !(g.repeat_penalty > 0.0 && g.repeat_penalty <= 2.0) {
                return Err(e(
                    &k("repeat_penalty"),
                    format!(
                        "{} is out of range; it must be > 0 and <= 2 (1 is off; 1.1 is llama.cpp's earlier default)",
                        g.repeat_penalty
                    ),
                ));
            }
            range(&k("repeat_last_n"), vec![g.repeat_last_n as usize], 1, 4096)?;
            if g.item_decay_start > 0 {
                if g.provider != ProviderKind::Local || !g.structured {
                    return Err(e(
                        &k("item_decay_start"),
                        "applies to `local` generators with `structured = true` (it steers where the grammar's list items end); remove it or set `structured = true`".into(),
                    ));
                }
                if g.item_decay_start >= g.item_chars {
                    return Err(e(
                        &k("item_decay_start"),
                        format!(
                            "{} is not below `item_chars` ({}); the penalty must start before the grammar's bound",
                            g.item_decay_start, g.item_chars
                        ),
                    ));
                }
                if !(g.item_decay_factor > 1.0 && g.item_decay_factor <= 2.0) {
                    return Err(e(
                        &k("item_decay_factor"),
                        format!(
                            "{} is out of range; it must be > 1 and <= 2 (1.03: the period's logit grows about 3% a character)",
                            g.item_decay_factor
                        ),
                    ));
                }
            }
            if g.repeat_penalty != 1.0 && g.provider == ProviderKind::Openai {
                return Err(e(
                    &k("repeat_penalty"),
                    "applies to `local` generators (llama.cpp's penalties sampler); the OpenAI API has no such parameter".into(),
                ));
            }
            if !g.banned_words.is_empty() && g.provider == ProviderKind::Openai {
                return Err(e(
                    &k("banned_words"),
                    "applies to `local` generators (a logit of −∞ for the model's own tokens); an OpenAI endpoint's `logit_bias` takes the server tokenizer's token ids, which synthcti does not know; remove it".into(),
                ));
            }
            for (i, w) in g.banned_words.iter().enumerate() {
                if w.is_empty() || w.chars().count() > 40 || w.chars().any(char::is_whitespace) {
                    return Err(e(
                        &k("banned_words"),
                        format!(
                            "entry {i}, {w:?}, is not a word: each entry must be one word of 1 to 40 characters without spaces (e.g. \"you\")"
                        ),
                    ));
                }
            }
            if g.parallel > 1 && g.provider == ProviderKind::Openai {
                return Err(e(
                    &k("parallel"),
                    "applies to `local` generators (sequences of one llama.cpp batch); an `openai` endpoint batches on its side: set `concurrency` for calls in flight".into(),
                ));
            }
            range(&k("concurrency"), vec![g.concurrency], 1, 256)?;
            range(&k("max_retries"), vec![g.max_retries as usize], 0, 20)?;
            for (f, v) in [
                ("timeout_s", g.timeout_s),
                ("backoff_s", g.backoff_s),
                ("max_backoff_s", g.max_backoff_s),
            ] {
                if !(v > 0.0 && v <= 3600.0) {
                    return Err(e(
                        &k(f),
                        format!("{v} is out of range; it must be > 0 and <= 3600 seconds"),
                    ));
                }
            }
            if g.provider == ProviderKind::Openai {
                if !(g.base_url.starts_with("http://") || g.base_url.starts_with("https://")) {
                    return Err(e(
                        &k("base_url"),
                        format!(
                            "`{}` is not an http(s) URL; e.g. https://api.openai.com/v1 or http://127.0.0.1:8080/v1",
                            g.base_url
                        ),
                    ));
                }
                crate::llm::openai::api_key(g).map_err(|err| e(&k("api_key_env"), err.message))?;
            }
        }
        let resolved = crate::llm::Generator::resolve(&name, &raw.generator)
            .map_err(|err| e(&k("model"), err.message))?;
        generators.insert(name, resolved);
    }
    Ok((templates, generators))
}

/// `augment.targets.list` as the data's labels are: in ATT&CK's spelling, revoked IDs mapped to
/// their successors, duplicates removed. A listed ID that resolves to nothing is an error naming
/// it and why: not a technique ID, absent from the ATT&CK catalog, revoked with no successor,
/// deprecated, or without examples in the loaded data (the catalog and the dataset are read
/// here for that, when there is a list).
fn resolve_target_list(
    raw: &RawManifest,
    data_dir: &Path,
    e: &dyn Fn(&str, String) -> Error,
) -> Result<Option<Vec<String>>> {
    const KEY: &str = "augment.targets.list";
    let Some(list) = &raw.augment.targets.list else {
        return Ok(None);
    };
    if list.is_empty() || list.iter().any(|x| x.trim().is_empty()) {
        return Err(e(
            KEY,
            "give technique IDs such as [\"T1001\", \"T1059.001\"]".into(),
        ));
    }
    let mut spelled = Vec::with_capacity(list.len());
    for x in list {
        let Some(id) = crate::data::labels::technique_id(x) else {
            return Err(e(
                KEY,
                format!(
                    "`{x}` is not a technique ID; give ATT&CK IDs such as [\"T1001\", \"T1059.001\"]"
                ),
            ));
        };
        spelled.push((x, id));
    }
    let catalog = match crate::data::attack_path(&raw.data, data_dir)? {
        Some(p) => Some(crate::data::Catalog::load(&p)?),
        None => None,
    };
    let mut resolved: Vec<(&String, String)> = Vec::with_capacity(spelled.len());
    for (x, id) in spelled {
        let Some(cat) = &catalog else {
            resolved.push((x, id));
            continue;
        };
        let now = cat.resolve(&id);
        let standing = cat.standing(&id);
        if standing != crate::data::attack::Standing::Active {
            let via = if now != id {
                format!(" (revoked in favour of {now})")
            } else {
                String::new()
            };
            return Err(e(
                KEY,
                format!(
                    "`{x}` resolves to no technique to write sentences for: {now}{via} is {}; list current ATT&CK techniques, or remove it",
                    cat.why(&standing)
                ),
            ));
        }
        resolved.push((x, now));
    }
    let data_path = crate::data::check_dataset_file(&raw.data, data_dir)?;
    let ds = crate::data::load(&raw.data, &data_path, catalog.as_ref())?;
    let classes = ds.class_counts();
    for (x, id) in &resolved {
        if classes.contains_key(id) {
            continue;
        }
        let st = &ds.stats;
        let why = if let Some(n) = st.excluded.get(id) {
            format!("`data.exclude` drops its {n} rows")
        } else if let Some(n) = st.rare_classes_dropped.get(id) {
            format!(
                "it has {n} examples, under `data.min_examples = {}`",
                raw.data.min_examples
            )
        } else if let Some(f) = st.deprecated.get(id).or(st.unknown_techniques.get(id)) {
            format!(
                "its {} rows are dropped ({}; see `data.deprecated` and `data.unknown_techniques`)",
                f.rows, f.why
            )
        } else {
            format!("no row of {} has it as its label", data_path.display())
        };
        let named = if x.as_str() == id.as_str() {
            format!("`{x}`")
        } else {
            format!("`{x}` ({id})")
        };
        return Err(e(
            KEY,
            format!(
                "{named} has no examples in the data: {why}; list techniques the dataset has ({} classes, e.g. {})",
                classes.len(),
                classes
                    .keys()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let mut ids: Vec<String> = Vec::with_capacity(resolved.len());
    for (_, id) in resolved {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(Some(ids))
}

/// The data folder: `data.dir`, else `SYNTHCTI_DATA_DIR` (already layered into `data.dir`), else
/// `../shared/data` or `./data`.
pub fn resolve_data_dir(dir: Option<&Path>) -> PathBuf {
    match dir {
        Some(d) => d.to_path_buf(),
        None => crate::data::default_data_dir(),
    }
}

/// The fields of a `[[classifier]]`, in the order they expand, with their cell-name tags.
const AXES: &[(&str, &str)] = &[
    ("model", "m"),
    ("revision", "rev"),
    ("max_length", "len"),
    ("layers", "L"),
    ("hidden", "H"),
    ("heads", "A"),
    ("intermediate", "I"),
    ("head_hidden", "hh"),
    ("dropout", "do"),
    ("dim", "dim"),
    ("word_ngrams", "wng"),
    ("minn", "minn"),
    ("maxn", "maxn"),
    ("buckets", "b"),
    ("epochs", "ep"),
    ("lr", "lr"),
    ("batch_size", "bs"),
    ("patience", "pat"),
    ("min_delta", "md"),
    ("class_weight", "cw"),
    ("weighting", "wt"),
    ("warmup", "wu"),
    ("weight_decay", "wd"),
    ("max_features", "mf"),
    ("min_df", "mdf"),
    ("sublinear_tf", "sub"),
    ("c", "C"),
    ("tol", "tol"),
];

/// Expand the grid into cells: classifiers × their swept fields × augment variants × seeds ×
/// replicates. Cell names end in `-r<r>` when there are several replicates; replicate 0's hash is
/// the one-replicate cell's, so its cache entries and name stem are shared.
pub fn expand(raw: &RawManifest) -> Vec<CellSpec> {
    let x = &raw.experiment;
    let reps = x.replicates.max(1);
    let mut cells = Vec::new();
    for r in 0..reps {
        let split_seed = replicate_seed(raw.split.seed, r, ReplicatePart::Split, &x.pin);
        let generation_offset = replicate_seed(0, r, ReplicatePart::Generation, &x.pin);
        for c in &raw.classifier {
            let combos = c.expand(AXES);
            let variants = augment_variants(&raw.augment);
            for (augment, synth, oversample, synth_tags) in &variants {
                for base_seed in x.seeds.values() {
                    let seed = replicate_seed(base_seed, r, ReplicatePart::Training, &x.pin);
                    for (p, tags) in &combos {
                        let mut config = c.kind().as_str().to_string();
                        for (k, v) in tags {
                            config.push_str(&format!("-{k}{v}"));
                        }
                        if x.seeds.is_sweep() {
                            config.push_str(&format!("-s{base_seed}"));
                        }
                        let mut name = c.kind().as_str().to_string();
                        for (k, v) in tags.iter().chain(synth_tags) {
                            name.push_str(&format!("-{k}{v}"));
                        }
                        if raw.augment.kind.is_sweep() {
                            name.push_str(&format!("-{}", augment.as_str()));
                        }
                        name.push_str(&format!("-s{seed}"));
                        if reps > 1 {
                            name.push_str(&format!("-r{r}"));
                        }
                        let mut id = serde_json::json!({
                            "kind": c.kind(), "params": p, "seed": seed, "augment": augment,
                            "synthetic": synth,
                        });
                        if r > 0 {
                            id["replicate"] = serde_json::json!(r);
                        }
                        if let Some(n) = oversample {
                            id["oversample"] = serde_json::json!(n);
                        }
                        let h =
                            crate::hash::blake3_hex(crate::hash::canonical_json(&id).as_bytes());
                        name.push('-');
                        name.push_str(&h[..6]);
                        cells.push(CellSpec {
                            name,
                            classifier: c.kind(),
                            params: p.clone(),
                            seed,
                            augment: *augment,
                            synthetic: synth.clone(),
                            oversample: *oversample,
                            replicate: r,
                            split_seed,
                            generation_offset,
                            config,
                        });
                    }
                }
            }
        }
    }
    // The same configuration listed twice is one cell.
    let mut seen = std::collections::BTreeSet::new();
    cells.retain(|c| seen.insert(c.name.clone()));
    cells
}

/// The augmentation variants of the grid: `none` once, `synthetic` once per combination of its
/// swept settings, each with the name tags of the settings that are swept.
type Variant = (
    AugmentKind,
    Option<SynthSpec>,
    Option<usize>,
    Vec<(String, String)>,
);

fn augment_variants(a: &AugmentConfig) -> Vec<Variant> {
    let mut out = Vec::new();
    for kind in a.kind.values() {
        match kind {
            AugmentKind::None | AugmentKind::AttackDescription => {
                out.push((kind, None, None, Vec::new()));
                continue;
            }
            AugmentKind::Oversample => {
                for n in a.per_technique.values() {
                    let mut tags = Vec::new();
                    if a.per_technique.is_sweep() {
                        tags.push(("n".to_string(), n.to_string()));
                    }
                    out.push((kind, None, Some(n), tags));
                }
                continue;
            }
            AugmentKind::Synthetic => {}
        }
        for k in a.k.values() {
            for template in a.template.values() {
                for generator in a.generator.values() {
                    for per_technique in a.per_technique.values() {
                        let mut tags = Vec::new();
                        if a.k.is_sweep() {
                            tags.push(("k".to_string(), k.to_string()));
                        }
                        if a.template.is_sweep() {
                            tags.push(("t".to_string(), template.clone()));
                        }
                        if a.generator.is_sweep() {
                            tags.push(("g".to_string(), generator.clone()));
                        }
                        if a.per_technique.is_sweep() {
                            tags.push(("n".to_string(), per_technique.to_string()));
                        }
                        let spec = SynthSpec {
                            k,
                            template: template.clone(),
                            generator: generator.clone(),
                            per_technique,
                        };
                        out.push((kind, Some(spec), None, tags));
                    }
                }
            }
        }
    }
    out
}

impl fmt::Display for CellSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The resolved manifest as TOML (after defaults and overrides).
pub fn resolved_toml(m: &Manifest) -> String {
    let mut doc = toml::to_string_pretty(&m.resolved).unwrap_or_default();
    doc.insert_str(
        0,
        &format!(
            "# resolved from {} (defaults < file < SYNTHCTI_* < --set)\n# data folder: {}\n\n",
            m.source.display(),
            m.data_dir.display()
        ),
    );
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, body: &str) -> PathBuf {
        let p = dir.join("m.toml");
        std::fs::write(&p, body).unwrap();
        p
    }

    fn base(dir: &Path) -> String {
        format!(
            "[experiment]\nname = \"t\"\n[data]\ndir = \"{}\"\n",
            dir.display()
        )
    }

    #[test]
    fn lists_expand_as_a_cartesian_product() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            &(base(dir.path())
                + "[[classifier]]\nkind = \"fasttext\"\ndim = [16, 32]\nlr = [0.1, 0.01, 0.001]\n"),
        );
        let m = load(&p, &[]).unwrap();
        assert_eq!(m.cells.len(), 6);
        assert!(m.cells.iter().all(|c| c.name.starts_with("fasttext-dim")));
        let names: std::collections::BTreeSet<_> = m.cells.iter().map(|c| &c.name).collect();
        assert_eq!(names.len(), 6);
    }

    #[test]
    fn replicates_vary_split_generation_and_training_seeds_from_replicate_0() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            &(base(dir.path())
                .replace("name = \"t\"", "name = \"t\"\nreplicates = 3\nseeds = [7]")
                + "[split]\nseed = 100\n"),
        );
        let one = load(&p, &[SetArg::parse("experiment.replicates=1").unwrap()]).unwrap();
        let m = load(&p, &[]).unwrap();
        assert_eq!(m.cells.len(), 3);
        let got: Vec<(usize, u64, u64, u64)> = m
            .cells
            .iter()
            .map(|c| (c.replicate, c.split_seed, c.generation_offset, c.seed))
            .collect();
        assert_eq!(got, [(0, 100, 0, 7), (1, 101, 1, 8), (2, 102, 2, 9)]);
        assert!(m.cells[1].name.ends_with(&format!(
            "-s8-r1-{}",
            &m.cells[1].name[m.cells[1].name.len() - 6..]
        )));
        // Replicate 0 is the one-replicate cell: same hash, so the same cache entries.
        let stem = |n: &str| n[n.len() - 6..].to_string();
        assert_eq!(stem(&m.cells[0].name), stem(&one.cells[0].name));
        assert!(m.cells.iter().all(|c| c.config == "fasttext"));
        let r2 = m.replicate(2);
        assert_eq!(r2.split.seed, 102);
        assert_eq!(r2.cells.len(), 1);
        assert_eq!(r2.cells[0].replicate, 2);
    }

    #[test]
    fn pinned_parts_keep_the_manifest_seed_in_every_replicate() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            &(base(dir.path()).replace(
                "name = \"t\"",
                "name = \"t\"\nreplicates = 2\npin = [\"split\", \"generation\"]",
            )),
        );
        let m = load(&p, &[]).unwrap();
        let got: Vec<(u64, u64, u64)> = m
            .cells
            .iter()
            .map(|c| (c.split_seed, c.generation_offset, c.seed))
            .collect();
        assert_eq!(got, [(42, 0, 42), (42, 0, 43)]);
        assert_ne!(m.cells[0].name, m.cells[1].name);
    }

    #[test]
    fn replicates_out_of_range_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), &base(dir.path()));
        for bad in ["0", "101"] {
            let e = load(
                &p,
                &[SetArg::parse(&format!("experiment.replicates={bad}")).unwrap()],
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("experiment.replicates") && e.contains("use 1 to 100"),
                "{e}"
            );
        }
        let e = load(&p, &[SetArg::parse("experiment.pin=[\"data\"]").unwrap()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("split") && e.contains("training"), "{e}");
    }

    #[test]
    fn cheap_arms_expand_beside_none_and_oversample_follows_per_technique() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            &(base(dir.path())
                + "[augment]\nkind = [\"none\", \"oversample\"]\nper_technique = [10, 20]\n"),
        );
        let m = load(&p, &[]).unwrap();
        let got: Vec<(AugmentKind, Option<usize>, String)> = m
            .cells
            .iter()
            .map(|c| (c.augment, c.oversample, c.arm_label()))
            .collect();
        assert_eq!(
            got,
            [
                (AugmentKind::None, None, "none".to_string()),
                (
                    AugmentKind::Oversample,
                    Some(10),
                    "oversample (n10)".to_string()
                ),
                (
                    AugmentKind::Oversample,
                    Some(20),
                    "oversample (n20)".to_string()
                ),
            ]
        );
        assert!(
            m.cells[1].name.contains("-n10-oversample-"),
            "{}",
            m.cells[1].name
        );
    }

    #[test]
    fn set_on_a_mixed_grid_reaches_the_kinds_that_have_the_field() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
        let body = base(dir.path())
            + &format!(
                "[[classifier]]\nkind = \"fasttext\"\n[[classifier]]\nkind = \"transformer\"\nmodel = \"{}\"\n",
                dir.path().display()
            );
        let p = write(dir.path(), &body);
        let m = load(&p, &[SetArg::parse("classifier.dim=[8,16]").unwrap()]).unwrap();
        let dims: Vec<_> = m
            .cells
            .iter()
            .filter_map(|c| c.params.fasttext().map(|f| f.dim))
            .collect();
        assert_eq!(dims, vec![8, 16]);
        assert_eq!(m.cells.len(), 3, "two fastText cells and one transformer");
        let e = load(&p, &[SetArg::parse("classifier.head_hidden=4").unwrap()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--set classifier.head_hidden=4: no [[classifier]] of this manifest has `head_hidden` (it is a key of `encoder-frozen`)"),
            "{e}"
        );
    }

    #[test]
    fn set_overrides_file_and_parses_toml_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), &base(dir.path()));
        let m = load(
            &p,
            &[
                SetArg::parse("split.seed=7").unwrap(),
                SetArg::parse("experiment.seeds=[1,2]").unwrap(),
            ],
        )
        .unwrap();
        assert_eq!(m.split.seed, 7);
        assert_eq!(m.cells.len(), 2);
    }

    #[test]
    fn unknown_key_names_file_key_and_valid_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            &(base(dir.path()) + "[split]\ntset_fraction = 0.2\n"),
        );
        let err = load(&p, &[]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.message.contains("m.toml"), "{}", err.message);
        assert!(err.message.contains("tset_fraction"), "{}", err.message);
        assert!(err.message.contains("`test_fraction`"), "{}", err.message);
    }

    #[test]
    fn out_of_range_fraction_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["-0.1", "1.5", "0", "1"] {
            let p = write(
                dir.path(),
                &(base(dir.path()) + &format!("[split]\ntest_fraction = {bad}\n")),
            );
            let err = load(&p, &[]).unwrap_err();
            assert!(
                err.message.contains("split.test_fraction"),
                "{}",
                err.message
            );
            assert!(err.message.contains("> 0 and < 1"), "{}", err.message);
        }
    }

    #[test]
    fn set_arg_without_equals_is_an_error() {
        assert!(SetArg::parse("split.seed").is_err());
        assert!(SetArg::parse("a..b=1").is_err());
        let s = SetArg::parse("data.kind=tram-multi").unwrap();
        assert_eq!(s.value.as_str(), Some("tram-multi"));
    }

    #[test]
    fn the_build_scripts_commit_variable_is_no_manifest_key_and_no_warning() {
        let (sets, warnings) =
            env_overrides([("SYNTHCTI_GIT_COMMIT".to_string(), "743fdbf".to_string())]).unwrap();
        assert!(sets.is_empty() && warnings.is_empty(), "{warnings:?}");
    }
}
