//! The `entropy` step: the last file of a pipeline entropy-coded as a whole (Deep
//! Compression's third stage, here with zstd, whose Huffman and FSE stages code the k-means
//! indices, int codes and sparse bitmasks the earlier steps leave).

use serde::{Deserialize, Serialize};

use super::{Operation, StepNeeds};

use crate::ParseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    Zstd,
}

/// The JSON form of an `entropy` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EntropyStep {
    /// Only `zstd` for now: `zstd -d` (or any zstd library) restores the file.
    pub codec: Codec,
    /// zstd level 1–19; default 19 for files up to 64 MiB, 3 above (speed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<i32>,
}

impl EntropyStep {
    pub fn level_for(&self, bytes: u64) -> i32 {
        self.level.unwrap_or(if bytes <= 64 << 20 { 19 } else { 3 })
    }
}

impl StepNeeds for EntropyStep {
    fn writes_dense(&self) -> bool {
        false
    }
    fn needs_architecture(&self) -> bool {
        false
    }
    fn needs_dataset(&self) -> bool {
        false
    }
}

impl Operation for EntropyStep {
    const OP: &'static str = "entropy";

    fn check(self) -> Result<Self, ParseError> {
        match self.level {
            Some(l) if !(1..=19).contains(&l) => {
                Err(ParseError(format!("level must be 1–19, got {l}")))
            }
            _ => Ok(self),
        }
    }
}
