//! Non-blocking socket calls on raw descriptors, and the small async loops built
//! on them: the server's `runtime` and the `bench` clients both use them.
//!
//! ringcast waits for readiness with monoio (an io_uring `POLL_ADD`, or epoll on
//! the legacy driver) and then reads and writes with plain `recv`/`sendmsg` and
//! `MSG_DONTWAIT`. No buffer is ever parked in the kernel for an idle client, and a
//! fan-out writes to a subscriber's socket directly from the core's flush, without
//! waking the connection's task. The flags make each call non-blocking whatever
//! mode the descriptor is in.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;

/// Reads what is there, without waiting. `Ok(0)` is end of stream.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Appends what is there to `buf` (up to `max` bytes), without waiting.
/// `Ok(0)` is end of stream.
pub fn recv_appending(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    let start = buf.len();
    buf.resize(start + max, 0);
    let r = recv(fd, &mut buf[start..]);
    buf.truncate(start + *r.as_ref().unwrap_or(&0));
    r
}

/// Writes as much of `iov` as the socket takes, without waiting and without
/// SIGPIPE on a closed peer.
pub fn writev(fd: RawFd, iov: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: `IoSlice` is guaranteed ABI-compatible with `struct iovec` on Unix;
    // the msghdr points only at `iov`, which outlives the call, and the kernel does
    // not write through `msg_iov` for a send.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iov.len() as _;
        libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Half-closes the socket: sends FIN, keeps the read side open.
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    shutdown(fd, libc::SHUT_WR)
}

/// Ends both directions of a connection now (what was written still goes out,
/// followed by FIN), whoever else still holds the descriptor: a readiness wait
/// in flight keeps the socket open until it completes, and this completes it.
pub fn shutdown_both(fd: RawFd) -> io::Result<()> {
    shutdown(fd, libc::SHUT_RDWR)
}

fn shutdown(fd: RawFd, how: i32) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor; no memory is passed.
    if unsafe { libc::shutdown(fd, how) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets an integer socket option.
pub fn set_sockopt(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: the option value is a live i32 and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A socket monoio can wait on.
pub trait Readiness {
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>>;
    fn writable(&self) -> impl std::future::Future<Output = io::Result<()>>;
}

impl Readiness for monoio::net::TcpStream {
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> {
        monoio::net::TcpStream::readable(self, false)
    }
    fn writable(&self) -> impl std::future::Future<Output = io::Result<()>> {
        monoio::net::TcpStream::writable(self, false)
    }
}

impl Readiness for monoio::net::UnixStream {
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> {
        monoio::net::UnixStream::readable(self, false)
    }
    fn writable(&self) -> impl std::future::Future<Output = io::Result<()>> {
        monoio::net::UnixStream::writable(self, false)
    }
}

/// Writes all of `bytes`, waiting for writability when the socket is full.
pub async fn write_all<S: Readiness>(sock: &S, fd: RawFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match writev(fd, &[IoSlice::new(bytes)]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => sock.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Appends what arrives to `buf` (up to `max` more bytes), waiting until at least
/// one byte or end of stream. Returns the count; 0 is end of stream.
pub async fn read_some<S: Readiness>(
    sock: &S,
    fd: RawFd,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<usize> {
    loop {
        match recv_appending(fd, buf, max) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => sock.readable().await?,
            Err(e) => return Err(e),
        }
    }
}

/// A socket as `std::io::Read` and `Write` (what rustls reads from and writes
/// to), through the non-blocking calls above: `WouldBlock` when it has nothing,
/// or no room.
pub struct FdIo(pub RawFd);

impl std::io::Read for FdIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        recv(self.0, buf)
    }
}

impl std::io::Write for FdIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        writev(self.0, &[IoSlice::new(buf)])
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        writev(self.0, bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Makes `fd` non-blocking (`O_NONBLOCK`).
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with integer arguments on a descriptor the caller owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Takes a connection the listener `fd` has waiting, without waiting: the new
/// socket (non-blocking, close-on-exec) and its peer's address.
pub fn accept(fd: RawFd) -> io::Result<(std::os::fd::OwnedFd, std::net::SocketAddr)> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::FromRawFd;
    // SAFETY: an all-zero sockaddr_storage is a valid value.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `addr` and `len` are valid for writes, `len` giving `addr`'s size.
    let new = unsafe {
        libc::accept4(
            fd,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: accept4 returned a new descriptor, which nothing else owns.
    let socket = unsafe { std::os::fd::OwnedFd::from_raw_fd(new) };
    let peer = match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a =
                unsafe { &*(&addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a =
                unsafe { &*(&addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            ))
        }
        _ => return Err(io::ErrorKind::InvalidInput.into()),
    };
    Ok((socket, peer))
}

/// Raises this process's open-file soft limit to its hard limit (children
/// inherit it), for the many descriptors the server and the bench hold.
/// Returns the soft limit before and after (the same when the raise was
/// refused), or `None` when the limit cannot be read.
pub fn raise_nofile_limit() -> Option<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        let before = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        let now = if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
            lim.rlim_max
        } else {
            before
        };
        Some((before, now))
    }
}
