//! `netsight monitor network`: a live terminal view of interface rates, TCP
//! connection states and counters, and the rule engine's active anomalies
//! (highlighted). The same collectors and rules as the daemon run in-process every
//! interval. `q` quits. When stdout is not a terminal (or with `--plain`) it prints
//! one line per interval instead; `--json` prints one JSON object per interval.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::anyhow;
use clap::{Args, Subcommand};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Direction, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};
use ratatui::Frame;
use serde::Serialize;

use super::{load_config, CommonArgs};
use crate::daemon::{scheduler_for, Shared};
use crate::snapshot::Snapshot;

#[derive(Args, Debug)]
pub struct MonitorArgs {
    #[command(subcommand)]
    pub what: MonitorWhat,
}

#[derive(Subcommand, Debug)]
pub enum MonitorWhat {
    /// Interfaces, TCP states and counters, active anomalies; refreshed every interval.
    Network(NetworkArgs),
}

#[derive(Args, Debug)]
pub struct NetworkArgs {
    /// Refresh interval: seconds (`1`, `0.5`) or a duration (`2s`, `500ms`).
    #[arg(long, default_value = "1", value_parser = parse_interval)]
    pub interval: Duration,
    /// Stop after this many refreshes (default: until `q` or Ctrl-C).
    #[arg(long)]
    pub count: Option<u64>,
    /// Plain periodic lines even on a terminal.
    #[arg(long)]
    pub plain: bool,
    /// One JSON object per interval (newline-delimited; shape in docs/analyze.md).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Duration::from_secs_f64(x),
        Ok(_) => return Err("the interval must be positive".into()),
        Err(_) => humantime::parse_duration(s).map_err(|e| e.to_string())?,
    };
    if d < Duration::from_millis(200) {
        return Err("the interval must be at least 200ms".into());
    }
    Ok(d)
}

#[derive(Debug, Clone, Serialize)]
pub struct Iface {
    pub device: String,
    pub operstate: String,
    pub mtu: Option<f64>,
    pub rx_bytes_per_second: Option<f64>,
    pub tx_bytes_per_second: Option<f64>,
    pub rx_packets_per_second: Option<f64>,
    pub tx_packets_per_second: Option<f64>,
    pub drops_per_second: Option<f64>,
    pub errors_per_second: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActiveAnomaly {
    pub rule: String,
    pub severity: String,
    pub layer: String,
    pub labels: BTreeMap<String, String>,
    pub since: f64,
    pub value: f64,
    pub text: String,
    pub cause: Option<String>,
    pub recommendation: Option<String>,
}

/// What one refresh shows (also the `--json` line).
#[derive(Debug, Clone, Serialize)]
pub struct View {
    pub time: f64,
    pub interval_seconds: f64,
    pub tick: u64,
    pub interfaces: Vec<Iface>,
    /// TCP sockets by state (IPv4 + IPv6).
    pub tcp_states: BTreeMap<String, f64>,
    /// Per-second rates of the main TCP counters (null on the first refresh).
    pub tcp_rates: BTreeMap<String, Option<f64>>,
    pub tcp_current_established: Option<f64>,
    pub anomalies: Vec<ActiveAnomaly>,
    pub collectors_down: Vec<String>,
    /// What this process lacks for a complete view, and the capability that grants it.
    pub missing_privileges: Vec<MissingPrivilege>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MissingPrivilege {
    pub what: String,
    pub granted_by: String,
}

/// Whether the process has capability `bit` in its effective set.
fn has_capability(bit: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .is_some_and(|eff| eff & (1u64 << bit) != 0)
}

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_PTRACE: u32 = 19;

/// Privilege gaps visible in a snapshot.
fn missing_privileges(snap: &Snapshot, down: &[String]) -> Vec<MissingPrivilege> {
    let mut out = Vec::new();
    let net_admin = has_capability(CAP_NET_ADMIN);
    if !net_admin && down.iter().any(|c| c == "nftables") {
        out.push(MissingPrivilege {
            what: "nf_tables ruleset counters (nftables collector down)".into(),
            granted_by: "CAP_NET_ADMIN".into(),
        });
    }
    if !net_admin
        && (snap.value("netsight_conntrack_stats_available", &[]) == Some(0.0)
            || snap.value("netsight_conntrack_breakdown_available", &[]) == Some(0.0))
    {
        out.push(MissingPrivilege {
            what: "conntrack statistics and per-flow breakdown (ctnetlink)".into(),
            granted_by: "CAP_NET_ADMIN".into(),
        });
    }
    if snap.value("netsight_sockets_process_scan_denied", &[]).unwrap_or(0.0) > 0.0
        && !(has_capability(CAP_SYS_PTRACE) && has_capability(CAP_DAC_READ_SEARCH))
    {
        out.push(MissingPrivilege {
            what: "attributing other users' sockets to processes".into(),
            granted_by: "CAP_SYS_PTRACE + CAP_DAC_READ_SEARCH".into(),
        });
    }
    out
}

const IF_COUNTERS: [&str; 8] = [
    "netsight_network_receive_bytes_total",
    "netsight_network_transmit_bytes_total",
    "netsight_network_receive_packets_total",
    "netsight_network_transmit_packets_total",
    "netsight_network_receive_drop_total",
    "netsight_network_transmit_drop_total",
    "netsight_network_receive_errors_total",
    "netsight_network_transmit_errors_total",
];

const TCP_COUNTERS: [(&str, &str); 7] = [
    ("active_opens", "netsight_netstat_tcp_active_opens_total"),
    ("passive_opens", "netsight_netstat_tcp_passive_opens_total"),
    ("retransmitted_segments", "netsight_netstat_tcp_retrans_segs_total"),
    ("resets_sent", "netsight_netstat_tcp_out_rsts_total"),
    ("listen_overflows", "netsight_netstat_tcpext_listen_overflows_total"),
    ("listen_drops", "netsight_netstat_tcpext_listen_drops_total"),
    ("receive_errors", "netsight_netstat_tcp_in_errs_total"),
];

/// Turns consecutive snapshots into rates.
#[derive(Default)]
pub struct Tracker {
    prev_t: Option<f64>,
    prev_if: HashMap<String, [f64; 8]>,
    prev_tcp: HashMap<&'static str, f64>,
    tick: u64,
}

fn by_label(snap: &Snapshot, metric: &str, label: &str) -> Vec<(String, f64)> {
    let Some(f) = snap.family(metric) else {
        return Vec::new();
    };
    let Some(i) = f.label_index(label) else {
        return Vec::new();
    };
    f.samples
        .iter()
        .filter_map(|s| Some((s.labels.get(i)?.to_string(), s.value.as_f64()?)))
        .collect()
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl Tracker {
    pub fn view(&mut self, snap: &Snapshot, shared: &Shared, interval: Duration) -> View {
        self.tick += 1;
        let t = unix(snap.taken_at);
        let dt = self.prev_t.map(|p| t - p).filter(|d| *d > 0.0);
        let rate = |cur: f64, prev: Option<f64>| -> Option<f64> {
            let (dt, prev) = (dt?, prev?);
            Some(if cur >= prev { (cur - prev) / dt } else { cur / dt })
        };
        // Interfaces.
        let mut counters: BTreeMap<String, [f64; 8]> = BTreeMap::new();
        for (k, m) in IF_COUNTERS.iter().enumerate() {
            for (dev, v) in by_label(snap, m, "device") {
                counters.entry(dev).or_insert([f64::NAN; 8])[k] = v;
            }
        }
        let mut oper: HashMap<String, String> = HashMap::new();
        if let Some(f) = snap.family("netsight_network_info") {
            if let (Some(d), Some(o)) = (f.label_index("device"), f.label_index("operstate")) {
                for s in &f.samples {
                    if let (Some(dev), Some(st)) = (s.labels.get(d), s.labels.get(o)) {
                        oper.insert(dev.to_string(), st.to_string());
                    }
                }
            }
        }
        let mtu: HashMap<String, f64> = by_label(snap, "netsight_network_mtu_bytes", "device")
            .into_iter()
            .collect();
        let mut interfaces = Vec::new();
        for (dev, c) in &counters {
            let p = self.prev_if.get(dev);
            let r = |k: usize| rate(c[k], p.map(|p| p[k])).filter(|x| x.is_finite());
            let sum = |a: Option<f64>, b: Option<f64>| Some(a? + b?);
            interfaces.push(Iface {
                device: dev.clone(),
                operstate: oper.get(dev).cloned().unwrap_or_else(|| "?".into()),
                mtu: mtu.get(dev).copied(),
                rx_bytes_per_second: r(0),
                tx_bytes_per_second: r(1),
                rx_packets_per_second: r(2),
                tx_packets_per_second: r(3),
                drops_per_second: sum(r(4), r(5)),
                errors_per_second: sum(r(6), r(7)),
            });
        }
        self.prev_if = counters.into_iter().collect();
        // TCP.
        let mut tcp_states: BTreeMap<String, f64> = BTreeMap::new();
        for (state, v) in by_label(snap, "netsight_tcp_connections", "state") {
            *tcp_states.entry(state).or_default() += v;
        }
        let mut tcp_rates = BTreeMap::new();
        for (key, metric) in TCP_COUNTERS {
            let cur = snap.value(metric, &[]);
            let r = cur.and_then(|c| rate(c, self.prev_tcp.get(key).copied()));
            tcp_rates.insert(key.to_string(), r);
            if let Some(c) = cur {
                self.prev_tcp.insert(key, c);
            }
        }
        let collectors_down: Vec<String> = by_label(snap, "netsight_collector_up", "collector")
            .into_iter()
            .filter(|(_, v)| *v == 0.0)
            .map(|(c, _)| c)
            .collect();
        let missing_privileges = missing_privileges(snap, &collectors_down);
        // Anomalies: the engine's open events.
        let anomalies = shared
            .engine()
            .events
            .range(f64::MIN, f64::MAX)
            .into_iter()
            .filter(|e| e.end.is_none())
            .map(|e| ActiveAnomaly {
                rule: e.rule,
                severity: e.severity,
                layer: e.layer,
                labels: e.labels,
                since: e.start,
                value: e.value,
                text: e.text,
                cause: e.cause.as_ref().map(|c| c.name.clone()),
                recommendation: e
                    .cause
                    .as_ref()
                    .map(|c| c.recommendation.clone())
                    .filter(|r| !r.is_empty()),
            })
            .collect();
        self.prev_t = Some(t);
        View {
            time: t,
            interval_seconds: interval.as_secs_f64(),
            tick: self.tick,
            interfaces,
            tcp_states,
            tcp_rates,
            tcp_current_established: snap.value("netsight_netstat_tcp_curr_estab", &[]),
            anomalies,
            collectors_down,
            missing_privileges,
        }
    }
}

pub fn human_rate(v: Option<f64>, unit: &str) -> String {
    let Some(v) = v else { return "-".into() };
    let (x, p) = if v >= 1024.0 * 1024.0 * 1024.0 {
        (v / (1024.0 * 1024.0 * 1024.0), "Gi")
    } else if v >= 1024.0 * 1024.0 {
        (v / (1024.0 * 1024.0), "Mi")
    } else if v >= 1024.0 {
        (v / 1024.0, "Ki")
    } else {
        (v, "")
    };
    if p.is_empty() {
        format!("{x:.0} {unit}")
    } else {
        format!("{x:.1} {p}{unit}")
    }
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x.fract() == 0.0 || x >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.1}"),
    }
}

fn clock(t: f64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs_f64(t.max(0.0))).to_string()
}

fn labels_text(l: &BTreeMap<String, String>) -> String {
    if l.is_empty() {
        return String::new();
    }
    format!(
        "{{{}}}",
        l.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
    )
}

/// The plain one-line rendering of a view.
pub fn plain_line(v: &View) -> String {
    let ifs: Vec<String> = v
        .interfaces
        .iter()
        .map(|i| {
            format!(
                "{} {} rx {} tx {}",
                i.device,
                i.operstate,
                human_rate(i.rx_bytes_per_second, "B/s"),
                human_rate(i.tx_bytes_per_second, "B/s")
            )
        })
        .collect();
    let st = |k: &str| v.tcp_states.get(k).copied().unwrap_or(0.0);
    let r = |k: &str| num(v.tcp_rates.get(k).copied().flatten());
    let anomalies = if v.anomalies.is_empty() {
        "none".to_string()
    } else {
        v.anomalies
            .iter()
            .map(|a| {
                format!(
                    "{}{}({}{})",
                    a.rule,
                    labels_text(&a.labels),
                    a.severity,
                    a.cause.as_ref().map(|c| format!(", cause {c}")).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "{} interfaces: {} | tcp estab {} listen {} syn_recv {} time_wait {} | per second: retrans {} resets {} listen_overflows {} | anomalies: {}",
        clock(v.time),
        ifs.join("; "),
        st("established"),
        st("listen"),
        st("syn_recv"),
        st("time_wait"),
        r("retransmitted_segments"),
        r("resets_sent"),
        r("listen_overflows"),
        anomalies
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn severity_style(sev: &str) -> Style {
    let bg = match sev {
        "critical" => Color::Red,
        "warning" => Color::Yellow,
        _ => Color::Blue,
    };
    let fg = if sev == "warning" { Color::Black } else { Color::White };
    Style::default().fg(fg).bg(bg).add_modifier(Modifier::BOLD)
}

/// Draws one frame; `view` is None before the first collection.
pub fn draw(f: &mut Frame, view: Option<&View>, host: &str) {
    let area = f.area();
    let n_anom = view.map(|v| v.anomalies.len()).unwrap_or(0);
    let anom_h = (n_anom.max(1) as u16 + 2).min(area.height / 3).max(3);
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Length(anom_h),
            Constraint::Min(4),
            Constraint::Length(11),
            Constraint::Length(view.map(|v| v.missing_privileges.len().min(3) as u16).unwrap_or(0)),
        ])
        .split(area);
    let title = match view {
        Some(v) => format!(
            " netsight monitor network — {host} — {} — every {}s — refresh #{}{} — q quits",
            clock(v.time),
            v.interval_seconds,
            v.tick,
            if v.collectors_down.is_empty() {
                String::new()
            } else {
                format!(" — collectors down: {}", v.collectors_down.join(", "))
            }
        ),
        None => format!(" netsight monitor network — {host} — collecting… — q quits"),
    };
    f.render_widget(
        Paragraph::new(title).style(Style::default().add_modifier(Modifier::REVERSED)),
        rows[0],
    );
    let Some(v) = view else { return };

    // Anomalies.
    let anom_lines: Vec<Line> = if v.anomalies.is_empty() {
        vec![Line::from(Span::styled(
            "no active anomalies",
            Style::default().fg(Color::Green),
        ))]
    } else {
        v.anomalies
            .iter()
            .map(|a| {
                let cause = a.cause.as_ref().map(|c| format!(" — cause: {c}")).unwrap_or_default();
                Line::from(vec![
                    Span::styled(
                        format!(" ● {}{} [{}] ", a.rule, labels_text(&a.labels), a.severity),
                        severity_style(&a.severity),
                    ),
                    Span::raw(format!(
                        " {} layer, since {}{cause}: {}",
                        a.layer,
                        clock(a.since),
                        a.text
                    )),
                ])
            })
            .collect()
    };
    let anom_title = format!(" Anomalies ({} firing) ", v.anomalies.len());
    let border = if v.anomalies.is_empty() {
        Style::default()
    } else {
        Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
    };
    f.render_widget(
        Paragraph::new(anom_lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(anom_title)
                .border_style(border),
        ),
        rows[1],
    );

    // Interfaces.
    let header = Row::new([
        "Interface",
        "State",
        "MTU",
        "RX",
        "TX",
        "RX pkt/s",
        "TX pkt/s",
        "Drops/s",
        "Errors/s",
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let if_rows: Vec<Row> = v
        .interfaces
        .iter()
        .map(|i| {
            let bad = i.drops_per_second.unwrap_or(0.0) > 0.0 || i.errors_per_second.unwrap_or(0.0) > 0.0;
            let state_style = match i.operstate.as_str() {
                "up" | "unknown" => Style::default().fg(Color::Green),
                _ => Style::default().fg(Color::Red),
            };
            Row::new(vec![
                ratatui::widgets::Cell::from(i.device.clone()),
                ratatui::widgets::Cell::from(i.operstate.clone()).style(state_style),
                ratatui::widgets::Cell::from(num(i.mtu)),
                ratatui::widgets::Cell::from(human_rate(i.rx_bytes_per_second, "B/s")),
                ratatui::widgets::Cell::from(human_rate(i.tx_bytes_per_second, "B/s")),
                ratatui::widgets::Cell::from(num(i.rx_packets_per_second)),
                ratatui::widgets::Cell::from(num(i.tx_packets_per_second)),
                ratatui::widgets::Cell::from(num(i.drops_per_second)).style(if bad {
                    Style::default().fg(Color::Red)
                } else {
                    Style::default()
                }),
                ratatui::widgets::Cell::from(num(i.errors_per_second)).style(if bad {
                    Style::default().fg(Color::Red)
                } else {
                    Style::default()
                }),
            ])
        })
        .collect();
    let dev_w = v
        .interfaces
        .iter()
        .map(|i| i.device.len())
        .max()
        .unwrap_or(9)
        .clamp(9, 24) as u16
        + 1;
    let widths = [
        Constraint::Length(dev_w),
        Constraint::Length(14),
        Constraint::Length(6),
        Constraint::Length(12),
        Constraint::Length(12),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(8),
    ];
    f.render_widget(
        Table::new(if_rows, widths).header(header).block(
            Block::default()
                .borders(Borders::ALL)
                .title(format!(" Interfaces ({}) ", v.interfaces.len())),
        ),
        rows[2],
    );

    // What a missing privilege hides.
    let notes: Vec<Line> = v
        .missing_privileges
        .iter()
        .map(|m| {
            Line::from(Span::styled(
                format!(" missing privilege: {} — needs {}", m.what, m.granted_by),
                Style::default().fg(Color::Yellow),
            ))
        })
        .collect();
    f.render_widget(Paragraph::new(notes), rows[4]);

    // Connections and TCP counters.
    let bottom = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(45), Constraint::Percentage(55)])
        .split(rows[3]);
    let order = [
        "established",
        "listen",
        "syn_sent",
        "syn_recv",
        "fin_wait1",
        "fin_wait2",
        "time_wait",
        "close_wait",
        "last_ack",
        "closing",
        "close",
    ];
    let mut states: Vec<(String, f64)> = order
        .iter()
        .filter_map(|k| v.tcp_states.get(*k).map(|x| (k.to_string(), *x)))
        .collect();
    states.extend(
        v.tcp_states
            .iter()
            .filter(|(k, _)| !order.contains(&k.as_str()))
            .map(|(k, x)| (k.clone(), *x)),
    );
    let state_rows: Vec<Row> = states
        .into_iter()
        .filter(|(k, x)| *x > 0.0 || matches!(k.as_str(), "established" | "listen" | "time_wait"))
        .map(|(k, x)| Row::new(vec![k, num(Some(x))]))
        .collect();
    let title = if v.tcp_states.is_empty() {
        " TCP connections (sockets collector down) ".to_string()
    } else {
        " TCP connections ".to_string()
    };
    f.render_widget(
        Table::new(state_rows, [Constraint::Min(12), Constraint::Length(8)])
            .block(Block::default().borders(Borders::ALL).title(title)),
        bottom[0],
    );
    let mut counter_rows: Vec<Row> = v
        .tcp_rates
        .iter()
        .map(|(k, r)| {
            let alarming =
                matches!(k.as_str(), "listen_overflows" | "listen_drops" | "receive_errors") && r.unwrap_or(0.0) > 0.0;
            let row = Row::new(vec![k.replace('_', " "), num(*r)]);
            if alarming {
                row.style(Style::default().fg(Color::Red).add_modifier(Modifier::BOLD))
            } else {
                row
            }
        })
        .collect();
    counter_rows.push(Row::new(vec![
        "currently established".to_string(),
        num(v.tcp_current_established),
    ]));
    f.render_widget(
        Table::new(counter_rows, [Constraint::Min(22), Constraint::Length(10)]).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" TCP counters (per second) "),
        ),
        bottom[1],
    );
}

/// Points stderr at /dev/null while the full-screen view runs; restores it on drop.
struct StderrToNull(Option<libc::c_int>);

impl StderrToNull {
    fn new() -> Self {
        // SAFETY: dup/open/dup2 on descriptors this function owns or on fd 2.
        unsafe {
            let saved = libc::dup(2);
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if saved < 0 || null < 0 {
                return StderrToNull(None);
            }
            libc::dup2(null, 2);
            libc::close(null);
            StderrToNull(Some(saved))
        }
    }
}

impl Drop for StderrToNull {
    fn drop(&mut self) {
        if let Some(saved) = self.0 {
            // SAFETY: restoring the descriptor saved in `new`.
            unsafe {
                libc::dup2(saved, 2);
                libc::close(saved);
            }
        }
    }
}

pub async fn run(args: MonitorArgs) -> anyhow::Result<u8> {
    let MonitorWhat::Network(a) = args.what;
    let mut cfg = load_config(&a.common)?;
    cfg.interval = a.interval;
    let mut sched = scheduler_for(&cfg)?;
    let set = crate::rules::load_configured(&cfg.rules).map_err(|errs| {
        anyhow!(
            "rules rejected:\n{}",
            errs.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n")
        )
    })?;
    let shared = Arc::new(Shared::new(cfg.history_points, crate::rules::Engine::new(set)));
    shared.restore_state(&cfg.rules);
    let mut tracker = Tracker::default();
    let tui = !a.plain && !a.json && std::io::stdout().is_terminal();
    if !tui {
        let mut out = std::io::stdout().lock();
        let mut ticker = tokio::time::interval(a.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n = 0u64;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = tokio::signal::ctrl_c() => break,
            }
            let snap = sched.tick().await;
            shared.process(snap);
            let v = tracker.view(&shared.latest().snapshot, &shared, a.interval);
            if n == 0 && !a.json {
                for m in &v.missing_privileges {
                    eprintln!("netsight: note: {} needs {}", m.what, m.granted_by);
                }
            }
            let line = if a.json {
                serde_json::to_string(&v)?
            } else {
                plain_line(&v)
            };
            if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                break; // reader went away (e.g. `| head`)
            }
            n += 1;
            if a.count.is_some_and(|c| n >= c) {
                break;
            }
        }
        return Ok(0);
    }
    let host = hostname();
    // Log lines written to the terminal would scribble over the screen.
    let _quiet = StderrToNull::new();
    let mut terminal = ratatui::try_init()?;
    let result = async {
        let mut view: Option<View> = None;
        terminal.draw(|f| draw(f, None, &host))?;
        let mut next = Instant::now();
        let mut n = 0u64;
        loop {
            if Instant::now() >= next {
                next += a.interval;
                if next < Instant::now() {
                    next = Instant::now() + a.interval;
                }
                let snap = sched.tick().await;
                shared.process(snap);
                view = Some(tracker.view(&shared.latest().snapshot, &shared, a.interval));
                terminal.draw(|f| draw(f, view.as_ref(), &host))?;
                n += 1;
                if a.count.is_some_and(|c| n >= c) {
                    break;
                }
            }
            while event::poll(Duration::ZERO)? {
                match event::read()? {
                    Event::Key(k) if k.kind != KeyEventKind::Release => {
                        let quit = matches!(k.code, KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc)
                            || (k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL));
                        if quit {
                            return Ok::<(), anyhow::Error>(());
                        }
                    }
                    Event::Resize(_, _) => {
                        terminal.autoresize()?;
                        terminal.draw(|f| draw(f, view.as_ref(), &host))?;
                    }
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        Ok(())
    }
    .await;
    ratatui::restore();
    shared.save_state(&cfg.rules);
    result.map(|_| 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse() {
        assert_eq!(parse_interval("1"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("10ms").is_err());
    }

    #[test]
    fn rates_format() {
        assert_eq!(human_rate(Some(512.0), "B/s"), "512 B/s");
        assert_eq!(human_rate(Some(2048.0), "B/s"), "2.0 KiB/s");
        assert_eq!(human_rate(None, "B/s"), "-");
    }
}
