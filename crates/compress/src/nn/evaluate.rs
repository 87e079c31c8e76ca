//! Measures a model on the evaluation split: accuracy, macro precision/recall/F1, per-class
//! figures, the confusion matrix and mean loss; compute cost in multiply-accumulates (dense,
//! and counting non-zero weights only); CPU latency at batch 1 and throughput at a batch size.

use std::time::Instant;

use crate::nn::data::Split;
use crate::nn::network::{nn_error, Network};
use crate::CompressError;
pub use domain::results::model::ClassReport;
pub use domain::results::model::Cost;
pub use domain::results::model::EvalReport;
pub use domain::results::model::Speed;
use domain::{EvaluateStep, LayerKind};

/// Predictions and summed cross-entropy over a split, in batches.
fn predict(net: &Network, split: &Split, batch: usize) -> Result<(Vec<u32>, f64), CompressError> {
    let mut preds = Vec::with_capacity(split.len());
    let mut loss = 0f64;
    let mut buf = Vec::new();
    let all: Vec<usize> = (0..split.len()).collect();
    for chunk in all.chunks(batch.max(1)) {
        let (x, y) = split.batch(chunk, &mut buf).map_err(nn_error)?;
        let logits = net.logits(&x, None)?.detach();
        let l: f32 = candle_nn::loss::cross_entropy(&logits, &y)
            .and_then(|l| l.to_scalar())
            .map_err(nn_error)?;
        loss += l as f64 * chunk.len() as f64;
        preds.extend(
            logits
                .argmax(1)
                .and_then(|p| p.to_vec1::<u32>())
                .map_err(nn_error)?,
        );
    }
    Ok((preds, loss))
}

/// Accuracy on a split: the cheap figure training reports after every epoch.
pub fn quick_accuracy(net: &Network, split: &Split, batch: usize) -> Result<f64, CompressError> {
    let (preds, _) = predict(net, split, batch)?;
    let correct = preds
        .iter()
        .zip(&split.labels)
        .filter(|(p, l)| p == l)
        .count();
    Ok(correct as f64 / split.len().max(1) as f64)
}

pub fn cost(net: &Network) -> Result<Cost, CompressError> {
    let (mut parameters, mut nonzero, mut dense, mut sparse) = (0u64, 0u64, 0u64, 0u64);
    for spec in net.specs() {
        if matches!(
            spec.role,
            domain::ParamRole::Buffer | domain::ParamRole::Counter
        ) {
            continue;
        }
        let values = net.values(&spec.name)?;
        parameters += values.len() as u64;
        nonzero += values.iter().filter(|v| **v != 0.0).count() as u64;
    }
    for layer in &net.arch.layers {
        let positions = match &layer.kind {
            LayerKind::Linear { .. } => 1u64,
            LayerKind::Conv2d { .. } => (layer.output_shape[1] * layer.output_shape[2]) as u64,
            _ => continue,
        };
        let w = net.values(&format!("{}.weight", layer.name))?;
        dense += positions * w.len() as u64;
        sparse += positions * w.iter().filter(|v| **v != 0.0).count() as u64;
    }
    Ok(Cost {
        parameters,
        nonzero_parameters: nonzero,
        macs_dense: dense,
        macs_nonzero: sparse,
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

pub fn speed(net: &Network, split: &Split, opts: &EvaluateStep) -> Result<Speed, CompressError> {
    let mut buf = Vec::new();
    let time = |indices: &[usize], buf: &mut Vec<f32>| -> Result<f64, CompressError> {
        let (x, _) = split.batch(indices, buf).map_err(nn_error)?;
        let t = Instant::now();
        let y = net.logits(&x, None)?;
        // Reading one value forces the computation to finish.
        y.flatten_all()
            .and_then(|f| f.get(0))
            .and_then(|v| v.to_scalar::<f32>())
            .map_err(nn_error)?;
        Ok(t.elapsed().as_secs_f64())
    };
    let one = [0usize];
    time(&one, &mut buf)?;
    let lat: Vec<f64> = (0..opts.runs)
        .map(|_| time(&one, &mut buf))
        .collect::<Result<_, _>>()?;
    let b = opts.batch_size.min(split.len()).max(1);
    let batch: Vec<usize> = (0..b).collect();
    time(&batch, &mut buf)?;
    let thr: Vec<f64> = (0..opts.runs)
        .map(|_| time(&batch, &mut buf))
        .collect::<Result<_, _>>()?;
    Ok(Speed {
        latency_ms_batch1: median(lat) * 1e3,
        throughput_batch: b,
        throughput_samples_per_second: b as f64 / median(thr).max(1e-12),
        runs: opts.runs,
        threads: rayon::current_num_threads(),
    })
}

/// Classes up to which the confusion matrix is kept and drawn.
pub const MAX_CONFUSION_CLASSES: usize = 256;

fn class_report(class: usize, tp: u64, support: u64, predicted: u64) -> ClassReport {
    let ratio = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { 0.0 };
    let (precision, recall) = (ratio(tp, predicted), ratio(tp, support));
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    ClassReport {
        class,
        support,
        precision,
        recall,
        f1,
    }
}

pub fn evaluate(
    net: &Network,
    split: &Split,
    classes: usize,
    opts: &EvaluateStep,
    data: &str,
) -> Result<EvalReport, CompressError> {
    let classes = classes.max(net.arch.classes().unwrap_or(0));
    let (preds, loss) = predict(net, split, opts.batch_size)?;
    // Per-class counts in O(samples + classes); the full matrix only where it is small enough
    // to read (it grows with the square of the classes).
    let (mut tp, mut support, mut predicted) = (
        vec![0u64; classes],
        vec![0u64; classes],
        vec![0u64; classes],
    );
    let keep_matrix = classes <= MAX_CONFUSION_CLASSES;
    let side = if keep_matrix { classes } else { 0 };
    let mut confusion = vec![vec![0u64; side]; side];
    for (&p, &l) in preds.iter().zip(&split.labels) {
        let (p, l) = (p as usize, l as usize);
        support[l] += 1;
        predicted[p] += 1;
        tp[l] += u64::from(p == l);
        if keep_matrix {
            confusion[l][p] += 1;
        }
    }
    let per_class: Vec<ClassReport> = (0..classes)
        .filter(|&c| support[c] > 0 || predicted[c] > 0)
        .map(|c| class_report(c, tp[c], support[c], predicted[c]))
        .collect();
    let mean = |f: fn(&ClassReport) -> f64| {
        per_class.iter().map(f).sum::<f64>() / per_class.len().max(1) as f64
    };
    let correct: u64 = tp.iter().sum();
    let n = split.len().max(1) as f64;
    Ok(EvalReport {
        data: data.to_owned(),
        samples: split.len() as u64,
        accuracy: correct as f64 / n,
        precision_macro: mean(|c| c.precision),
        recall_macro: mean(|c| c.recall),
        f1_macro: mean(|c| c.f1),
        mean_loss: loss / n,
        per_class,
        confusion_matrix: confusion,
        cost: cost(net)?,
        speed: speed(net, split, opts)?,
    })
}
