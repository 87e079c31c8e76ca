//! Automatic compression within an accuracy budget. The model was trained on the whole
//! training split, so accuracy there says little: the evaluation split is cut in two halves.
//! The search measures trials on the first (validation), and candidates are verified on the
//! second (held out), which no choice ever looked at; the report says which is which.
//! Fine-tuning uses the training split only.
//!
//! - `size` (size.rs): sensitivity-capped pruning ladder × k-means widths, smallest wins;
//! - `latency` (latency.rs): structured trials, timed, fastest wins.
//!
//! Every trial that does not win says why (`Trial::rejected`), and the frontier is drawn over
//! the accepted trials, so the winner is always on it.

mod latency;
mod size;
mod trial;

use std::path::Path;
use std::time::Instant;

use crate::control::Control;
use crate::nn::data::{Dataset, Split};
pub use domain::results::auto::{AutoReport, Trial, Winner};
use domain::{Architecture, AutoStep};
pub use latency::auto_latency;
pub use size::auto_step;

/// What a search works on.
#[derive(Clone, Copy)]
pub struct AutoInput<'a> {
    pub arch: &'a Architecture,
    pub data: &'a Dataset,
    /// Names the data in the report.
    pub data_label: &'a str,
    /// The model the step starts from.
    pub input: &'a Path,
    /// Where the winner (or the unchanged model) is written.
    pub output: &'a Path,
    /// Scratch space for candidates.
    pub workdir: &'a Path,
    pub step: &'a AutoStep,
    pub control: &'a Control,
}

fn take(split: &Split, range: std::ops::Range<usize>) -> Split {
    let l = split.sample_len;
    Split {
        inputs: split.inputs[range.start * l..range.end * l].to_vec(),
        labels: split.labels[range].to_vec(),
        sample_len: l,
        sample_shape: split.sample_shape.clone(),
    }
}

/// The two views a search works with: the training split with the first half of the
/// evaluation split (`search.test`, validation), and the second half (held out).
struct Halves {
    search: Dataset,
    holdout: Split,
}

fn halves(data: &Dataset) -> Result<Halves, crate::CompressError> {
    let n = data.test.len();
    if n < 2 {
        return Err(crate::CompressError::InvalidRequest(format!(
            "auto splits the evaluation split into a half to search on and a half to verify on, so it needs at least 2 evaluation samples; the dataset has {n}"
        )));
    }
    Ok(Halves {
        search: Dataset {
            train: take(&data.train, 0..data.train.len()),
            test: take(&data.test, 0..n / 2),
            num_classes: data.num_classes,
            summary: data.summary.clone(),
        },
        holdout: take(&data.test, n / 2..n),
    })
}

struct Budgeted {
    started: Instant,
    step: AutoStep,
    used: usize,
}

impl Budgeted {
    fn left(&self) -> bool {
        self.used < self.step.budget.trials
            && self.started.elapsed().as_secs_f64() < self.step.budget.seconds
    }
}

/// The accuracy bar a candidate must clear on the held-out half.
fn holdout_bar(base: f64, limit: f64) -> f64 {
    base - limit
}

fn below_validation(t: &Trial, base: f64, limit: f64) -> String {
    format!(
        "validation accuracy {:.2} % is more than {:.2} points below the baseline's {:.2} %",
        100.0 * t.validation_accuracy,
        100.0 * limit,
        100.0 * base
    )
}

fn below_holdout(accuracy: f64, base: f64, limit: f64) -> String {
    format!(
        "held-out accuracy {:.2} % is more than {:.2} points below the baseline's {:.2} %",
        100.0 * accuracy,
        100.0 * limit,
        100.0 * base
    )
}

/// Whether a trial may win: within budget on validation, and not refused on the held-out half.
fn accepted(t: &Trial, holdout_base: f64, limit: f64) -> bool {
    t.within_budget
        && t.holdout_accuracy
            .is_none_or(|a| a >= holdout_bar(holdout_base, limit))
}

/// Pareto frontier over the accepted trials: (objective, validation accuracy), where `better`
/// says whether the first trial is at least as good as the second on the objective and
/// `strictly` whether it is better.
fn mark_frontier(
    trials: &mut [Trial],
    holdout_base: f64,
    limit: f64,
    better: impl Fn(&Trial, &Trial) -> (bool, bool),
) {
    let ok: Vec<bool> = trials
        .iter()
        .map(|t| accepted(t, holdout_base, limit))
        .collect();
    let on: Vec<bool> = (0..trials.len())
        .map(|i| {
            ok[i]
                && !(0..trials.len()).any(|j| {
                    let (at_least, strictly) = better(&trials[j], &trials[i]);
                    let (a, b) = (trials[j].validation_accuracy, trials[i].validation_accuracy);
                    j != i && ok[j] && at_least && a >= b && (strictly || a > b)
                })
        })
        .collect();
    for (t, on) in trials.iter_mut().zip(on) {
        t.on_frontier = on;
    }
}

/// Smaller files are better.
fn smaller(a: &Trial, b: &Trial) -> (bool, bool) {
    (a.bytes <= b.bytes, a.bytes < b.bytes)
}

/// Higher throughput is better.
fn faster(a: &Trial, b: &Trial) -> (bool, bool) {
    let (x, y) = (a.throughput.unwrap_or(0.0), b.throughput.unwrap_or(0.0));
    (x >= y, x > y)
}
