//! `netsight analyze …`: one-shot diagnostics built on the collectors' own code.

pub mod firewall;

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
}

/// Runs the analysis; returns the process exit code.
pub fn run(args: AnalyzeArgs) -> anyhow::Result<u8> {
    match args.what {
        AnalyzeWhat::Firewall(a) => firewall::run(a),
    }
}
