//! `/proc/net/stat/nf_conntrack` (kernels built with `CONFIG_NF_CONNTRACK_PROCFS`):
//! a header line of column names, then one line of hexadecimal values per possible
//! CPU. The column set changed over releases (`clashres` and `chainlength` are recent,
//! `searched`/`new`/`ignore`/`delete`/`delete_list` are printed as zeros since Linux
//! 4.10), so columns are kept by name, unknown ones included.

use super::{snake_case, utf8, ParseError};

/// One CPU's row, `(column name, value)` in header order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcCtCpu {
    /// Row index. The kernel prints one row per *possible* CPU in order, so this is
    /// the CPU number whenever the possible mask has no holes (every common system).
    pub cpu: u32,
    pub fields: Vec<(String, u64)>,
}

pub fn parse_nf_conntrack_stat(bytes: &[u8]) -> Result<Vec<ProcCtCpu>, ParseError> {
    let text = utf8(bytes)?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim_ascii().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(ParseError::Format("empty file: no header line".into()));
    };
    let names: Vec<&str> = header.split_ascii_whitespace().collect();
    let is_name = |n: &str| {
        n.starts_with(|c: char| c.is_ascii_alphabetic()) && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if let Some(bad) = names.iter().find(|n| !is_name(n)) {
        return Err(ParseError::line(1, format!("header column {bad:?} is not a name")));
    }
    let mut out = Vec::new();
    for (n, line) in lines {
        let vals = line
            .split_ascii_whitespace()
            .map(|w| u64::from_str_radix(w, 16))
            .collect::<Result<Vec<u64>, _>>()
            .map_err(|e| ParseError::line(n + 1, format!("not hexadecimal: {e}")))?;
        if vals.len() != names.len() {
            return Err(ParseError::line(
                n + 1,
                format!("{} values for {} header columns", vals.len(), names.len()),
            ));
        }
        out.push(ProcCtCpu {
            cpu: out.len() as u32,
            fields: names.iter().map(|s| s.to_string()).zip(vals).collect(),
        });
    }
    Ok(out)
}

/// Column names of the procfs table that are not per-CPU statistics, or that the
/// kernel no longer maintains (always 0 since Linux 4.10, not sent over ctnetlink).
const SKIPPED: &[&str] = &["entries", "searched", "new", "ignore", "delete", "delete_list"];

/// Maps a procfs column to the name ctnetlink (and `conntrack -S`) uses for the same
/// counter, so both sources produce the same metrics. `None` for skipped columns;
/// unknown future columns are kept, in snake_case.
pub fn proc_stat_name(column: &str) -> Option<String> {
    if SKIPPED.contains(&column) {
        return None;
    }
    Some(
        match column {
            "icmp_error" => "error",
            "clashres" => "clash_resolve",
            "chainlength" => "chain_too_long",
            other => return Some(snake_case(other)),
        }
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODERN: &[u8] = b"entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000004  00000001 0000000a 00000000 00000002 00000000 00000000 00000000 00000004 00000000 00000000 00000000 00000003  00000000 00000000 00000000 0000001f
00000004  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000  00000000 00000000 00000000 00000000
";

    #[test]
    fn modern_table_by_column_name() {
        let rows = parse_nf_conntrack_stat(MODERN).expect("ok");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].cpu, 1);
        let get = |name: &str| rows[0].fields.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        assert_eq!(get("entries"), Some(4));
        assert_eq!(get("found"), Some(10));
        assert_eq!(get("icmp_error"), Some(3));
        assert_eq!(get("search_restart"), Some(0x1f));
        assert_eq!(rows[0].fields.len(), 17);
    }

    #[test]
    fn old_table_without_new_columns() {
        let old = b"entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
                    0000002a  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000  00000000 00000000 00000000 00000000\n";
        let rows = parse_nf_conntrack_stat(old).expect("ok");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].fields[0], ("entries".to_string(), 42));
    }

    #[test]
    fn header_only_is_no_rows() {
        assert_eq!(parse_nf_conntrack_stat(b"entries found\n").expect("ok"), vec![]);
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(parse_nf_conntrack_stat(b"").is_err());
        assert!(parse_nf_conntrack_stat(b"\n\n").is_err());
        assert!(parse_nf_conntrack_stat(b"entries found\n0001\n").is_err());
        assert!(parse_nf_conntrack_stat(b"entries found\n0001 zz\n").is_err());
        assert!(parse_nf_conntrack_stat(b"entries found\n0001 0002 0003\n").is_err());
        assert!(parse_nf_conntrack_stat(b"00000001 00000002\n00000001 00000002\n").is_err());
        assert!(parse_nf_conntrack_stat(b"entries found\n0001 fffffffffffffffff\n").is_err());
        assert!(parse_nf_conntrack_stat(&[0xff, 0xfe, b'\n']).is_err());
    }

    #[test]
    fn truncated_prefixes_never_panic() {
        for i in 0..MODERN.len() {
            let _ = parse_nf_conntrack_stat(&MODERN[..i]);
        }
    }

    #[test]
    fn columns_map_to_ctnetlink_names() {
        assert_eq!(proc_stat_name("entries"), None);
        assert_eq!(proc_stat_name("new"), None);
        assert_eq!(proc_stat_name("searched"), None);
        assert_eq!(proc_stat_name("found").as_deref(), Some("found"));
        assert_eq!(proc_stat_name("icmp_error").as_deref(), Some("error"));
        assert_eq!(proc_stat_name("clashres").as_deref(), Some("clash_resolve"));
        assert_eq!(proc_stat_name("chainlength").as_deref(), Some("chain_too_long"));
        assert_eq!(proc_stat_name("expect_new").as_deref(), Some("expect_new"));
        assert_eq!(proc_stat_name("insert_failed").as_deref(), Some("insert_failed"));
        assert_eq!(proc_stat_name("FutureThing").as_deref(), Some("future_thing"));
    }
}
