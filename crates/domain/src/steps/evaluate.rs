//! `evaluate`: accuracy and friends on the evaluation split, compute cost, CPU latency.

use serde::{Deserialize, Serialize};

use super::{Operation, StepNeeds};

use super::train::MAX_BATCH;
use crate::ParseError;

/// `evaluate`: accuracy and friends on the evaluation split, compute cost, CPU latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EvaluateStep {
    /// Batch size for the throughput figure.
    #[serde(default = "default_eval_batch")]
    pub batch_size: usize,
    /// Timed runs behind each latency/throughput median.
    #[serde(default = "default_runs")]
    pub runs: usize,
    /// Transformer decoders: tokens per evaluation window (see `TextProtocol`).
    #[serde(default = "default_window")]
    pub window: usize,
    /// Transformer decoders: tokens from one window's start to the next's (default: the
    /// window, no overlap).
    #[serde(default)]
    pub stride: Option<usize>,
    /// Transformer decoders: start each window with the BOS token.
    #[serde(default)]
    pub bos: bool,
    /// Transformer decoders: tokens of evaluation text read at most.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// Transformer encoders: sentences embedded at most.
    #[serde(default = "default_max_sentences")]
    pub max_sentences: usize,
}

impl EvaluateStep {
    pub fn text_protocol(&self) -> TextProtocol {
        TextProtocol {
            window: self.window,
            stride: self.stride,
            bos: self.bos,
            max_tokens: self.max_tokens,
            max_sentences: self.max_sentences,
        }
    }
}

/// How a transformer reads the evaluation text. Decoders: the text tokenized whole, cut into
/// windows of `window` tokens every `stride` tokens (non-overlapping by default), at most
/// `max_tokens` tokens; the loss counts every next-token prediction inside each window.
/// Encoders: each line (plain text) or record (JSON Lines) a sentence, at most
/// `max_sentences`, cut to the model's length.
#[derive(Debug, Clone, PartialEq)]
pub struct TextProtocol {
    pub window: usize,
    pub stride: Option<usize>,
    pub bos: bool,
    pub max_tokens: usize,
    pub max_sentences: usize,
}

impl Default for TextProtocol {
    fn default() -> Self {
        TextProtocol {
            window: default_window(),
            stride: None,
            bos: false,
            max_tokens: default_max_tokens(),
            max_sentences: default_max_sentences(),
        }
    }
}

impl TextProtocol {
    pub fn stride(&self) -> usize {
        self.stride.unwrap_or(self.window)
    }
}

fn default_window() -> usize {
    2048
}
fn default_max_tokens() -> usize {
    32_768
}
fn default_max_sentences() -> usize {
    2000
}

impl Default for EvaluateStep {
    fn default() -> Self {
        EvaluateStep {
            batch_size: default_eval_batch(),
            runs: default_runs(),
            window: default_window(),
            stride: None,
            bos: false,
            max_tokens: default_max_tokens(),
            max_sentences: default_max_sentences(),
        }
    }
}

fn default_eval_batch() -> usize {
    256
}
fn default_runs() -> usize {
    5
}

impl StepNeeds for EvaluateStep {
    fn compresses(&self) -> bool {
        false
    }
    fn writes_dense(&self) -> bool {
        true
    }
    fn batch_size(&self) -> usize {
        self.batch_size
    }
}

impl Operation for EvaluateStep {
    const OP: &'static str = "evaluate";

    fn check(self) -> Result<Self, ParseError> {
        if self.batch_size == 0 || self.batch_size > MAX_BATCH || !(1..=100).contains(&self.runs) {
            return Err(ParseError(format!(
                "batch_size must be 1–{MAX_BATCH} and runs 1–100"
            )));
        }
        let t = &self.text_protocol();
        if !(2..=32_768).contains(&t.window)
            || !(1..=t.window).contains(&t.stride())
            || !(2..=1 << 24).contains(&t.max_tokens)
            || !(1..=100_000).contains(&t.max_sentences)
        {
            return Err(ParseError(
                "window must be 2–32768 tokens, stride 1–window, max_tokens 2–2^24, max_sentences 1–100000".into(),
            ));
        }
        Ok(self)
    }
}
