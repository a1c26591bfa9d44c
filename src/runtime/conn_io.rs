//! Reads and writes on a client connection, plain or TLS: the `netio` calls
//! when `--listen` is plain, the core's [`TlsConns`] record layer when it
//! serves https. One branch on the worker's TLS table per call; the sessions
//! and the HTTP driver call these and never ask which it is.
//!
//! [`TlsConns`]: super::tls::conns::TlsConns

use std::io;
use std::os::fd::RawFd;

use monoio::net::TcpStream;

use super::tls::conns::{Handshake, HandshakeError};
use super::worker::Worker;
use crate::netio;

/// Reads what is there, without waiting. `Ok(0)` is end of stream.
pub fn recv(w: &Worker, fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    match &w.tls {
        None => netio::recv(fd, buf),
        Some(tls) => tls.recv(fd, buf),
    }
}

/// Appends what is there to `buf` (up to `max` bytes), without waiting.
pub fn recv_appending(w: &Worker, fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    let start = buf.len();
    buf.resize(start + max, 0);
    let r = recv(w, fd, &mut buf[start..]);
    buf.truncate(start + *r.as_ref().unwrap_or(&0));
    r
}

/// Whether input waits already opened (TLS), so a reader must read before it
/// waits for the socket.
pub fn has_input(w: &Worker, fd: RawFd) -> bool {
    w.tls.as_ref().is_some_and(|tls| tls.has_input(fd))
}

/// Until there is something to read: at once when opened input waits.
pub async fn readable(w: &Worker, stream: &TcpStream, fd: RawFd) -> io::Result<()> {
    if has_input(w, fd) {
        return Ok(());
    }
    stream.readable(false).await
}

/// Appends what arrives to `buf` (up to `max` more bytes), waiting until at least
/// one byte or end of stream. Returns the count; 0 is end of stream.
pub async fn read_some(
    w: &Worker,
    stream: &TcpStream,
    fd: RawFd,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<usize> {
    loop {
        match recv_appending(w, fd, buf, max) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => readable(w, stream, fd).await?,
            Err(e) => return Err(e),
        }
    }
}

/// Writes all of `bytes`, waiting for writability when the socket is full.
pub async fn write_all(
    w: &Worker,
    stream: &TcpStream,
    fd: RawFd,
    mut bytes: &[u8],
) -> io::Result<()> {
    let Some(tls) = &w.tls else {
        return netio::write_all(stream, fd, bytes).await;
    };
    while !bytes.is_empty() {
        match tls.seal_some(fd, bytes) {
            Ok(0) => stream.writable(false).await?,
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    flush_all(w, stream, fd).await
}

/// Waits until every sealed record of `fd` is written (nothing to do when plain).
pub async fn flush_all(w: &Worker, stream: &TcpStream, fd: RawFd) -> io::Result<()> {
    let Some(tls) = &w.tls else { return Ok(()) };
    while !tls.flush(fd)? {
        stream.writable(false).await?;
    }
    Ok(())
}

/// Whether bytes wait, sealed, for the socket (never when plain).
pub fn pending(w: &Worker, fd: RawFd) -> bool {
    w.tls.as_ref().is_some_and(|tls| tls.pending(fd))
}

/// Writes what is sealed for `fd` if the socket takes it; true once nothing waits.
pub fn flush(w: &Worker, fd: RawFd) -> io::Result<bool> {
    match &w.tls {
        None => Ok(true),
        Some(tls) => tls.flush(fd),
    }
}

/// Before a half-close: `close_notify` on a TLS connection.
pub fn close_notify(w: &Worker, fd: RawFd) {
    if let Some(tls) = &w.tls {
        tls.close_notify(fd);
    }
}

/// Does the TLS handshake of a new connection (nothing when plain): as far
/// as the socket allows, then waits for it, until done. The caller bounds it
/// in time (`--header-timeout`).
pub async fn handshake(w: &Worker, stream: &TcpStream, fd: RawFd) -> Result<(), HandshakeError> {
    let Some(tls) = &w.tls else { return Ok(()) };
    tls.begin(fd)?;
    loop {
        let ready = match tls.handshake(fd)? {
            Handshake::Done => return Ok(()),
            Handshake::WantRead => stream.readable(false).await,
            Handshake::WantWrite => stream.writable(false).await,
        };
        ready.map_err(|_| HandshakeError::Closed)?;
    }
}
