//! BERT's forward pass: word + position + token-type embeddings → LayerNorm → blocks
//! (self-attention over the unpadded positions, residual + LayerNorm, GELU feed-forward,
//! residual + LayerNorm) → hidden states; sentence embeddings by mean pooling over the
//! attention mask and L2 normalisation, as sentence-transformers does.

use candle_core::{Device, Tensor, D};

use super::config::EncoderConfig;
use super::decoder::Linear;
use super::observer::Observer;
use super::weights::WeightSource;
use crate::transformer::nn_error;
use crate::CompressError;

type R<T> = Result<T, CompressError>;

struct Norm {
    weight: Tensor,
    bias: Tensor,
}

impl Norm {
    fn load(w: &dyn WeightSource, prefix: &str) -> R<Norm> {
        Ok(Norm {
            weight: w.tensor(&format!("{prefix}.weight"))?,
            bias: w.tensor(&format!("{prefix}.bias"))?,
        })
    }

    fn forward(&self, x: &Tensor, eps: f32) -> R<Tensor> {
        candle_nn::ops::layer_norm(x, &self.weight, &self.bias, eps).map_err(nn_error)
    }
}

fn linear(w: &dyn WeightSource, prefix: &str) -> R<Linear> {
    Ok(Linear {
        name: format!("{prefix}.weight"),
        weight: w.tensor(&format!("{prefix}.weight"))?,
        bias: Some(w.tensor(&format!("{prefix}.bias"))?),
    })
}

pub struct EncoderBlock {
    pub index: usize,
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub attention_out: Linear,
    attention_norm: Norm,
    pub intermediate: Linear,
    pub output: Linear,
    output_norm: Norm,
    heads: usize,
    eps: f32,
    gelu_tanh: bool,
}

impl EncoderBlock {
    pub fn load(c: &EncoderConfig, w: &dyn WeightSource, prefix: &str, index: usize) -> R<Self> {
        let p = |s: &str| format!("{prefix}encoder.layer.{index}.{s}");
        Ok(EncoderBlock {
            index,
            query: linear(w, &p("attention.self.query"))?,
            key: linear(w, &p("attention.self.key"))?,
            value: linear(w, &p("attention.self.value"))?,
            attention_out: linear(w, &p("attention.output.dense"))?,
            attention_norm: Norm::load(w, &p("attention.output.LayerNorm"))?,
            intermediate: linear(w, &p("intermediate.dense"))?,
            output: linear(w, &p("output.dense"))?,
            output_norm: Norm::load(w, &p("output.LayerNorm"))?,
            heads: c.heads,
            eps: c.layer_norm_eps as f32,
            gelu_tanh: c.gelu_tanh,
        })
    }

    pub fn linears_mut(&mut self) -> [&mut Linear; 6] {
        [
            &mut self.query,
            &mut self.key,
            &mut self.value,
            &mut self.attention_out,
            &mut self.intermediate,
            &mut self.output,
        ]
    }

    /// `x` is [batch, positions, hidden]; `mask_bias` [batch, 1, 1, positions] is 0 where a
    /// position is attended to and very negative where it is padding.
    pub fn forward(
        &self,
        x: &Tensor,
        mask_bias: &Tensor,
        observer: &mut dyn Observer,
    ) -> R<Tensor> {
        let e = nn_error;
        let (b, t, h) = x.dims3().map_err(e)?;
        let d = h / self.heads;
        let flat = x.reshape((b * t, h)).map_err(e)?;
        let split = |y: Tensor| -> R<Tensor> {
            y.reshape((b, t, self.heads, d))
                .and_then(|y| y.transpose(1, 2))
                .and_then(|y| y.contiguous())
                .map_err(e)
        };
        let q = split(self.query.forward(&flat, observer)?)?;
        let k = split(self.key.forward(&flat, observer)?)?;
        let v = split(self.value.forward(&flat, observer)?)?;
        let scores = (q.matmul(&k.t().map_err(e)?).map_err(e)? / (d as f64).sqrt()).map_err(e)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(mask_bias).map_err(e)?)
            .map_err(e)?;
        let ctx = probs
            .matmul(&v)
            .and_then(|c| c.transpose(1, 2))
            .and_then(|c| c.reshape((b * t, h)))
            .map_err(e)?;
        let attended = self.attention_out.forward(&ctx, observer)?;
        let x = self
            .attention_norm
            .forward(&(attended + &flat).map_err(e)?, self.eps)?;
        let inner = self.intermediate.forward(&x, observer)?;
        let inner = if self.gelu_tanh {
            inner.gelu()
        } else {
            inner.gelu_erf()
        }
        .map_err(e)?;
        let out = self.output.forward(&inner, observer)?;
        self.output_norm
            .forward(&(out + x).map_err(e)?, self.eps)?
            .reshape((b, t, h))
            .map_err(e)
    }
}

pub struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: Norm,
    eps: f32,
}

impl Embeddings {
    pub fn load(c: &EncoderConfig, w: &dyn WeightSource, prefix: &str) -> R<Self> {
        let p = |s: &str| format!("{prefix}embeddings.{s}");
        Ok(Embeddings {
            word: w.tensor(&p("word_embeddings.weight"))?,
            position: w.tensor(&p("position_embeddings.weight"))?,
            token_type: w.tensor(&p("token_type_embeddings.weight"))?,
            norm: Norm::load(w, &p("LayerNorm"))?,
            eps: c.layer_norm_eps as f32,
        })
    }

    /// [batch, positions] ids (padded to one length) → [batch, positions, hidden].
    pub fn forward(&self, ids: &[Vec<u32>]) -> R<Tensor> {
        let e = nn_error;
        let (b, t) = (ids.len(), ids.first().map_or(0, Vec::len));
        let vocab = self.word.dim(0).map_err(e)?;
        let positions = self.position.dim(0).map_err(e)?;
        if t > positions {
            return Err(CompressError::InvalidRequest(format!(
                "a sequence of {t} tokens is longer than the model's {positions} positions"
            )));
        }
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        if let Some(bad) = flat.iter().find(|&&i| i as usize >= vocab) {
            return Err(CompressError::InvalidRequest(format!(
                "token id {bad} is outside the model's vocabulary of {vocab}"
            )));
        }
        let idx = Tensor::from_vec(flat, b * t, &Device::Cpu).map_err(e)?;
        let hidden = self.word.dim(1).map_err(e)?;
        let words = self
            .word
            .index_select(&idx, 0)
            .and_then(|w| w.reshape((b, t, hidden)))
            .map_err(e)?;
        let pos = self.position.narrow(0, 0, t).map_err(e)?;
        let typ = self.token_type.narrow(0, 0, 1).map_err(e)?;
        let sum = words
            .broadcast_add(&pos)
            .and_then(|x| x.broadcast_add(&typ))
            .map_err(e)?;
        self.norm.forward(&sum, self.eps)
    }
}

/// 0 for positions that count, a large negative number for padding: [batch, 1, 1, positions].
pub fn mask_bias(mask: &[Vec<u32>]) -> R<Tensor> {
    let (b, t) = (mask.len(), mask.first().map_or(0, Vec::len));
    let bias: Vec<f32> = mask
        .iter()
        .flatten()
        .map(|&m| if m == 0 { f32::MIN } else { 0.0 })
        .collect();
    Tensor::from_vec(bias, (b, 1, 1, t), &Device::Cpu).map_err(nn_error)
}

/// Mean of the hidden states over the positions the mask keeps, then L2-normalised:
/// [batch, positions, hidden] → [batch, hidden].
pub fn sentence_embeddings(hidden: &Tensor, mask: &[Vec<u32>], normalize: bool) -> R<Tensor> {
    let e = nn_error;
    let (b, t) = (mask.len(), mask.first().map_or(0, Vec::len));
    let m: Vec<f32> = mask.iter().flatten().map(|&v| v as f32).collect();
    let m = Tensor::from_vec(m, (b, t, 1), &Device::Cpu).map_err(e)?;
    let summed = hidden.broadcast_mul(&m).and_then(|x| x.sum(1)).map_err(e)?;
    let count = m.sum(1).and_then(|c| c.clamp(1e-9, f64::MAX)).map_err(e)?;
    let mean = summed.broadcast_div(&count).map_err(e)?;
    if !normalize {
        return Ok(mean);
    }
    let norm = mean
        .sqr()
        .and_then(|s| s.sum_keepdim(D::Minus1))
        .and_then(|s| s.sqrt())
        .and_then(|s| s.clamp(1e-12, f64::MAX))
        .map_err(e)?;
    mean.broadcast_div(&norm).map_err(e)
}

/// The last hidden states for padded `ids` and their `mask`, the whole model at once.
pub fn hidden_states(
    c: &EncoderConfig,
    w: &dyn WeightSource,
    ids: &[Vec<u32>],
    mask: &[Vec<u32>],
) -> R<Tensor> {
    let names: Vec<String> = w.shapes().into_iter().map(|(n, _)| n).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let prefix = super::tensors::bert_prefix(&names);
    let mut x = Embeddings::load(c, w, prefix)?.forward(ids)?;
    let bias = mask_bias(mask)?;
    for l in 0..c.layers {
        x = EncoderBlock::load(c, w, prefix, l)?.forward(&x, &bias, &mut ())?;
    }
    Ok(x)
}
