//! WebSocket clients (tungstenite, an independent implementation) and a parser
//! for raw server frames.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{envelope, reset_close, Block, Envelope, Server, READ_TIMEOUT};

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
