//! Summary statistics exactly as numpy computes them in `vllm bench serve`:
//! `np.mean`, `np.median`, `np.std` (population, ddof 0) and `np.percentile` with its default
//! linear interpolation (rank r = p/100 · (n − 1), between floor and ceil). An empty list
//! reports 0 for everything (vLLM passes `values or 0`).
use serde::Serialize;

/// mean / median / std / chosen percentiles of one metric, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub mean: f64,
    pub median: f64,
    pub std: f64,
    /// (percentile, value) in the order asked for.
    pub percentiles: Vec<(f64, f64)>,
}

impl Summary {
    /// Summarises `values_s` (seconds) into milliseconds.
    pub fn of_seconds(values_s: &[f64], percentiles: &[f64]) -> Summary {
        let mut sorted: Vec<f64> = values_s.iter().map(|v| v * 1000.0).collect();
        sorted.sort_by(f64::total_cmp);
        Summary {
            mean: mean(&sorted),
            median: percentile_sorted(&sorted, 50.0),
            std: std_population(&sorted),
            percentiles: percentiles
                .iter()
                .map(|&p| (p, percentile_sorted(&sorted, p)))
                .collect(),
        }
    }

    pub fn percentile(&self, p: f64) -> Option<f64> {
        self.percentiles
            .iter()
            .find(|(q, _)| *q == p)
            .map(|(_, v)| *v)
    }
}

pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// Population standard deviation (numpy's default, ddof = 0).
pub fn std_population(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let m = mean(values);
    (values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / values.len() as f64).sqrt()
}

/// numpy's default (`linear`) percentile of an ascending slice; `p` in 0..=100.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        1 => sorted[0],
        n => {
            let rank = (p / 100.0).clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = rank.floor() as usize;
            let hi = rank.ceil() as usize;
            let t = rank - lo as f64;
            // numpy's _lerp: computed from the nearer end for accuracy.
            let (a, b) = (sorted[lo], sorted[hi]);
            if t >= 0.5 {
                b - (b - a) * (1.0 - t)
            } else {
                a + (b - a) * t
            }
        }
    }
}

/// Percentile of an unsorted slice (sorts a copy).
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile_sorted(&sorted, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn numpy_linear_percentiles_by_hand() {
        // np.percentile([1, 2, 3, 4], [0, 25, 50, 90, 99, 100]) = [1, 1.75, 2.5, 3.7, 3.97, 4]
        let v = [4.0, 1.0, 3.0, 2.0];
        for (p, want) in [
            (0.0, 1.0),
            (25.0, 1.75),
            (50.0, 2.5),
            (90.0, 3.7),
            (99.0, 3.97),
            (100.0, 4.0),
        ] {
            assert!(
                close(percentile(&v, p), want),
                "p{p}: {} != {want}",
                percentile(&v, p)
            );
        }
        // Odd length: the median is the middle element; p99 of [10, 20, 30] = 20 + 0.98·10.
        assert!(close(percentile(&[30.0, 10.0, 20.0], 50.0), 20.0));
        assert!(close(percentile(&[30.0, 10.0, 20.0], 99.0), 29.8));
    }

    #[test]
    fn population_std_and_mean() {
        // np.std([2, 4, 4, 4, 5, 5, 7, 9]) == 2.0 (ddof 0); the sample std would be 2.138.
        let v = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert!(close(std_population(&v), 2.0));
        assert!(close(mean(&v), 5.0));
    }

    #[test]
    fn empty_and_single_values() {
        let s = Summary::of_seconds(&[], &[50.0, 99.0]);
        assert_eq!((s.mean, s.median, s.std), (0.0, 0.0, 0.0));
        assert_eq!(s.percentiles, vec![(50.0, 0.0), (99.0, 0.0)]);
        let s = Summary::of_seconds(&[0.25], &[99.0]);
        assert!(close(s.mean, 250.0) && close(s.median, 250.0) && s.std == 0.0);
        assert!(close(s.percentile(99.0).unwrap(), 250.0));
    }

    #[test]
    fn summary_converts_seconds_to_ms() {
        let s = Summary::of_seconds(&[0.010, 0.020, 0.030, 0.040], &[99.0]);
        assert!(close(s.mean, 25.0));
        assert!(close(s.median, 25.0));
        assert!(close(s.percentile(99.0).unwrap(), 39.7));
    }
}
