//! Test harness: the real `ringcast` binary on a free port, and small raw
//! clients (HTTP/1.1, SSE, the NDJSON publish socket) over real sockets.
//!
//! Every wait is bounded: conditions are polled until a deadline, reads carry a
//! timeout. Nothing here sleeps for a fixed time to "let things settle".

#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_ringcast");

/// The binary to run: `RINGCAST_TEST_BIN` when set (to run this suite against
/// another build), else the one cargo built with the tests.
pub fn bin() -> String {
    std::env::var("RINGCAST_TEST_BIN").unwrap_or_else(|_| BIN.to_owned())
}

/// How long a server gets to answer `/healthz` after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Default read timeout of the raw clients.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A private temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "rc-{}-{}-{nanos:x}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A running `ringcast serve`, killed (SIGKILL) on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub socket: PathBuf,
    stderr_path: PathBuf,
    dir: TempDir,
    /// The extra arguments it was started with (for [`Server::restart`]).
    args: Vec<String>,
    /// The shell prefix it was started through, if any.
    shell_prefix: Option<String>,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

impl Server {
    /// Starts `ringcast serve --listen 127.0.0.1:<free> --publish-socket <tmp>/rc.sock
    /// --cores 2 <args>` (`--cores` in `args` replaces the 2) and waits until `/healthz` answers 200.
    pub fn start(args: &[&str]) -> Server {
        let mut last_err = String::new();
        for _attempt in 0..5 {
            match Self::try_start(args) {
                Ok(s) => return s,
                Err((err, retry)) => {
                    if !retry {
                        panic!("ringcast serve {args:?} did not start:\n{err}");
                    }
                    last_err = err;
                }
            }
        }
        panic!("ringcast serve {args:?} did not start after 5 ports:\n{last_err}");
    }

    /// Like [`Server::start`], but runs the binary through `sh -c '<prefix>; exec
    /// <bin> serve ...'`, e.g. with `ulimit -Hn 64 -Sn 64` as the prefix. `exec`
    /// keeps the process id, so [`Server::pid`] is the server's.
    pub fn start_via_shell(prefix: &str, args: &[&str]) -> Server {
        let mut last_err = String::new();
        for _attempt in 0..5 {
            match Self::try_start_cmd(args, Some(prefix)) {
                Ok(s) => return s,
                Err((err, retry)) => {
                    if !retry {
                        panic!(
                            "sh -c '{prefix}; exec ringcast serve {args:?}' did not start:\n{err}"
                        );
                    }
                    last_err = err;
                }
            }
        }
        panic!("ringcast serve {args:?} (via sh) did not start after 5 ports:\n{last_err}");
    }

    /// `Err((why, worth retrying on another port))`.
    fn try_start(args: &[&str]) -> Result<Server, (String, bool)> {
        Self::try_start_cmd(args, None)
    }

    fn try_start_cmd(args: &[&str], shell_prefix: Option<&str>) -> Result<Server, (String, bool)> {
        let dir = TempDir::new();
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let socket = dir.path().join("rc.sock");
        let stderr_path = dir.path().join("stderr.log");
        let child = Self::spawn(addr, &socket, &stderr_path, args, shell_prefix);
        let mut server = Server {
            child,
            addr,
            socket,
            stderr_path,
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
            shell_prefix: shell_prefix.map(str::to_owned),
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn spawn(
        addr: SocketAddr,
        socket: &Path,
        stderr_path: &Path,
        args: &[&str],
        shell_prefix: Option<&str>,
    ) -> Child {
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(stderr_path)
            .expect("open stderr log");
        let mut cmd = match shell_prefix {
            None => Command::new(bin()),
            Some(prefix) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("{prefix}; exec \"$0\" \"$@\""))
                    .arg(bin());
                c
            }
        };
        cmd.arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--publish-socket")
            .arg(socket);
        if !args.contains(&"--cores") {
            cmd.arg("--cores").arg("2");
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn ringcast")
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the process (SIGKILL) and starts it again on the same address,
    /// publish socket and arguments; waits until `/healthz` answers 200.
    /// stderr of both runs goes to the same log.
    pub fn restart(&mut self) {
        self.kill();
        self.start_again();
    }

    /// Starts the (killed) process again, as [`Server::restart`] does. A start
    /// refused because the old run's port or publish socket still looks in use
    /// is retried (bounded); returns how many starts it took.
    pub fn start_again(&mut self) -> usize {
        let deadline = Instant::now() + START_TIMEOUT;
        for attempt in 1.. {
            match self.try_start_again_once() {
                Ok(()) => return attempt,
                Err(err) if Instant::now() < deadline && Self::looks_in_use(&err) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(err) => panic!("ringcast did not restart on {}:\n{err}", self.addr),
            }
        }
        unreachable!()
    }

    /// One start on the same address, publish socket and arguments.
    pub fn try_start_again_once(&mut self) -> Result<(), String> {
        let owned = self.args.clone();
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        // Only this run's stderr in the answer (the last run's checked first).
        self.assert_no_panic();
        let _ = fs::write(&self.stderr_path, b"");
        let prefix = self.shell_prefix.clone();
        self.child = Self::spawn(
            self.addr,
            &self.socket,
            &self.stderr_path,
            &args,
            prefix.as_deref(),
        );
        self.wait_ready().map_err(|(err, _)| err)
    }

    fn looks_in_use(err: &str) -> bool {
        err.contains("in use") || err.contains("another server is listening")
    }

    /// Waits until `/healthz` answers 200 and the publish socket exists.
    fn wait_ready(&mut self) -> Result<(), (String, bool)> {
        let server = self;
        let addr = server.addr;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                let err = format!("exited with {status}; stderr:\n{}", server.stderr());
                let retry = err.contains("in use");
                return Err((err, retry));
            }
            if let Ok(r) = try_request(
                addr,
                b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            ) {
                if r.status == 200 && server.socket.exists() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                let err = format!(
                    "/healthz did not answer 200 within {START_TIMEOUT:?}; stderr:\n{}",
                    server.stderr()
                );
                return Err((err, false));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` (e.g. `libc::SIGTERM`) to the server process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's,
        // not yet reaped (we reap only in `wait_exit` and on drop).
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid());
    }

    /// Waits (bounded) for the process to exit; its status, or `None` on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    /// Resident memory of the server process (`VmRSS` of /proc/PID/status).
    pub fn rss(&self) -> u64 {
        proc_rss_bytes(self.pid())
    }

    /// CPU time (user + system) the server process used so far.
    pub fn cpu_time(&self) -> Duration {
        proc_cpu_time(self.pid())
    }

    /// Starts a WebSocket client on this server (`GET /ws?<query>`).
    pub fn ws(&self, query: &str) -> WsClient {
        WsClient::connect(self.addr, query)
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The last lines of stderr, for failure messages.
    pub fn stderr_tail(&self) -> String {
        let err = self.stderr();
        let lines: Vec<&str> = err.lines().collect();
        let from = lines.len().saturating_sub(20);
        format!("server stderr (last lines):\n{}", lines[from..].join("\n"))
    }

    /// Panics when stderr holds a panic message.
    pub fn assert_no_panic(&self) {
        let err = self.stderr();
        assert!(
            !err.lines().any(|l| l.contains("panicked")),
            "the server panicked; stderr:\n{err}"
        );
    }

    /// Panics unless the server process is still running.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the server exited ({status}); stderr:\n{}", self.stderr());
        }
    }

    /// Open descriptors of the server process.
    pub fn fd_count(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/PID/fd")
            .count()
    }

    /// What each open descriptor of the server is (`N -> socket:[inode]`), for
    /// failure messages.
    pub fn fd_listing(&self) -> String {
        let mut out = Vec::new();
        if let Ok(dir) = fs::read_dir(format!("/proc/{}/fd", self.pid())) {
            for e in dir.flatten() {
                let target = fs::read_link(e.path()).map(|p| p.display().to_string());
                out.push(format!(
                    "{} -> {}",
                    e.file_name().to_string_lossy(),
                    target.unwrap_or_default()
                ));
            }
        }
        out.sort();
        out.join("\n")
    }

    /// Open descriptors once connections this harness made (a `/metrics` or
    /// `/healthz` request) have finished closing on the server's side: the same
    /// count five readings in a row, 10 ms apart (bounded by 2 s). Reading
    /// `/proc/PID/fd` is not atomic, so one reading alone can be off.
    pub fn settled_fd_count(&self) -> usize {
        let mut last = self.fd_count();
        let mut same = 0;
        let deadline = Instant::now() + Duration::from_secs(2);
        while same < 5 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            let n = self.fd_count();
            if n == last {
                same += 1;
            } else {
                last = n;
                same = 0;
            }
        }
        last
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        let r = try_request(
            self.addr,
            b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .unwrap_or_else(|e| panic!("GET /metrics failed: {e}\n{}", self.stderr_tail()));
        assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
        r.text()
    }

    /// The value of one series, written exactly as exposed, e.g.
    /// `ringcast_connections{transport="sse",core="0"}`.
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.metrics();
        find_series(&text, series)
            .unwrap_or_else(|| panic!("no series {series} in /metrics:\n{text}"))
    }

    /// The sum of every series of a family whose labels include the given pairs,
    /// e.g. `ringcast_connections{transport="sse"}` or `ringcast_subscriptions`.
    pub fn metric_sum(&self, selector: &str) -> f64 {
        sum_series(&self.metrics(), selector)
    }

    /// Sends `lines` (without newlines) over one publish-socket connection, all
    /// written before any answer is read, and returns the answer lines in order.
    pub fn publish_socket(&self, lines: &[String]) -> Vec<String> {
        let mut p = Publisher::connect(&self.socket);
        let mut payload = Vec::new();
        for l in lines {
            payload.extend_from_slice(l.as_bytes());
            payload.push(b'\n');
        }
        // Write from another thread so a large batch cannot deadlock against
        // answers the server is waiting to write.
        let mut writer = p.stream.try_clone().expect("clone unix stream");
        let t = std::thread::spawn(move || writer.write_all(&payload));
        let answers = (0..lines.len())
            .map(|i| {
                p.try_read_answer().unwrap_or_else(|e| {
                    panic!(
                        "publish socket: no answer {i} of {}: {e}\n{}",
                        lines.len(),
                        self.stderr_tail()
                    )
                })
            })
            .collect();
        t.join()
            .expect("writer thread")
            .expect("write publish lines");
        answers
    }

    /// `POST /publish?topic=T` with `body` on a fresh connection: (status, body).
    pub fn http_publish(&self, topic: &str, body: &str) -> (u16, String) {
        let mut c = HttpConn::connect(self.addr);
        let r = c.publish(topic, body);
        (r.status, r.text())
    }

    /// The id epoch of this run, from `ringcast_info`.
    pub fn epoch(&self) -> String {
        let text = self.metrics();
        let line = text
            .lines()
            .find(|l| l.starts_with("ringcast_info{"))
            .expect("ringcast_info");
        label_value(line, "epoch").expect("epoch label")
    }

    /// Starts an SSE client on this server.
    pub fn sse(&self, query: &str) -> SseClient {
        SseClient::connect(self.addr, query, None)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            self.assert_no_panic();
        }
    }
}

fn label_value(line: &str, label: &str) -> Option<String> {
    let key = format!("{label}=\"");
    let at = line.find(&key)? + key.len();
    let end = line[at..].find('"')? + at;
    Some(line[at..end].to_owned())
}

/// A metric line: name, labels, value.
type Series<'a> = (&'a str, Vec<(String, String)>, f64);

/// Splits `name{a="x",b="y"} 3` into (name, [(a,x),(b,y)], value).
fn parse_series(line: &str) -> Option<Series<'_>> {
    let (key, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match key.find('{') {
        Some(i) => (&key[..i], key[i + 1..].trim_end_matches('}')),
        None => (key, ""),
    };
    Some((name, parse_labels(labels), value))
}

fn parse_labels(labels: &str) -> Vec<(String, String)> {
    labels
        .split(',')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        })
        .collect()
}

pub fn find_series(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

pub fn sum_series(text: &str, selector: &str) -> f64 {
    let (name, want) = match selector.find('{') {
        Some(i) => (
            &selector[..i],
            parse_labels(selector[i + 1..].trim_end_matches('}')),
        ),
        None => (selector, Vec::new()),
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(parse_series)
        .filter(|(n, labels, _)| *n == name && want.iter().all(|w| labels.contains(w)))
        .map(|(_, _, v)| v)
        .sum()
}

// ---- HTTP ------------------------------------------------------------------

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on a fresh connection; reads one response.
pub fn request(addr: SocketAddr, raw: &[u8]) -> Response {
    try_request(addr, raw).unwrap_or_else(|e| {
        panic!(
            "request {:?} failed: {e}",
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        )
    })
}

pub fn try_request(addr: SocketAddr, raw: &[u8]) -> std::io::Result<Response> {
    let mut c = HttpConn::try_connect(addr)?;
    c.stream.write_all(raw)?;
    c.try_read_response()
}

/// A keep-alive HTTP/1.1 connection.
pub struct HttpConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl HttpConn {
    pub fn connect(addr: SocketAddr) -> HttpConn {
        Self::try_connect(addr).expect("connect")
    }

    pub fn try_connect(addr: SocketAddr) -> std::io::Result<HttpConn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(HttpConn {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).expect("write request");
    }

    pub fn read_response(&mut self) -> Response {
        self.try_read_response().expect("read response")
    }

    /// Reads one response framed by `Content-Length` (or by close when absent).
    pub fn try_read_response(&mut self) -> std::io::Result<Response> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.fill()? == 0 {
                return Err(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!(
                        "closed before a response head; got {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    ErrorKind::InvalidData,
                    format!("bad status line {status_line:?}"),
                )
            })?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                Some((n.trim().to_owned(), v.trim().to_owned()))
            })
            .collect();
        self.buf.drain(..head_end + 4);
        let len = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok());
        let body = match len {
            Some(len) => {
                while self.buf.len() < len {
                    if self.fill()? == 0 {
                        return Err(std::io::Error::new(
                            ErrorKind::UnexpectedEof,
                            "closed inside a response body",
                        ));
                    }
                }
                self.buf.drain(..len).collect()
            }
            None => {
                while self.fill()? > 0 {}
                std::mem::take(&mut self.buf)
            }
        };
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// True when the server closed the connection (EOF or reset) within the timeout.
    pub fn closed_by_server(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return false
                }
                Err(_) => return true,
            }
        }
    }

    /// `POST /publish?topic=T` on this connection (keep-alive).
    pub fn publish(&mut self, topic: &str, body: &str) -> Response {
        let req = format!(
            "POST /publish?topic={topic} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.send(req.as_bytes());
        self.read_response()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---- SSE -------------------------------------------------------------------

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
pub struct SseClient {
    pub stream: TcpStream,
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
        let end = loop {
            if let Some(i) = find(&c.buf, b"\r\n\r\n") {
                break i;
            }
            assert!(
                c.fill(deadline).expect("read SSE head") > 0,
                "SSE: closed before the head; got {:?}",
                String::from_utf8_lossy(&c.buf)
            );
        };
        c.head = String::from_utf8_lossy(&c.buf[..end]).into_owned();
        c.buf.drain(..end + 4);
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
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::Error::new(
                    ErrorKind::TimedOut,
                    "SSE read deadline",
                ));
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    return Err(std::io::Error::new(
                        ErrorKind::TimedOut,
                        "SSE read deadline",
                    ))
                }
                Err(e) => return Err(e),
            }
        }
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

    /// Everything left on the stream (what is buffered, then reads) until EOF,
    /// a reset or `timeout`: (bytes, how it ended).
    pub fn read_rest(&mut self, timeout: Duration) -> (Vec<u8>, StreamEnd) {
        let deadline = Instant::now() + timeout;
        let end = loop {
            match self.fill(deadline) {
                Ok(0) => break StreamEnd::Eof,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::TimedOut => break StreamEnd::TimedOut,
                Err(e) => break StreamEnd::Error(e.kind()),
            }
        };
        (std::mem::take(&mut self.buf), end)
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

/// Closes `stream` with an RST: SO_LINGER on with a zero timeout, then close.
pub fn reset_close(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a descriptor the stream owns, with a correctly sized
    // `linger` that lives across the call.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt SO_LINGER");
    drop(stream);
}

/// The message envelope of a data block: (topic, id, event, data).
pub struct Envelope {
    pub topic: String,
    pub id: String,
    pub event: Option<String>,
    pub data: simd_json::OwnedValue,
}

pub fn envelope(b: &Block) -> Envelope {
    use simd_json::prelude::*;
    let v = b.json();
    Envelope {
        topic: v
            .get("topic")
            .and_then(|t| t.as_str())
            .unwrap_or_else(|| panic!("envelope without topic: {:?}", b.data))
            .to_owned(),
        id: v
            .get("id")
            .and_then(|t| t.as_str())
            .unwrap_or_else(|| panic!("envelope without id: {:?}", b.data))
            .to_owned(),
        event: v.get("event").and_then(|t| t.as_str()).map(str::to_owned),
        data: v.get("data").cloned().expect("envelope without data"),
    }
}

/// The `n` of a payload `{"n":N}`.
pub fn payload_n(e: &Envelope) -> u64 {
    use simd_json::prelude::*;
    e.data
        .get("n")
        .and_then(|n| n.as_u64())
        .unwrap_or_else(|| panic!("payload without n: {:?}", e.data))
}

/// Splits `<epoch>-<seq>` into its parts.
pub fn split_id(id: &str) -> (String, u64) {
    let (epoch, seq) = id
        .split_once('-')
        .unwrap_or_else(|| panic!("id {id:?} is not <epoch>-<seq>"));
    (
        epoch.to_owned(),
        seq.parse()
            .unwrap_or_else(|_| panic!("id {id:?}: seq is not a number")),
    )
}

// ---- publish socket -----------------------------------------------------------

/// One connection to the publish socket.
pub struct Publisher {
    pub stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Publisher {
    pub fn connect(path: &Path) -> Publisher {
        let stream = UnixStream::connect(path).expect("connect publish socket");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Publisher { stream, reader }
    }

    pub fn send(&mut self, line: &[u8]) {
        self.stream.write_all(line).expect("write publish line");
    }

    /// One answer line, without its newline.
    pub fn read_answer(&mut self) -> String {
        self.try_read_answer()
            .unwrap_or_else(|e| panic!("publish socket: no answer: {e}"))
    }

    pub fn try_read_answer(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line)?;
        if n == 0 {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                "publish socket closed instead of answering",
            ));
        }
        assert!(line.ends_with('\n'), "answer without newline: {line:?}");
        line.pop();
        Ok(line)
    }

    /// Sends one line (newline added) and returns its answer.
    pub fn call(&mut self, line: &str) -> String {
        self.send(format!("{line}\n").as_bytes());
        self.read_answer()
    }
}

/// The `id` of an `{"ok":true,"id":"..."}` answer; panics on anything else.
pub fn answer_id(answer: &str) -> String {
    use simd_json::prelude::*;
    let mut bytes = answer.as_bytes().to_vec();
    let v = simd_json::to_owned_value(&mut bytes)
        .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {answer:?}"));
    assert_eq!(
        v.get("ok").and_then(|o| o.as_bool()),
        Some(true),
        "not ok: {answer}"
    );
    v.get("id")
        .and_then(|i| i.as_str())
        .unwrap_or_else(|| panic!("answer without id: {answer}"))
        .to_owned()
}

/// The `error` of an `{"ok":false,"error":"..."}` answer; panics on anything else.
pub fn answer_error(answer: &str) -> String {
    use simd_json::prelude::*;
    let mut bytes = answer.as_bytes().to_vec();
    let v = simd_json::to_owned_value(&mut bytes)
        .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {answer:?}"));
    assert_eq!(
        v.get("ok").and_then(|o| o.as_bool()),
        Some(false),
        "expected an error: {answer}"
    );
    v.get("error")
        .and_then(|i| i.as_str())
        .unwrap_or_else(|| panic!("error answer without error: {answer}"))
        .to_owned()
}

/// A publish-socket command line for `{"topic":T,"data":{"n":N}}`.
pub fn line_n(topic: &str, n: u64) -> String {
    format!("{{\"topic\":\"{topic}\",\"data\":{{\"n\":{n}}}}}")
}

/// How a stream read to its end ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    Eof,
    TimedOut,
    Error(ErrorKind),
}

// ---- WebSocket -----------------------------------------------------------------

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

// ---- processes, descriptors, sockets --------------------------------------------

/// Raises this process's open-file soft limit to its hard limit (children
/// inherit it); returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

/// `VmRSS` of a process, in bytes (0 once it is gone).
pub fn proc_rss_bytes(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// User plus system CPU time of a process (fields 14 and 15 of /proc/PID/stat).
pub fn proc_cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: count fields after its closing paren.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state), so utime (14) is index 11.
    let ticks: u64 = fields
        .get(11..13)
        .map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Connects with `SO_RCVBUF` set before `connect`, so the window the peer sees
/// stays small (the kernel doubles the value and enforces a minimum).
pub fn connect_with_rcvbuf(addr: SocketAddr, bytes: i32) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only: {addr}")
    };
    // SAFETY: plain socket calls on a descriptor created here; `sin` and `bytes`
    // are valid, correctly sized values that live across the calls; on success
    // the descriptor is handed to a TcpStream that owns it from then on.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "SO_RCVBUF");
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            panic!("connect {addr}: {e}");
        }
        TcpStream::from_raw_fd(fd)
    }
}

/// Runs heavy tests of one test binary one at a time (they measure timings and
/// memory on a shared machine); a test that panicked does not block the others.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- Redis -------------------------------------------------------------------

/// A private `redis-server` (no persistence) on a free port, killed on drop.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
}

/// How long `redis-server` gets to answer `PING`.
const REDIS_START_TIMEOUT: Duration = Duration::from_secs(10);

impl Redis {
    pub fn start() -> Redis {
        let mut last = String::new();
        for _attempt in 0..5 {
            let mut r = Redis {
                child: None,
                port: free_port(),
                dir: TempDir::new(),
            };
            match r.spawn() {
                Ok(()) => return r,
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not start after 5 ports:\n{last}");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open redis log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log")))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("spawn redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + REDIS_START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!("redis-server exited ({status}):\n{}", self.log()));
            }
            if matches!(self.try_cmd(&["PING"]), Ok(Resp::Simple(ref s)) if s == "PONG") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "redis-server: no PONG within {REDIS_START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port (bounded retries while the port is released).
    pub fn start_again(&mut self) {
        let deadline = Instant::now() + REDIS_START_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => panic!("redis did not restart: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// One command over a fresh connection (raw RESP).
    pub fn try_cmd(&self, args: &[&str]) -> std::io::Result<Resp> {
        let stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        (&stream).write_all(&req)?;
        read_resp(&mut BufReader::new(stream))
    }

    pub fn cmd(&self, args: &[&str]) -> Resp {
        self.try_cmd(args)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    pub fn int(&self) -> i64 {
        match self {
            Resp::Int(n) => *n,
            other => panic!("not an integer reply: {other:?}"),
        }
    }
}

fn read_resp(r: &mut impl BufRead) -> std::io::Result<Resp> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            ErrorKind::UnexpectedEof,
            "redis closed",
        ));
    }
    let line = line.trim_end_matches("\r\n");
    let bad = || std::io::Error::new(ErrorKind::InvalidData, format!("bad RESP {line:?}"));
    let (kind, rest) = line.split_at(1.min(line.len()));
    let number = || rest.parse::<i64>().map_err(|_| bad());
    Ok(match kind {
        "+" => Resp::Simple(rest.to_owned()),
        "-" => Resp::Error(rest.to_owned()),
        ":" => Resp::Int(number()?),
        "$" => match number()? {
            n if n < 0 => Resp::Bulk(None),
            n => {
                let mut b = vec![0; n as usize + 2];
                r.read_exact(&mut b)?;
                b.truncate(n as usize);
                Resp::Bulk(Some(b))
            }
        },
        "*" => match number()? {
            n if n < 0 => Resp::Array(None),
            n => Resp::Array(Some(
                (0..n)
                    .map(|_| read_resp(r))
                    .collect::<std::io::Result<_>>()?,
            )),
        },
        _ => return Err(bad()),
    })
}

// ---- WebSocket -----------------------------------------------------------------

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
