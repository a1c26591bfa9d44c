//! The kernel's floor for a heartbeat (issue #19): what one small write to an
//! otherwise silent loopback TCP connection costs the sender's CPU, with no
//! server around it. ringcast's own cost per heartbeat
//! (`scripts/compare.sh` scenario `heartbeat-sse`) is measured against this.
//!
//!     heartbeat_floor [--clients N] [--seconds S] [--runs K]
//!
//! or `HEARTBEAT_FLOOR_CLIENTS` (15,000), `HEARTBEAT_FLOOR_SECONDS` (5),
//! `HEARTBEAT_FLOOR_RUNS` (3). `scripts/heartbeat-floor.sh` builds and runs it.
//!
//! The receivers live in a child process (this executable again), pinned to the
//! last CPU, which connects N sockets and reads whatever arrives through epoll,
//! as N idle clients would. The sender, on CPU 0, writes the SSE heartbeat
//! (`:\n\n`, 3 bytes) to every socket once a second, in 10 ms ticks of N/100
//! sockets (the way the timer wheel spreads them), and sleeps in between, so
//! every send finds a cold socket and a sleeping receiver. Two variants, run in
//! turn: one `send` system call per socket (as ringcast writes), and one
//! io_uring submission per tick with a `SEND` per socket. The figure is the
//! sender thread's CPU time (`RUSAGE_THREAD`, user + system) per send. On
//! loopback the receiver's TCP input runs inside the sender's system call, so
//! it counts here, as it does in the server's figure.
#![deny(clippy::undocumented_unsafe_blocks)]

use io_uring::{opcode, types, IoUring};
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The SSE heartbeat, as `proto::sse::HEARTBEAT`.
const HEARTBEAT: &[u8] = b":\n\n";
/// As `netio::writev`.
const SEND_FLAGS: i32 = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
const TICK: Duration = Duration::from_millis(10);
const TICKS_PER_SECOND: usize = 100;
/// Receivers connect from 127.0.0.1 ..= 127.0.0.SOURCE_IPS, so that repeated
/// runs do not run out of ephemeral ports (closed sockets sit in TIME_WAIT).
const SOURCE_IPS: u8 = 8;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn flag(args: &[String], name: &str) -> Option<usize> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--receiver") {
        let addr: SocketAddrV4 = args[i + 1].parse().expect("receiver address");
        let n: usize = args[i + 2].parse().expect("receiver count");
        return receive(addr, n);
    }
    let clients = flag(&args, "--clients").unwrap_or(env_or("HEARTBEAT_FLOOR_CLIENTS", 15_000));
    let seconds = flag(&args, "--seconds").unwrap_or(env_or("HEARTBEAT_FLOOR_SECONDS", 5));
    let runs = flag(&args, "--runs").unwrap_or(env_or("HEARTBEAT_FLOOR_RUNS", 3));
    raise_nofile_limit();
    pin_to(0);

    let listener = TcpListener::bind("127.0.0.1:0")?;
    // Inherited by every accepted socket, as ringcast's listener does.
    set_option(listener.as_raw_fd(), libc::TCP_NODELAY, 1)?;
    let addr = match listener.local_addr()? {
        std::net::SocketAddr::V4(a) => a,
        _ => unreachable!("bound to 127.0.0.1"),
    };
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--receiver", &addr.to_string(), &clients.to_string()])
        .stdin(Stdio::piped())
        .spawn()?;
    let mut senders = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (s, _) = listener.accept()?;
        s.set_nonblocking(true)?;
        senders.push(s);
    }
    let fds: Vec<RawFd> = senders.iter().map(|s| s.as_raw_fd()).collect();
    println!(
        "heartbeat floor: {clients} idle loopback connections, one {}-byte write to each per second \
         in 10 ms ticks, {seconds} s per run, {runs} run(s) per variant; receivers in a child \
         process on CPU {}",
        HEARTBEAT.len(),
        last_cpu()
    );
    let mut ring = IoUring::new(4096)?;
    let mut per_send: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for run in 0..runs {
        for v in 0..2 {
            // Alternate which variant goes first, so a drift of the machine's
            // load falls on both.
            let variant = (v + run) % 2;
            let ns = beat(&fds, seconds, |batch| match variant {
                0 => send_each(batch),
                _ => send_ring(&mut ring, batch),
            })?;
            per_send[variant].push(ns);
        }
    }
    let names = [
        "send (one system call each)",
        "ring SEND (one submit per tick)",
    ];
    let base = median(&mut per_send[0].clone());
    println!("| variant | CPU per heartbeat (median) | runs | / send |");
    println!("|---|---|---|---|");
    for (name, ns) in names.iter().zip(per_send.iter_mut()) {
        let m = median(ns);
        println!(
            "| {name} | {:.2} µs | {} | {:.2} |",
            m / 1000.0,
            ns.iter()
                .map(|x| format!("{:.2}", x / 1000.0))
                .collect::<Vec<_>>()
                .join(" "),
            m / base
        );
    }
    stop(&mut child, senders)
}

/// Runs the heartbeat schedule for `seconds`: each tick hands the next N/100
/// sockets to `send`. Returns the CPU nanoseconds of this thread per send.
fn beat(
    fds: &[RawFd],
    seconds: usize,
    mut send: impl FnMut(&[RawFd]) -> io::Result<()>,
) -> io::Result<f64> {
    let per_tick = fds.len().div_ceil(TICKS_PER_SECOND);
    let ticks = seconds * TICKS_PER_SECOND;
    let mut at = 0;
    let mut sent = 0usize;
    let cpu0 = thread_cpu_ns();
    let start = Instant::now();
    for tick in 0..ticks {
        let end = (at + per_tick).min(fds.len());
        send(&fds[at..end])?;
        sent += end - at;
        at = if end == fds.len() { 0 } else { end };
        let next = start + TICK * (tick as u32 + 1);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok((thread_cpu_ns() - cpu0) as f64 / sent as f64)
}

fn send_each(fds: &[RawFd]) -> io::Result<()> {
    for &fd in fds {
        // SAFETY: HEARTBEAT is a valid buffer of its length for the whole call.
        let n = unsafe { libc::send(fd, HEARTBEAT.as_ptr().cast(), HEARTBEAT.len(), SEND_FLAGS) };
        if n != HEARTBEAT.len() as isize {
            return Err(io::Error::other(format!(
                "send to fd {fd}: {n} ({})",
                io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

fn send_ring(ring: &mut IoUring, fds: &[RawFd]) -> io::Result<()> {
    for chunk in fds.chunks(ring.params().sq_entries() as usize) {
        for &fd in chunk {
            let sqe = opcode::Send::new(types::Fd(fd), HEARTBEAT.as_ptr(), HEARTBEAT.len() as u32)
                .flags(SEND_FLAGS)
                .build()
                .user_data(fd as u64);
            // SAFETY: the SQE points at HEARTBEAT, which is 'static, and the
            // queue has room: a chunk is at most its size and it is empty here.
            unsafe { ring.submission().push(&sqe) }
                .map_err(|_| io::Error::other("submission queue full"))?;
        }
        ring.submit_and_wait(chunk.len())?;
        for cqe in ring.completion() {
            if cqe.result() != HEARTBEAT.len() as i32 {
                return Err(io::Error::other(format!(
                    "ring send to fd {}: {}",
                    cqe.user_data(),
                    cqe.result()
                )));
            }
        }
    }
    Ok(())
}

/// The child: connects `n` sockets to `addr` and reads them until its
/// standard input closes.
fn receive(addr: SocketAddrV4, n: usize) -> io::Result<()> {
    raise_nofile_limit();
    pin_to(last_cpu());
    let mut socks = Vec::with_capacity(n);
    for i in 0..n {
        let source = Ipv4Addr::new(127, 0, 0, 1 + (i % SOURCE_IPS as usize) as u8);
        socks.push(connect_from(source, addr)?);
    }
    // SAFETY: epoll_create1 takes a flag and returns a new descriptor or -1.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ep` is a fresh descriptor this function owns from here on.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    for fd in socks.iter().map(|s| s.as_raw_fd()).chain([0]) {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: `ev` is valid for reads for the whole call; both fds are open.
        if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: `events` is valid for writes of its length.
        let ready = unsafe {
            libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, -1)
        };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in &events[..ready as usize] {
            let fd = ev.u64 as RawFd;
            if fd == 0 {
                let mut stdin = io::stdin();
                if stdin.read(&mut buf)? == 0 {
                    return Ok(());
                }
                continue;
            }
            // SAFETY: `buf` is valid for writes of its length.
            unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        }
    }
}

fn connect_from(source: Ipv4Addr, to: SocketAddrV4) -> io::Result<OwnedFd> {
    // SAFETY: plain integer arguments; returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor this function owns from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let sockaddr = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let from = sockaddr(SocketAddrV4::new(source, 0));
    let dest = sockaddr(to);
    // SAFETY: both addresses are valid sockaddr_in values of `len` bytes.
    unsafe {
        if libc::bind(
            fd.as_raw_fd(),
            (&from as *const libc::sockaddr_in).cast(),
            len,
        ) != 0
            || libc::connect(
                fd.as_raw_fd(),
                (&dest as *const libc::sockaddr_in).cast(),
                len,
            ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(fd)
}

fn stop(child: &mut Child, senders: Vec<std::net::TcpStream>) -> io::Result<()> {
    drop(child.stdin.take());
    child.wait()?;
    drop(senders);
    Ok(())
}

fn set_option(fd: RawFd, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` is valid for reads of its size for the whole call.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn thread_cpu_ns() -> u64 {
    // SAFETY: zeroed rusage is valid and getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a live, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    assert_eq!(rc, 0, "getrusage");
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (us(ru.ru_utime) + us(ru.ru_stime)) * 1000
}

fn raise_nofile_limit() {
    // SAFETY: zeroed rlimit is valid; getrlimit/setrlimit read or write only it.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The machine's last CPU (not the affinity mask's: the child inherits the
/// parent's pinning to CPU 0).
fn last_cpu() -> usize {
    // SAFETY: sysconf takes a plain integer.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    (n.max(1) - 1) as usize
}

/// Pins the calling thread to `cpu` (a no-op where that fails).
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and
    // sched_setaffinity only touch `set`, which outlives the calls.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
