//! `export`: the model as a GGUF file in one of ggml's block types.

use domain::results::prune::CalibrationUse;
use domain::ExportStep;

use crate::format::gguf::export_gguf;
use crate::format::gguf::imatrix::ImportanceMatrix;
use crate::format::gguf::llama::{export_llama, LlamaModel};
use crate::steps::calibrated::{sequences, transformer_job};
use crate::steps::{Format, OutputFile, StepContext, StepOutput, StepReport};
use crate::transformer::calibration::{calibrate, BlockResult, InputStats, Rewrite};
use crate::transformer::gguf_import::gguf_name;
use crate::transformer::{SafetensorsWeights, TransformerConfig};
use crate::CompressError;

pub fn run(step: &ExportStep, cx: &mut StepContext) -> Result<StepOutput, CompressError> {
    let started = std::time::Instant::now();
    let output = cx.output("gguf");
    let importance = if step.imatrix {
        Some(importance_matrix(step, cx)?)
    } else {
        None
    };
    let mut report = match cx.state.transformer.as_ref() {
        Some(t) => match &t.config {
            TransformerConfig::Decoder(c) => {
                let tokenizer = t.json_file("tokenizer.json").ok_or_else(|| {
                    CompressError::InvalidRequest("GGUF export of a transformer needs its tokenizer.json (llama.cpp reads the vocabulary from the file)".into())
                })?;
                let tokenizer_config = t.json_file("tokenizer_config.json");
                let model = LlamaModel {
                    config: c,
                    arch: if t.architecture == "Qwen2ForCausalLM" { "qwen2" } else { "llama" },
                    tokenizer: &tokenizer,
                    tokenizer_config: tokenizer_config.as_ref(),
                    name: cx.model_name,
                };
                let matrix = importance.as_ref().map(|(m, _)| m);
                export_llama(cx.input, &output, step, &model, matrix, cx.control)?
            }
            TransformerConfig::Encoder(_) => {
                return Err(CompressError::InvalidRequest(
                    "GGUF export of BERT encoders is not supported yet; export decoders (Llama, Mistral, Qwen2), or keep the encoder as safetensors".into(),
                ))
            }
        },
        None => export_gguf(cx.input, &output, step, cx.model_name, cx.control)?,
    };
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
    let mut extra = Vec::new();
    if let Some((matrix, used)) = importance {
        let path = cx.output("imatrix.gguf");
        matrix.write(&path)?;
        extra.push(OutputFile {
            kind: "imatrix",
            path,
            format: Format::imatrix(),
        });
        report.calibration = Some(used);
        // The step's time includes the importance matrix's calibration pass.
        report.seconds = started.elapsed().as_secs_f64();
    }
    let mut out = StepOutput::wrote(output, Format::gguf(), StepReport::Export(report));
    out.extra = extra;
    Ok(out)
}

/// llama.cpp's importance matrix of the model as it is (every block linear's Σx² per input
/// column over the calibration split), under llama.cpp's tensor names.
fn importance_matrix(
    step: &ExportStep,
    cx: &StepContext,
) -> Result<(ImportanceMatrix, CalibrationUse), CompressError> {
    let job = transformer_job(cx, "imatrix")?;
    if !matches!(job.config, TransformerConfig::Decoder(_)) {
        return Err(CompressError::InvalidRequest(
            "imatrix is for the GGUF export of decoders (Llama, Mistral, Qwen2)".into(),
        ));
    }
    let seqs = sequences(job, &step.calibration)?;
    let weights = SafetensorsWeights::open(cx.input)?;
    let mut matrix = ImportanceMatrix {
        datasets: vec![seqs.used.data.clone()],
        chunks: seqs.ids.len() as u32,
        chunk_size: seqs.used.window as u32,
        ..ImportanceMatrix::default()
    };
    let mut done = |_: usize, block: BlockResult| -> Result<(), CompressError> {
        for (name, stats) in block.inputs {
            let Some(gguf) = gguf_name(&name) else {
                continue;
            };
            let sums = stats.column_squares.iter().map(|v| *v as f32).collect();
            matrix.entries.insert(gguf, (sums, stats.tokens));
        }
        Ok(())
    };
    calibrate(
        &job.config,
        &weights,
        &seqs.ids,
        &|_| false,
        &mut Observe,
        &mut done,
        cx.control,
    )?;
    Ok((matrix, seqs.used))
}

/// Rewrites nothing: the pass only observes.
struct Observe;

impl Rewrite for Observe {
    fn op(&self) -> &'static str {
        "export"
    }

    fn observes_only(&self) -> bool {
        true
    }

    fn layer(
        &mut self,
        _: &str,
        _: &mut [f32],
        _: [usize; 2],
        _: &InputStats,
    ) -> Result<(), CompressError> {
        Ok(())
    }
}
