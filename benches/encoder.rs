//! Encoder benchmarks (run by `bash benches/encoder.sh` beside the PyTorch peer):
//! - all-MiniLM-L6-v2 embedding throughput over the 5,089 TRAM single-label sentences, batch 32,
//!   padded to the longest text of each batch, in file order;
//! - one fine-tuning step (forward, backward, AdamW) on a batch of 32, dynamic padding;
//! - `albert` (only when named; run by `bash benches/albert.sh`): the same embedding measurement
//!   with the ALBERT model folder in `$BENCH_ALBERT_DIR` over the first `$BENCH_SENTENCES` (512)
//!   TRAM sentences.
//!
//! Prints one JSON line per measurement.
//! Usage: cargo bench --bench encoder -- [RUNS] [embed|finetune|albert]   (embed and finetune
//! when none is named)

// The allocator the synthcti binary uses (see src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::time::Instant;

use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use synthcti::ml::encoder::SentenceEncoder;
use synthcti::ml::encoder_cls::SeqClassifier;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3);
    let only = std::env::args()
        .skip(1)
        .find(|a| a == "embed" || a == "finetune" || a == "albert");
    let wants = |what: &str| only.as_deref().is_none_or(|o| o == what);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("models/all-MiniLM-L6-v2");
    let data = std::env::var("SYNTHCTI_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("../shared/data"));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(data.join("tram/single_label.json")).expect("TRAM single_label.json"),
    )
    .unwrap();
    // `SYNTHCTI_BENCH_SENTENCES=N`: only the first N texts (benches/predict.sh compares on them).
    let limit = std::env::var("SYNTHCTI_BENCH_SENTENCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    let texts: Vec<String> = rows
        .iter()
        .take(limit)
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let device = Device::flex();
    if only.as_deref() == Some("albert") {
        let dir = std::env::var("BENCH_ALBERT_DIR").expect("BENCH_ALBERT_DIR: an ALBERT folder");
        let n: usize = std::env::var("BENCH_SENTENCES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(512);
        let enc = SentenceEncoder::load(Path::new(&dir), 128, &device).expect("ALBERT");
        assert_eq!(enc.config.model_type(), "albert");
        let refs = &refs[..n.min(refs.len())];
        let mut rates = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let v = enc.embed(refs, 32, &device).unwrap();
            assert_eq!(v.len(), refs.len());
            rates.push(refs.len() as f64 / t.elapsed().as_secs_f64());
        }
        println!(
            "{}",
            serde_json::json!({"impl": "synthcti-burn", "what": "albert_embed",
            "sentences": refs.len(), "batch": 32, "max_length": 128, "runs": runs,
            "sentences_per_s": median(rates.clone()), "all": rates})
        );
        return;
    }
    let enc = SentenceEncoder::load(&model, 128, &device).expect("MiniLM");

    let mut rates = Vec::new();
    for _ in 0..if wants("embed") { runs } else { 0 } {
        let t = Instant::now();
        let v = enc.embed(&refs, 32, &device).unwrap();
        assert_eq!(v.len(), refs.len());
        rates.push(refs.len() as f64 / t.elapsed().as_secs_f64());
    }
    if !rates.is_empty() {
        println!(
            "{}",
            serde_json::json!({"impl": "synthcti-burn", "what": "embed", "sentences": refs.len(),
            "batch": 32, "runs": runs, "sentences_per_s": median(rates.clone()), "all": rates})
        );
    }
    if !wants("finetune") {
        return;
    }

    // Fine-tuning steps: batches of 32 consecutive sentences, classes by label.
    let labels: Vec<String> = rows
        .iter()
        .map(|r| r["label"].as_str().unwrap().to_string())
        .collect();
    let mut classes = labels.clone();
    classes.sort();
    classes.dedup();
    let ad = device.clone().autodiff();
    ad.seed(1);
    let mut cls = SeqClassifier::new(&enc.config, classes.len(), 0.1, &ad);
    synthcti::ml::encoder::load_weights(&mut cls.encoder, &model.join("model.safetensors"))
        .unwrap();
    let mut optim = AdamWConfig::new().with_weight_decay(0.01).init();
    let steps = 2 + 5 * runs;
    let mut secs = Vec::new();
    for s in 0..steps {
        let lo = (s * 32) % (refs.len() - 32);
        let batch = &refs[lo..lo + 32];
        let t = Instant::now();
        let (ids, mask) = enc.tokenize(batch, &ad).unwrap();
        let ys: Vec<i64> = labels[lo..lo + 32]
            .iter()
            .map(|l| classes.binary_search(l).unwrap() as i64)
            .collect();
        let y = Tensor::<1, Int>::from_data(TensorData::new(ys, [32]), &ad);
        let logits = cls.forward(ids, mask);
        let logp = burn::tensor::activation::log_softmax(logits, 1);
        let loss = -logp.gather(1, y.unsqueeze_dim(1)).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &cls);
        cls = optim.step(5e-5, cls, grads);
        if s >= 2 {
            secs.push(t.elapsed().as_secs_f64());
        }
    }
    println!(
        "{}",
        serde_json::json!({"impl": "synthcti-burn", "what": "finetune_step", "batch": 32,
            "steps": secs.len(), "seconds_per_step": median(secs.clone()), "all": secs})
    );
}
