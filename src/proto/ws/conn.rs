//! The close handshake (RFC 6455 §5.5.1, §7) around the frame decoder.

use super::close::code;
use super::decoder::{ControlPayload, Decoded, Decoder, Event};
use super::deflate::Agreed;
use super::frame::{encode_close, encode_pong};

/// Time in ticks of the server's one time base; this module never reads a clock.
pub use crate::time::Tick;

/// Lifecycle of the connection, as far as the WebSocket protocol is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Both directions open: messages are surfaced and pings answered.
    Open,
    /// We queued our Close (drain, slow consumer); frames are decoded only to find the
    /// peer's Close, until `deadline`.
    CloseSent { deadline: Tick },
    /// We failed the connection on a protocol violation; the stream cannot be parsed
    /// any more, so bytes are discarded until the peer closes TCP or `deadline`.
    Failed { deadline: Tick },
    /// The peer's Close arrived and our echo is queued; TCP closes once it is written.
    CloseReceived,
    /// Nothing more to read or write: close TCP once the outbox is flushed.
    Closed,
}

/// The WebSocket side of one connection: decoder, pong slot and close handshake.
///
/// Call order, driven by the caller's I/O loop:
/// 1. Inputs: [`handle_bytes`](Self::handle_bytes) with bytes read from the socket
///    (repeat until all are consumed), [`handle_eof`](Self::handle_eof) when the read
///    side ends, [`handle_timeout`](Self::handle_timeout) when the tick returned by
///    [`poll_timeout`](Self::poll_timeout) has passed, [`close`](Self::close) to
///    close for the server's own reasons.
/// 2. Outputs, after any input: [`poll_transmit`](Self::poll_transmit) to append the
///    pending control frames to the outbox, [`poll_timeout`](Self::poll_timeout) to
///    (re)arm the close deadline, then [`wants_close_tcp`](Self::wants_close_tcp):
///    once true, flush the outbox and close TCP.
///
/// Data frames (one core-local frame per message, shared by its subscribers) go
/// to the outbox directly, only while [`can_send_data`](Self::can_send_data) holds.
#[derive(Debug)]
pub struct Connection {
    decoder: Decoder,
    state: State,
    /// How long to wait for the peer's Close (or its FIN) after we sent ours.
    close_timeout: Tick,
    /// One pending-pong slot: a newer ping replaces it (§5.5.3 allows answering only
    /// the most recent one). It never displaces a pending Close.
    /// Boxed: it only lives between a Ping and the next transmit, and inline it
    /// would size every idle connection.
    pending_pong: Option<Box<ControlPayload>>,
    /// Our Close frame, until `poll_transmit` hands it out.
    pending_close: Option<(u16, &'static str)>,
    /// How long a frame or fragmented message may take to arrive once started
    /// (`--body-timeout`); `Tick::MAX`: no bound.
    message_timeout: Tick,
    /// When the message under way must be complete (trickling bytes do not
    /// move it); `Tick::MAX`: no message under way, or no bound. Plain ticks,
    /// not `Option`s: this struct lives in every connection's task.
    message_deadline: Tick,
}

impl Connection {
    /// A connection right after the `101` response.
    pub fn new(max_message_bytes: usize, close_timeout: Tick) -> Self {
        Self {
            decoder: Decoder::new(max_message_bytes),
            state: State::Open,
            close_timeout,
            pending_pong: None,
            pending_close: None,
            message_timeout: Tick::MAX,
            message_deadline: Tick::MAX,
        }
    }

    /// Bounds how long a frame or a fragmented message may take to arrive once
    /// its first byte did: past it the connection is failed with 1008.
    #[must_use]
    pub fn with_message_timeout(mut self, timeout: Tick) -> Self {
        self.message_timeout = timeout;
        self
    }

    /// Open, between frames, nothing to transmit and no deadline: the connection
    /// holds nothing that [`Connection::new`] with the same limits would not
    /// build again, so a driver may drop it while the peer is quiet and make a
    /// new one when bytes arrive (an idle connection then keeps no state).
    #[must_use]
    pub fn at_rest(&self) -> bool {
        self.state == State::Open
            && self.pending_pong.is_none()
            && self.pending_close.is_none()
            && self.message_deadline == Tick::MAX
            && self.decoder.at_rest()
    }

    /// Takes compressed messages as permessage-deflate `deflate` agreed (see
    /// [`Decoder::set_deflate`]).
    #[must_use]
    pub fn with_deflate(mut self, deflate: Agreed) -> Self {
        self.decoder.set_deflate(deflate);
        self
    }

    /// Heap bytes held for a partial message (for the inbound memory budget).
    pub fn held_bytes(&self) -> usize {
        self.decoder.held_bytes()
    }

    /// Fails the connection for a server limit (a message too slow, the inbound
    /// budget spent): the partial message is dropped, the peer's data is no
    /// longer read, and our Close carries `code` and `reason`.
    pub fn abort(&mut self, now: Tick, code: u16, reason: &'static str) {
        if matches!(self.state, State::Open | State::CloseSent { .. }) {
            self.decoder.discard();
            self.message_deadline = Tick::MAX;
            self.pending_pong = None;
            self.pending_close = Some((code, reason));
            self.state = State::Failed {
                deadline: now + self.close_timeout,
            };
        }
    }

    /// Feeds bytes read from the socket.
    ///
    /// Returns the bytes consumed and, while open, the decoder's event (a Ping is
    /// already answered and a Close already echoed when they are returned) or the
    /// violation (our Close is already queued). Once closing, bytes are consumed and
    /// ignored, except that the peer's answer to our Close ends the handshake.
    pub fn handle_bytes(&mut self, now: Tick, input: &[u8]) -> Decoded {
        match self.state {
            State::Open => {
                let (n, result) = self.decoder.handle_bytes(input);
                self.message_deadline = if !self.decoder.mid_message() {
                    Tick::MAX
                } else if self.message_deadline == Tick::MAX {
                    now + self.message_timeout
                } else {
                    self.message_deadline
                };
                match &result {
                    Ok(Some(Event::Ping(payload))) => self.pending_pong = Some(Box::new(*payload)),
                    Ok(Some(Event::Close { code, .. })) => {
                        // §5.5.1: "If an endpoint receives a Close frame and did not
                        // previously send a Close frame, the endpoint MUST send a Close
                        // frame in response ... typically echoing the status code".
                        self.pending_close = Some((code.unwrap_or(code::NORMAL), ""));
                        self.state = State::CloseReceived;
                    }
                    Err(e) => {
                        // §7.1.7: _Fail the WebSocket Connection_: send a Close with
                        // the code, then stop processing the peer's data.
                        self.pending_pong = None;
                        self.pending_close = Some((e.close_code(), e.reason()));
                        self.state = State::Failed {
                            deadline: now + self.close_timeout,
                        };
                    }
                    Ok(_) => {}
                }
                (n, result)
            }
            State::CloseSent { .. } => {
                // §5.5.1: after sending a Close, wait for the peer's; data that
                // arrives meanwhile is dropped.
                let mut pos = 0;
                while pos < input.len() {
                    let (n, result) = self.decoder.handle_bytes(&input[pos..]);
                    pos += n;
                    match result {
                        Ok(Some(Event::Close { .. })) => {
                            self.state = State::Closed;
                            return (input.len(), Ok(None));
                        }
                        Ok(_) => {}
                        Err(_) => {
                            self.state = State::Closed;
                            return (input.len(), Ok(None));
                        }
                    }
                }
                (input.len(), Ok(None))
            }
            State::Failed { .. } | State::CloseReceived | State::Closed => (input.len(), Ok(None)),
        }
    }

    /// The peer closed its side of TCP (read returned 0): nothing more will come.
    pub fn handle_eof(&mut self) {
        self.pending_pong = None;
        self.state = State::Closed;
    }

    /// A deadline may have passed: the close deadline stops the wait for the
    /// peer; the message deadline fails the connection with 1008.
    pub fn handle_timeout(&mut self, now: Tick) {
        match self.state {
            State::CloseSent { deadline } | State::Failed { deadline } if now >= deadline => {
                self.state = State::Closed;
            }
            State::Open if self.message_deadline != Tick::MAX && now >= self.message_deadline => {
                self.abort(now, code::POLICY_VIOLATION, "message not complete in time");
            }
            _ => {}
        }
    }

    /// Starts the close handshake for a server reason (1001 on drain, 1008 for a slow
    /// consumer...). No-op unless open: a close is already under way.
    pub fn close(&mut self, now: Tick, code: u16, reason: &'static str) {
        if self.state == State::Open {
            self.pending_pong = None;
            self.pending_close = Some((code, reason));
            self.state = State::CloseSent {
                deadline: now + self.close_timeout,
            };
        }
    }

    /// Appends pending control frames (a Pong, then our Close) to `out`; returns
    /// whether anything was written.
    #[must_use]
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        let before = out.len();
        if let Some(payload) = self.pending_pong.take() {
            encode_pong(out, payload.as_bytes());
        }
        if let Some((code, reason)) = self.pending_close.take() {
            encode_close(out, code, reason);
            if self.state == State::CloseReceived {
                // §7.1.1: after both Close frames, the server closes TCP first.
                self.state = State::Closed;
            }
        }
        out.len() > before
    }

    /// The tick at which [`handle_timeout`](Self::handle_timeout) must be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Tick> {
        match self.state {
            State::CloseSent { deadline } | State::Failed { deadline } => Some(deadline),
            State::Open => (self.message_deadline != Tick::MAX).then_some(self.message_deadline),
            _ => None,
        }
    }

    /// Close TCP (after flushing the outbox): both Close frames were exchanged, or the
    /// peer is gone, or it did not answer in time. Never true while a control frame
    /// is still pending, so our Close always reaches the outbox first.
    #[must_use]
    pub fn wants_close_tcp(&self) -> bool {
        self.state == State::Closed && self.pending_close.is_none() && self.pending_pong.is_none()
    }

    /// Half-close TCP now (`shutdown(SHUT_WR)`, after flushing the outbox): we failed
    /// the connection and our Close is out, so nothing more will be written.
    ///
    /// §7.1.7 lets the peer stop at once: "the endpoint MUST _Close the WebSocket
    /// Connection_". The FIN tells it so without waiting for its Close (a client such as
    /// Autobahn waits for the server to drop TCP first, §7.1.1). Reading goes on until
    /// its FIN or the deadline, because closing a socket with unread input sends an RST
    /// that can destroy our Close frame before the peer reads it.
    #[must_use]
    pub fn wants_shutdown_write(&self) -> bool {
        matches!(self.state, State::Failed { .. }) && self.pending_close.is_none()
    }

    /// Data frames may be queued: §5.5.1 "After sending a Close frame, the endpoint
    /// MUST NOT send any more data frames", and after the peer's Close nobody reads them.
    #[must_use]
    pub fn can_send_data(&self) -> bool {
        self.state == State::Open
    }
}
