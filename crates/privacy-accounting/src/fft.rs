//! A small iterative radix-2 complex FFT, enough for convolving privacy loss
//! distributions; written here to avoid a dependency for ~100 lines.

/// A complex number; only the operations the FFT and pointwise powers need.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Complex {
    pub(crate) re: f64,
    pub(crate) im: f64,
}

impl Complex {
    fn mul(self, other: Self) -> Self {
        Self {
            re: self.re * other.re - self.im * other.im,
            im: self.re * other.im + self.im * other.re,
        }
    }

    /// `self^exponent` by binary exponentiation: about `2·log2(exponent)`
    /// complex multiplications, each adding ~1e-16 relative error, which is far
    /// cheaper than `atan2`/`powf`/`sin_cos` and as accurate.
    pub(crate) fn pow(self, mut exponent: u64) -> Self {
        let mut result = Self { re: 1.0, im: 0.0 };
        let mut base = self;
        while exponent > 0 {
            if exponent & 1 == 1 {
                result = result.mul(base);
            }
            exponent >>= 1;
            if exponent > 0 {
                base = base.mul(base);
                // Moduli never exceed 1 (transforms of sub-probability vectors),
                // so once the base is negligible the rest of the power is too.
                if base.re.abs() + base.im.abs() < 1e-300 {
                    return Self::default();
                }
            }
        }
        result
    }
}

/// Direction of a transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Forward,
    /// Inverse, including the `1/n` normalisation.
    Inverse,
}

/// Forward twiddle factors for one transform length, shared by the forward and
/// inverse transforms of a composition (the inverse uses their conjugates).
/// They are computed with `sin_cos` per index rather than by recurrence, so
/// their error does not accumulate: probabilities near 1e-15 must survive.
pub(crate) struct FftPlan {
    twiddles: Vec<Complex>,
}

impl FftPlan {
    pub(crate) fn new(length: usize) -> Self {
        let twiddles = (0..length / 2)
            .map(|k| {
                let angle = -2.0 * std::f64::consts::PI * (k as f64) / (length as f64);
                let (sin, cos) = angle.sin_cos();
                Complex { re: cos, im: sin }
            })
            .collect();
        Self { twiddles }
    }
}

/// In-place FFT of a power-of-two length buffer.
pub(crate) fn fft_in_place(values: &mut [Complex], direction: Direction) {
    let plan = FftPlan::new(values.len());
    fft_with_plan(values, &plan, direction);
}

/// In-place FFT with precomputed twiddles; `plan` must be for `values.len()`.
pub(crate) fn fft_with_plan(values: &mut [Complex], plan: &FftPlan, direction: Direction) {
    let length = values.len();
    if length <= 1 || plan.twiddles.len() * 2 != length {
        return;
    }
    let bits = length.trailing_zeros();
    for index in 0..length {
        let reversed = index.reverse_bits() >> (usize::BITS - bits);
        if reversed > index {
            values.swap(index, reversed);
        }
    }
    let conjugate = direction == Direction::Inverse;
    let mut half = 1;
    while half < length {
        let stride = length / (2 * half);
        for block in values.chunks_exact_mut(2 * half) {
            let (lower, upper) = block.split_at_mut(half);
            for ((a, b), twiddle) in lower
                .iter_mut()
                .zip(upper.iter_mut())
                .zip(plan.twiddles.iter().step_by(stride))
            {
                let twiddle = if conjugate {
                    Complex {
                        re: twiddle.re,
                        im: -twiddle.im,
                    }
                } else {
                    *twiddle
                };
                let rotated = b.mul(twiddle);
                *b = Complex {
                    re: a.re - rotated.re,
                    im: a.im - rotated.im,
                };
                *a = Complex {
                    re: a.re + rotated.re,
                    im: a.im + rotated.im,
                };
            }
        }
        half *= 2;
    }
    if conjugate {
        let scale = 1.0 / (length as f64);
        for value in values.iter_mut() {
            value.re *= scale;
            value.im *= scale;
        }
    }
}

/// Linear convolution of two real sequences via one zero-padded FFT pair.
pub(crate) fn convolve(left: &[f64], right: &[f64]) -> Vec<f64> {
    if left.is_empty() || right.is_empty() {
        return Vec::new();
    }
    let output_length = left.len() + right.len() - 1;
    let transform_length = output_length.next_power_of_two();
    // Pack both real inputs into one complex buffer (left in re, right in im)
    // and separate their spectra by conjugate symmetry: one forward FFT not two.
    let mut packed = vec![Complex::default(); transform_length];
    for (slot, value) in packed.iter_mut().zip(left) {
        slot.re = *value;
    }
    for (slot, value) in packed.iter_mut().zip(right) {
        slot.im = *value;
    }
    fft_in_place(&mut packed, Direction::Forward);
    let mut product = vec![Complex::default(); transform_length];
    for (k, slot) in product.iter_mut().enumerate() {
        let mirror = (transform_length - k) % transform_length;
        let z = packed.get(k).copied().unwrap_or_default();
        let zc = packed.get(mirror).copied().unwrap_or_default();
        // L_k = (z_k + conj(z_{-k})) / 2, R_k = (z_k - conj(z_{-k})) / (2i).
        let left_spectrum = Complex {
            re: 0.5 * (z.re + zc.re),
            im: 0.5 * (z.im - zc.im),
        };
        let right_spectrum = Complex {
            re: 0.5 * (z.im + zc.im),
            im: -0.5 * (z.re - zc.re),
        };
        *slot = left_spectrum.mul(right_spectrum);
    }
    fft_in_place(&mut product, Direction::Inverse);
    product
        .iter()
        .take(output_length)
        .map(|value| value.re)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_convolution(left: &[f64], right: &[f64]) -> Vec<f64> {
        let mut output = vec![0.0; left.len() + right.len() - 1];
        for (i, a) in left.iter().enumerate() {
            for (j, b) in right.iter().enumerate() {
                if let Some(slot) = output.get_mut(i + j) {
                    *slot += a * b;
                }
            }
        }
        output
    }

    proptest::proptest! {
        #[test]
        fn fft_convolution_matches_naive(
            left in proptest::collection::vec(0.0f64..1.0, 1..70),
            right in proptest::collection::vec(0.0f64..1.0, 1..70),
        ) {
            let fast = convolve(&left, &right);
            let slow = naive_convolution(&left, &right);
            proptest::prop_assert_eq!(fast.len(), slow.len());
            for (f, s) in fast.iter().zip(&slow) {
                // Entries are at most 70; FFT rounding is ~1e-16 * n * log n * max.
                proptest::prop_assert!((f - s).abs() < 1e-11, "{} vs {}", f, s);
            }
        }
    }

    #[test]
    fn forward_then_inverse_is_identity() {
        let original: Vec<Complex> = (0..64)
            .map(|i| Complex {
                re: f64::from(i),
                im: -f64::from(i) * 0.5,
            })
            .collect();
        let mut values = original.clone();
        fft_in_place(&mut values, Direction::Forward);
        fft_in_place(&mut values, Direction::Inverse);
        for (a, b) in values.iter().zip(&original) {
            // Values up to 64 after two transforms of length 64: 1e-12 absolute.
            assert!((a.re - b.re).abs() < 1e-12 && (a.im - b.im).abs() < 1e-12);
        }
    }

    #[test]
    fn pow_matches_repeated_multiplication() {
        let z = Complex { re: 0.6, im: -0.7 };
        let mut repeated = Complex { re: 1.0, im: 0.0 };
        for _ in 0..7 {
            repeated = repeated.mul(z);
        }
        let direct = z.pow(7);
        // Seven roundings of O(1) numbers: 1e-13 is generous.
        assert!((direct.re - repeated.re).abs() < 1e-13);
        assert!((direct.im - repeated.im).abs() < 1e-13);
    }
}
