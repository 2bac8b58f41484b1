//! The collector's output: socket counts, the capped per-port and per-process
//! series and the listener queues, built from one tick's aggregates.

use super::*;

/// The (family, state) label sets of the per-state series, made once: ~30 series a
/// tick each cost three allocations (two label strings and the set).
struct StateLabels {
    tcp: Vec<Vec<LabelValues>>,
    tcp_unknown: Vec<LabelValues>,
    udp: Vec<Vec<LabelValues>>,
}

static STATE_LABELS: std::sync::LazyLock<StateLabels> = std::sync::LazyLock::new(|| StateLabels {
    tcp: FAMILIES
        .iter()
        .map(|f| TCP_STATES.iter().map(|(_, name)| [*f, *name].into_labels()).collect())
        .collect(),
    tcp_unknown: FAMILIES.iter().map(|f| [*f, "unknown"].into_labels()).collect(),
    udp: FAMILIES
        .iter()
        .map(|f| {
            (0..NSTATES as u8)
                .map(|st| [*f, udp_state_name(st)].into_labels())
                .collect()
        })
        .collect(),
});

impl Sockets {
    pub(super) fn owner_label(&self, owner: u32) -> String {
        match owner {
            NO_OWNER => String::new(),
            UNKNOWN_OWNER => "unknown".to_string(),
            pid => self
                .procs
                .as_ref()
                .and_then(|m| m.comm(pid))
                .map(str::to_string)
                .unwrap_or_else(|| "unknown".to_string()),
        }
    }

    pub(super) fn emit(&self, out: &mut Emitter) {
        let agg = &self.agg;
        let labels = &*STATE_LABELS;
        for fi in 0..FAMILIES.len() {
            for (k, (st, _)) in TCP_STATES.iter().enumerate() {
                out.push(
                    &TCP_CONNECTIONS,
                    labels.tcp[fi][k].clone(),
                    agg.tcp[fi][*st as usize] as f64,
                );
            }
            if agg.tcp[fi][0] > 0 {
                out.push(&TCP_CONNECTIONS, labels.tcp_unknown[fi].clone(), agg.tcp[fi][0] as f64);
            }
        }
        for fi in 0..FAMILIES.len() {
            for st in 0..NSTATES as u8 {
                let n = agg.udp[fi][st as usize];
                if n > 0 || st == state::CLOSE || st == state::ESTABLISHED {
                    out.push(&UDP_SOCKETS, labels.udp[fi][st as usize].clone(), n as f64);
                }
            }
        }
        self.emit_ports(out);
        if self.procs.is_some() {
            self.emit_processes(out);
        }
        let mut cong: Vec<(String, u64)> = agg
            .cong
            .iter()
            .map(|(k, n)| {
                let end = k.iter().position(|&b| b == 0).unwrap_or(k.len());
                (String::from_utf8_lossy(&k[..end]).into_owned(), *n)
            })
            .collect();
        if agg.cong_other > 0 {
            cong.push((OTHER.to_string(), agg.cong_other));
        }
        cong.sort();
        out.declare(&CONGESTION);
        for (name, n) in cong {
            out.push(&CONGESTION, vec![name], n as f64);
        }
        if let Some(m) = &self.procs {
            out.push0(&SCAN_DENIED, m.stats().denied as f64);
            out.push0(&REFRESH_INTERVAL, m.interval().as_secs_f64());
        }
    }

    /// Port-keyed metrics and the listener queues, capped at `max_ports`.
    fn emit_ports(&self, out: &mut Emitter) {
        let agg = &self.agg;
        // Rank: most connections first, then lowest port.
        let mut order: Vec<&PortAgg> = agg.ports.iter().collect();
        order.sort_by(|a, b| b.connections().cmp(&a.connections()).then(a.port.cmp(&b.port)));
        let keep = order.len().min(self.cfg.max_ports);
        let mut kept: Vec<&PortAgg> = order[..keep].to_vec();
        kept.sort_by_key(|p| p.port);
        let mut other: Option<PortAgg> = None;
        for p in &order[keep..] {
            other.get_or_insert_with(|| PortAgg::new(0, self.bounds.len())).merge(p);
        }
        let mut kept_set = PortSet::new();
        for p in &kept {
            kept_set.insert(p.port);
        }
        let rows = kept
            .iter()
            .map(|p| (p.port.to_string(), *p))
            .chain(other.as_ref().map(|o| (OTHER.to_string(), o)));
        out.declare(&PORT_CONNECTIONS);
        out.declare(&RTT);
        for (label, p) in rows {
            let port: LabelValues = [label.as_str()].into_labels();
            for (st, name) in TCP_STATES {
                let n = p.states[st as usize];
                if n > 0 {
                    out.push(&PORT_CONNECTIONS, [label.as_str(), name], n as f64);
                }
            }
            let mut cumulative = Vec::with_capacity(self.bounds.len());
            let mut acc = 0u64;
            for c in &p.rtt_buckets[..self.bounds.len()] {
                acc += c;
                cumulative.push(acc);
            }
            let count: u64 = p.rtt_buckets.iter().sum();
            if count > 0 {
                out.push(&PORT_RTT_MEAN, &port, p.rtt_sum / count as f64);
            }
            out.push_histogram(
                &RTT,
                &port,
                HistogramValue {
                    bounds: self.bounds.clone(),
                    cumulative,
                    count,
                    sum: p.rtt_sum,
                },
            );
            // A kernel whose tcp_info lacks a field gets no series rather than
            // zeros that look like idle connections (no connection at all: zeros).
            let has = |end: usize| agg.info_len == 0 || agg.info_len >= end;
            if has(tcp_info::offset::TOTAL_RETRANS + 4) {
                out.push(&PORT_RETRANS, &port, p.retrans as f64);
            }
            if has(tcp_info::offset::BYTES_SENT + 8) {
                out.push(&PORT_SENT, &port, p.sent as f64);
            }
            if has(tcp_info::offset::BYTES_RECEIVED + 8) {
                out.push(&PORT_RECEIVED, vec![label], p.received as f64);
            }
        }

        // Listeners: (family, address, port, process) → (queue, backlog), summed.
        let mut listen: BTreeMap<(u16, u8, IpAddr, String), (u64, u64)> = BTreeMap::new();
        let mut listen_other: Option<(u64, u64)> = None;
        for l in &agg.listeners {
            if kept_set.contains(l.port) {
                let e = listen
                    .entry((l.port, l.family, l.addr, self.owner_label(l.owner)))
                    .or_default();
                e.0 += l.queue as u64;
                e.1 += l.backlog as u64;
            } else {
                let e = listen_other.get_or_insert((0, 0));
                e.0 += l.queue as u64;
                e.1 += l.backlog as u64;
            }
        }
        out.declare(&LISTEN_QUEUE);
        out.declare(&LISTEN_BACKLOG);
        for ((port, family, addr, process), (queue, backlog)) in listen {
            let labels = vec![
                FAMILIES[family_index(family)].to_string(),
                addr.to_string(),
                port.to_string(),
                process,
            ];
            out.push(&LISTEN_QUEUE, labels.clone(), queue as f64);
            out.push(&LISTEN_BACKLOG, labels, backlog as f64);
        }
        if let Some((queue, backlog)) = listen_other {
            let labels = vec![String::new(), String::new(), OTHER.to_string(), String::new()];
            out.push(&LISTEN_QUEUE, labels.clone(), queue as f64);
            out.push(&LISTEN_BACKLOG, labels, backlog as f64);
        }
    }

    /// Per-process counts, capped at `max_processes` (named processes only; the
    /// `""` and `"unknown"` rows are always kept).
    fn emit_processes(&self, out: &mut Emitter) {
        let mut by_name: BTreeMap<String, [u64; NSTATES]> = BTreeMap::new();
        for (&(owner, st), &n) in &self.agg.by_owner {
            by_name.entry(self.owner_label(owner)).or_insert([0; NSTATES])[st as usize] += n;
        }
        let special = |name: &str| name.is_empty() || name == "unknown";
        let mut named: Vec<(&String, u64)> = by_name
            .iter()
            .filter(|(k, _)| !special(k))
            .map(|(k, v)| (k, v.iter().sum()))
            .collect();
        named.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let dropped: Vec<String> = named
            .iter()
            .skip(self.cfg.max_processes)
            .map(|(k, _)| (*k).clone())
            .collect();
        let mut other = [0u64; NSTATES];
        for name in &dropped {
            if let Some(v) = by_name.remove(name) {
                for (a, b) in other.iter_mut().zip(v) {
                    *a += b;
                }
            }
        }
        if !dropped.is_empty() {
            let e = by_name.entry(OTHER.to_string()).or_insert([0; NSTATES]);
            for (a, b) in e.iter_mut().zip(other) {
                *a += b;
            }
        }
        out.declare(&PROCESS_CONNECTIONS);
        for (name, states) in by_name {
            for (st, sname) in TCP_STATES {
                let n = states[st as usize];
                if n > 0 {
                    out.push(&PROCESS_CONNECTIONS, vec![name.clone(), sname.to_string()], n as f64);
                }
            }
        }
    }
}
