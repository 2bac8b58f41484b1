//! NAB's scoring, reimplemented from its published description (NAB v1.1, `nab/sweeper.py`
//! semantics):
//!
//! * `n` rows; the first `min(floor(0.15·n), 750)` rows are probationary, never scored.
//! * `S(x) = 2/(1+e^(5x)) − 1` (a scaled sigmoid), `S(x) = −1` for `x ≥ 3`.
//! * A detected row `i` inside a window `[l, r]` (width `w = r−l+1`) is worth
//!   `tp · S(−(r−i+1)/w) / S(−1)`: `tp` at the window's first row, falling towards 0 at
//!   its end. Only the best (earliest) detection of a window counts; a window with no
//!   detection costs `−fn`.
//! * A detected row outside every window costs `fp · S(|i − r'| / (w' − 1))` where `r'`
//!   and `w'` are the right edge and width of the last window before it (a false alarm
//!   just after a window costs less), or `−fp` when no window precedes it. False alarms
//!   add up.
//! * A row is detected when its anomaly score is ≥ the threshold. One threshold per
//!   profile for the whole corpus: the one that maximises the corpus total, found by
//!   sweeping every distinct score from high to low.
//! * Reported score `100 · (R − R_null) / (R_perfect − R_null)`, with `R_null = −fn · W`
//!   (never fires) and `R_perfect = tp · W` (every window detected at its start).

/// Weights of one application profile (NAB's cost matrix; the TN weight is unused).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    pub name: &'static str,
    pub tp: f64,
    pub fp: f64,
    pub fn_: f64,
}

pub const STANDARD: Profile = Profile {
    name: "standard",
    tp: 1.0,
    fp: 0.11,
    fn_: 1.0,
};
pub const REWARD_LOW_FP: Profile = Profile {
    name: "reward_low_FP_rate",
    tp: 1.0,
    fp: 0.22,
    fn_: 1.0,
};
pub const REWARD_LOW_FN: Profile = Profile {
    name: "reward_low_FN_rate",
    tp: 1.0,
    fp: 0.11,
    fn_: 2.0,
};
pub const PROFILES: [Profile; 3] = [STANDARD, REWARD_LOW_FP, REWARD_LOW_FN];

/// The threshold that detects nothing (NAB starts its sweep there).
pub const NO_DETECTION: f64 = 1.1;

/// NAB's scaled sigmoid of a relative position (−1 = a window's first row, 0 = just
/// past its end, > 0 = after it).
pub fn scaled_sigmoid(x: f64) -> f64 {
    if x >= 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * x).exp()) - 1.0
    }
}

/// Rows at the start of a series that are never scored.
pub fn probationary_rows(n: usize) -> usize {
    ((0.15 * n as f64).floor() as usize).min(750)
}

/// One series to score: one anomaly score per row and its anomaly windows (inclusive
/// row ranges, in order, not overlapping).
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    pub scores: &'a [f64],
    pub windows: &'a [(usize, usize)],
}

/// What detecting a row is worth, before the profile's weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Role {
    /// In the probationary period: ignored.
    Probation,
    /// Inside window `window` (index in the series): `S(pos)/S(−1)`, in (0, 1].
    Window { window: usize, value: f64 },
    /// Outside every window: `S(pos)`, in [−1, 0).
    Outside { value: f64 },
}

impl Role {
    fn weighted(self, p: &Profile) -> f64 {
        match self {
            Role::Probation => 0.0,
            Role::Window { value, .. } => value * p.tp,
            Role::Outside { value } => value * p.fp,
        }
    }
}

/// The role of every row of a series of `n` rows.
pub fn roles(n: usize, windows: &[(usize, usize)]) -> Vec<Role> {
    let probation = probationary_rows(n);
    let max_tp = scaled_sigmoid(-1.0);
    let mut out = Vec::with_capacity(n);
    let mut next = 0; // next window to enter
    let mut prev: Option<(usize, usize)> = None; // (right edge, width) of the last window passed
    for i in 0..n {
        while next < windows.len() && windows[next].1 < i {
            let (l, r) = windows[next];
            prev = Some((r, r - l + 1));
            next += 1;
        }
        let role = match windows.get(next) {
            Some(&(l, r)) if l <= i => {
                let w = (r - l + 1) as f64;
                let pos = -((r - i + 1) as f64) / w;
                Role::Window {
                    window: next,
                    value: scaled_sigmoid(pos) / max_tp,
                }
            }
            _ => {
                let pos = match prev {
                    Some((r, w)) if w > 1 => (i - r) as f64 / (w - 1) as f64,
                    _ => 3.0,
                };
                Role::Outside {
                    value: scaled_sigmoid(pos),
                }
            }
        };
        out.push(if i < probation { Role::Probation } else { role });
    }
    out
}

/// One series' score at a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SeriesScore {
    pub raw: f64,
    /// Windows with at least one detection.
    pub detected: usize,
    pub missed: usize,
    /// Detected rows outside windows.
    pub fp_rows: usize,
}

/// Scores one series at `threshold` (rows with score ≥ threshold are detections).
pub fn score_series(s: &Series, profile: &Profile, threshold: f64) -> SeriesScore {
    let roles = roles(s.scores.len(), s.windows);
    let mut best: Vec<Option<f64>> = vec![None; s.windows.len()];
    let mut scorable = vec![false; s.windows.len()];
    let mut out = SeriesScore::default();
    for (role, &score) in roles.iter().zip(s.scores) {
        if let Role::Window { window, .. } = role {
            scorable[*window] = true;
        }
        if score.is_nan() || score < threshold {
            continue;
        }
        match *role {
            Role::Probation => {}
            Role::Window { window, .. } => {
                let v = role.weighted(profile);
                best[window] = Some(best[window].map_or(v, |b: f64| b.max(v)));
            }
            Role::Outside { .. } => {
                out.raw += role.weighted(profile);
                out.fp_rows += 1;
            }
        }
    }
    for (b, ok) in best.iter().zip(&scorable) {
        match (b, ok) {
            (Some(v), _) => {
                out.raw += v;
                out.detected += 1;
            }
            (None, true) => {
                out.raw -= profile.fn_;
                out.missed += 1;
            }
            (None, false) => {}
        }
    }
    out
}

/// A profile's result on a corpus at its optimised threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileResult {
    pub profile: Profile,
    pub threshold: f64,
    pub raw: f64,
    pub windows: usize,
    /// `100 · (raw − null) / (perfect − null)`.
    pub score: f64,
}

/// `100 · (raw − null) / (perfect − null)` with null = `−fn·windows`, perfect = `tp·windows`.
pub fn normalize(raw: f64, windows: usize, p: &Profile) -> f64 {
    let null = -p.fn_ * windows as f64;
    let perfect = p.tp * windows as f64;
    if perfect > null {
        100.0 * (raw - null) / (perfect - null)
    } else {
        0.0
    }
}

/// Scores a corpus at a given threshold.
pub fn score_corpus(series: &[Series], profile: &Profile, threshold: f64) -> ProfileResult {
    let raw = series.iter().map(|s| score_series(s, profile, threshold).raw).sum();
    let windows = series.iter().map(|s| s.windows.len()).sum();
    ProfileResult {
        profile: *profile,
        threshold,
        raw,
        windows,
        score: normalize(raw, windows, profile),
    }
}

/// Finds the threshold that maximises the corpus total (ties: the highest threshold)
/// and returns the result there.
pub fn optimize(series: &[Series], profile: &Profile) -> ProfileResult {
    // Every scorable row as (score, window id in the corpus or none, weighted value).
    let mut rows: Vec<(f64, Option<usize>, f64)> = Vec::new();
    let mut window_base = 0;
    let mut scorable_windows = vec![];
    for s in series {
        let mut seen = vec![false; s.windows.len()];
        for (role, &score) in roles(s.scores.len(), s.windows).iter().zip(s.scores) {
            let score = if score.is_nan() { 0.0 } else { score };
            match *role {
                Role::Probation => {}
                Role::Window { window, .. } => {
                    seen[window] = true;
                    rows.push((score, Some(window_base + window), role.weighted(profile)));
                }
                Role::Outside { .. } => rows.push((score, None, role.weighted(profile))),
            }
        }
        scorable_windows.extend(seen);
        window_base += s.windows.len();
    }
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let fn_cost = -profile.fn_;
    let mut best_in: Vec<f64> = vec![fn_cost; window_base];
    let mut total: f64 = scorable_windows.iter().filter(|&&s| s).count() as f64 * fn_cost;
    let (mut best_total, mut best_threshold) = (total, NO_DETECTION);
    let mut i = 0;
    while i < rows.len() {
        let threshold = rows[i].0;
        while i < rows.len() && rows[i].0 == threshold {
            let (_, window, v) = rows[i];
            match window {
                Some(w) if v > best_in[w] => {
                    total += v - best_in[w];
                    best_in[w] = v;
                }
                Some(_) => {}
                None => total += v,
            }
            i += 1;
        }
        if total > best_total {
            best_total = total;
            best_threshold = threshold;
        }
    }
    // Report the exact sum at that threshold (the sweep's running total accumulates
    // rounding differently).
    score_corpus(series, profile, best_threshold)
}

/// Event-level view at one threshold: a window with a detection is a true positive, a
/// contiguous run of detected rows outside windows is one false positive.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EventMetrics {
    pub windows: usize,
    pub detected: usize,
    pub false_events: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Mean rows from a detected window's start to its first detection.
    pub mean_delay_rows: f64,
    /// The same in % of the window's width (windows are centred on the labelled
    /// anomaly, so 50% is "at the anomaly").
    pub mean_delay_pct: f64,
}

pub fn event_metrics(series: &[Series], threshold: f64) -> EventMetrics {
    let mut m = EventMetrics::default();
    let (mut delay_rows, mut delay_pct) = (0.0, 0.0);
    for s in series {
        let p = probationary_rows(s.scores.len());
        let hit = |i: usize| i >= p && s.scores[i] >= threshold;
        for &(l, r) in s.windows {
            m.windows += 1;
            if let Some(first) = (l..=r.min(s.scores.len().saturating_sub(1))).find(|&i| hit(i)) {
                m.detected += 1;
                delay_rows += (first - l) as f64;
                delay_pct += 100.0 * (first - l) as f64 / (r - l + 1) as f64;
            }
        }
        let inside = |i: usize| s.windows.iter().any(|&(l, r)| l <= i && i <= r);
        let mut in_run = false;
        for i in 0..s.scores.len() {
            let fp = hit(i) && !inside(i);
            if fp && !in_run {
                m.false_events += 1;
            }
            in_run = fp;
        }
    }
    let claimed = m.detected + m.false_events;
    m.precision = if claimed > 0 {
        m.detected as f64 / claimed as f64
    } else {
        0.0
    };
    m.recall = if m.windows > 0 {
        m.detected as f64 / m.windows as f64
    } else {
        0.0
    };
    m.f1 = if m.precision + m.recall > 0.0 {
        2.0 * m.precision * m.recall / (m.precision + m.recall)
    } else {
        0.0
    };
    if m.detected > 0 {
        m.mean_delay_rows = delay_rows / m.detected as f64;
        m.mean_delay_pct = delay_pct / m.detected as f64;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPS: f64 = 1e-9;

    /// 100 rows (15 probationary), one window over rows 40..=49.
    fn one(scores: &[f64]) -> Vec<f64> {
        scores.to_vec()
    }

    fn at(pairs: &[(usize, f64)]) -> Vec<f64> {
        let mut v = vec![0.0; 100];
        for &(i, s) in pairs {
            v[i] = s;
        }
        one(&v)
    }

    const W: &[(usize, usize)] = &[(40, 49)];

    #[test]
    fn sigmoid_matches_nab() {
        assert!((scaled_sigmoid(-1.0) - 0.986_614_298_151_430_3).abs() < EPS);
        assert!((scaled_sigmoid(-0.5) - 0.848_283_639_957_512_7).abs() < EPS);
        assert!(scaled_sigmoid(0.0).abs() < EPS);
        assert_eq!(scaled_sigmoid(3.0), -1.0);
        assert_eq!(probationary_rows(100), 15);
        assert_eq!(probationary_rows(22_695), 750);
    }

    #[test]
    fn perfect_and_null_detectors() {
        let perfect = at(&[(40, 1.0)]);
        let s = [Series {
            scores: &perfect,
            windows: W,
        }];
        for p in PROFILES {
            let r = optimize(&s, &p);
            assert!((r.score - 100.0).abs() < EPS, "{p:?}: {r:?}");
            assert_eq!(r.threshold, 1.0);
        }
        let null = vec![0.0; 100];
        let s = [Series {
            scores: &null,
            windows: W,
        }];
        for p in PROFILES {
            let r = optimize(&s, &p);
            assert!(r.score.abs() < EPS, "{p:?}: {r:?}");
            assert_eq!(r.threshold, NO_DETECTION);
        }
    }

    #[test]
    fn late_detection_earns_less() {
        // Last row of the window: S(−1/10)/S(−1) = 0.244918662 / 0.986614298.
        let late = at(&[(49, 1.0)]);
        let s = [Series {
            scores: &late,
            windows: W,
        }];
        let r = optimize(&s, &STANDARD);
        let tp = 0.244_918_662_403_709_1 / 0.986_614_298_151_430_3;
        assert!((r.raw - tp).abs() < 1e-9, "{r:?}");
        assert!((r.score - 100.0 * (tp + 1.0) / 2.0).abs() < 1e-7, "{r:?}");
        // Halfway (row 45, position −0.5): 0.84828/0.98661 = 0.85979.
        let mid = at(&[(45, 1.0)]);
        let r = optimize(
            &[Series {
                scores: &mid,
                windows: W,
            }],
            &STANDARD,
        );
        assert!((r.raw - 0.859_792_566_909_783_7).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn false_positives_cost_by_profile() {
        // A false alarm before the window (score 1.0) and a detection mid-window (0.9).
        let v = at(&[(20, 1.0), (45, 0.9)]);
        let s = [Series { scores: &v, windows: W }];
        let mid = 0.859_792_566_909_783_7;
        let r = optimize(&s, &STANDARD);
        assert_eq!(r.threshold, 0.9);
        assert!((r.raw - (mid - 0.11)).abs() < 1e-9, "{r:?}");
        assert!((r.score - 100.0 * (mid - 0.11 + 1.0) / 2.0).abs() < 1e-7);
        let r = optimize(&s, &REWARD_LOW_FP);
        assert!((r.raw - (mid - 0.22)).abs() < 1e-9, "{r:?}");
        let r = optimize(&s, &REWARD_LOW_FN);
        assert!((r.raw - (mid - 0.11)).abs() < 1e-9, "{r:?}");
        assert!((r.score - 100.0 * (mid - 0.11 + 2.0) / 3.0).abs() < 1e-7, "{r:?}");
        // At threshold 1.0 only the false alarm fires: −0.11 − 1.
        let r = score_corpus(&s, &STANDARD, 1.0);
        assert!((r.raw + 1.11).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn false_positive_after_a_window_costs_less() {
        // Row 60: |49 − 60| / (10 − 1) = 1.2222 → S = −0.99557, × 0.11; row 51: 2/9 → S = −0.50467.
        let v = at(&[(40, 1.0), (60, 1.0), (51, 1.0)]);
        let r = score_corpus(&[Series { scores: &v, windows: W }], &STANDARD, 1.0);
        let fp60 = scaled_sigmoid(11.0 / 9.0) * 0.11;
        let fp51 = scaled_sigmoid(2.0 / 9.0) * 0.11;
        assert!((fp60 + 0.109_513_101).abs() < 1e-6, "{fp60}");
        assert!((fp51 + 0.055_513_964).abs() < 1e-6, "{fp51}");
        assert!((r.raw - (1.0 + fp60 + fp51)).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn one_detection_per_window_and_probation_ignored() {
        // Several detections in the window count once (the earliest); a detection in the
        // probationary period (row 5) costs nothing.
        let v = at(&[(5, 1.0), (42, 1.0), (43, 1.0), (47, 1.0)]);
        let r = score_corpus(&[Series { scores: &v, windows: W }], &STANDARD, 1.0);
        let tp = scaled_sigmoid(-8.0 / 10.0) / scaled_sigmoid(-1.0);
        assert!((r.raw - tp).abs() < 1e-12, "{r:?}");
        let e = event_metrics(&[Series { scores: &v, windows: W }], 1.0);
        assert_eq!((e.detected, e.false_events), (1, 0));
        assert!((e.mean_delay_rows - 2.0).abs() < EPS && (e.mean_delay_pct - 20.0).abs() < EPS);
    }

    #[test]
    fn threshold_is_optimised_over_the_corpus() {
        // Series A: window hit at 0.8, a false alarm at 0.9. Series B: window hit at 0.7,
        // three false alarms at 0.75. Best: 0.7 (both windows, 4 false alarms).
        let a = at(&[(40, 0.8), (30, 0.9)]);
        let b = at(&[(40, 0.7), (20, 0.75), (21, 0.75), (22, 0.75)]);
        let s = [Series { scores: &a, windows: W }, Series { scores: &b, windows: W }];
        let r = optimize(&s, &STANDARD);
        assert_eq!(r.threshold, 0.7);
        assert!((r.raw - (2.0 - 4.0 * 0.11)).abs() < 1e-9, "{r:?}");
        assert_eq!(r.windows, 2);
        assert!((r.score - 100.0 * (2.0 - 0.44 + 2.0) / 4.0).abs() < 1e-7);
        let e = event_metrics(&s, r.threshold);
        assert_eq!(
            (e.windows, e.detected, e.false_events),
            (2, 2, 2),
            "runs of false alarms coalesce"
        );
        assert!((e.precision - 0.5).abs() < EPS && (e.recall - 1.0).abs() < EPS);
        assert!((e.f1 - 2.0 / 3.0).abs() < EPS);
    }
}
