//! The TLS connections of one core, by descriptor, and the record layer
//! between their sockets and the rest of the runtime.
//!
//! Descriptors are dense and a connection lives on one core, so the table is a
//! `Vec` indexed by fd, owned by the core's `Worker` and never shared. Every
//! function here is non-blocking: it does what the socket allows now and says
//! `WouldBlock` otherwise, like `netio`, so the callers wait for readiness as
//! they do for plain sockets.
//!
//! * **Reads** ([`TlsConns::recv`]): plaintext already opened goes first; else
//!   one `recv` of ciphertext, opened by rustls. A read may also produce
//!   records to send (alerts, a key update): written at once if the socket
//!   takes them, else kept for the next write.
//! * **Writes** ([`TlsConns::writev`], the core's flush): what was sealed
//!   before goes first; the frames given are sealed together (one record for
//!   everything that fits in 16 KiB) and written. The plaintext count returned
//!   is what rustls took. When it took everything but the socket did not take
//!   all the records, the connection is put on the *backlog*: the runtime then
//!   tells the core its socket is full, and the connection's task waits for
//!   writability and writes the rest ([`TlsConns::flush`]) before the core
//!   writes to it again.
//! * **Memory**: after the handshake a connection holds rustls's state and its
//!   4 KiB read buffer; sealed records stay only while the socket is full.

use std::cell::RefCell;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::RawFd;
use std::sync::Arc;

use rustls::ServerConnection;

use super::Tls;
use crate::core::registry::ClientId;
use crate::netio;

/// A socket as rustls's `Read` and `Write`: the non-blocking `netio` calls.
struct Fd(RawFd);

impl Read for Fd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        netio::recv(self.0, buf)
    }
}

impl Write for Fd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        netio::writev(self.0, &[IoSlice::new(buf)])
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        netio::writev(self.0, bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One TLS connection of the core.
struct Conn {
    tls: ServerConnection,
    /// The stream client on this connection, once it became one.
    client: Option<ClientId>,
}

/// Where a handshake stands after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// Done: application data may flow.
    Done,
    /// Needs the peer's next bytes.
    WantRead,
    /// Needs the socket to take what is sealed.
    WantWrite,
}

/// Why a handshake failed; all are the peer's doing (or its network's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The peer sent something that is not TLS, or a TLS alert, or TLS rustls refuses.
    #[error("not a TLS handshake rustls accepts")]
    Refused,
    /// The peer closed (or reset) before the handshake ended.
    #[error("peer closed during the handshake")]
    Closed,
}

/// The TLS connections of one core, by descriptor.
pub struct TlsConns {
    pub shared: Arc<Tls>,
    conns: RefCell<Vec<Option<Box<Conn>>>>,
    /// Connections whose sealed records wait for a full socket, with their
    /// client: filled by [`TlsConns::writev`], emptied by [`TlsConns::take_backlog`].
    backlog: RefCell<Vec<ClientId>>,
}

impl TlsConns {
    pub fn new(shared: Arc<Tls>) -> Self {
        Self {
            shared,
            conns: RefCell::new(Vec::new()),
            backlog: RefCell::new(Vec::new()),
        }
    }

    /// Runs `f` on the connection of `fd`; `NotConnected` when there is none.
    fn with<R>(&self, fd: RawFd, f: impl FnOnce(&mut Conn) -> io::Result<R>) -> io::Result<R> {
        let mut conns = self.conns.borrow_mut();
        match usize::try_from(fd)
            .ok()
            .and_then(|i| conns.get_mut(i))
            .and_then(|c| c.as_deref_mut())
        {
            Some(conn) => f(conn),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Starts the server side of a handshake on `fd` (a new connection).
    pub fn begin(&self, fd: RawFd) -> Result<(), HandshakeError> {
        let idx = usize::try_from(fd).map_err(|_| HandshakeError::Closed)?;
        let tls = ServerConnection::new(self.shared.config.clone())
            .map_err(|_| HandshakeError::Refused)?;
        let mut conns = self.conns.borrow_mut();
        if conns.len() <= idx {
            conns.resize_with(idx + 1, || None);
        }
        conns[idx] = Some(Box::new(Conn { tls, client: None }));
        Ok(())
    }

    /// Forgets the connection of `fd` (it is closing). Writes nothing: the
    /// descriptor may be closed already, and its number taken by a connection
    /// of another core; `close_notify` goes out on the graceful paths first
    /// ([`TlsConns::close_notify`]).
    pub fn end(&self, fd: RawFd) {
        let Ok(idx) = usize::try_from(fd) else { return };
        let conn = self.conns.borrow_mut().get_mut(idx).and_then(Option::take);
        drop(conn);
    }

    /// Sends `close_notify` (the connection is about to end its writing side).
    pub fn close_notify(&self, fd: RawFd) {
        let _ = self.with(fd, |c| {
            c.tls.send_close_notify();
            write_out(&mut c.tls, fd).map(|_| ())
        });
    }

    /// The stream client `id` now lives on `fd`.
    pub fn bind(&self, fd: RawFd, id: ClientId) {
        let _ = self.with(fd, |c| {
            c.client = Some(id);
            Ok(())
        });
    }

    /// One step of the handshake of `fd`: as far as the socket allows.
    pub fn handshake(&self, fd: RawFd) -> Result<Handshake, HandshakeError> {
        let step = self.with(fd, |c| {
            let tls = &mut c.tls;
            loop {
                if tls.wants_write() {
                    match write_out(tls, fd) {
                        Ok(true) => {}
                        Ok(false) => return Ok(Ok(Handshake::WantWrite)),
                        Err(_) => return Ok(Err(HandshakeError::Closed)),
                    }
                }
                if !tls.is_handshaking() {
                    return Ok(Ok(Handshake::Done));
                }
                match tls.read_tls(&mut Fd(fd)) {
                    Ok(0) => return Ok(Err(HandshakeError::Closed)),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(Ok(Handshake::WantRead))
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // rustls refuses to buffer more (an oversized message).
                    Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                        return Ok(Err(HandshakeError::Refused))
                    }
                    Err(_) => return Ok(Err(HandshakeError::Closed)),
                }
                if tls.process_new_packets().is_err() {
                    // The alert rustls queued, if the socket takes it.
                    let _ = tls.write_tls(&mut Fd(fd));
                    return Ok(Err(HandshakeError::Refused));
                }
            }
        });
        step.unwrap_or(Err(HandshakeError::Closed))
    }

    /// Whether opened plaintext (or the peer's `close_notify`) waits to be
    /// read, so a reader must not wait for the socket first.
    pub fn has_input(&self, fd: RawFd) -> bool {
        self.with(fd, |c| {
            Ok(match c.tls.process_new_packets() {
                Ok(state) => state.plaintext_bytes_to_read() > 0 || state.peer_has_closed(),
                Err(_) => true,
            })
        })
        .unwrap_or(false)
    }

    /// Reads plaintext into `buf` without waiting: what was opened already,
    /// else what one `recv` of ciphertext opens. `Ok(0)`: the peer closed
    /// (`close_notify` or end of stream); `WouldBlock`: nothing yet.
    pub fn recv(&self, fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.with(fd, |c| {
            let tls = &mut c.tls;
            loop {
                // A connection rustls failed stays failed: an error every
                // time, never WouldBlock (the reader would wait forever).
                if let Err(e) = tls.process_new_packets() {
                    let _ = tls.write_tls(&mut Fd(fd));
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
                if tls.wants_write() {
                    // A key update or an alert: out now if the socket takes
                    // it, else with the next write.
                    let _ = write_out(tls, fd);
                }
                match tls.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // End of stream without close_notify: an end all the same.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
                match tls.read_tls(&mut Fd(fd)) {
                    Ok(0) => return Ok(0),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
        })
    }

    /// The core's write: seals `iov` (coalesced into as few records as fit)
    /// and writes; returns the plaintext bytes taken. See the module doc for
    /// the backlog.
    pub fn writev(&self, fd: RawFd, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        self.with(fd, |c| {
            let tls = &mut c.tls;
            // Records sealed before go first, in order.
            if tls.wants_write() && !write_out(tls, fd)? {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let taken = tls.writer().write_vectored(iov)?;
            if taken == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            if !write_out(tls, fd)? {
                let total: usize = iov.iter().map(|s| s.len()).sum();
                match c.client {
                    // All taken, some sealed bytes left: the core would think
                    // this client written whole; the backlog tells it otherwise.
                    Some(id) if taken == total => self.backlog.borrow_mut().push(id),
                    // Not all taken: the core calls again, and gets WouldBlock.
                    _ => {}
                }
            }
            Ok(taken)
        })
    }

    /// The clients whose sockets filled with every byte taken, since the last call.
    pub fn take_backlog(&self) -> Vec<ClientId> {
        std::mem::take(&mut *self.backlog.borrow_mut())
    }

    /// Whether sealed records of `fd` wait for the socket.
    pub fn pending(&self, fd: RawFd) -> bool {
        self.with(fd, |c| Ok(c.tls.wants_write())).unwrap_or(false)
    }

    /// Writes what is sealed for `fd`; `Ok(true)` once nothing is left.
    pub fn flush(&self, fd: RawFd) -> io::Result<bool> {
        self.with(fd, |c| write_out(&mut c.tls, fd))
    }

    /// Seals as much of `bytes` as rustls takes now (it bounds what it keeps
    /// sealed and unwritten) and writes what the socket takes. Returns the
    /// plaintext bytes taken; 0 means: wait for writability, then again.
    pub fn seal_some(&self, fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
        self.with(fd, |c| {
            let tls = &mut c.tls;
            if tls.wants_write() && !write_out(tls, fd)? {
                return Ok(0);
            }
            let taken = tls.writer().write(bytes)?;
            write_out(tls, fd)?;
            Ok(taken)
        })
    }

    /// What an idle TLS connection costs this core: the boxed state itself.
    pub fn conn_size() -> usize {
        std::mem::size_of::<Conn>()
    }
}

/// Writes sealed records until none is left (`Ok(true)`) or the socket is
/// full (`Ok(false)`).
fn write_out(tls: &mut ServerConnection, fd: RawFd) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(&mut Fd(fd)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_connection_s_own_state_stays_under_1280_bytes() {
        // rustls 0.23's ServerConnection is 1,168 bytes inline; on the heap
        // it adds the handshake state, the two AEAD keys and its 4 KiB read
        // buffer (see the README's idle figures). The table holds a box.
        assert!(
            TlsConns::conn_size() <= 1280,
            "a TLS connection takes {} bytes inline",
            TlsConns::conn_size()
        );
        assert_eq!(std::mem::size_of::<Option<Box<Conn>>>(), 8);
    }
}
