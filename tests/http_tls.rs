//! HTTPS and basic auth (`--web.config.file`, Prometheus' web-config format) against
//! real clients: curl and openssl for the certificates, promtool for the file format.
//! Each daemon runs in its own namespace, listening on that namespace's loopback.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Netns;

const URL: &str = "https://127.0.0.1:9977";

struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts `netsight serve --web.config.file web` in `ns`; `ready` is the curl
/// arguments (credentials, CA, client certificate) that must get a 200 from /healthz.
fn start(ns: &Netns, dir: &Path, web: &Path, ready: &[&str]) -> Daemon {
    let log = dir.join("netsight.log");
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_netsight"), "serve"])
        .args(["--listen", "127.0.0.1:9977", "--interval", "1s", "--web.config.file"])
        .arg(web)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start netsight serve");
    let mut d = Daemon { child, log };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut args = ready.to_vec();
        args.push("/healthz");
        if curl(ns, &args).status == 200 {
            return d;
        }
        if let Some(st) = d.child.try_wait().expect("wait") {
            panic!("netsight exited ({st}): {}", d.log());
        }
        assert!(Instant::now() < deadline, "daemon never answered 200: {}", d.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct CurlResult {
    /// curl's exit code (0 = transfer done, whatever the HTTP status).
    exit: i32,
    /// HTTP status of the last transfer; 0 when there was no HTTP response.
    status: u16,
    headers: String,
    body: String,
    stderr: String,
}

/// `curl ARGS… URL+path` inside the namespace; the last argument is the path.
fn curl(ns: &Netns, args: &[&str]) -> CurlResult {
    let (path, opts) = args.split_last().expect("path");
    let url = if path.starts_with("http") {
        path.to_string()
    } else {
        format!("{URL}{path}")
    };
    let mut cmd = vec![
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-D",
        "/dev/stderr",
        "-w",
        "\n%{http_code}",
    ];
    cmd.extend_from_slice(opts);
    cmd.push(&url);
    let out = ns.exec(&cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    CurlResult {
        exit: out.status.code().unwrap_or(-1),
        status: code.trim().parse().unwrap_or(0),
        headers: stderr.clone(),
        body: body.to_string(),
        stderr,
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed (Debian package `openssl`)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA, a server certificate for 127.0.0.1/localhost and a client certificate,
/// all signed by the CA: ca.crt, server.{crt,key}, client.{crt,key}.
fn make_pki(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509"];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&[
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=netsight test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    for (name, eku, san) in [
        ("server", "serverAuth", "IP:127.0.0.1,DNS:localhost"),
        ("client", "clientAuth", "DNS:prometheus"),
    ] {
        let mut req = vec!["req"];
        req.extend_from_slice(&ec);
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let subj = format!("/CN={name}");
        req.extend_from_slice(&["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        let ext = format!("{name}.ext");
        std::fs::write(
            dir.join(&ext),
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={eku}\n\
                 subjectAltName={san}\n"
            ),
        )
        .expect("write ext");
        let crt = format!("{name}.crt");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

fn promtool_check(file: &Path) {
    let out = Command::new("promtool")
        .args(["check", "web-config"])
        .arg(file)
        .output()
        .expect("promtool must be installed (Debian package `prometheus`)");
    assert!(
        out.status.success(),
        "promtool check web-config {}: {}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Plaintext HTTP sent to the TLS port: no HTTP response comes back.
fn plaintext_gets_no_http_answer(ns: &Netns) {
    let reply = ns.enter(|| {
        let mut s = TcpStream::connect("127.0.0.1:9977").expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        buf
    });
    assert!(
        !reply.starts_with(b"HTTP/"),
        "plaintext request got an HTTP answer: {}",
        String::from_utf8_lossy(&reply)
    );
}

#[test]
fn tls_with_basic_auth() {
    let ns = Netns::new("ntls");
    let dir = tempfile::tempdir().expect("tempdir");
    make_pki(dir.path());
    let hash = bcrypt::hash("s3cret", 10).expect("bcrypt");
    let web = dir.path().join("web.yml");
    // Relative certificate paths: resolved against the file's directory (as Prometheus).
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS12\n\
             basic_auth_users:\n  alice: {hash}\n"
        ),
    )
    .expect("write web config");
    promtool_check(&web);
    let ca = dir.path().join("ca.crt");
    let ca = ca.to_str().expect("path");
    let d = start(&ns, dir.path(), &web, &["--cacert", ca, "-u", "alice:s3cret"]);

    let ok = curl(&ns, &["--cacert", ca, "-u", "alice:s3cret", "/metrics"]);
    assert_eq!(ok.status, 200, "{}", ok.stderr);
    assert!(ok.body.contains("netsight_collector_up{collector=\"netdev\"} 1"));

    for creds in [None, Some("alice:wrong"), Some("mallory:s3cret"), Some("alice:")] {
        let mut args = vec!["--cacert", ca];
        if let Some(c) = creds {
            args.extend_from_slice(&["-u", c]);
        }
        args.push("/metrics");
        let r = curl(&ns, &args);
        assert_eq!(r.status, 401, "{creds:?}: {}", r.stderr);
        assert!(
            r.headers.to_ascii_lowercase().contains("www-authenticate: basic"),
            "{}",
            r.headers
        );
        assert!(!r.body.contains("netsight_"), "metrics leaked to {creds:?}");
    }

    // TLS is required: plain HTTP fails at the handshake, with curl and raw.
    let plain = curl(&ns, &["-u", "alice:s3cret", "http://127.0.0.1:9977/metrics"]);
    assert!(
        plain.exit != 0 && plain.status == 0,
        "plain HTTP: exit {} status {}",
        plain.exit,
        plain.status
    );
    plaintext_gets_no_http_answer(&ns);
    // And the certificate must verify: without the test CA curl refuses it.
    let untrusted = curl(&ns, &["-u", "alice:s3cret", "/metrics"]);
    assert_eq!(
        untrusted.exit, 60,
        "curl should reject the unknown CA: {}",
        untrusted.stderr
    );

    // Successful logins are cached: 40 scrapes on one connection cost far less than
    // 40 bcrypt verifications (cost 10).
    let t = Instant::now();
    let mut args = vec!["--cacert", ca, "-u", "alice:s3cret"];
    let urls: Vec<String> = (0..40).map(|_| format!("{URL}/healthz")).collect();
    for u in &urls[..39] {
        args.push(u);
    }
    args.push(&urls[39]);
    let many = curl(&ns, &args);
    assert_eq!(many.status, 200);
    let cached = t.elapsed();
    let t = Instant::now();
    let one = curl(&ns, &["--cacert", ca, "-u", "alice:other-password", "/healthz"]);
    assert_eq!(one.status, 401);
    let verify = t.elapsed();
    eprintln!("40 cached scrapes: {cached:?}; one uncached (failed) verification: {verify:?}");
    assert!(
        cached < verify * 10,
        "40 authenticated scrapes took {cached:?}, one bcrypt verification {verify:?}: no caching?"
    );
    drop(d);
}

#[test]
fn client_certificates_and_minimum_version() {
    let ns = Netns::new("ntls");
    let dir = tempfile::tempdir().expect("tempdir");
    make_pki(dir.path());
    let p = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  \
             client_ca_file: {}\n  min_version: TLS13\n",
            p("server.crt"),
            p("server.key"),
            p("ca.crt")
        ),
    )
    .expect("write web config");
    promtool_check(&web);
    let (ca, cert, key) = (p("ca.crt"), p("client.crt"), p("client.key"));
    let with_cert = ["--cacert", ca.as_str(), "--cert", cert.as_str(), "--key", key.as_str()];
    let _d = start(&ns, dir.path(), &web, &with_cert);

    let mut args = with_cert.to_vec();
    args.push("/metrics");
    let ok = curl(&ns, &args);
    assert_eq!(ok.status, 200, "{}", ok.stderr);

    let no_cert = curl(&ns, &["--cacert", &ca, "/metrics"]);
    assert_eq!(
        no_cert.status, 0,
        "answered without a client certificate: {}",
        no_cert.body
    );
    assert_ne!(no_cert.exit, 0);
    // A client certificate from another CA is refused too.
    let other = tempfile::tempdir().expect("tempdir");
    make_pki(other.path());
    let (ocert, okey) = (
        other.path().join("client.crt").to_string_lossy().into_owned(),
        other.path().join("client.key").to_string_lossy().into_owned(),
    );
    let foreign = curl(&ns, &["--cacert", &ca, "--cert", &ocert, "--key", &okey, "/metrics"]);
    assert_eq!(foreign.status, 0, "answered a foreign client certificate");

    let mut old = with_cert.to_vec();
    old.extend_from_slice(&["--tls-max", "1.2", "/metrics"]);
    let tls12 = curl(&ns, &old);
    assert_eq!(tls12.status, 0, "TLS 1.2 accepted despite min_version TLS13");
    plaintext_gets_no_http_answer(&ns);
}

#[test]
fn example_web_config_passes_promtool_and_is_served() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/web-config.example.yml");
    promtool_check(&example);
    assert!(
        Path::new("/etc/ssl/private/ssl-cert-snakeoil.key").exists(),
        "the example uses Debian's snakeoil certificate: install the `ssl-cert` package"
    );
    let ns = Netns::new("ntls");
    let dir = tempfile::tempdir().expect("tempdir");
    let _d = start(&ns, dir.path(), &example, &["-k", "-u", "prometheus:changeme"]);
    let ok = curl(&ns, &["-k", "-u", "prometheus:changeme", "/metrics"]);
    assert_eq!(ok.status, 200);
    assert!(
        ok.headers
            .to_ascii_lowercase()
            .contains("x-content-type-options: nosniff"),
        "{}",
        ok.headers
    );
    assert_eq!(curl(&ns, &["-k", "-u", "prometheus:wrong", "/metrics"]).status, 401);
}

#[test]
fn broken_web_configs_stop_the_daemon_at_startup() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text, needle) in [
        ("typo.yml", "basic_auth_user:\n  a: b\n", "basic_auth_user"),
        ("plain.yml", "basic_auth_users:\n  alice: s3cret\n", "bcrypt"),
        (
            "nocert.yml",
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
            "missing.crt",
        ),
    ] {
        let f = dir.path().join(name);
        std::fs::write(&f, text).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_netsight"))
            .args(["serve", "--listen", "127.0.0.1:0", "--web.config.file"])
            .arg(&f)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{name} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{name}: {err}");
        // promtool agrees that the file is broken.
        let p = Command::new("promtool")
            .args(["check", "web-config"])
            .arg(&f)
            .output()
            .expect("promtool");
        assert!(!p.status.success(), "promtool accepted {name}");
    }
}
