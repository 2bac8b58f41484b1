//! Which dumps can be skipped: what sockstat and the TCP counters prove about
//! this namespace's sockets.

use super::*;

/// What `/proc/net/{sockstat,sockstat6,snmp}` say about this namespace's TCP and
/// UDP sockets, read just before the dumps; `None` where a value is missing (no
/// IPv6, an unexpected format): that dump then runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Occupancy {
    /// `TCP: inuse` and `TCP6: inuse`: listeners plus the full sockets of the
    /// established hash (the kernel counts a socket when it is hashed).
    pub tcp_inuse: [Option<i64>; 2],
    /// `TCP: tw`: this namespace's TIME_WAIT sockets (both families share it).
    pub tcp_tw: Option<i64>,
    /// `Tcp: ActiveOpens` and `InSegs` (both families, per namespace).
    pub tcp_counters: Option<(i64, i64)>,
    /// `UDP: inuse` and `UDP6: inuse`: sockets in the UDP hash, which is what the
    /// UDP dump walks.
    pub udp_inuse: [Option<i64>; 2],
}

impl Occupancy {
    /// Pure: the three files' bytes (`None` when a file could not be read).
    /// `snmp` is only needed when TCP might be skipped, so callers may leave it
    /// out otherwise.
    pub fn parse(sockstat: Option<&[u8]>, sockstat6: Option<&[u8]>, snmp: Option<&[u8]>) -> Occupancy {
        let v4 = |proto, field| sockstat.and_then(|b| sockstat_value(b, proto, field));
        let v6 = |proto, field| sockstat6.and_then(|b| sockstat_value(b, proto, field));
        Occupancy {
            tcp_inuse: [v4("TCP", "inuse"), v6("TCP6", "inuse")],
            tcp_tw: v4("TCP", "tw"),
            tcp_counters: None,
            udp_inuse: [v4("UDP", "inuse"), v6("UDP6", "inuse")],
        }
        .with_tcp_counters(snmp)
    }

    /// The same counts with `Tcp: ActiveOpens` and `InSegs` from `snmp`'s bytes.
    pub fn with_tcp_counters(self, snmp: Option<&[u8]>) -> Occupancy {
        let tcp = |field| snmp.and_then(|b| mib_value(b, "Tcp", field));
        Occupancy {
            tcp_counters: tcp("ActiveOpens").zip(tcp("InSegs")),
            ..self
        }
    }

    /// No listener, no full socket and no TIME_WAIT in either family: the only
    /// TCP sockets left could be SYN_RECV requests, which sockstat does not count.
    pub(super) fn tcp_hashes_hold_no_counted_socket(&self) -> bool {
        self.tcp_inuse == [Some(0), Some(0)] && self.tcp_tw == Some(0)
    }

    /// No TIME_WAIT and both `inuse` known: the TCP walk might be skipped or
    /// shortened, so the TCP counters are worth reading.
    pub(super) fn tcp_walk_might_shrink(&self) -> bool {
        self.tcp_tw == Some(0) && self.tcp_inuse.iter().all(Option::is_some)
    }

    /// `inuse` of both families equals the listeners a listening-hash dump just
    /// found (`[IPv4, IPv6]`): no full socket outside the listening hash exists.
    pub(super) fn tcp_inuse_is_only(&self, listeners: [u64; 2]) -> bool {
        self.tcp_inuse == listeners.map(|n| i64::try_from(n).ok())
    }
}

/// How much of the TCP hash tables a tick walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpWalk {
    /// None: the namespace provably has no TCP socket.
    Skipped,
    /// The listening hash only: the namespace provably has no TCP socket but its
    /// listeners. Planned as [`TcpPlan::ListenersFirst`], confirmed by the count.
    Listeners,
    /// Every TCP hash table. The established hash is sized by the host's RAM
    /// (262,144 buckets on a 24 GiB host) and shared by every namespace (unless
    /// `net.ipv4.tcp_child_ehash_entries` gave this one its own), and walking its
    /// empty buckets is most of an idle tick's cost.
    Full,
}

/// What a tick plans for TCP before it dumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TcpPlan {
    Skip,
    /// Dump the listeners; walk the rest only when `inuse` counts more sockets
    /// than the listeners found ([`Occupancy::tcp_inuse_is_only`]).
    ListenersFirst,
    Full,
}

/// Which dumps a tick runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Plan {
    pub(super) tcp: TcpPlan,
    /// IPv4, IPv6.
    pub(super) udp: [bool; 2],
}

#[cfg(test)]
impl Plan {
    pub(super) const ALL: Plan = Plan {
        tcp: TcpPlan::Full,
        udp: [true, true],
    };
}

/// The TCP counters (`ActiveOpens`, `InSegs`) read before the last TCP dumps that
/// proved what the namespace held; cleared by dumps that found more, or failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct TcpProofs {
    /// ...that it held no TCP socket at all.
    pub(super) empty_since: Option<(i64, i64)>,
    /// ...that it held no TCP socket but listeners (an empty namespace included).
    pub(super) listeners_only_since: Option<(i64, i64)>,
    /// The counters read on the last tick.
    pub(super) last_counters: Option<(i64, i64)>,
}

impl TcpProofs {
    /// After a tick's TCP dumps (`None`: they failed) that found `listeners` and
    /// `others` sockets, with `counters` read before them (a skipped tick found
    /// nothing).
    ///
    /// A proof is made only when the counters also equal the previous tick's:
    /// the kernel counts a SYN in `InSegs` before it hashes the request socket,
    /// so a walk that starts just after the count may pass that request's bucket
    /// before the insertion. With the counters unchanged for a whole tick, every
    /// SYN they count was handled long before this tick's walk began. A proof
    /// made at the same counters still holds: an empty namespace that gained
    /// listeners and lost them again, with no segment in between, is empty.
    pub(super) fn after(&self, counters: Option<(i64, i64)>, found: Option<([u64; 2], u64)>) -> TcpProofs {
        let settled = counters.is_some() && counters == self.last_counters;
        let still = |proof: Option<(i64, i64)>| proof.filter(|_| proof == counters);
        match found {
            Some((listeners, 0)) if settled => TcpProofs {
                empty_since: if listeners == [0, 0] {
                    counters
                } else {
                    still(self.empty_since)
                },
                listeners_only_since: counters,
                last_counters: counters,
            },
            _ => TcpProofs {
                last_counters: counters,
                ..TcpProofs::default()
            },
        }
    }
}

/// Pure: the dumps that can return something, given what earlier dumps proved.
///
/// UDP: a family whose `inuse` is 0 has nothing in the UDP hash to dump.
///
/// TCP. Sockstat's `inuse` counts listeners and the full sockets of the
/// established hash, `tw` the TIME_WAIT sockets; neither counts SYN_RECV request
/// sockets. A request socket is created only by an incoming SYN, which the kernel
/// counts in `Tcp: InSegs` before looking up the listener, and a new full socket
/// only by a connect() (`ActiveOpens`) or a handshake (`InSegs`). So while both
/// counters are unchanged since dumps that found nothing but listeners, no socket
/// but listeners can have appeared (a socket restored in repair mode, which
/// counts neither, still raises `inuse`):
/// - `inuse` 0 in both families and `tw` 0, unchanged since dumps that found no
///   socket at all: skip TCP.
/// - `tw` 0, unchanged since dumps that found only listeners: dump the listening
///   hash; walk the rest only if `inuse` then counts more than the listeners found.
/// - Otherwise walk everything. Any change makes the next tick walk again, and
///   a walk proves nothing until the counters have held still for a tick
///   ([`TcpProofs::after`]).
///
/// One window is left open: a repair-mode socket created while a listener opens
/// (or closes) between the `inuse` read and the listener dump can balance the
/// count for that tick. The next tick's count shows it.
pub(super) fn plan(occ: &Occupancy, proofs: &TcpProofs) -> Plan {
    let unchanged_since = |proof: Option<(i64, i64)>| occ.tcp_counters.is_some() && occ.tcp_counters == proof;
    let tcp = if occ.tcp_hashes_hold_no_counted_socket() && unchanged_since(proofs.empty_since) {
        TcpPlan::Skip
    } else if occ.tcp_walk_might_shrink() && unchanged_since(proofs.listeners_only_since) {
        TcpPlan::ListenersFirst
    } else {
        TcpPlan::Full
    };
    Plan {
        tcp,
        udp: occ.udp_inuse.map(|n| n != Some(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY4: &[u8] = b"sockets: used 3\nTCP: inuse 0 orphan 0 tw 0 alloc 0 mem 0\nUDP: inuse 0 mem 0\n";
    const EMPTY6: &[u8] = b"TCP6: inuse 0\nUDP6: inuse 0\nUDPLITE6: inuse 0\n";
    const SNMP: &[u8] = b"Tcp: RtoAlgorithm ActiveOpens PassiveOpens InSegs\nTcp: 1 7 0 40\n";

    #[test]
    fn occupancy_reads_the_counts_of_both_families() {
        let v4 = include_bytes!("../../../tests/fixtures/proc/host1/net/sockstat");
        let v6 = include_bytes!("../../../tests/fixtures/proc/host1/net/sockstat6");
        let snmp = include_bytes!("../../../tests/fixtures/proc/host1/net/snmp");
        let o = Occupancy::parse(Some(v4), Some(v6), Some(snmp));
        assert_eq!(o.tcp_inuse, [Some(1), Some(0)]);
        assert_eq!(o.tcp_tw, Some(0));
        assert_eq!(o.tcp_counters, Some((28, 2472)));
        assert_eq!(o.udp_inuse, [Some(0), Some(0)]);
        // No sockstat6 (IPv6 disabled): the IPv6 counts are unknown, not zero.
        let o = Occupancy::parse(Some(v4), None, None);
        assert_eq!(o.tcp_inuse, [Some(1), None]);
        assert_eq!(o.udp_inuse, [Some(0), None]);
        assert_eq!(o.tcp_counters, None);
    }

    fn proofs(empty: Option<(i64, i64)>, listeners_only: Option<(i64, i64)>) -> TcpProofs {
        TcpProofs {
            empty_since: empty,
            listeners_only_since: listeners_only,
            last_counters: listeners_only,
        }
    }

    #[test]
    fn plan_skips_only_provably_empty_dumps() {
        let empty = Occupancy::parse(Some(EMPTY4), Some(EMPTY6), Some(SNMP));
        let quiet = proofs(Some((7, 40)), Some((7, 40)));
        assert_eq!(
            plan(&empty, &quiet),
            Plan {
                tcp: TcpPlan::Skip,
                udp: [false, false]
            }
        );
        // No dump has found the namespace empty yet (first ticks, or the last
        // dumps found sockets or failed): a SYN_RECV request could exist.
        assert_eq!(plan(&empty, &TcpProofs::default()).tcp, TcpPlan::Full);
        // Only listeners were found since: the listening hash shows whether any is left.
        assert_eq!(plan(&empty, &proofs(None, Some((7, 40)))).tcp, TcpPlan::ListenersFirst);
        // A segment arrived (it may have been a SYN) or a connect() happened.
        for moved in [(7, 39), (6, 40)] {
            assert_eq!(plan(&empty, &proofs(Some(moved), Some(moved))).tcp, TcpPlan::Full);
        }
        // A listener or connection in either family: the listeners are dumped
        // first; TIME_WAIT sockets need the full walk.
        for (v4, v6, tcp) in [
            (
                &b"TCP: inuse 1 orphan 0 tw 0\nUDP: inuse 0\n"[..],
                EMPTY6,
                TcpPlan::ListenersFirst,
            ),
            (EMPTY4, &b"TCP6: inuse 2\nUDP6: inuse 0\n"[..], TcpPlan::ListenersFirst),
            (
                &b"TCP: inuse 0 orphan 0 tw 1\nUDP: inuse 0\n"[..],
                EMPTY6,
                TcpPlan::Full,
            ),
        ] {
            let o = Occupancy::parse(Some(v4), Some(v6), Some(SNMP));
            assert_eq!(plan(&o, &quiet).tcp, tcp, "{o:?}");
            assert_eq!(plan(&o, &quiet).udp, [false, false]);
            assert_eq!(plan(&o, &proofs(None, Some((7, 41)))).tcp, TcpPlan::Full, "{o:?}");
        }
        // UDP per family.
        let o = Occupancy::parse(Some(EMPTY4), Some(b"TCP6: inuse 0\nUDP6: inuse 3\n"), Some(SNMP));
        assert_eq!(
            plan(&o, &quiet),
            Plan {
                tcp: TcpPlan::Skip,
                udp: [false, true]
            }
        );
        // Unreadable files or counters: every dump runs.
        assert_eq!(plan(&Occupancy::default(), &quiet), Plan::ALL);
        assert_eq!(
            plan(&Occupancy::parse(Some(EMPTY4), Some(EMPTY6), None), &quiet).tcp,
            TcpPlan::Full
        );
        assert_eq!(
            plan(&Occupancy::parse(Some(EMPTY4), None, Some(SNMP)), &quiet).tcp,
            TcpPlan::Full
        );
    }

    #[test]
    fn the_listeners_must_account_for_every_counted_socket() {
        let o = Occupancy::parse(
            Some(b"TCP: inuse 2 orphan 0 tw 0\n"),
            Some(b"TCP6: inuse 1\n"),
            Some(SNMP),
        );
        assert!(o.tcp_inuse_is_only([2, 1]));
        // A full socket no counter announced (restored in repair mode), or (most
        // of the time) a listener opened or closed between the count and the
        // dump: walk.
        assert!(!o.tcp_inuse_is_only([1, 1]));
        assert!(!o.tcp_inuse_is_only([3, 1]));
        assert!(!o.tcp_inuse_is_only([2, 0]));
        assert!(!Occupancy::parse(Some(b"TCP: inuse 2 orphan 0 tw 0\n"), None, Some(SNMP)).tcp_inuse_is_only([2, 0]));
    }

    #[test]
    fn proofs_follow_what_the_dumps_found() {
        let c = Some((7, 40));
        let seen = |last| TcpProofs {
            last_counters: last,
            ..TcpProofs::default()
        };
        // The counters must have held still for a tick before a walk proves anything.
        assert_eq!(TcpProofs::default().after(c, Some(([0, 0], 0))), seen(c));
        assert_eq!(seen(Some((7, 39))).after(c, Some(([0, 0], 0))), seen(c));
        assert_eq!(seen(c).after(c, Some(([0, 0], 0))), proofs(c, c));
        assert_eq!(seen(c).after(c, Some(([1, 0], 0))), proofs(None, c));
        // Listeners came and no segment arrived: the namespace's emptiness stands.
        assert_eq!(proofs(c, c).after(c, Some(([1, 0], 0))), proofs(c, c));
        assert_eq!(
            TcpProofs {
                empty_since: Some((7, 39)),
                ..proofs(None, c)
            }
            .after(c, Some(([1, 0], 0))),
            proofs(None, c)
        );
        assert_eq!(proofs(c, c).after(c, Some(([1, 0], 1))), seen(c));
        assert_eq!(proofs(c, c).after(c, None), seen(c));
        assert_eq!(seen(None).after(None, Some(([0, 0], 0))), seen(None));
    }
}
