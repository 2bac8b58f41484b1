//! `netsight diagnose connectivity`: layered reachability checks for a person at a
//! shell — DNS, local route and egress interface, ICMP echo, TCP connect, TLS
//! handshake and an HTTP request, each timed — and a verdict naming the failing
//! layer. Exit code 0 reachable, 1 degraded, 2 unreachable.

pub mod dns;
pub mod http;
pub mod icmp;
pub mod route;
pub mod tls;

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Args, Debug)]
pub struct DiagnoseArgs {
    #[command(subcommand)]
    pub what: DiagnoseWhat,
}

#[derive(Subcommand, Debug)]
pub enum DiagnoseWhat {
    /// Layered checks towards a host: DNS, route, ICMP, TCP, TLS, HTTP (exit 0
    /// reachable, 1 degraded, 2 unreachable).
    Connectivity(ConnectivityArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ConnectivityArgs {
    /// Host name or IP address to diagnose.
    #[arg(long)]
    pub host: String,
    /// TCP port [default: 443 with --tls, else 80].
    #[arg(long)]
    pub port: Option<u16>,
    /// Send an HTTP GET and time its phases.
    #[arg(long)]
    pub http: bool,
    /// Do a TLS handshake (certificate validity, expiry, version).
    #[arg(long)]
    pub tls: bool,
    /// Path for the HTTP request.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Time limit of each layer's check, e.g. `5s` or `500ms`.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// A layer slower than this makes the verdict "degraded".
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub slow: Duration,
    /// DNS server to ask (`ADDR` or `ADDR:PORT`) instead of /etc/resolv.conf's;
    /// /etc/hosts is then not consulted.
    #[arg(long, value_name = "ADDR")]
    pub resolver: Option<String>,
    /// PEM file of extra CA certificates to trust (besides the system store).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Skip the ICMP echo check.
    #[arg(long)]
    pub no_icmp: bool,
    /// Print the report as JSON (shape in docs/analyze.md).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Skipped,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skipped => "skip",
        }
    }
}

/// One layer's result.
#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub layer: &'static str,
    pub status: Status,
    pub duration_ms: Option<f64>,
    pub summary: String,
    pub details: Value,
    /// Suggestions shown when this layer decides the verdict.
    #[serde(skip)]
    pub suggestions: Vec<String>,
}

impl Layer {
    pub fn new(layer: &'static str, status: Status, took: Option<Duration>, summary: impl Into<String>) -> Self {
        Layer {
            layer,
            status,
            duration_ms: took.map(ms),
            summary: summary.into(),
            details: Value::Null,
            suggestions: Vec::new(),
        }
    }

    pub fn details(mut self, d: Value) -> Self {
        self.details = d;
        self
    }

    pub fn suggest(mut self, s: impl Into<String>) -> Self {
        self.suggestions.push(s.into());
        self
    }
}

/// A privilege the diagnosis lacked.
#[derive(Debug, Clone, Serialize)]
pub struct MissingPrivilege {
    pub check: &'static str,
    pub missing: String,
    pub granted_by: String,
}

pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn fmt_ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 1000.0 => format!("{:.2} s", v / 1000.0),
        Some(v) if v >= 10.0 => format!("{v:.0} ms"),
        Some(v) => format!("{v:.1} ms"),
        None => String::new(),
    }
}

pub struct Report {
    pub host: String,
    pub port: u16,
    pub layers: Vec<Layer>,
    pub missing: Vec<MissingPrivilege>,
    pub http_timing: Option<Value>,
}

#[derive(Debug, Serialize)]
pub struct Verdict {
    pub status: &'static str,
    pub exit_code: u8,
    pub failing_layer: Option<&'static str>,
    pub summary: String,
    pub suggestions: Vec<String>,
}

impl Report {
    pub fn verdict(&self) -> Verdict {
        if let Some(l) = self.layers.iter().find(|l| l.status == Status::Fail) {
            return Verdict {
                status: "unreachable",
                exit_code: 2,
                failing_layer: Some(l.layer),
                summary: format!(
                    "{}:{} is unreachable: the {} layer fails — {}",
                    self.host, self.port, l.layer, l.summary
                ),
                suggestions: l.suggestions.clone(),
            };
        }
        let warns: Vec<&Layer> = self.layers.iter().filter(|l| l.status == Status::Warn).collect();
        if let Some(first) = warns.first() {
            return Verdict {
                status: "degraded",
                exit_code: 1,
                failing_layer: Some(first.layer),
                summary: format!(
                    "{}:{} is reachable but degraded: {}",
                    self.host,
                    self.port,
                    warns
                        .iter()
                        .map(|l| format!("{} — {}", l.layer, l.summary))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                suggestions: warns.iter().flat_map(|l| l.suggestions.clone()).collect(),
            };
        }
        Verdict {
            status: "reachable",
            exit_code: 0,
            failing_layer: None,
            summary: format!(
                "{}:{} is reachable; every layer checked is healthy",
                self.host, self.port
            ),
            suggestions: Vec::new(),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "target": {"host": self.host, "port": self.port},
            "layers": self.layers,
            "http_timing": self.http_timing,
            "missing_privileges": self.missing,
            "verdict": self.verdict(),
        })
    }

    pub fn render_text(&self) -> String {
        let mut out = format!("netsight diagnose connectivity {}:{}\n", self.host, self.port);
        for l in &self.layers {
            out.push_str(&format!(
                "  {:<6} {:<5} {:>9}  {}\n",
                l.layer,
                l.status.label(),
                fmt_ms(l.duration_ms),
                l.summary
            ));
        }
        if let Some(t) = &self.http_timing {
            let f = |k: &str| fmt_ms(t[k].as_f64());
            out.push_str(&format!(
                "  http timing (cumulative): resolve {} · connect {} · tls {} · first byte {} · total {}\n",
                f("resolve_ms"),
                f("connect_ms"),
                if t["tls_ms"].is_null() {
                    "-".to_string()
                } else {
                    f("tls_ms")
                },
                f("first_byte_ms"),
                f("total_ms")
            ));
        }
        let v = self.verdict();
        out.push_str(&format!("verdict: {} — {}\n", v.status.to_uppercase(), v.summary));
        if !v.suggestions.is_empty() {
            out.push_str("suggestions:\n");
            for s in &v.suggestions {
                out.push_str(&format!("  - {s}\n"));
            }
        }
        for m in &self.missing {
            out.push_str(&format!(
                "note: {} not checked: {}; granted by {}\n",
                m.check, m.missing, m.granted_by
            ));
        }
        out
    }
}

pub fn run(args: DiagnoseArgs) -> anyhow::Result<u8> {
    match args.what {
        DiagnoseWhat::Connectivity(a) => {
            let report = connectivity(&a);
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report.to_json())?);
            } else {
                print!("{}", report.render_text());
            }
            Ok(report.verdict().exit_code)
        }
    }
}

fn slow_warn(layer: Layer, took: Duration, slow: Duration, what: &str) -> Layer {
    if took > slow && layer.status == Status::Ok {
        let mut l = layer;
        l.status = Status::Warn;
        l.summary = format!(
            "slow {what}: {} (threshold {}) — {}",
            fmt_ms(Some(ms(took))),
            fmt_ms(Some(ms(slow))),
            l.summary
        );
        l.suggest(format!(
            "{what} took {}; check the load of the server and the path latency",
            fmt_ms(Some(ms(took)))
        ))
    } else {
        layer
    }
}

/// Runs every layer in order; a hard failure stops the layers above it.
pub fn connectivity(a: &ConnectivityArgs) -> Report {
    let port = a.port.unwrap_or(if a.tls { 443 } else { 80 });
    let host = a.host.trim_start_matches('[').trim_end_matches(']').to_string();
    let started = Instant::now();
    let mut report = Report {
        host: host.clone(),
        port,
        layers: Vec::new(),
        missing: Vec::new(),
        http_timing: None,
    };
    let skip_rest = |report: &mut Report, from: &[&'static str], why: &str| {
        for l in from {
            report
                .layers
                .push(Layer::new(l, Status::Skipped, None, format!("not attempted: {why}")));
        }
    };
    let mut upper: Vec<&'static str> = vec!["route"];
    if !a.no_icmp {
        upper.push("icmp");
    }
    upper.push("tcp");
    if a.tls {
        upper.push("tls");
    }
    if a.http {
        upper.push("http");
    }

    // DNS.
    let (dns_layer, addr) = dns::check(&host, a.resolver.as_deref(), a.timeout);
    let dns_ms = started.elapsed();
    let dns_took = dns_layer.duration_ms.map(|v| Duration::from_secs_f64(v / 1000.0));
    let dns_layer = match dns_took {
        Some(t) => slow_warn(dns_layer, t, a.slow, "name resolution"),
        None => dns_layer,
    };
    report.layers.push(dns_layer);
    let Some(ip) = addr else {
        skip_rest(&mut report, &upper, "the name did not resolve");
        return report;
    };

    // Route and egress interface.
    let route_layer = route::check(ip);
    let route_failed = route_layer.status == Status::Fail;
    report.layers.push(route_layer);
    if route_failed {
        skip_rest(&mut report, &upper[1..], "no usable route to the address");
        return report;
    }

    // ICMP echo (soft: its failure alone only degrades the verdict).
    let mut icmp_ok: Option<bool> = None;
    if !a.no_icmp {
        let (l, missing) = icmp::check(ip, a.timeout.min(Duration::from_secs(2)));
        icmp_ok = match l.status {
            Status::Ok => Some(true),
            Status::Warn => Some(false),
            _ => None,
        };
        if let Some(m) = missing {
            report.missing.push(m);
        }
        report.layers.push(l);
    }

    // TCP connect.
    let sa = SocketAddr::new(ip, port);
    let t0 = Instant::now();
    let conn_start = started.elapsed();
    let stream = TcpStream::connect_timeout(&sa, a.timeout);
    let took = t0.elapsed();
    let connect_done = started.elapsed();
    let after_tcp: Vec<&'static str> = upper.iter().copied().filter(|l| matches!(*l, "tls" | "http")).collect();
    let stream = match stream {
        Ok(s) => {
            let local = s.local_addr().map(|a| a.to_string()).unwrap_or_default();
            let l = Layer::new("tcp", Status::Ok, Some(took), format!("connected {local} → {sa}"))
                .details(json!({"local": local, "remote": sa.to_string()}));
            report.layers.push(slow_warn(l, took, a.slow, "TCP connect"));
            s
        }
        Err(e) => {
            report.layers.push(tcp_failure(&e, sa, took, a.timeout, icmp_ok));
            skip_rest(&mut report, &after_tcp, "the TCP connection failed");
            return report;
        }
    };
    // If ICMP got no reply but TCP works, the path filters ICMP.
    if icmp_ok == Some(false) {
        if let Some(l) = report.layers.iter_mut().find(|l| l.layer == "icmp") {
            l.summary = format!(
                "{} (TCP connects, so ICMP is filtered on the path or by the host)",
                l.summary
            );
            l.suggestions = vec![
                "ICMP echo is blocked while TCP works: allow ICMP echo-request/echo-reply (and ICMP \
                 unreachable/fragmentation-needed, which path-MTU discovery needs) in the firewalls on the path"
                    .to_string(),
            ];
        }
    }
    let _ = stream.set_read_timeout(Some(a.timeout));
    let _ = stream.set_write_timeout(Some(a.timeout));

    // TLS handshake.
    let mut tls_done = None;
    let mut transport = http::Transport::Plain(stream);
    if a.tls {
        let t0 = Instant::now();
        let http::Transport::Plain(raw) = transport else {
            unreachable!("the transport is plain TCP before the handshake")
        };
        let (layer, conn) = tls::check(&host, raw, a.ca.as_deref());
        let took = t0.elapsed();
        let failed = layer.status == Status::Fail;
        report.layers.push(slow_warn(layer, took, a.slow, "TLS handshake"));
        tls_done = Some(started.elapsed());
        match conn {
            Some(c) if !failed => transport = http::Transport::Tls(Box::new(c)),
            _ => {
                if a.http {
                    skip_rest(&mut report, &["http"], "the TLS handshake failed");
                }
                return report;
            }
        }
    }

    // HTTP request.
    if a.http {
        let authority = if (a.tls && port == 443) || (!a.tls && port == 80) {
            host_header(&host)
        } else {
            format!("{}:{port}", host_header(&host))
        };
        let req_start = started.elapsed();
        let res = http::request(&mut transport, &authority, &a.path);
        match res {
            Ok(r) => {
                let first_byte = req_start + r.first_byte;
                let total = started.elapsed();
                let timing = json!({
                    "resolve_ms": ms(dns_ms),
                    "connect_ms": ms(connect_done),
                    "tls_ms": tls_done.map(ms),
                    "first_byte_ms": ms(first_byte),
                    "total_ms": ms(total),
                    "connect_started_ms": ms(conn_start),
                });
                report.http_timing = Some(timing.clone());
                let (status, mut sugg) = if r.status >= 500 {
                    (
                        Status::Warn,
                        vec![format!(
                            "the server answers {} — look at the application's logs",
                            r.status
                        )],
                    )
                } else {
                    (Status::Ok, Vec::new())
                };
                let took = r.first_byte;
                let mut l = Layer::new(
                    "http",
                    status,
                    Some(r.total),
                    format!(
                        "HTTP {} {} — first byte after {}, {} bytes",
                        r.status,
                        r.reason,
                        fmt_ms(Some(ms(r.first_byte))),
                        r.body_bytes
                    ),
                )
                .details(
                    json!({"status": r.status, "reason": r.reason, "body_bytes": r.body_bytes,
                                 "headers": r.headers, "timing": timing}),
                );
                l.suggestions.append(&mut sugg);
                report.layers.push(slow_warn(l, took, a.slow, "time to first byte"));
            }
            Err(e) => {
                let took = started.elapsed() - req_start;
                let timed_out = matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
                let summary = if timed_out {
                    format!("no response within {}", fmt_ms(Some(ms(a.timeout))))
                } else {
                    format!("request failed: {e}")
                };
                report.layers.push(
                    Layer::new("http", Status::Fail, Some(took), summary)
                        .suggest("the port accepts connections but the HTTP server does not answer: check the application (hung workers, overload) or a proxy in front of it"),
                );
            }
        }
    }
    report
}

fn host_header(host: &str) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => host.to_string(),
    }
}

fn tcp_failure(e: &std::io::Error, sa: SocketAddr, took: Duration, timeout: Duration, icmp_ok: Option<bool>) -> Layer {
    use std::io::ErrorKind;
    let raw = e.raw_os_error();
    let (summary, suggestion) = if e.kind() == ErrorKind::ConnectionRefused {
        (
            format!("connection to {sa} refused (RST)"),
            format!(
                "nothing listens on port {} at {} (or a firewall rejects with RST): start the service or check the port",
                sa.port(),
                sa.ip()
            ),
        )
    } else if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock {
        let hint = match icmp_ok {
            Some(true) => "the host answers ping, so a firewall silently drops SYNs to this port".to_string(),
            Some(false) => {
                "the host does not answer ping either: it is down, or the path drops its traffic".to_string()
            }
            None => "a firewall drops SYNs, or the host is down".to_string(),
        };
        (format!("no answer to SYN within {}", fmt_ms(Some(ms(timeout)))), hint)
    } else if raw == Some(libc::EHOSTUNREACH) || raw == Some(libc::ENETUNREACH) {
        (
            format!("{sa}: {e}"),
            "the host is unreachable (no ARP/ND answer on the local link, or an ICMP unreachable from a router): check that the host is up and the gateway routes to it".to_string(),
        )
    } else {
        (
            format!("{sa}: {e}"),
            "check the local firewall and the path to the host".to_string(),
        )
    };
    Layer::new("tcp", Status::Fail, Some(took), summary)
        .details(json!({"remote": sa.to_string(), "error": e.to_string(), "errno": raw}))
        .suggest(suggestion)
}
