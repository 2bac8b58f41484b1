//! One group's evaluation: binding variables and window functions, the condition,
//! the baseline, and the walk over the rule's candidate causes.

use std::collections::BTreeMap;

use super::groups::{select, Group};
use super::state::GroupState;
use super::StateMap;
use crate::rules::baseline::{BaselineState, Estimate};
use crate::rules::events::CauseReport;
use crate::rules::expr::{Bindings, CompiledExpr, WindowFn};
use crate::rules::load::{CompiledRule, RuleSet};
use crate::rules::template::{format_value, render};
use crate::snapshot::{Family, History, Ring, Sample, Snapshot};

pub(super) struct Outcome {
    pub(super) value: f64,
    pub(super) estimate: Option<Estimate>,
    pub(super) fire: bool,
    pub(super) resolve: bool,
    pub(super) cause: Option<CauseReport>,
}

pub(super) fn window(func: WindowFn, ring: &Ring) -> Option<f64> {
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

pub(super) fn series_window(hist: &History, fam: &Family, samples: &[&Sample], func: WindowFn) -> Option<f64> {
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

pub(super) fn sum(samples: &[&Sample]) -> f64 {
    samples.iter().filter_map(|s| s.value.as_f64()).sum()
}

/// Binds every variable and window call of `e` not bound yet. `Ok(false)` when some
/// data is missing (a new series without history, an absent metric): not an error.
pub(super) fn bind<'a>(
    e: &'a CompiledExpr,
    group: &Group,
    snap: &Snapshot,
    hist: &History,
    b: &mut Bindings<'a>,
    evidence: Option<&mut BTreeMap<String, f64>>,
) -> bool {
    let mut ev = evidence;
    let (var_metrics, call_metrics) = e.metrics.split_at(e.variables.len().min(e.metrics.len()));
    for (v, metric) in e.variables.iter().zip(var_metrics) {
        if b.get(v).is_some() {
            continue;
        }
        let Some((_, samples)) = select(snap, metric, group) else {
            return false;
        };
        let x = sum(&samples);
        b.set(v, x);
        if let Some(ev) = ev.as_deref_mut() {
            ev.insert(v.clone(), x);
        }
    }
    for (c, metric) in e.calls.iter().zip(call_metrics) {
        let found = if c.var == "value" {
            group.fam.and_then(|f| series_window(hist, f, group.own, c.func))
        } else {
            select(snap, metric, group).and_then(|(f, s)| series_window(hist, f, &s, c.func))
        };
        let Some(x) = found else { return false };
        b.set(&c.synthetic, x);
        if let Some(ev) = ev.as_deref_mut() {
            ev.insert(describe(c.func, &c.var), x);
        }
    }
    true
}

pub(super) fn describe(f: WindowFn, var: &str) -> String {
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
pub(super) fn step(
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
    if !bind(&rule.expr, group, snap, hist, &mut b, None) {
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
    if !bind(&rule.when, group, snap, hist, &mut cb, None) {
        return Ok(None);
    }
    let fire = rule.when.eval_bool(&cb).map_err(|e| format!("when: {e}"))?;
    let resolve = match &rule.until {
        Some(u) => {
            if !bind(u, group, snap, hist, &mut cb, None) {
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
pub(super) fn find_cause<'a>(
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
            if !bind(w, group, snap, hist, &mut b, Some(&mut evidence)) {
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

pub(super) fn annotation(rule: &CompiledRule, group: &Group, st: &GroupState) -> String {
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
