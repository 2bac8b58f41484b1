//! `/proc/net` files that more than one collector reads on a tick, read once.
//!
//! The sockstat and netstat collectors export `/proc/net/sockstat{,6}` and
//! `/proc/net/snmp`; the sockets collector reads the same three to know which
//! sock_diag dumps it can skip. Every read makes the kernel format the whole file
//! again, summing per-CPU counters (`snmp` alone is ~30 µs), so the first reader
//! of a tick leaves a copy here and a later one on the same tick takes it.
//! A reader that finds no copy of this tick (the exporting collector is disabled,
//! slowed down by the CPU budget or runs after it) reads the file itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The shared files, by path relative to the procfs root.
#[derive(Debug, Default)]
pub struct TickFiles {
    /// The tick the scheduler is on ([`TickFiles::next_tick`]); 0 before the first.
    tick: AtomicU64,
    /// (path, tick it was read on, bytes). A handful of entries: a scan is
    /// cheaper than a map, and buffers are reused from tick to tick.
    files: Mutex<Vec<(&'static str, u64, Vec<u8>)>>,
}

impl TickFiles {
    /// Starts a new tick: copies kept so far go stale.
    pub fn next_tick(&self) {
        self.tick.fetch_add(1, Ordering::AcqRel);
    }

    fn current(&self) -> u64 {
        self.tick.load(Ordering::Acquire)
    }

    /// Leaves a copy of `bytes`, just read from `rel`, for later readers this tick.
    /// Outside a tick (a collector run on its own) nothing is kept.
    pub fn keep(&self, rel: &'static str, bytes: &[u8]) {
        let tick = self.current();
        if tick == 0 {
            return;
        }
        let Ok(mut files) = self.files.lock() else { return };
        match files.iter_mut().find(|(r, _, _)| *r == rel) {
            Some((_, at, buf)) => {
                *at = tick;
                buf.clear();
                buf.extend_from_slice(bytes);
            }
            None => files.push((rel, tick, bytes.to_vec())),
        }
    }

    /// Copies this tick's bytes of `rel` into `buf`; false (and `buf` untouched)
    /// when no collector read it yet this tick.
    pub fn take_copy(&self, rel: &str, buf: &mut Vec<u8>) -> bool {
        let tick = self.current();
        let Ok(files) = self.files.lock() else { return false };
        match files.iter().find(|(r, at, _)| *r == rel && *at == tick && tick != 0) {
            Some((_, _, bytes)) => {
                buf.clear();
                buf.extend_from_slice(bytes);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_serves_its_own_tick_only() {
        let files = TickFiles::default();
        let mut buf = b"old".to_vec();
        files.keep("net/snmp", b"outside a tick");
        assert!(!files.take_copy("net/snmp", &mut buf), "nothing is kept outside a tick");
        files.next_tick();
        assert!(!files.take_copy("net/snmp", &mut buf));
        assert_eq!(buf, b"old", "a miss leaves the buffer alone");
        files.keep("net/snmp", b"Tcp: 1");
        files.keep("net/sockstat", b"TCP: inuse 1");
        assert!(files.take_copy("net/snmp", &mut buf));
        assert_eq!(buf, b"Tcp: 1");
        assert!(!files.take_copy("net/netstat", &mut buf), "only what was kept");
        files.next_tick();
        assert!(!files.take_copy("net/snmp", &mut buf), "last tick's copy is stale");
        files.keep("net/snmp", b"Tcp: 2");
        assert!(files.take_copy("net/snmp", &mut buf));
        assert_eq!(buf, b"Tcp: 2");
    }
}
