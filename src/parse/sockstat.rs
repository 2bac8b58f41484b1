//! `/proc/net/sockstat` and `sockstat6`: `TCP: inuse 5 orphan 0 tw 2 alloc 7 mem 1`.

use super::{utf8, ParseError};

#[derive(Debug, Clone, PartialEq)]
pub struct SockstatLine {
    /// `sockets`, `TCP`, `UDP`, `UDPLITE`, `RAW`, `FRAG`, `TCP6`…
    pub protocol: String,
    pub fields: Vec<(String, i64)>,
}

pub fn parse_sockstat(bytes: &[u8]) -> Result<Vec<SockstatLine>, ParseError> {
    let text = utf8(bytes)?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_ascii().is_empty() {
            continue;
        }
        let (proto, rest) = line
            .split_once(':')
            .ok_or_else(|| ParseError::line(n + 1, "no `PROTO:` prefix"))?;
        let words: Vec<&str> = rest.split_ascii_whitespace().collect();
        if words.len() % 2 != 0 {
            return Err(ParseError::line(n + 1, format!("{proto}: odd number of words")));
        }
        let mut fields = Vec::with_capacity(words.len() / 2);
        for pair in words.chunks(2) {
            let v: i64 = pair[1].parse().map_err(|_| {
                ParseError::line(n + 1, format!("{proto} {}: {:?} is not an integer", pair[0], pair[1]))
            })?;
            fields.push((pair[0].to_string(), v));
        }
        out.push(SockstatLine {
            protocol: proto.trim_ascii().to_string(),
            fields,
        });
    }
    // The kernel always prints every protocol line; an empty file is not a socket-less host.
    if out.is_empty() {
        return Err(ParseError::Format("empty file".into()));
    }
    Ok(out)
}

/// One count of one protocol line (`sockstat_value(b, "UDP6", "inuse")`), without
/// building the table: the sockets collector reads a few of them every tick to
/// skip dumps that cannot return anything. `None` when the line or the field is
/// missing or not an integer (the caller then dumps, as if it knew nothing).
pub fn sockstat_value(bytes: &[u8], protocol: &str, field: &str) -> Option<i64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let rest = text.lines().find_map(|line| {
        let (proto, rest) = line.split_once(':')?;
        (proto.trim_ascii() == protocol).then_some(rest)
    })?;
    let mut words = rest.split_ascii_whitespace();
    while let Some(name) = words.next() {
        let value = words.next()?;
        if name == field {
            return value.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_values_are_found_on_fixtures() {
        let v4 = include_bytes!("../../tests/fixtures/proc/host1/net/sockstat");
        let v6 = include_bytes!("../../tests/fixtures/proc/host1/net/sockstat6");
        assert_eq!(sockstat_value(v4, "TCP", "inuse"), Some(1));
        assert_eq!(sockstat_value(v4, "TCP", "tw"), Some(0));
        assert_eq!(sockstat_value(v4, "TCP", "mem"), Some(246));
        assert_eq!(sockstat_value(v4, "UDP", "inuse"), Some(0));
        // `UDP` must not match `UDPLITE`, nor `TCP` match `TCP6`.
        assert_eq!(
            sockstat_value(b"UDPLITE: inuse 3\nUDP: inuse 2\n", "UDP", "inuse"),
            Some(2)
        );
        assert_eq!(sockstat_value(v6, "TCP6", "inuse"), Some(0));
        assert_eq!(sockstat_value(v6, "UDP6", "inuse"), Some(0));
        assert_eq!(sockstat_value(v6, "TCP", "inuse"), None);
    }

    #[test]
    fn single_values_missing_or_malformed_are_none() {
        assert_eq!(sockstat_value(b"TCP: inuse\n", "TCP", "inuse"), None);
        assert_eq!(sockstat_value(b"TCP: inuse x tw 0\n", "TCP", "inuse"), None);
        assert_eq!(sockstat_value(b"TCP: inuse 1\n", "TCP", "tw"), None);
        assert_eq!(sockstat_value(b"", "TCP", "inuse"), None);
        assert_eq!(sockstat_value(b"\xff\xfe", "TCP", "inuse"), None);
    }

    #[test]
    fn parses_every_pair() {
        let l = parse_sockstat(b"sockets: used 10\nTCP: inuse 1 orphan 0 tw 2 alloc 3 mem 4\n").expect("ok");
        assert_eq!(l[1].protocol, "TCP");
        assert_eq!(l[1].fields[2], ("tw".into(), 2));
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(parse_sockstat(b"TCP: inuse\n").is_err());
        assert!(parse_sockstat(b"TCP inuse 1\n").is_err());
        assert!(parse_sockstat(b"TCP: inuse x\n").is_err());
        assert!(parse_sockstat(b"").is_err());
        assert!(parse_sockstat(b"\n").is_err());
    }
}
