//! How far dequantized weights are from the originals.

pub use domain::results::tensors::ErrorStats;

/// Running sums from which the statistics follow, so that a whole model's error needs no
/// copy of its weights.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorSums {
    n: u64,
    signal: f64,
    noise: f64,
    dot: f64,
    restored_sq: f64,
    max: f64,
}

impl ErrorSums {
    /// Adds a tensor's worth of pairs, on every core.
    pub fn add(&mut self, original: &[f32], restored: &[f32]) {
        use rayon::prelude::*;
        assert_eq!(original.len(), restored.len());
        let part = original
            .par_chunks(1 << 16)
            .zip(restored.par_chunks(1 << 16))
            .map(|(o, r)| {
                let mut s = ErrorSums::default();
                s.add_serial(o, r);
                s
            })
            .reduce(ErrorSums::default, |mut a, b| {
                a.merge(&b);
                a
            });
        self.merge(&part);
    }

    fn add_serial(&mut self, original: &[f32], restored: &[f32]) {
        for (&w, &r) in original.iter().zip(restored) {
            self.push(w, r);
        }
    }

    /// A short run (a ggml block): summed in f32, which is exact enough over a few dozen
    /// values and lets the compiler vectorise, then added to the f64 totals.
    #[inline]
    pub fn add_short(&mut self, original: &[f32], restored: &[f32]) {
        let (mut s, mut n, mut d, mut r2, mut m) = (0f32, 0f32, 0f32, 0f32, 0f32);
        for (&w, &r) in original.iter().zip(restored) {
            let e = w - r;
            s += w * w;
            n += e * e;
            d += w * r;
            r2 += r * r;
            m = m.max(e.abs());
        }
        self.signal += s as f64;
        self.noise += n as f64;
        self.dot += d as f64;
        self.restored_sq += r2 as f64;
        self.max = self.max.max(m as f64);
        self.n += original.len() as u64;
    }

    /// One original weight and its dequantized value.
    #[inline]
    pub fn push(&mut self, w: f32, r: f32) {
        let (w, r) = (w as f64, r as f64);
        let d = w - r;
        self.signal += w * w;
        self.noise += d * d;
        self.dot += w * r;
        self.restored_sq += r * r;
        self.max = self.max.max(d.abs());
        self.n += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn merge(&mut self, other: &ErrorSums) {
        self.n += other.n;
        self.signal += other.signal;
        self.noise += other.noise;
        self.dot += other.dot;
        self.restored_sq += other.restored_sq;
        self.max = self.max.max(other.max);
    }

    pub fn stats(&self) -> ErrorStats {
        let cosine = if self.signal == 0.0 && self.restored_sq == 0.0 {
            1.0
        } else if self.signal == 0.0 || self.restored_sq == 0.0 {
            0.0
        } else {
            self.dot / (self.signal.sqrt() * self.restored_sq.sqrt())
        };
        ErrorStats {
            mse: self.noise / self.n.max(1) as f64,
            max_abs_error: self.max,
            sqnr_db: if self.noise == 0.0 {
                f64::INFINITY
            } else {
                10.0 * (self.signal / self.noise).log10()
            },
            cosine_similarity: cosine,
        }
    }
}

/// The error between a tensor and its restored copy.
pub fn measure(original: &[f32], restored: &[f32]) -> ErrorStats {
    let mut sums = ErrorSums::default();
    sums.add(original, restored);
    sums.stats()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_errors() {
        let e = measure(&[1.0, -2.0, 0.0, 2.0], &[1.0, -2.0, 0.5, 2.0]);
        assert_eq!(e.mse, 0.0625);
        assert_eq!(e.max_abs_error, 0.5);
        assert!((e.sqnr_db - 10.0 * (9.0f64 / 0.25).log10()).abs() < 1e-12);
        assert!(measure(&[1.0], &[1.0]).sqnr_db.is_infinite());
    }
}
