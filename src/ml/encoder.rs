//! Pretrained BERT-family sentence encoders: a Hugging Face model folder (`config.json`, a
//! tokenizer and weights, in any layout [`super::model_files`] reads) loaded into the burn
//! [`Bert`] (BERT, RoBERTa, XLM-RoBERTa) or [`Albert`] module, as `config.json`'s `model_type`
//! says, through burn's `SafetensorsStore` or `PytorchStore` with the PyTorch adapter, tokenized
//! with the `tokenizers` crate
//! (padding to the longest text of each batch, truncation at a configured length), and
//! mean-pooled, L2-normalized sentence embeddings.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_store::{ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore};
use serde::{Deserialize, Serialize};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

pub use super::albert::{Albert, AlbertConfig};
pub use super::bert::{Bert, BertConfig, l2_normalize, mean_pool};

use super::model_files::{Layout, Need, WeightsFormat};
use crate::error::{Error, Result};

/// The files of the standard model folder layout (other layouts: [`super::model_files`]).
pub const MODEL_FILES: &[&str] = &["config.json", "tokenizer.json", "model.safetensors"];

/// An encoder's architecture: `config.json` read by its `model_type`. Serializes as the config
/// itself (its `model_type` says which).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum EncoderConfig {
    /// `bert`, `roberta`, `xlm-roberta`.
    Bert(BertConfig),
    /// `albert`.
    Albert(AlbertConfig),
}

impl<'de> Deserialize<'de> for EncoderConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let v = serde_json::Value::deserialize(d)?;
        let kind = v
            .get("model_type")
            .and_then(|t| t.as_str())
            .unwrap_or("bert");
        if kind == "albert" {
            serde_json::from_value(v).map(EncoderConfig::Albert)
        } else {
            serde_json::from_value(v).map(EncoderConfig::Bert)
        }
        .map_err(D::Error::custom)
    }
}

impl EncoderConfig {
    pub fn model_type(&self) -> &str {
        match self {
            EncoderConfig::Bert(c) => &c.model_type,
            EncoderConfig::Albert(c) => &c.model_type,
        }
    }
    /// Width of the token states (H).
    pub fn hidden_size(&self) -> usize {
        match self {
            EncoderConfig::Bert(c) => c.hidden_size,
            EncoderConfig::Albert(c) => c.hidden_size,
        }
    }
    pub fn pad_token_id(&self) -> usize {
        match self {
            EncoderConfig::Bert(c) => c.pad_token_id,
            EncoderConfig::Albert(c) => c.pad_token_id,
        }
    }
    /// Longest sequence the position table allows.
    pub fn max_tokens(&self) -> usize {
        match self {
            EncoderConfig::Bert(c) => c.max_tokens(),
            EncoderConfig::Albert(c) => c.max_tokens(),
        }
    }
    /// The dropout rate of the hidden states (set for fine-tuning).
    pub fn set_dropout(&mut self, p: f64) {
        match self {
            EncoderConfig::Bert(c) => c.hidden_dropout_prob = p,
            EncoderConfig::Albert(c) => c.hidden_dropout_prob = p,
        }
    }
    /// A randomly initialized encoder without a pooler (sentence vectors are mean-pooled).
    pub fn init(&self, device: &Device) -> EncoderModel {
        match self {
            EncoderConfig::Bert(c) => EncoderModel::Bert(c.init(device)),
            EncoderConfig::Albert(c) => EncoderModel::Albert(c.init(false, device)),
        }
    }
}

/// A BERT-family encoder of either architecture.
#[derive(Module, Debug)]
// One encoder per model held at a time: the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum EncoderModel {
    Bert(Bert),
    Albert(Albert),
}

impl EncoderModel {
    /// ids, mask: [B, L] → hidden states [B, L, H], zeros at padding positions.
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Tensor<2, Int>) -> Tensor<3> {
        match self {
            EncoderModel::Bert(m) => m.forward(ids, mask),
            EncoderModel::Albert(m) => m.forward(ids, mask),
        }
    }
}

/// A loaded encoder and its tokenizer.
pub struct SentenceEncoder {
    pub config: EncoderConfig,
    pub model: EncoderModel,
    pub tokenizer: Tokenizer,
    pub max_length: usize,
    pub dir: PathBuf,
}

/// Read `config.json` of a model folder: BERT, RoBERTa, XLM-RoBERTa or ALBERT by its
/// `model_type` (else by its first `architectures` entry, `BertModel`, `RobertaForMaskedLM`, …);
/// a config the modules cannot run is an error naming the key ([`check_config`]).
///
/// # Errors
/// Data (exit 3): the folder lacks a file, or config.json is unreadable or not one synthcti can
/// run (the message names the file and the key).
pub fn read_config(dir: &Path) -> Result<EncoderConfig> {
    check_folder(dir)?;
    let p = dir.join("config.json");
    let text = std::fs::read_to_string(&p)
        .map_err(|e| Error::data(format!("cannot read {}: {e}", p.display())))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::data(format!("{} is not JSON: {e}", p.display())))?;
    check_config(v).map_err(|why| Error::data(format!("{}: {why}", p.display())))
}

/// The architectures synthcti runs, by `architectures` prefix → `model_type` (longest prefix
/// first); the name goes on with `Model` or `For…`.
const ARCHITECTURES: &[(&str, &str)] = &[
    ("XLMRoberta", "xlm-roberta"),
    ("Roberta", "roberta"),
    ("Albert", "albert"),
    ("Bert", "bert"),
];

/// A `config.json` checked and read: the architecture (`model_type` bert, roberta, xlm-roberta
/// or albert, else the first `architectures` entry naming one of them), the sizes present as
/// positive integers (`vocab_size`, `hidden_size`, `num_hidden_layers`, `num_attention_heads`,
/// `intermediate_size`, `max_position_embeddings`, and ALBERT's `embedding_size`), and
/// consistent: `hidden_size` a multiple of `num_attention_heads`, `pad_token_id` inside the
/// vocabulary, RoBERTa's positions (from `pad_token_id + 1`) leaving room for a token,
/// absolute position embeddings, a supported `hidden_act`, ALBERT's groups within its layers.
///
/// # Errors
/// What is wrong, naming the key and what is valid (no file name: callers add it).
pub fn check_config(mut v: serde_json::Value) -> std::result::Result<EncoderConfig, String> {
    let obj = v
        .as_object_mut()
        .ok_or_else(|| "config.json is not a JSON object".to_string())?;
    let model_type = match obj.get("model_type") {
        Some(serde_json::Value::String(t)) => t.clone(),
        Some(other) => return Err(format!("model_type {other} is not a string")),
        None => {
            let archs: Vec<String> = obj
                .get("architectures")
                .and_then(|a| a.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let found = archs.iter().find_map(|a| {
                ARCHITECTURES
                    .iter()
                    .find(|(prefix, _)| {
                        // `RobertaModel`, `RobertaForMaskedLM`; not `RobertaPreLayerNorm…`.
                        a.strip_prefix(prefix)
                            .is_some_and(|rest| rest == "Model" || rest.starts_with("For"))
                    })
                    .map(|(_, t)| t.to_string())
            });
            match found {
                Some(t) => t,
                None => {
                    return Err(format!(
                        "no model_type, and no architecture synthcti runs in `architectures` ({}); set model_type to bert, roberta, xlm-roberta or albert",
                        if archs.is_empty() {
                            "none given".to_string()
                        } else {
                            archs.join(", ")
                        }
                    ));
                }
            }
        }
    };
    if !matches!(
        model_type.as_str(),
        "bert" | "roberta" | "xlm-roberta" | "albert"
    ) {
        return Err(format!(
            "model_type `{model_type}` is not supported; use a BERT, RoBERTa, XLM-RoBERTa or ALBERT model"
        ));
    }
    obj.insert("model_type".into(), model_type.clone().into());
    let albert = model_type == "albert";
    let mut sizes = vec![
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "max_position_embeddings",
    ];
    if albert {
        sizes.push("embedding_size");
    }
    for key in sizes {
        match obj.get(key) {
            None => {
                return Err(format!(
                    "`{key}` is missing; every {model_type} config.json has it"
                ));
            }
            Some(x) if x.as_u64().is_some_and(|n| n > 0) => {}
            Some(x) => return Err(format!("`{key}` is {x}; it must be a positive integer")),
        }
    }
    if let Some(t) = obj.get("position_embedding_type").and_then(|t| t.as_str())
        && t != "absolute"
    {
        return Err(format!(
            "position_embedding_type `{t}` is not supported; only `absolute` is"
        ));
    }
    let c: EncoderConfig =
        serde_json::from_value(v).map_err(|e| format!("not a {model_type} config: {e}"))?;
    let (vocab, pad) = match &c {
        EncoderConfig::Bert(b) => (b.vocab_size, b.pad_token_id),
        EncoderConfig::Albert(a) => (a.vocab_size, a.pad_token_id),
    };
    if pad >= vocab {
        return Err(format!(
            "pad_token_id {pad} is outside the vocabulary (vocab_size {vocab})"
        ));
    }
    let bad = match &c {
        EncoderConfig::Albert(a) => a.unsupported(),
        EncoderConfig::Bert(b) => {
            if !b.hidden_size.is_multiple_of(b.num_attention_heads) {
                Some(format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    b.hidden_size, b.num_attention_heads
                ))
            } else if super::bert::Activation::parse(&b.hidden_act).is_none() {
                Some(format!(
                    "hidden_act `{}` is not supported; use one of {}",
                    b.hidden_act,
                    super::bert::Activation::NAMES
                ))
            } else if b.max_position_embeddings <= b.position_offset() {
                Some(format!(
                    "max_position_embeddings {} leaves no position: {} numbers positions from pad_token_id + 1 = {}",
                    b.max_position_embeddings,
                    b.model_type,
                    b.position_offset()
                ))
            } else {
                None
            }
        }
    };
    match bad {
        Some(why) => Err(why),
        None => Ok(c),
    }
}

fn check_folder(dir: &Path) -> Result<()> {
    Layout::of_dir(dir, Need::Model).map(|_| ())
}

/// The weights file of a model folder: `model.safetensors`, else `pytorch_model.bin`.
///
/// # Errors
/// Data (exit 3): the folder lacks a file it needs (named).
pub fn weights_path(dir: &Path) -> Result<PathBuf> {
    let layout = Layout::of_dir(dir, Need::Model)?;
    Ok(dir.join(layout.weights_file().expect("a model layout has weights")))
}

/// Load the tokenizer with padding to the longest text of a batch and truncation at `max_length`.
/// The tokenizer comes from `tokenizer.json`, else is built from `vocab.json` + `merges.txt` or
/// `vocab.txt` ([`super::model_files::tokenizer`]).
pub fn load_tokenizer(dir: &Path, max_length: usize, pad_id: u32) -> Result<Tokenizer> {
    let mut tok = super::model_files::tokenizer(dir)?;
    let pad_token = tok
        .id_to_token(pad_id)
        .unwrap_or_else(|| "[PAD]".to_string());
    tok.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::BatchLongest,
        pad_id,
        pad_token,
        ..Default::default()
    }));
    tok.with_truncation(Some(TruncationParams {
        max_length,
        ..Default::default()
    }))
    .map_err(|e| Error::data(format!("tokenizer truncation: {e}")))?;
    Ok(tok)
}

/// Load pretrained weights into `model` from `path`: a safetensors file, or a PyTorch
/// `torch.save` file when its name ends in `.bin`, `.pt` or `.pth` (burn-store's
/// `PytorchStore`); both go through the same key renames and the PyTorch adapter. A missing
/// tensor or one whose shape differs from the config is an error naming it. Tensors the model
/// lacks (an MLM head, a pooler the model was built without) are ignored.
pub fn load_weights(model: &mut EncoderModel, path: &Path) -> Result<()> {
    match model {
        EncoderModel::Bert(m) => load_bert_weights(m, path),
        EncoderModel::Albert(m) => load_albert_weights(m, path),
    }
}

/// BERT / RoBERTa names: `LayerNorm` → `layer_norm`, `self` → `self_attn`, the `bert.` /
/// `roberta.` prefix dropped.
pub fn load_bert_weights(model: &mut Bert, path: &Path) -> Result<()> {
    const RENAMES: &[(&str, &str)] = &[
        (r"^(bert|roberta)\.", ""),
        (r"\.LayerNorm\.", ".layer_norm."),
        (r"\.self\.", ".self_attn."),
    ];
    load_store(model, RENAMES, path, "BERT/RoBERTa")
}

/// transformers' `AlbertModel` names onto [`Albert`]'s, whose layers are BERT's: the attention's
/// `query`/`key`/`value` under `self_attn`, its `dense` and `LayerNorm` under `output`, `ffn` →
/// `intermediate.dense`, `ffn_output` → `output.dense`, `full_layer_layer_norm` →
/// `output.layer_norm`; the `albert.` prefix of a pre-training checkpoint dropped.
pub fn load_albert_weights(model: &mut Albert, path: &Path) -> Result<()> {
    const RENAMES: &[(&str, &str)] = &[
        (r"^albert\.", ""),
        (
            r"\.attention\.(query|key|value)\.",
            ".attention.self_attn.$1.",
        ),
        (r"\.attention\.dense\.", ".attention.output.dense."),
        (r"\.attention\.LayerNorm\.", ".attention.output.layer_norm."),
        (r"\.ffn\.", ".intermediate.dense."),
        (r"\.ffn_output\.", ".output.dense."),
        (r"\.full_layer_layer_norm\.", ".output.layer_norm."),
        (r"\.LayerNorm\.", ".layer_norm."),
    ];
    load_store(model, RENAMES, path, "ALBERT")
}

/// The format of a weights file, by its name.
fn weights_format(path: &Path) -> WeightsFormat {
    match path.extension().and_then(|e| e.to_str()) {
        Some("bin" | "pt" | "pth") => WeightsFormat::PyTorch,
        _ => WeightsFormat::Safetensors,
    }
}

/// `renames` (regex, replacement; applied in order) and the PyTorch adapter over the store of
/// `path`'s format, then the result checked: an error, then a missing tensor, is named.
fn load_store<M: ModuleSnapshot>(
    model: &mut M,
    renames: &[(&str, &str)],
    path: &Path,
    what: &str,
) -> Result<()> {
    let cannot = |e: &dyn std::fmt::Display| {
        Error::data(format!(
            "cannot load the weights {}: {e}; does config.json describe these weights?",
            path.display()
        ))
    };
    let res = match weights_format(path) {
        WeightsFormat::Safetensors => {
            let mut store = SafetensorsStore::from_file(path);
            for &(from, to) in renames {
                store = store.with_key_remapping(from, to);
            }
            let mut store = store
                .with_from_adapter(PyTorchToBurnAdapter)
                .allow_partial(true)
                .validate(true);
            model.load_from(&mut store).map_err(|e| cannot(&e))?
        }
        WeightsFormat::PyTorch => {
            // The adapter is built in; layer indices are transformers' own (0..n), kept as
            // they are.
            let mut store = PytorchStore::from_file(path).map_indices_contiguous(false);
            for &(from, to) in renames {
                store = store.with_key_remapping(from, to);
            }
            let mut store = store.allow_partial(true).validate(true);
            model.load_from(&mut store).map_err(|e| cannot(&e))?
        }
    };
    if let Some(e) = res.errors.first() {
        return Err(Error::data(format!(
            "{}: {e}; the tensors do not match config.json (is it the config of these weights?)",
            path.display()
        )));
    }
    if let Some((name, _)) = res.missing.first() {
        return Err(Error::data(format!(
            "{}: tensor `{name}` is missing ({} missing in all); is this a {what} checkpoint?",
            path.display(),
            res.missing.len()
        )));
    }
    Ok(())
}

impl SentenceEncoder {
    pub fn load(dir: &Path, max_length: usize, device: &Device) -> Result<Self> {
        let config = read_config(dir)?;
        let max_length = max_length.min(config.max_tokens()).max(2);
        let tokenizer = load_tokenizer(dir, max_length, config.pad_token_id() as u32)?;
        let mut model = config.init(device);
        load_weights(&mut model, &weights_path(dir)?)?;
        Ok(Self {
            config,
            model,
            tokenizer,
            max_length,
            dir: dir.to_path_buf(),
        })
    }

    /// Token ids and attention mask of a batch, padded to its longest text.
    pub fn tokenize(
        &self,
        texts: &[&str],
        device: &Device,
    ) -> Result<(Tensor<2, Int>, Tensor<2, Int>)> {
        batch_tensors(&self.tokenizer, texts, device)
    }

    /// Mean-pooled, L2-normalized embeddings, `batch` texts at a time.
    pub fn embed(&self, texts: &[&str], batch: usize, device: &Device) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(batch.max(1)) {
            let (ids, mask) = self.tokenize(chunk, device)?;
            let hidden = self.model.forward(ids, mask.clone());
            let pooled = l2_normalize(mean_pool(hidden, mask));
            let [b, h] = pooled.dims();
            let v = pooled
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .map_err(|e| Error::internal(format!("embedding data: {e:?}")))?;
            for i in 0..b {
                out.push(v[i * h..(i + 1) * h].to_vec());
            }
        }
        Ok(out)
    }
}

/// Tokenize a batch into (ids, mask) tensors [B, L], L = the longest text (after truncation).
pub fn batch_tensors(
    tok: &Tokenizer,
    texts: &[&str],
    device: &Device,
) -> Result<(Tensor<2, Int>, Tensor<2, Int>)> {
    let ids = token_ids(tok, texts)?;
    let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let pad = tok.get_padding().map_or(0, |p| p.pad_id);
    Ok(pad_batch(&seqs, pad, device))
}

/// Token ids of each text (truncated, unpadded).
pub fn token_ids(tok: &Tokenizer, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
    Ok(tok
        .encode_batch(texts.to_vec(), true)
        .map_err(|e| Error::internal(format!("tokenizing: {e}")))?
        .iter()
        .map(|e| {
            e.get_ids()
                .iter()
                .zip(e.get_attention_mask())
                .filter(|(_, m)| **m == 1)
                .map(|(t, _)| *t)
                .collect()
        })
        .collect())
}

/// Pad token-id sequences to the longest: (ids, mask) [B, L].
pub fn pad_batch(seqs: &[&[u32]], pad: u32, device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>) {
    let b = seqs.len();
    let l = seqs.iter().map(|s| s.len()).max().unwrap_or(1).max(1);
    let mut ids = vec![pad as i64; b * l];
    let mut mask = vec![0i64; b * l];
    for (i, s) in seqs.iter().enumerate() {
        for (j, &t) in s.iter().enumerate() {
            ids[i * l + j] = t as i64;
            mask[i * l + j] = 1;
        }
    }
    (
        Tensor::from_data(TensorData::new(ids, [b, l]), device),
        Tensor::from_data(TensorData::new(mask, [b, l]), device),
    )
}

/// The identity of a model folder: BLAKE3 over the files its [`Layout`] reads (config,
/// tokenizer, weights), each by name, length and bytes.
pub fn model_hash(dir: &Path) -> Result<String> {
    files_hash(dir, Need::Model)
}

/// BLAKE3 over the files of `need` in `dir` (name, length, bytes each), memoized by their stat.
fn files_hash(dir: &Path, need: Need) -> Result<String> {
    let files = Layout::of_dir(dir, need)?.files();
    let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
    crate::hash::hash_by_stat("encoder-model", &paths, || {
        let mut h = blake3::Hasher::new();
        for (f, p) in files.iter().zip(&paths) {
            let bytes = std::fs::read(p)
                .map_err(|e| Error::data(format!("cannot read {}: {e}", p.display())))?;
            h.update(f.as_bytes());
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        }
        Ok(h.finalize().to_hex().to_string())
    })
}

/// Sentence embeddings on disk, one file per (model, max length, pooling, text), shared by every
/// cell, run and dataset that embeds the same text with the same model:
/// `<cache>/embeddings/<model key>/<2 hex>/<text hash>.f32`.
///
/// A file holds the dimension (u32, little-endian), the vector (f32, little-endian) and the first
/// 16 bytes of the BLAKE3 hash of both; a file that does not verify (truncated, or written by
/// something else) is recomputed, never trusted. Each writer writes to its own temporary file in
/// the same folder (unique per process and thread) and renames it into place, so a reader never
/// sees half a vector and two writers never share a temporary file.
pub struct EmbeddingCache {
    dir: PathBuf,
}

/// Bytes of the checksum that ends an embedding file.
const EMBEDDING_CHECKSUM: usize = 16;

impl EmbeddingCache {
    /// The cache for one model (by content hash), max length (tokens) and pooling.
    pub fn new(cache_root: &Path, model_hash: &str, max_length: usize, pooling: &str) -> Self {
        let key = crate::hash::stage_key(
            "embedding",
            2,
            &serde_json::json!({"model": model_hash, "max_length": max_length, "pooling": pooling}),
            &[],
        );
        Self {
            dir: cache_root.join("embeddings").join(&key[..32]),
        }
    }

    fn path(&self, text: &str) -> PathBuf {
        let h = crate::hash::blake3_hex(text.as_bytes());
        self.dir.join(&h[..2]).join(format!("{}.f32", &h[..40]))
    }

    /// The file's vector, or None when it is absent or does not verify.
    fn read(&self, text: &str) -> Option<Vec<f32>> {
        let bytes = std::fs::read(self.path(text)).ok()?;
        decode_embedding(&bytes)
    }

    fn write(&self, text: &str, v: &[f32]) -> Result<()> {
        use std::io::Write;
        let p = self.path(text);
        let parent = p.parent().expect("has a parent");
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::cache(format!("cannot create {}: {e}", parent.display())))?;
        let fail = |e: std::io::Error| Error::cache(format!("cannot write {}: {e}", p.display()));
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(parent)
            .map_err(fail)?;
        tmp.write_all(&encode_embedding(v)).map_err(fail)?;
        tmp.persist(&p).map_err(|e| fail(e.error))?;
        Ok(())
    }

    /// Embeddings of `texts`, computing (with `compute`) only those not on disk. Returns the
    /// vectors and how many were computed.
    pub fn get_or_compute(
        &self,
        texts: &[&str],
        mut compute: impl FnMut(&[&str]) -> Result<Vec<Vec<f32>>>,
    ) -> Result<(Vec<Vec<f32>>, usize)> {
        let mut out: Vec<Option<Vec<f32>>> = texts.iter().map(|t| self.read(t)).collect();
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
        // Unique texts only, longest last so batches pad little.
        let mut todo: Vec<&str> = missing.iter().map(|&i| texts[i]).collect();
        todo.sort_by_key(|t| (t.len(), *t));
        todo.dedup();
        if !todo.is_empty() {
            let vecs = compute(&todo)?;
            for (t, v) in todo.iter().zip(&vecs) {
                self.write(t, v)?;
            }
            let map: std::collections::HashMap<&str, &Vec<f32>> =
                todo.iter().copied().zip(vecs.iter()).collect();
            for &i in &missing {
                out[i] = Some(map[texts[i]].clone());
            }
        }
        Ok((
            out.into_iter().map(|v| v.expect("filled")).collect(),
            todo.len(),
        ))
    }
}

/// An embedding file's bytes: dimension, vector, checksum (see [`EmbeddingCache`]).
fn encode_embedding(v: &[f32]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(4 + 4 * v.len() + EMBEDDING_CHECKSUM);
    bytes.extend_from_slice(&(v.len() as u32).to_le_bytes());
    bytes.extend(v.iter().flat_map(|x| x.to_le_bytes()));
    let sum = blake3::hash(&bytes);
    bytes.extend_from_slice(&sum.as_bytes()[..EMBEDDING_CHECKSUM]);
    bytes
}

/// The vector of an embedding file, or None when its length or checksum is wrong.
fn decode_embedding(bytes: &[u8]) -> Option<Vec<f32>> {
    let body_len = bytes.len().checked_sub(EMBEDDING_CHECKSUM)?;
    let (body, sum) = bytes.split_at(body_len);
    let dim = u32::from_le_bytes(body.get(..4)?.try_into().ok()?) as usize;
    if dim == 0 || body.len() != 4 + 4 * dim {
        return None;
    }
    if &blake3::hash(body).as_bytes()[..EMBEDDING_CHECKSUM] != sum {
        return None;
    }
    Some(
        body[4..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

/// Hashes of model folders, computed once per process.
fn hash_memo() -> &'static std::sync::Mutex<std::collections::HashMap<PathBuf, String>> {
    static MEMO: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<PathBuf, String>>> =
        std::sync::OnceLock::new();
    MEMO.get_or_init(Default::default)
}

/// [`model_hash`], memoized; for a model trained from scratch only the tokenizer's files count.
pub fn identity(dir: &Path, tokenizer_only: bool) -> Result<String> {
    let key = dir.join(if tokenizer_only { "tokenizer.json" } else { "" });
    if let Some(h) = hash_memo().lock().expect("memo").get(&key) {
        return Ok(h.clone());
    }
    let h = if tokenizer_only {
        let layout = Layout::of_dir(dir, Need::Tokenizer)?;
        if layout.tokenizer == super::model_files::TokenizerFormat::Json {
            // `tokenizer.json` alone is hashed as a file, as before other layouts were read.
            let p = dir.join(super::model_files::TOKENIZER_JSON);
            crate::hash::input_hash(&p)
                .map_err(|e| Error::data(format!("cannot read {}: {e}", p.display())))?
        } else {
            files_hash(dir, Need::Tokenizer)?
        }
    } else {
        model_hash(dir)?
    };
    hash_memo().lock().expect("memo").insert(key, h.clone());
    Ok(h)
}

/// Sentence embeddings for the cells of a run: encoders loaded once, vectors through the
/// [`EmbeddingCache`].
pub struct Embedder {
    cache_root: PathBuf,
    loaded: std::sync::Mutex<
        std::collections::HashMap<(PathBuf, usize), std::sync::Arc<SentenceEncoder>>,
    >,
    /// Texts embedded now (not from the cache), for the log.
    pub computed: std::sync::atomic::AtomicUsize,
}

impl Embedder {
    pub fn new(cache_root: &Path) -> Self {
        Self {
            cache_root: cache_root.to_path_buf(),
            loaded: Default::default(),
            computed: Default::default(),
        }
    }

    pub fn embed(
        &self,
        dir: &Path,
        max_length: usize,
        texts: &[&str],
        device: &Device,
        progress: &crate::progress::Progress,
    ) -> Result<Vec<Vec<f32>>> {
        let hash = identity(dir, false)?;
        let cache = EmbeddingCache::new(&self.cache_root, &hash, max_length, "mean");
        let (v, n) = cache.get_or_compute(texts, |todo| {
            let enc = {
                let mut m = self.loaded.lock().expect("encoders");
                match m.get(&(dir.to_path_buf(), max_length)) {
                    Some(e) => e.clone(),
                    None => {
                        let e =
                            std::sync::Arc::new(SentenceEncoder::load(dir, max_length, device)?);
                        m.insert((dir.to_path_buf(), max_length), e.clone());
                        e
                    }
                }
            };
            let pb = progress.bar(todo.len() as u64, &format!("embed {}", dir.display()));
            let mut out = Vec::with_capacity(todo.len());
            for chunk in todo.chunks(32) {
                out.extend(enc.embed(chunk, 32, device)?);
                pb.inc(chunk.len() as u64);
            }
            pb.finish_and_clear();
            Ok(out)
        })?;
        self.computed
            .fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minilm() -> PathBuf {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(crate::ml::params::DEFAULT_ENCODER);
        assert!(
            p.join("model.safetensors").is_file(),
            "{} is missing; run scripts/fetch-models.sh (or `just models`) first",
            p.display()
        );
        p
    }

    #[test]
    fn a_truncated_or_foreign_embedding_file_is_recomputed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = EmbeddingCache::new(dir.path(), "m", 128, "mean");
        let mut calls = 0;
        let mut embed = |todo: &[&str]| {
            calls += 1;
            Ok(todo.iter().map(|_| vec![0.25f32, -1.5, 3.0]).collect())
        };
        let (v, n) = cache.get_or_compute(&["a"], &mut embed).unwrap();
        assert_eq!((v, n), (vec![vec![0.25, -1.5, 3.0]], 1));
        let file = cache.path("a");
        // 4 (dimension) + 3 × 4 (vector) + 16 (checksum) bytes.
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 32);
        let good = std::fs::read(&file).unwrap();
        // Truncated by a crash mid-copy, a flipped bit, an old headerless file: all recomputed.
        for bad in [
            good[..20].to_vec(),
            {
                let mut b = good.clone();
                b[6] ^= 1;
                b
            },
            good[4..16].to_vec(),
            Vec::new(),
        ] {
            std::fs::write(&file, &bad).unwrap();
            let (v, n) = cache.get_or_compute(&["a"], &mut embed).unwrap();
            assert_eq!((v, n), (vec![vec![0.25, -1.5, 3.0]], 1));
            assert_eq!(std::fs::read(&file).unwrap(), good);
        }
        assert_eq!(calls, 5);
        // No temporary file is left beside the entries.
        let leftovers: Vec<_> = std::fs::read_dir(file.parent().unwrap())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn concurrent_writers_of_one_embedding_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let root = dir.path().to_path_buf();
                s.spawn(move || {
                    let cache = EmbeddingCache::new(&root, "m", 128, "mean");
                    for _ in 0..50 {
                        cache.write("same text", &[t as f32; 8]).unwrap();
                        let v = cache.read("same text").expect("a whole vector");
                        assert_eq!(v.len(), 8);
                    }
                });
            }
        });
    }

    #[test]
    fn hello_world_matches_the_pytorch_embedding() {
        let device = Device::flex();
        let enc = SentenceEncoder::load(&minilm(), 128, &device).unwrap();
        let v = enc.embed(&["Hello world"], 32, &device).unwrap();
        let expected = [
            -0.034477, 0.031023, 0.006735, 0.026109, -0.039362, -0.160302,
        ];
        for (i, e) in expected.iter().enumerate() {
            assert!(
                (v[0][i] - e).abs() < 1e-4,
                "dimension {i}: {} vs {e}; first values {:?}",
                v[0][i],
                &v[0][..6]
            );
        }
        let norm: f32 = v[0].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }

    #[test]
    fn padding_does_not_change_an_embedding() {
        let device = Device::flex();
        let enc = SentenceEncoder::load(&minilm(), 128, &device).unwrap();
        let alone = enc.embed(&["Hello world"], 1, &device).unwrap();
        let padded = enc
            .embed(
                &[
                    "Hello world",
                    "APT29 used a PowerShell loader to fetch the second stage.",
                ],
                2,
                &device,
            )
            .unwrap();
        let (ids, _) = enc
            .tokenize(&["a", "a much longer sentence than the first"], &device)
            .unwrap();
        assert_eq!(ids.dims()[1], 9, "padded to the longest text of the batch");
        for (a, b) in alone[0].iter().zip(&padded[0]) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(minilm().join("config.json"), dir.path().join("config.json")).unwrap();
        let Err(e) = SentenceEncoder::load(dir.path(), 128, &Device::flex()) else {
            panic!("a folder without weights must not load");
        };
        assert!(
            e.message.contains(
                "lacks tokenizer.json or vocab.json + merges.txt or vocab.txt; model.safetensors or pytorch_model.bin"
            ),
            "{}",
            e.message
        );
    }

    #[test]
    fn tensors_that_do_not_match_the_config_are_named() {
        let dir = tempfile::tempdir().unwrap();
        for f in MODEL_FILES {
            std::os::unix::fs::symlink(minilm().join(f), dir.path().join(f)).unwrap();
        }
        std::fs::remove_file(dir.path().join("config.json")).unwrap();
        let cfg = std::fs::read_to_string(minilm().join("config.json"))
            .unwrap()
            .replace("\"intermediate_size\": 1536", "\"intermediate_size\": 1024");
        std::fs::write(dir.path().join("config.json"), cfg).unwrap();
        let Err(e) = SentenceEncoder::load(dir.path(), 128, &Device::flex()) else {
            panic!("mismatched tensors must not load");
        };
        assert!(e.message.contains("intermediate.dense"), "{}", e.message);
    }

    #[test]
    fn a_saved_encoder_config_reads_back_as_its_architecture() {
        // SeqMeta stores the config inside a cached model; it must come back as the same kind.
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encoders");
        for (name, albert) in [("albert-groups", true), ("roberta-tiny", false)] {
            let c = read_config(&fixtures.join(name)).unwrap();
            assert_eq!(matches!(c, EncoderConfig::Albert(_)), albert, "{name}");
            let back: EncoderConfig =
                serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
            assert_eq!(back, c, "{name}");
        }
        let EncoderConfig::Albert(a) = read_config(&fixtures.join("albert-groups")).unwrap() else {
            unreachable!()
        };
        assert_eq!(
            (a.num_hidden_layers, a.num_hidden_groups, a.inner_group_num),
            (4, 2, 2)
        );
    }

    /// BLAKE3 over (name, length, bytes) of `files`, the identity formula written out.
    fn hash_of(dir: &Path, files: &[&str]) -> String {
        let mut h = blake3::Hasher::new();
        for f in files {
            let bytes = std::fs::read(dir.join(f)).unwrap();
            h.update(f.as_bytes());
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        }
        h.finalize().to_hex().to_string()
    }

    #[test]
    fn the_standard_layout_keeps_its_identity_and_other_layouts_hash_what_they_read() {
        // config.json, tokenizer.json, model.safetensors: the same hash as before other layouts.
        assert_eq!(
            model_hash(&minilm()).unwrap(),
            hash_of(&minilm(), MODEL_FILES)
        );
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encoders");
        let sb = fixtures.join("roberta-securebert");
        let files = [
            "config.json",
            "vocab.json",
            "merges.txt",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "pytorch_model.bin",
        ];
        assert_eq!(model_hash(&sb).unwrap(), hash_of(&sb, &files));
        // A tokenizer setting is part of the identity: a copy that differs there differs.
        let tmp = tempfile::tempdir().unwrap();
        for f in files {
            std::fs::copy(sb.join(f), tmp.path().join(f)).unwrap();
        }
        assert_eq!(model_hash(tmp.path()).unwrap(), model_hash(&sb).unwrap());
        std::fs::write(
            tmp.path().join("tokenizer_config.json"),
            r#"{"add_prefix_space": true}"#,
        )
        .unwrap();
        assert_ne!(model_hash(tmp.path()).unwrap(), model_hash(&sb).unwrap());
        // From scratch, only the tokenizer's files count.
        assert_eq!(identity(&sb, true).unwrap(), hash_of(&sb, &files[1..5]));
    }

    /// The roberta-securebert fixture's config.json, edited.
    fn config_with(
        edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
    ) -> serde_json::Value {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/encoders/roberta-securebert/config.json");
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        edit(v.as_object_mut().unwrap());
        v
    }

    fn rejected(edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> String {
        check_config(config_with(edit)).expect_err("must be rejected")
    }

    #[test]
    fn a_config_without_model_type_takes_its_architecture() {
        let c = check_config(config_with(|c| {
            c.remove("model_type");
        }))
        .unwrap();
        assert_eq!(c.model_type(), "roberta");
        let EncoderConfig::Bert(b) = c else {
            unreachable!()
        };
        assert_eq!(
            b.position_offset(),
            2,
            "RoBERTa's positions start at pad + 1"
        );
        let c = check_config(config_with(|c| {
            c.remove("model_type");
            c.insert(
                "architectures".into(),
                serde_json::json!(["AlbertForMaskedLM"]),
            );
            c.insert("embedding_size".into(), 16.into());
        }))
        .unwrap();
        assert_eq!(c.model_type(), "albert");
    }

    #[test]
    fn a_config_of_no_known_architecture_is_rejected() {
        let e = rejected(|c| {
            c.remove("model_type");
            c.insert(
                "architectures".into(),
                serde_json::json!(["GPT2LMHeadModel"]),
            );
        });
        assert_eq!(
            e,
            "no model_type, and no architecture synthcti runs in `architectures` (GPT2LMHeadModel); set model_type to bert, roberta, xlm-roberta or albert"
        );
        // A variant of a supported architecture is another architecture.
        let e = rejected(|c| {
            c.remove("model_type");
            c.insert(
                "architectures".into(),
                serde_json::json!(["RobertaPreLayerNormForMaskedLM"]),
            );
        });
        assert!(e.contains("(RobertaPreLayerNormForMaskedLM)"), "{e}");
        let e = rejected(|c| {
            c.remove("model_type");
            c.remove("architectures");
        });
        assert!(e.contains("(none given)"), "{e}");
    }

    #[test]
    fn an_unsupported_model_type_is_rejected() {
        let e = rejected(|c| {
            c.insert("model_type".into(), "deberta-v2".into());
        });
        assert!(
            e.starts_with("model_type `deberta-v2` is not supported"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_size_is_named() {
        let e = rejected(|c| {
            c.remove("num_hidden_layers");
        });
        assert_eq!(
            e,
            "`num_hidden_layers` is missing; every roberta config.json has it"
        );
    }

    #[test]
    fn a_zero_or_non_integer_size_is_named() {
        let e = rejected(|c| {
            c.insert("vocab_size".into(), 0.into());
        });
        assert_eq!(e, "`vocab_size` is 0; it must be a positive integer");
        let e = rejected(|c| {
            c.insert("hidden_size".into(), "32".into());
        });
        assert_eq!(e, "`hidden_size` is \"32\"; it must be a positive integer");
    }

    #[test]
    fn an_albert_config_needs_its_embedding_size() {
        let e = rejected(|c| {
            c.insert("model_type".into(), "albert".into());
        });
        assert_eq!(
            e,
            "`embedding_size` is missing; every albert config.json has it"
        );
    }

    #[test]
    fn a_hidden_size_not_divisible_by_the_heads_is_rejected() {
        let e = rejected(|c| {
            c.insert("num_attention_heads".into(), 3.into());
        });
        assert_eq!(
            e,
            "hidden_size 32 is not a multiple of num_attention_heads 3"
        );
    }

    #[test]
    fn a_pad_id_outside_the_vocabulary_is_rejected() {
        let e = rejected(|c| {
            c.insert("pad_token_id".into(), 500.into());
        });
        assert_eq!(
            e,
            "pad_token_id 500 is outside the vocabulary (vocab_size 500)"
        );
    }

    #[test]
    fn roberta_positions_that_leave_no_room_are_rejected() {
        let e = rejected(|c| {
            c.insert("max_position_embeddings".into(), 2.into());
        });
        assert!(
            e.starts_with("max_position_embeddings 2 leaves no position"),
            "{e}"
        );
    }

    #[test]
    fn relative_position_embeddings_are_rejected() {
        let e = rejected(|c| {
            c.insert("position_embedding_type".into(), "relative_key".into());
        });
        assert_eq!(
            e,
            "position_embedding_type `relative_key` is not supported; only `absolute` is"
        );
    }

    #[test]
    fn a_config_that_is_not_an_object_is_rejected() {
        assert_eq!(
            check_config(serde_json::json!([1, 2])).unwrap_err(),
            "config.json is not a JSON object"
        );
    }

    #[test]
    fn the_embedding_cache_computes_each_text_once() {
        let dir = tempfile::tempdir().unwrap();
        let cache = EmbeddingCache::new(dir.path(), "m", 128, "mean");
        let calls = std::cell::Cell::new(0);
        let mut f = |ts: &[&str]| {
            calls.set(calls.get() + ts.len());
            Ok(ts.iter().map(|t| vec![t.len() as f32, 1.0]).collect())
        };
        let (v, n) = cache.get_or_compute(&["ab", "c", "ab"], &mut f).unwrap();
        assert_eq!(
            (n, v[0].clone(), v[1].clone()),
            (2, vec![2.0, 1.0], vec![1.0, 1.0])
        );
        let (v2, n2) = cache.get_or_compute(&["c", "ab", "new"], &mut f).unwrap();
        assert_eq!(n2, 1);
        assert_eq!(v2[1], vec![2.0, 1.0]);
        assert_eq!(calls.get(), 3);
        let other = EmbeddingCache::new(dir.path(), "m", 64, "mean");
        assert_eq!(other.get_or_compute(&["c"], &mut f).unwrap().1, 1);
    }
}
