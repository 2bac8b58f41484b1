//! Collectors and the scheduler that runs them on every tick.
//!
//! Each collector lives in its own file and implements [`Collector`]. A collector is
//! a thin adapter: it reads bytes (a `/proc` file, a netlink dump), hands them to a
//! pure parser in [`crate::parse`] or [`crate::netlink`], and emits samples.

pub mod conntrack;
pub mod netdev;
pub mod netlink_socket;
pub mod netstat;
pub mod nftables;
pub mod procmap;
pub mod scheduler;
pub mod sockets;
pub mod sockstat;
pub mod softnet;
pub mod sysctl;
pub mod tick_files;

use std::io;
use std::path::{Path, PathBuf};

use crate::catalog::{CollectorDoc, MetricDesc, MetricKind};
use crate::config::Config;
use crate::parse::ParseError;
use crate::snapshot::Emitter;

pub use scheduler::Scheduler;

/// Where a collector reads the kernel from. Roots are configurable so collectors run
/// on captured fixture trees in tests.
#[derive(Debug, Clone)]
pub struct CollectContext {
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
    /// Files read once a tick for every collector that needs them.
    pub tick_files: std::sync::Arc<tick_files::TickFiles>,
}

/// CPU time (user + system) the calling thread has used so far; zero if the
/// clock cannot be read.
pub fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own; the clock id is valid.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

impl CollectContext {
    pub fn new(procfs: impl Into<PathBuf>, sysfs: impl Into<PathBuf>) -> Self {
        CollectContext {
            procfs: procfs.into(),
            sysfs: sysfs.into(),
            tick_files: Default::default(),
        }
    }

    /// True when reading the live kernel (netlink sources are only used then).
    pub fn is_live(&self) -> bool {
        self.procfs == Path::new("/proc")
    }

    pub fn proc_path(&self, rel: &str) -> PathBuf {
        self.procfs.join(rel)
    }

    pub fn sys_path(&self, rel: &str) -> PathBuf {
        self.sysfs.join(rel)
    }

    pub fn read_proc(&self, rel: &str) -> Result<Vec<u8>, CollectError> {
        read_file(&self.proc_path(rel))
    }
}

/// How often a collector re-reads the kernel settings it reports beside its
/// counters (`tcp_mem`, `nf_conntrack_max`…): settings change rarely, each is a
/// `/proc/sys` read, and the last values are repeated in between (the sysctl
/// collector has its own `interval`).
pub const SETTINGS_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// Values read at most every [`SETTINGS_REFRESH`]; a failed read is not kept, so
/// it is tried again on the next tick.
pub struct Settings<T> {
    last: Option<(std::time::Instant, T)>,
}

impl<T> Default for Settings<T> {
    fn default() -> Self {
        Settings { last: None }
    }
}

impl<T> Settings<T> {
    /// The values, read with `read` when none are kept or they are
    /// [`SETTINGS_REFRESH`] old.
    pub fn get<E>(&mut self, read: impl FnOnce() -> Result<T, E>) -> Result<&T, E> {
        let kept = match self.last.take() {
            Some(kept) if kept.0.elapsed() < SETTINGS_REFRESH => kept,
            _ => (std::time::Instant::now(), read()?),
        };
        Ok(&self.last.insert(kept).1)
    }
}

/// Files a collector reads every tick, kept open and read again from offset 0.
///
/// `/proc` and sysfs generate a file's contents anew on each read from offset 0,
/// so the bytes are as current as after a fresh `open`, and a tick saves the
/// path lookup, open, stat and close of each file: for the small /proc files of
/// an idle tick that is a third to half of the cost of reading them. A /proc/net
/// file stays bound to the network namespace it was opened in; netsight never
/// changes namespace after start (the sockets collector, which must match its
/// sock_diag socket's namespace, opens both together).
///
/// An absent file is looked up again only every [`ABSENT_RETRY`]: inside a
/// network namespace the host-wide `/proc/sys/net/ipv4/tcp_mem`-style files do
/// not exist, and failing path lookups of them were ~5 % of an idle tick. A
/// module loaded later shows its files within that time.
pub struct KeptFiles {
    /// File and whether it was read since the last [`KeptFiles::close_unread`].
    files: rustc_hash::FxHashMap<PathBuf, (std::fs::File, bool)>,
    /// Paths found absent, and when.
    absent: rustc_hash::FxHashMap<PathBuf, std::time::Instant>,
    absent_retry: std::time::Duration,
}

/// How long an absent file is taken to stay absent.
pub const ABSENT_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

impl Default for KeptFiles {
    fn default() -> Self {
        KeptFiles::retrying_absent_after(ABSENT_RETRY)
    }
}

/// How a kept file is read to its end.
#[derive(Clone, Copy, PartialEq)]
enum ReadMode {
    /// Until a read returns 0: seq_file files (`/proc/net/*`) may return a
    /// short read before their end.
    UntilEof,
    /// One read shorter than the buffer is the whole value: sysfs attributes
    /// and `/proc/sys` parameters are formatted whole on the first read, and the
    /// second read that only confirms the end doubled their cost.
    Attribute,
}

impl KeptFiles {
    pub fn retrying_absent_after(absent_retry: std::time::Duration) -> Self {
        KeptFiles {
            files: Default::default(),
            absent: Default::default(),
            absent_retry,
        }
    }

    /// Closes the files not read since the last call (devices that went away).
    pub fn close_unread(&mut self) {
        self.files.retain(|_, (_, read)| std::mem::take(read));
    }

    /// Opens `path` now if it is not open yet.
    pub fn open(&mut self, path: &Path) -> Result<(), CollectError> {
        if self.files.contains_key(path) {
            return Ok(());
        }
        let not_found = |path: &Path| CollectError::Io {
            path: path.to_path_buf(),
            source: io::ErrorKind::NotFound.into(),
        };
        if let Some(since) = self.absent.get(path) {
            if since.elapsed() < self.absent_retry {
                return Err(not_found(path));
            }
            self.absent.remove(path);
        }
        match std::fs::File::open(path) {
            Ok(f) => {
                self.files.insert(path.to_path_buf(), (f, false));
                Ok(())
            }
            Err(source) => {
                if source.kind() == io::ErrorKind::NotFound {
                    self.absent.insert(path.to_path_buf(), std::time::Instant::now());
                }
                Err(CollectError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }

    pub fn is_open(&self, path: &Path) -> bool {
        self.files.contains_key(path)
    }

    /// The whole current contents of `path` into `buf` (replacing what it held).
    /// A file whose kept descriptor fails to read (the entry was removed, e.g. a
    /// module unloaded) is opened afresh once; an absent file is an `Io` error
    /// (kind `NotFound`).
    pub fn read_into(&mut self, path: &Path, buf: &mut Vec<u8>) -> Result<(), CollectError> {
        self.read_with(path, buf, ReadMode::UntilEof)
    }

    /// [`KeptFiles::read_into`] for a sysfs attribute or a `/proc/sys`
    /// parameter, which the kernel returns whole in one read.
    pub fn read_attribute_into(&mut self, path: &Path, buf: &mut Vec<u8>) -> Result<(), CollectError> {
        self.read_with(path, buf, ReadMode::Attribute)
    }

    fn read_with(&mut self, path: &Path, buf: &mut Vec<u8>, mode: ReadMode) -> Result<(), CollectError> {
        for fresh in [false, true] {
            if fresh {
                self.files.remove(path);
            }
            self.open(path)?;
            let Some((f, read)) = self.files.get_mut(path) else {
                continue;
            };
            *read = true;
            match read_all_at_start(f, buf, mode) {
                Ok(()) => return Ok(()),
                // The attribute has no value now (sysfs `carrier` and `speed` of a
                // link that is down): the file itself is fine, keep it.
                Err(source) if source.raw_os_error() == Some(libc::EINVAL) => {
                    return Err(CollectError::Io {
                        path: path.to_path_buf(),
                        source,
                    })
                }
                Err(source) if fresh => {
                    self.files.remove(path);
                    return Err(CollectError::Io {
                        path: path.to_path_buf(),
                        source,
                    });
                }
                Err(_) => {}
            }
        }
        Ok(())
    }
}

/// Reads `f` from offset 0 to its end with `pread`, into `buf`.
fn read_all_at_start(f: &std::fs::File, buf: &mut Vec<u8>, mode: ReadMode) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    if buf.len() < 4096 {
        buf.resize(4096, 0);
    }
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let Some(spare) = buf.get_mut(len..) else {
            return Err(io::Error::other("read past the buffer"));
        };
        let room = spare.len();
        match f.read_at(spare, len as u64) {
            Ok(0) => {
                buf.truncate(len);
                return Ok(());
            }
            Ok(n) if len == 0 && n < room && mode == ReadMode::Attribute => {
                buf.truncate(n);
                return Ok(());
            }
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

pub fn read_file(path: &Path) -> Result<Vec<u8>, CollectError> {
    std::fs::read(path).map_err(|source| CollectError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Parse { path: PathBuf, source: ParseError },
    #[error("{0}")]
    Unavailable(String),
    #[error("netlink: {0}")]
    Netlink(String),
}

impl CollectError {
    pub fn parse(path: PathBuf, source: ParseError) -> Self {
        CollectError::Parse { path, source }
    }
}

/// One self-contained source of samples.
pub trait Collector: Send + 'static {
    fn name(&self) -> &'static str;
    fn collect(&mut self, ctx: &CollectContext, out: &mut Emitter) -> Result<(), CollectError>;

    /// The shortest interval between two runs: the scheduler runs the collector
    /// every so many ticks and repeats its last samples in between. Zero: every
    /// tick.
    fn min_interval(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// Builds every collector the configuration enables.
pub fn build_enabled(cfg: &Config) -> anyhow::Result<Vec<Box<dyn Collector>>> {
    let c = &cfg.collectors;
    let mut out: Vec<Box<dyn Collector>> = Vec::new();
    if c.netdev.enabled {
        out.push(Box::new(netdev::Netdev::new(&c.netdev)?));
    }
    if c.sockstat.enabled {
        out.push(Box::new(sockstat::Sockstat::default()));
    }
    if c.netstat.enabled {
        out.push(Box::new(netstat::Netstat::default()));
    }
    if c.softnet.enabled {
        out.push(Box::new(softnet::Softnet::default()));
    }
    if c.conntrack.enabled {
        out.push(Box::new(conntrack::Conntrack::new(&c.conntrack)));
    }
    if c.sockets.enabled {
        out.push(Box::new(sockets::Sockets::new(&c.sockets)));
    }
    if c.sysctl.enabled {
        out.push(Box::new(sysctl::Sysctl::new(c.sysctl.interval)));
    }
    if c.nftables.enabled {
        out.push(Box::new(nftables::Nftables::new(&c.nftables)?));
    }
    Ok(out)
}

impl CollectError {
    /// An absent file (`ENOENT`), as opposed to one that could not be read.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CollectError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

const C: MetricKind = MetricKind::Counter;
const G: MetricKind = MetricKind::Gauge;

pub static COLLECTOR_UP: MetricDesc = MetricDesc::new(
    "netsight_collector_up",
    G,
    "",
    "1 when the collector's last run succeeded, 0 when it failed, timed out or is unavailable.",
    &["collector"],
    "netsight.collector.up",
);
pub static COLLECTOR_DURATION: MetricDesc = MetricDesc::new(
    "netsight_collector_duration_seconds",
    G,
    "seconds",
    "Wall time of the collector's last run.",
    &["collector"],
    "netsight.collector.duration",
);
pub static COLLECTOR_CPU: MetricDesc = MetricDesc::new(
    "netsight_collector_cpu_seconds_total",
    C,
    "seconds",
    "CPU time the collector has used since start.",
    &["collector"],
    "netsight.collector.cpu.time",
);
pub static COLLECTOR_ERRORS: MetricDesc = MetricDesc::new(
    "netsight_collector_errors_total",
    C,
    "",
    "Runs of the collector that failed or exceeded their time budget.",
    &["collector"],
    "netsight.collector.errors",
);
pub static COLLECTOR_INTERVAL: MetricDesc = MetricDesc::new(
    "netsight_collector_interval_seconds",
    G,
    "seconds",
    "Current cadence of the collector; above the tick interval when the CPU budget made it slow down.",
    &["collector"],
    "netsight.collector.interval",
);
pub static SNAPSHOT_TIMESTAMP: MetricDesc = MetricDesc::new(
    "netsight_snapshot_timestamp_seconds",
    G,
    "seconds",
    "Unix time at which the snapshot being served was taken.",
    &[],
    "netsight.snapshot.timestamp",
);
pub static SNAPSHOT_SERIES: MetricDesc = MetricDesc::new(
    "netsight_snapshot_series",
    G,
    "",
    "Number of series in the snapshot being served.",
    &[],
    "netsight.snapshot.series",
);
pub static BUILD_INFO: MetricDesc = MetricDesc::new(
    "netsight_build_info",
    G,
    "",
    "Always 1; labels carry the version.",
    &["version"],
    "netsight.build.info",
);

pub static CORE_DOC: CollectorDoc = CollectorDoc {
    collector: "core",
    source: "the scheduler itself",
    capabilities: "none",
    metrics: &[
        &COLLECTOR_UP,
        &COLLECTOR_DURATION,
        &COLLECTOR_CPU,
        &COLLECTOR_ERRORS,
        &COLLECTOR_INTERVAL,
        &SNAPSHOT_TIMESTAMP,
        &SNAPSHOT_SERIES,
        &BUILD_INFO,
    ],
    dynamic: &[],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_once_per_refresh_and_a_failed_read_is_not_kept() {
        let mut s = Settings::<u32>::default();
        assert_eq!(s.get(|| Err::<u32, &str>("absent")), Err("absent"));
        assert_eq!(s.get(|| Ok::<_, &str>(7)), Ok(&7), "read again after a failure");
        assert_eq!(s.get(|| Ok::<_, &str>(8)), Ok(&7), "within SETTINGS_REFRESH: kept");
        let old = std::time::Instant::now().checked_sub(SETTINGS_REFRESH);
        assert!(old.is_some());
        if let (Some(last), Some(old)) = (s.last.as_mut(), old) {
            last.0 = old;
        }
        assert_eq!(s.get(|| Ok::<_, &str>(8)), Ok(&8), "refreshed once old");
    }

    /// Rewritten, grown, removed and recreated files are all read as they are now.
    #[test]
    fn kept_files_follow_the_file() {
        let dir = std::env::temp_dir().join(format!("netsight-kept-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let p = dir.join("f");
        let mut k = KeptFiles::retrying_absent_after(std::time::Duration::ZERO);
        let mut buf = Vec::new();
        assert!(k.read_into(&p, &mut buf).is_err_and(|e| e.is_not_found()));
        std::fs::write(&p, "one\n").expect("write");
        k.read_into(&p, &mut buf).expect("read");
        assert_eq!(buf, b"one\n");
        let big = "x".repeat(10_000);
        std::fs::write(&p, &big).expect("write");
        k.read_into(&p, &mut buf).expect("read");
        assert_eq!(buf, big.as_bytes());
        std::fs::write(&p, "").expect("write");
        k.read_into(&p, &mut buf).expect("read");
        assert!(buf.is_empty());
        // /proc files are generated on each read: the same fd sees new values.
        let proc = Path::new("/proc/self/stat");
        k.read_into(proc, &mut buf).expect("read /proc");
        assert!(buf.starts_with(std::process::id().to_string().as_bytes()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An absent file is not looked up again until the retry time has passed.
    #[test]
    fn an_absent_file_is_looked_up_again_only_after_the_retry_time() {
        let dir = std::env::temp_dir().join(format!("netsight-absent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let p = dir.join("appears");
        let mut k = KeptFiles::retrying_absent_after(std::time::Duration::from_millis(300));
        let mut buf = Vec::new();
        assert!(k.read_into(&p, &mut buf).is_err_and(|e| e.is_not_found()));
        std::fs::write(&p, "1\n").expect("write");
        assert!(
            k.read_into(&p, &mut buf).is_err_and(|e| e.is_not_found()),
            "still taken as absent"
        );
        std::thread::sleep(std::time::Duration::from_millis(350));
        k.read_into(&p, &mut buf).expect("looked up again after the retry time");
        assert_eq!(buf, b"1\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Attributes are read whole, whatever their size, from sysfs, /proc/sys and
    /// plain files (fixtures).
    #[test]
    fn attributes_are_read_whole() {
        let dir = std::env::temp_dir().join(format!("netsight-attr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let p = dir.join("big");
        let big = "7 ".repeat(6_000);
        std::fs::write(&p, &big).expect("write");
        let mut k = KeptFiles::default();
        let mut buf = Vec::new();
        k.read_attribute_into(&p, &mut buf).expect("read");
        assert_eq!(buf, big.as_bytes());
        let mut whole = Vec::new();
        for f in ["/proc/sys/net/ipv4/ip_local_port_range", "/sys/class/net/lo/mtu"] {
            let expected = std::fs::read(f).expect("read");
            k.read_attribute_into(Path::new(f), &mut whole).expect("read attribute");
            assert_eq!(whole, expected, "{f}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
