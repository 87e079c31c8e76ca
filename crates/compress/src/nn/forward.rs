//! The forward pass: each layer computes what its PyTorch namesake computes (same layouts,
//! same batch-norm statistics, inverted dropout).

use candle_core::{Tensor, D};
use rand::rngs::StdRng;
use rand::Rng;

use crate::nn::network::{nn_error, Network};
use crate::CompressError;
use domain::LayerKind;

impl Network {
    /// Logits for a batch; `train` carries the dropout RNG and switches batch norm to batch
    /// statistics (updating the running ones). A final softmax / log-softmax is left out, so
    /// the loss can work on logits; `forward` applies it.
    pub fn logits(&self, x: &Tensor, train: Option<&mut StdRng>) -> Result<Tensor, CompressError> {
        self.logits_capturing(x, train, &[]).map(|(y, _)| y)
    }

    /// `logits`, plus the outputs of the named layers (in the order asked), for losses on
    /// intermediate features.
    pub fn logits_capturing(
        &self,
        x: &Tensor,
        mut train: Option<&mut StdRng>,
        capture: &[String],
    ) -> Result<(Tensor, Vec<Tensor>), CompressError> {
        let layers = &self.arch.layers;
        let end = match layers.last().map(|l| &l.kind) {
            Some(LayerKind::Softmax | LayerKind::LogSoftmax) => layers.len() - 1,
            _ => layers.len(),
        };
        let mut x = x.clone();
        let mut captured: Vec<Option<Tensor>> = vec![None; capture.len()];
        for layer in &layers[..end] {
            x = self
                .layer(layer, &x, train.as_deref_mut())
                .map_err(nn_error)?;
            if let Some(i) = capture.iter().position(|c| *c == layer.name) {
                captured[i] = Some(x.clone());
            }
        }
        let captured = captured
            .into_iter()
            .zip(capture)
            .map(|(t, name)| {
                t.ok_or_else(|| {
                    CompressError::InvalidRequest(format!("no layer '{name}' before the output"))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok((x, captured))
    }

    /// The whole stack in inference mode, final softmax included.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, CompressError> {
        let mut x = x.clone();
        for layer in &self.arch.layers {
            x = self.layer(layer, &x, None).map_err(nn_error)?;
        }
        Ok(x)
    }

    fn layer(
        &self,
        layer: &domain::Layer,
        x: &Tensor,
        train: Option<&mut StdRng>,
    ) -> candle_core::Result<Tensor> {
        let p = |s: &str| self.tensor(&format!("{}.{s}", layer.name)).clone();
        let weight = || -> candle_core::Result<Tensor> {
            let name = format!("{}.weight", layer.name);
            match &self.fake_quant {
                Some(fq) if fq.selection.selects(&name, true) => fq.apply(self.tensor(&name)),
                _ => Ok(self.tensor(&name).clone()),
            }
        };
        let has = |s: &str| self.params.contains_key(&format!("{}.{s}", layer.name));
        Ok(match &layer.kind {
            LayerKind::Linear { .. } => {
                let y = x.matmul(&weight()?.t()?)?;
                if has("bias") {
                    y.broadcast_add(&p("bias"))?
                } else {
                    y
                }
            }
            LayerKind::Conv2d {
                stride, padding, ..
            } => {
                let y = crate::nn::unfold::conv2d_unfolded(x, &weight()?, *padding, *stride)?;
                if has("bias") {
                    let b = p("bias");
                    let c = b.dims1()?;
                    y.broadcast_add(&b.reshape((1, c, 1, 1))?)?
                } else {
                    y
                }
            }
            LayerKind::Maxpool2d {
                kernel_size,
                stride,
            } => {
                x.max_pool2d_with_stride(kernel_size.get(), stride.unwrap_or(*kernel_size).get())?
            }
            LayerKind::Avgpool2d {
                kernel_size,
                stride,
            } => {
                x.avg_pool2d_with_stride(kernel_size.get(), stride.unwrap_or(*kernel_size).get())?
            }
            LayerKind::Flatten => x.flatten_from(1)?,
            LayerKind::Batchnorm1d { eps, momentum, .. }
            | LayerKind::Batchnorm2d { eps, momentum, .. } => {
                self.batch_norm(layer, x, *eps, *momentum, train.is_some())?
            }
            LayerKind::Dropout { p } => match train {
                Some(rng) if *p > 0.0 => {
                    let keep = 1.0 - *p;
                    let scale = (1.0 / keep) as f32;
                    let mask: Vec<f32> = (0..x.elem_count())
                        .map(|_| {
                            if rng.random::<f64>() < keep {
                                scale
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    x.mul(&Tensor::from_vec(mask, x.shape(), x.device())?)?
                }
                _ => x.clone(),
            },
            LayerKind::Relu => x.relu()?,
            LayerKind::Gelu => x.gelu_erf()?,
            LayerKind::Tanh => x.tanh()?,
            LayerKind::Sigmoid => candle_nn::ops::sigmoid(x)?,
            LayerKind::Softmax => candle_nn::ops::softmax(x, D::Minus1)?,
            LayerKind::LogSoftmax => candle_nn::ops::log_softmax(x, D::Minus1)?,
        })
    }

    fn batch_norm(
        &self,
        layer: &domain::Layer,
        x: &Tensor,
        eps: f64,
        momentum: f64,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let name = |s: &str| format!("{}.{s}", layer.name);
        let image = x.rank() == 4;
        let c = x.dim(1)?;
        let shape: Vec<usize> = if image { vec![1, c, 1, 1] } else { vec![1, c] };
        let (mean, var) = if train {
            let dims: Vec<usize> = if image { vec![0, 2, 3] } else { vec![0] };
            let mean = x.mean_keepdim(dims.as_slice())?;
            let centred = x.broadcast_sub(&mean)?;
            let var = centred.sqr()?.mean_keepdim(dims.as_slice())?;
            let n = (x.elem_count() / c) as f64;
            let unbiased = var
                .detach()
                .affine(n / (n - 1.0).max(1.0), 0.0)?
                .flatten_all()?;
            let rm = self.tensor(&name("running_mean"));
            let rv = self.tensor(&name("running_var"));
            let new_mean = ((rm * (1.0 - momentum))? + (mean.detach().flatten_all()? * momentum)?)?;
            let new_var = ((rv * (1.0 - momentum))? + (unbiased * momentum)?)?;
            self.params[&name("running_mean")].var.set(&new_mean)?;
            self.params[&name("running_var")].var.set(&new_var)?;
            if let Some(counter) = self.params.get(&name("num_batches_tracked")) {
                counter.var.set(&(counter.var.as_tensor() + 1.0)?)?;
            }
            (mean, var)
        } else {
            (
                self.tensor(&name("running_mean"))
                    .reshape(shape.as_slice())?,
                self.tensor(&name("running_var"))
                    .reshape(shape.as_slice())?,
            )
        };
        let normed = x
            .broadcast_sub(&mean)?
            .broadcast_div(&(var + eps)?.sqrt()?)?;
        normed
            .broadcast_mul(&self.tensor(&name("weight")).reshape(shape.as_slice())?)?
            .broadcast_add(&self.tensor(&name("bias")).reshape(shape.as_slice())?)
    }
}
