//! The BERT / RoBERTa encoder in burn, laid out like Hugging Face's so a `model.safetensors` maps
//! onto it with a few renames (`LayerNorm` → `layer_norm`, `self` → `self_attn`, the `bert.` /
//! `roberta.` prefix dropped) and burn's PyTorch adapter (Linear weights transposed, LayerNorm
//! weight/bias → gamma/beta).

use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear,
    LinearConfig,
};
use burn::tensor::activation::gelu;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, IndexingUpdateOp, Int, Tensor, TensorData};
use rayon::prelude::*;
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
    /// The feed-forward activation `hidden_act` names (exact GELU when it names none we know;
    /// [`crate::ml::encoder::read_config`] rejects those).
    pub fn activation(&self) -> Activation {
        Activation::parse(&self.hidden_act).unwrap_or(Activation::Gelu)
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
                    .map(|_| {
                        init_layer(
                            LayerDims {
                                hidden: h,
                                heads: self.num_attention_heads,
                                intermediate: self.intermediate_size,
                                eps: self.layer_norm_eps,
                                dropout: self.hidden_dropout_prob,
                                act: self.activation(),
                            },
                            device,
                        )
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

/// One post-norm transformer layer: self-attention, then the feed-forward block.
#[derive(Module, Debug)]
pub struct Layer {
    pub attention: Attention,
    pub intermediate: Intermediate,
    pub output: DenseNorm,
    /// The feed-forward activation (not a weight).
    #[module(skip)]
    pub act: Activation,
}

/// The feed-forward activation, by the names of Hugging Face's `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// `gelu`: 0.5·x·(1 + erf(x/√2)).
    Gelu,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))),
    /// ALBERT's default.
    GeluTanh,
    /// `relu`.
    Relu,
}

impl Activation {
    /// The activation a `hidden_act` value names, or None for one this crate does not have.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            _ => return None,
        })
    }
    /// The `hidden_act` values [`Activation::parse`] accepts, for error messages.
    pub const NAMES: &'static str = "gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu";

    pub fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Gelu => exact_gelu(x),
            Activation::GeluTanh => tanh_gelu(x),
            Activation::Relu => burn::tensor::activation::relu(x),
        }
    }
}

/// The sizes of one [`Layer`].
pub struct LayerDims {
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub eps: f64,
    pub dropout: f64,
    pub act: Activation,
}

/// A [`Layer`] of the given sizes with burn's default initialization.
pub fn init_layer(d: LayerDims, device: &Device) -> Layer {
    let h = d.hidden;
    let ln = || LayerNormConfig::new(h).with_epsilon(d.eps).init(device);
    let drop = || DropoutConfig::new(d.dropout).init();
    Layer {
        attention: Attention {
            self_attn: SelfAttention {
                query: LinearConfig::new(h, h).init(device),
                key: LinearConfig::new(h, h).init(device),
                value: LinearConfig::new(h, h).init(device),
                heads: d.heads,
            },
            output: DenseNorm {
                dense: LinearConfig::new(h, h).init(device),
                layer_norm: ln(),
                dropout: drop(),
            },
        },
        intermediate: Intermediate {
            dense: LinearConfig::new(h, d.intermediate).init(device),
        },
        output: DenseNorm {
            dense: LinearConfig::new(d.intermediate, h).init(device),
            layer_norm: ln(),
            dropout: drop(),
        },
        act: d.act,
    }
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

/// Where a batch's real tokens sit. The position-wise layers (projections, feed-forward,
/// LayerNorm) run on the real tokens only, packed as [N, H]; attention unpacks them to
/// [B, L, H] with zeros in the padding and masks those keys. Outputs are the same as running
/// every layer on the padded batch, with the padding's share of the work (two thirds of the
/// tokens of TRAM batches in file order) left out.
pub(crate) struct Tokens {
    b: usize,
    l: usize,
    /// Flat indices (into B·L) of the real tokens, in order.
    keep: Tensor<1, Int>,
    /// [B, 1, L, L], true where the key is padding.
    pad: Tensor<4, Bool>,
}

impl Tokens {
    pub(crate) fn new(mask: &Tensor<2, Int>) -> Self {
        let [b, l] = mask.dims();
        let device = mask.device();
        let flags = mask.to_data().convert::<i64>();
        let keep: Vec<i64> = flags
            .as_slice::<i64>()
            .expect("an i64 mask")
            .iter()
            .enumerate()
            .filter(|(_, m)| **m != 0)
            .map(|(i, _)| i as i64)
            .collect();
        let n = keep.len();
        Tokens {
            b,
            l,
            keep: Tensor::from_data(TensorData::new(keep, [n]), &device),
            pad: mask
                .clone()
                .reshape([b, 1, 1, l])
                .expand([b, 1, l, l])
                .equal_elem(0),
        }
    }

    /// [B, L, W] → [N, W].
    pub(crate) fn pack(&self, x: Tensor<3>) -> Tensor<2> {
        let w = x.dims()[2];
        x.reshape([self.b * self.l, w]).select(0, self.keep.clone())
    }

    /// [N, W] → [B, L, W], zeros in the padding.
    pub(crate) fn unpack(&self, x: Tensor<2>) -> Tensor<3> {
        let w = x.dims()[1];
        Tensor::<2>::zeros([self.b * self.l, w], &x.device())
            .select_assign(0, self.keep.clone(), x, IndexingUpdateOp::Add)
            .reshape([self.b, self.l, w])
    }
}

impl SelfAttention {
    /// x: the packed tokens [N, H] → [N, H].
    fn forward(&self, x: Tensor<2>, tokens: &Tokens) -> Tensor<2> {
        let h = x.dims()[1];
        let (b, l, dh) = (tokens.b, tokens.l, h / self.heads);
        let split = |t: Tensor<2>| {
            tokens
                .unpack(t)
                .reshape([b, l, self.heads, dh])
                .swap_dims(1, 2)
        };
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x));
        // softmax(QKᵀ/√d, padding keys masked) V: one fused kernel on the CPU backend, burn's
        // decomposition (same arithmetic) under autodiff.
        let o = attention(
            q,
            k,
            v,
            Some(tokens.pad.clone()),
            None,
            AttentionModuleOptions::default(),
        );
        tokens.pack(o.swap_dims(1, 2).reshape([b, l, h]))
    }
}

impl DenseNorm {
    fn forward(&self, x: Tensor<2>, residual: Tensor<2>) -> Tensor<2> {
        let y = self.dropout.forward(self.dense.forward(x));
        self.layer_norm.forward(y + residual)
    }
}

impl Layer {
    /// The packed tokens [N, H] → [N, H].
    pub(crate) fn forward(&self, x: Tensor<2>, tokens: &Tokens) -> Tensor<2> {
        let a = self.attention.self_attn.forward(x.clone(), tokens);
        let a = self.attention.output.forward(a, x);
        let i = self.act.forward(self.intermediate.dense.forward(a.clone()));
        self.output.forward(i, a)
    }
}

impl Bert {
    /// ids, mask: [B, L] (mask 1 for tokens, 0 for padding) → hidden states [B, L, H], zeros at
    /// padding positions.
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
        let tokens = Tokens::new(&mask);
        let e = &self.embeddings;
        let x = e.word_embeddings.forward(ids)
            + e.position_embeddings.forward(positions)
            + e.token_type_embeddings.forward(types);
        let mut x = tokens.pack(e.dropout.forward(e.layer_norm.forward(x)));
        for layer in &self.encoder.layer {
            x = layer.forward(x, &tokens);
        }
        tokens.unpack(x)
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

/// GELU, 0.5·x·(1 + erf(x/√2)), as BERT defines it. Without autodiff on the CPU it runs here on
/// all cores with a vectorizable erf (|error| < 4e-7); burn's CPU kernel calls a scalar `erff`
/// on one core, which was a fifth of the embedding time. With autodiff, or on a GPU, burn's op.
pub fn exact_gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.is_autodiff() || x.device() != Device::flex() {
        return gelu(x);
    }
    map_f32(x, gelu_slice)
}

/// The tanh approximation of GELU (Hugging Face's `gelu_new`), 0.5·x·(1 + tanh(√(2/π)·(x +
/// 0.044715·x³))), computed as x·σ(2u) with u the tanh's argument (the same function, without
/// the cancellation of 1 + tanh for negative x). Without autodiff on the CPU it runs on all cores,
/// vectorized (|error| < 1e-6 relative to x); otherwise burn's `gelu_approximate`.
pub fn tanh_gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.is_autodiff() || x.device() != Device::flex() {
        return burn::tensor::activation::gelu_approximate(x);
    }
    map_f32(x, tanh_gelu_slice)
}

/// `f` over the values of an f32 tensor, chunks in parallel.
fn map_f32<const D: usize>(x: Tensor<D>, f: fn(&mut [f32])) -> Tensor<D> {
    let device = x.device();
    let shape = x.shape();
    let mut v: Vec<f32> = match x.into_data().try_into_vec::<f32>() {
        Ok(v) => v,
        Err(e) => panic!("an activation on a non-f32 tensor: {e:?}"),
    };
    v.par_chunks_mut(16 * 1024).for_each(f);
    Tensor::from_data(TensorData::new(v, shape), &device)
}

/// `$name(xs)` applies `$one` to every element, compiled once more with AVX2 + FMA (chosen at
/// run time when the CPU has them) so that the loop vectorizes.
macro_rules! elementwise {
    ($name:ident, $avx2:ident, $one:ident) => {
        fn $name(xs: &mut [f32]) {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the features were just detected.
                unsafe { $avx2(xs) };
                return;
            }
            for x in xs {
                *x = $one(*x);
            }
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $avx2(xs: &mut [f32]) {
            for x in xs {
                *x = $one(*x);
            }
        }
    };
}

elementwise!(gelu_slice, gelu_slice_avx2, gelu_one);
elementwise!(tanh_gelu_slice, tanh_gelu_slice_avx2, tanh_gelu_one);

/// x·σ(2u), u = √(2/π)·(x + 0.044715·x³); σ(2u) = 1/(1 + e^(−2u)) for u ≥ 0 and
/// e^(−2|u|)/(1 + e^(−2|u|)) below, branch-free.
#[inline(always)]
fn tanh_gelu_one(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // √(2/π)
    let u = C * (x + 0.044_715 * x * x * x);
    let e = exp_neg(2.0 * u.abs());
    let num = if u >= 0.0 { 1.0 } else { e };
    x * num / (1.0 + e)
}

/// erf by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7) with a polynomial exp; branch-free so
/// the loop above vectorizes.
#[inline(always)]
fn gelu_one(x: f32) -> f32 {
    let z = (x * std::f32::consts::FRAC_1_SQRT_2).abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let erf_abs = 1.0 - poly * exp_neg(z * z);
    let erf = erf_abs.copysign(x);
    0.5 * x * (1.0 + erf)
}

/// e^(−y) for y ≥ 0: 2^n·p(r) with r in [−ln2/2, ln2/2], Cephes' degree-7 polynomial (relative error
/// ~2e-7); flushes to 0 past e^−87.
#[inline(always)]
fn exp_neg(y: f32) -> f32 {
    let x = if y > 87.0 { -87.0 } else { -y };
    // Adding 1.5·2^23 rounds to an integer n that then sits in the low mantissa bits: 2^n
    // comes from integer arithmetic on those bits (an `as i32` cast would not vectorize).
    const SHIFT: f32 = 12_582_912.0;
    let k = x * std::f32::consts::LOG2_E + SHIFT;
    let n = k - SHIFT;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let q = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let p = q * r * r + r + 1.0;
    p * f32::from_bits(k.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_gelu_matches_burn_within_1e6() {
        let device = Device::flex();
        let xs: Vec<f32> = (-4000..=4000)
            .map(|i| i as f32 / 400.0)
            .chain([-120.0, 95.0])
            .collect();
        let n = xs.len();
        let t = Tensor::<1>::from_data(TensorData::new(xs.clone(), [n]), &device);
        let ours: Vec<f32> = exact_gelu(t.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let burn: Vec<f32> = gelu(t).into_data().try_to_vec::<f32>().unwrap();
        for ((x, a), b) in xs.iter().zip(&ours).zip(&burn) {
            assert!(
                (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                "gelu({x}): {a} vs {b}"
            );
        }
    }

    #[test]
    fn fast_tanh_gelu_matches_burn_within_1e6() {
        let device = Device::flex();
        let xs: Vec<f32> = (-4000..=4000)
            .map(|i| i as f32 / 400.0)
            .chain([-120.0, 95.0])
            .collect();
        let n = xs.len();
        let t = Tensor::<1>::from_data(TensorData::new(xs.clone(), [n]), &device);
        let ours: Vec<f32> = tanh_gelu(t.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let burn: Vec<f32> = burn::tensor::activation::gelu_approximate(t)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for ((x, a), b) in xs.iter().zip(&ours).zip(&burn) {
            assert!(
                (a - b).abs() <= 1e-6 * (1.0 + x.abs()),
                "gelu_new({x}): {a} vs {b}"
            );
        }
    }

    #[test]
    fn activations_by_their_hugging_face_names() {
        assert_eq!(Activation::parse("gelu"), Some(Activation::Gelu));
        assert_eq!(Activation::parse("gelu_new"), Some(Activation::GeluTanh));
        assert_eq!(Activation::parse("relu"), Some(Activation::Relu));
        assert_eq!(Activation::parse("swish"), None);
    }

    #[test]
    fn exp_neg_is_accurate_and_flushes() {
        for i in 0..=870 {
            let y = i as f32 / 10.0;
            let (a, b) = (exp_neg(y), (-y).exp());
            assert!((a - b).abs() <= 3e-7 * b, "exp(-{y}): {a} vs {b}");
        }
        assert!(exp_neg(1e4) < 1e-37);
    }
}
