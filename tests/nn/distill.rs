//! The distillation loss against values worked out by hand.

use candle_core::{Device, Tensor};
use compressd::compress::nn::distill::kd_loss;

fn softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

#[test]
fn kd_loss_is_hintons_mix_of_softened_kl_and_cross_entropy() {
    let s = [[1.0f64, 2.0, 0.0], [0.5, -1.0, 3.0]];
    let t = [[2.0f64, 0.0, 1.0], [0.0, 0.0, 4.0]];
    let y = [1u32, 2];
    let (temp, alpha) = (2.0, 0.7);
    let mut kl = 0.0;
    let mut ce = 0.0;
    for i in 0..2 {
        let ps = softmax(&s[i].map(|v| v / temp));
        let pt = softmax(&t[i].map(|v| v / temp));
        kl += pt
            .iter()
            .zip(&ps)
            .map(|(p, q)| p * (p.ln() - q.ln()))
            .sum::<f64>();
        ce += -softmax(&s[i])[y[i] as usize].ln();
    }
    let want = alpha * temp * temp * kl / 2.0 + (1.0 - alpha) * ce / 2.0;
    let tensor = |v: [[f64; 3]; 2]| {
        let flat: Vec<f32> = v.iter().flatten().map(|x| *x as f32).collect();
        Tensor::from_vec(flat, (2, 3), &Device::Cpu).unwrap()
    };
    let labels = Tensor::from_vec(y.to_vec(), 2, &Device::Cpu).unwrap();
    let got: f32 = kd_loss(&tensor(s), &tensor(t), &labels, temp, alpha)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!((got as f64 - want).abs() < 1e-5, "got {got}, want {want}");
    // Identical logits and alpha = 1: nothing to learn.
    let same: f32 = kd_loss(&tensor(s), &tensor(s), &labels, temp, 1.0)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(same.abs() < 1e-6);
}
