//! `netsight detect`: an anomaly report with root causes for a past window, read
//! from a running daemon's event log (`/api/v1/events`) or computed by replaying
//! the rules over Prometheus range queries of netsight's own series.
//! Exit code 0 no anomaly, 1 anomalies found, 2 the source could not be read.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use serde::Serialize;
use serde_json::{json, Value};

use super::diagnose::http::{encode_component, get, Url};
use super::{load_config, CommonArgs};
use crate::rules::events::Event;
use crate::rules::testing::{snapshot_at, InputSeries};
use crate::rules::Engine;
use crate::snapshot::History;

#[derive(Args, Debug)]
pub struct DetectArgs {
    /// How far back to look, ending now (e.g. `15m`, `1h`, `2d`).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub time_range: Duration,
    /// A running daemon to read the event log from [default: http://127.0.0.1:9977].
    #[arg(long, value_name = "URL", conflicts_with = "prometheus")]
    pub daemon: Option<String>,
    /// A Prometheus that scrapes netsight: the rules are replayed over its range queries.
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,
    /// Label matchers added to every Prometheus query, e.g. `job="netsight"`.
    #[arg(long, value_name = "MATCHERS", requires = "prometheus")]
    pub selector: Option<String>,
    /// Resolution of the Prometheus replay [default: 15s, coarser for long ranges].
    #[arg(long, value_parser = humantime::parse_duration, requires = "prometheus")]
    pub step: Option<Duration>,
    /// Time limit of each HTTP request.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// PEM file of extra CA certificates for https URLs.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Print the report as JSON (shape in docs/analyze.md).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Anomaly {
    /// Prometheus `instance` label (replay mode); null for a daemon's own log.
    pub instance: Option<String>,
    pub rule: String,
    pub severity: String,
    pub layer: String,
    pub labels: BTreeMap<String, String>,
    /// Unix seconds.
    pub start: f64,
    pub end: Option<f64>,
    pub firing: bool,
    pub duration_seconds: f64,
    pub value: Option<f64>,
    pub baseline: Option<f64>,
    pub text: String,
    pub cause: Option<Value>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub source: Value,
    pub from: f64,
    pub to: f64,
    pub anomalies: Vec<Anomaly>,
    pub summary: Value,
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub fn run(args: DetectArgs) -> anyhow::Result<u8> {
    let to = now_secs();
    let from = to - args.time_range.as_secs_f64();
    let (source, anomalies) = if let Some(p) = &args.prometheus {
        let url = Url::parse(p)?;
        let cfg = load_config(&args.common)?;
        let set = crate::rules::load_configured(&cfg.rules).map_err(|errs| {
            anyhow!(
                "rules rejected:\n{}",
                errs.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n")
            )
        })?;
        let default_step = Duration::from_secs(15);
        let step = args
            .step
            .unwrap_or(default_step)
            .max(Duration::from_secs_f64(args.time_range.as_secs_f64() / 10_000.0));
        let found = from_prometheus(&url, &set, args.selector.as_deref(), from, to, step, &args)?;
        (
            json!({"kind": "prometheus", "url": p, "selector": args.selector, "step_seconds": step.as_secs_f64()}),
            found,
        )
    } else {
        let d = args
            .daemon
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1:9977".to_string());
        let url = Url::parse(&d)?;
        (json!({"kind": "daemon", "url": d}), from_daemon(&url, from, to, &args)?)
    };
    let report = Report {
        summary: summarize(&anomalies),
        source,
        from,
        to,
        anomalies,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_text(&report, args.time_range));
    }
    Ok(if report.anomalies.is_empty() { 0 } else { 1 })
}

fn fetch_json(url: &Url, args: &DetectArgs) -> anyhow::Result<Value> {
    let r = get(url, args.timeout, args.ca.as_deref())
        .with_context(|| format!("cannot reach {}:{}", url.host, url.port))?;
    if r.status != 200 {
        bail!(
            "GET {} answered {} {}: {}",
            url.path,
            r.status,
            r.reason,
            String::from_utf8_lossy(&r.body).chars().take(300).collect::<String>()
        );
    }
    serde_json::from_slice(&r.body).with_context(|| format!("GET {} did not return JSON", url.path))
}

/// Parses the daemon's annotation-shaped events.
pub fn parse_daemon_events(v: &Value, to: f64) -> anyhow::Result<Vec<Anomaly>> {
    let arr = v
        .as_array()
        .ok_or_else(|| anyhow!("the event log is not a JSON array"))?;
    let mut out = Vec::new();
    for e in arr {
        let tags: Vec<&str> = e["tags"]
            .as_array()
            .map(|t| t.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let tag = |k: &str| {
            tags.iter()
                .find_map(|t| t.strip_prefix(k).and_then(|r| r.strip_prefix(':')))
                .unwrap_or("")
                .to_string()
        };
        let start = e["time"].as_f64().unwrap_or(0.0) / 1000.0;
        let end = e["timeEnd"].as_f64().map(|t| t / 1000.0);
        let labels = e["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Anomaly {
            instance: None,
            rule: e["title"].as_str().map(str::to_string).unwrap_or_else(|| tag("rule")),
            severity: tag("severity"),
            layer: tag("layer"),
            labels,
            start,
            end,
            firing: e["firing"].as_bool().unwrap_or(end.is_none()),
            duration_seconds: (end.unwrap_or(to) - start).max(0.0),
            value: e["value"].as_f64(),
            baseline: e["baseline"].as_f64(),
            text: e["text"].as_str().unwrap_or("").to_string(),
            cause: e.get("cause").filter(|c| !c.is_null()).cloned(),
        });
    }
    Ok(out)
}

fn from_daemon(url: &Url, from: f64, to: f64, args: &DetectArgs) -> anyhow::Result<Vec<Anomaly>> {
    let u = url.join(&format!("/api/v1/events?from={}&to={}", from as i64, to.ceil() as i64));
    let v = fetch_json(&u, args)?;
    parse_daemon_events(&v, to)
}

fn event_to_anomaly(e: &Event, instance: Option<&str>, to: f64) -> Anomaly {
    Anomaly {
        instance: instance.map(str::to_string),
        rule: e.rule.clone(),
        severity: e.severity.clone(),
        layer: e.layer.clone(),
        labels: e.labels.clone(),
        start: e.start,
        end: e.end,
        firing: e.end.is_none(),
        duration_seconds: (e.end.unwrap_or(to) - e.start).max(0.0),
        value: e.value.is_finite().then_some(e.value),
        baseline: e.baseline,
        text: e.text.clone(),
        cause: e.cause.as_ref().and_then(|c| serde_json::to_value(c).ok()),
    }
}

/// Series of one range query, split by instance: instance → (labels, points).
type RangeResult = Vec<(String, BTreeMap<String, String>, Vec<(f64, f64)>)>;

/// Parses a `query_range` response.
pub fn parse_range(v: &Value) -> anyhow::Result<RangeResult> {
    if v["status"] != "success" {
        bail!("Prometheus error: {} {}", v["errorType"], v["error"]);
    }
    let mut out = Vec::new();
    for s in v["data"]["result"]
        .as_array()
        .ok_or_else(|| anyhow!("no data.result in the response"))?
    {
        let mut labels: BTreeMap<String, String> = s["metric"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        labels.remove("__name__");
        labels.remove("job");
        let instance = labels.remove("instance").unwrap_or_default();
        let points = s["values"]
            .as_array()
            .map(|vals| {
                vals.iter()
                    .filter_map(|p| Some((p[0].as_f64()?, p[1].as_str()?.parse::<f64>().ok()?)))
                    .collect()
            })
            .unwrap_or_default();
        out.push((instance, labels, points));
    }
    Ok(out)
}

/// Replays the rules over `steps` aligned points per instance; returns the events.
pub fn replay(
    set: &crate::rules::RuleSet,
    per_instance: BTreeMap<String, InputSeries>,
    start: f64,
    step: Duration,
    steps: usize,
    history_points: usize,
) -> Vec<Anomaly> {
    crate::rules::seasonal::set_synchronous(true);
    let mut out = Vec::new();
    let end = start + step.as_secs_f64() * steps.saturating_sub(1) as f64;
    for (instance, series) in per_instance {
        let mut engine = Engine::new(set.clone());
        engine.events = crate::rules::events::EventLog::new(100_000);
        let mut hist = History::new(history_points.max(16));
        for i in 0..steps {
            let t = UNIX_EPOCH + Duration::from_secs_f64(start + step.as_secs_f64() * i as f64);
            let snap = snapshot_at(&series, i, t);
            hist.record(&snap);
            engine.evaluate(&snap, &hist);
        }
        let inst = (!instance.is_empty()).then_some(instance.as_str());
        out.extend(
            engine
                .events
                .range(f64::MIN, f64::MAX)
                .iter()
                .map(|e| event_to_anomaly(e, inst, end)),
        );
    }
    out.sort_by(|a, b| a.start.total_cmp(&b.start));
    out
}

fn from_prometheus(
    url: &Url,
    set: &crate::rules::RuleSet,
    selector: Option<&str>,
    from: f64,
    to: f64,
    step: Duration,
    args: &DetectArgs,
) -> anyhow::Result<Vec<Anomaly>> {
    let step_s = step.as_secs_f64().max(1.0);
    let start = (from / step_s).floor() * step_s;
    let steps = ((to - start) / step_s).floor() as usize + 1;
    let mut per_instance: BTreeMap<String, InputSeries> = BTreeMap::new();
    for metric in set.referenced_metrics() {
        let query = match selector {
            Some(s) if !s.trim().is_empty() => {
                format!("{metric}{{{}}}", s.trim().trim_start_matches('{').trim_end_matches('}'))
            }
            _ => metric.clone(),
        };
        let u = url.join(&format!(
            "/api/v1/query_range?query={}&start={start}&end={to}&step={step_s}",
            encode_component(&query)
        ));
        let v = fetch_json(&u, args).with_context(|| format!("query_range {query}"))?;
        for (instance, labels, points) in parse_range(&v)? {
            let mut values = vec![None; steps];
            for (t, x) in points {
                let i = ((t - start) / step_s).round();
                if i >= 0.0 && (i as usize) < steps {
                    values[i as usize] = Some(x);
                }
            }
            per_instance
                .entry(instance)
                .or_default()
                .push((metric.clone(), labels, values));
        }
    }
    let cfg = load_config(&args.common)?;
    Ok(replay(
        set,
        per_instance,
        start,
        Duration::from_secs_f64(step_s),
        steps,
        cfg.history_points,
    ))
}

fn summarize(a: &[Anomaly]) -> Value {
    let mut by_rule: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_cause: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_layer: BTreeMap<String, usize> = BTreeMap::new();
    for x in a {
        *by_rule.entry(&x.rule).or_default() += 1;
        let (cause, layer) = match &x.cause {
            Some(c) => (
                c["name"].as_str().unwrap_or("?").to_string(),
                c["layer"].as_str().unwrap_or(&x.layer).to_string(),
            ),
            None => ("(none)".to_string(), x.layer.clone()),
        };
        *by_cause.entry(cause).or_default() += 1;
        *by_layer.entry(layer).or_default() += 1;
    }
    json!({
        "total": a.len(),
        "firing": a.iter().filter(|x| x.firing).count(),
        "by_rule": by_rule,
        "by_root_cause": by_cause,
        "by_root_cause_layer": by_layer,
    })
}

fn time_of(t: f64) -> String {
    if t <= 0.0 {
        return "?".into();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs_f64(t)).to_string()
}

fn human_duration(s: f64) -> String {
    humantime::format_duration(Duration::from_secs(s.round() as u64)).to_string()
}

pub fn render_text(r: &Report, range: Duration) -> String {
    let src = match r.source["kind"].as_str() {
        Some("prometheus") => format!(
            "rules replayed over Prometheus {} (step {}s)",
            r.source["url"].as_str().unwrap_or(""),
            r.source["step_seconds"]
        ),
        _ => format!("event log of the daemon at {}", r.source["url"].as_str().unwrap_or("")),
    };
    let mut out = format!(
        "netsight detect — last {} ({} → {}), {src}\n",
        humantime::format_duration(range),
        time_of(r.from),
        time_of(r.to)
    );
    if r.anomalies.is_empty() {
        out.push_str("no anomalies in this window\n");
        return out;
    }
    let firing = r.anomalies.iter().filter(|a| a.firing).count();
    let n = r.anomalies.len();
    out.push_str(&format!(
        "{n} {} ({firing} still firing)\n\n",
        if n == 1 { "anomaly" } else { "anomalies" }
    ));
    for a in &r.anomalies {
        let labels = if a.labels.is_empty() {
            String::new()
        } else {
            format!(
                " {{{}}}",
                a.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let inst = a.instance.as_ref().map(|i| format!(" on {i}")).unwrap_or_default();
        let end = match a.end {
            Some(e) => time_of(e),
            None => "still firing".into(),
        };
        out.push_str(&format!(
            "[{}] {}{labels}{inst} — {} layer, {} → {end} ({})\n",
            a.severity,
            a.rule,
            a.layer,
            time_of(a.start),
            human_duration(a.duration_seconds)
        ));
        if !a.text.is_empty() {
            out.push_str(&format!("    {}\n", a.text));
        }
        match &a.cause {
            Some(c) => {
                out.push_str(&format!(
                    "    root cause: {} ({} layer)\n",
                    c["name"].as_str().unwrap_or("?"),
                    c["layer"].as_str().unwrap_or("?")
                ));
                if let Some(x) = c["explanation"].as_str().filter(|s| !s.is_empty()) {
                    out.push_str(&format!("      {x}\n"));
                }
                if let Some(ev) = c["evidence"].as_object().filter(|m| !m.is_empty()) {
                    let parts: Vec<String> = ev
                        .iter()
                        .map(|(k, v)| match v.as_f64() {
                            Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{k} = {}", x as i64),
                            Some(x) => format!("{k} = {x}"),
                            None => format!("{k} = {v}"),
                        })
                        .collect();
                    out.push_str(&format!("      evidence: {}\n", parts.join(", ")));
                }
                if let Some(x) = c["recommendation"].as_str().filter(|s| !s.is_empty()) {
                    out.push_str(&format!("      → {x}\n"));
                }
            }
            None => out.push_str("    root cause: none of the rule's causes held\n"),
        }
        out.push('\n');
    }
    out.push_str("root causes:\n");
    if let Some(m) = r.summary["by_root_cause"].as_object() {
        let mut v: Vec<(&String, u64)> = m.iter().map(|(k, n)| (k, n.as_u64().unwrap_or(0))).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        for (k, n) in v {
            out.push_str(&format!("  {k:<32} {n}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_annotations_parse() {
        let v = json!([{"id": 3, "time": 1700000030000i64, "timeEnd": null, "title": "tcp_listen_overflow",
            "text": "t", "tags": ["rule:tcp_listen_overflow", "layer:transport", "severity:critical", "cause:slow_accept"],
            "labels": {}, "value": 2.0, "baseline": null, "firing": true,
            "cause": {"name": "slow_accept", "layer": "application", "explanation": "e", "recommendation": "r", "evidence": {}}}]);
        let a = parse_daemon_events(&v, 1_700_000_090.0).expect("parses");
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].severity, "critical");
        assert_eq!(a[0].layer, "transport");
        assert!(a[0].firing);
        assert_eq!(a[0].duration_seconds, 60.0);
        assert_eq!(summarize(&a)["by_root_cause"]["slow_accept"], 1);
    }

    #[test]
    fn replay_over_range_results_finds_overflows() {
        let yaml = "rules:\n  - name: overflowing\n    description: d\n    layer: transport\n    severity: critical\n    series: {metric: netsight_netstat_tcpext_listen_overflows_total}\n    expr: rate(value)\n    when: value > 0\n";
        let set = crate::rules::load(&[crate::rules::RuleSource {
            name: "test.yaml".into(),
            text: yaml.into(),
        }])
        .expect("test rule loads");
        let body = json!({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"__name__": "netsight_netstat_tcpext_listen_overflows_total", "instance": "h:9977", "job": "n"},
             "values": (0..20).map(|i| json!([1000 + i * 15, format!("{}", if i < 8 { 0 } else { (i - 7) * 30 })])).collect::<Vec<_>>()},
        ]}});
        let res = parse_range(&body).expect("parses");
        let mut per: BTreeMap<String, InputSeries> = BTreeMap::new();
        for (inst, labels, pts) in res {
            let vals = pts.iter().map(|p| Some(p.1)).collect();
            per.entry(inst)
                .or_default()
                .push(("netsight_netstat_tcpext_listen_overflows_total".into(), labels, vals));
        }
        let a = replay(&set, per, 1000.0, Duration::from_secs(15), 20, 120);
        assert!(
            a.iter()
                .any(|x| x.rule == "overflowing" && x.instance.as_deref() == Some("h:9977")),
            "{a:?}"
        );
    }
}
