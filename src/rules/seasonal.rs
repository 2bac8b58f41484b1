//! Seasonal baseline: values are downsampled into fixed buckets, and an MSTL model
//! (augurs; AutoETS trend) is refitted on a schedule in a background thread — never
//! on the tick path. Between refits the baseline reads the last forecast and its
//! prediction interval. Until the first fit (two full periods of data) it falls
//! back to an EWMA.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use augurs::mstl::MSTLModel;
use augurs::{Fit, Predict};
use serde::{Deserialize, Serialize};

use super::baseline::{Estimate, Ewma};

/// Prediction-interval level requested from the model; its half-width is 1.96 σ.
const LEVEL: f64 = 0.95;
const Z95: f64 = 1.96;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeasonalForecast {
    /// Unix time at which the first forecast bucket starts.
    pub start: f64,
    pub point: Vec<f32>,
    pub half_width: Vec<f32>,
}

type Slot = Arc<Mutex<Option<Result<SeasonalForecast, String>>>>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seasonal {
    step: f64,
    periods: Vec<usize>,
    refit_every: f64,
    max_points: usize,
    buckets: VecDeque<f32>,
    /// End time of the newest completed bucket.
    #[serde(with = "super::persist::float")]
    buckets_end: f64,
    #[serde(with = "super::persist::float")]
    acc_start: f64,
    acc_sum: f64,
    acc_n: u32,
    forecast: Option<SeasonalForecast>,
    last_refit: Option<f64>,
    refits: u32,
    fallback: Ewma,
    #[serde(skip)]
    pending: Option<Slot>,
}

impl PartialEq for Seasonal {
    fn eq(&self, other: &Self) -> bool {
        self.buckets == other.buckets && self.forecast == other.forecast && self.fallback == other.fallback
    }
}

static SYNCHRONOUS: AtomicBool = AtomicBool::new(false);

/// Tools that replay recorded series (`rules test`, `replay`) fit inline so results
/// do not depend on thread timing; the daemon never does.
pub fn set_synchronous(on: bool) {
    SYNCHRONOUS.store(on, Ordering::Release);
}

type Job = Box<dyn FnOnce() + Send>;

/// One background thread runs every refit, so refits never compete with ticks for
/// more than one core and never block them.
fn worker() -> Option<&'static Mutex<Sender<Job>>> {
    static WORKER: OnceLock<Option<Mutex<Sender<Job>>>> = OnceLock::new();
    WORKER
        .get_or_init(|| {
            let (tx, rx) = channel::<Job>();
            std::thread::Builder::new()
                .name("netsight-refit".into())
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        job();
                    }
                })
                .ok()
                .map(|_| Mutex::new(tx))
        })
        .as_ref()
}

fn fit(y: Vec<f64>, periods: Vec<usize>, horizon: usize, start: f64) -> Result<SeasonalForecast, String> {
    let trend = augurs::ets::AutoETS::non_seasonal().into_trend_model();
    let model = MSTLModel::new(periods, trend);
    let fitted = model.fit(&y).map_err(|e| e.to_string())?;
    let f = fitted.predict(horizon, LEVEL).map_err(|e| e.to_string())?;
    let half_width = match &f.intervals {
        Some(iv) => iv
            .upper
            .iter()
            .zip(&iv.lower)
            .map(|(u, l)| ((u - l) / 2.0) as f32)
            .collect(),
        None => vec![0.0; f.point.len()],
    };
    Ok(SeasonalForecast {
        start,
        point: f.point.iter().map(|&p| p as f32).collect(),
        half_width,
    })
}

impl Seasonal {
    /// `step`, `periods` and `refit_every` in seconds.
    pub fn new(step: f64, periods: &[f64], refit_every: f64) -> Self {
        let step = step.max(1e-3);
        let periods: Vec<usize> = periods.iter().map(|p| (p / step).round().max(2.0) as usize).collect();
        let longest = periods.iter().copied().max().unwrap_or(2);
        Seasonal {
            step,
            periods,
            refit_every,
            max_points: longest * 3,
            buckets: VecDeque::new(),
            buckets_end: f64::NAN,
            acc_start: f64::NAN,
            acc_sum: 0.0,
            acc_n: 0,
            forecast: None,
            last_refit: None,
            refits: 0,
            fallback: Ewma::new(0.05),
            pending: None,
        }
    }

    pub fn update(&mut self, t: f64, x: f64) {
        self.fallback.update(x);
        if self.acc_start.is_nan() {
            self.acc_start = (t / self.step).floor() * self.step;
        }
        while t >= self.acc_start + self.step {
            self.close_bucket();
        }
        self.acc_sum += x;
        self.acc_n += 1;
        self.poll();
        let longest = self.periods.iter().copied().max().unwrap_or(2);
        if self.buckets.len() >= 2 * longest
            && self.last_refit.is_none_or(|last| t - last >= self.refit_every)
            && self.pending.is_none()
        {
            self.start_refit(t);
        }
    }

    fn close_bucket(&mut self) {
        let v = if self.acc_n > 0 {
            self.acc_sum / self.acc_n as f64
        } else {
            // An empty bucket (missed ticks) repeats the last value: MSTL needs a
            // regular series.
            self.buckets.back().map(|&b| b as f64).unwrap_or(0.0)
        };
        self.buckets.push_back(v as f32);
        while self.buckets.len() > self.max_points {
            self.buckets.pop_front();
        }
        self.acc_start += self.step;
        self.buckets_end = self.acc_start;
        self.acc_sum = 0.0;
        self.acc_n = 0;
    }

    fn start_refit(&mut self, t: f64) {
        self.last_refit = Some(t);
        let y: Vec<f64> = self.buckets.iter().map(|&v| v as f64).collect();
        let periods = self.periods.clone();
        let horizon = ((self.refit_every * 2.0) / self.step).ceil().max(2.0) as usize;
        let start = self.buckets_end;
        let slot: Slot = Arc::new(Mutex::new(None));
        if SYNCHRONOUS.load(Ordering::Acquire) {
            self.install(fit(y, periods, horizon, start));
            return;
        }
        let out = slot.clone();
        let job: Job = Box::new(move || {
            let r = fit(y, periods, horizon, start);
            if let Ok(mut g) = out.lock() {
                *g = Some(r);
            }
        });
        match worker().and_then(|w| w.lock().ok()).map(|tx| tx.send(job)) {
            Some(Ok(())) => self.pending = Some(slot),
            _ => tracing::warn!("seasonal refit worker unavailable"),
        }
    }

    fn install(&mut self, r: Result<SeasonalForecast, String>) {
        match r {
            Ok(f) => {
                self.forecast = Some(f);
                self.refits += 1;
            }
            Err(e) => tracing::debug!(error = %e, "seasonal refit failed; keeping the previous forecast"),
        }
    }

    /// Picks up a finished background refit, if any.
    fn poll(&mut self) {
        let done = self
            .pending
            .as_ref()
            .and_then(|s| s.lock().ok().and_then(|mut g| g.take()));
        if let Some(r) = done {
            self.pending = None;
            self.install(r);
        }
    }

    pub fn estimate(&self, t: f64) -> Option<Estimate> {
        if let Some(f) = &self.forecast {
            let idx = ((t - f.start) / self.step).floor();
            if idx >= 0.0 && (idx as usize) < f.point.len() {
                let i = idx as usize;
                let floor = self.fallback.estimate().map(|e| e.sigma * 0.05).unwrap_or(0.0);
                let sigma = (f.half_width[i] as f64 / Z95).max(floor);
                return Some(Estimate {
                    expected: f.point[i] as f64,
                    sigma,
                });
            }
        }
        self.fallback.estimate()
    }

    pub fn samples(&self) -> u32 {
        self.fallback.samples()
    }

    pub fn refits(&self) -> u32 {
        self.refits
    }

    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * 4
            + self
                .forecast
                .as_ref()
                .map_or(0, |f| (f.point.capacity() + f.half_width.capacity()) * 4)
    }

    /// True while a background refit is running (for tests and the bench).
    pub fn refit_pending(&self) -> bool {
        self.pending.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(i: usize) -> f64 {
        100.0 + 50.0 * ((i % 60) as f64 / 60.0 * std::f64::consts::TAU).sin()
    }

    #[test]
    fn learns_a_daily_like_cycle_and_flags_an_off_cycle_value() {
        set_synchronous(true);
        let mut s = Seasonal::new(1.0, &[60.0], 30.0);
        for i in 0..300 {
            s.update(i as f64, wave(i) + ((i * 7) % 3) as f64);
        }
        assert!(s.refits() >= 1);
        // At the cycle's trough the model expects ~50; a value of 150 (normal at the
        // peak) is far outside the interval there.
        // The last refit (t = 270) forecasts 60 buckets ahead: 285 is a trough.
        let trough = 285;
        let e = s.estimate(trough as f64).expect("estimate");
        assert!((e.expected - wave(trough)).abs() < 10.0, "{e:?} vs {}", wave(trough));
        assert!(e.zscore(150.0) > 5.0, "{e:?}");
        assert!(e.zscore(wave(trough) + 1.0).abs() < 3.0, "{e:?}");
    }
}
