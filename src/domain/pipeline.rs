//! Pipelines: an ordered list of steps, each parsed from JSON into a value that is valid by
//! construction. A `Pipeline` that exists can be run.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::auto::{AutoStep, AutoWire};
use super::distill::{DistillStep, DistillWire};
use super::entropy::EntropyStep;
use super::export::{ExportStep, ExportWire};
use super::qat::{QatStep, QatWire};
use super::quantize::{QuantizeStep, QuantizeWire, Storage};
use super::selection::{NamePattern, TensorSelection};
use super::training::{EvaluateStep, Schedule, SensitivityStep, TrainStep, TrainWire};

pub const MAX_STEPS: usize = 32;
const SUPPORTED_OPS: &str =
    "prune, quantize, export, train, finetune, distill, qat, auto, evaluate, sensitivity, entropy";

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct ParseError(pub String);

/// A fraction of weights to set to zero, in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Sparsity(f64);

impl Sparsity {
    pub fn parse(value: f64) -> Result<Self, ParseError> {
        if value.is_finite() && (0.0..=1.0).contains(&value) {
            Ok(Sparsity(value))
        } else {
            Err(ParseError(format!(
                "sparsity must be a number between 0 and 1 (the fraction of weights set to zero), got {value}"
            )))
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

/// τ in `|w| < τ ⇒ w = 0`; finite and non-negative.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Threshold(f64);

impl Threshold {
    pub fn parse(value: f64) -> Result<Self, ParseError> {
        if value.is_finite() && value >= 0.0 {
            Ok(Threshold(value))
        } else {
            Err(ParseError(format!(
                "threshold must be a finite number ≥ 0, got {value}"
            )))
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One threshold across all selected tensors.
    Global,
    /// Every selected tensor reaches the sparsity on its own.
    Layer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PruneMethod {
    /// Unstructured: individual weights with the lowest importance.
    Magnitude,
    /// Structured: whole conv filters / linear neurons with the smallest L1 norm (Li et al.
    /// 2017); the layer and the next layer's inputs shrink.
    L1Filter,
    /// Semi-structured N:M: in every group of `m` consecutive weights along the input
    /// dimension keep the `n` most important.
    Nm,
}

/// How a weight's importance is scored before the least important are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// |w|.
    #[default]
    Magnitude,
    /// First-order Taylor: |Σ_b w · ∂L/∂w| over a few batches of the training split.
    Taylor,
    /// Movement (Sanh et al. 2020): −Σ_t w · ∂L/∂w over fine-tuning; weights moving toward
    /// zero score low.
    Movement,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PruneTarget {
    Threshold(Threshold),
    Sparsity {
        sparsity: Sparsity,
        scope: Scope,
    },
    /// Keep `n` of every `m`.
    NofM {
        n: usize,
        m: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "PruneWire", into = "PruneWire")]
pub struct PruneStep {
    pub method: PruneMethod,
    pub target: PruneTarget,
    pub selection: TensorSelection,
    pub store: Storage,
    pub criterion: Criterion,
    pub schedule: Option<Schedule>,
    /// Batches of the training split that gradient criteria accumulate over.
    pub batches: usize,
}

impl PruneStep {
    /// Whether the step needs the model loaded and run, rather than streamed tensor by tensor.
    pub fn in_memory(&self) -> bool {
        self.method != PruneMethod::Magnitude
            || self.criterion != Criterion::Magnitude
            || self.schedule.is_some()
    }

    pub fn needs_architecture(&self) -> bool {
        self.method == PruneMethod::L1Filter || self.needs_dataset()
    }

    pub fn needs_dataset(&self) -> bool {
        self.criterion != Criterion::Magnitude || self.schedule.is_some()
    }
}

/// The JSON form of a `prune` step. Give exactly one of `threshold` or `sparsity`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PruneWire {
    /// `magnitude` (unstructured, default), `l1_filter` (structured) or `nm` (N:M).
    #[serde(default = "default_method")]
    pub method: PruneMethod,
    /// Importance score: `magnitude` (default), `taylor` or `movement` (need a dataset).
    #[serde(default, skip_serializing_if = "is_magnitude")]
    pub criterion: Criterion,
    /// Ramp to the target over several prune + fine-tune rounds (needs a dataset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// N:M: weights kept per group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    /// N:M: group length along the input dimension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m: Option<usize>,
    /// Gradient criteria: training batches to accumulate over (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batches: Option<usize>,
    /// Zero every selected weight with |w| < threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Target sparsity (fraction of zeros) over the selected weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparsity: Option<f64>,
    /// With `sparsity`: `global` (one threshold for all selected tensors) or `layer` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    /// Tensor-name patterns (`*` wildcard) to prune. Default: every floating-point tensor
    /// with two or more dimensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub include: Option<Vec<NamePattern>>,
    /// Tensor-name patterns to leave untouched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub exclude: Vec<NamePattern>,
    /// `sparse` writes pruned tensors as a bitmask plus their non-zero values (last step only).
    #[serde(default)]
    pub store: Storage,
}

impl TryFrom<PruneWire> for PruneStep {
    type Error = ParseError;

    fn try_from(w: PruneWire) -> Result<Self, ParseError> {
        let target = match (w.method, w.n, w.m) {
            (PruneMethod::Nm, Some(n), Some(m)) => {
                if w.threshold.is_some() || w.sparsity.is_some() || w.scope.is_some() {
                    return Err(ParseError(
                        "an nm step's sparsity is 1 − n/m; remove threshold, sparsity and scope"
                            .into(),
                    ));
                }
                if !(1..=32).contains(&m) || n == 0 || n > m {
                    return Err(ParseError(format!(
                        "nm needs 1 ≤ n ≤ m ≤ 32, got n={n}, m={m}"
                    )));
                }
                Some(PruneTarget::NofM { n, m })
            }
            (PruneMethod::Nm, _, _) => {
                return Err(ParseError(
                    "method nm needs n and m, e.g. \"n\": 2, \"m\": 4".into(),
                ))
            }
            (_, None, None) => None,
            _ => return Err(ParseError("n and m apply to method nm only".into())),
        };
        let target = match target {
            Some(t) => t,
            None => Self::dense_target(&w)?,
        };
        if w.method == PruneMethod::L1Filter {
            if !matches!(
                target,
                PruneTarget::Sparsity {
                    scope: Scope::Layer,
                    ..
                }
            ) {
                return Err(ParseError(
                    "l1_filter takes a sparsity (the fraction of filters/neurons removed from each layer), with scope layer".into(),
                ));
            }
            if w.criterion != Criterion::Magnitude
                || w.schedule.is_some()
                || w.store == Storage::Sparse
            {
                return Err(ParseError(
                    "l1_filter ranks by L1 norm in one shot and writes a smaller dense model: criterion, schedule and store sparse do not apply".into(),
                ));
            }
        }
        if (w.criterion != Criterion::Magnitude || w.schedule.is_some())
            && matches!(target, PruneTarget::Threshold(_))
        {
            return Err(ParseError(
                "criterion and schedule need a sparsity target, not a threshold".into(),
            ));
        }
        if w.schedule.is_some() && w.method != PruneMethod::Magnitude {
            return Err(ParseError(
                "schedule applies to unstructured (magnitude) pruning".into(),
            ));
        }
        let batches = w.batches.unwrap_or(8);
        if !(1..=10_000).contains(&batches) {
            return Err(ParseError("batches must be 1–10000".into()));
        }
        let schedule = w.schedule.map(Schedule::check).transpose()?;
        if matches!(&w.include, Some(v) if v.is_empty()) {
            return Err(ParseError(
                "include is empty, so nothing would be pruned; omit it to select every weight"
                    .into(),
            ));
        }
        Ok(PruneStep {
            method: w.method,
            target,
            selection: TensorSelection {
                include: w.include,
                exclude: w.exclude,
            },
            store: w.store,
            criterion: w.criterion,
            schedule,
            batches,
        })
    }
}

impl PruneStep {
    fn dense_target(w: &PruneWire) -> Result<PruneTarget, ParseError> {
        let target = match (w.threshold, w.sparsity) {
            (Some(t), None) => {
                if w.scope.is_some() {
                    return Err(ParseError(
                        "scope applies to sparsity targets only; remove it or use sparsity".into(),
                    ));
                }
                PruneTarget::Threshold(Threshold::parse(t)?)
            }
            (None, Some(s)) => PruneTarget::Sparsity {
                sparsity: Sparsity::parse(s)?,
                scope: w.scope.unwrap_or(Scope::Layer),
            },
            (Some(_), Some(_)) => {
                return Err(ParseError(
                    "give either threshold or sparsity, not both".into(),
                ))
            }
            (None, None) => {
                return Err(ParseError(
                    "a prune step needs a target: threshold (|w| < τ ⇒ 0) or sparsity (fraction of zeros)"
                        .into(),
                ))
            }
        };
        Ok(target)
    }
}

fn is_magnitude(c: &Criterion) -> bool {
    *c == Criterion::Magnitude
}

fn default_method() -> PruneMethod {
    PruneMethod::Magnitude
}

impl From<PruneStep> for PruneWire {
    fn from(s: PruneStep) -> Self {
        let (threshold, sparsity, scope, mut n, mut m) = (None, None, None, None, None);
        let (threshold, sparsity, scope) = match s.target {
            PruneTarget::Threshold(t) => (Some(t.get()), sparsity, scope),
            PruneTarget::Sparsity { sparsity, scope } => {
                (threshold, Some(sparsity.get()), Some(scope))
            }
            PruneTarget::NofM { n: nn, m: mm } => {
                (n, m) = (Some(nn), Some(mm));
                (threshold, sparsity, scope)
            }
        };
        PruneWire {
            method: s.method,
            criterion: s.criterion,
            schedule: s.schedule,
            n,
            m,
            batches: (s.criterion != Criterion::Magnitude).then_some(s.batches),
            threshold,
            sparsity,
            scope,
            include: s.selection.include,
            exclude: s.selection.exclude,
            store: s.store,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    Prune(PruneStep),
    Quantize(QuantizeStep),
    Export(ExportStep),
    Train(TrainStep),
    Finetune(TrainStep),
    Evaluate(EvaluateStep),
    Sensitivity(SensitivityStep),
    Entropy(EntropyStep),
    Distill(DistillStep),
    Qat(QatStep),
    Auto(AutoStep),
}

impl Step {
    pub fn op(&self) -> &'static str {
        match self {
            Step::Prune(_) => "prune",
            Step::Quantize(_) => "quantize",
            Step::Export(_) => "export",
            Step::Train(_) => "train",
            Step::Finetune(_) => "finetune",
            Step::Evaluate(_) => "evaluate",
            Step::Sensitivity(_) => "sensitivity",
            Step::Entropy(_) => "entropy",
            Step::Distill(_) => "distill",
            Step::Qat(_) => "qat",
            Step::Auto(_) => "auto",
        }
    }

    /// Whether the step leaves a plain dense safetensors file that another step can read.
    pub fn writes_dense(&self) -> bool {
        match self {
            Step::Prune(p) => p.store == Storage::Dense,
            Step::Quantize(_)
            | Step::Export(_)
            | Step::Entropy(_)
            | Step::Qat(_)
            | Step::Auto(_) => false,
            Step::Train(_)
            | Step::Finetune(_)
            | Step::Evaluate(_)
            | Step::Sensitivity(_)
            | Step::Distill(_) => true,
        }
    }

    pub fn needs_architecture(&self) -> bool {
        match self {
            Step::Prune(p) => p.needs_architecture(),
            Step::Quantize(_) | Step::Export(_) | Step::Entropy(_) => false,
            _ => true,
        }
    }

    pub fn needs_dataset(&self) -> bool {
        match self {
            Step::Prune(p) => p.needs_dataset(),
            Step::Quantize(_) | Step::Export(_) | Step::Entropy(_) => false,
            _ => true,
        }
    }
}

/// Documents the shape of one pipeline step in the OpenAPI description.
#[derive(ToSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
#[allow(dead_code)]
pub enum PipelineStepDoc {
    Prune(PruneWire),
    Quantize(QuantizeWire),
    Export(ExportWire),
    Train(TrainWire),
    Finetune(TrainWire),
    Evaluate(EvaluateStep),
    Sensitivity(SensitivityStep),
    Entropy(EntropyStep),
    Distill(DistillWire),
    Qat(QatWire),
    Auto(AutoWire),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pipeline(Vec<Step>);

impl Pipeline {
    /// Parses a request's `pipeline` array, naming the step and field at fault.
    pub fn parse(steps: &[Value]) -> Result<Self, ParseError> {
        if steps.is_empty() {
            return Err(ParseError(format!(
                "pipeline is empty; give at least one step, e.g. {{\"op\":\"prune\",\"method\":\"magnitude\",\"sparsity\":0.5}} (supported ops: {SUPPORTED_OPS})"
            )));
        }
        if steps.len() > MAX_STEPS {
            return Err(ParseError(format!(
                "pipeline has {} steps; at most {MAX_STEPS} are allowed",
                steps.len()
            )));
        }
        let parsed = steps
            .iter()
            .enumerate()
            .map(|(i, v)| {
                Self::parse_step(v).map_err(|e| ParseError(format!("pipeline[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Only an entropy step may follow a step whose file no other step reads, and it
        // comes last.
        let body = match parsed.last() {
            Some(Step::Entropy(_)) => &parsed[..parsed.len() - 1],
            _ => &parsed[..],
        };
        if let Some(i) = parsed[..parsed.len() - 1]
            .iter()
            .position(|s| matches!(s, Step::Entropy(_)))
        {
            return Err(ParseError(format!(
                "pipeline[{i}] (entropy) codes the finished file, so it must be the last step"
            )));
        }
        if let Some(i) = body[..body.len().saturating_sub(1)]
            .iter()
            .position(|s| !s.writes_dense())
        {
            return Err(ParseError(format!(
                "pipeline[{i}] ({}) writes a quantized or sparse file, so it must be the last step (or be followed only by entropy); put prune steps first",
                parsed[i].op()
            )));
        }
        Ok(Pipeline(parsed))
    }

    fn parse_step(value: &Value) -> Result<Step, ParseError> {
        let Value::Object(map) = value else {
            return Err(ParseError(
                "each step must be a JSON object with an \"op\" field".into(),
            ));
        };
        let op = match map.get("op") {
            Some(Value::String(op)) => op.as_str(),
            Some(_) => return Err(ParseError("\"op\" must be a string".into())),
            None => {
                return Err(ParseError(format!(
                    "missing \"op\"; supported ops: {SUPPORTED_OPS}"
                )))
            }
        };
        let mut fields = map.clone();
        fields.remove("op");
        let fields = Value::Object(fields);
        match op {
            "prune" => serde_json::from_value::<PruneStep>(fields)
                .map(Step::Prune)
                .map_err(|e| ParseError(format!("prune: {e}"))),
            "quantize" => serde_json::from_value::<QuantizeStep>(fields)
                .map(Step::Quantize)
                .map_err(|e| ParseError(format!("quantize: {e}"))),
            "export" => serde_json::from_value::<ExportStep>(fields)
                .map(Step::Export)
                .map_err(|e| ParseError(format!("export: {e}"))),
            "train" => serde_json::from_value::<TrainStep>(fields)
                .map(Step::Train)
                .map_err(|e| ParseError(format!("train: {e}"))),
            "finetune" => {
                if map.contains_key("init") {
                    return Err(ParseError(
                        "finetune: starts from the model's weights; init applies to train only"
                            .into(),
                    ));
                }
                serde_json::from_value::<TrainStep>(fields)
                    .map(Step::Finetune)
                    .map_err(|e| ParseError(format!("finetune: {e}")))
            }
            "evaluate" => serde_json::from_value::<EvaluateStep>(fields)
                .map_err(|e| ParseError(format!("evaluate: {e}")))
                .and_then(EvaluateStep::check)
                .map(Step::Evaluate),
            "auto" => serde_json::from_value::<AutoStep>(fields)
                .map(Step::Auto)
                .map_err(|e| ParseError(format!("auto: {e}"))),
            "qat" => serde_json::from_value::<QatStep>(fields)
                .map(Step::Qat)
                .map_err(|e| ParseError(format!("qat: {e}"))),
            "distill" => serde_json::from_value::<DistillStep>(fields)
                .map(Step::Distill)
                .map_err(|e| ParseError(format!("distill: {e}"))),
            "entropy" => serde_json::from_value::<EntropyStep>(fields)
                .map_err(|e| ParseError(format!("entropy: {e}")))
                .and_then(EntropyStep::check)
                .map(Step::Entropy),
            "sensitivity" => serde_json::from_value::<SensitivityStep>(fields)
                .map_err(|e| ParseError(format!("sensitivity: {e}")))
                .and_then(SensitivityStep::check)
                .map(Step::Sensitivity),
            other => Err(ParseError(format!(
                "unknown op '{other}'; supported ops: {SUPPORTED_OPS}"
            ))),
        }
    }

    pub fn steps(&self) -> &[Step] {
        &self.0
    }

    pub fn needs_architecture(&self) -> bool {
        self.0.iter().any(Step::needs_architecture)
    }

    pub fn needs_dataset(&self) -> bool {
        self.0.iter().any(Step::needs_dataset)
    }

    /// Whether some step computes gradients.
    pub fn trains(&self) -> bool {
        self.0.iter().any(|s| match s {
            Step::Train(_)
            | Step::Finetune(_)
            | Step::Distill(_)
            | Step::Qat(_)
            | Step::Auto(_) => true,
            Step::Prune(p) => p.needs_dataset(),
            _ => false,
        })
    }

    /// The largest batch any step runs the model with.
    pub fn largest_batch(&self) -> usize {
        self.0
            .iter()
            .map(|s| match s {
                Step::Train(t) | Step::Finetune(t) => t.batch_size,
                Step::Distill(d) => d.train.batch_size,
                Step::Qat(q) => q.train.batch_size,
                Step::Auto(a) => a.finetune.batch_size,
                Step::Evaluate(e) => e.batch_size,
                Step::Prune(p) => p.schedule.as_ref().map_or(64, |s| s.recipe().batch_size),
                _ => 0,
            })
            .max()
            .unwrap_or(0)
            .max(EvaluateStep::default().batch_size)
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a pipeline always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fills_defaults_and_round_trips() {
        let p =
            Pipeline::parse(&[json!({"op":"prune","method":"magnitude","sparsity":0.9})]).unwrap();
        assert_eq!(
            p.to_json(),
            json!([{"op":"prune","method":"magnitude","sparsity":0.9,"scope":"layer","store":"dense"}])
        );
        let back: Pipeline = serde_json::from_value(p.to_json()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn names_the_step_and_the_problem() {
        let err = Pipeline::parse(&[
            json!({"op":"prune","method":"magnitude","sparsity":0.5}),
            json!({"op":"quantise"}),
        ])
        .unwrap_err();
        assert!(
            err.0.starts_with("pipeline[1]: unknown op 'quantise'"),
            "{err}"
        );

        for (bad, needle) in [
            (
                json!({"op":"prune","method":"magnitude","sparsity":1.5}),
                "between 0 and 1",
            ),
            (
                json!({"op":"prune","method":"magnitude","threshold":-1.0}),
                "≥ 0",
            ),
            (json!({"op":"prune","method":"magnitude"}), "needs a target"),
            (
                json!({"op":"prune","method":"magnitude","sparsity":0.5,"threshold":0.1}),
                "not both",
            ),
            (
                json!({"op":"prune","method":"random","sparsity":0.5}),
                "unknown variant",
            ),
            (
                json!({"op":"prune","method":"magnitude","sparsity":0.5,"bogus":1}),
                "unknown field",
            ),
            (
                json!({"op":"prune","method":"magnitude","threshold":0.1,"scope":"global"}),
                "scope applies",
            ),
        ] {
            let err = Pipeline::parse(std::slice::from_ref(&bad)).unwrap_err();
            assert!(err.0.contains(needle), "{bad}: {err}");
        }
    }
}
