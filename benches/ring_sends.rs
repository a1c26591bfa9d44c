//! Sends through the ring (issue #14, item 3): what one flush costs when it
//! writes to every client with one system call per socket, as the server does
//! today (`netio::writev`: `sendmsg` with `MSG_DONTWAIT | MSG_NOSIGNAL`), against
//! the same writes as one batch of io_uring SQEs on registered files, submitted
//! with one `io_uring_enter` that also waits for the CQEs.
//!
//!     ring_sends [--clients N] [--rounds R] [--runs K] [--cases 1x64,16x64,1x1024]
//!                [--sq ENTRIES]
//!
//! or the same through `RING_SENDS_CLIENTS`, `RING_SENDS_ROUNDS`, `RING_SENDS_RUNS`,
//! `RING_SENDS_CASES`, `RING_SENDS_SQ`. A case `MxS` is M messages of S bytes per
//! write, as M iovecs over one shared payload (the way outboxes point into shared
//! frames). `scripts/ring-sends.sh` builds and runs it pinned to one CPU.
//!
//! N loopback TCP pairs (TCP_NODELAY, non-blocking). A flush writes once to each
//! sender; only the flush is timed. Before each flush the receivers are read
//! back to empty, untimed and checked to the byte, so a socket never fills and a
//! short write would be caught. The variants run round by round in turn (the
//! order rotates), so the load of a shared machine falls on all of them alike;
//! the ratio to the syscall `sendmsg` is taken per round, then the median.
//! CPU time is `getrusage(RUSAGE_SELF)` (user + sys, all threads, so io-wq
//! workers would count) around each flush, summed.
//!
//! At the end two probes: whether a batch of `MSG_DONTWAIT` sends completes
//! inline, inside the submitting `io_uring_enter` (so a flush never has to wait
//! or leave an op in flight), and what each kind of op does on a full socket.
#![deny(clippy::undocumented_unsafe_blocks)]

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// Flags of every send, syscall or ring, as `netio::writev`. In a ring op,
/// `MSG_DONTWAIT` turns a full socket into a `-EAGAIN` CQE instead of an op
/// parked in the kernel (see the probe at the end); it costs nothing when the
/// socket has room.
const SEND_FLAGS: i32 = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;

/// Longest wait for bytes a receiver should already have (loopback delivers
/// within the send, unless softirqs were deferred to ksoftirqd).
const DRAIN_WAIT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy)]
struct Case {
    messages: usize,
    size: usize,
}

struct Config {
    clients: usize,
    rounds: usize,
    runs: usize,
    cases: Vec<Case>,
    sq_entries: Option<u32>,
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    SendMsg,
    Writev,
    /// One buffer only: skipped for cases of several messages per write.
    Send,
}

/// The ring setups tried; each is built, and the kernel may refuse it.
#[derive(Clone, Copy)]
enum Setup {
    Plain,
    /// `COOP_TASKRUN | TASKRUN_FLAG`: no IPI to run task work for this ring.
    Coop,
    /// `SINGLE_ISSUER | DEFER_TASKRUN`: task work only when the issuer waits.
    Defer,
}

/// In discriminant order: a setup's ring is `rings[setup as usize]`.
const SETUPS: [Setup; 3] = [Setup::Plain, Setup::Coop, Setup::Defer];

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Plain => "no flags",
            Setup::Coop => "COOP_TASKRUN|TASKRUN_FLAG",
            Setup::Defer => "SINGLE_ISSUER|DEFER_TASKRUN",
        }
    }
}

#[derive(Clone, Copy)]
enum Method {
    Syscall(Op),
    Ring {
        setup: Setup,
        op: Op,
        /// Registered file (`Fixed`), else a plain fd looked up per op.
        fixed: bool,
        /// `IOSQE_CQE_SKIP_SUCCESS`: no CQE unless the op fails. Unusable in
        /// the server (a short write is a success, so it would go unseen);
        /// here as the floor of the CQE cost.
        skip_success: bool,
    },
}

struct Variant {
    name: &'static str,
    method: Method,
}

impl Variant {
    fn op(&self) -> Op {
        match self.method {
            Method::Syscall(op) | Method::Ring { op, .. } => op,
        }
    }
}

fn variants() -> Vec<Variant> {
    let ring = |setup, op, fixed, skip_success| Method::Ring {
        setup,
        op,
        fixed,
        skip_success,
    };
    vec![
        // The first is the baseline of every ratio: what the server does today.
        Variant {
            name: "sendmsg, 1 syscall per socket",
            method: Method::Syscall(Op::SendMsg),
        },
        Variant {
            name: "writev, 1 syscall per socket",
            method: Method::Syscall(Op::Writev),
        },
        Variant {
            name: "send, 1 syscall per socket",
            method: Method::Syscall(Op::Send),
        },
        Variant {
            name: "ring SENDMSG fixed",
            method: ring(Setup::Plain, Op::SendMsg, true, false),
        },
        Variant {
            name: "ring SENDMSG plain fd",
            method: ring(Setup::Plain, Op::SendMsg, false, false),
        },
        Variant {
            name: "ring WRITEV fixed",
            method: ring(Setup::Plain, Op::Writev, true, false),
        },
        Variant {
            name: "ring SEND fixed",
            method: ring(Setup::Plain, Op::Send, true, false),
        },
        Variant {
            name: "ring SENDMSG fixed, coop",
            method: ring(Setup::Coop, Op::SendMsg, true, false),
        },
        Variant {
            name: "ring SENDMSG fixed, defer",
            method: ring(Setup::Defer, Op::SendMsg, true, false),
        },
        Variant {
            name: "ring SEND fixed, defer",
            method: ring(Setup::Defer, Op::Send, true, false),
        },
        Variant {
            name: "ring SENDMSG fixed, defer, skip CQE",
            method: ring(Setup::Defer, Op::SendMsg, true, true),
        },
    ]
}

/// The bytes of one case's writes: per sender, `messages` iovecs over one
/// shared payload, and a `msghdr` over them.
///
/// INVARIANT: everything here is leaked (`'static`) and never written after
/// `Outboxes::new`, so an op the kernel still holds, even one left in flight
/// when a ring is dropped, can only read live, unchanged memory.
struct Outboxes {
    iovs: &'static [libc::iovec],
    msgs: &'static [libc::msghdr],
    per_write: usize,
    bytes: usize,
}

impl Outboxes {
    fn new(case: Case, clients: usize) -> Outboxes {
        let payload: &'static [u8] = Box::leak(
            (0..case.messages * case.size)
                .map(|i| b'a' + (i % 26) as u8)
                .collect::<Vec<u8>>()
                .into_boxed_slice(),
        );
        let iovs: &'static [libc::iovec] = Box::leak(
            (0..clients)
                .flat_map(|_| {
                    payload.chunks(case.size).map(|m| libc::iovec {
                        iov_base: m.as_ptr() as *mut libc::c_void,
                        iov_len: m.len(),
                    })
                })
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        );
        let msgs: &'static [libc::msghdr] = Box::leak(
            iovs.chunks(case.messages)
                .map(|iov| {
                    // SAFETY: msghdr is a C struct of integers and pointers, for
                    // which all zeroes (no name, no control) is a valid value.
                    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
                    h.msg_iov = iov.as_ptr() as *mut libc::iovec;
                    h.msg_iovlen = iov.len() as _;
                    h
                })
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        );
        Outboxes {
            iovs,
            msgs,
            per_write: case.messages,
            bytes: case.messages * case.size,
        }
    }

    fn iov(&self, i: usize) -> &'static [libc::iovec] {
        &self.iovs[i * self.per_write..(i + 1) * self.per_write]
    }
}

fn check_sent(res: isize, want: usize, what: &str, i: usize) {
    if res < 0 {
        panic!(
            "{what} to client {i}: {}",
            io::Error::from_raw_os_error(-res as i32)
        );
    }
    assert_eq!(
        res as usize, want,
        "{what} to client {i} wrote {res} of {want} bytes: short write"
    );
}

fn flush_syscalls(op: Op, fds: &[RawFd], out: &Outboxes) {
    for (i, &fd) in fds.iter().enumerate() {
        let iov = out.iov(i);
        // SAFETY: fd is an open socket; the msghdr, iovecs and payload are
        // 'static (Outboxes INVARIANT) and the call returns before we go on.
        let res = unsafe {
            match op {
                Op::SendMsg => libc::sendmsg(fd, &out.msgs[i], SEND_FLAGS),
                Op::Writev => libc::writev(fd, iov.as_ptr(), iov.len() as i32),
                Op::Send => libc::send(fd, iov[0].iov_base, iov[0].iov_len, SEND_FLAGS),
            }
        };
        let res = if res < 0 {
            -(io::Error::last_os_error().raw_os_error().unwrap_or(0) as isize)
        } else {
            res
        };
        check_sent(res, out.bytes, "syscall send", i);
    }
}

/// One SQE for client `i`.
fn entry(op: Op, fixed: bool, i: usize, fd: RawFd, out: &Outboxes) -> squeue::Entry {
    let iov = out.iov(i);
    let msg: *const libc::msghdr = &out.msgs[i];
    let (buf, len) = (iov[0].iov_base as *const u8, iov[0].iov_len as u32);
    macro_rules! build {
        ($target:expr) => {
            match op {
                Op::SendMsg => opcode::SendMsg::new($target, msg)
                    .flags(SEND_FLAGS as u32)
                    .build(),
                Op::Writev => opcode::Writev::new($target, iov.as_ptr(), iov.len() as u32).build(),
                Op::Send => opcode::Send::new($target, buf, len)
                    .flags(SEND_FLAGS)
                    .build(),
            }
        };
    }
    let e = if fixed {
        build!(types::Fixed(i as u32))
    } else {
        build!(types::Fd(fd))
    };
    e.user_data(i as u64)
}

/// Pushes one SQE per client, in batches of the SQ's size, each batch with one
/// `io_uring_enter` that submits it and waits for its CQEs, which are checked.
fn flush_ring(
    ring: &mut IoUring,
    op: Op,
    fixed: bool,
    skip_success: bool,
    fds: &[RawFd],
    out: &Outboxes,
) {
    let mut next = 0;
    while next < fds.len() {
        let first = next;
        {
            let mut sq = ring.submission();
            while next < fds.len() && !sq.is_full() {
                let mut e = entry(op, fixed, next, fds[next], out);
                if skip_success {
                    e = e.flags(squeue::Flags::SKIP_SUCCESS);
                }
                // SAFETY: the SQE points at a msghdr, iovecs and payload that are
                // 'static and never written (Outboxes INVARIANT), so they outlive
                // the op however late it completes; the fixed index `next` is in
                // the table registered with these fds, in the same order.
                unsafe { sq.push(&e) }.expect("the SQ was checked not full");
                next += 1;
            }
        }
        let pushed = next - first;
        let want = if skip_success { 0 } else { pushed };
        let mut reaped = 0;
        // A wait can end early (a signal); bound the retries.
        for _ in 0..1000 {
            ring.submit_and_wait(want - reaped).expect("io_uring_enter");
            for cqe in ring.completion() {
                let i = cqe.user_data() as usize;
                check_sent(cqe.result() as isize, out.bytes, "ring send", i);
                reaped += 1;
            }
            if reaped >= want {
                break;
            }
        }
        assert_eq!(reaped, want, "CQEs reaped for a batch of {pushed}");
    }
}

/// Submits one SENDMSG per client without waiting and counts the CQEs already
/// there when `io_uring_enter` returns: the sends that completed inline, so a
/// flush built this way never has to wait or keep an op across turns. Then
/// reaps the rest, if any.
fn inline_completions(ring: &mut IoUring, fds: &[RawFd], out: &Outboxes) -> usize {
    let n = fds.len().min(ring.params().sq_entries() as usize);
    {
        let mut sq = ring.submission();
        for (i, &fd) in fds.iter().enumerate().take(n) {
            // SAFETY: as in `flush_ring`: the op's buffers are 'static and
            // never written (Outboxes INVARIANT); index i is registered.
            unsafe { sq.push(&entry(Op::SendMsg, true, i, fd, out)) }.expect("n <= SQ size");
        }
    }
    let reap = |ring: &mut IoUring| {
        ring.completion()
            .map(|c| {
                check_sent(
                    c.result() as isize,
                    out.bytes,
                    "ring send",
                    c.user_data() as usize,
                )
            })
            .count()
    };
    ring.submit().expect("io_uring_enter");
    let mut done = reap(ring);
    let inline = done;
    for _ in 0..1000 {
        if done >= n {
            break;
        }
        ring.submit_and_wait(n - done).expect("io_uring_enter");
        done += reap(ring);
    }
    assert_eq!(done, n, "CQEs for {n} sends");
    // Clients beyond the SQ size get the same bytes by syscall, so that every
    // receiver has one write to drain.
    if n < fds.len() {
        flush_syscalls(Op::SendMsg, &fds[n..], out);
    }
    inline
}

/// Reads every receiver until it has the `want` bytes of the last flush, then
/// checks that nothing more came.
fn drain(receivers: &mut [TcpStream], want: usize, buf: &mut [u8]) {
    for (i, r) in receivers.iter_mut().enumerate() {
        let mut got = 0;
        let deadline = Instant::now() + DRAIN_WAIT;
        while got < want {
            match r.read(buf) {
                Ok(0) => panic!("receiver {i}: peer closed"),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "receiver {i}: {got} of {want} bytes after {DRAIN_WAIT:?}"
                    );
                    std::thread::yield_now();
                }
                Err(e) => panic!("receiver {i}: {e}"),
            }
        }
        assert_eq!(got, want, "receiver {i} got more than one flush");
    }
}

fn cpu_ns() -> u64 {
    // SAFETY: zeroed rusage is valid and getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a live, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0, "getrusage");
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (us(ru.ru_utime) + us(ru.ru_stime)) * 1000
}

fn pairs(n: usize) -> io::Result<(Vec<TcpStream>, Vec<TcpStream>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (mut senders, mut receivers) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let s = TcpStream::connect(addr)?;
        let (r, _) = listener.accept()?;
        for t in [&s, &r] {
            t.set_nodelay(true)?;
            t.set_nonblocking(true)?;
        }
        senders.push(s);
        receivers.push(r);
    }
    Ok((senders, receivers))
}

fn build_ring(setup: Setup, entries: u32) -> io::Result<IoUring> {
    let mut b = IoUring::builder();
    match setup {
        Setup::Plain => {}
        Setup::Coop => {
            b.setup_coop_taskrun().setup_taskrun_flag();
        }
        Setup::Defer => {
            b.setup_single_issuer().setup_defer_taskrun();
        }
    }
    b.build(entries)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[derive(Default)]
struct Stats {
    ns_per_send: Vec<f64>,
    ratio: Vec<f64>,
    run_medians: Vec<f64>,
    cpu_ns: u64,
    sends: u64,
}

fn parse_case(s: &str) -> Option<Case> {
    let (m, b) = s.split_once('x')?;
    let case = Case {
        messages: m.parse().ok()?,
        size: b.parse().ok()?,
    };
    (case.messages >= 1 && case.messages <= 1024 && case.size >= 1).then_some(case)
}

fn config() -> Config {
    let env = |k: &str| std::env::var(k).ok();
    let mut clients = env("RING_SENDS_CLIENTS");
    let mut rounds = env("RING_SENDS_ROUNDS");
    let mut runs = env("RING_SENDS_RUNS");
    let mut cases = env("RING_SENDS_CASES");
    let mut sq = env("RING_SENDS_SQ");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let slot = match a.as_str() {
            "--clients" => &mut clients,
            "--rounds" => &mut rounds,
            "--runs" => &mut runs,
            "--cases" => &mut cases,
            "--sq" => &mut sq,
            "--bench" => continue, // cargo bench passes it
            _ => {
                eprintln!("usage: ring_sends [--clients N] [--rounds R] [--runs K] [--cases 1x64,16x64,1x1024] [--sq ENTRIES]");
                std::process::exit(2);
            }
        };
        *slot = args.next();
    }
    let num = |v: Option<String>, default: usize, what: &str| match v {
        None => default,
        Some(s) => s.parse().ok().filter(|&n| n > 0).unwrap_or_else(|| {
            eprintln!("{what}: want a positive number, got {s:?}");
            std::process::exit(2)
        }),
    };
    let cases = cases.as_deref().unwrap_or("1x64,16x64,1x1024");
    let cases = cases
        .split(',')
        .map(|c| {
            parse_case(c).unwrap_or_else(|| {
                eprintln!("case {c:?}: want MESSAGESxBYTES, e.g. 16x64");
                std::process::exit(2)
            })
        })
        .collect();
    Config {
        clients: num(clients, 1000, "clients"),
        rounds: num(rounds, 20, "rounds"),
        runs: num(runs, 5, "runs"),
        cases,
        sq_entries: sq.map(|s| num(Some(s), 0, "sq") as u32),
    }
}

/// Median over 11 batches of 100,000 `getppid` calls, in ns per call.
fn null_syscall_ns() -> f64 {
    let mut per_call: Vec<f64> = (0..11)
        .map(|_| {
            let t0 = Instant::now();
            for _ in 0..100_000 {
                // SAFETY: getppid has no arguments and cannot fail.
                std::hint::black_box(unsafe { libc::getppid() });
            }
            t0.elapsed().as_nanos() as f64 / 100_000.0
        })
        .collect();
    median(&mut per_call)
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".into(), |s| s.trim().to_owned())
}

fn io_wq_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|c| c.starts_with("iou-wrk") || c.starts_with("iou-sqp"))
                .count()
        })
        .unwrap_or(0)
}

fn main() {
    let cfg = config();
    let n = cfg.clients;
    let (senders, mut receivers) = pairs(n).unwrap_or_else(|e| {
        eprintln!(
            "opening {n} loopback pairs: {e} (raise `ulimit -n` above {})",
            2 * n + 64
        );
        std::process::exit(1)
    });
    let fds: Vec<RawFd> = senders.iter().map(AsRawFd::as_raw_fd).collect();
    let entries = cfg
        .sq_entries
        .unwrap_or_else(|| (n.next_power_of_two() as u32).min(4096));

    println!(
        "kernel {}, {n} clients, SQ {entries} entries, {} runs x {} rounds per variant",
        kernel(),
        cfg.runs,
        cfg.rounds
    );
    println!(
        "a null system call (getppid) takes {:.0} ns here: the most a ring op can save",
        null_syscall_ns()
    );
    let mut rings: Vec<Option<IoUring>> = Vec::new();
    for setup in SETUPS {
        let ring =
            build_ring(setup, entries).and_then(|r| r.submitter().register_files(&fds).map(|_| r));
        match &ring {
            Ok(r) => println!(
                "ring setup {:<28} accepted (SQ {}, CQ {})",
                setup.name(),
                r.params().sq_entries(),
                r.params().cq_entries()
            ),
            Err(e) => println!("ring setup {:<28} REFUSED: {e}", setup.name()),
        }
        rings.push(ring.ok());
    }

    let all = variants();
    let mut buf = vec![0u8; 1 << 16];
    for &case in &cfg.cases {
        let out = Outboxes::new(case, n);
        let vs: Vec<&Variant> = all
            .iter()
            .filter(|v| v.op() != Op::Send || case.messages == 1)
            .filter(|v| match v.method {
                Method::Ring { setup, .. } => rings[setup as usize].is_some(),
                Method::Syscall(_) => true,
            })
            .collect();
        let mut stats: Vec<Stats> = vs.iter().map(|_| Stats::default()).collect();
        let mut flush = |v: &Variant,
                         rings: &mut Vec<Option<IoUring>>,
                         receivers: &mut [TcpStream]|
         -> (f64, u64) {
            drain(receivers, 0, &mut buf);
            let cpu0 = cpu_ns();
            let t0 = Instant::now();
            match v.method {
                Method::Syscall(op) => flush_syscalls(op, &fds, &out),
                Method::Ring {
                    setup,
                    op,
                    fixed,
                    skip_success,
                } => {
                    let ring = rings[setup as usize].as_mut().expect("filtered above");
                    flush_ring(ring, op, fixed, skip_success, &fds, &out)
                }
            }
            let wall = t0.elapsed().as_nanos() as f64;
            let cpu = cpu_ns() - cpu0;
            drain(receivers, out.bytes, &mut buf);
            (wall / n as f64, cpu)
        };
        // Warm-up: every variant twice, untimed.
        for _ in 0..2 {
            for v in &vs {
                flush(v, &mut rings, &mut receivers);
            }
        }
        for _ in 0..cfg.runs {
            let mut this_run: Vec<Vec<f64>> = vs.iter().map(|_| Vec::new()).collect();
            for round in 0..cfg.rounds {
                let mut ns = vec![0.0; vs.len()];
                for k in 0..vs.len() {
                    let j = (k + round) % vs.len();
                    let (t, cpu) = flush(vs[j], &mut rings, &mut receivers);
                    ns[j] = t;
                    stats[j].cpu_ns += cpu;
                    stats[j].sends += n as u64;
                }
                for (j, s) in stats.iter_mut().enumerate() {
                    s.ns_per_send.push(ns[j]);
                    s.ratio.push(ns[j] / ns[0]);
                    this_run[j].push(ns[j]);
                }
            }
            for (s, mut r) in stats.iter_mut().zip(this_run) {
                s.run_medians.push(median(&mut r));
            }
        }
        println!();
        println!(
            "{} x {} B per write ({} B), {} flushes per variant; ns per send (wall), ratio to syscall sendmsg in the same round",
            case.messages,
            case.size,
            out.bytes,
            cfg.runs * cfg.rounds
        );
        println!(
            "{:<38} {:>8} {:>8} {:>15} {:>7} {:>12}",
            "variant", "median", "min", "run medians", "ratio", "CPU ns/send"
        );
        for (v, s) in vs.iter().zip(&mut stats) {
            let min = s.ns_per_send.iter().copied().fold(f64::INFINITY, f64::min);
            let runs = (
                s.run_medians.iter().copied().fold(f64::INFINITY, f64::min),
                s.run_medians.iter().copied().fold(0.0, f64::max),
            );
            println!(
                "{:<38} {:>8.0} {:>8.0} {:>7.0}..{:<7.0} {:>7.3} {:>12.0}",
                v.name,
                median(&mut s.ns_per_send),
                min,
                runs.0,
                runs.1,
                median(&mut s.ratio),
                s.cpu_ns as f64 / s.sends as f64
            );
        }
    }
    println!();
    let out = Outboxes::new(
        Case {
            messages: 1,
            size: 64,
        },
        n,
    );
    for (setup, ring) in SETUPS.iter().zip(&mut rings) {
        if let Some(ring) = ring {
            let inline = inline_completions(ring, &fds, &out);
            drain(&mut receivers, out.bytes, &mut buf);
            println!(
                "ring {:<28} {inline} of {n} SENDMSG CQEs were there when a submit() without wait returned",
                setup.name()
            );
        }
    }
    println!(
        "io_uring worker threads seen (iou-wrk/iou-sqp): {}",
        io_wq_threads()
    );
    drop(rings);
    probe_full_socket();
}

/// What each op does when the socket is full: the syscall returns EAGAIN; a
/// ring op either completes at once with -EAGAIN or is parked in the kernel
/// (internal poll) until the peer reads, holding its buffers meanwhile.
fn probe_full_socket() {
    println!();
    println!("on a full socket (peer not reading):");
    let probe = |name: &str, op: Op, flags: u32| -> io::Result<()> {
        let (s, mut r) = pairs(1)?;
        let (s, r) = (&s[0], &mut r[0]);
        let out = Outboxes::new(
            Case {
                messages: 1,
                size: 4096,
            },
            1,
        );
        let fd = s.as_raw_fd();
        // Fill the socket: syscall sends until EAGAIN (bounded).
        let mut filled = 0;
        for _ in 0..100_000 {
            // SAFETY: live socket, 'static msghdr (Outboxes INVARIANT).
            if unsafe { libc::sendmsg(fd, &out.msgs[0], SEND_FLAGS) } < 0 {
                break;
            }
            filled += 1;
        }
        let mut ring = IoUring::builder().build(8)?;
        let e = match op {
            Op::SendMsg => opcode::SendMsg::new(types::Fd(fd), &out.msgs[0])
                .flags(flags)
                .build(),
            Op::Writev => opcode::Writev::new(types::Fd(fd), out.iov(0).as_ptr(), 1)
                .rw_flags(flags as i32)
                .build(),
            Op::Send => opcode::Send::new(types::Fd(fd), out.iov(0)[0].iov_base as *const u8, 4096)
                .flags(flags as i32)
                .build(),
        };
        // SAFETY: the op's msghdr, iovec and payload are 'static and never
        // written (Outboxes INVARIANT), so they outlive the op even if the
        // kernel parks it.
        unsafe { ring.submission().push(&e) }.expect("empty SQ");
        let ts = types::Timespec::new().nsec(100_000_000);
        // ETIME when nothing completed within the timeout: the CQ tells.
        let _ = ring
            .submitter()
            .submit_with_args(1, &types::SubmitArgs::new().timespec(&ts));
        let first: Option<cqueue::Entry> = ring.completion().next();
        let verdict = match first {
            Some(c) if c.result() < 0 => format!(
                "completes at once: {}",
                io::Error::from_raw_os_error(-c.result())
            ),
            Some(c) => format!("completes at once: {} bytes", c.result()),
            None => {
                // Parked: read the peer until the op completes (bounded).
                let mut buf = vec![0u8; 1 << 16];
                let mut done = None;
                for _ in 0..200 {
                    while r.read(&mut buf).is_ok_and(|k| k > 0) {}
                    let _ = ring
                        .submitter()
                        .submit_with_args(1, &types::SubmitArgs::new().timespec(&ts));
                    if let Some(c) = ring.completion().next() {
                        done = Some(c.result());
                        break;
                    }
                }
                format!("PARKED in the kernel (no CQE in 100 ms); completed with {done:?} once the peer read")
            }
        };
        println!("  {name:<40} (after {filled} x 4 KiB filled it): {verdict}");
        Ok(())
    };
    let none = libc::MSG_NOSIGNAL as u32;
    let dontwait = (libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) as u32;
    for (name, op, flags) in [
        ("ring SENDMSG, MSG_NOSIGNAL", Op::SendMsg, none),
        (
            "ring SENDMSG, MSG_NOSIGNAL|MSG_DONTWAIT",
            Op::SendMsg,
            dontwait,
        ),
        ("ring SEND, MSG_NOSIGNAL", Op::Send, none),
        ("ring SEND, MSG_NOSIGNAL|MSG_DONTWAIT", Op::Send, dontwait),
        ("ring WRITEV (socket is O_NONBLOCK)", Op::Writev, 0),
        (
            "ring WRITEV, RWF_NOWAIT",
            Op::Writev,
            libc::RWF_NOWAIT as u32,
        ),
    ] {
        if let Err(e) = probe(name, op, flags) {
            println!("  {name}: probe failed: {e}");
        }
    }
}
