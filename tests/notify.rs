//! Push of anomaly transitions from a running daemon (`notify:` in the config):
//!
//! * **Grafana annotations** against a local HTTP endpoint that implements the part
//!   of Grafana's `/api/annotations` contract netsight uses (no Grafana server is
//!   installable here — see ../shared/notes/test-peers.md): bearer-token auth,
//!   `POST /api/annotations` → `{"message":"Annotation added","id":N}`, `PATCH
//!   /api/annotations/:id` → `{"message":"Annotation patched"}` or 404, 400 on an
//!   empty text or a missing time. It also answers 503 to the first POSTs, so the
//!   retry path is exercised.
//! * **Alertmanager v2 push** against Debian's real `prometheus-alertmanager`,
//!   which routes to a webhook on the same local endpoint: the firing alert, with
//!   the generated rules' alertname and labels and the root cause in its
//!   annotations, and then its resolution.
//!
//! The fault is a TCP listener on a port chosen by the test, inside a namespace the
//! test creates, matched by a test rule with a cause; closing it resolves the rule.
//! Everything runs in that namespace (daemon, Alertmanager, the endpoint's socket)
//! and is stopped/deleted on drop, even when an assertion fails.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::Netns;
use serde_json::{json, Value};

const TOKEN: &str = "glsa_netsight_test_token";

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    auth: Option<String>,
    body: Value,
}

#[derive(Default)]
struct GrafanaState {
    requests: Vec<Request>,
    annotations: BTreeMap<u64, Value>,
    next_id: u64,
    /// POSTs to answer with 503 before accepting.
    fail_posts: u32,
    /// Alertmanager webhook notifications received.
    webhooks: Vec<Value>,
}

type Shared = Arc<Mutex<GrafanaState>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, GrafanaState> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Method, path, headers (lower-case names) and body of one request.
type RawRequest = (String, String, BTreeMap<String, String>, Vec<u8>);

/// Reads one HTTP/1.1 request; `None` at end of stream.
fn read_request(r: &mut BufReader<TcpStream>) -> Option<RawRequest> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((method, path, headers, body))
}

/// Grafana's answer to one request (the parts of its annotation API netsight uses).
fn grafana_answer(state: &Shared, method: &str, path: &str, auth: Option<&str>, body: &[u8]) -> (u16, Value) {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut st = lock(state);
    if path == "/webhook" && method == "POST" {
        st.webhooks.push(parsed);
        return (200, json!({}));
    }
    st.requests.push(Request {
        method: method.into(),
        path: path.into(),
        auth: auth.map(str::to_string),
        body: parsed.clone(),
    });
    if auth != Some(&format!("Bearer {TOKEN}")) {
        return (401, json!({"message": "Unauthorized"}));
    }
    match (method, path) {
        ("POST", "/api/annotations") => {
            if st.fail_posts > 0 {
                st.fail_posts -= 1;
                return (503, json!({"message": "Service unavailable"}));
            }
            let text_ok = parsed["text"].as_str().is_some_and(|t| !t.is_empty());
            if !text_ok || !parsed["time"].is_i64() {
                return (400, json!({"message": "Failed to save annotation"}));
            }
            st.next_id += 1;
            let id = st.next_id;
            st.annotations.insert(id, parsed);
            (200, json!({"message": "Annotation added", "id": id}))
        }
        ("PATCH", p) if p.starts_with("/api/annotations/") => {
            let id: Option<u64> = p["/api/annotations/".len()..].parse().ok();
            match id.and_then(|id| st.annotations.get_mut(&id)) {
                Some(a) => {
                    if let (Some(obj), Some(patch)) = (a.as_object_mut(), parsed.as_object()) {
                        for (k, v) in patch {
                            obj.insert(k.clone(), v.clone());
                        }
                    }
                    (200, json!({"message": "Annotation patched"}))
                }
                None => (404, json!({"message": "Annotation not found"})),
            }
        }
        _ => (404, json!({"message": "Not found"})),
    }
}

fn serve_connection(stream: TcpStream, state: Shared) {
    let Ok(write_half) = stream.try_clone() else { return };
    let mut w = write_half;
    let mut r = BufReader::new(stream);
    while let Some((method, path, headers, body)) = read_request(&mut r) {
        let (status, answer) = grafana_answer(
            &state,
            &method,
            &path,
            headers.get("authorization").map(|s| s.as_str()),
            &body,
        );
        let text = answer.to_string();
        let reply = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if w.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// Starts the endpoint on a socket created inside `ns`; returns its port.
fn start_endpoint(ns: &Netns, state: Shared) -> u16 {
    let listener = ns.enter(|| TcpListener::bind("127.0.0.1:0").expect("bind endpoint"));
    let port = listener.local_addr().expect("endpoint addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let st = state.clone();
            std::thread::spawn(move || serve_connection(stream, st));
        }
    });
    port
}

/// A process started by the test, killed (by PID) on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn start(ns: &Netns, argv: &[&str], log: PathBuf) -> Proc {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .args(argv)
            .env("NETSIGHT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log.with_extension("out")).expect("stdout file"))
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {argv:?}: {e}"));
        Proc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port(ns: &Netns) -> u16 {
    ns.enter(|| {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port")
    })
}

fn http_get(ns: &Netns, port: u16, path: &str) -> Option<String> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    ns.enter(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(req.as_bytes()).ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
    })
}

fn wait_for<T>(what: &str, within: Duration, logs: &[&Proc], mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = logs
                .iter()
                .map(|p| format!("--- {}\n{}", p.log.display(), p.log()))
                .collect();
            panic!("timed out after {within:?} waiting for {what}\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write file");
    p
}

fn rule_yaml(port: u16) -> String {
    format!(
        r#"rules:
  - name: notify_probe_listener
    description: A listener on the test's probe port exists.
    layer: transport
    severity: warning
    series: {{metric: netsight_tcp_listen_backlog, match: {{port: "{port}"}}, by: [port]}}
    expr: value
    when: value > 0
    annotation: "probe listener on port {{{{ labels.port }}}} with backlog {{{{ value }}}}"
    causes:
      - name: probe_backlog
        layer: transport
        when: value >= 1
        explanation: the test opened a listener on the probe port
        recommendation: "close the probe listener"
"#
    )
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn tool(name: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .expect("sh");
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !p.is_empty(),
        "{name} not installed (apt-get install prometheus-alertmanager)"
    );
    p
}

#[test]
fn anomaly_transitions_reach_grafana_annotations_and_alertmanager() {
    let alertmanager_bin = tool("prometheus-alertmanager");
    let ns = Netns::new("nnotify");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let state: Shared = Arc::new(Mutex::new(GrafanaState {
        fail_posts: 2,
        ..Default::default()
    }));
    let endpoint = start_endpoint(&ns, state.clone());

    let am_port = free_port(&ns);
    let am_cfg = write(
        d,
        "alertmanager.yml",
        &format!(
            "route:\n  receiver: hook\n  group_by: [alertname, instance]\n  group_wait: 1s\n  group_interval: 2s\n  repeat_interval: 1h\n\
             receivers:\n  - name: hook\n    webhook_configs:\n      - url: http://127.0.0.1:{endpoint}/webhook\n        send_resolved: true\n"
        ),
    );
    let am = Proc::start(
        &ns,
        &[
            &alertmanager_bin,
            &format!("--config.file={}", am_cfg.display()),
            &format!("--storage.path={}", d.join("am-data").display()),
            &format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=",
        ],
        d.join("alertmanager.log"),
    );
    wait_for("alertmanager ready", Duration::from_secs(30), &[&am], || {
        http_get(&ns, am_port, "/-/ready").filter(|b| b.contains("OK"))
    });

    // The fault: a listener on a port of the test's choosing.
    let probe = ns.enter(|| TcpListener::bind("127.0.0.1:0").expect("probe listener"));
    let probe_port = probe.local_addr().expect("probe addr").port();
    let rules_dir = d.join("rules");
    std::fs::create_dir(&rules_dir).expect("rules dir");
    write(&rules_dir, "probe.yaml", &rule_yaml(probe_port));
    let cfg = write(
        d,
        "netsight.yaml",
        &format!(
            "rules:\n  embedded: false\n  paths: [{rules}]\n\
             notify:\n  grafana:\n    enabled: true\n    url: http://127.0.0.1:{endpoint}\n    token: {TOKEN}\n    dashboard_uid: netsight-host\n    tags: [netsight, test]\n\
             \x20 alertmanager:\n    enabled: true\n    url: http://127.0.0.1:{am_port}\n    resend_interval: 1h\n    labels: {{job: netsight}}\n    external_url: http://netsight.example:9977\n",
            rules = rules_dir.display()
        ),
    );
    let daemon_port = free_port(&ns);
    let started_ms = unix_ms();
    let daemon = Proc::start(
        &ns,
        &[
            env!("CARGO_BIN_EXE_netsight"),
            "serve",
            "--config",
            cfg.to_str().expect("utf-8 path"),
            "--listen",
            &format!("127.0.0.1:{daemon_port}"),
            "--interval",
            "1s",
        ],
        d.join("netsight.log"),
    );
    let procs = [&daemon, &am];

    // Grafana: after two 503s, the annotation is created (a point, still firing).
    let (ann_id, ann) = wait_for("the Grafana annotation", Duration::from_secs(40), &procs, || {
        lock(&state).annotations.iter().next().map(|(id, a)| (*id, a.clone()))
    });
    let tags: Vec<&str> = ann["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for t in [
        "netsight",
        "test",
        "rule:notify_probe_listener",
        "layer:transport",
        "severity:warning",
        "cause:probe_backlog",
    ] {
        assert!(tags.contains(&t), "tag {t} missing from {tags:?}");
    }
    assert!(tags.iter().any(|t| t.starts_with("instance:")), "{tags:?}");
    let time = ann["time"].as_i64().expect("time in ms");
    assert!(
        time >= started_ms - 1000 && time <= unix_ms(),
        "time {time} outside the run"
    );
    assert!(
        ann.get("timeEnd").is_none(),
        "a firing annotation has no end yet: {ann}"
    );
    assert_eq!(ann["dashboardUID"], "netsight-host");
    let text = ann["text"].as_str().expect("text");
    assert!(text.contains(&format!("probe listener on port {probe_port}")), "{text}");
    assert!(text.contains("Root cause probe_backlog"), "{text}");
    assert!(text.contains("Recommendation: close the probe listener"), "{text}");
    {
        let st = lock(&state);
        let posts: Vec<&Request> = st.requests.iter().filter(|r| r.method == "POST").collect();
        assert_eq!(posts.len(), 3, "two refused POSTs then one accepted: {posts:?}");
        assert!(posts
            .iter()
            .all(|r| r.auth.as_deref() == Some(&*format!("Bearer {TOKEN}"))));
        assert!(
            posts.windows(2).all(|w| w[0].body == w[1].body),
            "the retry resends the same annotation"
        );
    }

    // Alertmanager: the firing alert reaches its webhook with our labels and cause.
    let firing = wait_for("the firing webhook", Duration::from_secs(40), &procs, || {
        lock(&state).webhooks.iter().find(|w| w["status"] == "firing").cloned()
    });
    let alert = &firing["alerts"][0];
    let labels = &alert["labels"];
    // A rule outside the default packs: the generic alert of the generated rules.
    assert_eq!(labels["alertname"], "NetsightAnomaly");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    assert_eq!(labels["instance"], format!("{}:{daemon_port}", host.trim()));
    assert_eq!(labels["rule"], "notify_probe_listener");
    assert_eq!(labels["severity"], "warning");
    assert_eq!(labels["layer"], "transport");
    assert_eq!(labels["cause"], "probe_backlog");
    assert_eq!(labels["cause_layer"], "transport");
    assert_eq!(labels["component"], "netsight");
    assert_eq!(labels["job"], "netsight");
    assert_eq!(labels["port"], probe_port.to_string());
    let ann_am = &alert["annotations"];
    assert_eq!(ann_am["runbook_url"], "docs/runbooks/notify_probe_listener.md");
    assert_eq!(ann_am["root_cause"], "the test opened a listener on the probe port");
    assert!(
        ann_am["description"]
            .as_str()
            .is_some_and(|d| d.contains("Recommendation: close the probe listener")),
        "{ann_am}"
    );
    assert_eq!(alert["generatorURL"], "http://netsight.example:9977/api/v1/events");

    // The self-metrics count the refused POSTs and the deliveries (published with
    // the next tick's snapshot).
    wait_for(
        "netsight_notify_* self-metrics",
        Duration::from_secs(10),
        &procs,
        || {
            let m = http_get(&ns, daemon_port, "/metrics")?;
            let grafana_failures = metric(&m, "netsight_notify_failures_total{target=\"grafana\"}")?;
            let grafana_sent = metric(&m, "netsight_notify_sent_total{target=\"grafana\"}")?;
            let am_sent = metric(&m, "netsight_notify_sent_total{target=\"alertmanager\"}")?;
            (grafana_failures == 2.0 && grafana_sent == 1.0 && am_sent >= 1.0).then_some(())
        },
    );

    // Resolve: close the listener. Grafana's annotation becomes a region; the
    // Alertmanager webhook gets the resolution.
    drop(probe);
    let closed_at = unix_ms();
    let end = wait_for("the annotation's timeEnd", Duration::from_secs(40), &procs, || {
        lock(&state)
            .annotations
            .get(&ann_id)
            .and_then(|a| a["timeEnd"].as_i64())
    });
    assert!(end >= time && end <= unix_ms(), "timeEnd {end} vs time {time}");
    assert!(
        end >= closed_at - 2000,
        "timeEnd {end} before the listener closed at {closed_at}"
    );
    {
        let st = lock(&state);
        let patch = st
            .requests
            .iter()
            .find(|r| r.method == "PATCH")
            .expect("a PATCH request");
        assert_eq!(patch.path, format!("/api/annotations/{ann_id}"));
        assert_eq!(st.annotations.len(), 1, "the end updates the annotation, no second one");
    }
    let resolved = wait_for("the resolved webhook", Duration::from_secs(40), &procs, || {
        lock(&state)
            .webhooks
            .iter()
            .find(|w| w["status"] == "resolved")
            .cloned()
    });
    assert_eq!(
        resolved["alerts"][0]["labels"], firing["alerts"][0]["labels"],
        "the same alert resolves"
    );
    // With resend_interval 1h a firing alert's endsAt is 4h ahead: only netsight's
    // explicit resolution can end it this soon.
    let ends_at = resolved["alerts"][0]["endsAt"].as_str().expect("endsAt");
    let ends_ms = humantime::parse_rfc3339_weak(ends_at)
        .map(|t| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        })
        .unwrap_or_else(|e| panic!("endsAt {ends_at:?}: {e}"));
    assert!(
        (ends_ms - end).abs() <= 1000,
        "Alertmanager's endsAt {ends_at} is the rule's end ({end} ms)"
    );
}

#[test]
fn a_bad_notify_url_is_a_config_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write(
        dir.path(),
        "bad.yaml",
        "notify:\n  grafana:\n    enabled: true\n    url: ftp://grafana\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_netsight"))
        .args([
            "serve",
            "--config",
            cfg.to_str().expect("utf-8 path"),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run netsight");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("notify.grafana.url"), "{err}");
}
