//! Per-socket folding into fixed-size aggregates: states per family, listeners,
//! per-port and per-process counts, RTT buckets, congestion algorithms.

use super::*;

/// 65 536-bit set of listening ports.
pub(super) struct PortSet([u64; 1024]);

impl PortSet {
    pub(super) fn new() -> Self {
        PortSet([0; 1024])
    }
    pub(super) fn clear(&mut self) {
        self.0 = [0; 1024];
    }
    #[inline]
    pub(super) fn insert(&mut self, p: u16) {
        self.0[(p >> 6) as usize] |= 1 << (p & 63);
    }
    #[inline]
    pub(super) fn contains(&self, p: u16) -> bool {
        self.0[(p >> 6) as usize] & (1 << (p & 63)) != 0
    }
}

/// Per listening port.
#[derive(Clone, Debug)]
pub(super) struct PortAgg {
    pub(super) port: u16,
    pub(super) states: [u64; NSTATES],
    /// Non-cumulative RTT bucket counts; the last slot is +Inf.
    pub(super) rtt_buckets: Vec<u64>,
    pub(super) rtt_sum: f64,
    pub(super) retrans: u64,
    pub(super) sent: u64,
    pub(super) received: u64,
}

impl PortAgg {
    pub(super) fn new(port: u16, nbuckets: usize) -> Self {
        PortAgg {
            port,
            states: [0; NSTATES],
            rtt_buckets: vec![0; nbuckets + 1],
            rtt_sum: 0.0,
            retrans: 0,
            sent: 0,
            received: 0,
        }
    }

    pub(super) fn connections(&self) -> u64 {
        self.states
            .iter()
            .enumerate()
            .filter(|(s, _)| *s != state::LISTEN as usize)
            .map(|(_, n)| n)
            .sum()
    }

    pub(super) fn merge(&mut self, o: &PortAgg) {
        for (a, b) in self.states.iter_mut().zip(&o.states) {
            *a += b;
        }
        for (a, b) in self.rtt_buckets.iter_mut().zip(&o.rtt_buckets) {
            *a += b;
        }
        self.rtt_sum += o.rtt_sum;
        self.retrans += o.retrans;
        self.sent += o.sent;
        self.received += o.received;
    }
}

/// One listening socket, as dumped.
#[derive(Clone, Copy, Debug)]
pub(super) struct Listener {
    pub(super) family: u8,
    pub(super) addr: IpAddr,
    pub(super) port: u16,
    pub(super) owner: u32,
    pub(super) inode: u32,
    pub(super) queue: u32,
    pub(super) backlog: u32,
}

/// Everything one tick folds sockets into. Kept across ticks to reuse capacity.
pub(super) struct Agg {
    pub(super) tcp: [[u64; NSTATES]; 2],
    pub(super) udp: [[u64; NSTATES]; 2],
    pub(super) listeners: Vec<Listener>,
    pub(super) listen_ports: PortSet,
    pub(super) port_slot: FxHashMap<u16, usize>,
    pub(super) ports: Vec<PortAgg>,
    pub(super) by_owner: FxHashMap<(u32, u8), u64>,
    pub(super) cong: Vec<([u8; 16], u64)>,
    pub(super) cong_other: u64,
    /// Longest tcp_info seen this tick: tells which fields the kernel has.
    pub(super) info_len: usize,
    /// Inode and state of the TCP sockets the process map did not know, the first
    /// [`MAX_UNKNOWN`] of them; `unknown_more`: there were more.
    pub(super) unknown: Vec<(u32, u8)>,
    pub(super) unknown_more: bool,
}

/// Unattributed sockets remembered per tick for a second look
/// ([`Agg::reattribute`]); beyond them the map is rescanned anyway.
pub(super) const MAX_UNKNOWN: usize = 64;

impl Agg {
    pub(super) fn new() -> Self {
        Agg {
            tcp: [[0; NSTATES]; 2],
            udp: [[0; NSTATES]; 2],
            listeners: Vec::new(),
            listen_ports: PortSet::new(),
            port_slot: FxHashMap::default(),
            ports: Vec::new(),
            by_owner: FxHashMap::default(),
            cong: Vec::new(),
            cong_other: 0,
            info_len: 0,
            unknown: Vec::new(),
            unknown_more: false,
        }
    }

    pub(super) fn reset(&mut self) {
        self.tcp = [[0; NSTATES]; 2];
        self.udp = [[0; NSTATES]; 2];
        self.listeners.clear();
        self.listen_ports.clear();
        self.port_slot.clear();
        self.ports.clear();
        self.by_owner.clear();
        self.cong.clear();
        self.cong_other = 0;
        self.info_len = 0;
        self.unknown.clear();
        self.unknown_more = false;
    }

    /// Moves the unattributed sockets `procs` now knows (netsight's own, found by
    /// [`ProcMap::attribute_own`]) to their process.
    pub(super) fn reattribute(&mut self, procs: &ProcMap) {
        let by_owner = &mut self.by_owner;
        self.unknown.retain(|&(inode, st)| {
            let Some(pid) = procs.pid_of(inode) else {
                return true;
            };
            if let Some(n) = by_owner.get_mut(&(UNKNOWN_OWNER, st)) {
                *n -= 1;
                if *n == 0 {
                    by_owner.remove(&(UNKNOWN_OWNER, st));
                }
            }
            *by_owner.entry((pid, st)).or_insert(0) += 1;
            false
        });
        for l in self.listeners.iter_mut().filter(|l| l.owner == UNKNOWN_OWNER) {
            l.owner = procs.pid_of(l.inode).unwrap_or(UNKNOWN_OWNER);
        }
    }
}

/// Folds a tick's sockets into the aggregates and counts the TCP ones the way
/// [`TcpProofs`] needs: listeners per family, everything else together.
pub(super) struct Folder<'a> {
    pub(super) agg: &'a mut Agg,
    pub(super) cx: FoldCtx<'a>,
    /// TCP listeners seen, `[IPv4, IPv6]`.
    pub(super) listeners: [u64; 2],
    /// TCP sockets seen in any other state.
    pub(super) others: u64,
}

impl Folder<'_> {
    pub(super) fn visit(&mut self, proto: Protocol, s: InetSock<'_>) {
        match proto {
            Protocol::Tcp => {
                match (s.state, s.family) {
                    (state::LISTEN, AF_INET) => self.listeners[0] += 1,
                    (state::LISTEN, _) => self.listeners[1] += 1,
                    _ => self.others += 1,
                }
                fold_tcp(self.agg, &self.cx, s)
            }
            Protocol::Udp => fold_udp(self.agg, s),
        }
    }
}

/// What the per-socket fold needs besides the aggregates.
pub(super) struct FoldCtx<'a> {
    pub(super) procs: Option<&'a ProcMap>,
    pub(super) bounds: &'a [f64],
}

impl FoldCtx<'_> {
    #[inline]
    pub(super) fn owner(&self, inode: u32) -> u32 {
        match self.procs {
            None => NO_OWNER,
            Some(_) if inode == 0 => NO_OWNER,
            Some(m) => m.pid_of(inode).unwrap_or(UNKNOWN_OWNER),
        }
    }
}

/// Folds one TCP socket into the aggregates: the per-socket hot path.
#[inline]
pub(super) fn fold_tcp(agg: &mut Agg, cx: &FoldCtx<'_>, s: InetSock<'_>) {
    let st = normalise_state(s.state);
    agg.tcp[family_index(s.family)][st as usize] += 1;
    let owner = cx.owner(s.inode);
    if cx.procs.is_some() {
        *agg.by_owner.entry((owner, st)).or_insert(0) += 1;
        if owner == UNKNOWN_OWNER {
            if agg.unknown.len() < MAX_UNKNOWN {
                agg.unknown.push((s.inode, st));
            } else {
                agg.unknown_more = true;
            }
        }
    }
    if st == state::LISTEN {
        agg.listeners.push(Listener {
            family: s.family,
            addr: s.local,
            port: s.local_port,
            owner,
            inode: s.inode,
            queue: s.rqueue,
            backlog: s.wqueue,
        });
        if !agg.listen_ports.contains(s.local_port) {
            agg.listen_ports.insert(s.local_port);
            agg.port_slot.insert(s.local_port, agg.ports.len());
            agg.ports.push(PortAgg::new(s.local_port, cx.bounds.len()));
        }
    }
    if st == state::ESTABLISHED {
        if let Some(name) = s.cong {
            count_cong(agg, name);
        }
    }
    if !agg.listen_ports.contains(s.local_port) {
        return;
    }
    let Some(&slot) = agg.port_slot.get(&s.local_port) else {
        return;
    };
    let Some(p) = agg.ports.get_mut(slot) else {
        return;
    };
    p.states[st as usize] += 1;
    if st != state::ESTABLISHED {
        return;
    }
    let Some(info) = s.tcp_info else { return };
    agg.info_len = agg.info_len.max(info.len());
    if let Some(rtt) = tcp_info::rtt_us(info) {
        let secs = rtt as f64 * 1e-6;
        let i = cx.bounds.partition_point(|b| *b < secs);
        if let Some(b) = p.rtt_buckets.get_mut(i) {
            *b += 1;
        }
        p.rtt_sum += secs;
    }
    p.retrans += tcp_info::total_retrans(info).unwrap_or(0) as u64;
    p.sent = p.sent.saturating_add(tcp_info::bytes_sent(info).unwrap_or(0));
    p.received = p.received.saturating_add(tcp_info::bytes_received(info).unwrap_or(0));
}

pub(super) fn count_cong(agg: &mut Agg, raw: &[u8]) {
    let Some(name) = tcp_info::congestion_name(raw) else {
        return;
    };
    let mut key = [0u8; 16];
    let n = name.len().min(16);
    key[..n].copy_from_slice(&name.as_bytes()[..n]);
    if let Some(e) = agg.cong.iter_mut().find(|(k, _)| *k == key) {
        e.1 += 1;
    } else if agg.cong.len() < MAX_CONG {
        agg.cong.push((key, 1));
    } else {
        agg.cong_other += 1;
    }
}

#[inline]
pub(super) fn fold_udp(agg: &mut Agg, s: InetSock<'_>) {
    agg.udp[family_index(s.family)][normalise_state(s.state) as usize] += 1;
}
