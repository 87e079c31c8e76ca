//! The report page's defects found by trying the walk-through, each pinned down.

use serde_json::json;

use super::{heatmap, render, summary_rows};

fn row<'a>(rows: &'a [(String, String, String)], label: &str) -> &'a (String, String, String) {
    rows.iter()
        .find(|r| r.0 == label)
        .unwrap_or_else(|| panic!("no row '{label}' in {rows:?}"))
}

#[test]
fn a_prune_only_job_shows_its_parameters_and_non_zeros() {
    let metrics = json!({
        "summary": {"file_bytes_before": 4000, "file_bytes_after": 4000,
                    "parameters": 1000, "nonzero_before": 1000, "nonzero_after": 100},
        "evaluation": null,
        "steps": [{"op": "prune"}],
    });
    let rows = summary_rows(&metrics);
    assert_eq!(row(&rows, "parameters").1, "1000");
    let nonzero = row(&rows, "non-zero parameters");
    assert_eq!((nonzero.1.as_str(), nonzero.2.as_str()), ("1000", "100"));
}

#[test]
fn a_quantize_step_appears_with_its_bits_error_and_ratio() {
    let metrics = json!({
        "summary": {"file_bytes_before": 4000, "file_bytes_after": 1100},
        "steps": [{"op": "quantize", "bits_per_weight": 8.0, "compression_ratio": 3.64,
                   "error": {"sqnr_db": 41.25}}],
    });
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
    let metrics = json!({
        "summary": {},
        "evaluation": {"initial": {"accuracy": 0.1}, "before": {"accuracy": 0.95},
                       "after": {"accuracy": 0.94}},
    });
    let (html, _) = render("job", &metrics).unwrap();
    assert!(
        html.contains("As uploaded, its accuracy was 10.00 %"),
        "{html}"
    );
    assert_eq!(row(&summary_rows(&metrics), "accuracy").1, "95.00 %");
}
