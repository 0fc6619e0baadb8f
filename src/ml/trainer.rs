//! One interface for the classifier kinds: a [`Trainer`] turns (text, class) pairs into a
//! [`Classifier`], which predicts scores, saves itself into a cache entry and loads back from
//! it. The train and evaluate stages see only these two traits.

use std::path::Path;

use burn::tensor::Device;

use super::encoder::Embedder;
use super::encoder_cls::{self, Head, HeadMeta, SeqTrained};
use super::fasttext::{self, Trained};
use super::linear::{self, LinearModel};
use super::sigmoid::Targets;
use super::{Scored, TrainLog};
use crate::error::Result;
use crate::ml::params::{ClassifierKind, EncoderParams, FastTextParams, LinearParams, ModelParams};
use crate::progress::Progress;

/// What training and prediction may use besides their inputs: where tensors live, the
/// sentence-embedding cache (frozen encoders) and the progress display.
pub struct TrainContext<'a> {
    pub device: &'a Device,
    pub embedder: &'a Embedder,
    pub progress: &'a Progress,
}

/// A trained classifier over a fixed list of classes (indices into the caller's class list).
pub trait Classifier {
    /// The top `top_k` classes of each text, highest score first (softmax probabilities).
    fn predict(&self, cx: &TrainContext, texts: &[&str], top_k: usize) -> Result<Vec<Scored>>;
    /// Write everything needed to predict again into `dir` (a cache entry being written).
    fn save(&self, dir: &Path) -> Result<()>;
    /// The training record: epochs, best epoch, time, parameter count.
    fn log(&self) -> &TrainLog;
}

/// A classifier kind with its settings.
pub trait Trainer {
    /// The version of this kind's train stage (part of the cache key): raise it when the same
    /// settings and data would train a different model.
    fn version(&self) -> u32;
    /// Train on `train` (text, class index) with early stopping on `validation`; `progress` gets
    /// (step, total steps, mean loss so far). The first `real` pairs of `train` are real
    /// sentences, the rest an augmentation's: balanced class weights count the real ones only.
    #[allow(clippy::too_many_arguments)]
    fn train(
        &self,
        cx: &TrainContext,
        seed: u64,
        classes: &[String],
        train: &[(&str, usize)],
        real: usize,
        validation: &[(&str, usize)],
        progress: &mut dyn FnMut(usize, usize, f64),
    ) -> Result<Box<dyn Classifier>>;
    /// Train independent sigmoid outputs on (text, technique set) rows with binary
    /// cross-entropy (a multi-label task with `data.multi_label_head = "sigmoid"`,
    /// [`crate::ml::sigmoid`]); an empty set is a sentence with no technique, and `none` (in
    /// `classes`) is never in a set. The classifier's scores are then the sigmoids. Kinds
    /// without a sigmoid head answer a config error (the manifest check refuses them first).
    fn train_sigmoid(
        &self,
        _cx: &TrainContext,
        _seed: u64,
        _classes: &[String],
        _train: &[(&str, Vec<usize>)],
        _validation: &[(&str, Vec<usize>)],
        _progress: &mut dyn FnMut(usize, usize, f64),
    ) -> Result<Box<dyn Classifier>> {
        Err(crate::error::Error::config(
            "this classifier kind has no sigmoid head; set `data.multi_label_head = \"none-class\"`",
        ))
    }
    /// Load a classifier that [`Classifier::save`] wrote into `dir`.
    fn load(&self, cx: &TrainContext, dir: &Path) -> Result<Box<dyn Classifier>>;
    /// Whether `train` fits the model on the validation sentences too (no early stopping to
    /// drive): its figures on validation are then training figures, and are not reported.
    fn fits_validation(&self) -> bool {
        false
    }
}

/// The trainer of a classifier kind with its settings.
pub fn trainer<'a>(kind: ClassifierKind, params: &'a ModelParams) -> Box<dyn Trainer + 'a> {
    match (kind, params) {
        (_, ModelParams::FastText(p)) => Box::new(FastTextTrainer(p)),
        (_, ModelParams::Linear(p)) => Box::new(LinearTrainer(p)),
        (ClassifierKind::EncoderFrozen, ModelParams::Encoder(p)) => Box::new(HeadTrainer(p)),
        (kind, ModelParams::Encoder(p)) => Box::new(SeqTrainer { kind, p }),
    }
}

/// `fasttext`: the hashed n-gram bag trained in burn.
struct FastTextTrainer<'a>(&'a FastTextParams);

impl Trainer for FastTextTrainer<'_> {
    fn version(&self) -> u32 {
        fasttext::TRAIN_VERSION
    }
    fn train(
        &self,
        cx: &TrainContext,
        seed: u64,
        classes: &[String],
        train: &[(&str, usize)],
        real: usize,
        validation: &[(&str, usize)],
        progress: &mut dyn FnMut(usize, usize, f64),
    ) -> Result<Box<dyn Classifier>> {
        let t = fasttext::train(
            self.0, seed, classes, train, real, validation, cx.device, progress,
        )?;
        Ok(Box::new(t))
    }
    fn train_sigmoid(
        &self,
        cx: &TrainContext,
        seed: u64,
        classes: &[String],
        train: &[(&str, Vec<usize>)],
        validation: &[(&str, Vec<usize>)],
        progress: &mut dyn FnMut(usize, usize, f64),
    ) -> Result<Box<dyn Classifier>> {
        let t = fasttext::train_sigmoid(
            self.0, seed, classes, train, validation, cx.device, progress,
        )?;
        Ok(Box::new(t))
    }
    fn load(&self, cx: &TrainContext, dir: &Path) -> Result<Box<dyn Classifier>> {
        Ok(Box::new(Trained::load(dir, cx.device)?))
    }
}

impl Classifier for Trained {
    fn predict(&self, cx: &TrainContext, texts: &[&str], top_k: usize) -> Result<Vec<Scored>> {
        Ok(Trained::predict(self, texts, cx.device, top_k))
    }
    fn save(&self, dir: &Path) -> Result<()> {
        Trained::save(self, dir)
    }
    fn log(&self) -> &TrainLog {
        &self.log
    }
}

/// `encoder-frozen`: a head over cached sentence embeddings of a frozen encoder.
struct HeadTrainer<'a>(&'a EncoderParams);

/// A trained head and what it needs to embed new texts.
struct FrozenHead {
    head: Head,
    meta: HeadMeta,
    log: TrainLog,
}

impl Trainer for HeadTrainer<'_> {
    fn version(&self) -> u32 {
        encoder_cls::HEAD_TRAIN_VERSION
    }
    fn train(
        &self,
        cx: &TrainContext,
        seed: u64,
        classes: &[String],
        train: &[(&str, usize)],
        real: usize,
        validation: &[(&str, usize)],
        progress: &mut dyn FnMut(usize, usize, f64),
    ) -> Result<Box<dyn Classifier>> {
        let targets = Targets::Class {
            train: train.iter().map(|x| x.1).collect(),
            validation: validation.iter().map(|x| x.1).collect(),
        };
        let texts: Vec<&str> = train.iter().chain(validation).map(|x| x.0).collect();
        self.fit(
            cx,
            seed,
            classes,
            &texts,
            train.len(),
            real,
            targets,
            progress,
        )
    }
    fn train_sigmoid(
        &self,
        cx: &TrainContext,
        seed: u64,
        classes: &[String],
        train: &[(&str, Vec<usize>)],
        validation: &[(&str, Vec<usize>)],
        progress: &mut dyn FnMut(usize, usize, f64),
    ) -> Result<Box<dyn Classifier>> {
        let sets: Vec<Vec<usize>> = train.iter().map(|x| x.1.clone()).collect();
        let val_sets: Vec<Vec<usize>> = validation.iter().map(|x| x.1.clone()).collect();
        let targets = Targets::Sets {
            train: &sets,
            validation: &val_sets,
        };
        let texts: Vec<&str> = train.iter().chain(validation).map(|x| x.0).collect();
        let n = train.len();
        self.fit(cx, seed, classes, &texts, n, n, targets, progress)
    }
    fn load(&self, cx: &TrainContext, dir: &Path) -> Result<Box<dyn Classifier>> {
        let (head, meta, log) = encoder_cls::load_head(dir, cx.device)?;
        Ok(Box::new(FrozenHead { head, meta, log }))
    }
}

impl HeadTrainer<'_> {
    /// Embed `texts` (the train rows, then the validation rows; `n_train` of the former) and
    /// train the head on `targets`.
    #[allow(clippy::too_many_arguments)]
    fn fit(
        &self,
        cx: &TrainContext,
        seed: u64,
        classes: &[String],
        texts: &[&str],
        n_train: usize,
        real: usize,
        targets: Targets,
        progress: &mut dyn FnMut(usize, usize, f64),
    ) -> Result<Box<dyn Classifier>> {
        let p = self.0;
        let output = targets.output();
        let emb = cx.embedder.embed(
            &crate::hub::model_dir(p)?,
            p.max_length,
            texts,
            cx.device,
            cx.progress,
        )?;
        let rows: Vec<&[f32]> = emb.iter().map(Vec::as_slice).collect();
        let (tr, va) = rows.split_at(n_train);
        let (head, log) = encoder_cls::train_head(
            p,
            seed,
            classes.len(),
            crate::multilabel::none_index(classes),
            tr,
            real,
            va,
            targets,
            cx.device,
            progress,
        )?;
        let meta = HeadMeta {
            params: p.clone(),
            classes: classes.to_vec(),
            dim: emb.first().map(Vec::len).unwrap_or(0),
            output,
        };
        Ok(Box::new(FrozenHead { head, meta, log }))
    }
}

impl Classifier for FrozenHead {
    fn predict(&self, cx: &TrainContext, texts: &[&str], top_k: usize) -> Result<Vec<Scored>> {
        let p = &self.meta.params;
        let emb = cx.embedder.embed(
            &crate::hub::model_dir(p)?,
            p.max_length,
            texts,
            cx.device,
            cx.progress,
        )?;
        let rows: Vec<&[f32]> = emb.iter().map(Vec::as_slice).collect();
        Ok(encoder_cls::predict_head(
            &self.head,
            &rows,
            cx.device,
            top_k,
            self.meta.output,
        ))
    }
    fn save(&self, dir: &Path) -> Result<()> {
        encoder_cls::save_head(&self.head, &self.meta, &self.log, dir)
    }
    fn log(&self) -> &TrainLog {
        &self.log
    }
}

/// `encoder-finetune` (pretrained weights, all trained) and `transformer` (the same
/// architecture from random weights).
struct SeqTrainer<'a> {
    kind: ClassifierKind,
    p: &'a EncoderParams,
}

impl Trainer for SeqTrainer<'_> {
    fn version(&self) -> u32 {
        encoder_cls::ENCODER_TRAIN_VERSION
    }
    fn train(
        &self,
        cx: &TrainContext,
        seed: u64,
        classes: &[String],
        train: &[(&str, usize)],
        real: usize,
        validation: &[(&str, usize)],
        progress: &mut dyn FnMut(usize, usize, f64),
    ) -> Result<Box<dyn Classifier>> {
        let t = encoder_cls::train_seq(
            self.kind, self.p, seed, classes, train, real, validation, cx.device, progress,
        )?;
        Ok(Box::new(t))
    }
    fn load(&self, cx: &TrainContext, dir: &Path) -> Result<Box<dyn Classifier>> {
        Ok(Box::new(SeqTrained::load(dir, cx.device)?))
    }
}

impl Classifier for SeqTrained {
    fn predict(&self, cx: &TrainContext, texts: &[&str], top_k: usize) -> Result<Vec<Scored>> {
        SeqTrained::predict(self, texts, cx.device, top_k)
    }
    fn save(&self, dir: &Path) -> Result<()> {
        SeqTrained::save(self, dir)
    }
    fn log(&self) -> &TrainLog {
        &self.log
    }
}

/// `linear`: a one-vs-rest linear SVM over sparse TF-IDF n-grams (no burn).
struct LinearTrainer<'a>(&'a LinearParams);

impl Trainer for LinearTrainer<'_> {
    fn fits_validation(&self) -> bool {
        true
    }

    fn version(&self) -> u32 {
        linear::TRAIN_VERSION
    }
    fn train(
        &self,
        _cx: &TrainContext,
        seed: u64,
        classes: &[String],
        train: &[(&str, usize)],
        real: usize,
        validation: &[(&str, usize)],
        progress: &mut dyn FnMut(usize, usize, f64),
    ) -> Result<Box<dyn Classifier>> {
        let m = linear::train(self.0, seed, classes, train, real, validation, progress)?;
        Ok(Box::new(m))
    }
    fn train_sigmoid(
        &self,
        _cx: &TrainContext,
        seed: u64,
        classes: &[String],
        train: &[(&str, Vec<usize>)],
        validation: &[(&str, Vec<usize>)],
        progress: &mut dyn FnMut(usize, usize, f64),
    ) -> Result<Box<dyn Classifier>> {
        let m = linear::train_sigmoid(self.0, seed, classes, train, validation, progress)?;
        Ok(Box::new(m))
    }
    fn load(&self, _cx: &TrainContext, dir: &Path) -> Result<Box<dyn Classifier>> {
        Ok(Box::new(LinearModel::load(dir)?))
    }
}

impl Classifier for LinearModel {
    fn predict(&self, _cx: &TrainContext, texts: &[&str], top_k: usize) -> Result<Vec<Scored>> {
        Ok(LinearModel::predict(self, texts, top_k))
    }
    fn save(&self, dir: &Path) -> Result<()> {
        LinearModel::save(self, dir)
    }
    fn log(&self) -> &TrainLog {
        &self.log
    }
}
