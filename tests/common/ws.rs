//! WebSocket clients: tungstenite (an independent implementation), and [`Raw`],
//! spoken by hand for the frames no library sends; a parser for raw server frames.

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{envelope, read_before, reset_close, take_head, Block, Envelope, Server, READ_TIMEOUT};

/// A WebSocket client (tungstenite) over a blocking TcpStream.
pub struct WsClient {
    pub ws: tungstenite::WebSocket<TcpStream>,
}

impl WsClient {
    pub fn connect(addr: SocketAddr, query: &str) -> WsClient {
        let stream = TcpStream::connect(addr).expect("connect WS");
        WsClient::handshake(stream, addr, query)
            .unwrap_or_else(|e| panic!("WS handshake on /ws?{query}: {e}"))
    }

    /// The opening handshake on a connected stream (e.g. one made with
    /// [`connect_with_rcvbuf`]).
    pub fn handshake(stream: TcpStream, addr: SocketAddr, query: &str) -> Result<WsClient, String> {
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let url = format!("ws://{addr}/ws?{query}");
        match tungstenite::client(url.as_str(), stream) {
            Ok((ws, _resp)) => Ok(WsClient { ws }),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The next message other than ping/pong (answered by tungstenite itself).
    pub fn try_next(
        &mut self,
        timeout: Duration,
    ) -> Result<tungstenite::Message, tungstenite::Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(tungstenite::Error::Io(std::io::Error::new(
                    ErrorKind::TimedOut,
                    "WS read deadline",
                )));
            }
            self.ws.get_mut().set_read_timeout(Some(left)).unwrap();
            match self.ws.read() {
                Ok(tungstenite::Message::Ping(_)) | Ok(tungstenite::Message::Pong(_)) => continue,
                other => return other,
            }
        }
    }

    /// The next text message, as an envelope.
    pub fn next_envelope(&mut self) -> Envelope {
        match self.try_next(READ_TIMEOUT) {
            Ok(tungstenite::Message::Text(t)) => {
                let b = Block {
                    data: Some(t.as_str().to_owned()),
                    ..Block::default()
                };
                envelope(&b)
            }
            other => panic!("WS: expected a text message, got {other:?}"),
        }
    }

    /// Reads until the server's Close; its code, or how the stream ended instead.
    pub fn until_close(&mut self, timeout: Duration) -> Result<Option<u16>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_next(left) {
                Ok(tungstenite::Message::Close(frame)) => {
                    // Answer the close (tungstenite queues the reply; flush it).
                    let _ = self.ws.flush();
                    return Ok(frame.map(|f| u16::from(f.code)));
                }
                Ok(_) => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Drops the TCP connection without a closing handshake (FIN).
    pub fn drop_fin(self) {
        drop(self.ws);
    }

    /// Drops the TCP connection with an RST.
    pub fn reset(self) {
        let stream = self.ws.into_inner();
        reset_close(stream);
    }
}

/// One server-to-client WebSocket frame parsed from raw bytes.
#[derive(Debug, Clone)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Splits raw server bytes (unmasked frames) into frames; the bytes left over
/// (an incomplete frame at the end) are returned as the second value.
pub fn parse_ws_frames(mut bytes: &[u8]) -> (Vec<RawFrame>, Vec<u8>) {
    let mut frames = Vec::new();
    loop {
        if bytes.len() < 2 {
            break;
        }
        let fin = bytes[0] & 0x80 != 0;
        let opcode = bytes[0] & 0x0f;
        let masked = bytes[1] & 0x80 != 0;
        let (len, mut at) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (u64::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 if bytes.len() >= 10 => (u64::from_be_bytes(bytes[2..10].try_into().unwrap()), 10),
            126 | 127 => break,
            n => (u64::from(n), 2),
        };
        if masked {
            at += 4;
        }
        let end = at as u64 + len;
        if (bytes.len() as u64) < end {
            break;
        }
        frames.push(RawFrame {
            fin,
            opcode,
            payload: bytes[at..end as usize].to_vec(),
        });
        bytes = &bytes[end as usize..];
    }
    (frames, bytes.to_vec())
}

/// A tungstenite client over a blocking `TcpStream` with bounded reads.
pub struct TungsteniteClient {
    pub ws: tungstenite::WebSocket<TcpStream>,
    /// Pings seen so far (the server's heartbeats).
    pub pings: usize,
}

/// What a WS read gave: a text message, or nothing within the time.
pub enum WsRead {
    Text(String),
    TimedOut,
    Closed(String),
}

impl TungsteniteClient {
    pub fn connect(addr: SocketAddr, path: &str) -> TungsteniteClient {
        use tungstenite::client::IntoClientRequest;
        let stream = TcpStream::connect(addr).expect("connect WS");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let req = format!("ws://{addr}{path}")
            .into_client_request()
            .expect("WS request");
        let (ws, resp) = tungstenite::client::client(req, stream)
            .unwrap_or_else(|e| panic!("WS handshake on {path}: {e}"));
        assert_eq!(resp.status().as_u16(), 101);
        TungsteniteClient { ws, pings: 0 }
    }

    pub fn send(&mut self, text: &str) {
        self.ws
            .send(tungstenite::Message::text(text))
            .expect("WS send");
    }

    /// The next text message; pings are counted (tungstenite answers them).
    pub fn read(&mut self, timeout: Duration) -> WsRead {
        use tungstenite::Message;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return WsRead::TimedOut;
            }
            self.ws.get_mut().set_read_timeout(Some(left)).unwrap();
            match self.ws.read() {
                Ok(Message::Text(t)) => return WsRead::Text(t.as_str().to_owned()),
                Ok(Message::Ping(_)) => self.pings += 1,
                Ok(Message::Close(c)) => return WsRead::Closed(format!("close {c:?}")),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    return WsRead::TimedOut
                }
                Err(e) => return WsRead::Closed(e.to_string()),
            }
        }
    }

    pub fn next_text(&mut self) -> String {
        match self.read(READ_TIMEOUT) {
            WsRead::Text(t) => t,
            WsRead::TimedOut => panic!("WS: no message within {READ_TIMEOUT:?}"),
            WsRead::Closed(why) => panic!("WS: closed: {why}"),
        }
    }
}

impl Server {
    /// Starts a WebSocket client on this server (`GET /ws?<query>`).
    pub fn ws(&self, query: &str) -> WsClient {
        WsClient::connect(self.addr, query)
    }
}

// ---- a WebSocket spoken by hand -------------------------------------------

/// The `Sec-WebSocket-Key` of [`upgrade_request`] (RFC 6455's example).
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const FIN: u8 = 0x80;

/// A handshake request for `path` with the usual headers plus `extra` lines.
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A WebSocket spoken by hand over a `TcpStream`.
pub struct Raw {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    /// The `101` head, without its blank line.
    pub head: String,
}

impl Raw {
    /// Sends `request` followed (in the same write) by `after`, and reads the
    /// `101` head.
    pub fn open_with(addr: SocketAddr, request: &str, after: &[u8]) -> Raw {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        let mut bytes = request.as_bytes().to_vec();
        bytes.extend_from_slice(after);
        stream.write_all(&bytes).expect("write handshake");
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
            head: String::new(),
        };
        let deadline = Instant::now() + READ_TIMEOUT;
        raw.head = loop {
            if let Some(head) = take_head(&mut raw.buf) {
                break head;
            }
            let n = raw.fill(deadline).expect("read 101 head");
            assert!(
                n > 0,
                "closed before the 101 head: {:?}",
                String::from_utf8_lossy(&raw.buf)
            );
        };
        assert!(
            raw.head.starts_with("HTTP/1.1 101"),
            "not a 101: {:?}",
            raw.head
        );
        raw
    }

    pub fn open(addr: SocketAddr, path: &str) -> Raw {
        Self::open_with(addr, &upgrade_request(path, ""), b"")
    }

    pub fn fill(&mut self, deadline: Instant) -> std::io::Result<usize> {
        read_before(&mut self.stream, &mut self.buf, deadline, "read")
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write frame");
    }

    /// The next server frame: (first byte, payload). Server frames are never masked.
    pub fn try_frame(&mut self, timeout: Duration) -> std::io::Result<(u8, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.buf.len() >= 2 {
                assert_eq!(
                    self.buf[1] & 0x80,
                    0,
                    "a masked frame from the server: {:02x?}",
                    &self.buf[..2]
                );
                let (len, at) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= at + len {
                    let first = self.buf[0];
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return Ok((first, payload));
                }
            }
            if self.fill(deadline)? == 0 {
                return Err(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!("closed; {} bytes of a frame pending", self.buf.len()),
                ));
            }
        }
    }

    pub fn frame(&mut self) -> (u8, Vec<u8>) {
        self.try_frame(READ_TIMEOUT)
            .unwrap_or_else(|e| panic!("no frame from the server: {e}"))
    }

    /// Reads frames (skipping pings) until a Close; returns its code.
    pub fn expect_close(&mut self) -> u16 {
        loop {
            let (first, payload) = self.frame();
            match first & 0x0f {
                PING => continue,
                CLOSE => {
                    assert_eq!(first & 0x80, FIN, "a fragmented close");
                    assert!(payload.len() >= 2, "a close without a code: {payload:?}");
                    return u16::from_be_bytes([payload[0], payload[1]]);
                }
                op => panic!(
                    "expected a close, got opcode {op:#x}: {:?}",
                    String::from_utf8_lossy(&payload)
                ),
            }
        }
    }

    /// True when the server closes TCP (EOF or reset) within `timeout`; bytes
    /// that arrive meanwhile are discarded.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.buf.clear();
            match self.fill(deadline) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::TimedOut => return false,
                Err(_) => return true,
            }
        }
    }
}
