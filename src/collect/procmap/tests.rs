use super::*;
use std::os::unix::fs::symlink;

/// A fake procfs tree: symlinks need not resolve, readlink reads them as is.
#[test]
fn fake_procfs_tree_maps_inodes_to_the_lowest_pid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let mk = |pid: &str, comm: &str, links: &[(&str, &str)]| {
        std::fs::create_dir_all(root.join(pid).join("fd")).expect("mkdir");
        std::fs::write(root.join(pid).join("comm"), format!("{comm}\n")).expect("comm");
        for (fd, target) in links {
            symlink(target, root.join(pid).join("fd").join(fd)).expect("symlink");
        }
    };
    mk(
        "100",
        "nginx",
        &[("3", "socket:[1000]"), ("4", "socket:[1001]"), ("5", "/var/log/x")],
    );
    mk("101", "nginx", &[("3", "socket:[1000]"), ("7", "socket:[1002]")]);
    mk("200", "sshd", &[("0", "/dev/null"), ("3", "socket:[2000]")]);
    mk("300", "idle", &[("0", "/dev/null")]);
    std::fs::create_dir_all(root.join("net")).expect("non-pid dir");
    std::fs::create_dir_all(root.join("400")).expect("pid without fd dir (exited)");

    let mut m = ProcMap::new(Duration::from_secs(30));
    assert!(m.refresh_if_due(root));
    assert_eq!(m.pid_of(1000), Some(100), "shared socket → lowest pid");
    assert_eq!(m.pid_of(1001), Some(100));
    assert_eq!(m.pid_of(1002), Some(101));
    assert_eq!(m.pid_of(2000), Some(200));
    assert_eq!(m.pid_of(9999), None);
    assert_eq!(m.comm(100), Some("nginx"));
    assert_eq!(m.comm(200), Some("sshd"));
    assert_eq!(m.comm(300), None, "no sockets: comm not kept");
    assert_eq!(m.len(), 4);
    let s = m.stats();
    assert_eq!((s.processes, s.denied, s.socket_fds), (5, 0, 5));
    // Not due again within the refresh interval.
    assert!(!m.refresh_if_due(root));
}

#[test]
fn a_lazy_map_is_rebuilt_only_when_a_socket_is_missing_or_it_is_old() {
    let root = std::env::temp_dir().join(format!("netsight-procmap-lazy-{}", std::process::id()));
    let fd = root.join("100/fd");
    std::fs::create_dir_all(&fd).expect("mkdir");
    std::fs::write(root.join("100/comm"), "nginx\n").expect("comm");
    std::os::unix::fs::symlink("socket:[1000]", fd.join("3")).expect("symlink");
    let mut m = ProcMap::new(Duration::ZERO).lazy(true);
    assert!(m.refresh_if_due(&root), "never built");
    assert!(m.refresh_if_due(&root), "a zero interval is always ten intervals old");
    let mut m = ProcMap::new(Duration::from_millis(100)).lazy(true);
    assert!(m.refresh_if_due(&root), "never built");
    std::thread::sleep(Duration::from_millis(110));
    assert!(!m.refresh_if_due(&root), "every socket attributed: not due");
    m.note_unattributed();
    assert!(m.refresh_if_due(&root), "a socket was missing and one interval passed");
    assert!(!m.refresh_if_due(&root), "the rescan cleared it");
    m.note_unattributed();
    assert!(!m.refresh_if_due(&root), "missing, but within the interval");
    // The age bound: LAZY_MAX_AGE intervals (1 s here), at most
    // MAX_ADAPTIVE_REFRESH unless the interval itself is longer.
    let mut m = ProcMap::new(Duration::from_millis(100)).lazy(true);
    assert!(m.refresh_if_due(&root));
    std::thread::sleep(Duration::from_millis(150));
    assert!(!m.refresh_if_due(&root), "1.5 intervals old: not due");
    let max_age = Duration::from_millis(100 * u64::from(LAZY_MAX_AGE));
    std::thread::sleep(max_age);
    assert!(
        !m.refresh_if_due(&root),
        "more than ten intervals old, its owner unchanged: revalidated, not rescanned"
    );
    assert!(!m.refresh_if_due(&root), "the revalidation restarted the age");
    std::fs::write(root.join("100/comm"), "nginx-worker\n").expect("comm");
    std::thread::sleep(max_age);
    assert!(m.refresh_if_due(&root), "an owner's comm changed (exec): rescanned");
    assert_eq!(m.comm(100), Some("nginx-worker"));
    std::fs::remove_dir_all(root.join("100")).expect("rm");
    std::thread::sleep(max_age);
    assert!(m.refresh_if_due(&root), "an owner is gone: rescanned");
    assert_eq!(m.pid_of(1000), None);
    // Past LAZY_FULL_SCAN_AGE a revalidated map is rescanned anyway.
    m.scanned = Instant::now().checked_sub(LAZY_FULL_SCAN_AGE);
    m.last = Instant::now().checked_sub(max_age);
    assert!(m.scanned.is_some() && m.last.is_some());
    assert!(m.refresh_if_due(&root), "an hour since the last full scan: rescanned");
    assert_eq!(lazy_max_age(Duration::from_secs(30)), Duration::from_secs(300));
    assert_eq!(lazy_max_age(Duration::from_secs(300)), MAX_ADAPTIVE_REFRESH);
    assert_eq!(lazy_max_age(Duration::from_secs(3600)), Duration::from_secs(3600));
    // Not lazy: every interval.
    let mut m = ProcMap::new(Duration::ZERO);
    assert!(m.refresh_if_due(&root));
    assert!(m.refresh_if_due(&root));
    let _ = std::fs::remove_dir_all(&root);
}

/// netsight's own sockets created since the last scan are attributed from its
/// own fds, without a rescan; an inode that is not its own is looked for once.
#[test]
fn own_sockets_are_attributed_without_a_rescan() {
    let root = std::env::temp_dir().join(format!("netsight-procmap-own-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for (pid, comm) in [(100, "nginx"), (200, "netsight")] {
        std::fs::create_dir_all(root.join(format!("{pid}/fd"))).expect("mkdir");
        std::fs::write(root.join(format!("{pid}/comm")), format!("{comm}\n")).expect("comm");
    }
    symlink("200", root.join("self")).expect("self");
    symlink("socket:[1000]", root.join("100/fd/3")).expect("fd");
    let mut m = ProcMap::new(Duration::from_secs(30)).lazy(true);
    m.refresh(&root);
    assert_eq!(m.pid_of(1000), Some(100));
    // A scrape's connection appears after the scan, beside a socket of a
    // process netsight cannot see.
    symlink("socket:[2000]", root.join("200/fd/7")).expect("fd");
    m.attribute_own(&root, &[2000, 3000]);
    assert_eq!(m.pid_of(2000), Some(200));
    assert_eq!(m.comm(200), Some("netsight"));
    assert_eq!(m.pid_of(3000), None);
    // 3000 is known not to be ours: no second look at our fds for it alone.
    symlink("socket:[4000]", root.join("200/fd/8")).expect("fd");
    m.attribute_own(&root, &[3000]);
    assert_eq!(m.pid_of(4000), None, "own fds not read again for a foreign inode");
    m.attribute_own(&root, &[3000, 4000]);
    assert_eq!(m.pid_of(4000), Some(200));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn refresh_interval_adapts_to_the_scan_cost() {
    let mut m = ProcMap::new(Duration::from_secs(30));
    m.stats.cpu = Duration::from_millis(400);
    assert_eq!(m.interval(), Duration::from_secs(30), "no factor: fixed");
    let mut m = m.with_cpu_factor(150.0);
    assert_eq!(m.interval(), Duration::from_secs(60), "150 × 0.4 s");
    m.stats.cpu = Duration::from_millis(10);
    assert_eq!(
        m.interval(),
        Duration::from_secs(30),
        "cheap scan: the configured floor"
    );
    m.stats.cpu = Duration::from_secs(100);
    assert_eq!(m.interval(), MAX_ADAPTIVE_REFRESH, "capped");
    let m = ProcMap::new(Duration::from_secs(3600)).with_cpu_factor(f64::NAN);
    assert_eq!(m.interval(), Duration::from_secs(3600));
}

#[test]
fn missing_procfs_leaves_an_empty_map() {
    let mut m = ProcMap::new(Duration::ZERO);
    m.refresh(Path::new("/nonexistent/procfs"));
    assert!(m.is_empty());
    assert!(
        m.refresh_if_due(Path::new("/nonexistent/procfs")),
        "zero interval: always due"
    );
}

#[test]
fn live_proc_finds_our_own_socket() {
    use std::os::fd::AsRawFd;
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into st, which we own.
    assert_eq!(unsafe { libc::fstat(l.as_raw_fd(), &mut st) }, 0);
    let mut m = ProcMap::new(Duration::from_secs(30));
    m.refresh(Path::new("/proc"));
    let me = std::process::id();
    assert_eq!(m.pid_of(st.st_ino as u32), Some(me));
    let comm = std::fs::read_to_string("/proc/self/comm").expect("comm");
    assert_eq!(m.comm(me), Some(comm.trim_end()));
}
