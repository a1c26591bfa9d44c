//! The HTTP/1.1 driver: moves bytes between one socket and its sans-IO
//! [`Connection`], hands each request to [`routes`], and writes what the
//! machine queues, in the order it queues it. Framing, answer order,
//! keep-alive, `100-continue`, limits and deadlines are the machine's; this
//! module owns only the socket, the clock, and the publishes in flight.
//!
//! Pipelined publishes are all started before the first is answered, so a burst
//! reaches the topics' home cores together and fans out in one batch. Any other
//! request is routed only once everything before it is answered and written: it
//! may become a stream, whose first bytes the core writes.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use monoio::net::TcpStream;

use super::conn_io;
use super::publish_wait::publish_result;
use super::request::{Request, Route};
use super::respond::{linger_close, send_last, Reply};
use super::routes::{self, Action, PublishTarget};
use super::sse_session::{self, BUSY_EVENT, SHUTDOWN_EVENT};
use super::timer;
use super::worker::{OpenConn, Worker};
use super::ws_session;
use crate::admission::inbound::Charge;
use crate::core::state::PublishStart;
use crate::debug;
use crate::metrics::InboundRefusal;
use crate::proto::http::{Close, Config, Connection, Event, HttpError, RequestId};
use crate::time::Tick;

/// How long a connection refused for capacity may take to send its head.
const BUSY_HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// The machine's limits and deadlines, from the settings.
fn config(w: &Worker, header_timeout: Duration) -> Config {
    Config {
        max_header_bytes: w.cfg.max_header_bytes,
        max_body_bytes: w.cfg.max_body_bytes as u64,
        header_timeout: Tick::span(header_timeout),
        body_timeout: Tick::span(w.cfg.body_timeout),
    }
}

/// Publishes of one connection between their head and their answer.
#[derive(Default)]
struct Publishes {
    /// The publish whose body is arriving.
    reading: Option<Reading>,
    /// Started, not answered yet, in request order.
    started: Vec<Started>,
}

struct Reading {
    id: RequestId,
    target: PublishTarget,
    /// The body so far, when it comes in more than one run.
    body: Vec<u8>,
}

struct Started {
    id: RequestId,
    start: PublishStart,
    cors: Vec<(&'static str, String)>,
}

/// Serves one accepted connection: requests until it closes, or until a request
/// turns it into a stream, which then runs as a task of its own (so an idle
/// stream holds only the stream's small state, not the request reader's).
pub async fn serve(w: Rc<Worker>, stream: TcpStream, open: OpenConn) {
    let fd = stream.as_raw_fd();
    let accepted = w.now_tick();
    // The handshake and the first head share one deadline: --header-timeout
    // from the accept.
    if w.tls.is_some()
        && !Box::pin(handshake(&w, &stream, fd, accepted, w.cfg.header_timeout)).await
    {
        return;
    }
    let mut conn = Connection::new(config(&w, w.cfg.header_timeout), accepted);
    let mut publishes = Publishes::default();
    let mut charge = Charge::new(&w.inbound);
    loop {
        match take_events(&w, &stream, fd, &mut conn, &mut publishes).await {
            Err(Broken) => return,
            Ok(Some(stream_action)) => {
                return hand_off(w, stream, conn, stream_action, open).await;
            }
            Ok(None) => {}
        }
        charge_body(&w, &mut conn, &mut publishes, &mut charge);
        // More pipelined requests already in the socket: start them before
        // answering. A window of publishes to a topic homed on another core then
        // waits for one round trip through the bus, not one per read.
        let room = conn.read_room();
        if !publishes.started.is_empty()
            && room > 0
            && conn_io::recv_appending(&w, fd, conn.read_buf(), room).unwrap_or(0) > 0
        {
            continue;
        }
        if answer_and_write(&w, &stream, fd, &mut conn, &mut publishes)
            .await
            .is_err()
        {
            return;
        }
        match conn.closing() {
            Some(Close::Linger) => return linger_close(&w, &stream, fd).await,
            Some(Close::Now) => return,
            None => {}
        }
        if read(&w, &stream, fd, &mut conn).await.is_err() {
            return;
        }
    }
}

/// The socket broke while writing.
struct Broken;

/// The TLS handshake of a new connection within `limit` of `accepted`; false
/// (counted) when it failed or took too long, and the connection is to close.
async fn handshake(
    w: &Worker,
    stream: &TcpStream,
    fd: RawFd,
    accepted: Tick,
    limit: Duration,
) -> bool {
    let deadline = accepted + Tick::span(limit);
    match timer::timeout_at(w, deadline, conn_io::handshake(w, stream, fd)).await {
        Ok(Ok(())) => {
            w.metrics().tls_handshakes.inc();
            true
        }
        Ok(Err(e)) => {
            w.metrics().tls_handshake_failures.inc();
            debug!("core={} msg=\"TLS handshake failed\" error=\"{e}\"", w.core);
            false
        }
        Err(timer::Elapsed) => {
            w.metrics().tls_handshake_failures.inc();
            w.metrics().header_timeouts.inc();
            debug!("core={} msg=\"TLS handshake timed out\"", w.core);
            false
        }
    }
}

/// Sizes the connection's charge on `--max-inbound-memory` to the publish body
/// it is collecting (the machine's buffer and the runs gathered so far); over
/// the budget, the body is refused with a `503` and the connection closes after
/// the answers before it.
fn charge_body(w: &Worker, conn: &mut Connection, publishes: &mut Publishes, charge: &mut Charge) {
    let Some(reading) = &publishes.reading else {
        let _ = charge.resize(0);
        return;
    };
    if charge
        .resize(conn.held_bytes() + reading.body.capacity())
        .is_err()
    {
        conn.refuse_body(reading.id, HttpError::InboundBudget);
        publishes.reading = None;
        let _ = charge.resize(0);
        w.metrics().inbound_refused(InboundRefusal::HttpBudget);
        w.metrics().http_response(HttpError::InboundBudget.status());
    }
}

/// Takes every event the buffered bytes give: routes heads, collects publish
/// bodies, counts the machine's own refusals. Returns the action of a request
/// that turns the connection into a stream, if one does.
async fn take_events(
    w: &Rc<Worker>,
    stream: &TcpStream,
    fd: RawFd,
    conn: &mut Connection,
    publishes: &mut Publishes,
) -> Result<Option<Action>, Broken> {
    loop {
        let all_written = publishes.started.is_empty() && !conn.has_transmit();
        let Some(event) = conn.poll_event(w.now_tick()) else {
            return Ok(None);
        };
        let (id, action) = match event {
            Event::Head { id, head } => {
                let first = Request::new(w, head);
                if first.is_publish() || all_written {
                    (id, routes::route(w, fd, &first))
                } else {
                    // Everything before it is answered and written first; then its
                    // head is read again from the buffer, where it still is.
                    answer_and_write(w, stream, fd, conn, publishes).await?;
                    match conn.delivered_head() {
                        Some((id, head)) if conn.closing().is_none() => {
                            (id, routes::route(w, fd, &Request::new(w, head)))
                        }
                        _ => return Ok(None),
                    }
                }
            }
            Event::Body { id, data, last } => {
                if let Some(refusal) = publish_body(w, publishes, id, data, last) {
                    answer(w, conn, id, &refusal);
                }
                continue;
            }
            Event::Refused(e) => {
                count_refusal(w, e);
                continue;
            }
            Event::Closed => continue,
        };
        match action {
            Action::Reply(reply) => answer(w, conn, id, &reply),
            Action::Publish(target) => match conn.read_body(id) {
                Ok(()) => {
                    publishes.reading = Some(Reading {
                        id,
                        target,
                        body: Vec::new(),
                    })
                }
                Err(e) => count_refusal(w, e),
            },
            stream_action => return Ok(Some(stream_action)),
        }
    }
}

/// Collects a run of the publish body being read; once it is whole, publishes
/// it. Returns the refusal to answer when the body cannot be published.
fn publish_body(
    w: &Rc<Worker>,
    publishes: &mut Publishes,
    id: RequestId,
    data: &[u8],
    last: bool,
) -> Option<Reply> {
    let reading = publishes.reading.as_mut()?;
    if !last {
        reading.body.extend_from_slice(data);
        return None;
    }
    let Reading {
        target, mut body, ..
    } = publishes.reading.take()?;
    // A body that came in one run is published from the connection's buffer.
    let started = if body.is_empty() {
        routes::publish_body(w, &target, data)
    } else {
        body.extend_from_slice(data);
        routes::publish_body(w, &target, &body)
    };
    match started {
        Ok(start) => {
            publishes.started.push(Started {
                id,
                start,
                cors: target.cors,
            });
            None
        }
        Err(refusal) => Some(refusal),
    }
}

/// Hands the connection to the stream a request turned it into (or answers why
/// not). Everything before that request is answered and written.
async fn hand_off(
    w: Rc<Worker>,
    stream: TcpStream,
    conn: Connection,
    action: Action,
    open: OpenConn,
) {
    let fd = stream.as_raw_fd();
    let leftover = conn.into_upgrade();
    match action {
        Action::Sse(Ok(admitted)) => {
            monoio::spawn(sse_session::serve(stream, admitted, open));
        }
        Action::Sse(Err(refused)) => refused.answer(&w, &stream, fd).await,
        Action::SseDraining => {
            sse_session::refuse(&w, &stream, fd, SHUTDOWN_EVENT, "draining").await
        }
        Action::Ws(Ok(admitted)) => ws_session::spawn(w, stream, admitted, leftover, open),
        Action::Ws(Err(refused)) => refused.answer(&w, &stream, fd).await,
        Action::Reply(_) | Action::Publish(_) => unreachable!("not a hand-off"),
    }
}

/// Gives `reply` to the machine as the answer to `id`, and counts it unless an
/// earlier answer closed the connection.
fn answer(w: &Worker, conn: &mut Connection, id: RequestId, reply: &Reply) {
    if reply.as_response(|r| conn.respond(id, r, reply.close)) {
        w.metrics().http_response(reply.status);
    }
}

/// Counts an answer the machine gave on its own.
fn count_refusal(w: &Worker, e: HttpError) {
    match e {
        HttpError::HeadTimeout => w.metrics().header_timeouts.inc(),
        HttpError::BodyTimeout => w.metrics().inbound_refused(InboundRefusal::HttpTimeout),
        _ => {}
    }
    w.metrics().http_response(e.status());
}

/// Answers every started publish, in order, then writes everything queued in
/// one write.
async fn answer_and_write(
    w: &Rc<Worker>,
    stream: &TcpStream,
    fd: RawFd,
    conn: &mut Connection,
    publishes: &mut Publishes,
) -> Result<(), Broken> {
    for p in publishes.started.drain(..) {
        let result = publish_result(w, p.start).await;
        answer(w, conn, p.id, &routes::publish_answer(w, result, p.cors));
    }
    match conn.poll_transmit() {
        Some(out) => conn_io::write_all(w, stream, fd, &out)
            .await
            .map_err(|_| Broken),
        None => Ok(()),
    }
}

/// What a read gave.
enum Got {
    Bytes,
    /// End of stream, or the drain began while the connection was idle.
    End,
}

/// Reads what the machine asks for, within its deadline, and tells it what
/// happened (bytes, end of stream, the deadline).
async fn read(w: &Worker, stream: &TcpStream, fd: RawFd, conn: &mut Connection) -> io::Result<()> {
    let deadline = conn.poll_timeout();
    let idle = conn.is_idle();
    let room = conn.read_room().max(1);
    let read = async {
        if idle {
            return read_idle(w, stream, fd, conn).await;
        }
        let n = conn_io::read_some(w, stream, fd, conn.read_buf(), room).await?;
        Ok(if n == 0 { Got::End } else { Got::Bytes })
    };
    let got = match deadline {
        Some(at) => timer::timeout_at(w, at, read).await,
        None => Ok(read.await),
    };
    match got {
        // The timer fired for the deadline: the core's clock is there.
        Err(timer::Elapsed) => {
            conn.handle_timeout(w.now_tick().max(deadline.unwrap_or(Tick::ZERO)))
        }
        Ok(Ok(Got::Bytes)) => {}
        Ok(Ok(Got::End)) => conn.handle_eof(),
        Ok(Err(e)) => return Err(e),
    }
    Ok(())
}

/// Waits for a request on an idle connection: for readability (the drain ends
/// the wait), then reads into the core's scratch buffer. A connection between
/// requests holds no buffer of its own while it waits.
async fn read_idle(
    w: &Worker,
    stream: &TcpStream,
    fd: RawFd,
    conn: &mut Connection,
) -> io::Result<Got> {
    loop {
        // Input TLS opened already is there without waiting.
        if !conn_io::has_input(w, fd) {
            let readable = pin!(stream.readable(false));
            match w.drain.unless_draining(readable).await {
                None => return Ok(Got::End),
                Some(ready) => ready?,
            }
        }
        let mut scratch = w.scratch.borrow_mut();
        match conn_io::recv(w, fd, &mut scratch) {
            Ok(0) => return Ok(Got::End),
            Ok(n) => {
                conn.feed(&scratch[..n]);
                return Ok(Got::Bytes);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

/// The TLS table entry of a connection that has no [`OpenConn`] (refused at
/// accept), removed when it drops.
struct TlsEntry<'a>(&'a Worker, RawFd);

impl Drop for TlsEntry<'_> {
    fn drop(&mut self) {
        if let Some(tls) = &self.0.tls {
            tls.end(self.1);
        }
    }
}

/// Why a connection is refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Over `--max-connections`: `503`.
    Capacity,
    /// Over `--max-connections-per-ip` for its address: `429`.
    PerIp,
}

impl Busy {
    fn status(self) -> u16 {
        match self {
            Busy::Capacity => 503,
            Busy::PerIp => 429,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Busy::Capacity => "over capacity: retry later",
            Busy::PerIp => "too many connections from this address (--max-connections-per-ip)",
        }
    }

    /// The `reason` of the `ringcast.busy` event.
    fn event_reason(self) -> &'static str {
        match self {
            Busy::Capacity => "over capacity",
            Busy::PerIp => "too many connections from this address",
        }
    }
}

/// Answers a connection refused at accept (see [`Busy`]): `/sse` gets a `200`
/// with a `retry:` hint and a `ringcast.busy` event (a browser's EventSource gives
/// up for good on any other status), everything else a `503` or `429` with
/// `Retry-After`.
pub async fn refuse_busy(w: &Rc<Worker>, stream: TcpStream, why: Busy) {
    let fd = stream.as_raw_fd();
    // On https the refusal is answered over TLS too; its entry goes with it.
    let _entry = w.tls.as_ref().map(|_| TlsEntry(w, fd));
    if w.tls.is_some() && !handshake(w, &stream, fd, w.now_tick(), BUSY_HEAD_TIMEOUT).await {
        return;
    }
    let mut conn = Connection::new(config(w, BUSY_HEAD_TIMEOUT), w.now_tick());
    loop {
        let closing = conn.closing().is_some();
        let sse = match conn.poll_event(w.now_tick()) {
            Some(Event::Head { head, .. }) => Some(Request::new(w, head).route == Route::Sse),
            Some(Event::Refused(e)) => {
                count_refusal(w, e);
                None
            }
            Some(_) => continue,
            None if closing => None,
            None => match read(w, &stream, fd, &mut conn).await {
                Ok(()) => continue,
                Err(_) => return,
            },
        };
        return match sse {
            Some(true) => sse_session::refuse(w, &stream, fd, BUSY_EVENT, why.event_reason()).await,
            Some(false) => {
                let reply = Reply::error(why.status(), why.reason()).with("Retry-After", "1");
                send_last(w, &stream, fd, &reply).await
            }
            // A refused head gets its answer; a peer gone or silent gets nothing.
            None => {
                if let Some(out) = conn.poll_transmit() {
                    super::respond::finish(w, &stream, fd, &out).await;
                }
            }
        };
    }
}
