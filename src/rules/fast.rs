//! An allocation-free evaluator for the subset of evalexpr that rule expressions
//! use: numbers, variables, `+ - * /`, unary minus, `< <= > >=`, `&& || !` and
//! `min`/`max`. evalexpr allocates a vector of argument values at every operator
//! node it evaluates; over ~100 rules and their groups that was half of an idle
//! tick's allocations.
//!
//! It mirrors evalexpr 11.3.1 (the pinned version) exactly on that subset: the
//! same Int/Float typing (two integers give integer arithmetic and comparison,
//! anything else is floating point), every operand evaluated (evalexpr's `&&` and
//! `||` do not short-circuit), and builtin `min`/`max` with their mixed Int/Float
//! result. Whatever it cannot decide — a missing variable, a type error, integer
//! overflow or division by zero — returns `None`, and the caller evaluates with
//! evalexpr, which gives its own result or error. Expressions outside the subset
//! are never compiled to this form.

use evalexpr::{Node, Operator, Value};

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Val {
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Val {
    fn number(self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(i as f64),
            Val::Float(f) => Some(f),
            Val::Bool(_) => None,
        }
    }

    pub(crate) fn into_value(self) -> Value {
        match self {
            Val::Int(i) => Value::Int(i),
            Val::Float(f) => Value::Float(f),
            Val::Bool(b) => Value::Boolean(b),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cmp {
    Gt,
    Lt,
    Geq,
    Leq,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fast {
    Const(Val),
    Var(String),
    Neg(Box<Fast>),
    Arith(Arith, Box<[Fast; 2]>),
    Cmp(Cmp, Box<[Fast; 2]>),
    And(Box<[Fast; 2]>),
    Or(Box<[Fast; 2]>),
    Not(Box<Fast>),
    /// `max(a, b, …)` (true) or `min(…)`.
    Extreme(bool, Vec<Fast>),
}

/// The fast form of `node`, if every part of it is in the subset.
pub(crate) fn compile(node: &Node) -> Option<Fast> {
    let children = node.children();
    let pair = || -> Option<Box<[Fast; 2]>> {
        match children {
            [a, b] => Some(Box::new([compile(a)?, compile(b)?])),
            _ => None,
        }
    };
    let one = || -> Option<Box<Fast>> {
        match children {
            [a] => Some(Box::new(compile(a)?)),
            _ => None,
        }
    };
    Some(match node.operator() {
        Operator::RootNode => *one()?,
        Operator::Const { value: Value::Int(i) } => Fast::Const(Val::Int(*i)),
        Operator::Const { value: Value::Float(f) } => Fast::Const(Val::Float(*f)),
        Operator::Const {
            value: Value::Boolean(b),
        } => Fast::Const(Val::Bool(*b)),
        Operator::VariableIdentifierRead { identifier } => Fast::Var(identifier.clone()),
        Operator::Neg => Fast::Neg(one()?),
        Operator::Add => Fast::Arith(Arith::Add, pair()?),
        Operator::Sub => Fast::Arith(Arith::Sub, pair()?),
        Operator::Mul => Fast::Arith(Arith::Mul, pair()?),
        Operator::Div => Fast::Arith(Arith::Div, pair()?),
        Operator::Gt => Fast::Cmp(Cmp::Gt, pair()?),
        Operator::Lt => Fast::Cmp(Cmp::Lt, pair()?),
        Operator::Geq => Fast::Cmp(Cmp::Geq, pair()?),
        Operator::Leq => Fast::Cmp(Cmp::Leq, pair()?),
        Operator::And => Fast::And(pair()?),
        Operator::Or => Fast::Or(pair()?),
        Operator::Not => Fast::Not(one()?),
        Operator::FunctionIdentifier { identifier } if identifier == "max" || identifier == "min" => {
            // The argument must be a tuple: evalexpr's min/max reject a lone number.
            let [arg] = children else { return None };
            let mut arg = arg;
            // `max(a, b)` parses as the function over a parenthesised (root) tuple.
            while matches!(arg.operator(), Operator::RootNode) && arg.children().len() == 1 {
                arg = &arg.children()[0];
            }
            if !matches!(arg.operator(), Operator::Tuple) || arg.children().is_empty() {
                return None;
            }
            let args = arg.children().iter().map(compile).collect::<Option<Vec<_>>>()?;
            Fast::Extreme(identifier == "max", args)
        }
        _ => return None,
    })
}

/// Evaluates `f` with variables read by `var`; `None` when evalexpr must decide.
pub(crate) fn eval(f: &Fast, var: &impl Fn(&str) -> Option<f64>) -> Option<Val> {
    Some(match f {
        Fast::Const(v) => *v,
        Fast::Var(name) => Val::Float(var(name)?),
        Fast::Neg(a) => match eval(a, var)? {
            Val::Int(i) => Val::Int(i.checked_neg()?),
            Val::Float(x) => Val::Float(-x),
            Val::Bool(_) => return None,
        },
        Fast::Arith(op, ab) => {
            let (a, b) = (eval(&ab[0], var)?, eval(&ab[1], var)?);
            if let (Val::Int(a), Val::Int(b)) = (a, b) {
                Val::Int(match op {
                    Arith::Add => a.checked_add(b)?,
                    Arith::Sub => a.checked_sub(b)?,
                    Arith::Mul => a.checked_mul(b)?,
                    Arith::Div => a.checked_div(b)?,
                })
            } else {
                let (a, b) = (a.number()?, b.number()?);
                Val::Float(match op {
                    Arith::Add => a + b,
                    Arith::Sub => a - b,
                    Arith::Mul => a * b,
                    Arith::Div => a / b,
                })
            }
        }
        Fast::Cmp(op, ab) => {
            let (a, b) = (eval(&ab[0], var)?, eval(&ab[1], var)?);
            Val::Bool(if let (Val::Int(a), Val::Int(b)) = (a, b) {
                compare(*op, a, b)
            } else {
                compare(*op, a.number()?, b.number()?)
            })
        }
        Fast::And(ab) => Val::Bool(boolean(eval(&ab[0], var)?)? & boolean(eval(&ab[1], var)?)?),
        Fast::Or(ab) => Val::Bool(boolean(eval(&ab[0], var)?)? | boolean(eval(&ab[1], var)?)?),
        Fast::Not(a) => Val::Bool(!boolean(eval(a, var)?)?),
        Fast::Extreme(max, args) => extreme(*max, args, var)?,
    })
}

fn compare<T: PartialOrd>(op: Cmp, a: T, b: T) -> bool {
    match op {
        Cmp::Gt => a > b,
        Cmp::Lt => a < b,
        Cmp::Geq => a >= b,
        Cmp::Leq => a <= b,
    }
}

fn boolean(v: Val) -> Option<bool> {
    match v {
        Val::Bool(b) => Some(b),
        _ => None,
    }
}

/// evalexpr's builtin `max`/`min`: integers and floats kept apart, the integer
/// extreme returned (as an Int) only when it is strictly beyond the float one.
fn extreme(max: bool, args: &[Fast], var: &impl Fn(&str) -> Option<f64>) -> Option<Val> {
    let (mut int, mut float) = if max {
        (i64::MIN, f64::NEG_INFINITY)
    } else {
        (i64::MAX, f64::INFINITY)
    };
    for a in args {
        match eval(a, var)? {
            Val::Int(i) => int = if max { int.max(i) } else { int.min(i) },
            Val::Float(f) => float = if max { float.max(f) } else { float.min(f) },
            Val::Bool(_) => return None,
        }
    }
    let int_wins = if max {
        (int as f64) > float
    } else {
        (int as f64) < float
    };
    Some(if int_wins { Val::Int(int) } else { Val::Float(float) })
}
