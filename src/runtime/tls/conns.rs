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
//!   4 KiB read buffer (given back down to 4 KiB before every wait, see
//!   [`TlsConns::has_input`]); sealed records stay only while the socket is full.

use std::cell::RefCell;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::RawFd;
use std::sync::Arc;

use rustls::ServerConnection;

use super::Tls;
use crate::core::registry::ClientId;
use crate::netio;

/// A source with nothing to read yet (see [`TlsConns::has_input`]).
struct NothingYet;

impl Read for NothingYet {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
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
                match tls.read_tls(&mut netio::FdIo(fd)) {
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
                    let _ = tls.write_tls(&mut netio::FdIo(fd));
                    return Ok(Err(HandshakeError::Refused));
                }
            }
        });
        step.unwrap_or(Err(HandshakeError::Closed))
    }

    /// Whether opened plaintext (or the peer's `close_notify`) waits to be
    /// read, so a reader must not wait for the socket first. Called before
    /// every wait for readability: it also lets rustls shrink its read buffer
    /// back to 4 KiB (it grows to hold a whole record, up to 16 KiB and more,
    /// and shrinks only at its next read), so a client that sent one large
    /// message and went quiet does not keep that room while it waits.
    pub fn has_input(&self, fd: RawFd) -> bool {
        self.with(fd, |c| {
            // A read that gets nothing: rustls resizes its empty buffer first.
            let _ = c.tls.read_tls(&mut NothingYet);
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
                    let _ = tls.write_tls(&mut netio::FdIo(fd));
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
                match tls.read_tls(&mut netio::FdIo(fd)) {
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
        match tls.write_tls(&mut netio::FdIo(fd)) {
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
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// The system allocator, counting the bytes live per thread, so a test
    /// can see what one connection holds while other tests run beside it.
    struct Counting;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
    }

    // SAFETY: every call is forwarded to `System` unchanged; the counter is a
    // const-initialised thread-local that never allocates.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = LIVE.try_with(|l| l.set(l.get() + layout.size() as isize));
            // SAFETY: the caller's layout is passed on as is.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let _ = LIVE.try_with(|l| l.set(l.get() - layout.size() as isize));
            // SAFETY: `ptr` came from `System.alloc` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
            let _ = LIVE.try_with(|l| l.set(l.get() + new as isize - layout.size() as isize));
            // SAFETY: as for `dealloc`, and `new` is the caller's.
            unsafe { System.realloc(ptr, layout, new) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    fn live() -> isize {
        LIVE.with(Cell::get)
    }

    /// A server table with one connection on a socket pair, handshaken with a
    /// rustls client trusting a CA made now.
    fn connected() -> (
        TlsConns,
        UnixStream,
        UnixStream,
        rustls::ClientConnection,
        isize,
    ) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let dir = std::env::temp_dir().join(format!(
            "ringcast-conns-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let settings = super::super::TlsSettings {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&settings.cert, leaf.pem()).unwrap();
        std::fs::write(&settings.key, key.serialize_pem()).unwrap();
        let conns = TlsConns::new(Tls::load(&settings).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
        // The table's room for descriptors up to 1024, taken before anything is counted.
        conns.conns.borrow_mut().reserve(1024);

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        let cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
        let (mut wire, server_end) = UnixStream::pair().unwrap();
        wire.set_nonblocking(true).unwrap();
        server_end.set_nonblocking(true).unwrap();
        let fd = server_end.as_raw_fd();
        let before = live();
        conns.begin(fd).unwrap();
        for _ in 0..16 {
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            let step = conns.handshake(fd).unwrap();
            if let Ok(n) = client.read_tls(&mut wire) {
                assert!(n > 0);
                client.process_new_packets().unwrap();
            }
            if step == Handshake::Done && !client.is_handshaking() {
                break;
            }
        }
        assert!(!client.is_handshaking());
        assert!(!conns.has_input(fd));
        let held = live() - before;
        (conns, wire, server_end, client, held)
    }

    #[test]
    fn an_idle_tls_connection_holds_under_7_kib() {
        // What one connection costs the server after its handshake, on the
        // heap: the boxed ServerConnection (1,184 bytes), its handshake state
        // and AEAD keys, and rustls's 4 KiB read buffer.
        let (conns, _wire, server_end, _client, held) = connected();
        eprintln!("an idle TLS connection holds {held} bytes");
        assert!(
            held <= 7 * 1024,
            "an idle TLS connection holds {held} bytes"
        );
        conns.end(server_end.as_raw_fd());
    }

    #[test]
    fn a_connection_that_read_a_large_record_gives_its_room_back_before_it_waits() {
        let (conns, mut wire, server_end, mut client, _) = connected();
        let fd = server_end.as_raw_fd();
        let message = vec![b'm'; 40_000];
        let mut got = vec![0u8; 64 * 1024];
        let mut n = 0;
        let before = live();
        client.writer().write_all(&message).unwrap();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        while n < message.len() {
            match conns.recv(fd, &mut got[n..]) {
                Ok(k) => n += k,
                Err(e) => panic!("{e} after {n} bytes"),
            }
        }
        assert_eq!(&got[..n], &message[..]);
        let after_read = live();
        assert!(!conns.has_input(fd));
        let after_wait = live();
        assert!(
            after_read - before >= 8 * 1024,
            "the read buffer grew for the 16 KiB records ({} bytes)",
            after_read - before
        );
        assert!(
            after_wait - before <= 1024,
            "{} bytes still held once the connection waits",
            after_wait - before
        );
        conns.end(fd);
    }

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
