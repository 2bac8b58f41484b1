//! Direct push to Alertmanager's v2 API (`POST /api/v2/alerts`) for hosts without a
//! Prometheus ruler. Alerts carry the same alertname and labels as the Prometheus
//! rules generated in `alerts/netsight.rules.yml`, so routes, inhibitions and
//! silences written for one path work for the other.
//!
//! Like Prometheus, firing alerts are re-sent every `resend_interval` with an
//! `endsAt` four intervals ahead: if netsight stops, Alertmanager resolves them on
//! its own instead of keeping a stale alert forever.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use hyper::Method;
use serde::Deserialize;

use super::client::{ClientTlsConfig, JsonClient};
use super::{Change, Outcome, Sink, TargetStats};
use crate::rules::events::Event;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertmanagerConfig {
    pub enabled: bool,
    /// Alertmanager's base URL, e.g. `http://alertmanager:9093`.
    pub url: Option<String>,
    /// Extra HTTP headers (e.g. `Authorization` for a proxy in front).
    pub headers: BTreeMap<String, String>,
    #[serde(deserialize_with = "crate::config::duration")]
    pub timeout: Duration,
    /// Firing alerts are re-sent this often (Prometheus' default is 1m).
    #[serde(deserialize_with = "crate::config::duration")]
    pub resend_interval: Duration,
    /// The `instance` label (default: the host name).
    pub instance: Option<String>,
    /// Labels added to every alert, e.g. `{job: netsight, cluster: eu-1}`.
    pub labels: BTreeMap<String, String>,
    /// `runbook_url` annotation: this prefix + `<rule>.md`.
    pub runbook_url_prefix: String,
    /// netsight's own URL as users reach it; alerts link to its event log.
    pub external_url: Option<String>,
    pub tls: ClientTlsConfig,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        AlertmanagerConfig {
            enabled: false,
            url: None,
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(10),
            resend_interval: Duration::from_secs(60),
            instance: None,
            labels: BTreeMap::new(),
            runbook_url_prefix: "docs/runbooks/".into(),
            external_url: None,
            tls: ClientTlsConfig::default(),
        }
    }
}

/// Alerts per request: Alertmanager accepts any number, but a bounded body keeps
/// one slow request from carrying a whole backlog.
const BATCH: usize = 500;

pub struct Alertmanager {
    client: JsonClient,
    cfg: AlertmanagerConfig,
    instance: String,
    /// Events firing, as first sent (re-sent every `resend_interval`, and resolved
    /// with these labels even if the engine attached a cause later).
    open: BTreeMap<u64, Event>,
    last_resend: Instant,
    /// Rules of the embedded packs: they have their own alert in the generated
    /// Prometheus rules; other rules fall under `NetsightAnomaly` there, and here.
    default_rules: BTreeSet<String>,
}

impl Alertmanager {
    pub fn new(cfg: &AlertmanagerConfig, instance: &str) -> anyhow::Result<Alertmanager> {
        let url = cfg.url.as_deref().unwrap_or_default();
        let default_rules = crate::rules::load(&crate::rules::sources::embedded())
            .map(|set| set.rules.iter().map(|r| r.spec.name.clone()).collect())
            .unwrap_or_default();
        Ok(Alertmanager {
            client: JsonClient::new(url, &cfg.tls, &cfg.headers, None, cfg.timeout).context("notify.alertmanager")?,
            cfg: cfg.clone(),
            instance: cfg.instance.clone().unwrap_or_else(|| instance.to_string()),
            open: BTreeMap::new(),
            last_resend: Instant::now(),
            default_rules,
        })
    }

    /// The v2 API's `postableAlert` for an event; resolved when it has an end.
    pub fn alert(&self, e: &Event, now: SystemTime) -> serde_json::Value {
        let mut labels: BTreeMap<String, String> = self.cfg.labels.clone();
        labels.extend(e.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        let name = if self.default_rules.contains(&e.rule) {
            alert_name(&e.rule)
        } else {
            "NetsightAnomaly".to_string()
        };
        labels.insert("alertname".into(), name);
        labels.insert("rule".into(), e.rule.clone());
        labels.insert("severity".into(), e.severity.clone());
        labels.insert("layer".into(), e.layer.clone());
        labels.insert("instance".into(), self.instance.clone());
        labels.insert("component".into(), "netsight".into());
        match &e.cause {
            Some(c) => {
                labels.insert("cause".into(), c.name.clone());
                labels.insert("cause_layer".into(), c.layer.clone());
            }
            None => {
                labels.insert("cause".into(), "unidentified".into());
            }
        }
        let mut annotations = BTreeMap::new();
        annotations.insert("summary", e.text.clone());
        annotations.insert("description", description(e));
        annotations.insert("runbook_url", format!("{}{}.md", self.cfg.runbook_url_prefix, e.rule));
        if let Some(c) = &e.cause {
            annotations.insert("root_cause", c.explanation.clone());
            annotations.insert("recommendation", c.recommendation.clone());
        }
        let ends = match e.end {
            Some(end) => unix(end),
            None => now + self.cfg.resend_interval * 4,
        };
        let mut alert = serde_json::json!({
            "labels": labels,
            "annotations": annotations,
            "startsAt": rfc3339(unix(e.start)),
            "endsAt": rfc3339(ends),
        });
        if let Some(url) = &self.cfg.external_url {
            alert["generatorURL"] = format!("{}/api/v1/events", url.trim_end_matches('/')).into();
        }
        alert
    }

    async fn post(&self, alerts: Vec<serde_json::Value>) -> Result<Outcome, String> {
        let reply = self
            .client
            .send(Method::POST, "/api/v2/alerts", &serde_json::Value::Array(alerts))
            .await?;
        Ok(reply.outcome())
    }
}

/// `Netsight` + the rule in CamelCase, as the generated Prometheus rules name them.
pub fn alert_name(rule: &str) -> String {
    let mut name = String::from("Netsight");
    for part in rule.split(['_', '-', '.']).filter(|p| !p.is_empty()) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            name.extend(first.to_uppercase());
            name.push_str(chars.as_str());
        }
    }
    name
}

fn description(e: &Event) -> String {
    let mut d = format!("Rule {} ({} layer, {}), value {}", e.rule, e.layer, e.severity, e.value);
    if let Some(b) = e.baseline {
        d.push_str(&format!(", baseline {b}"));
    }
    d.push('.');
    match &e.cause {
        Some(c) => {
            d.push('\n');
            d.push_str(&c.describe());
        }
        None => d.push_str("\nRoot cause: none of the rule's candidate causes held."),
    }
    d
}

fn unix(seconds: f64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs_f64(seconds.max(0.0))
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl Sink for Alertmanager {
    fn target(&self) -> &'static str {
        "alertmanager"
    }

    async fn deliver(&mut self, pending: &mut VecDeque<Change>, stats: &TargetStats) -> Result<(), String> {
        while !pending.is_empty() {
            let n = pending.len().min(BATCH);
            let now = SystemTime::now();
            let alerts = pending
                .iter()
                .take(n)
                .map(|c| self.alert(&self.as_sent(c), now))
                .collect();
            let outcome = self.post(alerts).await.unwrap_or_else(Outcome::Retry);
            stats.count(&outcome);
            let delivered = match outcome {
                Outcome::Retry(reason) => return Err(reason),
                Outcome::Rejected(reason) => {
                    tracing::warn!(error = %reason, alerts = n, "Alertmanager rejected alerts; dropped");
                    false
                }
                Outcome::Delivered => true,
            };
            for change in pending.drain(..n) {
                match change {
                    Change::Opened(e) if e.end.is_none() && delivered => {
                        self.open.insert(e.id, e);
                    }
                    Change::Opened(e) | Change::Closed(e) => {
                        self.open.remove(&e.id);
                    }
                }
            }
        }
        Ok(())
    }

    async fn maintain(&mut self, stats: &TargetStats) -> Result<(), String> {
        if self.open.is_empty() || self.last_resend.elapsed() < self.cfg.resend_interval {
            return Ok(());
        }
        let now = SystemTime::now();
        let firing: Vec<&Event> = self.open.values().collect();
        for chunk in firing.chunks(BATCH) {
            let alerts = chunk.iter().map(|e| self.alert(e, now)).collect();
            let outcome = self.post(alerts).await.unwrap_or_else(Outcome::Retry);
            stats.count(&outcome);
            match outcome {
                Outcome::Retry(reason) => return Err(reason),
                Outcome::Rejected(reason) => {
                    tracing::warn!(error = %reason, "Alertmanager rejected re-sent alerts")
                }
                Outcome::Delivered => {}
            }
        }
        self.last_resend = Instant::now();
        Ok(())
    }
}

impl Alertmanager {
    /// The event as Alertmanager knows it: a closing resolves the alert that was
    /// sent (same labels), with the end the engine recorded.
    fn as_sent(&self, c: &Change) -> Event {
        match c {
            Change::Opened(e) => e.clone(),
            Change::Closed(e) => match self.open.get(&e.id) {
                Some(sent) => Event {
                    end: e.end,
                    ..sent.clone()
                },
                None => e.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_names_match_the_generated_prometheus_rules() {
        assert_eq!(alert_name("conntrack_table_full"), "NetsightConntrackTableFull");
        assert_eq!(alert_name("tcp_rtt_spike"), "NetsightTcpRttSpike");
    }
}
