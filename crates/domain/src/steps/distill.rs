//! The `distill` step: a student trained to mimic the job's model (Hinton et al. 2015).

use serde::{Deserialize, Serialize};

use super::{Operation, StepNeeds};

use super::train::{TrainStep, TrainWire};
use crate::architecture::{Architecture, ArchitectureWire};
use crate::ParseError;

/// The JSON form of a `distill` step. Give `student` or `shrink`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DistillWire {
    /// The student's architecture (same input shape and classes as the teacher).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub student: Option<ArchitectureWire>,
    /// Or: the teacher's architecture with every hidden layer keeping this fraction of its
    /// units/filters (0 < shrink ≤ 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shrink: Option<f64>,
    /// Softening temperature T (default 4).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Weight of the soft-target loss (× T²); 1 − alpha goes to cross-entropy on the labels.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Also train the same student on labels alone, same budget, to show what distillation
    /// bought.
    #[serde(default)]
    pub baseline: bool,
    /// The student's training recipe (default: SGD, lr 0.01, momentum 0.9, batch 64, 1 epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainWire>,
    /// Intermediate-feature loss: layers whose outputs the student imitates (same shapes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<FeaturePair>,
    /// Weight of the feature loss (mean squared error per pair; default 1).
    #[serde(default = "default_beta")]
    pub beta: f64,
}

/// A teacher layer and the student layer that should reproduce its output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FeaturePair {
    pub teacher: String,
    pub student: String,
}

fn default_beta() -> f64 {
    1.0
}

fn default_temperature() -> f64 {
    4.0
}
fn default_alpha() -> f64 {
    0.9
}

#[derive(Debug, Clone, PartialEq)]
pub enum Student {
    Given(Architecture),
    Shrink(f64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "DistillWire", into = "DistillWire")]
pub struct DistillStep {
    pub student: Student,
    pub temperature: f64,
    pub alpha: f64,
    pub baseline: bool,
    pub train: TrainStep,
    pub features: Vec<FeaturePair>,
    pub beta: f64,
}

impl TryFrom<DistillWire> for DistillStep {
    type Error = ParseError;

    fn try_from(w: DistillWire) -> Result<Self, ParseError> {
        let student = match (w.student, w.shrink) {
            (Some(a), None) => Student::Given(Architecture::try_from(a)?),
            (None, Some(s)) if s > 0.0 && s <= 1.0 => Student::Shrink(s),
            (None, Some(s)) => {
                return Err(ParseError(format!("shrink must be in (0, 1], got {s}")))
            }
            _ => {
                return Err(ParseError(
                    "give the student as an architecture (student) or as a fraction of the teacher (shrink), one of the two".into(),
                ))
            }
        };
        if !(w.temperature.is_finite() && w.temperature > 0.0 && w.temperature <= 100.0) {
            return Err(ParseError(format!(
                "temperature must be in (0, 100], got {}",
                w.temperature
            )));
        }
        if !(0.0..=1.0).contains(&w.alpha) {
            return Err(ParseError(format!(
                "alpha must be in [0, 1], got {}",
                w.alpha
            )));
        }
        if !(w.beta.is_finite() && w.beta >= 0.0) || w.features.len() > 16 {
            return Err(ParseError(
                "beta must be ≥ 0, and at most 16 feature pairs are allowed".into(),
            ));
        }
        let train = match w.train {
            Some(t) => TrainStep::try_from(t)?,
            None => serde_json::from_value(serde_json::json!({}))
                .map_err(|e| ParseError(e.to_string()))?,
        };
        Ok(DistillStep {
            student,
            temperature: w.temperature,
            alpha: w.alpha,
            baseline: w.baseline,
            train,
            features: w.features,
            beta: w.beta,
        })
    }
}

impl From<DistillStep> for DistillWire {
    fn from(s: DistillStep) -> Self {
        let (student, shrink) = match s.student {
            Student::Given(a) => (Some(ArchitectureWire::from(a)), None),
            Student::Shrink(f) => (None, Some(f)),
        };
        DistillWire {
            student,
            shrink,
            temperature: s.temperature,
            alpha: s.alpha,
            baseline: s.baseline,
            train: Some(TrainWire::from(s.train)),
            features: s.features,
            beta: s.beta,
        }
    }
}

impl StepNeeds for DistillStep {
    fn writes_dense(&self) -> bool {
        true
    }
    fn trains(&self) -> bool {
        true
    }
    fn batch_size(&self) -> usize {
        self.train.batch_size
    }
}

impl Operation for DistillStep {
    const OP: &'static str = "distill";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinking_halves_hidden_layers_and_keeps_the_classes() {
        let teacher = Architecture::parse_json(
            r#"{"input_shape":[1,8,8],"layers":[
                {"type":"conv2d","in_channels":1,"out_channels":8,"kernel_size":3,"padding":1},
                {"type":"batchnorm2d","num_features":8},{"type":"relu"},{"type":"maxpool2d","kernel_size":2},
                {"type":"flatten"},{"type":"linear","in_features":128,"out_features":20},{"type":"relu"},
                {"type":"linear","in_features":20,"out_features":10}]}"#,
        )
        .unwrap();
        let s = teacher.shrunk(0.5).unwrap();
        let params: Vec<_> = s.params().into_iter().map(|p| (p.name, p.shape)).collect();
        assert!(params.contains(&("0.weight".into(), vec![4, 1, 3, 3])));
        assert!(params.contains(&("1.running_mean".into(), vec![4])));
        assert!(params.contains(&("5.weight".into(), vec![10, 64])));
        assert!(params.contains(&("7.weight".into(), vec![10, 10])));
        assert_eq!(s.classes(), Some(10));
    }

    #[test]
    fn bad_distill_steps_are_refused() {
        for (json, needle) in [
            (r#"{}"#, "one of the two"),
            (r#"{"shrink":1.5}"#, "shrink must be"),
            (r#"{"shrink":0.5,"temperature":0}"#, "temperature"),
            (r#"{"shrink":0.5,"alpha":2}"#, "alpha"),
        ] {
            let err = serde_json::from_str::<DistillStep>(json)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
