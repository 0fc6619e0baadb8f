//! `synthcti export RUN_DIR CELL --to DIR`: a trained cell as a self-contained model folder, and
//! [`Exported`], which loads such a folder for `predict`.
//!
//! The folder:
//!
//! ```text
//! DIR/synthcti-model.json     # ExportMeta: classes with ATT&CK names and tactics, temperature,
//!                             # threshold and its validation / test figures, manifest digest
//! DIR/model/                  # the train stage's cache entry as it was (weights, model.json,
//!                             # tokenizer.json for encoder-finetune / transformer, entry.json)
//! DIR/encoder/                # encoder-frozen only: the sentence encoder it embeds with
//! DIR/metrics.json            # the cell's test metrics as the run recorded them
//! DIR/manifest.resolved.toml  # the run's manifest after defaults and overrides
//! DIR/README.md               # the model card
//! ```
//!
//! The temperature and threshold ([`crate::calibrate`]) are fitted on the run's validation split
//! (`RUN_DIR/split/validation.jsonl`) with the exported folder itself loaded, and the threshold's
//! precision and recall are measured on the run's test split; nothing is tuned on test.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::calibrate::{self, ThresholdScore};
use crate::data::Example;
use crate::data::attack::Catalog;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::ml::Device;
use crate::ml::encoder::SentenceEncoder;
use crate::ml::encoder_cls::{self, Head, HeadMeta, SeqTrained};
use crate::ml::fasttext;
use crate::ml::params::ClassifierKind;
use crate::record::CellResult;

/// The version of the folder layout and of [`ExportMeta`]; `predict` refuses other versions.
pub const FORMAT: u32 = 1;

/// A class of the model with what ATT&CK says about it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassInfo {
    /// The label as trained (an ATT&CK ID such as `T1059.001`, or `none`).
    pub id: String,
    /// The ATT&CK name, when the run's bundle has the ID.
    pub name: Option<String>,
    /// ATT&CK tactics (kill-chain phase names) of the technique.
    pub tactics: Vec<String>,
}

/// Test-split figures of the exported cell, as the run's evaluate stage measured them (argmax,
/// no threshold).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TestMetrics {
    pub n: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub micro_f1: f64,
    pub weighted_f1: f64,
}

/// `synthcti-model.json`: everything `predict` needs besides the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportMeta {
    pub format: u32,
    pub synthcti_version: String,
    pub experiment: String,
    pub cell: String,
    pub dataset: String,
    pub classifier: ClassifierKind,
    /// In the order of the model's outputs.
    pub classes: Vec<ClassInfo>,
    /// Temperature fitted on validation ([`calibrate::fit_temperature`]).
    pub temperature: f64,
    /// Validation mean negative log-likelihood before (T = 1) and after scaling.
    pub validation_nll: (f64, f64),
    /// Global threshold on the calibrated top score, chosen on validation
    /// ([`calibrate::choose_threshold`]); the validation figures at it.
    pub threshold: ThresholdScore,
    /// The same threshold on the test split.
    pub test_at_threshold: ThresholdScore,
    pub test: TestMetrics,
    /// `blake3:` of the run's `manifest.resolved.toml`.
    pub manifest_digest: String,
    /// The train stage's cache key the weights come from.
    pub train_key: String,
    pub train_size: usize,
    pub validation_size: usize,
    pub test_size: usize,
    /// A multi-label model (`data.multi_label = "keep"`): a sentence gets every technique whose
    /// score reaches the threshold (0, 1 or several), `none` never; `temperature` is 1 and
    /// `validation_nll` unused (see `crate::multilabel`).
    #[serde(default)]
    pub multi_label: bool,
}

impl ExportMeta {
    /// The ATT&CK IDs of the classes.
    pub fn class_ids(&self) -> Vec<&str> {
        self.classes.iter().map(|c| c.id.as_str()).collect()
    }
}

/// A loaded model of any kind: full probability rows over its classes.
pub enum Model {
    FastText(fasttext::Trained),
    Frozen {
        head: Head,
        meta: HeadMeta,
        encoder: SentenceEncoder,
    },
    Seq(SeqTrained),
    Linear(crate::ml::linear::LinearModel),
}

impl Model {
    /// Load the weights in `model_dir` (a train entry's files) for `kind`; `encoder_dir` is the
    /// sentence encoder of an `encoder-frozen` model.
    pub fn load(
        kind: ClassifierKind,
        model_dir: &Path,
        encoder_dir: &Path,
        device: &Device,
    ) -> Result<Self> {
        Ok(match kind {
            ClassifierKind::Fasttext => {
                Model::FastText(fasttext::Trained::load(model_dir, device)?)
            }
            ClassifierKind::EncoderFrozen => {
                let (head, meta, _) = encoder_cls::load_head(model_dir, device)?;
                let encoder = SentenceEncoder::load(encoder_dir, meta.params.max_length, device)?;
                Model::Frozen {
                    head,
                    meta,
                    encoder,
                }
            }
            ClassifierKind::EncoderFinetune | ClassifierKind::Transformer => {
                Model::Seq(SeqTrained::load(model_dir, device)?)
            }
            ClassifierKind::Linear => {
                Model::Linear(crate::ml::linear::LinearModel::load(model_dir)?)
            }
        })
    }

    /// The class labels in output order.
    pub fn classes(&self) -> &[String] {
        match self {
            Model::FastText(t) => &t.meta.classes,
            Model::Frozen { meta, .. } => &meta.classes,
            Model::Seq(t) => &t.meta.classes,
            Model::Linear(t) => &t.meta.classes,
        }
    }

    /// Softmax probabilities of every class for each text: `texts.len()` rows of
    /// `classes().len()` values, in class order.
    pub fn probabilities(&self, texts: &[&str], device: &Device) -> Result<Vec<Vec<f32>>> {
        let n = self.classes().len();
        let scored = match self {
            Model::FastText(t) => t.predict(texts, device, n),
            Model::Frozen {
                head,
                encoder,
                meta,
            } => {
                let emb = encoder.embed(texts, 32, device)?;
                let rows: Vec<&[f32]> = emb.iter().map(Vec::as_slice).collect();
                encoder_cls::predict_head(head, &rows, device, n, meta.output)
            }
            Model::Seq(t) => t.predict(texts, device, n)?,
            Model::Linear(t) => t.predict(texts, n),
        };
        Ok(scored
            .into_iter()
            .map(|s| {
                let mut row = vec![0f32; n];
                for (k, v) in s.top {
                    row[k] = v;
                }
                row
            })
            .collect())
    }
}

/// An exported folder, loaded: its metadata and model.
pub struct Exported {
    pub meta: ExportMeta,
    pub model: Model,
}

impl Exported {
    /// Load `dir` (written by [`export`]). Errors (exit 3) name the folder and what is missing.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let p = dir.join("synthcti-model.json");
        let bytes = std::fs::read(&p).map_err(|e| {
            Error::data(format!(
                "{} is not an exported model folder ({}: {e}); make one with `synthcti export RUN_DIR CELL --to DIR`",
                dir.display(),
                p.display()
            ))
        })?;
        let meta: ExportMeta = serde_json::from_slice(&bytes)
            .map_err(|e| Error::data(format!("{}: {e}", p.display())))?;
        if meta.format != FORMAT {
            return Err(Error::data(format!(
                "{} has format {}, this synthcti reads format {FORMAT}; export the cell again",
                p.display(),
                meta.format
            )));
        }
        let model = Model::load(
            meta.classifier,
            &dir.join("model"),
            &dir.join("encoder"),
            device,
        )?;
        if model.classes() != meta.class_ids() {
            return Err(Error::data(format!(
                "{}: the class list does not match the model's in {}/model",
                p.display(),
                dir.display()
            )));
        }
        Ok(Self { meta, model })
    }
}

/// What `export` needs besides the run folder and cell.
pub struct ExportOptions<'a> {
    pub cache: &'a Cache,
    pub to: &'a Path,
    /// An ATT&CK STIX bundle for names and tactics; else the run manifest's.
    pub attack: Option<&'a Path>,
}

/// Export cell `cell` of `run_dir` into `opts.to` (which must not exist or be empty); returns
/// the metadata written. Errors: no such cell (exit 2, listing the cells), the trained model not
/// in the cache (exit 5, saying how to get it back), an unwritable destination (exit 1).
pub fn export(run_dir: &Path, cell: &str, opts: &ExportOptions) -> Result<ExportMeta> {
    let cell_dir = run_dir.join("cells").join(cell);
    let metrics_path = cell_dir.join("metrics.json");
    if !metrics_path.is_file() {
        let mut cells: Vec<String> = std::fs::read_dir(run_dir.join("cells"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().join("metrics.json").is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        cells.sort();
        return Err(Error::config(format!(
            "{} has no finished cell `{cell}`; its cells: {}",
            run_dir.display(),
            if cells.is_empty() {
                "none (is it a run folder?)".to_string()
            } else {
                cells.join(", ")
            }
        )));
    }
    let result: CellResult = serde_json::from_slice(
        &std::fs::read(&metrics_path)
            .io_ctx(ErrorKind::Data, || metrics_path.display().to_string())?,
    )
    .map_err(|e| Error::data(format!("{}: {e}", metrics_path.display())))?;
    let entry = opts
        .cache
        .get_key("train", &result.train_key)?
        .ok_or_else(|| {
            Error::cache(format!(
                "the trained model of cell `{cell}` (train key {}) is not in the cache at {}; run the same manifest again with that cache (`synthcti run {}/manifest.resolved.toml --cache-dir …`) to retrain it, or pass --cache-dir",
                &result.train_key[..12.min(result.train_key.len())],
                opts.cache.root().display(),
                run_dir.display()
            ))
        })?;

    if result.multi_label.is_none() && result.validation_size == 0 {
        // Nothing to fit a temperature or choose a threshold on: an exported model would give
        // every sentence every technique.
        return Err(Error::config(format!(
            "cell {cell} has no validation sentences (split.validation_fraction = 0), so no temperature or threshold can be fitted for `predict`; rerun with split.validation_fraction > 0 (e.g. --set split.validation_fraction=0.1)"
        )));
    }
    let to = opts.to;
    if to.exists()
        && std::fs::read_dir(to)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(Error::config(format!(
            "--to {} exists and is not empty; choose a new folder",
            to.display()
        )));
    }
    let io = |what: &Path| format!("writing {}", what.display());
    std::fs::create_dir_all(to.join("model")).io_ctx(ErrorKind::Internal, || io(to))?;
    copy_files(&entry.dir, &to.join("model"))?;
    if result.cell.classifier == ClassifierKind::EncoderFrozen {
        let (_, meta, _) = encoder_cls::load_head(&entry.dir, &Device::flex())?;
        let src = crate::hub::model_dir(&meta.params)?;
        std::fs::create_dir_all(to.join("encoder")).io_ctx(ErrorKind::Internal, || io(to))?;
        let layout =
            crate::ml::model_files::Layout::of_dir(&src, crate::ml::model_files::Need::Model)?;
        for f in layout.files() {
            std::fs::copy(src.join(f), to.join("encoder").join(f)).io_ctx(
                ErrorKind::Data,
                || {
                    format!(
                        "copying the encoder {} of cell `{cell}` (run from the folder the run ran in, so its relative path resolves)",
                        src.join(f).display()
                    )
                },
            )?;
        }
    }
    let manifest_path = run_dir.join("manifest.resolved.toml");
    let manifest = std::fs::read(&manifest_path)
        .io_ctx(ErrorKind::Data, || manifest_path.display().to_string())?;
    std::fs::write(to.join("manifest.resolved.toml"), &manifest)
        .io_ctx(ErrorKind::Internal, || io(to))?;
    std::fs::copy(&metrics_path, to.join("metrics.json")).io_ctx(ErrorKind::Internal, || io(to))?;

    let device = Device::flex();
    let model = Model::load(
        result.cell.classifier,
        &to.join("model"),
        &to.join("encoder"),
        &device,
    )?;
    let catalog = match opts.attack {
        Some(p) => Some(Catalog::load(p)?),
        None => run_catalog(&manifest_path),
    };
    let classes: Vec<ClassInfo> = model
        .classes()
        .iter()
        .map(|id| {
            let t = catalog.as_ref().and_then(|c| c.get(id));
            ClassInfo {
                id: id.clone(),
                name: t.map(|t| t.name.clone()),
                tactics: t.map(|t| t.tactics.clone()).unwrap_or_default(),
            }
        })
        .collect();

    if let Some(ml) = &result.multi_label {
        // Multi-label: the run's evaluate stage chose the threshold on validation over every
        // technique's score (softmax with `none`, or sigmoids: crate::multilabel); scores stay
        // uncalibrated (T = 1, and predict does not rescale them).
        let meta = ExportMeta {
            format: FORMAT,
            synthcti_version: env!("CARGO_PKG_VERSION").to_string(),
            experiment: result.experiment.clone(),
            cell: cell.to_string(),
            dataset: result.dataset.clone(),
            classifier: result.cell.classifier,
            classes,
            temperature: 1.0,
            validation_nll: (0.0, 0.0),
            threshold: ml.validation,
            test_at_threshold: ml.test,
            test: TestMetrics {
                n: result.metrics.n,
                accuracy: result.metrics.accuracy,
                macro_f1: result.metrics.macro_f1,
                micro_f1: result.metrics.micro_f1,
                weighted_f1: result.metrics.weighted_f1,
            },
            manifest_digest: format!("blake3:{}", crate::hash::blake3_hex(&manifest)),
            train_key: result.train_key.clone(),
            train_size: result.train_size,
            validation_size: result.validation_size,
            test_size: result.test_size,
            multi_label: true,
        };
        return write_meta(to, meta, &result);
    }
    // The cell's own replicate's split (split/ for replicate 0, split/r<r>/ for the others).
    let split = crate::pipeline::split_dir(run_dir, result.cell.replicate);
    let read_split = |name: &str| read_split(&split.join(name));
    let validation = read_split("validation.jsonl")?;
    let (val_probs, val_gold) = split_probs(&model, &validation, &device)?;
    let (test_probs, test_gold) = split_probs(&model, &read_split("test.jsonl")?, &device)?;
    let temperature = calibrate::fit_temperature(&val_probs, &val_gold);
    let validation_nll = (
        calibrate::nll(&val_probs, &val_gold, 1.0),
        calibrate::nll(&val_probs, &val_gold, temperature),
    );
    let tops = |probs: &[Vec<f32>], gold: &[usize]| -> Vec<(f32, bool)> {
        probs
            .iter()
            .zip(gold)
            .map(|(p, &g)| {
                let q = calibrate::scale(p, temperature);
                let (k, s) = top1(&q);
                (s, k == g)
            })
            .collect()
    };
    let threshold = calibrate::choose_threshold(&tops(&val_probs, &val_gold));
    let test_at_threshold =
        calibrate::score_at(&tops(&test_probs, &test_gold), threshold.threshold);
    let m = &result.metrics;
    let meta = ExportMeta {
        format: FORMAT,
        synthcti_version: env!("CARGO_PKG_VERSION").to_string(),
        experiment: result.experiment.clone(),
        cell: cell.to_string(),
        dataset: result.dataset.clone(),
        classifier: result.cell.classifier,
        classes,
        temperature,
        validation_nll,
        threshold,
        test_at_threshold,
        test: TestMetrics {
            n: m.n,
            accuracy: m.accuracy,
            macro_f1: m.macro_f1,
            micro_f1: m.micro_f1,
            weighted_f1: m.weighted_f1,
        },
        manifest_digest: format!("blake3:{}", crate::hash::blake3_hex(&manifest)),
        train_key: result.train_key.clone(),
        train_size: result.train_size,
        validation_size: val_gold.len(),
        test_size: test_gold.len(),
        multi_label: false,
    };
    write_meta(to, meta, &result)
}

/// Write `synthcti-model.json` and the model card into `to`.
fn write_meta(to: &Path, meta: ExportMeta, result: &CellResult) -> Result<ExportMeta> {
    let io = |what: &Path| format!("writing {}", what.display());
    std::fs::write(
        to.join("synthcti-model.json"),
        serde_json::to_vec_pretty(&meta).expect("meta serializes"),
    )
    .io_ctx(ErrorKind::Internal, || io(to))?;
    std::fs::write(to.join("README.md"), model_card(&meta, result))
        .io_ctx(ErrorKind::Internal, || io(to))?;
    Ok(meta)
}

/// The highest (class, score) of a row.
pub fn top1(p: &[f32]) -> (usize, f32) {
    p.iter().enumerate().fold(
        (0, f32::NEG_INFINITY),
        |b, (i, &v)| if v > b.1 { (i, v) } else { b },
    )
}

/// The ATT&CK catalog the run's manifest names, when it still resolves.
fn run_catalog(manifest: &Path) -> Option<Catalog> {
    let m = crate::manifest::load(manifest, &[]).ok()?;
    let p = crate::data::attack_path(&m.data, &m.data_dir).ok()??;
    Catalog::load(&p).ok()
}

fn copy_files(from: &Path, to: &Path) -> Result<()> {
    for e in std::fs::read_dir(from).io_ctx(ErrorKind::Cache, || from.display().to_string())? {
        let e = e.io_ctx(ErrorKind::Cache, || from.display().to_string())?;
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).io_ctx(ErrorKind::Internal, || {
                format!("copying {} into {}", e.path().display(), to.display())
            })?;
        }
    }
    Ok(())
}

fn read_split(p: &Path) -> Result<Vec<Example>> {
    let text = std::fs::read_to_string(p).io_ctx(ErrorKind::Data, || {
        format!(
            "{} (a run folder written by this synthcti has it)",
            p.display()
        )
    })?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| Error::data(format!("{}: {e}", p.display()))))
        .collect()
}

/// Probability rows and gold class indices of a split's examples whose label the model knows.
fn split_probs(
    model: &Model,
    examples: &[Example],
    device: &Device,
) -> Result<(Vec<Vec<f32>>, Vec<usize>)> {
    let classes = model.classes();
    let known: Vec<(&str, usize)> = examples
        .iter()
        .filter_map(|e| {
            classes
                .iter()
                .position(|c| *c == e.label)
                .map(|i| (e.text.as_str(), i))
        })
        .collect();
    let texts: Vec<&str> = known.iter().map(|k| k.0).collect();
    let probs = model.probabilities(&texts, device)?;
    Ok((probs, known.iter().map(|k| k.1).collect()))
}

/// The model card: what the model is, what it was trained and tested on, how to use it, and
/// its limits.
pub fn model_card(meta: &ExportMeta, result: &CellResult) -> String {
    let t = &meta.test;
    let th = &meta.threshold;
    let tt = &meta.test_at_threshold;
    let named = meta.classes.iter().filter(|c| c.name.is_some()).count();
    let synth = match &result.synthetic {
        Some(s) => format!(
            "plus {} synthetic sentences for {} rare techniques (generator `{}`, template `{}`, k = {})",
            s.kept, s.targets, s.generator, s.template, s.k
        ),
        None => "real sentences only".to_string(),
    };
    let multi = if meta.multi_label {
        format!(
            "\n## Multi-label\n\nThis model is multi-label (TRAM-style, most sentences describe no \
             technique): a sentence gets **every** technique whose score (a softmax with a `none` \
             class, or independent sigmoids: see `threshold.rule` in `metrics.json`) reaches the \
             threshold ({:.4}, chosen on validation for micro-F1), so 0, 1 or several; `none` is \
             never reported. Scores are not temperature-scaled (T = 1), so the calibration \
             sentence above does not apply, and the metrics above are over (sentence, technique) \
             decisions at the threshold (accuracy = exact set match). Per-document F1 and \
             samples-F1 are in `metrics.json` (`multi_label`).\n",
            meta.threshold.threshold
        )
    } else {
        String::new()
    };
    multi_card(
        format!(
            "# synthcti model: {cell}\n\n\
        A `{kind}` classifier mapping single CTI sentences to one of {n} MITRE ATT&CK classes, exported \
        by synthcti {ver} from experiment `{exp}`.\n\n\
        ## Data\n\n\
        - Dataset: {dataset}; {train} training sentences ({synth}), {val} validation, {test} test \
        (the run's split; `manifest.resolved.toml` says how it was made; manifest digest \
        `{digest}`).\n\
        - Classes: {n} ({named} with an ATT&CK name from the run's bundle); see `synthcti-model.json`.\n\n\
        ## Metrics (test split, never used for any choice)\n\n\
        | | value |\n|---|---|\n\
        | accuracy (top-1, no threshold) | {acc:.4} |\n\
        | macro-F1 | {macro:.4} |\n\
        | micro-F1 | {micro:.4} |\n\
        | weighted-F1 | {weighted:.4} |\n\
        | threshold (calibrated top score, chosen on validation) | {thr:.4} |\n\
        | precision at the threshold | {tp:.4} |\n\
        | recall at the threshold | {tr:.4} |\n\
        | sentences given a technique | {tc:.1}% |\n\n\
        Scores are calibrated by temperature scaling on the validation split (T = {temp:.3}; validation \
        NLL {nb:.4} → {na:.4}). At the threshold a sentence gets its top technique only when the \
        calibrated score reaches it (validation precision {vp:.4}, recall {vr:.4}).\n\n\
        ## Intended use\n\n\
        Suggesting ATT&CK techniques for sentences of English threat reports, for an analyst to review: \
        `synthcti predict {cell_dir} report.html --format md`.\n\n\
        ## Limits\n\n\
        - It knows only its {n} classes; a technique outside them is never predicted, and a sentence \
        about one gets the nearest known class or, below the threshold, none.\n\
        - {negatives}\n\
        - Scores are calibrated on the validation split of the same sources; on reports of another \
        style they are less reliable.\n",
            cell = meta.cell,
            kind = meta.classifier.as_str(),
            n = meta.classes.len(),
            ver = meta.synthcti_version,
            exp = meta.experiment,
            dataset = meta.dataset,
            train = meta.train_size,
            val = meta.validation_size,
            test = meta.test_size,
            digest = meta.manifest_digest,
            acc = t.accuracy,
            macro = t.macro_f1,
            micro = t.micro_f1,
            weighted = t.weighted_f1,
            thr = th.threshold,
            tp = tt.precision,
            tr = tt.recall,
            tc = tt.coverage * 100.0,
            temp = meta.temperature,
            nb = meta.validation_nll.0,
            na = meta.validation_nll.1,
            vp = th.precision,
            vr = th.recall,
            cell_dir = "MODEL_DIR",
            negatives = if meta.classes.iter().any(|c| c.id == "none") {
                "Sentences without a technique were a class of their own (`none`) in training; \
                 `predict` never reports `none` as a technique."
            } else {
                "Trained on single-label sentences: every training sentence described a technique. \
                 The threshold was chosen on such sentences, so on prose that describes no technique \
                 at all precision is lower than the figure above."
            },
        ),
        multi,
    )
}

fn multi_card(card: String, multi: String) -> String {
    card + &multi
}

/// The line `export` prints: where the folder is and its headline figures.
pub fn summary_line(meta: &ExportMeta, to: &Path) -> String {
    format!(
        "exported {} ({}, {} classes) to {}: test macro-F1 {:.4}; threshold {:.4} (validation) gives test precision {:.4}, recall {:.4}",
        meta.cell,
        meta.classifier.as_str(),
        meta.classes.len(),
        to.display(),
        meta.test.macro_f1,
        meta.threshold.threshold,
        meta.test_at_threshold.precision,
        meta.test_at_threshold.recall
    )
}
