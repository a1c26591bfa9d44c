//! One HTTP/1.1 connection: reads request heads (keep-alive and pipelining for
//! plain requests), routes them, and hands event streams and WebSocket upgrades
//! to their sessions. Every refusal is a 4xx/5xx with a one-line reason, then a
//! lingering close so the peer reads it.

use std::borrow::Cow;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use monoio::net::TcpStream;

use super::sse_session;
use super::timer;
use super::worker::{OpenConn, Worker};
use crate::core::state::PublishStart;
use crate::debug;
use crate::metrics::{self, ProcessInfo};
use crate::netio;
use crate::proto::access::{Presented, Refusal};
use crate::proto::http::{
    self, query_pairs, Body, ChunkedDecoder, HeadLimits, HeadScanner, HttpError, Method,
};
use crate::proto::publish::{self, PublishError};
use crate::proto::topic::{validate_event, validate_topic};

/// Bytes asked of the socket per read while a head or body arrives.
const READ_CHUNK: usize = 4096;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Sse,
    Ws,
    Echo,
    Publish,
    Metrics,
    Healthz,
    Index,
    NotFound,
}

impl Route {
    fn of(path: &str, echo: bool) -> Route {
        match path {
            "/sse" => Route::Sse,
            "/ws" => Route::Ws,
            "/echo" if echo => Route::Echo,
            "/publish" => Route::Publish,
            "/metrics" => Route::Metrics,
            "/healthz" => Route::Healthz,
            "/" | "/index.html" => Route::Index,
            _ => Route::NotFound,
        }
    }

    /// The methods the route answers (the `Allow` header of a 405).
    fn allow(self) -> &'static str {
        match self {
            Route::Publish => "POST, OPTIONS",
            Route::Sse => "GET, OPTIONS",
            _ => "GET",
        }
    }
}

/// A request head copied out of the read buffer, so the buffer can take the body.
#[derive(Debug)]
pub struct Request {
    pub method: Method<'static>,
    pub route: Route,
    pub query: String,
    pub keep_alive: bool,
    pub body: Body,
    pub expect_continue: bool,
    pub last_event_id: Option<Vec<u8>>,
    pub http11: bool,
    pub upgrade_websocket: bool,
    pub connection_upgrade: bool,
    pub ws_key: Option<Vec<u8>>,
    pub ws_version: Option<Vec<u8>>,
    pub origin: Option<Vec<u8>>,
    pub host: Option<Vec<u8>>,
    /// The token of `Authorization: Bearer`.
    pub bearer: Option<Vec<u8>>,
    /// The value of the `--auth-cookie` cookie.
    pub cookie_token: Option<Vec<u8>>,
}

impl Request {
    /// What the request presents for access control (the `token` query
    /// parameter is borrowed from `query_token`).
    pub fn presented<'a>(&'a self, query_token: Option<&'a [u8]>) -> Presented<'a> {
        Presented {
            bearer: self.bearer.as_deref(),
            query_token,
            cookie: self.cookie_token.as_deref(),
            origin: self.origin.as_deref(),
            host: self.host.as_deref(),
        }
    }

    /// CORS headers for a browser whose origin is allowed.
    pub fn cors(&self, w: &Worker) -> Vec<(&'static str, String)> {
        match &self.origin {
            Some(origin) if w.access.origin_allowed(Some(origin), self.host.as_deref()) => vec![
                (
                    "Access-Control-Allow-Origin",
                    String::from_utf8_lossy(origin).into_owned(),
                ),
                ("Access-Control-Allow-Credentials", "true".into()),
                ("Vary", "Origin".into()),
            ],
            _ => Vec::new(),
        }
    }

    /// A query parameter as text; `Err` when it is not UTF-8.
    pub fn param(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        query_pairs(&self.query)
            .find(|(k, _)| &**k == name.as_bytes())
            .map(|(_, v)| v)
    }
}

/// What reading a head gave.
enum HeadRead {
    Request(Box<Request>),
    /// The peer closed between requests.
    Closed,
    Refused(HttpError),
}

/// Serves one accepted connection: requests until it closes, or until a request
/// turns it into a stream, which then runs as a task of its own (so an idle
/// stream holds only the stream's small state, not the request reader's).
pub async fn serve(w: Rc<Worker>, stream: TcpStream, open: OpenConn) {
    let fd = stream.as_raw_fd();
    let mut buf: Vec<u8> = Vec::new();
    let mut scanner = HeadScanner::new();
    let limits = HeadLimits {
        max_header_bytes: w.cfg.max_header_bytes,
    };
    let mut answers = PendingAnswers::default();
    loop {
        scanner.reset();
        let read = timer::timeout(
            &w,
            w.cfg.header_timeout,
            read_head(&w, &stream, fd, &mut buf, &mut scanner, &limits),
        )
        .await;
        // Pipelined publishes are answered before anything else is.
        let another_publish = matches!(&read, Ok(Ok(HeadRead::Request(r)))
            if r.route == Route::Publish && r.method == Method::Post);
        if !another_publish && !answers.send(&w, &stream, fd).await {
            return;
        }
        let req = match read {
            Err(_elapsed) => {
                if !buf.is_empty() {
                    w.metrics().header_timeouts.inc();
                    respond_error(
                        &w,
                        &stream,
                        fd,
                        408,
                        "request head not received within --header-timeout",
                    )
                    .await;
                }
                return;
            }
            Ok(Err(_)) | Ok(Ok(HeadRead::Closed)) => return,
            Ok(Ok(HeadRead::Refused(e))) => {
                let mut out = Vec::new();
                http::error_response(&mut out, e);
                w.metrics().http_response(e.status());
                finish(&w, &stream, fd, &out).await;
                return;
            }
            Ok(Ok(HeadRead::Request(req))) => *req,
        };
        let allowed = match (req.route, &req.method) {
            (Route::NotFound, _) => true,
            (Route::Sse | Route::Publish, Method::Options) => true,
            (Route::Publish, Method::Post) => true,
            (Route::Publish, _) => false,
            (_, Method::Get) => true,
            _ => false,
        };
        if !allowed {
            let reason = format!("method not allowed; use {}", req.route.allow());
            respond(
                &w,
                &stream,
                fd,
                405,
                &[("Allow", req.route.allow())],
                reason.as_bytes(),
                false,
            )
            .await;
            return;
        }
        if req.method == Method::Options {
            if preflight(&w, &stream, fd, &req).await {
                continue;
            }
            return;
        }
        let keep_alive = match req.route {
            Route::Sse if w.draining() => {
                return sse_session::refuse(
                    &w,
                    &stream,
                    fd,
                    sse_session::SHUTDOWN_EVENT,
                    "draining",
                )
                .await
            }
            Route::Sse => {
                match sse_session::admit(&w, fd, req) {
                    Ok(admitted) => {
                        monoio::spawn(sse_session::serve(w, stream, admitted, open));
                    }
                    Err(refused) => refused.answer(&w, &stream, fd).await,
                }
                return;
            }
            Route::Ws | Route::Echo if w.draining() => {
                return respond_error(&w, &stream, fd, 503, "draining: reconnect elsewhere").await
            }
            Route::Ws | Route::Echo => {
                match super::ws_session::admit(&w, fd, req) {
                    Ok(admitted) => super::ws_session::spawn(w, stream, admitted, buf, open),
                    Err(refused) => refused.answer(&w, &stream, fd).await,
                }
                return;
            }
            Route::Publish => {
                if publish(&w, &stream, fd, &req, &mut buf, &mut answers)
                    .await
                    .is_none()
                {
                    return;
                }
                // More pipelined requests already here, or already in the socket:
                // start them before answering. A window of publishes to a topic
                // homed on another core then waits for one round trip through
                // the bus, not one per read.
                if req.keep_alive
                    && answers.pending.len() < MAX_PIPELINED
                    && (http::head_complete(&buf, 0).is_some()
                        || pull_pipelined(fd, &mut buf, w.cfg.max_header_bytes))
                {
                    continue;
                }
                answers.send(&w, &stream, fd).await
            }
            Route::Metrics => {
                let mut text = metrics::render(
                    &w.all_metrics,
                    &ProcessInfo {
                        driver: w.driver,
                        epoch: &w.epoch_text,
                    },
                );
                if let Some(b) = &w.broker {
                    super::broker::render_metrics(b, &mut text);
                }
                respond_typed(
                    &w,
                    &stream,
                    fd,
                    200,
                    "text/plain; version=0.0.4",
                    text.as_bytes(),
                    req.keep_alive,
                )
                .await
            }
            Route::Healthz if w.draining() => {
                respond(
                    &w,
                    &stream,
                    fd,
                    503,
                    &[("Retry-After", "1")],
                    b"draining",
                    false,
                )
                .await
            }
            Route::Healthz if w.broker.as_ref().is_some_and(|b| !b.is_up()) => {
                respond(
                    &w,
                    &stream,
                    fd,
                    503,
                    &[("Retry-After", "1")],
                    b"broker unavailable",
                    req.keep_alive,
                )
                .await
            }
            Route::Healthz => respond(&w, &stream, fd, 200, &[], b"ok", req.keep_alive).await,
            Route::Index => {
                respond_typed(
                    &w,
                    &stream,
                    fd,
                    200,
                    "text/html; charset=utf-8",
                    DEMO_PAGE.as_bytes(),
                    req.keep_alive,
                )
                .await
            }
            Route::NotFound => {
                respond(
                    &w,
                    &stream,
                    fd,
                    404,
                    &[],
                    b"not found: try /sse, /ws, /publish, /metrics or /healthz",
                    req.keep_alive,
                )
                .await
            }
        };
        if !keep_alive {
            return;
        }
    }
}

/// Answers a connection accepted over `--max-connections`: `/sse` gets a `200`
/// with a `retry:` hint and a `ringcast.busy` event (a browser's EventSource gives
/// up for good on any other status), everything else a `503` with `Retry-After`.
pub async fn refuse_busy(w: &Rc<Worker>, stream: TcpStream) {
    let fd = stream.as_raw_fd();
    let mut buf = Vec::new();
    let mut scanner = HeadScanner::new();
    let limits = HeadLimits {
        max_header_bytes: w.cfg.max_header_bytes,
    };
    let read = timer::timeout(
        w,
        Duration::from_secs(2),
        read_head(w, &stream, fd, &mut buf, &mut scanner, &limits),
    )
    .await;
    match read {
        Ok(Ok(HeadRead::Request(req))) if req.route == Route::Sse => {
            sse_session::refuse(w, &stream, fd, sse_session::BUSY_EVENT, "over capacity").await
        }
        Ok(Ok(HeadRead::Request(_))) => {
            respond(
                w,
                &stream,
                fd,
                503,
                &[("Retry-After", "1")],
                b"over capacity: retry later",
                false,
            )
            .await;
        }
        _ => {}
    }
}

/// Reads until a whole head is in `buf`, then copies it out and drops it from `buf`.
async fn read_head(
    w: &Worker,
    stream: &TcpStream,
    fd: RawFd,
    buf: &mut Vec<u8>,
    scanner: &mut HeadScanner,
    limits: &HeadLimits,
) -> std::io::Result<HeadRead> {
    loop {
        if !buf.is_empty() {
            match scanner.parse(buf, limits) {
                Ok(Some(head)) => {
                    let req = match to_request(w, &head) {
                        Ok(req) => Box::new(req),
                        Err(e) => return Ok(HeadRead::Refused(e)),
                    };
                    let used = head.head_len;
                    buf.drain(..used);
                    return Ok(HeadRead::Request(req));
                }
                Ok(None) => {}
                Err(e) => return Ok(HeadRead::Refused(e)),
            }
            let room = READ_CHUNK
                .min(limits.max_header_bytes + 1 - buf.len().min(limits.max_header_bytes));
            if netio::read_some(stream, fd, buf, room.max(1)).await? == 0 {
                return Ok(HeadRead::Closed);
            }
            continue;
        }
        // Nothing buffered: read into the core's scratch buffer and parse there.
        // A head that arrives whole (nearly always) never costs the connection a
        // buffer of its own; only a partial head, or bytes after it, are kept.
        // Between requests the connection is idle: the drain closes it.
        let readable = std::pin::pin!(stream.readable(false));
        match w.drain.unless_draining(readable).await {
            None => return Ok(HeadRead::Closed),
            Some(ready) => ready?,
        }
        let mut scratch = w.scratch.borrow_mut();
        let n = match netio::recv(fd, &mut scratch) {
            Ok(0) => return Ok(HeadRead::Closed),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        let got = &scratch[..n];
        match http::parse_request(got, limits) {
            Ok(Some(head)) => {
                let req = match to_request(w, &head) {
                    Ok(req) => Box::new(req),
                    Err(e) => return Ok(HeadRead::Refused(e)),
                };
                buf.extend_from_slice(&got[head.head_len..]);
                return Ok(HeadRead::Request(req));
            }
            Ok(None) => buf.extend_from_slice(got),
            Err(e) => return Ok(HeadRead::Refused(e)),
        }
    }
}

fn to_request(w: &Worker, head: &http::RequestHead<'_>) -> Result<Request, HttpError> {
    let method = match head.method {
        Method::Get => Method::Get,
        Method::Head => Method::Head,
        Method::Post => Method::Post,
        Method::Options => Method::Options,
        Method::Other(_) => Method::Other("OTHER"),
    };
    let max_body = w.cfg.max_body_bytes as u64;
    Ok(Request {
        method,
        route: Route::of(head.path, w.cfg.echo),
        query: head.query.to_owned(),
        keep_alive: head.keep_alive,
        body: head.body(max_body)?,
        expect_continue: head.expect_continue,
        last_event_id: head.last_event_id.map(<[u8]>::to_vec),
        http11: head.minor_version >= 1,
        upgrade_websocket: head.upgrade_websocket,
        connection_upgrade: head.connection_upgrade,
        ws_key: head.ws_key.map(<[u8]>::to_vec),
        ws_version: head.ws_version.map(<[u8]>::to_vec),
        origin: head.origin.map(<[u8]>::to_vec),
        host: head.host.map(<[u8]>::to_vec),
        bearer: head.bearer().map(<[u8]>::to_vec),
        cookie_token: w
            .cfg
            .auth
            .cookie
            .as_deref()
            .and_then(|name| head.cookie(name.as_bytes()))
            .map(<[u8]>::to_vec),
    })
}

/// Seconds since the Unix epoch (token times).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Answers a refused access: 401 with `WWW-Authenticate`, or 403, with the reason.
pub async fn refuse_access(w: &Worker, stream: &TcpStream, fd: RawFd, refusal: &Refusal) {
    let mut out = Vec::new();
    let body = format!("{refusal}\n");
    let headers: &[(&str, &str)] = match refusal {
        Refusal::Unauthorized(_) => &[("WWW-Authenticate", "Bearer error=\"invalid_token\"")],
        Refusal::Forbidden(_) => &[],
    };
    http::write_response(
        &mut out,
        refusal.status(),
        headers,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        false,
    );
    w.metrics().http_response(refusal.status());
    finish(w, stream, fd, &out).await;
}

/// Answers a CORS preflight for `/sse` and `/publish`.
async fn preflight(w: &Worker, stream: &TcpStream, fd: RawFd, req: &Request) -> bool {
    if !w
        .access
        .origin_allowed(req.origin.as_deref(), req.host.as_deref())
    {
        respond_error(w, stream, fd, 403, "origin not allowed (--allowed-origins)").await;
        return false;
    }
    let cors = req.cors(w);
    let mut headers: Vec<(&str, &str)> = cors.iter().map(|(k, v)| (*k, v.as_str())).collect();
    headers.push(("Access-Control-Allow-Methods", "GET, POST, OPTIONS"));
    headers.push((
        "Access-Control-Allow-Headers",
        "Authorization, Content-Type, Last-Event-ID",
    ));
    headers.push(("Access-Control-Max-Age", "600"));
    let mut out = Vec::new();
    http::write_response(&mut out, 204, &headers, "text/plain", b"", req.keep_alive);
    send(w, stream, fd, 204, &out, req.keep_alive).await
}

/// Publishes read from one connection and not answered yet. Pipelined
/// publishes are all started before the first is answered, so a burst reaches
/// the topics' home cores together and fans out in one batch.
#[derive(Default)]
struct PendingAnswers {
    pending: Vec<Pending>,
}

/// One started publish and how to answer it.
struct Pending {
    start: PublishStart,
    keep_alive: bool,
    cors: Vec<(&'static str, String)>,
}

/// Most publishes of one connection in flight before they are answered.
const MAX_PIPELINED: usize = 256;

impl PendingAnswers {
    /// Answers every started publish, in order, in one write. Returns whether
    /// the connection stays open.
    async fn send(&mut self, w: &Rc<Worker>, stream: &TcpStream, fd: RawFd) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let mut out = Vec::with_capacity(self.pending.len() * 160);
        let mut keep = true;
        for p in self.pending.drain(..) {
            let result = publish_result(w, p.start).await;
            let headers: Vec<(&str, &str)> = p.cors.iter().map(|(k, v)| (*k, v.as_str())).collect();
            match result {
                Ok(seq) => {
                    let id = w.state.borrow().ids().format_id(seq);
                    let mut body = Vec::with_capacity(40);
                    body.extend_from_slice(b"{\"id\":");
                    crate::proto::json::write_string(&mut body, &id);
                    body.extend_from_slice(b"}\n");
                    http::write_response(
                        &mut out,
                        202,
                        &headers,
                        "application/json",
                        &body,
                        p.keep_alive,
                    );
                    w.metrics().http_response(202);
                }
                Err(e) => {
                    w.metrics().publish_errors.inc();
                    let mut with_retry = headers.clone();
                    with_retry.push(("Retry-After", "1"));
                    let body = format!("{e}\n");
                    http::write_response(
                        &mut out,
                        503,
                        &with_retry,
                        "text/plain; charset=utf-8",
                        body.as_bytes(),
                        p.keep_alive,
                    );
                    w.metrics().http_response(503);
                }
            }
            keep = p.keep_alive;
        }
        netio::write_all(stream, fd, &out).await.is_ok() && keep
    }
}

/// `POST /publish?topic=T[&event=E]`: the body is the payload. Starts the
/// publish and leaves its answer in `answers`; `None` when the connection must
/// close (the refusal already answered, after the publishes before it).
async fn publish(
    w: &Rc<Worker>,
    stream: &TcpStream,
    fd: RawFd,
    req: &Request,
    buf: &mut Vec<u8>,
    answers: &mut PendingAnswers,
) -> Option<()> {
    // Check what can be checked before the body is read.
    let topic = match req.param("topic") {
        None => return refuse_after(w, stream, fd, answers, 400, "missing ?topic=NAME").await,
        Some(t) => match validate_topic(&t) {
            Ok(t) => t.to_owned(),
            Err(e) => return refuse_after(w, stream, fd, answers, 400, &e.to_string()).await,
        },
    };
    if let Err(refusal) = w
        .access
        .publisher(req.bearer.as_deref(), &topic, unix_now())
    {
        answers.send(w, stream, fd).await;
        refuse_access(w, stream, fd, &refusal).await;
        return None;
    }
    let event = match req.param("event") {
        None => None,
        Some(e) => match validate_event(&e) {
            Ok(e) => Some(e.to_owned()),
            Err(e) => return refuse_after(w, stream, fd, answers, 400, &e.to_string()).await,
        },
    };
    if req.expect_continue {
        // The client waits for 100 Continue: answer what is pending first.
        answers.send(w, stream, fd).await;
    }
    let body = match read_body(w, stream, fd, req, buf).await {
        Ok(body) => body,
        Err(BodyError::Http(e)) => {
            answers.send(w, stream, fd).await;
            let mut out = Vec::new();
            http::error_response(&mut out, e);
            w.metrics().http_response(e.status());
            finish(w, stream, fd, &out).await;
            return None;
        }
        Err(BodyError::Io) => return None,
    };
    let data = {
        let mut json = w.json.borrow_mut();
        publish::payload_to_json(&mut json, &body, w.cfg.max_message_bytes)
    };
    let data = match data {
        Ok(d) => d,
        Err(e @ PublishError::TooLarge) => {
            return refuse_after(w, stream, fd, answers, 413, &e.to_string()).await
        }
        Err(e) => return refuse_after(w, stream, fd, answers, 400, &e.to_string()).await,
    };
    let start = w.state.borrow_mut().publish(&topic, event.as_deref(), data);
    answers.pending.push(Pending {
        start,
        keep_alive: req.keep_alive,
        cors: req.cors(w),
    });
    Some(())
}

/// Appends to `buf` what the socket already holds, without waiting, until `buf`
/// starts with a whole request head; true when it does. Stops at `max_head`
/// bytes (the next read refuses the oversized head) and at end of stream (the
/// next read sees it).
fn pull_pipelined(fd: RawFd, buf: &mut Vec<u8>, max_head: usize) -> bool {
    while buf.len() <= max_head {
        if netio::recv_appending(fd, buf, READ_CHUNK).unwrap_or(0) == 0 {
            return false;
        }
        if http::head_complete(buf, 0).is_some() {
            return true;
        }
    }
    false
}

/// Answers the publishes before a refusal, then the refusal; `None` to close.
async fn refuse_after(
    w: &Rc<Worker>,
    stream: &TcpStream,
    fd: RawFd,
    answers: &mut PendingAnswers,
    status: u16,
    reason: &str,
) -> Option<()> {
    answers.send(w, stream, fd).await;
    respond_error(w, stream, fd, status, reason).await;
    None
}

/// Publishes through this core (stamped here or at the topic's home) and waits
/// for the position.
pub async fn publish_and_wait(
    w: &Rc<Worker>,
    topic: &str,
    event: Option<&str>,
    data: Vec<u8>,
) -> Result<u64, PublishError> {
    let start = w.state.borrow_mut().publish(topic, event, data);
    publish_result(w, start).await
}

/// The position a started publish got: at once when this core stamped it, else
/// when the topic's home answers (the wait is forgotten if dropped early).
pub async fn publish_result(w: &Rc<Worker>, start: PublishStart) -> Result<u64, PublishError> {
    match start {
        PublishStart::Done(seq) => Ok(seq),
        PublishStart::Pending(slot) => {
            PublishWait {
                w,
                slot,
                done: false,
            }
            .await
        }
    }
}

/// Waits for a publish answered by another core; forgets it if dropped early.
struct PublishWait<'a> {
    w: &'a Rc<Worker>,
    slot: u32,
    done: bool,
}

impl std::future::Future for PublishWait<'_> {
    type Output = Result<u64, PublishError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let r = self.w.state.borrow_mut().poll_publish(self.slot, cx);
        if r.is_ready() {
            self.done = true;
        }
        r
    }
}

impl Drop for PublishWait<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.w.state.borrow_mut().cancel_publish(self.slot);
        }
    }
}

enum BodyError {
    Http(HttpError),
    Io,
}

/// Reads the request body (by length or chunked) out of `buf` and the socket,
/// leaving any pipelined bytes after it in `buf`.
async fn read_body(
    w: &Worker,
    stream: &TcpStream,
    fd: RawFd,
    req: &Request,
    buf: &mut Vec<u8>,
) -> Result<Vec<u8>, BodyError> {
    match req.body {
        Body::Absent => Err(BodyError::Http(HttpError::LengthRequired)),
        Body::Length(len) => {
            let len = len as usize;
            if req.expect_continue && buf.len() < len {
                netio::write_all(stream, fd, http::CONTINUE)
                    .await
                    .map_err(|_| BodyError::Io)?;
            }
            while buf.len() < len {
                let want = (len - buf.len()).min(64 * 1024);
                if netio::read_some(stream, fd, buf, want)
                    .await
                    .map_err(|_| BodyError::Io)?
                    == 0
                {
                    return Err(BodyError::Io);
                }
            }
            let rest = buf.split_off(len);
            Ok(std::mem::replace(buf, rest))
        }
        Body::Chunked => {
            if req.expect_continue {
                netio::write_all(stream, fd, http::CONTINUE)
                    .await
                    .map_err(|_| BodyError::Io)?;
            }
            let mut decoder = ChunkedDecoder::new(w.cfg.max_body_bytes as u64);
            let mut body = Vec::new();
            loop {
                let (used, done) = decoder.decode(buf, &mut body).map_err(BodyError::Http)?;
                buf.drain(..used);
                if done {
                    return Ok(body);
                }
                if netio::read_some(stream, fd, buf, READ_CHUNK)
                    .await
                    .map_err(|_| BodyError::Io)?
                    == 0
                {
                    return Err(BodyError::Io);
                }
            }
        }
    }
}

/// An error response (text reason) followed by a lingering close.
pub async fn respond_error(w: &Worker, stream: &TcpStream, fd: RawFd, status: u16, reason: &str) {
    let mut body = reason.as_bytes().to_vec();
    body.push(b'\n');
    let mut out = Vec::new();
    http::write_response(
        &mut out,
        status,
        &[],
        "text/plain; charset=utf-8",
        &body,
        false,
    );
    w.metrics().http_response(status);
    finish(w, stream, fd, &out).await;
}

/// A plain-text response. Returns whether the connection stays open.
pub async fn respond(
    w: &Worker,
    stream: &TcpStream,
    fd: RawFd,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) -> bool {
    let mut text = body.to_vec();
    text.push(b'\n');
    let mut out = Vec::new();
    http::write_response(
        &mut out,
        status,
        headers,
        "text/plain; charset=utf-8",
        &text,
        keep_alive,
    );
    send(w, stream, fd, status, &out, keep_alive).await
}

async fn respond_typed(
    w: &Worker,
    stream: &TcpStream,
    fd: RawFd,
    status: u16,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
) -> bool {
    let mut out = Vec::with_capacity(body.len() + 128);
    http::write_response(&mut out, status, &[], content_type, body, keep_alive);
    send(w, stream, fd, status, &out, keep_alive).await
}

async fn send(
    w: &Worker,
    stream: &TcpStream,
    fd: RawFd,
    status: u16,
    out: &[u8],
    keep_alive: bool,
) -> bool {
    w.metrics().http_response(status);
    if keep_alive {
        netio::write_all(stream, fd, out).await.is_ok()
    } else {
        finish(w, stream, fd, out).await;
        false
    }
}

/// Writes a last response, then closes without resetting: half-close, and read
/// (and drop) what the peer still sends for a moment, so the response is not
/// lost to an RST caused by unread request bytes.
pub async fn finish(w: &Worker, stream: &TcpStream, fd: RawFd, out: &[u8]) {
    if netio::write_all(stream, fd, out).await.is_err() {
        return;
    }
    // SAFETY: shutdown on a descriptor this connection owns; no memory involved.
    unsafe {
        libc::shutdown(fd, libc::SHUT_WR);
    }
    let drain = async {
        let mut sink = Vec::with_capacity(READ_CHUNK);
        let mut total = 0usize;
        while total < 1 << 20 {
            sink.clear();
            match netio::read_some(stream, fd, &mut sink, READ_CHUNK).await {
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

/// The demo page served at `/`.
const DEMO_PAGE: &str = include_str!("demo.html");
