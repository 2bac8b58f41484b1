//! `/proc/net/softnet_stat`: one line per online CPU, hexadecimal columns. The number
//! of columns grew over kernel releases (9 on 2.6, 11 with flow_limit, 13 with backlog
//! length and CPU index), so every column after the first three is optional.

use super::{utf8, ParseError};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SoftnetCpu {
    /// CPU number: column 13 when the kernel prints it, else the line index.
    pub cpu: u32,
    pub processed: u64,
    pub dropped: u64,
    pub time_squeeze: u64,
    pub received_rps: Option<u64>,
    pub flow_limit_count: Option<u64>,
    pub backlog_len: Option<u64>,
}

pub fn parse_softnet(bytes: &[u8]) -> Result<Vec<SoftnetCpu>, ParseError> {
    let text = utf8(bytes)?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim_ascii().is_empty()) {
        let cols = line
            .split_ascii_whitespace()
            .map(|w| u64::from_str_radix(w, 16))
            .collect::<Result<Vec<u64>, _>>()
            .map_err(|e| ParseError::line(n + 1, format!("not hexadecimal: {e}")))?;
        if cols.len() < 3 {
            return Err(ParseError::line(
                n + 1,
                format!("{} columns, need at least 3", cols.len()),
            ));
        }
        let col = |i: usize| cols.get(i).copied();
        out.push(SoftnetCpu {
            cpu: col(12).map(|c| c as u32).unwrap_or(out.len() as u32),
            processed: cols[0],
            dropped: cols[1],
            time_squeeze: cols[2],
            received_rps: col(9),
            flow_limit_count: col(10),
            backlog_len: col(11),
        });
    }
    // One line per online CPU: there is always at least one.
    if out.is_empty() {
        return Err(ParseError::Format("empty file".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modern_line_with_cpu_index() {
        let v = parse_softnet(b"0000a000 00000001 00000002 00000000 00000000 00000000 00000000 00000000 00000000 00000003 00000004 00000005 00000001\n").expect("ok");
        assert_eq!(v[0].processed, 0xa000);
        assert_eq!(v[0].cpu, 1);
        assert_eq!(v[0].backlog_len, Some(5));
    }

    #[test]
    fn old_short_lines_leave_new_columns_absent() {
        let v = parse_softnet(b"00000010 00000000 00000001 0 0 0 0 0 0\n").expect("ok");
        assert_eq!(v[0].flow_limit_count, None);
        assert_eq!(v[0].cpu, 0);
        assert!(parse_softnet(b"0001 zz 00\n").is_err());
        assert!(parse_softnet(b"0001\n").is_err());
        assert!(parse_softnet(b"").is_err());
    }
}
