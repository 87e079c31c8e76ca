//! Fidelity on evaluation text, for one model or an original and its compressed copies side
//! by side on the same sequences. The models run a block at a time over every sequence (one
//! block's weights in memory per model, plus the hidden states), so a model larger than
//! memory still evaluates; logits are made a slice of positions at a time.

use std::time::Instant;

use candle_core::Tensor;

use super::config::{DecoderConfig, EncoderConfig};
use super::decoder::{DecoderBlock, DecoderEnds, Rope};
use super::encoder::{mask_bias, sentence_embeddings, Embeddings, EncoderBlock};
use super::fastmath;
use super::nn_error;
use super::weights::WeightSource;
use crate::control::Control;
use crate::CompressError;
use domain::results::{FidelityComparison, ModelFidelity};

type R<T> = Result<T, CompressError>;

/// Logit rows made at once: 256 × a 50 000-token vocabulary is 50 MB per model.
const ROWS: usize = 256;

/// Each model's perplexity figures, and each compressed model (`models[1..]`) against the
/// original (`models[0]`).
pub fn decoders(
    c: &DecoderConfig,
    models: &[&dyn WeightSource],
    windows: &[Vec<u32>],
    control: &Control,
) -> R<(Vec<ModelFidelity>, Vec<FidelityComparison>)> {
    let longest = windows.iter().map(Vec::len).max().unwrap_or(0);
    if let Some(w) = c.sliding_window.filter(|w| longest > *w) {
        return Err(CompressError::InvalidRequest(format!(
            "windows of {longest} tokens are longer than the model's sliding window of {w}; ask for a shorter window"
        )));
    }
    let rope = Rope::new(c.head_dim, c.rope_theta, longest.max(1))?;
    let mut ends = Vec::with_capacity(models.len());
    let mut hidden = Vec::with_capacity(models.len());
    let mut seconds = vec![0.0f64; models.len()];
    for (m, w) in models.iter().enumerate() {
        let e = DecoderEnds::load(c, *w)?;
        let started = Instant::now();
        let h: Vec<Tensor> = windows
            .iter()
            .map(|ids| e.embed(std::slice::from_ref(ids)))
            .collect::<R<_>>()?;
        seconds[m] += started.elapsed().as_secs_f64();
        hidden.push(h);
        ends.push(e);
    }
    control.add_work((c.layers * models.len() + models.len()) as u64);
    for l in 0..c.layers {
        for (m, w) in models.iter().enumerate() {
            control.checkpoint()?;
            let block = DecoderBlock::load(c, *w, l)?;
            let started = Instant::now();
            for x in hidden[m].iter_mut() {
                *x = block.forward(x, &rope, &mut ())?;
            }
            seconds[m] += started.elapsed().as_secs_f64();
            control.advance(1);
        }
    }
    let mut totals = vec![Totals::default(); models.len()];
    for (i, ids) in windows.iter().enumerate() {
        control.checkpoint()?;
        let t = ids.len();
        if t < 2 {
            continue;
        }
        let targets: Vec<u32> = ids[1..].to_vec();
        for start in (0..t - 1).step_by(ROWS) {
            let rows = ROWS.min(t - 1 - start);
            let mut logits = Vec::with_capacity(models.len());
            for (m, e) in ends.iter().enumerate() {
                let started = Instant::now();
                let h = hidden[m][i]
                    .get(0)
                    .and_then(|h| h.narrow(0, start, rows))
                    .map_err(nn_error)?;
                let l: Vec<f32> = e
                    .logits(&h)?
                    .flatten_all()
                    .and_then(|l| l.to_vec1())
                    .map_err(nn_error)?;
                seconds[m] += started.elapsed().as_secs_f64();
                logits.push(l);
            }
            score(&logits, &targets[start..start + rows], &mut totals);
        }
    }
    control.advance(models.len() as u64);
    let tokens: u64 = windows.iter().map(|w| w.len() as u64).sum();
    let figures = totals
        .iter()
        .zip(&seconds)
        .map(|(t, s)| ModelFidelity {
            tokens,
            sequences: windows.len() as u64,
            predictions: Some(t.predictions),
            perplexity: Some((t.nll / t.predictions.max(1) as f64).exp()),
            mean_nll: Some(t.nll / t.predictions.max(1) as f64),
            tokens_per_second: tokens as f64 / s.max(1e-9),
        })
        .collect::<Vec<_>>();
    let base = figures[0].perplexity.unwrap_or(f64::NAN);
    let comparisons = totals[1..]
        .iter()
        .zip(&figures[1..])
        .map(|(t, f)| {
            let ppl = f.perplexity.unwrap_or(f64::NAN);
            FidelityComparison {
                kl_mean: Some(t.kl / t.predictions.max(1) as f64),
                top1_agreement: Some(t.agree as f64 / t.predictions.max(1) as f64),
                perplexity_delta: Some(ppl - base),
                perplexity_change: Some(ppl / base - 1.0),
                ..Default::default()
            }
        })
        .collect();
    Ok((figures, comparisons))
}

#[derive(Debug, Clone, Default)]
struct Totals {
    nll: f64,
    predictions: u64,
    kl: f64,
    agree: u64,
}

/// Adds one slice of positions: `logits[m]` is [rows, vocab] for model m (row-major),
/// `targets` the next tokens. Each row is scored on its own, rows across all cores.
fn score(logits: &[Vec<f32>], targets: &[u32], totals: &mut [Totals]) {
    use rayon::prelude::*;
    let rows = targets.len();
    let vocab = logits[0].len() / rows.max(1);
    let models = logits.len();
    let per_row: Vec<Vec<(f64, f64, bool)>> = (0..rows)
        .into_par_iter()
        .map(|r| {
            let row = |m: usize| &logits[m][r * vocab..(r + 1) * vocab];
            // log-sum-exp and argmax of each model's row.
            let stats: Vec<(f32, f64, usize)> = (0..models)
                .map(|m| {
                    let l = row(m);
                    let max = fastmath::max(l);
                    let arg = l.iter().position(|&v| v == max).unwrap_or(0);
                    (max, fastmath::sum_exp_shifted(l, max).ln(), arg)
                })
                .collect();
            let lp = |m: usize, v: usize| (row(m)[v] - stats[m].0) as f64 - stats[m].1;
            let target = targets[r] as usize;
            (0..models)
                .map(|m| {
                    let nll = -lp(m, target);
                    if m == 0 {
                        return (nll, 0.0, true);
                    }
                    // KL(p₀‖pₘ) = Σ p₀ (lp₀ − lpₘ), with lp₀ − lpₘ = (l₀ − lₘ) − c per token.
                    let c = (stats[0].0 as f64 + stats[0].1) - (stats[m].0 as f64 + stats[m].1);
                    let (shift, log_sum) = (stats[0].0, stats[0].1);
                    let kl: f64 = row(0)
                        .iter()
                        .zip(row(m))
                        .map(|(&a, &b)| {
                            let p = fastmath::exp(a - shift) as f64;
                            p * ((a - b) as f64 - c)
                        })
                        .sum::<f64>()
                        / log_sum.exp();
                    (nll, kl, stats[0].2 == stats[m].2)
                })
                .collect()
        })
        .collect();
    for row in per_row {
        for (m, (nll, kl, agree)) in row.into_iter().enumerate() {
            let t = &mut totals[m];
            t.nll += nll;
            t.predictions += 1;
            t.kl += kl;
            t.agree += u64::from(agree && m > 0);
        }
    }
}

/// A batch of sentences padded to one length: token ids and the attention mask.
type Padded = (Vec<Vec<u32>>, Vec<Vec<u32>>);

/// Sentences embedded at once.
const BATCH: usize = 32;

/// Each model's throughput, and each compressed model's embeddings against the original's.
/// `sentences` are token ids with the tokenizer's special tokens, cut to the model's length.
pub fn encoders(
    c: &EncoderConfig,
    models: &[&dyn WeightSource],
    sentences: &[Vec<u32>],
    control: &Control,
) -> R<(Vec<ModelFidelity>, Vec<FidelityComparison>)> {
    let names: Vec<String> = models[0].shapes().into_iter().map(|(n, _)| n).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let prefix = super::tensors::bert_prefix(&names);
    // Similar lengths together: less padding.
    let mut order: Vec<usize> = (0..sentences.len()).collect();
    order.sort_by_key(|&i| sentences[i].len());
    let batches: Vec<Padded> = order
        .chunks(BATCH)
        .map(|chunk| {
            let width = chunk.iter().map(|&i| sentences[i].len()).max().unwrap_or(0);
            let ids = chunk
                .iter()
                .map(|&i| {
                    let mut s = sentences[i].clone();
                    s.resize(width, 0);
                    s
                })
                .collect();
            let mask = chunk
                .iter()
                .map(|&i| {
                    let mut m = vec![1u32; sentences[i].len()];
                    m.resize(width, 0);
                    m
                })
                .collect();
            (ids, mask)
        })
        .collect();
    let biases: Vec<Tensor> = batches
        .iter()
        .map(|(_, m)| mask_bias(m))
        .collect::<R<_>>()?;
    let mut seconds = vec![0.0f64; models.len()];
    let mut hidden: Vec<Vec<Tensor>> = Vec::with_capacity(models.len());
    for (m, w) in models.iter().enumerate() {
        let emb = Embeddings::load(c, *w, prefix)?;
        let started = Instant::now();
        hidden.push(
            batches
                .iter()
                .map(|(ids, _)| emb.forward(ids))
                .collect::<R<_>>()?,
        );
        seconds[m] += started.elapsed().as_secs_f64();
    }
    control.add_work((c.layers * models.len()) as u64);
    for l in 0..c.layers {
        for (m, w) in models.iter().enumerate() {
            control.checkpoint()?;
            let block = EncoderBlock::load(c, *w, prefix, l)?;
            let started = Instant::now();
            for (x, bias) in hidden[m].iter_mut().zip(&biases) {
                *x = block.forward(x, bias, &mut ())?;
            }
            seconds[m] += started.elapsed().as_secs_f64();
            control.advance(1);
        }
    }
    // Embeddings back in the sentences' own order.
    let mut embeddings = vec![vec![Vec::new(); sentences.len()]; models.len()];
    for (m, per_model) in hidden.iter().enumerate() {
        for ((h, (_, mask)), chunk) in per_model.iter().zip(&batches).zip(order.chunks(BATCH)) {
            let e: Vec<Vec<f32>> = sentence_embeddings(h, mask, true)?
                .to_vec2()
                .map_err(nn_error)?;
            for (row, &i) in e.into_iter().zip(chunk) {
                embeddings[m][i] = row;
            }
        }
    }
    let tokens: u64 = sentences.iter().map(|s| s.len() as u64).sum();
    let figures = seconds
        .iter()
        .map(|s| ModelFidelity {
            tokens,
            sequences: sentences.len() as u64,
            predictions: None,
            perplexity: None,
            mean_nll: None,
            tokens_per_second: tokens as f64 / s.max(1e-9),
        })
        .collect();
    let comparisons = embeddings[1..]
        .iter()
        .map(|e| super::similarity::compare(&embeddings[0], e))
        .collect();
    Ok((figures, comparisons))
}
