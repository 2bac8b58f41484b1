//! `/proc/<pid>/fd` names and link targets.

/// A `/proc` entry name that is a process id.
pub fn parse_pid(name: &[u8]) -> Option<u32> {
    if name.is_empty() || name.len() > 10 || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

/// `socket:[12345]` → 12345 (truncated to 32 bits, as sock_diag reports it).
pub fn parse_socket_link(link: &[u8]) -> Option<u32> {
    let rest = link.strip_prefix(b"socket:[")?;
    let end = rest.iter().position(|&b| b == b']')?;
    let digits = rest.get(..end)?;
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((d - b'0') as u64)?;
    }
    Some(v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_links_parse() {
        assert_eq!(parse_socket_link(b"socket:[12345]"), Some(12345));
        assert_eq!(
            parse_socket_link(b"socket:[4294967297]"),
            Some(1),
            "truncated to 32 bits"
        );
        assert_eq!(parse_socket_link(b"socket:[]"), None);
        assert_eq!(parse_socket_link(b"socket:[12"), None);
        assert_eq!(parse_socket_link(b"socket:[1a]"), None);
        assert_eq!(parse_socket_link(b"pipe:[123]"), None);
        assert_eq!(parse_socket_link(b"/dev/null"), None);
        assert_eq!(parse_socket_link(b"socket:[99999999999999999999999]"), None);
        assert_eq!(parse_pid(b"123"), Some(123));
        assert_eq!(parse_pid(b"self"), None);
        assert_eq!(parse_pid(b""), None);
        assert_eq!(parse_pid(b"99999999999"), None);
    }
}
