//! The rule file format (YAML). Documented in docs/rules.md.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    Link,
    Network,
    Firewall,
    Transport,
    Application,
    Security,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Link => "link",
            Layer::Network => "network",
            Layer::Firewall => "firewall",
            Layer::Transport => "transport",
            Layer::Application => "application",
            Layer::Security => "security",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// The series a rule is evaluated on, one evaluation per label group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesSpec {
    pub metric: String,
    /// Label matchers: `label: regex` (anchored).
    #[serde(default, rename = "match")]
    pub matchers: BTreeMap<String, String>,
    /// Labels that identify a group; default: every label of the metric.
    #[serde(default)]
    pub by: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BaselineModel {
    /// Exponentially weighted mean and variance.
    #[default]
    Ewma,
    /// Median and MAD from streaming quantile estimates: robust to outliers.
    Mad,
    /// The default univariate detector (the one scored on NAB).
    Detector,
    /// Daily/weekly seasonality: MSTL refitted in the background on downsampled
    /// history; expected value and prediction interval from its forecast.
    Seasonal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineSpec {
    #[serde(default)]
    pub model: BaselineModel,
    /// Band half-width in standard deviations (MAD scaled to σ): upper = expected + k·σ.
    #[serde(default = "default_k")]
    pub k: f64,
    /// Smoothing for EWMA (0 < alpha ≤ 1); the MAD model's adaptation rate.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Smallest σ the band may have, so a flat series does not alarm on noise.
    #[serde(default)]
    pub min_sigma: f64,
    /// While firing, stop learning so an incident does not become the new normal.
    #[serde(default = "default_true")]
    pub freeze_while_firing: bool,
    /// Seasonal model: the seasons (default one day).
    #[serde(default = "default_periods", with = "duration_list")]
    pub periods: Vec<std::time::Duration>,
    /// Seasonal model: downsampling bucket (default 5 minutes).
    #[serde(default = "default_step", with = "duration_str")]
    pub step: std::time::Duration,
    /// Seasonal model: how often the model is refitted (default 1 hour).
    #[serde(default = "default_refit", with = "duration_str")]
    pub refit_every: std::time::Duration,
    /// After firing this long, look for a level shift (BOCPD changepoint) in the
    /// recent values and, when one is found, re-learn the baseline from the new
    /// level instead of alarming for hours. `0s` disables.
    #[serde(default = "default_rebaseline", with = "duration_str")]
    pub rebaseline_after: std::time::Duration,
}

fn default_periods() -> Vec<std::time::Duration> {
    vec![std::time::Duration::from_secs(86_400)]
}
fn default_step() -> std::time::Duration {
    std::time::Duration::from_secs(300)
}
fn default_refit() -> std::time::Duration {
    std::time::Duration::from_secs(3600)
}
fn default_rebaseline() -> std::time::Duration {
    std::time::Duration::from_secs(600)
}

impl Default for BaselineSpec {
    fn default() -> Self {
        BaselineSpec {
            model: BaselineModel::default(),
            k: default_k(),
            alpha: default_alpha(),
            min_sigma: 0.0,
            freeze_while_firing: true,
            periods: default_periods(),
            step: default_step(),
            refit_every: default_refit(),
            rebaseline_after: default_rebaseline(),
        }
    }
}

mod duration_str {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

mod duration_list {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let v: Vec<String> = Vec::deserialize(d)?;
        v.iter()
            .map(|s| humantime::parse_duration(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

fn default_k() -> f64 {
    4.0
}
fn default_alpha() -> f64 {
    0.05
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CauseSpec {
    pub name: String,
    pub layer: Layer,
    /// Holds when this expression is true (same variables as the rule, plus any metric).
    #[serde(default)]
    pub when: Option<String>,
    /// Holds when this other rule is firing for a compatible group.
    #[serde(default)]
    pub rule: Option<String>,
    pub explanation: String,
    #[serde(default)]
    pub recommendation: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub layer: Layer,
    pub severity: Severity,
    pub series: SeriesSpec,
    /// Other metrics bound by name for the same group.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// The observed quantity; default `value` (the series' current value).
    #[serde(default = "default_expr")]
    pub expr: String,
    #[serde(default)]
    pub baseline: Option<BaselineSpec>,
    /// Fire condition.
    pub when: String,
    /// Resolve condition (hysteresis); default: `when` no longer holds.
    #[serde(default)]
    pub until: Option<String>,
    #[serde(default, rename = "for", with = "opt_duration")]
    pub for_: Option<std::time::Duration>,
    #[serde(default, with = "opt_duration")]
    pub keep_firing_for: Option<std::time::Duration>,
    #[serde(default, with = "opt_duration")]
    pub cooldown: Option<std::time::Duration>,
    /// Evaluations before the rule may fire (baseline warm-up).
    #[serde(default)]
    pub min_samples: u32,
    /// Unit of `expr`'s result, for annotation text: bytes, bytes_per_second,
    /// seconds, ratio (shown as %), percent, per_second, count.
    #[serde(default)]
    pub unit: Option<String>,
    /// Annotation template: `{{ value }}`, `{{ baseline }}`, `{{ labels.NAME }}`,
    /// `{{ cause }}`, `{{ recommendation }}`, `{{ rule }}`.
    #[serde(default)]
    pub annotation: Option<String>,
    #[serde(default)]
    pub causes: Vec<CauseSpec>,
}

fn default_expr() -> String {
    "value".to_string()
}

mod opt_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}
