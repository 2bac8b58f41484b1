//! The per-flow breakdown: a streamed ctnetlink table dump folded into counts by
//! protocol, state and zone and the top source and destination addresses.

use super::*;

/// Distinct addresses tracked per direction; entries from further addresses are
/// counted in `other` directly (bounds memory on tables with millions of peers).
pub const MAX_TRACKED_ADDRESSES: usize = 65_536;

/// Entries and bytes per address of one direction.
#[derive(Debug, Clone, Default)]
pub struct AddressTally {
    pub by_address: HashMap<IpAddr, (u64, u64)>,
    /// Entries and bytes of addresses beyond the tracking cap.
    pub untracked: (u64, u64),
    cap: usize,
}

impl AddressTally {
    fn with_cap(cap: usize) -> AddressTally {
        AddressTally {
            cap,
            ..AddressTally::default()
        }
    }

    fn add(&mut self, addr: Option<IpAddr>, bytes: u64) {
        let Some(addr) = addr else {
            self.untracked.0 += 1;
            self.untracked.1 += bytes;
            return;
        };
        let full = self.by_address.len() >= self.cap;
        match self.by_address.get_mut(&addr) {
            Some(v) => {
                v.0 += 1;
                v.1 += bytes;
            }
            None if full => {
                self.untracked.0 += 1;
                self.untracked.1 += bytes;
            }
            None => {
                self.by_address.insert(addr, (1, bytes));
            }
        }
    }

    /// The `n` addresses with the most entries (`by_bytes`: bytes), then `other`
    /// summing the rest when there is a rest. Ties are broken by address.
    pub fn top(&self, n: usize, by_bytes: bool) -> Vec<(String, u64)> {
        let key = |v: &(u64, u64)| if by_bytes { v.1 } else { v.0 };
        let mut all: Vec<(&IpAddr, &(u64, u64))> = self.by_address.iter().collect();
        all.sort_by(|a, b| key(b.1).cmp(&key(a.1)).then(a.0.cmp(b.0)));
        let mut out: Vec<(String, u64)> = all.iter().take(n).map(|(a, v)| (a.to_string(), key(v))).collect();
        let rest: u64 = all.iter().skip(n).map(|(_, v)| key(v)).sum::<u64>() + key(&self.untracked);
        if all.len() > n || self.untracked.0 > 0 {
            out.push(("other".to_string(), rest));
        }
        out
    }
}

/// The conntrack table aggregated during one streamed dump.
#[derive(Debug, Clone, Default)]
pub struct Breakdown {
    pub entries: u64,
    /// `(L4 protocol, protocol state, zone)` → entries.
    pub flows: BTreeMap<(u8, Option<u8>, u16), u64>,
    pub sources: AddressTally,
    pub destinations: AddressTally,
    /// Some entry carried byte/packet counters (nf_conntrack_acct was on when it
    /// was created).
    pub accounted: bool,
}

impl Breakdown {
    /// `(protocol, state, zone, entries)` with conntrack -L's names.
    pub fn by_protocol_state(&self) -> Vec<(String, String, u16, u64)> {
        self.flows
            .iter()
            .map(|((p, st, z), n)| (protocol_name(*p).into_owned(), state_name(*p, *st).into_owned(), *z, *n))
            .collect()
    }

    fn add(&mut self, f: &Flow) {
        self.entries += 1;
        *self.flows.entry((f.proto, f.state, f.zone)).or_default() += 1;
        let bytes = f.bytes.unwrap_or(0);
        self.accounted |= f.bytes.is_some();
        self.sources.add(f.src, bytes);
        self.destinations.add(f.dst, bytes);
    }
}

/// Dumps the conntrack table of the calling thread's network namespace, message by
/// message, into a [`Breakdown`] (needs CAP_NET_ADMIN). Memory is bounded by the
/// number of distinct (protocol, state, zone) keys and `max_addresses`, not by the
/// table size.
pub fn dump_breakdown(max_addresses: usize) -> Result<Breakdown, DumpError> {
    dump_breakdown_capturing(max_addresses, None)
}

/// [`dump_breakdown`], appending every received datagram to `raw`.
pub fn dump_breakdown_capturing(max_addresses: usize, raw: Option<&mut Vec<u8>>) -> Result<Breakdown, DumpError> {
    let mut b = Breakdown {
        sources: AddressTally::with_cap(max_addresses),
        destinations: AddressTally::with_cap(max_addresses),
        ..Breakdown::default()
    };
    let mut sock = NetlinkSocket::open()?;
    let seq = next_seq();
    sock.exchange(&ct_dump_request(seq), raw, |dg| {
        parse_ct_dump(dg, Some(seq), |f| b.add(f))
    })?;
    Ok(b)
}

/// One breakdown as the collector takes it (streamed table dump, aggregation and
/// emission of the top `top` addresses) in the calling thread's network namespace;
/// returns the number of entries seen. For benchmarks.
pub fn bench_breakdown(top: usize) -> Result<u64, DumpError> {
    let b = dump_breakdown(MAX_TRACKED_ADDRESSES)?;
    let mut out = Emitter::new();
    emit_breakdown(&b, top, true, &mut out);
    Ok(b.entries)
}

pub(super) fn emit_breakdown(b: &Breakdown, top: usize, bytes: bool, out: &mut Emitter) {
    BreakdownView::new(b, top, bytes).emit(out);
}

/// What one breakdown emits (a few dozen rows), kept between table dumps.
#[derive(Debug, Clone, Default)]
pub(super) struct BreakdownView {
    /// `(protocol, state, zone, entries)`.
    flows: Vec<(String, String, u16, u64)>,
    /// Per top-address family: `(address, value)` rows.
    tops: Vec<(&'static MetricDesc, Vec<(String, u64)>)>,
}

impl BreakdownView {
    pub(super) fn new(b: &Breakdown, top: usize, bytes: bool) -> BreakdownView {
        let mut series = vec![
            (&TOP_SOURCE_FLOWS, &b.sources, false),
            (&TOP_DESTINATION_FLOWS, &b.destinations, false),
        ];
        if bytes {
            series.push((&TOP_SOURCE_BYTES, &b.sources, true));
            series.push((&TOP_DESTINATION_BYTES, &b.destinations, true));
        }
        BreakdownView {
            flows: b.by_protocol_state(),
            tops: series
                .into_iter()
                .map(|(desc, tally, by_bytes)| (desc, tally.top(top, by_bytes)))
                .collect(),
        }
    }

    /// The families appear even when empty (an empty table).
    pub(super) fn emit(&self, out: &mut Emitter) {
        out.declare(&FLOWS);
        for (proto, state, zone, n) in &self.flows {
            out.push(&FLOWS, vec![proto.clone(), state.clone(), zone.to_string()], *n as f64);
        }
        for (desc, rows) in &self.tops {
            out.declare(*desc);
            for (addr, v) in rows {
                out.push(*desc, vec![addr.clone()], *v as f64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(proto: u8, state: Option<u8>, src: [u8; 4], bytes: Option<u64>) -> Flow {
        Flow {
            l3: 2,
            proto,
            state,
            zone: 0,
            src: Some(IpAddr::from(src)),
            dst: Some(IpAddr::from([10, 0, 0, 9])),
            packets: bytes.map(|_| 1),
            bytes,
        }
    }

    /// The empty-table shortcut emits what a dump of an empty table would: the
    /// families, without samples.
    #[test]
    fn empty_breakdown_declares_the_families_without_samples() {
        let mut out = Emitter::new();
        BreakdownView::new(&Breakdown::default(), 10, false).emit(&mut out);
        let fams = out.into_families();
        let names: Vec<&str> = fams.iter().map(|f| f.desc.name.as_ref()).collect();
        assert_eq!(
            names,
            [
                "netsight_conntrack_flows",
                "netsight_conntrack_top_source_flows",
                "netsight_conntrack_top_destination_flows"
            ]
        );
        assert!(fams.iter().all(|f| f.samples.is_empty()));
    }

    #[test]
    fn top_addresses_with_other_and_tracking_cap() {
        let mut b = Breakdown {
            sources: AddressTally::with_cap(3),
            destinations: AddressTally::with_cap(3),
            ..Breakdown::default()
        };
        for (src, n, bytes) in [
            ([10, 0, 0, 1], 5, 10),
            ([10, 0, 0, 2], 3, 1000),
            ([10, 0, 0, 3], 1, 1),
            ([10, 0, 0, 4], 2, 7),
        ] {
            for _ in 0..n {
                b.add(&flow(6, Some(3), src, Some(bytes)));
            }
        }
        b.add(&flow(17, None, [10, 0, 0, 1], None));
        assert_eq!(b.entries, 12);
        assert!(b.accounted);
        assert_eq!(
            b.by_protocol_state(),
            vec![
                ("tcp".into(), "ESTABLISHED".into(), 0, 11),
                ("udp".into(), String::new(), 0, 1)
            ]
        );
        // 10.0.0.4 arrived after the cap of 3: counted in other.
        assert_eq!(b.sources.untracked, (2, 14));
        assert_eq!(
            b.sources.top(2, false),
            vec![("10.0.0.1".into(), 6), ("10.0.0.2".into(), 3), ("other".into(), 3)]
        );
        assert_eq!(
            b.sources.top(1, true),
            vec![("10.0.0.2".into(), 3000), ("other".into(), 50 + 1 + 14)]
        );
        assert_eq!(b.destinations.top(5, false), vec![("10.0.0.9".into(), 12)]);
        let mut out = Emitter::new();
        emit_breakdown(&b, 2, false, &mut out);
        let fams = out.into_families();
        assert!(
            fams.iter().all(|f| !f.desc.name.ends_with("_bytes")),
            "no bytes without accounting"
        );
        assert!(fams.iter().any(|f| f.desc.name == "netsight_conntrack_flows"));
    }
}
