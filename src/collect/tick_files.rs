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

/// A file that is shared. An enum, not a path string, so that a misspelt name
/// cannot silently turn sharing off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedFile {
    Sockstat,
    Sockstat6,
    Snmp,
}

impl SharedFile {
    /// How many there are, and each one's slot in [`TickFiles`]: a new variant
    /// must be given a slot below (the match is exhaustive) and counted here.
    const COUNT: usize = 3;

    const fn slot(self) -> usize {
        match self {
            SharedFile::Sockstat => 0,
            SharedFile::Sockstat6 => 1,
            SharedFile::Snmp => 2,
        }
    }

    /// Its path relative to the procfs root.
    pub const fn rel(self) -> &'static str {
        match self {
            SharedFile::Sockstat => "net/sockstat",
            SharedFile::Sockstat6 => "net/sockstat6",
            SharedFile::Snmp => "net/snmp",
        }
    }
}

/// This tick's copies of the [`SharedFile`]s.
#[derive(Debug, Default)]
pub struct TickFiles {
    /// The tick the scheduler is on ([`TickFiles::next_tick`]); 0 before the first.
    tick: AtomicU64,
    /// Per [`SharedFile`]: the tick it was read on and its bytes. Buffers are
    /// reused from tick to tick.
    files: Mutex<[(u64, Vec<u8>); SharedFile::COUNT]>,
    /// Copies handed out so far: lets tests (and a profile) see that sharing
    /// happens at all.
    served: AtomicU64,
}

impl TickFiles {
    /// Starts a new tick: copies kept so far go stale.
    pub fn next_tick(&self) {
        self.tick.fetch_add(1, Ordering::AcqRel);
    }

    fn current(&self) -> u64 {
        self.tick.load(Ordering::Acquire)
    }

    /// Leaves a copy of `bytes`, just read from `file`, for later readers this
    /// tick. Outside a tick (a collector run on its own) nothing is kept.
    pub fn keep(&self, file: SharedFile, bytes: &[u8]) {
        let tick = self.current();
        if tick == 0 {
            return;
        }
        let Ok(mut files) = self.files.lock() else { return };
        let (at, buf) = &mut files[file.slot()];
        *at = tick;
        buf.clear();
        buf.extend_from_slice(bytes);
    }

    /// Copies this tick's bytes of `file` into `buf`; false (and `buf`
    /// untouched) when no collector read it yet this tick.
    pub fn take_copy(&self, file: SharedFile, buf: &mut Vec<u8>) -> bool {
        let tick = self.current();
        let Ok(files) = self.files.lock() else { return false };
        let (at, bytes) = &files[file.slot()];
        if tick == 0 || *at != tick {
            return false;
        }
        buf.clear();
        buf.extend_from_slice(bytes);
        self.served.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// How many copies [`Self::take_copy`] has handed out.
    pub fn copies_served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_serves_its_own_tick_only() {
        let files = TickFiles::default();
        let mut buf = b"old".to_vec();
        files.keep(SharedFile::Snmp, b"outside a tick");
        assert!(
            !files.take_copy(SharedFile::Snmp, &mut buf),
            "nothing is kept outside a tick"
        );
        files.next_tick();
        assert!(!files.take_copy(SharedFile::Snmp, &mut buf));
        assert_eq!(buf, b"old", "a miss leaves the buffer alone");
        files.keep(SharedFile::Snmp, b"Tcp: 1");
        files.keep(SharedFile::Sockstat, b"TCP: inuse 1");
        assert!(files.take_copy(SharedFile::Snmp, &mut buf));
        assert_eq!(buf, b"Tcp: 1");
        assert!(!files.take_copy(SharedFile::Sockstat6, &mut buf), "only what was kept");
        files.next_tick();
        assert!(
            !files.take_copy(SharedFile::Snmp, &mut buf),
            "last tick's copy is stale"
        );
        files.keep(SharedFile::Snmp, b"Tcp: 2");
        assert!(files.take_copy(SharedFile::Snmp, &mut buf));
        assert_eq!(buf, b"Tcp: 2");
        assert_eq!(files.copies_served(), 2);
    }
}
