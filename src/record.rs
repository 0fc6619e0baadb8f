//! The records a run writes and the report reads: one [`CellResult`] per finished cell
//! (`cells/<cell>/metrics.json`). The report depends on these records alone, never on the
//! runner, so `synthcti report` rebuilds the same tables from disk.

use serde::{Deserialize, Serialize};

use crate::generate;
use crate::manifest::CellSpec;
use crate::metrics::Metrics;

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
    /// The class set of `target_macro_f1` (and of the target-only intervals): the target
    /// techniques that are in `metrics.macro_classes`, in the order of `[augment.targets]`.
    #[serde(default)]
    pub target_classes: Vec<String>,
    /// Real train sentences per class in this cell's split (synthetic ones not counted); empty
    /// in records of an older synthcti (the report then reads the run's `split/train.jsonl`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub train_counts: std::collections::BTreeMap<String, usize>,
    /// On augmented cells: the synthetic data it trained on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic: Option<SynthSummary>,
    /// Sentences the cell's arm added to the real train split (0 for `augment = none`).
    #[serde(default)]
    pub added: usize,
    /// On a multi-label task (`data.multi_label = "keep"`): the threshold chosen on validation
    /// and the multi-label figures ([`crate::multilabel`]); `metrics` then holds micro- and
    /// macro-F1 and the per-technique table at that threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_label: Option<crate::multilabel::MultiLabelMetrics>,
    /// Its figures on the validation split, for choosing settings without looking at test:
    /// macro averages over the classes with a validation sentence, `target_macro_f1` over the
    /// target techniques among them. Single-label cells with a validation split only (a
    /// multi-label cell's validation figures are its threshold's, in `multi_label`); absent in
    /// records of an older synthcti.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationScore>,
    /// Its figures on each `[[evaluate]]` set ([`crate::external`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external: Vec<crate::external::ExternalResult>,
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

/// A cell's figures on the validation split ([`CellResult::validation`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidationScore {
    /// Every figure on validation, as `metrics` holds them on test; its macro averages run over
    /// the classes with a validation sentence (`metrics.macro_classes`).
    pub metrics: Metrics,
    /// Macro-F1 over the target techniques with a validation sentence; `None` when none has one
    /// or the cell has no targets (real-only grids).
    #[serde(default)]
    pub target_macro_f1: Option<f64>,
}
