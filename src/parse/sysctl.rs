//! Values under `/proc/sys`: one or more whitespace-separated integers.

use super::{utf8, ParseError};

pub fn parse_sysctl_values(bytes: &[u8]) -> Result<Vec<i64>, ParseError> {
    let text = utf8(bytes)?;
    let vals = text
        .split_ascii_whitespace()
        .map(|w| {
            w.parse::<i64>()
                .map_err(|_| ParseError::Format(format!("{w:?} is not an integer")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if vals.is_empty() {
        return Err(ParseError::Format("empty value".into()));
    }
    Ok(vals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multiple_values() {
        assert_eq!(parse_sysctl_values(b"4096\n").expect("ok"), vec![4096]);
        assert_eq!(parse_sysctl_values(b"32768\t60999\n").expect("ok"), vec![32768, 60999]);
        assert!(parse_sysctl_values(b"\n").is_err());
        assert!(parse_sysctl_values(b"abc").is_err());
    }
}
