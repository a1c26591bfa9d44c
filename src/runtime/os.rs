//! Operating-system chores of the boot and the exit: the process's open-file
//! limit and huge pages, the probe that refuses a listen port in use, the socket
//! options every accepted connection inherits from its listener, the publish
//! socket file and the lock that tells a live owner from a stale file, and the
//! run's epoch. Each returns a plain error; `server` says what failed.

use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

use crate::proto::cursor::Epoch;
use crate::{debug, error, info};

/// Raises the open-file soft limit to the hard limit, and logs what it got.
pub fn raise_nofile_limit() {
    if let Some((before, now)) = crate::netio::raise_nofile_limit() {
        info!("msg=\"open file limit\" before={before} now={now}");
    }
}

/// Turns transparent huge pages off for this process. The allocator asks for them
/// on its arenas, and then every first touch of a 2 MiB region makes all of it
/// resident: idle connections measured 2.3 KiB of RSS each with huge pages and
/// 1.3 KiB without (15,000 SSE streams, `--cores 2`), with no measurable gain in
/// fan-out throughput from them.
pub fn disable_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r != 0 {
        debug!(
            "msg=\"transparent huge pages stay on\" error=\"{}\"",
            std::io::Error::last_os_error()
        );
    }
}

/// Sets on a listener the TCP options every connection it accepts must have,
/// which Linux copies to each accepted socket (the child is a clone of the
/// listener): `TCP_NODELAY`, and `TCP_USER_TIMEOUT` at `unacked`, so written
/// data may stay unacknowledged that long at most and a peer that vanished
/// without FIN or RST is found by the next heartbeat's write failing, not by
/// the next broadcast hours later. Two `setsockopt` calls per connection fewer.
pub fn set_inherited_options(listener: RawFd, unacked: Duration) -> io::Result<()> {
    use crate::netio::set_sockopt;
    let ms = unacked.as_millis().min(i32::MAX as u128) as i32;
    set_sockopt(listener, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    set_sockopt(listener, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms)
}

/// Refuses to share the listen address with a live server: with `SO_REUSEPORT`
/// the kernel would silently split connections between the two. A port that
/// answers a few times in a row is taken (a killed server's listener can answer
/// for a moment after it is gone).
pub fn refuse_a_port_in_use(addr: SocketAddr) -> io::Result<()> {
    for attempt in 0..5 {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            return Ok(());
        }
        if attempt < 4 {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "another server is listening on it",
    ))
}

/// The lock file beside the publish socket at `path`.
fn lock_path(path: &Path) -> OsString {
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    lock
}

/// Binds the publish socket, replacing a stale file but never a live server's,
/// and gives the file `mode`. The error is the reason, for the caller to name
/// the path.
pub fn bind_publish_socket(path: &Path, mode: u32) -> Result<UnixListener, String> {
    // Whether another server owns the socket is told by a lock the kernel
    // drops with its owner, not by whether the socket still answers: a killed
    // server's io_uring listener can accept for a moment after it is gone.
    let lock_path = lock_path(path);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.to_string_lossy()))?;
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&lock),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    } != 0
    {
        return Err("another server is using it".into());
    }
    // Held until the process exits.
    std::mem::forget(lock);
    if path.exists() {
        std::fs::remove_file(path).map_err(|e| format!("cannot remove stale socket: {e}"))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    if let Err(e) =
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
    {
        error!("msg=\"cannot set publish socket mode\" error=\"{e}\"");
    }
    Ok(listener)
}

/// Removes the publish socket at `path` and its lock file, at exit.
pub fn remove_publish_socket(path: &Path) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(lock_path(path));
}

/// A fresh epoch for this run: clock and process id mixed, 48 bits.
pub fn new_epoch() -> Epoch {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos ^ (u64::from(std::process::id()) << 32);
    // splitmix64 finalizer: neighbouring starts get unrelated epochs.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    Epoch::new(x ^ (x >> 31))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn tcp_option(fd: RawFd, name: i32) -> i32 {
        let mut value: i32 = 0;
        let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
        // SAFETY: `value` and `len` are valid for writes for the whole call, and
        // `len` gives `value`'s size.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                name,
                (&mut value as *mut i32).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0, "getsockopt: {}", io::Error::last_os_error());
        value
    }

    /// The per-connection `setsockopt` calls were dropped on the strength of
    /// this: an accepted socket carries the listener's options.
    #[test]
    fn accepted_connections_inherit_the_listeners_options() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_inherited_options(listener.as_raw_fd(), Duration::from_millis(35_000)).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let fd = accepted.as_raw_fd();
        assert_eq!(tcp_option(fd, libc::TCP_NODELAY), 1);
        assert_eq!(tcp_option(fd, libc::TCP_USER_TIMEOUT), 35_000);
    }
}
