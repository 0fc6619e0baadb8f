//! The burn encoders against transformers: tiny random ALBERT, RoBERTa and BERT models whose
//! weights and expected outputs `scripts/encoder_fixtures.py` wrote once into
//! tests/fixtures/encoders/ (transformers' version in each expected.json). Outputs must agree
//! within 1e-4; no PyTorch is needed to run these.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde_json::Value;
use synthcti::ml::encoder::{
    self, EncoderConfig, SentenceEncoder, load_albert_weights, read_config, token_ids,
};

const TOLERANCE: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/encoders")
        .join(name)
}

fn expected(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap()
}

fn ints(v: &Value) -> Vec<Vec<i64>> {
    serde_json::from_value(v.clone()).unwrap()
}

fn tensor(rows: &[Vec<i64>], device: &Device) -> Tensor<2, Int> {
    let (b, l) = (rows.len(), rows[0].len());
    let flat: Vec<i64> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [b, l]), device)
}

fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// The largest |ours − theirs| over the real tokens of a batch ([B, L, H], padding skipped:
/// transformers computes states there that no one reads, ours are zeros).
fn max_diff_on_tokens(ours: &[f32], theirs: &Value, mask: &[Vec<i64>]) -> f32 {
    let theirs: Vec<Vec<Vec<f32>>> = serde_json::from_value(theirs.clone()).unwrap();
    let h = theirs[0][0].len();
    let l = mask[0].len();
    let mut worst = 0f32;
    for (b, row) in mask.iter().enumerate() {
        for (t, &m) in row.iter().enumerate() {
            if m == 0 {
                continue;
            }
            for k in 0..h {
                worst = worst.max((ours[(b * l + t) * h + k] - theirs[b][t][k]).abs());
            }
        }
    }
    worst
}

/// Token ids, every batch's last hidden state and the sentence embeddings of `name` match.
fn matches_transformers(name: &str, model_type: &str) {
    let dir = fixture(name);
    let exp = expected(&dir);
    let device = Device::flex();
    let enc = SentenceEncoder::load(&dir, 128, &device).unwrap();
    assert_eq!(enc.config.model_type(), model_type);

    // The tokenizer: the same ids as Hugging Face's tokenizers (specials included).
    let texts: Vec<&str> = exp["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let ids: Vec<Vec<u32>> = serde_json::from_value(exp["text_ids"].clone()).unwrap();
    assert_eq!(token_ids(&enc.tokenizer, &texts).unwrap(), ids);

    for (i, batch) in exp["batches"].as_array().unwrap().iter().enumerate() {
        let (ids, mask) = (ints(&batch["ids"]), ints(&batch["mask"]));
        let hidden = enc
            .model
            .forward(tensor(&ids, &device), tensor(&mask, &device));
        let d = max_diff_on_tokens(&floats(hidden), &batch["last_hidden_state"], &mask);
        assert!(
            d < TOLERANCE,
            "{name} batch {i}: last_hidden_state differs by {d}"
        );
    }

    // Mean-pooled, L2-normalized sentence vectors through the public path (tokenize, pad, run).
    let ours = enc.embed(&texts, 3, &device).unwrap();
    let theirs: Vec<Vec<f32>> = serde_json::from_value(exp["sentence_embeddings"].clone()).unwrap();
    for (a, b) in ours.iter().zip(&theirs) {
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d < TOLERANCE, "{name}: sentence embedding differs by {d}");
    }
}

#[test]
fn albert_with_one_shared_layer_matches_transformers() {
    matches_transformers("albert-tiny", "albert");
}

#[test]
fn albert_with_two_groups_of_two_layers_matches_transformers() {
    matches_transformers("albert-groups", "albert");
}

#[test]
fn roberta_matches_transformers() {
    matches_transformers("roberta-tiny", "roberta");
}

#[test]
fn bert_matches_transformers() {
    matches_transformers("bert-tiny", "bert");
}

#[test]
fn securebert_s_layout_pytorch_bin_and_bpe_vocab_match_transformers() {
    // vocab.json + merges.txt + tokenizer_config.json + special_tokens_map.json and
    // pytorch_model.bin, no tokenizer.json and no model.safetensors: ids from transformers'
    // RobertaTokenizer on CTI text (IPs, hashes, paths, unicode, a literal `<mask>` and `</s>`).
    let dir = fixture("roberta-securebert");
    for absent in ["tokenizer.json", "model.safetensors"] {
        assert!(!dir.join(absent).exists(), "{absent}");
    }
    matches_transformers("roberta-securebert", "roberta");
}

#[test]
fn bert_with_a_vocab_txt_only_matches_transformers() {
    // vocab.txt and a cased tokenizer_config.json (do_lower_case false): BertTokenizer's ids.
    assert!(!fixture("bert-vocab").join("tokenizer.json").exists());
    matches_transformers("bert-vocab", "bert");
}

#[test]
fn albert_pooler_matches_transformers() {
    let dir = fixture("albert-tiny");
    let exp = expected(&dir);
    let device = Device::flex();
    let EncoderConfig::Albert(config) = read_config(&dir).unwrap() else {
        panic!("albert-tiny is an ALBERT");
    };
    let mut model = config.init(true, &device);
    load_albert_weights(&mut model, &dir.join("model.safetensors")).unwrap();
    for (i, batch) in exp["batches"].as_array().unwrap().iter().enumerate() {
        let (ids, mask) = (ints(&batch["ids"]), ints(&batch["mask"]));
        let hidden = model.forward(tensor(&ids, &device), tensor(&mask, &device));
        let pooled = floats(model.pool(hidden).expect("built with a pooler"));
        let theirs: Vec<f32> =
            serde_json::from_value::<Vec<Vec<f32>>>(batch["pooler_output"].clone())
                .unwrap()
                .concat();
        let d = pooled
            .iter()
            .zip(&theirs)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert_eq!(pooled.len(), theirs.len());
        assert!(d < TOLERANCE, "batch {i}: pooler_output differs by {d}");
    }
}

/// A copy of a fixture folder with config.json edited by `edit`.
fn with_config(name: &str, edit: impl FnOnce(&mut Value)) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for f in encoder::MODEL_FILES {
        std::fs::copy(fixture(name).join(f), tmp.path().join(f)).unwrap();
    }
    let p = tmp.path().join("config.json");
    let mut c: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(&mut c);
    std::fs::write(&p, serde_json::to_vec(&c).unwrap()).unwrap();
    tmp
}

fn load_error(dir: &Path) -> String {
    match SentenceEncoder::load(dir, 128, &Device::flex()) {
        Ok(_) => panic!("{} must not load", dir.display()),
        Err(e) => e.message,
    }
}

#[test]
fn an_albert_group_count_beyond_the_layers_is_rejected() {
    let dir = with_config("albert-tiny", |c| c["num_hidden_groups"] = 4.into());
    let e = load_error(dir.path());
    assert!(e.contains("config.json"), "{e}");
    assert!(
        e.contains("num_hidden_groups is 4; it must be between 1 and num_hidden_layers (3)"),
        "{e}"
    );
}

#[test]
fn an_unknown_activation_is_rejected() {
    let dir = with_config("albert-tiny", |c| c["hidden_act"] = "swish".into());
    let e = load_error(dir.path());
    assert!(e.contains("hidden_act `swish` is not supported"), "{e}");
    let dir = with_config("bert-tiny", |c| c["hidden_act"] = "silu".into());
    assert!(load_error(dir.path()).contains("hidden_act `silu`"));
}

#[test]
fn an_unsupported_model_type_is_named() {
    let dir = with_config("bert-tiny", |c| c["model_type"] = "deberta-v2".into());
    let e = load_error(dir.path());
    assert!(
        e.contains("model_type `deberta-v2` is not supported"),
        "{e}"
    );
}

#[test]
fn albert_weights_without_the_layers_the_config_asks_for_name_the_missing_tensor() {
    // Two layers per group, but the checkpoint has one.
    let dir = with_config("albert-tiny", |c| c["inner_group_num"] = 2.into());
    let e = load_error(dir.path());
    assert!(
        e.contains("albert_layer_groups.0.albert_layers.1"),
        "the missing layer is named: {e}"
    );
    assert!(e.contains("ALBERT checkpoint"), "{e}");
}

#[test]
fn albert_weights_of_other_sizes_are_named() {
    let dir = with_config("albert-tiny", |c| c["embedding_size"] = 24.into());
    let e = load_error(dir.path());
    assert!(e.contains("embeddings.word_embeddings.weight"), "{e}");
    assert!(
        e.contains("does config.json describe these weights?"),
        "{e}"
    );
}
