//! An independent reading of the kernel's MIB files (`/proc/net/snmp`, `netstat`,
//! `snmp6`) and the collector's documented naming, for tests that check the
//! `netstat` collector against the files themselves.

use netsight::parse::snake_case;

/// `(group, field, value)` from header/value line pairs.
pub fn parse_table(text: &str) -> Vec<(String, String, i64)> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len() % 2, 0, "odd number of lines");
    let mut out = Vec::new();
    for pair in lines.chunks(2) {
        let (g, names) = pair[0].split_once(':').expect("header");
        let (g2, vals) = pair[1].split_once(':').expect("values");
        assert_eq!(g, g2);
        let names: Vec<&str> = names.split_whitespace().collect();
        let vals: Vec<&str> = vals.split_whitespace().collect();
        assert_eq!(names.len(), vals.len(), "{g}");
        for (n, v) in names.iter().zip(vals) {
            out.push((g.to_string(), n.to_string(), v.parse().expect("integer")));
        }
    }
    out
}

/// `/proc/net/snmp6`: the group is the name up to and including the first `6`.
pub fn parse_snmp6_file(text: &str) -> Vec<(String, String, i64)> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut it = l.split_whitespace();
            let name = it.next().expect("name");
            let v: i64 = it.next().expect("value").parse().expect("integer");
            let i = name.find('6').expect("6 in snmp6 name") + 1;
            (name[..i].to_string(), name[i..].to_string(), v)
        })
        .collect()
}

/// The metric a MIB field becomes: name, JSON type and scaled value (the collector's
/// documented mapping: a handful of Tcp/Ip gauges, Rto* in seconds, the rest counters).
pub fn mib_metric(group: &str, field: &str, v: i64) -> (String, &'static str, f64) {
    let f = if (group, field) == ("Ip", "DefaultTTL") {
        "default_ttl".to_string()
    } else {
        snake_case(field)
    };
    let base = format!("netsight_netstat_{}_{f}", group.to_ascii_lowercase());
    match (group, field) {
        ("Tcp", "RtoMin" | "RtoMax") => (format!("{base}_seconds"), "gauge", v as f64 * 1e-3),
        ("Tcp", "RtoAlgorithm" | "MaxConn" | "CurrEstab") | ("Ip", "Forwarding" | "DefaultTTL") => {
            (base, "gauge", v as f64)
        }
        _ => (format!("{base}_total"), "counter", v as f64),
    }
}
