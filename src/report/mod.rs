//! A job's report as one self-contained HTML page (inline SVG charts drawn with plotters, no
//! external assets), built from the job's typed metrics alone, plus the charts as SVG files.

mod charts;
mod plots;
mod summary;
mod trials;

use crate::domain::results::JobMetrics;
use charts::charts;
use summary::summary_rows;

/// A chart's file name stem and its SVG.
pub type Chart = (String, String);

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

/// The page and its charts (name, SVG). `title` names the job and model.
pub fn render(title: &str, metrics: &JobMetrics) -> Result<(String, Vec<Chart>), String> {
    let charts = charts(metrics)?;
    let mut html = String::new();
    html.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    html.push_str(&format!("<title>{}</title>", escape(title)));
    html.push_str("<style>body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:.3em .8em;text-align:right}th:first-child,td:first-child{text-align:left}figure{display:inline-block;margin:1em}</style></head><body>");
    html.push_str(&format!("<h1>{}</h1>", escape(title)));
    if !metrics.warnings.is_empty() {
        html.push_str("<h2>Warnings</h2><ul id=\"warnings\">");
        for w in &metrics.warnings {
            html.push_str(&format!("<li>{}</li>", escape(w)));
        }
        html.push_str("</ul>");
    }
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
    if let Some(e) = &metrics.evaluation {
        html.push_str(&format!(
            "<p>Accuracy measured on the {}.</p>",
            escape(&e.before.data)
        ));
    }
    if let Some(initial) = metrics.summary.accuracy_initial {
        html.push_str(&format!(
            "<p id=\"initial\">The pipeline trained the model before compressing it: \"original\" is the model as it was before the first compressing step. As uploaded, its accuracy was {:.2} %.</p>",
            100.0 * initial
        ));
    }
    html.push_str(&trials::trial_tables(metrics));
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
