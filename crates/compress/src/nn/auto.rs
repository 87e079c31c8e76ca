//! Automatic compression within an accuracy budget (objective: bytes on disk). The model was
//! trained on the whole training split, so accuracy there says little: the search measures
//! trials on the first half of the evaluation split, and the winner is verified on the whole
//! evaluation split, the figure the job reports. Fine-tuning uses the training split only.
//!
//! 1. baseline accuracy; 2. each layer's sensitivity to magnitude pruning alone;
//! 3. trials along a ladder of pruning levels (each layer capped where its sensitivity says
//!    it breaks) times k-means widths, each fine-tuned with its mask held, weight-shared, and
//!    written exactly as the artifact will be (sparse k-means codes, zstd) to measure its size;
//! 4. the smallest valid trial that also holds on the evaluation split wins; if none does,
//!    the baseline is returned, and the report says so.

use domain::results::ProgressDetail;
use std::path::Path;
use std::time::Instant;

use serde_json::json;

use super::super::control::Control;
use super::super::entropy::compress_file;
use super::super::quant::kmeans;
use super::super::quantize::quantize_file;
use super::super::reader::read_dense;
use super::super::CompressError;
use super::data::{Dataset, Split};
use super::evaluate::quick_accuracy;
use super::importance::{prune_one, solo_accuracy, sparsity_of};
use super::network::Network;
use super::train::{masks_of, train, TrainContext};
pub use domain::results::auto::AutoReport;
pub use domain::results::auto::Trial;
pub use domain::results::auto::Winner;
use domain::{AutoStep, Codec, EntropyStep, QuantizeStep, TrainStep};

const LADDER: [f64; 8] = [0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97];

fn take(split: &Split, range: std::ops::Range<usize>) -> Split {
    let l = split.sample_len;
    Split {
        inputs: split.inputs[range.start * l..range.end * l].to_vec(),
        labels: split.labels[range].to_vec(),
        sample_len: l,
        sample_shape: split.sample_shape.clone(),
    }
}

/// The training split as it is, and the first half of the evaluation split (at least one
/// sample) to measure trials on.
fn search_view(data: &Dataset) -> Dataset {
    let n = data.test.len();
    Dataset {
        train: take(&data.train, 0..data.train.len()),
        test: take(&data.test, 0..(n / 2).max(1)),
        num_classes: data.num_classes,
        summary: data.summary.clone(),
    }
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

/// Writes `net` as the artifact (k-means codes stored sparse, then zstd) and returns its
/// size; `keep` receives the file.
fn write_artifact(
    net: &Network,
    bits: u32,
    scratch: &Path,
    keep: &Path,
    control: &Control,
) -> Result<u64, CompressError> {
    let dense = scratch.with_extension("dense.safetensors");
    let coded = scratch.with_extension("kmeans.safetensors");
    net.save(&dense)?;
    let step: QuantizeStep =
        serde_json::from_value(json!({"scheme":"kmeans","bits":bits,"store":"sparse"}))
            .map_err(|e| CompressError::InvalidRequest(e.to_string()))?;
    let q = quantize_file(&dense, &coded, None, &step, control);
    let _ = std::fs::remove_file(&dense);
    q?;
    let entropy = EntropyStep {
        codec: Codec::Zstd,
        level: Some(19),
    };
    let r = compress_file(&coded, keep, &entropy, control);
    let _ = std::fs::remove_file(&coded);
    Ok(r?.bytes_after)
}

#[allow(clippy::too_many_arguments)]
fn run_trial(
    input: &Path,
    arch: &domain::Architecture,
    search: &Dataset,
    caps: &[(String, f64)],
    level: f64,
    bits: u32,
    recipe: &TrainStep,
    scratch: &Path,
    keep: &Path,
    control: &Control,
) -> Result<(Trial, Network), CompressError> {
    let net = Network::load(input, arch)?;
    let mut sparsities = Vec::new();
    for (name, cap) in caps {
        let s = level.min(*cap);
        prune_one(&net, name, s)?;
        sparsities.push((name.clone(), s));
    }
    let names: Vec<String> = caps.iter().map(|(n, _)| n.clone()).collect();
    let masks = masks_of(&net, &names)?;
    let ctx = TrainContext::on_labels(
        control,
        ProgressDetail {
            level: Some(level),
            bits: Some(bits),
            ..ProgressDetail::op("auto")
        },
    );
    if recipe.epochs > 0 {
        train(&net, search, recipe, Some(&masks), None, &ctx)?;
    }
    // Weight sharing as the artifact will store it, so the accuracy is the artifact's.
    for name in &names {
        let shared = kmeans::cluster(&net.values(name)?, bits);
        net.set_values(name, kmeans::decode(&shared))?;
    }
    let validation_accuracy = quick_accuracy(&net, &search.test, 512)?;
    let bytes = write_artifact(&net, bits, scratch, keep, control)?;
    Ok((
        Trial {
            student: false,
            level,
            throughput: None,
            parameters: None,
            bits,
            overall_sparsity: sparsity_of(&net, &names)?,
            sparsities,
            validation_accuracy,
            bytes,
            compression_ratio: 0.0,
            within_budget: false,
            on_frontier: false,
        },
        net,
    ))
}

/// Structured trials for the latency objective: each removes a fraction of every hidden
/// layer's filters/neurons by L1 norm, fine-tunes, and is timed. Returns the report and, when a
/// trial wins, its architecture (the weights are in `output`).
#[allow(clippy::too_many_arguments)]
pub fn auto_latency(
    arch: &domain::Architecture,
    data: &Dataset,
    data_label: &str,
    input: &Path,
    output: &Path,
    step: &AutoStep,
    control: &Control,
) -> Result<(AutoReport, Option<domain::Architecture>), CompressError> {
    use super::evaluate::speed;
    use super::structured::l1_filter;
    use domain::{EvaluateStep, Sparsity, TensorSelection};
    const FRACTIONS: [f64; 6] = [0.25, 0.4, 0.5, 0.6, 0.7, 0.8];
    let started = Instant::now();
    let search = search_view(data);
    let timing = EvaluateStep {
        batch_size: 256,
        runs: 5,
    };
    let dense = Network::load(input, arch)?;
    let base_val = quick_accuracy(&dense, &search.test, 512)?;
    let base_test = quick_accuracy(&dense, &data.test, 512)?;
    let base_speed = speed(&dense, &data.test, &timing)?.throughput_samples_per_second;
    let dense_f32_bytes: u64 = dense.stored_values() * 4;
    let limit = step.max_accuracy_drop;
    let mut budget = Budgeted {
        started,
        step: step.clone(),
        used: 0,
    };
    let mut trials = Vec::new();
    let mut nets = Vec::new();
    for &fraction in &FRACTIONS {
        if !budget.left() {
            break;
        }
        control.checkpoint()?;
        let mut net = Network::load(input, arch)?;
        l1_filter(
            &mut net,
            Sparsity::parse(fraction).map_err(|e| CompressError::InvalidRequest(e.0))?,
            &TensorSelection::default(),
        )?;
        let ctx = TrainContext::on_labels(
            control,
            ProgressDetail {
                objective: Some("latency".into()),
                fraction: Some(fraction),
                ..ProgressDetail::op("auto")
            },
        );
        if step.finetune.epochs > 0 {
            train(&net, &search, &step.finetune, None, None, &ctx)?;
        }
        let validation_accuracy = quick_accuracy(&net, &search.test, 512)?;
        let throughput = speed(&net, &data.test, &timing)?.throughput_samples_per_second;
        budget.used += 1;
        let parameters: u64 = net.stored_values();
        let within = validation_accuracy >= base_val - limit;
        trials.push(Trial {
            student: false,
            level: fraction,
            throughput: Some(throughput),
            parameters: Some(parameters),
            bits: 32,
            sparsities: Vec::new(),
            overall_sparsity: 0.0,
            validation_accuracy,
            bytes: parameters * 4,
            compression_ratio: dense_f32_bytes as f64 / (parameters * 4).max(1) as f64,
            within_budget: within,
            on_frontier: false,
        });
        nets.push(net);
        if !within {
            break;
        }
    }
    mark_frontier(&mut trials);
    let mut order: Vec<usize> = (0..trials.len())
        .filter(|&i| trials[i].within_budget)
        .collect();
    order.sort_by(|&a, &b| {
        trials[b]
            .throughput
            .unwrap_or(0.0)
            .total_cmp(&trials[a].throughput.unwrap_or(0.0))
    });
    let mut winner = None;
    let mut winner_arch = None;
    for i in order {
        let test_accuracy = quick_accuracy(&nets[i], &data.test, 512)?;
        let faster = trials[i].throughput.unwrap_or(0.0) > base_speed;
        if test_accuracy >= base_test - limit && faster {
            nets[i].save(output)?;
            winner_arch = Some(nets[i].arch.clone());
            winner = Some(Winner {
                trial: i,
                test_accuracy,
                test_accuracy_drop: base_test - test_accuracy,
                bytes: std::fs::metadata(output)?.len(),
                compression_ratio: trials[i].compression_ratio,
            });
            break;
        }
    }
    let note = match &winner {
        Some(w) => format!(
            "trial {} wins: {:.2}× the dense model's batch throughput, {:.2} points below the baseline on the evaluation split",
            w.trial,
            trials[w.trial].throughput.unwrap_or(0.0) / base_speed.max(1e-9),
            100.0 * w.test_accuracy_drop
        ),
        None => {
            std::fs::copy(input, output)?;
            "no structured trial was both faster and within the accuracy budget; the baseline model is returned unchanged".into()
        }
    };
    let report = AutoReport {
        op: "auto",
        objective: "latency",
        max_accuracy_drop: limit,
        data: data_label.to_owned(),
        validation_samples: search.test.len(),
        baseline_validation_accuracy: base_val,
        baseline_test_accuracy: base_test,
        dense_f32_bytes,
        sensitivity: Vec::new(),
        trials,
        winner,
        trials_used: budget.used,
        seconds_used: started.elapsed().as_secs_f64(),
        budget_exhausted: !budget.left(),
        note,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((report, winner_arch))
}

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
#[allow(clippy::too_many_arguments)]
pub fn auto_step(
    arch: &domain::Architecture,
    data: &Dataset,
    data_label: &str,
    input: &Path,
    output: &Path,
    workdir: &Path,
    step: &AutoStep,
    control: &Control,
) -> Result<(AutoReport, Option<domain::Architecture>), CompressError> {
    let started = Instant::now();
    let mut report = search_size(
        arch, data, data_label, input, output, workdir, step, control, None,
    )?;
    let seconds_left = step.budget.seconds - started.elapsed().as_secs_f64();
    let trials_left = step.budget.trials.saturating_sub(report.trials_used);
    if !step.distill || trials_left == 0 || seconds_left <= 0.0 {
        return Ok((report, None));
    }
    // A half-width student learns from the model, then goes through the same search,
    // measured against the original model.
    let student_arch = arch
        .shrunk(0.5)
        .map_err(|e| CompressError::InvalidRequest(format!("shrinking for distillation: {e}")))?;
    let teacher = Network::load(input, arch)?;
    let student = Network::initialise(
        &student_arch,
        &mut rand::SeedableRng::seed_from_u64(step.finetune.seed),
    )?;
    let mut recipe = step.finetune.clone();
    recipe.epochs = (recipe.epochs * 5).max(5);
    let ctx = TrainContext {
        control,
        label: ProgressDetail {
            distilling: Some(true),
            ..ProgressDetail::op("auto")
        },
        teacher: Some(super::distill::Teacher {
            net: &teacher,
            temperature: 4.0,
            alpha: 0.9,
            features: Vec::new(),
            beta: 0.0,
        }),
    };
    train(&student, data, &recipe, None, None, &ctx)?;
    let student_file = workdir.join("auto-student.safetensors");
    student.save(&student_file)?;
    let mut rest = step.clone();
    rest.budget.trials = trials_left;
    rest.budget.seconds = seconds_left;
    let student_out = workdir.join("auto-student.out");
    let reference = Reference {
        validation: report.baseline_validation_accuracy,
        test: report.baseline_test_accuracy,
        dense_f32_bytes: report.dense_f32_bytes,
    };
    let second = search_size(
        &student_arch,
        data,
        data_label,
        &student_file,
        &student_out,
        workdir,
        &rest,
        control,
        Some(reference),
    )?;
    let offset = report.trials.len();
    let better = match (&second.winner, &report.winner) {
        (Some(s), Some(t)) => s.bytes < t.bytes,
        (Some(_), None) => true,
        _ => false,
    };
    report.trials.extend(second.trials.into_iter().map(|mut t| {
        t.student = true;
        t
    }));
    mark_frontier(&mut report.trials);
    report.trials_used += second.trials_used;
    report.seconds_used = started.elapsed().as_secs_f64();
    report.seconds = report.seconds_used;
    report.budget_exhausted = second.budget_exhausted;
    let _ = std::fs::remove_file(&student_file);
    if better {
        std::fs::rename(&student_out, output)?;
        let mut w = second.winner.expect("better implies a winner");
        w.trial += offset;
        report.note = format!(
            "trial {} (a half-width student distilled from the model) wins: {:.1}× smaller than dense f32, {:.2} points below the baseline on the evaluation split",
            w.trial, w.compression_ratio, 100.0 * w.test_accuracy_drop
        );
        report.winner = Some(w);
        return Ok((report, Some(student_arch)));
    }
    let _ = std::fs::remove_file(&student_out);
    Ok((report, None))
}

#[allow(clippy::too_many_arguments)]
fn search_size(
    arch: &domain::Architecture,
    data: &Dataset,
    data_label: &str,
    input: &Path,
    output: &Path,
    workdir: &Path,
    step: &AutoStep,
    control: &Control,
    reference: Option<Reference>,
) -> Result<AutoReport, CompressError> {
    let started = Instant::now();
    let search = search_view(data);
    let dense = Network::load(input, arch)?;
    let names = dense.weight_names();
    let derived = reference.is_some();
    let reference = match reference {
        Some(r) => r,
        None => Reference {
            validation: quick_accuracy(&dense, &search.test, 512)?,
            test: quick_accuracy(&dense, &data.test, 512)?,
            dense_f32_bytes: dense.stored_values() * 4,
        },
    };
    let own_baseline = quick_accuracy(&dense, &search.test, 512)?;
    let (base_val, base_test, dense_f32_bytes) = (
        reference.validation,
        reference.test,
        reference.dense_f32_bytes,
    );
    let limit = step.max_accuracy_drop;
    // Sensitivity: each layer alone; a layer may go as far as it loses under 4× the budget
    // on its own (fine-tuning wins much of that back).
    let mut sensitivity = Vec::new();
    let mut caps = Vec::new();
    for name in &names {
        let original = dense.values(name)?;
        let mut points = Vec::new();
        let mut cap = 0.0;
        for &s in &LADDER {
            control.checkpoint()?;
            let drop = own_baseline - solo_accuracy(&dense, name, &original, s, &search.test)?;
            points.push((s, drop));
            if drop <= 4.0 * limit {
                cap = s;
            }
        }
        sensitivity.push((name.clone(), points));
        caps.push((name.clone(), cap));
    }
    let mut budget = Budgeted {
        started,
        step: step.clone(),
        used: 0,
    };
    let mut trials: Vec<Trial> = Vec::new();
    let mut best: Option<(usize, u64)> = None;
    let candidate = |i: usize| workdir.join(format!("auto-{i}.zst"));
    let scratch = workdir.join("auto-scratch");
    // Widest codes first; at each width climb the ladder from the last level that held.
    let mut start = 0;
    'widths: for &bits in &step.bits {
        let mut level = start;
        while level < LADDER.len() {
            if !budget.left() {
                break 'widths;
            }
            control.checkpoint()?;
            let i = trials.len();
            let (mut t, _) = run_trial(
                input,
                arch,
                &search,
                &caps,
                LADDER[level],
                bits,
                &step.finetune,
                &scratch,
                &candidate(i),
                control,
            )?;
            budget.used += 1;
            t.compression_ratio = dense_f32_bytes as f64 / t.bytes.max(1) as f64;
            t.within_budget = t.validation_accuracy >= base_val - limit;
            control.set_detail(ProgressDetail {
                trial: Some(i + 1),
                bits: Some(bits),
                level: Some(LADDER[level]),
                validation_accuracy: Some(t.validation_accuracy),
                bytes: Some(t.bytes),
                ..ProgressDetail::op("auto")
            });
            let ok = t.within_budget;
            if ok && best.is_none_or(|(_, b)| t.bytes < b) {
                best = Some((i, t.bytes));
            }
            if !ok {
                let _ = std::fs::remove_file(candidate(i));
            }
            trials.push(t);
            if !ok {
                break;
            }
            start = level;
            level += 1;
        }
    }
    mark_frontier(&mut trials);
    // Verify on the evaluation split, best first; the artifact is re-read, not reused.
    let mut order: Vec<usize> = (0..trials.len())
        .filter(|&i| trials[i].within_budget)
        .collect();
    order.sort_by_key(|&i| trials[i].bytes);
    let mut winner = None;
    for i in order {
        let net = Network::from_dense(
            arch.clone(),
            read_dense(&candidate(i))?,
            Default::default(),
            Default::default(),
        )?;
        let test_accuracy = quick_accuracy(&net, &data.test, 512)?;
        if test_accuracy >= base_test - limit {
            std::fs::rename(candidate(i), output)?;
            winner = Some(Winner {
                trial: i,
                test_accuracy,
                test_accuracy_drop: base_test - test_accuracy,
                bytes: trials[i].bytes,
                compression_ratio: trials[i].compression_ratio,
            });
            break;
        }
    }
    for i in 0..trials.len() {
        let _ = std::fs::remove_file(candidate(i));
    }
    let note = match &winner {
        Some(w) => format!(
            "trial {} wins: {:.1}× smaller than dense f32, {:.2} points below the baseline on the evaluation split",
            w.trial, w.compression_ratio, 100.0 * w.test_accuracy_drop
        ),
        None => {
            // A search on a derived student leaves the fallback to its caller.
            if !derived {
                std::fs::copy(input, output)?;
            }
            "no trial stayed within the accuracy budget on both splits; the baseline model is returned unchanged".into()
        }
    };
    Ok(AutoReport {
        op: "auto",
        objective: "size",
        max_accuracy_drop: limit,
        data: data_label.to_owned(),
        validation_samples: search.test.len(),
        baseline_validation_accuracy: base_val,
        baseline_test_accuracy: base_test,
        dense_f32_bytes,
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

/// Pareto frontier over (bytes, validation accuracy): no other trial is both smaller and at
/// least as accurate.
fn mark_frontier(trials: &mut [Trial]) {
    let points: Vec<(u64, f64)> = trials
        .iter()
        .map(|t| (t.bytes, t.validation_accuracy))
        .collect();
    for (i, t) in trials.iter_mut().enumerate() {
        t.on_frontier = !points.iter().enumerate().any(|(j, &(b, a))| {
            j != i && b <= points[i].0 && a >= points[i].1 && (b < points[i].0 || a > points[i].1)
        });
    }
}
