//! A small learnable dataset shared by the API and model-runtime tests: four separable
//! classes in 8 dimensions (class c centred on a ±1 pattern), plus bounded noise.

pub fn blobs(n: usize, seed: u64) -> (Vec<f32>, Vec<u8>) {
    let mut s = seed.wrapping_mul(6364136223846793005) | 1;
    let mut noise = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
    };
    let mut x = Vec::with_capacity(n * 8);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % 4;
        for d in 0..8 {
            let centre = if (d + c) % 4 < 2 { 1.0 } else { -1.0 };
            x.push(centre + 0.6 * noise());
        }
        y.push(c as u8);
    }
    (x, y)
}
