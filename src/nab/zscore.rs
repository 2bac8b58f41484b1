//! A plain rolling z-score: the distance of each value from the mean of the previous
//! `window` values, in standard deviations. Only a point of comparison for the
//! benchmark (the textbook detector most monitoring rules amount to).

use std::collections::VecDeque;

/// Previous values the mean and deviation are taken over: one day of 5-minute samples.
pub const WINDOW: usize = 288;

#[derive(Debug, Clone)]
pub struct RollingZscore {
    window: usize,
    ring: VecDeque<f64>,
}

impl Default for RollingZscore {
    fn default() -> Self {
        RollingZscore::new(WINDOW)
    }
}

impl RollingZscore {
    pub fn new(window: usize) -> Self {
        RollingZscore {
            window: window.max(2),
            ring: VecDeque::with_capacity(window.max(2)),
        }
    }

    /// `|z| / (1 + |z|)` of `x` against the window (0 until two values were seen), then
    /// learns `x`.
    pub fn observe(&mut self, x: f64) -> f64 {
        let s = self.score(x);
        if self.ring.len() == self.window {
            self.ring.pop_front();
        }
        self.ring.push_back(x);
        s
    }

    pub fn score(&self, x: f64) -> f64 {
        let n = self.ring.len();
        if n < 2 {
            return 0.0;
        }
        let mean = self.ring.iter().sum::<f64>() / n as f64;
        let var = self.ring.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        let sd = var.sqrt();
        let z = if sd > 0.0 {
            (x - mean).abs() / sd
        } else if x == mean {
            0.0
        } else {
            f64::INFINITY
        };
        if z.is_finite() {
            z / (1.0 + z)
        } else {
            1.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spikes_score_high() {
        let mut z = RollingZscore::new(10);
        for i in 0..50 {
            z.observe(10.0 + (i % 2) as f64);
        }
        assert!(z.score(10.5) < 0.2);
        assert!(z.score(30.0) > 0.9);
    }
}
