//! Fake quantization: the forward pass stores what the quantizer stores, the backward pass
//! is the identity (straight-through).

use candle_core::Var;
use compressd::compress::nn::fake_quant::FakeQuant;
use compressd::compress::quant::int;
use compressd::domain::{Granularity, Scheme};

use crate::helpers::{close, flat, input, wave};

#[test]
fn fake_quantization_matches_the_quantizer_and_passes_gradients_straight_through() {
    let w = wave(4 * 64, 31);
    for (scheme, spec) in [
        (
            Scheme::Int4 {
                symmetric: true,
                group_size: 32,
            },
            int::IntSpec {
                bits: 4,
                symmetric: true,
                granularity: int::Granularity::Group(32),
            },
        ),
        (
            Scheme::Int4 {
                symmetric: false,
                group_size: 32,
            },
            int::IntSpec {
                bits: 4,
                symmetric: false,
                granularity: int::Granularity::Group(32),
            },
        ),
        (
            Scheme::Int8 {
                symmetric: true,
                granularity: Granularity::Channel,
            },
            int::IntSpec {
                bits: 8,
                symmetric: true,
                granularity: int::Granularity::Channel,
            },
        ),
    ] {
        let var = Var::from_tensor(&input(w.clone(), &[4, 64])).unwrap();
        let fq = FakeQuant::for_scheme(scheme, Default::default())
            .unwrap()
            .apply(var.as_tensor())
            .unwrap();
        let q = int::quantize(&w, 4, 64, spec);
        let stored = int::dequantize(&q, spec.group_len(4, 64));
        close(&flat(&fq), &stored, 1e-6);
        let target = input(wave(4 * 64, 32), &[4, 64]);
        let grads = (fq * &target)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        close(
            &flat(grads.get(var.as_tensor()).unwrap()),
            &flat(&target),
            0.0,
        );
    }
}
