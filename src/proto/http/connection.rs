//! One HTTP/1.1 server connection as a state machine, in the manner of quinn-proto's
//! `Connection`: the caller reads bytes into it and tells it the time; it hands back
//! events (a request head, body bytes, a refusal), the bytes to write, and the next
//! deadline. No sockets and no clock of its own, so every path is tested with a script
//! of bytes and virtual time (see `tests` below).
//!
//! What the machine keeps to itself, so that the driver cannot get it wrong:
//!
//! - **Framing.** Heads are parsed with [`HeadScanner`] (each byte scanned about once);
//!   bodies are read by `Content-Length` or [`ChunkedDecoder`]. A body the caller does
//!   not ask for is skipped, so the next request is found where it starts.
//! - **Answer order.** Every request gets a [`RequestId`]; answers given out of order
//!   are held until those before them are given, so pipelined requests are answered in
//!   the order they came ([`MAX_UNANSWERED`] at most in flight).
//! - **Keep-alive.** Whether an answer says `Connection: close`, and whether another
//!   request is read after it, follow from the request (`HTTP/1.0`, `Connection:
//!   close`) and from the answer ([`Connection::respond`] `close`).
//! - **`100-continue`.** Sent when the caller asks for a body the client is waiting to
//!   send, after the answers of the requests before it.
//! - **Limits and their answers.** 431/414 for heads over `max_header_bytes`, 413 for
//!   bodies over `max_body_bytes`, 411 for a body asked of a request without one, 400s
//!   for malformed framing, and 408 when a head is not complete by the header deadline
//!   or a body by the body deadline. Each is queued as the request's answer, reported as
//!   [`Event::Refused`], and closes the connection after it.
//!
//! Times are [`Tick`]s, the server's one time base (the worker passes its clock);
//! only differences matter, and this module never reads a clock.
//!
//! The head event borrows the connection's buffer (offsets into it, as httparse gives
//! them): take what must outlive the event before calling the machine again.

use std::collections::VecDeque;

use super::{error_response, write_response, Body, ChunkedDecoder, HeadLimits, HeadScanner};
use super::{HttpError, RequestHead, CONTINUE};
pub use crate::time::Tick;

/// Requests read but not yet answered, at most. Past it no further head is read until
/// an answer is given: a pipelining client cannot queue unbounded work.
pub const MAX_UNANSWERED: usize = 256;

/// Bytes asked of the socket per read while a head or a chunked body arrives.
const READ_CHUNK: usize = 4096;

/// Bytes asked of the socket per read of a body whose length is known.
const BODY_READ_CHUNK: usize = 64 * 1024;

/// The limits and deadlines of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Longest request head (`--max-header-bytes`).
    pub max_header_bytes: usize,
    /// Longest request body (`--max-body-bytes`).
    pub max_body_bytes: u64,
    /// How long a request head may take, from the moment the machine starts waiting
    /// for it (`--header-timeout`). An idle keep-alive connection is closed quietly at
    /// this deadline; one with part of a head gets 408.
    pub header_timeout: Tick,
    /// How long a request body may take, from the moment it is asked for (or skipped)
    /// (`--body-timeout`). Bytes arriving do not move this deadline: a body sent a byte
    /// at a time is still cut at it, with 408.
    pub body_timeout: Tick,
}

/// Names one request of a connection; answers are sent in the order of these ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(u64);

/// What the machine has to tell its caller. Get them with [`Connection::poll_event`].
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'b> {
    /// A request head, borrowed from the connection's buffer. Answer it with
    /// [`Connection::respond`] (now or later: answers are sent in request order). If
    /// the request has a body, ask for it with [`Connection::read_body`] before the
    /// next [`poll_event`](Connection::poll_event), or it is skipped. A request that
    /// becomes a stream leaves with [`Connection::into_upgrade`].
    Head {
        id: RequestId,
        head: RequestHead<'b>,
    },
    /// Body bytes of the request `id`, as they come (decoded when chunked); `last` on
    /// the run that completes the body (which may be empty).
    Body {
        id: RequestId,
        data: &'b [u8],
        last: bool,
    },
    /// The machine refused a request itself (a limit, a framing error, a deadline: see
    /// [`HttpError::status`]). The answer is queued after the answers before it; the
    /// connection closes once it is sent.
    Refused(HttpError),
    /// No request is under way and none will be read: the peer closed, or was silent
    /// past the header deadline. Send what is queued, then close.
    Closed,
}

/// How the connection ends, once [`Connection::closing`] says so and the queued bytes
/// are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// After a final answer: half-close and read (and drop) what the peer still sends
    /// for a moment, so the answer is not lost to a reset caused by unread bytes.
    Linger,
    /// The peer is gone or never spoke: close at once.
    Now,
}

/// An answer to a request. `Content-Length` and `Connection` are added by the machine.
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    pub status: u16,
    pub headers: &'a [(&'a str, &'a str)],
    /// `Content-Type`; omitted when empty.
    pub content_type: &'a str,
    pub body: &'a [u8],
}

/// How the body being read is framed.
#[derive(Debug)]
enum Framing {
    /// This many bytes of it are still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// Where the connection is in its request cycle.
#[derive(Debug)]
enum Phase {
    /// Waiting for a request head (or parsing it), until `deadline`.
    Head { deadline: Tick },
    /// A head was handed out; the caller may ask for its body before the next poll.
    Delivered {
        id: RequestId,
        body: Body,
        expect_continue: bool,
    },
    /// Reading a body, handed out when `deliver`, else skipped, until `deadline`.
    Body {
        id: RequestId,
        framing: Framing,
        deliver: bool,
        deadline: Tick,
    },
    /// No more requests are read.
    Closed(Close),
}

/// A request that has not been answered yet, or whose answer waits for those before it.
#[derive(Debug)]
struct Slot {
    /// The request allows another one after it.
    keep_alive: bool,
    /// `100 Continue` is owed as soon as the answers before this request are sent.
    interim: bool,
    /// The final answer, encoded, if given; with `true` when the connection ends after it.
    answer: Option<(Vec<u8>, bool)>,
}

/// The answers of a connection, put in request order.
#[derive(Debug, Default)]
struct Answers {
    /// Requests not answered yet (or answered ahead of one before them), the first
    /// being `first`. INVARIANT: `first + slots.len() == next`.
    slots: VecDeque<Slot>,
    first: u64,
    next: u64,
    /// Bytes to write, in order.
    out: Vec<u8>,
    /// An answer that closes the connection was moved to `out`: nothing follows it.
    ended: bool,
}

impl Answers {
    fn open(&mut self, keep_alive: bool) -> RequestId {
        debug_assert_eq!(self.first + self.slots.len() as u64, self.next);
        let id = RequestId(self.next);
        self.next += 1;
        self.slots.push_back(Slot {
            keep_alive,
            interim: false,
            answer: None,
        });
        id
    }

    /// The slot of `id` if it is still waiting for its answer.
    fn slot(&mut self, id: RequestId) -> Option<&mut Slot> {
        let index = usize::try_from(id.0.checked_sub(self.first)?).ok()?;
        self.slots.get_mut(index).filter(|s| s.answer.is_none())
    }

    /// Queues `err`'s answer for request `id`, or for a new one when the head itself was
    /// refused.
    ///
    /// Returns false when `id` was answered already (its body broke a rule after the
    /// answer): nothing is queued.
    fn refuse(&mut self, id: Option<RequestId>, err: HttpError) -> bool {
        let id = id.unwrap_or_else(|| self.open(false));
        let Some(slot) = self.slot(id) else {
            return false;
        };
        let mut bytes = Vec::new();
        error_response(&mut bytes, err);
        slot.answer = Some((bytes, true));
        self.pump();
        true
    }

    /// Moves the answers that are next in order to `out`.
    fn pump(&mut self) {
        while let Some(front) = self.slots.front_mut() {
            if front.interim {
                front.interim = false;
                self.out.extend_from_slice(CONTINUE);
            }
            let Some((bytes, close)) = front.answer.take() else {
                return;
            };
            self.slots.pop_front();
            self.first += 1;
            if self.out.is_empty() {
                self.out = bytes;
            } else {
                self.out.extend_from_slice(&bytes);
            }
            if close {
                // Nothing after a closing answer is sent.
                self.slots.clear();
                self.first = self.next;
                self.ended = true;
                return;
            }
        }
    }
}

/// The server side of one HTTP/1.1 connection (what it keeps to itself is listed in
/// the docs of `proto/http/connection.rs`).
///
/// Call order, driven by the caller's I/O loop:
/// 1. Inputs: bytes appended through [`read_buf`](Self::read_buf) (at most
///    [`read_room`](Self::read_room)) or [`feed`](Self::feed);
///    [`handle_eof`](Self::handle_eof) when the read side ends;
///    [`handle_timeout`](Self::handle_timeout) once the time returned by
///    [`poll_timeout`](Self::poll_timeout) has come.
/// 2. Events: [`poll_event`](Self::poll_event) until `None`. Answer heads with
///    [`respond`](Self::respond) (any time later), ask for a body with
///    [`read_body`](Self::read_body) before the next poll, or leave with
///    [`into_upgrade`](Self::into_upgrade).
/// 3. Outputs: write what [`poll_transmit`](Self::poll_transmit) gives; once
///    [`closing`](Self::closing) says so, close as it says.
#[derive(Debug)]
pub struct Connection {
    cfg: Config,
    /// Received bytes not consumed yet. INVARIANT: the first `consumed` bytes belong to
    /// the last event handed out and are dropped at the next call.
    buf: Vec<u8>,
    consumed: usize,
    /// Decoded bytes of a chunked body, handed out by the last event.
    decoded: Vec<u8>,
    scanner: HeadScanner,
    phase: Phase,
    answers: Answers,
    /// An event to report at the next poll (a deadline or the peer's close).
    report: Option<Report>,
    /// The latest time the caller gave; deadlines start from it.
    now: Tick,
    /// The request handed out last did not allow another after it (`Connection:
    /// close`, HTTP/1.0): no head is read after it.
    last_request: bool,
}

#[derive(Debug, Clone, Copy)]
enum Report {
    Refused(HttpError),
    Closed,
}

impl Connection {
    /// A connection accepted at `now`: the header deadline starts.
    pub fn new(cfg: Config, now: Tick) -> Self {
        Self {
            cfg,
            buf: Vec::new(),
            consumed: 0,
            decoded: Vec::new(),
            scanner: HeadScanner::new(),
            phase: Phase::Head {
                deadline: now + cfg.header_timeout,
            },
            answers: Answers::default(),
            report: None,
            now,
            last_request: false,
        }
    }

    /// How many bytes the machine wants read next (the size of the next read); 0 when
    /// it wants none now: it is closing, it waits for the caller's decision on a head,
    /// or [`MAX_UNANSWERED`] requests are waiting for their answers.
    pub fn read_room(&self) -> usize {
        if self.answers.ended {
            return 0;
        }
        let buffered = self.buf.len() - self.consumed;
        match &self.phase {
            Phase::Head { .. } if self.answers.slots.len() < MAX_UNANSWERED => {
                // One byte past the limit is enough to refuse the head.
                let limit = self.cfg.max_header_bytes + 1;
                READ_CHUNK.min(limit.saturating_sub(buffered))
            }
            Phase::Body {
                framing: Framing::Length(left),
                ..
            } => {
                let left = usize::try_from(*left).unwrap_or(usize::MAX);
                left.saturating_sub(buffered).clamp(1, BODY_READ_CHUNK)
            }
            Phase::Body { .. } => READ_CHUNK,
            _ => 0,
        }
    }

    /// Whether bytes are buffered that no event has handed out yet.
    pub fn has_buffered_input(&self) -> bool {
        self.buf.len() > self.consumed
    }

    /// The buffer to append received bytes to (at most [`read_room`](Self::read_room)
    /// of them). Only appending is allowed.
    pub fn read_buf(&mut self) -> &mut Vec<u8> {
        self.drop_consumed();
        &mut self.buf
    }

    /// Appends received bytes (read elsewhere, into a shared scratch buffer).
    pub fn feed(&mut self, bytes: &[u8]) {
        self.read_buf().extend_from_slice(bytes);
    }

    /// The peer will send nothing more. A request under way is dropped unanswered
    /// (nobody is left to send the rest of it); the answers queued are still sent.
    pub fn handle_eof(&mut self) {
        if !matches!(self.phase, Phase::Closed(_)) {
            self.phase = Phase::Closed(Close::Now);
            self.report = Some(Report::Closed);
        }
    }

    /// The next deadline, if any: pass [`handle_timeout`](Self::handle_timeout) the
    /// time once it has come.
    pub fn poll_timeout(&self) -> Option<Tick> {
        match self.phase {
            _ if self.answers.ended => None,
            Phase::Head { deadline } | Phase::Body { deadline, .. } => Some(deadline),
            _ => None,
        }
    }

    /// Acts on a deadline that has come by `now`: a connection idle between requests
    /// closes quietly; a head or body not complete by its deadline is refused with 408.
    pub fn handle_timeout(&mut self, now: Tick) {
        self.now = self.now.max(now);
        match self.phase {
            _ if self.answers.ended => {}
            Phase::Head { deadline } if now >= deadline => {
                if self.has_buffered_input() {
                    self.refuse(None, HttpError::HeadTimeout);
                } else {
                    self.phase = Phase::Closed(Close::Now);
                    self.report = Some(Report::Closed);
                }
            }
            Phase::Body { id, deadline, .. } if now >= deadline => {
                self.refuse(Some(id), HttpError::BodyTimeout);
            }
            _ => {}
        }
    }

    /// The next event the buffered bytes (or a deadline, or the peer's close) give, if
    /// any. The event borrows the connection: take from it what must outlive it first.
    pub fn poll_event(&mut self, now: Tick) -> Option<Event<'_>> {
        self.now = self.now.max(now);
        self.drop_consumed();
        self.decoded.clear();
        if let Some(event) = self.take_report() {
            return Some(event);
        }
        loop {
            if self.answers.ended {
                return None;
            }
            match &mut self.phase {
                Phase::Closed(_) => return None,
                Phase::Delivered {
                    id,
                    body,
                    expect_continue,
                } => {
                    // The caller did not ask for the body: skip it. A client waiting for
                    // `100 Continue` will not send it, and what it sends next cannot be
                    // told apart from it: read nothing more, and end after the answer.
                    let (id, body, expect_continue) = (*id, *body, *expect_continue);
                    if expect_continue && !matches!(body, Body::Absent | Body::Length(0)) {
                        if let Some(slot) = self.answers.slot(id) {
                            slot.keep_alive = false;
                        }
                        self.last_request = true;
                        self.phase = Phase::Closed(Close::Linger);
                        return None;
                    }
                    self.start_body(id, body, false);
                }
                Phase::Head { .. } => {
                    if self.buf.is_empty() {
                        // An idle connection holds no buffer.
                        self.buf = Vec::new();
                        return None;
                    }
                    if self.answers.slots.len() >= MAX_UNANSWERED {
                        return None;
                    }
                    return self.parse_head();
                }
                Phase::Body {
                    id,
                    framing,
                    deliver,
                    ..
                } => {
                    let (id, deliver) = (*id, *deliver);
                    let step = match framing {
                        Framing::Length(left) => {
                            let take = usize::try_from(*left)
                                .map_or(self.buf.len(), |l| l.min(self.buf.len()));
                            *left -= take as u64;
                            Ok((take, *left == 0, false))
                        }
                        Framing::Chunked(decoder) if self.buf.is_empty() => {
                            Ok((0, decoder.is_done(), true))
                        }
                        Framing::Chunked(decoder) => decoder
                            .decode(&self.buf, &mut self.decoded)
                            .map(|(used, done)| (used, done, true)),
                    };
                    let (used, last, chunked) = match step {
                        Ok(step) => step,
                        Err(e) => {
                            self.refuse(Some(id), e);
                            return self.take_report();
                        }
                    };
                    if last {
                        self.await_head();
                    }
                    let nothing_new = if chunked {
                        self.decoded.is_empty()
                    } else {
                        used == 0
                    };
                    if !deliver || (nothing_new && !last) {
                        self.buf.drain(..used);
                        self.decoded.clear();
                        if last {
                            continue;
                        }
                        return None;
                    }
                    self.consumed = used;
                    let data = if chunked {
                        &self.decoded[..]
                    } else {
                        &self.buf[..used]
                    };
                    return Some(Event::Body { id, data, last });
                }
            }
        }
    }

    /// Asks for the body of `id`, the request just handed out: it arrives as
    /// [`Event::Body`] events (at least one, the last with `last`), within the body
    /// deadline. Sends `100 Continue` if the client waits for it, once the answers
    /// before it are sent.
    ///
    /// # Errors
    /// [`HttpError::LengthRequired`] when the request has neither `Content-Length` nor
    /// chunked framing: the 411 is queued and the connection closes after it.
    pub fn read_body(&mut self, id: RequestId) -> Result<(), HttpError> {
        let Phase::Delivered {
            id: delivered,
            body,
            expect_continue,
        } = self.phase
        else {
            debug_assert!(
                false,
                "read_body({id:?}) without its head: {:?}",
                self.phase
            );
            return Ok(());
        };
        debug_assert_eq!(id, delivered, "read_body of another request");
        if body == Body::Absent {
            self.refuse(Some(id), HttpError::LengthRequired);
            self.report = None;
            return Err(HttpError::LengthRequired);
        }
        let buffered = (self.buf.len() - self.consumed) as u64;
        let waits = match body {
            Body::Length(len) => buffered < len,
            _ => true,
        };
        if expect_continue && waits {
            if let Some(slot) = self.answers.slot(id) {
                slot.interim = true;
            }
            self.answers.pump();
        }
        self.start_body(id, body, true);
        Ok(())
    }

    /// Refuses the body of `id` while it arrives, for a reason of the server's
    /// (`InboundBudget`): its answer is queued in order, nothing more is read, and
    /// the buffered input is dropped. The caller drops what it collected.
    pub fn refuse_body(&mut self, id: RequestId, err: HttpError) {
        self.refuse(Some(id), err);
        self.report = None;
        self.buf = Vec::new();
        self.consumed = 0;
    }

    /// Heap bytes the machine holds for input: its read buffer (what an inbound
    /// memory budget counts, with the body the caller collects).
    pub fn held_bytes(&self) -> usize {
        self.buf.capacity()
    }

    /// Gives the answer to request `id`; `close` ends the connection after it (so does
    /// a request that did not allow another). Answers are sent in request order, and
    /// no request after a closing answer is read.
    ///
    /// # Return
    /// Whether the answer will be sent: false when an earlier answer closed the
    /// connection (requests read after it are dropped unanswered).
    pub fn respond(&mut self, id: RequestId, response: &Response<'_>, close: bool) -> bool {
        // A body not asked for is skipped, unless the client waits for `100 Continue`
        // before sending it: then it never comes, and the connection must close.
        let body_withheld = matches!(self.phase, Phase::Delivered { id: d, body, expect_continue: true }
            if d == id && !matches!(body, Body::Absent | Body::Length(0)));
        let latest = id.0 + 1 == self.answers.next;
        let Some(slot) = self.answers.slot(id) else {
            debug_assert!(
                self.answers.ended || self.closing().is_some(),
                "respond({id:?}): not an unanswered request"
            );
            return false;
        };
        let keep_alive = slot.keep_alive && !close && !body_withheld;
        let mut bytes = Vec::with_capacity(response.body.len() + 128);
        write_response(
            &mut bytes,
            response.status,
            response.headers,
            response.content_type,
            response.body,
            keep_alive,
        );
        slot.answer = Some((bytes, !keep_alive));
        if !keep_alive && latest {
            // Nothing after it is read (a body of its own is still skipped first).
            self.last_request = true;
            if let Phase::Head { .. } = self.phase {
                self.phase = Phase::Closed(Close::Linger);
            }
        }
        self.answers.pump();
        // Everything answered and nothing more sent yet: the connection is idle from
        // now, and the next head has the whole header deadline.
        if let Phase::Head { deadline } = &mut self.phase {
            if self.answers.slots.is_empty() && self.buf.len() == self.consumed {
                *deadline = self.now + self.cfg.header_timeout;
            }
        }
        true
    }

    /// The bytes to write now, if any, in the order they must go.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let out = &mut self.answers.out;
        (!out.is_empty()).then(|| std::mem::take(out))
    }

    /// How the connection ends, once no request will be read any more. Write what
    /// [`poll_transmit`](Self::poll_transmit) gives first.
    pub fn closing(&self) -> Option<Close> {
        match self.phase {
            Phase::Closed(how) => Some(how),
            _ if self.answers.ended => Some(Close::Linger),
            _ => None,
        }
    }

    /// Requests read and not answered yet (or answered ahead of one before them).
    pub fn unanswered(&self) -> usize {
        self.answers.slots.len()
    }

    /// Whether answers are queued that [`poll_transmit`](Self::poll_transmit) has
    /// not taken yet.
    pub fn has_transmit(&self) -> bool {
        !self.answers.out.is_empty()
    }

    /// Between requests: waiting for a head, none of it buffered, every request
    /// answered.
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Head { .. })
            && !self.has_buffered_input()
            && self.answers.slots.is_empty()
            && !self.answers.ended
    }

    /// The head [`Event::Head`] handed out last, again, while the caller has not asked
    /// for more (it stays at the front of the buffer until the next poll or read): for
    /// a caller that had to let go of the event to answer the requests before it.
    /// Parsing it again costs what the first parse did.
    pub fn delivered_head(&self) -> Option<(RequestId, RequestHead<'_>)> {
        let Phase::Delivered { id, .. } = self.phase else {
            return None;
        };
        let limits = HeadLimits {
            max_header_bytes: self.cfg.max_header_bytes,
        };
        match super::parse_request(&self.buf[..self.consumed], &limits) {
            Ok(Some(head)) => Some((id, head)),
            _ => None,
        }
    }

    /// Hands the connection over to another protocol (an event stream, a WebSocket)
    /// right after the head of the request that asked for it: returns the bytes the
    /// peer sent after that head, which belong to the new protocol. Write what
    /// [`poll_transmit`](Self::poll_transmit) gives first.
    pub fn into_upgrade(mut self) -> Vec<u8> {
        debug_assert!(
            self.answers.out.is_empty(),
            "{} bytes not transmitted",
            self.answers.out.len()
        );
        self.drop_consumed();
        // Right-sized (and no allocation when nothing followed the head): the
        // stream keeps these bytes for its whole life, not the read buffer.
        if self.buf.is_empty() {
            Vec::new()
        } else {
            self.buf.shrink_to_fit();
            self.buf
        }
    }

    /// The event a deadline, the peer's close or a refusal left to report.
    fn take_report(&mut self) -> Option<Event<'static>> {
        self.report.take().map(|r| match r {
            Report::Refused(e) => Event::Refused(e),
            Report::Closed => Event::Closed,
        })
    }

    /// Whether `id` still waits for its answer (tests only).
    #[cfg(test)]
    fn slot_open(&mut self, id: RequestId) -> bool {
        self.answers.slot(id).is_some() && !self.answers.ended
    }

    fn drop_consumed(&mut self) {
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
        }
    }

    fn parse_head(&mut self) -> Option<Event<'_>> {
        let limits = HeadLimits {
            max_header_bytes: self.cfg.max_header_bytes,
        };
        // Split borrows: the head borrows `buf` while the rest is updated.
        let Self {
            cfg,
            buf,
            consumed,
            scanner,
            phase,
            answers,
            last_request,
            ..
        } = self;
        let refused = match scanner.parse(buf, &limits) {
            Ok(None) => return None,
            Ok(Some(head)) => match head.body(cfg.max_body_bytes) {
                Ok(body) => {
                    let id = answers.open(head.keep_alive);
                    *last_request = !head.keep_alive;
                    *phase = Phase::Delivered {
                        id,
                        body,
                        expect_continue: head.expect_continue,
                    };
                    *consumed = head.head_len;
                    return Some(Event::Head { id, head });
                }
                Err(e) => e,
            },
            Err(e) => e,
        };
        answers.refuse(None, refused);
        *phase = Phase::Closed(Close::Linger);
        Some(Event::Refused(refused))
    }

    /// Starts reading (or skipping) the body of `id`; a request without one is done.
    fn start_body(&mut self, id: RequestId, body: Body, deliver: bool) {
        let framing = match body {
            // Asked for: one empty, last body event.
            Body::Absent | Body::Length(0) if deliver => Framing::Length(0),
            Body::Absent | Body::Length(0) => return self.await_head(),
            Body::Length(len) => Framing::Length(len),
            Body::Chunked => Framing::Chunked(ChunkedDecoder::new(self.cfg.max_body_bytes)),
        };
        self.phase = Phase::Body {
            id,
            framing,
            deliver,
            deadline: self.now + self.cfg.body_timeout,
        };
    }

    fn await_head(&mut self) {
        if self.last_request {
            // Nothing after it is read (RFC 9112 §9.6); its answer closes.
            self.phase = Phase::Closed(Close::Linger);
            return;
        }
        self.scanner.reset();
        self.phase = Phase::Head {
            deadline: self.now + self.cfg.header_timeout,
        };
    }

    /// Queues `err`'s answer for `id` (or for a request whose head was refused), stops
    /// reading, and reports it at the next poll. A request answered already (its body
    /// broke a rule after the answer) only closes.
    fn refuse(&mut self, id: Option<RequestId>, err: HttpError) {
        let queued = self.answers.refuse(id, err);
        self.phase = Phase::Closed(Close::Linger);
        self.report = Some(if queued {
            Report::Refused(err)
        } else {
            Report::Closed
        });
    }
}

#[cfg(test)]
mod tests;
