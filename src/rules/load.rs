//! Loading rule files: YAML parsing, validation with file:line:column locations,
//! expression compilation, cause-graph cycle detection and evaluation order.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use regex::Regex;

use super::expr::{compile, CompiledExpr};
use super::schema::{CauseSpec, RuleFile, RuleSpec};
use crate::snapshot::LabelValue;

/// One rule file's text and the name to report errors under.
#[derive(Debug, Clone)]
pub struct RuleSource {
    pub name: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct RuleError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct CompiledCause {
    pub spec: CauseSpec,
    pub when: Option<CompiledExpr>,
    /// Index (in `RuleSet::rules`) of the rule this cause names.
    pub rule: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub spec: RuleSpec,
    pub file: String,
    pub expr: CompiledExpr,
    pub when: CompiledExpr,
    pub until: Option<CompiledExpr>,
    /// Sorted: lower layers first, conditional causes before unconditional fallbacks,
    /// then file order (authors list the most specific first).
    pub causes: Vec<CompiledCause>,
    pub matchers: Vec<(String, Regex)>,
    /// Group labels; `None` = every label of the series.
    pub by: Option<Vec<String>>,
    /// The first output label values of every group (rule, severity, layer),
    /// allocated once per rule and shared by all its groups' output series.
    pub out_prefix: [LabelValue; 3],
    /// `{rule="<name>"}` of the per-rule series, shared across ticks.
    pub rule_label: crate::snapshot::LabelValues,
    /// `spec.series.metric`, looked up every tick.
    pub series: crate::snapshot::FamilyName,
}

#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// In evaluation order: a rule comes after every rule its causes name.
    pub rules: Vec<CompiledRule>,
    /// Label names of the engine's output families: rule, severity, layer, then the
    /// union of all group labels.
    pub output_labels: Arc<[String]>,
    /// `output_labels` and `bound` (netsight_baseline), then `cause`
    /// (netsight_root_cause): made once, not on every evaluation.
    pub bound_labels: Arc<[String]>,
    pub cause_labels: Arc<[String]>,
}

pub const BASELINE_VARS: &[&str] = &["baseline", "baseline_lower", "baseline_upper", "zscore", "samples"];
const RESERVED_LABELS: &[&str] = &["rule", "severity", "layer", "cause", "bound"];

/// True for names the catalog knows, statically or as a run-time family.
pub fn metric_known(name: &str) -> bool {
    crate::catalog::find(name).is_some()
        || ["netsight_netstat_", "netsight_sockstat_"]
            .iter()
            .any(|p| name.starts_with(p))
}

fn metric_labels(name: &str) -> Option<&'static [&'static str]> {
    crate::catalog::find(name).map(|d| d.labels)
}

/// Finds where a rule (and optionally a key inside it, or inside one of its causes)
/// is written, by scanning the text: serde_yaml gives no spans for values.
fn locate(text: &str, rule: &str, cause: Option<&str>, key: Option<&str>) -> (usize, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let is_name = |l: &str, n: &str| {
        let t = l.trim_start().trim_start_matches('-').trim_start();
        t.strip_prefix("name:")
            .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'') == n)
            .unwrap_or(false)
    };
    let indent = |l: &str| l.len() - l.trim_start().len();
    let Some(start) = lines.iter().position(|l| is_name(l, rule)) else {
        return (1, 1);
    };
    let block_end = |from: usize| {
        let ind = indent(lines[from]);
        let dash = lines[from].trim_start().starts_with('-');
        (from + 1..lines.len())
            .find(|&i| {
                let l = lines[i];
                !l.trim().is_empty()
                    && (indent(l) < ind || (dash && indent(l) == ind && l.trim_start().starts_with('-')))
            })
            .unwrap_or(lines.len())
    };
    let (mut from, mut to) = (start, block_end(start));
    if let Some(c) = cause {
        if let Some(i) = (from..to).find(|&i| is_name(lines[i], c)) {
            from = i;
            to = block_end(i);
        }
    }
    let Some(key) = key else {
        return (from + 1, indent(lines[from]) + 1);
    };
    for (i, line) in lines.iter().enumerate().take(to).skip(from) {
        let t = line.trim_start().trim_start_matches('-').trim_start();
        if let Some(rest) = t.strip_prefix(key).and_then(|r| r.strip_prefix(':')) {
            let col = line.len() - rest.trim_start().len() + 1;
            return (i + 1, col);
        }
    }
    (from + 1, indent(lines[from]) + 1)
}

struct Ctx<'a> {
    src: &'a RuleSource,
    errors: &'a mut Vec<RuleError>,
}

impl Ctx<'_> {
    fn error(&mut self, rule: &str, cause: Option<&str>, key: Option<&str>, message: String) {
        let (line, column) = locate(&self.src.text, rule, cause, key);
        self.errors.push(RuleError {
            file: self.src.name.clone(),
            line,
            column,
            message,
        });
    }
}

fn check_vars(e: &CompiledExpr, rule: &RuleSpec, allow_baseline: bool) -> Result<(), String> {
    let series_names: Vec<&str> = e.calls.iter().map(|c| c.var.as_str()).collect();
    for v in e.variables.iter().map(String::as_str).chain(series_names) {
        let ok = v == "value"
            || rule.vars.contains_key(v)
            || metric_known(v)
            || (allow_baseline && BASELINE_VARS.contains(&v));
        if !ok {
            if BASELINE_VARS.contains(&v) {
                return Err(format!("`{v}` needs a `baseline:` on the rule"));
            }
            if v.starts_with("netsight_") {
                return Err(format!("unknown metric `{v}` (see docs/metrics.md)"));
            }
            return Err(format!(
                "unknown variable `{v}`: use value, a name from `vars`, a metric name, or (with a baseline) {}",
                BASELINE_VARS.join(", ")
            ));
        }
    }
    Ok(())
}

fn compile_rule(spec: RuleSpec, cx: &mut Ctx) -> Option<CompiledRule> {
    let name = spec.name.clone();
    let mut ok = true;
    if !metric_known(&spec.series.metric) {
        cx.error(
            &name,
            None,
            Some("metric"),
            format!("unknown metric `{}` (see docs/metrics.md)", spec.series.metric),
        );
        ok = false;
    }
    for (var, metric) in &spec.vars {
        if !metric_known(metric) {
            cx.error(
                &name,
                None,
                Some(var),
                format!("unknown metric `{metric}` for var `{var}`"),
            );
            ok = false;
        }
    }
    let known_labels = metric_labels(&spec.series.metric);
    let mut matchers = Vec::new();
    for (label, re) in &spec.series.matchers {
        if known_labels.is_some_and(|l| !l.contains(&label.as_str())) {
            cx.error(
                &name,
                None,
                Some(label),
                format!("`{}` has no label `{label}`", spec.series.metric),
            );
            ok = false;
        }
        match Regex::new(&format!("^(?:{re})$")) {
            Ok(r) => matchers.push((label.clone(), r)),
            Err(e) => {
                cx.error(&name, None, Some(label), format!("bad regex for `{label}`: {e}"));
                ok = false;
            }
        }
    }
    for l in spec.series.by.iter().flatten() {
        if RESERVED_LABELS.contains(&l.as_str()) {
            cx.error(
                &name,
                None,
                Some("by"),
                format!("label `{l}` is reserved for the engine's outputs"),
            );
            ok = false;
        } else if known_labels.is_some_and(|k| !k.contains(&l.as_str())) {
            cx.error(
                &name,
                None,
                Some("by"),
                format!("`{}` has no label `{l}`", spec.series.metric),
            );
            ok = false;
        }
    }
    let has_baseline = spec.baseline.is_some();
    let compile_at = |src: &str, key: &str, cause: Option<&str>, allow_baseline: bool, cx: &mut Ctx| match compile(src)
        .and_then(|e| {
            check_vars(&e, &spec, allow_baseline)
                .map(|()| e)
                .map_err(|m| super::expr::ExprError { message: m })
        }) {
        Ok(mut e) => {
            e.resolve(&spec.series.metric, |v| spec.vars.get(v).map(String::as_str));
            Some(e)
        }
        Err(e) => {
            cx.error(
                &name,
                cause,
                Some(key),
                format!("bad expression `{src}`: {}", e.message),
            );
            None
        }
    };
    let expr = compile_at(&spec.expr, "expr", None, false, cx);
    let when = compile_at(&spec.when, "when", None, has_baseline, cx);
    let until = spec
        .until
        .as_ref()
        .map(|u| compile_at(u, "until", None, has_baseline, cx));
    let mut causes = Vec::new();
    for c in &spec.causes {
        let w = c
            .when
            .as_ref()
            .map(|w| compile_at(w, "when", Some(&c.name), has_baseline, cx));
        if matches!(w, Some(None)) {
            ok = false;
        }
        causes.push(CompiledCause {
            spec: c.clone(),
            when: w.flatten(),
            rule: None,
        });
    }
    let (Some(expr), Some(when)) = (expr, when) else {
        return None;
    };
    let until = match until {
        Some(None) => return None,
        Some(Some(u)) => Some(u),
        None => None,
    };
    if !ok {
        return None;
    }
    causes.sort_by_key(|c| (c.spec.when.is_none() && c.spec.rule.is_none(), c.spec.layer));
    let by = spec.series.by.clone();
    Some(CompiledRule {
        file: cx.src.name.clone(),
        expr,
        when,
        until,
        causes,
        matchers,
        by,
        rule_label: std::sync::Arc::from([LabelValue::from(spec.name.as_str())]),
        series: crate::snapshot::FamilyName::new(&spec.series.metric),
        out_prefix: [
            LabelValue::from(spec.name.as_str()),
            LabelValue::from(spec.severity.as_str()),
            LabelValue::from(spec.layer.as_str()),
        ],
        spec,
    })
}

impl RuleSet {
    /// Every metric name the rules read (series, vars, and metric names used directly
    /// in expressions): the history worth persisting.
    pub fn referenced_metrics(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for r in &self.rules {
            out.insert(r.spec.series.metric.clone());
            out.extend(r.spec.vars.values().cloned());
            let exprs = [Some(&r.expr), Some(&r.when), r.until.as_ref()]
                .into_iter()
                .flatten()
                .chain(r.causes.iter().filter_map(|c| c.when.as_ref()));
            for e in exprs {
                let names = e.variables.iter().chain(e.calls.iter().map(|c| &c.var));
                out.extend(names.filter(|n| n.starts_with("netsight_")).cloned());
            }
        }
        out
    }
}

/// Parses, validates and orders every rule of every source. Returns every error found.
pub fn load(sources: &[RuleSource]) -> Result<RuleSet, Vec<RuleError>> {
    let mut errors = Vec::new();
    let mut rules: Vec<CompiledRule> = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for src in sources {
        let specs = match serde_yaml::from_str::<RuleFile>(&src.text) {
            Ok(f) => f.rules,
            Err(e) => recover_items(src, &e, &mut errors),
        };
        let mut cx = Ctx {
            src,
            errors: &mut errors,
        };
        for spec in specs {
            if let Some(prev) = seen.insert(spec.name.clone(), src.name.clone()) {
                cx.error(
                    &spec.name,
                    None,
                    None,
                    format!("rule `{}` is already defined in {prev}", spec.name),
                );
                continue;
            }
            if let Some(r) = compile_rule(spec, &mut cx) {
                rules.push(r);
            }
        }
    }
    resolve_causes(&mut rules, sources, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let rules = topological(rules);
    let mut labels: BTreeSet<String> = BTreeSet::new();
    for r in &rules {
        match &r.by {
            Some(by) => labels.extend(by.iter().cloned()),
            None => {
                if let Some(l) = metric_labels(&r.spec.series.metric) {
                    labels.extend(l.iter().map(|s| s.to_string()));
                }
            }
        }
    }
    let output_labels: Vec<String> = ["rule", "severity", "layer"]
        .iter()
        .map(|s| s.to_string())
        .chain(labels)
        .collect();
    let with = |extra: &str| -> Arc<[String]> { output_labels.iter().cloned().chain([extra.to_string()]).collect() };
    Ok(RuleSet {
        rules,
        bound_labels: with("bound"),
        cause_labels: with("cause"),
        output_labels: output_labels.into(),
    })
}

/// After a YAML error, parses each `- ` item of the `rules:` list on its own so one
/// broken rule does not hide the errors (or the good rules) in the rest of the file.
fn recover_items(src: &RuleSource, whole: &serde_yaml::Error, errors: &mut Vec<RuleError>) -> Vec<RuleSpec> {
    let lines: Vec<&str> = src.text.lines().collect();
    let item_indent = lines
        .iter()
        .skip_while(|l| l.trim_end() != "rules:")
        .skip(1)
        .find(|l| l.trim_start().starts_with("- "))
        .map(|l| l.len() - l.trim_start().len());
    let Some(ind) = item_indent else {
        errors.push(yaml_error(&src.name, whole, 0, 0));
        return Vec::new();
    };
    let starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.len() - l.trim_start().len() == ind && l.trim_start().starts_with("- "))
        .map(|(i, _)| i)
        .collect();
    let mut specs = Vec::new();
    let before = errors.len();
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(lines.len());
        let chunk: String = lines[start..end]
            .iter()
            .map(|l| {
                if l.len() >= ind + 2 {
                    &l[ind + 2..]
                } else {
                    l.trim_start()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        match serde_yaml::from_str::<RuleSpec>(&chunk) {
            Ok(s) => specs.push(s),
            Err(e) => errors.push(yaml_error(&src.name, &e, start, ind + 2)),
        }
    }
    if errors.len() == before {
        errors.push(yaml_error(&src.name, whole, 0, 0));
    }
    specs
}

fn yaml_error(file: &str, e: &serde_yaml::Error, line_off: usize, col_off: usize) -> RuleError {
    let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
    let message = e.to_string();
    // serde_yaml appends "at line L column C" relative to the chunk: drop it.
    let message = match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    };
    RuleError {
        file: file.to_string(),
        line: line + line_off,
        column: column + col_off,
        message,
    }
}

fn source_of<'a>(sources: &'a [RuleSource], file: &str) -> Option<&'a RuleSource> {
    sources.iter().find(|s| s.name == file)
}

fn resolve_causes(rules: &mut [CompiledRule], sources: &[RuleSource], errors: &mut Vec<RuleError>) {
    let index: HashMap<String, usize> = rules
        .iter()
        .enumerate()
        .map(|(i, r)| (r.spec.name.clone(), i))
        .collect();
    let mut pending = Vec::new();
    for (ri, r) in rules.iter_mut().enumerate() {
        for (ci, c) in r.causes.iter_mut().enumerate() {
            if let Some(target) = &c.spec.rule {
                match index.get(target) {
                    Some(&t) => c.rule = Some(t),
                    None => pending.push((ri, ci, format!("cause names unknown rule `{target}`"))),
                }
            }
        }
    }
    // Cycle detection over cause → rule edges (iterative three-colour DFS).
    let n = rules.len();
    let mut colour = vec![0u8; n];
    for start in 0..n {
        if colour[start] != 0 {
            continue;
        }
        let mut stack = vec![(start, 0usize)];
        colour[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let edges: Vec<(usize, usize)> = rules[node]
                .causes
                .iter()
                .enumerate()
                .filter_map(|(ci, c)| c.rule.map(|t| (ci, t)))
                .collect();
            if *next < edges.len() {
                let (ci, t) = edges[*next];
                *next += 1;
                match colour[t] {
                    0 => {
                        colour[t] = 1;
                        stack.push((t, 0));
                    }
                    1 => {
                        let path: Vec<&str> = stack.iter().map(|(i, _)| rules[*i].spec.name.as_str()).collect();
                        pending.push((
                            node,
                            ci,
                            format!("cause graph has a cycle: {} → {}", path.join(" → "), rules[t].spec.name),
                        ));
                    }
                    _ => {}
                }
            } else {
                colour[node] = 2;
                stack.pop();
            }
        }
    }
    for (ri, ci, msg) in pending {
        let r = &rules[ri];
        if let Some(src) = source_of(sources, &r.file) {
            let (line, column) = locate(&src.text, &r.spec.name, Some(&r.causes[ci].spec.name), Some("rule"));
            errors.push(RuleError {
                file: src.name.clone(),
                line,
                column,
                message: msg,
            });
        }
    }
}

/// Orders rules so that every rule comes after the rules its causes name, and
/// remaps cause indices to the new order.
fn topological(rules: Vec<CompiledRule>) -> Vec<CompiledRule> {
    let n = rules.len();
    let mut order = Vec::with_capacity(n);
    let mut done = vec![false; n];
    fn visit(i: usize, rules: &[CompiledRule], done: &mut [bool], order: &mut Vec<usize>) {
        if done[i] {
            return;
        }
        done[i] = true;
        for c in &rules[i].causes {
            if let Some(t) = c.rule {
                visit(t, rules, done, order);
            }
        }
        order.push(i);
    }
    for i in 0..n {
        visit(i, &rules, &mut done, &mut order);
    }
    let mut new_pos = vec![0; n];
    for (pos, &old) in order.iter().enumerate() {
        new_pos[old] = pos;
    }
    let mut slots: Vec<Option<CompiledRule>> = rules.into_iter().map(Some).collect();
    order
        .iter()
        .filter_map(|&old| slots[old].take())
        .map(|mut r| {
            for c in &mut r.causes {
                c.rule = c.rule.map(|t| new_pos[t]);
            }
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> Vec<RuleSource> {
        vec![RuleSource {
            name: "t.yaml".into(),
            text: text.into(),
        }]
    }

    const GOOD: &str = r#"
rules:
  - name: drops
    layer: link
    severity: warning
    series:
      metric: netsight_network_receive_drop_total
      by: [device]
    expr: rate(value)
    when: value > 10
  - name: retrans
    layer: transport
    severity: warning
    series:
      metric: netsight_netstat_tcp_retrans_segs_total
    vars:
      out: netsight_netstat_tcp_out_segs_total
    expr: rate(value) / max(rate(out), 1)
    baseline: {model: ewma}
    when: value > baseline_upper
    causes:
      - name: path
        layer: network
        explanation: loss on the path
      - name: nic
        layer: link
        rule: drops
        explanation: local drops
"#;

    #[test]
    fn a_good_file_loads_in_dependency_order() {
        let set = load(&src(GOOD)).expect("loads");
        let names: Vec<_> = set.rules.iter().map(|r| r.spec.name.as_str()).collect();
        assert_eq!(names, ["drops", "retrans"]);
        let causes: Vec<_> = set.rules[1].causes.iter().map(|c| c.spec.name.as_str()).collect();
        assert_eq!(causes, ["nic", "path"], "conditional link cause before the fallback");
        assert_eq!(set.rules[1].causes[0].rule, Some(0));
        assert_eq!(&*set.output_labels, ["rule", "severity", "layer", "device"]);
    }

    #[test]
    fn errors_carry_file_line_and_column() {
        let bad = GOOD.replace("netsight_netstat_tcp_out_segs_total", "netsight_nope_total");
        let errs = load(&src(&bad)).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!((errs[0].line, errs[0].column), (17, 12), "{}", errs[0]);
        assert!(errs[0]
            .to_string()
            .starts_with("t.yaml:17:12: unknown metric `netsight_nope_total` for var `out`"));
    }

    #[test]
    fn cycles_are_rejected() {
        let cyc = GOOD.replace(
            "    when: value > 10\n",
            "    when: value > 10\n    causes:\n      - name: back\n        layer: transport\n        rule: retrans\n        explanation: x\n",
        );
        let errs = load(&src(&cyc)).unwrap_err();
        assert!(errs.iter().any(|e| e.message.contains("cycle")), "{errs:?}");
    }
}
