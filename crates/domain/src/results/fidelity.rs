//! How close a compressed transformer stays to the original, measured on the evaluation text:
//! perplexity, KL divergence and top-1 agreement of next-token predictions for decoders;
//! cosine similarity, nearest-neighbour agreement and rank correlation of sentence embeddings
//! for encoders.

use serde::Serialize;

/// How the evaluation text was cut for a decoder: windows of `window` tokens, the next window
/// starting `stride` tokens later; the loss counts every next-token prediction inside a window
/// (window − 1 of them, or fewer in the last one); perplexity = exp(total NLL / predictions).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PerplexityProtocol {
    pub window: usize,
    pub stride: usize,
    /// Whether each window starts with the BOS token (in place of its first text token).
    pub bos: bool,
}

/// One model on the evaluation text.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelFidelity {
    /// Tokens the model read.
    pub tokens: u64,
    /// Windows (decoders) or sentences (encoders).
    pub sequences: u64,
    /// Next-token predictions scored (decoders).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predictions: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perplexity: Option<f64>,
    /// Mean negative log-likelihood per prediction, in nats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_nll: Option<f64>,
    /// Tokens per second through the whole model (prefill; measured on this machine's CPU).
    pub tokens_per_second: f64,
}

/// The compressed model against the original, on the same sequences.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FidelityComparison {
    /// Mean KL(original ‖ compressed) of the next-token distributions, in nats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kl_mean: Option<f64>,
    /// Fraction of positions where both predict the same next token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top1_agreement: Option<f64>,
    /// perplexity after − perplexity before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perplexity_delta: Option<f64>,
    /// perplexity after / perplexity before − 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perplexity_change: Option<f64>,
    /// Cosine similarity of each sentence's embedding to the original's: mean, minimum and
    /// 5th percentile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cosine_mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cosine_min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cosine_p5: Option<f64>,
    /// Fraction of sentences whose nearest neighbour (by cosine, among the others) is the
    /// same as with the original embeddings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nearest_neighbour_agreement: Option<f64>,
    /// Spearman rank correlation of all pairwise similarities, original against compressed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spearman: Option<f64>,
}

/// The before/after fidelity of a transformer job.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Fidelity {
    /// `decoder` (next-token prediction) or `encoder` (sentence embeddings).
    pub kind: String,
    /// What text, and which part of it.
    pub data: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<PerplexityProtocol>,
    pub before: ModelFidelity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<ModelFidelity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versus_before: Option<FidelityComparison>,
    /// Why `after` is missing, when it is, or how it was measured when that is not the
    /// result file read as it is (a GGUF file's blocks dequantized).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_note: Option<String>,
}
