//! Evaluates the loaded rules against each snapshot and its history.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::baseline::{BaselineState, Estimate};
use super::events::{CauseReport, Event, EventLog};
use super::expr::{Bindings, CompiledExpr, WindowFn};
use super::load::{CompiledRule, RuleSet};
use super::template::{format_value, render};
use crate::catalog::{CollectorDoc, MetricDesc, MetricKind};
use rustc_hash::{FxBuildHasher, FxHasher};

use crate::snapshot::{Emitter, Family, History, LabelValue, LabelValues, Ring, Sample, Snapshot};

/// A rule's group states keyed by [`group_hash`] (already a hash: not hashed again).
type StateMap = HashMap<u64, GroupState, FxBuildHasher>;

const G: MetricKind = MetricKind::Gauge;
const DYN: &[&str] = &["rule", "severity", "layer", "<group labels>"];

pub static ANOMALY: MetricDesc = MetricDesc::new(
    "netsight_anomaly",
    G,
    "",
    "1 while the rule fires for this group, 0 otherwise.",
    DYN,
    "netsight.anomaly",
);
pub static SCORE: MetricDesc = MetricDesc::new(
    "netsight_anomaly_score",
    G,
    "",
    "Signed distance of the rule's value from its baseline, in σ (baseline rules only).",
    DYN,
    "netsight.anomaly.score",
);
pub static VALUE: MetricDesc = MetricDesc::new(
    "netsight_rule_value",
    G,
    "",
    "The rule expression's current value for this group.",
    DYN,
    "netsight.rule.value",
);
pub static BASELINE: MetricDesc = MetricDesc::new(
    "netsight_baseline",
    G,
    "",
    "Learned baseline of the rule's value: bound=lower|expected|upper.",
    &["rule", "severity", "layer", "<group labels>", "bound"],
    "netsight.baseline",
);
pub static ROOT_CAUSE: MetricDesc = MetricDesc::new(
    "netsight_root_cause",
    G,
    "",
    "1 while the rule fires with this root cause attached; layer is the cause's layer.",
    &["rule", "severity", "layer", "<group labels>", "cause"],
    "netsight.root_cause",
);
pub static EVAL_DURATION: MetricDesc = MetricDesc::new(
    "netsight_rule_evaluation_duration_seconds",
    G,
    "seconds",
    "Wall time of the last evaluation of all rules.",
    &[],
    "netsight.rule.evaluation.duration",
);
pub static RULE_ERRORS: MetricDesc = MetricDesc::new(
    "netsight_rule_errors_total",
    MetricKind::Counter,
    "",
    "Evaluations of the rule that failed (expression error).",
    &["rule"],
    "netsight.rule.errors",
);
pub static RULES_LOADED: MetricDesc = MetricDesc::new(
    "netsight_rules_loaded",
    G,
    "",
    "Rules currently loaded.",
    &[],
    "netsight.rules.loaded",
);
pub static RELOAD_OK: MetricDesc = MetricDesc::new(
    "netsight_rules_last_reload_success",
    G,
    "",
    "1 when the last rule (re)load succeeded; 0 when it failed and the previous rules were kept.",
    &[],
    "netsight.rules.last_reload.success",
);
pub static RELOAD_TIME: MetricDesc = MetricDesc::new(
    "netsight_rules_last_reload_timestamp_seconds",
    G,
    "seconds",
    "Unix time of the last rule (re)load attempt.",
    &[],
    "netsight.rules.last_reload.timestamp",
);
pub static GROUPS: MetricDesc = MetricDesc::new(
    "netsight_rule_groups",
    G,
    "",
    "Label groups the rule is tracking (each with its own baseline).",
    &["rule"],
    "netsight.rule.groups",
);

pub static DOC: CollectorDoc = CollectorDoc {
    collector: "rules",
    source: "the rule engine (rules/*.yaml and rules.d paths); <group labels> stands for the union of the loaded rules' group labels",
    capabilities: "none",
    metrics: &[&ANOMALY, &SCORE, &VALUE, &BASELINE, &ROOT_CAUSE, &EVAL_DURATION, &RULE_ERRORS, &RULES_LOADED, &RELOAD_OK, &RELOAD_TIME, &GROUPS],
    dynamic: &[],
};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
enum Phase {
    Inactive,
    Pending { since: f64 },
    Firing { since: f64 },
    Resolving { firing_since: f64, since: f64 },
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct GroupState {
    /// Shared by the groups a rule discovers in the same tick.
    #[serde(with = "arc_strings")]
    names: Arc<[String]>,
    values: Box<[LabelValue]>,
    phase: Phase,
    evaluations: u32,
    last_resolved: Option<f64>,
    baseline: Option<BaselineState>,
    #[serde(skip)]
    event: Option<u64>,
    /// Boxed: rarely set, and inline it would add 120 bytes to every group.
    cause: Option<Box<CauseReport>>,
    #[serde(skip, default = "nan")]
    value: f64,
    #[serde(skip)]
    estimate: Option<Estimate>,
    missing: u32,
    /// Recent values for changepoint detection: (deciseconds since `recent_base`,
    /// value), 8 bytes a point.
    #[serde(default)]
    recent: std::collections::VecDeque<(u32, f32)>,
    #[serde(default = "nan", with = "super::persist::float")]
    recent_base: f64,
    /// Output label vectors, built once per group (scrapes of 10k groups then copy
    /// no strings).
    #[serde(skip)]
    out: Option<OutLabels>,
    /// The engine tick that last saw this group (replaces a per-tick "seen" set).
    #[serde(skip)]
    seen: u64,
}

/// Label values of a group's output series. Every string in them is shared (the
/// rule's name, severity and layer with the rule, group values with the group state,
/// bound names and the empty value process-wide): per group they cost four slices of
/// pointers, not four copies of every label.
#[derive(Debug, Clone)]
struct OutLabels {
    base: LabelValues,
    bounds: [LabelValues; 3],
}

/// Values shared by every group's output labels.
static SHARED: std::sync::LazyLock<([LabelValue; 3], LabelValue)> = std::sync::LazyLock::new(|| {
    (
        ["lower".into(), "expected".into(), "upper".into()],
        LabelValue::from(""),
    )
});

fn out_labels(rule: &CompiledRule, output: &[String], names: &[String], values: &[LabelValue]) -> OutLabels {
    let (bound_values, empty) = &*SHARED;
    let mut base: Vec<LabelValue> = rule.out_prefix.to_vec();
    base.extend(output[3..].iter().map(|n| {
        names
            .iter()
            .position(|x| x == n)
            .and_then(|i| values.get(i))
            .unwrap_or(empty)
            .clone()
    }));
    let bound = |b: &LabelValue| -> LabelValues { base.iter().chain(std::iter::once(b)).cloned().collect() };
    OutLabels {
        bounds: [
            bound(&bound_values[0]),
            bound(&bound_values[1]),
            bound(&bound_values[2]),
        ],
        base: base.into(),
    }
}

/// Values kept per group for level-shift detection.
const RECENT: usize = 64;
/// Values needed after a shift before re-baselining on it.
const MIN_AFTER_SHIFT: usize = 8;

fn nan() -> f64 {
    f64::NAN
}

/// Serde for the shared label-name list (serialised as a plain list).
mod arc_strings {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(v: &Arc<[String]>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<[String]>, D::Error> {
        Vec::<String>::deserialize(d).map(Into::into)
    }
}

impl GroupState {
    fn new(names: Arc<[String]>, values: Box<[LabelValue]>, rule: &CompiledRule) -> Self {
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

    fn firing(&self) -> bool {
        matches!(self.phase, Phase::Firing { .. } | Phase::Resolving { .. })
    }
}

/// Groups absent from this many evaluations are dropped (their events closed).
const STALE_AFTER: u32 = 5;

pub struct Engine {
    set: RuleSet,
    states: Vec<StateMap>,
    /// Evaluations so far; stamps the groups seen in the current one.
    tick: u64,
    errors_total: HashMap<String, u64>,
    logged: HashSet<String>,
    pub events: EventLog,
    last_eval_seconds: f64,
    reload_ok: bool,
    reload_time: f64,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Engine {
    pub fn new(set: RuleSet) -> Self {
        let states = set.rules.iter().map(|_| StateMap::default()).collect();
        Engine {
            set,
            states,
            tick: 0,
            errors_total: HashMap::new(),
            logged: HashSet::new(),
            events: EventLog::new(1000),
            last_eval_seconds: 0.0,
            reload_ok: true,
            reload_time: unix(SystemTime::now()),
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.set
    }

    /// Installs a new rule set, keeping the state (baselines, firing alerts) of rules
    /// whose name is unchanged.
    pub fn replace(&mut self, set: RuleSet) {
        let mut old: HashMap<String, StateMap> = self
            .set
            .rules
            .iter()
            .map(|r| r.spec.name.clone())
            .zip(std::mem::take(&mut self.states))
            .collect();
        self.states = set
            .rules
            .iter()
            .map(|r| old.remove(&r.spec.name).unwrap_or_default())
            .collect();
        // Rules that are gone end their open events, so pushed alerts resolve.
        let now = unix(SystemTime::now());
        for id in old.values().flat_map(|m| m.values()).filter_map(|st| st.event) {
            if let Some(e) = self.events.get_mut(id) {
                e.end = Some(now);
            }
        }
        // Output label sets depend on the union of all rules' labels.
        for st in self.states.iter_mut().flat_map(|m| m.values_mut()) {
            st.out = None;
        }
        self.set = set;
        self.reload_ok = true;
        self.reload_time = unix(SystemTime::now());
    }

    /// Records a failed reload: the current rules stay.
    pub fn reload_failed(&mut self) {
        self.reload_ok = false;
        self.reload_time = unix(SystemTime::now());
    }

    /// Evaluates every rule and returns the engine's output families.
    pub fn evaluate(&mut self, snap: &Snapshot, hist: &History) -> Vec<Family> {
        let started = Instant::now();
        let now = unix(snap.taken_at);
        self.tick += 1;
        for i in 0..self.set.rules.len() {
            self.evaluate_rule(i, snap, hist, now);
        }
        self.last_eval_seconds = started.elapsed().as_secs_f64();
        self.outputs()
    }

    fn note_error(&mut self, rule: &str, msg: String) {
        *self.errors_total.entry(rule.to_string()).or_default() += 1;
        if self.logged.insert(format!("{rule}\0{msg}")) {
            tracing::warn!(rule, error = %msg, "rule evaluation failed");
        }
    }

    fn evaluate_rule(&mut self, ri: usize, snap: &Snapshot, hist: &History, now: f64) {
        let tick = self.tick;
        let found = discover_groups(&self.set.rules[ri], snap);
        let width = found.names.len();
        for (gi, g) in found.groups.iter().enumerate() {
            let key = g.key;
            let values = &found.values[gi * width..(gi + 1) * width];
            let samples = &found.samples[g.start..g.start + g.len];
            let rule = &self.set.rules[ri];
            let state = self.states[ri].entry(key).or_insert_with(|| {
                GroupState::new(
                    found.names.clone(),
                    values.iter().map(|&v| LabelValue::from(v)).collect(),
                    rule,
                )
            });
            state.missing = 0;
            state.seen = tick;
            if state.out.is_none() {
                state.out = Some(out_labels(rule, &self.set.output_labels, &state.names, &state.values));
            }
            let group = Group {
                names: &found.names,
                values,
                own: samples,
                fam: found.fam,
            };
            let outcome = step(rule, &self.set, &self.states, ri, key, &group, snap, hist, now);
            match outcome {
                Ok(Some(o)) => self.apply(ri, key, &group, o, now),
                Ok(None) => {}
                Err(e) => {
                    let name = self.set.rules[ri].spec.name.clone();
                    self.note_error(&name, e);
                }
            }
        }
        let mut closed = Vec::new();
        self.states[ri].retain(|_, st| {
            if st.seen == tick {
                return true;
            }
            st.missing += 1;
            if st.missing <= STALE_AFTER {
                return true;
            }
            if let Some(id) = st.event {
                closed.push(id);
            }
            false
        });
        for id in closed {
            if let Some(e) = self.events.get_mut(id) {
                e.end = Some(now);
            }
        }
    }

    fn apply(&mut self, ri: usize, key: u64, group: &Group, o: Outcome, now: f64) {
        let rule = &self.set.rules[ri];
        let Some(st) = self.states[ri].get_mut(&key) else {
            return;
        };
        st.value = o.value;
        st.estimate = o.estimate;
        st.evaluations = st.evaluations.saturating_add(1);
        let spec = &rule.spec;
        let for_ = spec.for_.map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let keep = spec.keep_firing_for.map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let cooldown = spec.cooldown.map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let warm = st.evaluations > spec.min_samples;
        let cooled = st.last_resolved.is_none_or(|t| now - t >= cooldown);
        let before = st.firing();
        st.phase = match st.phase {
            Phase::Inactive if o.fire && warm && cooled => {
                if for_ <= 0.0 {
                    Phase::Firing { since: now }
                } else {
                    Phase::Pending { since: now }
                }
            }
            Phase::Inactive => Phase::Inactive,
            Phase::Pending { .. } if !o.fire => Phase::Inactive,
            Phase::Pending { since } if now - since >= for_ => Phase::Firing { since: now },
            p @ Phase::Pending { .. } => p,
            Phase::Firing { since } if o.resolve => {
                if keep <= 0.0 {
                    Phase::Inactive
                } else {
                    Phase::Resolving {
                        firing_since: since,
                        since: now,
                    }
                }
            }
            p @ Phase::Firing { .. } => p,
            Phase::Resolving { firing_since, .. } if !o.resolve => Phase::Firing { since: firing_since },
            Phase::Resolving { since, .. } if now - since >= keep => Phase::Inactive,
            p @ Phase::Resolving { .. } => p,
        };
        if o.value.is_finite()
            && spec
                .baseline
                .as_ref()
                .is_some_and(|b| b.rebaseline_after.as_secs_f64() > 0.0)
        {
            if !st.recent_base.is_finite() {
                st.recent_base = now;
            }
            let offset = ((now - st.recent_base) * 10.0).clamp(0.0, u32::MAX as f64) as u32;
            // Pop first: pushing onto a full deque would double its capacity.
            if st.recent.len() >= RECENT {
                st.recent.pop_front();
            }
            st.recent.push_back((offset, o.value as f32));
        }
        let rebaselined = rebaseline(st, spec, now);
        let after = st.firing();
        if let (Some(b), Some(spec_b)) = (st.baseline.as_mut(), spec.baseline.as_ref()) {
            if !(after && spec_b.freeze_while_firing) && o.value.is_finite() {
                b.update(now, o.value);
            }
        }
        if after && st.cause.is_none() {
            st.cause = o.cause.map(Box::new);
        }
        match (before, after) {
            // A group restored as firing from saved state has no event yet (events
            // are not persisted): it gets one, starting now, like a new firing.
            _ if after && (!before || st.event.is_none()) => {
                let text = annotation(rule, group, st);
                let ev = Event {
                    id: 0,
                    rule: spec.name.clone(),
                    severity: spec.severity.as_str().into(),
                    layer: spec.layer.as_str().into(),
                    labels: group.label_map(),
                    start: now,
                    end: None,
                    value: o.value,
                    baseline: o.estimate.map(|e| e.expected),
                    cause: st.cause.as_deref().cloned(),
                    text,
                };
                tracing::info!(rule = %spec.name, labels = ?ev.labels, value = o.value, cause = ?ev.cause.as_ref().map(|c| &c.name), "anomaly firing");
                st.event = Some(self.events.open(ev));
            }
            (true, true) => {
                // A cause found after the alert started is attached to its event.
                if let (Some(id), Some(c)) = (st.event, st.cause.clone()) {
                    let text = annotation(rule, group, st);
                    if let Some(e) = self.events.get_mut(id) {
                        if e.cause.is_none() {
                            e.cause = Some(*c);
                            e.text = text;
                        }
                    }
                }
            }
            (true, false) => {
                st.last_resolved = Some(now);
                st.cause = None;
                if let Some(id) = st.event.take() {
                    if let Some(e) = self.events.get_mut(id) {
                        e.end = Some(now);
                    }
                }
                tracing::info!(rule = %spec.name, labels = ?group.label_map(), rebaselined, "anomaly resolved");
            }
            (false, _) => {}
        }
    }

    /// Learned state of every rule group, keyed by rule name, for persistence.
    /// Each rule's entry carries a fingerprint of its baseline settings so state
    /// learned under other settings is not reused.
    pub fn export_state(&self) -> BTreeMap<String, (String, Vec<GroupState>)> {
        self.set
            .rules
            .iter()
            .zip(&self.states)
            .map(|(r, st)| {
                let groups = st.values().cloned().collect();
                (r.spec.name.clone(), (baseline_fingerprint(r), groups))
            })
            .collect()
    }

    /// Restores state saved by [`Engine::export_state`]; returns the groups restored.
    pub fn import_state(&mut self, saved: BTreeMap<String, (String, Vec<GroupState>)>) -> usize {
        let mut restored = 0;
        for (ri, r) in self.set.rules.iter().enumerate() {
            let Some((fp, groups)) = saved.get(&r.spec.name) else {
                continue;
            };
            if *fp != baseline_fingerprint(r) {
                tracing::info!(rule = %r.spec.name, "baseline settings changed; not restoring learned state");
                continue;
            }
            for g in groups {
                let mut g = g.clone();
                g.missing = 0;
                self.states[ri].insert(group_hash(g.values.iter().map(|v| &**v)), g);
                restored += 1;
            }
        }
        restored
    }

    /// Label groups tracked over all rules.
    pub fn group_count(&self) -> usize {
        self.states.iter().map(HashMap::len).sum()
    }

    /// Seasonal refits running (or queued) in the background right now; the bench
    /// uses it to time ticks while refits run.
    pub fn refits_pending(&self) -> usize {
        self.states
            .iter()
            .flat_map(|m| m.values())
            .filter(|st| matches!(&st.baseline, Some(BaselineState::Seasonal(s)) if s.refit_pending()))
            .count()
    }

    /// Whether `rule` fires now for the given group (test and `rules test` helper).
    pub fn is_firing(&self, rule: &str, labels: &[(&str, &str)]) -> bool {
        self.firing_cause(rule, labels).is_some()
    }

    /// `Some(cause name or "")` when the rule fires for a group matching `labels`.
    pub fn firing_cause(&self, rule: &str, labels: &[(&str, &str)]) -> Option<String> {
        let ri = self.set.rules.iter().position(|r| r.spec.name == rule)?;
        self.states[ri].values().find_map(|st| {
            let vals = &st.values;
            let matches = labels.iter().all(|(k, v)| {
                st.names
                    .iter()
                    .position(|n| n == k)
                    .and_then(|i| vals.get(i))
                    .is_some_and(|x| &**x == *v)
            });
            (matches && st.firing()).then(|| st.cause.as_ref().map(|c| c.name.clone()).unwrap_or_default())
        })
    }

    fn outputs(&self) -> Vec<Family> {
        let names = &self.set.output_labels;
        let with = |extra: &str| -> Arc<[String]> {
            names
                .iter()
                .cloned()
                .chain(std::iter::once(extra.to_string()))
                .collect::<Vec<_>>()
                .into()
        };
        let bound_names = with("bound");
        let cause_names = with("cause");
        let mut out = Emitter::new();
        let (mut groups, mut finite, mut estimates) = (0, 0, 0);
        for st in self
            .states
            .iter()
            .flat_map(|m| m.values())
            .filter(|st| st.out.is_some())
        {
            groups += 1;
            finite += usize::from(st.value.is_finite());
            estimates += usize::from(st.estimate.is_some());
        }
        out.size_hint(&ANOMALY, groups);
        out.size_hint(&VALUE, finite);
        out.size_hint(&SCORE, estimates);
        out.size_hint(&BASELINE, 3 * estimates);
        for (ri, rule) in self.set.rules.iter().enumerate() {
            let spec = &rule.spec;
            for st in self.states[ri].values() {
                let Some(ol) = &st.out else { continue };
                out.push_dynamic(&ANOMALY, names, ol.base.clone(), if st.firing() { 1.0 } else { 0.0 });
                if st.value.is_finite() {
                    out.push_dynamic(&VALUE, names, ol.base.clone(), st.value);
                }
                if let (Some(e), Some(b)) = (st.estimate, spec.baseline.as_ref()) {
                    let est = Estimate {
                        expected: e.expected,
                        sigma: e.sigma.max(b.min_sigma),
                    };
                    let z = est.zscore(st.value);
                    if z.is_finite() {
                        out.push_dynamic(&SCORE, names, ol.base.clone(), z);
                    }
                    for (labels, v) in ol.bounds.iter().zip([est.lower(b.k), e.expected, est.upper(b.k)]) {
                        out.push_dynamic(&BASELINE, &bound_names, labels.clone(), v);
                    }
                }
                if let (true, Some(c)) = (st.firing(), st.cause.as_ref()) {
                    let mut l = ol.base.to_vec();
                    l[2] = c.layer.as_str().into();
                    l.push(c.name.as_str().into());
                    out.push_dynamic(&ROOT_CAUSE, &cause_names, l, 1.0);
                }
            }
            out.push(
                &RULE_ERRORS,
                vec![spec.name.clone()],
                self.errors_total.get(&spec.name).copied().unwrap_or(0) as f64,
            );
            out.push(&GROUPS, vec![spec.name.clone()], self.states[ri].len() as f64);
        }
        out.push0(&EVAL_DURATION, self.last_eval_seconds);
        out.push0(&RULES_LOADED, self.set.rules.len() as f64);
        out.push0(&RELOAD_OK, if self.reload_ok { 1.0 } else { 0.0 });
        out.push0(&RELOAD_TIME, self.reload_time);
        out.into_families()
    }
}

fn baseline_fingerprint(r: &CompiledRule) -> String {
    format!(
        "{:?}|{}",
        r.spec.baseline.as_ref().map(|b| (b.model, b.alpha)),
        r.spec.expr
    )
}

/// After a baseline rule has fired for `rebaseline_after`, a level shift found in the
/// recent values means a new normal: re-learn the baseline from the values since the
/// shift and end the alert. Returns true when it did.
fn rebaseline(st: &mut GroupState, spec: &super::schema::RuleSpec, now: f64) -> bool {
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
    let Some(i) = super::changepoint::level_shift(&values, MIN_AFTER_SHIFT) else {
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

struct Group<'a> {
    names: &'a [String],
    values: &'a [&'a str],
    own: &'a [&'a Sample],
    /// The family of the rule's own series (looked up once per rule, not per group).
    fam: Option<&'a Family>,
}

impl Group<'_> {
    fn label_map(&self) -> BTreeMap<String, String> {
        self.names
            .iter()
            .cloned()
            .zip(self.values.iter().map(|v| v.to_string()))
            .collect()
    }
}

/// Key of a group's state. Only kept in memory (persisted state is re-keyed on
/// import), so the hash function can change between versions.
fn group_hash<'a>(values: impl Iterator<Item = &'a str>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = FxHasher::default();
    for v in values {
        v.hash(&mut h);
    }
    h.finish()
}

struct Outcome {
    value: f64,
    estimate: Option<Estimate>,
    fire: bool,
    resolve: bool,
    cause: Option<CauseReport>,
}

struct GroupSpan {
    key: u64,
    /// Range of the group's samples in [`Discovered::samples`].
    start: usize,
    len: usize,
}

/// A rule's series split into label groups, in flat vectors (a handful of
/// allocations per rule and tick instead of several per group).
struct Discovered<'a> {
    fam: Option<&'a Family>,
    /// Group label names (shared by every group of the rule).
    names: Arc<[String]>,
    groups: Vec<GroupSpan>,
    /// `names.len()` label values per group, in group order.
    values: Vec<&'a str>,
    /// Samples of every group, grouped, in snapshot order within a group.
    samples: Vec<&'a Sample>,
}

/// Splits the rule's series into label groups (after matchers), without copying
/// label strings: groups are keyed by a hash of their label values.
fn discover_groups<'a>(rule: &CompiledRule, snap: &'a Snapshot) -> Discovered<'a> {
    let Some(fam) = snap.family(&rule.spec.series.metric) else {
        return Discovered {
            fam: None,
            names: Arc::from(Vec::new()),
            groups: Vec::new(),
            values: Vec::new(),
            samples: Vec::new(),
        };
    };
    let names: Arc<[String]> = match &rule.by {
        Some(by) => by.as_slice().into(),
        None => fam.label_names().iter().map(|s| s.to_string()).collect(),
    };
    let idx: Vec<Option<usize>> = names.iter().map(|n| fam.label_index(n)).collect();
    let matchers: Vec<(Option<usize>, &regex::Regex)> =
        rule.matchers.iter().map(|(l, r)| (fam.label_index(l), r)).collect();
    let label = |s: &'a Sample, i: Option<usize>| -> &'a str { i.and_then(|i| s.labels.get(i)).map_or("", |v| &**v) };
    let n = fam.samples.len();
    let mut index: HashMap<u64, usize, FxBuildHasher> = HashMap::with_capacity_and_hasher(n, FxBuildHasher);
    let mut groups: Vec<GroupSpan> = Vec::with_capacity(n);
    let mut values: Vec<&'a str> = Vec::with_capacity(n * names.len());
    // (group, sample) in snapshot order; bucketed by group below.
    let mut member: Vec<(usize, &'a Sample)> = Vec::with_capacity(n);
    for s in &fam.samples {
        if !matchers.iter().all(|&(i, re)| re.is_match(label(s, i))) {
            continue;
        }
        let h = group_hash(idx.iter().map(|&i| label(s, i)));
        let gi = *index.entry(h).or_insert_with(|| {
            values.extend(idx.iter().map(|&i| label(s, i)));
            groups.push(GroupSpan {
                key: h,
                start: 0,
                len: 0,
            });
            groups.len() - 1
        });
        groups[gi].len += 1;
        member.push((gi, s));
    }
    let mut at = 0;
    for g in &mut groups {
        g.start = at;
        at += g.len;
    }
    // Stable: a group's samples keep their snapshot order.
    member.sort_by_key(|m| m.0);
    let samples: Vec<&'a Sample> = member.into_iter().map(|m| m.1).collect();
    Discovered {
        fam: Some(fam),
        names,
        groups,
        values,
        samples,
    }
}

/// The series a variable stands for in a group: samples of `metric` that agree with
/// the group on every label both have.
fn select<'a>(snap: &'a Snapshot, metric: &str, group: &Group) -> Option<(&'a Family, Vec<&'a Sample>)> {
    let fam = snap.family(metric)?;
    let shared: Vec<(usize, usize)> = group
        .names
        .iter()
        .enumerate()
        .filter_map(|(gi, n)| fam.label_index(n).map(|fi| (fi, gi)))
        .collect();
    let samples: Vec<&Sample> = fam
        .samples
        .iter()
        .filter(|s| {
            shared
                .iter()
                .all(|&(fi, gi)| s.labels.get(fi).map(|l| &**l) == group.values.get(gi).copied())
        })
        .collect();
    (!samples.is_empty()).then_some((fam, samples))
}

fn window(func: WindowFn, ring: &Ring) -> Option<f64> {
    let (t_last, _) = ring.last()?;
    let within = |w: f64| ring.iter().filter(move |(t, _)| *t >= t_last - w - 1e-9).map(|p| p.1);
    match func {
        WindowFn::Rate => ring.rate(),
        WindowFn::Delta => Some(ring.nth_from_end(0)?.1 - ring.nth_from_end(1)?.1),
        WindowFn::Increase(w) => {
            let mut prev: Option<f64> = None;
            let mut total = 0.0;
            let mut n = 0;
            for v in within(w) {
                if let Some(p) = prev {
                    total += if v >= p { v - p } else { v };
                }
                prev = Some(v);
                n += 1;
            }
            (n >= 2).then_some(total)
        }
        WindowFn::AvgOver(w) => {
            let (sum, n) = within(w).fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
            (n > 0).then(|| sum / n as f64)
        }
        WindowFn::MaxOver(w) => within(w).reduce(f64::max),
        WindowFn::MinOver(w) => within(w).reduce(f64::min),
    }
}

fn series_window(hist: &History, fam: &Family, samples: &[&Sample], func: WindowFn) -> Option<f64> {
    let mut found = false;
    let mut total = 0.0;
    for v in samples
        .iter()
        .filter_map(|s| hist.get(&fam.desc.name, &s.labels).and_then(|r| window(func, r)))
    {
        found = true;
        total += v;
    }
    found.then_some(total)
}

fn sum(samples: &[&Sample]) -> f64 {
    samples.iter().filter_map(|s| s.value.as_f64()).sum()
}

/// Binds every variable and window call of `e` not bound yet. `Ok(false)` when some
/// data is missing (a new series without history, an absent metric): not an error.
fn bind<'a>(
    e: &'a CompiledExpr,
    rule: &'a CompiledRule,
    group: &Group,
    snap: &Snapshot,
    hist: &History,
    b: &mut Bindings<'a>,
    evidence: Option<&mut BTreeMap<String, f64>>,
) -> bool {
    let mut ev = evidence;
    let metric_of = |var: &'a str| -> &'a str {
        if var == "value" {
            &rule.spec.series.metric
        } else {
            rule.spec.vars.get(var).map_or(var, String::as_str)
        }
    };
    for v in &e.variables {
        if b.get(v).is_some() {
            continue;
        }
        let Some((_, samples)) = select(snap, metric_of(v), group) else {
            return false;
        };
        let x = sum(&samples);
        b.set(v, x);
        if let Some(ev) = ev.as_deref_mut() {
            ev.insert(v.clone(), x);
        }
    }
    for c in &e.calls {
        let found = if c.var == "value" {
            group.fam.and_then(|f| series_window(hist, f, group.own, c.func))
        } else {
            select(snap, metric_of(&c.var), group).and_then(|(f, s)| series_window(hist, f, &s, c.func))
        };
        let Some(x) = found else { return false };
        b.set(&c.synthetic, x);
        if let Some(ev) = ev.as_deref_mut() {
            ev.insert(describe(c.func, &c.var), x);
        }
    }
    true
}

fn describe(f: WindowFn, var: &str) -> String {
    match f {
        WindowFn::Rate => format!("rate({var})"),
        WindowFn::Delta => format!("delta({var})"),
        WindowFn::Increase(w) => format!("increase({var}, {w})"),
        WindowFn::AvgOver(w) => format!("avg_over({var}, {w})"),
        WindowFn::MaxOver(w) => format!("max_over({var}, {w})"),
        WindowFn::MinOver(w) => format!("min_over({var}, {w})"),
    }
}

/// Evaluates one group: `Ok(None)` when data is missing (no decision this tick).
#[allow(clippy::too_many_arguments)]
fn step(
    rule: &CompiledRule,
    set: &RuleSet,
    states: &[StateMap],
    ri: usize,
    key: u64,
    group: &Group,
    snap: &Snapshot,
    hist: &History,
    now: f64,
) -> Result<Option<Outcome>, String> {
    let mut b = Bindings::with_capacity(1 + rule.expr.calls.len() + rule.expr.variables.len());
    b.set("value", sum(group.own));
    if !bind(&rule.expr, rule, group, snap, hist, &mut b, None) {
        return Ok(None);
    }
    let value = rule.expr.eval_number(&b).map_err(|e| format!("expr: {e}"))?;
    if !value.is_finite() {
        return Ok(None);
    }
    let st = states[ri].get(&key);
    // value, the five baseline variables, and whatever `when`/`until` read.
    let mut cb = Bindings::with_capacity(
        8 + rule.when.calls.len() + rule.when.variables.len() + rule.until.as_ref().map_or(0, |u| u.calls.len()),
    );
    cb.set("value", value);
    let mut estimate = None;
    if let Some(spec_b) = &rule.spec.baseline {
        let Some(st) = st else { return Ok(None) };
        let Some(e) = st.baseline.as_ref().and_then(|b| b.estimate(now)) else {
            // Warm-up: learn the first value, decide nothing yet.
            return Ok(Some(Outcome {
                value,
                estimate: None,
                fire: false,
                resolve: true,
                cause: None,
            }));
        };
        let est = Estimate {
            expected: e.expected,
            sigma: e.sigma.max(spec_b.min_sigma),
        };
        cb.set("baseline", est.expected);
        cb.set("baseline_lower", est.lower(spec_b.k));
        cb.set("baseline_upper", est.upper(spec_b.k));
        let z = est.zscore(value);
        cb.set("zscore", if z.is_finite() { z } else { 1e9_f64.copysign(z) });
        cb.set("samples", st.baseline.as_ref().map_or(0, BaselineState::samples) as f64);
        estimate = Some(e);
    }
    if !bind(&rule.when, rule, group, snap, hist, &mut cb, None) {
        return Ok(None);
    }
    let fire = rule.when.eval_bool(&cb).map_err(|e| format!("when: {e}"))?;
    let resolve = match &rule.until {
        Some(u) => {
            if !bind(u, rule, group, snap, hist, &mut cb, None) {
                return Ok(None);
            }
            u.eval_bool(&cb).map_err(|e| format!("until: {e}"))?
        }
        None => !fire,
    };
    let already = st.is_some_and(|s| s.firing() && s.cause.is_some());
    let will_fire = fire || st.is_some_and(GroupState::firing);
    let cause = if will_fire && !already {
        find_cause(rule, set, states, group, snap, hist, &cb)
    } else {
        None
    };
    Ok(Some(Outcome {
        value,
        estimate,
        fire,
        resolve,
        cause,
    }))
}

/// Walks the rule's causes in order and returns the first that holds, with evidence.
fn find_cause<'a>(
    rule: &'a CompiledRule,
    set: &RuleSet,
    states: &[StateMap],
    group: &Group,
    snap: &Snapshot,
    hist: &History,
    base: &Bindings<'a>,
) -> Option<CauseReport> {
    for c in &rule.causes {
        let mut evidence = BTreeMap::new();
        if let Some(target) = c.rule {
            let compatible = states[target].values().find(|st| {
                st.firing()
                    && st
                        .names
                        .iter()
                        .enumerate()
                        .all(|(i, n)| match group.names.iter().position(|g| g == n) {
                            Some(gi) => group.values.get(gi).copied() == st.values.get(i).map(|v| &**v),
                            None => true,
                        })
            });
            let Some(st) = compatible else { continue };
            evidence.insert(format!("rule {} value", set.rules[target].spec.name), st.value);
        }
        if let Some(w) = &c.when {
            let mut b = base.clone();
            if !bind(w, rule, group, snap, hist, &mut b, Some(&mut evidence)) {
                continue;
            }
            match w.eval_bool(&b) {
                Ok(true) => {}
                _ => continue,
            }
        }
        let mut values: BTreeMap<String, String> = group
            .names
            .iter()
            .zip(group.values)
            .map(|(n, x)| (format!("labels.{n}"), x.to_string()))
            .collect();
        for (k, x) in &evidence {
            values.insert(format!("evidence.{k}"), format_value(*x, None));
        }
        if let Some(v) = base.get("value") {
            values.insert("value".into(), format_value(v, rule.spec.unit.as_deref()));
        }
        return Some(CauseReport {
            name: c.spec.name.clone(),
            layer: c.spec.layer.as_str().to_string(),
            explanation: render(&c.spec.explanation, &values),
            recommendation: render(&c.spec.recommendation, &values),
            evidence,
        });
    }
    None
}

fn annotation(rule: &CompiledRule, group: &Group, st: &GroupState) -> String {
    let unit = rule.spec.unit.as_deref();
    let mut v = BTreeMap::new();
    v.insert("rule".to_string(), rule.spec.name.clone());
    v.insert("value".to_string(), format_value(st.value, unit));
    if let Some(e) = st.estimate {
        v.insert("baseline".to_string(), format_value(e.expected, unit));
    }
    for (n, x) in group.names.iter().zip(group.values) {
        v.insert(format!("labels.{n}"), x.to_string());
    }
    if let Some(c) = &st.cause {
        v.insert("cause".to_string(), c.explanation.clone());
        v.insert("recommendation".to_string(), c.recommendation.clone());
        for (k, x) in &c.evidence {
            v.insert(format!("evidence.{k}"), format_value(*x, None));
        }
    }
    let default = if st.cause.is_some() {
        "{{ rule }}: {{ value }} (baseline {{ baseline }}) — {{ cause }}. {{ recommendation }}"
    } else {
        "{{ rule }}: {{ value }} (baseline {{ baseline }})"
    };
    let text = render(rule.spec.annotation.as_deref().unwrap_or(default), &v);
    render(&text, &v).replace(" (baseline {{ baseline }})", "")
}
