//! The publisher: one connection (Unix socket, HTTP keep-alive or WebSocket) on two
//! plain threads. The writer stamps and writes messages in batches, at the target
//! rate or as fast as the window of unanswered publishes allows; the reader counts
//! the answers and wakes the writer. Blocking sockets keep this simple: one
//! connection does not need a runtime, and its threads never touch the subscribers'.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::payload;
use super::sys::now_ns;
use super::target::{HttpTarget, PublishTarget};
use super::wire;
use crate::proto::ws::frame::OpCode;

/// Messages stamped and written per batch at most.
const BATCH: u64 = 256;

/// What to publish, fixed for the run.
#[derive(Debug, Clone)]
pub struct PubPlan {
    pub target: PublishTarget,
    pub topics: Vec<String>,
    /// Messages `first..messages` are published: message `j` goes to topic
    /// `j % topics` with sequence `j / topics`, so runs over consecutive ranges
    /// continue each topic's sequence (the storm mode's warm-up, then its storm).
    pub first: u64,
    pub messages: u64,
    /// Messages per second; 0 = as fast as the window allows.
    pub rate: f64,
    pub window: u64,
    pub payload_size: usize,
    /// Pad with typical JSON rows instead of `x`s.
    pub payload_json: bool,
    /// The WebSocket message template ({topic}, {payload}).
    pub ws_body: String,
}

/// Counters the coordinator reads while the run goes on.
#[derive(Debug, Default)]
pub struct PubProgress {
    pub sent: AtomicU64,
    /// Publishes answered as accepted (`ok`, 2xx, WebSocket ack).
    pub accepted: AtomicU64,
    /// Publishes answered with an error.
    pub refused: AtomicU64,
    pub first_error: Mutex<Option<String>>,
}

impl PubProgress {
    /// Publishes answered so far, accepted or refused.
    pub fn answered(&self) -> u64 {
        self.accepted.load(Ordering::Acquire) + self.refused.load(Ordering::Acquire)
    }

    fn refuse(&self, why: String) {
        self.refused.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(why);
        }
    }
}

/// The writer's account of the run.
#[derive(Debug, Clone, Copy)]
pub struct Published {
    /// `CLOCK_MONOTONIC` ns when the first message was stamped.
    pub start_ns: u64,
    /// When the last message was written.
    pub written_ns: u64,
}

/// A connected publisher, ready to run.
pub struct Publisher {
    plan: PubPlan,
    writer: Box<dyn Write + Send>,
    /// A handle on the socket to unblock the reader at the end.
    closer: Closer,
    reader: Option<Box<dyn Read + Send>>,
    /// Publishes are answered one for one (unix, http), so the window applies.
    answered_one_for_one: bool,
}

enum Closer {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Closer {
    fn close(&self) {
        let _ = match self {
            Closer::Unix(s) => s.shutdown(Shutdown::Both),
            Closer::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }
}

/// The publisher's reader thread and socket, to stop at the end of the run.
pub struct Running {
    closer: Closer,
    reader: JoinHandle<()>,
}

impl Running {
    /// Closes the publish connection and waits for the reader.
    pub fn close(self) {
        self.closer.close();
        let _ = self.reader.join();
    }
}

impl Publisher {
    /// Connects (and for WebSocket, upgrades) before any subscriber connects, so
    /// that a wrong publish address fails the run at once.
    pub fn connect(plan: PubPlan) -> Result<Self, String> {
        match &plan.target {
            PublishTarget::Unix(path) => {
                let s = UnixStream::connect(path).map_err(|e| {
                    format!(
                        "cannot connect to {}: {e} (is the server running?)",
                        path.display()
                    )
                })?;
                let (r, c) = (clone_unix(&s)?, clone_unix(&s)?);
                Ok(Self::new(
                    plan,
                    Box::new(s),
                    Closer::Unix(c),
                    Box::new(r),
                    true,
                ))
            }
            PublishTarget::Http(t) => {
                let s = tcp_connect(t)?;
                let (r, c) = (clone_tcp(&s)?, clone_tcp(&s)?);
                Ok(Self::new(
                    plan,
                    Box::new(s),
                    Closer::Tcp(c),
                    Box::new(r),
                    true,
                ))
            }
            PublishTarget::Ws(t) => {
                let mut s = tcp_connect(t)?;
                ws_handshake(&mut s, t)?;
                let (r, c) = (clone_tcp(&s)?, clone_tcp(&s)?);
                Ok(Self::new(
                    plan,
                    Box::new(s),
                    Closer::Tcp(c),
                    Box::new(r),
                    false,
                ))
            }
        }
    }

    fn new(
        plan: PubPlan,
        writer: Box<dyn Write + Send>,
        closer: Closer,
        reader: Box<dyn Read + Send>,
        answered_one_for_one: bool,
    ) -> Self {
        Self {
            plan,
            writer,
            closer,
            reader: Some(reader),
            answered_one_for_one,
        }
    }

    /// Publishes every message; returns once all are written and (unix, http) all
    /// answered or `answer_timeout` passed. The reader goes on counting answers until
    /// [`Running::close`].
    pub fn run(
        mut self,
        progress: Arc<PubProgress>,
        answer_timeout: Duration,
    ) -> Result<(Published, Running), String> {
        let me = std::thread::current();
        let reader_src = self.reader.take().ok_or("publisher already ran")?;
        let kind = self.plan.target.label();
        let p = progress.clone();
        let reader = std::thread::Builder::new()
            .name("bench-pub-reader".into())
            .spawn(move || read_answers(kind, reader_src, &p, &me))
            .map_err(|e| format!("cannot start the publish reader: {e}"))?;
        let closer = match &self.closer {
            Closer::Unix(s) => Closer::Unix(clone_unix(s)?),
            Closer::Tcp(s) => Closer::Tcp(clone_tcp(s)?),
        };
        let running = Running { closer, reader };
        match self.write_all_messages(&progress, answer_timeout) {
            Ok(done) => Ok((done, running)),
            Err(e) => {
                running.close();
                Err(e)
            }
        }
    }

    fn write_all_messages(
        &mut self,
        progress: &PubProgress,
        answer_timeout: Duration,
    ) -> Result<Published, String> {
        let plan = self.plan.clone();
        let enc = Encoder::new(&plan);
        let (first, end) = (plan.first.min(plan.messages), plan.messages);
        let total = end - first;
        let window = if self.answered_one_for_one {
            plan.window.max(1)
        } else {
            u64::MAX
        };
        let start = Instant::now();
        let start_ns = now_ns();
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut scratch = Vec::with_capacity(plan.payload_size + 64);
        // `i` counts the messages of this run; message `first + i` is written.
        let mut i = 0u64;
        while i < total {
            let by_rate = if plan.rate > 0.0 {
                ((start.elapsed().as_secs_f64() * plan.rate) as u64 + 1).min(total)
            } else {
                total
            };
            let by_window = progress.answered().saturating_add(window);
            let limit = by_rate.min(by_window).min(i + BATCH);
            if limit <= i {
                if by_rate <= i {
                    let due = start + Duration::from_secs_f64(i as f64 / plan.rate);
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                } else {
                    std::thread::park_timeout(Duration::from_millis(1));
                }
                continue;
            }
            for j in first + i..first + limit {
                enc.encode(&mut buf, &mut scratch, j, now_ns());
            }
            self.writer
                .write_all(&buf)
                .map_err(|e| format!("publishing message {i}: {e}"))?;
            buf.clear();
            i = limit;
            progress.sent.store(i, Ordering::Release);
        }
        let written_ns = now_ns();
        if self.answered_one_for_one {
            let deadline = Instant::now() + answer_timeout;
            while progress.answered() < total && Instant::now() < deadline {
                std::thread::park_timeout(Duration::from_millis(1));
            }
        }
        Ok(Published {
            start_ns,
            written_ns,
        })
    }
}

/// Writes message `j` in the target's framing.
struct Encoder {
    kind: Kind,
    topics: usize,
    size: usize,
    /// Pad with typical JSON rows (`--payload-json`).
    json: bool,
}

enum Kind {
    /// `{"topic":<quoted>,"data":` … `}\n`, per topic.
    Unix(Vec<Vec<u8>>),
    /// `POST … Content-Length: `, per topic.
    Http(Vec<Vec<u8>>),
    /// Text before and after `{payload}`, per topic.
    Ws(Vec<(Vec<u8>, Vec<u8>)>),
}

impl Encoder {
    fn new(plan: &PubPlan) -> Self {
        let kind = match &plan.target {
            PublishTarget::Unix(_) => Kind::Unix(
                plan.topics
                    .iter()
                    .map(|t| {
                        let mut pre = Vec::new();
                        crate::proto::publish::write_command_start(&mut pre, t, None);
                        pre
                    })
                    .collect(),
            ),
            PublishTarget::Http(target) => Kind::Http(
                plan.topics
                    .iter()
                    .map(|t| {
                        format!(
                            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: ",
                            target.path(t),
                            target.host
                        )
                        .into_bytes()
                    })
                    .collect(),
            ),
            PublishTarget::Ws(_) => Kind::Ws(
                plan.topics
                    .iter()
                    .map(|t| {
                        let body = plan.ws_body.replace("{topic}", t);
                        let (a, b) = body.split_once("{payload}").unwrap_or((&body, ""));
                        (a.as_bytes().to_vec(), b.as_bytes().to_vec())
                    })
                    .collect(),
            ),
        };
        Self {
            kind,
            topics: plan.topics.len().max(1),
            size: plan.payload_size,
            json: plan.payload_json,
        }
    }

    fn encode(&self, out: &mut Vec<u8>, scratch: &mut Vec<u8>, j: u64, t_ns: u64) {
        let topic = (j % self.topics as u64) as usize;
        let seq = j / self.topics as u64;
        match &self.kind {
            Kind::Unix(pre) => {
                out.extend_from_slice(&pre[topic]);
                payload::encode_with(out, seq, t_ns, self.size, self.json);
                out.extend_from_slice(crate::proto::publish::COMMAND_END);
            }
            Kind::Http(pre) => {
                scratch.clear();
                payload::encode_with(scratch, seq, t_ns, self.size, self.json);
                out.extend_from_slice(&pre[topic]);
                let _ = write!(out, "{}\r\n\r\n", scratch.len());
                out.extend_from_slice(scratch);
            }
            Kind::Ws(parts) => {
                let (a, b) = &parts[topic];
                scratch.clear();
                scratch.extend_from_slice(a);
                payload::encode_with(scratch, seq, t_ns, self.size, self.json);
                scratch.extend_from_slice(b);
                let key = ((j as u32).wrapping_mul(0x9E37_79B1) | 1).to_ne_bytes();
                wire::write_client_frame(out, OpCode::Text, scratch, key);
            }
        }
    }
}

/// Counts answers until the connection ends, waking the writer after each read.
fn read_answers(
    kind: &'static str,
    mut r: Box<dyn Read + Send>,
    p: &PubProgress,
    writer: &std::thread::Thread,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let used = match kind {
            "unix" => unix_answers(&buf, p),
            "http" => match http_answers(&buf, p) {
                Some(used) => used,
                None => return,
            },
            _ => match ws_answers(&buf, p) {
                Some(used) => used,
                None => return,
            },
        };
        buf.drain(..used);
        writer.unpark();
    }
}

/// `{"ok":true,…}` or `{"ok":false,"error":…}` lines.
fn unix_answers(buf: &[u8], p: &PubProgress) -> usize {
    let mut at = 0;
    while let Some(nl) = buf[at..].iter().position(|&b| b == b'\n') {
        let line = &buf[at..at + nl];
        if line.starts_with(b"{\"ok\":true") {
            p.accepted.fetch_add(1, Ordering::AcqRel);
        } else {
            p.refuse(String::from_utf8_lossy(line).into_owned());
        }
        at += nl + 1;
    }
    at
}

/// Pipelined responses: 2xx is accepted. `None` when the stream cannot be followed.
fn http_answers(buf: &[u8], p: &PubProgress) -> Option<usize> {
    let mut at = 0;
    loop {
        let head = match wire::parse_response_head(&buf[at..]) {
            Ok(Some(h)) => h,
            Ok(None) => return Some(at),
            Err(e) => {
                p.refuse(format!("publish response: {e}"));
                return None;
            }
        };
        let body_len = head.content_length.unwrap_or(0) as usize;
        let end = at + head.len + body_len;
        if buf.len() < end {
            return Some(at);
        }
        if (200..300).contains(&head.status) {
            p.accepted.fetch_add(1, Ordering::AcqRel);
        } else {
            let body = String::from_utf8_lossy(&buf[at + head.len..end]);
            p.refuse(format!("HTTP {} {}", head.status, body.trim()));
        }
        at = end;
    }
}

/// Text frames: ringcast's `{"op":"ack"…}` is accepted, `{"op":"error"…}` refused;
/// anything else (a server that broadcasts back, or says nothing) is not counted.
fn ws_answers(buf: &[u8], p: &PubProgress) -> Option<usize> {
    let mut at = 0;
    loop {
        match wire::parse_server_frame(&buf[at..]) {
            Ok(Some((f, n))) => {
                let body = &buf[at + f.payload.start..at + f.payload.end];
                if f.opcode == OpCode::Text {
                    if body.starts_with(b"{\"op\":\"ack\"") {
                        p.accepted.fetch_add(1, Ordering::AcqRel);
                    } else if body.starts_with(b"{\"op\":\"error\"") {
                        p.refuse(String::from_utf8_lossy(body).into_owned());
                    }
                }
                at += n;
            }
            Ok(None) => return Some(at),
            Err(e) => {
                p.refuse(format!("publish connection: {e}"));
                return None;
            }
        }
    }
}

fn tcp_connect(t: &HttpTarget) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&t.addr, Duration::from_secs(5))
        .map_err(|e| format!("cannot connect to {}: {e} (is the server running?)", t.addr))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

fn ws_handshake(s: &mut TcpStream, t: &HttpTarget) -> Result<(), String> {
    let mut req = Vec::new();
    wire::write_ws_upgrade(&mut req, &t.host, &t.path(""), false);
    s.write_all(&req)
        .map_err(|e| format!("publish upgrade: {e}"))?;
    // Read byte by byte up to the end of the head, so that no frame byte is
    // consumed here (the reader thread takes the stream from the first frame on).
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) => return Err(format!("publish upgrade to {}: closed", t.addr)),
            Err(e) => return Err(format!("publish upgrade to {}: {e}", t.addr)),
        }
        if head.len() > 16 * 1024 {
            return Err(format!(
                "publish upgrade to {}: response head too large",
                t.addr
            ));
        }
    }
    let _ = s.set_read_timeout(None);
    match wire::parse_response_head(&head) {
        Ok(Some(h)) if h.status == 101 => Ok(()),
        Ok(Some(h)) => Err(format!("publish upgrade to {}: HTTP {}", t.addr, h.status)),
        _ => Err(format!("publish upgrade to {}: malformed response", t.addr)),
    }
}

fn clone_unix(s: &UnixStream) -> Result<UnixStream, String> {
    s.try_clone().map_err(|e| format!("publish socket: {e}"))
}

fn clone_tcp(s: &TcpStream) -> Result<TcpStream, String> {
    s.try_clone().map_err(|e| format!("publish socket: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(target: &str, topics: usize) -> PubPlan {
        PubPlan {
            target: PublishTarget::parse(target).unwrap(),
            topics: (0..topics).map(|k| format!("topic-{k}")).collect(),
            first: 0,
            messages: 10,
            rate: 0.0,
            window: 4,
            payload_size: 0,
            payload_json: false,
            ws_body: r#"{"op":"publish","topic":"{topic}","data":{payload}}"#.into(),
        }
    }

    #[test]
    fn unix_lines_carry_topic_round_robin_and_per_topic_sequence() {
        let enc = Encoder::new(&plan("unix:/x", 2));
        let (mut out, mut s) = (Vec::new(), Vec::new());
        enc.encode(&mut out, &mut s, 3, 77);
        assert_eq!(
            out,
            b"{\"topic\":\"topic-1\",\"data\":{\"seq\":1,\"t\":77}}\n"
        );
    }

    #[test]
    fn http_requests_have_the_exact_content_length() {
        let enc = Encoder::new(&plan("http://127.0.0.1:1/publish?topic={topic}", 1));
        let (mut out, mut s) = (Vec::new(), Vec::new());
        enc.encode(&mut out, &mut s, 5, 9);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("POST /publish?topic=topic-0 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"),
            "{text}"
        );
        assert!(
            text.ends_with("Content-Length: 15\r\n\r\n{\"seq\":5,\"t\":9}"),
            "{text}"
        );
    }

    #[test]
    fn answers_are_counted_across_partial_reads() {
        let p = PubProgress::default();
        let used = unix_answers(
            b"{\"ok\":true,\"id\":\"1\"}\n{\"ok\":false,\"error\":\"x\"}\n{\"ok\"",
            &p,
        );
        assert_eq!(used, 46);
        assert_eq!(
            (
                p.accepted.load(Ordering::Relaxed),
                p.refused.load(Ordering::Relaxed)
            ),
            (1, 1)
        );
        let p = PubProgress::default();
        let two = b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 400 Bad Request\r\nContent-Length: 4\r\n\r\nbad\nHTTP/1.1 202";
        let used = http_answers(two, &p).unwrap();
        assert_eq!(&two[used..], b"HTTP/1.1 202");
        assert_eq!(
            (
                p.accepted.load(Ordering::Relaxed),
                p.refused.load(Ordering::Relaxed)
            ),
            (1, 1)
        );
    }
}
