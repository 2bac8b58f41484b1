//! Name resolution the way the C library does it for `hosts: files dns`, but
//! observable: /etc/hosts first, then A and AAAA queries to the nameservers of
//! /etc/resolv.conf (or `--resolver`), each answer and its timing reported.

use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::{Layer, Status};

#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: &'static str,
    pub ttl: u32,
    pub data: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Query {
    pub server: String,
    pub name: String,
    #[serde(rename = "type")]
    pub qtype: &'static str,
    /// NOERROR, NXDOMAIN, SERVFAIL, REFUSED, … or `timeout` / an I/O error.
    pub rcode: String,
    pub duration_ms: f64,
    pub answers: Vec<Answer>,
}

/// Nameservers, search list and ndots from resolv.conf text.
pub fn parse_resolv_conf(text: &str) -> (Vec<IpAddr>, Vec<String>, usize) {
    let mut servers = Vec::new();
    let mut search = Vec::new();
    let mut ndots = 1;
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut w = line.split_whitespace();
        match w.next() {
            Some("nameserver") => {
                if let Some(a) = w.next().and_then(|a| a.split('%').next()?.parse().ok()) {
                    servers.push(a);
                }
            }
            Some("search") | Some("domain") => search = w.map(|s| s.trim_end_matches('.').to_string()).collect(),
            Some("options") => {
                for o in w {
                    if let Some(n) = o.strip_prefix("ndots:").and_then(|n| n.parse().ok()) {
                        ndots = n;
                    }
                }
            }
            _ => {}
        }
    }
    (servers, search, ndots)
}

/// Addresses for `name` in hosts-file text.
pub fn hosts_lookup(text: &str, name: &str) -> Vec<IpAddr> {
    let name = name.trim_end_matches('.');
    text.lines()
        .filter_map(|l| {
            let l = l.split('#').next()?;
            let mut w = l.split_whitespace();
            let addr: IpAddr = w.next()?.parse().ok()?;
            w.any(|n| n.eq_ignore_ascii_case(name)).then_some(addr)
        })
        .collect()
}

fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, 1 question
    for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// Reads a (possibly compressed) name at `pos`; returns it and the position after it.
fn read_name(msg: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    let mut end = None;
    for _ in 0..128 {
        let len = *msg.get(pos)? as usize;
        if len == 0 {
            end.get_or_insert(pos + 1);
            return Some((labels.join("."), end?));
        }
        if len & 0xc0 == 0xc0 {
            let ptr = ((len & 0x3f) << 8) | *msg.get(pos + 1)? as usize;
            end.get_or_insert(pos + 2);
            pos = ptr;
            continue;
        }
        labels.push(String::from_utf8_lossy(msg.get(pos + 1..pos + 1 + len)?).into_owned());
        pos += 1 + len;
    }
    None
}

fn rcode_name(rc: u8) -> String {
    match rc {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE{n}"),
    }
}

/// Parses a response: (truncated, rcode, answers).
pub fn parse_response(msg: &[u8], id: u16) -> Option<(bool, String, Vec<Answer>)> {
    if msg.len() < 12 || u16::from_be_bytes([msg[0], msg[1]]) != id || msg[2] & 0x80 == 0 {
        return None;
    }
    let truncated = msg[2] & 0x02 != 0;
    let rcode = rcode_name(msg[3] & 0x0f);
    let qd = u16::from_be_bytes([msg[4], msg[5]]);
    let an = u16::from_be_bytes([msg[6], msg[7]]);
    let mut pos = 12;
    for _ in 0..qd {
        let (_, p) = read_name(msg, pos)?;
        pos = p + 4;
    }
    let mut answers = Vec::new();
    for _ in 0..an {
        let (name, p) = read_name(msg, pos)?;
        let h = msg.get(p..p + 10)?;
        let rtype = u16::from_be_bytes([h[0], h[1]]);
        let ttl = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let rdlen = u16::from_be_bytes([h[8], h[9]]) as usize;
        let rdata = msg.get(p + 10..p + 10 + rdlen)?;
        let (t, data) = match rtype {
            1 if rdlen == 4 => ("A", IpAddr::from(<[u8; 4]>::try_from(rdata).ok()?).to_string()),
            28 if rdlen == 16 => ("AAAA", IpAddr::from(<[u8; 16]>::try_from(rdata).ok()?).to_string()),
            5 => ("CNAME", read_name(msg, p + 10)?.0),
            _ => ("other", format!("type {rtype}, {rdlen} bytes")),
        };
        answers.push(Answer {
            name,
            rtype: t,
            ttl,
            data,
        });
        pos = p + 10 + rdlen;
    }
    Some((truncated, rcode, answers))
}

fn query_id() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ (std::process::id() << 7)) as u16
}

/// One query (UDP, then TCP when the answer is truncated).
fn ask(server: SocketAddr, name: &str, qtype: u16, timeout: Duration) -> Query {
    let started = Instant::now();
    let id = query_id();
    let q = build_query(id, name, qtype);
    let tname = if qtype == 1 { "A" } else { "AAAA" };
    let mut result = Query {
        server: server.to_string(),
        name: name.to_string(),
        qtype: tname,
        rcode: String::new(),
        duration_ms: 0.0,
        answers: Vec::new(),
    };
    let outcome = (|| -> std::io::Result<Option<(bool, String, Vec<Answer>)>> {
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse().map_err(std::io::Error::other)?
        } else {
            "[::]:0".parse().map_err(std::io::Error::other)?
        };
        let sock = UdpSocket::bind(bind)?;
        sock.connect(server)?;
        sock.send(&q)?;
        let mut buf = [0u8; 4096];
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "timeout"));
            }
            sock.set_read_timeout(Some(left))?;
            let n = sock.recv(&mut buf)?;
            if let Some(r) = parse_response(&buf[..n], id) {
                if !r.0 {
                    return Ok(Some(r));
                }
                break;
            }
        }
        // Truncated: retry over TCP.
        use std::io::{Read, Write};
        let mut t = TcpStream::connect_timeout(
            &server,
            timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1)),
        )?;
        t.set_read_timeout(Some(timeout))?;
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        t.write_all(&framed)?;
        let mut len = [0u8; 2];
        t.read_exact(&mut len)?;
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        t.read_exact(&mut msg)?;
        Ok(parse_response(&msg, id))
    })();
    result.duration_ms = super::ms(started.elapsed());
    match outcome {
        Ok(Some((_, rcode, answers))) => {
            result.rcode = rcode;
            result.answers = answers;
        }
        Ok(None) => result.rcode = "malformed response".into(),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            result.rcode = "timeout".into()
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => result.rcode = "refused (port closed)".into(),
        Err(e) => result.rcode = format!("error: {e}"),
    }
    result
}

fn parse_server(s: &str) -> Option<SocketAddr> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa);
    }
    let ip: IpAddr = s.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    Some(SocketAddr::new(ip, 53))
}

/// Resolves `host`; returns the layer and the address to use (IPv4 preferred).
pub fn check(host: &str, resolver: Option<&str>, timeout: Duration) -> (Layer, Option<IpAddr>) {
    let started = Instant::now();
    if let Ok(ip) = host.parse::<IpAddr>() {
        return (
            Layer::new(
                "dns",
                Status::Skipped,
                None,
                format!("{ip} is an address literal: nothing to resolve"),
            )
            .details(json!({"resolver": null, "addresses": [ip.to_string()]})),
            Some(ip),
        );
    }
    let servers: Vec<SocketAddr>;
    let mut search = Vec::new();
    let mut ndots = 1;
    let resolver_desc;
    if let Some(r) = resolver {
        let Some(sa) = parse_server(r) else {
            return (
                Layer::new("dns", Status::Fail, None, format!("--resolver {r:?} is not an address"))
                    .suggest("give the DNS server as ADDR or ADDR:PORT"),
                None,
            );
        };
        servers = vec![sa];
        resolver_desc = format!("{sa} (--resolver)");
    } else {
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let found = hosts_lookup(&hosts, host);
        if let Some(first) = found.iter().find(|a| a.is_ipv4()).or(found.first()) {
            let took = started.elapsed();
            return (
                Layer::new("dns", Status::Ok, Some(took), format!("{host} → {first} from /etc/hosts"))
                    .details(json!({"resolver": "/etc/hosts", "addresses": found.iter().map(|a| a.to_string()).collect::<Vec<_>>(), "queries": []})),
                Some(*first),
            );
        }
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let (ns, s, n) = parse_resolv_conf(&text);
        search = s;
        ndots = n;
        servers = if ns.is_empty() {
            // The C library's default when resolv.conf names none.
            vec![SocketAddr::from(([127, 0, 0, 1], 53))]
        } else {
            ns.into_iter().map(|a| SocketAddr::new(a, 53)).collect()
        };
        resolver_desc = format!(
            "{} (/etc/resolv.conf)",
            servers.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    // Candidate names: as given, then with the search domains (glibc order).
    let absolute = host.ends_with('.');
    let dots = host.trim_end_matches('.').matches('.').count();
    let mut names = Vec::new();
    let with_search: Vec<String> = if absolute {
        Vec::new()
    } else {
        search.iter().map(|d| format!("{}.{d}", host)).collect()
    };
    if dots >= ndots || absolute {
        names.push(host.trim_end_matches('.').to_string());
        names.extend(with_search);
    } else {
        names.extend(with_search);
        names.push(host.to_string());
    }
    let mut queries: Vec<Query> = Vec::new();
    let per_query = timeout / 2;
    let mut addresses: Vec<IpAddr> = Vec::new();
    let mut answered_by = None;
    'names: for name in &names {
        for server in &servers {
            let a = ask(*server, name, 1, per_query);
            let a_ok =
                !a.rcode.starts_with("timeout") && !a.rcode.starts_with("error") && !a.rcode.starts_with("refused");
            queries.push(a);
            if !a_ok {
                continue; // next server
            }
            let aaaa = ask(*server, name, 28, per_query);
            queries.push(aaaa);
            let n = queries.len();
            for q in &queries[n - 2..] {
                for ans in &q.answers {
                    if let Ok(ip) = ans.data.parse::<IpAddr>() {
                        if matches!(ans.rtype, "A" | "AAAA") && !addresses.contains(&ip) {
                            addresses.push(ip);
                        }
                    }
                }
            }
            if !addresses.is_empty() {
                answered_by = Some(*server);
                break 'names;
            }
            // NXDOMAIN / NODATA from a server that answered: try the next name.
            continue 'names;
        }
    }
    let took = started.elapsed();
    let details = json!({
        "resolver": resolver_desc,
        "names_tried": names,
        "queries": queries,
        "addresses": addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    });
    let chosen = addresses.iter().find(|a| a.is_ipv4()).or(addresses.first()).copied();
    if let Some(ip) = chosen {
        let cname: Vec<&str> = queries
            .iter()
            .flat_map(|q| &q.answers)
            .filter(|a| a.rtype == "CNAME")
            .map(|a| a.data.as_str())
            .collect();
        let via = answered_by.map(|s| s.to_string()).unwrap_or_default();
        let cname_txt = if cname.is_empty() {
            String::new()
        } else {
            format!(" (CNAME {})", cname.join(" → "))
        };
        let all = addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
        return (
            Layer::new(
                "dns",
                Status::Ok,
                Some(took),
                format!("{host} → {all}{cname_txt} via {via}"),
            )
            .details(details),
            Some(ip),
        );
    }
    let rcodes: Vec<&str> = queries.iter().map(|q| q.rcode.as_str()).collect();
    let (summary, suggestion) = if rcodes.iter().all(|r| *r == "timeout") {
        (
            format!("no answer from {resolver_desc} within {:?}", per_query),
            "the DNS server does not answer: check that it runs and that UDP/TCP port 53 to it is open".to_string(),
        )
    } else if rcodes.contains(&"NXDOMAIN") && !rcodes.contains(&"NOERROR") {
        (
            format!("{host} does not exist (NXDOMAIN from {resolver_desc})"),
            format!("check the spelling of {host:?}, the search domains, and that the zone has the record"),
        )
    } else if rcodes.iter().any(|r| *r == "SERVFAIL" || *r == "REFUSED") {
        (
            format!("the resolver fails the query ({}) at {resolver_desc}", rcodes.join(", ")),
            "the resolver cannot resolve this name (upstream unreachable, DNSSEC failure or a refusing ACL): check its logs and its upstream servers".to_string(),
        )
    } else if rcodes.iter().all(|r| *r == "NOERROR") {
        (
            format!("{host} exists but has no A/AAAA record ({resolver_desc})"),
            "add an address record for the name".to_string(),
        )
    } else {
        (
            format!("{host} did not resolve ({}) via {resolver_desc}", rcodes.join(", ")),
            "check /etc/resolv.conf and the reachability of its nameservers".to_string(),
        )
    };
    (
        Layer::new("dns", Status::Fail, Some(took), summary)
            .details(details)
            .suggest(suggestion),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_and_hosts_parse() {
        let (ns, search, ndots) = parse_resolv_conf(
            "# x\nnameserver 10.0.0.1\nnameserver fe80::1%eth0\nsearch a.test b.test\noptions ndots:2 edns0\n",
        );
        assert_eq!(ns.len(), 2);
        assert_eq!(search, vec!["a.test", "b.test"]);
        assert_eq!(ndots, 2);
        let h = hosts_lookup("127.0.0.1 localhost\n10.1.1.1 db db.internal # c\n", "DB.internal");
        assert_eq!(h, vec!["10.1.1.1".parse::<IpAddr>().expect("ip")]);
    }

    #[test]
    fn responses_parse_with_compression() {
        let id = 0x1234;
        let mut m = build_query(id, "www.test", 1);
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = 2; // two answers
                  // www.test CNAME web.test (pointer to "test" at offset 16)
        m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 6, 3, b'w', b'e', b'b', 0xc0, 16]);
        let web = m.len() - 6;
        m.extend_from_slice(&[0xc0, web as u8, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 0, 0, 7]);
        let (tc, rcode, ans) = parse_response(&m, id).expect("parses");
        assert!(!tc);
        assert_eq!(rcode, "NOERROR");
        assert_eq!(ans[0].rtype, "CNAME");
        assert_eq!(ans[0].data, "web.test");
        assert_eq!(ans[1].name, "web.test");
        assert_eq!(ans[1].data, "10.0.0.7");
    }
}
