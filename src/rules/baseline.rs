//! Per-series baselines, updated online each tick with bounded memory.

use serde::{Deserialize, Serialize};

use super::schema::{BaselineModel, BaselineSpec};

/// What a baseline expects next: a centre and a scale (σ-equivalent).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub expected: f64,
    pub sigma: f64,
}

impl Estimate {
    pub fn lower(&self, k: f64) -> f64 {
        self.expected - k * self.sigma
    }
    pub fn upper(&self, k: f64) -> f64 {
        self.expected + k * self.sigma
    }
    /// Signed distance from the expectation in σ.
    pub fn zscore(&self, x: f64) -> f64 {
        if self.sigma > 0.0 {
            (x - self.expected) / self.sigma
        } else if x == self.expected {
            0.0
        } else {
            f64::INFINITY.copysign(x - self.expected)
        }
    }
}

/// Exponentially weighted mean and variance (West's incremental form).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ewma {
    alpha: f64,
    mean: f64,
    var: f64,
    n: u32,
}

impl Ewma {
    pub fn new(alpha: f64) -> Self {
        Ewma {
            alpha: alpha.clamp(1e-4, 1.0),
            mean: 0.0,
            var: 0.0,
            n: 0,
        }
    }

    pub fn update(&mut self, x: f64) {
        if self.n == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let d = x - self.mean;
            let incr = self.alpha * d;
            self.mean += incr;
            self.var = (1.0 - self.alpha) * (self.var + d * incr);
        }
        self.n = self.n.saturating_add(1);
    }

    pub fn estimate(&self) -> Option<Estimate> {
        (self.n > 0).then(|| Estimate {
            expected: self.mean,
            sigma: self.var.max(0.0).sqrt(),
        })
    }

    pub fn samples(&self) -> u32 {
        self.n
    }
}

/// Median and MAD over the last `WINDOW` values, kept in a fixed ring of f32 (256 bytes)
/// and computed by selection: bounded memory, exact over its window, unaffected by
/// a few outliers.
pub const MAD_WINDOW: usize = 64;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RobustWindow {
    ring: Vec<f32>,
    head: usize,
    n: u32,
}

impl Default for RobustWindow {
    fn default() -> Self {
        RobustWindow {
            ring: Vec::with_capacity(MAD_WINDOW),
            head: 0,
            n: 0,
        }
    }
}

/// Scales a MAD to a normal σ.
const MAD_TO_SIGMA: f64 = 1.4826;

impl RobustWindow {
    pub fn update(&mut self, x: f64) {
        if self.ring.len() < MAD_WINDOW {
            self.ring.push(x as f32);
        } else {
            self.ring[self.head] = x as f32;
            self.head = (self.head + 1) % MAD_WINDOW;
        }
        self.n = self.n.saturating_add(1);
    }

    pub fn estimate(&self) -> Option<Estimate> {
        if self.ring.is_empty() {
            return None;
        }
        let mut buf = [0f32; MAD_WINDOW];
        let len = self.ring.len();
        buf[..len].copy_from_slice(&self.ring);
        let med = median(&mut buf[..len]);
        for v in &mut buf[..len] {
            *v = (*v - med).abs();
        }
        let mad = median(&mut buf[..len]);
        Some(Estimate {
            expected: med as f64,
            sigma: mad as f64 * MAD_TO_SIGMA,
        })
    }

    pub fn samples(&self) -> u32 {
        self.n
    }
}

fn median(v: &mut [f32]) -> f32 {
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f32::total_cmp);
    *m
}

/// The state behind one rule group's baseline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum BaselineState {
    Ewma(Ewma),
    Mad(RobustWindow),
    /// Boxed: most rule groups use the smaller models, and the enum is as large as
    /// its largest variant.
    Detector(Box<super::detector::Detector>),
    Seasonal(Box<super::seasonal::Seasonal>),
}

impl BaselineState {
    pub fn new(spec: &BaselineSpec) -> Self {
        match spec.model {
            BaselineModel::Ewma => BaselineState::Ewma(Ewma::new(spec.alpha)),
            BaselineModel::Mad => BaselineState::Mad(RobustWindow::default()),
            BaselineModel::Detector => BaselineState::Detector(Box::default()),
            BaselineModel::Seasonal => BaselineState::Seasonal(Box::new(super::seasonal::Seasonal::new(
                spec.step.as_secs_f64(),
                &spec.periods.iter().map(|p| p.as_secs_f64()).collect::<Vec<_>>(),
                spec.refit_every.as_secs_f64(),
            ))),
        }
    }

    /// Learns value `x` observed at unix time `t`.
    pub fn update(&mut self, t: f64, x: f64) {
        match self {
            BaselineState::Ewma(b) => b.update(x),
            BaselineState::Mad(b) => b.update(x),
            BaselineState::Detector(b) => b.update(x),
            BaselineState::Seasonal(b) => b.update(t, x),
        }
    }

    /// What the baseline expects at unix time `t`.
    pub fn estimate(&self, t: f64) -> Option<Estimate> {
        match self {
            BaselineState::Ewma(b) => b.estimate(),
            BaselineState::Mad(b) => b.estimate(),
            BaselineState::Detector(b) => b.estimate(),
            BaselineState::Seasonal(b) => b.estimate(t),
        }
    }

    pub fn samples(&self) -> u32 {
        match self {
            BaselineState::Ewma(b) => b.samples(),
            BaselineState::Mad(b) => b.samples(),
            BaselineState::Detector(b) => b.samples(),
            BaselineState::Seasonal(b) => b.samples(),
        }
    }

    /// Heap plus inline bytes, for the memory-per-series figure in the bench.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + match self {
                BaselineState::Mad(b) => b.ring.capacity() * std::mem::size_of::<f32>(),
                BaselineState::Detector(d) => std::mem::size_of::<super::detector::Detector>() + d.heap_bytes(),
                BaselineState::Seasonal(b) => std::mem::size_of::<super::seasonal::Seasonal>() + b.heap_bytes(),
                BaselineState::Ewma(_) => 0,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ewma_tracks_mean_and_spread() {
        let mut e = Ewma::new(0.1);
        for i in 0..500 {
            e.update(if i % 2 == 0 { 9.0 } else { 11.0 });
        }
        let est = e.estimate().expect("estimate");
        assert!((est.expected - 10.0).abs() < 0.2, "{est:?}");
        assert!((est.sigma - 1.0).abs() < 0.2, "{est:?}");
        assert!(est.zscore(20.0) > 8.0);
    }

    #[test]
    fn mad_ignores_a_few_outliers() {
        let mut r = RobustWindow::default();
        for i in 0..200 {
            r.update(if i % 20 == 0 { 1000.0 } else { 10.0 + (i % 3) as f64 });
        }
        let est = r.estimate().expect("estimate");
        assert!((est.expected - 11.0).abs() <= 1.0, "{est:?}");
        assert!(est.sigma < 3.0, "{est:?}");
    }

    #[test]
    fn per_series_state_is_small() {
        let spec = BaselineSpec {
            model: BaselineModel::Mad,
            ..Default::default()
        };
        let mut b = BaselineState::new(&spec);
        for i in 0..1000 {
            b.update(i as f64, i as f64);
        }
        assert!(b.memory_bytes() <= 2048, "{} bytes", b.memory_bytes());
    }
}
