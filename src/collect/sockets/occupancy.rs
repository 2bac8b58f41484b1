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
        let tcp = |field| snmp.and_then(|b| mib_value(b, "Tcp", field));
        Occupancy {
            tcp_inuse: [v4("TCP", "inuse"), v6("TCP6", "inuse")],
            tcp_tw: v4("TCP", "tw"),
            tcp_counters: tcp("ActiveOpens").zip(tcp("InSegs")),
            udp_inuse: [v4("UDP", "inuse"), v6("UDP6", "inuse")],
        }
    }

    /// No listener, no full socket and no TIME_WAIT in either family: the only
    /// TCP sockets left could be SYN_RECV requests, which sockstat does not count.
    pub(super) fn tcp_hashes_hold_no_counted_socket(&self) -> bool {
        self.tcp_inuse == [Some(0), Some(0)] && self.tcp_tw == Some(0)
    }
}

/// Which dumps a tick runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Plan {
    pub(super) tcp: bool,
    /// IPv4, IPv6.
    pub(super) udp: [bool; 2],
}

/// Pure: the dumps that can return something. `tcp_quiet_since` holds the TCP
/// counters read just before the last TCP walk that returned no socket at all.
///
/// UDP: a family whose `inuse` is 0 has nothing in the UDP hash to dump.
///
/// TCP is skipped only when the namespace provably has no TCP socket at all:
/// `inuse` 0 in both families (no listener, no full socket in the established
/// hash) and `tw` 0 (no TIME_WAIT), and no SYN_RECV request socket, which
/// sockstat does not count. A request socket is created only by an incoming SYN,
/// which the kernel counts in `Tcp: InSegs` before looking up the listener; so if
/// `InSegs` (and `ActiveOpens`, so a connect() between the reads cannot hide
/// behind the per-CPU sums either) is unchanged since a walk that found nothing,
/// no request socket can exist. Any change makes the next tick walk again.
impl Plan {
    pub(super) const ALL: Plan = Plan {
        tcp: true,
        udp: [true, true],
    };
}

pub(super) fn plan(occ: &Occupancy, tcp_quiet_since: Option<(i64, i64)>) -> Plan {
    let tcp_empty =
        occ.tcp_hashes_hold_no_counted_socket() && occ.tcp_counters.is_some() && occ.tcp_counters == tcp_quiet_since;
    Plan {
        tcp: !tcp_empty,
        udp: occ.udp_inuse.map(|n| n != Some(0)),
    }
}
