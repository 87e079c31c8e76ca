//! Pipeline steps that run the model: each loads the current weights, works in memory, and
//! writes the next file. Models that run are small next to the files the streaming steps are
//! built for, so holding one in memory is the simple and fast choice here.

use std::path::Path;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use serde_json::json;

use super::super::control::Control;
use super::super::quantize::{quantize_file, QuantizeReport};
use super::super::reader::read_dense;
use super::super::CompressError;
use super::data::Dataset;
use super::distill::Teacher;
use super::evaluate::{evaluate, quick_accuracy, EvalReport};
use super::fake_quant::FakeQuant;
use super::importance::{prune_nm, prune_to, score, solo_accuracy, sparsity_of};
use super::network::Network;
use super::structured::{l1_filter, StructuredReport};
use super::train::{masks_of, train, Masks, TrainContext, TrainReport};
use crate::domain::{
    Architecture, Criterion, DistillStep, EvaluateStep, Init, ParamRole, PruneMethod, PruneStep,
    PruneTarget, QatStep, Scope, SensitivityStep, Student, TensorSelection, TrainStep,
};

/// The architecture (which structured pruning may change) and dataset a job runs with.
pub struct ModelState {
    pub arch: Option<Architecture>,
    pub data: Option<Dataset>,
    pub data_label: String,
}

impl ModelState {
    fn arch(&self) -> Result<&Architecture, CompressError> {
        self.arch.as_ref().ok_or_else(|| {
            CompressError::InvalidRequest(
                "this step runs the model, and the model has no architecture; upload one with the model or PUT /v1/models/{id}/architecture".into(),
            )
        })
    }

    fn data(&self) -> Result<&Dataset, CompressError> {
        self.data.as_ref().ok_or_else(|| {
            CompressError::InvalidRequest(
                "this step needs a dataset: give dataset_id with the job".into(),
            )
        })
    }

    pub fn load(&self, path: &Path) -> Result<Network, CompressError> {
        Network::load(path, self.arch()?)
    }

    pub fn evaluate(
        &self,
        net: &Network,
        opts: &EvaluateStep,
    ) -> Result<EvalReport, CompressError> {
        let data = self.data()?;
        evaluate(net, &data.test, data.num_classes, opts, &self.data_label)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainStepReport {
    pub op: &'static str,
    #[serde(flatten)]
    pub train: TrainReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct CurvePoint {
    pub step: usize,
    pub target_sparsity: f64,
    /// Over the selected tensors.
    pub sparsity: f64,
    pub accuracy_after_prune: Option<f64>,
    /// After fine-tuning (equal to the above without fine-tuning).
    pub accuracy: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TensorDensity {
    pub name: String,
    pub parameters: u64,
    pub nonzero: u64,
    pub density: f64,
    /// Before the step.
    pub density_before: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelPruneReport {
    pub op: &'static str,
    pub method: PruneMethod,
    pub criterion: Criterion,
    /// Sparsity over the selected tensors before and after the step.
    pub sparsity_before: f64,
    pub sparsity_after: f64,
    pub curve: Vec<CurvePoint>,
    pub tensors: Vec<TensorDensity>,
    /// N:M: tensors whose row length is not a multiple of m, left alone.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub structured: Option<StructuredReport>,
    pub finetune: Vec<TrainReport>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvaluateStepReport {
    pub op: &'static str,
    #[serde(flatten)]
    pub report: EvalReport,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SensitivityPoint {
    pub sparsity: f64,
    pub accuracy: f64,
    /// Baseline accuracy minus this one.
    pub drop: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerSensitivity {
    pub tensor: String,
    pub parameters: u64,
    pub points: Vec<SensitivityPoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SensitivityReport {
    pub op: &'static str,
    pub data: String,
    pub baseline_accuracy: f64,
    pub layers: Vec<LayerSensitivity>,
    pub seconds: f64,
}

fn selected(net: &Network, selection: &TensorSelection) -> Result<Vec<String>, CompressError> {
    let names: Vec<String> = net
        .weight_names()
        .into_iter()
        .filter(|n| selection.selects(n, true))
        .collect();
    if names.is_empty() {
        return Err(CompressError::InvalidRequest(format!(
            "the step selects no linear or conv weight; the model's weights are {:?}",
            net.weight_names()
        )));
    }
    Ok(names)
}

fn densities(net: &Network, names: &[String]) -> Result<Vec<TensorDensity>, CompressError> {
    names
        .iter()
        .map(|n| {
            let v = net.values(n)?;
            let nonzero = v.iter().filter(|x| **x != 0.0).count() as u64;
            Ok(TensorDensity {
                name: n.clone(),
                parameters: v.len() as u64,
                nonzero,
                density: nonzero as f64 / v.len().max(1) as f64,
                density_before: 0.0,
            })
        })
        .collect()
}

pub fn train_step(
    state: &ModelState,
    input: &Path,
    output: &Path,
    recipe: &TrainStep,
    finetune: bool,
    index: usize,
    control: &Control,
) -> Result<TrainStepReport, CompressError> {
    let data = state.data()?;
    let net = if recipe.init == Init::Architecture {
        let mut rng = StdRng::seed_from_u64(recipe.seed);
        let mut fresh = Network::initialise(state.arch()?, &mut rng)?;
        fresh.metadata = state.load(input)?.metadata;
        fresh
    } else {
        state.load(input)?
    };
    let masks = if finetune {
        Some(masks_of(&net, &net.weight_names())?)
    } else {
        None
    };
    let op = if finetune { "finetune" } else { "train" };
    let ctx = TrainContext::on_labels(control, json!({"step": index, "op": op}));
    let report = train(&net, data, recipe, masks.as_ref(), None, &ctx)?;
    net.save(output)?;
    Ok(TrainStepReport { op, train: report })
}

/// Prune steps that need the model in memory: N:M, structured, gradient criteria, schedules.
pub fn prune_step(
    state: &mut ModelState,
    input: &Path,
    output: &Path,
    step: &PruneStep,
    index: usize,
    control: &Control,
) -> Result<ModelPruneReport, CompressError> {
    let started = Instant::now();
    let Some(arch) = &state.arch else {
        let (skipped, zeros, total) = super::nm_file(input, output, step)?;
        let sparsity = zeros as f64 / total.max(1) as f64;
        return Ok(ModelPruneReport {
            op: "prune",
            method: step.method,
            criterion: step.criterion,
            sparsity_before: 0.0,
            sparsity_after: sparsity,
            curve: Vec::new(),
            tensors: Vec::new(),
            skipped,
            structured: None,
            finetune: Vec::new(),
            seconds: started.elapsed().as_secs_f64(),
        });
    };
    let mut net = Network::load(input, arch)?;
    let names = selected(&net, &step.selection)?;
    let sparsity_before = sparsity_of(&net, &names)?;
    let before = densities(&net, &net.weight_names())?;
    let accuracy = |net: &Network| -> Result<Option<f64>, CompressError> {
        state
            .data
            .as_ref()
            .map(|d| quick_accuracy(net, &d.test, 512))
            .transpose()
    };
    let mut report = ModelPruneReport {
        op: "prune",
        method: step.method,
        criterion: step.criterion,
        sparsity_before,
        sparsity_after: sparsity_before,
        curve: Vec::new(),
        tensors: Vec::new(),
        skipped: Vec::new(),
        structured: None,
        finetune: Vec::new(),
        seconds: 0.0,
    };
    match (step.method, step.target) {
        (PruneMethod::L1Filter, PruneTarget::Sparsity { sparsity, .. }) => {
            report.structured = Some(l1_filter(&mut net, sparsity, &step.selection)?);
            state.arch = Some(net.arch.clone());
        }
        (PruneMethod::Nm, PruneTarget::NofM { n, m }) => {
            let scores = score(
                &net,
                state.data.as_ref(),
                &names,
                step.criterion,
                step.batches,
                None,
            )?;
            let (_, skipped) = prune_nm(&net, &scores, n, m)?;
            report.skipped = skipped;
            let acc = accuracy(&net)?;
            report.curve.push(CurvePoint {
                step: 1,
                target_sparsity: 1.0 - n as f64 / m as f64,
                sparsity: sparsity_of(&net, &names)?,
                accuracy_after_prune: acc,
                accuracy: acc,
            });
        }
        (_, PruneTarget::Sparsity { sparsity, scope }) => {
            iterate(
                state,
                &net,
                &names,
                step,
                sparsity.get(),
                scope,
                index,
                control,
                &mut report,
            )?;
        }
        (_, target) => {
            return Err(CompressError::InvalidRequest(format!(
                "prune target {target:?} does not apply to method {:?}",
                step.method
            )))
        }
    }
    report.sparsity_after = sparsity_of(
        &net,
        &net.weight_names()
            .into_iter()
            .filter(|n| step.selection.selects(n, true))
            .collect::<Vec<_>>(),
    )?;
    report.tensors = densities(&net, &net.weight_names())?;
    for t in &mut report.tensors {
        t.density_before = before
            .iter()
            .find(|b| b.name == t.name)
            .map_or(1.0, |b| b.density);
    }
    net.save(output)?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// One prune (no schedule) or `steps` rounds of prune → fine-tune along the ramp.
#[allow(clippy::too_many_arguments)]
fn iterate(
    state: &ModelState,
    net: &Network,
    names: &[String],
    step: &PruneStep,
    target: f64,
    scope: Scope,
    index: usize,
    control: &Control,
    report: &mut ModelPruneReport,
) -> Result<(), CompressError> {
    let start = report.sparsity_before.min(target);
    let rounds = step.schedule.as_ref().map_or(1, |s| s.steps);
    let mut movement: Option<Masks> = None;
    for t in 1..=rounds {
        control.checkpoint()?;
        let goal = match &step.schedule {
            Some(s) => s.target_at(t, start, target),
            None => target,
        };
        let scores = score(
            net,
            state.data.as_ref(),
            names,
            step.criterion,
            step.batches,
            movement.as_ref(),
        )?;
        let masks = prune_to(net, &scores, goal, scope)?;
        let after_prune = match &state.data {
            Some(d) => Some(quick_accuracy(net, &d.test, 512)?),
            None => None,
        };
        let mut accuracy = after_prune;
        if let Some(schedule) = &step.schedule {
            let recipe = schedule.recipe();
            if recipe.epochs > 0 {
                if step.criterion == Criterion::Movement {
                    movement = Some(
                        names
                            .iter()
                            .map(|n| {
                                Ok((
                                    n.clone(),
                                    net.tensor(n)
                                        .zeros_like()
                                        .map_err(super::network::nn_error)?,
                                ))
                            })
                            .collect::<Result<_, CompressError>>()?,
                    );
                }
                let ctx = TrainContext::on_labels(
                    control,
                    json!({"step": index, "op": "prune", "round": t, "rounds": rounds, "target_sparsity": goal}),
                );
                let mut recipe = recipe;
                recipe.seed = recipe.seed.wrapping_add(t as u64);
                let r = train(
                    net,
                    state.data()?,
                    &recipe,
                    Some(&masks),
                    movement.as_mut(),
                    &ctx,
                )?;
                accuracy = r.epochs.last().map(|e| e.eval_accuracy);
                report.finetune.push(r);
            }
        }
        let point = CurvePoint {
            step: t,
            target_sparsity: goal,
            sparsity: sparsity_of(net, names)?,
            accuracy_after_prune: after_prune,
            accuracy,
        };
        control.set_detail(json!({"step": index, "op": "prune", "round": t, "rounds": rounds, "sparsity": point.sparsity, "accuracy": accuracy}));
        report.curve.push(point);
    }
    Ok(())
}

pub fn evaluate_step(
    state: &ModelState,
    input: &Path,
    opts: &EvaluateStep,
) -> Result<EvaluateStepReport, CompressError> {
    let started = Instant::now();
    let net = state.load(input)?;
    let report = state.evaluate(&net, opts)?;
    Ok(EvaluateStepReport {
        op: "evaluate",
        report,
        seconds: started.elapsed().as_secs_f64(),
    })
}

pub fn sensitivity_step(
    state: &ModelState,
    input: &Path,
    step: &SensitivityStep,
    control: &Control,
) -> Result<SensitivityReport, CompressError> {
    let started = Instant::now();
    let net = state.load(input)?;
    let data = state.data()?;
    let names = selected(&net, &step.selection())?;
    let baseline = quick_accuracy(&net, &data.test, 512)?;
    control.add_work((names.len() * step.sparsities.len()) as u64);
    let mut layers = Vec::new();
    for name in &names {
        let original = net.values(name)?;
        let mut points = Vec::new();
        for &s in &step.sparsities {
            control.checkpoint()?;
            let accuracy = solo_accuracy(&net, name, &original, s, &data.test)?;
            points.push(SensitivityPoint {
                sparsity: s,
                accuracy,
                drop: baseline - accuracy,
            });
            control.advance(1);
        }
        layers.push(LayerSensitivity {
            tensor: name.clone(),
            parameters: original.len() as u64,
            points,
        });
    }
    Ok(SensitivityReport {
        op: "sensitivity",
        data: state.data_label.clone(),
        baseline_accuracy: baseline,
        layers,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelFigures {
    pub parameters: u64,
    /// On the evaluation split.
    pub accuracy: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DistillReport {
    pub op: &'static str,
    pub data: String,
    pub temperature: f64,
    pub alpha: f64,
    /// Matched layers whose outputs the student imitated, and the weight of that loss.
    pub features: Vec<crate::domain::FeaturePair>,
    pub beta: f64,
    pub teacher: ModelFigures,
    pub student: ModelFigures,
    pub student_architecture: serde_json::Value,
    /// The same student, same initialisation and budget, trained on the labels alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<ModelFigures>,
    /// Student accuracy minus baseline accuracy, in points (when there is a baseline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gain_points: Option<f64>,
    pub train: TrainReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_train: Option<TrainReport>,
    pub seconds: f64,
}

fn parameters(net: &Network) -> u64 {
    net.specs()
        .iter()
        .filter(|s| matches!(s.role, ParamRole::Weight | ParamRole::Bias))
        .map(|s| s.shape.iter().product::<usize>() as u64)
        .sum()
}

/// Trains a student against the job's model; the student becomes the job's model.
pub fn distill_step(
    state: &mut ModelState,
    input: &Path,
    output: &Path,
    step: &DistillStep,
    index: usize,
    control: &Control,
) -> Result<DistillReport, CompressError> {
    let started = Instant::now();
    let teacher = state.load(input)?;
    let data = state.data()?;
    let arch = match &step.student {
        Student::Given(a) => a.clone(),
        Student::Shrink(f) => teacher.arch.shrunk(*f).map_err(|e| {
            CompressError::InvalidRequest(format!("shrinking the teacher failed: {e}"))
        })?,
    };
    if arch.input_shape != teacher.arch.input_shape || arch.classes() != teacher.arch.classes() {
        return Err(CompressError::InvalidRequest(format!(
            "the student must take the teacher's input {:?} and give its {:?} classes",
            teacher.arch.input_shape,
            teacher.arch.classes()
        )));
    }
    arch.check_trainable()
        .map_err(CompressError::InvalidRequest)?;
    for p in &step.features {
        let shape = |a: &Architecture, name: &str| {
            a.layers
                .iter()
                .find(|l| l.name == name)
                .map(|l| l.output_shape.clone())
        };
        match (shape(&teacher.arch, &p.teacher), shape(&arch, &p.student)) {
            (Some(t), Some(s)) if t == s => {}
            (Some(t), Some(s)) => {
                return Err(CompressError::InvalidRequest(format!(
                    "feature pair teacher '{}' {t:?} / student '{}' {s:?}: the outputs must have the same shape",
                    p.teacher, p.student
                )))
            }
            _ => {
                return Err(CompressError::InvalidRequest(format!(
                    "feature pair teacher '{}' / student '{}': no such layer",
                    p.teacher, p.student
                )))
            }
        }
    }
    let fresh = |arch: &Architecture| {
        Network::initialise(arch, &mut StdRng::seed_from_u64(step.train.seed))
    };
    let figures = |net: &Network| -> Result<ModelFigures, CompressError> {
        Ok(ModelFigures {
            parameters: parameters(net),
            accuracy: quick_accuracy(net, &data.test, 512)?,
        })
    };
    let mut student = fresh(&arch)?;
    student.metadata = teacher.metadata.clone();
    let ctx = TrainContext {
        control,
        label: json!({"step": index, "op": "distill"}),
        teacher: Some(Teacher {
            net: &teacher,
            temperature: step.temperature,
            alpha: step.alpha,
            features: step
                .features
                .iter()
                .map(|p| (p.teacher.clone(), p.student.clone()))
                .collect(),
            beta: step.beta,
        }),
    };
    let train_report = train(&student, data, &step.train, None, None, &ctx)?;
    let (baseline, baseline_train) = if step.baseline {
        let alone = fresh(&arch)?;
        let ctx = TrainContext::on_labels(
            control,
            json!({"step": index, "op": "distill", "baseline": true}),
        );
        let r = train(&alone, data, &step.train, None, None, &ctx)?;
        (Some(figures(&alone)?), Some(r))
    } else {
        (None, None)
    };
    let student_figures = figures(&student)?;
    let teacher_figures = figures(&teacher)?;
    student.save(output)?;
    let data_label = state.data_label.clone();
    state.arch = Some(arch.clone());
    Ok(DistillReport {
        op: "distill",
        data: data_label,
        temperature: step.temperature,
        alpha: step.alpha,
        features: step.features.clone(),
        beta: step.beta,
        teacher: teacher_figures,
        gain_points: baseline
            .as_ref()
            .map(|b| 100.0 * (student_figures.accuracy - b.accuracy)),
        student: student_figures,
        student_architecture: arch.to_json(),
        baseline,
        train: train_report,
        baseline_train,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct QatReport {
    pub op: &'static str,
    pub data: String,
    /// Accuracy of the float model the step started from.
    pub accuracy_float: f64,
    /// The same scheme applied after training (post-training quantization).
    pub accuracy_ptq: f64,
    /// After quantization-aware fine-tuning, as stored.
    pub accuracy_qat: f64,
    /// QAT minus PTQ, in points.
    pub gain_points: f64,
    pub train: TrainReport,
    /// The quantized artifact the step wrote.
    pub quantize: QuantizeReport,
    pub seconds: f64,
}

/// Accuracy of a quantized file as it will be read: dequantized by compressd's reader.
fn quantized_accuracy(state: &ModelState, path: &Path) -> Result<f64, CompressError> {
    let arch = state.arch()?.clone();
    let net = Network::from_dense(
        arch,
        read_dense(path)?,
        Default::default(),
        Default::default(),
    )?;
    quick_accuracy(&net, &state.data()?.test, 512)
}

/// Post-training quantization for comparison, then fine-tuning with fake-quantized weights
/// (pruned zeros held), then the real quantization of the result into `output`.
#[allow(clippy::too_many_arguments)]
pub fn qat_step(
    state: &ModelState,
    input: &Path,
    output: &Path,
    dequantized: Option<&Path>,
    scratch: &Path,
    step: &QatStep,
    index: usize,
    control: &Control,
) -> Result<QatReport, CompressError> {
    let started = Instant::now();
    let mut net = state.load(input)?;
    let data = state.data()?;
    let accuracy_float = quick_accuracy(&net, &data.test, 512)?;
    let ptq = scratch.with_extension("ptq.safetensors");
    quantize_file(input, &ptq, None, &step.quantize, control)?;
    let accuracy_ptq = quantized_accuracy(state, &ptq);
    let _ = std::fs::remove_file(&ptq);
    let accuracy_ptq = accuracy_ptq?;
    let masks = masks_of(&net, &net.weight_names())?;
    net.fake_quant = FakeQuant::for_scheme(step.quantize.scheme, step.quantize.selection.clone());
    let ctx = TrainContext::on_labels(control, json!({"step": index, "op": "qat"}));
    let train_report = train(&net, data, &step.train, Some(&masks), None, &ctx)?;
    net.fake_quant = None;
    let trained = scratch.with_extension("trained.safetensors");
    net.save(&trained)?;
    let quantized = quantize_file(&trained, output, dequantized, &step.quantize, control);
    let _ = std::fs::remove_file(&trained);
    let quantize = quantized?;
    let accuracy_qat = quantized_accuracy(state, output)?;
    Ok(QatReport {
        op: "qat",
        data: state.data_label.clone(),
        accuracy_float,
        accuracy_ptq,
        accuracy_qat,
        gain_points: 100.0 * (accuracy_qat - accuracy_ptq),
        train: train_report,
        quantize,
        seconds: started.elapsed().as_secs_f64(),
    })
}
