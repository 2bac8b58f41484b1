//! `--web.config.file`: Prometheus' web configuration format (exporter-toolkit), so the
//! same file and `promtool check web-config` work for netsight:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt        # relative paths: relative to this file
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert
//!   client_ca_file: clients-ca.crt
//!   min_version: TLS12
//! basic_auth_users:
//!   alice: $2y$10$...            # bcrypt hash (htpasswd -nBC 10 alice)
//! ```
//!
//! Basic-auth checks cost one bcrypt verification; a successful (user, password) pair is
//! remembered by its SHA-256 so that frequent scrapes do not pay it again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::tls;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    http_server_config: Option<HttpServerConfig>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsServerConfig {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    client_allowed_sans: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    // Go crypto/tls tuning knobs: rustls only offers modern suites and groups.
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpServerConfig {
    #[serde(default)]
    http2: Option<bool>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
}

/// The loaded web configuration.
pub struct WebConfig {
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub auth: Option<BasicAuth>,
    /// `http_server_config.headers`, added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("basic_auth_users", &self.auth.as_ref().map(|a| a.users.len()))
            .finish()
    }
}

fn resolve(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

impl WebConfig {
    pub fn load(path: &Path) -> anyhow::Result<WebConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text, path.parent().unwrap_or(Path::new(".")))
            .with_context(|| format!("web config {}", path.display()))
    }

    /// Parses a web config; relative file names are resolved against `dir`.
    pub fn parse(text: &str, dir: &Path) -> anyhow::Result<WebConfig> {
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_yaml::from_str(text)?
        };
        let tls = match file.tls_server_config {
            Some(t) if t.cert_file.is_some() || t.key_file.is_some() => Some(tls_acceptor(t, dir)?),
            Some(t) if t.client_ca_file.is_some() || t.client_auth_type.is_some() => {
                bail!("tls_server_config: cert_file and key_file are required")
            }
            _ => None,
        };
        let auth = match file.basic_auth_users {
            Some(users) if !users.is_empty() => Some(BasicAuth::new(users)?),
            _ => None,
        };
        let mut headers = Vec::new();
        if let Some(h) = file.http_server_config {
            if h.http2 == Some(true) {
                tracing::info!("http_server_config.http2: netsight serves HTTP/1.1 only");
            }
            for (k, v) in h.headers.unwrap_or_default() {
                let name = HeaderName::from_bytes(k.as_bytes()).with_context(|| format!("header name {k:?}"))?;
                let value = HeaderValue::from_str(&v).with_context(|| format!("value of header {k:?}"))?;
                headers.push((name, value));
            }
        }
        Ok(WebConfig { tls, auth, headers })
    }

    /// `None` when the request may proceed, else the response to send (401).
    pub async fn authorize<B>(&self, req: &hyper::Request<B>) -> Option<Response<Full<Bytes>>> {
        let auth = self.auth.as_ref()?;
        if auth.check(req.headers().get(AUTHORIZATION)).await {
            return None;
        }
        let mut r = Response::new(Full::new(Bytes::from_static(b"Unauthorized\n")));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"netsight\""));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        self.decorate(&mut r);
        Some(r)
    }

    /// Adds the configured response headers.
    pub fn decorate<B>(&self, r: &mut Response<B>) {
        for (k, v) in &self.headers {
            r.headers_mut().insert(k.clone(), v.clone());
        }
    }
}

fn tls_acceptor(t: TlsServerConfig, dir: &Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) else {
        bail!("tls_server_config: cert_file and key_file go together");
    };
    if t.client_allowed_sans.as_ref().is_some_and(|v| !v.is_empty()) {
        bail!("tls_server_config.client_allowed_sans is not supported by netsight");
    }
    if t.cipher_suites.is_some() || t.curve_preferences.is_some() || t.prefer_server_cipher_suites.is_some() {
        tracing::warn!("tls_server_config: cipher_suites, curve_preferences and prefer_server_cipher_suites are ignored (rustls uses its own modern defaults)");
    }
    let client_auth: tls::ClientAuth = t.client_auth_type.as_deref().unwrap_or("").parse()?;
    let ca = t.client_ca_file.as_ref().map(|p| resolve(dir, p));
    let cfg = tls::server_config(&tls::ServerTls {
        cert_file: &resolve(dir, cert),
        key_file: &resolve(dir, key),
        client_auth,
        client_ca_file: ca.as_deref(),
        min_version: t.min_version.as_deref(),
        max_version: t.max_version.as_deref(),
    })?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Remembered successful logins before the cache starts over.
const CACHE_MAX: usize = 1024;

pub struct BasicAuth {
    users: HashMap<String, Arc<str>>,
    /// Hash of a random password at the users' highest cost: unknown users are verified
    /// against it so that the response time does not reveal which user names exist.
    dummy: Arc<str>,
    cache: Mutex<HashSet<[u8; 32]>>,
    /// Concurrent bcrypt verifications: a flood of wrong passwords queues here
    /// instead of occupying the blocking pool the collectors also run on.
    verifying: tokio::sync::Semaphore,
}

/// Parallel bcrypt verifications at most.
const MAX_VERIFYING: usize = 2;

impl BasicAuth {
    pub fn new(users: BTreeMap<String, String>) -> anyhow::Result<BasicAuth> {
        let mut cost = 4; // bcrypt's minimum
        for (user, hash) in &users {
            if user.contains(':') {
                bail!("basic_auth_users: user name {user:?} contains ':'");
            }
            let parts = hash
                .parse::<bcrypt::HashParts>()
                .map_err(|e| anyhow::anyhow!("basic_auth_users.{user}: not a bcrypt hash ({e})"))?;
            cost = cost.max(parts.get_cost());
        }
        let nonce = Self::key(&format!("{:?}", std::time::SystemTime::now()), "", "");
        let dummy = bcrypt::hash(nonce, cost).context("bcrypt")?;
        Ok(BasicAuth {
            users: users.into_iter().map(|(u, h)| (u, Arc::from(h))).collect(),
            dummy: Arc::from(dummy),
            cache: Mutex::new(HashSet::new()),
            verifying: tokio::sync::Semaphore::new(MAX_VERIFYING),
        })
    }

    fn key(user: &str, password: &str, hash: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [user, password, hash] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().into()
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        match self.cache.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// True when the `Authorization` header carries a valid user and password.
    pub async fn check(&self, header: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = header.and_then(parse_basic) else {
            return false;
        };
        let (hash, known) = match self.users.get(&user) {
            Some(h) => (h.clone(), true),
            None => (self.dummy.clone(), false),
        };
        let key = Self::key(&user, &password, &hash);
        if known && self.cache().contains(&key) {
            return true;
        }
        // bcrypt takes tens of milliseconds by design: keep it off the async workers,
        // and only a couple at a time.
        let Ok(_permit) = self.verifying.acquire().await else {
            return false;
        };
        if known && self.cache().contains(&key) {
            return true; // verified by a request that held the permit before us
        }
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password.as_bytes(), &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        if ok && known {
            let mut c = self.cache();
            if c.len() >= CACHE_MAX {
                c.clear();
            }
            c.insert(key);
        }
        ok && known
    }
}

/// `Basic base64(user:password)` → (user, password).
fn parse_basic(v: &HeaderValue) -> Option<(String, String)> {
    let s = v.to_str().ok()?;
    let (scheme, rest) = s.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, pw: &str) -> HeaderValue {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        HeaderValue::from_str(&format!("Basic {b}")).unwrap()
    }

    #[test]
    fn parses_basic_header() {
        assert_eq!(
            parse_basic(&header("alice", "a:b")),
            Some(("alice".to_string(), "a:b".to_string()))
        );
        assert_eq!(parse_basic(&HeaderValue::from_static("Bearer x")), None);
        assert_eq!(parse_basic(&HeaderValue::from_static("Basic !!!")), None);
    }

    #[tokio::test]
    async fn checks_and_caches_passwords() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let auth = BasicAuth::new(BTreeMap::from([("alice".to_string(), hash)])).unwrap();
        assert!(!auth.check(None).await);
        assert!(!auth.check(Some(&header("alice", "wrong"))).await);
        assert!(!auth.check(Some(&header("bob", "secret"))).await);
        assert!(auth.cache().is_empty(), "failures are not cached");
        assert!(auth.check(Some(&header("alice", "secret"))).await);
        assert_eq!(auth.cache().len(), 1);
        assert!(auth.check(Some(&header("alice", "secret"))).await);
        assert!(!auth.check(Some(&header("alice", "secret2"))).await);
    }

    #[test]
    fn rejects_bad_files() {
        let dir = Path::new("/nonexistent");
        assert!(WebConfig::parse("basic_auth_users:\n  a: plain\n", dir).is_err());
        assert!(WebConfig::parse("tls_server_config:\n  client_auth_type: NoClientCert\n", dir).is_err());
        assert!(WebConfig::parse("bogus: 1\n", dir).is_err());
        let empty = WebConfig::parse("", dir).unwrap();
        assert!(empty.tls.is_none() && empty.auth.is_none());
        let h = WebConfig::parse("http_server_config:\n  headers:\n    X-Frame-Options: deny\n", dir).unwrap();
        assert_eq!(h.headers.len(), 1);
    }
}
