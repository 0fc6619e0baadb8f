//! The load stage: parse a publisher's own file format into labelled examples, write every
//! technique ID as ATT&CK does and map revoked ones, drop deprecated, unknown and excluded
//! techniques, duplicates, conflicting labels and rare classes as the manifest says.

pub mod attack;
pub mod config;
mod formats;
pub mod labels;
pub mod pull;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::config::{
    AttackSource, ConflictPolicy, DataConfig, DataKind, DeprecatedPolicy, DuplicatePolicy,
    MultiLabelPolicy, NegativePolicy, UnknownTechniquePolicy,
};
use crate::error::{Error, Result};
pub use attack::Catalog;
use attack::Standing;
pub use formats::NEGATIVE_LABEL;
use labels::{Normalizer, is_technique_id, technique_id};

/// Version of the load stage's output; bump when the parsing or filtering changes.
/// 2: technique IDs respelled and split before the multi-label policy; deprecated, unknown and
/// excluded techniques handled as `data.deprecated`, `data.unknown_techniques`, `data.exclude` say.
/// 4: each example carries `row`, its position in the source file.
/// 5: a row without the label field is a row without a label (`data.negatives`), a UTF-8
/// byte-order mark is skipped in JSON and JSONL files, and over-long texts are counted.
pub const LOAD_VERSION: u32 = 6;

/// One labelled text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Example {
    pub text: String,
    pub label: String,
    /// The report it comes from (`doc_title`), for grouped splits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Where it is in the source file, counting from 1: the item of a JSON array, the record
    /// of a JSONL file, the record after the header of a CSV file, the sentence of a TRAM
    /// report. Written into `predictions.jsonl` and the split files, to join results back.
    #[serde(default)]
    pub row: usize,
    /// Every label of the row, sorted, on a multi-label dataset (`data.multi_label = "keep"`);
    /// empty for a negative there, and on single-label datasets. `label` is then the set's key:
    /// the labels joined by `+`, or `none` for a negative.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

/// A technique the catalog does not hold as current, and the rows that carry it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Flagged {
    /// Why, in words (`deprecated in ATT&CK`, `not in the enterprise catalog (another domain?)`).
    pub why: String,
    /// Rows that carry it (before any policy dropped them).
    pub rows: usize,
}

/// A row whose text is longer than [`formats::LONG_TEXT_CHARS`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LongText {
    /// Its position among the rows read, from 1 (as [`Example::row`]).
    pub row: usize,
    /// The line of the file it starts on (0 where the format has no lines to name).
    pub line: usize,
    /// Its length in characters (Unicode scalar values), trimmed.
    pub chars: usize,
}

/// What loading and filtering did, for the report and the plan. Every row read is either kept
/// or dropped for exactly one reason: [`LoadStats::account`] adds them up.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadStats {
    pub rows_read: usize,
    /// Rows whose text is empty or only whitespace (dropped).
    pub empty_texts: usize,
    /// Rows without a label (null, empty, an empty list, or no label field) dropped by
    /// `data.negatives = "drop"`; with `"keep"` they become the class `none` instead.
    pub negatives_dropped: usize,
    /// Rows (JSON, JSONL) that have no label field at all, among the rows without a label.
    #[serde(default)]
    pub label_field_missing: usize,
    /// Rows whose text is over [`formats::LONG_TEXT_CHARS`] characters (kept, warned).
    #[serde(default)]
    pub long_texts: usize,
    /// The first few of them.
    #[serde(default)]
    pub long_text_rows: Vec<LongText>,
    /// Rows with several technique IDs (a list, or IDs joined in one cell) dropped by
    /// `data.multi_label = "drop"`.
    pub multi_label_dropped: usize,
    /// Rows with several technique IDs kept with their first by `data.multi_label = "first"`.
    pub multi_label_first: usize,
    /// Technique IDs of kept rows written in another spelling (case, spaces, a list in a
    /// string): as written → ATT&CK's spelling, with the number of rows.
    pub labels_normalized: BTreeMap<String, (String, usize)>,
    /// old id → new id, with the number of rows mapped.
    pub revoked_mapped: BTreeMap<String, (String, usize)>,
    /// Techniques the catalog marks deprecated or revoked without successor (kept or dropped as
    /// `data.deprecated` says): id → why and rows.
    pub deprecated: BTreeMap<String, Flagged>,
    /// Technique IDs the catalog lacks or has in another domain only (kept or dropped as
    /// `data.unknown_techniques` says): id → why and rows.
    pub unknown_techniques: BTreeMap<String, Flagged>,
    /// Rows dropped because `data.exclude` names their technique: id → rows.
    pub excluded: BTreeMap<String, usize>,
    /// Rows dropped for their label, by the setting that dropped them (`data.exclude`,
    /// `data.deprecated`, `data.unknown_techniques`, `data.multi_label`).
    pub labels_dropped: BTreeMap<String, usize>,
    pub exact_duplicates: usize,
    pub duplicates_dropped: usize,
    pub conflicting_texts: usize,
    pub conflict_rows_dropped: usize,
    /// class → count, for classes dropped under `min_examples`.
    pub rare_classes_dropped: BTreeMap<String, usize>,
    /// Rows dropped because every label they had is of a rare class (on a single-label task,
    /// the sum of `rare_classes_dropped`; on a multi-label one a row keeps its other labels).
    #[serde(default)]
    pub rare_rows_dropped: usize,
    pub examples: usize,
    pub classes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dataset {
    pub examples: Vec<Example>,
    pub stats: LoadStats,
    /// Whether the task is multi-label (`data.multi_label = "keep"`): then each example's
    /// [`Example::labels`] is its gold set and `label` only the set's key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub multi_label: bool,
}

/// `ID (why, N rows), …` for a log line.
fn flagged_list(m: &BTreeMap<String, Flagged>) -> String {
    m.iter()
        .map(|(id, f)| format!("{id} ({}, {} rows)", f.why, f.rows))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One reason a row was dropped, with its count, in the order the load stage applies them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Drop {
    /// What it is, in words (`duplicates`).
    pub kind: String,
    /// The setting that decides it (`data.duplicates`), where one does.
    pub setting: Option<String>,
    pub rows: usize,
}

/// Where every row read went: `rows_read = kept + Σ dropped`. Written to the run folder as
/// `load.json` (also when the load stage came from the cache) and summed up in the load line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoadAccount {
    pub rows_read: usize,
    pub kept: usize,
    pub classes: usize,
    /// Every kind of drop, zeros included.
    pub dropped: Vec<Drop>,
}

impl LoadAccount {
    /// Whether read = kept + every drop.
    pub fn adds_up(&self) -> bool {
        self.rows_read == self.kept + self.dropped.iter().map(|d| d.rows).sum::<usize>()
    }

    /// `5089 rows read = 4765 kept in 50 classes + 278 duplicates (data.duplicates) + …`; kinds
    /// with no row are left out.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{} rows read = {} kept in {} classes",
            self.rows_read, self.kept, self.classes
        );
        for d in self.dropped.iter().filter(|d| d.rows > 0) {
            s.push_str(&format!(" + {} {}", d.rows, d.kind));
            if let Some(k) = &d.setting {
                s.push_str(&format!(" ({k})"));
            }
        }
        s
    }
}

impl LoadStats {
    /// Where every row went: kept, or dropped for one reason each (see [`LoadAccount`]).
    pub fn account(&self) -> LoadAccount {
        let by = |k: &str| self.labels_dropped.get(k).copied().unwrap_or(0);
        let d = |kind: &str, setting: Option<&str>, rows: usize| Drop {
            kind: kind.to_string(),
            setting: setting.map(str::to_string),
            rows,
        };
        let rare_rows = self.rare_rows_dropped;
        LoadAccount {
            rows_read: self.rows_read,
            kept: self.examples,
            classes: self.classes,
            dropped: vec![
                d("with an empty text", None, self.empty_texts),
                d(
                    &if self.label_field_missing > 0 {
                        format!(
                            "without a label ({} of them lack the label field)",
                            self.label_field_missing
                        )
                    } else {
                        "without a label".to_string()
                    },
                    Some("data.negatives"),
                    self.negatives_dropped,
                ),
                d(
                    "with several labels",
                    Some("data.multi_label"),
                    self.multi_label_dropped,
                ),
                d("excluded", Some("data.exclude"), by("data.exclude")),
                d(
                    "of deprecated techniques",
                    Some("data.deprecated"),
                    by("data.deprecated"),
                ),
                d(
                    "of unknown techniques",
                    Some("data.unknown_techniques"),
                    by("data.unknown_techniques"),
                ),
                d(
                    "with conflicting labels",
                    Some("data.conflicts"),
                    self.conflict_rows_dropped,
                ),
                d(
                    "duplicates",
                    Some("data.duplicates"),
                    self.duplicates_dropped,
                ),
                d(
                    &format!("in {} rare classes", self.rare_classes_dropped.len()),
                    Some("data.min_examples"),
                    rare_rows,
                ),
            ],
        }
    }

    /// A warning about texts over [`formats::LONG_TEXT_CHARS`] characters, naming their lines.
    pub fn long_text_note(&self) -> Option<String> {
        if self.long_texts == 0 {
            return None;
        }
        let listed = self
            .long_text_rows
            .iter()
            .map(|l| {
                if l.line > 0 {
                    format!("line {}: {} characters", l.line, l.chars)
                } else {
                    format!("row {}: {} characters", l.row, l.chars)
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        Some(format!(
            "warning: {} rows have a text over {} characters ({}{}); kept, but is it a whole document in one row, or a quote left open? A classifier reads one sentence or passage a row",
            self.long_texts,
            formats::LONG_TEXT_CHARS,
            listed,
            if self.long_texts > self.long_text_rows.len() {
                ", …"
            } else {
                ""
            }
        ))
    }

    /// Labels respelled as ATT&CK writes them (rows).
    pub fn normalized_count(&self) -> usize {
        self.labels_normalized.values().map(|v| v.1).sum()
    }

    /// Labels mapped from a revoked ID to its successor (rows).
    pub fn mapped_count(&self) -> usize {
        self.revoked_mapped.values().map(|v| v.1).sum()
    }

    /// What happened to the labels, for the load line: `labels: 13 normalized (…), 10 revoked
    /// IDs mapped (T1574.002 → T1574.001: 10), …`; empty when labels were taken as written.
    pub fn labels_note(&self, cfg: &DataConfig) -> String {
        let mut parts = Vec::new();
        if !self.labels_normalized.is_empty() {
            parts.push(format!(
                "{} normalized to ATT&CK spelling ({})",
                self.normalized_count(),
                self.labels_normalized
                    .iter()
                    .map(|(w, (id, n))| format!("{w:?} → {id}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !self.revoked_mapped.is_empty() {
            parts.push(format!(
                "{} revoked IDs mapped ({})",
                self.mapped_count(),
                self.revoked_mapped
                    .iter()
                    .map(|(old, (new, n))| format!("{old} → {new}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if self.multi_label_first > 0 && cfg.multi_label == MultiLabelPolicy::First {
            parts.push(format!(
                "{} rows with several technique IDs kept with their first (data.multi_label = \"first\")",
                self.multi_label_first
            ));
        }
        if !self.excluded.is_empty() {
            parts.push(format!(
                "{} rows dropped by data.exclude ({})",
                self.excluded.values().sum::<usize>(),
                self.excluded
                    .iter()
                    .map(|(id, n)| format!("{id}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("; labels: {}", parts.join(", "))
        }
    }

    /// Lines about deprecated and unknown techniques, by name and count, saying what the
    /// manifest's policy did with them.
    pub fn technique_notes(&self, cfg: &DataConfig) -> Vec<String> {
        let mut out = Vec::new();
        if !self.deprecated.is_empty() {
            let rows: usize = self.deprecated.values().map(|f| f.rows).sum();
            out.push(match cfg.deprecated {
                DeprecatedPolicy::Drop => format!(
                    "{} rows of deprecated or revoked techniques dropped (data.deprecated = \"drop\"): {}",
                    rows,
                    flagged_list(&self.deprecated)
                ),
                DeprecatedPolicy::Keep => format!(
                    "warning: {} rows of deprecated or revoked techniques kept as classes (data.deprecated = \"keep\"; \"drop\" drops them): {}",
                    rows,
                    flagged_list(&self.deprecated)
                ),
            });
        }
        if !self.unknown_techniques.is_empty() {
            let rows: usize = self.unknown_techniques.values().map(|f| f.rows).sum();
            out.push(match cfg.unknown_techniques {
                UnknownTechniquePolicy::Keep => format!(
                    "warning: {} rows with technique IDs the ATT&CK catalog does not hold kept as classes (data.unknown_techniques = \"keep\"; \"drop\" drops them, data.exclude drops some): {}",
                    rows,
                    flagged_list(&self.unknown_techniques)
                ),
                UnknownTechniquePolicy::Drop => format!(
                    "{} rows with technique IDs the ATT&CK catalog does not hold dropped (data.unknown_techniques = \"drop\"): {}",
                    rows,
                    flagged_list(&self.unknown_techniques)
                ),
            });
        }
        out
    }
}

impl Dataset {
    /// Class → count, sorted by class. On a multi-label dataset each label of a row counts once
    /// and a negative counts for `none`.
    pub fn class_counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for e in &self.examples {
            for l in e.gold() {
                *m.entry(l.to_string()).or_insert(0) += 1;
            }
        }
        m
    }
}

impl Example {
    /// The row's gold labels: every label on a multi-label dataset (`none` alone for a
    /// negative), else its one label.
    pub fn gold(&self) -> Vec<&str> {
        if self.labels.is_empty() {
            vec![self.label.as_str()]
        } else {
            self.labels.iter().map(String::as_str).collect()
        }
    }
}

/// The data folder when neither the manifest nor `SYNTHCTI_DATA_DIR` names one: `../shared/data`
/// if it exists (a checkout next to the shared datasets), else `./data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SYNTHCTI_DATA_DIR") {
        return PathBuf::from(d);
    }
    let shared = PathBuf::from("../shared/data");
    if shared.is_dir() {
        return shared;
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if here.is_dir() {
        return here;
    }
    PathBuf::from("data")
}

/// A publisher file's provenance, for "file not found" messages.
fn publisher_hint(kind: DataKind) -> &'static str {
    match kind {
        DataKind::TramSingle => {
            "TRAM's single_label.json (github.com/center-for-threat-informed-defense/tram, data/tram2-data/single_label.json)"
        }
        DataKind::TramBootstrap => {
            "TRAM's bootstrap-training-data.json (github.com/center-for-threat-informed-defense/tram, data/training/bootstrap-training-data.json)"
        }
        DataKind::TramMulti => {
            "the TRAM multi-label JSONL rebuilt from TRAM's annotated reports (multi_label_reconstructed.jsonl)"
        }
        DataKind::CtiToMitre => {
            "CTI-to-MITRE's dataset.csv (github.com/dessertlab/cti-to-mitre-with-nlp, data/dataset.csv)"
        }
        DataKind::Jsonl | DataKind::Csv => "your dataset file",
    }
}

/// The dataset file: `data.file` as given (the manifest's own value was already resolved
/// against its folder, see [`crate::paths`]; one from `--set` or the environment is relative to
/// the current folder), else the format's publisher file in the data folder.
pub fn dataset_path(cfg: &DataConfig, data_dir: &Path) -> PathBuf {
    match &cfg.file {
        Some(f) => PathBuf::from(f),
        None => data_dir.join(cfg.kind.default_file().unwrap_or_default()),
    }
}

/// The ATT&CK bundle to use for revoked-ID mapping, if any.
pub fn attack_path(cfg: &DataConfig, data_dir: &Path) -> Result<Option<PathBuf>> {
    match &cfg.attack {
        AttackSource::None => Ok(None),
        AttackSource::Auto => Ok(AttackSource::AUTO_FILES
            .iter()
            .map(|cand| data_dir.join(cand))
            .find(|p| p.is_file())),
        AttackSource::Path(other) => {
            let p = if other.is_absolute() {
                other.clone()
            } else {
                data_dir.join(other)
            };
            if !p.is_file() {
                return Err(Error::data(format!(
                    "the ATT&CK bundle `data.attack = \"{}\"` is not at {}; get enterprise-attack.json from the mitre/cti repository, or set `data.attack = \"auto\"` or `\"none\"`",
                    other.display(),
                    p.display()
                )));
            }
            Ok(Some(p))
        }
    }
}

/// Check the dataset file exists, with a message that says which file it is and how to get it:
/// a publisher's file (the format's default in the data folder) with `synthcti data pull`, a
/// user's own file (`data.file`) with where relative paths resolve.
pub fn check_dataset_file(cfg: &DataConfig, data_dir: &Path) -> Result<PathBuf> {
    let p = dataset_path(cfg, data_dir);
    if p.is_file() {
        return Ok(p);
    }
    let Some(given) = &cfg.file else {
        return Err(Error::data(format!(
            "dataset file {} not found. It is {}. Run `synthcti data pull --dir {}` to download the publishers' files, or point `data.dir` / SYNTHCTI_DATA_DIR at a folder that has it",
            p.display(),
            publisher_hint(cfg.kind),
            data_dir.display()
        )));
    };
    // The old reading of `data.file` (relative to the data folder) finds it: say how to write it.
    let name = Path::new(given).file_name().unwrap_or_default();
    let in_data = Some(data_dir.join(name)).filter(|c| c.is_file());
    Err(Error::data(format!(
        "dataset file {} (`data.file`) not found: a relative `data.file` resolves against the manifest's folder (one given by --set or SYNTHCTI_DATA__FILE against the current folder){}",
        p.display(),
        match in_data {
            Some(c) => format!(
                "; there is a file at {}: give that path (absolute, or relative to the manifest)",
                c.display()
            ),
            None => "; check the path, or give an absolute one".to_string(),
        }
    )))
}

/// The technique IDs of `data.exclude` as the load stage compares them: respelled and mapped
/// through `revoked-by` like the data's labels. Entries that are not technique IDs are left out
/// (manifest validation rejects them).
fn excluded_ids(cfg: &DataConfig, catalog: Option<&Catalog>) -> std::collections::BTreeSet<String> {
    let norm = Normalizer::new(catalog);
    cfg.exclude
        .iter()
        .filter_map(|x| technique_id(x))
        .map(|x| norm.map(&x))
        .collect()
}

/// Drop or keep rows by their technique as `data.exclude`, `data.deprecated` and
/// `data.unknown_techniques` say, counting each technique. Labels that are not technique IDs
/// pass untouched; without a catalog only `data.exclude` applies.
fn apply_technique_policies(
    cfg: &DataConfig,
    catalog: Option<&Catalog>,
    rows: &mut Vec<Example>,
    stats: &mut LoadStats,
) {
    let excluded = excluded_ids(cfg, catalog);
    let mut dropped: BTreeMap<String, usize> = BTreeMap::new();
    if stats.multi_label_dropped > 0 {
        dropped.insert("data.multi_label".into(), stats.multi_label_dropped);
    }
    let mut kept = |label: &str, stats: &mut LoadStats| -> bool {
        if !is_technique_id(label) {
            return true;
        }
        if excluded.contains(label) {
            *stats.excluded.entry(label.to_string()).or_insert(0) += 1;
            *dropped.entry("data.exclude".into()).or_insert(0) += 1;
            return false;
        }
        let Some(cat) = catalog else { return true };
        let standing = cat.standing(label);
        let (map, keep, key) = match standing {
            Standing::Active => return true,
            Standing::Deprecated | Standing::RevokedWithoutSuccessor => (
                &mut stats.deprecated,
                cfg.deprecated == DeprecatedPolicy::Keep,
                "data.deprecated",
            ),
            Standing::OtherDomain(_) | Standing::Absent => (
                &mut stats.unknown_techniques,
                cfg.unknown_techniques == UnknownTechniquePolicy::Keep,
                "data.unknown_techniques",
            ),
        };
        map.entry(label.to_string())
            .or_insert_with(|| Flagged {
                why: cat.why(&standing),
                rows: 0,
            })
            .rows += 1;
        if !keep {
            *dropped.entry(key.into()).or_insert(0) += 1;
        }
        keep
    };
    rows.retain_mut(|r| {
        if r.labels.is_empty() {
            return kept(&r.label, stats);
        }
        // Multi-label: each label on its own; a row that loses all its labels goes.
        r.labels.retain(|l| kept(l, stats));
        set_key(r);
        !r.labels.is_empty()
    });
    stats.labels_dropped = dropped;
}

/// A multi-label row's `label`: its labels joined by `+` (sorted), `none` when it has none.
fn set_key(r: &mut Example) {
    r.label = if r.labels.is_empty() {
        formats::NEGATIVE_LABEL.to_string()
    } else {
        r.labels.join("+")
    };
}

/// The load stage's parameters, which are exactly its cache key: the dataset file's and the
/// ATT&CK bundle's bytes (BLAKE3, hex) and every setting that shapes the loaded dataset — never
/// where the files sit, so the same bytes elsewhere give the same key.
#[derive(Debug, Clone, Serialize)]
pub struct LoadParams<'a> {
    pub kind: DataKind,
    pub label: &'a Option<String>,
    pub text_field: &'a Option<String>,
    pub group_field: &'a Option<String>,
    pub min_examples: usize,
    pub duplicates: DuplicatePolicy,
    pub conflicts: ConflictPolicy,
    pub negatives: NegativePolicy,
    pub multi_label: MultiLabelPolicy,
    pub deprecated: DeprecatedPolicy,
    pub unknown_techniques: UnknownTechniquePolicy,
    pub exclude: &'a [String],
    /// BLAKE3 of the dataset file.
    pub file: &'a str,
    /// BLAKE3 of the ATT&CK bundle, when one is used.
    pub attack: Option<&'a str>,
}

impl crate::cache::StageParams for LoadParams<'_> {
    const STAGE: &'static str = "load";
    fn version(&self) -> u32 {
        LOAD_VERSION
    }
}

impl<'a> LoadParams<'a> {
    /// The key of loading `cfg`'s file (whose content hash is `file`) with the bundle `attack`.
    /// Every field of [`DataConfig`] is named here, so a new setting cannot be left out of the
    /// key without a compile error.
    pub fn new(cfg: &'a DataConfig, file: &'a str, attack: Option<&'a str>) -> Self {
        let DataConfig {
            kind,
            dir: _,  // where the folder is: not the content
            file: _, // which file: its bytes are `file`
            attack: _,
            label,
            text_field,
            group_field,
            min_examples,
            duplicates,
            conflicts,
            negatives,
            multi_label,
            multi_label_head: _, // how classifiers train: the train stage's key
            deprecated,
            unknown_techniques,
            exclude,
        } = cfg;
        LoadParams {
            kind: *kind,
            label,
            text_field,
            group_field,
            min_examples: *min_examples,
            duplicates: *duplicates,
            conflicts: *conflicts,
            negatives: *negatives,
            multi_label: *multi_label,
            deprecated: *deprecated,
            unknown_techniques: *unknown_techniques,
            exclude,
            file,
            attack,
        }
    }
}

/// Load, normalize, map, dedup and filter. `catalog` maps revoked IDs and tells deprecated and
/// unknown techniques when given.
pub fn load(cfg: &DataConfig, path: &Path, catalog: Option<&Catalog>) -> Result<Dataset> {
    let raw = formats::read(cfg, path, &Normalizer::new(catalog))?;
    let mut stats = raw.stats;
    let mut rows = raw.rows;
    apply_technique_policies(cfg, catalog, &mut rows, &mut stats);

    // Exact duplicates and conflicting labels, keyed on the text with runs of whitespace
    // collapsed (the same sentence copied with a different line break is the same sentence).
    let keys: Vec<String> = rows
        .iter()
        .map(|r| r.text.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let mut by_text: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, k) in keys.iter().enumerate() {
        by_text.entry(k.as_str()).or_default().push(i);
    }
    let mut keep = vec![true; rows.len()];
    for idxs in by_text.values() {
        if idxs.len() < 2 {
            continue;
        }
        stats.exact_duplicates += idxs.len() - 1;
        let mut labels: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for &i in idxs {
            labels.entry(rows[i].label.as_str()).or_default().push(i);
        }
        let mut survivors: Vec<usize> = idxs.clone();
        if labels.len() > 1 {
            stats.conflicting_texts += 1;
            match cfg.conflicts {
                ConflictPolicy::Keep => {}
                ConflictPolicy::Drop => survivors.clear(),
                ConflictPolicy::Majority => {
                    let mut counts: Vec<(usize, &str)> =
                        labels.iter().map(|(l, v)| (v.len(), *l)).collect();
                    counts.sort_by_key(|c| std::cmp::Reverse(c.0));
                    if counts[0].0 == counts[1].0 {
                        survivors.clear();
                    } else {
                        survivors = labels[counts[0].1].clone();
                    }
                }
            }
            for &i in idxs {
                if !survivors.contains(&i) {
                    keep[i] = false;
                    stats.conflict_rows_dropped += 1;
                }
            }
        }
        if cfg.duplicates == DuplicatePolicy::Drop {
            let mut seen_labels = std::collections::HashSet::new();
            let mut sorted = survivors.clone();
            sorted.sort();
            for i in sorted {
                if !seen_labels.insert(rows[i].label.as_str()) {
                    keep[i] = false;
                    stats.duplicates_dropped += 1;
                }
            }
        }
    }
    let mut examples: Vec<Example> = rows
        .into_iter()
        .zip(keep)
        .filter_map(|(r, k)| k.then_some(r))
        .collect();

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for e in &examples {
        for l in e.gold() {
            *counts.entry(l.to_string()).or_insert(0) += 1;
        }
    }
    for (label, n) in &counts {
        if *n < cfg.min_examples {
            stats.rare_classes_dropped.insert(label.clone(), *n);
        }
    }
    let multi_label = cfg.multi_label == MultiLabelPolicy::Keep;
    let before_rare = examples.len();
    examples.retain_mut(|e| {
        if e.labels.is_empty() {
            return !stats.rare_classes_dropped.contains_key(&e.label);
        }
        // Multi-label: rare labels leave the set; a row left with none goes.
        e.labels
            .retain(|l| !stats.rare_classes_dropped.contains_key(l));
        set_key(e);
        !e.labels.is_empty()
    });
    stats.rare_rows_dropped = before_rare - examples.len();
    stats.examples = examples.len();
    stats.classes = counts.len() - stats.rare_classes_dropped.len();

    debug_assert!(stats.account().adds_up(), "{:?}", stats.account());

    if examples.is_empty() || stats.classes < 2 {
        return Err(Error::data(format!(
            "{}: {} examples in {} classes remain after filtering ({}; data.min_examples = {}). A classifier needs at least two classes: check `data.label`, `data.negatives`, `data.multi_label`, `data.min_examples` and the file itself",
            path.display(),
            examples.len(),
            stats.classes,
            stats.account().line(),
            cfg.min_examples
        )));
    }
    Ok(Dataset {
        examples,
        stats,
        multi_label,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kind: DataKind) -> DataConfig {
        DataConfig {
            kind,
            ..Default::default()
        }
    }

    /// Every row kept: no dedup, no conflict handling, no class dropped.
    fn keep_all(kind: DataKind) -> DataConfig {
        DataConfig {
            duplicates: DuplicatePolicy::Keep,
            conflicts: ConflictPolicy::Keep,
            min_examples: 1,
            ..cfg(kind)
        }
    }

    fn shared(rel: &str) -> PathBuf {
        let p = default_data_dir().join(rel);
        assert!(
            p.is_file(),
            "test data {} not found: set SYNTHCTI_DATA_DIR to the shared data folder",
            p.display()
        );
        p
    }

    #[test]
    fn tram_single_label_matches_the_published_counts() {
        let p = shared("tram/single_label.json");
        let keep_all = keep_all(DataKind::TramSingle);
        let d = load(&keep_all, &p, None).unwrap();
        assert_eq!(d.stats.rows_read, 5089);
        assert_eq!(d.examples.len(), 5089);
        assert_eq!(d.stats.classes, 50);
        // The data README's figures: 23 texts with conflicting labels; 278 rows repeat an
        // earlier text (273 when whitespace differences count as different texts).
        assert_eq!(d.stats.conflicting_texts, 23);
        assert_eq!(d.stats.exact_duplicates, 278);
        assert_eq!(d.class_counts()["T1557.001"], 4);
        assert_eq!(d.class_counts()["T1027"], 685);
        assert!(d.examples[0].group.is_some());
    }

    #[test]
    fn cti_to_mitre_matches_the_published_counts() {
        let p = shared("cti-to-mitre/dataset.csv");
        let keep_all = keep_all(DataKind::CtiToMitre);
        let d = load(&keep_all, &p, None).unwrap();
        assert_eq!(d.stats.rows_read, 12945);
        assert_eq!(d.stats.classes, 188);
        let sub = DataConfig {
            label: Some("label_subtec".into()),
            ..keep_all
        };
        assert_eq!(load(&sub, &p, None).unwrap().stats.classes, 566);
    }

    #[test]
    fn tram_multi_label_negatives_and_multi_label_rows() {
        let p = shared("tram/multi_label_reconstructed.jsonl");
        let base = keep_all(DataKind::TramMulti);
        let d = load(&base, &p, None).unwrap();
        assert_eq!(d.stats.rows_read, 18999);
        assert_eq!(d.stats.negatives_dropped, 15115);
        assert_eq!(d.stats.multi_label_dropped, 757);
        assert_eq!(d.examples.len(), 3127);
        let with_negatives = DataConfig {
            negatives: crate::data::config::NegativePolicy::Keep,
            multi_label: crate::data::config::MultiLabelPolicy::First,
            ..base
        };
        let d = load(&with_negatives, &p, None).unwrap();
        assert_eq!(d.examples.len(), 18999);
        assert_eq!(d.class_counts()[formats::NEGATIVE_LABEL], 15115);
    }

    #[test]
    fn multi_label_keep_keeps_every_label_and_the_negatives() {
        let p = shared("tram/multi_label_reconstructed.jsonl");
        let c = DataConfig {
            negatives: NegativePolicy::Keep,
            multi_label: MultiLabelPolicy::Keep,
            ..keep_all(DataKind::TramMulti)
        };
        let d = load(&c, &p, None).unwrap();
        assert!(d.multi_label);
        assert_eq!(d.examples.len(), 18999);
        let several: Vec<&Example> = d.examples.iter().filter(|e| e.labels.len() > 1).collect();
        assert_eq!(several.len(), 757);
        assert_eq!(
            d.examples.iter().filter(|e| e.labels.is_empty()).count(),
            15115
        );
        // The key of a set is its sorted labels joined by `+`; gold() gives the set.
        let e = several[0];
        assert_eq!(e.label, e.labels.join("+"));
        assert!(e.labels.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            e.gold(),
            e.labels.iter().map(String::as_str).collect::<Vec<_>>()
        );
        // Classes are single techniques (TRAM's 50) and `none`, never a set.
        assert_eq!(d.stats.classes, 51);
        assert_eq!(d.class_counts()[formats::NEGATIVE_LABEL], 15115);
        assert!(d.class_counts().keys().all(|k| !k.contains('+')));
        // A rare label leaves the sets it is in, and a row left with none goes.
        let rare = DataConfig {
            min_examples: 100,
            ..c
        };
        let d = load(&rare, &p, None).unwrap();
        assert!(!d.stats.rare_classes_dropped.is_empty());
        for e in &d.examples {
            assert!(
                e.labels
                    .iter()
                    .all(|l| !d.stats.rare_classes_dropped.contains_key(l))
            );
        }
    }

    #[test]
    fn tram_bootstrap_reads_the_report_object() {
        let p = shared("tram/bootstrap-training-data.json");
        let d = load(&keep_all(DataKind::TramBootstrap), &p, None).unwrap();
        assert_eq!(d.stats.rows_read, 11130);
        assert_eq!(d.examples.len(), 11130);
        assert_eq!(d.stats.classes, 50);
    }

    #[test]
    fn duplicates_and_conflicts_are_handled_as_configured() {
        let rows = r#"[
            {"text":"a b","label":"T1","doc_title":"d"},
            {"text":"a b","label":"T1","doc_title":"d"},
            {"text":"c d","label":"T1","doc_title":"d"},
            {"text":"c d","label":"T2","doc_title":"d"},
            {"text":"e f","label":"T2","doc_title":"d"},
            {"text":"g h","label":"T2","doc_title":"d"},
            {"text":"i j","label":"T1","doc_title":"d"}
        ]"#;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        std::fs::write(&p, rows).unwrap();
        let d = load(&cfg(DataKind::TramSingle), &p, None).unwrap();
        assert_eq!(d.stats.exact_duplicates, 2);
        assert_eq!(d.stats.duplicates_dropped, 1);
        assert_eq!(d.stats.conflicting_texts, 1);
        assert_eq!(d.stats.conflict_rows_dropped, 2);
        assert_eq!(d.examples.len(), 4);
        let keep = DataConfig {
            duplicates: DuplicatePolicy::Keep,
            conflicts: ConflictPolicy::Keep,
            ..cfg(DataKind::TramSingle)
        };
        assert_eq!(load(&keep, &p, None).unwrap().examples.len(), 7);
    }

    #[test]
    fn revoked_ids_are_mapped_through_the_catalog() {
        let p = shared("attack/enterprise-attack-techniques-18.1.json");
        let cat = Catalog::load(&p).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.json");
        std::fs::write(
            &f,
            r#"[{"text":"x","label":"T1574.002"},{"text":"y","label":"T1574.001"},{"text":"z","label":"T1059"},{"text":"w","label":"T1059"}]"#,
        )
        .unwrap();
        let d = load(&cfg(DataKind::TramSingle), &f, Some(&cat)).unwrap();
        assert_eq!(
            d.stats.revoked_mapped["T1574.002"],
            ("T1574.001".to_string(), 1)
        );
        assert_eq!(d.class_counts()["T1574.001"], 2);
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/label-spellings")
            .join(name)
    }

    fn real_catalog() -> Catalog {
        Catalog::load(&shared("attack/enterprise-attack-techniques-18.1.json")).unwrap()
    }

    fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn spellings_of_one_technique_are_one_class() {
        let c = DataConfig {
            kind: DataKind::Jsonl,
            file: Some("data.jsonl".into()),
            ..Default::default()
        };
        let cat = real_catalog();
        let d = load(&c, &fixture("data.jsonl"), Some(&cat)).unwrap();
        assert_eq!(
            d.class_counts(),
            counts(&[("T1059.001", 16), ("T1105", 10), ("T1574.001", 10)])
        );
        let respelled: BTreeMap<String, (String, usize)> = [
            (" T1059.001 ", "T1059.001", 3),
            ("t1059.001", "T1059.001", 5),
            ("t1574.002", "T1574.002", 5),
        ]
        .iter()
        .map(|(w, id, n)| (w.to_string(), (id.to_string(), *n)))
        .collect();
        assert_eq!(d.stats.labels_normalized, respelled);
        assert_eq!(d.stats.normalized_count(), 13);
        assert_eq!(
            d.stats.revoked_mapped,
            [("T1574.002".to_string(), ("T1574.001".to_string(), 10))].into()
        );
        assert!(d.stats.deprecated.is_empty() && d.stats.unknown_techniques.is_empty());
        // Without a catalog: respelled, not mapped.
        let d = load(&c, &fixture("data.jsonl"), None).unwrap();
        assert_eq!(
            d.class_counts(),
            counts(&[("T1059.001", 16), ("T1105", 10), ("T1574.002", 10)])
        );
    }

    #[test]
    fn several_ids_in_one_cell_follow_the_multi_label_policy() {
        let c = DataConfig {
            kind: DataKind::Csv,
            file: Some("data.csv".into()),
            ..Default::default()
        };
        let d = load(&c, &fixture("data.csv"), None).unwrap();
        assert_eq!(d.stats.rows_read, 28);
        assert_eq!(d.stats.multi_label_dropped, 8);
        assert_eq!(d.stats.labels_dropped, counts(&[("data.multi_label", 8)]));
        assert_eq!(d.class_counts(), counts(&[("T1027", 10), ("T1105", 10)]));
        let first = DataConfig {
            multi_label: crate::data::config::MultiLabelPolicy::First,
            ..c
        };
        let d = load(&first, &fixture("data.csv"), None).unwrap();
        assert_eq!(d.stats.multi_label_first, 8);
        assert_eq!(
            d.class_counts(),
            counts(&[("T1027", 10), ("T1059.001", 4), ("T1105", 14)])
        );
    }

    /// Rows of T1059 ×3, the deprecated T1064 ×3, the Mobile T1521 ×2, T1105 ×2 and `none` ×2.
    fn policy_rows(dir: &Path) -> PathBuf {
        let mut rows = Vec::new();
        for (label, n) in [
            ("T1059", 3),
            ("t1064", 3),
            ("T1521", 2),
            ("T1105", 2),
            ("none", 2),
        ] {
            for i in 0..n {
                rows.push(serde_json::json!({"text": format!("{label} row {i}"), "label": label}));
            }
        }
        let f = dir.join("s.json");
        std::fs::write(&f, serde_json::to_string(&rows).unwrap()).unwrap();
        f
    }

    #[test]
    fn deprecated_techniques_are_dropped_by_default_and_kept_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let f = policy_rows(dir.path());
        let cat = real_catalog();
        let d = load(&cfg(DataKind::TramSingle), &f, Some(&cat)).unwrap();
        assert!(!d.class_counts().contains_key("T1064"));
        assert_eq!(
            d.stats.deprecated["T1064"],
            Flagged {
                why: "deprecated in ATT&CK".into(),
                rows: 3
            }
        );
        assert_eq!(d.stats.labels_dropped, counts(&[("data.deprecated", 3)]));
        let keep = DataConfig {
            deprecated: DeprecatedPolicy::Keep,
            ..cfg(DataKind::TramSingle)
        };
        let d = load(&keep, &f, Some(&cat)).unwrap();
        assert_eq!(d.class_counts()["T1064"], 3);
        assert_eq!(d.stats.deprecated["T1064"].rows, 3);
        assert!(d.stats.labels_dropped.is_empty());
    }

    #[test]
    fn unknown_techniques_are_kept_by_default_and_dropped_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let f = policy_rows(dir.path());
        let cat = real_catalog();
        let d = load(&cfg(DataKind::TramSingle), &f, Some(&cat)).unwrap();
        assert_eq!(d.class_counts()["T1521"], 2);
        assert_eq!(
            d.stats.unknown_techniques["T1521"],
            Flagged {
                why: "not in the enterprise catalog (another domain?)".into(),
                rows: 2
            }
        );
        // A label that is not a technique ID is never flagged.
        assert_eq!(d.class_counts()["none"], 2);
        assert_eq!(d.stats.unknown_techniques.len(), 1);
        let drop = DataConfig {
            unknown_techniques: UnknownTechniquePolicy::Drop,
            ..cfg(DataKind::TramSingle)
        };
        let d = load(&drop, &f, Some(&cat)).unwrap();
        assert!(!d.class_counts().contains_key("T1521"));
        assert_eq!(
            d.stats.labels_dropped,
            counts(&[("data.deprecated", 3), ("data.unknown_techniques", 2)])
        );
    }

    #[test]
    fn excluded_techniques_are_dropped_in_any_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let f = policy_rows(dir.path());
        let c = DataConfig {
            exclude: vec![" t1105".into(), "T1059".into()],
            ..cfg(DataKind::TramSingle)
        };
        // Without a catalog too.
        let d = load(&c, &f, None).unwrap();
        assert_eq!(
            d.class_counts(),
            counts(&[("T1064", 3), ("T1521", 2), ("none", 2)])
        );
        assert_eq!(d.stats.excluded, counts(&[("T1059", 3), ("T1105", 2)]));
        assert_eq!(d.stats.labels_dropped, counts(&[("data.exclude", 5)]));
    }

    #[test]
    fn user_jsonl_and_csv_with_custom_field_names() {
        let dir = tempfile::tempdir().unwrap();
        let j = dir.path().join("mine.jsonl");
        std::fs::write(
            &j,
            "{\"sentence\":\"uses powershell\",\"ttp\":\"T1059.001\",\"report\":\"r1\"}\n\n{\"sentence\":\"beacons over https\",\"ttp\":[\"T1071.001\"],\"report\":\"r2\"}\n{\"sentence\":\"nothing here\",\"ttp\":null}\n",
        )
        .unwrap();
        let c = DataConfig {
            kind: DataKind::Jsonl,
            text_field: Some("sentence".into()),
            label: Some("ttp".into()),
            group_field: Some("report".into()),
            min_examples: 1,
            ..Default::default()
        };
        let d = load(&c, &j, None).unwrap();
        assert_eq!(d.examples.len(), 2);
        assert_eq!(d.stats.negatives_dropped, 1);
        assert_eq!(d.examples[1].label, "T1071.001");
        assert_eq!(d.examples[1].group.as_deref(), Some("r2"));

        let csv = dir.path().join("mine.csv");
        std::fs::write(
            &csv,
            "ttp,sentence\nT1059.001,\"uses \"\"powershell\"\"\"\nT1105,downloads a tool\n",
        )
        .unwrap();
        let d = load(
            &DataConfig {
                kind: DataKind::Csv,
                group_field: None,
                ..c
            },
            &csv,
            None,
        )
        .unwrap();
        assert_eq!(d.examples[0].text, "uses \"powershell\"");
        assert_eq!(d.examples[1].label, "T1105");
    }

    fn jsonl_cfg() -> DataConfig {
        DataConfig {
            kind: DataKind::Jsonl,
            file: Some("x.jsonl".into()),
            ..Default::default()
        }
    }

    fn write_tmp(dir: &Path, name: &str, body: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    /// One row of each kind of drop, and the kept rows: the account names each and adds up.
    #[test]
    fn every_row_read_is_kept_or_dropped_for_one_counted_reason() {
        let dir = tempfile::tempdir().unwrap();
        let rows = [
            r#"{"text":"a kept one","label":"T1059"}"#,
            r#"{"text":"b kept one","label":"T1059"}"#,
            r#"{"text":"c kept one","label":"T1105"}"#,
            r#"{"text":"d kept one","label":"T1105"}"#,
            r#"{"text":"","label":"T1105"}"#,
            r#"{"text":"   \t ","label":"T1105"}"#,
            r#"{"text":"null label","label":null}"#,
            r#"{"text":"empty list","label":[]}"#,
            r#"{"text":"no label field at all"}"#,
            r#"{"text":"two ids","label":["T1059","T1105"]}"#,
            r#"{"text":"a kept one","label":"T1059"}"#,
            r#"{"text":"same text","label":"T1059"}"#,
            r#"{"text":"same text","label":"T1105"}"#,
            r#"{"text":"rare","label":"T1027"}"#,
            r#"{"text":"gone","label":"T1036"}"#,
        ];
        let f = write_tmp(dir.path(), "x.jsonl", rows.join("\n").as_bytes());
        let c = DataConfig {
            exclude: vec!["T1036".into()],
            ..jsonl_cfg()
        };
        let d = load(&c, &f, None).unwrap();
        let a = d.stats.account();
        assert!(a.adds_up(), "{a:?}");
        let got: Vec<(String, usize)> = a
            .dropped
            .iter()
            .map(|d| (d.setting.clone().unwrap_or_default(), d.rows))
            .collect();
        let want: Vec<(String, usize)> = [
            ("", 2),
            ("data.negatives", 3),
            ("data.multi_label", 1),
            ("data.exclude", 1),
            ("data.deprecated", 0),
            ("data.unknown_techniques", 0),
            ("data.conflicts", 2),
            ("data.duplicates", 1),
            ("data.min_examples", 1),
        ]
        .iter()
        .map(|(k, n)| (k.to_string(), *n))
        .collect();
        assert_eq!(got, want);
        assert_eq!((a.rows_read, a.kept, a.classes), (15, 4, 2));
        assert_eq!(d.stats.label_field_missing, 1);
        assert_eq!(
            a.line(),
            "15 rows read = 4 kept in 2 classes + 2 with an empty text + 3 without a label (1 of them lack the label field) (data.negatives) + 1 with several labels (data.multi_label) + 1 excluded (data.exclude) + 2 with conflicting labels (data.conflicts) + 1 duplicates (data.duplicates) + 1 in 1 rare classes (data.min_examples)"
        );
        // Kept as the class `none` under `data.negatives = "keep"`, the missing field too.
        let keep = DataConfig {
            negatives: NegativePolicy::Keep,
            ..c
        };
        let d = load(&keep, &f, None).unwrap();
        assert_eq!(d.class_counts()[formats::NEGATIVE_LABEL], 3);
        assert!(d.stats.account().adds_up());
    }

    #[test]
    fn the_publishers_files_add_up() {
        for (kind, rel) in [
            (DataKind::TramSingle, "tram/single_label.json"),
            (DataKind::TramMulti, "tram/multi_label_reconstructed.jsonl"),
            (DataKind::CtiToMitre, "cti-to-mitre/dataset.csv"),
        ] {
            let d = load(&cfg(kind), &shared(rel), None).unwrap();
            let a = d.stats.account();
            assert!(a.adds_up(), "{rel}: {a:?}");
            assert_eq!(a.kept, d.examples.len());
        }
        let d = load(
            &cfg(DataKind::TramSingle),
            &shared("tram/single_label.json"),
            None,
        )
        .unwrap();
        assert_eq!(
            d.stats.account().line(),
            "5089 rows read = 4788 kept in 50 classes + 55 with conflicting labels (data.conflicts) + 246 duplicates (data.duplicates)"
        );
    }

    #[test]
    fn a_label_field_no_row_has_is_an_error_naming_the_fields() {
        let dir = tempfile::tempdir().unwrap();
        let f = write_tmp(
            dir.path(),
            "x.jsonl",
            b"{\"text\":\"a\",\"ttp\":\"T1059\"}\n{\"text\":\"b\",\"ttp\":\"T1105\"}\n",
        );
        let err = load(&jsonl_cfg(), &f, None).unwrap_err();
        assert!(
            err.message
                .contains("line 1: label field `label` not found in any row")
                && err.message.contains("`ttp`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_byte_order_mark_is_skipped_in_json_jsonl_and_csv() {
        let dir = tempfile::tempdir().unwrap();
        let bom = |body: &str| [b"\xEF\xBB\xBF".as_slice(), body.as_bytes()].concat();
        let j = write_tmp(
            dir.path(),
            "x.jsonl",
            &bom(
                "{\"text\":\"a\",\"label\":\"T1059\"}\n{\"text\":\"b\",\"label\":\"T1059\"}\n{\"text\":\"c\",\"label\":\"T1105\"}\n{\"text\":\"d\",\"label\":\"T1105\"}\n",
            ),
        );
        assert_eq!(load(&jsonl_cfg(), &j, None).unwrap().examples.len(), 4);
        let a = write_tmp(
            dir.path(),
            "x.json",
            &bom(
                r#"[{"text":"a","label":"T1059"},{"text":"b","label":"T1059"},{"text":"c","label":"T1105"},{"text":"d","label":"T1105"}]"#,
            ),
        );
        assert_eq!(
            load(&cfg(DataKind::TramSingle), &a, None)
                .unwrap()
                .examples
                .len(),
            4
        );
        let c = write_tmp(
            dir.path(),
            "x.csv",
            &bom("text,label\na,T1059\nb,T1059\nc,T1105\nd,T1105\n"),
        );
        let csv_cfg = DataConfig {
            kind: DataKind::Csv,
            ..jsonl_cfg()
        };
        assert_eq!(load(&csv_cfg, &c, None).unwrap().examples.len(), 4);
    }

    #[test]
    fn errors_name_the_line_not_a_byte_offset() {
        let dir = tempfile::tempdir().unwrap();
        // Latin-1 `é` on the third line of a JSONL file.
        let j = write_tmp(
            dir.path(),
            "x.jsonl",
            b"{\"text\":\"a\",\"label\":\"T1059\"}\n{\"text\":\"b\",\"label\":\"T1059\"}\n{\"text\":\"caf\xe9\",\"label\":\"T1105\"}\n",
        );
        let m = load(&jsonl_cfg(), &j, None).unwrap_err().message;
        assert!(m.contains("x.jsonl line 3: not UTF-8"), "{m}");
        assert!(!m.contains("index") && !m.contains("byte"), "{m}");
        // An item of a JSON array without its text field, on line 4.
        let a = write_tmp(
            dir.path(),
            "x.json",
            b"[\n  {\"text\": \"a [x] {y}\", \"label\": \"T1059\"},\n  {\"text\": \"b\", \"label\": \"T1059\"},\n  {\"txt\": \"c\", \"label\": \"T1105\"}\n]\n",
        );
        let m = load(&cfg(DataKind::TramSingle), &a, None)
            .unwrap_err()
            .message;
        assert!(
            m.contains("x.json line 4: text field `text` not found"),
            "{m}"
        );
        // A CSV row with a field too many, and one that is not UTF-8.
        let csv_cfg = DataConfig {
            kind: DataKind::Csv,
            ..jsonl_cfg()
        };
        let c = write_tmp(dir.path(), "x.csv", b"text,label\na,T1059\nb,T1059,extra\n");
        let m = load(&csv_cfg, &c, None).unwrap_err().message;
        assert!(
            m.contains("x.csv line 3: this row has 3 fields where the header has 2"),
            "{m}"
        );
        assert!(!m.contains("byte"), "{m}");
        let c = write_tmp(dir.path(), "y.csv", b"text,label\na,T1059\ncaf\xe9,T1059\n");
        let m = load(&csv_cfg, &c, None).unwrap_err().message;
        assert!(m.contains("y.csv line 3: field 1 is not UTF-8"), "{m}");
        assert!(!m.contains("byte"), "{m}");
    }

    #[test]
    fn the_lines_of_a_json_arrays_items() {
        assert_eq!(
            formats::array_item_lines("[\n {\"a\": \"[,]\\\"\"},\n\n {\"b\": [1,\n2]}, 3\n]"),
            vec![2, 4, 5]
        );
        assert_eq!(formats::array_item_lines("[]"), Vec::<usize>::new());
        assert_eq!(
            formats::array_item_lines("{\"a\": [1]}"),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn an_absurdly_long_text_is_reported_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let long = "word ".repeat(3000);
        let body = format!(
            "{{\"text\":\"a\",\"label\":\"T1059\"}}\n{{\"text\":\"b\",\"label\":\"T1059\"}}\n\n{{\"text\":\"{long}\",\"label\":\"T1105\"}}\n{{\"text\":\"d\",\"label\":\"T1105\"}}\n"
        );
        let f = write_tmp(dir.path(), "x.jsonl", body.as_bytes());
        let d = load(&jsonl_cfg(), &f, None).unwrap();
        assert_eq!(d.stats.long_texts, 1);
        assert_eq!(
            d.stats.long_text_rows,
            vec![LongText {
                row: 3,
                line: 4,
                chars: 14_999
            }]
        );
        let note = d.stats.long_text_note().unwrap();
        assert!(
            note.starts_with(
                "warning: 1 rows have a text over 10000 characters (line 4: 14999 characters)"
            ),
            "{note}"
        );
        assert_eq!(d.examples.len(), 4, "kept");
    }

    #[test]
    fn empty_after_filtering_is_a_data_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.json");
        std::fs::write(
            &f,
            r#"[{"text":"x","label":"T1"},{"text":"y","label":"T2"}]"#,
        )
        .unwrap();
        let err = load(&cfg(DataKind::TramSingle), &f, None).unwrap_err();
        assert_eq!(err.exit_code(), 3);
        assert!(err.message.contains("min_examples"), "{}", err.message);
    }
}
