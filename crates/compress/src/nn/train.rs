//! Mini-batch training with SGD (momentum), Adam or AdamW, an optional L1 penalty, and an
//! optional set of masks held through every update (fine-tuning a pruned model). One seeded
//! RNG drives shuffling and dropout, so a seed gives the same model on the same machine.

use domain::results::ProgressDetail;
use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{backprop::GradStore, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::control::Control;
use crate::nn::data::{Dataset, Split};
use crate::nn::distill::Teacher;
use crate::nn::evaluate::quick_accuracy;
use crate::nn::network::{nn_error, Network};
use crate::CompressError;
pub use domain::results::model::EpochReport;
pub use domain::results::model::TrainReport;
use domain::{OptimizerKind, ParamRole, TrainStep};

/// name → 0/1 mask, same shape as the weight.
pub type Masks = BTreeMap<String, Tensor>;

/// Where a training run reports to (the job's control, a label for progress events), and
/// what it learns from: the labels, or a teacher as well.
pub struct TrainContext<'a> {
    pub control: &'a Control,
    pub label: ProgressDetail,
    pub teacher: Option<Teacher<'a>>,
}

impl<'a> TrainContext<'a> {
    /// Training on the labels alone.
    pub fn on_labels(control: &'a Control, label: ProgressDetail) -> Self {
        TrainContext {
            control,
            label,
            teacher: None,
        }
    }
}

struct Slot {
    first: Option<Tensor>,
    second: Option<Tensor>,
}

struct Optimizer {
    recipe: TrainStep,
    slots: BTreeMap<String, Slot>,
    t: i32,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;

impl Optimizer {
    fn new(recipe: &TrainStep) -> Self {
        Optimizer {
            recipe: recipe.clone(),
            slots: BTreeMap::new(),
            t: 0,
        }
    }

    fn step(
        &mut self,
        net: &Network,
        grads: &GradStore,
        masks: Option<&Masks>,
        movement: Option<&mut Masks>,
    ) -> candle_core::Result<()> {
        self.t += 1;
        let r = &self.recipe;
        let lr = r.lr;
        let mut movement = movement;
        for (name, p) in &net.params {
            if matches!(p.role, ParamRole::Buffer | ParamRole::Counter) {
                continue;
            }
            let w = p.var.as_tensor();
            let Some(g) = grads.get(w) else { continue };
            if let Some(acc) = movement.as_deref_mut().and_then(|m| m.get_mut(name)) {
                *acc = (&*acc - (g * w)?)?;
            }
            let mut g = g.clone();
            if r.l1 > 0.0 && p.role == ParamRole::Weight {
                let sign = (w.ge(0.0)?.to_dtype(candle_core::DType::F32)?
                    - w.le(0.0)?.to_dtype(candle_core::DType::F32)?)?;
                g = (g + (sign * r.l1)?)?;
            }
            if r.weight_decay > 0.0 && r.optimizer != OptimizerKind::Adamw {
                g = (g + (w * r.weight_decay)?)?;
            }
            let slot = self.slots.entry(name.clone()).or_insert(Slot {
                first: None,
                second: None,
            });
            let mut next = match r.optimizer {
                OptimizerKind::Sgd => {
                    let update = if r.momentum > 0.0 {
                        let buf = match &slot.first {
                            Some(b) => ((b * r.momentum)? + &g)?,
                            None => g.clone(),
                        };
                        slot.first = Some(buf.clone());
                        buf
                    } else {
                        g
                    };
                    (w - (update * lr)?)?
                }
                OptimizerKind::Adam | OptimizerKind::Adamw => {
                    let base = if r.optimizer == OptimizerKind::Adamw && r.weight_decay > 0.0 {
                        (w * (1.0 - lr * r.weight_decay))?
                    } else {
                        w.clone()
                    };
                    let m = match &slot.first {
                        Some(m) => ((m * BETA1)? + (&g * (1.0 - BETA1))?)?,
                        None => (&g * (1.0 - BETA1))?,
                    };
                    let v = match &slot.second {
                        Some(v) => ((v * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?,
                        None => (g.sqr()? * (1.0 - BETA2))?,
                    };
                    let m_hat = (&m / (1.0 - BETA1.powi(self.t)))?;
                    let v_hat = (&v / (1.0 - BETA2.powi(self.t)))?;
                    slot.first = Some(m);
                    slot.second = Some(v);
                    let step = (m_hat / (v_hat.sqrt()? + ADAM_EPS)?)?;
                    (base - (step * lr)?)?
                }
            };
            if let Some(mask) = masks.and_then(|m| m.get(name)) {
                next = (next * mask)?;
            }
            p.var.set(&next)?;
        }
        Ok(())
    }
}

/// Zero where the weight is zero, one elsewhere: the pattern fine-tuning must keep.
pub fn masks_of(net: &Network, names: &[String]) -> Result<Masks, CompressError> {
    names
        .iter()
        .map(|n| {
            let m = net
                .tensor(n)
                .ne(0.0)
                .and_then(|t| t.to_dtype(candle_core::DType::F32))
                .map_err(nn_error)?;
            Ok((n.clone(), m))
        })
        .collect()
}

/// Trains in place. With `masks`, every masked weight stays exactly zero; with `movement`,
/// accumulates −w·∂L/∂w per weight (movement pruning's score).
pub fn train(
    net: &Network,
    data: &Dataset,
    recipe: &TrainStep,
    masks: Option<&Masks>,
    movement: Option<&mut Masks>,
    ctx: &TrainContext,
) -> Result<TrainReport, CompressError> {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(recipe.seed);
    let mut optimizer = Optimizer::new(recipe);
    let split: &Split = &data.train;
    let n = split.len();
    let batches_per_epoch = n.div_ceil(recipe.batch_size);
    ctx.control
        .add_work((batches_per_epoch * recipe.epochs) as u64);
    let mut order: Vec<usize> = (0..n).collect();
    let mut buf = Vec::new();
    let mut epochs = Vec::with_capacity(recipe.epochs);
    let mut movement = movement;
    if let Some(m) = masks {
        for (name, mask) in m {
            let w = (net.tensor(name) * mask).map_err(nn_error)?;
            net.params[name].var.set(&w).map_err(nn_error)?;
        }
    }
    for epoch in 1..=recipe.epochs {
        let t0 = Instant::now();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut correct) = (0f64, 0usize);
        for chunk in order.chunks(recipe.batch_size) {
            ctx.control.checkpoint()?;
            let (x, y) = split.batch(chunk, &mut buf).map_err(nn_error)?;
            let (loss, logits) = match &ctx.teacher {
                Some(t) => t.loss(net, &x, &y, &mut rng)?,
                None => {
                    let logits = net.logits(&x, Some(&mut rng))?;
                    let loss = candle_nn::loss::cross_entropy(&logits, &y).map_err(nn_error)?;
                    (loss, logits)
                }
            };
            let grads = loss.backward().map_err(nn_error)?;
            optimizer
                .step(net, &grads, masks, movement.as_deref_mut())
                .map_err(nn_error)?;
            let l: f32 = loss.to_scalar().map_err(nn_error)?;
            if !l.is_finite() {
                return Err(CompressError::InvalidRequest(format!(
                    "training diverged (loss {l}) in epoch {epoch}; lower the learning rate"
                )));
            }
            loss_sum += l as f64 * chunk.len() as f64;
            let pred: Vec<u32> = logits
                .argmax(1)
                .and_then(|p| p.to_vec1())
                .map_err(nn_error)?;
            correct += pred
                .iter()
                .zip(chunk)
                .filter(|(p, &i)| **p == split.labels[i])
                .count();
            ctx.control.advance(1);
        }
        let eval_accuracy = quick_accuracy(net, &data.test, 512)?;
        let report = EpochReport {
            epoch,
            train_loss: loss_sum / n as f64,
            train_accuracy: correct as f64 / n as f64,
            eval_accuracy,
            seconds: t0.elapsed().as_secs_f64(),
        };
        ctx.control.set_detail(ProgressDetail {
            epoch: Some(epoch),
            epochs: Some(recipe.epochs),
            train_loss: Some(report.train_loss),
            accuracy: Some(eval_accuracy),
            ..ctx.label.clone()
        });
        tracing::info!(
            epoch,
            loss = report.train_loss,
            accuracy = eval_accuracy,
            "epoch done"
        );
        epochs.push(report);
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(TrainReport {
        epochs,
        samples_per_second: (n * recipe.epochs) as f64 / seconds.max(1e-9),
        seconds,
        masked_tensors: masks.map_or(0, |m| m.len()),
    })
}
