//! What the server answers over HTTP, and how a last answer is written: the
//! [`Reply`] value routing decides on (status, headers, body, whether the
//! connection ends), the refusals every transport shares (an error with its
//! one-line reason, 401/403 for access), and the lingering close that makes
//! sure the peer reads a last answer instead of a reset.

use std::borrow::Cow;
use std::os::fd::RawFd;
use std::time::Duration;

use monoio::net::TcpStream;

use super::conn_io;
use super::timer;
use super::worker::Worker;
use crate::debug;
use crate::netio;
use crate::proto::access::Refusal;
use crate::proto::http::{self, Response};

/// Bytes asked of the socket per read while a closing peer's input is dropped.
const DRAIN_CHUNK: usize = 4096;

/// The plain-text content type of every reason.
const TEXT: &str = "text/plain; charset=utf-8";

/// An answer to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    pub content_type: &'static str,
    pub body: Cow<'static, [u8]>,
    /// The connection ends after it.
    pub close: bool,
}

impl Reply {
    /// A plain-text answer: `body` and a newline.
    pub fn text(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        let mut body = body.into();
        body.push(b'\n');
        Reply {
            status,
            headers: Vec::new(),
            content_type: TEXT,
            body: Cow::Owned(body),
            close: false,
        }
    }

    /// An answer of another type, `body` as it is.
    pub fn typed(status: u16, content_type: &'static str, body: Cow<'static, [u8]>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            content_type,
            body,
            close: false,
        }
    }

    /// A refusal: `status` and its one-line `reason`, then the connection ends.
    pub fn error(status: u16, reason: &str) -> Reply {
        Reply::text(status, reason).closing()
    }

    /// A refused access: 401 with `WWW-Authenticate`, or 403, with the reason;
    /// then the connection ends.
    pub fn access(refusal: &Refusal) -> Reply {
        let reply = Reply::text(refusal.status(), refusal.to_string()).closing();
        match refusal {
            Refusal::Unauthorized(_) => {
                reply.with("WWW-Authenticate", "Bearer error=\"invalid_token\"")
            }
            Refusal::Forbidden(_) => reply,
        }
    }

    /// The same answer with one more header.
    pub fn with(mut self, name: &'static str, value: impl Into<Cow<'static, str>>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// The same answer with more headers.
    pub fn with_all(mut self, headers: Vec<(&'static str, String)>) -> Reply {
        self.headers
            .extend(headers.into_iter().map(|(k, v)| (k, Cow::Owned(v))));
        self
    }

    /// The same answer, ending the connection.
    pub fn closing(mut self) -> Reply {
        self.close = true;
        self
    }

    /// Hands the answer to `f` as the HTTP machine takes it.
    pub fn as_response<R>(&self, f: impl FnOnce(&Response<'_>) -> R) -> R {
        let headers: Vec<(&str, &str)> = self.headers.iter().map(|(k, v)| (*k, &**v)).collect();
        f(&Response {
            status: self.status,
            headers: &headers,
            content_type: self.content_type,
            body: &self.body,
        })
    }
}

/// Writes `reply` as the last answer of a connection no HTTP machine drives any
/// more (a refused stream or upgrade), then closes it lingering.
pub async fn send_last(w: &Worker, stream: &TcpStream, fd: RawFd, reply: &Reply) {
    let mut out = Vec::with_capacity(reply.body.len() + 128);
    reply.as_response(|r| {
        http::write_response(&mut out, r.status, r.headers, r.content_type, r.body, false)
    });
    w.metrics().http_response(reply.status);
    finish(w, stream, fd, &out).await;
}

/// An error answer (its one-line reason) followed by a lingering close.
pub async fn respond_error(w: &Worker, stream: &TcpStream, fd: RawFd, status: u16, reason: &str) {
    send_last(w, stream, fd, &Reply::error(status, reason)).await;
}

/// Answers a refused access (401 with `WWW-Authenticate`, or 403) and closes.
pub async fn refuse_access(w: &Worker, stream: &TcpStream, fd: RawFd, refusal: &Refusal) {
    send_last(w, stream, fd, &Reply::access(refusal)).await;
}

/// Writes a last answer, then closes lingering (see [`linger_close`]).
pub async fn finish(w: &Worker, stream: &TcpStream, fd: RawFd, out: &[u8]) {
    if conn_io::write_all(w, stream, fd, out).await.is_err() {
        return;
    }
    linger_close(w, stream, fd).await;
}

/// Closes without resetting, once the last answer is written: half-close, and
/// read (and drop) what the peer still sends for a moment, so the answer is not
/// lost to an RST caused by unread request bytes.
pub async fn linger_close(w: &Worker, stream: &TcpStream, fd: RawFd) {
    conn_io::close_notify(w, fd);
    let _ = netio::shutdown_write(fd);
    // What the peer still sends is dropped unread: on TLS, unopened.
    let drain = async {
        let mut sink = Vec::with_capacity(DRAIN_CHUNK);
        let mut total = 0usize;
        while total < 1 << 20 {
            sink.clear();
            match netio::read_some(stream, fd, &mut sink, DRAIN_CHUNK).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    if timer::timeout(w, Duration::from_millis(500), drain)
        .await
        .is_err()
    {
        debug!("msg=\"peer kept sending after the final response\"");
    }
}
