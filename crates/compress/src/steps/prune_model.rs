//! Prune steps that need the model in memory: N:M with an architecture, structured filter
//! pruning, gradient criteria, schedules of prune + fine-tune rounds.

use domain::results::ProgressDetail;
use std::path::Path;
use std::time::Instant;

use crate::control::Control;
use crate::nn::evaluate::quick_accuracy;
use crate::nn::importance::{prune_nm, prune_to, score, sparsity_of};
use crate::nn::network::Network;
use crate::nn::state::{densities, selected, TensorDensity};
use crate::nn::structured::l1_filter;
use crate::nn::train::{train, Masks, TrainContext};
use crate::nn::ModelState;
use crate::CompressError;
pub use domain::results::prune::CurvePoint;
pub use domain::results::prune::ModelPruneReport;
use domain::{Criterion, PruneMethod, PruneStep, PruneTarget, Scope};

/// Prune steps that need the model in memory: N:M, structured, gradient criteria, schedules.
pub fn prune_step(
    state: &mut ModelState,
    input: &Path,
    output: &Path,
    step: &PruneStep,
    index: usize,
    control: &Control,
) -> Result<ModelPruneReport, CompressError> {
    let started = Instant::now();
    let Some(arch) = &state.arch else {
        let (skipped, zeros, total) = crate::nn::nm_file(input, output, step)?;
        let mut report = empty_report(step, 0.0);
        report.sparsity_after = zeros as f64 / total.max(1) as f64;
        report.skipped = skipped;
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    };
    let mut net = Network::load(input, arch)?;
    let names = selected(&net, &step.selection)?;
    let sparsity_before = sparsity_of(&net, &names)?;
    let before = densities(&net, &net.weight_names())?;
    let accuracy = |net: &Network| -> Result<Option<f64>, CompressError> {
        state
            .data
            .as_ref()
            .map(|d| quick_accuracy(net, &d.test, 512))
            .transpose()
    };
    let mut report = empty_report(step, sparsity_before);
    match (step.method, step.target) {
        (PruneMethod::L1Filter, PruneTarget::Sparsity { sparsity, .. }) => {
            report.structured = Some(l1_filter(&mut net, sparsity, &step.selection)?);
            state.arch = Some(net.arch.clone());
        }
        (PruneMethod::Nm, PruneTarget::NofM { n, m }) => {
            let scores = score(
                &net,
                state.data.as_ref(),
                &names,
                step.criterion,
                step.batches,
                None,
            )?;
            let (_, skipped) = prune_nm(&net, &scores, n, m)?;
            report.skipped = skipped;
            let acc = accuracy(&net)?;
            report.curve.push(CurvePoint {
                step: 1,
                target_sparsity: 1.0 - n as f64 / m as f64,
                sparsity: sparsity_of(&net, &names)?,
                accuracy_after_prune: acc,
                accuracy: acc,
            });
        }
        (_, PruneTarget::Sparsity { sparsity, scope }) => {
            let rounds = Rounds {
                state,
                net: &net,
                names: &names,
                step,
                index,
                control,
            };
            iterate(&rounds, sparsity.get(), scope, &mut report)?;
        }
        (_, target) => {
            return Err(CompressError::InvalidRequest(format!(
                "prune target {target:?} does not apply to method {:?}",
                step.method
            )))
        }
    }
    finish_report(&net, step, &before, &mut report)?;
    net.save(output)?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// What the rounds of one in-memory prune step work on.
struct Rounds<'a> {
    state: &'a ModelState,
    net: &'a Network,
    /// The selected weights.
    names: &'a [String],
    step: &'a PruneStep,
    index: usize,
    control: &'a Control,
}

/// One prune (no schedule) or `steps` rounds of prune → fine-tune along the ramp.
fn iterate(
    r: &Rounds,
    target: f64,
    scope: Scope,
    report: &mut ModelPruneReport,
) -> Result<(), CompressError> {
    let Rounds {
        state,
        net,
        names,
        step,
        index,
        control,
    } = *r;
    let start = report.sparsity_before.min(target);
    let rounds = step.schedule.as_ref().map_or(1, |s| s.steps);
    let mut movement: Option<Masks> = None;
    for t in 1..=rounds {
        control.checkpoint()?;
        let goal = match &step.schedule {
            Some(s) => s.target_at(t, start, target),
            None => target,
        };
        let scores = score(
            net,
            state.data.as_ref(),
            names,
            step.criterion,
            step.batches,
            movement.as_ref(),
        )?;
        let masks = prune_to(net, &scores, goal, scope)?;
        let after_prune = match &state.data {
            Some(d) => Some(quick_accuracy(net, &d.test, 512)?),
            None => None,
        };
        let mut accuracy = after_prune;
        if let Some(schedule) = &step.schedule {
            let recipe = schedule.recipe();
            if recipe.epochs > 0 {
                if step.criterion == Criterion::Movement {
                    movement = Some(
                        names
                            .iter()
                            .map(|n| {
                                Ok((
                                    n.clone(),
                                    net.tensor(n)
                                        .zeros_like()
                                        .map_err(crate::nn::network::nn_error)?,
                                ))
                            })
                            .collect::<Result<_, CompressError>>()?,
                    );
                }
                let ctx = TrainContext::on_labels(
                    control,
                    ProgressDetail {
                        round: Some(t),
                        rounds: Some(rounds),
                        target_sparsity: Some(goal),
                        ..ProgressDetail::step(index, "prune")
                    },
                );
                let mut recipe = recipe;
                recipe.seed = recipe.seed.wrapping_add(t as u64);
                let r = train(
                    net,
                    state.data()?,
                    &recipe,
                    Some(&masks),
                    movement.as_mut(),
                    &ctx,
                )?;
                accuracy = r.epochs.last().map(|e| e.eval_accuracy);
                report.finetune.push(r);
            }
        }
        let point = CurvePoint {
            step: t,
            target_sparsity: goal,
            sparsity: sparsity_of(net, names)?,
            accuracy_after_prune: after_prune,
            accuracy,
        };
        control.set_detail(ProgressDetail {
            round: Some(t),
            rounds: Some(rounds),
            sparsity: Some(point.sparsity),
            accuracy,
            ..ProgressDetail::step(index, "prune")
        });
        report.curve.push(point);
    }
    Ok(())
}

/// A report of a step that has not changed anything yet.
fn empty_report(step: &PruneStep, sparsity_before: f64) -> ModelPruneReport {
    ModelPruneReport {
        op: "prune",
        method: step.method,
        criterion: step.criterion,
        sparsity_before,
        sparsity_after: sparsity_before,
        curve: Vec::new(),
        tensors: Vec::new(),
        skipped: Vec::new(),
        structured: None,
        finetune: Vec::new(),
        seconds: 0.0,
    }
}

/// The sparsity over the selected weights and every weight's density, before and after.
fn finish_report(
    net: &Network,
    step: &PruneStep,
    before: &[TensorDensity],
    report: &mut ModelPruneReport,
) -> Result<(), CompressError> {
    let selected: Vec<String> = net
        .weight_names()
        .into_iter()
        .filter(|n| step.selection.selects(n, true))
        .collect();
    report.sparsity_after = sparsity_of(net, &selected)?;
    report.tensors = densities(net, &net.weight_names())?;
    for t in &mut report.tensors {
        t.density_before = before
            .iter()
            .find(|b| b.name == t.name)
            .map_or(1.0, |b| b.density);
    }
    Ok(())
}
