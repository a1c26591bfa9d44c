//! The server under test: a real `ringcast serve` process on a free port, its
//! start, restart, signals and stderr. What it reports (`/metrics`), how to
//! publish into it and what it costs (/proc) are `impl Server` blocks in
//! `metrics`, `publish` and `proc`.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, try_request, wait_until, TempDir};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_ringcast");

/// The binary to run: `RINGCAST_TEST_BIN` when set (to run this suite against
/// another build), else the one cargo built with the tests.
pub fn bin() -> String {
    std::env::var("RINGCAST_TEST_BIN").unwrap_or_else(|_| BIN.to_owned())
}

/// How long a server gets to answer `/healthz` after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `ringcast serve`, killed (SIGKILL) on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub socket: PathBuf,
    stderr_path: PathBuf,
    /// Holds the publish socket and the stderr log; owned only to be removed
    /// with the server.
    _dir: TempDir,
    /// The extra arguments it was started with (for [`Server::restart`]).
    args: Vec<String>,
    /// The shell prefix it was started through, if any.
    shell_prefix: Option<String>,
    /// The TLS client its readiness is probed with, when it serves https.
    probe: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Server {
    /// Starts `ringcast serve --listen 127.0.0.1:<free> --publish-socket <tmp>/rc.sock
    /// --cores 2 <args>` (`--cores` in `args` replaces the 2) and waits until `/healthz` answers 200.
    pub fn start(args: &[&str]) -> Server {
        Self::start_probing(args, None)
    }

    /// Like [`Server::start`]; with `probe`, `/healthz` is asked over TLS
    /// with that client.
    pub fn start_probing(
        args: &[&str],
        probe: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Server {
        let mut last_err = String::new();
        for _attempt in 0..5 {
            match Self::try_start_cmd(args, None, probe.clone()) {
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
            match Self::try_start_cmd(args, Some(prefix), None) {
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
    fn try_start_cmd(
        args: &[&str],
        shell_prefix: Option<&str>,
        probe: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Result<Server, (String, bool)> {
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
            _dir: dir,
            args: args.iter().map(|a| a.to_string()).collect(),
            shell_prefix: shell_prefix.map(str::to_owned),
            probe,
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
            let healthz = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
            let answer = match &server.probe {
                None => try_request(addr, healthz),
                Some(cfg) => super::https_request(addr, cfg, healthz),
            };
            if let Ok(r) = answer {
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
