//! `quantize`: fewer bits per weight, streamed tensor by tensor (crate::quant::file does the work).

use domain::{QuantizeStep, Storage};

use crate::quant::file::quantize_file;
use crate::steps::{Format, OutputFile, StepContext, StepOutput, StepReport};
use crate::CompressError;

pub fn run(step: &QuantizeStep, cx: &mut StepContext) -> Result<StepOutput, CompressError> {
    if step.method.calibrates() {
        return super::quantize_calibrated::run(step, cx);
    }
    let output = cx.output("safetensors");
    let dequantized = step
        .dequantized_copy
        .then(|| cx.output("dequantized.safetensors"));
    let report = quantize_file(cx.input, &output, dequantized.as_deref(), step, cx.control)?;
    if report.quantized_tensors == 0 {
        // Nothing was quantized, so the "quantized" model would be the input again.
        for file in std::iter::once(&output).chain(&dequantized) {
            let _ = std::fs::remove_file(file);
        }
        return Err(CompressError::InvalidRequest(
            "the step selects no floating-point weight with two or more dimensions, so nothing would be quantized; check include/exclude against the model's tensor names".into(),
        ));
    }
    let mut out = StepOutput::wrote(
        output,
        Format::quantized(step.store == Storage::Sparse),
        StepReport::Quantize(report),
    );
    out.extra.extend(dequantized.map(dequantized_copy));
    Ok(out)
}

pub(super) fn dequantized_copy(path: std::path::PathBuf) -> OutputFile {
    OutputFile {
        kind: "model_dequantized",
        path,
        format: Format::dequantized(),
    }
}
