//! A minimal HTTP/1.1 client over a plain or TLS stream: enough to time a request's
//! phases (`diagnose connectivity --http`) and to GET JSON from a daemon or
//! Prometheus (`detect`). One request per connection (`Connection: close`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use rustls::{ClientConnection, StreamOwned};

/// Largest body read; the rest is left unread (the timing is what matters).
const MAX_BODY: usize = 64 << 20;

pub enum Transport {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => match s.read(buf) {
                // Servers that close without close_notify: treat as end of stream.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
                r => r,
            },
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub body_bytes: usize,
    /// From the request written to the first response byte.
    pub first_byte: Duration,
    /// From the request written to the end of the body.
    pub total: Duration,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `GET path` and reads the response. Read timeouts come from the socket.
pub fn request(t: &mut Transport, authority: &str, path: &str) -> std::io::Result<Response> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: netsight/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    t.write_all(req.as_bytes())?;
    t.flush()?;
    let sent = Instant::now();
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 16384];
    let mut first_byte = None;
    let head_end = loop {
        let n = t.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a complete response header",
            ));
        }
        first_byte.get_or_insert_with(|| sent.elapsed());
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 1 << 20 {
            return Err(std::io::Error::other("response header larger than 1 MiB"));
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not an HTTP response: {:?}",
                status_line.chars().take(40).collect::<String>()
            ),
        ));
    }
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let reason = parts.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let chunked = get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length: Option<usize> = get("content-length").and_then(|v| v.parse().ok());
    let mut body = buf[head_end..].to_vec();
    loop {
        if let Some(l) = length {
            if body.len() >= l {
                body.truncate(l);
                break;
            }
        }
        if chunked && chunked_complete(&body) {
            break;
        }
        if body.len() >= MAX_BODY {
            break;
        }
        let n = t.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let total = sent.elapsed();
    if chunked {
        body = dechunk(&body);
    }
    Ok(Response {
        status,
        reason,
        headers,
        body_bytes: body.len(),
        body,
        first_byte: first_byte.unwrap_or_default(),
        total,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Walks chunk headers; true once the terminating zero-size chunk is present.
fn chunked_complete(b: &[u8]) -> bool {
    let mut i = 0;
    loop {
        let Some(e) = find(&b[i..], b"\r\n") else { return false };
        let size_txt = String::from_utf8_lossy(&b[i..i + e]);
        let Ok(size) = usize::from_str_radix(size_txt.split(';').next().unwrap_or("").trim(), 16) else {
            return true; // malformed: stop reading
        };
        if size == 0 {
            return true;
        }
        i += e + 2 + size + 2;
        if i > b.len() {
            return false;
        }
    }
}

fn dechunk(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(e) = find(&b[i..], b"\r\n") {
        let size_txt = String::from_utf8_lossy(&b[i..i + e]);
        let Ok(size) = usize::from_str_radix(size_txt.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        if size == 0 {
            break;
        }
        let start = i + e + 2;
        let end = (start + size).min(b.len());
        out.extend_from_slice(&b[start..end]);
        i = end + 2;
        if i >= b.len() {
            break;
        }
    }
    out
}

/// A parsed `http(s)://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Url {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    pub fn parse(s: &str) -> anyhow::Result<Url> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else {
            bail!("URL {s:?} must start with http:// or https://");
        };
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let default = if tls { 443 } else { 80 };
        let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
            let (h, after) = r.split_once(']').ok_or_else(|| anyhow!("bad IPv6 address in {s:?}"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().with_context(|| format!("bad port in {s:?}"))?,
                None => default,
            };
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().with_context(|| format!("bad port in {s:?}"))?),
                None => (hostport.to_string(), default),
            }
        };
        if host.is_empty() {
            bail!("no host in URL {s:?}");
        }
        Ok(Url { tls, host, port, path })
    }

    /// This URL with `path` (and query) appended to its own path.
    pub fn join(&self, path: &str) -> Url {
        let mut u = self.clone();
        let base = u.path.trim_end_matches('/');
        u.path = format!("{base}{path}");
        u
    }

    fn authority(&self) -> String {
        let h = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == if self.tls { 443 } else { 80 } {
            h
        } else {
            format!("{h}:{}", self.port)
        }
    }
}

/// GETs a URL (http or https; system roots plus `ca`), returning the response.
pub fn get(url: &Url, timeout: Duration, ca: Option<&Path>) -> anyhow::Result<Response> {
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", url.host))?
        .collect();
    let mut last = None;
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(anyhow!("cannot connect to {a}: {e}")),
        }
    }
    let stream = match stream {
        Some(s) => s,
        None => return Err(last.unwrap_or_else(|| anyhow!("{} has no address", url.host))),
    };
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut t = if url.tls {
        let conn = super::tls::connect_verified(&url.host, stream, ca)?;
        Transport::Tls(Box::new(conn))
    } else {
        Transport::Plain(stream)
    };
    request(&mut t, &url.authority(), &url.path).with_context(|| format!("GET {}", url.path))
}

/// Percent-encodes a query component.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let u = Url::parse("http://127.0.0.1:9977").expect("url");
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (false, "127.0.0.1", 9977, "/")
        );
        let u = Url::parse("https://[::1]/prom/").expect("url");
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (true, "::1", 443, "/prom/")
        );
        assert_eq!(u.join("/api/v1/query").path, "/prom/api/v1/query");
        assert!(Url::parse("ftp://x").is_err());
    }

    #[test]
    fn chunked_bodies_decode() {
        let b = b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n";
        assert!(chunked_complete(b));
        assert!(!chunked_complete(&b[..10]));
        assert_eq!(dechunk(b), b"Wikipedia");
        assert_eq!(encode_component("a b{c=\"d\"}"), "a%20b%7Bc%3D%22d%22%7D");
    }
}
