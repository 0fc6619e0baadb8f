//! Which techniques the extra sentences helped: per class, the real train count, the synthetic
//! sentences kept, F1 of the baseline and of the augmented classifier (mean over replicates), and
//! the delta with its paired bootstrap interval over test sentences — the same resampling as
//! [`crate::stats::pooled_deltas`], with the class set {c}: F1 of one class is macro-F1 over a
//! set of one class, so a class's interval pools its replicates exactly as the macro intervals do.
//!
//! Written as `per_class_delta.csv` (one row per augmented configuration and class) and a table
//! in `summary.md`, target techniques first; `per_class.csv` (one row per cell and class) gains
//! the train count, the synthetic sentences kept, whether the class is a target, and on an
//! augmented cell with a baseline that replicate's delta and interval.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::Result;
use crate::record::CellResult;
use crate::results_section::{Group, groups, replicate_key};
use crate::stats::{Bootstrap, Interval, Paired};
use crate::study::{Comparison, PredLine, read_predictions};

/// One class of one augmented configuration, over its replicates.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClassRow {
    pub class: String,
    pub target: bool,
    /// Real train sentences (mean over the replicates' splits).
    pub train_count: f64,
    /// Synthetic sentences kept for this class (mean over the augmented cells).
    pub synthetic_kept: f64,
    /// Test sentences (mean over replicates).
    pub support: f64,
    pub baseline_f1: f64,
    pub augmented_f1: f64,
    /// Augmented − baseline F1, pooled over replicates, with its 95% interval.
    pub delta: Interval,
}

/// The per-class table of one augmented configuration against its baseline.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClassTable {
    /// The augmented configuration's label (see [`crate::results_section::groups`]).
    pub label: String,
    pub classifier: String,
    pub augment: String,
    /// Paired replicates pooled.
    pub replicates: usize,
    /// Targets first (in the run's target order), then the others by train count, then name.
    pub rows: Vec<ClassRow>,
}

/// Real train sentences per class of a cell: its record, or for records of an older synthcti
/// the run's `split/train.jsonl`.
pub fn train_counts(run_dir: &Path, r: &CellResult) -> BTreeMap<String, usize> {
    if !r.train_counts.is_empty() {
        return r.train_counts.clone();
    }
    let mut m = BTreeMap::new();
    if let Ok(text) = std::fs::read_to_string(run_dir.join("split").join("train.jsonl")) {
        for l in text.lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(l)
                && let Some(label) = v["label"].as_str()
            {
                *m.entry(label.to_string()).or_insert(0) += 1;
            }
        }
    }
    m
}

/// Synthetic sentences kept per technique in a cell (`cells/<cell>/synthetic.jsonl`; empty
/// without one).
pub fn synthetic_kept(run_dir: &Path, cell: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    let p = run_dir.join("cells").join(cell).join("synthetic.jsonl");
    if let Ok(text) = std::fs::read_to_string(p) {
        for l in text.lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(l)
                && v["kept"].as_bool() == Some(true)
                && let Some(t) = v["technique"].as_str()
            {
                *m.entry(t.to_string()).or_insert(0) += 1;
            }
        }
    }
    m
}

/// Class indices shared by several replicates' predictions: `classes` first, then any other
/// class seen.
struct Index {
    names: Vec<String>,
    of: BTreeMap<String, usize>,
}

impl Index {
    fn new(classes: &[String]) -> Self {
        let mut ix = Index {
            names: Vec::new(),
            of: BTreeMap::new(),
        };
        for c in classes {
            ix.id(c);
        }
        ix
    }
    fn id(&mut self, c: &str) -> usize {
        if let Some(&i) = self.of.get(c) {
            return i;
        }
        self.names.push(c.to_string());
        self.of.insert(c.to_string(), self.names.len() - 1);
        self.names.len() - 1
    }
}

/// (gold, baseline, augmented) of one comparison as class indices.
type Triple = (Vec<usize>, Vec<usize>, Vec<usize>);

fn triple(ix: &mut Index, bp: &[PredLine], ap: &[PredLine]) -> Triple {
    (
        bp.iter().map(|p| ix.id(&p.gold)).collect(),
        bp.iter().map(|p| ix.id(&p.pred)).collect(),
        ap.iter().map(|p| ix.id(&p.pred)).collect(),
    )
}

/// Per-class deltas of some paired replicates over `classes`, one interval per class (same
/// resamples for every class).
fn class_intervals(
    ix: &Index,
    triples: &[Triple],
    classes: &[String],
    b: Bootstrap,
) -> Vec<Interval> {
    let pairs: Vec<Paired> = triples
        .iter()
        .map(|(g, x, y)| Paired {
            gold: g,
            baseline: x,
            augmented: y,
        })
        .collect();
    let sets: Vec<[usize; 1]> = classes.iter().map(|c| [ix.of[c]]).collect();
    let refs: Vec<&[usize]> = sets.iter().map(|s| s.as_slice()).collect();
    crate::stats::pooled_deltas(&pairs, &refs, b)
}

fn f1_of(r: &CellResult, class: &str) -> f64 {
    r.metrics
        .per_class
        .iter()
        .find(|c| c.class == class)
        .map_or(0.0, |c| c.f1)
}

fn support_of(r: &CellResult, class: &str) -> f64 {
    r.metrics
        .per_class
        .iter()
        .find(|c| c.class == class)
        .map_or(0.0, |c| c.support as f64)
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { s / n as f64 }
}

/// One table per augmented configuration that has paired baselines (`comparisons` from
/// [`crate::study::compare`]); the class set is the union of the replicates' L.
pub fn tables(
    run_dir: &Path,
    results: &[CellResult],
    comparisons: &[Comparison],
    b: Bootstrap,
) -> Result<Vec<ClassTable>> {
    let by_name: BTreeMap<&str, &CellResult> =
        results.iter().map(|r| (r.cell.name.as_str(), r)).collect();
    // One table per group, the groups' bootstraps in parallel (rayon), in the groups' order.
    use rayon::prelude::*;
    let jobs: Vec<(Group, Vec<&Comparison>)> = groups(results)
        .into_iter()
        .map(|g| {
            let comps: Vec<&Comparison> = comparisons
                .iter()
                .filter(|c| {
                    by_name
                        .get(c.augmented.as_str())
                        .is_some_and(|r| replicate_key(&r.cell) == g.key)
                })
                .collect();
            (g, comps)
        })
        .filter(|(_, comps)| !comps.is_empty())
        .collect();
    jobs.par_iter()
        .map(|(g, comps)| table_of(run_dir, g, comps, &by_name, b))
        .collect()
}

fn table_of(
    run_dir: &Path,
    g: &Group,
    comps: &[&Comparison],
    by_name: &BTreeMap<&str, &CellResult>,
    b: Bootstrap,
) -> Result<ClassTable> {
    let bases: Vec<&CellResult> = comps.iter().map(|c| by_name[c.baseline.as_str()]).collect();
    let augs: Vec<&CellResult> = comps
        .iter()
        .map(|c| by_name[c.augmented.as_str()])
        .collect();
    let mut classes: Vec<String> = Vec::new();
    for r in &augs {
        for c in &r.metrics.macro_classes {
            if !classes.contains(c) {
                classes.push(c.clone());
            }
        }
    }
    let mut ix = Index::new(&classes);
    let mut triples = Vec::new();
    for c in comps {
        let (bp, ap) = (
            read_predictions(run_dir, &c.baseline)?,
            read_predictions(run_dir, &c.augmented)?,
        );
        triples.push(triple(&mut ix, &bp, &ap));
    }
    let ivs = class_intervals(&ix, &triples, &classes, b);
    let counts: Vec<BTreeMap<String, usize>> =
        bases.iter().map(|r| train_counts(run_dir, r)).collect();
    let kept: Vec<BTreeMap<String, usize>> = augs
        .iter()
        .map(|r| synthetic_kept(run_dir, &r.cell.name))
        .collect();
    let targets: Vec<String> = augs[0].target_classes.clone();
    let mut rows: Vec<ClassRow> = classes
        .iter()
        .zip(ivs)
        .map(|(c, delta)| ClassRow {
            class: c.clone(),
            target: targets.contains(c),
            train_count: mean(counts.iter().map(|m| *m.get(c).unwrap_or(&0) as f64)),
            synthetic_kept: mean(kept.iter().map(|m| *m.get(c).unwrap_or(&0) as f64)),
            support: mean(bases.iter().map(|r| support_of(r, c))),
            baseline_f1: mean(bases.iter().map(|r| f1_of(r, c))),
            augmented_f1: mean(augs.iter().map(|r| f1_of(r, c))),
            delta,
        })
        .collect();
    let pos = |c: &str| targets.iter().position(|t| t == c).unwrap_or(usize::MAX);
    rows.sort_by(|x, y| {
        (pos(&x.class), x.train_count, &x.class)
            .partial_cmp(&(pos(&y.class), y.train_count, &y.class))
            .expect("counts are finite")
    });
    Ok(ClassTable {
        label: g.label.clone(),
        classifier: g.cells[0].cell.classifier.as_str().into(),
        augment: g.cells[0].cell.augment.as_str().into(),
        replicates: comps.len(),
        rows,
    })
}

/// A count that is a mean over replicates: whole when it is whole.
fn count(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn show(iv: &Interval) -> String {
    let s = format!("{:+.3} [{:+.3}, {:+.3}]", iv.delta, iv.lo, iv.hi);
    if iv.excludes_zero() {
        format!("**{s}**")
    } else {
        s
    }
}

/// Classes listed in `summary.md` per table beyond the targets; the rest are in the CSV.
pub const MD_MAX_CLASSES: usize = 60;

/// The `summary.md` section; empty without tables.
pub fn markdown(tables: &[ClassTable]) -> String {
    if tables.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\n## Per-class F1\n\nPer technique: real train sentences, synthetic sentences kept, F1 of the baseline → the augmented classifier (mean over paired replicates), and the delta with its 95% paired bootstrap interval over test sentences (pooled over replicates as the macro intervals are); **bold**: the interval excludes 0. Target techniques first (marked ●), then the others from the rarest. Every row: `per_class_delta.csv`.\n",
    );
    for t in tables {
        s.push_str(&format!(
            "\n### {} — {} paired replicate(s)\n\n| technique | train (real) | synthetic kept | test | F1 baseline → augmented | Δ F1 [95% CI] |\n|---|---|---|---|---|---|\n",
            t.label, t.replicates
        ));
        let shown: Vec<&ClassRow> = if t.rows.len() <= MD_MAX_CLASSES {
            t.rows.iter().collect()
        } else {
            t.rows.iter().filter(|r| r.target).collect()
        };
        for r in &shown {
            s.push_str(&format!(
                "| {}{} | {} | {} | {} | {:.3} → {:.3} | {} |\n",
                if r.target { "● " } else { "" },
                r.class,
                count(r.train_count),
                count(r.synthetic_kept),
                count(r.support),
                r.baseline_f1,
                r.augmented_f1,
                show(&r.delta)
            ));
        }
        if shown.len() < t.rows.len() {
            s.push_str(&format!(
                "\n{} more classes (over {MD_MAX_CLASSES} in all): `per_class_delta.csv`.\n",
                t.rows.len() - shown.len()
            ));
        }
        let up = t.rows.iter().filter(|r| r.delta.lo > 0.0).count();
        let down = t.rows.iter().filter(|r| r.delta.hi < 0.0).count();
        s.push_str(&format!(
            "\nIntervals above 0: {up} of {} classes; below 0: {down}.\n",
            t.rows.len()
        ));
    }
    s
}

/// `per_class_delta.csv`: one row per table and class.
pub fn delta_csv(tables: &[ClassTable]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "configuration",
        "classifier",
        "augment",
        "replicates",
        "class",
        "target",
        "train_count",
        "synthetic_kept",
        "support",
        "baseline_f1",
        "augmented_f1",
        "delta_f1",
        "delta_lo",
        "delta_hi",
    ])
    .expect("csv");
    let f = |x: f64| format!("{x:.4}");
    for t in tables {
        for r in &t.rows {
            w.write_record([
                t.label.clone(),
                t.classifier.clone(),
                t.augment.clone(),
                t.replicates.to_string(),
                r.class.clone(),
                r.target.to_string(),
                count(r.train_count),
                count(r.synthetic_kept),
                count(r.support),
                f(r.baseline_f1),
                f(r.augmented_f1),
                f(r.delta.delta),
                f(r.delta.lo),
                f(r.delta.hi),
            ])
            .expect("csv");
        }
    }
    String::from_utf8(w.into_inner().expect("csv")).expect("utf8")
}

/// The run's `per_class.csv`: one row per cell and class (the columns of
/// [`crate::report::per_class_csv`]), then `train_count`, `synthetic_kept`, `target`, and for an
/// augmented cell paired with a baseline, that baseline's cell and this replicate's delta F1
/// with its 95% interval.
pub fn per_class_csv(
    run_dir: &Path,
    results: &[CellResult],
    comparisons: &[Comparison],
    b: Bootstrap,
) -> Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "cell",
        "class",
        "precision",
        "recall",
        "f1",
        "support",
        "predicted",
        "train_count",
        "synthetic_kept",
        "target",
        "baseline_cell",
        "delta_f1",
        "delta_lo",
        "delta_hi",
    ])
    .expect("csv");
    // Each paired cell's per-class intervals, the cells' bootstraps in parallel (rayon).
    use rayon::prelude::*;
    let all_deltas: Vec<BTreeMap<String, Interval>> = results
        .par_iter()
        .map(|r| -> Result<BTreeMap<String, Interval>> {
            let Some(c) = comparisons.iter().find(|c| c.augmented == r.cell.name) else {
                return Ok(BTreeMap::new());
            };
            let classes = &r.metrics.macro_classes;
            let mut ix = Index::new(classes);
            let t = triple(
                &mut ix,
                &read_predictions(run_dir, &c.baseline)?,
                &read_predictions(run_dir, &c.augmented)?,
            );
            Ok(classes
                .iter()
                .cloned()
                .zip(class_intervals(&ix, &[t], classes, b))
                .collect())
        })
        .collect::<Result<_>>()?;
    for (r, deltas) in results.iter().zip(all_deltas) {
        let counts = train_counts(run_dir, r);
        let kept = synthetic_kept(run_dir, &r.cell.name);
        let paired = comparisons.iter().find(|c| c.augmented == r.cell.name);
        for c in &r.metrics.per_class {
            let d = deltas.get(&c.class);
            let f = |x: f64| format!("{x:.4}");
            w.write_record([
                r.cell.name.clone(),
                c.class.clone(),
                f(c.precision),
                f(c.recall),
                f(c.f1),
                c.support.to_string(),
                c.predicted.to_string(),
                counts.get(&c.class).copied().unwrap_or(0).to_string(),
                kept.get(&c.class).copied().unwrap_or(0).to_string(),
                r.target_classes.contains(&c.class).to_string(),
                paired.map(|p| p.baseline.clone()).unwrap_or_default(),
                d.map(|d| f(d.delta)).unwrap_or_default(),
                d.map(|d| f(d.lo)).unwrap_or_default(),
                d.map(|d| f(d.hi)).unwrap_or_default(),
            ])
            .expect("csv");
        }
    }
    Ok(String::from_utf8(w.into_inner().expect("csv")).expect("utf8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-class interval is the macro interval over a one-class set: identical
    /// predictions give [0, 0], the hand-computed case of `stats` gives class 1 a delta of 1.
    #[test]
    fn class_intervals_are_one_class_macro_intervals() {
        let classes = vec!["a".to_string(), "b".to_string()];
        let ix = Index::new(&classes);
        let b = Bootstrap {
            resamples: 200,
            seed: 1,
        };
        let same = (vec![0, 1, 1], vec![0, 0, 1], vec![0, 0, 1]);
        let ivs = class_intervals(&ix, &[same], &classes, b);
        assert!(
            ivs.iter().all(|i| *i
                == Interval {
                    delta: 0.0,
                    lo: 0.0,
                    hi: 0.0
                }),
            "{ivs:?}"
        );
        let gain = (vec![0, 1], vec![0, 0], vec![0, 1]);
        let ivs = class_intervals(&ix, std::slice::from_ref(&gain), &classes, b);
        let want = crate::stats::pooled_deltas(
            &[Paired {
                gold: &gain.0,
                baseline: &gain.1,
                augmented: &gain.2,
            }],
            &[&[0], &[1]],
            b,
        );
        assert_eq!(ivs, want);
        assert!((ivs[1].delta - 1.0).abs() < 1e-12);
        // Class a: baseline F1 2/3 (1 tp, 2 predicted), augmented 1.
        assert!((ivs[0].delta - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn counts_print_whole_when_whole() {
        assert_eq!(count(3.0), "3");
        assert_eq!(count(2.5), "2.5");
    }
}
