//! Calibrated scores and a decision threshold, both fitted on the validation split.
//!
//! - **Temperature scaling** (Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern Neural
//!   Networks", ICML 2017): one scalar `T > 0` divides the logits before the softmax; it is
//!   chosen to minimise the negative log-likelihood of the validation labels. The classifiers
//!   here hand out softmax probabilities `p`; since `ln p` equals the logits up to a constant per
//!   row, `softmax(ln p / T)` is exactly the temperature-scaled distribution.
//! - **A global threshold** on the calibrated top score: a sentence gets its top technique only
//!   when that score reaches the threshold, else none. The threshold maximises F1 on validation
//!   where an accepted prediction is a true positive when it is the gold class and a false
//!   positive otherwise, and every validation sentence not correctly accepted is a false
//!   negative (precision = correct accepted / accepted, recall = correct accepted / sentences).

use serde::{Deserialize, Serialize};

/// Probabilities are floored at this before the logarithm (a softmax can underflow to 0).
const FLOOR: f64 = 1e-12;

/// `softmax(ln p / t)` of one probability row.
pub fn scale(p: &[f32], t: f64) -> Vec<f32> {
    let logits: Vec<f64> = p.iter().map(|&x| (x as f64).max(FLOOR).ln() / t).collect();
    let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|l| (l - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|x| (x / z) as f32).collect()
}

/// Mean negative log-likelihood of `gold` under the rows of `probs` scaled by `t`.
pub fn nll(probs: &[Vec<f32>], gold: &[usize], t: f64) -> f64 {
    let n = probs.len().max(1) as f64;
    probs
        .iter()
        .zip(gold)
        .map(|(p, &g)| -(scale(p, t)[g] as f64).max(FLOOR).ln())
        .sum::<f64>()
        / n
}

/// The temperature in [0.05, 20] that minimises [`nll`] on (probs, gold): golden-section search
/// on `ln T` (the NLL is smooth and, in practice, unimodal in `ln T`). 1.0 when there is nothing
/// to fit on.
pub fn fit_temperature(probs: &[Vec<f32>], gold: &[usize]) -> f64 {
    if probs.is_empty() {
        return 1.0;
    }
    let f = |lt: f64| nll(probs, gold, lt.exp());
    let (mut a, mut b) = (0.05f64.ln(), 20f64.ln());
    let r = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - r * (b - a);
    let mut d = a + r * (b - a);
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..60 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - r * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + r * (b - a);
            fd = f(d);
        }
    }
    ((a + b) / 2.0).exp()
}

/// Precision, recall and F1 of accepting top predictions at a threshold (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThresholdScore {
    pub threshold: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Share of sentences that got a technique.
    pub coverage: f64,
}

/// Score accepting each (top score, top is gold) pair whose score is ≥ `threshold`.
pub fn score_at(tops: &[(f32, bool)], threshold: f64) -> ThresholdScore {
    let accepted: Vec<&(f32, bool)> = tops
        .iter()
        .filter(|(s, _)| *s as f64 >= threshold)
        .collect();
    let tp = accepted.iter().filter(|(_, ok)| *ok).count() as f64;
    let n = tops.len() as f64;
    let precision = if accepted.is_empty() {
        0.0
    } else {
        tp / accepted.len() as f64
    };
    let recall = if n == 0.0 { 0.0 } else { tp / n };
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    ThresholdScore {
        threshold,
        precision,
        recall,
        f1,
        coverage: if n == 0.0 {
            0.0
        } else {
            accepted.len() as f64 / n
        },
    }
}

/// The threshold among the observed top scores that maximises F1 on (top score, correct) pairs;
/// ties go to the higher threshold (fewer, surer labels). 0 when `tops` is empty.
pub fn choose_threshold(tops: &[(f32, bool)]) -> ThresholdScore {
    let mut cands: Vec<f32> = tops.iter().map(|t| t.0).collect();
    cands.sort_by(|a, b| b.total_cmp(a));
    cands.dedup();
    let mut best = score_at(tops, 0.0);
    for c in cands {
        let s = score_at(tops, c as f64);
        if s.f1 > best.f1 {
            best = s;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_by_one_changes_nothing_and_a_high_temperature_flattens() {
        let p = [0.7f32, 0.2, 0.1];
        let same = scale(&p, 1.0);
        for (a, b) in same.iter().zip(p) {
            assert!((a - b).abs() < 1e-6);
        }
        let flat = scale(&p, 1e6);
        for x in flat {
            assert!((x - 1.0 / 3.0).abs() < 1e-4);
        }
        // T = 2 takes square roots before normalising.
        let z = 0.7f32.sqrt() + 0.2f32.sqrt() + 0.1f32.sqrt();
        assert!((scale(&p, 2.0)[0] - 0.7f32.sqrt() / z).abs() < 1e-6);
    }

    /// An overconfident model (always 0.99 on its top class, right 60% of the time) is cooled:
    /// the fitted temperature brings the top score to the accuracy.
    #[test]
    fn an_overconfident_model_gets_a_temperature_above_one() {
        let probs: Vec<Vec<f32>> = (0..10).map(|_| vec![0.99, 0.005, 0.005]).collect();
        let gold: Vec<usize> = (0..10).map(|i| if i < 6 { 0 } else { 1 }).collect();
        let t = fit_temperature(&probs, &gold);
        assert!(t > 1.0, "{t}");
        let top = scale(&probs[0], t)[0];
        // The NLL optimum puts 0.6 on class 0 given the two others share the rest equally.
        assert!((top - 0.6).abs() < 0.01, "{top}");
        assert!(nll(&probs, &gold, t) < nll(&probs, &gold, 1.0));
    }

    #[test]
    fn the_threshold_keeps_the_sure_right_answers_and_drops_the_unsure_wrong_ones() {
        let tops = [
            (0.9, true),
            (0.8, true),
            (0.7, true),
            (0.3, false),
            (0.2, false),
        ];
        let s = choose_threshold(&tops);
        assert_eq!(s.threshold, 0.7f32 as f64);
        assert_eq!((s.precision, s.recall), (1.0, 0.6));
        assert_eq!(s.coverage, 0.6);
        let all = score_at(&tops, 0.0);
        assert_eq!((all.precision, all.recall), (0.6, 0.6));
        assert_eq!(choose_threshold(&[]).f1, 0.0);
    }
}
