//! A job's metrics: the before/after evaluation, weight histograms, and every step's report.

use serde::Serialize;

use super::auto::AutoReport;
use super::distill::{DistillReport, QatReport};
use super::model::{EvalReport, EvaluateStepReport, SensitivityReport, TrainStepReport};
use super::prune::{ModelPruneReport, PruneReport};
use super::quantize::{EntropyReport, GgufReport, QuantizeReport};

/// The model measured on the evaluation split before the first step and after the last.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Evaluation {
    /// The baseline: the model as it was before the first compressing step.
    pub before: EvalReport,
    /// The model as uploaded, when training steps ran before the first compressing step (so
    /// it differs from the baseline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial: Option<EvalReport>,
    pub after: Option<EvalReport>,
    /// Why `after` is missing, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_note: Option<String>,
}

/// Counts of non-zero weights in equal bins; zeros are counted apart (pruning piles them up).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Histogram {
    pub tensor: String,
    pub low: f32,
    pub high: f32,
    pub before: Vec<u64>,
    pub after: Vec<u64>,
    pub zeros_before: u64,
    pub zeros_after: u64,
}

/// What a step did, in its own terms.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum StepReport {
    Prune(PruneReport),
    Quantize(QuantizeReport),
    Export(GgufReport),
    ModelPrune(ModelPruneReport),
    Train(TrainStepReport),
    Evaluate(EvaluateStepReport),
    Sensitivity(SensitivityReport),
    Entropy(EntropyReport),
    Distill(DistillReport),
    Qat(QatReport),
    Auto(AutoReport),
    TextEvaluate(TextEvaluateReport),
}

/// `evaluate` on a transformer: its fidelity figures on the evaluation text.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TextEvaluateReport {
    pub op: &'static str,
    pub fidelity: super::fidelity::Fidelity,
    pub seconds: f64,
}

impl StepReport {
    pub fn seconds(&self) -> f64 {
        match self {
            StepReport::Prune(p) => p.seconds,
            StepReport::Quantize(q) => q.seconds,
            StepReport::Export(e) => e.seconds,
            StepReport::ModelPrune(p) => p.seconds,
            StepReport::Train(t) => t.train.seconds,
            StepReport::Evaluate(e) => e.seconds,
            StepReport::Sensitivity(s) => s.seconds,
            StepReport::Entropy(e) => e.seconds,
            StepReport::Distill(d) => d.seconds,
            StepReport::Qat(q) => q.seconds,
            StepReport::Auto(a) => a.seconds,
            StepReport::TextEvaluate(t) => t.seconds,
        }
    }
}

/// Before and after for the whole pipeline. Pruning figures appear when a streamed prune step
/// ran; accuracy figures when the model was evaluated (it has an architecture and the job a
/// dataset).
#[derive(Debug, Clone, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Summary {
    pub file_bytes_before: u64,
    pub file_bytes_after: u64,
    /// file_bytes_before / file_bytes_after.
    pub compression_ratio: f64,
    /// The steps' time, added up.
    pub seconds: f64,
    pub input_gb_per_second: f64,
    /// Parameters in the model (streamed prune steps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonzero_before: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonzero_after: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub density_before: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub density_after: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparsity_before: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparsity_after: Option<f64>,
    /// The model as uploaded, when the pipeline trained it before compressing it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_initial: Option<f64>,
    /// The baseline: the model before the first compressing step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_before: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f1_macro_before: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub macs_before: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_after: Option<f64>,
    /// accuracy_before − accuracy_after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_drop: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f1_macro_after: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub macs_after: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters_after: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonzero_parameters_after: Option<u64>,
    /// Throughput after / throughput before, at the evaluation's batch size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_throughput_speedup: Option<f64>,
    /// Transformer decoders: perplexity on the evaluation text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perplexity_before: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perplexity_after: Option<f64>,
    /// Mean KL(original ‖ result) per next-token prediction, in nats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kl_mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top1_agreement: Option<f64>,
    /// Transformer encoders: mean cosine of each sentence's embedding to the original's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_cosine_mean: Option<f64>,
}

/// Everything a finished job measured.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobMetrics {
    /// What a step only partly did (tensors it had to leave as they were), shown first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub summary: Summary,
    /// Null when the model was not evaluated.
    pub evaluation: Option<Evaluation>,
    /// A transformer's fidelity on the evaluation text, before and after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fidelity: Option<super::fidelity::Fidelity>,
    /// Weight distributions before and after, for the layers that changed most
    /// (`GET /v1/jobs/{id}?view=full` only).
    #[cfg_attr(feature = "openapi", schema(required = false))]
    pub histograms: Vec<Histogram>,
    /// Every step's report, in pipeline order (`GET /v1/jobs/{id}?view=full` only).
    #[cfg_attr(feature = "openapi", schema(required = false))]
    pub steps: Vec<StepReport>,
}

impl JobMetrics {
    pub fn new(
        file_bytes_before: u64,
        file_bytes_after: u64,
        evaluation: Option<Evaluation>,
        histograms: Vec<Histogram>,
        steps: Vec<StepReport>,
    ) -> JobMetrics {
        let seconds: f64 = steps.iter().map(StepReport::seconds).sum();
        let mut summary = Summary {
            file_bytes_before,
            file_bytes_after,
            compression_ratio: file_bytes_before as f64 / file_bytes_after.max(1) as f64,
            seconds,
            input_gb_per_second: if seconds > 0.0 {
                file_bytes_before as f64 / 1e9 / seconds
            } else {
                0.0
            },
            ..Summary::default()
        };
        let prunes: Vec<&PruneReport> = steps
            .iter()
            .filter_map(|s| match s {
                StepReport::Prune(p) => Some(p),
                _ => None,
            })
            .collect();
        if let (Some(first), Some(last)) = (prunes.first(), prunes.last()) {
            summary.parameters = Some(first.model.parameters);
            summary.nonzero_before = Some(first.model.nonzero_before);
            summary.nonzero_after = Some(last.model.nonzero_after);
            summary.density_before = Some(first.model.density_before);
            summary.density_after = Some(last.model.density_after);
            summary.sparsity_before = Some(first.model.sparsity_before);
            summary.sparsity_after = Some(last.model.sparsity_after);
        }
        if let Some(e) = &evaluation {
            summary.add_evaluation(e);
        }
        let warnings = steps
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.warnings(i))
            .collect();
        JobMetrics {
            warnings,
            summary,
            evaluation,
            fidelity: None,
            histograms,
            steps,
        }
    }
}

impl JobMetrics {
    /// Adds a transformer's fidelity, and its headline figures to the summary.
    pub fn with_fidelity(mut self, fidelity: Option<super::fidelity::Fidelity>) -> JobMetrics {
        if let Some(f) = &fidelity {
            self.summary.perplexity_before = f.before.perplexity;
            self.summary.perplexity_after = f.after.as_ref().and_then(|a| a.perplexity);
            if let Some(v) = &f.versus_before {
                self.summary.kl_mean = v.kl_mean;
                self.summary.top1_agreement = v.top1_agreement;
                self.summary.embedding_cosine_mean = v.cosine_mean;
            }
        }
        self.fidelity = fidelity;
        self
    }
}

impl Summary {
    fn add_evaluation(&mut self, e: &Evaluation) {
        self.accuracy_initial = e.initial.as_ref().map(|i| i.accuracy);
        self.accuracy_before = Some(e.before.accuracy);
        self.f1_macro_before = Some(e.before.f1_macro);
        self.macs_before = Some(e.before.cost.macs_nonzero);
        if let Some(after) = &e.after {
            self.accuracy_after = Some(after.accuracy);
            self.accuracy_drop = Some(e.before.accuracy - after.accuracy);
            self.f1_macro_after = Some(after.f1_macro);
            self.macs_after = Some(after.cost.macs_nonzero);
            self.parameters_after = Some(after.cost.parameters);
            self.nonzero_parameters_after = Some(after.cost.nonzero_parameters);
            self.batch_throughput_speedup = Some(
                after.speed.throughput_samples_per_second
                    / e.before.speed.throughput_samples_per_second.max(1e-12),
            );
        }
    }
}

impl StepReport {
    /// What step `index` had to leave undone, in words.
    pub fn warnings(&self, index: usize) -> Vec<String> {
        match self {
            StepReport::Export(e) => {
                let misfits: Vec<&String> = e
                    .kept_tensors
                    .iter()
                    .filter(|k| k.contains("not a multiple"))
                    .collect();
                if misfits.is_empty() {
                    return Vec::new();
                }
                vec![format!(
                    "step {index} (export): {} of {} tensors could not take the block type and were kept in float: {}",
                    misfits.len(),
                    e.tensors.len(),
                    misfits.iter().take(5).map(|s| s.as_str()).collect::<Vec<_>>().join("; ")
                )]
            }
            StepReport::ModelPrune(p) if !p.skipped.is_empty() => vec![format!(
                "step {index} (prune): {} tensors were left unpruned because their rows do not split into groups of m: {}",
                p.skipped.len(),
                p.skipped.iter().take(5).map(String::as_str).collect::<Vec<_>>().join(", ")
            )],
            _ => Vec::new(),
        }
    }
}
