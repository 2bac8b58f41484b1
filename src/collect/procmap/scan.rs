//! The `/proc` walk: one process's socket fds and its `comm`, with plain libc
//! calls relative to an open procfs root (see the module above for why).

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use crate::parse::proc_fd::parse_socket_link;

/// A NUL-terminated `<pid>/<leaf>` in a stack buffer.
fn pid_path(pid: u32, leaf: &[u8], buf: &mut [u8; 32]) -> Option<*const libc::c_char> {
    use std::io::Write;
    let mut w = &mut buf[..];
    write!(w, "{pid}/").ok()?;
    w.write_all(leaf).ok()?;
    w.write_all(b"\0").ok()?;
    Some(buf.as_ptr().cast())
}

/// Closes the directory stream (and its fd) on drop.
struct Dir(*mut libc::DIR);

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: the pointer came from a successful fdopendir and is closed once.
        unsafe { libc::closedir(self.0) };
    }
}

/// Appends the inode of every socket fd of `pid` to `out`.
pub(super) fn socket_inodes(root: &File, pid: u32, out: &mut Vec<u32>) -> io::Result<()> {
    let mut path = [0u8; 32];
    let p = pid_path(pid, b"fd", &mut path).ok_or_else(|| io::Error::from_raw_os_error(libc::ENAMETOOLONG))?;
    // SAFETY: `p` is a NUL-terminated path in `path`, alive for the call.
    let fd = unsafe {
        libc::openat(
            root.as_raw_fd(),
            p,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a directory we just opened; on success the DIR owns it.
    let dirp = unsafe { libc::fdopendir(fd) };
    if dirp.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so the fd is still ours to close.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    let dir = Dir(dirp);
    // SAFETY: dir.0 is a valid DIR*.
    let dfd = unsafe { libc::dirfd(dir.0) };
    let mut link = [0u8; 64];
    loop {
        // SAFETY: dir.0 is valid; the entry stays valid until the next readdir.
        let ent = unsafe { libc::readdir(dir.0) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated within the dirent readdir returned.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        if name.to_bytes().first() == Some(&b'.') {
            continue;
        }
        // SAFETY: name is NUL-terminated; link is writable for its length. A longer
        // target is silently truncated, which is fine: we only want `socket:[…]`.
        let n = unsafe { libc::readlinkat(dfd, name.as_ptr(), link.as_mut_ptr().cast(), link.len()) };
        if n <= 0 {
            continue; // the fd was closed meanwhile
        }
        if let Some(inode) = link.get(..n as usize).and_then(parse_socket_link) {
            out.push(inode);
        }
    }
    Ok(())
}

pub(super) fn read_comm(root: &File, pid: u32) -> Option<Box<str>> {
    let mut path = [0u8; 32];
    let p = pid_path(pid, b"comm", &mut path)?;
    // SAFETY: `p` is NUL-terminated in `path`.
    let fd = unsafe { libc::openat(root.as_raw_fd(), p, libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 64];
    // SAFETY: fd is open; buf is writable for its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: fd is ours and closed once.
    unsafe { libc::close(fd) };
    if n <= 0 {
        return None;
    }
    let s = buf.get(..n as usize)?;
    let s = s.strip_suffix(b"\n").unwrap_or(s);
    Some(String::from_utf8_lossy(s).into())
}
