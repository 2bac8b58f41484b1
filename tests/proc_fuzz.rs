//! Property tests of the `/proc` and `/sys` text parsers (`src/parse/`): arbitrary
//! bytes and text, and the captured `host1` / `future-kernel` files truncated or
//! mutated line by line and token by token, give `Ok` or a `ParseError`, never a
//! panic. `PROPTEST_CASES` overrides the per-property case count.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;

use netsight::parse::conntrack::{parse_nf_conntrack_stat, proc_stat_name};
use netsight::parse::netdev::{parse_proc_net_dev, parse_speed_bits, parse_u64_attr};
use netsight::parse::netstat::{parse_mib_table, parse_snmp6};
use netsight::parse::sockstat::parse_sockstat;
use netsight::parse::softnet::parse_softnet;
use netsight::parse::sysctl::parse_sysctl_values;
use netsight::parse::{snake_case, ParseError};

/// Parses and reports how many records came out (`None` on a typed error).
type Parse = fn(&[u8]) -> Result<usize, ParseError>;

struct Seed {
    name: &'static str,
    bytes: &'static [u8],
    parse: Parse,
}

fn dev(b: &[u8]) -> Result<usize, ParseError> {
    parse_proc_net_dev(b).map(|v| v.len())
}
fn mib(b: &[u8]) -> Result<usize, ParseError> {
    parse_mib_table(b).map(|v| v.len())
}
fn snmp6(b: &[u8]) -> Result<usize, ParseError> {
    parse_snmp6(b).map(|v| v.len())
}
fn sockstat(b: &[u8]) -> Result<usize, ParseError> {
    parse_sockstat(b).map(|v| v.len())
}
fn softnet(b: &[u8]) -> Result<usize, ParseError> {
    parse_softnet(b).map(|v| v.len())
}
fn ct_stat(b: &[u8]) -> Result<usize, ParseError> {
    parse_nf_conntrack_stat(b).map(|rows| {
        for r in &rows {
            for (name, _) in &r.fields {
                let _ = proc_stat_name(name);
            }
        }
        rows.len()
    })
}
fn sysctl(b: &[u8]) -> Result<usize, ParseError> {
    parse_sysctl_values(b).map(|v| v.len())
}

macro_rules! host1 {
    ($path:literal) => {
        include_bytes!(concat!("fixtures/proc/host1/", $path))
    };
}

static SEEDS: &[Seed] = &[
    Seed {
        name: "net/dev",
        bytes: host1!("net/dev"),
        parse: dev,
    },
    Seed {
        name: "net/snmp",
        bytes: host1!("net/snmp"),
        parse: mib,
    },
    Seed {
        name: "net/netstat",
        bytes: host1!("net/netstat"),
        parse: mib,
    },
    Seed {
        name: "net/snmp6",
        bytes: host1!("net/snmp6"),
        parse: snmp6,
    },
    Seed {
        name: "net/sockstat",
        bytes: host1!("net/sockstat"),
        parse: sockstat,
    },
    Seed {
        name: "net/sockstat6",
        bytes: host1!("net/sockstat6"),
        parse: sockstat,
    },
    Seed {
        name: "net/softnet_stat",
        bytes: host1!("net/softnet_stat"),
        parse: softnet,
    },
    Seed {
        name: "net/stat/nf_conntrack",
        bytes: host1!("net/stat/nf_conntrack"),
        parse: ct_stat,
    },
    Seed {
        name: "sys/net/ipv4/tcp_rmem",
        bytes: host1!("sys/net/ipv4/tcp_rmem"),
        parse: sysctl,
    },
];

fn config(default_cases: u32) -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default_cases),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Every record (a line, a MIB group, a sysctl value) takes at least one byte; an
/// error says why.
fn sane(input: &[u8], r: &Result<usize, ParseError>) -> Result<(), TestCaseError> {
    match r {
        Ok(n) => prop_assert!(*n <= input.len(), "{n} records from {} bytes", input.len()),
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    Ok(())
}

#[derive(Clone, Debug)]
enum Edit {
    DropLine(Index),
    DupLine(Index),
    SwapLines(Index, Index),
    /// Replaces one whitespace-separated token of a line.
    SetToken(Index, Index, String),
    DropToken(Index, Index),
    InsertLine(Index, String),
    Truncate(Index),
    Xor(Index, u8),
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("-1".to_string()),
        Just("18446744073709551616".to_string()),
        Just("ffffffffffffffffff".to_string()),
        Just("0x10".to_string()),
        Just(":".to_string()),
        Just("Tcp:".to_string()),
        Just("inuse".to_string()),
        "[0-9a-f]{1,20}",
        "[ -~]{0,12}",
        "\\PC{0,6}",
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        1 => any::<Index>().prop_map(Edit::DropLine),
        1 => any::<Index>().prop_map(Edit::DupLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        3 => (any::<Index>(), any::<Index>(), token()).prop_map(|(l, t, s)| Edit::SetToken(l, t, s)),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(l, t)| Edit::DropToken(l, t)),
        1 => (any::<Index>(), "[ -~\t]{0,60}").prop_map(|(l, s)| Edit::InsertLine(l, s)),
        1 => any::<Index>().prop_map(Edit::Truncate),
        1 => (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Edit::Xor(i, x)),
    ]
}

fn apply(bytes: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    let mut tail: Vec<Edit> = Vec::new();
    for e in edits {
        let n = lines.len();
        match e {
            Edit::DropLine(i) if n > 0 => {
                lines.remove(i.index(n));
            }
            Edit::DupLine(i) if n > 0 => {
                let at = i.index(n);
                let copy = lines[at].clone();
                lines.insert(at, copy);
            }
            Edit::SwapLines(a, b) if n > 0 => lines.swap(a.index(n), b.index(n)),
            Edit::SetToken(l, t, s) if n > 0 => {
                let line = &mut lines[l.index(n)];
                let mut toks: Vec<Vec<u8>> = line.split(|&b| b == b' ').map(<[u8]>::to_vec).collect();
                let k = toks.len();
                toks[t.index(k)] = s.as_bytes().to_vec();
                *line = toks.join(&b' ');
            }
            Edit::DropToken(l, t) if n > 0 => {
                let line = &mut lines[l.index(n)];
                let mut toks: Vec<Vec<u8>> = line.split(|&b| b == b' ').map(<[u8]>::to_vec).collect();
                let k = toks.len();
                toks.remove(t.index(k));
                *line = toks.join(&b' ');
            }
            Edit::InsertLine(l, s) => {
                let at = l.index(n + 1);
                lines.insert(at, s.as_bytes().to_vec());
            }
            Edit::Truncate(_) | Edit::Xor(..) => tail.push(e.clone()),
            _ => {}
        }
    }
    let mut out = lines.join(&b'\n');
    for e in tail {
        match e {
            Edit::Truncate(i) => {
                let n = i.index(out.len() + 1);
                out.truncate(n);
            }
            Edit::Xor(i, x) if !out.is_empty() => {
                let n = out.len();
                out[i.index(n)] ^= x;
            }
            _ => {}
        }
    }
    out
}

#[test]
fn seeds_parse() {
    for s in SEEDS {
        let n = (s.parse)(s.bytes).unwrap_or_else(|e| panic!("{}: {e}", s.name));
        assert!(n > 0, "{}", s.name);
    }
}

#[test]
fn every_prefix_of_every_seed() {
    for s in SEEDS {
        for i in 0..s.bytes.len() {
            let _ = (s.parse)(&s.bytes[..i]);
        }
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn arbitrary_bytes(s in 0..SEEDS.len(), bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let r = (SEEDS[s].parse)(&bytes);
        sane(&bytes, &r)?;
    }

    #[test]
    fn arbitrary_text(s in 0..SEEDS.len(), text in "[ -~\t\n]{0,300}") {
        let r = (SEEDS[s].parse)(text.as_bytes());
        sane(text.as_bytes(), &r)?;
    }

    #[test]
    fn mutated_fixtures(s in 0..SEEDS.len(), edits in prop::collection::vec(edit(), 1..5)) {
        let bytes = apply(SEEDS[s].bytes, &edits);
        let r = (SEEDS[s].parse)(&bytes);
        sane(&bytes, &r)?;
    }

    #[test]
    fn small_helpers(text in "\\PC{0,40}", bytes in prop::collection::vec(any::<u8>(), 0..24)) {
        let out = snake_case(&text);
        if text.is_ascii() {
            prop_assert!(out.is_ascii());
        }
        let _ = proc_stat_name(&text);
        let _ = (parse_speed_bits(&bytes), parse_u64_attr(&bytes));
        if let Some(bits) = parse_speed_bits(text.as_bytes()) {
            prop_assert!(bits > 0.0);
        }
    }
}
