//! `distill`: a student trained to imitate the job's model (Hinton et al. 2015, optionally
//! with intermediate features); the student becomes the job's model.

use domain::results::ProgressDetail;
use std::path::Path;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::control::Control;
use crate::nn::distill::Teacher;
use crate::nn::evaluate::quick_accuracy;
use crate::nn::network::Network;
use crate::nn::train::{train, TrainContext};
use crate::nn::ModelState;
use crate::steps::{Format, StepContext, StepOutput, StepReport};
use crate::CompressError;
pub use domain::results::distill::DistillReport;
pub use domain::results::distill::ModelFigures;
use domain::{Architecture, DistillStep, ParamRole, Student};

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
    let arch = student_architecture(&teacher.arch, step)?;
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
        label: ProgressDetail::step(index, "distill"),
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
            ProgressDetail {
                baseline: Some(true),
                ..ProgressDetail::step(index, "distill")
            },
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

pub fn run(step: &DistillStep, cx: &mut StepContext) -> Result<StepOutput, CompressError> {
    let output = cx.output("safetensors");
    let report = distill_step(cx.state, cx.input, &output, step, cx.index, cx.control)?;
    Ok(StepOutput::wrote(
        output,
        Format::dense(),
        StepReport::Distill(report),
    ))
}

/// The student's architecture (given, or the teacher shrunk), checked against the teacher:
/// same input, same classes, trainable, and every feature pair naming layers whose outputs
/// have the same shape.
fn student_architecture(
    teacher: &Architecture,
    step: &DistillStep,
) -> Result<Architecture, CompressError> {
    let arch = match &step.student {
        Student::Given(a) => a.clone(),
        Student::Shrink(f) => teacher.shrunk(*f).map_err(|e| {
            CompressError::InvalidRequest(format!("shrinking the teacher failed: {e}"))
        })?,
    };
    if arch.input_shape != teacher.input_shape || arch.classes() != teacher.classes() {
        return Err(CompressError::InvalidRequest(format!(
            "the student must take the teacher's input {:?} and give its {:?} classes",
            teacher.input_shape,
            teacher.classes()
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
        match (shape(teacher, &p.teacher), shape(&arch, &p.student)) {
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
    Ok(arch)
}
