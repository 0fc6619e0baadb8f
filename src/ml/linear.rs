//! `linear`: a one-vs-rest linear SVM (L2-regularized, squared hinge loss) over sparse TF-IDF
//! word and character n-grams ([`super::tfidf`]), trained by dual coordinate descent.
//!
//! Why a linear SVM rather than multinomial logistic regression: it is the literature's
//! strongest classic baseline for this task and the peer it is measured against
//! (scikit-learn's `LinearSVC`), its dual coordinate descent touches only the nonzeros of a
//! sparse row and converges in a few passes, and the one-vs-rest problems are independent, so
//! they train in parallel without a dense `classes × features` gradient.
//!
//! Solver: Hsieh, Chang, Lin, Keerthi & Sundararajan, "A Dual Coordinate Descent Method for
//! Large-scale Linear SVM", ICML 2008 (Algorithm 1 with shrinking, L2-loss case: `U = ∞`,
//! `D_ii = 1 / (2 C_i)`), the method of LIBLINEAR's `solve_l2r_l1l2_svc`. The bias is a
//! constant feature of value 1 (regularized), as in LIBLINEAR with `-B 1`. With class weights,
//! class `c`'s problem gives its positives `C × weight[c]` and its negatives `C`, as LIBLINEAR
//! does.
//!
//! A row's scores are the softmax of its decision values (monotone in them, so the ranking is
//! the SVM's; they are not calibrated probabilities).
//!
//! The model trains on the train and validation examples together: it has no early stopping
//! for validation to drive.

use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::sigmoid::Output;
use super::tfidf::{Analyzer, Csr, FitOptions, Vectorizer};
use super::{EpochLog, Scored, TrainLog};
use crate::error::{Error, Result};
use crate::hash::SplitMix64;
use crate::ml::params::LinearParams;

/// Version of the linear train stage (part of its cache key).
pub const TRAIN_VERSION: u32 = 1;

/// A trained linear model: the vectorizer and the weights, stored feature-major so a sparse row
/// is scored by visiting only its own features.
pub struct LinearModel {
    pub meta: LinearMeta,
    pub vectorizer: Vectorizer,
    /// Feature `j`'s nonzero weights are `w_class[w_ptr[j]..w_ptr[j+1]]` with values `w_value`.
    w_ptr: Vec<u64>,
    w_class: Vec<u32>,
    w_value: Vec<f32>,
    /// Per-class bias.
    bias: Vec<f32>,
    pub log: TrainLog,
}

/// What is stored beside the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinearMeta {
    pub params: LinearParams,
    pub classes: Vec<String>,
    /// Passes over the data each one-vs-rest problem took.
    pub passes: Vec<usize>,
    /// How decision values become scores: a softmax over the classes, or a sigmoid each
    /// ([`train_sigmoid`]).
    #[serde(default)]
    pub output: Output,
}

/// The analyzers a configuration asks for.
fn analyzers(p: &LinearParams) -> Vec<Analyzer> {
    let mut a = vec![Analyzer::Word {
        min: 1,
        max: p.word_ngrams,
    }];
    if p.maxn > 0 {
        a.push(Analyzer::CharWb {
            min: p.minn,
            max: p.maxn,
        });
    }
    a
}

/// One binary L2-loss SVM by dual coordinate descent; returns (weights with the bias last,
/// passes used). `y[i]` is +1 or -1, `cost[i]` the example's `C`.
fn solve_binary(
    x: &Csr,
    sq_norm: &[f64],
    y: &[f64],
    cost: &[f64],
    tol: f64,
    max_passes: usize,
    rng: &mut SplitMix64,
) -> (Vec<f64>, usize) {
    let n = x.rows();
    let bias = x.cols;
    let mut w = vec![0.0f64; x.cols + 1];
    let mut alpha = vec![0.0f64; n];
    let diag: Vec<f64> = cost.iter().map(|c| 0.5 / c).collect();
    let qd: Vec<f64> = (0..n).map(|i| sq_norm[i] + 1.0 + diag[i]).collect();
    let mut index: Vec<usize> = (0..n).collect();
    let mut active = n;
    // With U = ∞ only the lower bound shrinks, so LIBLINEAR's PGmin_old is never needed.
    let mut pg_max_old = f64::INFINITY;
    let mut pass = 0;
    while pass < max_passes {
        pass += 1;
        for i in 0..active {
            let j = i + rng.below(active - i);
            index.swap(i, j);
        }
        let (mut pg_max, mut pg_min) = (f64::NEG_INFINITY, f64::INFINITY);
        let mut s = 0;
        while s < active {
            let i = index[s];
            let (cols, vals) = x.row(i);
            let mut dot = w[bias];
            for (&c, &v) in cols.iter().zip(vals) {
                dot += w[c as usize] * v as f64;
            }
            let g = y[i] * dot - 1.0 + diag[i] * alpha[i];
            let mut pg = 0.0;
            if alpha[i] == 0.0 {
                if g > pg_max_old {
                    active -= 1;
                    index.swap(s, active);
                    continue;
                } else if g < 0.0 {
                    pg = g;
                }
            } else {
                pg = g;
            }
            pg_max = pg_max.max(pg);
            pg_min = pg_min.min(pg);
            if pg.abs() > 1e-12 {
                let old = alpha[i];
                alpha[i] = (old - g / qd[i]).max(0.0);
                let d = (alpha[i] - old) * y[i];
                for (&c, &v) in cols.iter().zip(vals) {
                    w[c as usize] += d * v as f64;
                }
                w[bias] += d;
            }
            s += 1;
        }
        if pg_max - pg_min <= tol {
            if active == n {
                break;
            }
            active = n;
            pg_max_old = f64::INFINITY;
            continue;
        }
        pg_max_old = if pg_max <= 0.0 { f64::INFINITY } else { pg_max };
    }
    (w, pass)
}

/// Train on `train` and `validation` together (see the module notes); `progress` gets
/// (one-vs-rest problems done, classes, 0).
///
/// # Errors
/// When there are no training examples.
pub fn train(
    p: &LinearParams,
    seed: u64,
    classes: &[String],
    train: &[(&str, usize)],
    real: usize,
    validation: &[(&str, usize)],
    progress: &mut dyn FnMut(usize, usize, f64),
) -> Result<LinearModel> {
    let all: Vec<(&str, usize)> = train.iter().chain(validation).copied().collect();
    let texts: Vec<&str> = all.iter().map(|x| x.0).collect();
    // Balanced weights over the real sentences (train's first `real`, and validation) only.
    let weights = super::class_weights(
        p.class_weight,
        train[..real.min(train.len())]
            .iter()
            .chain(validation)
            .map(|x| x.1),
        classes.len(),
    );
    let ys: Vec<usize> = all.iter().map(|x| x.1).collect();
    fit(
        p,
        seed,
        classes,
        &texts,
        &|i, c| ys[i] == c,
        &weights,
        Output::Softmax,
        progress,
    )
}

/// The one-vs-rest problems on (text, technique set) rows of a multi-label task
/// (`data.multi_label_head = "sigmoid"`): class `c`'s positives are the rows whose set holds it
/// (an empty set: a sentence with no technique, negative for every class), with `class_weight =
/// "balanced"` costed `C × negatives_c / positives_c` ([`crate::ml::sigmoid::pos_weights`]).
/// A row's scores are the sigmoids of its decision values (monotone in them; not calibrated
/// probabilities). Train and validation rows are trained on together, as [`train`] does.
pub fn train_sigmoid(
    p: &LinearParams,
    seed: u64,
    classes: &[String],
    train: &[(&str, Vec<usize>)],
    validation: &[(&str, Vec<usize>)],
    progress: &mut dyn FnMut(usize, usize, f64),
) -> Result<LinearModel> {
    let sets: Vec<Vec<usize>> = train
        .iter()
        .chain(validation)
        .map(|x| x.1.clone())
        .collect();
    let texts: Vec<&str> = train.iter().chain(validation).map(|x| x.0).collect();
    let weights = super::sigmoid::pos_weights(p.class_weight, &sets, classes.len());
    fit(
        p,
        seed,
        classes,
        &texts,
        &|i, c| sets[i].contains(&c),
        &weights,
        Output::Sigmoid,
        progress,
    )
}

/// Fit the one-vs-rest problems: row `i` is a positive of class `c` when `positive(i, c)`, whose
/// positives cost `C × weights[c]`.
#[allow(clippy::too_many_arguments)]
fn fit(
    p: &LinearParams,
    seed: u64,
    classes: &[String],
    texts: &[&str],
    positive: &(dyn Fn(usize, usize) -> bool + Sync),
    weights: &[f32],
    output: Output,
    progress: &mut dyn FnMut(usize, usize, f64),
) -> Result<LinearModel> {
    let start = Instant::now();
    if texts.is_empty() {
        return Err(Error::data("the linear classifier got no training example"));
    }
    let n = texts.len();
    let vectorizer = Vectorizer::fit(
        texts,
        &analyzers(p),
        FitOptions {
            min_df: p.min_df,
            max_features: p.max_features,
            sublinear_tf: p.sublinear_tf,
        },
    );
    let x = vectorizer.transform(texts);
    let sq_norm: Vec<f64> = (0..x.rows())
        .map(|i| x.row(i).1.iter().map(|&v| (v as f64) * (v as f64)).sum())
        .collect();
    let k = classes.len();
    // Per class: its nonzero (feature, weight) pairs, its bias, its passes, its summed squared
    // hinge loss over the examples.
    type Solved = (Vec<(u32, f32)>, f32, usize, f64);
    let solve = |c: usize| -> Solved {
        let y: Vec<f64> = (0..n)
            .map(|i| if positive(i, c) { 1.0 } else { -1.0 })
            .collect();
        let cost: Vec<f64> = y
            .iter()
            .map(|&v| {
                if v > 0.0 {
                    p.c * weights[c] as f64
                } else {
                    p.c
                }
            })
            .collect();
        let mut rng = SplitMix64::new(seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (w, passes) = if y.iter().any(|&v| v > 0.0) && cost.iter().all(|&v| v > 0.0) {
            solve_binary(&x, &sq_norm, &y, &cost, p.tol, p.epochs, &mut rng)
        } else {
            // A class with no example (or weight 0) never wins: no weights, a low bias.
            let mut w = vec![0.0; x.cols + 1];
            w[x.cols] = -1.0;
            (w, 0)
        };
        let nz: Vec<(u32, f32)> = w[..x.cols]
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != 0.0)
            .map(|(j, v)| (j as u32, *v as f32))
            .collect();
        let loss: f64 = (0..x.rows())
            .map(|i| {
                let (cols, vals) = x.row(i);
                let dot: f64 = w[x.cols]
                    + cols
                        .iter()
                        .zip(vals)
                        .map(|(&j, &v)| w[j as usize] * v as f64)
                        .sum::<f64>();
                (1.0 - y[i] * dot).max(0.0).powi(2)
            })
            .sum();
        (nz, w[x.cols] as f32, passes, loss)
    };
    // The one-vs-rest problems in parallel (rayon's work stealing balances rare and common
    // classes); each finished problem is reported on this thread as it completes.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let solved: Vec<Solved> = std::thread::scope(|s| {
        let worker = s.spawn(move || {
            (0..k)
                .into_par_iter()
                .map_with(done_tx, |tx, c| {
                    let r = solve(c);
                    let _ = tx.send(());
                    r
                })
                .collect::<Vec<_>>()
        });
        for (n, ()) in done_rx.iter().enumerate() {
            progress(n + 1, k, 0.0);
        }
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    // Feature-major weights.
    let mut counts = vec![0u64; x.cols + 1];
    for (nz, _, _, _) in &solved {
        for &(j, _) in nz {
            counts[j as usize + 1] += 1;
        }
    }
    for j in 0..x.cols {
        counts[j + 1] += counts[j];
    }
    let w_ptr = counts;
    let nnz = w_ptr[x.cols] as usize;
    let mut fill = w_ptr.clone();
    let mut w_class = vec![0u32; nnz];
    let mut w_value = vec![0f32; nnz];
    for (c, (nz, _, _, _)) in solved.iter().enumerate() {
        for &(j, v) in nz {
            let at = fill[j as usize] as usize;
            w_class[at] = c as u32;
            w_value[at] = v;
            fill[j as usize] += 1;
        }
    }
    let bias = solved.iter().map(|s| s.1).collect();
    let passes: Vec<usize> = solved.iter().map(|s| s.2).collect();
    let seconds = start.elapsed().as_secs_f64();
    let max_passes = passes.iter().copied().max().unwrap_or(0);
    let log = TrainLog {
        epochs: vec![EpochLog {
            epoch: max_passes,
            // Mean squared hinge loss over examples and one-vs-rest problems.
            train_loss: solved.iter().map(|s| s.3).sum::<f64>() / (n * k) as f64,
            validation_macro_f1: None,
            seconds,
        }],
        best_epoch: max_passes,
        stopped_early: false,
        train_seconds: seconds,
        rows: n,
        parameters: nnz + k,
    };
    Ok(LinearModel {
        meta: LinearMeta {
            params: p.clone(),
            classes: classes.to_vec(),
            passes,
            output,
        },
        vectorizer,
        w_ptr,
        w_class,
        w_value,
        bias,
        log,
    })
}

impl LinearModel {
    /// Decision values (`n × classes`, row-major) of `texts`.
    pub fn decision(&self, texts: &[&str]) -> Vec<f32> {
        let x = self.vectorizer.transform(texts);
        let k = self.bias.len();
        let mut out = Vec::with_capacity(texts.len() * k);
        for i in 0..x.rows() {
            let mut s = self.bias.clone();
            let (cols, vals) = x.row(i);
            for (&j, &v) in cols.iter().zip(vals) {
                let r = self.w_ptr[j as usize] as usize..self.w_ptr[j as usize + 1] as usize;
                for (&c, &w) in self.w_class[r.clone()].iter().zip(&self.w_value[r]) {
                    s[c as usize] += v * w;
                }
            }
            out.extend(s);
        }
        out
    }

    /// The top `top_k` classes of each text by decision value, scored by the softmax of the
    /// decision values.
    pub fn predict(&self, texts: &[&str], top_k: usize) -> Vec<Scored> {
        let k = self.bias.len();
        let d = self.decision(texts);
        d.chunks(k.max(1))
            .take(texts.len())
            .map(|row| {
                let (e, z): (Vec<f32>, f32) = match self.meta.output {
                    Output::Softmax => {
                        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let e: Vec<f32> = row.iter().map(|v| (v - m).exp()).collect();
                        let z = e.iter().sum();
                        (e, z)
                    }
                    Output::Sigmoid => {
                        (row.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect(), 1.0)
                    }
                };
                let mut idx: Vec<usize> = (0..k).collect();
                idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                Scored {
                    pred: idx[0],
                    top: idx.iter().take(top_k).map(|&c| (c, e[c] / z)).collect(),
                }
            })
            .collect()
    }

    /// Write `model.json` (settings, classes, vocabulary, idf), `weights.safetensors` and
    /// `train_log.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let bad = |e: String| Error::internal(format!("saving the linear model: {e}"));
        let meta =
            serde_json::to_vec(&(&self.meta, &self.vectorizer)).map_err(|e| bad(e.to_string()))?;
        std::fs::write(dir.join("model.json"), meta).map_err(|e| bad(e.to_string()))?;
        let bytes = |v: Vec<[u8; 4]>| v.concat();
        let ptr: Vec<u8> = self.w_ptr.iter().flat_map(|v| v.to_le_bytes()).collect();
        let class = bytes(self.w_class.iter().map(|v| v.to_le_bytes()).collect());
        let value = bytes(self.w_value.iter().map(|v| v.to_le_bytes()).collect());
        let bias = bytes(self.bias.iter().map(|v| v.to_le_bytes()).collect());
        use safetensors::{Dtype, tensor::TensorView};
        fn view(dtype: Dtype, n: usize, data: &[u8]) -> Result<TensorView<'_>> {
            TensorView::new(dtype, vec![n], data)
                .map_err(|e| Error::internal(format!("saving the linear model: {e}")))
        }
        let tensors = vec![
            ("w_ptr", view(Dtype::U64, self.w_ptr.len(), &ptr)?),
            ("w_class", view(Dtype::U32, self.w_class.len(), &class)?),
            ("w_value", view(Dtype::F32, self.w_value.len(), &value)?),
            ("bias", view(Dtype::F32, self.bias.len(), &bias)?),
        ];
        safetensors::serialize_to_file(tensors, None, &dir.join("weights.safetensors"))
            .map_err(|e| bad(e.to_string()))?;
        let log = serde_json::to_vec_pretty(&self.log).map_err(|e| bad(e.to_string()))?;
        std::fs::write(dir.join("train_log.json"), log).map_err(|e| bad(e.to_string()))?;
        Ok(())
    }

    /// Load what [`LinearModel::save`] wrote.
    ///
    /// # Errors
    /// A cache error when a file is missing or malformed.
    pub fn load(dir: &Path) -> Result<Self> {
        let bad = |e: String| {
            Error::cache(format!(
                "loading the linear model in {}: {e}",
                dir.display()
            ))
        };
        let (meta, mut vectorizer): (LinearMeta, Vectorizer) = serde_json::from_slice(
            &std::fs::read(dir.join("model.json")).map_err(|e| bad(e.to_string()))?,
        )
        .map_err(|e| bad(e.to_string()))?;
        vectorizer.reindex();
        let log: TrainLog = serde_json::from_slice(
            &std::fs::read(dir.join("train_log.json")).map_err(|e| bad(e.to_string()))?,
        )
        .map_err(|e| bad(e.to_string()))?;
        let raw = std::fs::read(dir.join("weights.safetensors")).map_err(|e| bad(e.to_string()))?;
        let st = safetensors::SafeTensors::deserialize(&raw).map_err(|e| bad(e.to_string()))?;
        let get = |name: &str| -> Result<Vec<u8>> {
            Ok(st
                .tensor(name)
                .map_err(|e| bad(e.to_string()))?
                .data()
                .to_vec())
        };
        let w_ptr: Vec<u64> = get("w_ptr")?
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        let four = |v: Vec<u8>| -> Vec<[u8; 4]> {
            v.chunks_exact(4)
                .map(|b| b.try_into().expect("4 bytes"))
                .collect()
        };
        let w_class: Vec<u32> = four(get("w_class")?)
            .into_iter()
            .map(u32::from_le_bytes)
            .collect();
        let w_value: Vec<f32> = four(get("w_value")?)
            .into_iter()
            .map(f32::from_le_bytes)
            .collect();
        let bias: Vec<f32> = four(get("bias")?)
            .into_iter()
            .map(f32::from_le_bytes)
            .collect();
        if w_ptr.len() != vectorizer.cols() + 1
            || bias.len() != meta.classes.len()
            || w_class.len() != w_value.len()
            || w_ptr.last().copied() != Some(w_class.len() as u64)
            || w_class.iter().any(|&c| c as usize >= bias.len())
        {
            return Err(bad(
                "weights do not match the vocabulary or the classes".into()
            ));
        }
        Ok(Self {
            meta,
            vectorizer,
            w_ptr,
            w_class,
            w_value,
            bias,
            log,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::params::ClassWeight;

    fn params() -> LinearParams {
        LinearParams {
            word_ngrams: 2,
            minn: 2,
            maxn: 5,
            max_features: 0,
            min_df: 1,
            sublinear_tf: true,
            c: 1.0,
            tol: 1e-4,
            epochs: 1000,
            class_weight: ClassWeight::Balanced,
        }
    }

    fn toy() -> (Vec<String>, Vec<(&'static str, usize)>) {
        let classes = vec!["T1059".to_string(), "T1071".into(), "T1486".into()];
        let train = vec![
            ("the malware runs powershell commands", 0),
            ("it executes cmd.exe with a script", 0),
            ("a powershell script launches the payload", 0),
            ("beacons over https to its c2 server", 1),
            ("command and control traffic uses http", 1),
            ("the implant talks to the c2 over dns", 1),
            ("files are encrypted for ransom", 2),
            ("the ransomware encrypts documents", 2),
            ("victims must pay to decrypt files", 2),
        ];
        (classes, train)
    }

    #[test]
    fn dual_coordinate_descent_reaches_the_l2_svm_optimum() {
        // Two 1-D points x = +1 (y = +1) and x = -1 (y = -1) with the bias feature 1: the
        // primal ½(w² + b²) + C[(1 − w − b)² + (1 − w + b)²] with C = 1 has b = 0 by symmetry
        // and w − 4(1 − w) = 0, so w = 4/5.
        let x = Csr {
            indptr: vec![0, 1, 2],
            indices: vec![0, 0],
            values: vec![1.0, -1.0],
            cols: 1,
        };
        let (w, passes) = solve_binary(
            &x,
            &[1.0, 1.0],
            &[1.0, -1.0],
            &[1.0, 1.0],
            1e-10,
            10_000,
            &mut SplitMix64::new(0),
        );
        assert!((w[0] - 0.8).abs() < 1e-6, "{w:?}");
        assert!(w[1].abs() < 1e-6, "{w:?}");
        assert!(passes < 10_000);
    }

    #[test]
    fn it_learns_the_toy_classes_and_reloads_to_the_same_scores() {
        let (classes, train) = toy();
        let mut steps = Vec::new();
        let m = train_fn(&classes, &train, &mut steps);
        assert_eq!(steps.last(), Some(&3), "progress ends at every class done");
        let test = [
            "powershell runs a script",
            "c2 traffic over https",
            "documents encrypted for ransom",
        ];
        let preds: Vec<usize> = m.predict(&test, 2).iter().map(|s| s.pred).collect();
        assert_eq!(preds, [0, 1, 2]);
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path()).unwrap();
        let back = LinearModel::load(dir.path()).unwrap();
        assert_eq!(back.predict(&test, 3), m.predict(&test, 3));
        assert_eq!(back.decision(&test), m.decision(&test));
    }

    fn train_fn(
        classes: &[String],
        train: &[(&str, usize)],
        steps: &mut Vec<usize>,
    ) -> LinearModel {
        super::train(
            &params(),
            7,
            classes,
            train,
            train.len(),
            &[],
            &mut |s, _, _| steps.push(s),
        )
        .unwrap()
    }

    #[test]
    fn a_truncated_weights_file_is_a_cache_error() {
        let (classes, train) = toy();
        let m = train_fn(&classes, &train, &mut Vec::new());
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path()).unwrap();
        let f = dir.path().join("weights.safetensors");
        let raw = std::fs::read(&f).unwrap();
        std::fs::write(&f, &raw[..raw.len() / 2]).unwrap();
        let e = LinearModel::load(dir.path())
            .err()
            .expect("a truncated file must fail");
        assert!(
            e.message.contains("loading the linear model"),
            "{}",
            e.message
        );
    }

    #[test]
    fn the_same_seed_trains_the_same_weights() {
        let (classes, train) = toy();
        let a = train_fn(&classes, &train, &mut Vec::new());
        let b = train_fn(&classes, &train, &mut Vec::new());
        assert_eq!(a.w_value, b.w_value);
        assert_eq!(a.bias, b.bias);
    }
}
