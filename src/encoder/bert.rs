//! The BERT / RoBERTa encoder in burn, laid out like Hugging Face's so a `model.safetensors` maps
//! onto it with a few renames (`LayerNorm` → `layer_norm`, `self` → `self_attn`, the `bert.` /
//! `roberta.` prefix dropped) and burn's PyTorch adapter (Linear weights transposed, LayerNorm
//! weight/bias → gamma/beta).

use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear,
    LinearConfig,
};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Bool, Device, Int, Tensor};
use serde::{Deserialize, Serialize};

/// The architecture, from a Hugging Face `config.json` (or chosen for a model trained from
/// scratch).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BertConfig {
    /// `bert` or `roberta`.
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default)]
    pub pad_token_id: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
}

fn default_model_type() -> String {
    "bert".into()
}
fn default_eps() -> f64 {
    1e-12
}
fn default_type_vocab() -> usize {
    2
}
fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}

impl BertConfig {
    pub fn is_roberta(&self) -> bool {
        self.model_type == "roberta" || self.model_type == "xlm-roberta"
    }
    /// RoBERTa numbers positions from `pad_token_id + 1`.
    pub fn position_offset(&self) -> usize {
        if self.is_roberta() {
            self.pad_token_id + 1
        } else {
            0
        }
    }
    /// Longest sequence the position table allows.
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings - self.position_offset()
    }

    pub fn init(&self, device: &Device) -> Bert {
        let h = self.hidden_size;
        let ln = || {
            LayerNormConfig::new(h)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let drop = || DropoutConfig::new(self.hidden_dropout_prob).init();
        Bert {
            embeddings: Embeddings {
                word_embeddings: EmbeddingConfig::new(self.vocab_size, h).init(device),
                position_embeddings: EmbeddingConfig::new(self.max_position_embeddings, h)
                    .init(device),
                token_type_embeddings: EmbeddingConfig::new(self.type_vocab_size.max(1), h)
                    .init(device),
                layer_norm: ln(),
                dropout: drop(),
            },
            encoder: Encoder {
                layer: (0..self.num_hidden_layers)
                    .map(|_| Layer {
                        attention: Attention {
                            self_attn: SelfAttention {
                                query: LinearConfig::new(h, h).init(device),
                                key: LinearConfig::new(h, h).init(device),
                                value: LinearConfig::new(h, h).init(device),
                                heads: self.num_attention_heads,
                            },
                            output: DenseNorm {
                                dense: LinearConfig::new(h, h).init(device),
                                layer_norm: ln(),
                                dropout: drop(),
                            },
                        },
                        intermediate: Intermediate {
                            dense: LinearConfig::new(h, self.intermediate_size).init(device),
                        },
                        output: DenseNorm {
                            dense: LinearConfig::new(self.intermediate_size, h).init(device),
                            layer_norm: ln(),
                            dropout: drop(),
                        },
                    })
                    .collect(),
            },
            position_offset: self.position_offset(),
        }
    }
}

#[derive(Module, Debug)]
pub struct Embeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Embedding,
    pub layer_norm: LayerNorm,
    pub dropout: Dropout,
}

#[derive(Module, Debug)]
pub struct SelfAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub heads: usize,
}

/// A dense layer, dropout, then LayerNorm over the residual sum (BERT's post-norm).
#[derive(Module, Debug)]
pub struct DenseNorm {
    pub dense: Linear,
    pub layer_norm: LayerNorm,
    pub dropout: Dropout,
}

#[derive(Module, Debug)]
pub struct Attention {
    pub self_attn: SelfAttention,
    pub output: DenseNorm,
}

#[derive(Module, Debug)]
pub struct Intermediate {
    pub dense: Linear,
}

#[derive(Module, Debug)]
pub struct Layer {
    pub attention: Attention,
    pub intermediate: Intermediate,
    pub output: DenseNorm,
}

#[derive(Module, Debug)]
pub struct Encoder {
    pub layer: Vec<Layer>,
}

#[derive(Module, Debug)]
pub struct Bert {
    pub embeddings: Embeddings,
    pub encoder: Encoder,
    pub position_offset: usize,
}

impl SelfAttention {
    /// x: [B, L, H]; mask_bias: [B, 1, 1, L] (0 for tokens, a large negative number for padding).
    fn forward(&self, x: Tensor<3>, mask_bias: Tensor<4>) -> Tensor<3> {
        let [b, l, h] = x.dims();
        let dh = h / self.heads;
        let split = |t: Tensor<3>| t.reshape([b, l, self.heads, dh]).swap_dims(1, 2);
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x));
        let scores = q.matmul(k.swap_dims(2, 3)) / (dh as f64).sqrt() + mask_bias;
        let probs = softmax(scores, 3);
        probs.matmul(v).swap_dims(1, 2).reshape([b, l, h])
    }
}

impl DenseNorm {
    fn forward(&self, x: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        let y = self.dropout.forward(self.dense.forward(x));
        self.layer_norm.forward(y + residual)
    }
}

impl Layer {
    fn forward(&self, x: Tensor<3>, mask_bias: Tensor<4>) -> Tensor<3> {
        let a = self.attention.self_attn.forward(x.clone(), mask_bias);
        let a = self.attention.output.forward(a, x);
        let i = gelu(self.intermediate.dense.forward(a.clone()));
        self.output.forward(i, a)
    }
}

impl Bert {
    /// ids, mask: [B, L] (mask 1 for tokens, 0 for padding) → hidden states [B, L, H].
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Tensor<2, Int>) -> Tensor<3> {
        let [b, l] = ids.dims();
        let device = ids.device();
        let positions = Tensor::<1, Int>::arange(
            self.position_offset as i64..(self.position_offset + l) as i64,
            &device,
        )
        .reshape([1, l])
        .expand([b, l]);
        let types = Tensor::<2, Int>::zeros([b, l], &device);
        let e = &self.embeddings;
        let x = e.word_embeddings.forward(ids)
            + e.position_embeddings.forward(positions)
            + e.token_type_embeddings.forward(types);
        let mut x = e.dropout.forward(e.layer_norm.forward(x));
        let pad: Tensor<2, Bool> = mask.equal_elem(0);
        let mask_bias = Tensor::<2>::zeros([b, l], &device)
            .mask_fill(pad, -1.0e4)
            .reshape([b, 1, 1, l]);
        for layer in &self.encoder.layer {
            x = layer.forward(x, mask_bias.clone());
        }
        x
    }
}

/// Mean of the token states under the mask: [B, L, H] × [B, L] → [B, H].
pub fn mean_pool(hidden: Tensor<3>, mask: Tensor<2, Int>) -> Tensor<2> {
    let m = mask.float().unsqueeze_dim::<3>(2); // [B, L, 1]
    let summed: Tensor<2> = (hidden * m.clone()).sum_dim(1).squeeze_dim(1);
    let count: Tensor<2> = m.sum_dim(1).squeeze_dim::<2>(1).clamp_min(1e-9);
    summed / count
}

/// Rows scaled to unit L2 norm.
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x
        .clone()
        .powf_scalar(2.0)
        .sum_dim(1)
        .sqrt()
        .clamp_min(1e-12);
    x / norm
}
