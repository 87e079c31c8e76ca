//! Which charts a job's metrics make: pruning curves, density per layer, sensitivity scans,
//! auto's trials and frontier, weight histograms, confusion matrices.

use crate::domain::results::{Histogram, JobMetrics, StepReport};

use super::plots::{bars, heatmap, lines};
use super::Chart;

pub(super) fn charts(metrics: &JobMetrics) -> Result<Vec<Chart>, String> {
    let mut out = Vec::new();
    for (i, step) in metrics.steps.iter().enumerate() {
        step_charts(i, step, &mut out)?;
    }
    for h in &metrics.histograms {
        out.push(histogram(h)?);
    }
    if let Some(e) = &metrics.evaluation {
        let measured = [("before", Some(&e.before)), ("after", e.after.as_ref())];
        for (when, report) in measured {
            if let Some(r) = report.filter(|r| !r.confusion_matrix.is_empty()) {
                out.push((
                    format!("confusion-{when}"),
                    heatmap(&format!("Confusion matrix, {when}"), &r.confusion_matrix)?,
                ));
            }
        }
    }
    Ok(out)
}

fn step_charts(i: usize, step: &StepReport, out: &mut Vec<Chart>) -> Result<(), String> {
    match step {
        StepReport::ModelPrune(p) => {
            let pts: Vec<(f64, f64)> = p
                .curve
                .iter()
                .filter_map(|c| Some((c.sparsity, c.accuracy?)))
                .collect();
            let cut: Vec<(f64, f64)> = p
                .curve
                .iter()
                .filter_map(|c| Some((c.sparsity, c.accuracy_after_prune?)))
                .collect();
            if !pts.is_empty() {
                let svg = lines(
                    "Accuracy vs sparsity",
                    "sparsity (fraction of zero weights)",
                    "accuracy",
                    &[
                        ("after fine-tuning".into(), pts),
                        ("right after pruning".into(), cut),
                    ],
                )?;
                out.push((format!("step{i}-accuracy-vs-sparsity"), svg));
            }
            let densities = p
                .tensors
                .iter()
                .map(|t| (t.name.clone(), t.density_before, t.density));
            density_chart(i, densities.collect(), out)
        }
        StepReport::Quantize(q) => {
            let errors: Vec<(String, f64)> = q
                .tensors
                .iter()
                .filter_map(|t| Some((t.name.clone(), relative_error(t.error.as_ref()?))))
                .collect();
            error_chart(i, errors, &WEIGHT_ERROR, out)?;
            reconstruction_chart(i, &q.layers, out)
        }
        StepReport::Export(e) => {
            let errors: Vec<(String, f64)> = e
                .tensors
                .iter()
                .filter_map(|t| Some((t.name.clone(), relative_error(t.error.as_ref()?))))
                .collect();
            error_chart(i, errors, &WEIGHT_ERROR, out)
        }
        StepReport::Prune(p) => {
            let densities = p
                .tensors
                .iter()
                .map(|t| (t.name.clone(), t.density_before, t.density_after));
            density_chart(i, densities.collect(), out)?;
            reconstruction_chart(i, &p.layers, out)
        }
        StepReport::Sensitivity(s) => {
            let series = s
                .layers
                .iter()
                .map(|l| {
                    let pts = l.points.iter().map(|p| (p.sparsity, p.accuracy)).collect();
                    (l.tensor.clone(), pts)
                })
                .collect();
            sensitivity_chart(i, "accuracy", series, out)
        }
        StepReport::Auto(a) => {
            let series = a
                .sensitivity
                .iter()
                .map(|(tensor, pts)| (tensor.clone(), pts.iter().map(|p| (p.0, -p.1)).collect()))
                .collect();
            sensitivity_chart(i, "accuracy change (alone)", series, out)?;
            if a.trials.is_empty() {
                return Ok(());
            }
            let point = |t: &crate::domain::results::auto::Trial| {
                (t.bytes as f64 / 1024.0, t.validation_accuracy)
            };
            let all = a.trials.iter().map(point).collect();
            let mut front: Vec<(f64, f64)> = a
                .trials
                .iter()
                .filter(|t| t.on_frontier)
                .map(point)
                .collect();
            front.sort_by(|a, b| a.0.total_cmp(&b.0));
            out.push((
                format!("step{i}-pareto-frontier"),
                lines(
                    "Trials and Pareto frontier",
                    "artifact size (KiB)",
                    "validation accuracy",
                    &[("frontier".into(), front), ("every trial".into(), all)],
                )?,
            ));
            Ok(())
        }
        _ => Ok(()),
    }
}

/// ‖W − Ŵ‖ / ‖W‖ from a tensor's signal-to-noise ratio (exact tensors are 0).
fn relative_error(e: &crate::domain::results::tensors::ErrorStats) -> f64 {
    if e.sqnr_db.is_finite() {
        10f64.powf(-e.sqnr_db / 20.0)
    } else {
        0.0
    }
}

/// What an error chart shows: its title, its axis and the chart's id suffix.
struct ErrorKind {
    title: &'static str,
    axis: &'static str,
    id: &'static str,
}

/// The relative weight error of each layer a step quantized, beside the fidelity figures of
/// the summary: where the error went.
const WEIGHT_ERROR: ErrorKind = ErrorKind {
    title: "Relative weight error per layer",
    axis: "‖W − Ŵ‖ / ‖W‖",
    id: "error",
};

/// How far each layer a calibrated method rewrote moved its outputs on the calibration inputs.
const OUTPUT_ERROR: ErrorKind = ErrorKind {
    title: "Output error per layer on the calibration text",
    axis: "‖XWᵀ − XŴᵀ‖² / ‖XWᵀ‖²",
    id: "reconstruction",
};

fn reconstruction_chart(
    i: usize,
    layers: &[crate::domain::results::prune::LayerReconstruction],
    out: &mut Vec<Chart>,
) -> Result<(), String> {
    let errors = layers
        .iter()
        .map(|l| (l.name.clone(), l.reconstruction_error))
        .collect();
    error_chart(i, errors, &OUTPUT_ERROR, out)
}

fn error_chart(
    i: usize,
    mut errors: Vec<(String, f64)>,
    kind: &ErrorKind,
    out: &mut Vec<Chart>,
) -> Result<(), String> {
    if errors.is_empty() {
        return Ok(());
    }
    let all = errors.len();
    let title = if all > MAX_BARS {
        errors.sort_by(|a, b| b.1.total_cmp(&a.1));
        errors.truncate(MAX_BARS);
        format!("{} ({MAX_BARS} of {all} with the most)", kind.title)
    } else {
        kind.title.to_owned()
    };
    let names: Vec<String> = errors.iter().map(|e| e.0.clone()).collect();
    let values = errors.iter().map(|e| e.1).collect();
    let svg = bars(&title, kind.axis, &names, &[("error", values)])?;
    out.push((format!("step{i}-{}", kind.id), svg));
    Ok(())
}

/// Bars for this many layers at most; a larger model shows the ones that changed most (the
/// metrics keep every tensor).
const MAX_BARS: usize = 64;

/// (tensor, density before, density after) as grouped bars.
fn density_chart(
    i: usize,
    mut tensors: Vec<(String, f64, f64)>,
    out: &mut Vec<Chart>,
) -> Result<(), String> {
    if tensors.is_empty() {
        return Ok(());
    }
    let all = tensors.len();
    let title = if all > MAX_BARS {
        tensors.sort_by(|a, b| (b.1 - b.2).abs().total_cmp(&(a.1 - a.2).abs()));
        tensors.truncate(MAX_BARS);
        format!("Density per layer ({MAX_BARS} of {all} that changed most)")
    } else {
        "Density per layer".to_owned()
    };
    let names: Vec<String> = tensors.iter().map(|t| t.0.clone()).collect();
    let before = tensors.iter().map(|t| t.1).collect();
    let after = tensors.iter().map(|t| t.2).collect();
    let svg = bars(
        &title,
        "density (non-zeros / weights)",
        &names,
        &[("before", before), ("after", after)],
    )?;
    out.push((format!("step{i}-density"), svg));
    Ok(())
}

fn sensitivity_chart(
    i: usize,
    y: &str,
    series: Vec<(String, Vec<(f64, f64)>)>,
    out: &mut Vec<Chart>,
) -> Result<(), String> {
    if series.is_empty() {
        return Ok(());
    }
    out.push((
        format!("step{i}-sensitivity"),
        lines(
            "Per-layer sensitivity to pruning",
            "sparsity of that layer alone",
            y,
            &series,
        )?,
    ));
    Ok(())
}

fn histogram(h: &Histogram) -> Result<Chart, String> {
    let (low, high) = (h.low as f64, h.high as f64);
    let series = |counts: &[u64]| -> Vec<(f64, f64)> {
        let width = (high - low) / counts.len().max(1) as f64;
        counts
            .iter()
            .enumerate()
            .map(|(i, c)| (low + (i as f64 + 0.5) * width, *c as f64))
            .collect()
    };
    let name = &h.tensor;
    Ok((
        format!(
            "histogram-{}",
            name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        ),
        lines(
            &format!("Weights of {name}, before and after"),
            "weight value",
            "count",
            &[
                (
                    format!("before ({} zeros not shown)", h.zeros_before),
                    series(&h.before),
                ),
                (
                    format!("after ({} zeros not shown)", h.zeros_after),
                    series(&h.after),
                ),
            ],
        )?,
    ))
}
