//! The text form of the connections report.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::ConnectionsReport;
use crate::cli::analyze::common::{
    render_advice, render_limitations, render_warnings, section, table, Limitation, Report, NO_PROCESSES_HINT,
    UNKNOWN_CAUSES,
};

impl Report for ConnectionsReport {
    fn limitations(&self) -> &[Limitation] {
        &self.limitations
    }

    fn render_text(&self) -> String {
        let mut out = String::new();
        let mut filt = Vec::new();
        if let Some(s) = self.filters.state {
            filt.push(format!("state {s}"));
        }
        if let Some(p) = self.filters.port {
            filt.push(format!("port {p}"));
        }
        let filt = if filt.is_empty() {
            String::new()
        } else {
            format!(" ({})", filt.join(", "))
        };
        let _ = writeln!(out, "TCP sockets: {}{filt}", self.total);
        if !self.states.is_empty() {
            out.push('\n');
            out.push_str(&table(
                &["STATE", "COUNT", "SHARE"],
                self.states
                    .iter()
                    .map(|s| {
                        vec![
                            s.state.to_string(),
                            s.count.to_string(),
                            format!("{:.1}%", s.share_percent),
                        ]
                    })
                    .collect(),
                &[1, 2],
            ));
        }
        if !self.local_ports.is_empty() {
            section(&mut out, "Top local ports");
            out.push_str(&table(
                &["PORT", "SOCKETS", "LISTENING", "STATES"],
                self.local_ports
                    .iter()
                    .map(|p| {
                        vec![
                            p.port.to_string(),
                            p.sockets.to_string(),
                            if p.listening { "yes" } else { "" }.to_string(),
                            states_text(&p.states),
                        ]
                    })
                    .collect(),
                &[0, 1],
            ));
        }
        match &self.processes {
            Some(rows) => {
                section(&mut out, "Top processes (by connections)");
                if rows.is_empty() {
                    out.push_str("  (none could be named)\n");
                } else {
                    out.push_str(&table(
                        &["PROCESS", "PID", "CONNECTIONS", "STATES", "LISTENING ON"],
                        rows.iter()
                            .map(|r| {
                                vec![
                                    r.comm.clone(),
                                    r.pid.to_string(),
                                    r.connections.to_string(),
                                    states_text(&r.states),
                                    r.listeners.join(" "),
                                ]
                            })
                            .collect(),
                        &[1, 2],
                    ));
                }
                if let Some(u) = &self.unattributed {
                    if u.kernel > 0 {
                        let _ = writeln!(
                            out,
                            "  not attributed: {} held by the kernel (TIME_WAIT, half-open, orphans)",
                            u.kernel
                        );
                    }
                    if u.unknown > 0 {
                        let _ = writeln!(
                            out,
                            "  not attributed: {} held by processes netsight could not see ({UNKNOWN_CAUSES})",
                            u.unknown
                        );
                    }
                }
            }
            None => {
                section(&mut out, "Processes");
                let _ = writeln!(out, "  {NO_PROCESSES_HINT}");
            }
        }
        if !self.remote_peers.is_empty() {
            section(&mut out, "Top remote peers");
            out.push_str(&table(
                &["PEER", "CONNECTIONS", "STATES"],
                self.remote_peers
                    .iter()
                    .map(|p| vec![p.address.clone(), p.connections.to_string(), states_text(&p.states)])
                    .collect(),
                &[1],
            ));
        }
        if !self.samples.is_empty() {
            section(&mut out, "Sample connections");
            out.push_str(&table(
                &["LOCAL", "", "REMOTE", "STATE", "PROCESS"],
                self.samples
                    .iter()
                    .map(|s| {
                        vec![
                            s.local.clone(),
                            "↔".into(),
                            s.remote.clone(),
                            s.state.to_string(),
                            match (&s.process, s.pid) {
                                (Some(c), Some(p)) => format!("{c}/{p}"),
                                _ => String::new(),
                            },
                        ]
                    })
                    .collect(),
                &[],
            ));
        }
        render_warnings(&mut out, &self.warnings);
        render_advice(&mut out, &self.advice);
        render_limitations(&mut out, &self.limitations);
        out
    }
}

fn states_text(m: &BTreeMap<&'static str, u64>) -> String {
    let mut v: Vec<(&&str, &u64)> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter().map(|(s, n)| format!("{s}:{n}")).collect::<Vec<_>>().join(" ")
}
