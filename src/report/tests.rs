//! The report page's defects found by trying the walk-through, each pinned down.

use crate::domain::results::model::{Cost, EvalReport, Speed};
use crate::domain::results::quantize::QuantizeReport;
use crate::domain::results::tensors::ErrorStats;
use crate::domain::results::{Evaluation, JobMetrics, StepReport};
use crate::domain::Storage;

use super::plots::heatmap;
use super::render;
use super::summary::{summary_rows, Row};

fn row<'a>(rows: &'a [Row], label: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.0 == label)
        .unwrap_or_else(|| panic!("no row '{label}' in {rows:?}"))
}

fn eval(accuracy: f64) -> EvalReport {
    EvalReport {
        data: "evaluation split".into(),
        samples: 100,
        accuracy,
        precision_macro: accuracy,
        recall_macro: accuracy,
        f1_macro: accuracy,
        mean_loss: 0.1,
        per_class: Vec::new(),
        confusion_matrix: vec![vec![1, 0], vec![0, 1]],
        cost: Cost {
            parameters: 10,
            nonzero_parameters: 10,
            macs_dense: 10,
            macs_nonzero: 10,
        },
        speed: Speed {
            latency_ms_batch1: 0.1,
            throughput_batch: 1,
            throughput_samples_per_second: 1.0,
            runs: 1,
            threads: 1,
        },
    }
}

fn quantize_report() -> QuantizeReport {
    QuantizeReport {
        op: "quantize",
        scheme: serde_json::json!({"scheme": "int8"}),
        store: Storage::Dense,
        quantized_tensors: 1,
        parameters: 1000,
        bytes_before: 4000,
        bytes_after: 1100,
        bits_per_weight: 8.0,
        compression_ratio: 3.64,
        error: ErrorStats {
            mse: 0.0,
            max_abs_error: 0.0,
            sqnr_db: 41.25,
            cosine_similarity: 1.0,
        },
        file_bytes_before: 4000,
        file_bytes_after: 1100,
        dequantized_file_bytes: None,
        tensors: Vec::new(),
        seconds: 0.1,
        calibration: None,
        layers: Vec::new(),
        scaled: Vec::new(),
    }
}

#[test]
fn a_prune_only_job_shows_its_parameters_and_non_zeros() {
    let mut metrics = JobMetrics::new(4000, 4000, None, Vec::new(), Vec::new());
    metrics.summary.parameters = Some(1000);
    metrics.summary.nonzero_before = Some(1000);
    metrics.summary.nonzero_after = Some(100);
    let rows = summary_rows(&metrics);
    assert_eq!(row(&rows, "parameters").1, "1000");
    let nonzero = row(&rows, "non-zero parameters");
    assert_eq!((nonzero.1.as_str(), nonzero.2.as_str()), ("1000", "100"));
}

#[test]
fn a_quantize_step_appears_with_its_bits_error_and_ratio() {
    let steps = vec![StepReport::Quantize(quantize_report())];
    let metrics = JobMetrics::new(4000, 1100, None, Vec::new(), steps);
    let rows = summary_rows(&metrics);
    assert_eq!(
        row(&rows, "bits per quantized weight (step 0, quantize)").2,
        "8.00"
    );
    assert_eq!(row(&rows, "SQNR, dB (step 0, quantize)").2, "41.2");
    assert_eq!(
        row(&rows, "compression ratio (step 0, quantize)").2,
        "3.64×"
    );
    let (html, _) = render("job", &metrics).unwrap();
    assert!(html.contains("bits per quantized weight"), "{html}");
}

/// The y-axis labels of a 3-class matrix are 0, 1, 2 (no 3), with class 0 at the top, where
/// its row is drawn.
#[test]
fn confusion_matrix_labels_name_the_rows_they_sit_on() {
    let svg = heatmap("m", &[vec![5, 0, 0], vec![0, 5, 0], vec![1, 0, 4]]).unwrap();
    let mut y_labels = Vec::new();
    let mut rest = svg.as_str();
    while let Some(start) = rest.find("<text ") {
        rest = &rest[start..];
        let end = rest.find("</text>").unwrap();
        let element = &rest[..end];
        let attr = |name: &str| -> f64 {
            let at = element.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
            element[at..].split('"').next().unwrap().parse().unwrap()
        };
        let text = element.rsplit('>').next().unwrap();
        if let Ok(class) = text.trim().parse::<u32>() {
            // Labels left of the plot belong to the y axis.
            if attr("x") < 60.0 {
                y_labels.push((class, attr("y")));
            }
        }
        rest = &rest[end..];
    }
    y_labels.sort_by(|a, b| a.1.total_cmp(&b.1));
    let top_to_bottom: Vec<u32> = y_labels.iter().map(|l| l.0).collect();
    assert_eq!(top_to_bottom, vec![0, 1, 2], "{svg}");
}

#[test]
fn a_pipeline_that_trains_first_shows_the_uploaded_model_too() {
    let evaluation = Evaluation {
        before: eval(0.95),
        initial: Some(eval(0.1)),
        after: Some(eval(0.94)),
        after_note: None,
    };
    let metrics = JobMetrics::new(4000, 4000, Some(evaluation), Vec::new(), Vec::new());
    let (html, _) = render("job", &metrics).unwrap();
    assert!(
        html.contains("As uploaded, its accuracy was 10.00 %"),
        "{html}"
    );
    assert_eq!(row(&summary_rows(&metrics), "accuracy").1, "95.00 %");
}

#[test]
fn warnings_come_first() {
    let mut metrics = JobMetrics::new(4000, 4000, None, Vec::new(), Vec::new());
    metrics
        .warnings
        .push("step 0 (export): 1 of 3 tensors <kept>".into());
    let (html, _) = render("job", &metrics).unwrap();
    let warning = html
        .find("1 of 3 tensors &lt;kept&gt;")
        .expect("the warning is shown");
    assert!(warning < html.find("Summary").unwrap());
}

#[test]
fn auto_lists_every_trial_with_why_it_lost() {
    use crate::domain::results::auto::{AutoReport, Trial, Winner};
    let trial = |bytes: u64, rejected: Option<&str>| Trial {
        student: false,
        level: 0.5,
        throughput: None,
        parameters: None,
        bits: 4,
        sparsities: Vec::new(),
        overall_sparsity: 0.5,
        validation_accuracy: 0.9,
        holdout_accuracy: Some(0.9),
        bytes,
        compression_ratio: 2.0,
        within_budget: true,
        on_frontier: rejected.is_none(),
        rejected: rejected.map(str::to_owned),
    };
    let report = AutoReport {
        op: "auto",
        objective: "size",
        max_accuracy_drop: 0.01,
        data: "evaluation split".into(),
        validation_samples: 50,
        holdout_samples: 50,
        baseline_validation_accuracy: 0.91,
        baseline_test_accuracy: 0.9,
        dense_f32_bytes: 4000,
        sensitivity: Vec::new(),
        trials: vec![
            trial(
                900,
                Some("held-out accuracy 80.00 % is more than 1.00 points below"),
            ),
            trial(1000, None),
        ],
        winner: Some(Winner {
            trial: 1,
            test_accuracy: 0.9,
            test_accuracy_drop: 0.0,
            bytes: 1000,
            compression_ratio: 4.0,
        }),
        trials_used: 2,
        seconds_used: 1.0,
        budget_exhausted: false,
        note: "trial 1 wins".into(),
        seconds: 1.0,
    };
    let metrics = JobMetrics::new(4000, 1000, None, Vec::new(), vec![StepReport::Auto(report)]);
    let (html, _) = render("job", &metrics).unwrap();
    assert!(
        html.contains("held-out accuracy 80.00 % is more than 1.00 points below"),
        "{html}"
    );
    assert!(html.contains("<td>wins</td>"), "{html}");
    assert!(
        html.contains("verified on the other 50 (held out"),
        "{html}"
    );
}

/// A calibrated step's report charts how far each layer's outputs moved on the calibration
/// text, beside the weight error.
#[test]
fn a_calibrated_step_charts_each_layers_output_error() {
    let mut q = quantize_report();
    q.layers = [
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
    ]
    .iter()
    .enumerate()
    .map(
        |(i, name)| crate::domain::results::prune::LayerReconstruction {
            name: (*name).into(),
            block: 0,
            sparsity: 0.0,
            reconstruction_error: 0.01 * (i + 1) as f64,
            seconds: 0.5,
            dampening: Some(0.01),
            fallback: None,
        },
    )
    .collect();
    let metrics = JobMetrics::new(4000, 1100, None, Vec::new(), vec![StepReport::Quantize(q)]);
    let (html, _) = render("job", &metrics).unwrap();
    assert!(
        html.contains("Output error per layer on the calibration text"),
        "{html}"
    );
    assert!(html.contains("mlp.down_proj"));
}
