//! Grafana annotations through its HTTP API: `POST /api/annotations` when a rule
//! starts firing (a point at the start, tagged rule/layer/severity/cause), then
//! `PATCH /api/annotations/:id` with `timeEnd` when it resolves, so the anomaly is
//! drawn as a region on every dashboard that shows annotations with those tags.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use hyper::Method;
use serde::Deserialize;

use super::client::{ClientTlsConfig, JsonClient};
use super::{Change, Outcome, Sink, TargetStats};
use crate::rules::events::{annotation_tags, Event};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrafanaConfig {
    pub enabled: bool,
    /// Grafana's base URL, e.g. `http://grafana:3000` (sub-path installs included).
    pub url: Option<String>,
    /// A service-account token (sent as `Authorization: Bearer …`).
    pub token: Option<String>,
    /// Read the token from this file instead (trailing newline ignored).
    pub token_file: Option<PathBuf>,
    /// `X-Grafana-Org-Id` for tokens that span organisations.
    pub org_id: Option<u64>,
    /// Attach annotations to one dashboard (and panel); unset: organisation-wide
    /// annotations, shown by any dashboard that queries them by tag.
    pub dashboard_uid: Option<String>,
    pub panel_id: Option<u64>,
    /// Tags added to every annotation, besides rule:/layer:/severity:/cause:/instance:.
    pub tags: Vec<String>,
    /// Extra HTTP headers.
    pub headers: BTreeMap<String, String>,
    #[serde(deserialize_with = "crate::config::duration")]
    pub timeout: Duration,
    pub tls: ClientTlsConfig,
}

impl Default for GrafanaConfig {
    fn default() -> Self {
        GrafanaConfig {
            enabled: false,
            url: None,
            token: None,
            token_file: None,
            org_id: None,
            dashboard_uid: None,
            panel_id: None,
            tags: vec!["netsight".into()],
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(10),
            tls: ClientTlsConfig::default(),
        }
    }
}

pub struct Grafana {
    client: JsonClient,
    cfg: GrafanaConfig,
    instance: String,
    /// netsight event id → Grafana annotation id, for events still firing.
    ids: BTreeMap<u64, u64>,
}

#[derive(Deserialize)]
struct Added {
    id: Option<u64>,
}

impl Grafana {
    pub fn new(cfg: &GrafanaConfig, instance: &str) -> anyhow::Result<Grafana> {
        let token = match (&cfg.token, &cfg.token_file) {
            (Some(_), Some(_)) => anyhow::bail!("notify.grafana: set token or token_file, not both"),
            (Some(t), None) => Some(t.clone()),
            (None, Some(p)) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("notify.grafana.token_file {}", p.display()))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        let mut headers = cfg.headers.clone();
        if let Some(org) = cfg.org_id {
            headers.insert("X-Grafana-Org-Id".into(), org.to_string());
        }
        let url = cfg.url.as_deref().unwrap_or_default();
        Ok(Grafana {
            client: JsonClient::new(url, &cfg.tls, &headers, token.as_deref(), cfg.timeout)
                .context("notify.grafana")?,
            cfg: cfg.clone(),
            instance: instance.to_string(),
            ids: BTreeMap::new(),
        })
    }

    fn tags(&self, e: &Event) -> Vec<String> {
        let mut tags = self.cfg.tags.clone();
        tags.extend(annotation_tags(e));
        tags.push(format!("instance:{}", self.instance));
        tags
    }

    /// The body of a new annotation: a point while firing, a region when the event
    /// has already ended.
    pub fn annotation(&self, e: &Event) -> serde_json::Value {
        let mut body = serde_json::json!({
            "time": ms(e.start),
            "tags": self.tags(e),
            "text": text(e),
        });
        if let Some(end) = e.end {
            body["timeEnd"] = ms(end).into();
        }
        if let Some(uid) = &self.cfg.dashboard_uid {
            body["dashboardUID"] = uid.clone().into();
        }
        if let Some(panel) = self.cfg.panel_id {
            body["panelId"] = panel.into();
        }
        body
    }

    async fn create(&mut self, e: &Event) -> Result<Outcome, String> {
        let reply = self
            .client
            .send(Method::POST, "/api/annotations", &self.annotation(e))
            .await?;
        let outcome = reply.outcome();
        if matches!(outcome, Outcome::Delivered) && e.end.is_none() {
            match serde_json::from_slice::<Added>(&reply.body) {
                Ok(Added { id: Some(id) }) => {
                    self.ids.insert(e.id, id);
                }
                _ => tracing::warn!(
                    body = %String::from_utf8_lossy(&reply.body),
                    "Grafana accepted the annotation but sent no id; its end will be a new annotation"
                ),
            }
        }
        Ok(outcome)
    }

    async fn close(&mut self, e: &Event) -> Result<Outcome, String> {
        let Some(id) = self.ids.get(&e.id).copied() else {
            // Its creation was rejected or dropped from a full queue: draw the
            // region as a new annotation rather than lose it.
            return self.create(e).await;
        };
        let Some(end) = e.end else {
            return Ok(Outcome::Delivered);
        };
        let body = serde_json::json!({
            "time": ms(e.start),
            "timeEnd": ms(end),
            "tags": self.tags(e),
            "text": text(e),
        });
        let reply = self
            .client
            .send(Method::PATCH, &format!("/api/annotations/{id}"), &body)
            .await?;
        let outcome = reply.outcome();
        if !matches!(outcome, Outcome::Retry(_)) {
            self.ids.remove(&e.id);
        }
        Ok(outcome)
    }
}

fn ms(unix_seconds: f64) -> i64 {
    (unix_seconds * 1000.0).round() as i64
}

/// The annotation text: the rule's rendered annotation, then the root cause with
/// its evidence and recommendation.
pub fn text(e: &Event) -> String {
    let mut t = e.text.clone();
    if let Some(c) = &e.cause {
        t.push('\n');
        t.push_str(&c.describe());
    }
    if e.end.is_some() {
        t.push_str("\n(resolved)");
    }
    t
}

impl Sink for Grafana {
    fn target(&self) -> &'static str {
        "grafana"
    }

    async fn deliver(&mut self, pending: &mut VecDeque<Change>, stats: &TargetStats) -> Result<(), String> {
        while let Some(change) = pending.front().cloned() {
            let result = match &change {
                Change::Opened(e) => self.create(e).await,
                Change::Closed(e) => self.close(e).await,
            };
            let outcome = result.unwrap_or_else(Outcome::Retry);
            stats.count(&outcome);
            match outcome {
                Outcome::Retry(reason) => return Err(reason),
                Outcome::Rejected(reason) => {
                    tracing::warn!(error = %reason, "Grafana rejected an annotation; dropped")
                }
                Outcome::Delivered => {}
            }
            pending.pop_front();
        }
        Ok(())
    }
}
