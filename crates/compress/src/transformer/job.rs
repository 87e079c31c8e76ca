//! A transformer in a job: its config, tokenizer and evaluation text, the selection weight-only
//! steps take by default, and fidelity on the evaluation text for one model or an original
//! against its compressed copy.

use std::path::{Path, PathBuf};

use super::config::TransformerConfig;
use super::eval;
use super::tensors::block_linears;
use super::text::{read_part, windows, Part, TextSummary};
use super::tokenizer::TextTokenizer;
use super::weights::SafetensorsWeights;
use crate::control::Control;
use crate::CompressError;
use domain::results::{Fidelity, PerplexityProtocol};
use domain::steps::evaluate::TextProtocol;
use domain::TensorSelection;

/// The evaluation text of a job: the file, what it holds, and how reports name it.
pub struct TextData {
    pub path: PathBuf,
    pub summary: TextSummary,
    pub label: String,
}

pub struct TransformerJob {
    pub config: TransformerConfig,
    pub tokenizer: Option<TextTokenizer>,
    pub text: Option<TextData>,
    /// Encoders: tokens per sentence at most (sentence-transformers' `max_seq_length`).
    pub max_seq_len: usize,
    /// What weight-only steps select when the request names no `include`.
    pub default_selection: TensorSelection,
    /// `architectures[0]` of the config.
    pub architecture: String,
    /// The folder's other files (tokenizer.json, tokenizer_config.json, ...), by path.
    pub files: Vec<(String, PathBuf)>,
}

impl TransformerJob {
    pub fn new(
        config: TransformerConfig,
        tensor_names: &[String],
        tokenizer: Option<TextTokenizer>,
        text: Option<TextData>,
        max_seq_len: Option<usize>,
    ) -> Self {
        Self::with_files(
            config,
            String::new(),
            Vec::new(),
            tensor_names,
            tokenizer,
            text,
            max_seq_len,
        )
    }

    pub fn with_files(
        config: TransformerConfig,
        architecture: String,
        files: Vec<(String, PathBuf)>,
        tensor_names: &[String],
        tokenizer: Option<TextTokenizer>,
        text: Option<TextData>,
        max_seq_len: Option<usize>,
    ) -> Self {
        let names: Vec<&str> = tensor_names.iter().map(String::as_str).collect();
        let positions = match &config {
            TransformerConfig::Encoder(e) => e.max_positions,
            TransformerConfig::Decoder(d) => d.max_positions,
        };
        TransformerJob {
            default_selection: block_linears(&config, &names),
            max_seq_len: max_seq_len.unwrap_or(256).min(positions),
            config,
            tokenizer,
            text,
            architecture,
            files,
        }
    }

    /// One of the folder's files, read as JSON.
    pub fn json_file(&self, name: &str) -> Option<serde_json::Value> {
        let (_, path) = self.files.iter().find(|(p, _)| p == name)?;
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Whether the job can measure fidelity: a tokenizer and evaluation text.
    pub fn measurable(&self) -> bool {
        self.tokenizer.is_some() && self.text.is_some()
    }

    /// `selection` with the blocks' linear layers in place of a missing `include`.
    pub fn selection(&self, selection: &TensorSelection) -> TensorSelection {
        match selection.include {
            Some(_) => selection.clone(),
            None => {
                let mut s = self.default_selection.clone();
                s.exclude.extend(selection.exclude.iter().cloned());
                s
            }
        }
    }

    fn needs(&self) -> Result<(&TextTokenizer, &TextData), CompressError> {
        let tokenizer = self.tokenizer.as_ref().ok_or_else(|| {
            CompressError::InvalidRequest(
                "measuring this model needs its tokenizer: upload the folder with tokenizer.json"
                    .into(),
            )
        })?;
        let text = self.text.as_ref().ok_or_else(|| {
            CompressError::InvalidRequest(
                "measuring a transformer needs a text dataset: give dataset_id of a text or JSON Lines upload".into(),
            )
        })?;
        Ok((tokenizer, text))
    }

    /// One sentence for an encoder: its token ids with the special tokens, cut to the
    /// model's length.
    pub fn sentence(
        &self,
        tokenizer: &TextTokenizer,
        line: &str,
    ) -> Result<Vec<u32>, CompressError> {
        let mut ids = tokenizer.encode(line, true)?;
        if ids.len() > self.max_seq_len {
            // Keep the final [SEP]-like token, as a truncating tokenizer does.
            let last = *ids.last().expect("non-empty");
            ids.truncate(self.max_seq_len);
            *ids.last_mut().expect("non-empty") = last;
        }
        Ok(ids)
    }

    /// Fidelity of `models[0]` (the original) and, when given, `models[1]` against it.
    pub fn fidelity(
        &self,
        models: &[&Path],
        protocol: &TextProtocol,
        control: &Control,
    ) -> Result<Fidelity, CompressError> {
        let (tokenizer, text) = self.needs()?;
        let documents = read_part(&text.path, &text.summary, Part::Evaluation)?;
        let weights: Vec<SafetensorsWeights> = models
            .iter()
            .map(|p| SafetensorsWeights::open(p))
            .collect::<Result<_, _>>()?;
        let sources: Vec<&dyn super::WeightSource> = weights
            .iter()
            .map(|w| w as &dyn super::WeightSource)
            .collect();
        let (kind, protocol_report, (figures, versus)) = match &self.config {
            TransformerConfig::Decoder(c) => {
                let ids = joined_tokens(tokenizer, &documents, protocol.max_tokens)?;
                let bos = protocol.bos.then_some(c.bos_token_id).flatten();
                if protocol.bos && bos.is_none() {
                    return Err(CompressError::InvalidRequest(
                        "bos is asked for, but the model's config names no bos_token_id".into(),
                    ));
                }
                let w = windows(
                    &ids,
                    protocol.window,
                    protocol.stride(),
                    protocol.max_tokens,
                    bos,
                );
                if w.is_empty() {
                    return Err(CompressError::InvalidRequest(format!(
                        "the evaluation text is {} tokens long; it needs at least 2",
                        ids.len()
                    )));
                }
                let p = PerplexityProtocol {
                    window: protocol.window,
                    stride: protocol.stride(),
                    bos: protocol.bos,
                };
                (
                    "decoder",
                    Some(p),
                    eval::decoders(c, &sources, &w, control)?,
                )
            }
            TransformerConfig::Encoder(c) => {
                let mut sentences = Vec::new();
                for d in documents.iter().flat_map(|d| d.lines()) {
                    if d.trim().is_empty() {
                        continue;
                    }
                    sentences.push(self.sentence(tokenizer, d)?);
                    if sentences.len() >= protocol.max_sentences {
                        break;
                    }
                }
                if sentences.len() < 2 {
                    return Err(CompressError::InvalidRequest(
                        "the evaluation text has fewer than 2 sentences".into(),
                    ));
                }
                (
                    "encoder",
                    None,
                    eval::encoders(c, &sources, &sentences, control)?,
                )
            }
        };
        let mut figures = figures.into_iter();
        Ok(Fidelity {
            kind: kind.into(),
            data: text.label.clone(),
            protocol: protocol_report,
            before: figures.next().expect("the original"),
            after: figures.next(),
            versus_before: versus.into_iter().next(),
            after_note: None,
        })
    }
}

/// The documents tokenized one after another (no special tokens), until at least `limit`
/// tokens are read: a decoder's text, to be cut into windows.
pub fn joined_tokens(
    tokenizer: &TextTokenizer,
    documents: &[String],
    limit: usize,
) -> Result<Vec<u32>, CompressError> {
    let mut ids = Vec::new();
    for d in documents {
        ids.extend(tokenizer.encode(d, false)?);
        if ids.len() >= limit {
            break;
        }
    }
    Ok(ids)
}
