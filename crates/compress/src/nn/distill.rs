//! Knowledge distillation (Hinton et al. 2015): the student learns from the teacher's
//! temperature-softened outputs as well as from the labels.

use candle_core::{Result, Tensor, D};
use candle_nn::ops::log_softmax;

use crate::nn::network::Network;

/// The teacher a student trains against.
pub struct Teacher<'a> {
    pub net: &'a Network,
    pub temperature: f64,
    /// Weight of the soft-target term; 1 − alpha weighs cross-entropy on the labels.
    pub alpha: f64,
    /// Matched layers (teacher, student) whose outputs the student also imitates.
    pub features: Vec<(String, String)>,
    /// Weight of the mean squared error between matched features.
    pub beta: f64,
}

impl Teacher<'_> {
    /// The whole distillation loss for one batch.
    pub fn loss(
        &self,
        student: &Network,
        x: &Tensor,
        labels: &Tensor,
        rng: &mut rand::rngs::StdRng,
    ) -> std::result::Result<(Tensor, Tensor), crate::CompressError> {
        use crate::nn::network::nn_error;
        let (t_names, s_names): (Vec<String>, Vec<String>) = self.features.iter().cloned().unzip();
        let (s_logits, s_feats) = student.logits_capturing(x, Some(rng), &s_names)?;
        let (t_logits, t_feats) = self.net.logits_capturing(x, None, &t_names)?;
        let mut loss = kd_loss(&s_logits, &t_logits, labels, self.temperature, self.alpha)
            .map_err(nn_error)?;
        for (s, t) in s_feats.iter().zip(&t_feats) {
            let mse = (s - t.detach())
                .and_then(|d| d.sqr())
                .and_then(|d| d.mean_all())
                .map_err(nn_error)?;
            loss = (loss + (mse * self.beta).map_err(nn_error)?).map_err(nn_error)?;
        }
        Ok((loss, s_logits))
    }
}

/// α · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α) · CE(s, y), the KL term averaged over
/// the batch as PyTorch's `KLDivLoss(reduction="batchmean")` does. The T² keeps the soft
/// term's gradients on the scale of the hard one as T changes.
pub fn kd_loss(
    student: &Tensor,
    teacher: &Tensor,
    labels: &Tensor,
    temperature: f64,
    alpha: f64,
) -> Result<Tensor> {
    let log_s = log_softmax(&(student / temperature)?, D::Minus1)?;
    let log_t = log_softmax(&(teacher.detach() / temperature)?, D::Minus1)?;
    let kl = (log_t.exp()? * (&log_t - &log_s)?)?
        .sum(D::Minus1)?
        .mean_all()?;
    let soft = (kl * (alpha * temperature * temperature))?;
    if alpha >= 1.0 {
        return Ok(soft);
    }
    let hard = (candle_nn::loss::cross_entropy(student, labels)? * (1.0 - alpha))?;
    soft + hard
}
