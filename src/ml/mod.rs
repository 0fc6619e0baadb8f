//! The classifiers. On burn: the BERT-family encoders ([`bert`], [`albert`], [`encoder`]), the fastText and
//! encoder kinds ([`fasttext`], [`encoder_cls`]) and the device a backend names; in plain Rust:
//! the `linear` kind ([`linear`] over [`tfidf`] features). All behind one [`Trainer`] trait. No
//! module outside this one uses burn.

pub mod albert;
pub mod bert;
pub mod config;
pub mod encoder;
pub mod encoder_cls;
pub mod fasttext;
pub mod linear;
pub mod model_files;
pub mod params;
pub mod sigmoid;
pub mod tfidf;
pub mod trainer;

pub use burn::tensor::Device;
pub use trainer::{Classifier, TrainContext, Trainer, trainer};

use crate::hash::SplitMix64;
pub use fasttext::{EpochLog, TrainLog};

/// The burn device of a backend (`experiment.backend`).
pub fn device_for(backend: crate::ml::params::Backend) -> crate::error::Result<Device> {
    match backend {
        crate::ml::params::Backend::Cpu => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        crate::ml::params::Backend::Cuda => Ok(Device::cuda(0)),
        #[cfg(not(feature = "cuda"))]
        crate::ml::params::Backend::Cuda => Err(crate::error::Error::config(
            "`experiment.backend = \"cuda\"` needs a build with the CUDA backend: `cargo build --release --features cuda` (and an NVIDIA driver at run time)",
        )),
    }
}

/// The backend's random number generator is one per process (burn-flex keeps it in a global
/// `Mutex<Option<StdRng>>`; `Device::seed` replaces it, and every random tensor — weight
/// initialisation, dropout masks — draws from it). Cells trained on several threads (`--jobs N`)
/// would draw from each other's streams between a `seed` and the draws it was meant for, so a
/// result would depend on scheduling. Every backend draw in synthcti therefore goes through
/// [`seeded`], which holds this lock, reseeds, and runs the drawing code alone.
static BACKEND_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Run `f` with the backend's random number generator seeded with `seed` and no other thread
/// drawing from it: the random tensors `f` makes depend on `seed` alone, whatever else runs.
///
/// Hold it only around code that draws (model construction, a training forward pass with
/// dropout): other threads' draws wait for it.
pub fn seeded<T>(device: &burn::tensor::Device, seed: u64, f: impl FnOnce() -> T) -> T {
    let _alone = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    device.seed(seed);
    f()
}

/// Build a module with its random initial weights drawn from `seed` alone.
///
/// burn initialises parameters lazily, on first access; left lazy, the draws would happen at the
/// first forward pass, outside any seeded region, from whatever state another thread left the
/// generator in. So every parameter is touched inside the region.
pub fn init_seeded<M: burn::module::Module>(
    device: &burn::tensor::Device,
    seed: u64,
    build: impl FnOnce() -> M,
) -> M {
    seeded(device, seed, || {
        let module = build();
        module.visit(&mut Materialize);
        module
    })
}

/// A visitor that reads every float parameter, which initialises a lazy one.
struct Materialize;

impl burn::module::ModuleVisitor for Materialize {
    fn visit_float<const D: usize>(
        &mut self,
        param: &burn::module::Param<burn::tensor::Tensor<D>>,
    ) {
        let _ = param.val();
    }
}

/// The seed of a training step's random draws (dropout), from the cell's seed and the step:
/// the same for a step whatever ran before it in the process.
pub fn step_seed(seed: u64, step: usize) -> u64 {
    let mut r = SplitMix64::new(seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    r.next_u64()
}

/// A prediction for one text: the class scores, highest first (top k).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Scored {
    pub pred: usize,
    pub top: Vec<(usize, f32)>,
}

impl Scored {
    /// The scores as a dense row of `classes` values in class order (0 for a class outside
    /// the top k).
    pub fn dense(&self, classes: usize) -> Vec<f32> {
        let mut row = vec![0f32; classes];
        for &(k, v) in &self.top {
            row[k] = v;
        }
        row
    }
}

/// Per-class loss weights: 1 each, or `n / (classes × count)` when balanced (0 for a class with no
/// example).
pub fn class_weights(
    cw: crate::ml::params::ClassWeight,
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
        crate::ml::params::ClassWeight::None => vec![1.0; n_classes],
        crate::ml::params::ClassWeight::Balanced => counts
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

/// The epoch log and early stopping on validation macro-F1, for every trainer. Without a
/// validation split every epoch counts as the best (the last model is kept) and training runs
/// all its epochs.
pub struct Epochs<M> {
    patience: usize,
    min_delta: f64,
    pub log: Vec<EpochLog>,
    best: Option<(f64, usize, M)>,
    since: usize,
}

impl<M: Clone> Epochs<M> {
    pub fn new(patience: usize, min_delta: f64) -> Self {
        Epochs {
            patience,
            min_delta,
            log: Vec::new(),
            best: None,
            since: 0,
        }
    }

    /// Record an epoch and the model it ended with; true when training should stop.
    pub fn end(&mut self, entry: EpochLog, model: &M) -> bool {
        let epoch = entry.epoch;
        let f1 = entry.validation_macro_f1;
        self.log.push(entry);
        match f1 {
            None => {
                self.best = Some((0.0, epoch, model.clone()));
                false
            }
            Some(f1) if self.best.as_ref().is_none_or(|b| f1 > b.0 + self.min_delta) => {
                self.best = Some((f1, epoch, model.clone()));
                self.since = 0;
                false
            }
            Some(_) => {
                self.since += 1;
                self.patience > 0 && self.since >= self.patience
            }
        }
    }

    /// The best model, its epoch, the log, and whether training stopped before `epochs`.
    pub fn finish(self, epochs: usize) -> (M, usize, Vec<EpochLog>, bool) {
        let (_, best_epoch, model) = self.best.expect("at least one epoch ran");
        let stopped_early = self.log.len() < epochs;
        (model, best_epoch, self.log, stopped_early)
    }
}

/// Shuffle `order`, sort windows of `window` batches by length so a batch pads little, and
/// shuffle the batches: nearly the randomness of plain shuffling at a fraction of the padding.
pub fn length_bucketed_batches(
    rng: &mut SplitMix64,
    order: &mut [usize],
    len: impl Fn(usize) -> usize,
    batch_size: usize,
    window: usize,
) -> Vec<Vec<usize>> {
    rng.shuffle(order);
    let mut batches = Vec::new();
    for w in order.chunks_mut(batch_size * window) {
        w.sort_by_key(|&i| len(i));
        batches.extend(w.chunks(batch_size).map(<[usize]>::to_vec));
    }
    rng.shuffle(&mut batches);
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(epoch: usize, f1: Option<f64>) -> EpochLog {
        EpochLog {
            epoch,
            train_loss: 0.0,
            validation_macro_f1: f1,
            seconds: 0.0,
        }
    }

    /// What `--jobs N` relies on: draws inside a seeded region depend on its seed alone, even
    /// when another thread draws (through `seeded`, as all of synthcti does) in the middle of it.
    #[test]
    fn a_seeded_region_draws_alone() {
        use burn::tensor::{Distribution, Tensor};
        let device = burn::tensor::Device::flex();
        let draw = || {
            Tensor::<1>::random([8], Distribution::Default, &device)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        let alone = seeded(&device, 5, || (draw(), draw()));
        let (inside_tx, inside_rx) = std::sync::mpsc::channel();
        let together = std::thread::scope(|s| {
            let a = s.spawn(|| {
                seeded(&device, 5, || {
                    let first = draw();
                    inside_tx.send(()).unwrap();
                    // Another thread tries to draw now.
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    (first, draw())
                })
            });
            inside_rx.recv().unwrap();
            s.spawn(|| seeded(&device, 99, draw)).join().unwrap();
            a.join().unwrap()
        });
        assert_eq!(alone, together);
        assert_ne!(alone.0, alone.1, "the stream advances within a region");
        assert_ne!(step_seed(5, 0), step_seed(5, 1));
        assert_eq!(step_seed(5, 3), step_seed(5, 3));
    }

    /// burn initialises parameters lazily; `init_seeded` draws them inside its region, so a
    /// draw by another cell between building a model and its first use changes nothing.
    #[test]
    fn initial_weights_depend_on_the_seed_alone() {
        use burn::nn::LinearConfig;
        let device = burn::tensor::Device::flex();
        let weights =
            |l: &burn::nn::Linear| l.weight.val().into_data().try_to_vec::<f32>().unwrap();
        let undisturbed = init_seeded(&device, 3, || LinearConfig::new(4, 3).init(&device));
        let undisturbed = weights(&undisturbed);
        let built = init_seeded(&device, 3, || LinearConfig::new(4, 3).init(&device));
        // Another cell draws before this one first uses its model.
        seeded(&device, 99, || {
            burn::tensor::Tensor::<1>::random([16], burn::tensor::Distribution::Default, &device)
        });
        assert_eq!(weights(&built), undisturbed);
    }

    #[test]
    fn early_stopping_keeps_the_best_epoch() {
        let mut e = Epochs::new(2, 0.01);
        assert!(!e.end(entry(1, Some(0.5)), &1));
        assert!(!e.end(entry(2, Some(0.7)), &2));
        assert!(!e.end(entry(3, Some(0.705)), &3)); // not better by min_delta
        assert!(e.end(entry(4, Some(0.6)), &4));
        let (model, best_epoch, log, stopped_early) = e.finish(10);
        assert_eq!(
            (model, best_epoch, log.len(), stopped_early),
            (2, 2, 4, true)
        );
    }

    #[test]
    fn without_validation_the_last_model_is_kept_and_nothing_stops() {
        let mut e = Epochs::new(1, 0.0);
        for epoch in 1..=3 {
            assert!(!e.end(entry(epoch, None), &epoch));
        }
        let (model, best_epoch, _, stopped_early) = e.finish(3);
        assert_eq!((model, best_epoch, stopped_early), (3, 3, false));
    }
}
