//! The procfs source: `/proc/net/dev` for the counters and sysfs attribute
//! files for the link state, as node_exporter reads them; used under a captured
//! `--path.procfs` tree and when the link dump fails.

use super::{emit_device, Device, Netdev};
use crate::collect::{CollectContext, CollectError, KeptFiles};
use crate::parse::netdev::{parse_proc_net_dev, parse_speed_bits, parse_u64_attr};
use crate::snapshot::Emitter;

/// A kept-open sysfs file follows the device, not the name: after `eth0` is
/// renamed and a new `eth0` created, the old descriptors would read the renamed
/// device. The directory `/sys/class/net/<name>` resolves to the device's own
/// sysfs directory, so its inode is checked every tick (one `stat` instead of an
/// open, stat, two reads and a close per attribute) and the files are reopened
/// when it changed.
pub(super) struct DevFiles {
    dir: Option<u64>,
    files: KeptFiles,
    seen: bool,
}

impl Netdev {
    /// The attribute files of `dev`, reopened if the name now belongs to another
    /// device.
    fn dev_files(&mut self, ctx: &CollectContext, dev: &str) -> &mut DevFiles {
        use std::os::unix::fs::MetadataExt;
        let dir = std::fs::metadata(ctx.sys_path(&format!("class/net/{dev}")))
            .ok()
            .map(|m| m.ino());
        let d = self.devs.entry(dev.to_string()).or_insert_with(|| DevFiles {
            dir,
            files: KeptFiles::default(),
            seen: false,
        });
        if d.dir != dir || dir.is_none() {
            d.dir = dir;
            d.files = KeptFiles::default();
        }
        d.seen = true;
        d
    }

    pub(super) fn collect_procfs(&mut self, ctx: &CollectContext, out: &mut Emitter) -> Result<(), CollectError> {
        let path = ctx.proc_path("net/dev");
        self.proc.read_into(&path, &mut self.buf)?;
        let devs = parse_proc_net_dev(&self.buf).map_err(|e| CollectError::parse(path, e))?;
        let mut attr_buf = std::mem::take(&mut self.attr_buf);
        for d in &devs {
            if !Self::wanted(&self.include, &self.exclude, &d.name) {
                continue;
            }
            let counters = [
                d.recv_bytes,
                d.recv_packets,
                d.recv_errs,
                d.recv_drop,
                d.recv_fifo,
                d.recv_frame,
                d.recv_compressed,
                d.recv_multicast,
                d.sent_bytes,
                d.sent_packets,
                d.sent_errs,
                d.sent_drop,
                d.sent_fifo,
                d.sent_colls,
                d.sent_carrier,
                d.sent_compressed,
            ];
            let files = self.dev_files(ctx, &d.name);
            sysfs_device(files, ctx, &d.name, counters, &mut attr_buf, out);
        }
        self.attr_buf = attr_buf;
        // Devices that are gone (or filtered out) release their files.
        self.devs.retain(|_, d| std::mem::take(&mut d.seen));
        // Speed files the netlink source kept are not needed while this one runs.
        self.speeds.clear();
        Ok(())
    }
}

impl DevFiles {
    fn read_attr<'b>(&mut self, ctx: &CollectContext, dev: &str, attr: &str, buf: &'b mut Vec<u8>) -> Option<&'b [u8]> {
        self.files
            .read_attribute_into(&ctx.sys_path(&format!("class/net/{dev}/{attr}")), buf)
            .ok()
            .map(|()| buf.as_slice())
    }
}

/// The procfs source's link attributes, best effort: a device can vanish between
/// the two reads, and `carrier`/`speed` return EINVAL while the link is down.
fn sysfs_device(
    files: &mut DevFiles,
    ctx: &CollectContext,
    dev: &str,
    counters: [u64; 16],
    buf: &mut Vec<u8>,
    out: &mut Emitter,
) {
    let operstate = files
        .read_attr(ctx, dev, "operstate", buf)
        .and_then(|b| std::str::from_utf8(b).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    // -1 and EINVAL mean unknown.
    let speed = files
        .read_attr(ctx, dev, "speed", buf)
        .and_then(parse_speed_bits)
        .map(|bits| bits / 8.0);
    let mut attr_u64 = |a: &str| files.read_attr(ctx, dev, a, buf).and_then(parse_u64_attr);
    let device = Device {
        name: dev,
        counters,
        link_type: attr_u64("type"),
        carrier: attr_u64("carrier"),
        carrier_changes: attr_u64("carrier_changes"),
        speed,
        mtu: attr_u64("mtu"),
        txqlen: attr_u64("tx_queue_len"),
        rx_missed: attr_u64("statistics/rx_missed_errors"),
        operstate: &operstate,
    };
    emit_device(out, &device);
}
