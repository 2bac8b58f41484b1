//! `netsight diagnose connectivity` against real servers in a namespace pair:
//! client namespace C (10.231.0.1) ↔ veth ↔ server namespace S (10.231.0.2) running
//! a TCP service, TLS services (test CA, openssl s_server), a slow and a fast HTTP
//! server, and dnsmasq as the DNS server. Each case checks the failing layer the
//! verdict names and the exit code (0 reachable, 1 degraded, 2 unreachable).

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{run_ok, Netns};
use serde_json::Value;

const SERVER: &str = "10.231.0.2";

/// Children (openssl, dnsmasq) killed by PID when the test ends.
struct Kids(Vec<Child>);

impl Drop for Kids {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Removes /etc/netns/<ns> (the resolv.conf `ip netns exec` bind-mounts).
struct EtcNetns(PathBuf);

impl Drop for EtcNetns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Env {
    client: Netns,
    server: Netns,
    dir: tempfile::TempDir,
    _kids: Kids,
}

/// Runs `handler` for every connection to `port` in `ns`, on threads that joined it.
fn serve_in(ns: &Netns, port: u16, handler: fn(TcpStream)) {
    let path = format!("/var/run/netns/{}", ns.name);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let f = File::open(&path).expect("open netns");
        // SAFETY: setns on a valid namespace fd; affects only this thread.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let l = TcpListener::bind(("0.0.0.0", port)).expect("bind test server");
        tx.send(()).expect("ready");
        for s in l.incoming().flatten() {
            std::thread::spawn(move || handler(s));
        }
    });
    rx.recv().expect("server thread started");
}

fn read_request(s: &mut TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut b = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
    }
}

fn http_ok(mut s: TcpStream) {
    read_request(&mut s);
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n");
}

fn http_slow(mut s: TcpStream) {
    read_request(&mut s);
    std::thread::sleep(Duration::from_millis(1600));
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n");
}

fn http_silent(mut s: TcpStream) {
    read_request(&mut s);
    std::thread::sleep(Duration::from_secs(30));
}

fn tcp_only(s: TcpStream) {
    std::thread::sleep(Duration::from_secs(2));
    drop(s);
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and two server certificates for good.test / 10.231.0.2: one valid for a
/// year, one expiring in 5 days.
fn make_certs(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509"];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&[
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "30",
        "-subj",
        "/CN=netsight test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    std::fs::write(
        dir.join("ext.cnf"),
        format!(
            "subjectAltName=DNS:good.test,IP:{SERVER}\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .expect("write ext");
    // A typical self-signed certificate (`openssl req -x509`: CA:TRUE, its own issuer).
    let mut own = vec!["req", "-x509"];
    own.extend_from_slice(&ec);
    own.extend_from_slice(&[
        "-keyout",
        "self.key",
        "-out",
        "self.pem",
        "-days",
        "30",
        "-subj",
        "/CN=good.test",
        "-addext",
        "subjectAltName=DNS:good.test",
    ]);
    openssl(dir, &own);
    for (name, days) in [("srv", "365"), ("soon", "5")] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let mut req = vec!["req"];
        req.extend_from_slice(&ec);
        req.extend_from_slice(&["-keyout", &key, "-out", &csr, "-subj", "/CN=good.test"]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                days,
                "-extfile",
                "ext.cnf",
            ],
        );
    }
}

fn wait_port(ns: &Netns, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = format!("{SERVER}:{port}");
    loop {
        let a = addr.clone();
        let ok =
            ns.enter(move || TcpStream::connect_timeout(&a.parse().expect("addr"), Duration::from_millis(300)).is_ok());
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "{addr} never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_dns(env: &Env) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _) = diagnose(
            env,
            &[
                "--host",
                "good.test",
                "--resolver",
                SERVER,
                "--port",
                "7000",
                "--no-icmp",
            ],
        );
        if code == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "dnsmasq never answered");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn setup() -> Env {
    let client = Netns::new("ndc");
    let server = Netns::new("nds");
    client.veth_to(&server, "c0", "10.231.0.1/24", "s0", &format!("{SERVER}/24"));
    let dir = tempfile::tempdir().expect("tempdir");
    make_certs(dir.path());
    serve_in(&server, 7000, tcp_only);
    serve_in(&server, 8080, http_slow);
    serve_in(&server, 8081, http_ok);
    serve_in(&server, 8082, http_silent);
    let mut kids = Vec::new();
    for (port, cert, key) in [
        ("8443", "srv.pem", "srv.key"),
        ("8444", "soon.pem", "soon.key"),
        ("8445", "self.pem", "self.key"),
    ] {
        kids.push(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &server.name,
                    "openssl",
                    "s_server",
                    "-quiet",
                    "-www",
                    "-accept",
                    port,
                ])
                .args(["-cert", cert, "-key", key])
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start openssl s_server"),
        );
    }
    kids.push(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &server.name,
                "dnsmasq",
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
            ])
            .args(["--conf-file=/dev/null", "--user=root", "--bind-interfaces", "--port=53"])
            .arg(format!("--listen-address={SERVER}"))
            .arg(format!("--address=/good.test/{SERVER}"))
            .args(["--local=/test/", "--pid-file="])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq (apt-get install dnsmasq-base)"),
    );
    let env = Env {
        client,
        server,
        dir,
        _kids: Kids(kids),
    };
    wait_port(&env.client, 8443);
    wait_port(&env.client, 8444);
    wait_port(&env.client, 8445);
    wait_dns(&env);
    env
}

/// Runs `diagnose connectivity ARGS --json` in the client namespace: (exit code, report).
fn diagnose(env: &Env, args: &[&str]) -> (i32, Value) {
    let mut full = vec!["diagnose", "connectivity", "--timeout", "3s"];
    full.extend_from_slice(args);
    full.push("--json");
    let out = env.client.netsight(&full);
    let code = out.status.code().expect("exit code");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: output is not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(v["verdict"]["exit_code"], code, "{v:#}");
    (code, v)
}

fn layer<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .find(|l| l["layer"] == name)
        .unwrap_or_else(|| panic!("no {name} layer in {v:#}"))
}

fn expect(v: &Value, code: i32, got: i32, failing: Option<&str>) {
    assert_eq!(got, code, "{v:#}");
    assert_eq!(v["verdict"]["failing_layer"].as_str(), failing, "{v:#}");
    let status = ["reachable", "degraded", "unreachable"][code as usize];
    assert_eq!(v["verdict"]["status"], status, "{v:#}");
}

#[test]
fn names_the_failing_layer_for_each_fault() {
    let env = setup();
    let ca = env.dir.path().join("ca.pem");
    let ca = ca.to_str().expect("utf-8 path");

    // Everything healthy: name via dnsmasq, TCP, HTTP.
    let (code, v) = diagnose(
        &env,
        &["--host", "good.test", "--resolver", SERVER, "--port", "8081", "--http"],
    );
    expect(&v, 0, code, None);
    assert_eq!(layer(&v, "dns")["details"]["addresses"][0], SERVER);
    assert!(layer(&v, "dns")["details"]["resolver"]
        .as_str()
        .unwrap_or("")
        .contains(SERVER));
    assert_eq!(layer(&v, "route")["details"]["interface"]["name"], "c0");
    assert_eq!(layer(&v, "route")["details"]["interface"]["mtu"], 1500);
    assert_eq!(layer(&v, "icmp")["status"], "ok", "{v:#}");
    assert_eq!(layer(&v, "http")["details"]["status"], 200);
    for k in ["resolve_ms", "connect_ms", "first_byte_ms", "total_ms"] {
        assert!(v["http_timing"][k].as_f64().is_some(), "http_timing.{k}: {v:#}");
    }

    // A name that does not resolve → dns, unreachable.
    let (code, v) = diagnose(&env, &["--host", "bad.test", "--resolver", SERVER, "--port", "80"]);
    expect(&v, 2, code, Some("dns"));
    assert!(
        v["verdict"]["summary"].as_str().unwrap_or("").contains("NXDOMAIN"),
        "{v:#}"
    );
    assert_eq!(layer(&v, "tcp")["status"], "skipped");

    // A resolver that does not answer (nothing on that port) → dns.
    let (code, v) = diagnose(
        &env,
        &[
            "--host",
            "good.test",
            "--resolver",
            &format!("{SERVER}:5353"),
            "--port",
            "80",
        ],
    );
    expect(&v, 2, code, Some("dns"));

    // A host with no route → route.
    let (code, v) = diagnose(&env, &["--host", "10.99.0.1", "--port", "80"]);
    expect(&v, 2, code, Some("route"));
    assert!(
        layer(&v, "route")["summary"]
            .as_str()
            .unwrap_or("")
            .contains("no route"),
        "{v:#}"
    );

    // A closed port → tcp (refused).
    let (code, v) = diagnose(&env, &["--host", SERVER, "--port", "7999"]);
    expect(&v, 2, code, Some("tcp"));
    assert!(
        layer(&v, "tcp")["summary"].as_str().unwrap_or("").contains("refused"),
        "{v:#}"
    );

    // A plain TCP service.
    let (code, v) = diagnose(&env, &["--host", SERVER, "--port", "7000"]);
    expect(&v, 0, code, None);

    // An HTTP server that answers slowly → http, degraded.
    let (code, v) = diagnose(&env, &["--host", SERVER, "--port", "8080", "--http"]);
    expect(&v, 1, code, Some("http"));
    assert!(
        v["http_timing"]["first_byte_ms"].as_f64().unwrap_or(0.0) >= 1500.0,
        "{v:#}"
    );
    assert!(
        layer(&v, "http")["summary"].as_str().unwrap_or("").contains("slow"),
        "{v:#}"
    );

    // An HTTP server that never answers → http, unreachable.
    let (code, v) = diagnose(&env, &["--host", SERVER, "--port", "8082", "--http"]);
    expect(&v, 2, code, Some("http"));

    // TLS with a certificate from an unknown CA → tls, verification failure reported.
    let (code, v) = diagnose(
        &env,
        &[
            "--host",
            "good.test",
            "--resolver",
            SERVER,
            "--port",
            "8443",
            "--tls",
            "--http",
        ],
    );
    expect(&v, 2, code, Some("tls"));
    let tls = layer(&v, "tls");
    assert!(
        tls["summary"].as_str().unwrap_or("").contains("unknown issuer"),
        "{v:#}"
    );
    assert_eq!(tls["details"]["verified"], false);
    assert_eq!(tls["details"]["certificate"]["subject"], "good.test");
    assert_eq!(layer(&v, "http")["status"], "skipped");

    // The same server trusted with --ca: TLS version, validity, HTTP over TLS.
    let (code, v) = diagnose(
        &env,
        &[
            "--host",
            "good.test",
            "--resolver",
            SERVER,
            "--port",
            "8443",
            "--tls",
            "--http",
            "--ca",
            ca,
        ],
    );
    expect(&v, 0, code, None);
    let tls = layer(&v, "tls");
    assert_eq!(tls["details"]["verified"], true, "{v:#}");
    assert!(
        tls["details"]["version"].as_str().unwrap_or("").starts_with("TLS 1."),
        "{v:#}"
    );
    let days = tls["details"]["certificate"]["days_left"].as_f64().expect("days_left");
    assert!((360.0..=366.0).contains(&days), "{v:#}");
    assert!(v["http_timing"]["tls_ms"].as_f64().is_some(), "{v:#}");
    assert_eq!(layer(&v, "http")["details"]["status"], 200);

    // An IP address in the certificate's subjectAltName verifies too.
    let (code, v) = diagnose(&env, &["--host", SERVER, "--port", "8443", "--tls", "--ca", ca]);
    expect(&v, 0, code, None);

    // A certificate expiring in 5 days → tls, degraded.
    let (code, v) = diagnose(&env, &["--host", SERVER, "--port", "8444", "--tls", "--ca", ca]);
    expect(&v, 1, code, Some("tls"));
    assert!(
        layer(&v, "tls")["summary"]
            .as_str()
            .unwrap_or("")
            .contains("expires in"),
        "{v:#}"
    );

    // A self-signed certificate → tls, said so.
    let (code, v) = diagnose(
        &env,
        &["--host", "good.test", "--resolver", SERVER, "--port", "8445", "--tls"],
    );
    expect(&v, 2, code, Some("tls"));
    assert!(
        layer(&v, "tls")["summary"]
            .as_str()
            .unwrap_or("")
            .contains("self-signed"),
        "{v:#}"
    );
    assert_eq!(layer(&v, "tls")["details"]["certificate"]["self_signed"], true);

    // TLS against a port that does not speak TLS → tls.
    let (code, v) = diagnose(&env, &["--host", SERVER, "--port", "8081", "--tls", "--ca", ca]);
    expect(&v, 2, code, Some("tls"));
}

#[test]
fn uses_the_namespace_resolv_conf_and_reports_icmp_filtering() {
    let env = setup();
    // `ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf.
    let etc = PathBuf::from("/etc/netns").join(&env.client.name);
    std::fs::create_dir_all(&etc).expect("mkdir /etc/netns/<ns>");
    let _guard = EtcNetns(etc.clone());
    std::fs::write(etc.join("resolv.conf"), format!("nameserver {SERVER}\n")).expect("resolv.conf");
    let (code, v) = diagnose(&env, &["--host", "good.test", "--port", "7000"]);
    expect(&v, 0, code, None);
    let resolver = layer(&v, "dns")["details"]["resolver"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        resolver.contains("/etc/resolv.conf") && resolver.contains(SERVER),
        "{v:#}"
    );

    // Drop ICMP echo in the server namespace: TCP still works → degraded at icmp.
    run_ok(&[
        "ip",
        "netns",
        "exec",
        &env.server.name,
        "nft",
        "add",
        "table",
        "inet",
        "ndiag",
    ]);
    run_ok(&[
        "ip",
        "netns",
        "exec",
        &env.server.name,
        "nft",
        "add",
        "chain",
        "inet",
        "ndiag",
        "in",
        "{ type filter hook input priority 0; }",
    ]);
    run_ok(&[
        "ip",
        "netns",
        "exec",
        &env.server.name,
        "nft",
        "add",
        "rule",
        "inet",
        "ndiag",
        "in",
        "icmp",
        "type",
        "echo-request",
        "drop",
    ]);
    let (code, v) = diagnose(&env, &["--host", SERVER, "--port", "7000"]);
    expect(&v, 1, code, Some("icmp"));
    assert!(
        layer(&v, "icmp")["summary"].as_str().unwrap_or("").contains("filtered"),
        "{v:#}"
    );
}

#[test]
fn without_cap_net_raw_icmp_is_skipped_and_the_missing_capability_named() {
    let env = setup();
    let bin = env!("CARGO_BIN_EXE_netsight");
    let run = |json: bool| {
        let mut cmd = vec![
            "ip",
            "netns",
            "exec",
            &env.client.name,
            "setpriv",
            "--bounding-set",
            "-net_raw",
            "--inh-caps",
            "-net_raw",
            "--",
            bin,
            "diagnose",
            "connectivity",
            "--host",
            SERVER,
            "--port",
            "7000",
        ];
        if json {
            cmd.push("--json");
        }
        common::run(&cmd)
    };
    // The namespace's default net.ipv4.ping_group_range ("1 0") allows no group.
    let out = run(true);
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    let icmp = layer(&v, "icmp");
    assert_eq!(icmp["status"], "skipped", "{v:#}");
    assert_eq!(icmp["details"]["permitted"], false);
    let missing = &v["missing_privileges"][0];
    assert_eq!(missing["check"], "icmp");
    assert!(
        missing["granted_by"].as_str().unwrap_or("").contains("CAP_NET_RAW"),
        "{v:#}"
    );
    let text = String::from_utf8_lossy(&run(false).stdout).into_owned();
    assert!(
        text.contains("CAP_NET_RAW") && text.contains("ping_group_range"),
        "{text}"
    );
}
