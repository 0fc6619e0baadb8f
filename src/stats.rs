//! Statistics of a comparison: macro-F1 over an explicit class set, and the paired bootstrap of
//! the difference in macro-F1 between two classifiers scored on the same test sentences.
//!
//! **Macro-F1 over L.** [`macro_f1_over`] averages the per-class F1 of exactly the classes in
//! `labels` (a class of L that is neither in the gold labels nor predicted counts as F1 = 0), which
//! is scikit-learn's `f1_score(y, p, labels=L, average="macro", zero_division=0)`.
//!
//! **Paired bootstrap** (Efron & Tibshirani 1993, ch. 16; for NLP, Koehn 2004 and Berg-Kirkpatrick
//! et al. 2012): the test sentences are resampled with replacement `resamples` times; each
//! resample scores *both* classifiers on the same drawn sentences, so the variation that the two
//! share (which sentences happen to be in the test split) cancels in the difference. The interval
//! is the percentile interval (2.5th and 97.5th percentile of the resampled differences, linear
//! interpolation between order statistics as numpy's default). Identical predictions give the
//! interval [0, 0].
//!
//! **The class set of a resample.** A resample is scored as a test set of its own: its macro
//! average runs over L less the classes of L whose test sentences were all left out of it
//! (`L_b`; a class of L with no test sentence at all stays, as in the point estimate). Scoring an
//! undrawn class as F1 = 0 for both classifiers instead pulls every resampled delta from a gain
//! on a rare class towards 0, so the interval sits below the point estimate: on CTI-to-MITRE
//! (36 target techniques with 1–3 test sentences) the pooled interval of the
//! `attack-description` arm was [+0.0545, +0.0844] around a point of +0.0861. With `L_b` the
//! point estimate is unchanged (every sentence is drawn once). A resample that draws no class of
//! a set at all (likely only for a set of a few classes with one test sentence each) scores 0
//! for both classifiers, a delta of 0.
//!
//! **Pooled over replicates** ([`pooled_delta`]): a replicate has its own split, generation and
//! training seed, so its test sentences differ. Each resample draws a bootstrap sample inside every
//! replicate independently (a stratified bootstrap with replicates as strata) and takes the mean of
//! the replicates' differences; the interval is the percentile interval of that mean. It covers
//! the test-sentence sampling within each replicate; the spread between replicates' point
//! estimates is reported beside it as mean ± sd (n).

use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};

/// How a bootstrap is drawn: `[study] resamples` and `seed` of the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bootstrap {
    /// Resamples of the test sentences (≥ 1; 1,000 by default).
    pub resamples: usize,
    /// Seed of the resampling generator (Xoshiro256++): the same seed gives the same interval.
    pub seed: u64,
}

/// A difference (augmented − baseline) with its 95% percentile interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The difference on the test sentences as they are (not resampled).
    pub delta: f64,
    /// 2.5th percentile of the resampled differences.
    pub lo: f64,
    /// 97.5th percentile of the resampled differences.
    pub hi: f64,
}

impl Interval {
    /// Whether the interval lies wholly above or wholly below zero.
    pub fn excludes_zero(&self) -> bool {
        self.lo > 0.0 || self.hi < 0.0
    }
}

/// One comparison: gold labels and both classifiers' predictions on the same test sentences,
/// as class indices (any numbering, shared by the three slices and `labels`).
#[derive(Debug, Clone, Copy)]
pub struct Paired<'a> {
    pub gold: &'a [usize],
    pub baseline: &'a [usize],
    pub augmented: &'a [usize],
}

impl Paired<'_> {
    fn check(&self) {
        assert_eq!(self.gold.len(), self.baseline.len(), "baseline length");
        assert_eq!(self.gold.len(), self.augmented.len(), "augmented length");
    }
}

/// Per-class counts, indexed by class index.
struct Counts {
    tp: Vec<f64>,
    support: Vec<f64>,
    predicted: Vec<f64>,
}

impl Counts {
    fn new(n_classes: usize) -> Self {
        Counts {
            tp: vec![0.0; n_classes],
            support: vec![0.0; n_classes],
            predicted: vec![0.0; n_classes],
        }
    }
    fn add(&mut self, g: usize, p: usize, weight: f64) {
        self.support[g] += weight;
        self.predicted[p] += weight;
        if g == p {
            self.tp[g] += weight;
        }
    }
    /// F1 = 2·tp / (support + predicted), 0 when both are 0 (scikit-learn's `zero_division=0`).
    fn macro_f1(&self, labels: &[usize]) -> f64 {
        if labels.is_empty() {
            return 0.0;
        }
        let sum: f64 = labels
            .iter()
            .map(|&k| {
                let d = self.support[k] + self.predicted[k];
                if d == 0.0 { 0.0 } else { 2.0 * self.tp[k] / d }
            })
            .sum();
        sum / labels.len() as f64
    }
}

fn n_classes(p: &Paired, labels: &[usize]) -> usize {
    p.gold
        .iter()
        .chain(p.baseline)
        .chain(p.augmented)
        .chain(labels)
        .max()
        .map_or(0, |m| m + 1)
}

/// Macro-F1 over exactly the classes in `labels` (L): scikit-learn's
/// `f1_score(gold, pred, labels=L, average="macro", zero_division=0)`. Empty L gives 0.
///
/// Panics when `gold` and `pred` differ in length.
pub fn macro_f1_over(gold: &[usize], pred: &[usize], labels: &[usize]) -> f64 {
    let p = Paired {
        gold,
        baseline: pred,
        augmented: pred,
    };
    p.check();
    let mut c = Counts::new(n_classes(&p, labels));
    for (&g, &q) in gold.iter().zip(pred) {
        c.add(g, q, 1.0);
    }
    c.macro_f1(labels)
}

/// Percentile of sorted values with linear interpolation between order statistics (numpy's
/// default `method="linear"`); `q` in [0, 1].
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos - pos.floor());
    match sorted.get(i + 1) {
        Some(next) if frac > 0.0 => sorted[i] + frac * (next - sorted[i]),
        _ => sorted[i],
    }
}

fn interval(delta: f64, mut draws: Vec<f64>) -> Interval {
    draws.sort_by(f64::total_cmp);
    Interval {
        delta,
        lo: percentile(&draws, 0.025),
        hi: percentile(&draws, 0.975),
    }
}

/// Delta macro-F1 over `labels` of one comparison: augmented − baseline, each resample drawing
/// the indices of a sample of the test sentences once for both; at least one resample.
/// Panics when the three slices differ in length, or on an empty test set.
pub fn paired_delta(p: Paired, labels: &[usize], b: Bootstrap) -> Interval {
    pooled_deltas(&[p], &[labels], b)[0]
}

/// Mean over replicates of delta macro-F1 over `labels`, with the stratified percentile interval
/// described in the module docs. With one replicate this is [`paired_delta`].
pub fn pooled_delta(reps: &[Paired], labels: &[usize], b: Bootstrap) -> Interval {
    pooled_deltas(reps, &[labels], b)[0]
}

/// [`pooled_delta`] for several class sets (e.g. L and the targets) from the same resamples:
/// one interval per set, in order; the first set's interval equals [`pooled_delta`]'s.
/// Panics on no replicates, a replicate without test sentences, slices of unequal length, or
/// `b.resamples == 0` (the manifest check rejects it first).
pub fn pooled_deltas(reps: &[Paired], label_sets: &[&[usize]], b: Bootstrap) -> Vec<Interval> {
    let each: Vec<Vec<&[usize]>> = reps.iter().map(|_| label_sets.to_vec()).collect();
    pooled_deltas_each(reps, &each, b)
}

/// [`pooled_deltas`] where each replicate has its own class sets (`label_sets[r][s]`: set `s` of
/// replicate `r`, in that replicate's numbering), as replicates with their own splits may have
/// different classes with a test sentence: each replicate's delta averages over its own L, and
/// the pooled point and draws are the mean of those deltas. Every replicate gives the same number
/// of sets. Panics as [`pooled_deltas`] does, and when the replicates give different numbers of
/// sets.
pub fn pooled_deltas_each(
    reps: &[Paired],
    label_sets: &[Vec<&[usize]>],
    b: Bootstrap,
) -> Vec<Interval> {
    assert!(!reps.is_empty(), "no replicates");
    assert!(b.resamples > 0, "no resamples");
    assert_eq!(
        reps.len(),
        label_sets.len(),
        "one list of class sets per replicate"
    );
    let sets = label_sets[0].len();
    assert!(
        label_sets.iter().all(|l| l.len() == sets),
        "the same number of class sets in every replicate"
    );
    let n_cls = reps
        .iter()
        .zip(label_sets)
        .flat_map(|(p, ls)| {
            p.check();
            assert!(!p.gold.is_empty(), "a replicate without test sentences");
            ls.iter().map(move |l| n_classes(p, l))
        })
        .max()
        .unwrap_or(0);
    let kinds: Vec<Kinds> = reps.iter().map(Kinds::of).collect();
    // Classes with a test sentence in each replicate: the ones a resample can leave out.
    let tested: Vec<Vec<bool>> = reps
        .iter()
        .map(|p| {
            let mut t = vec![false; n_cls];
            p.gold.iter().for_each(|&g| t[g] = true);
            t
        })
        .collect();
    let mut counts = PairCounts::new(n_cls);
    let k = reps.len() as f64;
    let mut point = vec![0.0; sets];
    for (((kd, p), ls), t) in kinds.iter().zip(reps).zip(label_sets).zip(&tested) {
        // The sentences as they are: every one drawn once.
        let mut w = vec![0; kd.kinds.len()];
        for &i in &kd.of {
            w[i as usize] += 1;
        }
        counts.fill(&kd.kinds, &w);
        counts.add_deltas(ls, t, &mut point);
        debug_assert_eq!(w.iter().sum::<u32>() as usize, p.gold.len());
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(b.seed);
    let mut draws = vec![Vec::with_capacity(b.resamples); sets];
    let mut sum = vec![0.0; sets];
    let mut w: Vec<u32> = Vec::new();
    for _ in 0..b.resamples {
        sum.iter_mut().for_each(|s| *s = 0.0);
        for ((kd, ls), t) in kinds.iter().zip(label_sets).zip(&tested) {
            // How often each kind of sentence is drawn; the draws are the same calls, in the same
            // order, as one `gen_range` per drawn sentence (so a seed gives the same intervals).
            w.clear();
            w.resize(kd.kinds.len(), 0);
            let n = kd.of.len();
            for _ in 0..n {
                w[kd.of[rng.gen_range(0..n)] as usize] += 1;
            }
            counts.fill(&kd.kinds, &w);
            counts.add_deltas(ls, t, &mut sum);
        }
        for (d, s) in draws.iter_mut().zip(&sum) {
            d.push(s / k);
        }
    }
    point
        .into_iter()
        .zip(draws)
        .map(|(pt, d)| interval(pt / k, d))
        .collect()
}

/// One bootstrap job of [`pooled_deltas_many`]: the replicates and their class sets, as
/// [`pooled_deltas_each`] takes them.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    pub reps: Vec<Paired<'a>>,
    pub label_sets: Vec<Vec<&'a [usize]>>,
}

/// [`pooled_deltas_each`] of every job, in parallel across jobs (rayon); each job draws from its
/// own generator seeded with `b.seed`, so the intervals are those of calling
/// [`pooled_deltas_each`] on each job in turn, whatever the number of threads.
pub fn pooled_deltas_many(jobs: &[Job], b: Bootstrap) -> Vec<Vec<Interval>> {
    use rayon::prelude::*;
    jobs.par_iter()
        .map(|j| pooled_deltas_each(&j.reps, &j.label_sets, b))
        .collect()
}

/// A replicate's test sentences grouped by kind, a kind being a (gold, baseline, augmented)
/// triple: a resample only needs how often each kind is drawn, so drawing a sentence costs one
/// increment, and the per-class counts are built once per resample from the few kinds.
struct Kinds {
    /// The distinct (gold, baseline, augmented) triples.
    kinds: Vec<[usize; 3]>,
    /// Sentence i's kind.
    of: Vec<u32>,
}

impl Kinds {
    fn of(p: &Paired) -> Kinds {
        let mut ix: std::collections::HashMap<[usize; 3], u32> = std::collections::HashMap::new();
        let mut kinds = Vec::new();
        let of = (0..p.gold.len())
            .map(|i| {
                let t = [p.gold[i], p.baseline[i], p.augmented[i]];
                *ix.entry(t).or_insert_with(|| {
                    kinds.push(t);
                    (kinds.len() - 1) as u32
                })
            })
            .collect();
        Kinds { kinds, of }
    }
}

/// Per-class counts of both classifiers on one (resampled) set of sentences: support and, for
/// the baseline (0) and the augmented classifier (1), true positives and predictions. Integer
/// counts: the F1 computed from them is the same number as from counts summed one by one.
struct PairCounts {
    support: Vec<u32>,
    tp: [Vec<u32>; 2],
    predicted: [Vec<u32>; 2],
}

impl PairCounts {
    fn new(n: usize) -> Self {
        PairCounts {
            support: vec![0; n],
            tp: [vec![0; n], vec![0; n]],
            predicted: [vec![0; n], vec![0; n]],
        }
    }

    /// Counts of the sentences drawn: kind `t` drawn `w[t]` times.
    fn fill(&mut self, kinds: &[[usize; 3]], w: &[u32]) {
        for v in [&mut self.support]
            .into_iter()
            .chain(&mut self.tp)
            .chain(&mut self.predicted)
        {
            v.iter_mut().for_each(|x| *x = 0);
        }
        for (&[g, x, y], &n) in kinds.iter().zip(w) {
            self.support[g] += n;
            for (j, p) in [x, y].into_iter().enumerate() {
                self.predicted[j][p] += n;
                if g == p {
                    self.tp[j][g] += n;
                }
            }
        }
    }

    /// F1 = 2·tp / (support + predicted) of classifier `j`, 0 when both are 0 (scikit-learn's
    /// `zero_division=0`), averaged over the classes of `labels` these sentences score: all but
    /// those with a test sentence (`tested`) of which none was drawn (0 when none is left).
    fn macro_f1(&self, j: usize, labels: &[usize], tested: &[bool]) -> f64 {
        let (mut sum, mut n) = (0.0, 0usize);
        for &k in labels {
            if self.support[k] == 0 && tested[k] {
                continue;
            }
            n += 1;
            let d = f64::from(self.support[k] + self.predicted[j][k]);
            if d > 0.0 {
                sum += 2.0 * f64::from(self.tp[j][k]) / d;
            }
        }
        if n == 0 { 0.0 } else { sum / n as f64 }
    }

    /// Add augmented − baseline macro-F1 over each set of `ls` into `sum`.
    fn add_deltas(&self, ls: &[&[usize]], tested: &[bool], sum: &mut [f64]) {
        for (s, l) in sum.iter_mut().zip(ls) {
            *s += self.macro_f1(1, l, tested) - self.macro_f1(0, l, tested);
        }
    }
}

/// Mean, sample standard deviation (n − 1; `None` for fewer than two values) and count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanSd {
    pub mean: f64,
    pub sd: Option<f64>,
    pub n: usize,
}

impl MeanSd {
    /// Of `values`; `None` when there is none.
    pub fn of(values: &[f64]) -> Option<MeanSd> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let sd = (n > 1).then(|| {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        });
        Some(MeanSd { mean, sd, n })
    }

    /// `0.6123 ± 0.0120 (n=3)`; a single value reads `0.6123 (n=1)`.
    pub fn show(&self) -> String {
        match self.sd {
            Some(sd) => format!("{:.4} ± {:.4} (n={})", self.mean, sd, self.n),
            None => format!("{:.4} (n={})", self.mean, self.n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-computed case: two sentences, the augmented classifier gets the second right.
    const HAND: Paired<'static> = Paired {
        gold: &[0, 1],
        baseline: &[0, 0],
        augmented: &[0, 1],
    };

    const B: Bootstrap = Bootstrap {
        resamples: 1000,
        seed: 7,
    };

    /// Expected values from scikit-learn 1.9.1, `scripts/stats_fixtures.py` (same vectors).
    #[test]
    fn macro_f1_over_matches_scikit_learn() {
        let gold = [0, 0, 0, 1, 1, 2, 2, 2, 2, 0, 1, 2];
        let pred = [0, 1, 0, 1, 3, 2, 2, 0, 2, 0, 1, 4];
        let cases: [(&[usize], f64); 4] = [
            (&[0, 1, 2], 0.7222222222222222),
            (&[0, 1, 2, 3], 0.5416666666666666),
            (&[1, 2], 0.7083333333333333),
            (&[1, 4], 0.3333333333333333),
        ];
        for (labels, want) in cases {
            let got = macro_f1_over(&gold, &pred, labels);
            assert!((got - want).abs() < 1e-12, "L={labels:?}: {got} != {want}");
        }
        assert_eq!(macro_f1_over(&gold, &pred, &[]), 0.0);
    }

    #[test]
    fn identical_predictions_give_zero_and_the_interval_zero_zero() {
        let gold = [0, 1, 2, 2, 1, 0, 3, 3];
        let pred = [0, 2, 2, 1, 1, 0, 3, 0];
        let p = Paired {
            gold: &gold,
            baseline: &pred,
            augmented: &pred,
        };
        let iv = paired_delta(p, &[0, 1, 2, 3], B);
        assert_eq!(
            iv,
            Interval {
                delta: 0.0,
                lo: 0.0,
                hi: 0.0
            }
        );
        assert!(!iv.excludes_zero());
    }

    /// Two test sentences a (gold 0) and b (gold 1), L = {0, 1}; the baseline predicts 0 for
    /// both, the augmented classifier is right on both. The resamples, by hand (each scored over
    /// the classes of L it draws):
    /// {a,a} (p = 1/4): over {0}, both 1 → delta 0; {b,b} (1/4): over {1}, 0 vs 1 → 1;
    /// {a,b} (1/2): over {0, 1}, baseline F1 (2/3 + 0)/2 = 1/3, augmented 1 → 2/3.
    /// So the point delta is 2/3, the 95% interval [0, 1], the bootstrap mean 7/12.
    #[test]
    fn a_hand_computed_case() {
        let p = Paired {
            gold: &[0, 1],
            baseline: &[0, 0],
            augmented: &[0, 1],
        };
        let iv = paired_delta(p, &[0, 1], B);
        assert!((iv.delta - 2.0 / 3.0).abs() < 1e-12, "{iv:?}");
        assert_eq!(iv.lo, 0.0);
        assert_eq!(iv.hi, 1.0);
        assert!(!iv.excludes_zero());
    }

    /// A single sentence: every resample is that sentence, so the interval is the point.
    #[test]
    fn one_sentence_gives_a_point_interval() {
        let p = Paired {
            gold: &[1],
            baseline: &[0],
            augmented: &[1],
        };
        // Baseline: class 0 F1 0 (predicted, no support), class 1 F1 0 → 0; augmented: 1 and 0 → 0.5.
        let iv = paired_delta(p, &[0, 1], B);
        assert_eq!(
            iv,
            Interval {
                delta: 0.5,
                lo: 0.5,
                hi: 0.5
            }
        );
        assert!(iv.excludes_zero());
    }

    /// A clear gain on 200 sentences excludes zero; the same seed gives the same interval and
    /// another seed a different one.
    #[test]
    fn a_large_gain_excludes_zero_and_the_seed_fixes_the_interval() {
        let gold: Vec<usize> = (0..200).map(|i| i % 4).collect();
        let baseline: Vec<usize> = gold
            .iter()
            .enumerate()
            .map(|(i, &g)| if i % 2 == 0 { g } else { (g + 1) % 4 })
            .collect();
        let augmented: Vec<usize> = gold
            .iter()
            .enumerate()
            .map(|(i, &g)| if i % 10 == 0 { (g + 1) % 4 } else { g })
            .collect();
        let p = Paired {
            gold: &gold,
            baseline: &baseline,
            augmented: &augmented,
        };
        let l = [0, 1, 2, 3];
        let iv = paired_delta(p, &l, B);
        let want = macro_f1_over(&gold, &augmented, &l) - macro_f1_over(&gold, &baseline, &l);
        assert!((iv.delta - want).abs() < 1e-12);
        assert!(
            iv.lo > 0.0 && iv.lo < iv.delta && iv.delta < iv.hi,
            "{iv:?}"
        );
        assert!(iv.excludes_zero());
        assert_eq!(paired_delta(p, &l, B), iv);
        assert_ne!(paired_delta(p, &l, Bootstrap { seed: 8, ..B }), iv);
    }

    /// Pooled: the point is the mean of the replicates' deltas; two copies of the hand-computed
    /// case keep its bounds (the mean of two draws from {0, 2/3, 1} spans [0, 1]) and a
    /// replicate with identical predictions halves the point.
    #[test]
    fn pooled_is_the_mean_over_replicates() {
        let a = HAND;
        let same = Paired {
            gold: &[0, 1, 1],
            baseline: &[0, 0, 1],
            augmented: &[0, 0, 1],
        };
        let iv = pooled_delta(&[a, a], &[0, 1], B);
        assert!((iv.delta - 2.0 / 3.0).abs() < 1e-12);
        assert!(iv.lo >= 0.0 && iv.hi <= 1.0 + 1e-12, "{iv:?}");
        let half = pooled_delta(&[a, same], &[0, 1], B);
        assert!((half.delta - 1.0 / 3.0).abs() < 1e-12, "{half:?}");
        assert_eq!(pooled_delta(&[a], &[0, 1], B), paired_delta(a, &[0, 1], B));
    }

    /// Several class sets from the same resamples: the first is [`paired_delta`]'s interval, and
    /// each point is that set's own delta (hand-computed case: over {1} alone the baseline has F1
    /// 0 and the augmented classifier 1, so the point is 1).
    #[test]
    fn several_class_sets_share_the_resamples() {
        let a = HAND;
        let both = pooled_deltas(&[a], &[&[0, 1], &[1]], B);
        assert_eq!(both[0], paired_delta(a, &[0, 1], B));
        assert!((both[1].delta - 1.0).abs() < 1e-12, "{:?}", both[1]);
        // Over {1}: a resample without b scores 0 for both (no support, no prediction of 1).
        assert_eq!(both[1].lo, 0.0);
        assert_eq!(both[1].hi, 1.0);
    }

    #[test]
    fn percentile_interpolates_like_numpy() {
        // numpy.percentile([1, 2, 3, 4], [2.5, 97.5]) = [1.075, 3.925]
        let v = [1.0, 2.0, 3.0, 4.0];
        assert!((percentile(&v, 0.025) - 1.075).abs() < 1e-12);
        assert!((percentile(&v, 0.975) - 3.925).abs() < 1e-12);
        assert_eq!(percentile(&[5.0], 0.5), 5.0);
    }

    /// Per-replicate class sets: a replicate whose L lacks class 1 averages over {0} alone.
    /// Replicate a is the hand-computed case (delta 2/3 over {0, 1}); replicate c, over {0}
    /// only, has the baseline right on its one sentence and the augmented wrong: F1 1 → 0, delta
    /// −1. The pooled point is (2/3 − 1) / 2 = −1/6.
    #[test]
    fn pooled_with_each_replicates_own_class_set() {
        let a = HAND;
        let c = Paired {
            gold: &[0],
            baseline: &[0],
            augmented: &[1],
        };
        let iv = pooled_deltas_each(&[a, c], &[vec![&[0, 1]], vec![&[0]]], B);
        assert!((iv[0].delta + 1.0 / 6.0).abs() < 1e-12, "{iv:?}");
        // c always gives −1; a's draws lie in [0, 1]: the mean lies in [−1/2, 0].
        assert!(iv[0].lo >= -0.5 - 1e-12 && iv[0].hi <= 1e-12, "{iv:?}");
        assert_eq!(
            pooled_deltas_each(&[a], &[vec![&[0, 1]]], B)[0],
            paired_delta(a, &[0, 1], B)
        );
    }

    /// Identical predictions in every replicate pool to [0, 0].
    #[test]
    fn pooled_identical_predictions_give_zero_zero() {
        let x = Paired {
            gold: &[0, 1, 2, 1],
            baseline: &[0, 2, 2, 1],
            augmented: &[0, 2, 2, 1],
        };
        let y = Paired {
            gold: &[2, 2, 0],
            baseline: &[1, 2, 0],
            augmented: &[1, 2, 0],
        };
        let iv = pooled_delta(&[x, y], &[0, 1, 2], B);
        assert_eq!(
            iv,
            Interval {
                delta: 0.0,
                lo: 0.0,
                hi: 0.0
            }
        );
    }

    /// The values a seed gives are pinned to the bit (computed before the counting loop was
    /// rewritten for speed): two replicates of 60 and 45 sentences over 5 classes, two class
    /// sets each, seed 7, 1,000 resamples.
    #[test]
    fn a_seed_pins_the_intervals_to_the_bit() {
        let mk = |n: usize, m: usize| -> (Vec<usize>, Vec<usize>, Vec<usize>) {
            let g: Vec<usize> = (0..n).map(|i| (i * 7 + 3) % 5).collect();
            let b = g
                .iter()
                .enumerate()
                .map(|(i, &c)| if i % m == 0 { (c + 1) % 5 } else { c })
                .collect();
            let a = g
                .iter()
                .enumerate()
                .map(|(i, &c)| if i % (m + 2) == 1 { (c + 2) % 5 } else { c })
                .collect();
            (g, b, a)
        };
        let (x, y) = (mk(60, 3), mk(45, 4));
        fn p(t: &(Vec<usize>, Vec<usize>, Vec<usize>)) -> Paired<'_> {
            Paired {
                gold: &t.0,
                baseline: &t.1,
                augmented: &t.2,
            }
        }
        let sets: [&[usize]; 2] = [&[0, 1, 2, 3, 4], &[3, 4]];
        let ivs = pooled_deltas(&[p(&x), p(&y)], &sets, B);
        let one = paired_delta(p(&x), &[0, 1, 2, 3, 4], B);
        let bits: Vec<u64> = ivs
            .iter()
            .chain([&one])
            .flat_map(|i| [i.delta, i.lo, i.hi])
            .map(f64::to_bits)
            .collect();
        assert_eq!(
            bits,
            [
                4590286251529281904,
                13807231005922068225,
                4596342790365779298,
                4597189911886863056,
                4590647592251251901,
                4600769578030240221,
                4589468260265693456,
                13810636767259419645,
                4596524434945610843,
            ]
        );
        // And pooled_deltas_many gives every job's intervals as one call each does.
        let jobs = [
            Job {
                reps: vec![p(&x), p(&y)],
                label_sets: vec![sets.to_vec(), sets.to_vec()],
            },
            Job {
                reps: vec![p(&x)],
                label_sets: vec![vec![&[0, 1, 2, 3, 4]]],
            },
        ];
        assert_eq!(pooled_deltas_many(&jobs, B), vec![ivs.clone(), vec![one]]);
    }

    /// The definition, sentence by sentence: each resample draws indices with the same
    /// generator calls as [`pooled_deltas_each`] and scores the drawn sentences with
    /// [`macro_f1_over`] over L less the tested classes it did not draw.
    fn naive_interval(p: Paired, l: &[usize], b: Bootstrap) -> Interval {
        let n = p.gold.len();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(b.seed);
        let draws = (0..b.resamples)
            .map(|_| {
                let ix: Vec<usize> = (0..n).map(|_| rng.gen_range(0..n)).collect();
                let pick = |v: &[usize]| ix.iter().map(|&i| v[i]).collect::<Vec<_>>();
                let g = pick(p.gold);
                let lb: Vec<usize> = l
                    .iter()
                    .copied()
                    .filter(|k| g.contains(k) || !p.gold.contains(k))
                    .collect();
                macro_f1_over(&g, &pick(p.augmented), &lb)
                    - macro_f1_over(&g, &pick(p.baseline), &lb)
            })
            .collect();
        let point = macro_f1_over(p.gold, p.augmented, l) - macro_f1_over(p.gold, p.baseline, l);
        interval(point, draws)
    }

    /// A gain on rare classes (the kind CTI-to-MITRE's target techniques give: one or two test
    /// sentences each) keeps its point estimate inside the interval, and the interval is the
    /// sentence-by-sentence definition's. Scoring undrawn classes as 0 had put this point above
    /// the interval. (With a gain on many classes of *one* test sentence each the bootstrap
    /// still lies below the point: fewer of them are drawn into a resample than the test set
    /// holds, a bias of the statistic that no choice of class set removes.)
    #[test]
    fn a_gain_on_rare_classes_stays_inside_its_interval() {
        // 60 sentences of 3 common classes (both classifiers right on 50), and 6 rare classes
        // with two sentences each, which only the augmented classifier gets right.
        let mut gold: Vec<usize> = (0..60).map(|i| i % 3).collect();
        let mut base: Vec<usize> = gold
            .iter()
            .enumerate()
            .map(|(i, &g)| if i % 6 == 0 { (g + 1) % 3 } else { g })
            .collect();
        let mut aug = base.clone();
        for k in (3..9).flat_map(|k| [k, k]) {
            gold.push(k);
            base.push(0);
            aug.push(k);
        }
        let p = Paired {
            gold: &gold,
            baseline: &base,
            augmented: &aug,
        };
        let l: Vec<usize> = (0..9).collect();
        let iv = paired_delta(p, &l, B);
        assert!(iv.lo < iv.delta && iv.delta < iv.hi, "{iv:?}");
        let naive = naive_interval(p, &l, B);
        assert!((iv.delta - naive.delta).abs() < 1e-12);
        assert!((iv.lo - naive.lo).abs() < 1e-12, "{iv:?} vs {naive:?}");
        assert!((iv.hi - naive.hi).abs() < 1e-12, "{iv:?} vs {naive:?}");
        // The hand-computed case too, where L_b is {0}, {1} or {0, 1}.
        assert_eq!(
            naive_interval(HAND, &[0, 1], B),
            paired_delta(HAND, &[0, 1], B)
        );
    }

    #[test]
    fn mean_and_sample_sd() {
        let m = MeanSd::of(&[0.5, 0.6, 0.7]).unwrap();
        assert!((m.mean - 0.6).abs() < 1e-12);
        assert!((m.sd.unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(m.n, 3);
        assert_eq!(m.show(), "0.6000 ± 0.1000 (n=3)");
        assert_eq!(MeanSd::of(&[0.25]).unwrap().show(), "0.2500 (n=1)");
        assert_eq!(MeanSd::of(&[]), None);
    }
}
