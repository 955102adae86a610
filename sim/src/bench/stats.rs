//! Order statistics of samples.
use serde::Serialize;

/// Median, mean and range of a set of samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// The median (the mean of the middle two for an even count).
    pub median: f64,
    /// The arithmetic mean.
    pub mean: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
    /// The 5th percentile (nearest rank).
    pub p05: f64,
    /// The 95th percentile (nearest rank).
    pub p95: f64,
    /// Samples summarised.
    pub count: usize,
}

/// Summarises `samples` (all zero for none; NaNs sort last).
#[must_use]
pub fn summarize(samples: &[f64]) -> Summary {
    if samples.is_empty() {
        return Summary::default();
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 { sorted[n / 2] } else { f64::midpoint(sorted[n / 2 - 1], sorted[n / 2]) };
    let rank = |p: usize| sorted[(n * p).div_ceil(100).clamp(1, n) - 1];
    Summary { median, mean: sorted.iter().sum::<f64>() / n as f64, min: sorted[0], max: sorted[n - 1], p05: rank(5), p95: rank(95), count: n }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_range() {
        let s = summarize(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max, s.count), (2.0, 1.0, 3.0, 3));
        let s = summarize(&[4.0, 1.0, 2.0, 3.0]);
        assert!((s.median - 2.5).abs() < 1e-12 && (s.mean - 2.5).abs() < 1e-12);
        assert_eq!(summarize(&[]), Summary::default());
        let many: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summarize(&many);
        assert!((s.p05 - 5.0).abs() < 1e-12 && (s.p95 - 95.0).abs() < 1e-12);
    }
}
