//! Runs a pipeline: folds its steps, each reading the file the previous one wrote, and names
//! the files the run leaves for the caller to keep. What each step does is in `crate::steps`.

use std::path::{Path, PathBuf};

use crate::control::Control;
use crate::format::reader::read_dense;
use crate::nn::{EvalReport, ModelState, Network};
use crate::steps::{run_step, Format, OutputFile, StepContext, StepReport};
use crate::CompressError;
pub use domain::results::metrics::Evaluation;
pub use domain::results::metrics::Histogram;
use domain::results::Fidelity;
use domain::{EvaluateStep, Pipeline, Step};

pub struct PipelineRun {
    pub outputs: Vec<OutputFile>,
    pub steps: Vec<StepReport>,
    pub evaluation: Option<Evaluation>,
    /// A transformer's fidelity on the evaluation text, before and after.
    pub fidelity: Option<Fidelity>,
    /// Weight distributions before and after, for the layers that changed most.
    pub histograms: Vec<Histogram>,
}

/// Histograms are drawn for models up to this size (they read both files whole).
const HISTOGRAM_MAX_BYTES: u64 = 256 << 20;
const BINS: usize = 40;

fn histograms(input: &Path, result: &Path) -> Vec<Histogram> {
    let small = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.len() <= HISTOGRAM_MAX_BYTES);
    if !(small(input) && small(result)) {
        return Vec::new();
    }
    let (Ok(before), Ok(after)) = (read_dense(input), read_dense(result)) else {
        return Vec::new();
    };
    let mut changed: Vec<(f64, &String)> = before
        .iter()
        .filter(|(_, (shape, _))| shape.len() >= 2)
        .filter_map(|(name, (_, b))| {
            let (_, a) = after.get(name)?;
            let zeros =
                |v: &[f32]| v.iter().filter(|x| **x == 0.0).count() as f64 / v.len().max(1) as f64;
            let moved = if a.len() == b.len() {
                let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
                let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
                (d / n.max(1e-30)).sqrt()
            } else {
                1.0
            };
            Some(((zeros(a) - zeros(b)).abs() + moved, name))
        })
        .collect();
    changed.sort_by(|x, y| y.0.total_cmp(&x.0));
    changed
        .into_iter()
        .take(3)
        .map(|(_, name)| {
            let (b, a) = (&before[name].1, &after[name].1);
            let nonzero = |v: &[f32]| v.iter().copied().filter(|x| *x != 0.0).collect::<Vec<_>>();
            let (nb, na) = (nonzero(b), nonzero(a));
            let low = nb.iter().chain(&na).copied().fold(f32::MAX, f32::min);
            let high = nb.iter().chain(&na).copied().fold(f32::MIN, f32::max);
            let (low, high) = if low < high { (low, high) } else { (-1.0, 1.0) };
            let count = |v: &[f32]| {
                let mut c = vec![0u64; BINS];
                for x in v {
                    let i = (((x - low) / (high - low)) * BINS as f32) as usize;
                    c[i.min(BINS - 1)] += 1;
                }
                c
            };
            Histogram {
                tensor: name.clone(),
                low,
                high,
                before: count(&nb),
                after: count(&na),
                zeros_before: (b.len() - nb.len()) as u64,
                zeros_after: (a.len() - na.len()) as u64,
            }
        })
        .collect()
}

/// Runs every step in order. The model file at `input` is only ever read: a pipeline whose
/// steps write nothing (only `evaluate` or `sensitivity`) leaves no model output.
pub fn run_pipeline(
    input: &Path,
    workdir: &Path,
    pipeline: &Pipeline,
    model_name: &str,
    state: &mut ModelState,
    control: &Control,
) -> Result<PipelineRun, CompressError> {
    let count = pipeline.steps().len();
    let mut before = if state.measured() {
        Some(state.evaluate(&state.load(input)?, &EvaluateStep::default())?)
    } else {
        None
    };
    let mut current: Option<PathBuf> = None;
    let mut format = Format::dense();
    let mut reports = Vec::with_capacity(count);
    let mut outputs = Vec::new();
    // The dense weights the final model dequantizes to, when a step writes another format.
    let mut dense_twin: Option<PathBuf> = None;
    let mut initial = None;
    let mut compressed = false;
    for (index, step) in pipeline.steps().iter().enumerate() {
        control.begin_step(index, count);
        // A transformer's weight-only steps take its blocks' linear layers by default.
        let step: Step = match &state.transformer {
            Some(t) => step.map_selection(|s| t.selection(s)),
            None => step.clone(),
        };
        let step = &step;
        if step.needs().compresses() && !compressed {
            compressed = true;
            if let (Some(trained), Some(_)) = (&current, &before) {
                let baseline = state.evaluate(&state.load(trained)?, &EvaluateStep::default())?;
                initial = before.replace(baseline);
            }
        }
        let mut cx = StepContext {
            input: current.as_deref().unwrap_or(input),
            input_format: &format,
            workdir,
            index,
            model_name,
            state: &mut *state,
            control,
        };
        let started = std::time::Instant::now();
        // A span per step: with traces on, each step is a span of the job's trace.
        let span = tracing::info_span!("step", index = index + 1, op = step.op());
        let out = span.in_scope(|| {
            tracing::info!("step {}/{count} {} started", index + 1, step.op());
            let out = run_step(step, &mut cx)?;
            tracing::info!(
                "step {}/{count} {} finished in {:.2} s",
                index + 1,
                step.op(),
                started.elapsed().as_secs_f64()
            );
            Ok::<_, CompressError>(out)
        })?;
        if let Some(file) = out.file {
            if let Some(previous) = current.replace(file) {
                let _ = std::fs::remove_file(previous);
            }
        }
        format = out.format;
        outputs.extend(out.extra);
        if out.dense_twin.is_some() {
            dense_twin = out.dense_twin;
        }
        reports.push(out.report);
    }
    let last = current.as_deref().unwrap_or(input);
    let evaluation = match before {
        Some(before) => {
            let mut e = evaluate_after(state, &format, last, dense_twin.as_deref(), before)?;
            e.initial = initial;
            Some(e)
        }
        None => None,
    };
    outputs.extend(architecture_output(state, workdir)?);
    control.begin_step(count, count);
    let fidelity = match &current {
        Some(result) if compressed && state.measured_text() => {
            Some(crate::transformer::fidelity::before_after(
                state,
                input,
                result,
                &format,
                &text_protocol(pipeline),
                workdir,
                control,
            )?)
        }
        _ => None,
    };
    let histograms = match &current {
        Some(result) if format.dense_readable => histograms(input, result),
        _ => Vec::new(),
    };
    if let Some(path) = current {
        outputs.insert(
            0,
            OutputFile {
                kind: "model",
                path,
                format,
            },
        );
    }
    Ok(PipelineRun {
        outputs,
        steps: reports,
        evaluation,
        fidelity,
        histograms,
    })
}

/// The protocol of the pipeline's last `evaluate` step, or the default one.
fn text_protocol(pipeline: &Pipeline) -> domain::steps::evaluate::TextProtocol {
    pipeline
        .steps()
        .iter()
        .rev()
        .find_map(|s| match s {
            Step::Evaluate(e) => Some(e.text_protocol()),
            _ => None,
        })
        .unwrap_or_default()
}

fn evaluate_after(
    state: &ModelState,
    format: &Format,
    current: &Path,
    dense_twin: Option<&Path>,
    before: EvalReport,
) -> Result<Evaluation, CompressError> {
    if !format.dense_readable {
        return Ok(Evaluation {
            before,
            initial: None,
            after: None,
            after_note: Some("GGUF files are measured by the tools that read them; add an evaluate step before export".into()),
        });
    }
    let source = dense_twin.unwrap_or(current);
    let arch = state
        .arch
        .clone()
        .expect("measured runs have an architecture");
    let net = Network::from_dense(
        arch,
        read_dense(source)?,
        Default::default(),
        Default::default(),
    )?;
    let after = state.evaluate(&net, &EvaluateStep::default())?;
    if let Some(twin) = dense_twin {
        let _ = std::fs::remove_file(twin);
    }
    Ok(Evaluation {
        before,
        initial: None,
        after: Some(after),
        after_note: None,
    })
}

/// The architecture after every step (structured pruning, distillation and auto may change
/// it), as a file beside the model.
fn architecture_output(
    state: &ModelState,
    workdir: &Path,
) -> Result<Option<OutputFile>, CompressError> {
    let Some(arch) = &state.arch else {
        return Ok(None);
    };
    let path = workdir.join("architecture.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&arch.to_json()).map_err(std::io::Error::other)?,
    )?;
    Ok(Some(OutputFile {
        kind: "architecture",
        path,
        format: Format {
            description: "compressd architecture JSON (the model's layers after every step)".into(),
            read_with: &["compressd (POST /v1/models with an architecture part)"],
            suffix: ".architecture.json".into(),
            dense_readable: false,
        },
    }))
}
