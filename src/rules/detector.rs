//! The default univariate detector: what `baseline: {model: detector}` uses in rules
//! and what `netsight replay` scores on NAB. One implementation for both, so what
//! scores well on the benchmark is what users run.

use serde::{Deserialize, Serialize};

use super::baseline::{Estimate, Ewma, RobustWindow};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Detector {
    window: RobustWindow,
    slow: Ewma,
}

impl Default for Detector {
    fn default() -> Self {
        Detector { window: RobustWindow::default(), slow: Ewma::new(0.01) }
    }
}

impl Detector {
    pub fn update(&mut self, x: f64) {
        self.window.update(x);
        self.slow.update(x);
    }

    /// Median/MAD of the recent window, with the long-run spread as a floor so a
    /// window that happens to be flat does not make every wiggle an anomaly.
    pub fn estimate(&self) -> Option<Estimate> {
        let w = self.window.estimate()?;
        let floor = self.slow.estimate().map(|e| e.sigma * 0.25).unwrap_or(0.0);
        Some(Estimate { expected: w.expected, sigma: w.sigma.max(floor) })
    }

    /// Anomaly score in [0, 1] for `x` against the current estimate.
    pub fn score(&self, x: f64) -> f64 {
        match self.estimate() {
            Some(e) => {
                let z = e.zscore(x).abs();
                if z.is_finite() { 1.0 - (-z / 4.0).exp() } else { 1.0 }
            }
            None => 0.0,
        }
    }

    pub fn samples(&self) -> u32 {
        self.window.samples()
    }

    pub fn heap_bytes(&self) -> usize {
        super::baseline::MAD_WINDOW * std::mem::size_of::<f32>()
    }
}
