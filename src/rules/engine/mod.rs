//! Evaluates the loaded rules against each snapshot and its history.
//!
//! `state` holds what the engine keeps per label group, `groups` splits a rule's
//! series into groups, `eval` computes one group's outcome and root cause, and
//! `outputs` turns the states into the engine's metric families.

mod eval;
mod groups;
mod outputs;
mod state;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Instant, SystemTime};

use rustc_hash::FxBuildHasher;

use super::baseline::BaselineState;
use super::events::{Event, EventLog};
use super::load::{CompiledRule, RuleSet};
use crate::snapshot::{Family, History, LabelValue, Snapshot};

use eval::{annotation, step, Outcome};
use groups::{discover_groups, group_hash, Group, Scratch};
use outputs::out_labels;
pub use outputs::DOC;
pub use state::GroupState;
use state::{rebaseline, Phase, RECENT};

/// A rule's group states keyed by [`group_hash`] (already a hash: not hashed again).
type StateMap = HashMap<u64, GroupState, FxBuildHasher>;

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
    /// Each rule's group label names as last used (reused while unchanged).
    group_names: Vec<Option<std::sync::Arc<[String]>>>,
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
            group_names: Vec::new(),
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
        let mut scratch = Scratch::default();
        for i in 0..self.set.rules.len() {
            self.evaluate_rule(i, snap, hist, now, &mut scratch);
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

    fn evaluate_rule<'a>(
        &mut self,
        ri: usize,
        snap: &'a Snapshot,
        hist: &History,
        now: f64,
        scratch: &mut Scratch<'a>,
    ) {
        let tick = self.tick;
        if self.group_names.len() != self.set.rules.len() {
            self.group_names = vec![None; self.set.rules.len()];
        }
        let found = discover_groups(&self.set.rules[ri], snap, &mut self.group_names[ri], scratch);
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
}

fn baseline_fingerprint(r: &CompiledRule) -> String {
    format!(
        "{:?}|{}",
        r.spec.baseline.as_ref().map(|b| (b.model, b.alpha)),
        r.spec.expr
    )
}
