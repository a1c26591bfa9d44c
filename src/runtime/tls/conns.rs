//! The TLS connections of one core, by descriptor, and the record layer
//! between their sockets and the rest of the runtime.
//!
//! Descriptors are dense and a connection lives on one core, so the table is a
//! `Vec` indexed by fd, owned by the core's `Worker` and never shared. Every
//! function here is non-blocking and synchronous: it does what the socket
//! allows now and says `WouldBlock` otherwise, like `netio`, so the callers
//! wait for readiness as they do for plain sockets.
//!
//! rustls runs unbuffered (`UnbufferedServerConnection`): it seals and opens
//! records in buffers this table hands it, and keeps none of its own.
//!
//! * **Reads** ([`TlsConns::recv`]): plaintext already opened goes first; else
//!   one `recv` of ciphertext into the core's read scratch, behind what the
//!   connection kept from before, opened by rustls into the caller's buffer.
//!   A read may also produce records to send (alerts, the handshake's
//!   flights, session tickets): written at once if the socket takes them,
//!   else kept for the next write.
//! * **Writes** ([`TlsConns::writev`], the core's flush): what was sealed
//!   before goes first; the frames given are gathered into the core's
//!   plaintext scratch and sealed together into its outgoing scratch (one
//!   record for everything that fits in 16 KiB; at most 64 KiB of plaintext
//!   a call, the core calls again for the rest) and written. The plaintext
//!   count returned is what was sealed. When that is everything but the
//!   socket did not take all the records, the connection is put on the
//!   *backlog*: the runtime then tells the core its
//!   socket is full, and the connection's task waits for writability and
//!   writes the rest ([`TlsConns::flush`]) before the core writes to it again.
//!   A key update the peer asked for goes out in front of the next write.
//! * **Memory**: a connection owns rustls's state (its keys, what it keeps
//!   of the handshake) and three byte vectors that are empty, with no
//!   allocation, unless something waits: ciphertext rustls is not done with
//!   (a partial record, or during the handshake messages it still refers
//!   to), plaintext opened that the reader's buffer could not take, and
//!   sealed records the socket did not take. An idle connection holds 2,582
//!   bytes of Rust heap (counted by a unit test below, the box of 1,176
//!   bytes in this table included) and aws-lc's two AEAD contexts (584 bytes
//!   each, from aws-lc's own `malloc`, which the test does not see). The
//!   scratch buffers are the core's (about 300 KiB of address space, touched
//!   only as far as reads and writes reach), lent for the length of one
//!   call, never across a wait.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::sync::Arc;

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, WriteTraffic};

use super::Tls;
use crate::core::registry::ClientId;
use crate::netio;

/// The largest record on the wire rustls accepts: 16 KiB of plaintext, its
/// 2 KiB allowance for the ciphertext's overhead, the 5-byte header.
const MAX_RECORD: usize = 16_384 + 2_048 + 5;

/// The most plaintext one write seals: four full records (rustls's buffered
/// writer took as much, its limit on sealed bytes being 64 KiB).
const SEAL_MAX: usize = 64 * 1024;

/// Room in the outgoing scratch for the records of [`SEAL_MAX`] bytes: each
/// record adds its header, tag and content type (under 64 bytes).
const SEALED_ROOM: usize = SEAL_MAX + 1024;

/// The most ciphertext a connection may keep unprocessed: rustls takes
/// handshake messages of up to 64 KiB, spread over records, plus a partial
/// record. More is a peer rustls would refuse anyway.
const MAX_HELD: usize = 128 * 1024;

/// One TLS connection of the core.
struct Conn {
    tls: UnbufferedServerConnection,
    /// The stream client on this connection, once it became one.
    client: Option<ClientId>,
    /// Received bytes rustls is not done with, the front of the next input
    /// it is given, byte for byte (see [`drive`]).
    incoming: Vec<u8>,
    /// Opened plaintext the reader's buffer could not take.
    opened: Vec<u8>,
    /// Sealed records the socket did not take, in order.
    sealed: Vec<u8>,
    /// The peer's `close_notify` was read: nothing more comes.
    peer_closed: bool,
    /// rustls refused the peer's records: the connection is over, every read
    /// and write fails.
    failed: bool,
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

/// The core's buffers, lent to one connection for the length of one call.
struct Scratch {
    /// Ciphertext being opened: what a connection kept, then one `recv`
    /// (as large as the reader's buffer, from one record up to 64 KiB).
    rx: Vec<u8>,
    /// Plaintext being sealed: the frames of one write, gathered.
    plain: Vec<u8>,
    /// Records being sealed, before the socket takes them.
    tx: Vec<u8>,
}

/// The TLS connections of one core, by descriptor.
pub struct TlsConns {
    pub shared: Arc<Tls>,
    conns: RefCell<Vec<Option<Box<Conn>>>>,
    scratch: RefCell<Scratch>,
    /// Connections whose sealed records wait for a full socket, with their
    /// client: filled by [`TlsConns::writev`], emptied by [`TlsConns::take_backlog`].
    backlog: RefCell<Vec<ClientId>>,
}

/// What [`drive`] stopped at.
enum Stop {
    /// Application data may flow (what the write step returned, if any).
    Traffic(Option<Result<(), EncryptError>>),
    /// The handshake waits for the peer.
    Handshaking,
    /// Both sides sent `close_notify`.
    Closed,
}

/// What one read of ciphertext came to.
enum Read {
    /// End of stream.
    End,
    /// rustls refused what came (the connection failed).
    Refused,
    /// This many bytes of plaintext went to the reader's buffer (the rest,
    /// if any, waits in the connection).
    Opened(usize),
}

/// The outgoing scratch and how much of it holds records sealed in this call.
struct Sealed<'s> {
    buf: &'s mut Vec<u8>,
    len: usize,
}

impl Sealed<'_> {
    /// Seals into the free room with `seal` (which says how much room it
    /// needed when it had too little: the room grows once and it runs again).
    fn put<E>(
        &mut self,
        mut seal: impl FnMut(&mut [u8]) -> Result<usize, E>,
        required: fn(&E) -> Option<usize>,
    ) -> Result<(), E> {
        loop {
            match seal(&mut self.buf[self.len..]) {
                Ok(n) => {
                    self.len += n;
                    return Ok(());
                }
                Err(e) => match required(&e) {
                    Some(r) if self.len + r > self.buf.len() => self.buf.resize(self.len + r, 0),
                    _ => return Err(e),
                },
            }
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn encode_room(e: &EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

fn encrypt_room(e: &EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

/// A write step for [`drive`]: seals into the room it is given.
type WriteStep<'a> = &'a mut dyn FnMut(
    &mut WriteTraffic<'_, ServerConnectionData>,
    &mut [u8],
) -> Result<usize, EncryptError>;

/// Runs rustls over `input` (what the connection kept, then any new bytes)
/// until it needs more from the peer: opened plaintext goes to `opened`,
/// records it wants sent (handshake flights, alerts, tickets) to `sealed`.
/// Once application data may flow, `write` (if given) seals into `sealed`.
///
/// Returns how many bytes from the front of `input` rustls is done with: the
/// rest must be the front of the next input, unchanged (rustls decrypts in
/// place and, during the handshake, keeps positions of messages in it). On a
/// rustls error the alert it queued is sealed too, and the error returned.
fn drive(
    tls: &mut UnbufferedServerConnection,
    input: &mut [u8],
    sealed: &mut Sealed<'_>,
    opened: &mut dyn FnMut(&[u8]),
    peer_closed: &mut bool,
    mut write: Option<WriteStep<'_>>,
) -> (usize, Result<Stop, rustls::Error>) {
    let mut done = 0;
    loop {
        let status = tls.process_tls_records(&mut input[done..]);
        let mut discard = status.discard;
        let stop = match status.state {
            Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                let mut failed = None;
                while let Some(record) = traffic.next_record() {
                    match record {
                        Ok(record) => {
                            discard += record.discard;
                            opened(record.payload);
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                match failed {
                    Some(e) => Err(e),
                    None => Ok(None),
                }
            }
            Ok(ConnectionState::EncodeTlsData(mut encode)) => sealed
                .put(|out| encode.encode(out), encode_room)
                .map(|()| None)
                .map_err(|e| rustls::Error::General(e.to_string())),
            // What was encoded is in `sealed`: the caller sends it, and keeps
            // what the socket does not take.
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                transmit.done();
                Ok(None)
            }
            Ok(ConnectionState::PeerClosed) => {
                *peer_closed = true;
                Ok(None)
            }
            Ok(ConnectionState::Closed) => {
                *peer_closed = true;
                Ok(Some(Stop::Closed))
            }
            Ok(ConnectionState::BlockedHandshake) => Ok(Some(Stop::Handshaking)),
            Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                let wrote = write
                    .as_mut()
                    .map(|step| sealed.put(|out| step(&mut traffic, out), encrypt_room));
                Ok(Some(Stop::Traffic(wrote)))
            }
            // Early data is off (`max_early_data_size` 0); any state a later
            // rustls adds is not one this loop knows how to serve.
            Ok(_) => Err(rustls::Error::General("unexpected TLS state".into())),
            Err(e) => Err(e),
        };
        done += discard;
        match stop {
            Ok(None) => {}
            Ok(Some(stop)) => return (done, Ok(stop)),
            Err(e) => {
                // The alert rustls queued comes out of the next calls, which
                // hand out what it queued before anything else. Only while
                // it has some: a call past that would read the input again
                // (the refused record included).
                while tls.wants_write() {
                    let status = tls.process_tls_records(&mut input[done..]);
                    let encoded = match status.state {
                        Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                            sealed.put(|out| encode.encode(out), encode_room).is_ok()
                        }
                        _ => false,
                    };
                    done += status.discard;
                    if !encoded {
                        break;
                    }
                }
                return (done, Err(e));
            }
        }
    }
}

/// Replaces `held` with `rest` (the bytes rustls is not done with): nothing
/// allocated when there are none.
fn keep(held: &mut Vec<u8>, rest: &[u8]) {
    if rest.is_empty() {
        *held = Vec::new();
    } else if held.capacity() >= rest.len() && held.capacity() <= 2 * MAX_RECORD {
        held.clear();
        held.extend_from_slice(rest);
    } else {
        // Sized to what is kept: a handshake that held more gives it back.
        *held = rest.to_vec();
    }
}

/// Drops the first `n` bytes of `held`, and its allocation once it is empty.
fn consume(held: &mut Vec<u8>, n: usize) {
    if n >= held.len() {
        *held = Vec::new();
    } else {
        held.drain(..n);
    }
}

/// Writes as much of `bytes` as the socket takes now: the count, short when
/// the socket is full.
fn send(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    let mut at = 0;
    while at < bytes.len() {
        match netio::writev(fd, &[IoSlice::new(&bytes[at..])]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

/// Writes what the connection holds sealed; `Ok(true)` once nothing is left.
fn flush_held(held: &mut Vec<u8>, fd: RawFd) -> io::Result<bool> {
    if held.is_empty() {
        return Ok(true);
    }
    let n = send(fd, held)?;
    consume(held, n);
    Ok(held.is_empty())
}

/// Writes `records` (just sealed) after what the connection holds sealed,
/// and keeps what the socket does not take; `Ok(true)` once nothing is left.
fn send_sealed(held: &mut Vec<u8>, fd: RawFd, records: &[u8]) -> io::Result<bool> {
    if !held.is_empty() {
        held.extend_from_slice(records);
        return flush_held(held, fd);
    }
    let n = send(fd, records)?;
    if n < records.len() {
        held.extend_from_slice(&records[n..]);
        return Ok(false);
    }
    Ok(true)
}

fn failed_error() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "the TLS connection failed")
}

impl Conn {
    /// rustls refused the peer: nothing is kept but the refusal.
    fn fail(&mut self) {
        self.failed = true;
        self.incoming = Vec::new();
        self.opened = Vec::new();
    }

    /// One `recv` behind what the connection kept, opened by rustls (see
    /// [`drive`]); `out` takes the plaintext first, `opened` the rest.
    fn read_and_open(&mut self, s: &mut Scratch, fd: RawFd, out: &mut [u8]) -> io::Result<Read> {
        let held = self.incoming.len();
        let room = out.len().clamp(MAX_RECORD, SEAL_MAX);
        if s.rx.len() < held + room {
            // Not while connections keep at most MAX_HELD (see below).
            s.rx.resize(held + room, 0);
        }
        s.rx[..held].copy_from_slice(&self.incoming);
        let got = netio::recv(fd, &mut s.rx[held..held + room])?;
        if got == 0 {
            return Ok(Read::End);
        }
        let filled = held + got;
        let mut n = 0;
        let opened = &mut self.opened;
        let mut sink = |plain: &[u8]| {
            let k = plain.len().min(out.len() - n);
            out[n..n + k].copy_from_slice(&plain[..k]);
            n += k;
            opened.extend_from_slice(&plain[k..]);
        };
        let mut sealed = Sealed {
            buf: &mut s.tx,
            len: 0,
        };
        let (done, stop) = drive(
            &mut self.tls,
            &mut s.rx[..filled],
            &mut sealed,
            &mut sink,
            &mut self.peer_closed,
            None,
        );
        keep(&mut self.incoming, &s.rx[done..filled]);
        // Records rustls sealed while reading (a flight, an alert, a ticket):
        // out now if the socket takes them, else with the next write.
        let sent = send_sealed(&mut self.sealed, fd, sealed.bytes());
        if stop.is_err() || self.incoming.len() > MAX_HELD {
            self.fail();
            return Ok(Read::Refused);
        }
        sent?;
        if self.peer_closed {
            // rustls reads nothing after the peer's close_notify.
            self.incoming = Vec::new();
        }
        Ok(Read::Opened(n))
    }

    /// Seals as much of `iov` as one write takes (up to [`SEAL_MAX`]) and
    /// writes it after what was sealed before. Returns the plaintext bytes
    /// sealed and whether the socket took every record; `WouldBlock` when
    /// records sealed before still wait for the socket.
    fn seal_and_send(
        &mut self,
        s: &mut Scratch,
        fd: RawFd,
        iov: &[IoSlice<'_>],
    ) -> io::Result<(usize, bool)> {
        if self.failed {
            return Err(failed_error());
        }
        if !flush_held(&mut self.sealed, fd)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let total: usize = iov.iter().map(|s| s.len()).sum();
        let take = total.min(SEAL_MAX);
        if take == 0 {
            return Ok((0, true));
        }
        // One frame (a heartbeat, one message) is sealed from where it is;
        // several are gathered first, to go out as one record.
        let plain: &[u8] = match iov.first() {
            Some(first) if first.len() >= take => &first[..take],
            _ => {
                let mut at = 0;
                for slice in iov {
                    let k = slice.len().min(take - at);
                    s.plain[at..at + k].copy_from_slice(&slice[..k]);
                    at += k;
                    if at == take {
                        break;
                    }
                }
                &s.plain[..take]
            }
        };
        let opened = &mut self.opened;
        let mut sink = |p: &[u8]| opened.extend_from_slice(p);
        let mut sealed = Sealed {
            buf: &mut s.tx,
            len: 0,
        };
        let mut step = |traffic: &mut WriteTraffic<'_, ServerConnectionData>, out: &mut [u8]| {
            traffic.encrypt(plain, out)
        };
        let (done, stop) = drive(
            &mut self.tls,
            &mut self.incoming,
            &mut sealed,
            &mut sink,
            &mut self.peer_closed,
            Some(&mut step),
        );
        consume(&mut self.incoming, done);
        let result = match stop {
            Ok(Stop::Traffic(Some(Ok(())))) => Ok(take),
            Ok(Stop::Traffic(Some(Err(e)))) => Err(io::Error::other(e)),
            Ok(Stop::Traffic(None)) => Err(io::ErrorKind::WouldBlock.into()),
            Ok(Stop::Handshaking) => Err(io::ErrorKind::NotConnected.into()),
            Ok(Stop::Closed) => Err(io::ErrorKind::BrokenPipe.into()),
            Err(_) => {
                self.fail();
                Err(failed_error())
            }
        };
        // Whatever was sealed goes out, in order: the records of a failed
        // write are an alert at most.
        let all_out = send_sealed(&mut self.sealed, fd, sealed.bytes())?;
        result.map(|taken| (taken, all_out))
    }
}

impl TlsConns {
    pub fn new(shared: Arc<Tls>) -> Self {
        Self {
            shared,
            conns: RefCell::new(Vec::new()),
            scratch: RefCell::new(Scratch {
                // Zeroed pages the kernel maps only once touched: the
                // room a read takes behind the most a connection keeps.
                rx: vec![0; MAX_HELD + SEAL_MAX],
                plain: vec![0; SEAL_MAX],
                tx: vec![0; SEALED_ROOM],
            }),
            backlog: RefCell::new(Vec::new()),
        }
    }

    /// Runs `f` on the connection of `fd` and the core's scratch buffers;
    /// `NotConnected` when there is none.
    fn with<R>(
        &self,
        fd: RawFd,
        f: impl FnOnce(&mut Conn, &mut Scratch) -> io::Result<R>,
    ) -> io::Result<R> {
        let mut conns = self.conns.borrow_mut();
        match usize::try_from(fd)
            .ok()
            .and_then(|i| conns.get_mut(i))
            .and_then(|c| c.as_deref_mut())
        {
            Some(conn) => f(conn, &mut self.scratch.borrow_mut()),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Starts the server side of a handshake on `fd` (a new connection).
    pub fn begin(&self, fd: RawFd) -> Result<(), HandshakeError> {
        let idx = usize::try_from(fd).map_err(|_| HandshakeError::Closed)?;
        let tls = UnbufferedServerConnection::new(self.shared.config.clone())
            .map_err(|_| HandshakeError::Refused)?;
        let mut conns = self.conns.borrow_mut();
        if conns.len() <= idx {
            conns.resize_with(idx + 1, || None);
        }
        conns[idx] = Some(Box::new(Conn {
            tls,
            client: None,
            incoming: Vec::new(),
            opened: Vec::new(),
            sealed: Vec::new(),
            peer_closed: false,
            failed: false,
        }));
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

    /// Sends `close_notify` (the connection is about to end its writing side),
    /// after what was sealed before. Nothing on a connection whose handshake
    /// has not finished, or that failed.
    pub fn close_notify(&self, fd: RawFd) {
        let _ = self.with(fd, |c, s| {
            if c.failed {
                return Ok(());
            }
            let opened = &mut c.opened;
            let mut sink = |p: &[u8]| opened.extend_from_slice(p);
            let mut sealed = Sealed {
                buf: &mut s.tx,
                len: 0,
            };
            let mut step = |traffic: &mut WriteTraffic<'_, ServerConnectionData>,
                            out: &mut [u8]| {
                traffic.queue_close_notify(out)
            };
            let (done, _) = drive(
                &mut c.tls,
                &mut c.incoming,
                &mut sealed,
                &mut sink,
                &mut c.peer_closed,
                Some(&mut step),
            );
            consume(&mut c.incoming, done);
            send_sealed(&mut c.sealed, fd, sealed.bytes()).map(|_| ())
        });
    }

    /// The stream client `id` now lives on `fd`.
    pub fn bind(&self, fd: RawFd, id: ClientId) {
        let _ = self.with(fd, |c, _| {
            c.client = Some(id);
            Ok(())
        });
    }

    /// One step of the handshake of `fd`: as far as the socket allows.
    /// Application data the peer sent right behind its last flight is opened
    /// and kept for the first read.
    pub fn handshake(&self, fd: RawFd) -> Result<Handshake, HandshakeError> {
        let step = self.with(fd, |c, s| loop {
            match flush_held(&mut c.sealed, fd) {
                Ok(true) => {}
                Ok(false) => return Ok(Ok(Handshake::WantWrite)),
                Err(_) => return Ok(Err(HandshakeError::Closed)),
            }
            if c.failed {
                return Ok(Err(HandshakeError::Refused));
            }
            if !c.tls.is_handshaking() {
                return Ok(Ok(Handshake::Done));
            }
            if c.peer_closed {
                return Ok(Err(HandshakeError::Closed));
            }
            match c.read_and_open(s, fd, &mut []) {
                Ok(Read::End) => return Ok(Err(HandshakeError::Closed)),
                Ok(Read::Opened(_)) => {}
                Ok(Read::Refused) => return Ok(Err(HandshakeError::Refused)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Ok(Handshake::WantRead))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Ok(Err(HandshakeError::Closed)),
            }
        });
        step.unwrap_or(Err(HandshakeError::Closed))
    }

    /// Whether opened plaintext, the peer's `close_notify` or a failure waits
    /// to be read, so a reader must not wait for the socket first. Looks at
    /// the connection only: no syscall, nothing to give back (a connection
    /// keeps no read buffer).
    pub fn has_input(&self, fd: RawFd) -> bool {
        self.with(fd, |c, _| {
            Ok(!c.opened.is_empty() || c.peer_closed || c.failed)
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
        self.with(fd, |c, s| {
            if !c.opened.is_empty() {
                let n = c.opened.len().min(buf.len());
                buf[..n].copy_from_slice(&c.opened[..n]);
                consume(&mut c.opened, n);
                return Ok(n);
            }
            // A connection rustls failed stays failed: an error every time,
            // never WouldBlock (the reader would wait forever).
            if c.failed {
                return Err(failed_error());
            }
            if c.peer_closed {
                return Ok(0);
            }
            loop {
                match c.read_and_open(s, fd, buf)? {
                    // End of stream without close_notify: an end all the same.
                    Read::End => return Ok(0),
                    Read::Refused => return Err(failed_error()),
                    Read::Opened(n) if n > 0 => return Ok(n),
                    Read::Opened(_) if c.peer_closed => return Ok(0),
                    // Nothing opened (a partial record, a key update): the
                    // next recv says whether more is there.
                    Read::Opened(_) => {}
                }
            }
        })
    }

    /// The core's write: seals `iov` (coalesced into as few records as fit)
    /// and writes; returns the plaintext bytes taken. See the module doc for
    /// the backlog.
    pub fn writev(&self, fd: RawFd, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        self.with(fd, |c, s| {
            let (taken, all_out) = c.seal_and_send(s, fd, iov)?;
            if taken == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            if !all_out {
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
        self.with(fd, |c, _| Ok(!c.sealed.is_empty()))
            .unwrap_or(false)
    }

    /// Writes what is sealed for `fd`; `Ok(true)` once nothing is left.
    pub fn flush(&self, fd: RawFd) -> io::Result<bool> {
        self.with(fd, |c, _| flush_held(&mut c.sealed, fd))
    }

    /// Seals as much of `bytes` as one write takes (up to 64 KiB) and writes
    /// what the socket takes. Returns the plaintext bytes taken; 0 means:
    /// wait for writability, then again.
    pub fn seal_some(&self, fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
        self.with(fd, |c, s| {
            match c.seal_and_send(s, fd, &[IoSlice::new(bytes)]) {
                Ok((taken, _)) => Ok(taken),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                Err(e) => Err(e),
            }
        })
    }

    /// What an idle TLS connection costs this core: the boxed state itself.
    pub fn conn_size() -> usize {
        std::mem::size_of::<Conn>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::io::{Read, Write};
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

    /// What a test's own vector takes of the count.
    fn live_of(v: &Vec<u8>) -> isize {
        v.capacity() as isize
    }

    /// A server table, a socket pair and a rustls client (of `versions`,
    /// sealing records of at most `fragment` bytes) trusting a CA made now;
    /// nothing sent yet.
    fn unconnected(
        versions: &[&'static rustls::SupportedProtocolVersion],
        fragment: Option<usize>,
    ) -> (TlsConns, UnixStream, UnixStream, rustls::ClientConnection) {
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
        let mut cfg = rustls::ClientConfig::builder_with_protocol_versions(versions)
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.max_fragment_size = fragment;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let client = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
        let (wire, server_end) = UnixStream::pair().unwrap();
        wire.set_nonblocking(true).unwrap();
        server_end.set_nonblocking(true).unwrap();
        (conns, wire, server_end, client)
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
        let (conns, mut wire, server_end, mut client) = unconnected(rustls::DEFAULT_VERSIONS, None);
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

    /// Seals `plain` on the client and returns the records, not yet on the wire.
    fn sealed_by(client: &mut rustls::ClientConnection, plain: &[u8]) -> Vec<u8> {
        client.writer().write_all(plain).unwrap();
        let mut records = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut records).unwrap();
        }
        records
    }

    /// What the client opens of the records the server wrote to the wire.
    fn opened_by(client: &mut rustls::ClientConnection, wire: &mut UnixStream) -> Vec<u8> {
        client.read_tls(wire).unwrap();
        client.process_new_packets().unwrap();
        let mut got = [0u8; 64];
        let n = client.reader().read(&mut got).unwrap();
        got[..n].to_vec()
    }

    /// Reads from the server until `want` plaintext bytes came, `chunk` at a time.
    fn read_all(conns: &TlsConns, fd: RawFd, want: usize, chunk: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; chunk];
        while got.len() < want {
            match conns.recv(fd, &mut buf) {
                Ok(0) => panic!("end of stream after {} bytes", got.len()),
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(e) => panic!("{e} after {} bytes", got.len()),
            }
        }
        got
    }

    #[test]
    fn an_idle_tls_connection_holds_under_2700_bytes() {
        // What one connection costs the server on the Rust heap once it has
        // done its handshake, read a request and written an answer, and
        // waits (2,582 bytes): the boxed connection (rustls's
        // UnbufferedServerConnection, the client and three empty vectors,
        // 1,176 bytes), rustls's state once the handshake is done (its key
        // schedule, the record layer's sealer and opener), the room it
        // reserves for handshake message spans (about 640 bytes), its queues
        // of records to send and opened (the latter 96 bytes, once it has
        // opened one). No read buffer: the core's scratch is the only one.
        // Not counted: the two AEAD contexts inside the sealer and opener,
        // 584 bytes each, which aws-lc takes from the C `malloc`.
        let (conns, mut wire, server_end, mut client, handshaken) = connected();
        let fd = server_end.as_raw_fd();
        let mark = live();
        wire.write_all(&sealed_by(&mut client, b"GET /sse HTTP/1.1\r\n\r\n"))
            .unwrap();
        let mut request = [0u8; 64];
        assert_eq!(conns.recv(fd, &mut request).unwrap(), 21);
        let answer = b"HTTP/1.1 200 OK\r\n\r\n";
        assert_eq!(conns.writev(fd, &[IoSlice::new(answer)]).unwrap(), 19);
        assert!(!conns.has_input(fd) && !conns.pending(fd));
        let held = handshaken + live() - mark;
        eprintln!(
            "an idle TLS connection holds {held} bytes ({handshaken} after the handshake, {} inline)",
            TlsConns::conn_size()
        );
        assert!(held <= 2700, "an idle TLS connection holds {held} bytes");
        conns.end(fd);
    }

    #[test]
    fn a_connection_that_read_a_large_message_holds_nothing_once_it_is_read() {
        let (conns, mut wire, server_end, mut client, _) = connected();
        let fd = server_end.as_raw_fd();
        let message: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let before = live();
        client.writer().write_all(&message).unwrap();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        // A reader with a small buffer: the records it opens hold more than
        // it takes, and the connection keeps the rest until it is read.
        let mut got = Vec::with_capacity(message.len());
        let mut buf = vec![0u8; 1024];
        let before = before + live_of(&got) + live_of(&buf);
        let n = conns.recv(fd, &mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
        let while_reading = live();
        assert!(conns.has_input(fd), "opened plaintext waits");
        while got.len() < message.len() {
            let n = conns.recv(fd, &mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, message);
        assert!(!conns.has_input(fd));
        let after = live();
        eprintln!("after a 40 KB message: {} bytes held", after - before);
        assert!(
            while_reading - before >= 8 * 1024,
            "a 16 KiB record opened into a 1 KiB read keeps the rest ({} bytes)",
            while_reading - before
        );
        assert!(
            after - before <= 256,
            "{} bytes still held once the message is read",
            after - before
        );
        conns.end(fd);
    }

    #[test]
    fn a_partial_record_is_held_until_its_rest_comes_then_given_back() {
        let (conns, mut wire, server_end, mut client, _) = connected();
        let fd = server_end.as_raw_fd();
        let message = vec![b'p'; 10_000];
        let records = sealed_by(&mut client, &message);
        let before = live();
        let (first, rest) = records.split_at(records.len() / 2);
        wire.write_all(first).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let before = before + live_of(&buf);
        let e = conns.recv(fd, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let held = live() - before;
        assert!(
            held >= first.len() as isize,
            "the partial record is kept ({held} bytes)"
        );
        assert!(!conns.has_input(fd), "a partial record is not input yet");
        wire.write_all(rest).unwrap();
        let mut got = Vec::with_capacity(message.len());
        let before = before + live_of(&got);
        while got.len() < message.len() {
            let n = conns.recv(fd, &mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, message);
        assert!(
            live() - before <= 256,
            "{} bytes still held once the record is read",
            live() - before
        );
        conns.end(fd);
    }

    #[test]
    fn a_peer_s_key_update_is_answered_and_data_flows_both_ways() {
        let (conns, mut wire, server_end, mut client, _) = connected();
        let fd = server_end.as_raw_fd();
        // The client updates its keys and asks the server to update its own.
        client.refresh_traffic_keys().unwrap();
        wire.write_all(&sealed_by(&mut client, b"after the update"))
            .unwrap();
        assert_eq!(read_all(&conns, fd, 16, 64), b"after the update");
        // The server's next write goes out under its new keys, behind the
        // key update it owes.
        let frames = [IoSlice::new(b"one "), IoSlice::new(b"two")];
        assert_eq!(conns.writev(fd, &frames).unwrap(), 7);
        assert!(!conns.pending(fd));
        assert_eq!(opened_by(&mut client, &mut wire), b"one two");
        conns.end(fd);
    }

    #[test]
    fn frames_of_one_write_are_sealed_in_one_record() {
        let (conns, mut wire, server_end, _client, _) = connected();
        let fd = server_end.as_raw_fd();
        let frames = [
            IoSlice::new(&[b'a'; 100]),
            IoSlice::new(&[b'b'; 200]),
            IoSlice::new(&[b'c'; 300]),
        ];
        assert_eq!(conns.writev(fd, &frames).unwrap(), 600);
        let mut wire_bytes = vec![0u8; 4096];
        let n = wire.read(&mut wire_bytes).unwrap();
        // One TLS 1.3 record: its header, the 600 bytes, the content type
        // and a 16-byte tag.
        assert_eq!(n, 5 + 600 + 1 + 16, "{n} bytes on the wire");
        conns.end(fd);
    }

    #[test]
    fn garbage_after_the_handshake_fails_the_connection_for_good() {
        let (conns, mut wire, server_end, _client, _) = connected();
        let fd = server_end.as_raw_fd();
        wire.write_all(&[23, 3, 3, 0, 40]).unwrap();
        wire.write_all(&[0x55; 40]).unwrap();
        let mut buf = [0u8; 256];
        assert_eq!(
            conns.recv(fd, &mut buf).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert!(
            conns.has_input(fd),
            "a failed connection is read, not waited on"
        );
        assert_eq!(
            conns.recv(fd, &mut buf).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert!(conns.writev(fd, &[IoSlice::new(b"x")]).is_err());
        // The server told the peer why: a bad_record_mac alert.
        let n = wire.read(&mut buf).unwrap();
        assert!(n > 0 && buf[0] == 23, "an alert record ({n} bytes)");
        conns.end(fd);
    }

    /// Handshakes a client sending records of 64 bytes at most, fed to the
    /// server 29 bytes at a time: partial records, and handshake messages
    /// spread over records that arrive in different reads (rustls keeps their
    /// positions in the bytes it is handed back). Then data both ways.
    fn handshake_in_pieces(versions: &[&'static rustls::SupportedProtocolVersion]) {
        let (conns, mut wire, server_end, mut client) = unconnected(versions, Some(64));
        let fd = server_end.as_raw_fd();
        conns.begin(fd).unwrap();
        let mut queued = Vec::new();
        let mut done = false;
        for _ in 0..2_000 {
            while client.wants_write() {
                client.write_tls(&mut queued).unwrap();
            }
            let k = queued.len().min(29);
            wire.write_all(&queued[..k]).unwrap();
            queued.drain(..k);
            let step = conns.handshake(fd).unwrap();
            if let Ok(n) = client.read_tls(&mut wire) {
                assert!(n > 0);
                client.process_new_packets().unwrap();
            }
            if step == Handshake::Done && !client.is_handshaking() && queued.is_empty() {
                done = true;
                break;
            }
        }
        assert!(done, "the handshake completes");
        // The request in 64-byte records, 29 bytes at a time too.
        let request = b"GET /ws?topic=pieces HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(4);
        let mut records = sealed_by(&mut client, &request);
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while got.len() < request.len() {
            if !records.is_empty() {
                let k = records.len().min(29);
                wire.write_all(&records[..k]).unwrap();
                records.drain(..k);
            }
            match conns.recv(fd, &mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, request);
        assert_eq!(conns.writev(fd, &[IoSlice::new(b"answer")]).unwrap(), 6);
        assert_eq!(opened_by(&mut client, &mut wire), b"answer");
        conns.end(fd);
    }

    #[test]
    fn a_tls_1_3_handshake_in_small_records_and_pieces_completes() {
        handshake_in_pieces(&[&rustls::version::TLS13]);
    }

    #[test]
    fn a_tls_1_2_handshake_in_small_records_and_pieces_completes() {
        handshake_in_pieces(&[&rustls::version::TLS12]);
    }

    struct Dummy;

    impl crate::core::registry::Classify for Dummy {
        fn class(&self) -> usize {
            0
        }
    }

    #[test]
    fn a_write_taken_whole_that_the_socket_does_not_take_puts_the_client_on_the_backlog() {
        let (conns, mut wire, server_end, mut client, _) = connected();
        let fd = server_end.as_raw_fd();
        let id = crate::core::registry::Registry::new(0).insert(Dummy);
        conns.bind(fd, id);
        netio::set_sockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 4096).unwrap();
        let frame: Vec<u8> = (0..6_000u32).map(|i| (i % 253) as u8).collect();
        let mut sent = 0;
        // Whole writes until one leaves sealed records behind.
        while !conns.pending(fd) {
            let taken = conns.writev(fd, &[IoSlice::new(&frame), IoSlice::new(b"|")]);
            assert_eq!(
                taken.unwrap(),
                frame.len() + 1,
                "every write is taken whole"
            );
            sent += 1;
            assert!(sent < 1_000, "the socket never filled");
        }
        assert_eq!(conns.take_backlog(), vec![id]);
        assert!(conns.take_backlog().is_empty());
        // The core writes no more until the sealed rest is out.
        let e = conns.writev(fd, &[IoSlice::new(b"x")]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(conns.seal_some(fd, b"x").unwrap(), 0);
        // The peer reads; the rest goes out; every byte arrives, in order.
        let want = sent * (frame.len() + 1);
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while got.len() < want {
            let _ = conns.flush(fd).unwrap();
            match client.read_tls(&mut wire) {
                Ok(_) => {
                    client.process_new_packets().unwrap();
                    while let Ok(n) = client.reader().read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert!(conns.flush(fd).unwrap());
        assert!(!conns.pending(fd));
        assert_eq!(got.len(), want);
        for chunk in got.chunks(frame.len() + 1) {
            assert_eq!(&chunk[..frame.len()], &frame[..]);
            assert_eq!(chunk[frame.len()], b'|');
        }
        conns.end(fd);
    }

    #[test]
    fn a_tls_connection_s_own_state_stays_under_1280_bytes() {
        // rustls 0.23's UnbufferedServerConnection with the three vectors and
        // the client is 1,176 bytes inline; on the heap it adds the
        // handshake-done state and the two AEAD keys (see the README's idle
        // figures). The table holds a box.
        assert!(
            TlsConns::conn_size() <= 1280,
            "a TLS connection takes {} bytes inline",
            TlsConns::conn_size()
        );
        assert_eq!(std::mem::size_of::<Option<Box<Conn>>>(), 8);
    }
}
