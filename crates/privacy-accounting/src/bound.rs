//! Combining privacy bounds so that a number which is not a number fails
//! closed. `f64::max`/`f64::min` return the other operand when one is NaN and
//! `clamp` passes NaN through, so a NaN intermediate would otherwise surface
//! as ε = 0 ("perfect privacy"). Here NaN always means "no bound": ε = +∞,
//! δ = 1.

/// ε (or a Rényi divergence) that is never negative, with NaN read as `+inf`.
/// Rounding can leave a true bound a hair below zero; a NaN is no bound at all.
pub(crate) fn epsilon_at_least_zero(value: f64) -> f64 {
    if value.is_nan() {
        f64::INFINITY
    } else {
        value.max(0.0)
    }
}

/// The tighter of two valid upper bounds. A NaN one is no bound, so the
/// other decides; if both are NaN the answer is `+inf`.
pub(crate) fn tighter_upper_bound(first: f64, second: f64) -> f64 {
    nan_is_unbounded(first).min(nan_is_unbounded(second))
}

/// The larger of two quantities that must both hold (e.g. the remove and
/// add directions): if either is NaN the maximum is unknown, so `+inf`.
pub(crate) fn larger_or_unbounded(first: f64, second: f64) -> f64 {
    if first.is_nan() || second.is_nan() {
        f64::INFINITY
    } else {
        first.max(second)
    }
}

/// An ε (or divergence) where NaN becomes `+inf`.
pub(crate) fn nan_is_unbounded(value: f64) -> f64 {
    if value.is_nan() { f64::INFINITY } else { value }
}

/// A δ in `[0, 1]`, with NaN read as 1 (no guarantee at all).
pub(crate) fn delta_in_unit_interval(value: f64) -> f64 {
    if value.is_nan() {
        1.0
    } else {
        value.clamp(0.0, 1.0)
    }
}

/// A probability mass that rounding may leave slightly negative. NaN is
/// returned as NaN so the caller can refuse the distribution: dropping the
/// mass would move it to a lower loss, which is optimistic.
pub(crate) fn mass_at_least_zero(value: f64) -> f64 {
    if value.is_nan() {
        f64::NAN
    } else {
        value.max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_never_becomes_zero() {
        assert_eq!(epsilon_at_least_zero(f64::NAN), f64::INFINITY);
        assert_eq!(epsilon_at_least_zero(-1e-17), 0.0);
        assert_eq!(tighter_upper_bound(f64::NAN, 3.0), 3.0);
        assert_eq!(tighter_upper_bound(3.0, f64::NAN), 3.0);
        assert_eq!(tighter_upper_bound(f64::NAN, f64::NAN), f64::INFINITY);
        assert_eq!(larger_or_unbounded(f64::NAN, 3.0), f64::INFINITY);
        assert_eq!(larger_or_unbounded(3.0, f64::NAN), f64::INFINITY);
        assert_eq!(larger_or_unbounded(2.0, 3.0), 3.0);
        assert_eq!(nan_is_unbounded(f64::NAN), f64::INFINITY);
        assert_eq!(delta_in_unit_interval(f64::NAN), 1.0);
        assert_eq!(delta_in_unit_interval(-0.5), 0.0);
        assert!(mass_at_least_zero(f64::NAN).is_nan());
        assert_eq!(mass_at_least_zero(-1e-18), 0.0);
    }
}
