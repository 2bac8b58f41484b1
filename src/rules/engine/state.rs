//! What the engine keeps per label group between ticks (and persists), and the
//! re-baselining that rewrites it after a level shift.

use std::sync::Arc;

use super::outputs::OutLabels;
use crate::rules::baseline::{BaselineState, Estimate};
use crate::rules::events::CauseReport;
use crate::rules::load::CompiledRule;
use crate::snapshot::LabelValue;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) enum Phase {
    Inactive,
    Pending { since: f64 },
    Firing { since: f64 },
    Resolving { firing_since: f64, since: f64 },
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct GroupState {
    /// Shared by the groups a rule discovers in the same tick.
    pub(super) names: Arc<[String]>,
    pub(super) values: Box<[LabelValue]>,
    pub(super) phase: Phase,
    pub(super) evaluations: u32,
    pub(super) last_resolved: Option<f64>,
    pub(super) baseline: Option<BaselineState>,
    #[serde(skip)]
    pub(super) event: Option<u64>,
    /// Boxed: rarely set, and inline it would add 120 bytes to every group.
    pub(super) cause: Option<Box<CauseReport>>,
    #[serde(skip, default = "nan")]
    pub(super) value: f64,
    #[serde(skip)]
    pub(super) estimate: Option<Estimate>,
    pub(super) missing: u32,
    /// Recent values for changepoint detection: (deciseconds since `recent_base`,
    /// value), 8 bytes a point.
    #[serde(default)]
    pub(super) recent: std::collections::VecDeque<(u32, f32)>,
    #[serde(default = "nan", with = "crate::rules::persist::float")]
    pub(super) recent_base: f64,
    /// Output label vectors, built once per group (scrapes of 10k groups then copy
    /// no strings).
    #[serde(skip)]
    pub(super) out: Option<OutLabels>,
    /// The engine tick that last saw this group (replaces a per-tick "seen" set).
    #[serde(skip)]
    pub(super) seen: u64,
}

/// Values kept per group for level-shift detection.
pub(super) const RECENT: usize = 64;
/// Values needed after a shift before re-baselining on it.
pub(super) const MIN_AFTER_SHIFT: usize = 8;

pub(super) fn nan() -> f64 {
    f64::NAN
}

impl GroupState {
    pub(super) fn new(names: Arc<[String]>, values: Box<[LabelValue]>, rule: &CompiledRule) -> Self {
        GroupState {
            names,
            values,
            phase: Phase::Inactive,
            evaluations: 0,
            last_resolved: None,
            baseline: rule.spec.baseline.as_ref().map(BaselineState::new),
            event: None,
            cause: None,
            value: f64::NAN,
            estimate: None,
            missing: 0,
            recent: std::collections::VecDeque::new(),
            recent_base: f64::NAN,
            out: None,
            seen: 0,
        }
    }

    pub(super) fn firing(&self) -> bool {
        matches!(self.phase, Phase::Firing { .. } | Phase::Resolving { .. })
    }
}

/// After a baseline rule has fired for `rebaseline_after`, a level shift found in the
/// recent values means a new normal: re-learn the baseline from the values since the
/// shift and end the alert. Returns true when it did.
pub(super) fn rebaseline(st: &mut GroupState, spec: &crate::rules::schema::RuleSpec, now: f64) -> bool {
    let Some(b) = spec.baseline.as_ref() else { return false };
    let after = b.rebaseline_after.as_secs_f64();
    let since = match st.phase {
        Phase::Firing { since }
        | Phase::Resolving {
            firing_since: since, ..
        } => since,
        _ => return false,
    };
    if after <= 0.0 || now - since < after {
        return false;
    }
    let values: Vec<f64> = st.recent.iter().map(|p| p.1 as f64).collect();
    let Some(i) = crate::rules::changepoint::level_shift(&values, MIN_AFTER_SHIFT) else {
        return false;
    };
    let mut fresh = BaselineState::new(b);
    let at = |off: u32| st.recent_base + off as f64 / 10.0;
    for &(off, v) in st.recent.iter().skip(i) {
        fresh.update(at(off), v as f64);
    }
    st.baseline = Some(fresh);
    st.phase = Phase::Inactive;
    tracing::info!(rule = %spec.name, shift_at = st.recent.get(i).map(|p| at(p.0)), "level shift: baseline re-learned from the new level");
    true
}
