//! Pure parsers: bytes in, typed values out. No I/O here, so every parser is tested
//! on fixtures and fuzzed input without a kernel.

pub mod conntrack;
pub mod netdev;
pub mod netstat;
pub mod proc_fd;
pub mod sockstat;
pub mod softnet;
pub mod sysctl;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("{0}")]
    Format(String),
}

impl ParseError {
    pub fn line(line: usize, message: impl Into<String>) -> Self {
        ParseError::Line {
            line,
            message: message.into(),
        }
    }
}

pub(crate) fn utf8(bytes: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(bytes).map_err(|e| ParseError::Format(format!("not UTF-8: {e}")))
}

/// Turns a kernel CamelCase field name into Prometheus snake_case:
/// `ListenOverflows` → `listen_overflows`, `TCPSackRecovery` → `tcp_sack_recovery`,
/// `InType3` → `in_type3`, `Ip6InReceives` → `ip6_in_receives`.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1).copied();
            // `ACKs`, `OKs`, `RTOs`: a plural acronym, not an acronym then a word.
            let plural = next == Some('s') && !chars.get(i + 2).is_some_and(|n| n.is_ascii_lowercase());
            let boundary = match prev {
                None => false,
                Some('_') => false,
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()) && !plural,
                _ => false,
            };
            if boundary {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
        } else {
            out.push('_');
        }
    }
    // promtool reads `_mac` as an abbreviated unit; the kernel means HMAC.
    out.replace("h_mac", "hmac")
}

#[cfg(test)]
mod tests {
    use super::snake_case;

    #[test]
    fn kernel_names_become_snake_case() {
        assert_eq!(snake_case("ListenOverflows"), "listen_overflows");
        assert_eq!(snake_case("TCPSackRecovery"), "tcp_sack_recovery");
        assert_eq!(snake_case("InType3"), "in_type3");
        assert_eq!(snake_case("Ip6InReceives"), "ip6_in_receives");
        assert_eq!(snake_case("InCsumErrors"), "in_csum_errors");
        assert_eq!(snake_case("MPCapableSYNRX"), "mp_capable_synrx");
        assert_eq!(snake_case("TCPMD5NotFound"), "tcpmd5_not_found");
        assert_eq!(snake_case("RtoMin"), "rto_min");
        assert_eq!(snake_case("MPJoinAckHMacFailure"), "mp_join_ack_hmac_failure");
        assert_eq!(snake_case("DelayedACKs"), "delayed_acks");
        assert_eq!(snake_case("ReasmOKs"), "reasm_oks");
        assert_eq!(snake_case("TCPSpuriousRTOs"), "tcp_spurious_rtos");
        assert_eq!(snake_case("PAWSActive"), "paws_active");
    }
}
