//! A raw SSE client that parses the event stream as a browser does.

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{read_before, reset_close, take_head, Server, Timed, READ_TIMEOUT};

/// One event-stream block, as parsed per WHATWG HTML §9.2.6 (fields of one block up
/// to its blank line; comments ignored).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Block {
    /// The `id:` field, if the block had one.
    pub id: Option<String>,
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The data buffer (lines joined by LF, final LF removed), if any `data:` field.
    pub data: Option<String>,
    /// A valid `retry:` field.
    pub retry: Option<u64>,
}

impl Block {
    /// The block's data as JSON.
    pub fn json(&self) -> simd_json::OwnedValue {
        let mut bytes = self.data.clone().expect("a data block").into_bytes();
        simd_json::to_owned_value(&mut bytes)
            .unwrap_or_else(|e| panic!("data is not JSON ({e}): {:?}", self.data))
    }

    /// The type EventSource dispatches: the `event:` field or `message`.
    pub fn kind(&self) -> &str {
        self.event.as_deref().unwrap_or("message")
    }
}

/// A raw SSE client: `GET /sse?...` over a TcpStream, head checked, blocks parsed.
pub struct SseClient<S = TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
    /// The last event id as a browser would hold it.
    pub last_event_id: String,
    pub head: String,
    /// Comment lines (heartbeats) read so far.
    pub comments: usize,
}

impl SseClient {
    /// Connects, sends `GET /sse?<query>` (with `Last-Event-ID` when given) and
    /// checks the `200 text/event-stream` head.
    pub fn connect(addr: SocketAddr, query: &str, last_event_id: Option<&str>) -> SseClient {
        let extra = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        Self::connect_with(addr, query, &extra)
    }

    /// Like [`connect`](Self::connect), with `extra` header lines (each ending in
    /// CRLF) added to the request, e.g. `Authorization` or `Cookie`.
    pub fn connect_with(addr: SocketAddr, query: &str, extra: &str) -> SseClient {
        let stream = TcpStream::connect(addr).expect("connect SSE");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        SseClient::open(stream, query, extra)
    }

    /// The socket and the bytes read past the last block taken.
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.buf)
    }

    /// Closes with a reset (SO_LINGER 0) instead of a FIN.
    pub fn reset(self) {
        reset_close(self.stream);
    }
}

impl<S: Timed + Write> SseClient<S> {
    /// Sends `GET /sse?<query>` with `extra` header lines on a stream opened
    /// already (plain or TLS) and checks the `200 text/event-stream` head.
    pub fn open(stream: S, query: &str, extra: &str) -> SseClient<S> {
        let req = format!(
            "GET /sse?{query} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n{extra}\r\n"
        );
        let mut c = SseClient {
            stream,
            buf: Vec::new(),
            last_event_id: String::new(),
            head: String::new(),
            comments: 0,
        };
        c.stream
            .write_all(req.as_bytes())
            .expect("send SSE request");
        let deadline = Instant::now() + READ_TIMEOUT;
        c.head = loop {
            if let Some(head) = take_head(&mut c.buf) {
                break head;
            }
            assert!(
                c.fill(deadline).expect("read SSE head") > 0,
                "SSE: closed before the head; got {:?}",
                String::from_utf8_lossy(&c.buf)
            );
        };
        assert!(
            c.head.starts_with("HTTP/1.1 200"),
            "SSE: not a 200: {:?} {:?}",
            c.head,
            String::from_utf8_lossy(&c.buf)
        );
        assert!(
            c.head
                .to_ascii_lowercase()
                .contains("content-type: text/event-stream"),
            "SSE: not an event stream: {:?}",
            c.head
        );
        c
    }

    fn fill(&mut self, deadline: Instant) -> std::io::Result<usize> {
        read_before(&mut self.stream, &mut self.buf, deadline, "SSE read")
    }

    /// Takes one complete line off the buffer (CRLF, LF or CR ends it). A CR at the
    /// very end of the buffer waits for the next byte, which may be its LF.
    fn take_line(&mut self) -> Option<String> {
        let i = self.buf.iter().position(|&b| b == b'\n' || b == b'\r')?;
        let len = if self.buf[i] == b'\r' {
            match self.buf.get(i + 1) {
                None => return None,
                Some(b'\n') => 2,
                Some(_) => 1,
            }
        } else {
            1
        };
        let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
        self.buf.drain(..i + len);
        Some(line)
    }

    /// The next non-empty block (a block of only comments is skipped), or an error
    /// on timeout or end of stream.
    pub fn try_next_block(&mut self, timeout: Duration) -> std::io::Result<Block> {
        let deadline = Instant::now() + timeout;
        let mut block = Block::default();
        let mut any = false;
        loop {
            while let Some(line) = self.take_line() {
                if line.is_empty() {
                    if any {
                        if let Some(id) = &block.id {
                            self.last_event_id = id.clone();
                        }
                        if let Some(d) = block.data.as_mut() {
                            if d.ends_with('\n') {
                                d.pop();
                            }
                        }
                        return Ok(block);
                    }
                    continue;
                }
                if line.starts_with(':') {
                    self.comments += 1;
                    continue;
                }
                let (field, value) = match line.split_once(':') {
                    Some((f, v)) => (f.to_owned(), v.strip_prefix(' ').unwrap_or(v).to_owned()),
                    None => (line.clone(), String::new()),
                };
                match field.as_str() {
                    "event" => {
                        block.event = Some(value);
                        any = true;
                    }
                    "data" => {
                        let d = block.data.get_or_insert_with(String::new);
                        d.push_str(&value);
                        d.push('\n');
                        any = true;
                    }
                    "id" if !value.contains('\0') => {
                        block.id = Some(value);
                        any = true;
                    }
                    "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                        block.retry = value.parse().ok();
                        any = true;
                    }
                    _ => {}
                }
            }
            if self.fill(deadline)? == 0 {
                return Err(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!("SSE stream ended; partial block {block:?}"),
                ));
            }
        }
    }

    pub fn next_block(&mut self) -> Block {
        self.try_next_block(READ_TIMEOUT)
            .unwrap_or_else(|e| panic!("SSE: no next block: {e}"))
    }

    /// The next block that carries data (what EventSource dispatches).
    pub fn try_next_event(&mut self, timeout: Duration) -> std::io::Result<Block> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let b = self.try_next_block(left)?;
            if b.data.is_some() {
                return Ok(b);
            }
        }
    }

    pub fn next_event(&mut self) -> Block {
        self.try_next_event(READ_TIMEOUT)
            .unwrap_or_else(|e| panic!("SSE: no next event: {e}"))
    }

    /// Reads blocks until the first id-only block (no data, an id): the stream's
    /// starting cursor, which also says every subscription of the stream is live.
    /// Returns that id.
    pub fn wait_cursor(&mut self) -> String {
        loop {
            let b = self.next_block();
            assert!(
                b.data.is_none(),
                "a data block before the starting cursor: {b:?}"
            );
            if let Some(id) = b.id {
                return id;
            }
        }
    }

    /// True when no data block arrives within `timeout`.
    pub fn quiet_for(&mut self, timeout: Duration) -> bool {
        match self.try_next_event(timeout) {
            Ok(b) => panic!("SSE: unexpected event {b:?}"),
            Err(e) => e.kind() == ErrorKind::TimedOut,
        }
    }

    /// The next raw line (comments included), without its line end.
    pub fn try_next_line(&mut self, timeout: Duration) -> std::io::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.take_line() {
                return Ok(line);
            }
            if self.fill(deadline)? == 0 {
                return Err(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "SSE stream ended",
                ));
            }
        }
    }
}

impl Server {
    /// Starts an SSE client on this server.
    pub fn sse(&self, query: &str) -> SseClient {
        SseClient::connect(self.addr, query, None)
    }
}
