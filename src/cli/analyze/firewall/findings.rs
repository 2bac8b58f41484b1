//! Shadowed, duplicate and redundant rules: what each rule matches, compared
//! with the rules before it in its chain.

use std::collections::HashMap;

use super::Finding;
use crate::netlink::nftables::{family_name, ExprClass, Rule, Ruleset, Verdict};

/// What the analysis knows about one rule.
struct Facts<'a> {
    rule: &'a Rule,
    verdict: Verdict,
    /// Expressions without `counter` (whose data holds the changing values).
    canon: Vec<(&'a str, &'a [u8])>,
    /// The rule's match as a set of self-contained predicates (loads followed by a
    /// comparison), when it can be decided; `None` otherwise.
    atoms: Option<Vec<Vec<u8>>>,
    /// No loads, comparisons, stateful or unknown expressions: matches every packet.
    unconditional: bool,
    /// May change the packet (or is not understood): later rules may see packets
    /// earlier rules did not, so containment is not carried past it.
    barrier: bool,
    stateful: bool,
}

fn encode(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.extend_from_slice(&(data.len() as u32).to_ne_bytes());
    out.extend_from_slice(data);
}

fn facts(rule: &Rule) -> Facts<'_> {
    let mut atoms = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut loads = 0;
    let mut decidable = true;
    let (mut conditional, mut barrier, mut stateful) = (false, false, false);
    for e in rule.exprs() {
        match e.class() {
            ExprClass::Load => {
                encode(&mut cur, e.name, e.data);
                loads += 1;
                conditional = true;
            }
            ExprClass::Compare => {
                conditional = true;
                if e.name == "match" {
                    // xtables matches read the packet themselves.
                    decidable &= cur.is_empty();
                    let mut a = Vec::new();
                    encode(&mut a, e.name, e.data);
                    atoms.push(a);
                } else {
                    decidable &= loads > 0;
                    encode(&mut cur, e.name, e.data);
                    atoms.push(std::mem::take(&mut cur));
                    loads = 0;
                }
            }
            ExprClass::Neutral => {}
            ExprClass::Verdict => decidable &= cur.is_empty(),
            ExprClass::Stateful => {
                stateful = true;
                conditional = true;
                decidable = false;
            }
            ExprClass::Effect => {
                barrier = true;
                decidable = false;
            }
            ExprClass::Unknown => {
                barrier = true;
                conditional = true;
                decidable = false;
            }
        }
    }
    decidable &= cur.is_empty();
    let verdict = rule.verdict();
    atoms.sort();
    atoms.dedup();
    Facts {
        rule,
        unconditional: !conditional && verdict.is_terminal(),
        verdict,
        canon: rule
            .exprs()
            .filter(|e| e.name != "counter")
            .map(|e| (e.name, e.data))
            .collect(),
        atoms: decidable.then_some(atoms),
        barrier,
        stateful,
    }
}

fn is_subset(small: &[Vec<u8>], big: &[Vec<u8>]) -> bool {
    small.iter().all(|a| big.binary_search(a).is_ok())
}

/// Shadowed, duplicate and redundant rules, chain by chain:
/// * `shadowed`: after an unconditional rule with a terminal verdict (accept, drop,
///   reject, queue, return, goto, nat) — it is never evaluated; or every packet it
///   matches already matched an earlier terminal rule with a different verdict;
/// * `duplicate`: the same expressions (counters aside) as an earlier rule;
/// * `redundant`: matches a subset of what an earlier terminal rule with the same
///   verdict matches (the earlier rule's conditions are all among its own).
///
/// Containment is only claimed where decidable: both rules consist of loads and
/// comparisons the analysis knows, and no rule in between may change the packet.
pub fn findings(rs: &Ruleset) -> Vec<Finding> {
    let mut order: Vec<(u8, &str, &str)> = Vec::new();
    let mut chains: HashMap<(u8, &str, &str), Vec<&Rule>> = HashMap::new();
    for r in &rs.rules {
        let k = (r.family, r.table.as_str(), r.chain.as_str());
        chains.entry(k).or_insert_with(|| {
            order.push(k);
            Vec::new()
        });
        chains.get_mut(&k).expect("inserted").push(r);
    }
    let mut out = Vec::new();
    for k in order {
        let rules: Vec<Facts> = chains[&k].iter().map(|r| facts(r)).collect();
        let mut blocker: Option<&Facts> = None;
        let mut seen: HashMap<&[(&str, &[u8])], &Facts> = HashMap::new();
        let mut terminal: Vec<&Facts> = Vec::new();
        for f in &rules {
            let finding = |kind: &'static str, by: &Facts, reason: String| Finding {
                kind,
                family: family_name(f.rule.family).into_owned(),
                table: f.rule.table.clone(),
                chain: f.rule.chain.clone(),
                handle: f.rule.handle,
                comment: f.rule.display_comment(),
                verdict: f.verdict.to_string(),
                by_handle: by.rule.handle,
                reason,
            };
            if let Some(b) = blocker {
                out.push(finding(
                    "shadowed",
                    b,
                    format!(
                        "never evaluated: rule {} before it matches every packet ({})",
                        b.rule.handle, b.verdict
                    ),
                ));
                continue;
            }
            if let Some(e) = seen.get(f.canon.as_slice()) {
                out.push(finding(
                    "duplicate",
                    e,
                    format!("same expressions and verdict as rule {}", e.rule.handle),
                ));
            } else if let Some(atoms) = &f.atoms {
                if let Some(e) = terminal
                    .iter()
                    .find(|e| e.atoms.as_deref().is_some_and(|ea| is_subset(ea, atoms)))
                {
                    if e.verdict == f.verdict {
                        out.push(finding(
                            "redundant",
                            e,
                            format!(
                                "matches a subset of rule {} ({}), which already gives the same verdict",
                                e.rule.handle, e.verdict
                            ),
                        ));
                    } else {
                        out.push(finding(
                            "shadowed",
                            e,
                            format!(
                                "every packet it matches already matched rule {} ({})",
                                e.rule.handle, e.verdict
                            ),
                        ));
                    }
                }
            }
            seen.entry(f.canon.as_slice()).or_insert(f);
            if f.unconditional {
                blocker = Some(f);
            }
            if f.barrier {
                terminal.clear();
            }
            if f.atoms.is_some() && f.verdict.is_terminal() && !f.stateful {
                terminal.push(f);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An expression for a test rule: name and raw data.
    struct Expr {
        name: &'static str,
        data: Vec<u8>,
    }

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn e(name: &'static str, data: Vec<u8>) -> Expr {
        Expr { name, data }
    }

    fn payload(offset: u32) -> Expr {
        e(
            "payload",
            [nla(1, &1u32.to_be_bytes()), nla(3, &offset.to_be_bytes())].concat(),
        )
    }

    fn cmp(v: u32) -> Expr {
        e("cmp", [nla(1, &1u32.to_be_bytes()), nla(3, &v.to_be_bytes())].concat())
    }

    fn verdict(code: i32) -> Expr {
        let inner = nla(1, &(code as u32).to_be_bytes());
        let verdict = nla(0x8000 | 2, &inner);
        e(
            "immediate",
            [nla(1, &0u32.to_be_bytes()), nla(0x8000 | 2, &verdict)].concat(),
        )
    }

    fn counter(p: u64) -> Expr {
        e(
            "counter",
            [nla(1, &(p * 100).to_be_bytes()), nla(2, &p.to_be_bytes())].concat(),
        )
    }

    fn rule(handle: u64, exprs: Vec<Expr>) -> Rule {
        let mut r = Rule::new(2, "t", "c", handle);
        for e in exprs {
            r.push_expr(e.name, &e.data);
        }
        r
    }

    fn kinds(rules: Vec<Rule>) -> Vec<(&'static str, u64, u64)> {
        let rs = Ruleset {
            rules,
            ..Ruleset::default()
        };
        findings(&rs)
            .into_iter()
            .map(|f| (f.kind, f.handle, f.by_handle))
            .collect()
    }

    const ACCEPT: i32 = 1;
    const DROP: i32 = 0;

    #[test]
    fn clean_chain_has_no_findings() {
        assert!(kinds(vec![
            rule(1, vec![payload(9), cmp(6), verdict(ACCEPT)]),
            rule(2, vec![payload(9), cmp(17), counter(3), verdict(DROP)]),
            rule(3, vec![payload(12), cmp(1), verdict(ACCEPT)]),
            rule(4, vec![counter(0)]),
        ])
        .is_empty());
    }

    #[test]
    fn rules_after_an_unconditional_verdict_are_shadowed() {
        let k = kinds(vec![
            rule(1, vec![payload(9), cmp(6), verdict(ACCEPT)]),
            rule(2, vec![counter(5), verdict(DROP)]),
            rule(3, vec![payload(9), cmp(17), verdict(ACCEPT)]),
            rule(4, vec![counter(0)]),
        ]);
        assert_eq!(k, vec![("shadowed", 3, 2), ("shadowed", 4, 2)]);
        // A counter-only rule (no verdict) does not shadow anything.
        assert!(kinds(vec![
            rule(1, vec![counter(1)]),
            rule(2, vec![payload(9), cmp(6), verdict(DROP)])
        ])
        .is_empty());
    }

    #[test]
    fn duplicates_ignore_counter_values() {
        let k = kinds(vec![
            rule(1, vec![payload(9), cmp(6), counter(10), verdict(ACCEPT)]),
            rule(2, vec![payload(12), cmp(1), verdict(DROP)]),
            rule(3, vec![payload(9), cmp(6), counter(0), verdict(ACCEPT)]),
        ]);
        assert_eq!(k, vec![("duplicate", 3, 1)]);
    }

    #[test]
    fn contained_matches_are_redundant_or_shadowed() {
        // Rule 2 = rule 1's match plus another condition, same verdict: redundant.
        let k = kinds(vec![
            rule(1, vec![payload(9), cmp(6), verdict(DROP)]),
            rule(2, vec![payload(12), cmp(7), payload(9), cmp(6), verdict(DROP)]),
            rule(3, vec![payload(9), cmp(6), payload(16), cmp(8), verdict(ACCEPT)]),
            // Rule 1's condition alone with another verdict: shadowed too.
            rule(4, vec![payload(9), cmp(6), verdict(ACCEPT)]),
        ]);
        assert_eq!(k, vec![("redundant", 2, 1), ("shadowed", 3, 1), ("shadowed", 4, 1)]);
        // The earlier, broader rule must be terminal: after a jump nothing is claimed.
        let k = kinds(vec![
            rule(1, vec![payload(9), cmp(6), counter(1)]),
            rule(2, vec![payload(12), cmp(7), payload(9), cmp(6), verdict(DROP)]),
        ]);
        assert!(k.is_empty(), "{k:?}");
        // A rule that changes the packet in between stops containment.
        let mark = e(
            "meta",
            [nla(1, &3u32.to_be_bytes()), nla(3, &1u32.to_be_bytes())].concat(),
        );
        let k = kinds(vec![
            rule(1, vec![payload(9), cmp(6), verdict(DROP)]),
            rule(2, vec![payload(1), cmp(1), mark]),
            rule(3, vec![payload(12), cmp(7), payload(9), cmp(6), verdict(DROP)]),
        ]);
        assert!(k.is_empty(), "{k:?}");
        // Stateful expressions (limit) make a rule undecidable.
        let k = kinds(vec![
            rule(1, vec![payload(9), cmp(6), e("limit", vec![]), verdict(DROP)]),
            rule(2, vec![payload(12), cmp(7), payload(9), cmp(6), verdict(DROP)]),
        ]);
        assert!(k.is_empty(), "{k:?}");
    }
}
