//! Command line: argument definitions and one module per command.

pub mod analyze;
pub mod collect;
pub mod detect;
pub mod diagnose;
pub mod monitor;
pub mod replay;
pub mod rules;
pub mod serve;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Config;

#[derive(Parser, Debug)]
#[command(
    name = "netsight",
    version,
    about = "Linux network observability: kernel collectors, Prometheus /metrics, diagnostics",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon: collect every interval and serve /metrics.
    Serve(ServeArgs),
    /// Collect one snapshot and print it (no server).
    Collect(CollectArgs),
    /// Check and unit-test rule files.
    Rules(rules::RulesArgs),
    /// Replay recorded series (CSV, or a NAB corpus) through the anomaly detector.
    Replay(replay::ReplayArgs),
    /// Print the metric catalog.
    Catalog(CatalogArgs),
    /// One-shot diagnostics (`analyze firewall`).
    Analyze(analyze::AnalyzeArgs),
    /// Layered connectivity checks towards a host (`diagnose connectivity`).
    Diagnose(diagnose::DiagnoseArgs),
    /// Live terminal view of interfaces, connections and anomalies (`monitor network`).
    Monitor(monitor::MonitorArgs),
    /// Anomaly report with root causes for a past window (daemon event log or Prometheus).
    Detect(detect::DetectArgs),
    /// Print the version.
    Version,
}

/// Options shared by every command that reads the kernel.
#[derive(Args, Debug, Clone, Default)]
pub struct CommonArgs {
    /// YAML configuration file; keys it omits keep the embedded defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Root of the proc filesystem (a captured fixture tree in tests).
    #[arg(long = "path.procfs", value_name = "DIR")]
    pub procfs: Option<PathBuf>,
    /// Root of the sys filesystem.
    #[arg(long = "path.sysfs", value_name = "DIR")]
    pub sysfs: Option<PathBuf>,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `netsight=debug`.
    #[arg(long, default_value = "info", env = "NETSIGHT_LOG")]
    pub log_level: String,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Address for the HTTP endpoints [default from config: 0.0.0.0:9977].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Collection interval, e.g. `5s` (minimum 1s).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub interval: Option<std::time::Duration>,
    /// Prometheus-style web config (TLS, basic auth) [default from config: none].
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Prometheus,
    Json,
}

#[derive(Args, Debug)]
pub struct CollectArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Collect exactly once (the only mode for now; kept for scripts' clarity).
    #[arg(long)]
    pub once: bool,
    #[arg(long, value_enum, default_value_t = Format::Prometheus)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct CatalogArgs {
    /// Print docs/metrics.md.
    #[arg(long)]
    pub markdown: bool,
}

/// Loads the configuration and applies command-line overrides.
pub fn load_config(common: &CommonArgs) -> anyhow::Result<Config> {
    let mut cfg = match &common.config {
        Some(p) => Config::load(p)?,
        None => Config::embedded()?,
    };
    if let Some(p) = &common.procfs {
        cfg.paths.procfs = p.clone();
    }
    if let Some(p) = &common.sysfs {
        cfg.paths.sysfs = p.clone();
    }
    Ok(cfg)
}

pub fn init_logging(filter: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
