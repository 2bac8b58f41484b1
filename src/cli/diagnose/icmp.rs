//! ICMP echo: an unprivileged ICMP datagram socket when net.ipv4.ping_group_range
//! allows this process's group, else a raw socket (CAP_NET_RAW). Three probes.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Layer, MissingPrivilege, Status};

const PROBES: u16 = 3;
const SPACING: Duration = Duration::from_millis(100);

struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: closing a descriptor this struct owns.
        unsafe { libc::close(self.0) };
    }
}

fn open(v6: bool, kind: libc::c_int) -> std::io::Result<Fd> {
    let (domain, proto) = if v6 {
        (libc::AF_INET6, libc::IPPROTO_ICMPV6)
    } else {
        (libc::AF_INET, libc::IPPROTO_ICMP)
    };
    // SAFETY: plain socket(2) call; the descriptor is owned by the returned value.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(Fd(fd))
    }
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += w as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sockaddr(ip: IpAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid; we fill the family's fields.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match ip {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as u16;
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
            (ss, std::mem::size_of::<libc::sockaddr_in>() as u32)
        }
        IpAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as u16;
            sin6.sin6_addr.s6_addr = a.octets();
            (ss, std::mem::size_of::<libc::sockaddr_in6>() as u32)
        }
    }
}

fn ping_group_range() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Pings `ip`; returns the layer and, when no socket could be opened, what is missing.
pub fn check(ip: IpAddr, wait: Duration) -> (Layer, Option<MissingPrivilege>) {
    let started = Instant::now();
    let v6 = ip.is_ipv6();
    let (sock, kind) = match open(v6, libc::SOCK_DGRAM) {
        Ok(s) => (s, "datagram (unprivileged)"),
        Err(dgram_err) => match open(v6, libc::SOCK_RAW) {
            Ok(s) => (s, "raw"),
            Err(raw_err) => {
                // SAFETY: getgid/getuid never fail.
                let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
                let range = ping_group_range();
                let missing = MissingPrivilege {
                    check: "icmp",
                    missing: format!(
                        "cannot open an ICMP socket (datagram: {dgram_err}; raw: {raw_err}) as uid {uid} gid {gid}"
                    ),
                    granted_by: format!(
                        "CAP_NET_RAW (e.g. `setcap cap_net_raw+ep $(which netsight)` or run as root), or a \
                         net.ipv4.ping_group_range that includes gid {gid} (now \"{range}\"; \
                         `sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"`)"
                    ),
                };
                let l = Layer::new(
                    "icmp",
                    Status::Skipped,
                    None,
                    format!(
                        "ICMP echo not permitted: needs CAP_NET_RAW, or gid {gid} in net.ipv4.ping_group_range (now \"{range}\")"
                    ),
                )
                .details(json!({"permitted": false, "missing": missing.missing, "granted_by": missing.granted_by}));
                return (l, Some(missing));
            }
        },
    };
    let raw = kind == "raw";
    let ident = (std::process::id() & 0xffff) as u16;
    let (sa, salen) = sockaddr(ip);
    let mut sent_at: Vec<Option<Instant>> = vec![None; PROBES as usize];
    let mut rtts: Vec<Option<f64>> = vec![None; PROBES as usize];
    let mut errors: Vec<String> = Vec::new();
    let mut next_send = 0u16;
    let mut next_time = Instant::now();
    let deadline_after_last = wait;
    let mut last_sent = Instant::now();
    let mut buf = [0u8; 2048];
    loop {
        let now = Instant::now();
        if next_send < PROBES && now >= next_time {
            let mut pkt = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
            pkt.extend_from_slice(&ident.to_be_bytes());
            pkt.extend_from_slice(&next_send.to_be_bytes());
            pkt.extend_from_slice(b"netsight-diagnose");
            if !v6 {
                let c = checksum(&pkt);
                pkt[2..4].copy_from_slice(&c.to_be_bytes());
            }
            // SAFETY: sending a buffer we own to a valid sockaddr of the given length.
            let n = unsafe {
                libc::sendto(
                    sock.0,
                    pkt.as_ptr() as *const libc::c_void,
                    pkt.len(),
                    0,
                    &sa as *const _ as *const libc::sockaddr,
                    salen,
                )
            };
            if n < 0 {
                errors.push(format!("send: {}", std::io::Error::last_os_error()));
            } else {
                sent_at[next_send as usize] = Some(now);
            }
            last_sent = now;
            next_send += 1;
            next_time = now + SPACING;
        }
        if rtts.iter().all(Option::is_some) {
            break;
        }
        let limit = if next_send < PROBES {
            next_time
        } else {
            last_sent + deadline_after_last
        };
        let now = Instant::now();
        if next_send >= PROBES && now >= limit {
            break;
        }
        let ms_left = limit.saturating_duration_since(now).as_millis().clamp(1, 10_000) as i32;
        let mut pfd = libc::pollfd {
            fd: sock.0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polling one valid descriptor.
        let r = unsafe { libc::poll(&mut pfd, 1, ms_left) };
        if r <= 0 {
            continue;
        }
        // SAFETY: receiving into a buffer we own.
        let n = unsafe {
            libc::recv(
                sock.0,
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    errors.push(format!("receive: {e}"));
                }
            }
            continue;
        }
        let mut msg = &buf[..n as usize];
        if raw && !v6 {
            let ihl = ((msg[0] & 0x0f) as usize) * 4;
            let src = msg
                .get(12..16)
                .map(|s| IpAddr::from(<[u8; 4]>::try_from(s).unwrap_or([0; 4])));
            if src != Some(ip) && !matches!(msg.get(ihl), Some(3) | Some(11)) {
                continue;
            }
            msg = msg.get(ihl..).unwrap_or(&[]);
        }
        if msg.len() < 8 {
            continue;
        }
        let reply_type = if v6 { 129 } else { 0 };
        let (unreach, exceeded) = if v6 { (1, 3) } else { (3, 11) };
        if msg[0] == unreach || msg[0] == exceeded {
            // The quoted header of our request follows (raw sockets only).
            errors.push(if msg[0] == unreach {
                format!("destination unreachable (code {})", msg[1])
            } else {
                "time exceeded in transit".to_string()
            });
            if errors.len() > 10 {
                break;
            }
            continue;
        }
        if msg[0] != reply_type {
            continue;
        }
        let id = u16::from_be_bytes([msg[4], msg[5]]);
        let seq = u16::from_be_bytes([msg[6], msg[7]]) as usize;
        if raw && id != ident {
            continue;
        }
        if let (Some(Some(t)), Some(slot)) = (sent_at.get(seq), rtts.get_mut(seq)) {
            if slot.is_none() {
                *slot = Some(super::ms(t.elapsed()));
            }
        }
    }
    let got: Vec<f64> = rtts.iter().flatten().copied().collect();
    let sent = sent_at.iter().flatten().count();
    let took = started.elapsed();
    errors.dedup();
    let details = json!({
        "permitted": true, "socket": kind, "sent": sent, "received": got.len(),
        "rtt_ms": got, "errors": errors,
    });
    if got.is_empty() {
        let why = if errors.is_empty() {
            "no echo reply".to_string()
        } else {
            format!("no echo reply ({})", errors.join("; "))
        };
        let l = Layer::new("icmp", Status::Warn, Some(took), format!("0/{sent} replies: {why}"))
            .details(details)
            .suggest("ICMP echo gets no reply: the host is down, or a firewall on the path drops ICMP");
        return (l, None);
    }
    let min = got.iter().copied().fold(f64::INFINITY, f64::min);
    let max = got.iter().copied().fold(0.0, f64::max);
    let avg = got.iter().sum::<f64>() / got.len() as f64;
    let summary = format!(
        "{}/{sent} replies, rtt min/avg/max {min:.2}/{avg:.2}/{max:.2} ms ({kind} socket)",
        got.len()
    );
    let status = if got.len() < sent { Status::Warn } else { Status::Ok };
    let mut l = Layer::new("icmp", status, Some(took), summary).details(details);
    if status == Status::Warn {
        l = l.suggest("some echo requests were lost: packet loss on the path (measure with mtr)");
    }
    (l, None)
}

#[cfg(test)]
mod tests {
    #[test]
    fn checksum_matches_rfc1071_example() {
        // Echo request id 1 seq 1, no payload: checksum 0xf7fd.
        assert_eq!(super::checksum(&[8, 0, 0, 0, 0, 1, 0, 1]), 0xf7fd);
    }
}
