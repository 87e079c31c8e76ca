//! Each layer type against values computed here by plain loops (or, for GELU, published
//! values of the exact erf form that PyTorch's nn.GELU uses).

use crate::helpers::{close, flat, input, net, wave};

#[test]
fn linear_matches_a_hand_computed_affine_map() {
    let n = net(
        r#"{"input_shape":[3],"layers":[{"type":"linear","in_features":3,"out_features":2}]}"#,
        vec![
            ("0.weight", vec![2, 3], vec![1.0, 2.0, 3.0, -1.0, 0.5, 0.0]),
            ("0.bias", vec![2], vec![0.5, -0.5]),
        ],
    );
    let y = n
        .forward(&input(vec![1.0, 1.0, 1.0, 2.0, 0.0, -1.0], &[2, 3]))
        .unwrap();
    close(&flat(&y), &[6.5, -1.0, -0.5, -2.5], 1e-6);
}

fn conv_reference(
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    k: &[f32],
    (o, kh, kw): (usize, usize, usize),
    bias: &[f32],
    stride: usize,
    pad: usize,
) -> Vec<f32> {
    let ho = (h + 2 * pad - kh) / stride + 1;
    let wo = (w + 2 * pad - kw) / stride + 1;
    let mut out = vec![0f32; o * ho * wo];
    for oc in 0..o {
        for i in 0..ho {
            for j in 0..wo {
                let mut s = bias[oc];
                for ic in 0..c {
                    for a in 0..kh {
                        for b in 0..kw {
                            let (y, xx) = (
                                (i * stride + a) as isize - pad as isize,
                                (j * stride + b) as isize - pad as isize,
                            );
                            if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                                continue;
                            }
                            s += x[ic * h * w + y as usize * w + xx as usize]
                                * k[((oc * c + ic) * kh + a) * kw + b];
                        }
                    }
                }
                out[(oc * ho + i) * wo + j] = s;
            }
        }
    }
    out
}

#[test]
fn conv2d_with_stride_and_padding_matches_direct_convolution() {
    let (c, h, w, o, k) = (2, 5, 6, 3, 3);
    let x = wave(c * h * w, 1);
    let kernel = wave(o * c * k * k, 2);
    let bias = vec![0.1, -0.2, 0.3];
    let arch = format!(
        r#"{{"input_shape":[{c},{h},{w}],"layers":[{{"type":"conv2d","in_channels":{c},"out_channels":{o},"kernel_size":{k},"stride":2,"padding":1}}]}}"#
    );
    let n = net(
        &arch,
        vec![
            (
                "0.weight",
                vec![o as u64, c as u64, k as u64, k as u64],
                kernel.clone(),
            ),
            ("0.bias", vec![o as u64], bias.clone()),
        ],
    );
    let y = n.forward(&input(x.clone(), &[1, c, h, w])).unwrap();
    assert_eq!(y.dims(), &[1, o, 3, 3]);
    close(
        &flat(&y),
        &conv_reference(&x, (c, h, w), &kernel, (o, k, k), &bias, 2, 1),
        1e-5,
    );
}

#[test]
fn pooling_flatten_and_activations_match_their_definitions() {
    let x: Vec<f32> = (0..16).map(|i| (i as f32 - 7.5) / 4.0).collect();
    let pool = |kind: &str| {
        let n = net(
            &format!(
                r#"{{"input_shape":[1,4,4],"layers":[{{"type":"{kind}","kernel_size":2}},{{"type":"flatten"}}]}}"#
            ),
            vec![],
        );
        flat(&n.forward(&input(x.clone(), &[1, 1, 4, 4])).unwrap())
    };
    let window = |r: usize, c: usize| {
        [
            x[r * 8 + c * 2],
            x[r * 8 + c * 2 + 1],
            x[r * 8 + 4 + c * 2],
            x[r * 8 + 4 + c * 2 + 1],
        ]
    };
    let maxes: Vec<f32> = (0..4)
        .map(|i| window(i / 2, i % 2).into_iter().fold(f32::MIN, f32::max))
        .collect();
    let means: Vec<f32> = (0..4)
        .map(|i| window(i / 2, i % 2).iter().sum::<f32>() / 4.0)
        .collect();
    close(&pool("maxpool2d"), &maxes, 1e-6);
    close(&pool("avgpool2d"), &means, 1e-6);

    let v = vec![-2.0f32, -0.5, 0.0, 1.0, 2.0];
    let act = |kind: &str| {
        let n = net(
            &format!(r#"{{"input_shape":[5],"layers":[{{"type":"{kind}"}}]}}"#),
            vec![],
        );
        flat(&n.forward(&input(v.clone(), &[1, 5])).unwrap())
    };
    close(&act("relu"), &[0.0, 0.0, 0.0, 1.0, 2.0], 0.0);
    close(
        &act("tanh"),
        &v.iter().map(|x| x.tanh()).collect::<Vec<_>>(),
        1e-6,
    );
    close(
        &act("sigmoid"),
        &v.iter()
            .map(|x| 1.0 / (1.0 + (-x).exp()))
            .collect::<Vec<_>>(),
        1e-6,
    );
    // x·Φ(x), the exact form (torch.nn.GELU() default).
    close(
        &act("gelu"),
        &[-0.045_500_27, -0.154_268_77, 0.0, 0.841_344_7, 1.954_499_7],
        1e-5,
    );
    let exps: Vec<f32> = v.iter().map(|x| x.exp()).collect();
    let sum: f32 = exps.iter().sum();
    close(
        &act("softmax"),
        &exps.iter().map(|e| e / sum).collect::<Vec<_>>(),
        1e-6,
    );
    close(
        &act("log_softmax"),
        &exps.iter().map(|e| (e / sum).ln()).collect::<Vec<_>>(),
        1e-5,
    );
}

#[test]
fn batchnorm_uses_running_statistics_in_inference() {
    let n = net(
        r#"{"input_shape":[2,1,2],"layers":[{"type":"batchnorm2d","num_features":2}]}"#,
        vec![
            ("0.weight", vec![2], vec![2.0, 0.5]),
            ("0.bias", vec![2], vec![1.0, -1.0]),
            ("0.running_mean", vec![2], vec![0.5, -1.0]),
            ("0.running_var", vec![2], vec![4.0, 0.25]),
        ],
    );
    let x = vec![1.5, -0.5, 0.0, -1.5];
    let y = flat(&n.forward(&input(x.clone(), &[1, 2, 1, 2])).unwrap());
    let eps = 1e-5f32;
    let want = [
        (1.5 - 0.5) / (4.0 + eps).sqrt() * 2.0 + 1.0,
        (-0.5 - 0.5) / (4.0 + eps).sqrt() * 2.0 + 1.0,
        (0.0 + 1.0) / (0.25 + eps).sqrt() * 0.5 - 1.0,
        (-1.5 + 1.0) / (0.25 + eps).sqrt() * 0.5 - 1.0,
    ];
    close(&y, &want, 1e-5);
}

#[test]
fn batchnorm_in_training_normalises_the_batch_and_updates_running_stats_like_pytorch() {
    let n = net(
        r#"{"input_shape":[1],"layers":[{"type":"batchnorm1d","num_features":1}]}"#,
        vec![
            ("0.weight", vec![1], vec![1.0]),
            ("0.bias", vec![1], vec![0.0]),
            ("0.running_mean", vec![1], vec![0.0]),
            ("0.running_var", vec![1], vec![1.0]),
        ],
    );
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    let y = flat(
        &n.logits(&input(vec![1.0, 2.0, 3.0, 6.0], &[4, 1]), Some(&mut rng))
            .unwrap(),
    );
    // mean 3, biased variance 3.5, unbiased 14/3.
    let s = (3.5f32 + 1e-5).sqrt();
    close(&y, &[-2.0 / s, -1.0 / s, 0.0, 3.0 / s], 1e-5);
    close(&flat(n.tensor("0.running_mean")), &[0.3], 1e-6);
    close(
        &flat(n.tensor("0.running_var")),
        &[0.9 + 0.1 * 14.0 / 3.0],
        1e-5,
    );
}

#[test]
fn dropout_is_identity_in_inference_and_inverted_in_training() {
    let n = net(
        r#"{"input_shape":[1000],"layers":[{"type":"dropout","p":0.25}]}"#,
        vec![],
    );
    let x = input(vec![1.0; 1000], &[1, 1000]);
    close(&flat(&n.forward(&x).unwrap()), &[1.0; 1000], 0.0);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
    let y = flat(&n.logits(&x, Some(&mut rng)).unwrap());
    let zeros = y.iter().filter(|v| **v == 0.0).count();
    assert!(
        (200..300).contains(&zeros),
        "{zeros} of 1000 dropped at p = 0.25"
    );
    assert!(y
        .iter()
        .all(|v| *v == 0.0 || (*v - 1.0 / 0.75).abs() < 1e-6));
}

#[test]
fn unfolded_convolution_has_the_same_gradients_as_candles_conv2d() {
    use candle_core::Var;
    use compressd::compress::nn::unfold::conv2d_unfolded;
    // candle's own conv2d is the reference for square kernels and for stride 1.
    // (candle's backward itself fails when a stride leaves rows over, so 7 × 7 for stride 2.)
    for (shape, kernel, pad, stride) in [
        ([2, 3, 7, 6], [4, 3, 3, 2], 1, 1),
        ([2, 3, 7, 7], [4, 3, 3, 3], 0, 2),
    ] {
        let x = Var::from_tensor(&input(wave(shape.iter().product(), 21), &shape)).unwrap();
        let n: usize = kernel.iter().product();
        let w = Var::from_tensor(&input(wave(n, 22), &kernel)).unwrap();
        let theirs = x
            .as_tensor()
            .conv2d(w.as_tensor(), pad, stride, 1, 1)
            .unwrap();
        let target = input(wave(theirs.elem_count(), 23), theirs.dims());
        let loss = |y: candle_core::Tensor| (y * &target).unwrap().sum_all().unwrap();
        let ours = loss(conv2d_unfolded(x.as_tensor(), w.as_tensor(), pad, stride).unwrap());
        let theirs = loss(theirs);
        close(&flat(&ours), &flat(&theirs), 1e-4);
        let (g1, g2) = (ours.backward().unwrap(), theirs.backward().unwrap());
        for v in [&x, &w] {
            let (a, b) = (
                g1.get(v.as_tensor()).unwrap(),
                g2.get(v.as_tensor()).unwrap(),
            );
            close(&flat(a), &flat(b), 1e-4);
        }
    }
}
