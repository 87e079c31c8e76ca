//! `export`: the model as a GGUF file in one of ggml's block types.

use domain::ExportStep;

use crate::format::gguf::export_gguf;
use crate::steps::{Format, StepContext, StepOutput, StepReport};
use crate::CompressError;

pub fn run(step: &ExportStep, cx: &mut StepContext) -> Result<StepOutput, CompressError> {
    let output = cx.output("gguf");
    let report = export_gguf(cx.input, &output, step, cx.model_name, cx.control)?;
    if report.quantized_tensors == 0 && !report.kept_tensors.is_empty() {
        // A file with every tensor left as it was is not what was asked for; say why instead.
        let _ = std::fs::remove_file(&output);
        let name = step.ggml_type.name();
        let shown: Vec<&str> = report
            .kept_tensors
            .iter()
            .take(5)
            .map(String::as_str)
            .collect();
        return Err(CompressError::InvalidRequest(format!(
            "no tensor could be stored as {name}, so the export would change nothing ({}{}); choose a type whose block size divides the rows (Q8_0 and Q4_0 use 32-value blocks, the K types 256) or export as F16",
            shown.join("; "),
            if report.kept_tensors.len() > 5 { "; …" } else { "" }
        )));
    }
    Ok(StepOutput::wrote(
        output,
        Format::gguf(),
        StepReport::Export(report),
    ))
}
