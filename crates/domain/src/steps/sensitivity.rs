//! `sensitivity`: each prunable layer pruned alone at several sparsities, the model
//! measured after each.

use serde::{Deserialize, Serialize};

use super::{Operation, StepNeeds};

use crate::selection::{NamePattern, TensorSelection};
use crate::ParseError;

/// `sensitivity`: each prunable layer pruned alone at several sparsities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SensitivityStep {
    #[serde(default = "default_sparsities")]
    pub sparsities: Vec<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<String>>))]
    pub include: Option<Vec<NamePattern>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub exclude: Vec<NamePattern>,
}

fn default_sparsities() -> Vec<f64> {
    vec![0.5, 0.7, 0.8, 0.9, 0.95, 0.99]
}

impl SensitivityStep {
    pub fn selection(&self) -> TensorSelection {
        TensorSelection {
            include: self.include.clone(),
            exclude: self.exclude.clone(),
        }
    }
}

impl StepNeeds for SensitivityStep {
    fn compresses(&self) -> bool {
        false
    }
    fn writes_dense(&self) -> bool {
        true
    }
}

impl Operation for SensitivityStep {
    const OP: &'static str = "sensitivity";

    fn check(self) -> Result<Self, ParseError> {
        if self.sparsities.is_empty()
            || self.sparsities.len() > 32
            || self
                .sparsities
                .iter()
                .any(|s| !(s.is_finite() && (0.0..=1.0).contains(s)))
        {
            return Err(ParseError(
                "sparsities must list 1–32 fractions in [0, 1]".into(),
            ));
        }
        TensorSelection::new(self.include.clone(), self.exclude.clone())?;
        Ok(self)
    }
}
