//! Multi-label classification with negatives (`data.multi_label = "keep"`, e.g. `tram-multi`:
//! TRAM's sentences, most with no technique, some with several).
//!
//! Two heads (`data.multi_label_head`): a `none` class with a softmax (below), or independent
//! sigmoids trained with binary cross-entropy on multi-hot targets ([`crate::ml::sigmoid`],
//! `fasttext`, `encoder-frozen`, `linear`). Either way a sentence gets every technique whose score
//! reaches one global threshold chosen on validation ([`choose_threshold`]), and the metrics
//! below are the same.
//!
//! **The none-class head: a `none` class and a threshold on the softmax.** Every classifier kind trains as it
//! does for one label, over the techniques plus `none` (the negatives): a row with labels
//! {A, B} becomes the pairs (text, A) and (text, B), which in expectation is a softmax trained
//! on the target distribution ½A + ½B — what fastText's own softmax does with several labels
//! (it draws one of a line's labels per update). At prediction a sentence gets **every technique
//! whose probability reaches one global threshold**, so 0, 1 or several; `none` is never
//! output. The threshold is the observed score that maximises micro-F1 on the validation split
//! ([`choose_threshold`]); test is never looked at. This keeps one trainer per kind (fastText,
//! frozen MiniLM, `linear`, fine-tuning) instead of a second, sigmoid, head for each; the cost
//! is that probabilities of co-occurring techniques share mass (a two-label sentence scores ≈
//! ½ each), which the validation threshold absorbs.
//!
//! **Metrics** (scikit-learn conventions, a ratio with a zero denominator is 0, on the test
//! split at the validation threshold): micro-F1 over all (sentence, technique) decisions;
//! macro-F1 over the techniques with a test sentence; samples-F1, the mean per-sentence F1 where a
//! sentence with no gold and no predicted technique scores 1 (scikit-learn's
//! `f1_score(average="samples", zero_division=1.0)`: with 80% negatives the default 0 would
//! punish every correct "nothing here"); subset accuracy; and **per-document F1**: the
//! techniques predicted for a report (the union over its test sentences) against its annotated
//! union, micro-averaged over (report, technique) pairs (`document_f1`) and as the mean of the
//! reports' own F1 (`document_mean_f1`), as recent TRAM work reports it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::calibrate::ThresholdScore;
use crate::data::Dataset;
use crate::data::NEGATIVE_LABEL as NONE;
use crate::metrics::{ClassMetrics, Metrics};

/// How the threshold is chosen with a `none` class, as the records say it.
pub const THRESHOLD_RULE: &str = "one global threshold on the softmax score of each technique, maximising micro-F1 on validation";

/// How the threshold is chosen with sigmoid heads, as the records say it.
pub const SIGMOID_THRESHOLD_RULE: &str = "one global threshold on the sigmoid score of each technique (independent outputs, binary cross-entropy), maximising micro-F1 on validation";

/// The records' threshold rule of a head.
pub fn threshold_rule(head: crate::data::config::MultiLabelHead) -> &'static str {
    match head {
        crate::data::config::MultiLabelHead::NoneClass => THRESHOLD_RULE,
        crate::data::config::MultiLabelHead::Sigmoid => SIGMOID_THRESHOLD_RULE,
    }
}

/// The multi-label figures of a cell (`metrics.json` → `multi_label`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MultiLabelMetrics {
    /// [`THRESHOLD_RULE`].
    pub rule: String,
    /// Micro precision, recall and F1 on validation at the chosen threshold (`coverage`: share
    /// of sentences that got a technique).
    pub validation: ThresholdScore,
    /// The same on test.
    pub test: ThresholdScore,
    pub micro_f1: f64,
    pub macro_f1: f64,
    pub samples_f1: f64,
    pub subset_accuracy: f64,
    /// Reports in the test split.
    pub documents: usize,
    /// Per-document F1, micro over (report, technique) pairs.
    pub document_f1: f64,
    pub document_precision: f64,
    pub document_recall: f64,
    /// The mean over reports of each report's F1 (a report with no gold and no predicted
    /// technique scores 1).
    pub document_mean_f1: f64,
    /// Test sentences with no gold technique.
    pub negatives: usize,
}

/// The index of `none` among `classes`, when there is one.
pub fn none_index(classes: &[String]) -> Option<usize> {
    classes.iter().position(|c| c == NONE)
}

/// Each row's gold technique indices (without `none`), sorted.
pub fn gold_sets(ds: &Dataset, idx: &[usize], index: &BTreeMap<String, usize>) -> Vec<Vec<usize>> {
    idx.iter()
        .map(|&i| {
            let mut v: Vec<usize> = ds.examples[i]
                .gold()
                .into_iter()
                .filter(|l| *l != NONE)
                .map(|l| index[l])
                .collect();
            v.sort_unstable();
            v
        })
        .collect()
}

/// The techniques of one probability row at `threshold` (never `none`), sorted.
pub fn decide(row: &[f32], threshold: f64, none: Option<usize>) -> Vec<usize> {
    row.iter()
        .enumerate()
        .filter(|&(k, &p)| Some(k) != none && p as f64 >= threshold)
        .map(|(k, _)| k)
        .collect()
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn f1(p: f64, r: f64) -> f64 {
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

/// Micro precision, recall, F1 and coverage of predicted sets against gold sets.
pub fn micro(gold: &[Vec<usize>], pred: &[Vec<usize>], threshold: f64) -> ThresholdScore {
    let (mut tp, mut np, mut ng, mut covered) = (0, 0, 0, 0);
    for (g, p) in gold.iter().zip(pred) {
        tp += p.iter().filter(|k| g.contains(k)).count();
        np += p.len();
        ng += g.len();
        covered += usize::from(!p.is_empty());
    }
    let (precision, recall) = (ratio(tp, np), ratio(tp, ng));
    ThresholdScore {
        threshold,
        precision,
        recall,
        f1: f1(precision, recall),
        coverage: ratio(covered, gold.len()),
    }
}

/// The threshold among the observed technique scores of `probs` that maximises micro-F1 against
/// `gold` (ties: the higher threshold, fewer and surer labels); with its figures. One sort of
/// all (row, technique) scores, then a sweep: O(n log n) in rows × classes.
pub fn choose_threshold(
    probs: &[Vec<f32>],
    gold: &[Vec<usize>],
    none: Option<usize>,
) -> ThresholdScore {
    let n_gold: usize = gold.iter().map(Vec::len).sum();
    let mut scores: Vec<(f32, bool)> = Vec::new();
    for (row, g) in probs.iter().zip(gold) {
        for (k, &p) in row.iter().enumerate() {
            if Some(k) != none {
                scores.push((p, g.contains(&k)));
            }
        }
    }
    scores.sort_by(|a, b| b.0.total_cmp(&a.0));
    // Above the highest score nothing is predicted: F1 0.
    let mut best = (
        0.0f64,
        f64::from(scores.first().map_or(1.0, |s| s.0)) + 1e-6,
    );
    let mut tp = 0usize;
    let mut i = 0;
    while i < scores.len() {
        let t = scores[i].0;
        while i < scores.len() && scores[i].0 == t {
            tp += usize::from(scores[i].1);
            i += 1;
        }
        let f = f1(ratio(tp, i), ratio(tp, n_gold));
        if f > best.0 {
            best = (f, f64::from(t));
        }
    }
    let pred: Vec<Vec<usize>> = probs.iter().map(|r| decide(r, best.1, none)).collect();
    micro(gold, &pred, best.1)
}

/// Every figure of predicted sets against gold sets on one split. `groups` names each row's
/// report (a row without one is a report of its own); `classes` are the model's, `none`
/// included. The returned [`Metrics`] holds the per-technique table (classes with a test
/// sentence first, then those only predicted), micro- and macro-F1, and subset accuracy as
/// `accuracy`; `most_confused` is empty (no single confusion in a multi-label task).
pub fn evaluate(
    gold: &[Vec<usize>],
    pred: &[Vec<usize>],
    groups: &[Option<&str>],
    classes: &[String],
    none: Option<usize>,
    validation: ThresholdScore,
) -> (Metrics, MultiLabelMetrics) {
    let c = classes.len();
    let (mut tp, mut support, mut predicted) = (vec![0usize; c], vec![0usize; c], vec![0usize; c]);
    let (mut exact, mut samples) = (0usize, 0.0f64);
    for (g, p) in gold.iter().zip(pred) {
        for &k in g {
            support[k] += 1;
        }
        for &k in p {
            predicted[k] += 1;
            if g.contains(&k) {
                tp[k] += 1;
            }
        }
        exact += usize::from(g == p);
        samples += set_f1(g, p);
    }
    let labels: Vec<usize> = (0..c)
        .filter(|&k| support[k] > 0 && Some(k) != none)
        .collect();
    let others = (0..c).filter(|&k| support[k] == 0 && predicted[k] > 0);
    let mut per_class = Vec::new();
    let (mut sf, mut sp, mut sr, mut wf) = (0.0, 0.0, 0.0, 0.0);
    for k in labels.iter().copied().chain(others) {
        let (p, r) = (ratio(tp[k], predicted[k]), ratio(tp[k], support[k]));
        let f = f1(p, r);
        if support[k] > 0 {
            sf += f;
            sp += p;
            sr += r;
            wf += f * support[k] as f64;
        }
        per_class.push(ClassMetrics {
            class: classes[k].clone(),
            precision: p,
            recall: r,
            f1: f,
            support: support[k],
            predicted: predicted[k],
        });
    }
    let nl = labels.len().max(1) as f64;
    let total_support: usize = labels.iter().map(|&k| support[k]).sum();
    let threshold = validation.threshold;
    let test = micro(gold, pred, threshold);
    let n = gold.len();
    let metrics = Metrics {
        accuracy: ratio(exact, n),
        macro_f1: sf / nl,
        micro_f1: test.f1,
        weighted_f1: if total_support == 0 {
            0.0
        } else {
            wf / total_support as f64
        },
        macro_precision: sp / nl,
        macro_recall: sr / nl,
        n,
        macro_classes: labels.iter().map(|&k| classes[k].clone()).collect(),
        per_class,
        most_confused: Vec::new(),
    };
    // Reports: the union of their sentences' sets.
    let mut docs: BTreeMap<String, (BTreeSet<usize>, BTreeSet<usize>)> = BTreeMap::new();
    for (i, ((g, p), grp)) in gold.iter().zip(pred).zip(groups).enumerate() {
        let key = grp.map_or_else(|| format!("\u{0}row {i}"), str::to_string);
        let d = docs.entry(key).or_default();
        d.0.extend(g);
        d.1.extend(p);
    }
    let dg: Vec<Vec<usize>> = docs
        .values()
        .map(|d| d.0.iter().copied().collect())
        .collect();
    let dp: Vec<Vec<usize>> = docs
        .values()
        .map(|d| d.1.iter().copied().collect())
        .collect();
    let doc = micro(&dg, &dp, threshold);
    let doc_mean =
        dg.iter().zip(&dp).map(|(g, p)| set_f1(g, p)).sum::<f64>() / dg.len().max(1) as f64;
    let ml = MultiLabelMetrics {
        rule: THRESHOLD_RULE.to_string(),
        validation,
        test,
        micro_f1: test.f1,
        macro_f1: metrics.macro_f1,
        samples_f1: samples / n.max(1) as f64,
        subset_accuracy: metrics.accuracy,
        documents: docs.len(),
        document_f1: doc.f1,
        document_precision: doc.precision,
        document_recall: doc.recall,
        document_mean_f1: doc_mean,
        negatives: gold.iter().filter(|g| g.is_empty()).count(),
    };
    (metrics, ml)
}

/// The `summary.csv` columns of multi-label cells, appended after the fixed ones when any cell
/// of the run has them (none otherwise).
pub fn summary_columns(results: &[crate::record::CellResult]) -> Vec<&'static str> {
    if results.iter().any(|r| r.multi_label.is_some()) {
        vec![
            "threshold",
            "samples_f1",
            "document_f1",
            "document_mean_f1",
            "subset_accuracy",
        ]
    } else {
        Vec::new()
    }
}

/// A cell's values of [`summary_columns`] (empty strings on a single-label cell).
pub fn summary_values(r: &crate::record::CellResult, columns: &[&str]) -> Vec<String> {
    columns
        .iter()
        .map(|c| {
            let Some(m) = &r.multi_label else {
                return String::new();
            };
            let v = match *c {
                "threshold" => m.validation.threshold,
                "samples_f1" => m.samples_f1,
                "document_f1" => m.document_f1,
                "document_mean_f1" => m.document_mean_f1,
                _ => m.subset_accuracy,
            };
            format!("{v:.4}")
        })
        .collect()
}

/// The `summary.md` section of multi-label cells (empty when there is none).
pub fn summary_md(results: &[crate::record::CellResult]) -> String {
    let cells: Vec<_> = results
        .iter()
        .filter_map(|r| r.multi_label.as_ref().map(|m| (r, m)))
        .collect();
    let Some((_, first)) = cells.first() else {
        return String::new();
    };
    let mut s = format!(
        "\n## Multi-label (test, at the validation threshold)\n\nThreshold: {}. Samples-F1 counts a sentence with no gold and no predicted technique as 1; per-document F1 compares a report's predicted techniques (the union over its {} test reports' sentences) with its annotated ones, micro over (report, technique) pairs, and as the mean of the reports' F1. {} of {} test sentences have no technique.\n\n| cell | threshold | micro-F1 | macro-F1 | samples-F1 | document F1 | document mean F1 | micro P / R | sentences given a technique | validation micro-F1 |\n|---|---|---|---|---|---|---|---|---|---|\n",
        first.rule, first.documents, first.negatives, cells[0].0.test_size
    );
    for (r, m) in cells {
        s.push_str(&format!(
            "| {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} / {:.4} | {:.1}% | {:.4} |\n",
            r.cell.name,
            m.validation.threshold,
            m.micro_f1,
            m.macro_f1,
            m.samples_f1,
            m.document_f1,
            m.document_mean_f1,
            m.test.precision,
            m.test.recall,
            100.0 * m.test.coverage,
            m.validation.f1
        ));
    }
    s
}

/// F1 of one predicted set against its gold set; 1 when both are empty.
fn set_f1(g: &[usize], p: &[usize]) -> f64 {
    if g.is_empty() && p.is_empty() {
        return 1.0;
    }
    let tp = p.iter().filter(|k| g.contains(k)).count();
    2.0 * tp as f64 / (g.len() + p.len()) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        let mut v: Vec<String> = (0..n - 1).map(|i| format!("T{i}")).collect();
        v.push(NONE.to_string());
        v
    }

    /// scikit-learn 1.x on the same indicator matrices (columns T0, T1, T2):
    /// Y = [[1,0,0],[1,1,0],[0,0,0],[0,0,1],[0,0,0]], P = [[1,0,0],[1,0,0],[0,1,0],[0,0,0],[0,0,0]]
    /// f1_score micro = 0.5714285714285714 (tp 2, pred 3, gold 4), macro over labels with
    /// support [0,1,2] = (1 + 0 + 0) / 3 = 0.3333333333333333, samples with
    /// zero_division=1.0 = (1 + 2/3 + 0 + 0 + 1) / 5 = 0.5333333333333333, subset accuracy 0.4.
    #[test]
    fn figures_match_scikit_learn() {
        let gold = vec![vec![0], vec![0, 1], vec![], vec![2], vec![]];
        let pred = vec![vec![0], vec![0], vec![1], vec![], vec![]];
        let groups = [Some("a"), Some("a"), Some("b"), Some("b"), None];
        let v = micro(&gold, &pred, 0.5);
        let (m, ml) = evaluate(&gold, &pred, &groups, &names(4), Some(3), v);
        assert!((ml.micro_f1 - 4.0 / 7.0).abs() < 1e-12);
        assert!((m.macro_f1 - 1.0 / 3.0).abs() < 1e-12, "{}", m.macro_f1);
        assert!((ml.samples_f1 - (1.0 + 2.0 / 3.0 + 1.0) / 5.0).abs() < 1e-12);
        assert!((ml.subset_accuracy - 0.4).abs() < 1e-12);
        assert_eq!(m.macro_classes, ["T0", "T1", "T2"]);
        // Reports: a = gold {0,1} pred {0}; b = gold {2} pred {1}; the unnamed row: both empty.
        assert_eq!(ml.documents, 3);
        assert!((ml.document_precision - 0.5).abs() < 1e-12);
        assert!((ml.document_recall - 1.0 / 3.0).abs() < 1e-12);
        assert!((ml.document_mean_f1 - (2.0 / 3.0 + 0.0 + 1.0) / 3.0).abs() < 1e-12);
        assert_eq!(ml.negatives, 2);
    }

    #[test]
    fn the_threshold_maximises_validation_micro_f1_and_never_outputs_none() {
        // Row 0: T0 (0.6) gold T0; row 1: T0 0.45 and T1 0.4 gold both; row 2: none 0.9, T1 0.05.
        let probs = vec![
            vec![0.6, 0.1, 0.3],
            vec![0.45, 0.4, 0.15],
            vec![0.05, 0.05, 0.9],
        ];
        let gold = vec![vec![0], vec![0, 1], vec![]];
        let t = choose_threshold(&probs, &gold, Some(2));
        // At 0.4: predicted T0, T0, T1 → all three gold found, precision 1.
        assert!((t.threshold - 0.4).abs() < 1e-6, "{t:?}");
        assert_eq!((t.precision, t.recall, t.f1), (1.0, 1.0, 1.0));
        assert!((t.coverage - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(decide(&probs[2], 0.0, Some(2)), vec![0, 1]);
    }
}
