//! The default univariate detector: what `baseline: {model: detector}` uses in rules
//! and what `netsight replay` scores on NAB. One implementation for both, so what
//! scores well on the benchmark is what users run.
//!
//! Each value is judged against what this series has done before, on three features,
//! each with its own forgetting histogram (a memory of a few thousand samples):
//!
//! * **level**: the value itself;
//! * **shift**: the mean of the last 16 values minus the median of the last 32 before
//!   it (a sudden step that stays inside the usual range of values);
//! * **spread**: the median absolute deviation of the last 16 values (a series that
//!   suddenly turns noisy).
//!
//! A feature's evidence is how far it lies outside its usual range — the
//! `[0.1%, 99.9%]` quantiles of its histogram — in units of that range, so it is
//! scale-free: a swing that is routine for a noisy series scores low and the same
//! swing on a quiet one scores high, and one alarm level suits every series. The
//! evidence of the value is the strongest of the three (shift and spread weighted
//! ½), mapped to [0, 1) by `e / (1 + e)`.
//!
//! The emitted score is that evidence at the *first* sample of an excursion; after it,
//! a score is only emitted again once the evidence exceeds three times the recent peak
//! (which fades by 2% a sample). An incident thus gives one early alarm instead of a
//! stream of repeats — what NAB rewards, and what an on-call human wants.
//!
//! State per series: a 64-value ring, sorted copies of the last 32 and 15 values and
//! three 64-bin histograms of f32, about 1.5 KiB, allocated once; an update costs a
//! few hundred nanoseconds. On NAB v1.1 it scores 66.3 (standard profile, whole corpus;
//! BENCHMARKS.md, "Detection quality (NAB)").

use serde::{Deserialize, Serialize};

use super::baseline::Estimate;

/// Tunables. One configuration ([`Params::DEFAULT`]) serves every series; the other
/// values exist for experiments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Samples learned before any score is emitted.
    pub warmup: u32,
    /// Forgetting horizon of the histograms, in samples (counts decay by `1 − 1/horizon`).
    pub horizon: f64,
    /// Mass outside the usual range, on each side.
    pub tail: f64,
    /// Values averaged by the shift feature.
    pub shift_window: usize,
    /// Values before them whose median is the shift feature's reference.
    pub shift_context: usize,
    /// Weight of the shift feature's evidence.
    pub shift_weight: f64,
    /// Values in the spread feature's window.
    pub spread_window: usize,
    /// Weight of the spread feature's evidence.
    pub spread_weight: f64,
    /// Per-sample decay of the remembered peak evidence.
    pub peak_decay: f64,
    /// A new alarm needs evidence above `rearm × the remembered peak`.
    pub rearm: f64,
}

impl Params {
    pub const DEFAULT: Params = Params {
        warmup: 150,
        horizon: 3000.0,
        tail: 0.001,
        shift_window: 16,
        shift_context: 32,
        shift_weight: 0.5,
        spread_window: 16,
        spread_weight: 0.5,
        peak_decay: 0.98,
        rearm: 3.0,
    };
}

impl Default for Params {
    fn default() -> Self {
        Params::DEFAULT
    }
}

/// Values kept for the local features.
const RING: usize = 64;
/// Bins per histogram.
const BINS: usize = 64;
/// Scales a MAD to a normal σ.
const MAD_TO_SIGMA: f64 = 1.4826;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Detector {
    n: u32,
    /// The last `RING` values, oldest overwritten first; `head` is the next slot.
    ring: Vec<f32>,
    head: usize,
    /// The last `shift_context` values, sorted (for their median).
    context: Vec<f32>,
    /// The last `spread_window − 1` values, sorted (for the median and MAD with `x`).
    local: Vec<f32>,
    /// The feature histograms (boxed: most of the state, kept off the enum holding
    /// a rule group's baseline).
    hist: Box<Features>,
    /// Recent peak evidence (fading), for the refractory suppression.
    peak: f64,
}

/// One histogram per feature.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
struct Features {
    level: Histogram,
    shift: Histogram,
    spread: Histogram,
}

impl Default for Detector {
    fn default() -> Self {
        Detector {
            n: 0,
            ring: Vec::new(),
            head: 0,
            context: Vec::new(),
            local: Vec::new(),
            hist: Box::default(),
            peak: 0.0,
        }
    }
}

/// What one value would do to the detector.
struct Step {
    shift: Option<f64>,
    spread: Option<f64>,
    evidence: f64,
    score: f64,
}

impl Detector {
    /// Learns `x` (after scoring it against the past; see [`Detector::observe`]).
    pub fn update(&mut self, x: f64) {
        self.observe(x);
    }

    /// Scores `x` against what came before, then learns it: the replay loop. Equal to
    /// `score(x)` followed by `update(x)`.
    pub fn observe(&mut self, x: f64) -> f64 {
        self.observe_with(x, &Params::DEFAULT)
    }

    /// [`Detector::observe`] with other tunables (experiments only: a detector must
    /// always be driven with the same parameters).
    #[doc(hidden)]
    pub fn observe_with(&mut self, x: f64, p: &Params) -> f64 {
        if !x.is_finite() {
            return 0.0;
        }
        let st = self.step(x, p);
        self.learn(x, &st, p);
        st.score
    }

    /// Anomaly score in [0, 1) of `x` against the current state: high for the first
    /// sample of an excursion beyond the series' usual level, shift or spread; 0 for
    /// ordinary values and for the continuation of an excursion already reported.
    pub fn score(&self, x: f64) -> f64 {
        if !x.is_finite() {
            return 0.0;
        }
        self.step(x, &Params::DEFAULT).score
    }

    /// How far `x` is outside the usual range (the evidence before the refractory
    /// suppression), in [0, 1).
    pub fn evidence(&self, x: f64) -> f64 {
        if !x.is_finite() {
            return 0.0;
        }
        self.step(x, &Params::DEFAULT).evidence
    }

    /// Median and MAD-σ of the recent values, with a quarter of the long-run spread as
    /// a floor so a window that happens to be flat does not make every wiggle an anomaly.
    pub fn estimate(&self) -> Option<Estimate> {
        if self.ring.is_empty() {
            return None;
        }
        let mut buf = [0f32; RING];
        let len = self.ring.len();
        buf[..len].copy_from_slice(&self.ring);
        let (med, mad) = median_mad(&mut buf[..len]);
        let iqr_sigma = (self.hist.level.quantile(0.75) - self.hist.level.quantile(0.25)) / 1.349;
        Some(Estimate {
            expected: med,
            sigma: (mad * MAD_TO_SIGMA).max(0.25 * iqr_sigma),
        })
    }

    pub fn samples(&self) -> u32 {
        self.n
    }

    pub fn heap_bytes(&self) -> usize {
        let counts =
            self.hist.level.counts.capacity() + self.hist.shift.counts.capacity() + self.hist.spread.counts.capacity();
        std::mem::size_of::<Features>()
            + (self.ring.capacity() + self.context.capacity() + self.local.capacity() + counts)
                * std::mem::size_of::<f32>()
    }

    /// Heap plus inline bytes of one series' state.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.heap_bytes()
    }

    fn step(&self, x: f64, p: &Params) -> Step {
        let mut buf = [0f32; RING];
        let shift = self.shift_feature(x, p, &mut buf);
        let spread = self.spread_feature(x, p);
        if self.n < p.warmup {
            return Step {
                shift,
                spread,
                evidence: 0.0,
                score: 0.0,
            };
        }
        let mut e = self.hist.level.excess(x, p.tail, false);
        if let Some(s) = shift {
            e = e.max(p.shift_weight * self.hist.shift.excess(s, p.tail, false));
        }
        if let Some(s) = spread {
            e = e.max(p.spread_weight * self.hist.spread.excess(s, p.tail, true));
        }
        let evidence = e / (1.0 + e);
        let score = if evidence > p.rearm * self.peak { evidence } else { 0.0 };
        Step {
            shift,
            spread,
            evidence,
            score,
        }
    }

    /// Mean of the last `shift_window` values (with `x`) minus the median of the
    /// `shift_context` values before `x`.
    fn shift_feature(&self, x: f64, p: &Params, buf: &mut [f32; RING]) -> Option<f64> {
        let k = p.shift_window.clamp(1, RING);
        let m = p.shift_context.clamp(1, RING);
        if self.ring.len() < k.max(m) || self.context.len() != m {
            return None;
        }
        self.last(k - 1, buf);
        let mean = (x + buf[..k - 1].iter().map(|&v| v as f64).sum::<f64>()) / k as f64;
        Some(mean - self.context[m / 2] as f64)
    }

    /// MAD of the last `spread_window` values, `x` included: merges `x` into the sorted
    /// window, then walks outwards from the median (no sorting per sample).
    fn spread_feature(&self, x: f64, p: &Params) -> Option<f64> {
        let k = p.spread_window.clamp(2, RING);
        if self.local.len() != k - 1 {
            return None;
        }
        let xf = x as f32;
        let pos = self.local.partition_point(|v| v.total_cmp(&xf).is_lt());
        let at = |i: usize| -> f32 {
            match i.cmp(&pos) {
                std::cmp::Ordering::Less => self.local[i],
                std::cmp::Ordering::Equal => xf,
                std::cmp::Ordering::Greater => self.local[i - 1],
            }
        };
        let c = k / 2;
        let med = at(c);
        // The (k/2)-th smallest |v − med|: deviations grow leftwards from c − 1 and
        // rightwards from c.
        let (mut l, mut r) = (c as isize - 1, c);
        let mut dev = 0.0f32;
        for _ in 0..=c {
            let dl = if l >= 0 {
                Some((at(l as usize) - med).abs())
            } else {
                None
            };
            let dr = if r < k { Some((at(r) - med).abs()) } else { None };
            match (dl, dr) {
                (Some(a), Some(b)) if a < b => {
                    dev = a;
                    l -= 1;
                }
                (_, Some(b)) => {
                    dev = b;
                    r += 1;
                }
                (Some(a), None) => {
                    dev = a;
                    l -= 1;
                }
                (None, None) => break,
            }
        }
        Some(dev as f64)
    }

    fn learn(&mut self, x: f64, st: &Step, p: &Params) {
        let m = p.shift_context.clamp(1, RING);
        let k = p.spread_window.clamp(2, RING) - 1;
        let context_out = self.back(m);
        let local_out = self.back(k);
        slide(&mut self.context, m, x as f32, context_out);
        slide(&mut self.local, k, x as f32, local_out);
        if self.ring.len() < RING {
            if self.ring.capacity() < RING {
                self.ring.reserve_exact(RING);
            }
            self.ring.push(x as f32);
            self.head = self.ring.len() % RING;
        } else {
            self.ring[self.head] = x as f32;
            self.head = (self.head + 1) % RING;
        }
        self.hist.level.learn(x, p.horizon);
        if let Some(s) = st.shift {
            self.hist.shift.learn(s, p.horizon);
        }
        if let Some(s) = st.spread {
            self.hist.spread.learn(s, p.horizon);
        }
        self.peak = (self.peak * p.peak_decay).max(st.evidence);
        self.n = self.n.saturating_add(1);
    }

    /// The value `k` samples back (the one leaving a window of the last `k`), if the
    /// ring holds that many.
    fn back(&self, k: usize) -> Option<f32> {
        let len = self.ring.len();
        (k >= 1 && len >= k).then(|| self.ring[(self.head + len - k) % len])
    }

    /// Copies the last `k` values (newest first) into `buf`.
    fn last(&self, k: usize, buf: &mut [f32; RING]) {
        let len = self.ring.len();
        for (i, b) in buf.iter_mut().enumerate().take(k.min(len)) {
            *b = self.ring[(self.head + len - 1 - i) % len];
        }
    }
}

/// Keeps `sorted` the sorted last `cap` values: adds `incoming`, drops `outgoing`
/// (the value leaving the window) once the window is full.
fn slide(sorted: &mut Vec<f32>, cap: usize, incoming: f32, outgoing: Option<f32>) {
    if sorted.capacity() < cap {
        sorted.reserve_exact(cap - sorted.len());
    }
    if sorted.len() >= cap {
        if let Some(out) = outgoing {
            let i = sorted.partition_point(|v| v.total_cmp(&out).is_lt());
            if i < sorted.len() {
                sorted.remove(i);
            }
        }
    }
    if sorted.len() < cap {
        let i = sorted.partition_point(|v| v.total_cmp(&incoming).is_lt());
        sorted.insert(i, incoming);
    }
}

/// Median and MAD of `v` (reorders it).
fn median_mad(v: &mut [f32]) -> (f64, f64) {
    let med = select_median(v);
    for x in v.iter_mut() {
        *x = (*x - med).abs();
    }
    (med as f64, select_median(v) as f64)
}

fn select_median(v: &mut [f32]) -> f32 {
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f32::total_cmp);
    *m
}

/// A histogram over an adaptive range whose counts decay, so it describes roughly the
/// last `horizon` samples. The range grows to take in every new value and shrinks when
/// the mass at its edges has decayed away.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Histogram {
    lo: f64,
    hi: f64,
    counts: Vec<f32>,
    total: f64,
    /// Weight of the next sample (grows, instead of decaying every count).
    weight: f64,
    n: u32,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            lo: 0.0,
            hi: 0.0,
            counts: Vec::new(),
            total: 0.0,
            weight: 1.0,
            n: 0,
        }
    }
}

/// Mass below which an edge bin counts as empty, relative to the total.
const STALE: f64 = 1e-4;

impl Histogram {
    fn width(&self) -> f64 {
        (self.hi - self.lo) / BINS as f64
    }

    /// The value below which a fraction `q` of the mass lies (uniform within a bin).
    /// Scans from the nearer end, so the tail quantiles cost a few bins.
    fn quantile(&self, q: f64) -> f64 {
        if self.total <= 0.0 || self.counts.is_empty() {
            return self.lo;
        }
        let w = self.width();
        if q <= 0.5 {
            let target = q * self.total;
            let mut acc = 0.0;
            for (i, &c) in self.counts.iter().enumerate() {
                let c = c as f64;
                if c > 0.0 && acc + c >= target {
                    return self.lo + (i as f64 + ((target - acc) / c).clamp(0.0, 1.0)) * w;
                }
                acc += c;
            }
            self.hi
        } else {
            let target = (1.0 - q) * self.total;
            let mut acc = 0.0;
            for (i, &c) in self.counts.iter().enumerate().rev() {
                let c = c as f64;
                if c > 0.0 && acc + c >= target {
                    return self.lo + (i as f64 + 1.0 - ((target - acc) / c).clamp(0.0, 1.0)) * w;
                }
                acc += c;
            }
            self.lo
        }
    }

    /// How far `x` lies beyond the `[tail, 1 − tail]` quantile range, in units of that
    /// range (0 inside it). `upper`: only the upper side counts.
    fn excess(&self, x: f64, tail: f64, upper: bool) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let hi = self.quantile(1.0 - tail);
        let lo = self.quantile(tail);
        let beyond = if upper { x - hi } else { (x - hi).max(lo - x) };
        if beyond <= 0.0 || self.common(x, tail) {
            return 0.0;
        }
        let range = (hi - lo)
            .max(f64::EPSILON * hi.abs().max(lo.abs()))
            .max(f64::MIN_POSITIVE);
        beyond / range
    }

    /// Whether `x` falls in a bin that holds more than the tail mass (the quantiles
    /// interpolate inside bins, so a value at the edge of a well-populated bin, like the
    /// only value of a constant series, would otherwise look slightly outside).
    fn common(&self, x: f64, tail: f64) -> bool {
        let w = self.width();
        if x < self.lo || x > self.hi {
            return false;
        }
        let b = if w > 0.0 {
            (((x - self.lo) / w) as usize).min(BINS - 1)
        } else {
            0
        };
        self.counts.get(b).is_some_and(|&c| c as f64 > tail * self.total)
    }

    fn learn(&mut self, x: f64, horizon: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0.0; BINS];
            self.lo = x;
            self.hi = x;
        }
        if x < self.lo || x >= self.hi {
            let span = (self.hi.max(x) - self.lo.min(x)).max(x.abs() * 1e-9).max(1e-12);
            let hi = if x >= self.hi { x + span * 1e-6 } else { self.hi };
            self.rebin(self.lo.min(x), hi);
        }
        let w = self.width();
        let b = if w > 0.0 {
            (((x - self.lo) / w) as usize).min(BINS - 1)
        } else {
            0
        };
        self.counts[b] += self.weight as f32;
        self.total += self.weight;
        self.n = self.n.saturating_add(1);
        self.weight /= 1.0 - 1.0 / horizon.max(2.0);
        if self.weight > 1e6 {
            for c in &mut self.counts {
                *c /= self.weight as f32;
            }
            self.total /= self.weight;
            self.weight = 1.0;
        }
        if self.n % 16 == 0 {
            self.shrink();
        }
    }

    /// Drops edge bins whose mass has decayed away, once they make up half the range.
    fn shrink(&mut self) {
        let eps = self.total * STALE;
        let first = self.counts.iter().position(|&c| c as f64 > eps).unwrap_or(0);
        let last = self.counts.iter().rposition(|&c| c as f64 > eps).unwrap_or(BINS - 1);
        if last + 1 - first > BINS / 2 {
            return;
        }
        let w = self.width();
        let (lo, hi) = (self.lo + first as f64 * w, self.lo + (last + 1) as f64 * w);
        for (i, c) in self.counts.iter_mut().enumerate() {
            if i < first || i > last {
                self.total -= *c as f64;
                *c = 0.0;
            }
        }
        self.rebin(lo, hi);
    }

    /// Moves the counts onto `[lo, hi)`, spreading each old bin uniformly over the new
    /// bins it overlaps.
    fn rebin(&mut self, lo: f64, hi: f64) {
        let (old_lo, old_w) = (self.lo, self.width());
        self.lo = lo;
        self.hi = hi;
        let new_w = self.width();
        let mut next = [0f32; BINS];
        for (i, &c) in self.counts.iter().enumerate() {
            if c == 0.0 {
                continue;
            }
            let a = old_lo + i as f64 * old_w;
            if old_w <= 0.0 || new_w <= 0.0 {
                let k = if new_w > 0.0 {
                    (((a - lo) / new_w) as usize).min(BINS - 1)
                } else {
                    0
                };
                next[k] += c;
                continue;
            }
            let b = a + old_w;
            let ka = (((a - lo) / new_w).floor().max(0.0) as usize).min(BINS - 1);
            let kb = (((b - lo) / new_w).ceil().max(1.0) as usize).min(BINS);
            for (k, slot) in next.iter_mut().enumerate().take(kb).skip(ka) {
                let l = (lo + k as f64 * new_w).max(a);
                let r = (lo + (k + 1) as f64 * new_w).min(b);
                if r > l {
                    *slot += c * ((r - l) / old_w) as f32;
                }
            }
        }
        self.counts.copy_from_slice(&next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic noise in [−1, 1].
    fn noise(i: u64) -> f64 {
        let mut z = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) as f64 / u64::MAX as f64) * 2.0 - 1.0
    }

    #[test]
    fn a_spike_scores_high_once_and_noise_stays_low() {
        let mut d = Detector::default();
        let mut max_normal: f64 = 0.0;
        for i in 0..2000 {
            let s = d.observe(100.0 + 5.0 * noise(i));
            if i > 200 {
                max_normal = max_normal.max(s);
            }
        }
        assert!(max_normal < 0.2, "ordinary noise scored {max_normal}");
        let first = d.observe(160.0);
        assert!(first > 0.8, "spike scored {first}");
        assert!(d.evidence(161.0) > 0.8, "the evidence stays high");
        let again = d.observe(161.0);
        assert_eq!(again, 0.0, "but the same excursion is reported once");
        // Once the spike has aged out of the series' memory, a new excursion is
        // reported again.
        for i in 0..3000 {
            d.observe(100.0 + 5.0 * noise(10_000 + i));
        }
        assert!(d.observe(60.0) > 0.7, "a later excursion is reported again");
    }

    #[test]
    fn a_step_inside_the_range_and_a_burst_of_noise_are_seen() {
        // A slow wave between 10 and 90; a sudden step from 50 to 80 stays inside the
        // usual range of values, but not of shifts.
        let wave = |i: u64| 50.0 + 40.0 * (i as f64 * std::f64::consts::TAU / 2000.0).sin() + noise(i);
        let mut d = Detector::default();
        for i in 0..4000 {
            d.observe(wave(i));
        }
        let mut best: f64 = 0.0;
        for i in 0..16 {
            best = best.max(d.observe(80.0 + noise(50_000 + i)));
        }
        assert!(best > 0.1, "a sudden step scored {best}");
        // Quiet noise, then the same mean with five times the noise.
        let mut d = Detector::default();
        for i in 0..3000 {
            d.observe(20.0 + 0.2 * noise(i));
        }
        let mut best: f64 = 0.0;
        for i in 0..20 {
            best = best.max(d.observe(20.0 + noise(70_000 + i)));
        }
        assert!(best > 0.3, "a burst of noise scored {best}");
    }

    #[test]
    fn score_matches_observe_and_estimate_tracks_level() {
        let mut d = Detector::default();
        for i in 0..500 {
            let x = 10.0 + noise(i);
            let s = d.score(x);
            assert_eq!(s, d.observe(x));
        }
        let e = d.estimate().expect("estimate");
        assert!((e.expected - 10.0).abs() < 0.5, "{e:?}");
        assert!(e.sigma > 0.1 && e.sigma < 2.0, "{e:?}");
        assert_eq!(d.samples(), 500);
    }

    #[test]
    fn constant_series_then_change() {
        let mut d = Detector::default();
        for _ in 0..1000 {
            assert_eq!(d.observe(3.0), 0.0);
        }
        assert!(d.observe(4.0) > 0.9);
        assert_eq!(d.observe(f64::NAN), 0.0, "non-finite values are ignored");
        assert_eq!(d.samples(), 1001);
    }

    #[test]
    fn state_is_small_and_bounded() {
        let mut d = Detector::default();
        assert!(d.estimate().is_none());
        for i in 0..100_000 {
            d.observe(i as f64 * noise(i).abs());
        }
        assert!(d.memory_bytes() <= 2048, "{} bytes", d.memory_bytes());
        let json = serde_json::to_string(&d).expect("serialize");
        let mut back: Detector = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back.samples(), d.samples());
        for x in [5e4, 2e5, -1.0] {
            assert!((back.observe(x) - d.observe(x)).abs() < 1e-9);
        }
    }

    #[test]
    fn histogram_quantiles_follow_the_data() {
        let mut h = Histogram::default();
        for i in 0..10_000 {
            h.learn((i % 100) as f64, 3000.0);
        }
        assert!((h.quantile(0.5) - 50.0).abs() < 3.0, "{}", h.quantile(0.5));
        assert!((h.quantile(0.9) - 90.0).abs() < 3.0, "{}", h.quantile(0.9));
        assert!(h.quantile(0.999) <= 100.0 && h.quantile(0.001) >= 0.0);
        assert_eq!(h.excess(50.0, 0.001, false), 0.0);
        assert!(h.excess(200.0, 0.001, false) > 0.9);
        assert!(h.excess(-100.0, 0.001, false) > 0.9);
        assert_eq!(h.excess(-100.0, 0.001, true), 0.0);
        // A far outlier widens the range; once it has decayed, the range shrinks back.
        h.learn(1e6, 3000.0);
        for i in 0..30_000 {
            h.learn((i % 100) as f64, 3000.0);
        }
        assert!(h.hi < 1e4, "{}", h.hi);
    }
}
