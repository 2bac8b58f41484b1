use super::*;
use crate::netlink::nftables::{Chain, Set};
use crate::snapshot::Snapshot;

fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut v = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
    v.extend_from_slice(&kind.to_ne_bytes());
    v.extend_from_slice(value);
    v
}

fn rule(table: &str, handle: u64, packets: Option<u64>) -> Rule {
    let mut r = Rule::new(1, table, "c", handle);
    if let Some(p) = packets {
        r.push_expr(
            "counter",
            &[nla(1, &(p * 10).to_be_bytes()), nla(2, &p.to_be_bytes())].concat(),
        );
    }
    r
}

fn ruleset(gen: u32, rules: Vec<Rule>) -> Ruleset {
    let chain = |t: &str| Chain {
        family: 1,
        table: t.into(),
        name: "c".into(),
        handle: 1,
        hook: None,
        policy: None,
        chain_type: None,
    };
    Ruleset {
        generation: gen,
        chains: vec![chain("a"), chain("b")],
        rules,
        sets: vec![Set {
            family: 1,
            table: "a".into(),
            name: "s".into(),
            handle: 1,
            flags: 0,
            size: 0,
            elements: Some(3),
        }],
        ..Ruleset::default()
    }
}

fn emit(c: &mut Nftables, rs: Ruleset, now: f64) -> Snapshot {
    let mut out = Emitter::new();
    c.emit(rs, now, &mut out);
    Snapshot::new(SystemTime::now(), out.into_families())
}

fn handles(s: &Snapshot) -> Vec<String> {
    let f = s.family("netsight_nftables_rule_packets_total").expect("family");
    f.samples.iter().map(|x| x.labels[3].to_string()).collect()
}

fn collector(max_rules: usize, exclude: Option<&str>) -> Nftables {
    Nftables::new(&NftablesConfig {
        enabled: true,
        max_rules,
        include: None,
        exclude: exclude.map(str::to_string),
    })
    .expect("config")
}

#[test]
fn rules_chains_sets_and_generation() {
    let mut c = collector(10, None);
    let s = emit(
        &mut c,
        ruleset(
            7,
            vec![rule("a", 1, Some(5)), rule("a", 2, None), rule("b", 3, Some(0))],
        ),
        100.0,
    );
    assert_eq!(s.value("netsight_nftables_ruleset_generation", &[]), Some(7.0));
    assert_eq!(
        s.value("netsight_nftables_ruleset_last_change_timestamp_seconds", &[]),
        Some(100.0)
    );
    assert_eq!(handles(&s), ["1", "3"], "rules without a counter are not exported");
    assert_eq!(
        s.value("netsight_nftables_rule_bytes_total", &[("handle", "1")]),
        Some(50.0)
    );
    assert_eq!(
        s.value(
            "netsight_nftables_rule_packets_total",
            &[("handle", "1"), ("verdict", "none")]
        ),
        Some(5.0)
    );
    assert_eq!(s.value("netsight_nftables_chain_rules", &[("table", "a")]), Some(2.0));
    assert_eq!(s.value("netsight_nftables_chain_rules", &[("table", "b")]), Some(1.0));
    assert_eq!(
        s.value("netsight_nftables_chain_info", &[("table", "a"), ("hook", "")]),
        Some(1.0)
    );
    assert_eq!(s.value("netsight_nftables_set_elements", &[("set", "s")]), Some(3.0));
    assert!(s.family("netsight_nftables_set_size_limit").is_none());
    assert_eq!(s.value("netsight_nftables_rule_series_capped", &[]), Some(0.0));
    // Same generation later: last change stays; a new generation moves it.
    let s = emit(&mut c, ruleset(7, vec![rule("a", 1, Some(6))]), 200.0);
    assert_eq!(
        s.value("netsight_nftables_ruleset_last_change_timestamp_seconds", &[]),
        Some(100.0)
    );
    let s = emit(&mut c, ruleset(8, vec![rule("a", 1, Some(0))]), 300.0);
    assert_eq!(
        s.value("netsight_nftables_ruleset_last_change_timestamp_seconds", &[]),
        Some(300.0)
    );
}

#[test]
fn cap_keeps_busiest_then_sticks_until_the_generation_changes() {
    let mut c = collector(2, None);
    let rules = |p: [u64; 4]| (0..4).map(|i| rule("a", i as u64 + 1, Some(p[i]))).collect::<Vec<_>>();
    let s = emit(&mut c, ruleset(1, rules([1, 50, 3, 40])), 1.0);
    assert_eq!(handles(&s), ["2", "4", "other"]);
    assert_eq!(
        s.value("netsight_nftables_rule_packets_total", &[("handle", "other")]),
        Some(4.0)
    );
    assert_eq!(s.value("netsight_nftables_rule_series_capped", &[]), Some(2.0));
    // Same generation, rule 1 becomes the busiest: the selection does not churn.
    let s = emit(&mut c, ruleset(1, rules([900, 51, 3, 41])), 2.0);
    assert_eq!(handles(&s), ["2", "4", "other"]);
    assert_eq!(
        s.value("netsight_nftables_rule_packets_total", &[("handle", "other")]),
        Some(903.0)
    );
    // A new generation where rule 4 is gone: 2 keeps its series, the busiest other gets the slot.
    let s = emit(
        &mut c,
        ruleset(
            2,
            vec![rule("a", 1, Some(900)), rule("a", 2, Some(51)), rule("a", 3, Some(3))],
        ),
        3.0,
    );
    assert_eq!(handles(&s), ["1", "2", "other"]);
    // Every packet is in exactly one series.
    let total: f64 = s
        .family("netsight_nftables_rule_packets_total")
        .expect("f")
        .samples
        .iter()
        .filter_map(|x| x.value.as_f64())
        .sum();
    assert_eq!(total, 954.0);
}

#[test]
fn table_filter_drops_excluded_tables() {
    let mut c = collector(10, Some("^b$"));
    let s = emit(
        &mut c,
        ruleset(1, vec![rule("a", 1, Some(1)), rule("b", 2, Some(1))]),
        1.0,
    );
    assert_eq!(handles(&s), ["1"]);
    assert!(s.value("netsight_nftables_chain_info", &[("table", "b")]).is_none());
    let bad = Nftables::new(&NftablesConfig {
        enabled: true,
        max_rules: 1,
        include: Some("(".into()),
        exclude: None,
    });
    assert!(bad.is_err());
}

#[test]
fn fixture_tree_is_unavailable_not_a_panic() {
    let ctx = CollectContext::new("/nonexistent/proc", "/nonexistent/sys");
    let mut out = Emitter::new();
    let r = collector(1, None).collect(&ctx, &mut out);
    assert!(matches!(r, Err(CollectError::Unavailable(m)) if m.contains("netlink")));
}
