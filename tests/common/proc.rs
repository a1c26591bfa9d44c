//! The operating system around the tests: temporary directories, free ports,
//! descriptor limits, a process's memory and CPU time, and socket options
//! (`SO_RCVBUF` before connect, `SO_LINGER` 0 for a reset).

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Server;

/// A private temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    // No `Default`: a default value that creates a directory would surprise.
    #[allow(clippy::new_without_default)]
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

pub(super) fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Raises this process's open-file soft limit to its hard limit (children
/// inherit it); returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    ringcast::netio::raise_nofile_limit().map_or(0, |(_, now)| now)
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

/// A connection to `addr` from the local address `source` (another 127.0.0.x,
/// to stand for another client host).
pub fn connect_from(addr: SocketAddr, source: std::net::Ipv4Addr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only: {addr}")
    };
    let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let local = sin(source, 0);
    let remote = sin(*v4.ip(), v4.port());
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor created here, with address
    // values that live across the calls; on success the descriptor is handed to
    // a TcpStream that owns it from then on, on failure it is closed here.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0
            || libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0
        {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        Ok(TcpStream::from_raw_fd(fd))
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

impl Server {
    /// Resident memory of the server process (`VmRSS` of /proc/PID/status).
    pub fn rss(&self) -> u64 {
        proc_rss_bytes(self.pid())
    }

    /// CPU time (user + system) the server process used so far.
    pub fn cpu_time(&self) -> Duration {
        proc_cpu_time(self.pid())
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
}
