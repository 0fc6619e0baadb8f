//! Classification metrics, with scikit-learn's conventions: a ratio with a zero denominator is 0.
//! Macro and weighted averages run over an explicit class set L ([`evaluate_over`], recorded as
//! [`Metrics::macro_classes`]), so they equal scikit-learn's
//! `f1_score(y, p, labels=L, average="macro")`; [`evaluate`] takes L = the classes present in the
//! gold labels or the predictions (scikit-learn's default without `labels`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassMetrics {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
    pub predicted: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Confusion {
    pub gold: String,
    pub pred: String,
    pub count: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    pub accuracy: f64,
    pub macro_f1: f64,
    pub micro_f1: f64,
    pub weighted_f1: f64,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub n: usize,
    /// The class set L every macro and weighted average runs over (empty in records written
    /// before it was recorded: those averaged over the classes in gold or predictions).
    #[serde(default)]
    pub macro_classes: Vec<String>,
    /// Every class in L, then every other predicted class.
    pub per_class: Vec<ClassMetrics>,
    pub most_confused: Vec<Confusion>,
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

/// Metrics with L = the classes present in `gold` or `pred` (indices into `classes`).
pub fn evaluate(
    gold: &[usize],
    pred: &[usize],
    classes: &[String],
    top_confusions: usize,
) -> Metrics {
    let mut present: Vec<usize> = gold.iter().chain(pred).copied().collect();
    present.sort_unstable();
    present.dedup();
    evaluate_over(gold, pred, classes, &present, top_confusions)
}

/// Metrics whose macro and weighted averages run over exactly the classes `labels` (L, indices
/// into `classes`, sorted and distinct): a class of L neither in the gold labels nor predicted
/// counts as F1 = 0; a predicted class outside L is listed in `per_class` but not averaged.
/// Weighted-F1 weights by support within L. Panics when `gold` and `pred` differ in length.
pub fn evaluate_over(
    gold: &[usize],
    pred: &[usize],
    classes: &[String],
    labels: &[usize],
    top_confusions: usize,
) -> Metrics {
    assert_eq!(gold.len(), pred.len());
    let c = classes.len();
    let in_l = {
        let mut v = vec![false; c];
        labels.iter().for_each(|&k| v[k] = true);
        v
    };
    let mut tp = vec![0usize; c];
    let mut support = vec![0usize; c];
    let mut predicted = vec![0usize; c];
    let mut confusion = std::collections::BTreeMap::new();
    for (&g, &p) in gold.iter().zip(pred) {
        support[g] += 1;
        predicted[p] += 1;
        if g == p {
            tp[g] += 1;
        } else {
            *confusion.entry((g, p)).or_insert(0usize) += 1;
        }
    }
    let mut per_class = Vec::new();
    let (mut sum_f1, mut sum_p, mut sum_r, mut wsum, mut wtotal) = (0.0, 0.0, 0.0, 0.0, 0usize);
    let others = (0..c).filter(|&k| !in_l[k] && (support[k] > 0 || predicted[k] > 0));
    for k in labels.iter().copied().chain(others) {
        let p = ratio(tp[k], predicted[k]);
        let r = ratio(tp[k], support[k]);
        let f = f1(p, r);
        if in_l[k] {
            sum_f1 += f;
            sum_p += p;
            sum_r += r;
            wsum += f * support[k] as f64;
            wtotal += support[k];
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
    let correct: usize = tp.iter().sum();
    let n = gold.len();
    let mut most: Vec<Confusion> = confusion
        .into_iter()
        .map(|((g, p), count)| Confusion {
            gold: classes[g].clone(),
            pred: classes[p].clone(),
            count,
        })
        .collect();
    most.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.gold.cmp(&b.gold))
            .then(a.pred.cmp(&b.pred))
    });
    most.truncate(top_confusions);
    let avg = |s: f64| {
        if labels.is_empty() {
            0.0
        } else {
            s / labels.len() as f64
        }
    };
    Metrics {
        accuracy: ratio(correct, n),
        // Single-label: micro-F1 equals accuracy.
        micro_f1: ratio(correct, n),
        macro_f1: avg(sum_f1),
        macro_precision: avg(sum_p),
        macro_recall: avg(sum_r),
        weighted_f1: if wtotal == 0 {
            0.0
        } else {
            wsum / wtotal as f64
        },
        n,
        macro_classes: labels.iter().map(|&k| classes[k].clone()).collect(),
        per_class,
        most_confused: most,
    }
}

/// Macro-F1 alone, for early stopping.
pub fn macro_f1(gold: &[usize], pred: &[usize], n_classes: usize) -> f64 {
    let names: Vec<String> = (0..n_classes).map(|i| i.to_string()).collect();
    evaluate(gold, pred, &names, 0).macro_f1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    /// Values checked against sklearn.metrics on the same vectors:
    /// y_true = [0,0,1,1,2,2], y_pred = [0,1,1,1,2,0]
    /// accuracy 0.6667, f1_score macro 0.6556, weighted 0.6556, micro 0.6667.
    #[test]
    fn matches_scikit_learn() {
        let g = [0, 0, 1, 1, 2, 2];
        let p = [0, 1, 1, 1, 2, 0];
        let m = evaluate(&g, &p, &names(3), 5);
        assert!((m.accuracy - 4.0 / 6.0).abs() < 1e-9);
        // class0: p=1/2 r=1/2 f=0.5; class1: p=2/3 r=1 f=0.8; class2: p=1 r=1/2 f=2/3
        let want = (0.5 + 0.8 + 2.0 / 3.0) / 3.0;
        assert!((m.macro_f1 - want).abs() < 1e-9, "{}", m.macro_f1);
        assert!((m.weighted_f1 - want).abs() < 1e-9);
        assert_eq!(m.most_confused[0].count, 1);
        assert_eq!(m.per_class.len(), 3);
    }

    #[test]
    fn absent_classes_do_not_count_in_the_macro_average() {
        let m = evaluate(&[0, 1], &[0, 1], &names(5), 3);
        assert_eq!(m.macro_f1, 1.0);
        assert_eq!(m.per_class.len(), 2);
        assert_eq!(m.macro_classes, ["c0", "c1"]);
    }

    /// scikit-learn 1.9.1 on the vectors of `scripts/stats_fixtures.py`:
    /// `f1_score(gold, pred, labels=[0,1,2], average="macro")` = 0.7222222222222222 and with
    /// labels=[0,1,2,3] (3 only predicted) 0.5416666666666666; `average="weighted"` with
    /// labels=[0,1,2] = 0.7291666666666666.
    #[test]
    fn macro_over_an_explicit_class_set_matches_scikit_learn() {
        let gold = [0, 0, 0, 1, 1, 2, 2, 2, 2, 0, 1, 2];
        let pred = [0, 1, 0, 1, 3, 2, 2, 0, 2, 0, 1, 4];
        let m = evaluate_over(&gold, &pred, &names(5), &[0, 1, 2], 3);
        assert!(
            (m.macro_f1 - 0.7222222222222222).abs() < 1e-12,
            "{}",
            m.macro_f1
        );
        assert!(
            (m.weighted_f1 - 0.7291666666666666).abs() < 1e-12,
            "{}",
            m.weighted_f1
        );
        assert_eq!(m.macro_classes, ["c0", "c1", "c2"]);
        // Predicted-only classes 3 and 4 are listed after L, not averaged.
        let listed: Vec<&str> = m.per_class.iter().map(|c| c.class.as_str()).collect();
        assert_eq!(listed, ["c0", "c1", "c2", "c3", "c4"]);
        let m = evaluate_over(&gold, &pred, &names(5), &[0, 1, 2, 3], 3);
        assert!(
            (m.macro_f1 - 0.5416666666666666).abs() < 1e-12,
            "{}",
            m.macro_f1
        );
        // A class of L that never occurs counts as F1 = 0: (1 + 1 + 0) / 3, as scikit-learn.
        let m = evaluate_over(&gold[..4], &gold[..4], &names(5), &[0, 1, 2], 0);
        assert!((m.macro_f1 - 2.0 / 3.0).abs() < 1e-12, "{}", m.macro_f1);
    }
}
