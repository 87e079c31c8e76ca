//! The latency objective: each trial removes a fraction of every hidden layer's
//! filters/neurons by L1 norm, fine-tunes, and is timed; the fastest accepted trial that beats
//! the dense model wins.

use std::time::Instant;

use domain::results::ProgressDetail;
use domain::{Architecture, EvaluateStep, Sparsity, TensorSelection};

use crate::nn::auto::{
    accepted, below_holdout, below_validation, faster, halves, holdout_bar, mark_frontier,
    AutoInput, AutoReport, Budgeted, Halves, Trial, Winner,
};
use crate::nn::data::Dataset;
use crate::nn::evaluate::{quick_accuracy, speed};
use crate::nn::network::Network;
use crate::nn::structured::l1_filter;
use crate::nn::train::{train, TrainContext};
use crate::CompressError;

const FRACTIONS: [f64; 6] = [0.25, 0.4, 0.5, 0.6, 0.7, 0.8];

/// Returns the report and, when a trial wins, its architecture (the weights are in `output`).
pub fn auto_latency(cx: &AutoInput) -> Result<(AutoReport, Option<Architecture>), CompressError> {
    let started = Instant::now();
    let Halves { search, holdout } = halves(cx.data)?;
    let timing = EvaluateStep {
        batch_size: 256,
        runs: 5,
        ..Default::default()
    };
    let dense = Network::load(cx.input, cx.arch)?;
    let base_val = quick_accuracy(&dense, &search.test, 512)?;
    let base_test = quick_accuracy(&dense, &holdout, 512)?;
    let base_speed = speed(&dense, &cx.data.test, &timing)?.throughput_samples_per_second;
    let dense_f32_bytes: u64 = dense.stored_values() * 4;
    let limit = cx.step.max_accuracy_drop;
    let mut budget = Budgeted {
        started,
        step: cx.step.clone(),
        used: 0,
    };
    let mut trials = Vec::new();
    let mut nets = Vec::new();
    for &fraction in &FRACTIONS {
        if !budget.left() {
            break;
        }
        cx.control.checkpoint()?;
        let (mut t, net) = latency_trial(cx, &search, fraction, &timing)?;
        budget.used += 1;
        t.compression_ratio = dense_f32_bytes as f64 / t.bytes.max(1) as f64;
        t.within_budget = t.validation_accuracy >= base_val - limit;
        let within = t.within_budget;
        if !within {
            t.rejected = Some(below_validation(&t, base_val, limit));
        }
        trials.push(t);
        nets.push(net);
        if !within {
            break;
        }
    }
    let winner = choose(
        cx,
        &mut trials,
        &nets,
        &holdout,
        base_test,
        base_speed,
        limit,
    )?;
    mark_frontier(&mut trials, base_test, limit, faster);
    let winner_arch = winner.as_ref().map(|w| nets[w.trial].arch.clone());
    let note = match &winner {
        Some(w) => format!(
            "trial {} wins: {:.2}× the dense model's batch throughput, {:.2} points below the baseline on the held-out half of the evaluation split",
            w.trial,
            trials[w.trial].throughput.unwrap_or(0.0) / base_speed.max(1e-9),
            100.0 * w.test_accuracy_drop
        ),
        None => {
            std::fs::copy(cx.input, cx.output)?;
            "no structured trial was both faster and within the accuracy budget; the baseline model is returned unchanged".into()
        }
    };
    let report = AutoReport {
        op: "auto",
        objective: "latency",
        max_accuracy_drop: limit,
        data: cx.data_label.to_owned(),
        validation_samples: search.test.len(),
        holdout_samples: holdout.len(),
        baseline_validation_accuracy: base_val,
        baseline_test_accuracy: base_test,
        dense_f32_bytes,
        sensitivity: Vec::new(),
        trials,
        winner,
        trials_used: budget.used,
        seconds_used: started.elapsed().as_secs_f64(),
        budget_exhausted: !budget.left(),
        note,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((report, winner_arch))
}

/// Fastest first: the first trial that beats the dense model and holds on the held-out half
/// wins and is written to `output`; every other trial says why it did not.
fn choose(
    cx: &AutoInput,
    trials: &mut [Trial],
    nets: &[Network],
    holdout: &crate::nn::data::Split,
    base_test: f64,
    base_speed: f64,
    limit: f64,
) -> Result<Option<Winner>, CompressError> {
    let mut order: Vec<usize> = (0..trials.len())
        .filter(|&i| trials[i].within_budget)
        .collect();
    order.sort_by(|&a, &b| {
        let speed = |i: usize| trials[i].throughput.unwrap_or(0.0);
        speed(b).total_cmp(&speed(a))
    });
    let mut winner: Option<Winner> = None;
    for i in order {
        if let Some(w) = &winner {
            trials[i].rejected = Some(format!("trial {} is faster and also holds", w.trial));
            continue;
        }
        if trials[i].throughput.unwrap_or(0.0) <= base_speed {
            trials[i].rejected = Some(format!(
                "no faster than the dense model ({:.0} vs {:.0} samples/s)",
                trials[i].throughput.unwrap_or(0.0),
                base_speed
            ));
            continue;
        }
        let test_accuracy = quick_accuracy(&nets[i], holdout, 512)?;
        trials[i].holdout_accuracy = Some(test_accuracy);
        if test_accuracy < holdout_bar(base_test, limit) {
            trials[i].rejected = Some(below_holdout(test_accuracy, base_test, limit));
            continue;
        }
        debug_assert!(accepted(&trials[i], base_test, limit));
        nets[i].save(cx.output)?;
        winner = Some(Winner {
            trial: i,
            test_accuracy,
            test_accuracy_drop: base_test - test_accuracy,
            bytes: std::fs::metadata(cx.output)?.len(),
            compression_ratio: trials[i].compression_ratio,
        });
    }
    Ok(winner)
}

/// One structured trial: `fraction` of every hidden layer's units removed by L1 norm,
/// fine-tuned, measured on validation and timed (ratio and budget filled in by the caller).
fn latency_trial(
    cx: &AutoInput,
    search: &Dataset,
    fraction: f64,
    timing: &EvaluateStep,
) -> Result<(Trial, Network), CompressError> {
    let mut net = Network::load(cx.input, cx.arch)?;
    l1_filter(
        &mut net,
        Sparsity::parse(fraction).map_err(|e| CompressError::InvalidRequest(e.0))?,
        &TensorSelection::default(),
    )?;
    let ctx = TrainContext::on_labels(
        cx.control,
        ProgressDetail {
            objective: Some("latency".into()),
            fraction: Some(fraction),
            ..ProgressDetail::op("auto")
        },
    );
    if cx.step.finetune.epochs > 0 {
        train(&net, search, &cx.step.finetune, None, None, &ctx)?;
    }
    let validation_accuracy = quick_accuracy(&net, &search.test, 512)?;
    let throughput = speed(&net, &cx.data.test, timing)?.throughput_samples_per_second;
    let parameters: u64 = net.stored_values();
    let trial = Trial {
        student: false,
        level: fraction,
        throughput: Some(throughput),
        parameters: Some(parameters),
        bits: 32,
        sparsities: Vec::new(),
        overall_sparsity: 0.0,
        validation_accuracy,
        holdout_accuracy: None,
        bytes: parameters * 4,
        compression_ratio: 0.0,
        within_budget: false,
        on_frontier: false,
        rejected: None,
    };
    Ok((trial, net))
}
