//! Level-shift detection (augurs BOCPD) so a baseline re-learns after a lasting
//! change instead of alarming for hours.

/// Index in `values` where the most recent level shift starts, if one is found with
/// at least `min_after` values after it.
pub fn level_shift(values: &[f64], min_after: usize) -> Option<usize> {
    if values.len() < 2 * min_after {
        return None;
    }
    detect(values)
        .into_iter()
        .rev()
        .find(|&i| i > 0 && values.len() - i >= min_after)
}

#[cfg(feature = "changepoint")]
fn detect(values: &[f64]) -> Vec<usize> {
    use augurs::changepoint::{Detector, NormalGammaDetector};
    // The detector's default prior expects data of unit scale around zero.
    let mut sorted: Vec<f64> = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let med = sorted[sorted.len() / 2];
    let mut dev: Vec<f64> = values.iter().map(|v| (v - med).abs()).collect();
    dev.sort_by(f64::total_cmp);
    let scale = (dev[dev.len() / 2] * 1.4826).max(1e-9 + med.abs() * 1e-3);
    let z: Vec<f64> = values.iter().map(|v| (v - med) / scale).collect();
    NormalGammaDetector::default().detect_changepoints(&z)
}

#[cfg(not(feature = "changepoint"))]
fn detect(_values: &[f64]) -> Vec<usize> {
    Vec::new()
}

#[cfg(all(test, feature = "changepoint"))]
mod tests {
    use super::*;

    #[test]
    fn finds_a_step() {
        let v: Vec<f64> = (0..60)
            .map(|i| {
                if i < 30 {
                    100.0 + (i % 3) as f64
                } else {
                    200.0 + (i % 3) as f64
                }
            })
            .collect();
        let i = level_shift(&v, 8).expect("a shift");
        assert!((28..=32).contains(&i), "{i}");
    }

    #[test]
    fn noise_is_not_a_shift() {
        let v: Vec<f64> = (0..60).map(|i| 100.0 + ((i * 7) % 5) as f64).collect();
        assert_eq!(level_shift(&v, 8), None);
    }
}
