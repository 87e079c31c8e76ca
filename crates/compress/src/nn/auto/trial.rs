//! One trial of the size search, the per-layer sensitivities that cap it, and the
//! verification of candidates on the held-out half.

use std::path::{Path, PathBuf};

use domain::results::ProgressDetail;
use domain::{Codec, EntropyStep, QuantizeStep};
use serde_json::json;

use crate::control::Control;
use crate::format::entropy::compress_file;
use crate::format::reader::read_dense;
use crate::nn::auto::size::LADDER;
use crate::nn::auto::{below_holdout, holdout_bar, AutoInput, Trial, Winner};
use crate::nn::data::{Dataset, Split};
use crate::nn::evaluate::quick_accuracy;
use crate::nn::importance::{prune_one, solo_accuracy, sparsity_of};
use crate::nn::network::Network;
use crate::nn::train::{masks_of, train, TrainContext};
use crate::quant::file::quantize_file;
use crate::quant::kmeans;
use crate::CompressError;

/// Writes `net` as the artifact (k-means codes stored sparse, then zstd) and returns its
/// size; `keep` receives the file.
fn write_artifact(
    net: &Network,
    bits: u32,
    scratch: &Path,
    keep: &Path,
    control: &Control,
) -> Result<u64, CompressError> {
    let dense = scratch.with_extension("dense.safetensors");
    let coded = scratch.with_extension("kmeans.safetensors");
    net.save(&dense)?;
    let step: QuantizeStep =
        serde_json::from_value(json!({"scheme":"kmeans","bits":bits,"store":"sparse"}))
            .map_err(|e| CompressError::InvalidRequest(e.to_string()))?;
    let q = quantize_file(&dense, &coded, None, &step, control);
    let _ = std::fs::remove_file(&dense);
    q?;
    let entropy = EntropyStep {
        codec: Codec::Zstd,
        level: Some(19),
    };
    let r = compress_file(&coded, keep, &entropy, control);
    let _ = std::fs::remove_file(&coded);
    Ok(r?.bytes_after)
}

/// One point of the ladder: every selected layer pruned to `level` (or its cap), fine-tuned with
/// its mask held, weight-shared at `bits`, and written as the artifact to `keep`.
pub(super) fn run_trial(
    cx: &AutoInput,
    search: &Dataset,
    caps: &[(String, f64)],
    level: f64,
    bits: u32,
    keep: &Path,
) -> Result<Trial, CompressError> {
    let net = Network::load(cx.input, cx.arch)?;
    let mut sparsities = Vec::new();
    for (name, cap) in caps {
        let s = level.min(*cap);
        prune_one(&net, name, s)?;
        sparsities.push((name.clone(), s));
    }
    let names: Vec<String> = caps.iter().map(|(n, _)| n.clone()).collect();
    let masks = masks_of(&net, &names)?;
    let ctx = TrainContext::on_labels(
        cx.control,
        ProgressDetail {
            level: Some(level),
            bits: Some(bits),
            ..ProgressDetail::op("auto")
        },
    );
    if cx.step.finetune.epochs > 0 {
        train(&net, search, &cx.step.finetune, Some(&masks), None, &ctx)?;
    }
    // Weight sharing as the artifact will store it, so the accuracy is the artifact's.
    for name in &names {
        let shared = kmeans::cluster(&net.values(name)?, bits);
        net.set_values(name, kmeans::decode(&shared))?;
    }
    let validation_accuracy = quick_accuracy(&net, &search.test, 512)?;
    let scratch = cx.workdir.join("auto-scratch");
    let bytes = write_artifact(&net, bits, &scratch, keep, cx.control)?;
    Ok(Trial {
        student: false,
        level,
        throughput: None,
        parameters: None,
        bits,
        overall_sparsity: sparsity_of(&net, &names)?,
        sparsities,
        validation_accuracy,
        holdout_accuracy: None,
        bytes,
        compression_ratio: 0.0,
        within_budget: false,
        on_frontier: false,
        rejected: None,
    })
}

/// Each layer pruned alone along the ladder: (sensitivity points, cap). A layer may go as far
/// as it loses under 4× the budget on its own (fine-tuning wins much of that back).
#[allow(clippy::type_complexity)]
pub(super) fn sensitivities(
    dense: &Network,
    search: &Dataset,
    limit: f64,
    control: &Control,
) -> Result<(Vec<(String, Vec<(f64, f64)>)>, Vec<(String, f64)>), CompressError> {
    let own_baseline = quick_accuracy(dense, &search.test, 512)?;
    let mut sensitivity = Vec::new();
    let mut caps = Vec::new();
    for name in dense.weight_names() {
        let original = dense.values(&name)?;
        let mut points = Vec::new();
        let mut cap = 0.0;
        for &s in &LADDER {
            control.checkpoint()?;
            let drop = own_baseline - solo_accuracy(dense, &name, &original, s, &search.test)?;
            points.push((s, drop));
            if drop <= 4.0 * limit {
                cap = s;
            }
        }
        sensitivity.push((name.clone(), points));
        caps.push((name, cap));
    }
    Ok((sensitivity, caps))
}

/// Smallest first: the first trial within budget on validation that also holds on the
/// held-out half wins (re-read from its file, not reused) and moves to `output`; every other
/// trial says why it did not.
pub(super) fn verify(
    cx: &AutoInput,
    trials: &mut [Trial],
    holdout: &Split,
    base_test: f64,
    candidate: impl Fn(usize) -> PathBuf,
) -> Result<Option<Winner>, CompressError> {
    let limit = cx.step.max_accuracy_drop;
    let mut order: Vec<usize> = (0..trials.len())
        .filter(|&i| trials[i].within_budget)
        .collect();
    order.sort_by_key(|&i| trials[i].bytes);
    let mut winner: Option<Winner> = None;
    for i in order {
        if let Some(w) = &winner {
            trials[i].rejected = Some(format!(
                "larger than trial {} ({} vs {} bytes), which also holds",
                w.trial, trials[i].bytes, w.bytes
            ));
            continue;
        }
        let net = Network::from_dense(
            cx.arch.clone(),
            read_dense(&candidate(i))?,
            Default::default(),
            Default::default(),
        )?;
        let test_accuracy = quick_accuracy(&net, holdout, 512)?;
        trials[i].holdout_accuracy = Some(test_accuracy);
        if test_accuracy < holdout_bar(base_test, limit) {
            trials[i].rejected = Some(below_holdout(test_accuracy, base_test, limit));
            continue;
        }
        std::fs::rename(candidate(i), cx.output)?;
        winner = Some(Winner {
            trial: i,
            test_accuracy,
            test_accuracy_drop: base_test - test_accuracy,
            bytes: trials[i].bytes,
            compression_ratio: trials[i].compression_ratio,
        });
    }
    Ok(winner)
}
