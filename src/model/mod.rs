//! Classifiers. Each kind trains from a split and predicts scores over the classes.

pub mod encoder_cls;
pub mod fasttext;

/// A prediction for one text: the class scores, highest first (top k).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Scored {
    pub pred: usize,
    pub top: Vec<(usize, f32)>,
}
