//! `otlp:` settings: endpoint, protocol, headers, TLS and the export interval.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::export::tls::ClientTlsConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Grpc,
    Http,
}

/// The `otlp:` section of the daemon configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    pub enabled: bool,
    /// `http(s)://host:port`; `null`: `http://localhost:4317` (grpc) or
    /// `http://localhost:4318` (http). For http, `/v1/metrics` is appended when the
    /// URL has no path.
    pub endpoint: Option<String>,
    pub protocol: Protocol,
    /// Sent with every export (gRPC metadata or HTTP headers), e.g. an API key.
    pub headers: BTreeMap<String, String>,
    #[serde(deserialize_with = "crate::config::duration")]
    pub interval: Duration,
    /// Per export attempt.
    #[serde(deserialize_with = "crate::config::duration")]
    pub timeout: Duration,
    pub gzip: bool,
    pub tls: ClientTlsConfig,
    /// Extra resource attributes (override the detected ones).
    pub resource: BTreeMap<String, String>,
}

impl OtlpConfig {
    pub fn endpoint(&self) -> String {
        let default = match self.protocol {
            Protocol::Grpc => "http://localhost:4317",
            Protocol::Http => "http://localhost:4318",
        };
        let base = self.endpoint.as_deref().filter(|e| !e.is_empty()).unwrap_or(default);
        if self.protocol == Protocol::Http {
            if let Ok(uri) = base.parse::<hyper::Uri>() {
                if matches!(uri.path(), "" | "/") {
                    return format!("{}/v1/metrics", base.trim_end_matches('/'));
                }
            }
        }
        base.to_string()
    }

    pub(super) fn is_https(&self) -> bool {
        self.endpoint().starts_with("https://")
    }

    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        let ep = self.endpoint();
        let uri: hyper::Uri = ep.parse().map_err(|e| format!("otlp.endpoint {ep:?}: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!(
                "otlp.endpoint {ep:?}: expected http://host:port or https://host:port"
            ));
        }
        if self.interval < Duration::from_secs(1) {
            return Err(format!("otlp.interval {:?} is below the 1s minimum", self.interval));
        }
        if self.timeout.is_zero() {
            return Err("otlp.timeout must be > 0".into());
        }
        let t = &self.tls;
        let tls_set = t.ca_file.is_some() || t.cert_file.is_some() || t.key_file.is_some() || t.insecure_skip_verify;
        if tls_set && !self.is_https() {
            return Err("otlp.tls is set but otlp.endpoint is not https://".into());
        }
        if t.cert_file.is_some() != t.key_file.is_some() {
            return Err("otlp.tls.cert_file and otlp.tls.key_file go together".into());
        }
        for (k, v) in &self.headers {
            hyper::header::HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("otlp.headers: {k:?}: {e}"))?;
            hyper::header::HeaderValue::from_str(v).map_err(|e| format!("otlp.headers.{k}: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cfg(yaml: &str) -> OtlpConfig {
        let c = Config::from_yaml_over_defaults("t.yaml", yaml).expect("config");
        c.otlp
    }

    #[test]
    fn defaults_are_off_and_valid() {
        let c = cfg("{}");
        assert!(!c.enabled);
        assert_eq!(c.endpoint(), "http://localhost:4317");
        let h = cfg("otlp: {enabled: true, protocol: http}");
        assert_eq!(h.endpoint(), "http://localhost:4318/v1/metrics");
        let h = cfg("otlp: {enabled: true, protocol: http, endpoint: 'http://c:1/x/v1/metrics'}");
        assert_eq!(h.endpoint(), "http://c:1/x/v1/metrics");
    }

    #[test]
    fn bad_settings_are_rejected() {
        for bad in [
            "otlp: {enabled: true, endpoint: 'ftp://x:1'}",
            "otlp: {enabled: true, interval: 100ms}",
            "otlp: {enabled: true, protocol: carrier-pigeon}",
            "otlp: {enabled: true, tls: {ca_file: /x}}",
            "otlp: {enabled: true, endpoint: 'https://x:1', tls: {cert_file: /x}}",
            "otlp: {enabled: true, headers: {'bad header': x}}",
        ] {
            assert!(Config::from_yaml_over_defaults("t.yaml", bad).is_err(), "{bad}");
        }
    }
}
