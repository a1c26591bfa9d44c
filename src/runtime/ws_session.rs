//! WebSocket sessions: the upgrade, then a loop like the SSE one (readability,
//! writability, the core's requests) that feeds what the client sends to the
//! sans-IO [`Connection`] and answers its control messages. Messages reach the
//! socket through the core's flush, never through this task.
//!
//! `GET /echo` (only with `--echo`) is a plain echo of data messages for the
//! conformance suite; it never touches the core.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use monoio::net::TcpStream;

use super::conn_io;
use super::publish_wait::publish_and_wait;
use super::request::{Request, Route};
use super::respond::finish;
use super::session::{await_writable, linger, Session, StreamRefused, LINGER};
use super::timer::{self, expiry_tick, unix_now};
use super::worker::{OpenConn, Worker};
use crate::admission::inbound::Charge;
use crate::core::bus_msg::Since;
use crate::core::client::{CloseReason, Transport};
use crate::core::registry::ClientId;
use crate::core::state::{Admission, ClientTask};
use crate::metrics::InboundRefusal;
use crate::netio;
use crate::proto::control::{self, ControlError, Op};
use crate::proto::http::{self, Method};
use crate::proto::token::Grants;
use crate::proto::topic::{topics_from_query, TopicListError};
use crate::proto::ws::close::code;
use crate::proto::ws::deflate::{self, Agreed};
use crate::proto::ws::HandshakeError;
use crate::proto::ws::{
    check_handshake, encode_frame, text_frame, write_101, Connection, Event, HandshakeRequest,
    OpCode,
};
use crate::time::Tick;

/// How long we wait for the peer's Close after sending ours.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// An admitted WebSocket: its handshake answer and what it may do.
pub enum AdmittedWs {
    /// `/echo`: the 101 to send, and the permessage-deflate agreement.
    Echo(Vec<u8>, Agreed),
    /// `/ws`: registered and subscribed, the 101 queued.
    Subscriber {
        id: ClientId,
        /// Boxed: most connections carry no token, and inline it would size
        /// every connection's task.
        grants: Option<Box<Grants>>,
    },
}

/// Why an upgrade was not admitted.
pub enum UpgradeRefused {
    Handshake(HandshakeError),
    Stream(StreamRefused),
}

impl UpgradeRefused {
    /// Answers the refusal and closes.
    pub async fn answer(&self, w: &Worker, stream: &TcpStream, fd: RawFd) {
        match self {
            UpgradeRefused::Handshake(e) => {
                let headers: &[(&str, &str)] = if e.status() == 426 {
                    &[("Sec-WebSocket-Version", "13")]
                } else {
                    &[]
                };
                let mut out = Vec::new();
                let body = format!("{}\n", e.reason());
                http::write_response(
                    &mut out,
                    e.status(),
                    headers,
                    "text/plain; charset=utf-8",
                    body.as_bytes(),
                    false,
                );
                w.metrics().http_response(e.status());
                finish(w, stream, fd, &out).await;
            }
            UpgradeRefused::Stream(r) => r.answer(w, stream, fd).await,
        }
    }
}

/// Checks an upgrade (handshake, topics, access, origin) and registers its
/// client, before the session's task is spawned.
pub fn admit(w: &Rc<Worker>, fd: RawFd, req: &Request<'_>) -> Result<AdmittedWs, UpgradeRefused> {
    use StreamRefused as R;
    let head = &req.head;
    let handshake = HandshakeRequest {
        method_is_get: head.method == Method::Get,
        http11_or_later: head.minor_version >= 1,
        upgrade_websocket: head.upgrade_websocket,
        connection_upgrade: head.connection_upgrade,
        key: head.ws_key,
        version: head.ws_version,
    };
    let accept = check_handshake(&handshake).map_err(UpgradeRefused::Handshake)?;
    let agreed = match head.ws_extensions {
        Some(offers) if w.cfg.ws_deflate => deflate::negotiate(offers).unwrap_or(Agreed::NONE),
        _ => Agreed::NONE,
    };
    let mut hello = w.head_scratch.borrow_mut();
    hello.clear();
    write_101(&mut hello, &accept, agreed);
    if req.route == Route::Echo {
        w.metrics().http_response(101);
        return Ok(AdmittedWs::Echo(hello.to_vec(), agreed));
    }
    let topics = match topics_from_query(head.query, w.cfg.limits.max_topics_per_client) {
        Ok(t) => t,
        Err(TopicListError::Empty) => Vec::new(),
        Err(e) => return Err(UpgradeRefused::Stream(R::BadRequest(e.to_string()))),
    };
    let query_token = req.param("token").map(|v| v.into_owned());
    let grants = w
        .access
        .subscriber(&req.presented(query_token.as_deref()), &topics, unix_now())
        .map_err(|r| UpgradeRefused::Stream(R::Access(r)))?;
    let last_id = req.param("lastEventId");
    let sinces = Since::from_cursor(last_id.as_deref(), w.state.borrow().ids(), topics.len());
    let mut st = w.state.borrow_mut();
    st.set_now(w.now_tick());
    let id = st.admit(Admission {
        transport: Transport::Ws,
        fd,
        head: &hello,
        expires_at: grants.as_ref().map(|g| expiry_tick(w, g.exp)),
        topics: &topics,
        sinces,
        ws_deflate: agreed.to_byte(),
    });
    w.metrics().http_response(101);
    Ok(AdmittedWs::Subscriber {
        id,
        grants: grants.map(Box::new),
    })
}

/// Spawns the task of an admitted WebSocket.
pub fn spawn(
    w: Rc<Worker>,
    stream: TcpStream,
    admitted: AdmittedWs,
    leftover: Vec<u8>,
    open: OpenConn,
) {
    match admitted {
        AdmittedWs::Echo(hello, agreed) => {
            monoio::spawn(async move {
                let fd = stream.as_raw_fd();
                echo(&w, &stream, fd, &hello, agreed, leftover).await;
                drop(open);
            });
        }
        AdmittedWs::Subscriber { id, grants } => {
            let extras = (grants.is_some() || !leftover.is_empty()).then(|| {
                Box::new(Extras {
                    grants: grants.map(|g| *g),
                    leftover,
                })
            });
            monoio::spawn(serve(Session::new(open, stream, id), extras));
        }
    }
}

/// What few sessions have, boxed so that the others do not carry it in their
/// task: an access token's grants, and bytes the client sent behind its
/// upgrade head.
struct Extras {
    grants: Option<Grants>,
    leftover: Vec<u8>,
}

/// The grants of a session's token, if it has one.
fn grants(extras: Option<&Extras>) -> Option<&Grants> {
    extras.and_then(|e| e.grants.as_ref())
}

/// Runs a subscriber's session until it ends, then removes its client. A plain
/// function returning an `async move` block, like `sse_session::serve`, so that the
/// arguments are not kept twice in every connection's task.
#[allow(clippy::manual_async_fn)]
fn serve(session: Session, extras: Option<Box<Extras>>) -> impl Future<Output = ()> {
    async move {
        let reason = run(&session, extras.as_deref()).await;
        session.reason.set(reason);
        if reason == CloseReason::SlowConsumer {
            // Boxed, with the bytes it writes: a cold path.
            Box::pin(async {
                let rest = session.retire(reason);
                linger(session.w(), &session.stream, session.fd(), &rest, LINGER).await
            })
            .await;
        }
        drop(session);
    }
}

/// What woke the session.
enum Wake {
    Readable(io::Result<()>),
    Task(ClientTask),
    Deadline,
}

/// What a connection holds beyond a new one, kept (boxed) only while it holds
/// anything: its protocol state, and the charge on `--max-inbound-memory` of
/// the partial message in it.
struct Protocol {
    conn: Connection,
    charge: Charge,
}

impl Protocol {
    /// The state of a connection at rest: what a session starts with, and what
    /// it makes again when bytes arrive after it dropped its state. The
    /// permessage-deflate agreement lives in the core's client record (one
    /// byte), not in the session.
    fn new(w: &Worker, id: ClientId, grants: Option<&Grants>) -> Self {
        let agreed = Agreed::from_byte(w.state.borrow().ws_deflate(id));
        Protocol {
            conn: Connection::new(inbound_limit(w, grants), Tick::span(CLOSE_TIMEOUT))
                .with_message_timeout(Tick::span(w.cfg.body_timeout))
                .with_deflate(agreed),
            charge: Charge::new(&w.inbound),
        }
    }

    /// Keeps `self` in `slot` unless it is at rest (see `Connection::at_rest`;
    /// then nothing is charged either).
    fn keep_in(self, slot: &mut Option<Box<Protocol>>) {
        if !self.conn.at_rest() {
            *slot = Some(Box::new(self));
        }
    }
}

/// The session loop; returns why it ended. What lives here across the wait is
/// what every idle connection costs: the protocol state is kept only while it
/// holds something, and the cold paths are boxed.
async fn run(s: &Session, extras: Option<&Extras>) -> CloseReason {
    let mut kept: Option<Box<Protocol>> = None;
    let mut reason = CloseReason::PeerGone;
    if let Some(bytes) = extras.map(|e| &e.leftover[..]).filter(|b| !b.is_empty()) {
        Box::pin(take_input(s, &mut kept, extras, Some(bytes))).await;
    }
    let mut readable = pin!(s.stream.readable(false));
    loop {
        if kept.as_ref().is_some_and(|p| p.conn.wants_close_tcp()) {
            Box::pin(drain_outbox(s.w(), &s.stream, s.id)).await;
            return reason;
        }
        let wait = std::future::poll_fn(|cx| {
            // Input TLS opened already (more than one read took) is read first.
            if conn_io::has_input(s.w(), s.fd()) {
                return Poll::Ready(Wake::Readable(Ok(())));
            }
            if let Poll::Ready(r) = readable.as_mut().poll(cx) {
                return Poll::Ready(Wake::Readable(r));
            }
            s.w()
                .state
                .borrow_mut()
                .poll_client(s.id, cx)
                .map(Wake::Task)
        });
        // A plain `if`, not a `match` on the deadline: its temporary would stay
        // in the task across the idle wait.
        let wake = if deadline(&kept).is_none() {
            wait.await
        } else {
            // Boxed: only a connection with a frame under way, or closing, has
            // a deadline.
            let at = deadline(&kept).unwrap_or(Tick::ZERO);
            Box::pin(timer::timeout_at(s.w(), at, wait))
                .await
                .unwrap_or(Wake::Deadline)
        };
        match wake {
            Wake::Readable(Err(_)) => return CloseReason::PeerGone,
            Wake::Readable(Ok(())) => {
                // Boxed, as are the other cold paths below: they would otherwise
                // size every idle connection's task.
                Box::pin(take_input(s, &mut kept, extras, None)).await;
                readable.set(s.stream.readable(false));
            }
            Wake::Task(ClientTask::AwaitWritable) => {
                let wait = Box::pin(await_writable(s.w(), &s.stream, s.id));
                let outcome = match deadline(&kept) {
                    // Closing: a peer that does not read gets until the close deadline.
                    Some(at) => match Box::pin(timer::timeout_at(s.w(), at, wait)).await {
                        Ok(outcome) => outcome,
                        Err(_) => return reason,
                    },
                    None => wait.await,
                };
                // Any other close request is taken by the next turn of the loop.
                if outcome == Some(CloseReason::PeerGone) {
                    return CloseReason::PeerGone;
                }
            }
            Wake::Task(ClientTask::Close(why)) => {
                if why == CloseReason::PeerGone {
                    return why;
                }
                reason = why;
                if begin_close(s, &mut kept, extras, why) {
                    match why {
                        // The peer was judged gone: do not wait for its Close.
                        CloseReason::IdleTimeout => {
                            Box::pin(drain_outbox(s.w(), &s.stream, s.id)).await;
                            return why;
                        }
                        // The peer does not read: its task writes the rest alone.
                        CloseReason::SlowConsumer => return why,
                        _ => {}
                    }
                }
            }
            Wake::Deadline => {
                if let Some(p) = kept.as_deref_mut() {
                    handle_deadline(s, p);
                }
            }
        }
    }
}

/// The tick at which the kept protocol state wants `handle_timeout`.
fn deadline(kept: &Option<Box<Protocol>>) -> Option<Tick> {
    kept.as_ref().and_then(|p| p.conn.poll_timeout())
}

/// Starts the close the core asked for with `why`: queues our Close frame.
/// False when the close was already under way.
fn begin_close(
    s: &Session,
    kept: &mut Option<Box<Protocol>>,
    extras: Option<&Extras>,
    why: CloseReason,
) -> bool {
    let w = s.w();
    if w.state.borrow_mut().begin_close(s.id).is_none() {
        return false;
    }
    let (code, text) = match why {
        CloseReason::SlowConsumer => (code::POLICY_VIOLATION, "slow consumer"),
        CloseReason::TokenExpired => (code::POLICY_VIOLATION, "token expired"),
        CloseReason::IdleTimeout => (code::GOING_AWAY, "idle timeout"),
        _ => (code::GOING_AWAY, "server shutting down"),
    };
    let p = kept.get_or_insert_with(|| Box::new(Protocol::new(w, s.id, grants(extras))));
    p.conn.close(w.now_tick(), code, text);
    transmit(w, &mut p.conn, s.id);
    true
}

/// The kept state's deadline passed (the close deadline, or the message
/// deadline, which fails the connection with 1008).
fn handle_deadline(s: &Session, p: &mut Protocol) {
    let w = s.w();
    // The timer fired for the deadline, unchanged since the wait: the core's
    // clock is there.
    let at = p.conn.poll_timeout().unwrap_or(Tick::ZERO);
    let open = p.conn.can_send_data();
    p.conn.handle_timeout(w.now_tick().max(at));
    if open && !p.conn.can_send_data() {
        w.metrics().inbound_refused(InboundRefusal::WsTimeout);
        w.state.borrow_mut().mute(s.id);
        transmit(w, &mut p.conn, s.id);
    }
    let _ = p.charge.resize(p.conn.held_bytes());
}

/// Feeds the peer's input (`leftover`, the bytes that came with the upgrade
/// head, else what the socket holds) to the session's protocol state: the one
/// kept, or a new one. Keeps it afterwards only if it is not at rest.
async fn take_input(
    s: &Session,
    kept: &mut Option<Box<Protocol>>,
    extras: Option<&Extras>,
    leftover: Option<&[u8]>,
) {
    let w = s.w();
    let grants = grants(extras);
    let mut p = kept
        .take()
        .map_or_else(|| Protocol::new(w, s.id, grants), |p| *p);
    match leftover {
        Some(bytes) => feed(w, &mut p.conn, s.id, grants, bytes).await,
        None => read_available(w, &mut p.conn, s.id, grants, s.fd()).await,
    }
    charge_message(w, &mut p.conn, s.id, &mut p.charge);
    p.keep_in(kept);
}

/// The largest message the client may send: `--max-message-bytes` when it may
/// publish, else what the largest control message needs (a `subscribe` naming
/// `--max-topics-per-client` topics of the longest name), so a client that only
/// listens cannot make the server buffer a megabyte.
fn inbound_limit(w: &Worker, grants: Option<&Grants>) -> usize {
    match grants {
        Some(g) if !g.may_publish_any() => {
            control::max_message_bytes(w.cfg.limits.max_topics_per_client)
                .min(w.cfg.max_message_bytes)
        }
        _ => w.cfg.max_message_bytes,
    }
}

/// Sizes the connection's charge on `--max-inbound-memory` to the partial
/// message it holds; over the budget the connection is failed with 1013 (try
/// again later) and its partial message dropped.
fn charge_message(w: &Rc<Worker>, conn: &mut Connection, id: ClientId, charge: &mut Charge) {
    if charge.resize(conn.held_bytes()).is_ok() {
        return;
    }
    conn.abort(
        w.now_tick(),
        code::TRY_AGAIN_LATER,
        "server inbound memory spent: retry later",
    );
    let _ = charge.resize(conn.held_bytes());
    w.metrics().inbound_refused(InboundRefusal::WsBudget);
    w.state.borrow_mut().mute(id);
    transmit(w, conn, id);
}

/// Reads everything the socket holds (bounded) and feeds it to the connection.
async fn read_available(
    w: &Rc<Worker>,
    conn: &mut Connection,
    id: ClientId,
    grants: Option<&Grants>,
    fd: RawFd,
) {
    for _ in 0..16 {
        let chunk = {
            let mut scratch = w.scratch.borrow_mut();
            match conn_io::recv(w, fd, &mut scratch) {
                Ok(0) => None,
                Ok(n) => Some(scratch[..n].to_vec()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => None,
            }
        };
        match chunk {
            Some(bytes) => {
                {
                    let mut st = w.state.borrow_mut();
                    st.set_now(w.now_tick());
                    st.touch_read(id);
                }
                feed(w, conn, id, grants, &bytes).await
            }
            None => {
                conn.handle_eof();
                w.state.borrow_mut().mute(id);
                return;
            }
        }
    }
}

/// Feeds bytes to the connection, answering each complete message.
async fn feed(
    w: &Rc<Worker>,
    conn: &mut Connection,
    id: ClientId,
    grants: Option<&Grants>,
    mut bytes: &[u8],
) {
    while !bytes.is_empty() {
        let (used, result) = conn.handle_bytes(w.now_tick(), bytes);
        bytes = &bytes[used..];
        let event = match result {
            Ok(Some(event)) => event,
            Ok(None) if used == 0 => break,
            Ok(None) => continue,
            Err(_) => {
                // The connection queued its Close with the violation's code.
                w.state.borrow_mut().mute(id);
                break;
            }
        };
        match event {
            Event::Text(text) => answer_control(w, id, grants, &text).await,
            Event::Binary(_) => queue_text(w, id, &error_answer(None, ControlError::Binary)),
            Event::Close { .. } => w.state.borrow_mut().mute(id),
            Event::Ping(_) | Event::Pong(_) => {}
        }
        transmit(w, conn, id);
    }
    transmit(w, conn, id);
}

/// Queues the connection's pending control frames (pong, close): answers,
/// written ahead of the fan-out.
fn transmit(w: &Rc<Worker>, conn: &mut Connection, id: ClientId) {
    let mut out = Vec::new();
    if conn.poll_transmit(&mut out) {
        w.state.borrow_mut().queue_answer(id, &out);
    }
}

/// Waits (bounded) until what is queued to the client is written.
async fn drain_outbox(w: &Rc<Worker>, stream: &TcpStream, id: ClientId) {
    let deadline = w.now_tick() + Tick::span(CLOSE_TIMEOUT);
    let fd = stream.as_raw_fd();
    while (w.state.borrow().queued(id) > 0 || conn_io::pending(w, fd)) && w.now_tick() < deadline {
        if !matches!(
            timer::timeout_at(w, deadline, stream.writable(false)).await,
            Ok(Ok(()))
        ) {
            return;
        }
        if conn_io::flush(w, fd).unwrap_or(true) {
            w.flush_client(id);
        }
    }
}

/// Queues an answer to the client's own message (an acknowledgement or an
/// error), written ahead of the fan-out.
fn queue_text(w: &Rc<Worker>, id: ClientId, payload: &[u8]) {
    w.state.borrow_mut().queue_answer(id, &text_frame(payload));
}

fn error_answer(reference: Option<&[u8]>, e: impl std::fmt::Display) -> Vec<u8> {
    let mut out = Vec::new();
    control::write_error(&mut out, reference, &e.to_string());
    out
}

/// Answers one control message with an ack or an error frame.
async fn answer_control(w: &Rc<Worker>, id: ClientId, grants: Option<&Grants>, text: &[u8]) {
    let parsed = {
        let mut json = w.json.borrow_mut();
        control::parse(&mut json, text)
    };
    let control = match parsed {
        Ok(c) => c,
        Err((reference, e)) => return queue_text(w, id, &error_answer(reference.as_deref(), e)),
    };
    let reference = control.reference.as_deref();
    let mut answer = Vec::new();
    match control.op {
        Op::Subscribe { topics, since } => {
            if let Some(topic) = grants.and_then(|g| topics.iter().find(|t| !g.may_subscribe(t))) {
                let e = format!("topic not granted: {topic}");
                return queue_text(w, id, &error_answer(reference, e));
            }
            control::write_ack(&mut answer, reference, None);
            let mut st = w.state.borrow_mut();
            let sinces =
                Since::from_cursor(since.as_deref().map(str::as_bytes), st.ids(), topics.len());
            if let Err(e) = st.subscribe_acked(id, &topics, sinces, text_frame(&answer)) {
                drop(st);
                queue_text(w, id, &error_answer(reference, e));
            }
        }
        Op::Unsubscribe { topics } => {
            let mut st = w.state.borrow_mut();
            for topic in &topics {
                st.unsubscribe(id, topic);
            }
            drop(st);
            control::write_ack(&mut answer, reference, None);
            queue_text(w, id, &answer);
        }
        Op::Publish { topic, .. } if grants.is_some_and(|g| !g.may_publish(&topic)) => {
            let e = format!("publishing not granted: {topic}");
            queue_text(w, id, &error_answer(reference, e));
        }
        Op::Publish { topic, event, data } => {
            if data.len() > w.cfg.max_message_bytes {
                return queue_text(w, id, &error_answer(reference, ControlError::TooLarge));
            }
            match publish_and_wait(w, &topic, event.as_deref(), data).await {
                Ok(seq) => {
                    let msg_id = w.state.borrow().ids().format_id(seq);
                    control::write_ack(&mut answer, reference, Some(&msg_id));
                }
                Err(e) => {
                    w.metrics().publish_errors.inc();
                    control::write_error(&mut answer, reference, &e.to_string());
                }
            }
            queue_text(w, id, &answer);
        }
    }
}

/// `GET /echo`: every data message comes back with its opcode.
///
/// With permessage-deflate, each message goes back compressed on its own (as
/// the fan-out compresses: once, without context), or plain when that is
/// smaller or the client's window is too small for it.
async fn echo(
    w: &Rc<Worker>,
    stream: &TcpStream,
    fd: RawFd,
    hello: &[u8],
    agreed: Agreed,
    leftover: Vec<u8>,
) {
    if conn_io::write_all(w, stream, fd, hello).await.is_err() {
        return;
    }
    let mut conn =
        Connection::new(w.cfg.max_message_bytes, Tick::span(CLOSE_TIMEOUT)).with_deflate(agreed);
    let echo_frame = |out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]| {
        let compressed = agreed
            .takes_compressed(payload.len())
            .then(|| deflate::compressed_frame(opcode, payload))
            .flatten();
        match compressed {
            Some(frame) => out.extend_from_slice(&frame),
            None => encode_frame(out, opcode, true, payload),
        }
    };
    let mut input = leftover;
    let mut out = Vec::new();
    let mut write_shut = false;
    loop {
        let mut pos = 0;
        while pos < input.len() {
            let (used, result) = conn.handle_bytes(w.now_tick(), &input[pos..]);
            pos += used;
            match result {
                Ok(Some(Event::Text(t))) if conn.can_send_data() => {
                    echo_frame(&mut out, OpCode::Text, &t)
                }
                Ok(Some(Event::Binary(b))) if conn.can_send_data() => {
                    echo_frame(&mut out, OpCode::Binary, &b)
                }
                Ok(None) if used == 0 => break,
                Ok(_) => {}
                Err(_) => break,
            }
            let _ = conn.poll_transmit(&mut out);
        }
        let _ = conn.poll_transmit(&mut out);
        input.clear();
        if !out.is_empty() {
            if conn_io::write_all(w, stream, fd, &out).await.is_err() {
                return;
            }
            out.clear();
        }
        if conn.wants_close_tcp() {
            return;
        }
        if conn.wants_shutdown_write() && !write_shut {
            // Our Close is written: FIN now, then read until the peer's FIN.
            conn_io::close_notify(w, fd);
            let _ = netio::shutdown_write(fd);
            write_shut = true;
        }
        let read = conn_io::read_some(w, stream, fd, &mut input, 64 * 1024);
        let read = match conn.poll_timeout() {
            None => read.await,
            Some(at) => {
                match timer::timeout_at(w, at, read).await {
                    Ok(r) => r,
                    Err(_) => {
                        // Fired for `at`: see `Wake::Deadline` in `run`.
                        conn.handle_timeout(w.now_tick().max(at));
                        continue;
                    }
                }
            }
        };
        match read {
            Ok(0) | Err(_) => {
                conn.handle_eof();
                return;
            }
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::session::{returned_size, TASK_OVERHEAD};

    #[test]
    fn an_idle_websocket_task_fits_a_384_byte_allocation() {
        // Every idle connection holds its task: mimalloc rounds it up to its
        // size class (…, 320, 384, 448, 512, 640, 768). It took 768 before the
        // protocol state was kept only while it held something.
        let future = returned_size(serve);
        assert!(
            future + TASK_OVERHEAD <= 384,
            "the session future takes {future} bytes"
        );
    }
}
