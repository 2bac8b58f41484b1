//! Kernel parameters that diagnosis quotes ("net.core.somaxconn: 128 → 4096").

use super::{CollectContext, CollectError, Collector, KeptFiles};
use crate::catalog::{CollectorDoc, MetricDesc, MetricKind};
use crate::parse::sysctl::parse_sysctl_values;
use crate::snapshot::Emitter;

const G: MetricKind = MetricKind::Gauge;

/// One exported parameter: its `/proc/sys` path and, for multi-valued ones, the names
/// of its values (exported in a `value` label).
pub struct Param {
    pub path: &'static str,
    pub desc: MetricDesc,
    pub values: &'static [&'static str],
}

macro_rules! param {
    ($path:literal, $name:literal, $help:literal) => {
        Param { path: $path, desc: MetricDesc::new($name, G, "", $help, &[], $name), values: &[] }
    };
    ($path:literal, $name:literal, $help:literal, [$($v:literal),+]) => {
        Param { path: $path, desc: MetricDesc::new($name, G, "", $help, &["value"], $name), values: &[$($v),+] }
    };
}

pub static PARAMS: &[Param] = &[
    param!(
        "net/core/somaxconn",
        "netsight_sysctl_net_core_somaxconn",
        "Upper bound on listen() backlogs."
    ),
    param!(
        "net/core/netdev_max_backlog",
        "netsight_sysctl_net_core_netdev_max_backlog",
        "Per-CPU input backlog length."
    ),
    param!(
        "net/core/netdev_budget",
        "netsight_sysctl_net_core_netdev_budget",
        "Packets one NET_RX run may process."
    ),
    param!(
        "net/core/netdev_budget_usecs",
        "netsight_sysctl_net_core_netdev_budget_usecs",
        "Microseconds one NET_RX run may take."
    ),
    param!(
        "net/core/rmem_max",
        "netsight_sysctl_net_core_rmem_max",
        "Maximum socket receive buffer (bytes)."
    ),
    param!(
        "net/core/wmem_max",
        "netsight_sysctl_net_core_wmem_max",
        "Maximum socket send buffer (bytes)."
    ),
    param!(
        "net/ipv4/tcp_max_syn_backlog",
        "netsight_sysctl_net_ipv4_tcp_max_syn_backlog",
        "SYN queue length per listener."
    ),
    param!(
        "net/ipv4/tcp_syncookies",
        "netsight_sysctl_net_ipv4_tcp_syncookies",
        "SYN cookies: 0 off, 1 on overflow, 2 always."
    ),
    param!(
        "net/ipv4/tcp_tw_reuse",
        "netsight_sysctl_net_ipv4_tcp_tw_reuse",
        "Reuse of TIME_WAIT sockets for outgoing connections."
    ),
    param!(
        "net/ipv4/tcp_fin_timeout",
        "netsight_sysctl_net_ipv4_tcp_fin_timeout",
        "FIN_WAIT_2 timeout (seconds)."
    ),
    param!(
        "net/ipv4/tcp_max_tw_buckets",
        "netsight_sysctl_net_ipv4_tcp_max_tw_buckets",
        "Maximum TIME_WAIT sockets."
    ),
    param!(
        "net/ipv4/tcp_max_orphans",
        "netsight_sysctl_net_ipv4_tcp_max_orphans",
        "Maximum orphaned TCP sockets."
    ),
    param!(
        "net/ipv4/tcp_sack",
        "netsight_sysctl_net_ipv4_tcp_sack",
        "Selective acknowledgements enabled."
    ),
    param!(
        "net/ipv4/tcp_timestamps",
        "netsight_sysctl_net_ipv4_tcp_timestamps",
        "TCP timestamps mode."
    ),
    param!(
        "net/ipv4/tcp_window_scaling",
        "netsight_sysctl_net_ipv4_tcp_window_scaling",
        "TCP window scaling enabled."
    ),
    param!(
        "net/ipv4/tcp_retries2",
        "netsight_sysctl_net_ipv4_tcp_retries2",
        "Retransmissions before an established connection is dropped."
    ),
    param!(
        "net/ipv4/tcp_syn_retries",
        "netsight_sysctl_net_ipv4_tcp_syn_retries",
        "SYN retransmissions for active opens."
    ),
    param!(
        "net/ipv4/tcp_synack_retries",
        "netsight_sysctl_net_ipv4_tcp_synack_retries",
        "SYN-ACK retransmissions for passive opens."
    ),
    param!(
        "net/ipv4/ip_forward",
        "netsight_sysctl_net_ipv4_ip_forward",
        "IPv4 forwarding enabled."
    ),
    param!(
        "net/ipv4/conf/all/rp_filter",
        "netsight_sysctl_net_ipv4_conf_all_rp_filter",
        "Reverse-path filter: 0 off, 1 strict, 2 loose."
    ),
    param!(
        "net/ipv4/conf/default/rp_filter",
        "netsight_sysctl_net_ipv4_conf_default_rp_filter",
        "Reverse-path filter for new interfaces."
    ),
    param!(
        "net/ipv4/ip_local_port_range",
        "netsight_sysctl_net_ipv4_ip_local_port_range",
        "Ephemeral port range.",
        ["low", "high"]
    ),
    param!(
        "net/ipv4/tcp_rmem",
        "netsight_sysctl_net_ipv4_tcp_rmem",
        "TCP receive buffer sizes (bytes).",
        ["min", "default", "max"]
    ),
    param!(
        "net/ipv4/tcp_wmem",
        "netsight_sysctl_net_ipv4_tcp_wmem",
        "TCP send buffer sizes (bytes).",
        ["min", "default", "max"]
    ),
    param!(
        "net/netfilter/nf_conntrack_max",
        "netsight_sysctl_net_netfilter_nf_conntrack_max",
        "Conntrack table size limit."
    ),
    param!(
        "net/netfilter/nf_conntrack_buckets",
        "netsight_sysctl_net_netfilter_nf_conntrack_buckets",
        "Conntrack hash table buckets."
    ),
    param!(
        "net/netfilter/nf_conntrack_tcp_timeout_established",
        "netsight_sysctl_net_netfilter_nf_conntrack_tcp_timeout_established",
        "Conntrack timeout for established TCP (seconds)."
    ),
    param!(
        "net/netfilter/nf_conntrack_tcp_timeout_time_wait",
        "netsight_sysctl_net_netfilter_nf_conntrack_tcp_timeout_time_wait",
        "Conntrack timeout for TIME_WAIT TCP (seconds)."
    ),
    param!(
        "net/netfilter/nf_conntrack_acct",
        "netsight_sysctl_net_netfilter_nf_conntrack_acct",
        "Conntrack per-flow byte/packet accounting enabled."
    ),
];

pub static DOC: CollectorDoc = CollectorDoc {
    collector: "sysctl",
    source: "/proc/sys/net/… (a parameter whose file is absent, e.g. conntrack without the module, is skipped)",
    capabilities: "none",
    metrics: &[
        &PARAMS[0].desc,
        &PARAMS[1].desc,
        &PARAMS[2].desc,
        &PARAMS[3].desc,
        &PARAMS[4].desc,
        &PARAMS[5].desc,
        &PARAMS[6].desc,
        &PARAMS[7].desc,
        &PARAMS[8].desc,
        &PARAMS[9].desc,
        &PARAMS[10].desc,
        &PARAMS[11].desc,
        &PARAMS[12].desc,
        &PARAMS[13].desc,
        &PARAMS[14].desc,
        &PARAMS[15].desc,
        &PARAMS[16].desc,
        &PARAMS[17].desc,
        &PARAMS[18].desc,
        &PARAMS[19].desc,
        &PARAMS[20].desc,
        &PARAMS[21].desc,
        &PARAMS[22].desc,
        &PARAMS[23].desc,
        &PARAMS[24].desc,
        &PARAMS[25].desc,
        &PARAMS[26].desc,
        &PARAMS[27].desc,
        &PARAMS[28].desc,
    ],
    dynamic: &[],
};

/// Every parameter's file stays open ([`KeptFiles`]) and is re-read at offset 0
/// each tick: the kernel formats the current value on every read of a
/// `/proc/sys` file, so the values are as fresh as with a fresh `open`, and the
/// tick skips 29 path lookups and opens (an open `/proc/sys` file keeps the
/// namespace it was opened in, which is the daemon's: it never changes
/// namespace). An absent file is looked up again after [`super::ABSENT_RETRY`],
/// so a module loaded later shows up within that time.
#[derive(Default)]
pub struct Sysctl {
    files: KeptFiles,
    buf: Vec<u8>,
    interval: std::time::Duration,
}

impl Sysctl {
    /// Read at most every `interval` (the scheduler repeats the last values).
    pub fn new(interval: std::time::Duration) -> Self {
        Sysctl {
            interval,
            ..Sysctl::default()
        }
    }
}

impl Collector for Sysctl {
    fn name(&self) -> &'static str {
        "sysctl"
    }

    fn min_interval(&self) -> std::time::Duration {
        self.interval
    }

    fn collect(&mut self, ctx: &CollectContext, out: &mut Emitter) -> Result<(), CollectError> {
        let mut read_any = false;
        for p in PARAMS {
            let path = ctx.proc_path(&format!("sys/{}", p.path));
            if self.files.read_attribute_into(&path, &mut self.buf).is_err() {
                continue;
            }
            let Ok(vals) = parse_sysctl_values(&self.buf) else {
                continue;
            };
            read_any = true;
            if p.values.is_empty() {
                out.push0(&p.desc, vals[0] as f64);
            } else {
                for (name, v) in p.values.iter().zip(vals) {
                    out.push(&p.desc, [&**name], v as f64);
                }
            }
        }
        // Files of another root (a test switching fixture trees) are closed.
        self.files.close_unread();
        if !read_any {
            return Err(CollectError::Unavailable(format!(
                "no parameter readable under {}",
                ctx.proc_path("sys/net").display()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_lists_every_param() {
        assert_eq!(DOC.metrics.len(), PARAMS.len());
    }

    fn somaxconn(out: Emitter) -> Option<f64> {
        out.into_families()
            .into_iter()
            .find(|f| f.desc.name == "netsight_sysctl_net_core_somaxconn")
            .and_then(|f| f.samples.first().and_then(|s| s.value.as_f64()))
    }

    /// The kept-open files are re-read each tick: a changed value, a file that
    /// appears later and one that disappears are all seen on the next tick.
    #[test]
    fn kept_open_files_follow_changes() {
        let dir = std::env::temp_dir().join(format!("netsight-sysctl-{}", std::process::id()));
        let core = dir.join("sys/net/core");
        std::fs::create_dir_all(&core).expect("mkdir");
        let ctx = CollectContext::new(&dir, "/sys");
        let mut c = Sysctl {
            files: KeptFiles::retrying_absent_after(std::time::Duration::ZERO),
            ..Sysctl::default()
        };

        let mut out = Emitter::new();
        assert!(matches!(c.collect(&ctx, &mut out), Err(CollectError::Unavailable(_))));

        std::fs::write(core.join("somaxconn"), "128\n").expect("write");
        let mut out = Emitter::new();
        c.collect(&ctx, &mut out).expect("collect");
        assert_eq!(somaxconn(out), Some(128.0));

        // Rewritten in place, as the kernel's value changes under an open file.
        std::fs::write(core.join("somaxconn"), "4096\n").expect("write");
        let mut out = Emitter::new();
        c.collect(&ctx, &mut out).expect("collect");
        assert_eq!(somaxconn(out), Some(4096.0));

        std::fs::write(core.join("rmem_max"), "212992\n").expect("write");
        let mut out = Emitter::new();
        c.collect(&ctx, &mut out).expect("collect");
        let f = out.into_families();
        assert!(f.iter().any(|f| f.desc.name == "netsight_sysctl_net_core_rmem_max"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
