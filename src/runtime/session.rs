//! What both stream sessions (SSE and WebSocket) share: admission refusals, the
//! session that removes its client exactly once, the bounded last write of a client
//! the server cut, waiting on a full socket, and the bound on unacknowledged
//! writes.

use std::cell::Cell;
use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::task::Poll;

use monoio::net::TcpStream;

use super::conn_io;
use super::respond::{refuse_access, respond_error};
use super::timer;
use super::worker::{OpenConn, Worker};
use crate::core::client::CloseReason;
use crate::core::registry::ClientId;
use crate::debug;
use crate::netio;
use crate::proto::access::Refusal;

/// Why a stream request was not admitted.
pub enum StreamRefused {
    /// 400 with this reason.
    BadRequest(String),
    /// 401 or 403.
    Access(Refusal),
}

impl StreamRefused {
    /// Answers the refusal and closes.
    pub async fn answer(&self, w: &Worker, stream: &TcpStream, fd: RawFd) {
        match self {
            StreamRefused::BadRequest(reason) => respond_error(w, stream, fd, 400, reason).await,
            StreamRefused::Access(refusal) => refuse_access(w, stream, fd, refusal).await,
        }
    }
}

/// One stream's connection for the session's life: its socket, its place in
/// the open-connection count (which holds the worker), and its client, which
/// leaves the core when this is dropped: the one exit of every session.
///
/// Built before the session's task and borrowed by its loop, so that each idle
/// stream's task holds each of these once (every byte here is paid by every
/// idle connection).
pub struct Session {
    /// Dropped after the client is removed, before the socket is closed.
    open: OpenConn,
    pub stream: TcpStream,
    pub id: ClientId,
    /// Why the client leaves: `PeerGone` unless the session says otherwise.
    pub reason: Cell<CloseReason>,
}

impl Session {
    pub fn new(open: OpenConn, stream: TcpStream, id: ClientId) -> Self {
        if let Some(tls) = &open.worker().tls {
            tls.bind(stream.as_raw_fd(), id);
        }
        Self {
            open,
            stream,
            id,
            reason: Cell::new(CloseReason::PeerGone),
        }
    }

    pub fn w(&self) -> &Rc<Worker> {
        self.open.worker()
    }

    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Removes the client now; `shutdown` also ends the connection at once
    /// (a readiness wait in flight would otherwise keep the socket open). A
    /// peer that is gone needs no shutdown: every wait on its socket completes
    /// at once, and the close that follows sends the FIN.
    fn remove(&self, shutdown: bool) {
        let reason = self.reason.get();
        let w = self.w();
        let transport = {
            let mut st = w.state.borrow_mut();
            let transport = st.client(self.id).map(|c| c.transport.label());
            if shutdown && reason != CloseReason::PeerGone {
                if let Some(fd) = st.fd(self.id) {
                    conn_io::close_notify(w, fd);
                    let _ = netio::shutdown_both(fd);
                }
            }
            if !st.remove(self.id, reason) {
                return;
            }
            transport
        };
        debug!(
            "core={} msg=\"client closed\" transport={} reason={}",
            w.core,
            transport.unwrap_or("?"),
            reason.label()
        );
    }

    /// Takes the client out of the core with what it is still owed, for a last
    /// bounded write by [`linger`]: it no longer counts, nor receives, meanwhile.
    pub fn retire(&self, reason: CloseReason) -> Vec<u8> {
        self.reason.set(reason);
        let rest = self.w().state.borrow_mut().take_rest(self.id);
        self.remove(false);
        rest
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.remove(true);
    }
}

/// How long a client the server cut may take to read its last bytes.
pub const LINGER: std::time::Duration = std::time::Duration::from_secs(10);

/// Writes a retired client's last bytes for at most `limit`, then ends the
/// connection, so a peer that reads late still sees a well-formed end (whole
/// frames, then the goodbye) and one that never reads costs nothing for long.
pub async fn linger(
    w: &Worker,
    stream: &TcpStream,
    fd: RawFd,
    rest: &[u8],
    limit: std::time::Duration,
) {
    if !rest.is_empty() {
        let _ = timer::timeout(w, limit, conn_io::write_all(w, stream, fd, rest)).await;
    } else if conn_io::pending(w, fd) {
        let _ = timer::timeout(w, limit, conn_io::flush_all(w, stream, fd)).await;
    }
    conn_io::close_notify(w, fd);
    let _ = netio::shutdown_both(fd);
}

/// Waits until a full socket takes more, then hands the client back to the
/// core's flush (the effects task writes it with the next slice: writes stay
/// in slices however many sockets drain at once); returns early with the
/// reason when the core asks to close the client meanwhile (a slow consumer
/// that never reads must not hold its task forever).
pub async fn await_writable(
    w: &Rc<Worker>,
    stream: &TcpStream,
    id: ClientId,
) -> Option<CloseReason> {
    let fd = stream.as_raw_fd();
    let outcome = loop {
        let mut writable = std::pin::pin!(stream.writable(false));
        let outcome = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = writable.as_mut().poll(cx) {
                return Poll::Ready(r.map_err(|_| CloseReason::PeerGone));
            }
            w.state.borrow_mut().poll_close_request(id, cx).map(Err)
        })
        .await;
        // Sealed TLS records that waited for the socket go before the core
        // writes again; until they are all out the client stays blocked.
        match outcome.map(|()| conn_io::flush(w, fd)) {
            Ok(Ok(false)) => continue,
            Ok(Err(_)) => break Err(CloseReason::PeerGone),
            Ok(Ok(true)) => break Ok(()),
            Err(reason) => break Err(reason),
        }
    };
    match outcome {
        Ok(()) => {
            w.state.borrow_mut().socket_writable(id);
            None
        }
        Err(reason) => Some(reason),
    }
}

/// What monoio adds to a spawned future in its task allocation (header, stage
/// tag, join waker), measured: a 624-byte future took a 672-byte allocation.
#[cfg(test)]
pub const TASK_OVERHEAD: usize = 48;

/// The size of the future `f` returns, without calling it.
#[cfg(test)]
pub fn returned_size<A, B, F>(_f: fn(A, B) -> F) -> usize {
    std::mem::size_of::<F>()
}
