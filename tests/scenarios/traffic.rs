//! Traffic generators and servers. Every loop checks the shared stop flag at least
//! every few hundred milliseconds so guards can join it quickly.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{Pacer, Rng, Workers};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("bad address {s}: {e}"))
}

fn stopped(stop: &AtomicBool) -> bool {
    stop.load(Ordering::Relaxed)
}

/// A TCP listener with the given backlog (std's is fixed at 128).
pub fn listen(a: &str, backlog: i32) -> TcpListener {
    let l = TcpListener::bind(addr(a)).unwrap_or_else(|e| panic!("bind {a}: {e}"));
    // SAFETY: listen() again on our own listening socket sets its backlog.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), backlog) }, 0);
    l
}

/// Accept loop: hands each connection to `handle` on its own thread.
fn accept_loop(
    l: TcpListener,
    stop: Arc<AtomicBool>,
    handle: impl Fn(TcpStream, Arc<AtomicBool>) + Send + Sync + 'static,
) {
    l.set_nonblocking(true).expect("nonblocking");
    let handle = Arc::new(handle);
    while !stopped(&stop) {
        match l.accept() {
            Ok((s, _)) => {
                let _ = s.set_nonblocking(false);
                let h = handle.clone();
                let st = stop.clone();
                std::thread::spawn(move || h(s, st));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(2)),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Request/response server: each request is a line with a byte count, answered
/// with that many bytes; the connection is closed after the client closes.
pub fn serve_reqresp(w: &mut Workers, ns: &str, at: &str) {
    let at = at.to_string();
    w.spawn_in(ns, move |stop| {
        let l = listen(&at, 1024);
        accept_loop(l, stop, |s, stop| {
            let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
            let mut w = match s.try_clone() {
                Ok(w) => w,
                Err(_) => return,
            };
            let mut r = BufReader::new(s);
            let mut line = String::new();
            let zeros = vec![0u8; 65536];
            loop {
                if stopped(&stop) {
                    return;
                }
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) => return,
                    Ok(_) => {
                        let mut n: usize = line.trim().parse().unwrap_or(0);
                        while n > 0 {
                            let k = n.min(zeros.len());
                            if w.write_all(&zeros[..k]).is_err() {
                                return;
                            }
                            n -= k;
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
                    Err(_) => return,
                }
            }
        });
    });
}

fn request(s: &mut TcpStream, size: u64, buf: &mut [u8]) -> std::io::Result<()> {
    s.write_all(format!("{size}\n").as_bytes())?;
    let mut left = size as usize;
    while left > 0 {
        let k = left.min(buf.len());
        let n = s.read(&mut buf[..k])?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        left -= n;
    }
    Ok(())
}

/// `conns` persistent connections, each sending `rate` requests a second with
/// response sizes drawn from [min, max) bytes; reconnects after errors.
pub fn reqresp_clients(w: &mut Workers, ns: &str, to: &str, conns: usize, rate: f64, min: u64, max: u64) {
    for i in 0..conns {
        let to = to.to_string();
        w.spawn_in(ns, move |stop| {
            let mut rng = Rng::new(0x9e37_79b9 + i as u64);
            let mut buf = vec![0u8; 65536];
            let mut pace = Pacer::new(rate);
            while !stopped(&stop) {
                let Ok(mut s) = TcpStream::connect_timeout(&addr(&to), Duration::from_secs(1)) else {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                while !stopped(&stop) {
                    if request(&mut s, rng.range(min, max), &mut buf).is_err() {
                        break;
                    }
                    pace.wait();
                }
            }
        });
    }
}

/// New connection per request at `rate` a second: connect, ask for a small
/// response, read it, close (the client closes first, so TIME_WAIT is on this
/// side). Counts failed connects in `errors`.
pub fn churn_client(w: &mut Workers, ns: &str, to: &str, rate: f64, threads: usize, errors: Arc<AtomicU64>) {
    for i in 0..threads {
        let to = to.to_string();
        let errors = errors.clone();
        w.spawn_in(ns, move |stop| {
            let mut rng = Rng::new(0x51ed_270b + i as u64);
            let mut buf = vec![0u8; 4096];
            let mut pace = Pacer::new(rate / threads as f64);
            while !stopped(&stop) {
                match TcpStream::connect_timeout(&addr(&to), Duration::from_millis(500)) {
                    Ok(mut s) => {
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        if request(&mut s, rng.range(100, 2000), &mut buf).is_err() {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                pace.wait();
            }
        });
    }
}

/// Discards everything sent to it.
pub fn bulk_sink(w: &mut Workers, ns: &str, at: &str) {
    let at = at.to_string();
    w.spawn_in(ns, move |stop| {
        let l = listen(&at, 128);
        accept_loop(l, stop, |mut s, stop| {
            let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
            let mut buf = vec![0u8; 256 * 1024];
            while !stopped(&stop) {
                match s.read(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => return,
                }
            }
        });
    });
}

/// One bulk TCP stream; `bits_per_second` paces it (None: as fast as possible).
pub fn bulk_sender(w: &mut Workers, ns: &str, to: &str, bits_per_second: Option<f64>) {
    let to = to.to_string();
    w.spawn_in(ns, move |stop| {
        let chunk = vec![0x5au8; 64 * 1024];
        while !stopped(&stop) {
            let Ok(mut s) = TcpStream::connect_timeout(&addr(&to), Duration::from_secs(1)) else {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            };
            let _ = s.set_write_timeout(Some(Duration::from_millis(300)));
            let mut pace = bits_per_second.map(|b| Pacer::new(b / 8.0 / chunk.len() as f64));
            while !stopped(&stop) {
                match s.write(&chunk) {
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
                    Err(_) => break,
                }
                if let Some(p) = pace.as_mut() {
                    p.wait();
                }
            }
        }
    });
}

/// Echoes UDP datagrams.
pub fn udp_echo(w: &mut Workers, ns: &str, at: &str) {
    let at = at.to_string();
    w.spawn_in(ns, move |stop| {
        let s = UdpSocket::bind(addr(&at)).expect("bind udp");
        let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
        let mut buf = [0u8; 2048];
        while !stopped(&stop) {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
            }
        }
    });
}

/// DNS-like UDP requests at `rate` a second.
pub fn udp_client(w: &mut Workers, ns: &str, to: &str, rate: f64) {
    let to = to.to_string();
    w.spawn_in(ns, move |stop| {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind udp");
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        let mut rng = Rng::new(7);
        let mut buf = [0u8; 2048];
        let mut pace = Pacer::new(rate);
        while !stopped(&stop) {
            let n = rng.range(40, 512) as usize;
            let _ = s.send_to(&buf[..n], addr(&to));
            let _ = s.recv_from(&mut buf);
            pace.wait();
        }
    });
}

/// UDP datagrams to `dst`, each to a new (source socket, destination port)
/// pair, so every datagram is a new conntrack entry: `sockets` sources ×
/// ports 1024..1024+`ports`, looping. Counts datagrams sent.
pub fn udp_flow_flood(
    w: &mut Workers,
    ns: &str,
    dst: &str,
    sockets: usize,
    ports: u16,
    threads: usize,
    sent: Arc<AtomicU64>,
) {
    for t in 0..threads {
        let dst: std::net::IpAddr = dst.parse().expect("ip");
        let sent = sent.clone();
        w.spawn_in(ns, move |stop| {
            let socks: Vec<UdpSocket> = (0..sockets)
                .filter(|i| i % threads == t)
                .map(|_| UdpSocket::bind("0.0.0.0:0").expect("bind"))
                .collect();
            let payload = [0u8; 16];
            while !stopped(&stop) {
                for p in 0..ports {
                    if p % 1024 == 0 && stopped(&stop) {
                        return;
                    }
                    for s in &socks {
                        if s.send_to(&payload, SocketAddr::new(dst, 1024 + p)).is_ok() {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
    }
}

/// A connect() scan of `ports` on `ip` at `rate` probes a second; counts refused.
pub fn connect_scan(
    w: &mut Workers,
    ns: &str,
    ip: &str,
    ports: std::ops::Range<u16>,
    rate: f64,
    refused: Arc<AtomicU64>,
) {
    let ip: std::net::IpAddr = ip.parse().expect("ip");
    w.spawn_in(ns, move |stop| {
        let mut pace = Pacer::new(rate);
        for p in ports.clone().cycle() {
            if stopped(&stop) {
                return;
            }
            if let Err(e) = TcpStream::connect_timeout(&SocketAddr::new(ip, p), Duration::from_millis(200)) {
                if e.kind() == ErrorKind::ConnectionRefused {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            pace.wait();
        }
    });
}

/// Non-blocking connection attempts at `rate` a second, each socket kept open for
/// `hold` and then closed (clients that give up). Counts attempts.
pub fn connect_storm(w: &mut Workers, ns: &str, to: &str, rate: f64, hold: Duration, attempts: Arc<AtomicU64>) {
    let to = addr(to);
    w.spawn_in(ns, move |stop| {
        let mut pace = Pacer::new(rate);
        let mut open: std::collections::VecDeque<(Instant, i32)> = std::collections::VecDeque::new();
        while !stopped(&stop) {
            // SAFETY: plain socket syscalls on a descriptor we own and close below.
            unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
                if fd >= 0 {
                    let sin = match to {
                        SocketAddr::V4(v4) => libc::sockaddr_in {
                            sin_family: libc::AF_INET as libc::sa_family_t,
                            sin_port: v4.port().to_be(),
                            sin_addr: libc::in_addr {
                                s_addr: u32::from_ne_bytes(v4.ip().octets()),
                            },
                            sin_zero: [0; 8],
                        },
                        SocketAddr::V6(_) => panic!("IPv4 only"),
                    };
                    libc::connect(
                        fd,
                        (&sin as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as u32,
                    );
                    open.push_back((Instant::now(), fd));
                    attempts.fetch_add(1, Ordering::Relaxed);
                }
            }
            while open.front().is_some_and(|(t, _)| t.elapsed() >= hold) {
                let (_, fd) = open.pop_front().expect("front");
                // SAFETY: closing a descriptor this loop opened.
                unsafe { libc::close(fd) };
            }
            pace.wait();
        }
        for (_, fd) in open {
            // SAFETY: as above.
            unsafe { libc::close(fd) };
        }
    });
}

/// Server that reads each connection to EOF and then never closes it: every
/// connection ends in CLOSE_WAIT (runs in a helper process, see `helper`).
pub fn leaky_server(at: &str) -> ! {
    let l = listen(at, 1024);
    let kept: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
    loop {
        if let Ok((mut s, _)) = l.accept() {
            let kept = kept.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                }
                kept.lock().expect("lock").push(s);
            });
        }
    }
}

/// A listener that never accepts (runs in a helper process).
pub fn never_accepting_server(at: &str, backlog: i32) -> ! {
    let _l = listen(at, backlog);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
