//! What every calibrated step (Wanda, SparseGPT, GPTQ, AWQ, importance matrices) does around
//! its method: refuse what it cannot run on, tokenize the calibration split into windows (or
//! sentences), check the selection against the layers the calibration driver rewrites, and
//! write the result block by block with everything else copied after.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::Path;

use domain::results::prune::CalibrationUse;
use domain::{Calibration, TensorSelection};

use crate::format::chunked_io::map_chunk;
use crate::format::safetensors_index::{SafetensorsIndex, TensorEntry};
use crate::format::st_writer::SpooledWriter;
use crate::prune::select_tensors;
use crate::quant::file::store_f32;
use crate::steps::{Format, StepContext};
use crate::transformer::job::{joined_tokens, TransformerJob};
use crate::transformer::text::{read_part, windows, Part};
use crate::transformer::TransformerConfig;
use crate::CompressError;

type R<T> = Result<T, CompressError>;

fn refuse<T>(m: String) -> R<T> {
    Err(CompressError::InvalidRequest(m))
}

/// The calibration split as the model reads it.
pub struct Sequences {
    /// A decoder's windows of token ids, or an encoder's sentences.
    pub ids: Vec<Vec<u32>>,
    pub used: CalibrationUse,
}

/// The step's model as a transformer with a tokenizer and text, or a refusal naming `method`.
pub fn transformer_job<'a>(cx: &'a StepContext, method: &str) -> R<&'a TransformerJob> {
    if *cx.input_format != Format::dense() {
        return refuse(format!(
            "{method} reads dense weights: put it before any quantize or sparse-storing step"
        ));
    }
    let Some(job) = cx.state.transformer.as_ref() else {
        return refuse(format!(
            "{method} is for transformers (a Hugging Face folder or GGUF model)"
        ));
    };
    if job.tokenizer.is_none() || job.text.is_none() {
        return refuse(format!(
            "{method} needs the model's tokenizer.json and a text dataset with a calibration split"
        ));
    }
    Ok(job)
}

/// Tokenizes the calibration split: windows for a decoder (refused when shorter than one),
/// sentences (lines, cut to the model's length) for an encoder.
pub fn sequences(job: &TransformerJob, calibration: &Calibration) -> R<Sequences> {
    let (Some(tokenizer), Some(text)) = (&job.tokenizer, &job.text) else {
        return refuse("calibration needs a tokenizer and a text dataset".into());
    };
    let documents = read_part(&text.path, &text.summary, Part::Calibration)?;
    let (ids, window) = match &job.config {
        TransformerConfig::Decoder(c) => {
            let window = calibration.window.min(c.max_positions);
            let window = c.sliding_window.map_or(window, |w| window.min(w));
            let ids = joined_tokens(tokenizer, &documents, calibration.tokens)?;
            let needed = window.min(calibration.tokens);
            if ids.len() < needed {
                return refuse(format!(
                    "the calibration split is {} tokens, shorter than one window of {needed}: give more calibration text or a smaller calibration.window",
                    ids.len()
                ));
            }
            (
                windows(&ids, window, window, calibration.tokens, None),
                window,
            )
        }
        TransformerConfig::Encoder(_) => {
            let mut sentences: Vec<Vec<u32>> = Vec::new();
            let mut total = 0;
            for line in documents.iter().flat_map(|d| d.lines()) {
                if line.trim().is_empty() || total >= calibration.tokens {
                    continue;
                }
                let ids = job.sentence(tokenizer, line)?;
                total += ids.len();
                sentences.push(ids);
            }
            if sentences.len() < 2 {
                return refuse(
                    "the calibration split holds fewer than 2 sentences (lines of text)".into(),
                );
            }
            (sentences, job.max_seq_len)
        }
    };
    let tokens = ids.iter().map(Vec::len).sum::<usize>() as u64;
    Ok(Sequences {
        used: CalibrationUse {
            data: format!("{} (calibration split)", text.label),
            windows: ids.len() as u64,
            tokens,
            window,
        },
        ids,
    })
}

/// The names `selection` takes, refused when it takes a tensor the driver does not rewrite
/// (anything but the blocks' linear layers) or none at all.
pub fn selected_layers(
    index: &SafetensorsIndex,
    selection: &TensorSelection,
    job: &TransformerJob,
    method: &str,
    op: &str,
) -> R<HashSet<String>> {
    let chosen = select_tensors(&index.tensors, selection, op)?;
    let linears = select_tensors(&index.tensors, &job.default_selection, op)?;
    if let Some((other, _)) = index
        .tensors
        .iter()
        .zip(chosen.iter().zip(&linears))
        .find(|(_, (&c, &l))| c && !l)
    {
        return refuse(format!(
            "{method} rewrites the blocks' linear layers from their calibration inputs; '{}' is not one: exclude it",
            other.name
        ));
    }
    Ok(index
        .tensors
        .iter()
        .zip(&chosen)
        .filter(|(_, &c)| c)
        .map(|(t, _)| t.name.clone())
        .collect())
}

/// Refuses an N:M pattern or a group size that does not tile a selected layer's rows.
pub fn require_rows_of(
    index: &SafetensorsIndex,
    selected: &HashSet<String>,
    multiple: usize,
    what: &str,
) -> R<()> {
    match index
        .tensors
        .iter()
        .find(|t| selected.contains(&t.name) && !(t.shape[1] as usize).is_multiple_of(multiple))
    {
        Some(t) => refuse(format!(
            "'{}' has rows of {} inputs, not a multiple of {what} = {multiple}: choose another, or exclude the layer",
            t.name, t.shape[1]
        )),
        None => Ok(()),
    }
}

/// The output file, written as blocks finish; tensors not rewritten are copied at the end.
pub struct BlockWriter<'a> {
    pub out: SpooledWriter,
    index: &'a SafetensorsIndex,
    by_name: HashMap<&'a str, &'a TensorEntry>,
    written: HashSet<String>,
    bytes: Vec<u8>,
}

impl<'a> BlockWriter<'a> {
    pub fn new(index: &'a SafetensorsIndex, output: &Path) -> R<BlockWriter<'a>> {
        Ok(BlockWriter {
            out: SpooledWriter::new(&output.with_extension("spool"))?,
            by_name: index.tensors.iter().map(|t| (t.name.as_str(), t)).collect(),
            index,
            written: HashSet::new(),
            bytes: Vec::new(),
        })
    }

    pub fn entry(&self, name: &str) -> R<&'a TensorEntry> {
        self.by_name.get(name).copied().ok_or_else(|| {
            CompressError::InvalidModel(format!("the model file has no tensor '{name}'"))
        })
    }

    /// Writes `values` as the tensor `name`, in its own dtype and shape.
    pub fn dense(&mut self, name: &str, values: &[f32]) -> R<()> {
        let t = self.entry(name)?;
        store_f32(values, t.dtype, &mut self.bytes);
        self.out
            .add(&t.name, t.dtype.name(), &t.shape, &self.bytes)?;
        self.written.insert(t.name.clone());
        Ok(())
    }

    /// Marks `name` as written (by the caller, under its own layout).
    pub fn wrote(&mut self, name: &str) {
        self.written.insert(name.to_owned());
    }

    /// Copies every tensor not written yet; `each` sees each copied tensor and its bytes.
    pub fn copy_rest(
        &mut self,
        input: &Path,
        control: &crate::Control,
        mut each: impl FnMut(&TensorEntry, &[u8]),
    ) -> R<()> {
        let file = File::open(input)?;
        for t in &self.index.tensors {
            if self.written.contains(&t.name) {
                continue;
            }
            control.checkpoint()?;
            let window = map_chunk(&file, self.index, (t.begin, t.byte_len() as usize))?;
            self.out.add(&t.name, t.dtype.name(), &t.shape, &window)?;
            each(t, &window);
        }
        Ok(())
    }
}
