//! The bounds over all home topics of a core, on plain data: the budget, the age
//! limit, forgetting, and positions that never repeat.

use std::collections::BTreeMap;

use super::*;
use crate::core::history::Resume;
use crate::proto::cursor::{Epoch, IdScheme};

fn homes(limits: HistoryLimits) -> HomeTopics {
    HomeTopics::new(limits, Arc::new(CoreMetrics::default()))
}

/// Stamps the next message of `topic` (`size` bytes of data) at tick `now`,
/// as `home_publish` does.
fn publish(h: &mut HomeTopics, topic: &str, size: usize, now: u64) -> Arc<Message> {
    let home = h.get_or_create(topic);
    home.seq += 1;
    let data = format!("\"{}\"", "x".repeat(size));
    let msg = Arc::new(Message::encode(
        IdScheme::Local(Epoch::new(1)),
        home.name.clone(),
        home.seq,
        None,
        data.as_bytes(),
    ));
    h.keep(&msg, Tick::new(now));
    msg
}

fn kept(h: &mut HomeTopics, topic: &str) -> Vec<u64> {
    h.get_mut(topic)
        .map(|t| t.history.all().map(|m| m.seq).collect())
        .unwrap_or_default()
}

/// What the bookkeeping must add up to: every message kept and every topic.
fn counted(h: &HomeTopics) -> usize {
    h.topics
        .iter()
        .map(|(_, t)| topic_bytes(&t.name) + t.history.all().map(|m| m.held_bytes()).sum::<usize>())
        .sum()
}

fn limits(memory: usize, ttl: u64) -> HistoryLimits {
    let ttl = Tick::new(ttl);
    HistoryLimits {
        len: 1000,
        bytes: 1 << 20,
        memory,
        ttl,
    }
}

#[test]
fn over_budget_the_oldest_message_of_the_core_goes_first_whatever_its_topic() {
    let mut h = homes(limits(usize::MAX, 0));
    let one = publish(&mut h, "a", 100, 0).held_bytes();
    // Room for the three topics and about four messages.
    let budget = 3 * topic_bytes("a") + 4 * one + one / 2;
    h.limits.memory = budget;
    h.get_or_create("b").cores.push(0);
    publish(&mut h, "b", 100, 1);
    publish(&mut h, "c", 100, 2);
    publish(&mut h, "a", 100, 3);
    assert_eq!(h.history_bytes(), counted(&h));
    publish(&mut h, "b", 100, 4);
    // a-1, the oldest, went; then b-1 for the next one.
    publish(&mut h, "c", 100, 5);
    assert_eq!(kept(&mut h, "a"), vec![2]);
    assert_eq!(kept(&mut h, "b"), vec![2]);
    assert_eq!(kept(&mut h, "c"), vec![1, 2]);
    assert!(
        h.history_bytes() <= budget,
        "{} > {budget}",
        h.history_bytes()
    );
    assert_eq!(h.history_bytes(), counted(&h));
    assert_eq!(h.metrics.eviction(EvictionReason::Budget).get(), 2);
    // A resume from before an eviction is told, never silently served.
    let (resume, backlog) = h.get_or_create("b").backlog_since(0);
    assert_eq!(resume, Resume::Trimmed { oldest: 2 });
    assert_eq!(backlog.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![2]);
}

#[test]
fn messages_past_the_age_limit_leave_and_their_idle_topics_are_forgotten() {
    let mut h = homes(limits(usize::MAX, 100));
    publish(&mut h, "a", 10, 0);
    publish(&mut h, "b", 10, 50);
    h.get_or_create("b").cores.push(1);
    publish(&mut h, "a", 10, 80);
    assert_eq!(h.next_expiry(), Some(Tick::new(100)));
    assert_eq!(h.expire(Tick::new(99)), Some(Tick::new(100)));
    assert_eq!(h.expire(Tick::new(100)), Some(Tick::new(150)));
    assert_eq!(kept(&mut h, "a"), vec![2]);
    assert_eq!(h.expire(Tick::new(179)), Some(Tick::new(180)));
    assert_eq!(h.len(), 2);
    assert_eq!(h.expire(Tick::new(1000)), None);
    // "a" had nothing but history: forgotten. "b" has a listener: kept, empty.
    assert_eq!(h.len(), 1);
    assert!(h.get_mut("a").is_none());
    assert_eq!(kept(&mut h, "b"), Vec::<u64>::new());
    assert_eq!(h.metrics.eviction(EvictionReason::Ttl).get(), 3);
    assert_eq!(h.metrics.topics_forgotten.get(), 1);
    assert_eq!(h.history_bytes(), counted(&h));
    // Its last listener gone, "b" is forgotten too; nothing is held.
    assert!(!h.release("b", 1));
    assert!(h.is_empty());
    assert_eq!(h.history_bytes(), 0);
}

#[test]
fn a_forgotten_topic_published_again_never_repeats_a_position() {
    let mut h = homes(limits(usize::MAX, 10));
    for now in 0..5 {
        publish(&mut h, "a", 10, now);
    }
    publish(&mut h, "b", 10, 0);
    h.expire(Tick::new(100));
    assert!(h.is_empty(), "both topics forgotten");
    let again = publish(&mut h, "a", 10, 200);
    assert!(again.seq > 5, "position {} issued again", again.seq);
    let other = publish(&mut h, "b", 10, 200);
    assert!(other.seq > 5, "position {} below the floor", other.seq);
    // A resume with an id from before the forgetting gets a gap, then what is kept.
    let (resume, backlog) = h.get_or_create("a").backlog_since(3);
    assert_eq!(resume, Resume::Trimmed { oldest: again.seq });
    assert_eq!(
        backlog.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![again.seq]
    );
}

#[test]
fn a_client_that_saw_the_last_message_of_a_forgotten_topic_resumes_it_without_a_gap() {
    let mut h = homes(limits(usize::MAX, 10));
    publish(&mut h, "quiet", 10, 0);
    for now in 0..50 {
        publish(&mut h, "busy", 10, now);
    }
    h.expire(Tick::new(100));
    assert!(h.is_empty());
    // "busy" raised the floor to 50; "quiet" is remembered at 1.
    let again = publish(&mut h, "quiet", 10, 200);
    assert!(again.seq > 50);
    let (resume, backlog) = h.get_or_create("quiet").backlog_since(1);
    assert_eq!(resume, Resume::Complete);
    assert_eq!(
        backlog.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![again.seq]
    );
    // From before its last message, the gap is reported.
    let (resume, _) = h.get_or_create("quiet").backlog_since(0);
    assert_eq!(resume, Resume::Trimmed { oldest: again.seq });
}

#[test]
fn forgotten_topics_are_remembered_up_to_a_bound() {
    let mut f = ForgottenTopics::default();
    for i in 0..FORGOTTEN_KEPT as u64 + 10 {
        f.remember(&format!("t{i}"), i + 1);
    }
    assert_eq!(f.last.len(), FORGOTTEN_KEPT);
    assert_eq!(f.take("t0"), None, "the oldest went first");
    assert_eq!(f.take("t20"), Some(21));
    // A topic forgotten twice keeps its newer position when the older entry leaves.
    f.remember("again", 5);
    for i in 0..FORGOTTEN_KEPT as u64 {
        if i == 10 {
            f.remember("again", 9);
        }
        f.remember(&format!("u{i}"), 1);
    }
    assert_eq!(f.take("again"), Some(9));
}

#[test]
fn a_broker_topic_keeps_its_stream_positions() {
    let mut h = homes(limits(usize::MAX, 10));
    h.set_broker();
    let home = h.get_or_create("a");
    home.seq = 1_000_000;
    h.restart_history("a", 1_000_000);
    h.get_or_create("a").seq = 1_000_001;
    let msg = Arc::new(Message::encode(
        IdScheme::Stream,
        Arc::from("a"),
        1_000_001,
        None,
        b"1",
    ));
    h.keep(&msg, Tick::ZERO);
    h.expire(Tick::new(100));
    assert!(h.is_empty());
    assert_eq!(h.get_or_create("b").seq, 0, "stream ids need no floor");
}

#[test]
fn a_topic_trimmed_by_its_own_bounds_leaves_no_growing_age_order() {
    let mut h = homes(HistoryLimits {
        len: 10,
        ..limits(usize::MAX, 0)
    });
    for i in 0..100_000 {
        publish(&mut h, "hot", 10, i);
    }
    assert_eq!(h.messages(), 10);
    assert!(h.age.len() <= 2 * 10 + 64, "age order of {}", h.age.len());
    assert_eq!(
        h.metrics.eviction(EvictionReason::Count).get(),
        100_000 - 10
    );
    assert_eq!(h.history_bytes(), counted(&h));
}

#[test]
fn resumes_from_one_position_share_one_backlog_until_the_history_changes() {
    let mut h = homes(limits(usize::MAX, 0));
    for i in 0..5 {
        publish(&mut h, "a", 10, i);
    }
    let (_, first) = h.get_or_create("a").backlog_since(2);
    let (_, second) = h.get_or_create("a").backlog_since(2);
    assert!(Arc::ptr_eq(&first, &second));
    publish(&mut h, "a", 10, 9);
    let (_, third) = h.get_or_create("a").backlog_since(2);
    assert_eq!(
        third.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![3, 4, 5, 6]
    );
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Op {
    Publish { topic: u8, size: u16 },
    Listen { topic: u8 },
    Release { topic: u8 },
    Tick { ticks: u8 },
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        6 => (0u8..8, 0u16..600).prop_map(|(topic, size)| Op::Publish { topic, size }),
        1 => (0u8..8).prop_map(|topic| Op::Listen { topic }),
        1 => (0u8..8).prop_map(|topic| Op::Release { topic }),
        2 => (0u8..40).prop_map(|ticks| Op::Tick { ticks }),
    ]
}

proptest::proptest! {
    /// Against a model: the bytes counted are the bytes held, the budget holds
    /// after every publish, every topic's history is in order and ends at its
    /// newest message, and what left for the budget or the age limit is older
    /// than everything still kept.
    #[test]
    fn the_budget_accounting_matches_a_model(
        ops in proptest::collection::vec(op(), 1..300),
        budget in 2_000usize..20_000,
        ttl in 0u64..60,
        len in 1usize..6,
        topic_bounds in proptest::bool::ANY,
    ) {
        let (len, bytes) = if topic_bounds { (len, 3_000) } else { (usize::MAX, usize::MAX) };
        let mut h = homes(HistoryLimits { len, bytes, memory: budget, ttl: Tick::new(ttl) });
        let mut now = 0u64;
        // Publish order of every message: (topic, position) → index.
        let mut order: BTreeMap<(String, u64), usize> = BTreeMap::new();
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        let mut seen_positions = std::collections::HashSet::new();
        for op in ops {
            match op {
                Op::Publish { topic, size } => {
                    let name = format!("t{topic}");
                    let msg = publish(&mut h, &name, usize::from(size), now);
                    proptest::prop_assert!(
                        seen_positions.insert((name.clone(), msg.seq)),
                        "position {} of {name} issued twice", msg.seq
                    );
                    order.insert((name.clone(), msg.seq), order.len());
                    last.insert(name, msg.seq);
                }
                Op::Listen { topic } => h.get_or_create(&format!("t{topic}")).cores.push(0),
                Op::Release { topic } => {
                    h.release(&format!("t{topic}"), 0);
                }
                Op::Tick { ticks } => {
                    now += u64::from(ticks);
                    h.expire(Tick::new(now));
                }
            }
            proptest::prop_assert_eq!(h.history_bytes(), counted(&h));
            let held: usize = h.topics.iter().map(|(_, t)| t.history.len()).sum();
            proptest::prop_assert_eq!(h.messages(), held);
            let messages: usize = h.topics.iter().map(|(_, t)| t.history.len()).sum();
            proptest::prop_assert!(
                h.history_bytes() <= budget || messages == 0,
                "{} bytes held over a budget of {budget} with {messages} messages",
                h.history_bytes()
            );
            for (_, t) in h.topics.iter() {
                let seqs: Vec<u64> = t.history.all().map(|m| m.seq).collect();
                proptest::prop_assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{:?}", seqs);
                if let Some(&newest) = seqs.last() {
                    proptest::prop_assert_eq!(Some(&newest), last.get(&*t.name));
                }
            }
        }
        // Without per-topic bounds, only the core's take messages out, oldest
        // first: what is kept is exactly the newest messages of the core.
        if !topic_bounds {
            let mut kept: Vec<usize> = h
                .topics
                .iter()
                .flat_map(|(_, t)| t.history.all().map(|m| order[&(t.name.to_string(), m.seq)]))
                .collect();
            kept.sort_unstable();
            let first = order.len() - kept.len();
            proptest::prop_assert!(
                kept.iter().copied().eq(first..order.len()),
                "kept {kept:?} of {} published", order.len()
            );
        }
    }
}
