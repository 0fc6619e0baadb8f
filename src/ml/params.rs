//! Classifier settings as the trainers read them: one concrete configuration per cell (the
//! manifest's `[[classifier]]` grids expand into these), the kinds, and the backend.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// burn's Flex backend on the CPU (the default build).
    #[default]
    Cpu,
    /// burn's CUDA backend on GPU 0 (needs `--features cuda`).
    Cuda,
}

impl Backend {
    pub fn is_cpu(&self) -> bool {
        *self == Backend::Cpu
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ClassifierKind {
    /// Hashed word + character n-grams → embedding bag → linear (fastText-style).
    Fasttext,
    /// A pretrained encoder's cached sentence embeddings → an MLP head.
    EncoderFrozen,
    /// A pretrained encoder fine-tuned end to end with a linear head.
    EncoderFinetune,
    /// The same encoder architecture trained from scratch at a configurable size.
    Transformer,
    /// A one-vs-rest linear SVM over sparse TF-IDF word and character n-grams.
    Linear,
}

impl ClassifierKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClassifierKind::Fasttext => "fasttext",
            ClassifierKind::EncoderFrozen => "encoder-frozen",
            ClassifierKind::EncoderFinetune => "encoder-finetune",
            ClassifierKind::Transformer => "transformer",
            ClassifierKind::Linear => "linear",
        }
    }
    /// Whether the kind runs a pretrained-encoder architecture (and names a `model`).
    pub fn is_encoder(self) -> bool {
        matches!(
            self,
            ClassifierKind::EncoderFrozen
                | ClassifierKind::EncoderFinetune
                | ClassifierKind::Transformer
        )
    }
}

/// The default encoder folder, fetched by `just models`.
pub const DEFAULT_ENCODER: &str = "models/all-MiniLM-L6-v2";

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ClassWeight {
    None,
    Balanced,
}

/// How the n-grams of a text are weighted in the bag's mean.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Weighting {
    /// By their count in the text (fastText).
    Count,
    /// By count × smoothed inverse document frequency over the training texts.
    Idf,
}

/// One fastText-style configuration, every field concrete.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FastTextParams {
    pub dim: usize,
    pub word_ngrams: usize,
    pub minn: usize,
    pub maxn: usize,
    pub buckets: usize,
    pub epochs: usize,
    pub lr: f64,
    pub batch_size: usize,
    pub patience: usize,
    pub min_delta: f64,
    pub class_weight: ClassWeight,
    pub weighting: Weighting,
}

/// One encoder configuration (`encoder-frozen`, `encoder-finetune`, `transformer`); fields the
/// kind does not use are absent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EncoderParams {
    /// A model folder, or a Hugging Face id (see [`crate::hub`]).
    pub model: String,
    /// The Hub revision of a `model` that is a Hugging Face id; absent for a folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    pub max_length: usize,
    pub dropout: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_hidden: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intermediate: Option<usize>,
    pub epochs: usize,
    pub lr: f64,
    pub batch_size: usize,
    pub patience: usize,
    pub min_delta: f64,
    pub class_weight: ClassWeight,
}

/// One `linear` configuration, every field concrete (see [`crate::ml::linear`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LinearParams {
    /// Longest word n-gram (word n-grams of lengths 1 to this).
    pub word_ngrams: usize,
    /// Shortest character n-gram inside word boundaries (`char_wb`).
    pub minn: usize,
    /// Longest character n-gram (0 disables character n-grams).
    pub maxn: usize,
    /// Most terms kept per block (word, character), the most frequent (0: all).
    pub max_features: usize,
    /// Fewest training texts a term must occur in.
    pub min_df: usize,
    /// Term frequency as `1 + ln(count)` rather than the count.
    pub sublinear_tf: bool,
    /// The SVM's `C`: the cost of a margin violation (larger = weaker L2 regularization).
    pub c: f64,
    /// Stopping tolerance on the projected gradient's spread (LIBLINEAR's `eps`).
    pub tol: f64,
    /// Most passes over the data per one-vs-rest problem.
    pub epochs: usize,
    pub class_weight: ClassWeight,
}

/// A cell's classifier settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ModelParams {
    FastText(FastTextParams),
    Encoder(EncoderParams),
    Linear(LinearParams),
}

impl ModelParams {
    pub fn fasttext(&self) -> Option<&FastTextParams> {
        match self {
            ModelParams::FastText(p) => Some(p),
            _ => None,
        }
    }
    pub fn encoder(&self) -> Option<&EncoderParams> {
        match self {
            ModelParams::Encoder(p) => Some(p),
            _ => None,
        }
    }
    /// The learning rate of the kinds trained by gradient steps.
    pub fn lr(&self) -> Option<f64> {
        match self {
            ModelParams::FastText(p) => Some(p.lr),
            ModelParams::Encoder(p) => Some(p.lr),
            ModelParams::Linear(_) => None,
        }
    }
}
