//! AWQ's foldable pairs: an operation whose output feeds a group of linear layers and nothing
//! else, so that dividing its output channels by s and multiplying the layers' input columns
//! by s leaves the block's function unchanged.

use candle_core::{Device, Tensor};

use crate::transformer::decoder::{DecoderBlock, Linear};
use crate::transformer::encoder::EncoderBlock;
use crate::transformer::nn_error;
use crate::CompressError;

/// What comes before the layers.
pub enum Preceding<'a> {
    /// An RMSNorm's weight, by name.
    Norm(String, &'a mut Tensor),
    /// A linear layer: its output rows (and bias).
    Linear(&'a mut Linear),
}

pub struct Pair<'a> {
    pub before: Preceding<'a>,
    pub after: Vec<&'a mut Linear>,
}

impl Pair<'_> {
    pub fn before_name(&self) -> &str {
        match &self.before {
            Preceding::Norm(name, _) => name,
            Preceding::Linear(l) => &l.name,
        }
    }

    /// Divides the preceding output channels by `s` and multiplies the layers' input columns
    /// by it.
    pub fn fold(&mut self, s: &[f32]) -> Result<(), CompressError> {
        let e = nn_error;
        let flat = Tensor::from_slice(s, s.len(), &Device::Cpu).map_err(e)?;
        let (as_column, as_row) = (
            flat.reshape((s.len(), 1)).map_err(e)?,
            flat.reshape((1, s.len())).map_err(e)?,
        );
        match &mut self.before {
            Preceding::Norm(_, w) => **w = w.broadcast_div(&flat).map_err(e)?,
            Preceding::Linear(l) => {
                l.weight = l.weight.broadcast_div(&as_column).map_err(e)?;
                if let Some(b) = &mut l.bias {
                    *b = b.broadcast_div(&flat).map_err(e)?;
                }
            }
        }
        for l in self.after.iter_mut() {
            l.weight = l.weight.broadcast_mul(&as_row).map_err(e)?;
        }
        Ok(())
    }
}

/// Pairs a block may have; `pair(i)` is None where block i has none.
pub const MAX_PAIRS: usize = 4;

impl DecoderBlock {
    /// Llama's pairs (AutoAWQ's mappings): input norm → q, k, v; v → o (only where every
    /// query head has its own value head: with grouped-query attention v has fewer outputs
    /// than o has inputs); post-attention norm → gate, up; up → down.
    pub fn pair(&mut self, i: usize) -> Option<Pair<'_>> {
        let name = |n: &str| format!("model.layers.{}.{n}.weight", self.index);
        let (ordinary, norm_in, norm_post) = (
            self.heads == self.kv_heads,
            name("input_layernorm"),
            name("post_attention_layernorm"),
        );
        let (before, after) = match i {
            0 => (
                Preceding::Norm(norm_in, &mut self.input_norm),
                vec![&mut self.q, &mut self.k, &mut self.v],
            ),
            1 if ordinary => (Preceding::Linear(&mut self.v), vec![&mut self.o]),
            2 => (
                Preceding::Norm(norm_post, &mut self.post_norm),
                vec![&mut self.gate, &mut self.up],
            ),
            3 => (Preceding::Linear(&mut self.up), vec![&mut self.down]),
            _ => return None,
        };
        Some(Pair { before, after })
    }
}

impl EncoderBlock {
    /// BERT's one pair: value → attention output. Its norms also feed the residual stream,
    /// and GELU stands between the intermediate and output layers.
    pub fn pair(&mut self, i: usize) -> Option<Pair<'_>> {
        (i == 0).then(|| Pair {
            before: Preceding::Linear(&mut self.value),
            after: vec![&mut self.attention_out],
        })
    }
}
