//! What a forward pass shows of itself: the input of every linear layer, by the layer's
//! weight name. Calibration collects its statistics here; plain runs pass `()`.

use candle_core::Tensor;

pub trait Observer {
    /// `input` is [rows, in_features], exactly what multiplies the weight named `weight`.
    fn linear_input(&mut self, weight: &str, input: &Tensor);
}

impl Observer for () {
    fn linear_input(&mut self, _: &str, _: &Tensor) {}
}
