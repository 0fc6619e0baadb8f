//! The `[data]` table: which file, in which format, and how the load stage cleans it. The load
//! stage's cache key is this table without where the file sits (see `pipeline::shared_stages`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DataKind {
    /// TRAM `single_label.json`: `[{"text","label","doc_title"}]`.
    TramSingle,
    /// TRAM `bootstrap-training-data.json`: a report object with `sentences[].mappings[]`.
    TramBootstrap,
    /// TRAM multi-label JSONL (`labels_tram50`; rows without labels are negatives).
    TramMulti,
    /// CTI-to-MITRE `dataset.csv` (`label_tec` or `label_subtec`).
    CtiToMitre,
    /// A user's JSON Lines file.
    Jsonl,
    /// A user's CSV file with a header row.
    Csv,
}

impl DataKind {
    pub fn default_file(self) -> Option<&'static str> {
        match self {
            DataKind::TramSingle => Some("tram/single_label.json"),
            DataKind::TramBootstrap => Some("tram/bootstrap-training-data.json"),
            DataKind::TramMulti => Some("tram/multi_label_reconstructed.jsonl"),
            DataKind::CtiToMitre => Some("cti-to-mitre/dataset.csv"),
            DataKind::Jsonl | DataKind::Csv => None,
        }
    }
    pub fn default_label(self) -> &'static str {
        match self {
            DataKind::TramSingle | DataKind::Jsonl | DataKind::Csv => "label",
            DataKind::TramBootstrap => "attack_id",
            DataKind::TramMulti => "labels_tram50",
            DataKind::CtiToMitre => "label_tec",
        }
    }
    pub fn default_text(self) -> &'static str {
        match self {
            DataKind::CtiToMitre => "sentence",
            _ => "text",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            DataKind::TramSingle => "tram-single",
            DataKind::TramBootstrap => "tram-bootstrap",
            DataKind::TramMulti => "tram-multi",
            DataKind::CtiToMitre => "cti-to-mitre",
            DataKind::Jsonl => "jsonl",
            DataKind::Csv => "csv",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DuplicatePolicy {
    /// Keep the first of identical (text, label) rows.
    Drop,
    /// Keep every row.
    Keep,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    /// Drop every row of a text that carries more than one label.
    Drop,
    /// Keep the most frequent label of the text (ties: drop).
    Majority,
    /// Keep all rows as they are.
    Keep,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum NegativePolicy {
    /// Rows without a label are dropped.
    Drop,
    /// Rows without a label become the class `none`.
    Keep,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MultiLabelPolicy {
    /// Rows with several labels are dropped.
    Drop,
    /// Keep the first label of such rows.
    First,
    /// The task is multi-label: every row keeps all its labels ([`super::Example::labels`]),
    /// and with `data.negatives = "keep"` a row without one is a negative (no technique).
    Keep,
}

/// How classifiers of a multi-label task (`data.multi_label = "keep"`) output a sentence's
/// techniques (`data.multi_label_head`; read only on such a task). Both choose one global
/// threshold on validation (see [`crate::multilabel`]).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MultiLabelHead {
    /// One softmax over the techniques plus a `none` class; a row with several labels trains
    /// once per label.
    #[default]
    NoneClass,
    /// An independent sigmoid per technique, binary cross-entropy on multi-hot targets (a
    /// sentence with no technique: all zeros); `fasttext`, `encoder-frozen` and `linear`
    /// ([`crate::ml::sigmoid`]).
    Sigmoid,
}

impl MultiLabelHead {
    /// The manifest's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MultiLabelHead::NoneClass => "none-class",
            MultiLabelHead::Sigmoid => "sigmoid",
        }
    }
}

/// What becomes of rows whose technique the ATT&CK catalog marks deprecated, or revoked with no
/// successor to map it to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DeprecatedPolicy {
    /// Drop them, counted and named in the load line.
    Drop,
    /// Keep them as classes, with a warning naming them.
    Keep,
}

/// What becomes of rows whose technique ID the ATT&CK catalog lacks (or has in another domain
/// only, e.g. a Mobile ID in an enterprise dataset).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownTechniquePolicy {
    /// Keep them as classes, with a warning naming them.
    Keep,
    /// Drop them, counted and named in the load line.
    Drop,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub kind: DataKind,
    /// Data folder (relative: to the manifest's folder, see [`crate::paths`]); else
    /// `SYNTHCTI_DATA_DIR`; else `../shared/data` or `data`, whichever exists.
    pub dir: Option<PathBuf>,
    /// The user's dataset file, relative to the manifest's folder (one from `--set` or the
    /// environment: to the current folder) or absolute. Unset: the format's publisher file in
    /// the data folder.
    pub file: Option<String>,
    /// Label field, or granularity for CTI-to-MITRE (`label_tec` / `label_subtec`).
    pub label: Option<String>,
    /// Text field (JSONL / CSV).
    pub text_field: Option<String>,
    /// Group field for grouped splits (default `doc_title` where the format has it).
    pub group_field: Option<String>,
    /// Classes with fewer examples than this (after dedup) are dropped.
    pub min_examples: usize,
    pub duplicates: DuplicatePolicy,
    pub conflicts: ConflictPolicy,
    pub negatives: NegativePolicy,
    pub multi_label: MultiLabelPolicy,
    /// On a multi-label task: a `none` class and a softmax, or independent sigmoids.
    pub multi_label_head: MultiLabelHead,
    /// ATT&CK STIX bundle for revoked-ID mapping: a path in the data folder, `auto` or `none`.
    pub attack: AttackSource,
    /// Techniques the catalog marks deprecated or revoked without successor: `drop` or `keep`.
    pub deprecated: DeprecatedPolicy,
    /// Technique IDs absent from the catalog (or of another domain): `keep` (warned) or `drop`.
    pub unknown_techniques: UnknownTechniquePolicy,
    /// Technique IDs whose rows are dropped, normalized and mapped like the data's labels.
    pub exclude: Vec<String>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            kind: DataKind::TramSingle,
            dir: None,
            file: None,
            label: None,
            text_field: None,
            group_field: None,
            min_examples: 2,
            duplicates: DuplicatePolicy::Drop,
            conflicts: ConflictPolicy::Drop,
            negatives: NegativePolicy::Drop,
            multi_label: MultiLabelPolicy::Drop,
            multi_label_head: MultiLabelHead::default(),
            attack: AttackSource::Auto,
            deprecated: DeprecatedPolicy::Drop,
            unknown_techniques: UnknownTechniquePolicy::Keep,
            exclude: Vec::new(),
        }
    }
}

/// Where the ATT&CK STIX bundle comes from (`data.attack`), written in the manifest as the string
/// `"auto"`, `"none"`, or a path (relative to the data folder).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AttackSource {
    /// The first of `attack/enterprise-attack-techniques-18.1.json` and
    /// `attack/enterprise-attack.json` in the data folder; none when neither is there.
    #[default]
    Auto,
    /// No bundle: revoked IDs are not mapped, and synthetic cells cannot run.
    None,
    /// This file.
    Path(PathBuf),
}

impl AttackSource {
    /// The bundle file names `Auto` looks for in the data folder, in order.
    pub const AUTO_FILES: [&str; 2] = [
        "attack/enterprise-attack-techniques-18.1.json",
        "attack/enterprise-attack.json",
    ];

    fn as_string(&self) -> String {
        match self {
            AttackSource::Auto => "auto".into(),
            AttackSource::None => "none".into(),
            AttackSource::Path(p) => p.display().to_string(),
        }
    }
}

impl Serialize for AttackSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_string())
    }
}

impl<'de> Deserialize<'de> for AttackSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "auto" => AttackSource::Auto,
            "none" => AttackSource::None,
            "" => {
                return Err(serde::de::Error::custom(
                    "an empty path; use \"auto\", \"none\" or the bundle's path",
                ));
            }
            _ => AttackSource::Path(PathBuf::from(s)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attack_source_reads_and_writes_the_manifest_spelling() {
        for (text, want) in [
            ("\"auto\"", AttackSource::Auto),
            ("\"none\"", AttackSource::None),
            (
                "\"attack/enterprise-attack.json\"",
                AttackSource::Path(PathBuf::from("attack/enterprise-attack.json")),
            ),
        ] {
            let got: AttackSource = serde_json::from_str(text).unwrap();
            assert_eq!(got, want);
            assert_eq!(serde_json::to_string(&got).unwrap(), text);
        }
        assert!(serde_json::from_str::<AttackSource>("\"\"").is_err());
    }
}
