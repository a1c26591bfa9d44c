//! WebSocket conformance in CI: the builtin suite of `scripts/conformance/conformance.py`
//! (our Python 3 re-implementation of Autobahn|Testsuite cases from families 1-7, 9,
//! 10, and 12-13 with permessage-deflate, plus deflate negotiation and violation cases
//! of our own; about 15 s) against a real `ringcast serve --echo`, diffed against the
//! committed `scripts/conformance/expected.json`. The full Autobahn run is
//! `scripts/conformance/run.sh autobahn` (it needs Python 2.7).

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the server however the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

fn start_echo_server(port: u16, dir: &Path) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args([
            "serve",
            "--echo",
            "--max-message-bytes",
            "16MiB",
            "--cores",
            "1",
        ])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--publish-socket")
        .arg(dir.join("ringcast.sock"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ringcast serve --echo");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "server not listening on {port} after 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

#[test]
fn echo_endpoint_passes_the_builtin_conformance_suite_as_expected() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("ringcast-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = free_port();
    let _server = start_echo_server(port, &dir);

    let out = Command::new("python3")
        .arg(root.join("scripts/conformance/conformance.py"))
        .args(["--suite", "builtin", "--url"])
        .arg(format!("ws://127.0.0.1:{port}/echo"))
        .output()
        .expect("python3 runs (CI has it)");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "conformance regressions:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("FAILED 0; regressions 0"),
        "unexpected summary:\n{stdout}"
    );
}
