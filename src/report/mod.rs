//! A job's report as one self-contained HTML page (inline SVG charts drawn with plotters, no
//! external assets), built from the job's metrics JSON alone, plus the charts as SVG files.

use plotters::prelude::*;
use serde_json::Value;

type Chart = (String, String);

const W: u32 = 720;
const H: u32 = 400;

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '&' => "&amp;".into(),
            '"' => "&quot;".into(),
            '\'' => "&#39;".into(),
            c => c.to_string(),
        })
        .collect()
}

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// Lines of (x, y) series, each with a label, on shared axes.
fn lines(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<String, String> {
    let pts: Vec<(f64, f64)> = series.iter().flat_map(|s| s.1.iter().copied()).collect();
    let (x0, x1) = bounds(pts.iter().map(|p| p.0));
    let (y0, y1) = bounds(pts.iter().map(|p| p.1));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()
            .map_err(err)?;
        for (i, (label, points)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(err)?
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    (lo - pad, hi + pad)
}

/// Grouped bars: one group per name, one bar per series.
fn bars(
    title: &str,
    y_desc: &str,
    names: &[String],
    series: &[(&str, Vec<f64>)],
) -> Result<String, String> {
    let n = names.len().max(1);
    let top = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .fold(0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(60)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..n as f64, 0f64..top)
            .map_err(err)?;
        let label = |x: &f64| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 1e-6 {
                names.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_labels(2 * n + 1)
            .x_label_formatter(&label)
            .y_desc(y_desc)
            .disable_x_mesh()
            .draw()
            .map_err(err)?;
        let width = 0.8 / series.len().max(1) as f64;
        for (s, (label, values)) in series.iter().enumerate() {
            let color = Palette99::pick(s).to_rgba();
            chart
                .draw_series(values.iter().enumerate().map(|(i, v)| {
                    let x = i as f64 + 0.1 + s as f64 * width;
                    Rectangle::new([(x, 0.0), (x + width, *v)], color.filled())
                }))
                .map_err(err)?
                .label(*label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// A confusion matrix as a heat map, rows (true class) normalised. Class `r` is the `r`-th cell
/// from the top and the left, and each axis label sits on its own cell (segmented axes).
fn heatmap(title: &str, m: &[Vec<u64>]) -> Result<String, String> {
    let k = m.len().max(1) as i32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (420, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(35)
            .build_cartesian_2d((0..k).into_segmented(), (0..k).into_segmented())
            .map_err(err)?;
        // The y axis grows upward; true class r is drawn at y = k − 1 − r, so label it r.
        let class = |v: &SegmentValue<i32>, flip: bool| match v {
            SegmentValue::CenterOf(c) | SegmentValue::Exact(c) if (0..k).contains(c) => {
                (if flip { k - 1 - c } else { *c }).to_string()
            }
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .x_desc("predicted")
            .y_desc("true")
            .x_labels(k as usize)
            .y_labels(k as usize)
            .x_label_formatter(&|v| class(v, false))
            .y_label_formatter(&|v| class(v, true))
            .disable_mesh()
            .draw()
            .map_err(err)?;
        chart
            .draw_series(m.iter().enumerate().flat_map(|(r, row)| {
                let total = row.iter().sum::<u64>().max(1) as f64;
                row.iter().enumerate().map(move |(c, &v)| {
                    let share = v as f64 / total;
                    let shade = (255.0 * (1.0 - share)) as u8;
                    let y = k - 1 - r as i32;
                    Rectangle::new(
                        [
                            (SegmentValue::Exact(c as i32), SegmentValue::Exact(y)),
                            (
                                SegmentValue::Exact(c as i32 + 1),
                                SegmentValue::Exact(y + 1),
                            ),
                        ],
                        RGBColor(shade, shade, 255).filled(),
                    )
                })
            }))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn charts(metrics: &Value) -> Result<Vec<Chart>, String> {
    let mut out = Vec::new();
    let steps = metrics["steps"].as_array().cloned().unwrap_or_default();
    for (i, s) in steps.iter().enumerate() {
        if let Some(curve) = s["curve"].as_array().filter(|c| !c.is_empty()) {
            let pts: Vec<(f64, f64)> = curve
                .iter()
                .filter_map(|p| Some((f(&p["sparsity"])?, f(&p["accuracy"])?)))
                .collect();
            let cut: Vec<(f64, f64)> = curve
                .iter()
                .filter_map(|p| Some((f(&p["sparsity"])?, f(&p["accuracy_after_prune"])?)))
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
        }
        if let Some(tensors) = s["tensors"].as_array().filter(|t| !t.is_empty()) {
            let names: Vec<String> = tensors
                .iter()
                .map(|t| t["name"].as_str().unwrap_or("?").to_owned())
                .collect();
            let after: Vec<f64> = tensors
                .iter()
                .map(|t| {
                    f(&t["density"])
                        .or_else(|| f(&t["density_after"]))
                        .unwrap_or(0.0)
                })
                .collect();
            let before: Vec<f64> = tensors
                .iter()
                .map(|t| f(&t["density_before"]).unwrap_or(1.0))
                .collect();
            if tensors
                .iter()
                .any(|t| !t["density"].is_null() || !t["density_after"].is_null())
            {
                let svg = bars(
                    "Density per layer",
                    "density (non-zeros / weights)",
                    &names,
                    &[("before", before), ("after", after)],
                )?;
                out.push((format!("step{i}-density"), svg));
            }
        }
        let table = s["layers"]
            .as_array()
            .filter(|_| s["op"] == "sensitivity")
            .cloned();
        let auto_table: Option<Vec<Value>> = s["sensitivity"].as_array().cloned();
        let series: Vec<(String, Vec<(f64, f64)>)> = if let Some(t) = table {
            t.iter()
                .map(|l| {
                    let pts = l["points"].as_array().cloned().unwrap_or_default();
                    (
                        l["tensor"].as_str().unwrap_or("?").to_owned(),
                        pts.iter()
                            .filter_map(|p| Some((f(&p["sparsity"])?, f(&p["accuracy"])?)))
                            .collect(),
                    )
                })
                .collect()
        } else if let Some(t) = auto_table {
            t.iter()
                .map(|l| {
                    let pts = l[1].as_array().cloned().unwrap_or_default();
                    (
                        l[0].as_str().unwrap_or("?").to_owned(),
                        pts.iter()
                            .filter_map(|p| Some((f(&p[0])?, -f(&p[1])?)))
                            .collect(),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        if !series.is_empty() {
            let y = if s["op"] == "auto" {
                "accuracy change (alone)"
            } else {
                "accuracy"
            };
            out.push((
                format!("step{i}-sensitivity"),
                lines(
                    "Per-layer sensitivity to pruning",
                    "sparsity of that layer alone",
                    y,
                    &series,
                )?,
            ));
        }
        if let Some(trials) = s["trials"].as_array().filter(|t| !t.is_empty()) {
            let all: Vec<(f64, f64)> = trials
                .iter()
                .filter_map(|t| Some((f(&t["bytes"])? / 1024.0, f(&t["validation_accuracy"])?)))
                .collect();
            let mut front: Vec<(f64, f64)> = trials
                .iter()
                .filter(|t| t["on_frontier"] == true)
                .filter_map(|t| Some((f(&t["bytes"])? / 1024.0, f(&t["validation_accuracy"])?)))
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
        }
    }
    for h in metrics["histograms"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let (low, high) = (f(&h["low"]).unwrap_or(-1.0), f(&h["high"]).unwrap_or(1.0));
        let series = |key: &str| -> Vec<(f64, f64)> {
            let counts = h[key].as_array().cloned().unwrap_or_default();
            let width = (high - low) / counts.len().max(1) as f64;
            counts
                .iter()
                .enumerate()
                .map(|(i, c)| (low + (i as f64 + 0.5) * width, c.as_f64().unwrap_or(0.0)))
                .collect()
        };
        let name = h["tensor"].as_str().unwrap_or("?");
        let label = |key: &str, zeros: &str| {
            format!("{key} ({} zeros not shown)", h[zeros].as_u64().unwrap_or(0))
        };
        out.push((
            format!(
                "histogram-{}",
                name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            ),
            lines(
                &format!("Weights of {name}, before and after"),
                "weight value",
                "count",
                &[
                    (label("before", "zeros_before"), series("before")),
                    (label("after", "zeros_after"), series("after")),
                ],
            )?,
        ));
    }
    for when in ["before", "after"] {
        if let Some(m) = metrics["evaluation"][when]["confusion_matrix"].as_array() {
            let rows: Vec<Vec<u64>> = m
                .iter()
                .map(|r| {
                    r.as_array()
                        .map(|r| r.iter().filter_map(Value::as_u64).collect())
                        .unwrap_or_default()
                })
                .collect();
            out.push((
                format!("confusion-{when}"),
                heatmap(&format!("Confusion matrix, {when}"), &rows)?,
            ));
        }
    }
    Ok(out)
}

fn summary_rows(metrics: &Value) -> Vec<(String, String, String)> {
    let pct = |v: &Value| {
        f(v).map(|x| format!("{:.2} %", 100.0 * x))
            .unwrap_or_else(|| "—".into())
    };
    let num = |v: &Value| {
        v.as_u64()
            .map(|x| x.to_string())
            .or_else(|| f(v).map(|x| format!("{x:.3}")))
            .unwrap_or_else(|| "—".into())
    };
    let at = |root: &Value, path: &[&str]| path.iter().fold(root.clone(), |v, k| v[*k].clone());
    // (label, where in an evaluation, as a percentage?)
    const ROWS: [(&str, &[&str], bool); 7] = [
        ("parameters", &["cost", "parameters"], false),
        (
            "non-zero parameters",
            &["cost", "nonzero_parameters"],
            false,
        ),
        ("accuracy", &["accuracy"], true),
        ("macro F1", &["f1_macro"], true),
        ("non-zero MACs per sample", &["cost", "macs_nonzero"], false),
        (
            "latency, batch 1 (ms)",
            &["speed", "latency_ms_batch1"],
            false,
        ),
        (
            "throughput (samples/s)",
            &["speed", "throughput_samples_per_second"],
            false,
        ),
    ];
    let ev = &metrics["evaluation"];
    let sm = &metrics["summary"];
    // Parameters and non-zeros are known from the files even when nothing was evaluated.
    let counted = |label: &str, side: &str| -> Option<Value> {
        let key = match (label, side) {
            ("parameters", _) => "parameters",
            ("non-zero parameters", "before") => "nonzero_before",
            ("non-zero parameters", _) => "nonzero_after",
            _ => return None,
        };
        Some(sm[key].clone()).filter(|v| !v.is_null())
    };
    let mut rows: Vec<(String, String, String)> = ROWS
        .iter()
        .map(|(label, path, percent)| {
            let show = if *percent { pct } else { num };
            let side = |when: &str| {
                let v = at(&ev[when], path);
                if v.is_null() {
                    counted(label, when).unwrap_or(Value::Null)
                } else {
                    v
                }
            };
            (
                label.to_string(),
                show(&side("before")),
                show(&side("after")),
            )
        })
        .collect();
    rows.insert(
        2,
        (
            "file bytes".into(),
            num(&sm["file_bytes_before"]),
            num(&sm["file_bytes_after"]),
        ),
    );
    rows.extend(quantization_rows(metrics));
    rows
}

/// What each quantize, qat or export step did to the weights it stored in fewer bits.
fn quantization_rows(metrics: &Value) -> Vec<(String, String, String)> {
    let steps = metrics["steps"].as_array().cloned().unwrap_or_default();
    let mut rows = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let q = match s["op"].as_str() {
            Some("quantize" | "export") => s.clone(),
            Some("qat") => s["quantize"].clone(),
            _ => continue,
        };
        let Some(bits) = f(&q["bits_per_weight"]) else {
            continue;
        };
        let op = s["op"].as_str().unwrap_or("?");
        rows.push((
            format!("bits per quantized weight (step {i}, {op})"),
            "32".into(),
            format!("{bits:.2}"),
        ));
        if let Some(sqnr) = f(&q["error"]["sqnr_db"]) {
            rows.push((
                format!("SQNR, dB (step {i}, {op})"),
                "—".into(),
                if sqnr.is_finite() {
                    format!("{sqnr:.1}")
                } else {
                    "exact".into()
                },
            ));
        }
        if let Some(ratio) = f(&q["compression_ratio"]) {
            rows.push((
                format!("compression ratio (step {i}, {op})"),
                "1".into(),
                format!("{ratio:.2}×"),
            ));
        }
    }
    rows
}

/// The page and its charts (name, SVG). `title` names the job and model.
pub fn render(title: &str, metrics: &Value) -> Result<(String, Vec<Chart>), String> {
    let charts = charts(metrics)?;
    let mut html = String::new();
    html.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    html.push_str(&format!("<title>{}</title>", escape(title)));
    html.push_str("<style>body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:.3em .8em;text-align:right}th:first-child,td:first-child{text-align:left}figure{display:inline-block;margin:1em}</style></head><body>");
    html.push_str(&format!("<h1>{}</h1>", escape(title)));
    html.push_str(
        "<h2>Summary</h2><table id=\"summary\"><tr><th></th><th>original</th><th>result</th></tr>",
    );
    for (k, a, b) in summary_rows(metrics) {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&k),
            escape(&a),
            escape(&b)
        ));
    }
    html.push_str("</table>");
    if let Some(data) = metrics["evaluation"]["before"]["data"].as_str() {
        html.push_str(&format!(
            "<p>Accuracy measured on the {}.</p>",
            escape(data)
        ));
    }
    if let Some(initial) = f(&metrics["evaluation"]["initial"]["accuracy"]) {
        html.push_str(&format!(
            "<p id=\"initial\">The pipeline trained the model before compressing it: \"original\" is the model as it was before the first compressing step. As uploaded, its accuracy was {:.2} %.</p>",
            100.0 * initial
        ));
    }
    html.push_str("<h2>Charts</h2>");
    if charts.is_empty() {
        html.push_str(
            "<p>This job has nothing to chart (no model evaluation or pruning curve).</p>",
        );
    }
    for (name, svg) in &charts {
        html.push_str(&format!(
            "<figure class=\"chart\" id=\"{}\">{svg}</figure>",
            escape(name)
        ));
    }
    html.push_str("</body></html>\n");
    Ok((html, charts))
}

#[cfg(test)]
mod tests;
