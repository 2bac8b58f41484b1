//! The deployment files in deploy/ and the Dockerfile.
//!
//! * systemd: `systemd-analyze verify` (offline; works without systemd as PID 1) must
//!   print nothing, `systemd-analyze security --offline=yes` must rate the unit's
//!   exposure low, and netsight run with exactly the unit's capabilities (setpriv, an
//!   unprivileged user) must get every collector up and attribute other users'
//!   sockets, while each capability removed loses something specific.
//! * Every netsight configuration shipped (systemd, Kubernetes ConfigMap, compose)
//!   loads and serves with its state file written.
//! * Kubernetes: schema validation of every manifest with the JSON schemas shipped
//!   by the npm packages kubernetes-models and @kubernetes-models/prometheus-operator
//!   (scripts/validate-dashboards/validate-k8s.js; kubeconform and its schema
//!   downloads are not available offline), plus cross-checks between the objects.
//! * compose and Dockerfile: no Docker engine runs here, so they cannot be started
//!   or built; the tests check what can be checked offline (every mounted file
//!   exists, ports, capabilities and paths agree, promtool validates the Prometheus
//!   config, COPY sources exist and cover what the build needs).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_yaml::Value as Yaml;

use common::Netns;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_netsight");

fn path(rel: &str) -> PathBuf {
    Path::new(ROOT).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> Yaml {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn tool(name: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed: this test needs the Debian package `{package}` (scripts/test.sh installs it)")
        })
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

fn strs(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(|x| x.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

// ------------------------------------------------------------------ systemd

const UNIT: &str = "deploy/systemd/netsight.service";
const CAPS: [&str; 3] = ["CAP_NET_ADMIN", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"];

/// The unit file as section → key → values (repeated keys keep every value).
fn unit() -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for line in read(UNIT).lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if l.starts_with('[') {
            section = l.trim_matches(['[', ']']).to_string();
            continue;
        }
        let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{UNIT}: bad line {l:?}"));
        out.entry(section.clone())
            .or_default()
            .entry(k.trim().to_string())
            .or_default()
            .push(v.trim().to_string());
    }
    out
}

/// The unit with ExecStart pointing at the freshly built binary (verify checks that
/// the executable exists), in a temporary directory.
fn unit_copy(dir: &Path, mutate: impl Fn(String) -> String) -> PathBuf {
    let text = read(UNIT).replace("/usr/local/bin/netsight", BIN);
    let p = dir.join("netsight.service");
    std::fs::write(&p, mutate(text)).unwrap();
    p
}

#[test]
fn systemd_unit_verifies_without_any_warning() {
    let sa = tool("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    // Control: verify reports a misspelt directive on stderr (exit status stays 0),
    // which is what makes "no output" below meaningful.
    let bad = unit_copy(dir.path(), |t| {
        t.replace("ProtectHome=yes", "ProtectHome=yes\nProtectHomme=yes")
    });
    let out = Command::new(&sa)
        .arg("verify")
        .arg(&bad)
        .output()
        .expect("systemd-analyze");
    let control = text(&out);
    if !control.contains("Unknown key") {
        // systemd-analyze could not analyse units in this environment at all. Say
        // so loudly; systemd_unit_structure still checks the directives.
        panic!(
            "systemd-analyze verify cannot analyse units here (it did not report a misspelt \
             directive): {control}"
        );
    }
    let good = unit_copy(dir.path(), |t| t);
    let out = Command::new(&sa)
        .arg("verify")
        .arg(&good)
        .output()
        .expect("systemd-analyze");
    let t = text(&out);
    assert!(
        out.status.success() && t.trim().is_empty(),
        "systemd-analyze verify {UNIT}:\n{t}"
    );
}

#[test]
fn systemd_unit_exposure_is_low() {
    let sa = tool("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    let good = unit_copy(dir.path(), |t| t);
    let out = Command::new(&sa)
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&good)
        .output()
        .expect("systemd-analyze security");
    let t = text(&out);
    let score: f64 = t
        .lines()
        .find_map(|l| l.split("Overall exposure level for netsight.service:").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{t}"));
    // 0 = fully locked down, 10 = unprotected; "OK" is below 4.
    assert!(score <= 3.0, "exposure {score} too high:\n{t}");
}

#[test]
fn systemd_unit_structure() {
    let u = unit();
    let s = &u["Service"];
    let one = |k: &str| -> &str {
        let v = s.get(k).unwrap_or_else(|| panic!("{UNIT}: no {k}="));
        assert_eq!(v.len(), 1, "{UNIT}: {k}= repeated");
        &v[0]
    };
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("User", "netsight"),
        ("StateDirectory", "netsight"),
    ] {
        assert_eq!(one(k), v, "{UNIT}: {k}");
    }
    let caps = |k: &str| -> BTreeSet<String> { one(k).split_whitespace().map(String::from).collect() };
    let want: BTreeSet<String> = CAPS.iter().map(|c| c.to_string()).collect();
    assert_eq!(caps("CapabilityBoundingSet"), want);
    assert_eq!(caps("AmbientCapabilities"), want);
    // Each capability is explained in the unit.
    let raw = read(UNIT);
    for c in CAPS {
        assert!(raw.contains(&format!("#   {c}")), "{UNIT}: {c} not explained");
    }
    // Observing the host: no private network or hidden /proc.
    for k in ["PrivateNetwork", "ProtectProc", "ProcSubset"] {
        assert!(!s.contains_key(k), "{UNIT}: {k}= would hide what netsight observes");
    }
    assert!(one("RestrictAddressFamilies").contains("AF_NETLINK"));
    // ExecStart reads the installed config; the state file lives in a writable dir.
    let exec = one("ExecStart");
    let cfg_path = exec
        .split("--config")
        .nth(1)
        .expect("--config")
        .split_whitespace()
        .next()
        .unwrap();
    assert_eq!(cfg_path, "/etc/netsight/netsight.yaml");
    let cfg = yaml("deploy/systemd/netsight.yaml");
    let state = cfg["rules"]["state_file"].as_str().expect("state_file");
    let state_dir = Path::new(state).parent().unwrap().to_str().unwrap();
    assert_eq!(one("ReadWritePaths"), state_dir, "state file dir must be writable");
    assert!(read("deploy/systemd/netsight.sysusers.conf").contains("u netsight "));
    assert!(u["Install"]["WantedBy"].contains(&"multi-user.target".to_string()));
}

/// `netsight collect --once` inside `ns` as an unprivileged user (nobody) holding
/// exactly `caps` as ambient capabilities, the way the unit runs it.
fn collect_with_caps(ns: &Netns, caps: &[&str]) -> String {
    let setpriv = tool("setpriv", "util-linux");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name]).arg(setpriv);
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--no-new-privs"]);
    // setpriv wants "-all" to drop everything, "+net_admin,…" to raise.
    let list = caps
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect::<Vec<_>>()
        .join(",");
    let inh = if list.is_empty() {
        "-all".to_string()
    } else {
        format!("-all,{list}")
    };
    cmd.arg(format!("--inh-caps={inh}"));
    if !list.is_empty() {
        cmd.arg(format!("--ambient-caps={list}"));
    }
    let out = cmd.args([BIN, "collect", "--once"]).output().expect("setpriv netsight");
    assert!(out.status.success(), "netsight collect with {caps:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sample(exposition: &str, series: &str) -> Option<String> {
    exposition
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
}

/// The `process` label netsight gives the listener on `port`.
fn listener_process(exposition: &str, port: u16) -> String {
    let needle = format!("port=\"{port}\",process=\"");
    exposition
        .lines()
        .filter(|l| l.starts_with("netsight_tcp_listen_backlog{"))
        .find_map(|l| {
            l.split(&needle)
                .nth(1)
                .map(|r| r.split('"').next().unwrap().to_string())
        })
        .unwrap_or_else(|| panic!("no listener on port {port}"))
}

#[test]
fn the_units_capabilities_are_exactly_what_netsight_needs() {
    let nft = tool("nft", "nftables");
    let u = unit();
    let caps_line = u["Service"]["AmbientCapabilities"][0].clone();
    let caps: Vec<&'static str> = caps_line
        .split_whitespace()
        .map(|c| {
            *CAPS
                .iter()
                .find(|k| **k == c)
                .unwrap_or_else(|| panic!("unexpected capability {c}"))
        })
        .collect();
    assert_eq!(caps.len(), 3);

    let ns = Netns::new("ndcap");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(&nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"table inet capcheck {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    counter accept\n  }\n}\n")
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft ruleset");

    let name = ns.name.clone();
    let results = ns.enter(move || {
        // A root-owned listener (this test process) for process attribution.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let ns = Netns { name };
        let all = collect_with_caps(&ns, &caps);
        let without: Vec<(String, String)> = caps
            .iter()
            .map(|drop| {
                let rest: Vec<&str> = caps.iter().copied().filter(|c| c != drop).collect();
                (drop.to_string(), collect_with_caps(&ns, &rest))
            })
            .collect();
        let none = collect_with_caps(&ns, &[]);
        std::mem::forget(ns); // owned by the outer Netns
        drop(l);
        (port, all, without, none)
    });
    let (port, all, without, none) = results;

    // With the unit's three capabilities everything works for an unprivileged user.
    assert_eq!(
        sample(&all, r#"netsight_collector_up{collector="nftables"}"#).as_deref(),
        Some("1")
    );
    assert_eq!(
        sample(&all, "netsight_conntrack_breakdown_available").as_deref(),
        Some("1")
    );
    assert_eq!(
        sample(&all, "netsight_sockets_process_scan_denied").as_deref(),
        Some("0")
    );
    let me = listener_process(&all, port);
    assert!(!me.is_empty() && me != "unknown", "listener not attributed: {me:?}");
    // Without any, the same run degrades (so the checks above are not vacuous).
    assert_eq!(
        sample(&none, r#"netsight_collector_up{collector="nftables"}"#).as_deref(),
        Some("0")
    );
    assert_eq!(listener_process(&none, port), "unknown");
    // And each capability is needed for something.
    for (dropped, out) in &without {
        match dropped.as_str() {
            "CAP_NET_ADMIN" => {
                assert_eq!(
                    sample(out, r#"netsight_collector_up{collector="nftables"}"#).as_deref(),
                    Some("0")
                );
                assert_eq!(
                    sample(out, "netsight_conntrack_breakdown_available").as_deref(),
                    Some("0")
                );
            }
            "CAP_SYS_PTRACE" | "CAP_DAC_READ_SEARCH" => {
                assert_eq!(listener_process(out, port), "unknown", "attribution without {dropped}");
            }
            other => panic!("unexpected capability {other}"),
        }
    }
}

// ------------------------------------------------------------------ configurations

fn http_get(ns: &Netns, target: &'static str) -> Option<(u16, String)> {
    let name = ns.name.clone();
    ns.enter(move || {
        let _ = name;
        let mut s = TcpStream::connect("127.0.0.1:9977").ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(format!("GET {target} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .ok()?;
        let mut b = String::new();
        s.read_to_string(&mut b).ok()?;
        let status = b.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, b))
    })
}

/// Serves with `config` (paths under /var/lib/netsight and /etc/netsight moved into a
/// temporary directory) in a fresh namespace until /healthz answers, stops it with
/// SIGTERM and checks it exits cleanly after writing its state file.
fn serves_with(label: &str, config: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("rules.d")).unwrap();
    let mut cfg: Yaml = serde_yaml::from_str(config).unwrap_or_else(|e| panic!("{label}: {e}"));
    let state = d.join("state/state.json");
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    assert!(
        cfg["rules"]["state_file"]
            .as_str()
            .is_some_and(|s| s.starts_with("/var/lib/netsight/")),
        "{label}: state_file"
    );
    cfg["rules"]["state_file"] = Yaml::from(state.to_str().unwrap());
    if cfg["rules"]["paths"].is_sequence() {
        cfg["rules"]["paths"] = serde_yaml::from_str(&format!("[{}]", d.join("rules.d").display())).unwrap();
    }
    let file = d.join("netsight.yaml");
    std::fs::write(&file, serde_yaml::to_string(&cfg).unwrap()).unwrap();

    let ns = Netns::new("ndcfg");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, BIN, "serve", "--config"])
        .arg(&file)
        .args(["--listen", "127.0.0.1:9977", "--interval", "1s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((200, _)) = http_get(&ns, "/healthz") {
            break;
        }
        if let Ok(Some(st)) = child.try_wait() {
            let mut e = String::new();
            child.stderr.take().unwrap().read_to_string(&mut e).unwrap();
            panic!("{label}: netsight exited ({st}): {e}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{label}: no /healthz within 30 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, metrics) = http_get(&ns, "/metrics").expect("metrics");
    assert!(
        metrics.contains("netsight_rules_loaded"),
        "{label}: no rule engine output"
    );
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{label}: did not stop within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut e = String::new();
    child.stderr.take().unwrap().read_to_string(&mut e).unwrap();
    assert!(status.success(), "{label}: exit {status}: {e}");
    assert!(state.is_file(), "{label}: no state file written at {}", state.display());
}

#[test]
fn every_shipped_configuration_loads_and_serves() {
    serves_with("deploy/systemd/netsight.yaml", &read("deploy/systemd/netsight.yaml"));
    let cm = yaml("deploy/kubernetes/configmap.yaml");
    serves_with(
        "deploy/kubernetes/configmap.yaml",
        cm["data"]["netsight.yaml"].as_str().expect("netsight.yaml key"),
    );
    serves_with("deploy/compose/netsight.yaml", &read("deploy/compose/netsight.yaml"));
}

// ------------------------------------------------------------------ kubernetes

fn k8s_docs() -> BTreeMap<String, Yaml> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(path("deploy/kubernetes")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let v: Yaml =
                serde_yaml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
            out.insert(name, v);
        }
    }
    out
}

#[test]
fn kubernetes_manifests_validate_against_the_api_schemas() {
    let node = tool("node", "nodejs");
    let dir = path("scripts/validate-dashboards");
    assert!(
        dir.join("node_modules/kubernetes-models").is_dir()
            && dir.join("node_modules/@kubernetes-models/prometheus-operator").is_dir(),
        "npm packages missing: run `npm ci --prefix scripts/validate-dashboards` (scripts/test.sh does)"
    );
    let mut files: Vec<PathBuf> = k8s_docs().keys().map(|n| path("deploy/kubernetes").join(n)).collect();
    // Control: a broken DaemonSet (wrong type, unknown field) must be rejected.
    let tmp = tempfile::tempdir().unwrap();
    let mut ds = k8s_docs()["daemonset.yaml"].clone();
    ds["spec"]["template"]["spec"]["hostNetwork"] = Yaml::from("yes");
    ds["spec"]["template"]["spec"]["containers"][0]["livenessProb"] =
        ds["spec"]["template"]["spec"]["containers"][0]["livenessProbe"].clone();
    let bad = tmp.path().join("broken-daemonset.yaml");
    std::fs::write(&bad, serde_yaml::to_string(&ds).unwrap()).unwrap();
    files.push(bad.clone());
    let out = Command::new(node)
        .arg(dir.join("validate-k8s.js"))
        .args(&files)
        .output()
        .expect("validate-k8s.js");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "only the broken copy should fail:\n{t}");
    for (name, doc) in k8s_docs() {
        if doc["kind"] == "Kustomization" {
            continue;
        }
        let line = format!(
            "ok   {}: {}/",
            path("deploy/kubernetes").join(&name).display(),
            doc["kind"].as_str().unwrap()
        );
        assert!(t.contains(&line), "{name} invalid:\n{t}");
    }
    assert!(
        t.contains(&format!("FAIL {}: DaemonSet/netsight", bad.display())),
        "{t}"
    );
    assert!(t.contains("/spec/template/spec/hostNetwork: must be boolean"), "{t}");
    assert!(t.contains("unknown field livenessProb"), "{t}");
}

#[test]
fn kubernetes_manifests_fit_together() {
    let docs = k8s_docs();
    let ns = docs["namespace.yaml"]["metadata"]["name"].as_str().unwrap().to_string();
    for (name, d) in &docs {
        if d["kind"] != "Kustomization" && d["kind"] != "Namespace" {
            assert_eq!(
                d["metadata"]["namespace"].as_str(),
                Some(ns.as_str()),
                "{name}: namespace"
            );
        }
    }
    // kustomization lists every manifest.
    let listed: BTreeSet<String> = strs(&docs["kustomization.yaml"]["resources"]).into_iter().collect();
    let present: BTreeSet<String> = docs.keys().filter(|n| *n != "kustomization.yaml").cloned().collect();
    assert_eq!(listed, present, "kustomization.yaml resources");

    let ds = &docs["daemonset.yaml"];
    assert_eq!(ds["kind"], "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        pod["serviceAccountName"],
        docs["serviceaccount.yaml"]["metadata"]["name"]
    );
    let pod_labels = ds["spec"]["template"]["metadata"]["labels"]
        .as_mapping()
        .unwrap()
        .clone();
    for (k, v) in ds["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
        assert_eq!(
            pod_labels.get(k),
            Some(v),
            "DaemonSet selector must match the pod labels"
        );
    }
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    let added: BTreeSet<String> = strs(&sc["capabilities"]["add"])
        .into_iter()
        .map(|c| format!("CAP_{c}"))
        .collect();
    let want: BTreeSet<String> = CAPS.iter().map(|c| c.to_string()).collect();
    assert_eq!(added, want, "same capabilities as the systemd unit");
    assert_eq!(strs(&sc["capabilities"]["drop"]), vec!["ALL"]);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["privileged"], false);
    for kind in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(c["resources"][kind][r].as_str().is_some(), "resources.{kind}.{r}");
        }
    }
    let port = c["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["containerPort"] == 9977)
        .expect("containerPort 9977");
    let port_name = port["name"].as_str().unwrap();
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"].as_str(), Some(port_name), "{probe}");
    }
    // --config points into the ConfigMap volume, at a key the ConfigMap has.
    let args = strs(&c["args"]);
    assert_eq!(args[0], "serve", "args follow the image's ENTRYPOINT (the binary)");
    let cfg_path = Path::new(&args[args.iter().position(|a| a == "--config").unwrap() + 1]).to_path_buf();
    let mounts: BTreeMap<String, String> = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["mountPath"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let volumes: BTreeMap<String, Yaml> = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_string(), v.clone()))
        .collect();
    let (cfg_vol, _) = mounts
        .iter()
        .find(|(_, m)| cfg_path.parent() == Some(Path::new(m.as_str())))
        .expect("a volume mounted at the --config directory");
    let cm = &docs["configmap.yaml"];
    assert_eq!(volumes[cfg_vol]["configMap"]["name"], cm["metadata"]["name"]);
    let key = cfg_path.file_name().unwrap().to_str().unwrap();
    let config: Yaml = serde_yaml::from_str(cm["data"][key].as_str().expect("config key in the ConfigMap")).unwrap();
    // The state file and rule directory are where the volumes are.
    let state_dir = Path::new(config["rules"]["state_file"].as_str().unwrap())
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let state_vol = mounts
        .iter()
        .find(|(_, m)| **m == state_dir)
        .expect("volume at the state dir")
        .0;
    assert_eq!(
        volumes[state_vol]["hostPath"]["path"].as_str(),
        Some(state_dir.as_str()),
        "baselines persist on the node"
    );
    for p in strs(&config["rules"]["paths"]) {
        let vol = mounts
            .iter()
            .find(|(_, m)| **m == p)
            .unwrap_or_else(|| panic!("no volume at rules path {p}"))
            .0;
        assert_eq!(
            volumes[vol]["configMap"]["optional"], true,
            "an absent rules ConfigMap must not block the pod"
        );
    }
    assert!(config["listen"].as_str().unwrap().ends_with(":9977"));

    // Service selects the pods and exposes the named port.
    let svc = &docs["service.yaml"];
    for (k, v) in svc["spec"]["selector"].as_mapping().unwrap() {
        assert_eq!(pod_labels.get(k), Some(v), "Service selector must match the pods");
    }
    let sp = &svc["spec"]["ports"][0];
    assert_eq!(sp["targetPort"].as_str(), Some(port_name));
    let svc_port_name = sp["name"].as_str().unwrap();
    // ServiceMonitor selects the Service, in its namespace, on that port; job=netsight.
    let sm = &docs["servicemonitor.yaml"];
    let svc_labels = svc["metadata"]["labels"].as_mapping().unwrap();
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
        assert_eq!(
            svc_labels.get(k),
            Some(v),
            "ServiceMonitor selector must match the Service"
        );
    }
    assert!(strs(&sm["spec"]["namespaceSelector"]["matchNames"]).contains(&ns));
    assert_eq!(sm["spec"]["endpoints"][0]["port"].as_str(), Some(svc_port_name));
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    let job_label = sm["spec"]["jobLabel"].as_str().unwrap();
    assert!(
        svc_labels[job_label].as_str().unwrap().starts_with("netsight"),
        "job must match the fleet alerts' up{{job=~\"netsight.*\"}}"
    );
}

#[test]
fn prometheusrule_matches_the_alert_rules() {
    let rules = yaml("alerts/netsight.rules.yml");
    let file = "deploy/kubernetes/prometheusrule.yaml";
    let pr = yaml(file);
    if std::env::var_os("NETSIGHT_REGENERATE").is_some() {
        let header: String = read(file)
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        let mut doc = pr.clone();
        doc["spec"]["groups"] = rules["groups"].clone();
        std::fs::write(path(file), header + &serde_yaml::to_string(&doc).unwrap()).unwrap();
        return;
    }
    assert_eq!(pr["kind"], "PrometheusRule");
    assert_eq!(
        pr["spec"]["groups"], rules["groups"],
        "{file} is stale: regenerate with NETSIGHT_REGENERATE=1 cargo test --test deploy prometheusrule"
    );
}

// ------------------------------------------------------------------ compose

/// Bind mounts of a compose service: (host path relative to the compose dir, target).
fn binds(service: &Yaml) -> Vec<(String, String)> {
    strs(&service["volumes"])
        .into_iter()
        .filter(|v| v.starts_with('.') || v.starts_with('/'))
        .map(|v| {
            let mut it = v.split(':');
            (it.next().unwrap().to_string(), it.next().unwrap().to_string())
        })
        .collect()
}

#[test]
fn compose_stack_fits_together() {
    // Docker's engine is not available here, so the stack is never started: these
    // are the offline checks.
    let dir = path("deploy/compose");
    let compose = yaml("deploy/compose/docker-compose.yml");
    let services = compose["services"].as_mapping().unwrap();
    let names: BTreeSet<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["netsight", "prometheus", "alertmanager", "grafana", "otel-collector"])
    );
    let svc = |n: &str| &compose["services"][n];
    for n in &names {
        for (src, _) in binds(svc(n)) {
            assert!(dir.join(&src).exists(), "{n}: mounted {src} does not exist");
        }
        if let Some(img) = svc(n)["image"].as_str() {
            assert!(
                img.contains(':') && !img.ends_with(":latest"),
                "{n}: pin the image version ({img})"
            );
        }
    }
    // netsight: built from the Dockerfile, host namespaces, the unit's capabilities.
    let ns = svc("netsight");
    assert_eq!(ns["build"]["dockerfile"], "Dockerfile");
    assert!(dir
        .join(ns["build"]["context"].as_str().unwrap())
        .join("Dockerfile")
        .is_file());
    assert_eq!(ns["network_mode"], "host");
    assert_eq!(ns["pid"], "host");
    assert_eq!(strs(&ns["cap_drop"]), vec!["ALL"]);
    let caps: BTreeSet<String> = strs(&ns["cap_add"]).into_iter().map(|c| format!("CAP_{c}")).collect();
    assert_eq!(caps, CAPS.iter().map(|c| c.to_string()).collect());
    assert_eq!(ns["read_only"], true);
    let cmd = strs(&ns["command"]);
    assert_eq!(cmd[0], "serve");
    let cfg_target = &cmd[cmd.iter().position(|a| a == "--config").unwrap() + 1];
    let cfg_src = binds(ns)
        .into_iter()
        .find(|(_, t)| t == cfg_target)
        .expect("config mounted")
        .0;
    let cfg: Yaml = serde_yaml::from_str(&std::fs::read_to_string(dir.join(cfg_src)).unwrap()).unwrap();
    // OTLP push reaches the collector's published gRPC port.
    let endpoint = cfg["otlp"]["endpoint"].as_str().unwrap();
    assert_eq!(cfg["otlp"]["enabled"], true);
    let otlp_port = endpoint.rsplit(':').next().unwrap().trim_end_matches('/');
    assert!(strs(&svc("otel-collector")["ports"]).contains(&format!("{otlp_port}:{otlp_port}")));

    // Prometheus: promtool accepts the config; it loads the alert rules and scrapes
    // netsight through the host gateway and the collector's Prometheus exporter.
    let promtool = tool("promtool", "prometheus");
    let out = Command::new(promtool)
        .args(["check", "config", "--syntax-only"])
        .arg(dir.join("prometheus.yml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "promtool check config: {}", text(&out));
    let prom = yaml("deploy/compose/prometheus.yml");
    let rule_glob = strs(&prom["rule_files"])[0].clone();
    let rules_mount = binds(svc("prometheus"))
        .into_iter()
        .find(|(s, _)| s.ends_with("alerts/netsight.rules.yml"))
        .expect("rules mounted");
    assert_eq!(
        Path::new(&rules_mount.1).parent(),
        Path::new(&rule_glob).parent(),
        "rule_files must match the mount"
    );
    let targets: BTreeMap<String, String> = prom["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["job_name"].as_str().unwrap().to_string(),
                s["static_configs"][0]["targets"][0].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        targets["netsight"],
        format!(
            "host.docker.internal:{}",
            cfg["listen"].as_str().unwrap().rsplit(':').next().unwrap()
        )
    );
    assert!(strs(&svc("prometheus")["extra_hosts"]).contains(&"host.docker.internal:host-gateway".to_string()));
    let otel = yaml("deploy/compose/otel-collector.yaml");
    let exporter_port = otel["exporters"]["prometheus"]["endpoint"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(targets["otel-collector"], format!("otel-collector:{exporter_port}"));
    assert_eq!(
        prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0].as_str(),
        Some("alertmanager:9093")
    );
    // Collector pipeline: every component it uses is defined.
    let p = &otel["service"]["pipelines"]["metrics"];
    for (kind, list) in [
        ("receivers", "receivers"),
        ("processors", "processors"),
        ("exporters", "exporters"),
    ] {
        for c in strs(&p[list]) {
            assert!(
                otel[kind].get(c.as_str()).is_some(),
                "otel-collector: {kind}.{c} undefined"
            );
        }
    }
    // Alertmanager runs the checked example config.
    assert!(binds(svc("alertmanager"))
        .iter()
        .any(|(s, _)| s.ends_with("alerts/alertmanager.example.yml")));
    // Grafana: the data source is the compose Prometheus, the dashboard provider
    // reads the directory dashboards/ is mounted at.
    let ds = yaml("deploy/compose/grafana/provisioning/datasources/prometheus.yaml");
    assert_eq!(ds["datasources"][0]["type"], "prometheus");
    assert_eq!(ds["datasources"][0]["url"], "http://prometheus:9090");
    let prov = yaml("deploy/compose/grafana/provisioning/dashboards/netsight.yaml");
    let dash_path = prov["providers"][0]["options"]["path"].as_str().unwrap();
    let gb = binds(svc("grafana"));
    assert!(
        gb.iter().any(|(s, t)| s.ends_with("dashboards") && t == dash_path),
        "dashboards mount: {gb:?}"
    );
    assert!(gb
        .iter()
        .any(|(s, t)| s == "./grafana/provisioning" && t == "/etc/grafana/provisioning"));
}

// ------------------------------------------------------------------ Dockerfile

#[test]
fn dockerfile_builds_what_the_deployments_run() {
    // No Docker engine here: `docker build` cannot run. Offline checks instead.
    let df = read("Dockerfile");
    let instr: Vec<(String, String)> = df
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .fold(Vec::<String>::new(), |mut acc, l| {
            match acc.last_mut() {
                Some(prev) if prev.ends_with('\\') => {
                    prev.pop();
                    prev.push(' ');
                    prev.push_str(l.trim());
                }
                _ => acc.push(l.trim().to_string()),
            }
            acc
        })
        .into_iter()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap_or((&l, ""));
            (k.to_uppercase(), v.trim().to_string())
        })
        .collect();
    let froms: Vec<&String> = instr.iter().filter(|(k, _)| k == "FROM").map(|(_, v)| v).collect();
    assert_eq!(froms.len(), 2, "multi-stage: build and runtime");
    assert!(
        froms[0].starts_with("rust:") && froms[0].ends_with(" AS build"),
        "{}",
        froms[0]
    );
    assert!(
        froms[1].starts_with("debian:") && froms[1].contains("-slim"),
        "{}",
        froms[1]
    );
    // The Rust image is at least the crate's rust-version.
    let arg = |name: &str| {
        instr
            .iter()
            .find_map(|(k, v)| (k == "ARG").then(|| v.strip_prefix(&format!("{name}="))).flatten())
            .unwrap_or_else(|| panic!("ARG {name}"))
            .to_string()
    };
    let manifest: toml_like::Manifest = toml_like::parse(&read("Cargo.toml"));
    let need = manifest
        .rust_version
        .split('.')
        .map(|x| x.parse::<u32>().unwrap())
        .collect::<Vec<_>>();
    let have = arg("RUST_VERSION")
        .split('.')
        .map(|x| x.parse::<u32>().unwrap())
        .collect::<Vec<_>>();
    assert!(have >= need, "RUST_VERSION {have:?} < rust-version {need:?}");
    assert_eq!(arg("DEBIAN_RELEASE"), "bookworm");
    // COPY sources exist and cover what `cargo build` needs.
    let mut copied = BTreeSet::new();
    for (k, v) in &instr {
        if k != "COPY" || v.starts_with("--from") {
            continue;
        }
        let parts: Vec<&str> = v.split_whitespace().collect();
        for src in &parts[..parts.len() - 1] {
            assert!(path(src).exists(), "COPY {src}: does not exist");
            copied.insert(src.trim_end_matches('/').to_string());
        }
    }
    for needed in ["Cargo.toml", "Cargo.lock", "src", "config", "rules", "benches"] {
        assert!(copied.contains(needed), "the build stage must COPY {needed}");
    }
    for bench in &manifest.bench_names {
        assert!(
            path(&format!("benches/{bench}.rs")).is_file(),
            "Cargo.toml declares bench {bench}"
        );
    }
    let run = instr
        .iter()
        .find(|(k, v)| k == "RUN" && v.contains("cargo build"))
        .expect("cargo build");
    assert!(
        run.1.contains("--release") && run.1.contains("--locked") && run.1.contains("--bin netsight"),
        "{}",
        run.1
    );
    // The runtime runs the binary the build stage produced.
    let from_build = instr
        .iter()
        .find(|(k, v)| k == "COPY" && v.starts_with("--from=build"))
        .expect("COPY --from=build");
    let dest = from_build.1.split_whitespace().last().unwrap();
    let entry: Vec<String> = serde_json::from_str(&instr.iter().find(|(k, _)| k == "ENTRYPOINT").unwrap().1).unwrap();
    assert_eq!(entry, vec![dest.to_string()]);
    let cmd: Vec<String> = serde_json::from_str(&instr.iter().find(|(k, _)| k == "CMD").unwrap().1).unwrap();
    assert_eq!(cmd[0], "serve");
    assert!(instr.iter().any(|(k, v)| k == "EXPOSE" && v == "9977"));
    // CMD's config is the embedded default copied into the image.
    let cfg = &cmd[cmd.iter().position(|a| a == "--config").unwrap() + 1];
    assert!(
        instr
            .iter()
            .any(|(k, v)| k == "COPY" && v.ends_with(&format!(" {cfg}"))),
        "CMD reads {cfg}"
    );
}

/// Just enough of Cargo.toml for the checks above (no toml crate in the
/// dependencies): `rust-version` and the `[[bench]]` names.
mod toml_like {
    pub struct Manifest {
        pub rust_version: String,
        pub bench_names: Vec<String>,
    }

    pub fn parse(text: &str) -> Manifest {
        let mut rust_version = String::new();
        let mut bench_names = Vec::new();
        let mut in_bench = false;
        for l in text.lines().map(str::trim) {
            if l.starts_with('[') {
                in_bench = l == "[[bench]]";
                continue;
            }
            let Some((k, v)) = l.split_once('=') else { continue };
            let v = v.trim().trim_matches('"').to_string();
            match k.trim() {
                "rust-version" => rust_version = v,
                "name" if in_bench => bench_names.push(v),
                _ => {}
            }
        }
        assert!(!rust_version.is_empty(), "Cargo.toml: rust-version");
        Manifest {
            rust_version,
            bench_names,
        }
    }
}
