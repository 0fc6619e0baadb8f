//! Sigmoid heads for multi-label tasks (`data.multi_label_head = "sigmoid"`, see
//! [`crate::multilabel`]): one independent sigmoid output per class, trained with binary
//! cross-entropy on multi-hot targets. A sentence with no technique has an all-zero target; the
//! `none` class of the label list keeps its output (so the class list is the same as the
//! none-class head's) but is never a target, so it learns to score 0 and is never predicted.
//!
//! The loss is PyTorch's `BCEWithLogitsLoss` with `pos_weight`, in its numerically stable form
//! (`(1 − y)·x + (1 + (w − 1)·y)·(ln(1 + e^−|x|) + max(−x, 0))`), averaged over rows and classes.
//! With `class_weight = "balanced"` class `c`'s positive term is weighted by
//! `w_c = negatives_c / positives_c` over the train rows, the weighting PyTorch's documentation
//! gives for `pos_weight` (a class with no positive keeps `w_c = 1`); with `"none"` every
//! `w_c = 1`.

use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::ml::params::ClassWeight;

/// How a model turns its logits into class scores (stored in the model's metadata).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Output {
    /// One softmax over the classes: the scores of a row sum to 1 (single-label training, and
    /// multi-label with a `none` class).
    #[default]
    Softmax,
    /// An independent sigmoid per class: each score is in (0, 1) on its own.
    Sigmoid,
}

impl Output {
    /// Scores [rows, classes] of logits [rows, classes].
    pub fn scores(self, logits: Tensor<2>) -> Tensor<2> {
        match self {
            Output::Softmax => softmax(logits, 1),
            Output::Sigmoid => sigmoid(logits),
        }
    }
}

/// What a trainer fits: one class per row (softmax cross-entropy) or a set of classes per row
/// (sigmoid binary cross-entropy), for the train and validation rows in order.
pub enum Targets<'a> {
    Class {
        train: Vec<usize>,
        validation: Vec<usize>,
    },
    Sets {
        train: &'a [Vec<usize>],
        validation: &'a [Vec<usize>],
    },
}

impl Targets<'_> {
    /// The output these targets train.
    pub fn output(&self) -> Output {
        match self {
            Targets::Class { .. } => Output::Softmax,
            Targets::Sets { .. } => Output::Sigmoid,
        }
    }
}

/// The multi-hot matrix of `sets` (row-major, `sets.len() × classes`): 1 where a row has the
/// class, else 0 (an empty set is an all-zero row).
pub fn multi_hot<'s>(sets: impl ExactSizeIterator<Item = &'s [usize]>, classes: usize) -> Vec<f32> {
    let mut y = vec![0f32; sets.len() * classes];
    for (r, s) in sets.enumerate() {
        for &k in s {
            y[r * classes + k] = 1.0;
        }
    }
    y
}

/// Per-class positive weights over the train rows' sets (see the module docs).
pub fn pos_weights(cw: ClassWeight, sets: &[Vec<usize>], classes: usize) -> Vec<f32> {
    match cw {
        ClassWeight::None => vec![1.0; classes],
        ClassWeight::Balanced => {
            let mut pos = vec![0usize; classes];
            for s in sets {
                for &k in s {
                    pos[k] += 1;
                }
            }
            pos.iter()
                .map(|&p| {
                    if p == 0 {
                        1.0
                    } else {
                        (sets.len() - p) as f32 / p as f32
                    }
                })
                .collect()
        }
    }
}

/// Binary cross-entropy with logits, mean over every (row, class): `logits` and `targets`
/// [rows, classes], `pos_weight` [classes] (see the module docs for the formula).
pub fn bce_with_logits(logits: Tensor<2>, targets: Tensor<2>, pos_weight: &[f32]) -> Tensor<1> {
    let device = logits.device();
    let c = pos_weight.len();
    let w = Tensor::<2>::from_data(TensorData::new(pos_weight.to_vec(), [1, c]), &device);
    // ln(1 + e^−|x|) + max(−x, 0) = −ln σ(x), computed without overflow.
    let softplus_neg =
        logits.clone().abs().neg().exp().log1p() + logits.clone().neg().clamp_min(0.0);
    let neg_part = (targets.clone().neg() + 1.0) * logits;
    let pos_scale = targets * (w - 1.0) + 1.0;
    (neg_part + pos_scale * softplus_neg).mean()
}

/// Tensors of a multi-hot batch on `device`.
pub fn target_tensor<'s>(
    sets: impl ExactSizeIterator<Item = &'s [usize]>,
    classes: usize,
    device: &Device,
) -> Tensor<2> {
    let rows = sets.len();
    Tensor::from_data(
        TensorData::new(multi_hot(sets, classes), [rows, classes]),
        device,
    )
}

/// The early-stopping score of a sigmoid model: micro-F1 on validation at the threshold that
/// maximises it ([`crate::multilabel::choose_threshold`]), the figure the threshold is chosen
/// for. `probs`: [rows][classes]; `none`: the index of `none`, never counted.
pub fn validation_score(probs: &[Vec<f32>], gold: &[Vec<usize>], none: Option<usize>) -> f64 {
    crate::multilabel::choose_threshold(probs, gold, none).f1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(t: Tensor<1>) -> f32 {
        t.into_scalar::<f32>()
    }

    #[test]
    fn a_negative_is_an_all_zero_row_and_several_labels_several_ones() {
        let sets: Vec<Vec<usize>> = vec![vec![0, 2], vec![], vec![1]];
        let y = multi_hot(sets.iter().map(Vec::as_slice), 3);
        assert_eq!(y, [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn balanced_positive_weights_are_negatives_over_positives() {
        // 4 rows: class 0 in 1 row (3 negatives), class 1 in 2 rows, class 2 in none.
        let sets = vec![vec![0, 1], vec![1], vec![], vec![]];
        assert_eq!(
            pos_weights(ClassWeight::Balanced, &sets, 3),
            [3.0, 1.0, 1.0]
        );
        assert_eq!(pos_weights(ClassWeight::None, &sets, 3), [1.0, 1.0, 1.0]);
    }

    /// The loss against the definition −[w·y·ln σ(x) + (1 − y)·ln(1 − σ(x))], mean over cells,
    /// computed here in f64 for x = [[2, −1], [0.5, −30]], y = [[1, 0], [0, 1]], w = [1, 4]:
    /// cells 0.126928, 0.313262, 0.974077, 4·30 = 120.000000 (the −30 logit would overflow a
    /// naive e^−x), mean 30.353567.
    #[test]
    fn bce_with_logits_matches_its_definition_and_is_stable() {
        let device = Device::flex();
        let x = Tensor::<2>::from_data(
            TensorData::new(vec![2.0f32, -1.0, 0.5, -30.0], [2, 2]),
            &device,
        );
        let sets: Vec<Vec<usize>> = vec![vec![0], vec![1]];
        let y = target_tensor(sets.iter().map(Vec::as_slice), 2, &device);
        let got = data(bce_with_logits(x, y, &[1.0, 4.0])) as f64;
        let s = |v: f64| 1.0 / (1.0 + (-v).exp());
        let want = (-(s(2.0)).ln() - (1.0 - s(-1.0)).ln() - (1.0 - s(0.5)).ln()
            + 4.0 * (30.0 + (1.0 + (-30.0f64).exp()).ln()))
            / 4.0;
        assert!((want - 30.353567).abs() < 1e-5, "{want}");
        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
    }

    #[test]
    fn sigmoid_scores_are_independent_softmax_scores_sum_to_one() {
        let device = Device::flex();
        let x = Tensor::<2>::from_data(TensorData::new(vec![3.0f32, 3.0, -3.0], [1, 3]), &device);
        let sig: Vec<f32> = Output::Sigmoid
            .scores(x.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let soft: Vec<f32> = Output::Softmax
            .scores(x)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert!((sig[0] - 0.952_574_1).abs() < 1e-6 && (sig[1] - sig[0]).abs() < 1e-7);
        assert!((soft.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(soft[0] < 0.5);
    }
}
