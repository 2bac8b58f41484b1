//! The small JSON-over-HTTP(S) client both targets share: hyper with rustls, a
//! timeout per request, fixed headers from the configuration.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::Outcome;
pub use crate::export::tls::ClientTlsConfig;

pub fn validate_url(what: &str, url: Option<&str>) -> Result<(), String> {
    let url = url
        .filter(|u| !u.is_empty())
        .ok_or_else(|| format!("{what} is required"))?;
    let uri: Uri = url.parse().map_err(|e| format!("{what} {url:?}: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!(
            "{what} {url:?}: expected http://host:port or https://host:port"
        ));
    }
    Ok(())
}

const MAX_REPLY: usize = 64 * 1024;

pub struct JsonClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
}

/// An answer from the endpoint: status and body.
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Reply {
    /// Classifies the status the way Prometheus' notifier does: 2xx delivered, 4xx
    /// (but 408 and 429) will never succeed as sent, anything else may later.
    pub fn outcome(&self) -> Outcome {
        match self.status {
            200..=299 => Outcome::Delivered,
            408 | 429 => Outcome::Retry(self.describe()),
            400..=499 => Outcome::Rejected(self.describe()),
            _ => Outcome::Retry(self.describe()),
        }
    }

    fn describe(&self) -> String {
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(200).collect();
        format!("HTTP {}: {}", self.status, body.trim())
    }
}

impl JsonClient {
    /// `bearer`: sent as `Authorization: Bearer …` when set.
    pub fn new(
        base: &str,
        tls: &ClientTlsConfig,
        headers: &std::collections::BTreeMap<String, String>,
        bearer: Option<&str>,
        timeout: Duration,
    ) -> anyhow::Result<JsonClient> {
        let rustls_cfg = if base.starts_with("https://") {
            tls.rustls()?
        } else {
            // Plain http: the connector wants a TLS config it will never use.
            rustls::ClientConfig::builder_with_provider(crate::export::tls::provider())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let conn = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(rustls_cfg)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let mut fixed = Vec::new();
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.as_bytes()).with_context(|| format!("header name {k:?}"))?;
            if name == AUTHORIZATION && bearer.is_some() {
                anyhow::bail!("headers.Authorization and a token both set; keep one");
            }
            let mut value = HeaderValue::from_str(v).with_context(|| format!("header {k}"))?;
            // Configured headers usually carry credentials: keep them out of debug output.
            value.set_sensitive(true);
            fixed.push((name, value));
        }
        if bearer.is_some() && !base.starts_with("https://") {
            tracing::warn!(
                url = base,
                "a token is configured for a plain-http URL: it travels unencrypted"
            );
        }
        if let Some(token) = bearer {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", token.trim())).context("token")?;
            v.set_sensitive(true);
            fixed.push((AUTHORIZATION, v));
        }
        Ok(JsonClient {
            client: Client::builder(TokioExecutor::new()).build(conn),
            base: base.trim_end_matches('/').to_string(),
            headers: fixed,
            timeout,
        })
    }

    /// Sends `body` as JSON to `base + path`; `Err` when no HTTP answer came back.
    pub async fn send(&self, method: Method, path: &str, body: &serde_json::Value) -> Result<Reply, String> {
        let url = format!("{}{}", self.base, path);
        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .header(CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("netsight/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| format!("{url}: {e}"))?;
        let work = async {
            let resp = self.client.request(req).await.map_err(|e| format!("{url}: {e}"))?;
            let status = resp.status().as_u16();
            // Answers are small JSON documents; a misbehaving endpoint must not
            // make us buffer without bound.
            let body = http_body_util::Limited::new(resp.into_body(), MAX_REPLY)
                .collect()
                .await
                .map_err(|e| format!("{url}: {e}"))?
                .to_bytes();
            Ok(Reply { status, body })
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(format!("{url}: no answer within {:?}", self.timeout)),
        }
    }
}
