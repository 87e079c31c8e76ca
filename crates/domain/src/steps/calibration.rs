//! How much of a text dataset's calibration split an activation-aware step reads, and in
//! what windows: shared by the calibration-based methods.

use serde::{Deserialize, Serialize};

use crate::ParseError;

/// Tokens read by default: 8 windows of 2,048, enough for Wanda's column norms to settle
/// (the paper's 128 × 2,048 changes perplexity by under 1 %) at a few minutes on 2 cores.
const DEFAULT_TOKENS: usize = 16_384;
const DEFAULT_WINDOW: usize = 2_048;
/// The reference implementations' `percdamp`.
const DEFAULT_DAMPENING: f64 = 0.01;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    pub tokens: usize,
    pub window: usize,
    /// Added to the Hessian's diagonal, as a fraction of its mean (Hessian methods).
    pub dampening: f64,
}

impl Default for Calibration {
    fn default() -> Self {
        Calibration {
            tokens: DEFAULT_TOKENS,
            window: DEFAULT_WINDOW,
            dampening: DEFAULT_DAMPENING,
        }
    }
}

/// The JSON form: `{"tokens": 16384, "window": 2048}`, either may be left out.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CalibrationWire {
    /// Calibration tokens read (default 16384), from the start of the dataset's calibration
    /// split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<usize>,
    /// Tokens per window (default 2048; at most the model's context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<usize>,
    /// SparseGPT, GPTQ: added to the Hessian's diagonal as a fraction of its mean (default
    /// 0.01; raised tenfold, up to three times, where the Hessian will not factorise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dampening: Option<f64>,
}

impl TryFrom<CalibrationWire> for Calibration {
    type Error = ParseError;

    fn try_from(w: CalibrationWire) -> Result<Self, ParseError> {
        let tokens = w.tokens.unwrap_or(DEFAULT_TOKENS);
        let window = w.window.unwrap_or(DEFAULT_WINDOW);
        if !(2..=1 << 20).contains(&tokens) {
            return Err(ParseError(format!(
                "calibration.tokens must be 2–1048576, got {tokens}"
            )));
        }
        if !(2..=32_768).contains(&window) {
            return Err(ParseError(format!(
                "calibration.window must be 2–32768 tokens, got {window}"
            )));
        }
        let dampening = w.dampening.unwrap_or(DEFAULT_DAMPENING);
        if !(dampening.is_finite() && (0.0..=10.0).contains(&dampening)) {
            return Err(ParseError(format!(
                "calibration.dampening must be 0–10 (a fraction of the Hessian's mean diagonal), got {dampening}"
            )));
        }
        Ok(Calibration {
            tokens,
            window,
            dampening,
        })
    }
}

impl From<Calibration> for CalibrationWire {
    fn from(c: Calibration) -> Self {
        CalibrationWire {
            tokens: Some(c.tokens),
            window: Some(c.window),
            dampening: Some(c.dampening),
        }
    }
}
