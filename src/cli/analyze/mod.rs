//! `netsight analyze …`: one-shot diagnostics built on the collectors' own code.

pub mod bandwidth;
pub mod common;
pub mod connections;
pub mod firewall;
pub mod listening;
pub mod tcp;

use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    #[command(subcommand)]
    pub what: AnalyzeWhat,
}

#[derive(Subcommand, Debug)]
pub enum AnalyzeWhat {
    /// nf_tables ruleset (policies, hit counts, shadowed/duplicate/redundant rules)
    /// and conntrack usage with recommendations. Needs CAP_NET_ADMIN.
    Firewall(firewall::FirewallArgs),
    /// TCP sockets by state, port, process and peer; TIME_WAIT/CLOSE_WAIT/SYN_RECV/
    /// LAST_ACK warnings with causes and kernel-parameter advice.
    Connections(connections::ConnectionsArgs),
    /// TCP/IP MIB counters as rates over a sample: retransmissions, resets,
    /// timeouts, queue drops; congestion control in use; TCP sysctls and advice.
    Tcp(tcp::TcpArgs),
    /// Every TCP/UDP listener with process and queues; port conflicts; wildcard
    /// listeners not in analyze.exposure_allowlist.
    Listening(listening::ListeningArgs),
    /// Interface rates and utilisation; top processes and connections by bytes
    /// over a sample.
    Bandwidth(bandwidth::BandwidthArgs),
}

/// Runs the analysis; returns the process exit code.
pub fn run(args: AnalyzeArgs) -> anyhow::Result<u8> {
    match args.what {
        AnalyzeWhat::Firewall(a) => firewall::run(a),
        AnalyzeWhat::Connections(a) => connections::run(a),
        AnalyzeWhat::Tcp(a) => tcp::run(a),
        AnalyzeWhat::Listening(a) => listening::run(a),
        AnalyzeWhat::Bandwidth(a) => bandwidth::run(a),
    }
}
