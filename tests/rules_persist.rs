//! Baselines survive a restart: an engine that saves its state mid-series and a new
//! engine that restores it make the same decisions as one uninterrupted engine.

use std::time::{Duration, SystemTime};

use netsight::rules::persist;
use netsight::rules::testing::{expand, parse_series, snapshot_at, InputSeries};
use netsight::rules::{load, Engine, RuleSet, RuleSource};
use netsight::snapshot::History;

fn rules(text: &str) -> RuleSet {
    load(&[RuleSource {
        name: "t.yaml".into(),
        text: text.into(),
    }])
    .expect("rules")
}

/// Feeds ticks `ticks` of `s` (1 s apart) to the engine, calling `after` after each.
fn feed(
    engine: &mut Engine,
    hist: &mut History,
    s: &InputSeries,
    ticks: std::ops::Range<usize>,
    mut after: impl FnMut(usize, &Engine),
) {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for i in ticks {
        let snap = snapshot_at(s, i, t0 + Duration::from_secs(i as u64));
        hist.record(&snap);
        engine.evaluate(&snap, hist);
        after(i, engine);
    }
}

const RULES: &str = r#"
rules:
  - name: tw_spike
    layer: transport
    severity: warning
    series: {metric: netsight_sockstat_tcp_time_wait}
    baseline: {model: mad, k: 5, min_sigma: 1}
    min_samples: 20
    when: value > baseline_upper
  - name: rst_rate
    layer: transport
    severity: warning
    series: {metric: netsight_netstat_tcp_out_rsts_total}
    expr: rate(value)
    baseline: {model: ewma, alpha: 0.1, k: 5, min_sigma: 1}
    min_samples: 20
    when: value > baseline_upper
"#;

fn series() -> InputSeries {
    // A noisy level for 40 ticks, then spikes after the restart point (tick 30): a
    // restarted engine that forgot its baseline would still be warming up there.
    let tw: String = (0..40).map(|i| format!("{} ", 100 + (i * 7) % 5)).collect::<String>() + "300 300 100 100 100";
    let rst = "0+10x39 400+100x4 900+10x5";
    vec![
        {
            let (n, l) = parse_series("netsight_sockstat_tcp_time_wait").expect("name");
            (n, l, expand(&tw).expect("tw"))
        },
        {
            let (n, l) = parse_series("netsight_netstat_tcp_out_rsts_total").expect("name");
            (n, l, expand(rst).expect("rst"))
        },
    ]
}

fn decisions(engine: &Engine) -> (bool, bool) {
    (engine.is_firing("tw_spike", &[]), engine.is_firing("rst_rate", &[]))
}

#[test]
fn a_restart_mid_series_makes_the_same_decisions() {
    let set = rules(RULES);
    let s = series();
    let steps = s.iter().map(|x| x.2.len()).max().unwrap_or(0);

    let mut expected = Vec::new();
    let (mut a, mut ha) = (Engine::new(set.clone()), History::new(120));
    feed(&mut a, &mut ha, &s, 0..steps, |_, e| expected.push(decisions(e)));
    assert!(
        expected.iter().any(|d| d.0) && expected.iter().any(|d| d.1),
        "the scenario must fire both rules: {expected:?}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("state");
    let mut got = Vec::new();
    let (mut b, mut hb) = (Engine::new(set.clone()), History::new(120));
    feed(&mut b, &mut hb, &s, 0..30, |_, e| got.push(decisions(e)));
    persist::save(&file, &b, &hb).expect("save");
    drop((b, hb));
    let (mut c, mut hc) = (Engine::new(set.clone()), History::new(120));
    let restored = persist::restore(&file, &mut c, &mut hc).expect("restore");
    assert_eq!(restored, 2);
    feed(&mut c, &mut hc, &s, 30..steps, |_, e| got.push(decisions(e)));
    assert_eq!(got, expected);

    // Without the state, the restarted engine misses the spikes (still warming up).
    let mut fresh = Vec::new();
    let (mut d, mut hd) = (Engine::new(set), History::new(120));
    feed(&mut d, &mut hd, &s, 30..steps, |_, e| fresh.push(decisions(e)));
    assert_ne!(fresh, expected[30..].to_vec());
}

#[test]
fn damaged_or_foreign_state_files_are_refused() {
    let set = rules(RULES);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("state");
    let e = Engine::new(set.clone());
    persist::save(&file, &e, &History::new(10)).expect("save");
    let mut bytes = std::fs::read(&file).expect("read");
    let last = bytes.len() - 2;
    bytes[last] ^= 0x20;
    std::fs::write(&file, &bytes).expect("write");
    let mut e2 = Engine::new(set.clone());
    let err = persist::restore(&file, &mut e2, &mut History::new(10)).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    std::fs::write(&file, b"{\"hello\": 1}\n").expect("write");
    let err = persist::restore(&file, &mut e2, &mut History::new(10)).unwrap_err();
    assert!(err.to_string().contains("not a netsight state file"), "{err}");
    std::fs::write(&file, b"netsight-state 99 0 0\n").expect("write");
    let err = persist::restore(&file, &mut e2, &mut History::new(10)).unwrap_err();
    assert!(err.to_string().contains("version 99"), "{err}");
}

#[test]
fn every_baseline_model_survives_a_save_and_restore() {
    let text = r#"
rules:
  - {name: m_ewma, layer: link, severity: info, series: {metric: netsight_sockstat_tcp_orphans}, baseline: {model: ewma}, when: zscore > 9}
  - {name: m_mad, layer: link, severity: info, series: {metric: netsight_sockstat_tcp_orphans}, baseline: {model: mad}, when: zscore > 9}
  - {name: m_det, layer: link, severity: info, series: {metric: netsight_sockstat_tcp_orphans}, baseline: {model: detector}, when: zscore > 9}
  - {name: m_sea, layer: link, severity: info, series: {metric: netsight_sockstat_tcp_orphans}, baseline: {model: seasonal, periods: [10s], step: 1s, refit_every: 5s}, when: zscore > 9}
"#;
    netsight::rules::seasonal::set_synchronous(true);
    let set = rules(text);
    let values: String = (0..60).map(|i| format!("{} ", 10 + (i % 10))).collect();
    let s: InputSeries = vec![(
        "netsight_sockstat_tcp_orphans".into(),
        Default::default(),
        expand(&values).expect("values"),
    )];
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut e = Engine::new(set.clone());
    let mut h = History::new(120);
    for i in 0..60 {
        let snap = snapshot_at(&s, i, t0 + Duration::from_secs(i as u64));
        h.record(&snap);
        e.evaluate(&snap, &h);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("state");
    persist::save(&file, &e, &h).expect("save");
    let mut e2 = Engine::new(set);
    let restored = persist::restore(&file, &mut e2, &mut History::new(120)).expect("restore");
    assert_eq!(restored, 4);
    let json = |e: &Engine| serde_json::to_string(&e.export_state()).expect("json");
    assert_eq!(json(&e), json(&e2));
}

/// Events are not persisted: a group restored as firing must get a new event (so
/// the pushed alert/annotation exists) and that event must end when the rule
/// resolves; a reload that removes a firing rule ends its event.
#[test]
fn a_group_firing_across_a_restart_gets_an_event_that_ends() {
    let set = rules(RULES);
    let s = series();
    let steps = s.iter().map(|x| x.2.len()).max().unwrap_or(0);

    let mut fired = Vec::new();
    let (mut a, mut ha) = (Engine::new(set.clone()), History::new(120));
    feed(&mut a, &mut ha, &s, 0..steps, |i, e| {
        if e.is_firing("tw_spike", &[]) {
            fired.push(i)
        }
    });
    let fired_at = *fired.first().expect("tw_spike fires in the scenario");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("state");
    let (mut b, mut hb) = (Engine::new(set.clone()), History::new(120));
    feed(&mut b, &mut hb, &s, 0..fired_at + 1, |_, _| {});
    persist::save(&file, &b, &hb).expect("save");

    let (mut c, mut hc) = (Engine::new(set.clone()), History::new(120));
    persist::restore(&file, &mut c, &mut hc).expect("restore");
    feed(&mut c, &mut hc, &s, fired_at + 1..fired_at + 2, |_, _| {});
    assert!(c.is_firing("tw_spike", &[]), "still firing after the restart");
    let open: Vec<_> = c
        .events
        .range(0.0, f64::MAX)
        .into_iter()
        .filter(|e| e.rule == "tw_spike")
        .collect();
    assert_eq!(open.len(), 1, "one event for the restored firing group: {open:?}");
    assert_eq!(open[0].end, None);
    let id = open[0].id;
    feed(&mut c, &mut hc, &s, fired_at + 2..steps, |_, _| {});
    assert!(!c.is_firing("tw_spike", &[]), "resolved by the end of the series");
    assert!(
        c.events.get(id).and_then(|e| e.end).is_some(),
        "the restored event ended"
    );

    // A reload without the rule ends the event of a firing group (b is firing).
    let ev = b
        .events
        .range(0.0, f64::MAX)
        .into_iter()
        .find(|e| e.rule == "tw_spike" && e.end.is_none())
        .expect("open event");
    let reduced = RULES
        .split("  - name: rst_rate")
        .next()
        .expect("split")
        .replace("tw_spike", "tw_other");
    b.replace(rules(&reduced));
    assert!(
        b.events.get(ev.id).and_then(|e| e.end).is_some(),
        "the removed rule's event ended"
    );
}

const LABELLED_RULES: &str = r#"
rules:
  - name: rx_rate
    layer: link
    severity: warning
    series: {metric: netsight_network_receive_bytes_total}
    expr: rate(value)
    baseline: {model: ewma, alpha: 0.1, k: 5, min_sigma: 1}
    min_samples: 20
    when: value > baseline_upper
  - name: rx_mad
    layer: link
    severity: info
    series: {metric: netsight_network_receive_bytes_total, by: [device]}
    expr: rate(value)
    baseline: {model: mad, k: 5, min_sigma: 1}
    min_samples: 20
    when: value > baseline_upper
"#;

/// Two interfaces, a level for 40 ticks, then a burst on `eth0` only after tick 30.
fn labelled_series() -> InputSeries {
    let eth0 = "0+1000x39 100000+90000x4 500000+1000x5";
    let eth1 = "0+500x49";
    [("eth0", eth0), ("veth-a1", eth1)]
        .into_iter()
        .map(|(dev, values)| {
            let (n, l) =
                parse_series(&format!("netsight_network_receive_bytes_total{{device=\"{dev}\"}}")).expect("name");
            (n, l, expand(values).expect("values"))
        })
        .collect()
}

fn labelled_decisions(e: &Engine) -> [bool; 4] {
    let d = |dev| [("device", dev)];
    [
        e.is_firing("rx_rate", &d("eth0")),
        e.is_firing("rx_rate", &d("veth-a1")),
        e.is_firing("rx_mad", &d("eth0")),
        e.is_firing("rx_mad", &d("veth-a1")),
    ]
}

/// `tests/fixtures/state/ebae9c0.state` was written by commit ebae9c0, the last
/// version that kept label values as `String`s, after feeding ticks 0..30 of
/// `labelled_series` to `LABELLED_RULES` (saved with `persist::save`). An upgraded
/// daemon restores it and goes on exactly as an engine that never restarted.
#[test]
fn a_state_file_of_the_previous_version_restores_and_continues() {
    let set = rules(LABELLED_RULES);
    let s = labelled_series();
    let steps = s.iter().map(|x| x.2.len()).max().unwrap_or(0);
    let mut expected = Vec::new();
    let (mut a, mut ha) = (Engine::new(set.clone()), History::new(120));
    feed(&mut a, &mut ha, &s, 0..steps, |i, e| {
        if i >= 30 {
            expected.push(labelled_decisions(e));
        }
    });
    assert!(
        expected.iter().any(|d| d[0] && d[2]) && expected.iter().all(|d| !d[1] && !d[3]),
        "the burst fires both rules on eth0 only: {expected:?}"
    );

    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state/ebae9c0.state");
    let (mut c, mut hc) = (Engine::new(set), History::new(120));
    let restored = persist::restore(&fixture, &mut c, &mut hc).expect("restore");
    assert_eq!(restored, 4, "two rules × two interfaces");
    let mut got = Vec::new();
    feed(&mut c, &mut hc, &s, 30..steps, |_, e| got.push(labelled_decisions(e)));
    assert_eq!(got, expected);
}
