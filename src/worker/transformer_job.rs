//! The job process's view of a transformer: config, tensor names, tokenizer and the
//! sentence-transformers length from the model's files, and the evaluation text when the job's
//! dataset is text.

use std::path::Path;

use super::protocol::JobSpec;
use crate::compress::transformer::text::TextSummary;
use crate::compress::transformer::{ModelConfig, TextData, TextTokenizer, TransformerJob};
use crate::compress::{CompressError, SafetensorsIndex};

/// None for a model that is not a transformer compressd runs.
pub fn build(spec: &JobSpec, weights: &Path) -> Result<Option<TransformerJob>, CompressError> {
    if !matches!(spec.model_format.as_str(), "hf" | "gguf") {
        return Ok(None);
    }
    let Some(config) = &spec.model.config else {
        return Ok(None);
    };
    let parsed = ModelConfig::parse(config)?;
    let Some(runs) = parsed.runs else {
        return Ok(None);
    };
    let file = |name: &str| {
        spec.model_files
            .iter()
            .find(|(p, _)| p == name)
            .map(|(_, f)| f.clone())
    };
    let tokenizer = file("tokenizer.json")
        .map(|f| TextTokenizer::from_file(&f))
        .transpose()?;
    let max_seq_len = file("sentence_bert_config.json")
        .and_then(|f| std::fs::read(f).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("max_seq_length").and_then(serde_json::Value::as_u64))
        .map(|n| n as usize);
    let text = match (&spec.dataset, &spec.dataset_summary) {
        (Some((path, label)), Some(summary))
            if summary.get("kind").and_then(|k| k.as_str()) == Some("text") =>
        {
            let summary: TextSummary = serde_json::from_value(summary.clone()).map_err(|e| {
                CompressError::InvalidRequest(format!(
                    "the dataset's stored summary no longer reads: {e}"
                ))
            })?;
            Some(TextData {
                path: path.clone(),
                summary,
                label: label.clone(),
            })
        }
        _ => None,
    };
    let names: Vec<String> = SafetensorsIndex::open(weights)?
        .tensors
        .into_iter()
        .map(|t| t.name)
        .collect();
    Ok(Some(TransformerJob::with_files(
        runs,
        parsed.architecture,
        spec.model_files.clone(),
        &names,
        tokenizer,
        text,
        max_seq_len,
    )))
}
