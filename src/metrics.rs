//! Classification metrics, with scikit-learn's conventions: macro and weighted averages run over
//! the classes present in the gold labels or the predictions; a ratio with a zero denominator is 0.

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

pub fn evaluate(
    gold: &[usize],
    pred: &[usize],
    classes: &[String],
    top_confusions: usize,
) -> Metrics {
    assert_eq!(gold.len(), pred.len());
    let c = classes.len();
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
    let (mut sum_f1, mut sum_p, mut sum_r, mut wsum, mut present) = (0.0, 0.0, 0.0, 0.0, 0usize);
    for k in 0..c {
        if support[k] == 0 && predicted[k] == 0 {
            continue;
        }
        let p = ratio(tp[k], predicted[k]);
        let r = ratio(tp[k], support[k]);
        let f = f1(p, r);
        present += 1;
        sum_f1 += f;
        sum_p += p;
        sum_r += r;
        wsum += f * support[k] as f64;
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
        if present == 0 {
            0.0
        } else {
            s / present as f64
        }
    };
    Metrics {
        accuracy: ratio(correct, n),
        // Single-label: micro-F1 equals accuracy.
        micro_f1: ratio(correct, n),
        macro_f1: avg(sum_f1),
        macro_precision: avg(sum_p),
        macro_recall: avg(sum_r),
        weighted_f1: if n == 0 { 0.0 } else { wsum / n as f64 },
        n,
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
    }
}
