//! `[[classifier]]` tables: one tagged enum of per-kind settings, each field a [`Grid`] that
//! expands into concrete [`ModelParams`], one per cell.
//!
//! A table names its `kind` (default `fasttext`); a field another kind uses is rejected with the
//! kind's own keys, and a field left out takes the kind's default, so `manifest.resolved.toml`
//! shows every effective value.

use serde::{Deserialize, Deserializer, Serialize};

use crate::grid::Grid;
use crate::ml::params::{ClassWeight, ClassifierKind, DEFAULT_ENCODER, ModelParams, Weighting};

/// fastText-style bag of hashed word and character n-grams.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FastTextConfig {
    /// Embedding dimension.
    pub dim: Grid<usize>,
    /// Longest word n-gram (1 = unigrams only).
    pub word_ngrams: Grid<usize>,
    /// Shortest character n-gram (0 with `maxn = 0` disables them).
    pub minn: Grid<usize>,
    /// Longest character n-gram.
    pub maxn: Grid<usize>,
    /// Hash buckets shared by word and character n-grams.
    pub buckets: Grid<usize>,
    pub weighting: Grid<Weighting>,
    /// Maximum epochs (early stopping may end sooner).
    pub epochs: Grid<usize>,
    pub lr: Grid<f64>,
    pub batch_size: Grid<usize>,
    /// Epochs without a better validation macro-F1 before stopping (0: never stop early).
    pub patience: Grid<usize>,
    /// How much better the validation macro-F1 must get to count as better.
    pub min_delta: Grid<f64>,
    pub class_weight: Grid<ClassWeight>,
}

impl Default for FastTextConfig {
    fn default() -> Self {
        Self {
            dim: Grid::One(32),
            word_ngrams: Grid::One(2),
            minn: Grid::One(2),
            maxn: Grid::One(5),
            buckets: Grid::One(1 << 18),
            weighting: Grid::One(Weighting::Idf),
            epochs: Grid::One(30),
            lr: Grid::One(0.05),
            batch_size: Grid::One(128),
            patience: Grid::One(4),
            min_delta: Grid::One(0.005),
            class_weight: Grid::One(ClassWeight::Balanced),
        }
    }
}

/// A pretrained encoder's cached sentence embeddings → an MLP head.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FrozenConfig {
    /// A model folder or Hugging Face id ([`crate::hub`]) with `config.json`, `tokenizer.json`, `model.safetensors`.
    pub model: Grid<String>,
    /// The revision (branch, tag or commit sha) of a Hugging Face id; a folder takes `main`.
    pub revision: Grid<String>,
    /// Tokens per text, after which it is truncated.
    pub max_length: Grid<usize>,
    pub dropout: Grid<f64>,
    /// Hidden units of the MLP head (0: a linear head).
    pub head_hidden: Grid<usize>,
    pub epochs: Grid<usize>,
    pub lr: Grid<f64>,
    pub batch_size: Grid<usize>,
    pub patience: Grid<usize>,
    pub min_delta: Grid<f64>,
    pub class_weight: Grid<ClassWeight>,
}

impl Default for FrozenConfig {
    fn default() -> Self {
        Self {
            model: Grid::One(DEFAULT_ENCODER.into()),
            revision: Grid::One(crate::hub::DEFAULT_REVISION.into()),
            max_length: Grid::One(128),
            dropout: Grid::One(0.1),
            head_hidden: Grid::One(512),
            epochs: Grid::One(200),
            lr: Grid::One(0.001),
            batch_size: Grid::One(64),
            patience: Grid::One(15),
            min_delta: Grid::One(0.001),
            class_weight: Grid::One(ClassWeight::Balanced),
        }
    }
}

/// A pretrained encoder fine-tuned end to end with a linear head.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneConfig {
    /// A model folder or Hugging Face id ([`crate::hub`]) with `config.json`, `tokenizer.json`, `model.safetensors`.
    pub model: Grid<String>,
    /// The revision (branch, tag or commit sha) of a Hugging Face id; a folder takes `main`.
    pub revision: Grid<String>,
    pub max_length: Grid<usize>,
    pub dropout: Grid<f64>,
    /// Fraction of the steps spent warming the learning rate up.
    pub warmup: Grid<f64>,
    /// AdamW weight decay.
    pub weight_decay: Grid<f64>,
    pub epochs: Grid<usize>,
    pub lr: Grid<f64>,
    pub batch_size: Grid<usize>,
    pub patience: Grid<usize>,
    pub min_delta: Grid<f64>,
    pub class_weight: Grid<ClassWeight>,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            model: Grid::One(DEFAULT_ENCODER.into()),
            revision: Grid::One(crate::hub::DEFAULT_REVISION.into()),
            max_length: Grid::One(128),
            dropout: Grid::One(0.1),
            warmup: Grid::One(0.1),
            weight_decay: Grid::One(0.01),
            epochs: Grid::One(8),
            lr: Grid::One(1e-4),
            batch_size: Grid::One(32),
            patience: Grid::One(2),
            min_delta: Grid::One(0.002),
            class_weight: Grid::One(ClassWeight::Balanced),
        }
    }
}

/// The encoder architecture trained from scratch at a configurable size (the model folder
/// gives only its tokenizer).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TransformerConfig {
    /// A folder or Hugging Face id with `tokenizer.json`.
    pub model: Grid<String>,
    /// The revision (branch, tag or commit sha) of a Hugging Face id; a folder takes `main`.
    pub revision: Grid<String>,
    pub max_length: Grid<usize>,
    pub dropout: Grid<f64>,
    pub warmup: Grid<f64>,
    pub weight_decay: Grid<f64>,
    /// Encoder layers.
    pub layers: Grid<usize>,
    /// Hidden size (a multiple of `heads`).
    pub hidden: Grid<usize>,
    /// Attention heads.
    pub heads: Grid<usize>,
    /// Feed-forward size.
    pub intermediate: Grid<usize>,
    pub epochs: Grid<usize>,
    pub lr: Grid<f64>,
    pub batch_size: Grid<usize>,
    pub patience: Grid<usize>,
    pub min_delta: Grid<f64>,
    pub class_weight: Grid<ClassWeight>,
}

impl Default for TransformerConfig {
    fn default() -> Self {
        Self {
            model: Grid::One(DEFAULT_ENCODER.into()),
            revision: Grid::One(crate::hub::DEFAULT_REVISION.into()),
            max_length: Grid::One(128),
            dropout: Grid::One(0.1),
            warmup: Grid::One(0.1),
            weight_decay: Grid::One(0.01),
            layers: Grid::One(2),
            hidden: Grid::One(128),
            heads: Grid::One(4),
            intermediate: Grid::One(512),
            epochs: Grid::One(30),
            lr: Grid::One(5e-4),
            batch_size: Grid::One(32),
            patience: Grid::One(4),
            min_delta: Grid::One(0.002),
            class_weight: Grid::One(ClassWeight::Balanced),
        }
    }
}

/// A one-vs-rest linear SVM over sparse TF-IDF word n-grams and character n-grams inside word
/// boundaries (see [`crate::ml::linear`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LinearConfig {
    /// Longest word n-gram (word n-grams of lengths 1 to this).
    pub word_ngrams: Grid<usize>,
    /// Shortest character n-gram (`char_wb`).
    pub minn: Grid<usize>,
    /// Longest character n-gram (0 disables character n-grams).
    pub maxn: Grid<usize>,
    /// Most terms kept per block (word, character), the most frequent (0: all).
    pub max_features: Grid<usize>,
    /// Fewest training texts a term must occur in.
    pub min_df: Grid<usize>,
    /// Term frequency `1 + ln(count)` rather than the count.
    pub sublinear_tf: Grid<bool>,
    /// The SVM's `C` (inverse L2 regularization strength).
    pub c: Grid<f64>,
    /// Stopping tolerance of dual coordinate descent.
    pub tol: Grid<f64>,
    /// Most passes over the data per one-vs-rest problem.
    pub epochs: Grid<usize>,
    pub class_weight: Grid<ClassWeight>,
}

impl Default for LinearConfig {
    fn default() -> Self {
        Self {
            word_ngrams: Grid::One(2),
            minn: Grid::One(2),
            maxn: Grid::One(5),
            max_features: Grid::One(0),
            min_df: Grid::One(1),
            sublinear_tf: Grid::One(true),
            c: Grid::One(1.0),
            tol: Grid::One(1e-4),
            epochs: Grid::One(1000),
            class_weight: Grid::One(ClassWeight::Balanced),
        }
    }
}

/// A `[[classifier]]` table, tagged by `kind`; every field may be a list to sweep.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
enum Tagged {
    Fasttext(FastTextConfig),
    EncoderFrozen(FrozenConfig),
    EncoderFinetune(FinetuneConfig),
    Transformer(TransformerConfig),
    Linear(LinearConfig),
}

/// A `[[classifier]]` table: its kind's settings, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub enum ClassifierConfig {
    Fasttext(FastTextConfig),
    EncoderFrozen(FrozenConfig),
    EncoderFinetune(FinetuneConfig),
    Transformer(TransformerConfig),
    Linear(LinearConfig),
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        Self::Fasttext(FastTextConfig::default())
    }
}

/// Every kind, in the order messages list them.
pub const KINDS: [ClassifierKind; 5] = [
    ClassifierKind::Fasttext,
    ClassifierKind::EncoderFrozen,
    ClassifierKind::EncoderFinetune,
    ClassifierKind::Transformer,
    ClassifierKind::Linear,
];

/// A field's accepted range: integers `lo..=hi`, or reals in `[lo, hi)` (`> lo` when
/// `open_low`).
enum Range {
    Int(u64, u64),
    Real { lo: f64, hi: f64, open_low: bool },
}

/// The range of every numeric field of any kind.
const RANGES: &[(&str, Range)] = &[
    ("dim", Range::Int(1, 4096)),
    ("word_ngrams", Range::Int(1, 5)),
    ("minn", Range::Int(0, 10)),
    ("maxn", Range::Int(0, 10)),
    ("buckets", Range::Int(16, 1 << 24)),
    ("epochs", Range::Int(1, 10_000)),
    ("batch_size", Range::Int(1, 65_536)),
    ("patience", Range::Int(0, 10_000)),
    ("max_length", Range::Int(2, 8192)),
    ("head_hidden", Range::Int(0, 65_536)),
    ("layers", Range::Int(1, 48)),
    ("hidden", Range::Int(8, 8192)),
    ("heads", Range::Int(1, 128)),
    ("intermediate", Range::Int(8, 65_536)),
    ("max_features", Range::Int(0, 1 << 26)),
    ("min_df", Range::Int(1, 1_000_000)),
    (
        "c",
        Range::Real {
            lo: 0.0,
            hi: 1e6,
            open_low: true,
        },
    ),
    (
        "tol",
        Range::Real {
            lo: 0.0,
            hi: 10.0,
            open_low: true,
        },
    ),
    (
        "min_delta",
        Range::Real {
            lo: 0.0,
            hi: 1.0,
            open_low: false,
        },
    ),
    (
        "dropout",
        Range::Real {
            lo: 0.0,
            hi: 1.0,
            open_low: false,
        },
    ),
    (
        "warmup",
        Range::Real {
            lo: 0.0,
            hi: 1.0,
            open_low: false,
        },
    ),
    (
        "weight_decay",
        Range::Real {
            lo: 0.0,
            hi: 1.0,
            open_low: false,
        },
    ),
    (
        "lr",
        Range::Real {
            lo: 0.0,
            hi: 10.0,
            open_low: true,
        },
    ),
];

impl ClassifierConfig {
    /// The kind's defaults.
    pub fn defaults(kind: ClassifierKind) -> Self {
        match kind {
            ClassifierKind::Fasttext => Self::Fasttext(Default::default()),
            ClassifierKind::EncoderFrozen => Self::EncoderFrozen(Default::default()),
            ClassifierKind::EncoderFinetune => Self::EncoderFinetune(Default::default()),
            ClassifierKind::Transformer => Self::Transformer(Default::default()),
            ClassifierKind::Linear => Self::Linear(Default::default()),
        }
    }

    pub fn kind(&self) -> ClassifierKind {
        match self {
            Self::Fasttext(_) => ClassifierKind::Fasttext,
            Self::EncoderFrozen(_) => ClassifierKind::EncoderFrozen,
            Self::EncoderFinetune(_) => ClassifierKind::EncoderFinetune,
            Self::Transformer(_) => ClassifierKind::Transformer,
            Self::Linear(_) => ClassifierKind::Linear,
        }
    }

    /// The table's fields (without `kind`) as JSON: each a value or a list to sweep.
    pub fn fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let v = match self {
            Self::Fasttext(c) => serde_json::to_value(c),
            Self::EncoderFrozen(c) => serde_json::to_value(c),
            Self::EncoderFinetune(c) => serde_json::to_value(c),
            Self::Transformer(c) => serde_json::to_value(c),
            Self::Linear(c) => serde_json::to_value(c),
        };
        match v.expect("classifier settings serialize") {
            serde_json::Value::Object(m) => m,
            _ => unreachable!("a struct serializes to an object"),
        }
    }

    /// The names of the fields a kind has (for messages and `--set` on mixed grids).
    pub fn field_names(kind: ClassifierKind) -> Vec<String> {
        Self::defaults(kind).fields().keys().cloned().collect()
    }

    /// The model folders the table names (every value of `model`), empty for fastText and
    /// linear.
    pub fn models(&self) -> Vec<String> {
        match self {
            Self::Fasttext(_) | Self::Linear(_) => Vec::new(),
            Self::EncoderFrozen(c) => c.model.values(),
            Self::EncoderFinetune(c) => c.model.values(),
            Self::Transformer(c) => c.model.values(),
        }
    }

    /// The revisions the table names (every value of `revision`), empty for fastText and linear.
    pub fn revisions(&self) -> Vec<String> {
        match self {
            Self::Fasttext(_) | Self::Linear(_) => Vec::new(),
            Self::EncoderFrozen(c) => c.revision.values(),
            Self::EncoderFinetune(c) => c.revision.values(),
            Self::Transformer(c) => c.revision.values(),
        }
    }

    /// Check every value's range and the fields that constrain each other.
    ///
    /// # Errors
    /// `(field, message)` for the first value out of range.
    pub fn check(&self) -> std::result::Result<(), (String, String)> {
        for (field, value) in self.fields() {
            let Some((_, range)) = RANGES.iter().find(|(f, _)| *f == field) else {
                continue;
            };
            let values = match value {
                serde_json::Value::Array(a) => a,
                v => vec![v],
            };
            for v in values {
                let ok_msg = match range {
                    Range::Int(lo, hi) => {
                        let x = v.as_u64().unwrap_or(u64::MAX);
                        (x >= *lo && x <= *hi, format!("between {lo} and {hi}"))
                    }
                    Range::Real { lo, hi, open_low } => {
                        let x = v.as_f64().unwrap_or(f64::NAN);
                        let above = if *open_low { x > *lo } else { x >= *lo };
                        let low = if *open_low { ">" } else { ">=" };
                        (above && x < *hi, format!("{low} {lo} and < {hi}"))
                    }
                };
                if !ok_msg.0 {
                    return Err((
                        field.clone(),
                        format!("{v} is out of range; it must be {}", ok_msg.1),
                    ));
                }
            }
        }
        if let Self::Transformer(c) = self {
            for hidden in c.hidden.values() {
                for heads in c.heads.values() {
                    if hidden % heads != 0 {
                        return Err((
                            "heads".into(),
                            format!(
                                "hidden = {hidden} is not a multiple of heads = {heads}; each head gets hidden / heads dimensions"
                            ),
                        ));
                    }
                }
            }
        }
        let char_ngrams = match self {
            Self::Fasttext(c) => Some((c.minn.values(), c.maxn.values())),
            Self::Linear(c) => Some((c.minn.values(), c.maxn.values())),
            _ => None,
        };
        if let Some((minns, maxns)) = char_ngrams {
            for &minn in &minns {
                for &maxn in &maxns {
                    if maxn != 0 && (minn == 0 || minn > maxn) {
                        return Err((
                            "minn".into(),
                            format!(
                                "minn = {minn} with maxn = {maxn}: need 1 <= minn <= maxn, or maxn = 0 to disable character n-grams"
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Every concrete configuration of the table (the cartesian product of its swept fields,
    /// in `axes` order), each with the `(tag, value)` name parts of the swept fields.
    ///
    /// `axes` lists `(field, tag)`; a field of the table missing from it is an error in the
    /// caller's list, caught by the test beside it.
    pub fn expand(&self, axes: &[(&str, &str)]) -> Vec<(ModelParams, Vec<(String, String)>)> {
        let table = self.fields();
        type Partial = (
            serde_json::Map<String, serde_json::Value>,
            Vec<(String, String)>,
        );
        let mut combos: Vec<Partial> = vec![(serde_json::Map::new(), Vec::new())];
        for (field, tag) in axes {
            let Some(v) = table.get(*field) else { continue };
            let vals = match v {
                serde_json::Value::Array(a) => a.clone(),
                other => vec![other.clone()],
            };
            let sweep = vals.len() > 1;
            let mut next = Vec::new();
            for (m, tags) in &combos {
                for val in &vals {
                    let mut m = m.clone();
                    m.insert(field.to_string(), val.clone());
                    let mut tags = tags.clone();
                    if sweep {
                        tags.push((tag.to_string(), tag_value(field, val)));
                    }
                    next.push((m, tags));
                }
            }
            combos = next;
        }
        combos
            .into_iter()
            .map(|(m, tags)| {
                let v = serde_json::Value::Object(m);
                let p = match self.kind() {
                    ClassifierKind::Fasttext => {
                        ModelParams::FastText(serde_json::from_value(v).expect("fastText params"))
                    }
                    ClassifierKind::Linear => {
                        ModelParams::Linear(serde_json::from_value(v).expect("linear params"))
                    }
                    _ => {
                        let mut p: crate::ml::params::EncoderParams =
                            serde_json::from_value(v).expect("encoder params");
                        // A revision means something for a Hub id only.
                        if !crate::hub::ModelRef::parse(&p.model).is_hub() {
                            p.revision = None;
                        }
                        ModelParams::Encoder(p)
                    }
                };
                (p, tags)
            })
            .collect()
    }
}

/// How a swept value shows in a cell name: a model folder by its last component.
fn tag_value(field: &str, val: &serde_json::Value) -> String {
    match (field, val) {
        ("revision", serde_json::Value::String(r)) => r.chars().take(8).collect(),
        ("model", serde_json::Value::String(p)) => std::path::Path::new(p)
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_else(|| p.clone()),
        (_, serde_json::Value::String(s)) => s.clone(),
        (_, v) => v.to_string(),
    }
}

impl Serialize for ClassifierConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let t = match self.clone() {
            Self::Fasttext(c) => Tagged::Fasttext(c),
            Self::EncoderFrozen(c) => Tagged::EncoderFrozen(c),
            Self::EncoderFinetune(c) => Tagged::EncoderFinetune(c),
            Self::Transformer(c) => Tagged::Transformer(c),
            Self::Linear(c) => Tagged::Linear(c),
        };
        t.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ClassifierConfig {
    /// A table without `kind` is `fasttext`; a field of another kind is named with the kind's
    /// own keys before serde's `deny_unknown_fields` would reject it.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut table = toml::Table::deserialize(d)?;
        let kind_name = match table.get("kind") {
            None => "fasttext".to_string(),
            Some(toml::Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "`kind` must be a string, not {other}"
                )));
            }
        };
        let Some(kind) = KINDS.iter().copied().find(|k| k.as_str() == kind_name) else {
            return Err(D::Error::custom(format!(
                "unknown classifier kind `{kind_name}`; valid kinds: {}",
                KINDS
                    .iter()
                    .map(|k| format!("`{}`", k.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        table.insert("kind".into(), toml::Value::String(kind_name));
        let own = Self::field_names(kind);
        if let Some(f) = table
            .keys()
            .find(|f| f.as_str() != "kind" && !own.contains(f))
        {
            let where_ = KINDS
                .iter()
                .filter(|k| Self::field_names(**k).contains(f))
                .map(|k| format!("`{}`", k.as_str()))
                .collect::<Vec<_>>();
            let elsewhere = if where_.is_empty() {
                String::new()
            } else {
                format!(" (it is a key of {})", where_.join(", "))
            };
            return Err(D::Error::custom(format!(
                "`{f}` does not apply to a `{}` classifier{elsewhere}; its keys are `kind`, {}",
                kind.as_str(),
                own.iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let tagged = Tagged::deserialize(toml::Value::Table(table)).map_err(D::Error::custom)?;
        Ok(match tagged {
            Tagged::Fasttext(c) => Self::Fasttext(c),
            Tagged::EncoderFrozen(c) => Self::EncoderFrozen(c),
            Tagged::EncoderFinetune(c) => Self::EncoderFinetune(c),
            Tagged::Transformer(c) => Self::Transformer(c),
            Tagged::Linear(c) => Self::Linear(c),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> std::result::Result<ClassifierConfig, String> {
        toml::from_str::<ClassifierConfig>(s).map_err(|e| e.to_string())
    }

    #[test]
    fn a_table_without_kind_is_fasttext_with_its_defaults() {
        let c = parse("dim = [16, 32]").unwrap();
        let ClassifierConfig::Fasttext(f) = &c else {
            panic!("{c:?}")
        };
        assert_eq!(f.dim, Grid::Many(vec![16, 32]));
        assert_eq!(f.maxn, Grid::One(5));
        assert_eq!(f.lr, Grid::One(0.05));
    }

    #[test]
    fn a_field_of_another_kind_names_the_kind_and_its_keys() {
        let e = parse("kind = \"encoder-frozen\"\ndim = 8").unwrap_err();
        assert!(
            e.contains(
                "`dim` does not apply to a `encoder-frozen` classifier (it is a key of `fasttext`)"
            ),
            "{e}"
        );
        assert!(e.contains("`head_hidden`"), "{e}");
        let e = parse("kind = \"fasttext\"\ndimension = 8").unwrap_err();
        assert!(
            e.contains("`dimension` does not apply to a `fasttext` classifier; its keys are"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_kind_lists_the_kinds() {
        let e = parse("kind = \"svm\"").unwrap_err();
        assert!(e.contains("unknown classifier kind `svm`; valid kinds: `fasttext`, `encoder-frozen`, `encoder-finetune`, `transformer`, `linear`"), "{e}");
    }

    #[test]
    fn it_round_trips_with_every_default_written() {
        let c = parse("kind = \"transformer\"\nlayers = [1, 2]").unwrap();
        let text = toml::to_string(&c).unwrap();
        assert!(text.contains("kind = \"transformer\""), "{text}");
        assert!(text.contains("intermediate = 512"), "{text}");
        assert_eq!(parse(&text).unwrap(), c);
    }

    #[test]
    fn ranges_and_linked_fields_are_checked() {
        let c = parse("kind = \"transformer\"\nhidden = 100\nheads = 3").unwrap();
        assert_eq!(c.check().unwrap_err().0, "heads");
        let c = parse("lr = 0").unwrap();
        let (f, msg) = c.check().unwrap_err();
        assert_eq!(f, "lr");
        assert_eq!(msg, "0.0 is out of range; it must be > 0 and < 10");
        let c = parse("minn = 4\nmaxn = 3").unwrap();
        assert_eq!(c.check().unwrap_err().0, "minn");
        assert!(parse("kind = \"encoder-frozen\"").unwrap().check().is_ok());
    }

    #[test]
    fn a_linear_table_takes_its_defaults_and_sweeps_its_fields() {
        let c = parse("kind = \"linear\"\nc = [0.5, 1.0]\nmax_features = 50000").unwrap();
        let ClassifierConfig::Linear(l) = &c else {
            panic!("{c:?}")
        };
        assert_eq!(l.c, Grid::Many(vec![0.5, 1.0]));
        assert_eq!(l.max_features, Grid::One(50_000));
        assert_eq!(l.maxn, Grid::One(5));
        assert_eq!(l.class_weight, Grid::One(ClassWeight::Balanced));
        assert!(c.check().is_ok());
        let names = ClassifierConfig::field_names(ClassifierKind::Linear);
        let axes: Vec<(&str, &str)> = names.iter().map(|f| (f.as_str(), "x")).collect();
        let cells = c.expand(&axes);
        assert_eq!(cells.len(), 2);
        let ModelParams::Linear(p) = &cells[1].0 else {
            panic!("{:?}", cells[1].0)
        };
        assert_eq!((p.c, p.max_features, p.word_ngrams), (1.0, 50_000, 2));
        let text = toml::to_string(&c).unwrap();
        assert_eq!(parse(&text).unwrap(), c);
    }

    #[test]
    fn linear_rejects_bad_values_with_the_field() {
        let bad = |s: &str| {
            parse(&format!("kind = \"linear\"\n{s}"))
                .unwrap()
                .check()
                .unwrap_err()
        };
        assert_eq!(
            bad("c = 0"),
            (
                "c".into(),
                "0.0 is out of range; it must be > 0 and < 1000000".into()
            )
        );
        assert_eq!(bad("tol = -1.0").0, "tol");
        assert_eq!(bad("min_df = 0").0, "min_df");
        assert_eq!(bad("minn = 6").0, "minn");
        assert_eq!(bad("word_ngrams = 0").0, "word_ngrams");
        let e = parse("kind = \"linear\"\ndim = 8").unwrap_err();
        assert!(
            e.contains("`dim` does not apply to a `linear` classifier (it is a key of `fasttext`)"),
            "{e}"
        );
        let e = parse("kind = \"linear\"\nsublinear_tf = \"yes\"").unwrap_err();
        assert!(
            e.contains("invalid type: string \"yes\", expected a boolean"),
            "{e}"
        );
    }
}
