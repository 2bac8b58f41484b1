//! Daemon configuration: the embedded default YAML, overridden by a user file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub const DEFAULT_CONFIG_YAML: &str = include_str!("../config/default.yaml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(serde::de::Error::custom)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: String,
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    pub paths: Paths,
    pub history_points: usize,
    pub budget: Budget,
    pub collectors: Collectors,
    pub rules: RulesConfig,
    pub analyze: AnalyzeConfig,
    /// OTLP push (off by default).
    pub otlp: crate::export::otlp::OtlpConfig,
    /// Grafana annotation / Alertmanager push of anomaly transitions (off by default).
    pub notify: crate::export::notify::NotifyConfig,
    /// Prometheus-style web config (TLS, basic auth) for the HTTP endpoints.
    pub web_config_file: Option<PathBuf>,
}

/// `netsight analyze …` settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeConfig {
    /// Listeners on a wildcard address (0.0.0.0, ::) that `analyze listening` does
    /// not flag as exposure risks: `PORT`, `PORT-PORT`, optionally prefixed with
    /// `tcp/` or `udp/` (e.g. `tcp/22`, `udp/53`, `9000-9100`).
    pub exposure_allowlist: Vec<String>,
}

/// One parsed `analyze.exposure_allowlist` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRule {
    /// `Some("tcp")`/`Some("udp")`, or `None` for both.
    pub protocol: Option<&'static str>,
    pub first: u16,
    pub last: u16,
}

impl PortRule {
    pub fn parse(entry: &str) -> Result<PortRule, String> {
        let e = entry.trim();
        let (protocol, ports) = match e.split_once('/') {
            Some((p, rest)) => match p.to_ascii_lowercase().as_str() {
                "tcp" => (Some("tcp"), rest),
                "udp" => (Some("udp"), rest),
                _ => return Err(format!("{entry:?}: protocol must be tcp or udp")),
            },
            None => (None, e),
        };
        let port = |s: &str| {
            s.trim()
                .parse::<u16>()
                .map_err(|_| format!("{entry:?}: {s:?} is not a port (0-65535)"))
        };
        let (first, last) = match ports.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(ports)?, port(ports)?),
        };
        if first > last {
            return Err(format!("{entry:?}: empty port range"));
        }
        Ok(PortRule { protocol, first, last })
    }

    pub fn matches(&self, protocol: &str, port: u16) -> bool {
        self.protocol.is_none_or(|p| p == protocol) && (self.first..=self.last).contains(&port)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    pub embedded: bool,
    pub paths: Vec<PathBuf>,
    pub event_log_size: usize,
    pub state_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub cpu_percent: f64,
    #[serde(deserialize_with = "duration")]
    pub collector_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collectors {
    pub netdev: NetdevConfig,
    pub sockstat: Toggle,
    pub netstat: Toggle,
    pub softnet: Toggle,
    pub conntrack: ConntrackConfig,
    pub sockets: SocketsConfig,
    pub sysctl: SysctlConfig,
    pub nftables: NftablesConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConntrackConfig {
    pub enabled: bool,
    /// The per-flow breakdown (protocol/state/zone, top addresses) dumps the table
    /// only while `nf_conntrack_count` is at most this; 0 disables it.
    pub breakdown_max_entries: u64,
    /// How often the breakdown's table dump is taken; the counters are read every
    /// tick. The dump walks the whole global conntrack hash (every namespace's
    /// buckets), so it is the collector's cost; between dumps the last breakdown
    /// is repeated.
    #[serde(deserialize_with = "duration")]
    pub breakdown_interval: Duration,
    /// Top-N cap on the per-address series; the rest is summed into `other`.
    pub top_addresses: usize,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        ConntrackConfig {
            enabled: true,
            breakdown_max_entries: 65_536,
            breakdown_interval: Duration::from_secs(30),
            top_addresses: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NftablesConfig {
    pub enabled: bool,
    /// Cap on per-rule counter series; the rest is summed into `handle="other"`.
    pub max_rules: usize,
    /// Regexes on the table name.
    pub include: Option<String>,
    pub exclude: Option<String>,
}

impl Default for NftablesConfig {
    fn default() -> Self {
        NftablesConfig {
            enabled: true,
            max_rules: 500,
            include: None,
            exclude: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SysctlConfig {
    pub enabled: bool,
    /// How often the parameters are read (at least one tick). They are settings,
    /// changed by hand or by a deploy, not counters: a slower cadence saves most
    /// of the collector's cost, and the last values are served in between.
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toggle {
    pub enabled: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetdevConfig {
    pub enabled: bool,
    pub include: Option<String>,
    pub exclude: Option<String>,
    /// Where interface counters and link state come from.
    pub source: NetdevSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetdevSource {
    /// rtnetlink on the live kernel, falling back to procfs when the dump fails;
    /// procfs when `--path.procfs` points at a captured tree.
    Auto,
    /// An `RTM_GETLINK` dump (`IFLA_STATS64`, operstate, carrier, MTU…) when a
    /// link notification arrived or 60 s passed, only the counters
    /// (`RTM_GETSTATS`) on the ticks between; sysfs only for `speed`.
    Netlink,
    /// `/proc/net/dev` plus sysfs attributes per device.
    Procfs,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketsConfig {
    pub enabled: bool,
    pub max_ports: usize,
    pub max_processes: usize,
    /// Shortest interval between process scans.
    #[serde(deserialize_with = "duration")]
    pub process_refresh: Duration,
    /// The next scan waits at least this many times the last scan's CPU time, so
    /// the scan's amortised cost stays below 1/factor of a core however many fds
    /// the host holds; 0 keeps `process_refresh` fixed.
    pub process_refresh_cpu_factor: f64,
    /// Rescan only when a socket is missing from the map (created since the last
    /// scan, or held by a process netsight cannot see); a map ten intervals old
    /// is revalidated (owners' comm re-read) and rescanned at least hourly;
    /// false: rescan every interval.
    pub process_refresh_lazy: bool,
    pub processes: bool,
    pub rtt_buckets_seconds: Vec<f64>,
}

/// Recursively overlays `over` onto `base` (maps merge, everything else replaces).
fn merge(base: &mut serde_yaml::Value, over: serde_yaml::Value) {
    match (base, over) {
        (serde_yaml::Value::Mapping(b), serde_yaml::Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

fn parse_yaml(path: &str, text: &str) -> Result<serde_yaml::Value, ConfigError> {
    serde_yaml::from_str(text).map_err(|e| yaml_error(path, &e))
}

fn yaml_error(path: &str, e: &serde_yaml::Error) -> ConfigError {
    let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
    ConfigError::Parse {
        path: path.to_string(),
        line,
        column,
        message: e.to_string(),
    }
}

impl Config {
    /// The embedded defaults alone.
    pub fn embedded() -> Result<Config, ConfigError> {
        Self::from_yaml_over_defaults("<embedded>", "{}")
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml_over_defaults(&path.display().to_string(), &text)
    }

    pub fn from_yaml_over_defaults(name: &str, text: &str) -> Result<Config, ConfigError> {
        let mut base = parse_yaml("<embedded>", DEFAULT_CONFIG_YAML)?;
        let over = parse_yaml(name, text)?;
        if !over.is_null() {
            merge(&mut base, over);
        }
        let cfg: Config = serde_yaml::from_value(base).map_err(|e| ConfigError::Parse {
            path: name.to_string(),
            line: 0,
            column: 0,
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.interval < Duration::from_secs(1) {
            return Err(ConfigError::Invalid(format!(
                "interval {:?} is below the 1s minimum",
                self.interval
            )));
        }
        if self.budget.cpu_percent.is_nan() || self.budget.cpu_percent <= 0.0 {
            return Err(ConfigError::Invalid("budget.cpu_percent must be > 0".into()));
        }
        self.otlp.validate().map_err(ConfigError::Invalid)?;
        self.notify.validate().map_err(ConfigError::Invalid)?;
        for (what, re) in [
            ("collectors.netdev.include", &self.collectors.netdev.include),
            ("collectors.netdev.exclude", &self.collectors.netdev.exclude),
            ("collectors.nftables.include", &self.collectors.nftables.include),
            ("collectors.nftables.exclude", &self.collectors.nftables.exclude),
        ] {
            if let Some(re) = re {
                regex::Regex::new(re).map_err(|e| ConfigError::Invalid(format!("{what}: {e}")))?;
            }
        }
        for (i, entry) in self.analyze.exposure_allowlist.iter().enumerate() {
            PortRule::parse(entry)
                .map_err(|e| ConfigError::Invalid(format!("analyze.exposure_allowlist[{i}]: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_parse() {
        let c = Config::embedded().expect("embedded config");
        assert_eq!(c.interval, Duration::from_secs(5));
        assert_eq!(c.listen, "0.0.0.0:9977");
        assert!(c.collectors.sockets.enabled);
    }

    #[test]
    fn user_file_overrides_one_key() {
        let c =
            Config::from_yaml_over_defaults("u.yaml", "collectors:\n  sockets:\n    max_ports: 3\n").expect("merged");
        assert_eq!(c.collectors.sockets.max_ports, 3);
        assert_eq!(c.collectors.sockets.max_processes, 64);
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let e = Config::from_yaml_over_defaults("u.yaml", "interval: 5s\n  bad: [\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("u.yaml:2:"), "{msg}");
    }

    #[test]
    fn exposure_allowlist_entries_parse_and_bad_ones_are_rejected() {
        let c = Config::from_yaml_over_defaults(
            "u.yaml",
            "analyze:\n  exposure_allowlist: [\"tcp/22\", \"53\", \"udp/9000-9100\"]\n",
        )
        .expect("valid");
        let rules: Vec<PortRule> = c
            .analyze
            .exposure_allowlist
            .iter()
            .map(|e| PortRule::parse(e).expect("rule"))
            .collect();
        assert!(rules[0].matches("tcp", 22) && !rules[0].matches("udp", 22));
        assert!(rules[1].matches("udp", 53) && rules[1].matches("tcp", 53));
        assert!(rules[2].matches("udp", 9050) && !rules[2].matches("udp", 9101));
        let e =
            Config::from_yaml_over_defaults("u.yaml", "analyze:\n  exposure_allowlist: [\"sctp/1\"]\n").unwrap_err();
        assert!(e.to_string().contains("exposure_allowlist[0]"), "{e}");
        assert!(PortRule::parse("90-80").is_err());
        assert!(PortRule::parse("http").is_err());
    }

    #[test]
    fn too_short_interval_is_rejected() {
        let e = Config::from_yaml_over_defaults("u.yaml", "interval: 200ms").unwrap_err();
        assert!(e.to_string().contains("1s minimum"));
    }
}
