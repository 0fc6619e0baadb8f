//! Classifiers. Each kind trains from a split and predicts scores over the classes.

pub mod encoder_cls;
pub mod fasttext;

/// A prediction for one text: the class scores, highest first (top k).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Scored {
    pub pred: usize,
    pub top: Vec<(usize, f32)>,
}

/// Per-class loss weights: 1 each, or `n / (classes × count)` when balanced (0 for a class with no
/// example).
pub fn class_weights(
    cw: crate::manifest::ClassWeight,
    labels: impl Iterator<Item = usize>,
    n_classes: usize,
) -> Vec<f32> {
    let mut counts = vec![0usize; n_classes];
    let mut n = 0usize;
    for y in labels {
        counts[y] += 1;
        n += 1;
    }
    match cw {
        crate::manifest::ClassWeight::None => vec![1.0; n_classes],
        crate::manifest::ClassWeight::Balanced => counts
            .iter()
            .map(|&c| {
                if c == 0 {
                    0.0
                } else {
                    n as f32 / (n_classes as f32 * c as f32)
                }
            })
            .collect(),
    }
}
