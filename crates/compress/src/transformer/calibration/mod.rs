//! The calibration pass the activation-aware methods share, for the Llama family and BERT: the model
//! runs a block at a time over the calibration windows, each block on the outputs of the
//! blocks before it as already compressed (as the reference implementations do, so a block's
//! errors are seen, and partly absorbed, by the next). Per block: one pass collects what the
//! method needs about every linear layer's input (Σx² per input column), the method rewrites
//! the block's weights, and a second pass with the new weights measures each layer's
//! reconstruction error and makes the next block's inputs. Only one block's weights and the
//! windows' hidden states are held, so memory stays small whatever the model's size.
//!
//! Between the two passes a method may first rescale the block's foldable pairs (AWQ,
//! `pairs`), then rewrites each selected layer given its input statistics (`stats`): Σx² per
//! column (Wanda, importance matrices), mean |x| (AWQ) and, when asked, the Hessian Σxᵀx
//! (SparseGPT, GPTQ, AWQ's search).

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{Device, Tensor};

use super::config::{DecoderConfig, EncoderConfig, TransformerConfig};
use super::decoder::{DecoderBlock, DecoderEnds, Linear, Rope};
use super::encoder::{mask_bias, Embeddings, EncoderBlock};
use super::nn_error;
use super::observer::Observer;
use super::tensors::bert_prefix;
use super::weights::WeightSource;
use crate::control::Control;
use crate::CompressError;
use domain::results::ProgressDetail;

pub mod pairs;
pub mod stats;

pub use pairs::{Pair, Preceding, MAX_PAIRS};
pub use stats::InputStats;
use stats::{Collector, Reconstruction};

type R<T> = Result<T, CompressError>;

/// One rewritten layer: its new weight ([out, in], row-major f32) and how far its outputs
/// moved on the calibration inputs.
#[derive(Debug, Clone)]
pub struct LayerResult {
    pub name: String,
    pub weight: Vec<f32>,
    pub nonzero_before: u64,
    /// ‖XWᵀ − XŴᵀ‖² / ‖XWᵀ‖² over the layer's calibration inputs (those the compressed model
    /// before it gives it).
    pub reconstruction_error: f64,
    pub seconds: f64,
}

/// A block once its method has run.
#[derive(Debug, Default)]
pub struct BlockResult {
    /// The selected layers, rewritten.
    pub layers: Vec<LayerResult>,
    /// Other tensors the method changed (a norm or a layer left unselected that AWQ
    /// rescaled, with their biases): name → values.
    pub tensors: Vec<(String, Vec<f32>)>,
    /// Every linear layer's input statistics, Hessians dropped.
    pub inputs: HashMap<String, InputStats>,
}

/// What a calibrated method does to a block.
pub trait Rewrite {
    /// The operation, for progress events.
    fn op(&self) -> &'static str;

    /// Whether the layers' input Hessians are needed.
    fn needs_hessian(&self) -> bool {
        false
    }

    /// Whether the method only looks (an importance matrix): the blocks then run once each.
    fn observes_only(&self) -> bool {
        false
    }

    /// The scales to fold into a pair (AWQ), or None to leave it: `before` names the
    /// preceding norm or layer, `after` holds each following layer's name, weight ([out, in]
    /// row-major) and shape, `input` their shared input's statistics.
    fn rescale(
        &mut self,
        _before: &str,
        _after: &[(String, Vec<f32>, [usize; 2])],
        _input: &InputStats,
    ) -> R<Option<Vec<f32>>> {
        Ok(None)
    }

    /// Rewrites one selected layer's weight in place.
    fn layer(
        &mut self,
        name: &str,
        weight: &mut [f32],
        shape: [usize; 2],
        input: &InputStats,
    ) -> R<()>;
}

/// Runs `method` on every layer `selected` takes, block by block over `sequences` (a
/// decoder's windows of token ids, or an encoder's sentences with their special tokens);
/// `done` gets each block's results as soon as the block is finished (to be written out and
/// dropped).
pub fn calibrate(
    config: &TransformerConfig,
    weights: &dyn WeightSource,
    sequences: &[Vec<u32>],
    selected: &dyn Fn(&str) -> bool,
    method: &mut dyn Rewrite,
    done: &mut dyn FnMut(usize, BlockResult) -> R<()>,
    control: &Control,
) -> R<()> {
    match config {
        TransformerConfig::Decoder(c) => {
            decoder_blockwise(c, weights, sequences, selected, method, done, control)
        }
        TransformerConfig::Encoder(c) => {
            encoder_blockwise(c, weights, sequences, selected, method, done, control)
        }
    }
}

fn decoder_blockwise(
    c: &DecoderConfig,
    weights: &dyn WeightSource,
    windows: &[Vec<u32>],
    selected: &dyn Fn(&str) -> bool,
    method: &mut dyn Rewrite,
    done: &mut dyn FnMut(usize, BlockResult) -> R<()>,
    control: &Control,
) -> R<()> {
    let longest = windows.iter().map(Vec::len).max().unwrap_or(0);
    let rope = Rope::new(c.head_dim, c.rope_theta, longest.max(1))?;
    let ends = DecoderEnds::load(c, weights)?;
    let hidden: Vec<Tensor> = windows
        .iter()
        .map(|ids| ends.embed(std::slice::from_ref(ids)))
        .collect::<R<_>>()?;
    drop(ends);
    let blocks = Blocks {
        layers: c.layers,
        load: &|l| DecoderBlock::load(c, weights, l),
        linears: &|b: &mut DecoderBlock| b.linears_mut().into_iter().collect(),
        pair: &|b: &mut DecoderBlock, i| b.pair(i),
        forward: &|b: &DecoderBlock, x: &Tensor, o: &mut dyn Observer| b.forward(x, &rope, o),
    };
    blockwise(&blocks, hidden, selected, method, done, control)
}

/// Each sentence runs on its own, so that no padding enters the statistics.
fn encoder_blockwise(
    c: &EncoderConfig,
    weights: &dyn WeightSource,
    sentences: &[Vec<u32>],
    selected: &dyn Fn(&str) -> bool,
    method: &mut dyn Rewrite,
    done: &mut dyn FnMut(usize, BlockResult) -> R<()>,
    control: &Control,
) -> R<()> {
    let names: Vec<String> = weights.shapes().into_iter().map(|(n, _)| n).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let prefix = bert_prefix(&names);
    let embeddings = Embeddings::load(c, weights, prefix)?;
    let hidden: Vec<Tensor> = sentences
        .iter()
        .map(|ids| embeddings.forward(std::slice::from_ref(ids)))
        .collect::<R<_>>()?;
    drop(embeddings);
    let blocks = Blocks {
        layers: c.layers,
        load: &|l| EncoderBlock::load(c, weights, prefix, l),
        linears: &|b: &mut EncoderBlock| b.linears_mut().into_iter().collect(),
        pair: &|b: &mut EncoderBlock, i| b.pair(i),
        forward: &|b: &EncoderBlock, x: &Tensor, o: &mut dyn Observer| {
            let t = x.dim(1).map_err(nn_error)?;
            b.forward(x, &mask_bias(&[vec![1; t]])?, o)
        },
    };
    blockwise(&blocks, hidden, selected, method, done, control)
}

/// How the driver builds, rewrites and runs one kind of block.
struct Blocks<'a, B> {
    layers: usize,
    load: &'a dyn Fn(usize) -> R<B>,
    linears: &'a dyn Fn(&mut B) -> Vec<&mut Linear>,
    pair: &'a dyn for<'b> Fn(&'b mut B, usize) -> Option<Pair<'b>>,
    forward: &'a dyn Fn(&B, &Tensor, &mut dyn Observer) -> R<Tensor>,
}

fn blockwise<B>(
    blocks: &Blocks<'_, B>,
    mut hidden: Vec<Tensor>,
    selected: &dyn Fn(&str) -> bool,
    method: &mut dyn Rewrite,
    done: &mut dyn FnMut(usize, BlockResult) -> R<()>,
    control: &Control,
) -> R<()> {
    let method_op = method.op();
    control.add_work(blocks.layers as u64);
    let finished = |l: usize| {
        control.advance(1);
        control.set_detail(ProgressDetail {
            block: Some(l + 1),
            blocks: Some(blocks.layers),
            ..ProgressDetail::step(control.step_index(), method_op)
        });
    };
    for l in 0..blocks.layers {
        control.checkpoint()?;
        let mut block = (blocks.load)(l)?;
        let mut collector = Collector::new(method.needs_hessian());
        if method.observes_only() {
            for x in hidden.iter_mut() {
                *x = (blocks.forward)(&block, x, &mut collector)?;
            }
            let mut inputs = collector.finish()?;
            inputs.values_mut().for_each(|s| s.hessian = None);
            done(
                l,
                BlockResult {
                    inputs,
                    ..BlockResult::default()
                },
            )?;
            control.advance(1);
            continue;
        }
        for x in &hidden {
            (blocks.forward)(&block, x, &mut collector)?;
        }
        let mut inputs = collector.finish()?;
        let tensors = rescale(blocks, &mut block, &mut inputs, selected, method)?;
        let mut originals = HashMap::new();
        let mut timings = HashMap::new();
        for linear in (blocks.linears)(&mut block) {
            if !selected(&linear.name) {
                continue;
            }
            let started = Instant::now();
            let (rows, cols) = linear.weight.dims2().map_err(nn_error)?;
            let mut w = values(&linear.weight)?;
            let input = inputs
                .get(&linear.name)
                .ok_or_else(|| unused(&linear.name))?;
            let nonzero = w.iter().filter(|v| **v != 0.0).count() as u64;
            method.layer(&linear.name, &mut w, [rows, cols], input)?;
            let new = Tensor::from_vec(w, (rows, cols), &Device::Cpu).map_err(nn_error)?;
            let original = std::mem::replace(&mut linear.weight, new);
            let delta = (&original - &linear.weight).map_err(nn_error)?;
            originals.insert(linear.name.clone(), (original, delta));
            timings.insert(
                linear.name.clone(),
                (started.elapsed().as_secs_f64(), nonzero),
            );
        }
        let mut errors = Reconstruction {
            originals: &originals,
            sums: HashMap::new(),
            failed: None,
        };
        for x in hidden.iter_mut() {
            *x = (blocks.forward)(&block, x, &mut errors)?;
        }
        if let Some(e) = errors.failed {
            return Err(e);
        }
        let mut layers = Vec::new();
        for linear in (blocks.linears)(&mut block) {
            let Some(&(seconds, nonzero_before)) = timings.get(&linear.name) else {
                continue;
            };
            let (moved, total) = errors.sums.get(&linear.name).copied().unwrap_or((0.0, 0.0));
            layers.push(LayerResult {
                name: linear.name.clone(),
                weight: values(&linear.weight)?,
                nonzero_before,
                reconstruction_error: if total > 0.0 { moved / total } else { 0.0 },
                seconds,
            });
        }
        inputs.values_mut().for_each(|s| s.hessian = None);
        done(
            l,
            BlockResult {
                layers,
                tensors,
                inputs,
            },
        )?;
        finished(l);
    }
    Ok(())
}

/// Offers each of the block's pairs whose following layers are all selected to the method,
/// folds the scales it returns, and gives the following layers the statistics of their new
/// input. Returns the other tensors changed (a norm; a preceding layer that is not selected;
/// a preceding layer's bias).
fn rescale<B>(
    blocks: &Blocks<'_, B>,
    block: &mut B,
    inputs: &mut HashMap<String, InputStats>,
    selected: &dyn Fn(&str) -> bool,
    method: &mut dyn Rewrite,
) -> R<Vec<(String, Vec<f32>)>> {
    let mut tensors = Vec::new();
    for i in 0..MAX_PAIRS {
        let Some(mut pair) = (blocks.pair)(block, i) else {
            continue;
        };
        if !pair.after.iter().all(|l| selected(&l.name)) {
            continue;
        }
        let input = inputs
            .get(&pair.after[0].name)
            .ok_or_else(|| unused(&pair.after[0].name))?
            .clone();
        let after = pair
            .after
            .iter()
            .map(|l| {
                let (rows, cols) = l.weight.dims2().map_err(nn_error)?;
                Ok((l.name.clone(), values(&l.weight)?, [rows, cols]))
            })
            .collect::<R<Vec<_>>>()?;
        let Some(s) = method.rescale(pair.before_name(), &after, &input)? else {
            continue;
        };
        pair.fold(&s)?;
        let scaled_input = input.divided_by(&s);
        for l in &pair.after {
            inputs.insert(l.name.clone(), scaled_input.clone());
        }
        match &pair.before {
            Preceding::Norm(name, w) => tensors.push((name.clone(), values(w)?)),
            Preceding::Linear(l) => {
                // A selected layer's weight is written with the layers; its bias is not.
                if !selected(&l.name) {
                    tensors.push((l.name.clone(), values(&l.weight)?));
                }
                if let Some(b) = &l.bias {
                    let bias = l.name.strip_suffix(".weight").unwrap_or(&l.name);
                    tensors.push((format!("{bias}.bias"), values(b)?));
                }
            }
        }
    }
    Ok(tensors)
}

fn values(t: &Tensor) -> R<Vec<f32>> {
    t.flatten_all().and_then(|w| w.to_vec1()).map_err(nn_error)
}

fn unused(name: &str) -> CompressError {
    CompressError::InvalidModel(format!(
        "{name} is not used by the forward pass (it saw no calibration input)"
    ))
}
