//! The load stage: parse a publisher's own file format into labelled examples, map revoked
//! ATT&CK IDs, and handle duplicates, conflicting labels and rare classes as the manifest says.

pub mod attack;
mod formats;
pub mod pull;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::manifest::{ConflictPolicy, DataConfig, DataKind, DuplicatePolicy};
pub use attack::Catalog;

/// Version of the load stage's output; bump when the parsing or filtering changes.
pub const LOAD_VERSION: u32 = 1;

/// One labelled text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Example {
    pub text: String,
    pub label: String,
    /// The report it comes from (`doc_title`), for grouped splits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// What loading and filtering did, for the report and the plan.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadStats {
    pub rows_read: usize,
    pub empty_texts: usize,
    pub negatives_dropped: usize,
    pub multi_label_dropped: usize,
    /// old id → new id, with the number of rows mapped.
    pub revoked_mapped: BTreeMap<String, (String, usize)>,
    pub exact_duplicates: usize,
    pub duplicates_dropped: usize,
    pub conflicting_texts: usize,
    pub conflict_rows_dropped: usize,
    /// class → count, for classes dropped under `min_examples`.
    pub rare_classes_dropped: BTreeMap<String, usize>,
    pub examples: usize,
    pub classes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dataset {
    pub examples: Vec<Example>,
    pub stats: LoadStats,
}

impl Dataset {
    /// Class → count, sorted by class.
    pub fn class_counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for e in &self.examples {
            *m.entry(e.label.clone()).or_insert(0) += 1;
        }
        m
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

/// The dataset file the manifest names, resolved against the data folder.
pub fn dataset_path(cfg: &DataConfig, data_dir: &Path) -> PathBuf {
    let rel = cfg
        .file
        .clone()
        .or_else(|| cfg.kind.default_file().map(str::to_string))
        .unwrap_or_default();
    let p = Path::new(&rel);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        data_dir.join(p)
    }
}

/// The ATT&CK bundle to use for revoked-ID mapping, if any.
pub fn attack_path(cfg: &DataConfig, data_dir: &Path) -> Result<Option<PathBuf>> {
    match cfg.attack.as_str() {
        "none" => Ok(None),
        "auto" => {
            for cand in [
                "attack/enterprise-attack-techniques-18.1.json",
                "attack/enterprise-attack.json",
            ] {
                let p = data_dir.join(cand);
                if p.is_file() {
                    return Ok(Some(p));
                }
            }
            Ok(None)
        }
        other => {
            let p = if Path::new(other).is_absolute() {
                PathBuf::from(other)
            } else {
                data_dir.join(other)
            };
            if !p.is_file() {
                return Err(Error::data(format!(
                    "the ATT&CK bundle `data.attack = \"{other}\"` is not at {}; get enterprise-attack.json from the mitre/cti repository, or set `data.attack = \"auto\"` or `\"none\"`",
                    p.display()
                )));
            }
            Ok(Some(p))
        }
    }
}

/// Check the dataset file exists, with a message that says which file it is and how to get it.
pub fn check_dataset_file(cfg: &DataConfig, data_dir: &Path) -> Result<PathBuf> {
    let p = dataset_path(cfg, data_dir);
    if !p.is_file() {
        return Err(Error::data(format!(
            "dataset file {} not found. It is {}. Run `synthcti data pull --dir {}` to download the publishers' files, or point `data.dir` / SYNTHCTI_DATA_DIR at a folder that has it",
            p.display(),
            publisher_hint(cfg.kind),
            data_dir.display()
        )));
    }
    Ok(p)
}

/// Load, map, dedup and filter. `catalog` maps revoked IDs when given.
pub fn load(cfg: &DataConfig, path: &Path, catalog: Option<&Catalog>) -> Result<Dataset> {
    let raw = formats::read(cfg, path)?;
    let mut stats = raw.stats;
    let mut rows = raw.rows;

    if let Some(cat) = catalog {
        for r in &mut rows {
            let new = cat.resolve(&r.label);
            if new != r.label {
                let e = stats
                    .revoked_mapped
                    .entry(r.label.clone())
                    .or_insert((new.clone(), 0));
                e.1 += 1;
                r.label = new;
            }
        }
    }

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
        *counts.entry(e.label.clone()).or_insert(0) += 1;
    }
    for (label, n) in &counts {
        if *n < cfg.min_examples {
            stats.rare_classes_dropped.insert(label.clone(), *n);
        }
    }
    examples.retain(|e| !stats.rare_classes_dropped.contains_key(&e.label));
    stats.examples = examples.len();
    stats.classes = counts.len() - stats.rare_classes_dropped.len();

    if examples.is_empty() || stats.classes < 2 {
        return Err(Error::data(format!(
            "{}: {} examples in {} classes remain after filtering ({} rows read, {} negatives and {} multi-label rows dropped, {} conflict rows and {} duplicates dropped, {} classes under data.min_examples = {}). A classifier needs at least two classes: check `data.label`, `data.negatives`, `data.min_examples` and the file itself",
            path.display(),
            examples.len(),
            stats.classes,
            stats.rows_read,
            stats.negatives_dropped,
            stats.multi_label_dropped,
            stats.conflict_rows_dropped,
            stats.duplicates_dropped,
            stats.rare_classes_dropped.len(),
            cfg.min_examples
        )));
    }
    Ok(Dataset { examples, stats })
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
            negatives: crate::manifest::NegativePolicy::Keep,
            multi_label: crate::manifest::MultiLabelPolicy::First,
            ..base
        };
        let d = load(&with_negatives, &p, None).unwrap();
        assert_eq!(d.examples.len(), 18999);
        assert_eq!(d.class_counts()[formats::NEGATIVE_LABEL], 15115);
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
