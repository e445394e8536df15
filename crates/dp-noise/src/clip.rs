//! ℓ2 clipping: the step that bounds each client's sensitivity before noise.

use crate::error::NoiseError;

/// Scales `update` in place so its ℓ2 norm is at most `clip_norm`, and returns
/// the original norm (for adaptive clipping and monitoring).
///
/// The norm is accumulated in f64, and after scaling it is re-measured: f32
/// rounding can push the result a few ulps above `clip_norm`, which would
/// silently break the sensitivity the accountant assumes, so the update is
/// shrunk again until the bound holds exactly as measured.
pub fn clip_l2(update: &mut [f32], clip_norm: f64) -> Result<f64, NoiseError> {
    if !(clip_norm.is_finite() && clip_norm > 0.0) {
        return Err(NoiseError::InvalidClipNorm(clip_norm));
    }
    if let Some(index) = update.iter().position(|value| !value.is_finite()) {
        return Err(NoiseError::NonFiniteUpdate(index));
    }
    let original_norm = l2_norm(update);
    if original_norm <= clip_norm {
        return Ok(original_norm);
    }
    let mut factor = clip_norm / original_norm;
    loop {
        for value in update.iter_mut() {
            *value = (f64::from(*value) * factor) as f32;
        }
        if l2_norm(update) <= clip_norm {
            return Ok(original_norm);
        }
        // Shrink by a relative 2^-20, far above f32 rounding; one retry suffices in practice.
        factor = 1.0 - 1.0 / 1_048_576.0;
    }
}

fn l2_norm(values: &[f32]) -> f64 {
    values
        .iter()
        .map(|value| f64::from(*value) * f64::from(*value))
        .sum::<f64>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn clipped_norm_never_exceeds_the_bound(
            mut update in proptest::collection::vec(-1e6f32..1e6, 0..200),
            clip_norm in 1e-3f64..1e3,
        ) {
            let before = update.clone();
            let original = clip_l2(&mut update, clip_norm);
            proptest::prop_assert!(original.is_ok());
            proptest::prop_assert!(l2_norm(&update) <= clip_norm);
            if original.unwrap_or(f64::NAN) <= clip_norm {
                proptest::prop_assert_eq!(update, before);
            }
        }
    }

    #[test]
    fn clipping_scales_direction_preserving() {
        let mut update = [3.0_f32, 4.0];
        assert_eq!(clip_l2(&mut update, 1.0), Ok(5.0));
        // 0.6 and 0.8 are not exact in f32; 1e-6 covers the rounding and the
        // possible 2^-20 extra shrink.
        assert!(
            (update[0] - 0.6).abs() < 1e-6 && (update[1] - 0.8).abs() < 1e-6,
            "{update:?}"
        );
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert_eq!(
            clip_l2(&mut [1.0, f32::NAN], 1.0),
            Err(NoiseError::NonFiniteUpdate(1))
        );
        assert_eq!(
            clip_l2(&mut [1.0], 0.0),
            Err(NoiseError::InvalidClipNorm(0.0))
        );
    }
}
