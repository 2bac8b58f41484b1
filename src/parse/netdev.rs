//! `/proc/net/dev`, parsed by `procfs-core`, plus the sysfs per-interface attributes.

use std::io::Cursor;

use procfs_core::net::{DeviceStatus, InterfaceDeviceStatus};
use procfs_core::FromBufRead;

use super::{utf8, ParseError};

/// Interfaces sorted by name, so output order is stable.
pub fn parse_proc_net_dev(bytes: &[u8]) -> Result<Vec<DeviceStatus>, ParseError> {
    let text = utf8(bytes)?;
    if !text.starts_with("Inter-") {
        return Err(ParseError::Format("missing /proc/net/dev header".into()));
    }
    let parsed =
        InterfaceDeviceStatus::from_buf_read(Cursor::new(text)).map_err(|e| ParseError::Format(e.to_string()))?;
    let mut devs: Vec<DeviceStatus> = parsed.0.into_values().collect();
    devs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(devs)
}

/// Link speed from sysfs `speed` in Mb/s; -1 or an unreadable value means unknown.
pub fn parse_speed_bits(bytes: &[u8]) -> Option<f64> {
    let v: i64 = std::str::from_utf8(bytes).ok()?.trim_ascii().parse().ok()?;
    (v > 0).then_some(v as f64 * 1e6)
}

pub fn parse_u64_attr(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim_ascii().parse().ok()
}

/// `operstate` values in RFC 2863 order, as the kernel's IF_OPER_* numbering.
pub const OPERSTATES: [&str; 7] = [
    "unknown",
    "notpresent",
    "down",
    "lowerlayerdown",
    "testing",
    "dormant",
    "up",
];

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &[u8] = b"Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n  eth0: 5 1 0 2 0 0 0 0 7 1 0 0 0 0 0 0\n";

    #[test]
    fn parses_interfaces_sorted() {
        let d = parse_proc_net_dev(DEV).expect("ok");
        assert_eq!(d[0].name, "eth0");
        assert_eq!(d[0].recv_drop, 2);
        assert_eq!(d[1].recv_bytes, 1000);
    }

    #[test]
    fn truncated_line_is_an_error() {
        let mut t = DEV.to_vec();
        t.extend_from_slice(b"  eth1: 5 1 0\n");
        assert!(parse_proc_net_dev(&t).is_err());
        assert!(parse_proc_net_dev(b"garbage").is_err());
    }

    #[test]
    fn unknown_speed_is_absent() {
        assert_eq!(parse_speed_bits(b"-1\n"), None);
        assert_eq!(parse_speed_bits(b"10000\n"), Some(1e10));
    }
}
