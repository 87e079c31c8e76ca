//! Scores every prunable weight (higher = more important) and turns scores into masks:
//! a target sparsity per layer or across layers, or N:M groups. Weights that are already
//! zero always score lowest, so a pruned weight stays pruned.

use std::collections::BTreeMap;

use candle_core::Tensor;

use crate::nn::data::Dataset;
use crate::nn::network::{nn_error, Network};
use crate::nn::train::Masks;
use crate::CompressError;
use domain::{Criterion, Scope};

pub type Scores = BTreeMap<String, Vec<f32>>;

/// Gradient of the training loss, summed over the first `batches` batches (in order).
fn summed_gradients(
    net: &Network,
    data: &Dataset,
    names: &[String],
    batches: usize,
) -> Result<BTreeMap<String, Tensor>, CompressError> {
    let mut acc: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut buf = Vec::new();
    let all: Vec<usize> = (0..data.train.len()).collect();
    for chunk in all.chunks(64).take(batches) {
        let (x, y) = data.train.batch(chunk, &mut buf).map_err(nn_error)?;
        let loss = candle_nn::loss::cross_entropy(&net.logits(&x, None)?, &y).map_err(nn_error)?;
        let grads = loss.backward().map_err(nn_error)?;
        for name in names {
            let Some(g) = grads.get(net.tensor(name)) else {
                continue;
            };
            let next = match acc.remove(name) {
                Some(a) => (a + g).map_err(nn_error)?,
                None => g.clone(),
            };
            acc.insert(name.clone(), next);
        }
    }
    Ok(acc)
}

/// Importance of each weight of `names`. `movement` holds −Σ w·∂L/∂w gathered during the
/// last fine-tuning, if any; without it the movement score is taken over `batches` batches.
pub fn score(
    net: &Network,
    data: Option<&Dataset>,
    names: &[String],
    criterion: Criterion,
    batches: usize,
    movement: Option<&Masks>,
) -> Result<Scores, CompressError> {
    let grads = match (criterion, data) {
        (c, _) if c.calibrates() => {
            return Err(CompressError::InvalidRequest(format!(
                "{} prunes a transformer's layers by their calibration inputs; this model is sequential: use magnitude, taylor or movement",
                c.name()
            )))
        }
        (Criterion::Magnitude, _) => None,
        (Criterion::Movement, _) if movement.is_some() => None,
        (_, Some(d)) => Some(summed_gradients(net, d, names, batches)?),
        (_, None) => {
            return Err(CompressError::InvalidRequest(
                "gradient criteria need a dataset".into(),
            ))
        }
    };
    let mut out = Scores::new();
    for name in names {
        let w = net.values(name)?;
        let s: Vec<f32> = match criterion {
            Criterion::Magnitude | Criterion::Wanda | Criterion::Sparsegpt => {
                w.iter().map(|v| v.abs()).collect()
            }
            Criterion::Taylor | Criterion::Movement => {
                let g = match (criterion, movement.and_then(|m| m.get(name))) {
                    (Criterion::Movement, Some(m)) => {
                        // The accumulator already holds −Σ w·g.
                        let m = m
                            .flatten_all()
                            .and_then(|t| t.to_vec1())
                            .map_err(nn_error)?;
                        out.insert(name.clone(), mark_zeros(&w, m));
                        continue;
                    }
                    _ => grads
                        .as_ref()
                        .and_then(|g| g.get(name))
                        .map(|g| g.flatten_all().and_then(|t| t.to_vec1::<f32>()))
                        .transpose()
                        .map_err(nn_error)?
                        .unwrap_or_else(|| vec![0.0; w.len()]),
                };
                w.iter()
                    .zip(&g)
                    .map(|(w, g)| match criterion {
                        Criterion::Taylor => (w * g).abs(),
                        _ => -(w * g),
                    })
                    .collect()
            }
        };
        out.insert(name.clone(), mark_zeros(&w, s));
    }
    Ok(out)
}

fn mark_zeros(w: &[f32], mut s: Vec<f32>) -> Vec<f32> {
    for (s, w) in s.iter_mut().zip(w) {
        if *w == 0.0 || !s.is_finite() {
            *s = f32::NEG_INFINITY;
        }
    }
    s
}

/// The `k` lowest-scoring positions of `scores` (exactly `k`, ties broken by position).
fn lowest(scores: &[(f32, u32, u32)], k: usize) -> Vec<(u32, u32)> {
    if k == 0 {
        return vec![];
    }
    let mut v = scores.to_vec();
    let k = k.min(v.len());
    let cmp = |a: &(f32, u32, u32), b: &(f32, u32, u32)| {
        a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2)))
    };
    v.select_nth_unstable_by(k - 1, cmp);
    v[..k].iter().map(|&(_, t, i)| (t, i)).collect()
}

/// Zeros the lowest-scoring weights so that the selected tensors reach `sparsity` (each on
/// its own, or together), and returns the masks.
pub fn prune_to(
    net: &Network,
    scores: &Scores,
    sparsity: f64,
    scope: Scope,
) -> Result<Masks, CompressError> {
    let names: Vec<&String> = scores.keys().collect();
    let mut cut: Vec<Vec<u32>> = vec![Vec::new(); names.len()];
    let entries = |t: usize| -> Vec<(f32, u32, u32)> {
        scores[names[t]]
            .iter()
            .enumerate()
            .map(|(i, &s)| (s, t as u32, i as u32))
            .collect()
    };
    match scope {
        Scope::Layer => {
            for (t, c) in cut.iter_mut().enumerate() {
                let e = entries(t);
                let k = (sparsity * e.len() as f64).round() as usize;
                *c = lowest(&e, k).into_iter().map(|(_, i)| i).collect();
            }
        }
        Scope::Global => {
            let all: Vec<(f32, u32, u32)> = (0..names.len()).flat_map(entries).collect();
            let k = (sparsity * all.len() as f64).round() as usize;
            for (t, i) in lowest(&all, k) {
                cut[t as usize].push(i);
            }
        }
    }
    let mut masks = Masks::new();
    for (t, name) in names.iter().enumerate() {
        let mut w = net.values(name)?;
        let mut m = vec![1f32; w.len()];
        for &i in &cut[t] {
            w[i as usize] = 0.0;
            m[i as usize] = 0.0;
        }
        w.iter().zip(m.iter_mut()).for_each(|(w, m)| {
            if *w == 0.0 {
                *m = 0.0
            }
        });
        net.set_values(name, w)?;
        let shape = net.tensor(name).shape().clone();
        masks.insert(
            (*name).clone(),
            Tensor::from_vec(m, shape, &candle_core::Device::Cpu).map_err(nn_error)?,
        );
    }
    Ok(masks)
}

/// N:M: in each run of `m` consecutive weights along a row (the input dimension, with a
/// conv's kernel flattened in PyTorch order), keeps the `n` highest-scoring. Tensors whose row
/// length is not a multiple of `m` are left alone and returned.
pub fn prune_nm(
    net: &Network,
    scores: &Scores,
    n: usize,
    m: usize,
) -> Result<(Masks, Vec<String>), CompressError> {
    let mut masks = Masks::new();
    let mut skipped = Vec::new();
    for (name, s) in scores {
        let shape = net.tensor(name).dims().to_vec();
        let row: usize = shape[1..].iter().product();
        if !row.is_multiple_of(m) {
            skipped.push(name.clone());
            continue;
        }
        let mut w = net.values(name)?;
        let mask = nm_mask(s, n, m);
        apply(&mut w, &mask);
        net.set_values(name, w)?;
        masks.insert(
            name.clone(),
            Tensor::from_vec(mask, shape, &candle_core::Device::Cpu).map_err(nn_error)?,
        );
    }
    Ok((masks, skipped))
}

/// 1 for the `n` highest scores of every run of `m` (ties to the earlier position), else 0.
pub fn nm_mask(scores: &[f32], n: usize, m: usize) -> Vec<f32> {
    let mut mask = vec![0f32; scores.len()];
    let mut order: Vec<usize> = Vec::with_capacity(m);
    for g in 0..scores.len() / m {
        order.clear();
        order.extend(g * m..(g + 1) * m);
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        for &i in &order[..n] {
            mask[i] = 1.0;
        }
    }
    mask
}

/// Zeroes (as +0.0) every weight whose mask is 0.
pub fn apply(w: &mut [f32], mask: &[f32]) {
    w.iter_mut().zip(mask).for_each(|(w, m)| {
        if *m == 0.0 {
            *w = 0.0
        }
    });
}

/// Prunes one tensor on its own, by magnitude, to `sparsity`.
pub fn prune_one(net: &Network, name: &str, sparsity: f64) -> Result<(), CompressError> {
    let names = [name.to_owned()];
    let scores = score(net, None, &names, Criterion::Magnitude, 1, None)?;
    prune_to(net, &scores, sparsity, Scope::Layer).map(drop)
}

/// Accuracy on `split` with one tensor pruned alone to `sparsity`; the tensor is restored to
/// `original` afterwards.
pub fn solo_accuracy(
    net: &Network,
    name: &str,
    original: &[f32],
    sparsity: f64,
    split: &crate::nn::data::Split,
) -> Result<f64, CompressError> {
    prune_one(net, name, sparsity)?;
    let accuracy = crate::nn::evaluate::quick_accuracy(net, split, 512);
    net.set_values(name, original.to_vec())?;
    accuracy
}

/// Fraction of zeros over the named tensors.
pub fn sparsity_of(net: &Network, names: &[String]) -> Result<f64, CompressError> {
    let (mut zeros, mut total) = (0usize, 0usize);
    for n in names {
        let v = net.values(n)?;
        zeros += v.iter().filter(|x| **x == 0.0).count();
        total += v.len();
    }
    Ok(zeros as f64 / total.max(1) as f64)
}
