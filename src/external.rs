//! External test sets: `[[evaluate]]` in the manifest names more labelled files (any format the
//! load stage reads); every trained cell is scored on each, in a cached stage of its own
//! (`external`), whose key is the file's content hash with the settings that shape it (the load
//! stage's [`LoadParams`]), the unknown-label policy and, as input, the trained model's key.
//!
//! Labels are read, respelled and mapped through the run's ATT&CK bundle as `data` does (revoked
//! IDs become their successors; deprecated techniques follow `data.deprecated`). A row whose
//! label is not one of the model's classes is **unknown**: counted per label and reported, and
//! `unknown_labels` says what becomes of it — `skip` leaves it out of the metrics, `error` scores
//! it as a miss (its label joins the class set with F1 0, and the row counts against micro-F1).
//! Macro-F1 runs over the gold classes of the scored rows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::{StageId, StageParams};
use crate::data::config::{
    ConflictPolicy, DataConfig, DataKind, DuplicatePolicy, MultiLabelPolicy, NegativePolicy,
};
use crate::data::{Catalog, LoadParams};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::record::CellResult;

/// The version of the `external` stage's output.
pub const EXTERNAL_VERSION: u32 = 1;

/// What becomes of rows whose label the model does not know.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownLabels {
    /// Left out of the metrics (counted and reported).
    #[default]
    Skip,
    /// Scored as misses: the row stays, its label is a class the model never predicts.
    Error,
}

impl UnknownLabels {
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownLabels::Skip => "skip",
            UnknownLabels::Error => "error",
        }
    }
}

/// One `[[evaluate]]` table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvalSetConfig {
    /// Its name in the tables (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// The file: relative to the manifest's folder (resolved by [`crate::paths::resolve`]),
    /// absolute, or `data:PATH` relative to the data folder.
    pub file: String,
    /// Its format, as `data.kind`.
    pub kind: DataKind,
    /// Label field, as `data.label`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Text field, as `data.text_field`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_field: Option<String>,
    /// `skip` (default) or `error`: see the module doc.
    #[serde(default)]
    pub unknown_labels: UnknownLabels,
}

impl EvalSetConfig {
    /// How the load stage reads the file: its format and fields, the main data's label
    /// handling (ATT&CK bundle, deprecated and unknown techniques), and every row kept (no
    /// dedup, no class dropped: a test set is scored as it is; negatives and rows with several
    /// labels are dropped).
    pub fn data_config(&self, main: &DataConfig) -> DataConfig {
        DataConfig {
            kind: self.kind,
            dir: main.dir.clone(),
            file: Some(self.file.clone()),
            label: self.label.clone(),
            text_field: self.text_field.clone(),
            group_field: None,
            min_examples: 1,
            duplicates: DuplicatePolicy::Keep,
            conflicts: ConflictPolicy::Keep,
            negatives: NegativePolicy::Drop,
            multi_label: MultiLabelPolicy::Drop,
            multi_label_head: main.multi_label_head,
            attack: main.attack.clone(),
            deprecated: main.deprecated,
            unknown_techniques: crate::data::config::UnknownTechniquePolicy::Keep,
            exclude: Vec::new(),
        }
    }

    /// The file's path.
    pub fn path(&self, data_dir: &Path) -> PathBuf {
        match self.file.strip_prefix(crate::paths::DATA_PREFIX) {
            Some(rel) => data_dir.join(rel),
            None => PathBuf::from(&self.file),
        }
    }
}

/// Check the `[[evaluate]]` tables: names distinct and usable, files present, label fields valid
/// for their format. `e` makes a manifest error for a key.
pub fn validate(
    sets: &[EvalSetConfig],
    data_dir: &Path,
    e: &dyn Fn(&str, String) -> Error,
) -> Result<()> {
    let mut names = std::collections::BTreeSet::new();
    for (i, s) in sets.iter().enumerate() {
        let key = |f: &str| format!("evaluate.{i}.{f}");
        if s.name.is_empty()
            || !s
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(e(
                &key("name"),
                format!(
                    "`{}` cannot name a column; use letters, digits, `-`, `_` or `.`",
                    s.name
                ),
            ));
        }
        if !names.insert(s.name.as_str()) {
            return Err(e(
                &key("name"),
                format!(
                    "`{}` names two [[evaluate]] tables; give each its own name",
                    s.name
                ),
            ));
        }
        if s.kind == DataKind::CtiToMitre
            && let Some(l) = &s.label
            && l != "label_tec"
            && l != "label_subtec"
        {
            return Err(e(
                &key("label"),
                format!(
                    "`{l}` is not a CTI-to-MITRE label field; valid: `label_tec` or `label_subtec`"
                ),
            ));
        }
        let p = s.path(data_dir);
        if !p.is_file() {
            // The old reading (relative to the data folder) finds it: say how to write it.
            let in_data = (!s.file.starts_with(crate::paths::DATA_PREFIX))
                .then(|| {
                    let parts: Vec<_> = p.components().collect();
                    (1..=parts.len()).find_map(|k| {
                        let rel: PathBuf = parts[parts.len() - k..].iter().collect();
                        data_dir.join(&rel).is_file().then_some(rel)
                    })
                })
                .flatten();
            return Err(Error::data(format!(
                "[[evaluate]] `{}` (key `{}`): file {} not found: a relative `file` resolves against the manifest's folder, `data:PATH` against the data folder {}{}",
                s.name,
                key("file"),
                p.display(),
                data_dir.display(),
                match in_data {
                    Some(rel) => format!(
                        "; there is a file at {}: write `file = \"data:{}\"` (or its path, absolute or relative to the manifest)",
                        data_dir.join(&rel).display(),
                        rel.display()
                    ),
                    None => "; check the path, or give an absolute one".to_string(),
                }
            )));
        }
    }
    Ok(())
}

/// The `external` stage's parameters, its cache key (input: the trained model's key): how the
/// file is loaded (its content hash included, never its path) and the unknown-label policy.
#[derive(Debug, Serialize)]
pub struct ExternalParams<'a> {
    pub load: LoadParams<'a>,
    pub unknown_labels: UnknownLabels,
}

impl StageParams for ExternalParams<'_> {
    const STAGE: &'static str = "external";
    fn version(&self) -> u32 {
        EXTERNAL_VERSION
    }
}

/// The stage id of scoring the model `train_key` on a set loaded with `cfg` (from
/// [`EvalSetConfig::data_config`]), whose file hashes to `file_hash`.
pub fn stage_id(
    cfg: &DataConfig,
    policy: UnknownLabels,
    file_hash: &str,
    attack_hash: Option<&str>,
    train_key: &str,
) -> StageId {
    StageId::of(
        &ExternalParams {
            load: LoadParams::new(cfg, file_hash, attack_hash),
            unknown_labels: policy,
        },
        &[train_key],
    )
}

/// A cell's figures on one external set (`metrics.json` → `external`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExternalResult {
    pub name: String,
    pub file: String,
    pub unknown_labels: UnknownLabels,
    /// Rows the load stage kept.
    pub rows: usize,
    /// Rows in the metrics (all of them with `error`, the known ones with `skip`).
    pub scored: usize,
    /// Rows whose label is not a class of the model, and those labels with their rows.
    pub unknown_rows: usize,
    pub unknown: BTreeMap<String, usize>,
    pub metrics: Metrics,
    /// The stage's cache key.
    pub key: String,
}

/// Score a model on a loaded external set: `classes` are the model's, `predict` gives the index
/// of the top class of each text.
pub fn score(
    set: &EvalSetConfig,
    ds: &crate::data::Dataset,
    classes: &[String],
    predict: &mut dyn FnMut(&[&str]) -> Result<Vec<usize>>,
    key: &str,
) -> Result<ExternalResult> {
    let index: BTreeMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let mut unknown: BTreeMap<String, usize> = BTreeMap::new();
    for e in &ds.examples {
        if !index.contains_key(e.label.as_str()) {
            *unknown.entry(e.label.clone()).or_insert(0) += 1;
        }
    }
    // The class list of the metrics: the model's, then the unknown labels (never predicted).
    let mut all: Vec<String> = classes.to_vec();
    all.extend(unknown.keys().cloned());
    let at: BTreeMap<&str, usize> = all
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let kept: Vec<&crate::data::Example> = ds
        .examples
        .iter()
        .filter(|e| {
            set.unknown_labels == UnknownLabels::Error || index.contains_key(e.label.as_str())
        })
        .collect();
    let texts: Vec<&str> = kept.iter().map(|e| e.text.as_str()).collect();
    let gold: Vec<usize> = kept.iter().map(|e| at[e.label.as_str()]).collect();
    let pred = if texts.is_empty() {
        Vec::new()
    } else {
        predict(&texts)?
    };
    let mut labels = gold.clone();
    labels.sort_unstable();
    labels.dedup();
    let metrics = crate::metrics::evaluate_over(&gold, &pred, &all, &labels, 10);
    Ok(ExternalResult {
        name: set.name.clone(),
        file: set.file.clone(),
        unknown_labels: set.unknown_labels,
        rows: ds.examples.len(),
        scored: kept.len(),
        unknown_rows: unknown.values().sum(),
        unknown,
        metrics,
        key: key.to_string(),
    })
}

/// Load an external set as the load stage reads `cfg`'s format.
pub fn load(
    cfg: &DataConfig,
    path: &Path,
    catalog: Option<&Catalog>,
) -> Result<crate::data::Dataset> {
    crate::data::load(cfg, path, catalog)
}

/// The `summary.csv` columns of external sets: `<name>_macro_f1`, `<name>_micro_f1`,
/// `<name>_unknown_rows` per set of the run, in the order of the first cell that has them.
pub fn summary_columns(results: &[CellResult]) -> Vec<String> {
    let mut cols = Vec::new();
    for r in results {
        for x in &r.external {
            for what in ["macro_f1", "micro_f1", "unknown_rows"] {
                let c = format!("{}_{what}", x.name);
                if !cols.contains(&c) {
                    cols.push(c);
                }
            }
        }
    }
    cols
}

/// A cell's values of [`summary_columns`].
pub fn summary_values(r: &CellResult, columns: &[String]) -> Vec<String> {
    columns
        .iter()
        .map(|c| {
            for x in &r.external {
                if let Some(what) = c.strip_prefix(&format!("{}_", x.name)) {
                    return match what {
                        "macro_f1" => format!("{:.4}", x.metrics.macro_f1),
                        "micro_f1" => format!("{:.4}", x.metrics.micro_f1),
                        "unknown_rows" => x.unknown_rows.to_string(),
                        _ => continue,
                    };
                }
            }
            String::new()
        })
        .collect()
}

/// The `summary.md` section of external sets (empty when the run has none).
pub fn summary_md(results: &[CellResult]) -> String {
    if results.iter().all(|r| r.external.is_empty()) {
        return String::new();
    }
    let mut s = String::from(
        "\n## External test sets\n\nEvery cell scored on each `[[evaluate]]` file (top-1). Unknown: rows whose label is not a class of the model; `skip` leaves them out, `error` scores them as misses. Per class: `per_class_external.csv`.\n\n| cell | set | rows | scored | unknown rows (labels) | policy | accuracy | macro-F1 | micro-F1 |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        for x in &r.external {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} ({}) | {} | {:.4} | {:.4} | {:.4} |\n",
                r.cell.name,
                x.name,
                x.rows,
                x.scored,
                x.unknown_rows,
                x.unknown.len(),
                x.unknown_labels.as_str(),
                x.metrics.accuracy,
                x.metrics.macro_f1,
                x.metrics.micro_f1
            ));
        }
    }
    let mut unknown: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for r in results {
        for x in &r.external {
            for (l, n) in &x.unknown {
                unknown.insert((x.name.as_str(), l.as_str()), *n);
            }
        }
    }
    if !unknown.is_empty() {
        s.push_str("\nUnknown labels (set: label × rows): ");
        s.push_str(
            &unknown
                .iter()
                .map(|((set, l), n)| format!("{set}: {l} × {n}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        s.push('\n');
    }
    s
}

/// `per_class_external.csv`: a row per (cell, set, class) with precision, recall, F1, support
/// and predicted count; `None` when the run has no external set.
pub fn per_class_csv(results: &[CellResult]) -> Option<String> {
    if results.iter().all(|r| r.external.is_empty()) {
        return None;
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "cell",
        "set",
        "class",
        "precision",
        "recall",
        "f1",
        "support",
        "predicted",
    ])
    .expect("csv");
    for r in results {
        for x in &r.external {
            for c in &x.metrics.per_class {
                w.write_record([
                    r.cell.name.clone(),
                    x.name.clone(),
                    c.class.clone(),
                    format!("{:.4}", c.precision),
                    format!("{:.4}", c.recall),
                    format!("{:.4}", c.f1),
                    c.support.to_string(),
                    c.predicted.to_string(),
                ])
                .expect("csv");
            }
        }
    }
    Some(String::from_utf8(w.into_inner().expect("csv")).expect("utf8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Dataset, Example, LoadStats};

    fn ds(labels: &[&str]) -> Dataset {
        Dataset {
            examples: labels
                .iter()
                .enumerate()
                .map(|(i, l)| Example {
                    text: format!("t{i}"),
                    label: l.to_string(),
                    group: None,
                    row: i + 1,
                    labels: Vec::new(),
                })
                .collect(),
            stats: LoadStats::default(),
            multi_label: false,
        }
    }

    fn set(policy: UnknownLabels) -> EvalSetConfig {
        EvalSetConfig {
            name: "x".into(),
            file: "x.csv".into(),
            kind: DataKind::Csv,
            label: None,
            text_field: None,
            unknown_labels: policy,
        }
    }

    /// Model classes A, B; the set has A, A, B and the unknown C twice. The model predicts A
    /// for every text.
    #[test]
    fn unknown_labels_are_skipped_or_scored_as_misses() {
        let classes = vec!["A".to_string(), "B".to_string()];
        let d = ds(&["A", "A", "B", "C", "C"]);
        let mut all_a = |t: &[&str]| Ok(vec![0; t.len()]);
        let skip = score(&set(UnknownLabels::Skip), &d, &classes, &mut all_a, "k").unwrap();
        assert_eq!((skip.rows, skip.scored, skip.unknown_rows), (5, 3, 2));
        assert_eq!(skip.unknown, [("C".to_string(), 2)].into());
        // A: p 2/3 r 1 f 0.8; B: 0 → macro 0.4; micro = accuracy 2/3.
        assert!((skip.metrics.macro_f1 - 0.4).abs() < 1e-12);
        assert!((skip.metrics.micro_f1 - 2.0 / 3.0).abs() < 1e-12);
        let error = score(&set(UnknownLabels::Error), &d, &classes, &mut all_a, "k").unwrap();
        assert_eq!((error.rows, error.scored, error.unknown_rows), (5, 5, 2));
        // A: p 2/5 r 1 f 4/7; B 0; C 0 → macro 4/21; micro 2/5.
        assert!((error.metrics.macro_f1 - 4.0 / 21.0).abs() < 1e-12);
        assert!((error.metrics.micro_f1 - 0.4).abs() < 1e-12);
        assert_eq!(error.metrics.macro_classes, ["A", "B", "C"]);
    }
}
