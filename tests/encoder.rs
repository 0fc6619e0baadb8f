//! End-to-end: the encoder classifiers with the real all-MiniLM-L6-v2 weights on real TRAM rows.

mod common;
use common::*;
use std::path::PathBuf;

fn sandbox(classifiers: &str) -> (Sandbox, PathBuf) {
    let s = Sandbox::new();
    s.write("data/tram/single_label.json", &small_tram_rows(40));
    let m = s.manifest(
        "kind = \"tram-single\"\nattack = \"none\"",
        &format!("[split]\nseed = 7\n{classifiers}"),
    );
    (s, m)
}

fn embedding_files(s: &Sandbox) -> usize {
    s.files_under("cache/embeddings")
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "f32"))
        .count()
}

#[test]
fn frozen_encoder_trains_a_head_on_cached_embeddings_shared_by_cells() {
    let (s, m) = sandbox(&format!(
        "[[classifier]]\nkind = \"encoder-frozen\"\nmodel = \"{}\"\nepochs = 40\nhead_hidden = [0, 64]\n",
        minilm().display()
    ));
    let out = s.path("results/r");
    s.run_ok(&m, &out, &[]);
    let rows = read_csv_rows(&out.join("summary.csv"));
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(r["classifier"], "encoder-frozen");
        assert!(r["model"].ends_with("all-MiniLM-L6-v2"), "{r:?}");
        let f1: f64 = r["macro_f1"].parse().unwrap();
        assert!(f1 > 0.6, "four well-separated classes: {r:?}");
    }
    // Trained parameters: the head only — linear 384 → 4, or 384 → 64 → 4, with biases.
    let mut params: Vec<&str> = rows
        .iter()
        .map(|r| r["trained_parameters"].as_str())
        .collect();
    params.sort();
    assert_eq!(params, ["1540", "24900"]);
    // Every distinct text embedded once, for both cells (train + validation + test = 148).
    let n = embedding_files(&s);
    assert!((140..=148).contains(&n), "{n} embeddings cached");
    // Another head over the same texts embeds nothing new.
    s.run_ok(
        &m,
        &s.path("results/r2"),
        &["--set", "classifier.head_hidden=32"],
    );
    assert_eq!(embedding_files(&s), n);
}

#[test]
fn finetuned_and_from_scratch_encoders_run_as_cells() {
    let (s, m) = sandbox(&format!(
        "[[classifier]]\nkind = \"encoder-finetune\"\nmodel = \"{m}\"\nepochs = 1\nmax_length = 32\nbatch_size = 16\n\n\
         [[classifier]]\nkind = \"transformer\"\nmodel = \"{m}\"\nlayers = 1\nhidden = 32\nheads = 2\nintermediate = 64\nepochs = 2\nmax_length = 32\n",
        m = minilm().display()
    ));
    let out = s.path("results/r");
    s.run_ok(&m, &out, &[]);
    let rows = read_csv_rows(&out.join("summary.csv"));
    let kinds: Vec<&str> = rows.iter().map(|r| r["classifier"].as_str()).collect();
    assert_eq!(kinds, ["encoder-finetune", "transformer"]);
    let tiny = rows
        .iter()
        .find(|r| r["classifier"] == "transformer")
        .unwrap();
    assert_eq!(tiny["size"], "1x32");
    // Fine-tuning trains the whole of MiniLM (22,565,376 parameters without the pooler) and the
    // linear head 384 → 4.
    assert_eq!(
        rows[0]["trained_parameters"],
        (22_565_376 + 384 * 4 + 4).to_string()
    );
    let ft: f64 = rows[0]["macro_f1"].parse().unwrap();
    assert!(
        ft > 0.5,
        "one epoch of fine-tuning separates four classes: {rows:?}"
    );
    // A second run reads both models from the cache.
    let o = s.run_ok(&m, &s.path("results/again"), &[]);
    assert!(
        stderr(&o).contains("0 trained, 2 from cache"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn albert_runs_as_a_frozen_and_a_finetuned_encoder() {
    // A tiny random ALBERT (scripts/encoder_fixtures.py; its outputs match transformers', see
    // tests/encoder_parity.rs): config.json says `model_type = "albert"`, nothing else does.
    let albert = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/encoders/albert-tiny");
    let (s, m) = sandbox(&format!(
        "[[classifier]]\nkind = \"encoder-frozen\"\nmodel = \"{a}\"\nepochs = 3\nhead_hidden = 0\n\n\
         [[classifier]]\nkind = \"encoder-finetune\"\nmodel = \"{a}\"\nepochs = 1\nmax_length = 32\nbatch_size = 16\n",
        a = albert.display()
    ));
    let out = s.path("results/r");
    s.run_ok(&m, &out, &[]);
    let rows = read_csv_rows(&out.join("summary.csv"));
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["classifier"].as_str(), r["trained_parameters"].as_str()))
        .collect();
    // The head 32 → 4; fine-tuning adds ALBERT without its pooler: embeddings 400·16 + 64·16 +
    // 2·16 + LayerNorm 2·16, the projection 16·32 + 32, and one shared layer (q, k, v, dense
    // 4·(32·32 + 32), two LayerNorms 4·32, ffn 32·37 + 37, ffn_output 37·32 + 32) — stored once
    // for its 3 passes.
    let albert_params = 400 * 16
        + 64 * 16
        + 2 * 16
        + 2 * 16
        + 16 * 32
        + 32
        + 4 * (32 * 32 + 32)
        + 4 * 32
        + 32 * 37
        + 37
        + 37 * 32
        + 32;
    let head = 32 * 4 + 4;
    let (frozen, finetuned) = (head.to_string(), (albert_params + head).to_string());
    assert_eq!(
        got,
        [
            ("encoder-frozen", frozen.as_str()),
            ("encoder-finetune", finetuned.as_str())
        ]
    );
    assert!(
        embedding_files(&s) >= 140,
        "{} embeddings",
        embedding_files(&s)
    );
    let o = s.run_ok(&m, &s.path("results/again"), &[]);
    assert!(
        stderr(&o).contains("0 trained, 2 from cache"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_model_folder_without_weights_is_rejected_before_any_work() {
    let (s, m) = sandbox("[[classifier]]\nkind = \"encoder-frozen\"\nmodel = \"half\"\n");
    std::fs::create_dir_all(s.path("half")).unwrap();
    std::fs::copy(minilm().join("config.json"), s.path("half/config.json")).unwrap();
    let o = s.cmd(&["run", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("classifier.0.model"), "{e}");
    assert!(
        e.contains("lacks tokenizer.json or vocab.json + merges.txt or vocab.txt; model.safetensors or pytorch_model.bin"),
        "{e}"
    );
    s.assert_nothing_written();
}

#[test]
fn a_field_of_another_kind_is_rejected() {
    let (s, m) = sandbox("[[classifier]]\nkind = \"encoder-frozen\"\ndim = 64\n");
    let o = s.cmd(&["run", m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("`dim` does not apply to a `encoder-frozen` classifier"),
        "{e}"
    );
    assert!(e.contains("`head_hidden`"), "{e}");
    s.assert_nothing_written();
}

#[test]
#[cfg(not(feature = "cuda"))]
fn the_cuda_backend_needs_the_cuda_build() {
    let (s, m) = sandbox("[[classifier]]\nkind = \"fasttext\"\n");
    let o = s.cmd(&["run", m.to_str().unwrap(), "--backend", "cuda"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--features cuda"), "{}", stderr(&o));
}
