//! `ip route get` over rtnetlink: the kernel's route lookup for an address
//! (RTM_GETROUTE), then the egress interface's state and MTU (RTM_GETLINK).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Layer, Status};

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PREFSRC: u16 = 7;
const RTA_TABLE: u16 = 15;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_CARRIER: u16 = 33;
const IFF_UP: u32 = 0x1;
const IFF_LOWER_UP: u32 = 0x10000;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Route {
    /// rtm_type: 1 unicast, 2 local, 6 blackhole, 7 unreachable, 8 prohibit, …
    pub rtype: u8,
    pub oif: Option<u32>,
    pub gateway: Option<IpAddr>,
    pub prefsrc: Option<IpAddr>,
    pub table: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Link {
    pub name: String,
    pub mtu: Option<u32>,
    pub operstate: String,
    pub up: bool,
    pub carrier: bool,
}

struct Netlink(libc::c_int);

impl Drop for Netlink {
    fn drop(&mut self) {
        // SAFETY: closing a descriptor this struct owns.
        unsafe { libc::close(self.0) };
    }
}

impl Netlink {
    fn open() -> std::io::Result<Netlink> {
        // SAFETY: plain socket(2) call; the descriptor is owned by the returned value.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = Netlink(fd);
        let tv = libc::timeval { tv_sec: 2, tv_usec: 0 };
        // SAFETY: setsockopt with a valid timeval of the right size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        Ok(s)
    }

    /// Sends one request and returns the reply messages (type, payload) of its sequence.
    fn request(&self, msg: &[u8], seq: u32) -> std::io::Result<Vec<(u16, Vec<u8>)>> {
        // SAFETY: sockaddr_nl zeroed is the kernel's address (pid 0).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: sending a buffer we own to a valid address.
        let n = unsafe {
            libc::sendto(
                self.0,
                msg.as_ptr() as *const libc::c_void,
                msg.len(),
                0,
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: receiving into a buffer we own, of the given length.
            let n = unsafe { libc::recv(self.0, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let msgs = split_messages(&buf[..n as usize]);
            let mine: Vec<(u16, Vec<u8>)> = msgs
                .into_iter()
                .filter(|(_, s, _)| *s == seq)
                .map(|(t, _, p)| (t, p))
                .collect();
            if !mine.is_empty() {
                return Ok(mine);
            }
        }
    }
}

/// Splits a netlink datagram into (type, seq, payload).
fn split_messages(mut b: &[u8]) -> Vec<(u16, u32, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 16 {
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < 16 || len > b.len() {
            break;
        }
        let ty = u16::from_ne_bytes([b[4], b[5]]);
        let seq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
        out.push((ty, seq, b[16..len].to_vec()));
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    out
}

fn header(ty: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + payload.len());
    m.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(payload);
    m
}

/// (type, value) attributes after a fixed header of `skip` bytes.
fn attrs(payload: &[u8], skip: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut b = payload.get(skip..).unwrap_or(&[]);
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((ty, &b[4..len]));
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    out
}

fn ip_from(v: &[u8]) -> Option<IpAddr> {
    match v.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(v).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(v).ok()?)),
        _ => None,
    }
}

fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
}

fn nl_error(payload: &[u8]) -> Option<std::io::Error> {
    let code = i32::from_ne_bytes(payload.get(..4)?.try_into().ok()?);
    // saturating: `-i32::MIN` overflows (a panic in debug builds).
    (code != 0).then(|| std::io::Error::from_raw_os_error(code.saturating_abs()))
}

/// The kernel's route for `dst` (like `ip route get`).
pub fn route_get(dst: IpAddr) -> std::io::Result<Route> {
    let nl = Netlink::open()?;
    let (family, bytes, bits): (u8, Vec<u8>, u8) = match dst {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec(), 32),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec(), 128),
    };
    let mut p = vec![family, bits, 0, 0, 0, 0, 0, 0];
    p.extend_from_slice(&0u32.to_ne_bytes()); // rtm_flags
    p.extend_from_slice(&((4 + bytes.len()) as u16).to_ne_bytes());
    p.extend_from_slice(&RTA_DST.to_ne_bytes());
    p.extend_from_slice(&bytes);
    let seq = 1;
    parse_route_reply(&nl.request(&header(RTM_GETROUTE, seq, &p), seq)?)
}

/// The route in the `(type, payload)` messages answering RTM_GETROUTE.
fn parse_route_reply(msgs: &[(u16, Vec<u8>)]) -> std::io::Result<Route> {
    for (ty, payload) in msgs {
        let ty = *ty;
        if ty == NLMSG_ERROR {
            if let Some(e) = nl_error(payload) {
                return Err(e);
            }
            continue;
        }
        if ty != RTM_NEWROUTE || payload.len() < 12 {
            continue;
        }
        let mut r = Route {
            rtype: payload[7],
            table: Some(payload[4] as u32),
            ..Route::default()
        };
        for (t, v) in attrs(payload, 12) {
            match t {
                RTA_OIF => r.oif = u32_of(v),
                RTA_GATEWAY => r.gateway = ip_from(v),
                RTA_PREFSRC => r.prefsrc = ip_from(v),
                RTA_TABLE => r.table = u32_of(v),
                _ => {}
            }
        }
        return Ok(r);
    }
    Err(std::io::Error::other("no route in the kernel's reply"))
}

/// Name, MTU and state of interface `index`.
pub fn link_get(index: u32) -> std::io::Result<Link> {
    let nl = Netlink::open()?;
    let mut p = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    p.extend_from_slice(&(index as i32).to_ne_bytes());
    p.extend_from_slice(&0u32.to_ne_bytes());
    p.extend_from_slice(&0u32.to_ne_bytes());
    let seq = 2;
    parse_link_reply(&nl.request(&header(RTM_GETLINK, seq, &p), seq)?)
}

/// Name, MTU and state in the `(type, payload)` messages answering RTM_GETLINK.
fn parse_link_reply(msgs: &[(u16, Vec<u8>)]) -> std::io::Result<Link> {
    for (ty, payload) in msgs {
        let ty = *ty;
        if ty == NLMSG_ERROR {
            if let Some(e) = nl_error(payload) {
                return Err(e);
            }
            continue;
        }
        if ty != RTM_NEWLINK || payload.len() < 16 {
            continue;
        }
        let flags = u32::from_ne_bytes(payload[8..12].try_into().unwrap_or_default());
        let mut l = Link {
            up: flags & IFF_UP != 0,
            carrier: flags & IFF_LOWER_UP != 0,
            ..Link::default()
        };
        for (t, v) in attrs(payload, 16) {
            match t {
                IFLA_IFNAME => l.name = String::from_utf8_lossy(v).trim_end_matches('\0').to_string(),
                IFLA_MTU => l.mtu = u32_of(v),
                IFLA_OPERSTATE => {
                    l.operstate = crate::parse::netdev::OPERSTATES
                        .get(v.first().copied().unwrap_or(0) as usize)
                        .copied()
                        .unwrap_or("unknown")
                        .to_string()
                }
                IFLA_CARRIER => l.carrier = v.first() == Some(&1),
                _ => {}
            }
        }
        return Ok(l);
    }
    Err(std::io::Error::other("no link in the kernel's reply"))
}

fn type_name(t: u8) -> &'static str {
    match t {
        1 => "unicast",
        2 => "local",
        3 => "broadcast",
        4 => "anycast",
        5 => "multicast",
        6 => "blackhole",
        7 => "unreachable",
        8 => "prohibit",
        9 => "throw",
        _ => "other",
    }
}

pub fn check(dst: IpAddr) -> Layer {
    let started = Instant::now();
    let took = |s: Instant| -> Option<Duration> { Some(s.elapsed()) };
    let route = match route_get(dst) {
        Ok(r) => r,
        Err(e) => {
            let raw = e.raw_os_error();
            let summary = match raw {
                Some(libc::ENETUNREACH) => {
                    format!("no route to {dst}: the routing table has no entry covering it (network is unreachable)")
                }
                Some(libc::EHOSTUNREACH) => format!("no route to host {dst}"),
                Some(libc::EACCES) | Some(libc::EPERM) => format!("route to {dst} prohibited by policy"),
                _ => format!("route lookup for {dst} failed: {e}"),
            };
            return Layer::new("route", Status::Fail, took(started), summary)
                .details(json!({"error": e.to_string(), "errno": raw}))
                .suggest("add a route (or a default route via a gateway) covering the address: `ip route add DEST via GATEWAY`, or check the DHCP/network configuration");
        }
    };
    let mut details = json!({
        "type": type_name(route.rtype),
        "gateway": route.gateway.map(|g| g.to_string()),
        "source": route.prefsrc.map(|g| g.to_string()),
        "table": route.table,
    });
    if matches!(route.rtype, 6..=8) {
        return Layer::new(
            "route",
            Status::Fail,
            took(started),
            format!(
                "the route to {dst} is of type {}: the kernel refuses to send",
                type_name(route.rtype)
            ),
        )
        .details(details)
        .suggest("remove the blackhole/unreachable/prohibit route (`ip route show type TYPE`) if it is not intended");
    }
    let via = match route.gateway {
        Some(g) => format!("via gateway {g}"),
        None if route.rtype == 2 => "local address of this host".to_string(),
        None => "directly connected".to_string(),
    };
    let src = route.prefsrc.map(|s| format!(", source {s}")).unwrap_or_default();
    let Some(oif) = route.oif else {
        return Layer::new("route", Status::Ok, took(started), format!("{dst}: {via}{src}")).details(details);
    };
    match link_get(oif) {
        Ok(link) => {
            details["interface"] = json!({
                "name": link.name, "index": oif, "mtu": link.mtu, "operstate": link.operstate,
                "up": link.up, "carrier": link.carrier,
            });
            let mtu = link.mtu.map(|m| format!(", mtu {m}")).unwrap_or_default();
            let desc = format!("{dst} {via} dev {} ({}{mtu}){src}", link.name, link.operstate);
            if !link.up {
                Layer::new(
                    "route",
                    Status::Fail,
                    took(started),
                    format!("{desc}: the egress interface is administratively down"),
                )
                .details(details)
                .suggest(format!("bring the interface up: `ip link set {} up`", link.name))
            } else if !link.carrier || link.operstate == "down" || link.operstate == "lowerlayerdown" {
                Layer::new(
                    "route",
                    Status::Fail,
                    took(started),
                    format!("{desc}: the egress interface has no carrier"),
                )
                .details(details)
                .suggest(format!("check the cable/link partner of {} (carrier down)", link.name))
            } else {
                let mut l = Layer::new("route", Status::Ok, took(started), desc).details(details);
                if link.mtu.is_some_and(|m| m < 1280) {
                    l.status = Status::Warn;
                    l.summary.push_str(" — unusually small MTU");
                    l = l.suggest("an MTU below 1280 fragments most traffic: check the interface and tunnel MTUs");
                }
                l
            }
        }
        Err(e) => Layer::new(
            "route",
            Status::Ok,
            took(started),
            format!("{dst} {via} dev #{oif} (link state unknown: {e}){src}"),
        )
        .details(details),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rta(ty: u16, v: &[u8]) -> Vec<u8> {
        let mut a = ((4 + v.len()) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(v);
        a.resize((a.len() + 3) & !3, 0);
        a
    }

    /// An RTM_NEWROUTE reply for 10.0.0.1 via 192.168.1.1 on interface 2, table main.
    fn route_reply(seq: u32) -> Vec<u8> {
        let mut p = vec![libc::AF_INET as u8, 32, 0, 0, 254, 0, 0, 1];
        p.extend_from_slice(&0u32.to_ne_bytes());
        p.extend(rta(RTA_DST, &[10, 0, 0, 1]));
        p.extend(rta(RTA_OIF, &2u32.to_ne_bytes()));
        p.extend(rta(RTA_GATEWAY, &[192, 168, 1, 1]));
        p.extend(rta(RTA_TABLE, &254u32.to_ne_bytes()));
        header(RTM_NEWROUTE, seq, &p)
    }

    fn link_reply(seq: u32) -> Vec<u8> {
        let mut p = vec![0u8, 0, 1, 0];
        p.extend_from_slice(&2i32.to_ne_bytes());
        p.extend_from_slice(&(IFF_UP | IFF_LOWER_UP).to_ne_bytes());
        p.extend_from_slice(&0u32.to_ne_bytes());
        p.extend(rta(IFLA_IFNAME, b"eth0\0"));
        p.extend(rta(IFLA_MTU, &1500u32.to_ne_bytes()));
        p.extend(rta(IFLA_OPERSTATE, &[6]));
        header(RTM_NEWLINK, seq, &p)
    }

    fn parse_both(bytes: &[u8]) -> (std::io::Result<Route>, std::io::Result<Link>) {
        let msgs: Vec<(u16, Vec<u8>)> = split_messages(bytes).into_iter().map(|(t, _, p)| (t, p)).collect();
        (parse_route_reply(&msgs), parse_link_reply(&msgs))
    }

    #[test]
    fn replies_parse() {
        let r = parse_both(&route_reply(1)).0.expect("route");
        assert_eq!(r.oif, Some(2));
        assert_eq!(r.gateway, Some(IpAddr::from([192, 168, 1, 1])));
        assert_eq!((r.table, r.rtype), (Some(254), 1));
        let l = parse_both(&link_reply(2)).1.expect("link");
        assert_eq!(
            (l.name.as_str(), l.mtu, l.operstate.as_str()),
            ("eth0", Some(1500), "up")
        );
        assert!(l.up && l.carrier);
        let mut err = i32::MIN.to_ne_bytes().to_vec();
        err.extend_from_slice(&[0; 16]);
        assert!(parse_both(&header(NLMSG_ERROR, 1, &err)).0.is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        /// Arbitrary datagrams, and valid replies with corrupted bytes or lengths:
        /// an error or a route, never a panic.
        #[test]
        fn malformed_replies_never_panic(
            junk in prop::collection::vec(any::<u8>(), 0..300),
            flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
            cut in any::<prop::sample::Index>(),
            errno in prop_oneof![Just(0), Just(i32::MIN), any::<i32>()],
        ) {
            let _ = parse_both(&junk);
            for mut bytes in [route_reply(1), link_reply(2)] {
                let n = bytes.len();
                for (i, x) in &flips {
                    bytes[i.index(n)] ^= x;
                }
                bytes.truncate(cut.index(n + 1));
                let _ = parse_both(&bytes);
            }
            let mut err = errno.to_ne_bytes().to_vec();
            err.extend_from_slice(&[0; 16]);
            let (r, l) = parse_both(&[header(NLMSG_ERROR, 1, &err), route_reply(1), link_reply(1)].concat());
            prop_assert_eq!(r.is_err(), errno != 0);
            prop_assert_eq!(l.is_err(), errno != 0);
        }
    }
}
