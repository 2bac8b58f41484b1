//! Rule expressions: `evalexpr` over numbers, with window functions over a series'
//! history (`rate(x)`, `delta(x)`, `increase(x, 60)`, `avg_over(x, 300)`,
//! `max_over(x, 300)`, `min_over(x, 300)`).
//!
//! evalexpr evaluates a function's argument before calling it, so a function could
//! never see *which* series `x` is. Compilation therefore rewrites every window call
//! into a synthetic variable (`__w0`…) that the engine computes from history before
//! evaluating; the expression itself then only combines numbers.

use evalexpr::{Context, EvalexprError, EvalexprResult, Node, Operator, Value};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WindowFn {
    /// Per-second increase of a counter over the last two points (reset-aware).
    Rate,
    /// Difference between the last two points (gauges).
    Delta,
    /// Counter increase over the window (reset-aware).
    Increase(f64),
    AvgOver(f64),
    MaxOver(f64),
    MinOver(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct WindowCall {
    pub func: WindowFn,
    /// The series variable the function reads (`value`, a `vars` name or a metric name).
    pub var: String,
    pub synthetic: String,
}

/// The shapes most rules take (`rate(value)`, `value > baseline_upper`,
/// `zscore > 6`), evaluated without walking the evalexpr tree, which allocates an
/// argument vector per node. Anything else, and any missing variable (to keep
/// evalexpr's error text), goes through evalexpr.
#[derive(Debug, Clone)]
pub struct CompiledExpr {
    pub source: String,
    node: Node,
    /// The allocation-free form, when the expression is within its subset.
    fast: Option<super::fast::Fast>,
    pub calls: Vec<WindowCall>,
    /// Plain variables read (window calls' synthetic names excluded).
    pub variables: Vec<String>,
    /// The metric each of `variables` reads, then each call's series (`value` →
    /// the rule's series, a `vars` name → its metric, else the name itself); set
    /// by [`CompiledExpr::resolve`] so evaluation does no name lookups.
    pub metrics: Vec<crate::snapshot::FamilyName>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    pub message: String,
}

fn err(message: impl Into<String>) -> ExprError {
    ExprError {
        message: message.into(),
    }
}

const WINDOW_FNS: &[&str] = &["rate", "delta", "increase", "avg_over", "max_over", "min_over"];

fn unwrap_root(n: &Node) -> &Node {
    let mut n = n;
    while matches!(n.operator(), Operator::RootNode) && n.children().len() == 1 {
        n = &n.children()[0];
    }
    n
}

fn window_seconds(n: &Node, func: &str) -> Result<f64, ExprError> {
    match unwrap_root(n).operator() {
        Operator::Const { value: Value::Int(i) } if *i > 0 => Ok(*i as f64),
        Operator::Const { value: Value::Float(f) } if *f > 0.0 => Ok(*f),
        Operator::Const {
            value: Value::String(s),
        } => humantime::parse_duration(s)
            .map(|d| d.as_secs_f64())
            .map_err(|e| err(format!("{func}(): bad window {s:?}: {e}"))),
        _ => Err(err(format!(
            "{func}(): the window must be a positive number of seconds or a duration string like \"5m\""
        ))),
    }
}

fn series_var(n: &Node, func: &str) -> Result<String, ExprError> {
    match unwrap_root(n).operator() {
        Operator::VariableIdentifierRead { identifier } => Ok(identifier.clone()),
        _ => Err(err(format!(
            "{func}() takes a series variable (value, a var or a metric name) as its first argument"
        ))),
    }
}

fn rewrite(node: &mut Node, calls: &mut Vec<WindowCall>) -> Result<(), ExprError> {
    let func = match node.operator() {
        Operator::FunctionIdentifier { identifier } if WINDOW_FNS.contains(&identifier.as_str()) => {
            Some(identifier.clone())
        }
        _ => None,
    };
    let Some(func) = func else {
        for c in node.children_mut() {
            rewrite(c, calls)?;
        }
        return Ok(());
    };
    let arg = node
        .children()
        .first()
        .map(unwrap_root)
        .ok_or_else(|| err(format!("{func}() needs an argument")))?;
    let args: Vec<&Node> = if matches!(arg.operator(), Operator::Tuple) {
        arg.children().iter().collect()
    } else {
        vec![arg]
    };
    let needs_window = !matches!(func.as_str(), "rate" | "delta");
    let want = if needs_window { 2 } else { 1 };
    if args.len() != want {
        return Err(err(format!("{func}() takes {want} argument(s), got {}", args.len())));
    }
    let var = series_var(args[0], &func)?;
    let w = if needs_window {
        window_seconds(args[1], &func)?
    } else {
        0.0
    };
    let f = match func.as_str() {
        "rate" => WindowFn::Rate,
        "delta" => WindowFn::Delta,
        "increase" => WindowFn::Increase(w),
        "avg_over" => WindowFn::AvgOver(w),
        "max_over" => WindowFn::MaxOver(w),
        _ => WindowFn::MinOver(w),
    };
    let synthetic = match calls.iter().find(|c| c.func == f && c.var == var) {
        Some(c) => c.synthetic.clone(),
        None => {
            let s = format!("__w{}", calls.len());
            calls.push(WindowCall {
                func: f,
                var,
                synthetic: s.clone(),
            });
            s
        }
    };
    *node.operator_mut() = Operator::VariableIdentifierRead { identifier: synthetic };
    node.children_mut().clear();
    Ok(())
}

pub fn compile(source: &str) -> Result<CompiledExpr, ExprError> {
    let mut node = evalexpr::build_operator_tree(source).map_err(|e| err(e.to_string()))?;
    if node.iter_write_variable_identifiers().next().is_some() {
        return Err(err("assignments are not allowed in rule expressions"));
    }
    let mut calls = Vec::new();
    rewrite(&mut node, &mut calls)?;
    let mut variables: Vec<String> = node
        .iter_read_variable_identifiers()
        .filter(|v| !v.starts_with("__w"))
        .map(str::to_string)
        .collect();
    variables.sort();
    variables.dedup();
    let fast = super::fast::compile(&node);
    let metrics = variables
        .iter()
        .chain(calls.iter().map(|c| &c.var))
        .map(|v| crate::snapshot::FamilyName::new(v))
        .collect();
    Ok(CompiledExpr {
        source: source.to_string(),
        fast,
        node,
        calls,
        variables,
        metrics,
    })
}

/// Variables bound for one evaluation. Names borrow from the compiled rule (or are
/// static), so binding allocates nothing per evaluation.
#[derive(Debug, Default, Clone)]
pub struct Bindings<'a> {
    /// Inline up to 12 (value, the baseline variables and a few more): a group's
    /// evaluation binds two sets and allocated both every tick.
    vars: smallvec::SmallVec<[(&'a str, Value); 12]>,
}

/// Name equality; names usually come from the same compiled string, so comparing
/// addresses first skips most byte comparisons.
#[inline]
fn same(a: &str, b: &str) -> bool {
    std::ptr::eq(a, b) || a == b
}

impl<'a> Bindings<'a> {
    /// Room for `n` variables: the engine sizes it from the compiled expression so
    /// binding never regrows the vector.
    pub fn with_capacity(n: usize) -> Self {
        Bindings {
            vars: smallvec::SmallVec::with_capacity(n),
        }
    }

    pub fn set(&mut self, name: &'a str, v: f64) {
        match self.vars.iter_mut().find(|(n, _)| same(n, name)) {
            Some(slot) => slot.1 = Value::Float(v),
            None => self.vars.push((name, Value::Float(v))),
        }
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.vars
            .iter()
            .find(|(n, _)| same(n, name))
            .and_then(|(_, v)| v.as_number().ok())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.vars.iter().filter_map(|(n, v)| Some((*n, v.as_number().ok()?)))
    }
}

impl Context for Bindings<'_> {
    fn get_value(&self, identifier: &str) -> Option<&Value> {
        self.vars.iter().find(|(n, _)| same(n, identifier)).map(|(_, v)| v)
    }

    fn call_function(&self, identifier: &str, _argument: &Value) -> EvalexprResult<Value> {
        Err(EvalexprError::FunctionIdentifierNotFound(identifier.to_string()))
    }

    fn are_builtin_functions_disabled(&self) -> bool {
        false
    }

    fn set_builtin_functions_disabled(&mut self, _disabled: bool) -> EvalexprResult<()> {
        Err(EvalexprError::CustomMessage(
            "builtin functions cannot be disabled".into(),
        ))
    }
}

impl CompiledExpr {
    /// Resolves what every variable and window call reads: `series` for `value`,
    /// `vars(name)` for a rule variable, the name itself otherwise (a metric).
    pub fn resolve<'s>(&mut self, series: &str, vars: impl Fn(&str) -> Option<&'s str>) {
        let names = self.variables.iter().chain(self.calls.iter().map(|c| &c.var));
        self.metrics = names
            .map(|v| match v.as_str() {
                "value" => crate::snapshot::FamilyName::new(series),
                v => crate::snapshot::FamilyName::new(vars(v).unwrap_or(v)),
            })
            .collect();
    }

    fn eval(&self, b: &Bindings) -> Result<Value, ExprError> {
        if let Some(f) = &self.fast {
            let var = |name: &str| match b.get_value(name)? {
                Value::Float(x) => Some(*x),
                _ => None,
            };
            if let Some(v) = super::fast::eval(f, &var) {
                return Ok(v.into_value());
            }
        }
        self.node.eval_with_context(b).map_err(|e| err(e.to_string()))
    }

    pub fn eval_number(&self, b: &Bindings) -> Result<f64, ExprError> {
        match self.eval(b)? {
            Value::Float(f) => Ok(f),
            Value::Int(i) => Ok(i as f64),
            Value::Boolean(x) => Ok(if x { 1.0 } else { 0.0 }),
            other => Err(err(format!("expression gave {other:?}, not a number"))),
        }
    }

    pub fn eval_bool(&self, b: &Bindings) -> Result<bool, ExprError> {
        match self.eval(b)? {
            Value::Boolean(x) => Ok(x),
            other => Err(err(format!("condition gave {other:?}, not true/false"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_calls_become_variables() {
        let c = compile("rate(value) / max(rate(out), 1) > 0.05 && increase(value, \"5m\") > 10").expect("compile");
        assert_eq!(c.calls.len(), 3);
        assert_eq!(
            c.calls[0],
            WindowCall {
                func: WindowFn::Rate,
                var: "value".into(),
                synthetic: "__w0".into()
            }
        );
        assert_eq!(c.calls[2].func, WindowFn::Increase(300.0));
        let mut b = Bindings::default();
        b.set("__w0", 10.0);
        b.set("__w1", 100.0);
        b.set("__w2", 11.0);
        assert!(c.eval_bool(&b).expect("eval"));
    }

    #[test]
    fn the_same_call_twice_is_computed_once() {
        let c = compile("rate(x) + rate(x)").expect("compile");
        assert_eq!(c.calls.len(), 1);
    }

    #[test]
    fn bad_expressions_are_errors() {
        assert!(compile("rate(1)").is_err());
        assert!(compile("rate(x, 5)").is_err());
        assert!(compile("increase(x)").is_err());
        assert!(compile("increase(x, -1)").is_err());
        assert!(compile("a = 1").is_err());
        assert!(compile("(1 + ").is_err());
    }

    /// The allocation-free evaluator gives exactly evalexpr's value or hands over
    /// to it: every expression of the default rule packs plus the subset's corner
    /// cases (integer arithmetic and division, overflow, min/max of mixed types,
    /// NaN and infinities, type errors, missing variables), under many bindings.
    #[test]
    fn fast_forms_agree_with_evalexpr() {
        let mut sources: Vec<String> = [
            "value",
            "value > baseline_upper",
            "value >= baseline_upper",
            "value < 8",
            "value <= 7",
            "8 > value",
            "zscore > 6",
            "(value) > (6.5)",
            "missing > 1",
            "value > missing",
            "1 > 2",
            "7 / 2",
            "7 / 0",
            "7.0 / 0",
            "value / 0",
            "-value",
            "-7",
            "9223372036854775807 + 1",
            "-(0 - 9223372036854775807 - 1)",
            "2 * 3 - 1 > value",
            "max(value, 1)",
            "min(value, 1)",
            "max(value, zscore, 3)",
            "min(1, 2)",
            "max(value)",
            "max(value > 1, 2)",
            "value / max(limit, 1)",
            "max(limit, 1) / 2",
            "value > 1 && value < 9",
            "value > 1 || missing > 2",
            "!(value > 1)",
            "!value",
            "value && true",
            "true || false",
            "value + true",
            "value > 1 && 3",
            "value - min_over(value, \"30s\")",
            "rate(value) / max(rate(out), 1)",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let corner_cases = sources.len();
        for pack in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/rules")).expect("rules dir") {
            let text = std::fs::read_to_string(pack.expect("entry").path()).expect("read pack");
            let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
            collect_exprs(&yaml, &mut sources);
        }
        assert!(sources.len() > 60, "rule expressions found: {}", sources.len());
        let values = [
            0.0,
            1.0,
            -1.0,
            0.5,
            7.5,
            1e19,
            -1e19,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        let mut fast_used = 0;
        for src in &sources {
            let Ok(c) = compile(src) else { continue };
            if c.fast.is_some() {
                fast_used += 1;
            }
            let names: Vec<String> = c
                .variables
                .iter()
                .cloned()
                .chain(c.calls.iter().map(|w| w.synthetic.clone()))
                .collect();
            for (i, _) in values.iter().enumerate() {
                for skip in [None, Some(i % names.len().max(1))] {
                    let mut b = Bindings::default();
                    for (k, name) in names.iter().enumerate() {
                        if skip != Some(k) {
                            b.set(name, values[(i + k * 3) % values.len()]);
                        }
                    }
                    let slow = c.node.eval_with_context(&b).map_err(|e| err(e.to_string()));
                    let got = c.eval(&b);
                    let same = match (&got, &slow) {
                        (Ok(Value::Float(x)), Ok(Value::Float(y))) => x.to_bits() == y.to_bits(),
                        _ => got == slow,
                    };
                    assert!(
                        same,
                        "{src} with {:?}: fast {got:?}, evalexpr {slow:?}",
                        b.iter().collect::<Vec<_>>()
                    );
                }
            }
        }
        let slow_packs: Vec<&String> = sources[corner_cases..]
            .iter()
            .filter(|s| compile(s).is_ok_and(|c| c.fast.is_none()))
            .collect();
        assert!(
            slow_packs.is_empty(),
            "rule pack expressions evalexpr must evaluate: {slow_packs:?}"
        );
        assert!(fast_used > sources.len() / 2);
        for fast in [
            "value > 1",
            "rate(value)",
            "1 > 2",
            "value > 1 && value < 9",
            "value / max(limit, 1)",
        ] {
            assert!(compile(fast).expect("compile").fast.is_some(), "{fast}");
        }
        for slow in ["value == 1", "value % 2", "value ^ 2", "\"a\" < \"b\"", "floor(value)"] {
            assert!(compile(slow).expect("compile").fast.is_none(), "{slow}");
        }
    }

    /// Every `when`/`value`/`expr` string in a rule pack document.
    fn collect_exprs(v: &serde_yaml::Value, out: &mut Vec<String>) {
        match v {
            serde_yaml::Value::Mapping(m) => {
                for (k, v) in m {
                    match (k.as_str(), v.as_str()) {
                        (Some("when" | "value" | "expr"), Some(s)) => out.push(s.to_string()),
                        _ => collect_exprs(v, out),
                    }
                }
            }
            serde_yaml::Value::Sequence(s) => s.iter().for_each(|v| collect_exprs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn variables_are_listed() {
        let c = compile("value > baseline_upper && netsight_sysctl_net_core_somaxconn < 4096").expect("compile");
        assert_eq!(
            c.variables,
            vec!["baseline_upper", "netsight_sysctl_net_core_somaxconn", "value"]
        );
    }
}
