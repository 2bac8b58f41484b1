//! The engine's metric families: anomaly, score, value and baseline series per
//! group, root causes, and the engine's own health.

use super::Engine;
use crate::catalog::{CollectorDoc, MetricDesc, MetricKind};
use crate::rules::baseline::Estimate;
use crate::rules::load::CompiledRule;
use crate::snapshot::{Emitter, Family, LabelValue, LabelValues};

pub(super) const G: MetricKind = MetricKind::Gauge;
pub(super) const DYN: &[&str] = &["rule", "severity", "layer", "<group labels>"];

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
/// Label values of a group's output series. Every string in them is shared (the
/// rule's name, severity and layer with the rule, group values with the group state,
/// bound names and the empty value process-wide): per group they cost four slices of
/// pointers, not four copies of every label.
#[derive(Debug, Clone)]
pub(super) struct OutLabels {
    pub(super) base: LabelValues,
    pub(super) bounds: [LabelValues; 3],
}

/// Values shared by every group's output labels.
static SHARED: std::sync::LazyLock<([LabelValue; 3], LabelValue)> = std::sync::LazyLock::new(|| {
    (
        ["lower".into(), "expected".into(), "upper".into()],
        LabelValue::from(""),
    )
});

pub(super) fn out_labels(rule: &CompiledRule, output: &[String], names: &[String], values: &[LabelValue]) -> OutLabels {
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

impl Engine {
    pub(super) fn outputs(&self) -> Vec<Family> {
        let names = &self.set.output_labels;
        let (bound_names, cause_names) = (&self.set.bound_labels, &self.set.cause_labels);
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
                        out.push_dynamic(&BASELINE, bound_names, labels.clone(), v);
                    }
                }
                if let (true, Some(c)) = (st.firing(), st.cause.as_ref()) {
                    let mut l = ol.base.to_vec();
                    l[2] = c.layer.as_str().into();
                    l.push(c.name.as_str().into());
                    out.push_dynamic(&ROOT_CAUSE, cause_names, l, 1.0);
                }
            }
            out.push(
                &RULE_ERRORS,
                rule.rule_label.clone(),
                self.errors_total.get(&spec.name).copied().unwrap_or(0) as f64,
            );
            out.push(&GROUPS, rule.rule_label.clone(), self.states[ri].len() as f64);
        }
        out.push0(&EVAL_DURATION, self.last_eval_seconds);
        out.push0(&RULES_LOADED, self.set.rules.len() as f64);
        out.push0(&RELOAD_OK, if self.reload_ok { 1.0 } else { 0.0 });
        out.push0(&RELOAD_TIME, self.reload_time);
        out.into_families()
    }
}
