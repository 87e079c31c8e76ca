//! `auto`'s trials as a table: what each measured on which half of the evaluation split, and
//! why every trial but the winner lost.

use crate::domain::results::auto::AutoReport;
use crate::domain::results::{JobMetrics, StepReport};

use super::escape;

pub(super) fn trial_tables(metrics: &JobMetrics) -> String {
    let mut html = String::new();
    for (i, step) in metrics.steps.iter().enumerate() {
        if let StepReport::Auto(a) = step {
            html.push_str(&table(i, a));
        }
    }
    html
}

fn pct(v: f64) -> String {
    format!("{:.2} %", 100.0 * v)
}

fn table(i: usize, a: &AutoReport) -> String {
    let mut html = format!(
        "<h2>Step {i}: auto ({})</h2><p>{}</p><p>Trials were measured on {} samples of the {} (validation) and candidates verified on the other {} (held out, never used to choose). Baseline: {} validation, {} held out; budget {:.2} points.</p>",
        escape(a.objective),
        escape(&a.note),
        a.validation_samples,
        escape(&a.data),
        a.holdout_samples,
        pct(a.baseline_validation_accuracy),
        pct(a.baseline_test_accuracy),
        100.0 * a.max_accuracy_drop,
    );
    html.push_str(&format!("<table class=\"trials\" id=\"trials-{i}\"><tr><th>trial</th><th>model</th><th>level</th><th>bits</th><th>bytes</th><th>validation</th><th>held out</th><th>frontier</th><th>outcome</th></tr>"));
    for (n, t) in a.trials.iter().enumerate() {
        let outcome = match (&t.rejected, &a.winner) {
            (None, Some(w)) if w.trial == n => "wins".to_owned(),
            (Some(why), _) => why.clone(),
            (None, _) => "—".to_owned(),
        };
        html.push_str(&format!(
            "<tr><td>{n}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if t.student { "student" } else { "model" },
            t.level,
            t.bits,
            t.bytes,
            pct(t.validation_accuracy),
            t.holdout_accuracy.map(pct).unwrap_or_else(|| "—".into()),
            if t.on_frontier { "yes" } else { "" },
            escape(&outcome),
        ));
    }
    html.push_str("</table>");
    html
}
