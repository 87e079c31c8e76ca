//! `qat`: quantization-aware fine-tuning (fake-quantized weights, straight-through
//! gradients), measured against plain post-training quantization, then the real quantized file.

use domain::results::ProgressDetail;
use std::path::Path;
use std::time::Instant;

use crate::format::reader::read_dense;
use crate::nn::evaluate::quick_accuracy;
use crate::nn::fake_quant::FakeQuant;
use crate::nn::network::Network;
use crate::nn::train::{masks_of, train, TrainContext};
use crate::nn::ModelState;
use crate::quant::file::quantize_file;
use crate::steps::quantize::dequantized_copy;
use crate::steps::{Format, StepContext, StepOutput, StepReport};
use crate::CompressError;
pub use domain::results::distill::QatReport;
use domain::{QatStep, Storage};

/// Accuracy of a quantized file as it will be read: dequantized by compressd's reader.
fn quantized_accuracy(state: &ModelState, path: &Path) -> Result<f64, CompressError> {
    let arch = state.arch()?.clone();
    let net = Network::from_dense(
        arch,
        read_dense(path)?,
        Default::default(),
        Default::default(),
    )?;
    quick_accuracy(&net, &state.data()?.test, 512)
}

/// Post-training quantization for comparison, then fine-tuning with fake-quantized weights
/// (pruned zeros held), then the real quantization of the result into `output`.
fn qat_step(
    cx: &StepContext,
    output: &Path,
    dequantized: Option<&Path>,
    step: &QatStep,
) -> Result<QatReport, CompressError> {
    let (state, input, control) = (&*cx.state, cx.input, cx.control);
    let scratch = cx.output("qat");
    let started = Instant::now();
    let mut net = state.load(input)?;
    let data = state.data()?;
    let accuracy_float = quick_accuracy(&net, &data.test, 512)?;
    let ptq = scratch.with_extension("ptq.safetensors");
    quantize_file(input, &ptq, None, &step.quantize, control)?;
    let accuracy_ptq = quantized_accuracy(state, &ptq);
    let _ = std::fs::remove_file(&ptq);
    let accuracy_ptq = accuracy_ptq?;
    let masks = masks_of(&net, &net.weight_names())?;
    net.fake_quant = FakeQuant::for_scheme(step.quantize.scheme, step.quantize.selection.clone());
    let ctx = TrainContext::on_labels(control, ProgressDetail::step(cx.index, "qat"));
    let train_report = train(&net, data, &step.train, Some(&masks), None, &ctx)?;
    net.fake_quant = None;
    let trained = scratch.with_extension("trained.safetensors");
    net.save(&trained)?;
    let quantized = quantize_file(&trained, output, dequantized, &step.quantize, control);
    let _ = std::fs::remove_file(&trained);
    let quantize = quantized?;
    let accuracy_qat = quantized_accuracy(state, output)?;
    Ok(QatReport {
        op: "qat",
        data: state.data_label.clone(),
        accuracy_float,
        accuracy_ptq,
        accuracy_qat,
        gain_points: 100.0 * (accuracy_qat - accuracy_ptq),
        train: train_report,
        quantize,
        seconds: started.elapsed().as_secs_f64(),
    })
}

pub fn run(step: &QatStep, cx: &mut StepContext) -> Result<StepOutput, CompressError> {
    let output = cx.output("safetensors");
    let dequantized = step
        .quantize
        .dequantized_copy
        .then(|| cx.output("dequantized.safetensors"));
    let report = qat_step(cx, &output, dequantized.as_deref(), step)?;
    let mut out = StepOutput::wrote(
        output,
        Format::quantized(step.quantize.store == Storage::Sparse),
        StepReport::Qat(report),
    );
    out.extra.extend(dequantized.map(dequantized_copy));
    Ok(out)
}
