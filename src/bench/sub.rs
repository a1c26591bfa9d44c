//! Subscribers: `threads` monoio runtimes, each owning every `threads`-th
//! connection, like the server's cores.
//!
//! A connection task connects (from its source address), sends the SSE request or
//! the WebSocket upgrade, checks the answer, then waits for readability and reads
//! into its thread's scratch buffer, so an idle subscriber owns no read buffer (the
//! bytes of a partly received message are the only thing it keeps). Messages are
//! parsed where they lie; a message costs one stamp scan, one tracker update and,
//! when new, one histogram record.
//!
//! Each thread merges its interval histogram and counters into [`Shared`] every
//! tick, which is all the coordinator reads while the run goes on. When the
//! coordinator sets [`Shared::stop`], every thread shuts its sockets down, waits
//! (bounded) for its tasks to end, and returns its counts.
//!
//! In the storm mode ([`SubPlan::resume`]) each subscriber also keeps the last id
//! its stream gave it (SSE: the `id:` of the last dispatched event; WebSocket: the
//! envelope's `id`). When the coordinator raises [`StormSignals::drop_all`], every
//! thread shuts all its sockets down at once; when it raises
//! [`StormSignals::reconnect_all`], every thread opens them again, paced like the
//! first connect, each resuming after its last id (`Last-Event-ID` header,
//! `lastEventId` query). The sequence trackers live on, so a message that the
//! resume misses or repeats counts as lost or duplicated.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hdrhistogram::Histogram;
use monoio::net::TcpStream;

use super::payload;
use super::stats::{latency_histogram, Counts, Seen, SeqTracker};
use super::sys::now_ns;
use super::target::{HttpTarget, Transport};
use super::tls::Conn;
use super::wire::{self, SseLine, WireError};
use crate::config::PayloadMode;
use crate::netio;
use crate::proto::envelope::GAP_EVENT;
use crate::proto::ws::frame::OpCode;

/// How often threads publish their counters and histogram to [`Shared`].
const TICK: Duration = Duration::from_millis(50);
/// Reads per wake-up before a connection lets the others run.
const READS_PER_WAKE: usize = 8;
/// Scratch read size per thread.
const SCRATCH: usize = 64 * 1024;
/// How often a storm thread looks at the drop and reconnect signals: they should
/// reach every connection at about the same time.
const STORM_POLL: Duration = Duration::from_millis(1);

/// What every subscriber thread needs to know, fixed for the run.
#[derive(Debug)]
pub struct SubPlan {
    /// Connection `i` uses `targets[i % len]`.
    pub targets: Vec<HttpTarget>,
    /// Connection `i` subscribes to `topics[i % len]`.
    pub topics: Vec<String>,
    pub connections: usize,
    pub threads: usize,
    /// Connection `i` binds 127.0.0.(1 + i % source_ips) when this is over 1.
    pub source_ips: u8,
    pub connect_concurrency: usize,
    pub ws_subscribe_body: Option<String>,
    /// Offer permessage-deflate, inflate what comes compressed.
    pub ws_deflate: bool,
    pub payload: PayloadMode,
    /// Messages topic `k` carries in all (`expected[k]`), and how many of its first
    /// ones are warm-up (`warmup[k]`, not recorded in the histogram).
    pub expected: Vec<u64>,
    pub warmup: Vec<u64>,
    pub uring: bool,
    /// The TLS client config, when a target is https or wss.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Storm mode: keep each stream's last id, obey [`StormSignals`], record no
    /// latencies (a missed message's wait says how long the clients were away).
    pub resume: bool,
}

/// The storm mode's signals and counts (see the module doc).
#[derive(Default)]
pub struct StormSignals {
    /// Set by the coordinator: shut every subscribed socket down.
    pub drop_all: AtomicBool,
    /// Set by the coordinator once all are dropped: reconnect with the last id.
    pub reconnect_all: AtomicBool,
    /// Subscribers whose stream ended after `drop_all`.
    pub dropped: AtomicUsize,
    /// Subscribers that got their `101`/`200` again on the reconnect.
    pub resumed: AtomicUsize,
    /// Reconnects that failed before the `101`/`200`.
    pub resume_failed: AtomicUsize,
    /// `CLOCK_MONOTONIC` ns of the latest resumed `101`/`200`.
    pub last_resumed_ns: AtomicU64,
    /// `ringcast.gap` events received.
    pub gaps: AtomicU64,
}

/// What the threads and the coordinator share while the run goes on.
pub struct Shared {
    /// Subscribers that got their `101`/`200` and are receiving.
    pub connected: AtomicUsize,
    /// Connections that failed before subscribing.
    pub failed: AtomicUsize,
    /// Subscribed connections that ended before the run did.
    pub disconnected: AtomicUsize,
    /// Subscribers that received every message they expected.
    pub complete: AtomicUsize,
    /// `CLOCK_MONOTONIC` ns when the latest subscriber became complete.
    pub last_complete_ns: AtomicU64,
    /// Subscribers that received every warm-up message of their topic.
    pub warmed: AtomicUsize,
    /// New stamped messages received, all subscribers.
    pub delivered: AtomicU64,
    /// `CLOCK_MONOTONIC` ns of the latest new message.
    pub last_rx_ns: AtomicU64,
    /// Set by the coordinator: close everything and report.
    pub stop: AtomicBool,
    /// Connections with a lower index may start (the coordinator holds the second
    /// half back while it measures the server after the first).
    pub admit: AtomicUsize,
    /// The first connection error, for the report.
    pub first_error: Mutex<Option<String>>,
    /// Latencies in ns, merged from the threads every tick.
    pub hist: Mutex<Histogram<u64>>,
    pub storm: StormSignals,
    /// Bytes read from subscriber sockets after their response heads.
    pub rx_bytes: AtomicU64,
}

impl Shared {
    pub fn new() -> Self {
        Self {
            connected: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            disconnected: AtomicUsize::new(0),
            complete: AtomicUsize::new(0),
            last_complete_ns: AtomicU64::new(0),
            warmed: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            last_rx_ns: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            admit: AtomicUsize::new(usize::MAX),
            first_error: Mutex::new(None),
            hist: Mutex::new(latency_histogram()),
            storm: StormSignals::default(),
            rx_bytes: AtomicU64::new(0),
        }
    }

    fn note_error(&self, e: String) {
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(e);
        }
    }
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

/// Starts the subscriber threads; each returns its summed counts when stopped.
pub fn spawn(plan: Arc<SubPlan>, shared: Arc<Shared>) -> io::Result<Vec<JoinHandle<Counts>>> {
    (0..plan.threads)
        .map(|t| {
            let plan = plan.clone();
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("bench-sub-{t}"))
                .spawn(move || run_thread(t, plan, shared))
        })
        .collect()
}

fn run_thread(t: usize, plan: Arc<SubPlan>, shared: Arc<Shared>) -> Counts {
    let mine: Vec<usize> = (t..plan.connections).step_by(plan.threads).collect();
    let uring = plan.uring;
    let errors = shared.clone();
    let main = move || thread_main(Rc::new(Local::new(plan, shared, mine.len())), mine);
    let result = if uring {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(4096)
            .enable_timer()
            .build()
            .map(|mut rt| rt.block_on(main()))
    } else {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .map(|mut rt| rt.block_on(main()))
    };
    result.unwrap_or_else(|e| {
        errors.note_error(format!(
            "subscriber thread {t}: cannot start a runtime: {e}"
        ));
        Counts::default()
    })
}

/// One subscriber's state, owned by its thread.
#[derive(Default)]
struct Sub {
    tracker: SeqTracker,
    topic: usize,
    /// The socket while the task is subscribed, for shutdown at stop; -1 otherwise.
    fd: RawFd,
    subscribed: bool,
    /// A task serves this subscriber now.
    running: bool,
    unstamped: u64,
    /// Storm mode: the id to resume after (empty: none yet).
    last_id: String,
    /// Storm mode, SSE: the id of the event block being read, which becomes
    /// `last_id` when the block is dispatched (EventSource's "last event ID buffer").
    id_buffer: String,
}

impl Sub {
    /// An SSE `id:` line: an empty value clears the id (WHATWG: an empty `id:` resets
    /// the last event id); one outside the id charset is not kept.
    fn note_sse_id(&mut self, raw: &[u8]) {
        if raw.is_empty() {
            self.id_buffer.clear();
        } else if let Some(id) = wire::resume_id(raw) {
            self.id_buffer.clear();
            self.id_buffer.push_str(id);
        }
    }

    /// A WebSocket message: its envelope's id, when it has a usable one, is the last id.
    fn note_envelope_id(&mut self, msg: &[u8]) {
        if let Some(id) = wire::envelope_id(msg).and_then(wire::resume_id) {
            self.last_id.clear();
            self.last_id.push_str(id);
        }
    }
}

/// A thread's state, shared by its tasks.
struct Local {
    plan: Arc<SubPlan>,
    shared: Arc<Shared>,
    subs: RefCell<Vec<Sub>>,
    /// Latencies since the last tick.
    hist: RefCell<Histogram<u64>>,
    delivered: Cell<u64>,
    last_rx_ns: Cell<u64>,
    scratch: RefCell<Vec<u8>>,
    connecting: Cell<usize>,
    live: Cell<usize>,
}

impl Local {
    fn new(plan: Arc<SubPlan>, shared: Arc<Shared>, n: usize) -> Self {
        let subs = (0..n)
            .map(|_| Sub {
                fd: -1,
                ..Sub::default()
            })
            .collect();
        Self {
            plan,
            shared,
            subs: RefCell::new(subs),
            hist: RefCell::new(latency_histogram()),
            delivered: Cell::new(0),
            last_rx_ns: Cell::new(0),
            scratch: RefCell::new(vec![0; SCRATCH]),
            connecting: Cell::new(0),
            live: Cell::new(0),
        }
    }

    /// Shuts every subscribed socket down: each task then reads to the end of its
    /// stream and ends, dropping (closing) its socket.
    fn shutdown_all(&self) {
        for sub in self.subs.borrow().iter() {
            if sub.fd >= 0 {
                // SAFETY: `fd` is the live socket of a task on this thread: a task
                // clears it before it drops its stream, on this same thread.
                unsafe { libc::shutdown(sub.fd, libc::SHUT_RDWR) };
            }
        }
    }

    /// Hands the interval's latencies and counters to [`Shared`].
    fn flush(&self) {
        let mut hist = self.hist.borrow_mut();
        if !hist.is_empty() {
            if let Ok(mut shared) = self.shared.hist.lock() {
                let _ = shared.add(&*hist);
            }
            hist.reset();
        }
        let d = self.delivered.replace(0);
        if d > 0 {
            self.shared.delivered.fetch_add(d, Ordering::Relaxed);
            self.shared
                .last_rx_ns
                .fetch_max(self.last_rx_ns.get(), Ordering::Relaxed);
        }
    }

    /// One message for subscriber `slot`, received at `now`.
    fn on_message(&self, sub: &mut Sub, hist: &mut Histogram<u64>, msg: &[u8], now: u64) {
        let Some((seq, t)) = payload::parse(msg, self.plan.payload) else {
            sub.unstamped += 1;
            // A WebSocket gap is an envelope with the event name; an SSE gap's data
            // is the bare object (its `event:` line is counted in `feed`).
            if self.plan.resume && wire::envelope_event(msg) == Some(GAP_EVENT.as_bytes()) {
                self.shared.storm.gaps.fetch_add(1, Ordering::Relaxed);
            }
            return;
        };
        let expected = self.plan.expected.get(sub.topic).copied().unwrap_or(0);
        let warmup = self.plan.warmup.get(sub.topic).copied().unwrap_or(0);
        match sub.tracker.record(seq, expected) {
            Seen::InOrder | Seen::OutOfOrder => {
                self.delivered.set(self.delivered.get() + 1);
                self.last_rx_ns.set(now);
                if seq >= warmup && !self.plan.resume {
                    let _ =
                        hist.record(now.saturating_sub(t).clamp(1, super::stats::MAX_LATENCY_NS));
                }
                if sub.tracker.distinct == warmup {
                    self.shared.warmed.fetch_add(1, Ordering::Relaxed);
                }
                if sub.tracker.distinct == expected {
                    self.shared.complete.fetch_add(1, Ordering::Relaxed);
                    self.shared
                        .last_complete_ns
                        .fetch_max(now, Ordering::Relaxed);
                }
            }
            Seen::Duplicate | Seen::Unexpected => {}
        }
    }

    /// The thread's share of the final counts.
    fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for sub in self.subs.borrow().iter() {
            let expected = if sub.subscribed {
                self.plan.expected.get(sub.topic).copied().unwrap_or(0)
            } else {
                0
            };
            c.add_tracker(&sub.tracker, expected);
            c.unstamped += sub.unstamped;
        }
        c
    }
}

async fn thread_main(l: Rc<Local>, mine: Vec<usize>) -> Counts {
    open_all(&l, &mine, false).await;
    let storm = &l.shared.storm;
    let (mut dropped, mut reconnected) = (false, false);
    let mut last_flush = std::time::Instant::now();
    while !l.shared.stop.load(Ordering::Relaxed) {
        monoio::time::sleep(if l.plan.resume { STORM_POLL } else { TICK }).await;
        if last_flush.elapsed() >= TICK {
            l.flush();
            last_flush = std::time::Instant::now();
        }
        if !l.plan.resume {
            continue;
        }
        if !dropped && storm.drop_all.load(Ordering::Relaxed) {
            dropped = true;
            l.shutdown_all();
        }
        if dropped && !reconnected && storm.reconnect_all.load(Ordering::Relaxed) {
            reconnected = true;
            open_all(&l, &mine, true).await;
        }
    }
    // Stop: shut every socket down so each task sees the end of its stream and
    // ends (dropping its socket); bounded, in case a peer is stuck.
    l.shutdown_all();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while l.live.get() > 0 && std::time::Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    l.flush();
    l.counts()
}

/// Starts a task for each of this thread's connections (`resume`: each that was
/// subscribed and has no task now), at most `connect_concurrency` in flight over all
/// threads, connection `i` only once the coordinator admits it.
async fn open_all(l: &Rc<Local>, mine: &[usize], resume: bool) {
    let per_thread_limit = l.plan.connect_concurrency.div_ceil(l.plan.threads).max(1);
    let mut last_flush = std::time::Instant::now();
    for (slot, &i) in mine.iter().enumerate() {
        if resume {
            let subs = l.subs.borrow();
            if !subs[slot].subscribed || subs[slot].running {
                continue;
            }
        }
        while (l.connecting.get() >= per_thread_limit
            || i >= l.shared.admit.load(Ordering::Relaxed))
            && !l.shared.stop.load(Ordering::Relaxed)
        {
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
        if l.shared.stop.load(Ordering::Relaxed) {
            break;
        }
        if last_flush.elapsed() >= TICK {
            l.flush();
            last_flush = std::time::Instant::now();
        }
        {
            let mut subs = l.subs.borrow_mut();
            subs[slot].topic = i % l.plan.topics.len();
            subs[slot].running = true;
        }
        l.connecting.set(l.connecting.get() + 1);
        l.live.set(l.live.get() + 1);
        monoio::spawn(subscriber(l.clone(), slot, i, resume));
    }
}

/// Why a subscriber ended.
enum End {
    /// Before it was subscribed: counted as a failed connection.
    Failed(String),
    /// After: counted as a disconnect unless the run was stopping.
    Closed(String),
}

/// Runs subscriber `slot` (connection `i`) once; `resume`: the storm's reconnect.
async fn subscriber(l: Rc<Local>, slot: usize, i: usize, resume: bool) {
    let mut subscribed = false;
    let end = run_subscriber(&l, slot, i, resume, &mut subscribed).await;
    if !subscribed {
        l.connecting.set(l.connecting.get() - 1);
    }
    {
        let mut subs = l.subs.borrow_mut();
        subs[slot].fd = -1;
        subs[slot].running = false;
    }
    let stopping = l.shared.stop.load(Ordering::Relaxed);
    let storm = &l.shared.storm;
    match end {
        End::Failed(e) => {
            let failed = if resume {
                &storm.resume_failed
            } else {
                &l.shared.failed
            };
            failed.fetch_add(1, Ordering::Relaxed);
            l.shared.note_error(e);
        }
        End::Closed(_) if stopping => {}
        End::Closed(_) if !resume && storm.drop_all.load(Ordering::Relaxed) => {
            storm.dropped.fetch_add(1, Ordering::Relaxed);
        }
        End::Closed(e) => {
            l.shared.disconnected.fetch_add(1, Ordering::Relaxed);
            l.shared.note_error(format!("subscriber {i} closed: {e}"));
        }
    }
    l.live.set(l.live.get() - 1);
}

async fn run_subscriber(
    l: &Local,
    slot: usize,
    i: usize,
    resume: bool,
    subscribed: &mut bool,
) -> End {
    let plan = &l.plan;
    let target = &plan.targets[i % plan.targets.len()];
    let topic = &plan.topics[i % plan.topics.len()];
    let last_id = resume
        .then(|| l.subs.borrow()[slot].last_id.clone())
        .filter(|id| !id.is_empty());
    let source = (plan.source_ips > 1)
        .then(|| Ipv4Addr::new(127, 0, 0, 1 + (i % plan.source_ips as usize) as u8));
    let stream = match connect_from(source, target.addr).await {
        Ok(s) => s,
        Err(e) => {
            let from = source.map_or(String::new(), |s| format!(" from {s}"));
            return End::Failed(format!("connect to {}{from}: {e}", target.addr));
        }
    };
    let fd = stream.as_raw_fd();
    let mut conn_io = match (&plan.tls, target.tls) {
        (Some(cfg), true) => match Conn::handshake(&stream, fd, cfg, &target.host).await {
            Ok(c) => c,
            Err(e) => return End::Failed(format!("TLS handshake with {}: {e}", target.addr)),
        },
        _ => Conn::plain(fd),
    };
    let mut buf = Vec::with_capacity(512);
    let path = match (target.transport, &last_id) {
        (Transport::Ws, Some(id)) => wire::with_last_event_id(&target.path(topic), id),
        _ => target.path(topic),
    };
    match target.transport {
        Transport::Ws => wire::write_ws_upgrade(&mut buf, &target.host, &path, plan.ws_deflate),
        Transport::Sse => wire::write_sse_get(&mut buf, &target.host, &path, last_id.as_deref()),
    }
    if let Err(e) = conn_io.write_all(&stream, &buf).await {
        return End::Failed(format!("sending the request: {e}"));
    }
    buf.clear();
    let head = loop {
        match wire::parse_response_head(&buf) {
            Ok(Some(h)) => break h,
            Ok(None) => {}
            Err(e) => return End::Failed(format!("{} {path}: {e}", target.addr)),
        }
        match conn_io.read_some(&stream, &mut buf, 4096).await {
            Ok(0) => {
                return End::Failed(format!("{} {path}: closed before answering", target.addr))
            }
            Ok(_) => {}
            Err(e) => return End::Failed(format!("{} {path}: {e}", target.addr)),
        }
    };
    let want = match target.transport {
        Transport::Ws => 101,
        Transport::Sse => 200,
    };
    if head.status != want {
        let body = String::from_utf8_lossy(&buf[head.len..]);
        let body = body
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(120)
            .collect::<String>();
        return End::Failed(format!(
            "{} {path}: HTTP {} (expected {want}) {body}",
            target.addr, head.status
        ));
    }
    if target.transport == Transport::Ws && !head.ws_accept_ok {
        return End::Failed(format!(
            "{} {path}: wrong Sec-WebSocket-Accept",
            target.addr
        ));
    }
    *subscribed = true;
    l.connecting.set(l.connecting.get() - 1);
    {
        let mut subs = l.subs.borrow_mut();
        subs[slot].fd = fd;
        subs[slot].subscribed = true;
    }
    if resume {
        l.shared.storm.resumed.fetch_add(1, Ordering::Relaxed);
        l.shared
            .storm
            .last_resumed_ns
            .fetch_max(now_ns(), Ordering::Relaxed);
    } else {
        l.shared.connected.fetch_add(1, Ordering::Relaxed);
    }

    let mut out = Vec::new();
    if let (Transport::Ws, Some(body)) = (target.transport, &plan.ws_subscribe_body) {
        let body = body.replace("{topic}", topic);
        wire::write_client_frame(&mut out, OpCode::Text, body.as_bytes(), mask_key(i));
    }
    // Bytes after the head are the first of the stream; keep only those.
    let mut conn = ConnBuf {
        pending: buf.split_off(head.len),
        fragments: Vec::new(),
    };
    drop(buf);
    if !conn.pending.is_empty() {
        let bytes = std::mem::take(&mut conn.pending);
        if let Err(e) = l.feed(slot, target.transport, &mut conn, &bytes, &mut out, i) {
            return End::Closed(e.to_string());
        }
    }
    loop {
        if !out.is_empty() {
            if let Err(e) = conn_io.write_all(&stream, &out).await {
                return End::Closed(format!("writing: {e}"));
            }
            out.clear();
        }
        if !conn_io.has_input() {
            if let Err(e) = stream.readable(false).await {
                return End::Closed(format!("waiting to read: {e}"));
            }
        }
        match l.read_and_feed(slot, target.transport, &mut conn_io, &mut conn, &mut out, i) {
            Ok(true) => {}
            Ok(false) => return End::Closed("end of stream".into()),
            Err(e) => return End::Closed(e),
        }
    }
}

/// Bytes a connection keeps between reads: the unparsed tail and, for a fragmented
/// WebSocket message, the fragments so far. Both are empty (unallocated) when idle.
struct ConnBuf {
    pending: Vec<u8>,
    fragments: Vec<u8>,
}

impl Local {
    /// Reads what the socket has into the scratch buffer and feeds it. `Ok(false)` at
    /// end of stream (or a WebSocket close).
    fn read_and_feed(
        &self,
        slot: usize,
        transport: Transport,
        io: &mut Conn,
        conn: &mut ConnBuf,
        out: &mut Vec<u8>,
        i: usize,
    ) -> Result<bool, String> {
        let mut scratch = self.scratch.borrow_mut();
        for _ in 0..READS_PER_WAKE {
            match io.recv(&mut scratch) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.shared.rx_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    match self.feed(slot, transport, conn, &scratch[..n], out, i) {
                        Ok(true) => {
                            if n < scratch.len() {
                                return Ok(true);
                            }
                        }
                        Ok(false) => return Ok(false),
                        Err(e) => return Err(e.to_string()),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading: {e}")),
            }
        }
        Ok(true)
    }

    /// Parses `new` (after any pending tail) and handles every complete message.
    /// `Ok(false)` when the server sent a WebSocket close.
    fn feed(
        &self,
        slot: usize,
        transport: Transport,
        conn: &mut ConnBuf,
        new: &[u8],
        out: &mut Vec<u8>,
        i: usize,
    ) -> Result<bool, WireError> {
        let now = now_ns();
        let mut subs = self.subs.borrow_mut();
        let sub = &mut subs[slot];
        let mut hist = self.hist.borrow_mut();
        let joined = (!conn.pending.is_empty()).then(|| {
            let mut j = std::mem::take(&mut conn.pending);
            j.extend_from_slice(new);
            j
        });
        let input: &[u8] = joined.as_deref().unwrap_or(new);
        let (used, open) = match transport {
            Transport::Sse => (
                wire::scan_sse_lines(input, |line| match line {
                    SseLine::Data(data) => self.on_message(sub, &mut hist, data, now),
                    _ if !self.plan.resume => {}
                    SseLine::Id(id) => sub.note_sse_id(id),
                    SseLine::Dispatch => {
                        if sub.id_buffer != sub.last_id {
                            sub.last_id.clone_from(&sub.id_buffer);
                        }
                    }
                    SseLine::Event(name) => {
                        if name == GAP_EVENT.as_bytes() {
                            self.shared.storm.gaps.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }),
                true,
            ),
            Transport::Ws => {
                let mut at = 0;
                let mut open = true;
                while let Some((frame, n)) = wire::parse_server_frame(&input[at..])? {
                    let payload = &input[at + frame.payload.start..at + frame.payload.end];
                    at += n;
                    let inflated;
                    let payload = if frame.compressed {
                        // ringcast sends compressed messages whole (one frame).
                        if !frame.fin {
                            return Err(WireError::BadFrameFromServer);
                        }
                        inflated = inflate(payload)?;
                        &inflated[..]
                    } else {
                        payload
                    };
                    match frame.opcode {
                        OpCode::Text | OpCode::Binary if frame.fin && conn.fragments.is_empty() => {
                            if self.plan.resume {
                                sub.note_envelope_id(payload);
                            }
                            self.on_message(sub, &mut hist, payload, now)
                        }
                        OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                            if conn.fragments.len() as u64 + payload.len() as u64
                                > wire::MAX_MESSAGE
                            {
                                return Err(WireError::MessageTooBig);
                            }
                            conn.fragments.extend_from_slice(payload);
                            if frame.fin {
                                let msg = std::mem::take(&mut conn.fragments);
                                if self.plan.resume {
                                    sub.note_envelope_id(&msg);
                                }
                                self.on_message(sub, &mut hist, &msg, now);
                            }
                        }
                        OpCode::Ping => {
                            wire::write_client_frame(out, OpCode::Pong, payload, mask_key(i))
                        }
                        OpCode::Pong => {}
                        OpCode::Close => {
                            wire::write_client_frame(
                                out,
                                OpCode::Close,
                                payload.get(..2).unwrap_or(&[]),
                                mask_key(i),
                            );
                            open = false;
                            break;
                        }
                    }
                }
                (at, open)
            }
        };
        match joined {
            // Keep the tail in the joined buffer's allocation.
            Some(mut j) => {
                j.drain(..used);
                conn.pending = if j.is_empty() { Vec::new() } else { j };
            }
            None => conn.pending.extend_from_slice(&new[used..]),
        }
        Ok(open)
    }
}

/// The masking key of connection `i` (RFC 6455 wants it unpredictable to defeat
/// proxy cache poisoning; a load generator on loopback only needs it nonzero).
fn mask_key(i: usize) -> [u8; 4] {
    ((i as u32).wrapping_mul(0x9E37_79B1) | 1).to_ne_bytes()
}

/// Connects to `addr`, from `source` when given (port chosen at connect time, so
/// each source address has its own ephemeral port range).
async fn connect_from(source: Option<Ipv4Addr>, addr: SocketAddr) -> io::Result<TcpStream> {
    // SAFETY: plain socket(2) call; the descriptor is owned by `sock` right after.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket that nothing else owns.
    let sock = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    if let Some(src) = source {
        netio::set_sockopt(fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)?;
        let sa = sockaddr_in(SocketAddr::new(src.into(), 0))?;
        // SAFETY: `sa` is a valid sockaddr_in and its exact size is passed.
        let rc = unsafe {
            libc::bind(
                fd,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    netio::set_sockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    let sa = sockaddr_in(addr)?;
    // SAFETY: `sa` is a valid sockaddr_in and its exact size is passed.
    let rc = unsafe {
        libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    let stream = TcpStream::from_std(sock)?;
    stream.writable(false).await?;
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are valid for writes and `len` holds `err`'s size.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if err != 0 {
        return Err(io::Error::from_raw_os_error(err));
    }
    Ok(stream)
}

fn sockaddr_in(addr: SocketAddr) -> io::Result<libc::sockaddr_in> {
    let SocketAddr::V4(v4) = addr else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "IPv6 targets are not supported",
        ));
    };
    Ok(libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    })
}

/// Inflates one compressed server message (permessage-deflate, RFC 7692 §7.2.2)
/// with the thread's inflater, within the bench's message limit.
fn inflate(payload: &[u8]) -> Result<Vec<u8>, WireError> {
    use crate::proto::ws::deflate::Inflater;
    thread_local! {
        static INFLATER: RefCell<Inflater> = RefCell::new(Inflater::new(15));
    }
    let mut out = Vec::with_capacity(payload.len() * 4);
    let limit = wire::MAX_MESSAGE as usize;
    INFLATER
        .with(|inf| {
            let mut inf = inf.borrow_mut();
            inf.reset();
            inf.inflate(payload, &mut out, limit)
                .and_then(|()| inf.finish(&mut out, limit))
        })
        .map_err(|_| WireError::BadFrameFromServer)?;
    Ok(out)
}
