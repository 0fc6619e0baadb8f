//! The fastText-style classifier in burn: hashed word and character n-grams → embedding bag
//! (mean) → linear layer, softmax cross-entropy (optionally class-balanced), Adam, early stopping
//! on the validation split's macro-F1, seeded. On a multi-label task with
//! `data.multi_label_head = "sigmoid"` ([`train_sigmoid`]) the same network has independent
//! sigmoid outputs trained with binary cross-entropy ([`crate::ml::sigmoid`]).
//!
//! Only buckets that occur in the training texts get an embedding row: a bucket never seen in
//! training would keep its random initial vector, so it is dropped at prediction time instead.
//! This keeps the table (and Adam's state) as small as the data allows.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use burn::module::{Initializer, Module};
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::sigmoid::{self, Output, Targets};
use super::{Epochs, Scored, length_bucketed_batches};
use crate::error::{Error, Result};
use crate::features::Featurizer;
use crate::hash::SplitMix64;
use crate::metrics;
use crate::ml::params::{FastTextParams, Weighting};

/// Bump when training changes in a way that changes the model (2: initial weights drawn inside
/// the seeded region, not lazily at the first forward pass).
pub const TRAIN_VERSION: u32 = 2;

#[derive(Module, Debug)]
pub struct FastText {
    embedding: Embedding,
    output: Linear,
}

impl FastText {
    fn new(rows: usize, dim: usize, classes: usize, device: &Device) -> Self {
        let a = 1.0 / dim as f64;
        Self {
            embedding: EmbeddingConfig::new(rows, dim)
                .with_initializer(Initializer::Uniform { min: -a, max: a })
                .init(device),
            output: LinearConfig::new(dim, classes).init(device),
        }
    }

    /// ids: [batch, len] rows into the table; mask: [batch, len] 1 for a feature, 0 for padding.
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<2> {
        let emb = self.embedding.forward(ids); // [B, L, D]
        let m = mask.clone().unsqueeze_dim::<3>(2); // [B, L, 1]
        let summed: Tensor<2> = (emb * m).sum_dim(1).squeeze_dim(1); // [B, D]
        let count = mask.sum_dim(1).clamp_min(1.0); // [B, 1]
        self.output.forward(summed / count)
    }
}

/// One epoch's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub train_loss: f64,
    pub validation_macro_f1: Option<f64>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainLog {
    pub epochs: Vec<EpochLog>,
    pub best_epoch: usize,
    pub stopped_early: bool,
    pub train_seconds: f64,
    pub rows: usize,
    pub parameters: usize,
}

/// What is stored beside the weights so a model can be loaded and used again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelMeta {
    pub params: FastTextParams,
    pub classes: Vec<String>,
    /// Bucket ids that have a row; row = 1 + position (row 0 is padding).
    pub vocab: Vec<u32>,
    /// IDF per row, when `weighting = "idf"`.
    #[serde(default)]
    pub idf: Option<Vec<f32>>,
    /// Softmax (one label, or multi-label with a `none` class) or independent sigmoids
    /// (`data.multi_label_head = "sigmoid"`, [`crate::ml::sigmoid`]).
    #[serde(default)]
    pub output: Output,
}

pub struct Trained {
    pub model: FastText,
    pub meta: ModelMeta,
    pub log: TrainLog,
}

struct Encoder {
    feat: Featurizer,
    rows: HashMap<u32, u32>,
    /// Per row (index = row), when the bag is IDF-weighted.
    idf: Option<Vec<f32>>,
}

impl Encoder {
    fn new(params: &FastTextParams, vocab: &[u32], idf: Option<Vec<f32>>) -> Self {
        Self {
            feat: featurizer(params),
            rows: vocab
                .iter()
                .enumerate()
                .map(|(i, &b)| (b, i as u32 + 1))
                .collect(),
            idf,
        }
    }

    fn encode(&self, text: &str) -> Doc {
        let mut doc = to_doc(
            self.feat
                .features(text)
                .into_iter()
                .filter_map(|b| self.rows.get(&b).copied())
                .collect(),
        );
        self.weigh(&mut doc);
        doc
    }

    fn weigh(&self, doc: &mut Doc) {
        if let Some(idf) = &self.idf {
            for (row, w) in doc.iter_mut() {
                *w *= idf[*row as usize];
            }
        }
    }
}

fn featurizer(p: &FastTextParams) -> Featurizer {
    Featurizer {
        word_ngrams: p.word_ngrams,
        minn: p.minn,
        maxn: p.maxn,
        buckets: p.buckets,
    }
}

/// A text as distinct rows with their counts: the bag's mean weights each row by its count.
type Doc = Vec<(u32, f32)>;

fn to_doc(mut rows: Vec<u32>) -> Doc {
    rows.sort_unstable();
    let mut doc: Doc = Vec::with_capacity(rows.len());
    for r in rows {
        match doc.last_mut() {
            Some((last, n)) if *last == r => *n += 1.0,
            _ => doc.push((r, 1.0)),
        }
    }
    doc
}

/// ids [batch, len] and weights [batch, len] (the counts; 0 for padding).
fn batch_tensors(docs: &[&Doc], device: &Device) -> (Tensor<2, Int>, Tensor<2>) {
    let len = docs.iter().map(|d| d.len()).max().unwrap_or(0).max(1);
    let mut ids = vec![0i64; docs.len() * len];
    let mut mask = vec![0f32; docs.len() * len];
    for (b, d) in docs.iter().enumerate() {
        for (j, &(r, n)) in d.iter().enumerate() {
            ids[b * len + j] = r as i64;
            mask[b * len + j] = n;
        }
    }
    (
        Tensor::from_data(TensorData::new(ids, [docs.len(), len]), device),
        Tensor::from_data(TensorData::new(mask, [docs.len(), len]), device),
    )
}

/// Class scores for encoded docs, in batches, on a plain (non-autodiff) model.
fn predict_encoded(
    model: &FastText,
    docs: &[Doc],
    device: &Device,
    top_k: usize,
    output: Output,
) -> Vec<Scored> {
    let mut out = Vec::with_capacity(docs.len());
    // Sort by length so padding stays small; restore order after.
    let mut order: Vec<usize> = (0..docs.len()).collect();
    order.sort_by_key(|&i| docs[i].len());
    let mut scored: Vec<Option<Scored>> = vec![None; docs.len()];
    for chunk in order.chunks(256) {
        let refs: Vec<&Doc> = chunk.iter().map(|&i| &docs[i]).collect();
        let (ids, mask) = batch_tensors(&refs, device);
        let probs = output.scores(model.forward(ids, mask));
        let [b, c] = probs.dims();
        let v: Vec<f32> = probs.into_data().try_to_vec::<f32>().expect("f32 scores");
        for (row, &i) in chunk.iter().enumerate().take(b) {
            let s = &v[row * c..(row + 1) * c];
            let mut idx: Vec<usize> = (0..c).collect();
            idx.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
            let top: Vec<(usize, f32)> = idx.iter().take(top_k).map(|&k| (k, s[k])).collect();
            scored[i] = Some(Scored { pred: idx[0], top });
        }
    }
    out.extend(scored.into_iter().map(|s| s.expect("every doc scored")));
    out
}

/// Train on (text, class index) pairs; `validation` drives early stopping when non-empty. The
/// first `real` pairs of `train` are real sentences (the rest an augmentation's): balanced class
/// weights are computed over them alone, so added sentences change what the model sees, not each
/// class's share of the loss.
#[allow(clippy::too_many_arguments)]
pub fn train(
    params: &FastTextParams,
    seed: u64,
    classes: &[String],
    train: &[(&str, usize)],
    real: usize,
    validation: &[(&str, usize)],
    device: &Device,
    progress: impl FnMut(usize, usize, f64),
) -> Result<Trained> {
    let texts: Vec<&str> = train.iter().map(|x| x.0).collect();
    let val_texts: Vec<&str> = validation.iter().map(|x| x.0).collect();
    let targets = Targets::Class {
        train: train.iter().map(|x| x.1).collect(),
        validation: validation.iter().map(|x| x.1).collect(),
    };
    fit(
        params, seed, classes, &texts, real, &val_texts, targets, device, progress,
    )
}

/// Train independent sigmoid outputs with binary cross-entropy on (text, technique set) rows
/// (an empty set: a sentence with no technique; `none` is never in a set), early stopping on the
/// validation micro-F1 at its best threshold ([`crate::ml::sigmoid`]).
pub fn train_sigmoid(
    params: &FastTextParams,
    seed: u64,
    classes: &[String],
    train: &[(&str, Vec<usize>)],
    validation: &[(&str, Vec<usize>)],
    device: &Device,
    progress: impl FnMut(usize, usize, f64),
) -> Result<Trained> {
    let texts: Vec<&str> = train.iter().map(|x| x.0).collect();
    let val_texts: Vec<&str> = validation.iter().map(|x| x.0).collect();
    let sets: Vec<Vec<usize>> = train.iter().map(|x| x.1.clone()).collect();
    let val_sets: Vec<Vec<usize>> = validation.iter().map(|x| x.1.clone()).collect();
    let targets = Targets::Sets {
        train: &sets,
        validation: &val_sets,
    };
    fit(
        params,
        seed,
        classes,
        &texts,
        texts.len(),
        &val_texts,
        targets,
        device,
        progress,
    )
}

#[allow(clippy::too_many_arguments)]
fn fit(
    params: &FastTextParams,
    seed: u64,
    classes: &[String],
    texts: &[&str],
    real: usize,
    val_texts: &[&str],
    targets: Targets,
    device: &Device,
    mut progress: impl FnMut(usize, usize, f64),
) -> Result<Trained> {
    let started = Instant::now();
    if texts.is_empty() {
        return Err(Error::data("no training examples"));
    }
    let output = targets.output();
    let feat = featurizer(params);
    let train_feats: Vec<Vec<u32>> = texts.iter().map(|t| feat.features(t)).collect();
    let mut vocab: Vec<u32> = train_feats.iter().flatten().copied().collect();
    vocab.sort_unstable();
    vocab.dedup();
    let mut enc = Encoder::new(params, &vocab, None);
    let mut train_docs: Vec<Doc> = train_feats
        .into_iter()
        .map(|f| to_doc(f.into_iter().map(|b| enc.rows[&b]).collect()))
        .collect();
    if params.weighting == Weighting::Idf {
        // Smoothed IDF, as scikit-learn's TfidfVectorizer: ln((1 + n) / (1 + df)) + 1.
        let mut df = vec![0usize; vocab.len() + 1];
        for d in &train_docs {
            for (row, _) in d {
                df[*row as usize] += 1;
            }
        }
        let n = train_docs.len() as f32;
        enc.idf = Some(
            df.iter()
                .map(|&d| ((1.0 + n) / (1.0 + d as f32)).ln() + 1.0)
                .collect(),
        );
        for d in &mut train_docs {
            enc.weigh(d);
        }
    }
    let val_docs: Vec<Doc> = val_texts.iter().map(|t| enc.encode(t)).collect();

    let n_classes = classes.len();
    let none = crate::multilabel::none_index(classes);
    let weights = match &targets {
        Targets::Class { train, .. } => super::class_weights(
            params.class_weight,
            train[..real.min(train.len())].iter().copied(),
            n_classes,
        ),
        Targets::Sets { train, .. } => sigmoid::pos_weights(params.class_weight, train, n_classes),
    };

    let ad = device.clone().autodiff();
    let mut model = super::init_seeded(&ad, seed, || {
        FastText::new(vocab.len() + 1, params.dim, n_classes, &ad)
    });
    let parameters = (vocab.len() + 1) * params.dim + params.dim * n_classes + n_classes;
    let mut optim = AdamConfig::new().init();
    let mut rng = SplitMix64::new(seed);
    let mut order: Vec<usize> = (0..train_docs.len()).collect();
    let mut epochs = Epochs::new(params.patience, params.min_delta);
    let steps_per_epoch = train_docs.len().div_ceil(params.batch_size);
    let total_steps = steps_per_epoch * params.epochs;
    let mut step = 0usize;

    for epoch in 1..=params.epochs {
        let t0 = Instant::now();
        let batches = length_bucketed_batches(
            &mut rng,
            &mut order,
            |i| train_docs[i].len(),
            params.batch_size,
            32,
        );
        let mut loss_sum = 0.0;
        for chunk in &batches {
            let refs: Vec<&Doc> = chunk.iter().map(|&i| &train_docs[i]).collect();
            let (ids, mask) = batch_tensors(&refs, &ad);
            let logits = model.forward(ids, mask);
            let loss = match &targets {
                Targets::Class { train, .. } => {
                    let ys: Vec<i64> = chunk.iter().map(|&i| train[i] as i64).collect();
                    let ws: Vec<f32> = chunk.iter().map(|&i| weights[train[i]]).collect();
                    let ys = Tensor::<1, Int>::from_data(TensorData::new(ys, [chunk.len()]), &ad);
                    let ws = Tensor::<1>::from_data(TensorData::new(ws, [chunk.len()]), &ad);
                    let logp = log_softmax(logits, 1);
                    let picked: Tensor<1> = logp.gather(1, ys.unsqueeze_dim(1)).squeeze_dim(1);
                    -(picked * ws.clone()).sum() / ws.sum().clamp_min(1e-12)
                }
                Targets::Sets { train, .. } => {
                    let y = sigmoid::target_tensor(
                        chunk.iter().map(|&i| train[i].as_slice()),
                        n_classes,
                        &ad,
                    );
                    sigmoid::bce_with_logits(logits, y, &weights)
                }
            };
            loss_sum += loss.clone().into_scalar::<f32>() as f64 * chunk.len() as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            // Linear decay to 10% of the rate over the planned steps, as fastText does.
            let lr = params.lr * (1.0 - 0.9 * step as f64 / total_steps.max(1) as f64);
            model = optim.step(lr, model, grads);
            step += 1;
            progress(
                step,
                total_steps,
                loss_sum / ((step - (epoch - 1) * steps_per_epoch) * params.batch_size) as f64,
            );
        }
        let val_f1 = if val_docs.is_empty() {
            None
        } else {
            let valid = model.valid();
            Some(match &targets {
                Targets::Class { validation, .. } => {
                    let preds: Vec<usize> = predict_encoded(&valid, &val_docs, device, 1, output)
                        .into_iter()
                        .map(|s| s.pred)
                        .collect();
                    metrics::macro_f1(validation, &preds, n_classes)
                }
                Targets::Sets { validation, .. } => {
                    let probs: Vec<Vec<f32>> =
                        predict_encoded(&valid, &val_docs, device, n_classes, output)
                            .iter()
                            .map(|s| s.dense(n_classes))
                            .collect();
                    sigmoid::validation_score(&probs, validation, none)
                }
            })
        };
        let entry = EpochLog {
            epoch,
            train_loss: loss_sum / train_docs.len() as f64,
            validation_macro_f1: val_f1,
            seconds: t0.elapsed().as_secs_f64(),
        };
        if epochs.end(entry, &model) {
            break;
        }
    }
    let (best_model, best_epoch, log, stopped_early) = epochs.finish(params.epochs);
    Ok(Trained {
        model: best_model.valid(),
        meta: ModelMeta {
            params: params.clone(),
            classes: classes.to_vec(),
            vocab,
            idf: enc.idf.clone(),
            output,
        },
        log: TrainLog {
            epochs: log,
            best_epoch,
            stopped_early,
            train_seconds: started.elapsed().as_secs_f64(),
            rows: enc.rows.len() + 1,
            parameters,
        },
    })
}

impl Trained {
    pub fn predict(&self, texts: &[&str], device: &Device, top_k: usize) -> Vec<Scored> {
        let enc = Encoder::new(&self.meta.params, &self.meta.vocab, self.meta.idf.clone());
        let docs: Vec<Doc> = texts.iter().map(|t| enc.encode(t)).collect();
        predict_encoded(&self.model, &docs, device, top_k, self.meta.output)
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut store = BurnpackStore::from_file(dir.join("model.bpk")).overwrite(true);
        self.model
            .save_into(&mut store)
            .map_err(|e| Error::internal(format!("saving the model: {e}")))?;
        let meta = serde_json::to_vec(&self.meta).map_err(|e| Error::internal(e.to_string()))?;
        std::fs::write(dir.join("model.json"), meta)
            .map_err(|e| Error::internal(format!("saving the model: {e}")))?;
        let log =
            serde_json::to_vec_pretty(&self.log).map_err(|e| Error::internal(e.to_string()))?;
        std::fs::write(dir.join("train_log.json"), log)
            .map_err(|e| Error::internal(format!("saving the training log: {e}")))?;
        Ok(())
    }

    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let bad = |e: String| Error::cache(format!("loading the model in {}: {e}", dir.display()));
        let meta: ModelMeta = serde_json::from_slice(
            &std::fs::read(dir.join("model.json")).map_err(|e| bad(e.to_string()))?,
        )
        .map_err(|e| bad(e.to_string()))?;
        let log: TrainLog = serde_json::from_slice(
            &std::fs::read(dir.join("train_log.json")).map_err(|e| bad(e.to_string()))?,
        )
        .map_err(|e| bad(e.to_string()))?;
        let mut model = FastText::new(
            meta.vocab.len() + 1,
            meta.params.dim,
            meta.classes.len(),
            device,
        );
        let mut store = BurnpackStore::from_file(dir.join("model.bpk"));
        model
            .load_from(&mut store)
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self { model, meta, log })
    }
}

#[cfg(test)]
mod tests {
    use super::train as train_model;
    use super::*;
    use crate::ml::params::{ClassWeight, Weighting};

    fn params(weighting: Weighting) -> FastTextParams {
        FastTextParams {
            dim: 8,
            word_ngrams: 2,
            minn: 2,
            maxn: 4,
            buckets: 4096,
            epochs: 20,
            lr: 0.1,
            batch_size: 4,
            patience: 0,
            min_delta: 0.0,
            class_weight: ClassWeight::Balanced,
            weighting,
        }
    }

    fn toy() -> (Vec<String>, Vec<(&'static str, usize)>) {
        let classes = vec!["T1059".to_string(), "T1105".to_string()];
        let train = vec![
            ("runs powershell commands", 0),
            ("executes a powershell script", 0),
            ("launches cmd.exe to run commands", 0),
            ("uses the command shell", 0),
            ("downloads a payload over http", 1),
            ("fetches additional tools from the server", 1),
            ("downloads a second stage", 1),
            ("transfers a tool from its c2 server", 1),
        ];
        (classes, train)
    }

    #[test]
    fn learns_a_separable_toy_task_and_round_trips_through_disk() {
        let device = Device::flex();
        let (classes, train) = toy();
        for w in [Weighting::Count, Weighting::Idf] {
            let t = train_model(
                &params(w),
                3,
                &classes,
                &train,
                train.len(),
                &[],
                &device,
                |_, _, _| {},
            )
            .unwrap();
            assert_eq!(t.meta.idf.is_some(), w == Weighting::Idf);
            let texts = ["a powershell command", "downloads a tool from the server"];
            let before = t.predict(&texts, &device, 2);
            assert_eq!(before[0].pred, 0);
            assert_eq!(before[1].pred, 1);
            let dir = tempfile::tempdir().unwrap();
            t.save(dir.path()).unwrap();
            let back = Trained::load(dir.path(), &device).unwrap();
            let after = back.predict(&texts, &device, 2);
            for (a, b) in before.iter().zip(&after) {
                assert_eq!(a.pred, b.pred);
                assert!((a.top[0].1 - b.top[0].1).abs() < 1e-6);
            }
        }
    }

    /// Sigmoid head: a sentence of two techniques scores high on both, a sentence of none on
    /// neither, `none` (never a target) scores low everywhere, and the head survives a reload.
    #[test]
    fn a_sigmoid_head_learns_independent_techniques_and_round_trips() {
        let device = Device::flex();
        let classes: Vec<String> = ["T1059", "T1105", "none"].map(String::from).to_vec();
        let rows: Vec<(&str, Vec<usize>)> = vec![
            ("runs powershell commands", vec![0]),
            ("executes a powershell script", vec![0]),
            ("uses the command shell", vec![0]),
            ("downloads a payload over http", vec![1]),
            ("fetches additional tools from the server", vec![1]),
            ("downloads a second stage", vec![1]),
            ("runs powershell that downloads a payload", vec![0, 1]),
            ("executes a powershell script to fetch tools", vec![0, 1]),
            ("the weather was nice today", vec![]),
            ("the report was published in march", vec![]),
            ("researchers thank their colleagues", vec![]),
            ("the company was founded in a garage", vec![]),
        ];
        let p = FastTextParams {
            epochs: 60,
            class_weight: ClassWeight::None,
            ..params(Weighting::Idf)
        };
        let t = super::train_sigmoid(&p, 5, &classes, &rows, &[], &device, |_, _, _| {}).unwrap();
        assert_eq!(t.meta.output, Output::Sigmoid);
        let texts = [
            "runs powershell that downloads a payload",
            "the weather was nice",
            "executes a powershell script",
        ];
        let dense: Vec<Vec<f32>> = t
            .predict(&texts, &device, 3)
            .iter()
            .map(|s| s.dense(3))
            .collect();
        assert!(dense[0][0] > 0.5 && dense[0][1] > 0.5, "{dense:?}");
        assert!(dense[1][0] < 0.5 && dense[1][1] < 0.5, "{dense:?}");
        assert!(dense[2][0] > 0.5 && dense[2][1] < 0.5, "{dense:?}");
        assert!(
            dense.iter().all(|r| r[2] < 0.1),
            "none never a target: {dense:?}"
        );
        let dir = tempfile::tempdir().unwrap();
        t.save(dir.path()).unwrap();
        let back = Trained::load(dir.path(), &device).unwrap();
        assert_eq!(back.meta.output, Output::Sigmoid);
        assert_eq!(
            back.predict(&texts, &device, 3),
            t.predict(&texts, &device, 3)
        );
    }

    #[test]
    fn same_seed_same_model() {
        let device = Device::flex();
        let (classes, train) = toy();
        let p = params(Weighting::Idf);
        let a = train_model(
            &p,
            9,
            &classes,
            &train,
            train.len(),
            &[],
            &device,
            |_, _, _| {},
        )
        .unwrap();
        let b = train_model(
            &p,
            9,
            &classes,
            &train,
            train.len(),
            &[],
            &device,
            |_, _, _| {},
        )
        .unwrap();
        let t = ["uses powershell"];
        assert_eq!(a.predict(&t, &device, 2), b.predict(&t, &device, 2));
    }

    #[test]
    fn idf_weighs_rare_ngrams_up() {
        let p = params(Weighting::Idf);
        let (classes, train) = toy();
        let t = train_model(
            &FastTextParams {
                epochs: 1,
                word_ngrams: 1,
                minn: 0,
                maxn: 0,
                ..p
            },
            1,
            &classes,
            &train,
            train.len(),
            &[],
            &Device::flex(),
            |_, _, _| {},
        )
        .unwrap();
        let idf = t.meta.idf.unwrap();
        let enc = Encoder::new(&t.meta.params, &t.meta.vocab, None);
        // Word unigrams only: "a" is in four training texts, "stage" in one.
        let common = enc.encode("a")[0].0 as usize;
        let rare = enc.encode("stage")[0].0 as usize;
        assert!(idf[common] < idf[rare], "{} vs {}", idf[common], idf[rare]);
    }
}
