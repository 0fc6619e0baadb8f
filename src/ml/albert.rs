//! ALBERT (Lan et al. 2020, "ALBERT: A Lite BERT for Self-supervised Learning of Language
//! Representations") in burn, laid out like Hugging Face's `AlbertModel` so a `model.safetensors`
//! maps onto it with renames (see [`crate::ml::encoder::load_weights`]):
//!
//! - factorized embeddings: word, position and token-type tables of width `embedding_size`,
//!   LayerNorm, then `encoder.embedding_hidden_mapping_in` projects them to `hidden_size`;
//! - cross-layer parameter sharing: `num_hidden_groups` groups of `inner_group_num` layers each;
//!   pass i of `num_hidden_layers` runs every layer of group ⌊i·groups / layers⌋ (transformers'
//!   `AlbertTransformer`), so albert-base-v2 (one group of one layer) applies the same layer 12
//!   times;
//! - each layer is BERT's post-norm layer ([`crate::ml::bert::Layer`]); the activation is
//!   `hidden_act` (`gelu_new`, the tanh GELU, by default);
//! - the pooler: tanh(W·h₀ + b) over the first token's state.

use burn::module::Module;
use burn::nn::{DropoutConfig, EmbeddingConfig, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use super::bert::{Activation, Embeddings, Layer, LayerDims, Tokens, init_layer};

/// The architecture, from a Hugging Face `config.json` whose `model_type` is `albert`. Defaults
/// are transformers' `AlbertConfig` defaults, for keys a config leaves out.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AlbertConfig {
    /// Always `albert`.
    pub model_type: String,
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    /// Width of the embedding tables (E), projected to `hidden_size` (H).
    #[serde(default = "d_embedding")]
    pub embedding_size: usize,
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// Passes through a layer group.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Distinct layer groups (parameters shared within one).
    #[serde(default = "one")]
    pub num_hidden_groups: usize,
    /// Layers in each group, run in order on each pass.
    #[serde(default = "one")]
    pub inner_group_num: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub hidden_dropout_prob: f64,
    #[serde(default = "d_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_types")]
    pub type_vocab_size: usize,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: usize,
    /// Only `absolute` is supported.
    #[serde(default = "d_position_type")]
    pub position_embedding_type: String,
}

fn d_vocab() -> usize {
    30000
}
fn d_embedding() -> usize {
    128
}
fn d_hidden() -> usize {
    4096
}
fn d_layers() -> usize {
    12
}
fn one() -> usize {
    1
}
fn d_heads() -> usize {
    64
}
fn d_intermediate() -> usize {
    16384
}
fn d_act() -> String {
    "gelu_new".into()
}
fn d_positions() -> usize {
    512
}
fn d_types() -> usize {
    2
}
fn d_eps() -> f64 {
    1e-12
}
fn d_position_type() -> String {
    "absolute".into()
}

impl AlbertConfig {
    /// What in this config the module cannot run, as one sentence naming the key and what is
    /// valid; None when it can.
    pub fn unsupported(&self) -> Option<String> {
        let c = self;
        if c.num_hidden_layers == 0 {
            return Some("num_hidden_layers is 0; it must be at least 1".into());
        }
        if c.num_hidden_groups == 0 || c.num_hidden_groups > c.num_hidden_layers {
            return Some(format!(
                "num_hidden_groups is {}; it must be between 1 and num_hidden_layers ({})",
                c.num_hidden_groups, c.num_hidden_layers
            ));
        }
        if c.inner_group_num == 0 {
            return Some("inner_group_num is 0; it must be at least 1".into());
        }
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Some(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                c.hidden_size, c.num_attention_heads
            ));
        }
        if Activation::parse(&c.hidden_act).is_none() {
            return Some(format!(
                "hidden_act `{}` is not supported; use one of {}",
                c.hidden_act,
                Activation::NAMES
            ));
        }
        if c.position_embedding_type != "absolute" {
            return Some(format!(
                "position_embedding_type `{}` is not supported; only `absolute` is",
                c.position_embedding_type
            ));
        }
        if c.max_position_embeddings == 0 || c.vocab_size == 0 || c.embedding_size == 0 {
            return Some(
                "vocab_size, embedding_size and max_position_embeddings must be at least 1".into(),
            );
        }
        None
    }

    /// Longest sequence the position table allows.
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings
    }

    /// The group that pass `i` (0-based, of `num_hidden_layers`) runs: ⌊i·groups / layers⌋.
    pub fn group_of_pass(&self, i: usize) -> usize {
        i * self.num_hidden_groups / self.num_hidden_layers
    }

    /// A randomly initialized model; `pooler` adds the pooler (not needed for mean pooling).
    /// Call [`AlbertConfig::unsupported`] first: the sizes are taken as they are.
    pub fn init(&self, pooler: bool, device: &Device) -> Albert {
        let (e, h) = (self.embedding_size, self.hidden_size);
        let act = Activation::parse(&self.hidden_act).unwrap_or(Activation::GeluTanh);
        Albert {
            embeddings: Embeddings {
                word_embeddings: EmbeddingConfig::new(self.vocab_size, e).init(device),
                position_embeddings: EmbeddingConfig::new(self.max_position_embeddings, e)
                    .init(device),
                token_type_embeddings: EmbeddingConfig::new(self.type_vocab_size.max(1), e)
                    .init(device),
                layer_norm: LayerNormConfig::new(e)
                    .with_epsilon(self.layer_norm_eps)
                    .init(device),
                dropout: DropoutConfig::new(self.hidden_dropout_prob).init(),
            },
            encoder: AlbertEncoder {
                embedding_hidden_mapping_in: LinearConfig::new(e, h).init(device),
                albert_layer_groups: (0..self.num_hidden_groups)
                    .map(|_| LayerGroup {
                        albert_layers: (0..self.inner_group_num)
                            .map(|_| {
                                init_layer(
                                    LayerDims {
                                        hidden: h,
                                        heads: self.num_attention_heads,
                                        intermediate: self.intermediate_size,
                                        eps: self.layer_norm_eps,
                                        dropout: self.hidden_dropout_prob,
                                        act,
                                    },
                                    device,
                                )
                            })
                            .collect(),
                    })
                    .collect(),
                passes: (0..self.num_hidden_layers)
                    .map(|i| self.group_of_pass(i))
                    .collect(),
            },
            pooler: pooler.then(|| LinearConfig::new(h, h).init(device)),
        }
    }
}

/// The layers one group shares.
#[derive(Module, Debug)]
pub struct LayerGroup {
    pub albert_layers: Vec<Layer>,
}

#[derive(Module, Debug)]
pub struct AlbertEncoder {
    /// E → H.
    pub embedding_hidden_mapping_in: Linear,
    pub albert_layer_groups: Vec<LayerGroup>,
    /// The group each pass runs, in order (not a weight).
    #[module(skip)]
    pub passes: Vec<usize>,
}

#[derive(Module, Debug)]
pub struct Albert {
    pub embeddings: Embeddings,
    pub encoder: AlbertEncoder,
    /// tanh(W·h₀ + b); absent when the model is built for mean pooling.
    pub pooler: Option<Linear>,
}

impl Albert {
    /// ids, mask: [B, L] (mask 1 for tokens, 0 for padding, tokens first) → hidden states
    /// [B, L, H], zeros at padding positions. Positions count from 0, token types are all 0.
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Tensor<2, Int>) -> Tensor<3> {
        let [b, l] = ids.dims();
        let device = ids.device();
        let positions = Tensor::<1, Int>::arange(0..l as i64, &device)
            .reshape([1, l])
            .expand([b, l]);
        let types = Tensor::<2, Int>::zeros([b, l], &device);
        let tokens = Tokens::new(&mask);
        let e = &self.embeddings;
        let x = e.word_embeddings.forward(ids)
            + e.position_embeddings.forward(positions)
            + e.token_type_embeddings.forward(types);
        let x = tokens.pack(e.dropout.forward(e.layer_norm.forward(x)));
        let mut x = self.encoder.embedding_hidden_mapping_in.forward(x);
        for &g in &self.encoder.passes {
            for layer in &self.encoder.albert_layer_groups[g].albert_layers {
                x = layer.forward(x, &tokens);
            }
        }
        tokens.unpack(x)
    }

    /// The pooler output, tanh(W·h₀ + b) over each row's first token: [B, L, H] → [B, H]; None
    /// when the model was built without the pooler.
    pub fn pool(&self, hidden: Tensor<3>) -> Option<Tensor<2>> {
        let pooler = self.pooler.as_ref()?;
        let [b, _, h] = hidden.dims();
        let first = hidden.slice([0..b, 0..1, 0..h]).reshape([b, h]);
        Some(pooler.forward(first).tanh())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(layers: usize, groups: usize, inner: usize) -> AlbertConfig {
        serde_json::from_value(serde_json::json!({
            "model_type": "albert", "vocab_size": 50, "embedding_size": 8, "hidden_size": 16,
            "num_hidden_layers": layers, "num_hidden_groups": groups, "inner_group_num": inner,
            "num_attention_heads": 2, "intermediate_size": 24, "max_position_embeddings": 32
        }))
        .unwrap()
    }

    #[test]
    fn passes_run_groups_as_transformers_does() {
        let c = config(12, 1, 1);
        assert!((0..12).all(|i| c.group_of_pass(i) == 0));
        let c = config(4, 2, 2);
        let groups: Vec<usize> = (0..4).map(|i| c.group_of_pass(i)).collect();
        assert_eq!(groups, [0, 0, 1, 1]);
        // transformers: int(i / (layers / groups)) with layers / groups = 1.5.
        let c = config(3, 2, 1);
        let groups: Vec<usize> = (0..3).map(|i| c.group_of_pass(i)).collect();
        assert_eq!(groups, [0, 0, 1]);
    }

    #[test]
    fn shared_layers_are_stored_once() {
        let device = Device::flex();
        let one = config(1, 1, 1).init(false, &device).num_params();
        let twelve = config(12, 1, 1).init(false, &device).num_params();
        assert_eq!(one, twelve, "12 passes through one shared layer");
        // Embeddings 50·8 + 32·8 + 2·8 + LayerNorm 2·8, projection 8·16 + 16, one layer:
        // q, k, v, dense 4·(16·16 + 16), 2 LayerNorms 4·16, ffn 16·24 + 24, ffn_output 24·16 + 16.
        let expected = 50 * 8
            + 32 * 8
            + 2 * 8
            + 2 * 8
            + 8 * 16
            + 16
            + 4 * (16 * 16 + 16)
            + 4 * 16
            + 16 * 24
            + 24
            + 24 * 16
            + 16;
        assert_eq!(one, expected);
        let with_pooler = config(12, 1, 1).init(true, &device).num_params();
        assert_eq!(with_pooler, expected + 16 * 16 + 16);
        let groups = config(4, 2, 2).init(false, &device).num_params();
        assert_eq!(groups - (expected - one_layer()), 4 * one_layer());
    }

    fn one_layer() -> usize {
        4 * (16 * 16 + 16) + 4 * 16 + 16 * 24 + 24 + 24 * 16 + 16
    }

    #[test]
    fn unsupported_values_are_named() {
        let bad = |f: &dyn Fn(&mut AlbertConfig)| {
            let mut c = config(4, 1, 1);
            f(&mut c);
            c.unsupported().expect("rejected")
        };
        assert!(bad(&|c| c.num_hidden_groups = 0).contains("num_hidden_groups is 0"));
        assert!(bad(&|c| c.num_hidden_groups = 5).contains("between 1 and num_hidden_layers (4)"));
        assert!(bad(&|c| c.inner_group_num = 0).contains("inner_group_num"));
        assert!(bad(&|c| c.hidden_act = "swish".into()).contains("hidden_act `swish`"));
        assert!(
            bad(&|c| c.position_embedding_type = "relative_key".into()).contains("relative_key")
        );
        assert!(bad(&|c| c.num_attention_heads = 3).contains("multiple of num_attention_heads"));
        assert_eq!(config(4, 2, 2).unsupported(), None);
    }
}
