//! `struct tcp_info` (linux/tcp.h) as the `INET_DIAG_INFO` attribute carries it.
//!
//! The kernel copies `min(sizeof(struct tcp_info), attribute room)` bytes and the
//! struct has only grown over the years, so a field is read only when the bytes
//! cover it: an older kernel yields `None` for the fields it does not know. Values
//! are in host byte order (netlink is host-endian). Pure functions; no allocation.

/// The fields netsight reads; `None` when the attribute is too short to hold one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpInfo {
    /// `TCP_ESTABLISHED`… as in `linux/tcp_states.h`.
    pub state: Option<u8>,
    /// Consecutive unrecovered RTO timeouts of the current segment.
    pub retransmits: Option<u8>,
    /// Retransmission timeout, µs.
    pub rto_us: Option<u32>,
    /// Smoothed round-trip time, µs.
    pub rtt_us: Option<u32>,
    /// Round-trip time variation, µs.
    pub rttvar_us: Option<u32>,
    /// Congestion window, segments.
    pub snd_cwnd: Option<u32>,
    /// Segments retransmitted over the connection's lifetime.
    pub total_retrans: Option<u32>,
    /// Bytes acknowledged by the peer (Linux ≥ 4.1).
    pub bytes_acked: Option<u64>,
    /// Bytes received and acknowledged (Linux ≥ 4.1).
    pub bytes_received: Option<u64>,
    /// Segments sent / received (Linux ≥ 4.2).
    pub segs_out: Option<u32>,
    pub segs_in: Option<u32>,
    /// Minimum RTT observed, µs (Linux ≥ 4.6).
    pub min_rtt_us: Option<u32>,
    /// Recent delivery rate, bytes/s (Linux ≥ 4.9).
    pub delivery_rate: Option<u64>,
    /// Bytes sent including retransmissions (Linux ≥ 4.19).
    pub bytes_sent: Option<u64>,
    /// Bytes retransmitted (Linux ≥ 4.19).
    pub bytes_retrans: Option<u64>,
}

/// Byte offsets in `struct tcp_info` (linux/include/uapi/linux/tcp.h).
pub mod offset {
    pub const STATE: usize = 0;
    pub const CA_STATE: usize = 1;
    pub const RETRANSMITS: usize = 2;
    pub const RTO: usize = 8;
    pub const RTT: usize = 68;
    pub const RTTVAR: usize = 72;
    pub const SND_CWND: usize = 80;
    pub const TOTAL_RETRANS: usize = 100;
    pub const BYTES_ACKED: usize = 120;
    pub const BYTES_RECEIVED: usize = 128;
    pub const SEGS_OUT: usize = 136;
    pub const SEGS_IN: usize = 140;
    pub const MIN_RTT: usize = 148;
    pub const DELIVERY_RATE: usize = 160;
    pub const BYTES_SENT: usize = 200;
    pub const BYTES_RETRANS: usize = 208;
    /// Length up to and including `tcpi_bytes_retrans` (Linux 4.19).
    pub const LEN_4_19: usize = 216;
}

#[inline]
fn u8_at(b: &[u8], off: usize) -> Option<u8> {
    b.get(off).copied()
}

#[inline]
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

#[inline]
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_ne_bytes(a))
}

/// Reads the fields `bytes` covers; never panics, whatever the length.
pub fn parse_tcp_info(bytes: &[u8]) -> TcpInfo {
    use offset::*;
    TcpInfo {
        state: u8_at(bytes, STATE),
        retransmits: u8_at(bytes, RETRANSMITS),
        rto_us: u32_at(bytes, RTO),
        rtt_us: u32_at(bytes, RTT),
        rttvar_us: u32_at(bytes, RTTVAR),
        snd_cwnd: u32_at(bytes, SND_CWND),
        total_retrans: u32_at(bytes, TOTAL_RETRANS),
        bytes_acked: u64_at(bytes, BYTES_ACKED),
        bytes_received: u64_at(bytes, BYTES_RECEIVED),
        segs_out: u32_at(bytes, SEGS_OUT),
        segs_in: u32_at(bytes, SEGS_IN),
        min_rtt_us: u32_at(bytes, MIN_RTT),
        delivery_rate: u64_at(bytes, DELIVERY_RATE),
        bytes_sent: u64_at(bytes, BYTES_SENT),
        bytes_retrans: u64_at(bytes, BYTES_RETRANS),
    }
}

/// Smoothed RTT in µs without decoding the rest (the collector's hot path).
#[inline]
pub fn rtt_us(bytes: &[u8]) -> Option<u32> {
    u32_at(bytes, offset::RTT)
}

/// Lifetime retransmitted segments without decoding the rest.
#[inline]
pub fn total_retrans(bytes: &[u8]) -> Option<u32> {
    u32_at(bytes, offset::TOTAL_RETRANS)
}

/// `tcpi_bytes_sent` (≥ 4.19) without decoding the rest.
#[inline]
pub fn bytes_sent(bytes: &[u8]) -> Option<u64> {
    u64_at(bytes, offset::BYTES_SENT)
}

/// `tcpi_bytes_received` (≥ 4.1) without decoding the rest.
#[inline]
pub fn bytes_received(bytes: &[u8]) -> Option<u64> {
    u64_at(bytes, offset::BYTES_RECEIVED)
}

/// The `INET_DIAG_CONG` attribute: the congestion-control algorithm name as a
/// NUL-terminated string (`cubic`, `bbr`…). `None` when empty or not UTF-8.
pub fn congestion_name(attr: &[u8]) -> Option<&str> {
    let end = attr.iter().position(|&b| b == 0).unwrap_or(attr.len());
    let name = std::str::from_utf8(attr.get(..end)?).ok()?;
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full-length (Linux 6.x, 280-byte) tcp_info with recognisable values.
    fn full() -> Vec<u8> {
        let mut b = vec![0u8; 280];
        b[0] = 1; // ESTABLISHED
        b[2] = 3;
        let mut put32 = |off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        put32(8, 204_000);
        put32(68, 1234);
        put32(72, 567);
        put32(80, 10);
        put32(100, 42);
        put32(136, 1000);
        put32(140, 900);
        put32(148, 99);
        let mut put64 = |off: usize, v: u64| b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        put64(120, 1 << 40);
        put64(128, 77_777);
        put64(160, 12_500_000);
        put64(200, (1 << 40) + 5000);
        put64(208, 5000);
        b
    }

    #[test]
    fn full_struct_yields_every_field() {
        let t = parse_tcp_info(&full());
        assert_eq!(
            t,
            TcpInfo {
                state: Some(1),
                retransmits: Some(3),
                rto_us: Some(204_000),
                rtt_us: Some(1234),
                rttvar_us: Some(567),
                snd_cwnd: Some(10),
                total_retrans: Some(42),
                bytes_acked: Some(1 << 40),
                bytes_received: Some(77_777),
                segs_out: Some(1000),
                segs_in: Some(900),
                min_rtt_us: Some(99),
                delivery_rate: Some(12_500_000),
                bytes_sent: Some((1 << 40) + 5000),
                bytes_retrans: Some(5000),
            }
        );
        assert_eq!(rtt_us(&full()), Some(1234));
        assert_eq!(total_retrans(&full()), Some(42));
        assert_eq!(bytes_sent(&full()), Some((1 << 40) + 5000));
        assert_eq!(bytes_received(&full()), Some(77_777));
    }

    #[test]
    fn short_structs_of_older_kernels_yield_only_covered_fields() {
        let b = full();
        // Linux 3.x: struct ends after tcpi_total_retrans (104 bytes).
        let t = parse_tcp_info(&b[..104]);
        assert_eq!(t.rtt_us, Some(1234));
        assert_eq!(t.total_retrans, Some(42));
        assert_eq!(t.bytes_acked, None);
        assert_eq!(t.bytes_sent, None);
        // Linux 4.9 (delivery_rate, 168 bytes): no bytes_sent yet.
        let t = parse_tcp_info(&b[..168]);
        assert_eq!(t.delivery_rate, Some(12_500_000));
        assert_eq!(t.min_rtt_us, Some(99));
        assert_eq!(t.bytes_sent, None);
        assert_eq!(bytes_sent(&b[..168]), None);
        // Exactly up to bytes_retrans (4.19).
        let t = parse_tcp_info(&b[..offset::LEN_4_19]);
        assert_eq!(t.bytes_retrans, Some(5000));
        // A field cut in half is absent, not garbage.
        let t = parse_tcp_info(&b[..70]);
        assert_eq!(t.rtt_us, None);
        assert_eq!(t.rto_us, Some(204_000));
    }

    #[test]
    fn every_length_is_safe() {
        let b = full();
        for n in 0..=b.len() {
            let t = parse_tcp_info(&b[..n]);
            assert_eq!(t.state.is_some(), n >= 1);
            assert_eq!(t.bytes_retrans.is_some(), n >= 216);
        }
        assert_eq!(parse_tcp_info(&[]), TcpInfo::default());
    }

    #[test]
    fn congestion_name_strips_the_nul() {
        assert_eq!(congestion_name(b"cubic\0"), Some("cubic"));
        assert_eq!(congestion_name(b"bbr"), Some("bbr"));
        assert_eq!(congestion_name(b"\0"), None);
        assert_eq!(congestion_name(b""), None);
        assert_eq!(congestion_name(b"\xff\xfe\0"), None);
    }

    /// The offsets above agree with glibc's `struct tcp_info` as libc declares it.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn offsets_match_libc() {
        use std::mem::offset_of;
        type T = libc::tcp_info;
        assert_eq!(offset_of!(T, tcpi_state), offset::STATE);
        assert_eq!(offset_of!(T, tcpi_ca_state), offset::CA_STATE);
        assert_eq!(offset_of!(T, tcpi_retransmits), offset::RETRANSMITS);
        assert_eq!(offset_of!(T, tcpi_rto), offset::RTO);
        assert_eq!(offset_of!(T, tcpi_rtt), offset::RTT);
        assert_eq!(offset_of!(T, tcpi_rttvar), offset::RTTVAR);
        assert_eq!(offset_of!(T, tcpi_snd_cwnd), offset::SND_CWND);
        assert_eq!(offset_of!(T, tcpi_total_retrans), offset::TOTAL_RETRANS);
        assert_eq!(offset_of!(T, tcpi_bytes_acked), offset::BYTES_ACKED);
        assert_eq!(offset_of!(T, tcpi_bytes_received), offset::BYTES_RECEIVED);
        assert_eq!(offset_of!(T, tcpi_segs_out), offset::SEGS_OUT);
        assert_eq!(offset_of!(T, tcpi_segs_in), offset::SEGS_IN);
        assert_eq!(offset_of!(T, tcpi_min_rtt), offset::MIN_RTT);
    }

    /// A real loopback connection: what getsockopt(TCP_INFO) returns parses to
    /// the values libc's struct view of the same bytes shows.
    #[test]
    fn parses_a_live_getsockopt_tcp_info() {
        use std::io::{Read, Write};
        use std::os::fd::AsRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (mut s, _) = l.accept().expect("accept");
        c.write_all(&[7u8; 3000]).expect("write");
        let mut got = [0u8; 3000];
        s.read_exact(&mut got).expect("read");
        let mut buf = [0u8; 512];
        let mut len = buf.len() as libc::socklen_t;
        // SAFETY: buf is writable for len bytes; fd is a live TCP socket.
        let rc = unsafe {
            libc::getsockopt(
                c.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        let b = &buf[..len as usize];
        let t = parse_tcp_info(b);
        assert_eq!(t.state, Some(1), "ESTABLISHED");
        assert!(t.rtt_us.is_some_and(|r| r > 0));
        if b.len() >= offset::LEN_4_19 {
            assert!(t.bytes_sent.is_some_and(|v| v >= 3000), "{t:?}");
        }
        assert!(t.bytes_acked.is_some(), "{t:?}");
    }
}
