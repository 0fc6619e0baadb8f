//! `synthcti compare RUN_A RUN_B`: two run folders side by side, cell by cell.
//!
//! Cells are matched by configuration: first by their whole [`crate::manifest::CellSpec`] but
//! the name (classifier and its settings, seed, augmentation); cells left over on both sides are
//! then matched by classifier kind, augmentation and seed when that pairs exactly one cell on
//! each side (two runs of one manifest with a different `--set dim=…`), and the settings that
//! differ are listed: the cell spec's, then the run-wide ones of the two runs'
//! `manifest.resolved.toml` that shape the cell (the split, the filter, `per_call`, the
//! generator's sampling; see `shapes`). A matched pair gets macro-F1 of each run and the delta
//! B − A with a 95% paired bootstrap interval over test sentences ([`crate::stats`], the bootstrap settings of
//! run A's `[study]`) when both cells were scored on the same test sentences (same rows, texts
//! and gold labels, in the same order) over the same class set L; otherwise the row says why
//! they are not comparable.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::manifest::AugmentKind;
use crate::output::Table;
use crate::record::CellResult;
use crate::stats::{Bootstrap, Interval, Paired};
use crate::study::read_predictions;

/// One row: a matched pair, or a cell of one run only.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub cell_a: String,
    pub cell_b: String,
    pub classifier: String,
    pub augment: String,
    pub seed: String,
    /// `configuration`, `classifier, augment, seed`, or empty for an unmatched cell.
    pub matched_by: String,
    /// Settings that differ between the two cells (`dim: 8 → 16`).
    pub differs: String,
    pub macro_f1_a: Option<f64>,
    pub macro_f1_b: Option<f64>,
    /// B − A over L, when comparable.
    pub delta: Option<Interval>,
    /// B − A over the target techniques, when comparable and both have the same targets.
    pub delta_target: Option<Interval>,
    /// `comparable`, or why not.
    pub status: String,
}

fn spec_json(r: &CellResult) -> serde_json::Value {
    let mut v = serde_json::to_value(&r.cell).expect("cell spec serializes");
    if let serde_json::Value::Object(m) = &mut v {
        // The name and `config` spell settings that are in the spec's own fields; the split seed
        // and generation offset of a replicate show in whether the test sentences match.
        m.remove("name");
        m.remove("config");
        m.remove("split_seed");
        m.remove("generation_offset");
    }
    v
}

fn loose_key(r: &CellResult) -> String {
    format!(
        "{}|{}|{}|{:?}",
        r.cell.classifier.as_str(),
        r.cell.augment.as_str(),
        r.cell.seed,
        r.cell.synthetic.as_ref().map(|s| s.k)
    )
}

fn leaves(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&p, x, out);
            }
        }
        serde_json::Value::String(s) => {
            out.insert(prefix.into(), s.clone());
        }
        other => {
            out.insert(prefix.into(), other.to_string());
        }
    }
}

/// The keys of two flattened settings maps whose values differ (a key on one side only counts),
/// in key order, with each side's value (`—` where it is missing).
fn changed<'a>(
    a: &'a BTreeMap<String, String>,
    b: &'a BTreeMap<String, String>,
) -> impl Iterator<Item = (&'a str, String, String)> {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let show = |m: &BTreeMap<String, String>, k: &str| m.get(k).cloned().unwrap_or("—".into());
    keys.into_iter()
        .filter(move |k| a.get(*k) != b.get(*k))
        .map(move |k| (k.as_str(), show(a, k), show(b, k)))
}

/// `key: a → b` for every leaf of the two cell specs that differs (the leaf's last name).
fn differences(a: &CellResult, b: &CellResult) -> String {
    let (mut la, mut lb) = (BTreeMap::new(), BTreeMap::new());
    leaves("", &spec_json(a), &mut la);
    leaves("", &spec_json(b), &mut lb);
    changed(&la, &lb)
        .map(|(k, x, y)| format!("{}: {x} → {y}", k.rsplit('.').next().unwrap_or(k)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The run-wide settings a run folder's `manifest.resolved.toml` holds outside the cell spec,
/// flattened to `section.key` (`split.seed`, `augment.filter.near_duplicate`), each generator's
/// under its name (`generator.smollm2.temperature`). Paths of the data folder and the templates
/// folder are left out (the data's identity is its content, which the test-sentence check sees).
/// Empty when the file is missing or unreadable (a run of an older synthcti).
fn run_settings(run_dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(v) = std::fs::read_to_string(run_dir.join("manifest.resolved.toml"))
        .ok()
        .and_then(|t| toml::from_str::<serde_json::Value>(&t).ok())
    else {
        return out;
    };
    for section in ["data", "split", "augment"] {
        if let Some(x) = v.get(section) {
            leaves(section, x, &mut out);
        }
    }
    for g in v
        .get("generator")
        .and_then(|g| g.as_array())
        .into_iter()
        .flatten()
    {
        let name = g.get("name").and_then(|n| n.as_str()).unwrap_or("?");
        leaves(&format!("generator.{name}"), g, &mut out);
    }
    out.remove("data.dir");
    out.remove("augment.templates_dir");
    out
}

/// Whether a run-wide setting (a key of [`run_settings`]) shapes a cell: the data and the split
/// shape every cell; the targets and `count` every augmented one; the rest of `[augment]` (the
/// filter, `per_call`, `top_up`, the clustering) and its generator's settings a synthetic one.
/// The settings a cell spec holds itself (`kind`, `k`, `template`, `generator`,
/// `per_technique`) are compared there.
fn shapes(key: &str, augment: AugmentKind, generator: Option<&str>) -> bool {
    const IN_SPEC: &[&str] = &[
        "augment.kind",
        "augment.k",
        "augment.template",
        "augment.generator",
        "augment.per_technique",
    ];
    if key.starts_with("data.") || key.starts_with("split.") {
        return true;
    }
    if augment == AugmentKind::None || IN_SPEC.contains(&key) {
        return false;
    }
    if key.starts_with("augment.targets.") || key == "augment.count" {
        return true;
    }
    match generator {
        Some(name) if augment == AugmentKind::Synthetic => {
            key.starts_with("augment.")
                || key
                    .strip_prefix("generator.")
                    .and_then(|k| k.strip_prefix(name))
                    .is_some_and(|rest| rest.starts_with('.'))
        }
        _ => false,
    }
}

/// `section.key: a → b` for every run-wide setting that differs between the runs and shapes
/// a cell of arm `augment` whose synthetic data came from `generator` ([`shapes`]).
fn run_differences(
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
    augment: AugmentKind,
    generator: Option<&str>,
) -> Vec<String> {
    changed(a, b)
        .filter(|(k, _, _)| shapes(k, augment, generator))
        .map(|(k, x, y)| format!("{k}: {x} → {y}"))
        .collect()
}

/// Why two cells cannot be compared on the same test sentences, or their intervals.
fn paired(
    a_dir: &Path,
    a: &CellResult,
    b_dir: &Path,
    b: &CellResult,
    boot: Bootstrap,
) -> Result<std::result::Result<(Interval, Option<Interval>), String>> {
    let (pa, pb) = (
        read_predictions(a_dir, &a.cell.name)?,
        read_predictions(b_dir, &b.cell.name)?,
    );
    if pa.len() != pb.len() {
        return Ok(Err(format!(
            "not comparable: {} test sentences in A, {} in B",
            pa.len(),
            pb.len()
        )));
    }
    if let Some(i) = pa
        .iter()
        .zip(&pb)
        .position(|(x, y)| x.row != y.row || x.text != y.text || x.gold != y.gold)
    {
        return Ok(Err(format!(
            "not comparable: the test sentences differ (first at line {} of predictions.jsonl)",
            i + 1
        )));
    }
    if a.metrics.macro_classes.is_empty() || a.metrics.macro_classes != b.metrics.macro_classes {
        return Ok(Err(
            "not comparable: the class sets L differ (or one run did not record L)".into(),
        ));
    }
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for c in a.metrics.macro_classes.iter().map(String::as_str).chain(
        pa.iter()
            .chain(&pb)
            .flat_map(|p| [p.gold.as_str(), p.pred.as_str()]),
    ) {
        let n = index.len();
        index.entry(c).or_insert(n);
    }
    let gold: Vec<usize> = pa.iter().map(|p| index[p.gold.as_str()]).collect();
    let xa: Vec<usize> = pa.iter().map(|p| index[p.pred.as_str()]).collect();
    let xb: Vec<usize> = pb.iter().map(|p| index[p.pred.as_str()]).collect();
    let labels: Vec<usize> = (0..a.metrics.macro_classes.len()).collect();
    let targets: Vec<usize> = if a.target_classes == b.target_classes {
        a.target_classes
            .iter()
            .filter_map(|t| index.get(t.as_str()).copied())
            .collect()
    } else {
        Vec::new()
    };
    let p = Paired {
        gold: &gold,
        baseline: &xa,
        augmented: &xb,
    };
    let sets: Vec<&[usize]> = if targets.is_empty() {
        vec![&labels]
    } else {
        vec![&labels, &targets]
    };
    let ivs = crate::stats::pooled_deltas(&[p], &sets, boot);
    Ok(Ok((ivs[0], ivs.get(1).copied())))
}

/// Compare the finished cells of two run folders (read from disk; nothing is written).
pub fn compare(run_a: &Path, run_b: &Path) -> Result<Vec<Row>> {
    let (a, _) = crate::report::read_run(run_a)?;
    let (b, _) = crate::report::read_run(run_b)?;
    let boot = crate::study::bootstrap_of_run(run_a)?;
    let (settings_a, settings_b) = (run_settings(run_a), run_settings(run_b));
    let mut pairs: Vec<(Option<&CellResult>, Option<&CellResult>, &str)> = Vec::new();
    let mut b_left: Vec<&CellResult> = b.iter().collect();
    let mut a_left: Vec<&CellResult> = Vec::new();
    for x in &a {
        match b_left.iter().position(|y| spec_json(y) == spec_json(x)) {
            Some(i) => pairs.push((Some(x), Some(b_left.remove(i)), "configuration")),
            None => a_left.push(x),
        }
    }
    let count = |v: &[&CellResult], k: &str| v.iter().filter(|r| loose_key(r) == k).count();
    let mut a_rest = Vec::new();
    for x in a_left.clone() {
        let k = loose_key(x);
        if count(&a_left, &k) == 1 && count(&b_left, &k) == 1 {
            let i = b_left
                .iter()
                .position(|y| loose_key(y) == k)
                .expect("counted");
            pairs.push((Some(x), Some(b_left.remove(i)), "classifier, augment, seed"));
        } else {
            a_rest.push(x);
        }
    }
    pairs.extend(a_rest.into_iter().map(|x| (Some(x), None, "")));
    pairs.extend(b_left.into_iter().map(|y| (None, Some(y), "")));
    let mut rows = Vec::new();
    for (x, y, how) in pairs {
        let any = x.or(y).expect("one side");
        let mut row = Row {
            cell_a: x.map(|r| r.cell.name.clone()).unwrap_or_default(),
            cell_b: y.map(|r| r.cell.name.clone()).unwrap_or_default(),
            classifier: any.cell.classifier.as_str().into(),
            augment: crate::results_section::augment_label(&any.cell),
            seed: any.cell.seed.to_string(),
            matched_by: how.into(),
            differs: String::new(),
            macro_f1_a: x.map(|r| r.metrics.macro_f1),
            macro_f1_b: y.map(|r| r.metrics.macro_f1),
            delta: None,
            delta_target: None,
            status: String::new(),
        };
        match (x, y) {
            (Some(x), Some(y)) => {
                let cell_level = differences(x, y);
                let run_level = run_differences(
                    &settings_a,
                    &settings_b,
                    x.cell.augment,
                    x.cell.synthetic.as_ref().map(|s| s.generator.as_str()),
                );
                row.differs = std::iter::once(cell_level)
                    .filter(|d| !d.is_empty())
                    .chain(run_level)
                    .collect::<Vec<_>>()
                    .join("; ");
                match paired(run_a, x, run_b, y, boot)? {
                    Ok((d, t)) => {
                        row.delta = Some(d);
                        row.delta_target = t;
                        row.status = if t.is_none() && x.target_classes != y.target_classes {
                            format!(
                                "comparable; no target delta: the target techniques differ ({} in A, {} in B)",
                                x.target_classes.len(),
                                y.target_classes.len()
                            )
                        } else {
                            "comparable".into()
                        };
                    }
                    Err(why) => row.status = why,
                }
            }
            (Some(_), None) => row.status = "only in A".into(),
            _ => row.status = "only in B".into(),
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The rows as a table for `--format table|csv|json`; intervals as `+0.0123 [-0.0100, +0.0300]`
/// with `*` when the interval excludes 0.
pub fn table(rows: &[Row]) -> Table {
    let mut t = Table::new(&[
        "cell_a",
        "cell_b",
        "classifier",
        "augment",
        "seed",
        "matched_by",
        "differs",
        "macro_f1_a",
        "macro_f1_b",
        "delta_macro_f1",
        "delta_target_macro_f1",
        "status",
    ]);
    let f = |x: Option<f64>| x.map(|v| format!("{v:.4}")).unwrap_or_default();
    let iv = |i: &Option<Interval>| {
        i.map(|i| {
            format!(
                "{:+.4} [{:+.4}, {:+.4}]{}",
                i.delta,
                i.lo,
                i.hi,
                if i.excludes_zero() { " *" } else { "" }
            )
        })
        .unwrap_or_default()
    };
    for r in rows {
        t.rows.push(vec![
            r.cell_a.clone(),
            r.cell_b.clone(),
            r.classifier.clone(),
            r.augment.clone(),
            r.seed.clone(),
            r.matched_by.clone(),
            r.differs.clone(),
            f(r.macro_f1_a),
            f(r.macro_f1_b),
            iv(&r.delta),
            iv(&r.delta_target),
            r.status.clone(),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn run_wide_settings_count_for_the_cells_they_shape() {
        let syn = |k| shapes(k, AugmentKind::Synthetic, Some("smollm2"));
        let none = |k| shapes(k, AugmentKind::None, None);
        let over = |k| shapes(k, AugmentKind::Oversample, None);
        // The split shapes every cell.
        assert!(none("split.seed") && over("split.seed") && syn("data.min_examples"));
        // The filter, per_call and the generator's sampling shape a synthetic cell only.
        assert!(syn("augment.filter.near_duplicate") && syn("augment.per_call"));
        assert!(syn("generator.smollm2.temperature"));
        assert!(!syn("generator.gpt.temperature") && !syn("generator.smollm2x.seed"));
        assert!(!none("augment.filter.near_duplicate") && !over("augment.per_call"));
        // The targets shape every augmented arm.
        assert!(over("augment.targets.below") && !none("augment.targets.below"));
        // What the cell spec holds is compared there.
        assert!(!syn("augment.k") && !syn("augment.generator"));
    }

    #[test]
    fn run_wide_differences_name_the_full_key_and_both_values() {
        let a = settings(&[
            ("augment.filter.near_duplicate", "0.9"),
            ("augment.per_call", "7"),
            ("generator.smollm2.temperature", "0.8"),
            ("split.seed", "42"),
        ]);
        let b = settings(&[
            ("augment.filter.near_duplicate", "0.1"),
            ("augment.per_call", "7"),
            ("generator.smollm2.temperature", "0.1"),
            ("split.seed", "42"),
            ("augment.top_up", "1"),
        ]);
        assert_eq!(
            run_differences(&a, &b, AugmentKind::Synthetic, Some("smollm2")),
            [
                "augment.filter.near_duplicate: 0.9 → 0.1",
                "augment.top_up: — → 1",
                "generator.smollm2.temperature: 0.8 → 0.1",
            ]
        );
        // A baseline cell of the same runs: nothing run-wide shapes it.
        assert!(run_differences(&a, &b, AugmentKind::None, None).is_empty());
    }
}
