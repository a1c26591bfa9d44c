//! `ringcast bench` against a real `ringcast serve`: every message delivered once,
//! over both publish paths, the idle mode's memory report, and a reconnect storm
//! in which every client resumes without loss.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use simd_json::prelude::*;

const BIN: &str = env!("CARGO_BIN_EXE_ringcast");

/// A server on a free port with its own publish socket; killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    socket: PathBuf,
    dir: PathBuf,
}

impl Server {
    fn start() -> Self {
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "rc-bench-{}-{}-{nanos}",
            std::process::id(),
            addr.port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let socket = dir.join("rc.sock");
        let child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                &addr.to_string(),
                "--cores",
                "2",
                "--publish-socket",
            ])
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ringcast serve starts");
        let server = Server {
            child,
            addr,
            socket,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(server.socket.exists() && TcpStream::connect(addr).is_ok()) {
            assert!(
                Instant::now() < deadline,
                "server did not start listening on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Runs `ringcast bench ARGS --json` and returns its JSON object.
    fn bench(&self, args: &[String]) -> simd_json::OwnedValue {
        let out = Command::new(BIN)
            .arg("bench")
            .args(args)
            .args(["--json", "--quiet"])
            .output()
            .expect("ringcast bench runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "bench failed: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let mut bytes = stdout.trim().as_bytes().to_vec();
        simd_json::to_owned_value(&mut bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
    }

    fn sse(&self) -> String {
        format!("http://{}/sse?topic={{topic}}", self.addr)
    }

    fn ws(&self) -> String {
        format!("ws://{}/ws?topic={{topic}}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn num(v: &simd_json::OwnedValue, key: &str) -> f64 {
    v.get(key)
        .and_then(|x| x.as_f64().or_else(|| x.as_u64().map(|n| n as f64)))
        .unwrap_or_else(|| panic!("`{key}` missing or not a number in {v}"))
}

fn assert_every_message_delivered_once(v: &simd_json::OwnedValue) {
    assert_eq!(num(v, "connected"), 100.0, "{v}");
    assert_eq!(num(v, "delivered"), 100.0 * 200.0, "{v}");
    assert_eq!(num(v, "lost"), 0.0, "{v}");
    assert_eq!(num(v, "dup"), 0.0, "{v}");
    assert_eq!(num(v, "publish_refused"), 0.0, "{v}");
    assert!(num(v, "latency_p99_us") > 0.0, "{v}");
}

fn fanout_args(s: &Server, publish: String) -> Vec<String> {
    vec![
        "--url".into(),
        s.sse(),
        "--url".into(),
        s.ws(),
        "--connections".into(),
        "100".into(),
        "--messages".into(),
        "200".into(),
        "--publish".into(),
        publish,
        "--drain".into(),
        "10s".into(),
        "--server-pid".into(),
        s.pid(),
    ]
}

#[test]
fn fifty_sse_and_fifty_ws_subscribers_get_every_message_published_over_the_socket() {
    let s = Server::start();
    let publish = format!("unix:{}", s.socket.display());
    let v = s.bench(&fanout_args(&s, publish));
    assert_every_message_delivered_once(&v);
    assert_eq!(v.get("transport").and_then(|t| t.as_str()), Some("mixed"));
    assert!(num(&v, "server_cpu_seconds") >= 0.0, "{v}");
}

#[test]
fn fifty_sse_and_fifty_ws_subscribers_get_every_message_published_over_http() {
    let s = Server::start();
    let publish = format!("http://{}/publish?topic={{topic}}", s.addr);
    let v = s.bench(&fanout_args(&s, publish));
    assert_every_message_delivered_once(&v);
}

#[test]
fn topics_split_the_messages_and_a_websocket_publisher_reaches_them_all() {
    let s = Server::start();
    let mut args = fanout_args(&s, format!("ws://{}/ws", s.addr));
    args.extend(["--topics", "4", "--rate", "2000"].map(String::from));
    let v = s.bench(&args);
    // 200 messages over 4 topics: each subscriber expects its topic's 50.
    assert_eq!(num(&v, "delivered"), 100.0 * 50.0, "{v}");
    assert_eq!((num(&v, "lost"), num(&v, "dup")), (0.0, 0.0), "{v}");
}

/// `MODE`, half SSE and half WS subscribers, `connections` of them, the server's pid,
/// then `extra`.
fn mode_args(s: &Server, mode: &str, connections: usize, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        mode.into(),
        "--url".into(),
        s.sse(),
        "--url".into(),
        s.ws(),
        "--connections".into(),
        connections.to_string(),
        "--server-pid".into(),
        s.pid(),
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn idle_mode_reports_the_connect_rate_and_a_positive_rss_per_connection() {
    let s = Server::start();
    let v = s.bench(&mode_args(&s, "idle", 200, &["--hold".into(), "1s".into()]));
    assert_eq!(num(&v, "connected"), 200.0, "{v}");
    assert!(num(&v, "connect_rate") > 0.0, "{v}");
    assert!(num(&v, "rss_per_conn_bytes") > 0.0, "{v}");
    // The second half's cost is measured too (it may be 0 when the allocator
    // had room; `num` fails on null, which means it was not measured).
    assert!(num(&v, "rss_marginal_per_conn_bytes").is_finite(), "{v}");
}

/// A small storm: 200 clients (100 SSE, 100 WS) drop at once, 500 messages go out,
/// all resume with their last id. The backlog (250 messages of about 110 bytes per
/// client, over two topics) stays far under --max-outbox-bytes and --history.
#[test]
fn two_hundred_sse_and_ws_clients_dropped_at_once_all_resume_without_loss() {
    let s = Server::start();
    let publish = format!("unix:{}", s.socket.display());
    let extra = ["--topics", "2", "--messages", "500", "--publish", &publish].map(String::from);
    let v = s.bench(&mode_args(&s, "storm", 200, &extra));
    assert_eq!(v.get("mode").and_then(|m| m.as_str()), Some("storm"), "{v}");
    assert_eq!(num(&v, "connected"), 200.0, "{v}");
    assert_eq!(num(&v, "dropped"), 200.0, "{v}");
    assert_eq!(num(&v, "resumed"), 200.0, "{v}");
    assert_eq!(num(&v, "caught_up"), 200.0, "{v}");
    assert!(num(&v, "catch_up_seconds") >= 0.0, "{v}");
    // Every client expected its topic's 2 warm-up messages and 250 storm messages.
    assert_eq!(num(&v, "delivered"), 200.0 * 252.0, "{v}");
    assert_eq!((num(&v, "lost"), num(&v, "dup")), (0.0, 0.0), "{v}");
    assert_eq!(num(&v, "out_of_order"), 0.0, "{v}");
    assert_eq!(num(&v, "gaps"), 0.0, "{v}");
    assert!(num(&v, "server_peak_rss_bytes") > 0.0, "{v}");
}

#[test]
fn a_server_that_is_not_there_fails_the_run_with_the_reason() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let out = Command::new(BIN)
        .args(["bench", "-q", "--publish"])
        .arg(format!("http://127.0.0.1:{port}/publish?topic={{topic}}"))
        .output()
        .expect("ringcast bench runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect"), "{err}");
}
