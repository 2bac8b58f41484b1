//! The kernel's MIB tables: `/proc/net/snmp` and `/proc/net/netstat` print a header
//! line of field names and a value line per group (`Tcp: RtoAlgorithm RtoMin …` then
//! `Tcp: 1 200 …`); `/proc/net/snmp6` prints `Ip6InReceives 123` per line.
//!
//! Written by hand because `procfs` drops fields it does not know and has no parser
//! for `/proc/net/netstat`; this one keeps every field, unknown future ones included.

use super::{utf8, ParseError};

#[derive(Debug, Clone, PartialEq)]
pub struct MibGroup {
    /// `Tcp`, `TcpExt`, `Ip6`…
    pub name: String,
    pub fields: Vec<(String, i64)>,
}

/// Calls `visit(group, field, value)` for every field of a `/proc/net/snmp`-style
/// table, borrowing the names from `bytes`. On `Err` some fields may already
/// have been visited (the caller discards the tick's output then).
pub fn visit_mib_table<F>(bytes: &[u8], mut visit: F) -> Result<(), ParseError>
where
    F: FnMut(&str, &str, i64),
{
    visit_mib_rows(bytes, |group, names, values| {
        for (n, v) in names.split_ascii_whitespace().zip(values) {
            visit(group, n, *v);
        }
    })
}

/// Calls `visit(group, header, values)` for every header/value line pair of a
/// `/proc/net/snmp`-style table: `header` is the header line after `Group:`
/// (the field names, as printed) and `values` its parsed values, one per name.
/// The netstat collector reads ~400 fields every tick; a header line the same
/// as last tick's means the same fields in the same order, so one comparison of
/// the line stands for ~40 comparisons of names.
pub fn visit_mib_rows<F>(bytes: &[u8], mut visit: F) -> Result<(), ParseError>
where
    F: FnMut(&str, &str, &[i64]),
{
    let text = utf8(bytes)?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim_ascii().is_empty());
    let mut any = false;
    let mut values: Vec<i64> = Vec::new();
    while let Some((hn, header)) = lines.next() {
        let (hname, hfields) = split_group(header, hn + 1)?;
        let Some((vn, value_line)) = lines.next() else {
            return Err(ParseError::line(
                hn + 1,
                format!("{hname}: header without a value line"),
            ));
        };
        let (vname, vfields) = split_group(value_line, vn + 1)?;
        if vname != hname {
            return Err(ParseError::line(
                vn + 1,
                format!("value line for {vname:?} follows header for {hname:?}"),
            ));
        }
        values.clear();
        let (mut names, mut vals) = (hfields.split_ascii_whitespace(), vfields.split_ascii_whitespace());
        loop {
            match (names.next(), vals.next()) {
                (Some(n), Some(v)) => values.push(
                    v.parse()
                        .map_err(|_| ParseError::line(vn + 1, format!("{hname} {n}: {v:?} is not an integer")))?,
                ),
                (None, None) => break,
                _ => {
                    return Err(ParseError::line(
                        vn + 1,
                        format!(
                            "{hname}: {} names but {} values",
                            hfields.split_ascii_whitespace().count(),
                            vfields.split_ascii_whitespace().count()
                        ),
                    ))
                }
            }
        }
        visit(hname, hfields, &values);
        any = true;
    }
    // The kernel always prints its groups; an empty file means nothing was read.
    if !any {
        return Err(ParseError::Format("empty file".into()));
    }
    Ok(())
}

/// Parses the header-line / value-line format of `/proc/net/snmp` and `/proc/net/netstat`
/// into owned groups ([`visit_mib_table`] collected).
pub fn parse_mib_table(bytes: &[u8]) -> Result<Vec<MibGroup>, ParseError> {
    collect_groups(|visit| visit_mib_table(bytes, visit))
}

/// The fields a visitor parser reports, grouped by consecutive group name.
fn collect_groups(
    parse: impl FnOnce(&mut dyn FnMut(&str, &str, i64)) -> Result<(), ParseError>,
) -> Result<Vec<MibGroup>, ParseError> {
    let mut groups: Vec<MibGroup> = Vec::new();
    parse(&mut |group, field, v| match groups.last_mut() {
        Some(g) if g.name == group => g.fields.push((field.to_string(), v)),
        _ => groups.push(MibGroup {
            name: group.to_string(),
            fields: vec![(field.to_string(), v)],
        }),
    })?;
    Ok(groups)
}

/// One field of one group of a `/proc/net/snmp`-style table (`mib_value(b, "Tcp",
/// "InSegs")`), without building the table: the sockets collector reads two TCP
/// counters every tick. `None` when the group, the field or its value is missing
/// or malformed.
pub fn mib_value(bytes: &[u8], group: &str, field: &str) -> Option<i64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.lines().filter_map(|l| {
        let (g, rest) = l.split_once(':')?;
        Some((g.trim_ascii(), rest))
    });
    // Header and value lines come in pairs; the first line of a group is its header.
    let (_, header) = lines.by_ref().find(|(g, _)| *g == group)?;
    let (vgroup, values) = lines.next()?;
    if vgroup != group {
        return None;
    }
    let i = header.split_ascii_whitespace().position(|n| n == field)?;
    values.split_ascii_whitespace().nth(i)?.parse().ok()
}

fn split_group(line: &str, lineno: usize) -> Result<(&str, &str), ParseError> {
    line.split_once(':')
        .map(|(g, rest)| (g.trim_ascii(), rest))
        .ok_or_else(|| ParseError::line(lineno, "no `Group:` prefix"))
}

/// [`parse_snmp6`] as a visitor (`visit(group, field, value)`), borrowing the
/// names from `bytes`.
pub fn visit_snmp6<F>(bytes: &[u8], mut visit: F) -> Result<(), ParseError>
where
    F: FnMut(&str, &str, i64),
{
    let text = utf8(bytes)?;
    for (n, line) in text.lines().enumerate() {
        let mut it = line.split_ascii_whitespace();
        let Some(name) = it.next() else { continue };
        let Some(value) = it.next() else {
            return Err(ParseError::line(n + 1, format!("{name}: no value")));
        };
        let v: i64 = value
            .parse()
            .map_err(|_| ParseError::line(n + 1, format!("{name}: {value:?} is not an integer")))?;
        let Some(split) = name.find('6') else {
            return Err(ParseError::line(n + 1, format!("{name}: no IPv6 group prefix")));
        };
        let (group, field) = name.split_at(split + 1);
        visit(group, field, v);
    }
    Ok(())
}

/// Parses `/proc/net/snmp6`: one `NameValue` pair per line, the group being the name
/// up to and including its `6` (`Ip6`, `Icmp6`, `Udp6`, `UdpLite6`).
pub fn parse_snmp6(bytes: &[u8]) -> Result<Vec<MibGroup>, ParseError> {
    collect_groups(|visit| visit_snmp6(bytes, visit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_value_lines_pair_up() {
        let t = b"Tcp: RtoAlgorithm RtoMin MaxConn\nTcp: 1 200 -1\nUdp: InDatagrams\nUdp: 5\n";
        let g = parse_mib_table(t).expect("parse");
        assert_eq!(g.len(), 2);
        assert_eq!(
            g[0].fields,
            vec![
                ("RtoAlgorithm".into(), 1),
                ("RtoMin".into(), 200),
                ("MaxConn".into(), -1)
            ]
        );
        assert_eq!(g[1].name, "Udp");
    }

    #[test]
    fn single_values_are_found_on_fixtures() {
        let snmp = include_bytes!("../../tests/fixtures/proc/host1/net/snmp");
        assert_eq!(mib_value(snmp, "Tcp", "ActiveOpens"), Some(28));
        assert_eq!(mib_value(snmp, "Tcp", "InSegs"), Some(2472));
        assert_eq!(mib_value(snmp, "Tcp", "MaxConn"), Some(-1));
        assert_eq!(mib_value(snmp, "Tcp", "NoSuchField"), None);
        assert_eq!(mib_value(snmp, "NoSuchGroup", "InSegs"), None);
        // The value line must belong to the header's group.
        assert_eq!(mib_value(b"Tcp: A B\nUdp: 1 2\n", "Tcp", "B"), None);
        assert_eq!(mib_value(b"Tcp: A B\nTcp: 1\n", "Tcp", "B"), None);
        assert_eq!(mib_value(b"Tcp: A B\nTcp: 1 x\n", "Tcp", "B"), None);
        assert_eq!(mib_value(b"Tcp: A B\n", "Tcp", "A"), None);
    }

    /// The visitors see exactly what the table parsers return, in order, and fail
    /// where they fail.
    #[test]
    fn visitors_agree_with_the_parsers() {
        fn flat(groups: Vec<MibGroup>) -> Vec<(String, String, i64)> {
            groups
                .into_iter()
                .flat_map(|g| {
                    let name = g.name;
                    g.fields.into_iter().map(move |(f, v)| (name.clone(), f, v))
                })
                .collect()
        }
        let collect = |bytes: &[u8], six: bool| {
            let mut v = Vec::new();
            let push = |g: &str, f: &str, x: i64| v.push((g.to_string(), f.to_string(), x));
            let r = if six {
                visit_snmp6(bytes, push)
            } else {
                visit_mib_table(bytes, push)
            };
            r.map(|()| v)
        };
        for dir in ["host1", "future-kernel"] {
            let root = format!("{}/tests/fixtures/proc/{dir}/net", env!("CARGO_MANIFEST_DIR"));
            for file in ["snmp", "netstat"] {
                let b = std::fs::read(format!("{root}/{file}")).expect("fixture");
                assert_eq!(
                    collect(&b, false).ok(),
                    parse_mib_table(&b).ok().map(flat),
                    "{dir}/{file}"
                );
            }
            let b = std::fs::read(format!("{root}/snmp6")).expect("fixture");
            assert_eq!(collect(&b, true).ok(), parse_snmp6(&b).ok().map(flat), "{dir}/snmp6");
        }
        for bad in [
            &b"Tcp: A B\n"[..],
            b"Tcp: A B\nTcp: 1\n",
            b"Tcp: A\nUdp: 1\n",
            b"Tcp: A\nTcp: x\n",
            b"",
            b"Tcp: A\nTcp: 1 2\n",
        ] {
            assert!(collect(bad, false).is_err(), "{bad:?}");
            assert!(parse_mib_table(bad).is_err(), "{bad:?}");
        }
        for bad in [&b"Ip6InReceives\n"[..], b"Ip6InReceives x\n", b"IpInReceives 1\n"] {
            assert!(collect(bad, true).is_err(), "{bad:?}");
            assert!(parse_snmp6(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn truncated_table_is_an_error() {
        assert!(parse_mib_table(b"Tcp: A B\n").is_err());
        assert!(parse_mib_table(b"Tcp: A B\nTcp: 1\n").is_err());
        assert!(parse_mib_table(b"Tcp: A\nUdp: 1\n").is_err());
        assert!(parse_mib_table(b"Tcp: A\nTcp: x\n").is_err());
        assert!(parse_mib_table(b"").is_err());
    }

    #[test]
    fn snmp6_groups_by_prefix() {
        let g = parse_snmp6(b"Ip6InReceives 4\nIp6InOctets 100\nIcmp6InMsgs 2\nUdpLite6InErrors 0\n").expect("parse");
        let names: Vec<_> = g.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["Ip6", "Icmp6", "UdpLite6"]);
        assert_eq!(g[0].fields[1], ("InOctets".into(), 100));
    }
}
