//! Core-state tests on plain data: several `CoreState`s stand for the cores, the
//! test moves their outbound messages like the bus would, and a map of byte
//! vectors stands for the sockets.

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::sync::Arc;

use super::*;
use crate::core::bus_msg::StreamEntry;
use crate::core::client::Lifecycle;
use crate::core::homes::HistoryLimits;
use crate::core::topics::home_of;

fn limits() -> Limits {
    Limits {
        max_outbox_bytes: 1 << 20,
        max_topics_per_client: 8,
        heartbeat: Tick::new(1500),
        idle: Tick::new(3500),
        write_delay: Duration::from_millis(2),
    }
}

fn cores(n: usize) -> Vec<CoreState> {
    cores_with(n, HistoryLimits::per_topic(100, 1 << 20))
}

fn cores_with(n: usize, history: HistoryLimits) -> Vec<CoreState> {
    (0..n)
        .map(|i| {
            CoreState::new(
                i,
                n,
                IdScheme::Local(crate::proto::cursor::Epoch::new(0xe)),
                limits(),
                history,
                Arc::new(CoreMetrics::default()),
            )
        })
        .collect()
}

/// Moves every outbound message to its core until none is left, and queues
/// each core's deliveries (what its effects task does before writing).
fn pump(cores: &mut [CoreState]) {
    loop {
        let mut moved = false;
        for i in 0..cores.len() {
            cores[i].queue_deliveries();
            let out = cores[i].take_sends();
            for (to, msg) in out {
                moved = true;
                cores[to].handle(msg);
            }
        }
        if !moved {
            return;
        }
    }
}

#[derive(Default)]
struct Sockets(HashMap<RawFd, Vec<u8>>);

impl Sockets {
    /// A socket write that takes everything.
    fn write(&mut self, fd: RawFd, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        let out = self.0.entry(fd).or_default();
        let mut n = 0;
        for s in iov {
            out.extend_from_slice(s);
            n += s.len();
        }
        Ok(n)
    }

    fn flush(&mut self, core: &mut CoreState) {
        core.flush_dirty(|fd, iov: &[IoSlice<'_>]| self.write(fd, iov));
    }

    fn flush_all(&mut self, cores: &mut [CoreState]) {
        for c in cores {
            self.flush(c);
        }
    }

    /// The `data:` payloads' `data` values seen on `fd`, in order.
    fn data(&self, fd: RawFd) -> Vec<String> {
        let text = String::from_utf8_lossy(self.0.get(&fd).map_or(&[][..], |v| v));
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|env| {
                let at = env.find("\"data\":").map_or(0, |i| i + 7);
                env[at..env.len() - 1].to_string()
            })
            .collect()
    }

    fn text(&self, fd: RawFd) -> String {
        String::from_utf8_lossy(self.0.get(&fd).map_or(&[][..], |v| v)).into_owned()
    }
}

/// A topic whose home is `core` of `n`.
fn topic_homed_at(core: usize, n: usize) -> String {
    (0..)
        .map(|i| format!("t{i}"))
        .find(|t| home_of(t, n) == core)
        .unwrap_or_default()
}

fn publish(cores: &mut [CoreState], on: usize, topic: &str, data: &str) {
    cores[on].publish(topic, None, data.as_bytes().to_vec());
    pump(cores);
}

#[test]
fn a_message_published_on_one_core_reaches_subscribers_on_every_core_in_order() {
    let mut cs = cores(2);
    let topic = topic_homed_at(0, 2);
    let a = cs[0].register(Transport::Sse, 10);
    let b = cs[1].register(Transport::Sse, 11);
    cs[0].set_stream_cursor(a, 1);
    cs[1].set_stream_cursor(b, 1);
    cs[0].subscribe(a, &topic, Since::Live).unwrap();
    cs[1].subscribe(b, &topic, Since::Live).unwrap();
    pump(&mut cs);
    for i in 0..20 {
        publish(&mut cs, i % 2, &topic, &i.to_string());
    }
    let mut socks = Sockets::default();
    socks.flush_all(&mut cs);
    let want: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(socks.data(10), want);
    assert_eq!(socks.data(11), want);
}

#[test]
fn resume_gets_exactly_the_missed_messages_then_live_ones() {
    let mut cs = cores(2);
    let topic = topic_homed_at(1, 2);
    for i in 1..=5 {
        publish(&mut cs, 0, &topic, &i.to_string());
    }
    let c = cs[0].register(Transport::Sse, 10);
    cs[0].set_stream_cursor(c, 1);
    cs[0].subscribe(c, &topic, Since::After(2)).unwrap();
    // Published before the home answers: the answer's backlog covers it.
    cs[1].publish(&topic, None, b"6".to_vec());
    pump(&mut cs);
    publish(&mut cs, 0, &topic, "7");
    let mut socks = Sockets::default();
    socks.flush_all(&mut cs);
    assert_eq!(socks.data(10), vec!["3", "4", "5", "6", "7"]);
}

#[test]
fn a_resume_past_history_starts_with_a_gap_event() {
    let mut cs = cores_with(1, HistoryLimits::per_topic(3, 1 << 20));
    let topic = "t";
    for i in 1..=6 {
        publish(&mut cs, 0, topic, &i.to_string());
    }
    let c = cs[0].register(Transport::Sse, 10);
    cs[0].set_stream_cursor(c, 1);
    cs[0].subscribe(c, topic, Since::After(1)).unwrap();
    let mut socks = Sockets::default();
    socks.flush_all(&mut cs);
    let text = socks.text(10);
    let gap = text.find("event: ringcast.gap").expect("gap event");
    assert!(
        text.contains(r#""after":"00000000000e-1","oldest":"00000000000e-4""#),
        "{text}"
    );
    assert!(gap < text.find("id: 00000000000e-4").expect("message 4"));
    assert_eq!(socks.data(10)[1..], ["4", "5", "6"]);
}

#[test]
fn unsubscribe_and_resubscribe_before_the_answer_loses_nothing_after_the_second() {
    let mut cs = cores(2);
    let topic = topic_homed_at(1, 2);
    let c = cs[0].register(Transport::Ws, 10);
    cs[0].subscribe(c, &topic, Since::Live).unwrap();
    assert!(cs[0].unsubscribe(c, &topic));
    cs[0].subscribe(c, &topic, Since::Live).unwrap();
    pump(&mut cs);
    publish(&mut cs, 1, &topic, "1");
    let sub = &cs[0].client(c).unwrap().subs[0];
    assert!(!sub.pending);
    assert_eq!(
        sub.seq, 1,
        "the live message after the second subscribe arrived"
    );
}

#[test]
fn a_message_queued_before_the_client_leaves_counts_as_dropped() {
    let mut cs = cores(1);
    let c = cs[0].register(Transport::Sse, 10);
    cs[0].set_stream_cursor(c, 1);
    cs[0].subscribe(c, "t", Since::Live).unwrap();
    let before = cs[0].metrics().dropped.get();
    publish(&mut cs, 0, "t", "1");
    assert!(cs[0].remove(c, CloseReason::PeerGone));
    assert!(cs[0].metrics().dropped.get() > before);
    assert!(
        !cs[0].remove(c, CloseReason::PeerGone),
        "removal happens once"
    );
    assert_eq!(cs[0].metrics().subscriptions.get(), 0);
    assert_eq!(cs[0].metrics().connections_sse.get(), 0);
}

#[test]
fn an_answer_for_a_client_that_left_is_a_no_op_even_if_its_slot_is_reused() {
    let mut cs = cores(2);
    let topic = topic_homed_at(1, 2);
    let gone = cs[0].register(Transport::Sse, 10);
    cs[0].set_stream_cursor(gone, 1);
    cs[0].subscribe(gone, &topic, Since::Live).unwrap();
    cs[0].remove(gone, CloseReason::PeerGone);
    let next = cs[0].register(Transport::Sse, 11);
    cs[0].set_stream_cursor(next, 1);
    pump(&mut cs);
    assert!(cs[0].client(gone).is_none());
    assert!(cs[0].client(next).unwrap().subs.is_empty());
    publish(&mut cs, 1, &topic, "1");
    let mut socks = Sockets::default();
    socks.flush_all(&mut cs);
    assert!(
        socks.data(11).is_empty(),
        "the slot's next occupant got nothing"
    );
}

#[test]
fn a_client_past_its_outbox_bound_is_cut_and_the_others_are_not() {
    let mut cs = cores(1);
    cs[0].limits.max_outbox_bytes = 2048;
    let slow = cs[0].register(Transport::Sse, 10);
    let fast = cs[0].register(Transport::Sse, 11);
    for id in [slow, fast] {
        cs[0].set_stream_cursor(id, 1);
        cs[0].subscribe(id, "t", Since::Live).unwrap();
    }
    let mut socks = Sockets::default();
    for i in 0..50 {
        publish(&mut cs, 0, "t", &format!("\"{}\"", "x".repeat(100 + i)));
        // The slow client's socket never takes anything.
        cs[0].flush_dirty(|fd, iov: &[IoSlice<'_>]| -> io::Result<usize> {
            if fd == 10 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let out = socks.0.entry(fd).or_default();
            iov.iter().for_each(|s| out.extend_from_slice(s));
            Ok(iov.iter().map(|s| s.len()).sum())
        });
    }
    assert_eq!(
        cs[0].client(slow).unwrap().lifecycle(),
        Lifecycle::Closing(CloseReason::SlowConsumer)
    );
    assert_eq!(socks.data(11).len(), 50);
    assert_eq!(cs[0].metrics().slow_consumers_sse.get(), 1);
}

#[test]
fn a_burst_past_the_bound_to_a_client_that_reads_is_written_not_cut() {
    let mut cs = cores(1);
    cs[0].limits.max_outbox_bytes = 2048;
    let reader = cs[0].register(Transport::Sse, 10);
    let stalled = cs[0].register(Transport::Sse, 11);
    for id in [reader, stalled] {
        cs[0].set_stream_cursor(id, 1);
        cs[0].subscribe(id, "t", Since::Live).unwrap();
    }
    let mut socks = Sockets::default();
    socks.flush_all(&mut cs);
    let turn = |cs: &mut Vec<CoreState>, socks: &mut Sockets, n: usize| {
        // A burst of `n` messages in one turn (a batch from the bus), then one
        // flush: the reader's socket takes it all, the other's nothing.
        for i in 0..n {
            publish(cs, 0, "t", &format!("\"{}{i}\"", "x".repeat(200)));
        }
        cs[0].flush_dirty(|fd, iov: &[IoSlice<'_>]| -> io::Result<usize> {
            if fd == 11 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let out = socks.0.entry(fd).or_default();
            iov.iter().for_each(|s| out.extend_from_slice(s));
            Ok(iov.iter().map(|s| s.len()).sum())
        });
    };
    // Ten times the bound: neither socket refused a write yet, nobody is cut.
    turn(&mut cs, &mut socks, 100);
    assert!(cs[0].client(reader).unwrap().lifecycle().takes_messages());
    assert!(cs[0].client(stalled).unwrap().lifecycle().takes_messages());
    assert_eq!(socks.text(10).matches("data:").count(), 100);
    // The next message finds the stalled client's socket full: cut.
    turn(&mut cs, &mut socks, 1);
    assert!(cs[0].client(reader).unwrap().lifecycle().takes_messages());
    assert_eq!(
        cs[0].client(stalled).unwrap().lifecycle(),
        Lifecycle::Closing(CloseReason::SlowConsumer)
    );
    assert_eq!(socks.text(10).matches("data:").count(), 101);
    assert_eq!(cs[0].metrics().slow_consumers_sse.get(), 1);
}

#[test]
fn a_queue_past_the_burst_allowance_is_cut_whatever_its_socket() {
    let mut cs = cores(1);
    cs[0].limits.max_outbox_bytes = 1024;
    let id = cs[0].register(Transport::Sse, 10);
    cs[0].set_stream_cursor(id, 1);
    cs[0].subscribe(id, "t", Since::Live).unwrap();
    let mut socks = Sockets::default();
    socks.flush_all(&mut cs);
    for i in 0..200 {
        publish(&mut cs, 0, "t", &format!("\"{}{i}\"", "x".repeat(200)));
    }
    assert_eq!(
        cs[0].client(id).unwrap().lifecycle(),
        Lifecycle::Closing(CloseReason::SlowConsumer),
        "16 × the bound queued without a flush"
    );
}

#[test]
fn heartbeats_fill_silences_and_silent_websockets_are_closed() {
    let mut cs = cores(1);
    let sse = cs[0].register(Transport::Sse, 10);
    let ws = cs[0].register(Transport::Ws, 11);
    let mut socks = Sockets::default();
    cs[0].advance_timers(Tick::new(1500));
    socks.flush_all(&mut cs);
    assert_eq!(socks.text(10), ":\n\n");
    assert_eq!(
        socks.0.get(&11).map(Vec::as_slice),
        Some(&[0x89u8, 0x00][..])
    );
    cs[0].advance_timers(Tick::new(3499));
    assert_eq!(
        cs[0].client(ws).unwrap().lifecycle(),
        Lifecycle::Open { blocked: false }
    );
    cs[0].advance_timers(Tick::new(3500));
    assert_eq!(
        cs[0].client(ws).unwrap().lifecycle(),
        Lifecycle::Closing(CloseReason::IdleTimeout)
    );
    assert_eq!(
        cs[0].client(sse).unwrap().lifecycle(),
        Lifecycle::Open { blocked: false }
    );
    cs[0].remove(sse, CloseReason::PeerGone);
    cs[0].remove(ws, CloseReason::IdleTimeout);
    assert_eq!(cs[0].timer_entries(), 0);
}

#[test]
fn heartbeats_go_out_as_one_batch_and_one_not_written_whole_goes_through_the_outbox() {
    let mut cs = cores(1);
    cs[0].register(Transport::Sse, 10);
    cs[0].register(Transport::Ws, 11);
    cs[0].register(Transport::Sse, 12);
    cs[0].advance_timers(Tick::new(1500));
    let mut batch = Vec::new();
    let writes = cs[0].write_heartbeats(|sends, results| {
        for (&(fd, bytes), r) in sends.iter().zip(results) {
            batch.push((fd, bytes.to_vec()));
            // A full socket, a short write, a whole one.
            *r = match fd {
                10 => -libc::EAGAIN,
                11 => 1,
                _ => bytes.len() as i32,
            };
        }
    });
    assert_eq!(writes, 3);
    batch.sort();
    assert_eq!(
        batch,
        vec![
            (10, b":\n\n".to_vec()),
            (11, vec![0x89, 0x00]),
            (12, b":\n\n".to_vec())
        ]
    );
    // What did not go whole is queued to its client, and the flush writes it.
    let mut socks = Sockets::default();
    socks.flush_all(&mut cs);
    assert_eq!(socks.text(10), ":\n\n");
    assert_eq!(socks.0.get(&11).map(Vec::as_slice), Some(&[0x00u8][..]));
    assert!(!socks.0.contains_key(&12), "written once, by the batch");
    assert_eq!(cs[0].write_heartbeats(|_, _| panic!("nothing is due")), 0);
}

#[test]
fn a_websocket_that_only_listens_on_a_busy_topic_is_pinged_and_stays_while_it_answers() {
    let mut cs = cores(1);
    let answers = cs[0].register(Transport::Ws, 10);
    let silent = cs[0].register(Transport::Ws, 11);
    for c in [answers, silent] {
        cs[0].subscribe(c, "busy", Since::Live).unwrap();
    }
    let mut socks = Sockets::default();
    let pings = |socks: &Sockets, fd| {
        let out = socks.0.get(&fd).map_or(&[][..], Vec::as_slice);
        parse_frames(out).iter().filter(|op| **op == 0x9).count()
    };
    // A message every second: the streams are never silent outbound.
    for second in 1..=40u64 {
        let now = second * 100;
        cs[0].advance_timers(Tick::new(now));
        cs[0].publish("busy", None, b"1".to_vec());
        socks.flush_all(&mut cs);
        if pings(&socks, 10) > 0 && cs[0].client(answers).unwrap().probed {
            // Its pong arrives.
            cs[0].touch_read(answers);
        }
    }
    // Each was asked after 15 s of its own silence; the one that answered is
    // asked again 15 s after its answer, and stays.
    assert_eq!(pings(&socks, 11), 1);
    assert_eq!(pings(&socks, 10), 2);
    assert_eq!(
        cs[0].client(answers).unwrap().lifecycle(),
        Lifecycle::Open { blocked: false }
    );
    assert_eq!(
        cs[0].client(silent).unwrap().lifecycle(),
        Lifecycle::Closing(CloseReason::IdleTimeout)
    );
}

/// The opcodes of the unmasked server frames in `bytes`.
fn parse_frames(mut bytes: &[u8]) -> Vec<u8> {
    let mut ops = Vec::new();
    while bytes.len() >= 2 {
        let len = match bytes[1] & 0x7f {
            126 => 4 + usize::from(u16::from_be_bytes([bytes[2], bytes[3]])),
            127 => unreachable!("no 64-bit lengths here"),
            n => 2 + usize::from(n),
        };
        ops.push(bytes[0] & 0x0f);
        bytes = &bytes[len.min(bytes.len())..];
    }
    ops
}

#[test]
fn a_subscribe_ack_waits_until_every_home_confirmed_and_precedes_the_last_backlog() {
    let mut cs = cores(2);
    let here = topic_homed_at(0, 2);
    let there = topic_homed_at(1, 2);
    publish(&mut cs, 0, &there, "1");
    let c = cs[0].register(Transport::Sse, 10);
    cs[0].set_stream_cursor(c, 2);
    let topics = vec![here.clone(), there.clone()];
    let ack = Bytes::from_static(b"ACK\n");
    cs[0]
        .subscribe_acked(
            c,
            &topics,
            Sinces::Each(vec![Since::Live, Since::After(0)]),
            ack,
        )
        .unwrap();
    let mut socks = Sockets::default();
    socks.flush_all(&mut cs);
    assert!(
        !socks.text(10).contains("ACK"),
        "no ack before the remote home answered"
    );
    pump(&mut cs);
    socks.flush_all(&mut cs);
    let text = socks.text(10);
    let ack_at = text.find("ACK").expect("ack after the answer");
    assert!(text.find("\"data\":1").expect("backlog") > ack_at, "{text}");
}

#[test]
fn an_earlier_deadline_for_an_existing_entry_wakes_the_tick_task() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Wake, Waker};
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let mut cs = cores(1);
    let c = cs[0].register(Transport::Sse, 10);
    let count = Arc::new(Count(AtomicUsize::new(0)));
    let waker = Waker::from(count.clone());
    cs[0].park_ticks(&mut Context::from_waker(&waker));
    cs[0].set_expiry(c, Tick::new(200));
    // The wake is one of the core's effects.
    assert_eq!(count.0.load(Ordering::SeqCst), 0, "queued, not done");
    cs[0].effects.wake_tasks();
    assert_eq!(
        count.0.load(Ordering::SeqCst),
        1,
        "the tick task sleeps until the heartbeat otherwise"
    );
    cs[0].advance_timers(Tick::new(200));
    assert_eq!(
        cs[0].client(c).unwrap().lifecycle(),
        Lifecycle::Closing(CloseReason::TokenExpired)
    );
}

/// One core sharing its topics through a broker; the test plays the bridge.
struct BrokerNode {
    core: CoreState,
    /// What the core sent to the bridge, not answered yet.
    to_bridge: Vec<CoreMsg>,
}

impl BrokerNode {
    fn new() -> Self {
        let core = cores(1).pop().map(CoreState::with_broker);
        BrokerNode {
            core: core.expect("one core"),
            to_bridge: Vec::new(),
        }
    }

    /// Handles the core's messages to itself; keeps those to the bridge.
    fn pump(&mut self) {
        loop {
            let out = self.core.take_sends();
            if out.is_empty() {
                return;
            }
            for (to, msg) in out {
                if to == 0 {
                    self.core.handle(msg);
                } else {
                    self.to_bridge.push(msg);
                }
            }
        }
    }

    fn subscribe(&mut self, fd: RawFd, since: Since) -> ClientId {
        let c = self.core.register(Transport::Sse, fd);
        self.core.set_stream_cursor(c, 1);
        self.core.subscribe(c, "t", since).unwrap();
        self.pump();
        c
    }

    /// The bridge reads stream entry `key` (payload `key` too).
    fn entry(&mut self, key: u64) {
        self.core.handle(CoreMsg::Entry(StreamEntry {
            topic: Arc::from("t"),
            key,
            event: None,
            data: key.to_string().into_bytes(),
        }));
        self.pump();
    }

    /// The bridge answers the oldest `Range`: whether the stream holds `after`.
    fn answer_range(&mut self, holds_after: bool) {
        let at = self
            .to_bridge
            .iter()
            .position(|m| matches!(m, CoreMsg::Range { .. }))
            .expect("a Range for the bridge");
        let CoreMsg::Range {
            topic,
            after,
            upto,
            client,
            req,
        } = self.to_bridge.remove(at)
        else {
            unreachable!()
        };
        assert_eq!(after, upto, "a check of `after` alone");
        self.core.handle(CoreMsg::Ranged {
            topic,
            after,
            upto,
            client,
            req,
            entries: Vec::new(),
            trimmed: !holds_after,
        });
        self.pump();
    }
}

#[test]
fn a_broker_resume_from_past_what_the_node_has_read_starts_right_after_it() {
    let mut n = BrokerNode::new();
    n.subscribe(10, Since::Live);
    assert!(matches!(n.to_bridge.pop(), Some(CoreMsg::Watch { .. })));
    n.core.handle(CoreMsg::Watching {
        topic: Arc::from("t"),
        from: 100,
    });
    n.entry(101);
    // Seen on another node: 104, which this node has not read yet. The bridge
    // reads up to past it before the check comes back...
    n.subscribe(11, Since::After(104));
    for key in 102..=105 {
        n.entry(key);
    }
    n.answer_range(true);
    // ... or the check comes back first.
    n.subscribe(12, Since::After(108));
    n.answer_range(true);
    for key in 106..=109 {
        n.entry(key);
    }
    let mut socks = Sockets::default();
    socks.flush(&mut n.core);
    let all: Vec<String> = (101..=109).map(|k| k.to_string()).collect();
    assert_eq!(socks.data(10), all);
    assert_eq!(socks.data(11), ["105", "106", "107", "108", "109"]);
    assert_eq!(socks.data(12), ["109"]);
    for fd in [11, 12] {
        assert!(
            !socks.text(fd).contains("ringcast.gap"),
            "{}",
            socks.text(fd)
        );
    }
}

#[test]
fn a_broker_resume_from_an_id_the_stream_does_not_hold_past_the_head_is_a_gap() {
    let mut n = BrokerNode::new();
    n.subscribe(10, Since::Live);
    n.core.handle(CoreMsg::Watching {
        topic: Arc::from("t"),
        from: 100,
    });
    n.subscribe(11, Since::After(500));
    n.answer_range(false);
    n.entry(101);
    let mut socks = Sockets::default();
    socks.flush(&mut n.core);
    let text = socks.text(11);
    assert!(text.contains("event: ringcast.gap"), "{text}");
    assert!(text.contains("id never issued by this server"), "{text}");
    assert_eq!(socks.data(11)[1..], ["101"]);
}

#[test]
fn a_flush_in_slices_writes_each_client_once_with_everything_queued_by_its_turn() {
    let mut cs = cores(1);
    let fds: Vec<RawFd> = (100..130).collect();
    for &fd in &fds {
        let c = cs[0].register(Transport::Sse, fd);
        cs[0].set_stream_cursor(c, 1);
        cs[0].subscribe(c, "t", Since::Live).unwrap();
    }
    let mut socks = Sockets::default();
    socks.flush(&mut cs[0]);
    publish(&mut cs, 0, "t", "1");
    let mut writes: HashMap<RawFd, usize> = HashMap::new();
    let mut slice = |core: &mut CoreState, max: usize| {
        core.flush_dirty_upto(max, |fd, iov: &[IoSlice<'_>]| {
            *writes.entry(fd).or_default() += 1;
            socks.write(fd, iov)
        })
    };
    assert!(slice(&mut cs[0], 10), "20 clients left");
    // A message arrives between slices: the clients not yet written take it
    // in the same write; the ten already written get it in a write of their own.
    publish(&mut cs, 0, "t", "2");
    assert!(slice(&mut cs[0], 10));
    assert!(slice(&mut cs[0], 10), "the first ten, dirty again, wait");
    assert!(!slice(&mut cs[0], 10));
    for (i, fd) in fds.iter().enumerate() {
        assert_eq!(socks.data(*fd), ["1", "2"], "fd {fd}");
        assert_eq!(writes[fd], if i < 10 { 2 } else { 1 }, "fd {fd}");
    }
}

/// A socket that takes up to `room` bytes per flush, then blocks.
fn write_some<'a>(
    socks: &'a mut Sockets,
    room: &'a mut usize,
) -> impl FnMut(RawFd, &[IoSlice<'_>]) -> io::Result<usize> + 'a {
    move |fd, iov| {
        if *room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let out = socks.0.entry(fd).or_default();
        let mut n = 0;
        for s in iov {
            let take = s.len().min(*room - n);
            out.extend_from_slice(&s[..take]);
            n += take;
            if n == *room {
                break;
            }
        }
        *room -= n;
        Ok(n)
    }
}

#[test]
fn a_resume_longer_than_the_outbox_bound_is_paced_by_the_socket_not_cut() {
    let mut cs = cores_with(1, HistoryLimits::per_topic(1000, 8 << 20));
    cs[0].limits.max_outbox_bytes = 16 * 1024;
    for i in 1..=400 {
        publish(&mut cs, 0, "t", &format!("\"{i:0>1000}\""));
    }
    let c = cs[0].admit(Admission {
        transport: Transport::Sse,
        fd: 10,
        head: b"HEAD\n",
        expires_at: None,
        topics: &["t".to_string()],
        sinces: Sinces::All(Since::After(0)),
        ws_deflate: 0,
    });
    // 400 KiB of backlog, 25 times the bound: the socket takes 8 KiB a turn.
    let mut socks = Sockets::default();
    for turn in 0..200 {
        let mut room = 8 * 1024;
        if turn == 100 {
            // Live messages during the replay queue behind it.
            publish(&mut cs, 0, "t", "\"live\"");
        }
        cs[0].flush_client(c, write_some(&mut socks, &mut room));
        cs[0].flush_dirty(write_some(&mut socks, &mut room));
        assert!(
            !matches!(cs[0].client(c).unwrap().lifecycle(), Lifecycle::Closing(_)),
            "cut at turn {turn}"
        );
        assert!(cs[0].client(c).unwrap().outbox.bytes() <= 2 * REPLAY_SLICE);
    }
    let text = socks.text(10);
    assert!(text.starts_with("HEAD\n"), "{}", &text[..40]);
    let data = socks.data(10);
    assert_eq!(data.len(), 401);
    for (i, d) in data[..400].iter().enumerate() {
        assert_eq!(d, &format!("\"{:0>1000}\"", i + 1));
    }
    assert_eq!(data[400], "\"live\"");
    assert!(cs[0].client(c).unwrap().replay.is_none());
    assert_eq!(cs[0].metrics().slow_consumers_sse.get(), 0);
}

#[test]
fn a_client_that_stops_reading_during_a_resume_is_cut_for_live_traffic() {
    let mut cs = cores(1);
    cs[0].limits.max_outbox_bytes = 4096;
    for i in 1..=50 {
        publish(&mut cs, 0, "t", &format!("\"{i:0>500}\""));
    }
    let c = cs[0].register(Transport::Ws, 10);
    cs[0].queue_head(c, b"HEAD");
    cs[0].subscribe(c, "t", Since::After(0)).unwrap();
    let mut none = 0;
    let mut socks = Sockets::default();
    cs[0].flush_dirty(write_some(&mut socks, &mut none));
    // The backlog waits without counting; live messages count.
    assert!(!matches!(
        cs[0].client(c).unwrap().lifecycle(),
        Lifecycle::Closing(_)
    ));
    for _ in 0..20 {
        publish(&mut cs, 0, "t", &format!("\"{}\"", "y".repeat(400)));
    }
    assert_eq!(
        cs[0].client(c).unwrap().lifecycle(),
        Lifecycle::Closing(CloseReason::SlowConsumer)
    );
    // The cut keeps the unwritten head and drops the rest, replay included.
    assert!(cs[0].begin_close(c).is_some());
    assert_eq!(cs[0].take_rest(c), b"HEAD");
    assert!(cs[0].client(c).unwrap().replay.is_none());
}

#[test]
fn a_storm_of_resumes_from_one_position_shares_one_encoding_of_each_message() {
    let mut cs = cores(1);
    for i in 1..=20 {
        publish(&mut cs, 0, "t", &i.to_string());
    }
    let clients: Vec<ClientId> = (0..50)
        .map(|fd| {
            let c = cs[0].register(Transport::Ws, 100 + fd);
            cs[0].subscribe(c, "t", Since::After(5)).unwrap();
            c
        })
        .collect();
    let mut frames: Vec<Vec<*const u8>> = Vec::new();
    for &c in &clients {
        let client = cs[0].clients.get_mut(c).unwrap();
        refill(client);
        let ptrs = client
            .outbox
            .frames()
            .map(|f| f.as_ptr())
            .collect::<Vec<_>>();
        assert_eq!(ptrs.len(), 15);
        frames.push(ptrs);
    }
    assert!(
        frames.windows(2).all(|w| w[0] == w[1]),
        "one copy per message"
    );
}

#[test]
fn every_effect_waits_in_the_queue_and_wakes_the_runner_once_per_turn() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Wake, Waker};
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let mut cs = cores(2);
    let topic = topic_homed_at(1, 2);
    let runner = Arc::new(Count(AtomicUsize::new(0)));
    let waker = Waker::from(runner.clone());
    let mut cx = Context::from_waker(&waker);
    assert!(
        cs[0].poll_effects(&mut cx, Duration::ZERO).is_pending(),
        "nothing queued yet"
    );
    // A subscribe (a message for the home core, a client to write) and a
    // publish (another message): one wake of the runner for all of it.
    let a = cs[0].register(Transport::Sse, 10);
    cs[0].subscribe(a, &topic, Since::Live).unwrap();
    cs[0].publish(&topic, None, b"1".to_vec());
    assert_eq!(runner.0.load(Ordering::SeqCst), 1);
    assert!(cs[0].poll_effects(&mut cx, Duration::ZERO).is_ready());
    // Carried out at one point: the messages leave in order, nothing is left.
    let mut sent = Vec::new();
    let mut socks = Sockets::default();
    let more = cs[0].run_effects(
        || Duration::ZERO,
        usize::MAX,
        |to, msg| sent.push((to, msg)),
        |fd, iov: &[IoSlice<'_>]| socks.write(fd, iov),
    );
    assert!(!more);
    assert!(matches!(
        sent.as_slice(),
        [(1, CoreMsg::Subscribe { .. }), (1, CoreMsg::Publish { .. })]
    ));
    assert!(
        cs[0].poll_effects(&mut cx, Duration::ZERO).is_pending(),
        "all carried out"
    );
    assert_eq!(runner.0.load(Ordering::SeqCst), 1);
}
