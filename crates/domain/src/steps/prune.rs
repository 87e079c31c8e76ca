//! `prune`: zero the least important weights, by magnitude against a threshold or to a
//! target sparsity (unstructured, N:M or whole filters), optionally scored by gradients and
//! reached over a schedule of prune + fine-tune rounds.

use serde::{Deserialize, Serialize};

use super::{Operation, StepNeeds};

use super::calibration::{Calibration, CalibrationWire};
use super::quantize::Storage;
use super::schedule::Schedule;
use crate::selection::{NamePattern, TensorSelection};
use crate::ParseError;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One threshold across all selected tensors.
    Global,
    /// Every selected tensor reaches the sparsity on its own.
    Layer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Wanda (Sun et al. 2023), for transformers: |w_ij| · ‖x_j‖₂ over the calibration split
    /// of a text dataset, compared within each output row; block by block.
    Wanda,
    /// SparseGPT (Frantar & Alistarh 2023), for transformers: the mask chosen by w² / [H⁻¹]_jj²
    /// on the calibration split's input Hessian, and the kept weights updated to make up for
    /// the pruned ones; block by block.
    Sparsegpt,
}

impl Criterion {
    /// Whether the criterion runs a transformer over calibration text.
    pub fn calibrates(self) -> bool {
        matches!(self, Criterion::Wanda | Criterion::Sparsegpt)
    }

    pub fn name(self) -> &'static str {
        match self {
            Criterion::Magnitude => "magnitude",
            Criterion::Taylor => "taylor",
            Criterion::Movement => "movement",
            Criterion::Wanda => "wanda",
            Criterion::Sparsegpt => "sparsegpt",
        }
    }
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
    /// What calibration criteria read of the text dataset.
    pub calibration: Calibration,
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

    /// Whether the step runs a transformer over calibration text.
    pub fn calibrates(&self) -> bool {
        self.criterion.calibrates()
    }
}

/// The JSON form of a `prune` step. Give exactly one of `threshold` or `sparsity`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PruneWire {
    /// `magnitude` (unstructured, default), `l1_filter` (structured) or `nm` (N:M).
    #[serde(default = "default_method")]
    pub method: PruneMethod,
    /// Importance score: `magnitude` (default), `taylor` or `movement` (sequential models,
    /// need a dataset), `wanda` or `sparsegpt` (transformers, need a text dataset with a
    /// calibration split).
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
    /// `wanda`, `sparsegpt`: calibration tokens read, their window, the Hessian's damping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationWire>,
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
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<String>>))]
    pub include: Option<Vec<NamePattern>>,
    /// Tensor-name patterns to leave untouched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
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
        if w.criterion.calibrates() {
            let name = w.criterion.name();
            if w.schedule.is_some() || w.method == PruneMethod::L1Filter {
                return Err(ParseError(format!(
                    "{name} prunes in one calibrated pass, unstructured or N:M: schedule and l1_filter do not apply"
                )));
            }
            if matches!(
                target,
                PruneTarget::Sparsity {
                    scope: Scope::Global,
                    ..
                }
            ) {
                return Err(ParseError(format!(
                    "{name} compares weights within each output row (their inputs differ by layer): use scope layer"
                )));
            }
        }
        if w.calibration.is_some() && !w.criterion.calibrates() {
            return Err(ParseError(
                "calibration applies to criteria wanda and sparsegpt only".into(),
            ));
        }
        let calibration = w
            .calibration
            .map(Calibration::try_from)
            .transpose()?
            .unwrap_or_default();
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
            selection: TensorSelection::new(w.include, w.exclude)?,
            store: w.store,
            criterion: w.criterion,
            schedule,
            batches,
            calibration,
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
        let calibrates = s.calibrates();
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
            batches: matches!(s.criterion, Criterion::Taylor | Criterion::Movement)
                .then_some(s.batches),
            calibration: calibrates.then(|| s.calibration.into()),
            threshold,
            sparsity,
            scope,
            include: s.selection.include,
            exclude: s.selection.exclude,
            store: s.store,
        }
    }
}

impl StepNeeds for PruneStep {
    fn writes_dense(&self) -> bool {
        self.store == Storage::Dense
    }
    fn needs_architecture(&self) -> bool {
        self.method == PruneMethod::L1Filter || self.needs_dataset()
    }
    fn needs_dataset(&self) -> bool {
        self.criterion != Criterion::Magnitude || self.schedule.is_some()
    }
    fn trains(&self) -> bool {
        self.needs_dataset() && !self.calibrates()
    }
    fn calibrates(&self) -> Option<&'static str> {
        self.criterion.calibrates().then(|| self.criterion.name())
    }
    fn batch_size(&self) -> usize {
        self.schedule.as_ref().map_or(64, |s| s.recipe().batch_size)
    }
    fn selects(&self) -> Option<super::Selects<'_>> {
        Some(super::Selects {
            selection: &self.selection,
            scheme: None,
        })
    }
}

impl Operation for PruneStep {
    const OP: &'static str = "prune";
}
