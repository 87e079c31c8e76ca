//! The summary table: the model before the first compressing step ("original") and after the
//! last ("result"), then what each quantizing step did to the weights it stored.

use crate::domain::results::model::EvalReport;
use crate::domain::results::{JobMetrics, StepReport};

pub(super) type Row = (String, String, String);

fn pct(v: Option<f64>) -> String {
    v.map(|x| format!("{:.2} %", 100.0 * x))
        .unwrap_or_else(|| "—".into())
}

fn count(v: Option<u64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "—".into())
}

fn number(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "—".into())
}

pub(super) fn summary_rows(metrics: &JobMetrics) -> Vec<Row> {
    let e = metrics.evaluation.as_ref();
    let before = e.map(|e| &e.before);
    let after = e.and_then(|e| e.after.as_ref());
    let sm = &metrics.summary;
    let row = |label: &str, f: &dyn Fn(Option<&EvalReport>) -> String| {
        (label.to_owned(), f(before), f(after))
    };
    // Parameters and non-zeros are known from the files even when nothing was evaluated.
    let parameters = (
        "parameters".to_owned(),
        count(before.map(|r| r.cost.parameters).or(sm.parameters)),
        count(after.map(|r| r.cost.parameters).or(sm.parameters)),
    );
    let nonzero = (
        "non-zero parameters".to_owned(),
        count(
            before
                .map(|r| r.cost.nonzero_parameters)
                .or(sm.nonzero_before),
        ),
        count(
            after
                .map(|r| r.cost.nonzero_parameters)
                .or(sm.nonzero_after),
        ),
    );
    let mut rows = vec![
        parameters,
        nonzero,
        (
            "file bytes".into(),
            sm.file_bytes_before.to_string(),
            sm.file_bytes_after.to_string(),
        ),
        row("accuracy", &|r| pct(r.map(|r| r.accuracy))),
        row("macro F1", &|r| pct(r.map(|r| r.f1_macro))),
        row("non-zero MACs per sample", &|r| {
            count(r.map(|r| r.cost.macs_nonzero))
        }),
        row("latency, batch 1 (ms)", &|r| {
            number(r.map(|r| r.speed.latency_ms_batch1))
        }),
        row("throughput (samples/s)", &|r| {
            number(r.map(|r| r.speed.throughput_samples_per_second))
        }),
    ];
    rows.extend(fidelity_rows(metrics));
    rows.extend(quantization_rows(metrics));
    rows
}

/// A transformer's figures on the evaluation text.
fn fidelity_rows(metrics: &JobMetrics) -> Vec<Row> {
    let Some(f) = &metrics.fidelity else {
        return Vec::new();
    };
    let after = f.after.as_ref();
    let mut rows = vec![(
        format!("tokens per second ({})", f.kind),
        number(Some(f.before.tokens_per_second)),
        number(after.map(|a| a.tokens_per_second)),
    )];
    if f.kind == "decoder" {
        rows.push((
            "perplexity".into(),
            number(f.before.perplexity),
            number(after.and_then(|a| a.perplexity)),
        ));
    }
    if let Some(v) = &f.versus_before {
        let mut versus = |label: &str, value: Option<f64>, percent: bool| {
            if value.is_some() {
                let shown = if percent { pct(value) } else { number(value) };
                rows.push((label.to_owned(), "—".into(), shown));
            }
        };
        versus(
            "KL divergence to the original (nats per token)",
            v.kl_mean,
            false,
        );
        versus("top-1 agreement with the original", v.top1_agreement, true);
        versus(
            "embedding cosine to the original, mean",
            v.cosine_mean,
            false,
        );
        versus(
            "embedding cosine to the original, 5th percentile",
            v.cosine_p5,
            false,
        );
        versus(
            "nearest-neighbour agreement",
            v.nearest_neighbour_agreement,
            true,
        );
        versus("Spearman of pairwise similarities", v.spearman, false);
    }
    rows
}

/// What each quantize, qat or export step did to the weights it stored in fewer bits.
fn quantization_rows(metrics: &JobMetrics) -> Vec<Row> {
    let mut rows = Vec::new();
    for (i, step) in metrics.steps.iter().enumerate() {
        let (op, bits, error, ratio) = match step {
            StepReport::Quantize(q) => {
                ("quantize", q.bits_per_weight, &q.error, q.compression_ratio)
            }
            StepReport::Qat(q) => (
                "qat",
                q.quantize.bits_per_weight,
                &q.quantize.error,
                q.quantize.compression_ratio,
            ),
            StepReport::Export(e) => ("export", e.bits_per_weight, &e.error, e.compression_ratio),
            _ => continue,
        };
        let sqnr = if error.sqnr_db.is_finite() {
            format!("{:.1}", error.sqnr_db)
        } else {
            "exact".into()
        };
        rows.push((
            format!("bits per quantized weight (step {i}, {op})"),
            "32".into(),
            format!("{bits:.2}"),
        ));
        rows.push((format!("SQNR, dB (step {i}, {op})"), "—".into(), sqnr));
        rows.push((
            format!("compression ratio (step {i}, {op})"),
            "1".into(),
            format!("{ratio:.2}×"),
        ));
    }
    rows
}
