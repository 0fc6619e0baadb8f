//! The comparison a study reports: every augmented cell paired with its baseline (same
//! classifier settings and seed, `augment = none`), scored on the same test sentences, with the
//! paired bootstrap interval of delta macro-F1 ([`crate::stats`]) over the run's class set L and
//! over the target techniques. Read from a run folder alone (`cells/<cell>/metrics.json` and
//! `predictions.jsonl`, `[study]` of `manifest.resolved.toml`), so `synthcti report` rebuilds it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::manifest::AugmentKind;
use crate::record::CellResult;
use crate::stats::{Bootstrap, Interval, Job, MeanSd, Paired};

/// `[study]` of the manifest, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StudyConfig {
    /// Bootstrap resamples of the test sentences per interval (1 to 1,000,000; default 1,000).
    pub resamples: usize,
    /// Seed of the bootstrap's generator (default 0).
    pub seed: u64,
}

impl Default for StudyConfig {
    fn default() -> Self {
        StudyConfig {
            resamples: 1000,
            seed: 0,
        }
    }
}

/// The most resamples `[study] resamples` accepts.
pub const MAX_RESAMPLES: usize = 1_000_000;

impl StudyConfig {
    /// The checked bootstrap settings, or what is wrong with `resamples` (for the manifest's
    /// error, which adds where the value came from).
    pub fn check(&self) -> std::result::Result<Bootstrap, String> {
        if !(1..=MAX_RESAMPLES).contains(&self.resamples) {
            return Err(format!(
                "{} resamples; use 1 to {MAX_RESAMPLES} (1000 is usual for a 95% interval)",
                self.resamples
            ));
        }
        Ok(Bootstrap {
            resamples: self.resamples,
            seed: self.seed,
        })
    }
}

/// The bootstrap settings of a run folder: `[study]` of its `manifest.resolved.toml`, the
/// defaults when the file or the table is absent (runs written before `[study]` existed).
pub fn bootstrap_of_run(run_dir: &Path) -> Result<Bootstrap> {
    let path = run_dir.join("manifest.resolved.toml");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(StudyConfig::default().check().expect("defaults are valid"));
    };
    #[derive(Deserialize)]
    struct Only {
        #[serde(default)]
        study: StudyConfig,
    }
    let bad = |why: String| Error::data(format!("{}, [study]: {why}", path.display()));
    let table: toml::Table = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let only: Only = table
        .get("study")
        .map(|s| toml::Table::from_iter([("study".to_string(), s.clone())]))
        .unwrap_or_default()
        .try_into()
        .map_err(|e: toml::de::Error| bad(e.to_string()))?;
    only.study.check().map_err(bad)
}

/// One augmented cell against its baseline (same configuration and replicate).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub classifier: String,
    /// The classifier configuration ([`crate::manifest::CellSpec::config_key`]).
    pub config: String,
    pub replicate: usize,
    pub seed: u64,
    pub baseline: String,
    pub augmented: String,
    /// The arm (`synthetic`, `oversample`, `attack-description`).
    pub augment: String,
    /// The arm with its variant's settings ([`crate::manifest::CellSpec::arm_label`]).
    pub arm: String,
    pub test_size: usize,
    pub baseline_macro_f1: f64,
    pub augmented_macro_f1: f64,
    /// Delta macro-F1 over L (`metrics.macro_classes`).
    pub overall: Interval,
    /// Delta macro-F1 over the target techniques in L; `None` without targets in the test split.
    pub targets: Option<Interval>,
    /// Classes in L and in the target set.
    pub classes: usize,
    pub target_classes: usize,
}

/// One (configuration, arm) over its replicates: the replicates' figures as mean ± sd (n) and
/// the pooled interval of the mean delta ([`crate::stats::pooled_deltas_each`]: a bootstrap of
/// the test sentences within each replicate, the replicates' deltas averaged).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pooled {
    pub classifier: String,
    pub config: String,
    pub augment: String,
    pub arm: String,
    /// Replicates with a paired comparison.
    pub n: usize,
    pub baseline_macro_f1: MeanSd,
    pub augmented_macro_f1: MeanSd,
    /// The replicates' own deltas over L.
    pub delta: MeanSd,
    /// The replicates' own deltas over the targets (replicates with targets in the test split).
    pub target_delta: Option<MeanSd>,
    /// Pooled delta over L: the mean of the replicates' deltas, with its interval.
    pub overall: Interval,
    /// Pooled delta over the targets; `None` unless every replicate has targets in L.
    pub targets: Option<Interval>,
}

/// Every comparison of a run and their pooling over replicates.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Study {
    pub comparisons: Vec<Comparison>,
    pub pooled: Vec<Pooled>,
}

/// One line of a cell's `predictions.jsonl`, as the report reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct PredLine {
    /// The example's position in the source file (absent in predictions of an older synthcti).
    #[serde(default)]
    pub row: Option<usize>,
    pub text: String,
    pub gold: String,
    pub pred: String,
}

/// `cells/<cell>/predictions.jsonl` of a run folder, line by line.
pub fn read_predictions(run_dir: &Path, cell: &str) -> Result<Vec<PredLine>> {
    let path = run_dir.join("cells").join(cell).join("predictions.jsonl");
    let text = std::fs::read_to_string(&path).io_ctx(ErrorKind::Data, || {
        format!("cannot read {}", path.display())
    })?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                Error::data(format!(
                    "{}:{}: not a prediction written by synthcti: {e}",
                    path.display(),
                    i + 1
                ))
            })
        })
        .collect()
}

/// One comparison's data as class indices: gold, both predictions, L and the targets.
struct Owned {
    gold: Vec<usize>,
    base: Vec<usize>,
    aug: Vec<usize>,
    labels: Vec<usize>,
    targets: Vec<usize>,
}

impl Owned {
    fn paired(&self) -> Paired<'_> {
        Paired {
            gold: &self.gold,
            baseline: &self.base,
            augmented: &self.aug,
        }
    }
    fn sets(&self) -> Vec<&[usize]> {
        if self.targets.is_empty() {
            vec![&self.labels]
        } else {
            vec![&self.labels, &self.targets]
        }
    }
}

/// Pair every augmented cell with its baseline and bootstrap the deltas. Cells without a
/// baseline, whose test sentences or class set L differ from it, or without a recorded L
/// (records of an older synthcti), are left out; [`markdown`] counts them.
pub fn compare(run_dir: &Path, results: &[CellResult], b: Bootstrap) -> Result<Vec<Comparison>> {
    Ok(study(run_dir, results, b)?.comparisons)
}

/// [`compare`], and the comparisons pooled per (configuration, arm) over replicates.
pub fn study(run_dir: &Path, results: &[CellResult], b: Bootstrap) -> Result<Study> {
    let baselines: BTreeMap<String, &CellResult> = results
        .iter()
        .filter(|r| r.cell.augment == AugmentKind::None)
        .map(|r| (r.cell.pair_key(), r))
        .collect();
    let mut out = Study::default();
    // (config, arm) → the comparisons' positions in `out.comparisons` and their data.
    let mut groups: BTreeMap<(String, String), Vec<(usize, Owned)>> = BTreeMap::new();
    let mut group_order: Vec<(String, String)> = Vec::new();
    for aug in results
        .iter()
        .filter(|r| r.cell.augment != AugmentKind::None)
    {
        let Some(base) = baselines.get(&aug.cell.pair_key()) else {
            continue;
        };
        let (bp, ap) = (
            read_predictions(run_dir, &base.cell.name)?,
            read_predictions(run_dir, &aug.cell.name)?,
        );
        let same = bp.len() == ap.len()
            && bp
                .iter()
                .zip(&ap)
                .all(|(x, y)| x.text == y.text && x.gold == y.gold);
        // Records written before L was recorded (empty) have no class set to average over.
        if !same
            || bp.is_empty()
            || aug.metrics.macro_classes.is_empty()
            || base.metrics.macro_classes != aug.metrics.macro_classes
        {
            continue;
        }
        // One numbering for gold, both predictions and L: L first, then any other class seen.
        let mut index: BTreeMap<&str, usize> = BTreeMap::new();
        for c in aug.metrics.macro_classes.iter().map(String::as_str).chain(
            bp.iter()
                .chain(&ap)
                .flat_map(|p| [p.gold.as_str(), p.pred.as_str()]),
        ) {
            let n = index.len();
            index.entry(c).or_insert(n);
        }
        let idx = |v: &[PredLine], f: fn(&PredLine) -> &str| -> Vec<usize> {
            v.iter().map(|p| index[f(p)]).collect()
        };
        let labels: Vec<usize> = (0..aug.metrics.macro_classes.len()).collect();
        let targets: Vec<usize> = aug
            .target_classes
            .iter()
            .filter_map(|t| index.get(t.as_str()).copied())
            .filter(|&k| k < labels.len())
            .collect();
        let owned = Owned {
            gold: idx(&bp, |p| &p.gold),
            base: idx(&bp, |p| &p.pred),
            aug: idx(&ap, |p| &p.pred),
            labels,
            targets,
        };
        let key = (aug.cell.config_key(), aug.cell.arm_label());
        out.comparisons.push(Comparison {
            classifier: aug.cell.classifier.as_str().into(),
            config: aug.cell.config_key(),
            replicate: aug.cell.replicate,
            seed: aug.cell.seed,
            baseline: base.cell.name.clone(),
            augmented: aug.cell.name.clone(),
            augment: aug.cell.augment.as_str().into(),
            arm: key.1.clone(),
            test_size: owned.gold.len(),
            baseline_macro_f1: base.metrics.macro_f1,
            augmented_macro_f1: aug.metrics.macro_f1,
            // Filled in below, once every comparison's bootstrap has run.
            overall: Interval {
                delta: 0.0,
                lo: 0.0,
                hi: 0.0,
            },
            targets: None,
            classes: owned.labels.len(),
            target_classes: owned.targets.len(),
        });
        if !groups.contains_key(&key) {
            group_order.push(key.clone());
        }
        groups
            .entry(key)
            .or_default()
            .push((out.comparisons.len() - 1, owned));
    }
    // Every comparison's bootstrap (both intervals from the same resamples), in parallel.
    let mut position = Vec::new();
    let mut jobs = Vec::new();
    for members in groups.values() {
        for (i, o) in members {
            position.push(*i);
            jobs.push(Job {
                reps: vec![o.paired()],
                label_sets: vec![o.sets()],
            });
        }
    }
    for (i, ivs) in position
        .into_iter()
        .zip(crate::stats::pooled_deltas_many(&jobs, b))
    {
        out.comparisons[i].overall = ivs[0];
        out.comparisons[i].targets = ivs.get(1).copied();
    }
    // The pooled intervals of the groups of several replicates, in parallel.
    let pooled_jobs: Vec<Job> = group_order
        .iter()
        .filter(|key| groups[*key].len() > 1)
        .map(|key| {
            let members = &groups[key];
            let all_targets = members.iter().all(|(_, o)| !o.targets.is_empty());
            Job {
                reps: members.iter().map(|(_, o)| o.paired()).collect(),
                label_sets: members
                    .iter()
                    .map(|(_, o)| {
                        if all_targets {
                            vec![o.labels.as_slice(), o.targets.as_slice()]
                        } else {
                            vec![o.labels.as_slice()]
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    let mut pooled_ivs = crate::stats::pooled_deltas_many(&pooled_jobs, b).into_iter();
    for key in group_order {
        let members = &groups[&key];
        let cs: Vec<&Comparison> = members.iter().map(|(i, _)| &out.comparisons[*i]).collect();
        let first = cs[0];
        // One replicate: its own interval is the pooled one (same resamples, same seed).
        let (overall, targets) = if members.len() == 1 {
            (first.overall, first.targets)
        } else {
            let ivs = pooled_ivs
                .next()
                .expect("one pooled job per group of replicates");
            (ivs[0], ivs.get(1).copied())
        };
        let f = |g: fn(&Comparison) -> f64| -> MeanSd {
            MeanSd::of(&cs.iter().map(|c| g(c)).collect::<Vec<_>>()).expect("a member")
        };
        let target_deltas: Vec<f64> = cs
            .iter()
            .filter_map(|c| c.targets.map(|t| t.delta))
            .collect();
        out.pooled.push(Pooled {
            classifier: first.classifier.clone(),
            config: key.0.clone(),
            augment: first.augment.clone(),
            arm: key.1.clone(),
            n: cs.len(),
            baseline_macro_f1: f(|c| c.baseline_macro_f1),
            augmented_macro_f1: f(|c| c.augmented_macro_f1),
            delta: f(|c| c.overall.delta),
            target_delta: MeanSd::of(&target_deltas),
            overall,
            targets,
        });
    }
    Ok(out)
}

fn show(iv: &Interval) -> String {
    let s = format!("{:+.4} [{:+.4}, {:+.4}]", iv.delta, iv.lo, iv.hi);
    if iv.excludes_zero() {
        format!("**{s}**")
    } else {
        s
    }
}

fn show_sd(m: &MeanSd) -> String {
    match m.sd {
        Some(sd) => format!("{:+.4} ± {:.4}", m.mean, sd),
        None => format!("{:+.4}", m.mean),
    }
}

/// The `summary.md` section of the comparisons; empty when the run has no augmented cell.
pub fn markdown(results: &[CellResult], study: &Study, b: Bootstrap) -> String {
    let comparisons = &study.comparisons;
    let augmented = results
        .iter()
        .filter(|r| r.cell.augment != AugmentKind::None)
        .count();
    if augmented == 0 {
        return String::new();
    }
    let mut s = String::new();
    let replicated = study.pooled.iter().any(|p| p.n > 1);
    if replicated {
        s.push_str(&format!(
            "\n## Pooled over replicates: augmented − baseline\n\nPer classifier configuration and arm: the replicates' macro-F1 as mean ± sd, their deltas as mean ± sd, and the pooled delta with a 95% interval ({} resamples, seed {}): each resample draws a bootstrap sample of the test sentences inside every replicate and averages the replicates' deltas (replicates as strata); the interval is the 2.5th–97.5th percentile of that mean. It covers which test sentences each replicate's split happened to draw, not the spread between replicates, which the ± beside it shows. **Bold**: the interval excludes 0.\n\n",
            b.resamples, b.seed
        ));
        s.push_str("| classifier | arm | n | baseline macro-F1 | augmented macro-F1 | Δ per replicate (mean ± sd) | pooled Δ macro-F1 [95% CI] | Δ target per replicate | pooled Δ target macro-F1 [95% CI] |\n|---|---|---|---|---|---|---|---|---|\n");
        for p in &study.pooled {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                p.config,
                p.arm,
                p.n,
                p.baseline_macro_f1.show(),
                p.augmented_macro_f1.show(),
                show_sd(&p.delta),
                show(&p.overall),
                p.target_delta
                    .as_ref()
                    .map(show_sd)
                    .unwrap_or_else(|| "—".into()),
                p.targets.as_ref().map(show).unwrap_or_else(|| "—".into()),
            ));
        }
        s.push_str("\nEvery pooled interval: `intervals_pooled.csv`.\n");
    }
    s.push_str(&format!(
        "\n## Paired comparison: augmented − baseline\n\nDelta macro-F1 on the same test sentences with a 95% paired bootstrap interval over test sentences ({} resamples, seed {}; percentile interval); **bold**: the interval excludes 0. Each augmented cell is paired with the `none` cell of the same classifier settings and replicate.\n\n",
        b.resamples, b.seed
    ));
    if comparisons.is_empty() {
        s.push_str("No augmented cell has a baseline with the same classifier settings, replicate, test sentences and recorded class set L (`macro_classes`).\n");
        return s;
    }
    s.push_str("| classifier | replicate | seed | augmented cell | arm | baseline macro-F1 | augmented macro-F1 | Δ macro-F1 [95% CI] | Δ target macro-F1 [95% CI] |\n|---|---|---|---|---|---|---|---|---|\n");
    for c in comparisons {
        s.push_str(&format!(
            "| {} | {} | {} | `{}` | {} | {:.4} | {:.4} | {} | {} |\n",
            c.config,
            c.replicate,
            c.seed,
            c.augmented,
            c.arm,
            c.baseline_macro_f1,
            c.augmented_macro_f1,
            show(&c.overall),
            c.targets.as_ref().map(show).unwrap_or_else(|| "—".into()),
        ));
    }
    let unpaired = augmented - comparisons.len();
    if unpaired > 0 {
        s.push_str(&format!("\n{unpaired} augmented cell(s) have no baseline with the same classifier settings, replicate, test sentences and class set L, and no interval.\n"));
    }
    s.push_str("\nEvery interval, with the class counts it averages over: `intervals.csv`.\n");
    s
}

/// `intervals.csv`: one row per comparison.
pub fn intervals_csv(comparisons: &[Comparison]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "classifier",
        "config",
        "replicate",
        "seed",
        "baseline",
        "augmented",
        "augment",
        "arm",
        "test_size",
        "classes",
        "target_classes",
        "baseline_macro_f1",
        "augmented_macro_f1",
        "delta_macro_f1",
        "delta_lo",
        "delta_hi",
        "delta_target_macro_f1",
        "delta_target_lo",
        "delta_target_hi",
    ])
    .expect("csv");
    let f = |x: f64| format!("{x:.4}");
    for c in comparisons {
        let t = c.targets.map(|t| [f(t.delta), f(t.lo), f(t.hi)]);
        let mut rec = vec![
            c.classifier.clone(),
            c.config.clone(),
            c.replicate.to_string(),
            c.seed.to_string(),
            c.baseline.clone(),
            c.augmented.clone(),
            c.augment.clone(),
            c.arm.clone(),
            c.test_size.to_string(),
            c.classes.to_string(),
            c.target_classes.to_string(),
            f(c.baseline_macro_f1),
            f(c.augmented_macro_f1),
            f(c.overall.delta),
            f(c.overall.lo),
            f(c.overall.hi),
        ];
        rec.extend(t.unwrap_or_default());
        w.write_record(rec).expect("csv");
    }
    String::from_utf8(w.into_inner().expect("csv")).expect("utf8")
}

/// `intervals_pooled.csv`: one row per (configuration, arm) over its replicates.
pub fn pooled_csv(pooled: &[Pooled]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "classifier",
        "config",
        "augment",
        "arm",
        "n",
        "baseline_macro_f1_mean",
        "baseline_macro_f1_sd",
        "augmented_macro_f1_mean",
        "augmented_macro_f1_sd",
        "delta_mean",
        "delta_sd",
        "pooled_delta",
        "pooled_lo",
        "pooled_hi",
        "target_delta_mean",
        "target_delta_sd",
        "pooled_target_delta",
        "pooled_target_lo",
        "pooled_target_hi",
    ])
    .expect("csv");
    let f = |x: f64| format!("{x:.4}");
    let sd = |m: &MeanSd| m.sd.map(f).unwrap_or_default();
    for p in pooled {
        let mut rec = vec![
            p.classifier.clone(),
            p.config.clone(),
            p.augment.clone(),
            p.arm.clone(),
            p.n.to_string(),
            f(p.baseline_macro_f1.mean),
            sd(&p.baseline_macro_f1),
            f(p.augmented_macro_f1.mean),
            sd(&p.augmented_macro_f1),
            f(p.delta.mean),
            sd(&p.delta),
            f(p.overall.delta),
            f(p.overall.lo),
            f(p.overall.hi),
        ];
        match &p.target_delta {
            Some(t) => rec.extend([f(t.mean), sd(t)]),
            None => rec.extend([String::new(), String::new()]),
        }
        match &p.targets {
            Some(t) => rec.extend([f(t.delta), f(t.lo), f(t.hi)]),
            None => rec.extend([String::new(), String::new(), String::new()]),
        }
        w.write_record(rec).expect("csv");
    }
    String::from_utf8(w.into_inner().expect("csv")).expect("utf8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resamples_out_of_range_are_rejected() {
        for bad in [0, MAX_RESAMPLES + 1] {
            let e = StudyConfig {
                resamples: bad,
                seed: 0,
            }
            .check()
            .unwrap_err();
            assert!(e.contains(&format!("{bad} resamples; use 1 to")), "{e}");
        }
        assert_eq!(
            StudyConfig::default().check(),
            Ok(Bootstrap {
                resamples: 1000,
                seed: 0
            })
        );
    }

    #[test]
    fn a_run_folder_without_a_study_table_gets_the_defaults() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            bootstrap_of_run(d.path()).unwrap(),
            StudyConfig::default().check().unwrap()
        );
        std::fs::write(
            d.path().join("manifest.resolved.toml"),
            "[experiment]\nname = \"x\"\n[study]\nresamples = 50\nseed = 9\n",
        )
        .unwrap();
        assert_eq!(
            bootstrap_of_run(d.path()).unwrap(),
            Bootstrap {
                resamples: 50,
                seed: 9
            }
        );
    }
}
