//! Encoder classifiers in burn:
//! - `encoder-frozen`: cached sentence embeddings of a pretrained encoder → an MLP head (Adam);
//! - `encoder-finetune`: the pretrained encoder, mean pooling and a linear head, all trained
//!   (AdamW, linear warm-up then linear decay, optional class-weighted loss);
//! - `transformer`: the same architecture at a configurable size, from random weights.
//!
//! All three stop early on the validation split's macro-F1 and keep the best epoch's model.

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams};
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::activation::{gelu, log_softmax, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::sigmoid::{Output, Targets};
use super::{EpochLog, Epochs, Scored, TrainLog, class_weights, length_bucketed_batches};
use crate::error::{Error, Result};
use crate::hash::SplitMix64;
use crate::metrics;
use crate::ml::encoder::{
    self, BertConfig, EncoderConfig, EncoderModel, mean_pool, pad_batch, token_ids,
};
use crate::ml::params::{ClassifierKind, EncoderParams};

/// The `encoder-finetune` / `transformer` train stage (2: dropout draws seeded per step, the
/// tokenizer saved inside the entry; 3: the encoder is BERT-or-ALBERT, saved under `encoder`).
pub const ENCODER_TRAIN_VERSION: u32 = 3;
/// The `encoder-frozen` head's train stage (2: the parameter count includes biases and a
/// linear head; 3: dropout draws seeded per step).
pub const HEAD_TRAIN_VERSION: u32 = 3;

/// Weighted mean cross-entropy of logits [B, C] against labels.
fn weighted_ce(logits: Tensor<2>, ys: &[usize], weights: &[f32], device: &Device) -> Tensor<1> {
    let b = ys.len();
    let y = Tensor::<1, Int>::from_data(
        TensorData::new(ys.iter().map(|&v| v as i64).collect::<Vec<_>>(), [b]),
        device,
    );
    let w = Tensor::<1>::from_data(
        TensorData::new(ys.iter().map(|&v| weights[v]).collect::<Vec<_>>(), [b]),
        device,
    );
    let picked: Tensor<1> = log_softmax(logits, 1)
        .gather(1, y.unsqueeze_dim(1))
        .squeeze_dim(1);
    -(picked * w.clone()).sum() / w.sum().clamp_min(1e-12)
}

/// Top-k of each row of class probabilities.
fn score_rows(probs: Tensor<2>, top_k: usize) -> Vec<Scored> {
    let [b, c] = probs.dims();
    let v: Vec<f32> = probs
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .expect("f32 scores");
    (0..b)
        .map(|row| {
            let s = &v[row * c..(row + 1) * c];
            let mut idx: Vec<usize> = (0..c).collect();
            idx.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
            Scored {
                pred: idx[0],
                top: idx.iter().take(top_k).map(|&k| (k, s[k])).collect(),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// encoder-frozen: an MLP head over cached embeddings.

#[derive(Module, Debug)]
pub struct Head {
    hidden: Option<Linear>,
    dropout: Dropout,
    out: Linear,
}

impl Head {
    fn new(input: usize, hidden: usize, classes: usize, dropout: f64, device: &Device) -> Self {
        let (h, width) = if hidden > 0 {
            (Some(LinearConfig::new(input, hidden).init(device)), hidden)
        } else {
            (None, input)
        };
        Self {
            hidden: h,
            dropout: DropoutConfig::new(dropout).init(),
            out: LinearConfig::new(width, classes).init(device),
        }
    }
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = match &self.hidden {
            Some(l) => gelu(l.forward(x)),
            None => x,
        };
        self.out.forward(self.dropout.forward(x))
    }
}

fn matrix(rows: &[&[f32]], device: &Device) -> Tensor<2> {
    let d = rows.first().map(|r| r.len()).unwrap_or(0);
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), d]), device)
}

/// Train the head on embeddings and their targets.
///
/// `targets` are the rows' classes (softmax cross-entropy, early stopping on validation
/// macro-F1) or their technique sets (independent sigmoids, binary cross-entropy, early stopping
/// on validation micro-F1 at its best threshold; [`crate::ml::sigmoid`]); `none` is the index of
/// the `none` class, never counted in the latter. `train` and `validation` are the embeddings,
/// in the order of the targets.
#[allow(clippy::too_many_arguments)]
pub fn train_head(
    p: &EncoderParams,
    seed: u64,
    n_classes: usize,
    none: Option<usize>,
    train: &[&[f32]],
    real: usize,
    validation: &[&[f32]],
    targets: Targets,
    device: &Device,
    mut progress: impl FnMut(usize, usize, f64),
) -> Result<(Head, TrainLog)> {
    let started = Instant::now();
    if train.is_empty() {
        return Err(Error::data("no training examples"));
    }
    let output = targets.output();
    let dim = train[0].len();
    let weights = match &targets {
        Targets::Class { train: ys, .. } => class_weights(
            p.class_weight,
            ys[..real.min(ys.len())].iter().copied(),
            n_classes,
        ),
        Targets::Sets { train: sets, .. } => {
            super::sigmoid::pos_weights(p.class_weight, sets, n_classes)
        }
    };
    let ad = device.clone().autodiff();
    let mut model = crate::ml::init_seeded(&ad, seed, || {
        Head::new(dim, p.head_hidden.unwrap_or(0), n_classes, p.dropout, &ad)
    });
    let mut optim = AdamConfig::new().init();
    let mut rng = SplitMix64::new(seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let val_x = matrix(validation, device);
    let mut epochs = Epochs::new(p.patience, p.min_delta);
    let steps = train.len().div_ceil(p.batch_size) * p.epochs;
    let mut step = 0;
    for epoch in 1..=p.epochs {
        let t0 = Instant::now();
        rng.shuffle(&mut order);
        let mut loss_sum = 0.0;
        for chunk in order.chunks(p.batch_size) {
            let x = matrix(&chunk.iter().map(|&i| train[i]).collect::<Vec<_>>(), &ad);
            let logits =
                crate::ml::seeded(&ad, crate::ml::step_seed(seed, step), || model.forward(x));
            let loss = match &targets {
                Targets::Class { train: ys, .. } => {
                    let ys: Vec<usize> = chunk.iter().map(|&i| ys[i]).collect();
                    weighted_ce(logits, &ys, &weights, &ad)
                }
                Targets::Sets { train: sets, .. } => {
                    let y = super::sigmoid::target_tensor(
                        chunk.iter().map(|&i| sets[i].as_slice()),
                        n_classes,
                        &ad,
                    );
                    super::sigmoid::bce_with_logits(logits, y, &weights)
                }
            };
            loss_sum += loss.clone().into_scalar::<f32>() as f64 * chunk.len() as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(p.lr, model, grads);
            step += 1;
            progress(step, steps, loss_sum / train.len() as f64);
        }
        let f1 = (!validation.is_empty()).then(|| {
            let scores = output.scores(model.valid().forward(val_x.clone()));
            match &targets {
                Targets::Class { validation: ys, .. } => {
                    let preds: Vec<usize> = score_rows(scores, 1).iter().map(|s| s.pred).collect();
                    metrics::macro_f1(ys, &preds, n_classes)
                }
                Targets::Sets {
                    validation: sets, ..
                } => {
                    let probs: Vec<Vec<f32>> = score_rows(scores, n_classes)
                        .iter()
                        .map(|s| s.dense(n_classes))
                        .collect();
                    super::sigmoid::validation_score(&probs, sets, none)
                }
            }
        });
        let entry = EpochLog {
            epoch,
            train_loss: loss_sum / train.len() as f64,
            validation_macro_f1: f1,
            seconds: t0.elapsed().as_secs_f64(),
        };
        if epochs.end(entry, &model) {
            break;
        }
    }
    let (best, best_epoch, log, stopped_early) = epochs.finish(p.epochs);
    let head = best.valid();
    let parameters = head.num_params();
    Ok((
        head,
        TrainLog {
            epochs: log,
            best_epoch,
            stopped_early,
            train_seconds: started.elapsed().as_secs_f64(),
            rows: 0,
            parameters,
        },
    ))
}

/// The top `top_k` classes of each embedding, scored by `output` (the head's
/// [`HeadMeta::output`]).
pub fn predict_head(
    head: &Head,
    embeddings: &[&[f32]],
    device: &Device,
    top_k: usize,
    output: Output,
) -> Vec<Scored> {
    let mut out = Vec::with_capacity(embeddings.len());
    for chunk in embeddings.chunks(512) {
        let probs = output.scores(head.forward(matrix(chunk, device)));
        out.extend(score_rows(probs, top_k));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// encoder-finetune and transformer: the whole encoder with a linear head.

/// An encoder (BERT, RoBERTa or ALBERT), mean pooling, dropout and a linear head.
#[derive(Module, Debug)]
pub struct SeqClassifier {
    pub encoder: EncoderModel,
    dropout: Dropout,
    out: Linear,
}

impl SeqClassifier {
    pub fn new(config: &EncoderConfig, classes: usize, dropout: f64, device: &Device) -> Self {
        Self {
            encoder: config.init(device),
            dropout: DropoutConfig::new(dropout).init(),
            out: LinearConfig::new(config.hidden_size(), classes).init(device),
        }
    }
    /// ids, mask: [B, L] → logits [B, classes].
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Tensor<2, Int>) -> Tensor<2> {
        let h = self.encoder.forward(ids, mask.clone());
        self.out.forward(self.dropout.forward(mean_pool(h, mask)))
    }
}

/// What is stored beside a sequence classifier's weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeqMeta {
    pub kind: ClassifierKind,
    pub params: EncoderParams,
    pub config: EncoderConfig,
    pub classes: Vec<String>,
}

pub struct SeqTrained {
    pub model: SeqClassifier,
    pub meta: SeqMeta,
    pub log: TrainLog,
    tokenizer: tokenizers::Tokenizer,
}

/// The architecture of a `transformer` cell: the size from its params, the vocabulary from the
/// tokenizer.
pub fn scratch_config(
    p: &EncoderParams,
    tokenizer: &tokenizers::Tokenizer,
    pad: usize,
) -> BertConfig {
    BertConfig {
        model_type: "bert".into(),
        vocab_size: tokenizer.get_vocab_size(true),
        hidden_size: p.hidden.unwrap_or(128),
        num_hidden_layers: p.layers.unwrap_or(2),
        num_attention_heads: p.heads.unwrap_or(4),
        intermediate_size: p.intermediate.unwrap_or(512),
        layer_norm_eps: 1e-12,
        max_position_embeddings: p.max_length,
        type_vocab_size: 2,
        pad_token_id: pad,
        hidden_act: "gelu".into(),
        hidden_dropout_prob: p.dropout,
    }
}

/// Warm-up then linear decay to zero.
pub fn lr_at(step: usize, total: usize, warmup: f64, peak: f64) -> f64 {
    let w = ((total as f64) * warmup).round() as usize;
    if step < w {
        peak * (step + 1) as f64 / w as f64
    } else {
        peak * (total.saturating_sub(step)) as f64 / (total - w).max(1) as f64
    }
}

/// Fine-tune (pretrained weights from `p.model`) or train from scratch (`transformer`).
#[allow(clippy::too_many_arguments)]
pub fn train_seq(
    kind: ClassifierKind,
    p: &EncoderParams,
    seed: u64,
    classes: &[String],
    train: &[(&str, usize)],
    real: usize,
    validation: &[(&str, usize)],
    device: &Device,
    mut progress: impl FnMut(usize, usize, f64),
) -> Result<SeqTrained> {
    let started = Instant::now();
    if train.is_empty() {
        return Err(Error::data("no training examples"));
    }
    let dir = crate::hub::model_dir(p)?;
    let ad = device.clone().autodiff();
    let (config, tokenizer, mut model) = if kind == ClassifierKind::Transformer {
        let pad = pad_id(&dir);
        let tok = encoder::load_tokenizer(&dir, p.max_length, pad as u32)?;
        let config = EncoderConfig::Bert(scratch_config(p, &tok, pad));
        let model = crate::ml::init_seeded(&ad, seed, || {
            SeqClassifier::new(&config, classes.len(), p.dropout, &ad)
        });
        (config, tok, model)
    } else {
        let mut config = encoder::read_config(&dir)?;
        config.set_dropout(p.dropout);
        let max = p.max_length.min(config.max_tokens());
        let tok = encoder::load_tokenizer(&dir, max, config.pad_token_id() as u32)?;
        let mut model = crate::ml::init_seeded(&ad, seed, || {
            SeqClassifier::new(&config, classes.len(), p.dropout, &ad)
        });
        encoder::load_weights(&mut model.encoder, &encoder::weights_path(&dir)?)?;
        (config, tok, model)
    };
    let tokenize = |texts: &[&str]| token_ids(&tokenizer, texts);
    let train_ids = tokenize(&train.iter().map(|x| x.0).collect::<Vec<_>>())?;
    let val_ids = tokenize(&validation.iter().map(|x| x.0).collect::<Vec<_>>())?;
    let val_y: Vec<usize> = validation.iter().map(|x| x.1).collect();
    let weights = class_weights(
        p.class_weight,
        train[..real.min(train.len())].iter().map(|x| x.1),
        classes.len(),
    );
    let mut optim = AdamWConfig::new()
        .with_weight_decay(p.weight_decay.unwrap_or(0.0) as f32)
        .init();
    let mut rng = SplitMix64::new(seed);
    let lens: Vec<usize> = train_ids.iter().map(Vec::len).collect();
    let steps = train.len().div_ceil(p.batch_size) * p.epochs;
    let mut epochs = Epochs::new(p.patience, p.min_delta);
    let mut step = 0;
    let pad = config.pad_token_id() as u32;
    for epoch in 1..=p.epochs {
        let t0 = Instant::now();
        let mut loss_sum = 0.0;
        // A fresh order each epoch, windows of 16 batches sorted by length.
        let mut order: Vec<usize> = (0..lens.len()).collect();
        for chunk in length_bucketed_batches(&mut rng, &mut order, |i| lens[i], p.batch_size, 16) {
            let seqs: Vec<&[u32]> = chunk.iter().map(|&i| train_ids[i].as_slice()).collect();
            let (ids, mask) = pad_batch(&seqs, pad, &ad);
            let ys: Vec<usize> = chunk.iter().map(|&i| train[i].1).collect();
            let logits = crate::ml::seeded(&ad, crate::ml::step_seed(seed, step), || {
                model.forward(ids, mask)
            });
            let loss = weighted_ce(logits, &ys, &weights, &ad);
            loss_sum += loss.clone().into_scalar::<f32>() as f64 * chunk.len() as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let lr = lr_at(step, steps, p.warmup.unwrap_or(0.0), p.lr);
            model = optim.step(lr, model, grads);
            step += 1;
            progress(step, steps, loss_sum / train.len() as f64);
        }
        let f1 = (!validation.is_empty()).then(|| {
            let valid = model.valid();
            let preds: Vec<usize> = predict_ids(&valid, &val_ids, pad, device, 1)
                .iter()
                .map(|s| s.pred)
                .collect();
            metrics::macro_f1(&val_y, &preds, classes.len())
        });
        let entry = EpochLog {
            epoch,
            train_loss: loss_sum / train.len() as f64,
            validation_macro_f1: f1,
            seconds: t0.elapsed().as_secs_f64(),
        };
        if epochs.end(entry, &model) {
            break;
        }
    }
    let (best, best_epoch, log, stopped_early) = epochs.finish(p.epochs);
    let model = best.valid();
    let parameters = model.num_params();
    Ok(SeqTrained {
        meta: SeqMeta {
            kind,
            params: p.clone(),
            config,
            classes: classes.to_vec(),
        },
        log: TrainLog {
            best_epoch,
            epochs: log,
            stopped_early,
            train_seconds: started.elapsed().as_secs_f64(),
            rows: 0,
            parameters,
        },
        model,
        tokenizer,
    })
}

/// The `[PAD]` (or `<pad>`) id of a tokenizer folder (0 when unknown).
fn pad_id(dir: &Path) -> usize {
    crate::ml::model_files::tokenizer(dir)
        .ok()
        .and_then(|t| t.token_to_id("[PAD]").or_else(|| t.token_to_id("<pad>")))
        .unwrap_or(0) as usize
}

fn predict_ids(
    model: &SeqClassifier,
    ids: &[Vec<u32>],
    pad: u32,
    device: &Device,
    top_k: usize,
) -> Vec<Scored> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| ids[i].len());
    let mut out: Vec<Option<Scored>> = vec![None; ids.len()];
    for chunk in order.chunks(64) {
        let seqs: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
        let (t, m) = pad_batch(&seqs, pad, device);
        let scored = score_rows(softmax(model.forward(t, m), 1), top_k);
        for (&i, s) in chunk.iter().zip(scored) {
            out[i] = Some(s);
        }
    }
    out.into_iter().map(|s| s.expect("scored")).collect()
}

impl SeqTrained {
    pub fn predict(&self, texts: &[&str], device: &Device, top_k: usize) -> Result<Vec<Scored>> {
        let ids = token_ids(&self.tokenizer, texts)?;
        Ok(predict_ids(
            &self.model,
            &ids,
            self.meta.config.pad_token_id() as u32,
            device,
            top_k,
        ))
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut store = BurnpackStore::from_file(dir.join("model.bpk")).overwrite(true);
        self.model
            .clone()
            .save_into(&mut store)
            .map_err(|e| Error::internal(format!("saving the model: {e}")))?;
        write_json(&dir.join("model.json"), &self.meta)?;
        // The tokenizer travels with the weights: a cached model needs no folder but its own.
        self.tokenizer
            .save(dir.join("tokenizer.json"), false)
            .map_err(|e| Error::internal(format!("saving the tokenizer: {e}")))?;
        write_json(&dir.join("train_log.json"), &self.log)
    }

    /// Load a model saved by [`SeqTrained::save`]: weights, meta and tokenizer from `dir` alone.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let meta: SeqMeta = read_json(&dir.join("model.json"))?;
        let log: TrainLog = read_json(&dir.join("train_log.json"))?;
        let mut model = SeqClassifier::new(&meta.config, meta.classes.len(), 0.0, device);
        let mut store = BurnpackStore::from_file(dir.join("model.bpk"));
        model
            .load_from(&mut store)
            .map_err(|e| Error::cache(format!("loading {}: {e}", dir.display())))?;
        let max = meta.params.max_length.min(meta.config.max_tokens());
        let tokenizer = encoder::load_tokenizer(dir, max, meta.config.pad_token_id() as u32)?;
        Ok(Self {
            model,
            meta,
            log,
            tokenizer,
        })
    }
}

/// A trained head with what it needs besides its weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeadMeta {
    pub params: EncoderParams,
    pub classes: Vec<String>,
    pub dim: usize,
    /// Softmax, or independent sigmoids (`data.multi_label_head = "sigmoid"`).
    #[serde(default)]
    pub output: Output,
}

pub fn save_head(head: &Head, meta: &HeadMeta, log: &TrainLog, dir: &Path) -> Result<()> {
    let mut store = BurnpackStore::from_file(dir.join("model.bpk")).overwrite(true);
    head.clone()
        .save_into(&mut store)
        .map_err(|e| Error::internal(format!("saving the head: {e}")))?;
    write_json(&dir.join("model.json"), meta)?;
    write_json(&dir.join("train_log.json"), log)
}

pub fn load_head(dir: &Path, device: &Device) -> Result<(Head, HeadMeta, TrainLog)> {
    let meta: HeadMeta = read_json(&dir.join("model.json"))?;
    let log: TrainLog = read_json(&dir.join("train_log.json"))?;
    let mut head = Head::new(
        meta.dim,
        meta.params.head_hidden.unwrap_or(0),
        meta.classes.len(),
        0.0,
        device,
    );
    let mut store = BurnpackStore::from_file(dir.join("model.bpk"));
    head.load_from(&mut store)
        .map_err(|e| Error::cache(format!("loading {}: {e}", dir.display())))?;
    Ok((head, meta, log))
}

fn write_json<T: Serialize>(p: &Path, v: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(v).map_err(|e| Error::internal(e.to_string()))?;
    std::fs::write(p, bytes).map_err(|e| Error::internal(format!("writing {}: {e}", p.display())))
}

fn read_json<T: for<'de> Deserialize<'de>>(p: &Path) -> Result<T> {
    let bytes =
        std::fs::read(p).map_err(|e| Error::cache(format!("reading {}: {e}", p.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::cache(format!("reading {}: {e}", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::params::ClassWeight;

    #[test]
    fn warmup_then_linear_decay() {
        assert!((lr_at(0, 100, 0.1, 1.0) - 0.1).abs() < 1e-9);
        assert!((lr_at(9, 100, 0.1, 1.0) - 1.0).abs() < 1e-9);
        assert!((lr_at(55, 100, 0.1, 1.0) - 0.5).abs() < 1e-9);
        assert!(lr_at(99, 100, 0.1, 1.0) < 0.02);
        assert!((lr_at(0, 10, 0.0, 2.0) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn balanced_weights_are_inverse_frequency() {
        let w = class_weights(ClassWeight::Balanced, [0, 0, 0, 1].into_iter(), 3);
        assert!((w[0] - 4.0 / 9.0).abs() < 1e-6);
        assert!((w[1] - 4.0 / 3.0).abs() < 1e-6);
        assert_eq!(w[2], 0.0);
    }

    #[test]
    fn padding_goes_to_the_longest_in_the_batch() {
        let d = Device::flex();
        let (ids, mask) = pad_batch(&[&[5, 6, 7], &[8]], 0, &d);
        assert_eq!(ids.dims(), [2, 3]);
        let m: Vec<i64> = mask.into_data().convert::<i64>().try_to_vec().unwrap();
        assert_eq!(m, vec![1, 1, 1, 1, 0, 0]);
    }
}
