//! The Llama family's forward pass (Llama, Mistral, Qwen2): token embedding → blocks (RMSNorm,
//! grouped-query attention with rotary position embeddings, RMSNorm, SwiGLU) → final norm →
//! logits at every position. Each block is built and run on its own, with an observer that
//! sees the input of every linear layer: calibration runs the model a block at a time.

use candle_core::{DType, Device, Tensor};

use super::attention::{self, Heads};
use super::config::DecoderConfig;
use super::observer::Observer;
use super::weights::WeightSource;
use crate::transformer::nn_error;
use crate::CompressError;

type R<T> = Result<T, CompressError>;

/// A linear layer: `x · Wᵀ + b`, by its weight's name.
pub struct Linear {
    pub name: String,
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    fn load(w: &dyn WeightSource, prefix: &str, bias: bool) -> R<Linear> {
        let name = format!("{prefix}.weight");
        Ok(Linear {
            weight: w.tensor(&name)?,
            bias: if bias {
                Some(w.tensor(&format!("{prefix}.bias"))?)
            } else {
                None
            },
            name,
        })
    }

    /// `x` is [rows, in]; the observer sees it before the product.
    pub fn forward(&self, x: &Tensor, observer: &mut dyn Observer) -> R<Tensor> {
        observer.linear_input(&self.name, x);
        let y = x
            .matmul(&self.weight.t().map_err(nn_error)?)
            .map_err(nn_error)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b).map_err(nn_error),
            None => Ok(y),
        }
    }
}

/// Cosines and sines of every position up to the longest window, for `rotate_half` rotary
/// embeddings (as Hugging Face computes them, in f32).
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f64, positions: usize) -> R<Rope> {
        let half = head_dim / 2;
        let inv: Vec<f32> = (0..half)
            .map(|j| 1.0 / (theta.powf((2 * j) as f64 / head_dim as f64) as f32))
            .collect();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for t in 0..positions {
            for f in &inv {
                let angle = t as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let shape = (positions, half);
        Ok(Rope {
            cos: Tensor::from_vec(cos, shape, &Device::Cpu).map_err(nn_error)?,
            sin: Tensor::from_vec(sin, shape, &Device::Cpu).map_err(nn_error)?,
        })
    }

    /// `x` is [batch, heads, positions, head_dim].
    fn apply(&self, x: &Tensor) -> R<Tensor> {
        let t = x.dim(2).map_err(nn_error)?;
        let (cos, sin) = (
            self.cos.narrow(0, 0, t).map_err(nn_error)?,
            self.sin.narrow(0, 0, t).map_err(nn_error)?,
        );
        candle_nn::rotary_emb::rope(&x.contiguous().map_err(nn_error)?, &cos, &sin)
            .map_err(nn_error)
    }
}

/// One decoder block's weights.
pub struct DecoderBlock {
    pub index: usize,
    pub(crate) input_norm: Tensor,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub(crate) post_norm: Tensor,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    head_dim: usize,
    eps: f32,
}

impl DecoderBlock {
    pub fn load(c: &DecoderConfig, w: &dyn WeightSource, index: usize) -> R<DecoderBlock> {
        let p = |s: &str| format!("model.layers.{index}.{s}");
        Ok(DecoderBlock {
            index,
            input_norm: w.tensor(&p("input_layernorm.weight"))?,
            q: Linear::load(w, &p("self_attn.q_proj"), c.qkv_bias)?,
            k: Linear::load(w, &p("self_attn.k_proj"), c.qkv_bias)?,
            v: Linear::load(w, &p("self_attn.v_proj"), c.qkv_bias)?,
            o: Linear::load(w, &p("self_attn.o_proj"), c.o_bias)?,
            post_norm: w.tensor(&p("post_attention_layernorm.weight"))?,
            gate: Linear::load(w, &p("mlp.gate_proj"), c.mlp_bias)?,
            up: Linear::load(w, &p("mlp.up_proj"), c.mlp_bias)?,
            down: Linear::load(w, &p("mlp.down_proj"), c.mlp_bias)?,
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
            eps: c.rms_eps as f32,
        })
    }

    /// Every linear layer of the block, in the order the forward pass uses them.
    pub fn linears_mut(&mut self) -> [&mut Linear; 7] {
        [
            &mut self.q,
            &mut self.k,
            &mut self.v,
            &mut self.o,
            &mut self.gate,
            &mut self.up,
            &mut self.down,
        ]
    }

    /// `x` is [batch, positions, hidden]; so is the result.
    pub fn forward(&self, x: &Tensor, rope: &Rope, observer: &mut dyn Observer) -> R<Tensor> {
        let (b, t, h) = x.dims3().map_err(nn_error)?;
        let e = nn_error;
        let normed = candle_nn::ops::rms_norm(x, &self.input_norm, self.eps).map_err(e)?;
        let flat = normed.reshape((b * t, h)).map_err(e)?;
        let split = |y: Tensor, heads: usize| -> R<Tensor> {
            y.reshape((b, t, heads, self.head_dim))
                .and_then(|y| y.transpose(1, 2))
                .map_err(e)
        };
        let q = rope_of(rope, split(self.q.forward(&flat, observer)?, self.heads)?)?;
        let k = rope_of(
            rope,
            split(self.k.forward(&flat, observer)?, self.kv_heads)?,
        )?;
        let v = split(self.v.forward(&flat, observer)?, self.kv_heads)?
            .contiguous()
            .map_err(e)?;
        let attended = self.attend(&q, &k, &v, b, t)?;
        let attended = attended
            .reshape((b * t, self.heads * self.head_dim))
            .map_err(e)?;
        let x = (x + self
            .o
            .forward(&attended, observer)?
            .reshape((b, t, h))
            .map_err(e)?)
        .map_err(e)?;
        let normed = candle_nn::ops::rms_norm(&x, &self.post_norm, self.eps).map_err(e)?;
        let flat = normed.reshape((b * t, h)).map_err(e)?;
        let gate = candle_nn::ops::silu(&self.gate.forward(&flat, observer)?).map_err(e)?;
        let up = self.up.forward(&flat, observer)?;
        let mlp = self.down.forward(&(gate * up).map_err(e)?, observer)?;
        (x + mlp.reshape((b, t, h)).map_err(e)?).map_err(e)
    }

    /// Causal attention, one sequence at a time (`super::attention`: the query heads that
    /// share a key/value head read it in place, the masked future is never computed).
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, b: usize, t: usize) -> R<Tensor> {
        let e = nn_error;
        let d = self.head_dim;
        let shape = Heads {
            heads: self.heads,
            kv_heads: self.kv_heads,
            positions: t,
            head_dim: d,
        };
        let scale = 1.0 / (d as f32).sqrt();
        let mut outputs = Vec::with_capacity(b);
        for i in 0..b {
            let flat = |x: &Tensor| -> R<Vec<f32>> {
                x.get(i)
                    .and_then(|x| x.flatten_all())
                    .and_then(|x| x.to_vec1())
                    .map_err(e)
            };
            let o = attention::causal(&flat(q)?, &flat(k)?, &flat(v)?, shape, scale);
            outputs.push(Tensor::from_vec(o, (self.heads, t, d), &Device::Cpu).map_err(e)?);
        }
        Tensor::stack(&outputs, 0)
            .and_then(|o| o.transpose(1, 2))
            .and_then(|o| o.contiguous())
            .map_err(e)
    }
}

fn rope_of(rope: &Rope, x: Tensor) -> R<Tensor> {
    rope.apply(&x)
}

/// The embedding table and, at the end, the final norm and the head (the embedding table
/// again when tied).
pub struct DecoderEnds {
    embed: Tensor,
    norm: Tensor,
    head: Tensor,
    eps: f32,
}

impl DecoderEnds {
    pub fn load(c: &DecoderConfig, w: &dyn WeightSource) -> R<DecoderEnds> {
        let embed = w.tensor("model.embed_tokens.weight")?;
        let head = if c.tie_embeddings {
            embed.clone()
        } else {
            w.tensor("lm_head.weight")?
        };
        Ok(DecoderEnds {
            embed,
            norm: w.tensor("model.norm.weight")?,
            head,
            eps: c.rms_eps as f32,
        })
    }

    /// [batch, positions] token ids → [batch, positions, hidden].
    pub fn embed(&self, ids: &[Vec<u32>]) -> R<Tensor> {
        let (b, t) = (ids.len(), ids.first().map_or(0, Vec::len));
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let vocab = self.embed.dim(0).map_err(nn_error)?;
        if let Some(bad) = flat.iter().find(|&&i| i as usize >= vocab) {
            return Err(CompressError::InvalidRequest(format!(
                "token id {bad} is outside the model's vocabulary of {vocab} (a dataset tokenized for another model?)"
            )));
        }
        let idx = Tensor::from_vec(flat, b * t, &Device::Cpu).map_err(nn_error)?;
        self.embed
            .index_select(&idx, 0)
            .and_then(|x| x.reshape((b, t, self.embed.dim(1)?)))
            .map_err(nn_error)
    }

    /// [positions, hidden] hidden states of one sequence → [positions, vocab] logits.
    pub fn logits(&self, hidden: &Tensor) -> R<Tensor> {
        let normed = candle_nn::ops::rms_norm(hidden, &self.norm, self.eps).map_err(nn_error)?;
        normed
            .matmul(&self.head.t().map_err(nn_error)?)
            .and_then(|l| l.to_dtype(DType::F32))
            .map_err(nn_error)
    }
}

/// Logits at every position for `ids` ([batch, positions]), the whole model at once: for
/// tests and short inputs. Long evaluations run block by block (`crate::transformer::eval`).
pub fn logits(c: &DecoderConfig, w: &dyn WeightSource, ids: &[Vec<u32>]) -> R<Tensor> {
    let ends = DecoderEnds::load(c, w)?;
    let t = ids.first().map_or(0, Vec::len);
    let rope = Rope::new(c.head_dim, c.rope_theta, t.max(1))?;
    let mut x = ends.embed(ids)?;
    for l in 0..c.layers {
        x = DecoderBlock::load(c, w, l)?.forward(&x, &rope, &mut ())?;
    }
    let mut out = Vec::with_capacity(ids.len());
    for i in 0..ids.len() {
        out.push(ends.logits(&x.get(i).map_err(nn_error)?)?);
    }
    Tensor::stack(&out, 0).map_err(nn_error)
}
