//! The size objective: bytes on disk.
//!
//! 1. baseline accuracy; 2. each layer's sensitivity to magnitude pruning alone;
//! 3. trials along a ladder of pruning levels (each layer capped where its sensitivity says
//!    it breaks) times k-means widths, each fine-tuned with its mask held, weight-shared, and
//!    written exactly as the artifact will be (sparse k-means codes, zstd) to measure its size;
//! 4. the smallest trial within budget on validation that also holds on the held-out half
//!    wins; if none does, the baseline is returned, and the report says so.

use std::path::Path;
use std::time::Instant;

use domain::results::ProgressDetail;
use domain::Architecture;

use crate::nn::auto::trial::{run_trial, sensitivities, verify};
use crate::nn::auto::{
    below_validation, halves, mark_frontier, smaller, AutoInput, AutoReport, Budgeted, Halves,
    Trial,
};
use crate::nn::evaluate::quick_accuracy;
use crate::nn::network::Network;
use crate::nn::train::{train, TrainContext};
use crate::CompressError;

pub(super) const LADDER: [f64; 8] = [0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97];

/// The accuracy and size a search is measured against: the model the step started from.
#[derive(Debug, Clone, Copy)]
struct Reference {
    validation: f64,
    test: f64,
    dense_f32_bytes: u64,
}

/// The size objective, possibly followed by the same search on a distilled student (when
/// allowed and budget is left). Returns the report and, when the student wins, its
/// architecture.
pub fn auto_step(cx: &AutoInput) -> Result<(AutoReport, Option<Architecture>), CompressError> {
    let started = Instant::now();
    let mut report = search_size(cx, None)?;
    let step = cx.step;
    let seconds_left = step.budget.seconds - started.elapsed().as_secs_f64();
    let trials_left = step.budget.trials.saturating_sub(report.trials_used);
    if !step.distill || trials_left == 0 || seconds_left <= 0.0 {
        return Ok((report, None));
    }
    // A half-width student learns from the model, then goes through the same search,
    // measured against the original model.
    let student_arch = cx
        .arch
        .shrunk(0.5)
        .map_err(|e| CompressError::InvalidRequest(format!("shrinking for distillation: {e}")))?;
    let student_file = cx.workdir.join("auto-student.safetensors");
    distill_student(cx, &student_arch, &student_file)?;
    let mut rest = step.clone();
    rest.budget.trials = trials_left;
    rest.budget.seconds = seconds_left;
    let student_out = cx.workdir.join("auto-student.out");
    let reference = Reference {
        validation: report.baseline_validation_accuracy,
        test: report.baseline_test_accuracy,
        dense_f32_bytes: report.dense_f32_bytes,
    };
    let second = search_size(
        &AutoInput {
            arch: &student_arch,
            input: &student_file,
            output: &student_out,
            step: &rest,
            ..*cx
        },
        Some(reference),
    )?;
    let _ = std::fs::remove_file(&student_file);
    let student_wins = merge(&mut report, second, started);
    if student_wins {
        std::fs::rename(&student_out, cx.output)?;
        return Ok((report, Some(student_arch)));
    }
    let _ = std::fs::remove_file(&student_out);
    Ok((report, None))
}

/// Trains a half-width student against the model (Hinton KD) and saves it to `file`.
fn distill_student(
    cx: &AutoInput,
    student_arch: &Architecture,
    file: &Path,
) -> Result<(), CompressError> {
    let teacher = Network::load(cx.input, cx.arch)?;
    let student = Network::initialise(
        student_arch,
        &mut rand::SeedableRng::seed_from_u64(cx.step.finetune.seed),
    )?;
    let mut recipe = cx.step.finetune.clone();
    recipe.epochs = (recipe.epochs * 5).max(5);
    let ctx = TrainContext {
        control: cx.control,
        label: ProgressDetail {
            distilling: Some(true),
            ..ProgressDetail::op("auto")
        },
        teacher: Some(crate::nn::distill::Teacher {
            net: &teacher,
            temperature: 4.0,
            alpha: 0.9,
            features: Vec::new(),
            beta: 0.0,
        }),
    };
    train(&student, cx.data, &recipe, None, None, &ctx)?;
    student.save(file).map(drop)
}

/// Adds the student's search to the model's; returns whether the student's winner is the
/// overall winner (smaller than the model's, or the only one). The loser's winner says why it
/// lost, and the frontier is drawn again over both.
fn merge(report: &mut AutoReport, second: AutoReport, started: Instant) -> bool {
    let offset = report.trials.len();
    let student_wins = match (&second.winner, &report.winner) {
        (Some(s), Some(t)) => s.bytes < t.bytes,
        (Some(_), None) => true,
        _ => false,
    };
    report.trials.extend(second.trials.into_iter().map(|mut t| {
        t.student = true;
        t
    }));
    let student_winner = second.winner.map(|mut w| {
        w.trial += offset;
        w
    });
    let (won, lost) = if student_wins {
        (student_winner, report.winner.take())
    } else {
        (report.winner.take(), student_winner)
    };
    if let (Some(w), Some(l)) = (&won, &lost) {
        report.trials[l.trial].rejected = Some(format!(
            "larger than trial {} ({} vs {} bytes), which also holds",
            w.trial, l.bytes, w.bytes
        ));
    }
    if student_wins {
        let w = won.as_ref().expect("the student won");
        report.note = format!(
            "trial {} (a half-width student distilled from the model) wins: {:.1}× smaller than dense f32, {:.2} points below the baseline on the held-out half of the evaluation split",
            w.trial, w.compression_ratio, 100.0 * w.test_accuracy_drop
        );
    }
    report.winner = won;
    let limit = report.max_accuracy_drop;
    mark_frontier(
        &mut report.trials,
        report.baseline_test_accuracy,
        limit,
        smaller,
    );
    report.trials_used += second.trials_used;
    report.seconds_used = started.elapsed().as_secs_f64();
    report.seconds = report.seconds_used;
    report.budget_exhausted = second.budget_exhausted;
    student_wins
}

fn search_size(cx: &AutoInput, reference: Option<Reference>) -> Result<AutoReport, CompressError> {
    let started = Instant::now();
    let Halves { search, holdout } = halves(cx.data)?;
    let dense = Network::load(cx.input, cx.arch)?;
    let derived = reference.is_some();
    let reference = match reference {
        Some(r) => r,
        None => Reference {
            validation: quick_accuracy(&dense, &search.test, 512)?,
            test: quick_accuracy(&dense, &holdout, 512)?,
            dense_f32_bytes: dense.stored_values() * 4,
        },
    };
    let limit = cx.step.max_accuracy_drop;
    let (sensitivity, caps) = sensitivities(&dense, &search, limit, cx.control)?;
    let mut budget = Budgeted {
        started,
        step: cx.step.clone(),
        used: 0,
    };
    let candidate = |i: usize| cx.workdir.join(format!("auto-{i}.zst"));
    let mut trials: Vec<Trial> = Vec::new();
    // Widest codes first; at each width climb the ladder from the last level that held.
    let mut start = 0;
    'widths: for &bits in &cx.step.bits {
        let mut level = start;
        while level < LADDER.len() {
            if !budget.left() {
                break 'widths;
            }
            cx.control.checkpoint()?;
            let i = trials.len();
            let mut t = run_trial(cx, &search, &caps, LADDER[level], bits, &candidate(i))?;
            budget.used += 1;
            t.compression_ratio = reference.dense_f32_bytes as f64 / t.bytes.max(1) as f64;
            t.within_budget = t.validation_accuracy >= reference.validation - limit;
            cx.control.set_detail(ProgressDetail {
                trial: Some(i + 1),
                bits: Some(bits),
                level: Some(LADDER[level]),
                validation_accuracy: Some(t.validation_accuracy),
                bytes: Some(t.bytes),
                ..ProgressDetail::op("auto")
            });
            let ok = t.within_budget;
            if !ok {
                t.rejected = Some(below_validation(&t, reference.validation, limit));
            }
            trials.push(t);
            if !ok {
                break;
            }
            start = level;
            level += 1;
        }
    }
    let winner = verify(cx, &mut trials, &holdout, reference.test, candidate)?;
    mark_frontier(&mut trials, reference.test, limit, smaller);
    for i in 0..trials.len() {
        let _ = std::fs::remove_file(candidate(i));
    }
    let note = match &winner {
        Some(w) => format!(
            "trial {} wins: {:.1}× smaller than dense f32, {:.2} points below the baseline on the held-out half of the evaluation split",
            w.trial, w.compression_ratio, 100.0 * w.test_accuracy_drop
        ),
        None => {
            // A search on a derived student leaves the fallback to its caller.
            if !derived {
                std::fs::copy(cx.input, cx.output)?;
            }
            "no trial stayed within the accuracy budget on both halves of the evaluation split; the baseline model is returned unchanged".into()
        }
    };
    Ok(AutoReport {
        op: "auto",
        objective: "size",
        max_accuracy_drop: limit,
        data: cx.data_label.to_owned(),
        validation_samples: search.test.len(),
        holdout_samples: holdout.len(),
        baseline_validation_accuracy: reference.validation,
        baseline_test_accuracy: reference.test,
        dense_f32_bytes: reference.dense_f32_bytes,
        sensitivity,
        trials,
        winner,
        trials_used: budget.used,
        seconds_used: started.elapsed().as_secs_f64(),
        budget_exhausted: !budget.left(),
        note,
        seconds: started.elapsed().as_secs_f64(),
    })
}
