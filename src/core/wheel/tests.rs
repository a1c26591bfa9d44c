//! Wheel tests on virtual time: ticks are plain integers, nothing sleeps.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::level::{level_span, slot_span};
use super::*;

/// For assertions: walks every list and the free list and checks each stored invariant.
impl<T> TimerWheel<T> {
    fn check_invariants(&self) {
        let mut live = 0;
        let mut walk = |list: List, head: u32| {
            let mut prev = NIL;
            let mut idx = head;
            while idx != NIL {
                let node = self.node(idx);
                assert_eq!(node.list, list, "node {idx:#x}");
                assert_eq!(node.prev, prev, "node {idx:#x} in {list:?}");
                match list {
                    List::Pending => assert!(
                        node.deadline <= self.elapsed,
                        "pending node {idx:#x}: deadline {:#x} > elapsed {:#x}",
                        node.deadline,
                        self.elapsed
                    ),
                    List::Slot { level, slot } => {
                        let due = slot_due(self.elapsed, level as usize, slot as usize);
                        assert!(
                            self.elapsed < due && due <= node.deadline,
                            "node {idx:#x} in {list:?}: elapsed {:#x}, slot due {due:#x}, \
                             deadline {:#x}",
                            self.elapsed,
                            node.deadline
                        );
                    }
                }
                live += 1;
                prev = idx;
                idx = node.next;
            }
        };
        walk(List::Pending, self.pending);
        for (level, lvl) in self.levels.iter().enumerate() {
            for slot in 0..SLOTS {
                let head = lvl.head(slot);
                assert_eq!(
                    head != NIL,
                    lvl.occupied() & (1 << slot) != 0,
                    "level {level} slot {slot}: head {head:#x}, occupied {:#066b}",
                    lvl.occupied()
                );
                walk(
                    List::Slot {
                        level: level as u8,
                        slot: slot as u8,
                    },
                    head,
                );
            }
        }
        assert_eq!(live, self.len, "linked entries vs len");
        let mut free = 0;
        let mut idx = self.free;
        while idx != NIL {
            match self.entries[idx as usize].state {
                State::Vacant { next_free } => idx = next_free,
                State::Occupied(_) => panic!("occupied entry {idx:#x} on the free list"),
            }
            free += 1;
        }
        assert_eq!(
            free + self.len,
            self.entries.len(),
            "free + live vs slab size"
        );
    }
}

/// The tick at which `slot` of `level` next comes due after `elapsed`.
fn slot_due(elapsed: u64, level: usize, slot: usize) -> u64 {
    let start = (elapsed & !(level_span(level) - 1)) + slot as u64 * slot_span(level);
    if start <= elapsed {
        start + level_span(level)
    } else {
        start
    }
}

/// Drives the wheel like the tick task does: sleeps (virtually) until `next_expiration`,
/// polls there, until nothing is due at or before `until`; then polls at `until`.
/// Returns `(fire tick, value)` in firing order.
fn run_until<T>(wheel: &mut TimerWheel<T>, until: u64) -> Vec<(u64, T)> {
    let mut fired = Vec::new();
    loop {
        let now = match wheel.next_expiration() {
            Some(next) if next <= until => next.max(wheel.now()),
            _ => until,
        };
        wheel.advance(now, |_, value| fired.push((now, value)));
        if now == until {
            return fired;
        }
    }
}

/// SplitMix64: a tiny deterministic generator, so the big test needs no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A delay spread over every level and beyond: up to 2^40 ticks, log-uniform-ish.
    fn delay(&mut self) -> u64 {
        let bits = self.next() % 41;
        self.next() & ((1u64 << bits) - 1)
    }
}

#[test]
fn entries_fire_in_deadline_order() {
    let mut wheel = TimerWheel::new();
    let deadlines = [
        70,
        3,
        4096 * 3 + 1,
        64,
        1,
        63,
        65,
        262_144,
        4095,
        4096,
        200_000,
    ];
    for &d in &deadlines {
        wheel.insert(d, d);
    }
    let fired = run_until(&mut wheel, 1 << 20);
    let mut sorted = deadlines.to_vec();
    sorted.sort_unstable();
    assert_eq!(fired.iter().map(|&(_, d)| d).collect::<Vec<_>>(), sorted);
    for (tick, d) in fired {
        assert_eq!(tick, d, "fired at {tick:#x}, deadline {d:#x}");
    }
    assert!(wheel.is_empty());
}

#[test]
fn entries_in_the_same_slot_all_fire_at_their_tick() {
    let mut wheel = TimerWheel::new();
    // Same level-0 slot, and same level-2 slot with different deadlines inside it.
    for i in 0..10 {
        wheel.insert(5, i);
    }
    for d in [8192 + 7, 8192 + 7, 8192 + 100, 8192 + 4095] {
        wheel.insert(d, d);
    }
    let fired = run_until(&mut wheel, 20_000);
    assert_eq!(fired.len(), 14);
    let mut first: Vec<_> = fired[..10].iter().map(|&(t, v)| (t, v)).collect();
    first.sort_unstable();
    assert_eq!(first, (0..10).map(|i| (5, i)).collect::<Vec<_>>());
    assert_eq!(
        &fired[10..],
        &[(8199, 8199), (8199, 8199), (8292, 8292), (12287, 12287)]
    );
}

#[test]
fn entries_cascade_between_every_level_at_each_boundary() {
    // Deadlines just below, at and just above each level boundary (and boundaries of
    // slots within levels), from several starting positions, each alone in the wheel.
    let starts = [0u64, 1, 63, 64, 4095, 4097, MAX_SPAN - 1, MAX_SPAN + 12_345];
    for &start in &starts {
        for level in 1..=NUM_LEVELS {
            for mult in [1u64, 2, 63] {
                let boundary = slot_span(level) * mult;
                for delta in boundary.saturating_sub(2)..=boundary + 2 {
                    if delta == 0 {
                        continue;
                    }
                    let mut wheel = TimerWheel::new();
                    wheel.advance(start, |_, _: u64| unreachable!());
                    let deadline = start + delta;
                    wheel.insert(deadline, deadline);
                    wheel.check_invariants();
                    let fired = run_until(&mut wheel, deadline + slot_span(NUM_LEVELS - 1));
                    assert_eq!(
                        fired,
                        vec![(deadline, deadline)],
                        "start {start:#x} deadline {deadline:#x} = start + {delta:#b}"
                    );
                    wheel.check_invariants();
                }
            }
        }
    }
}

#[test]
fn far_future_entries_beyond_the_top_level_fire_at_their_tick() {
    let mut wheel = TimerWheel::new();
    let far = [
        MAX_SPAN,
        MAX_SPAN + 1,
        3 * MAX_SPAN + 12_345,
        70 * MAX_SPAN - 1,
    ];
    for &d in &far {
        wheel.insert(d, d);
    }
    wheel.insert(10, 10);
    wheel.check_invariants();
    let fired = run_until(&mut wheel, 100 * MAX_SPAN);
    let mut expect = vec![(10, 10)];
    expect.extend(far.iter().map(|&d| (d, d)));
    assert_eq!(fired, expect);
    assert!(wheel.is_empty());
    // And by one large jump: nothing is lost, nothing early.
    for &d in &far {
        wheel.insert(100 * MAX_SPAN + d, d);
    }
    let mut got = Vec::new();
    wheel.advance(200 * MAX_SPAN, |_, d| got.push(d));
    assert_eq!(got, far);
}

#[test]
fn a_deadline_at_or_before_now_fires_at_the_next_poll() {
    let mut wheel = TimerWheel::new();
    wheel.advance(1000, |_, _: u64| unreachable!());
    wheel.insert(1000, 1000);
    wheel.insert(3, 3);
    wheel.insert(1001, 1001);
    assert_eq!(wheel.next_expiration(), Some(1000), "due entries: poll now");
    let mut got = Vec::new();
    wheel.advance(1000, |_, v| got.push(v));
    got.sort_unstable();
    assert_eq!(got, [3, 1000]);
    assert_eq!(wheel.next_expiration(), Some(1001));
    // Inserting a due entry between polls is handed out in the same loop.
    let mut got = Vec::new();
    while let Some((_, v)) = wheel.poll_expired(1001) {
        if v == 1001 {
            wheel.insert(0, 0);
        }
        got.push(v);
    }
    assert_eq!(got, [1001, 0]);
}

#[test]
fn cancel_before_fire_returns_the_value_and_it_never_fires() {
    let mut wheel = TimerWheel::new();
    let a = wheel.insert(100, "a");
    let b = wheel.insert(5000, "b");
    let c = wheel.insert(100, "c");
    assert_eq!(wheel.cancel(a), Some("a"));
    assert_eq!(wheel.cancel(b), Some("b"));
    wheel.check_invariants();
    assert_eq!(run_until(&mut wheel, 10_000), [(100, "c")]);
    assert_eq!(wheel.cancel(c), None);
}

#[test]
fn cancel_after_fire_is_a_no_op() {
    let mut wheel = TimerWheel::new();
    let a = wheel.insert(10, 1);
    let mut fired = None;
    wheel.advance(10, |h, v| fired = Some((h, v)));
    assert_eq!(fired, Some((a, 1)));
    assert_eq!(wheel.cancel(a), None);
    assert_eq!(wheel.get(a), None);
    assert!(!wheel.reschedule(a, 20));
    assert_eq!(wheel.len(), 0);
}

#[test]
fn a_stale_handle_cannot_cancel_the_slots_new_occupant() {
    let mut wheel = TimerWheel::new();
    let old = wheel.insert(10, "old");
    assert_eq!(wheel.cancel(old), Some("old"));
    let new = wheel.insert(10, "new");
    assert_eq!(new.slot, old.slot, "the slot is reused");
    assert_ne!(new.gen, old.gen);
    assert_eq!(wheel.cancel(old), None);
    assert!(!wheel.reschedule(old, 1));
    assert_eq!(wheel.get(new), Some(&"new"));
    assert_eq!(run_until(&mut wheel, 10), [(10, "new")]);
}

#[test]
fn generation_wraps_to_one_on_overflow() {
    let max = Generation(NonZeroU32::MAX);
    assert_eq!(max.next(), Generation::FIRST);
    assert_eq!(Generation::FIRST.next().0.get(), 2);

    let mut wheel = TimerWheel::new();
    let h = wheel.insert(10, ());
    wheel.entries[h.slot as usize].gen = max;
    let h = TimerHandle {
        slot: h.slot,
        gen: max,
    };
    assert_eq!(wheel.cancel(h), Some(()));
    let wrapped = wheel.insert(10, ());
    assert_eq!(wrapped.gen, Generation::FIRST);
    assert_eq!(wheel.cancel(h), None);
    assert_eq!(wheel.cancel(wrapped), Some(()));
}

#[test]
fn an_optional_handle_is_eight_bytes() {
    assert_eq!(std::mem::size_of::<Option<TimerHandle>>(), 8);
}

#[test]
fn len_counts_live_entries() {
    let mut wheel = TimerWheel::new();
    assert!(wheel.is_empty());
    let handles: Vec<_> = (0..100).map(|i| wheel.insert(i * 100, i)).collect();
    assert_eq!(wheel.len(), 100);
    wheel.cancel(handles[50]);
    wheel.cancel(handles[50]);
    assert_eq!(wheel.len(), 99);
    assert!(wheel.reschedule(handles[0], 1 << 20));
    assert_eq!(wheel.len(), 99);
    let fired = run_until(&mut wheel, 1000);
    assert_eq!(
        fired.len(),
        10,
        "0 was rescheduled away, 100..=1000 fired: {fired:?}"
    );
    assert_eq!(wheel.len(), 89);
    wheel.advance(1 << 20, |_, _| {});
    assert_eq!(wheel.len(), 0);
    assert!(wheel.is_empty());
    wheel.check_invariants();
}

#[test]
fn advancing_by_large_jumps_fires_everything_due_in_order() {
    let mut wheel = TimerWheel::new();
    let mut rng = Rng(7);
    let mut deadlines: Vec<u64> = (0..10_000).map(|_| rng.delay()).collect();
    for &d in &deadlines {
        wheel.insert(d, d);
    }
    let mut now = 0;
    let mut fired = Vec::new();
    for jump in [1u64, 1000, 1 << 20, 1 << 30, 1 << 36, 1 << 41] {
        now += jump;
        wheel.advance(now, |_, d| {
            assert!(d <= now, "fired {d:#x} early at {now:#x}");
            fired.push(d);
        });
        wheel.check_invariants();
        assert!(wheel.next_expiration().is_none_or(|next| next > now));
    }
    deadlines.sort_unstable();
    assert_eq!(fired, deadlines);
}

#[test]
fn reschedule_later_only_updates_the_field_and_fires_at_the_new_deadline() {
    let mut wheel = TimerWheel::new();
    let h = wheel.insert(100, "conn");
    let List::Slot { level, slot } = wheel.node(h.slot).list else {
        panic!()
    };
    for later in [150, 5000, 5001] {
        assert!(wheel.reschedule(h, later));
        assert_eq!(
            wheel.node(h.slot).list,
            List::Slot { level, slot },
            "not re-linked"
        );
        wheel.check_invariants();
    }
    assert_eq!(wheel.deadline(h), Some(5001));
    // The old slot comes due first and fires nothing: the entry is re-filed.
    assert_eq!(wheel.next_expiration(), Some(64));
    assert_eq!(run_until(&mut wheel, 10_000), [(5001, "conn")]);
}

#[test]
fn reschedule_earlier_or_to_now_relinks_and_keeps_the_handle() {
    let mut wheel = TimerWheel::new();
    wheel.advance(10, |_, _: &str| {});
    let h = wheel.insert(1 << 20, "conn");
    assert!(wheel.reschedule(h, 20));
    assert_eq!(wheel.next_expiration(), Some(20));
    assert!(wheel.reschedule(h, 5), "earlier than now: due at once");
    assert_eq!(wheel.next_expiration(), Some(10));
    assert!(wheel.reschedule(h, 30), "out of pending again");
    wheel.check_invariants();
    assert_eq!(run_until(&mut wheel, 100), [(30, "conn")]);
}

#[test]
#[should_panic(expected = "time went backwards")]
fn time_going_backwards_panics() {
    let mut wheel = TimerWheel::<()>::new();
    wheel.advance(10, |_, _| {});
    wheel.advance(9, |_, _| {});
}

#[test]
fn a_million_random_entries_each_fire_exactly_once_at_their_deadline() {
    const N: usize = 1_000_000;
    let mut rng = Rng(0x5eed);
    let mut wheel = TimerWheel::with_capacity(N);
    let mut deadlines = vec![0u64; N];
    let mut fired_at = vec![u64::MAX; N];
    let record = |fired: Vec<(u64, u32)>, deadlines: &[u64], fired_at: &mut [u64]| {
        for (tick, i) in fired {
            let d = deadlines[i as usize];
            assert_eq!(fired_at[i as usize], u64::MAX, "entry {i} fired twice");
            assert!(
                d <= tick && tick < d + 1,
                "entry {i}: deadline {d:#x} fired at {tick:#x}"
            );
            fired_at[i as usize] = tick;
        }
    };
    // Half inserted at tick 0, half from the middle of the run.
    for (i, d) in deadlines.iter_mut().enumerate().take(N / 2) {
        *d = rng.delay();
        wheel.insert(*d, i as u32);
    }
    let mid = 1 << 33;
    record(run_until(&mut wheel, mid), &deadlines, &mut fired_at);
    for (i, d) in deadlines.iter_mut().enumerate().skip(N / 2) {
        *d = mid + rng.delay();
        wheel.insert(*d, i as u32);
    }
    assert_eq!(
        wheel.len(),
        N - fired_at.iter().filter(|&&t| t != u64::MAX).count()
    );
    let end = mid + (1 << 41);
    record(run_until(&mut wheel, end), &deadlines, &mut fired_at);
    assert!(wheel.is_empty());
    assert_eq!(wheel.next_expiration(), None);
    assert!(fired_at.iter().all(|&t| t != u64::MAX), "every entry fired");
    wheel.check_invariants();
}

#[derive(Debug, Clone)]
enum Op {
    /// Insert at `now + delay - back` (may be at or before now).
    Insert {
        delay: u64,
        back: u64,
    },
    Cancel(usize),
    Reschedule(usize, u64),
    /// Jump forward by this much.
    Advance(u64),
    /// Jump to `next_expiration`, as the tick task does.
    AdvanceToNext,
}

fn delay() -> impl Strategy<Value = u64> {
    prop_oneof![0..70u64, 0..5000u64, 0..(1u64 << 20), 0..(2 * MAX_SPAN)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (delay(), prop_oneof![3 => Just(0u64), 1 => 0..100u64])
            .prop_map(|(delay, back)| Op::Insert { delay, back }),
        1 => any::<usize>().prop_map(Op::Cancel),
        2 => (any::<usize>(), delay()).prop_map(|(i, d)| Op::Reschedule(i, d)),
        2 => delay().prop_map(Op::Advance),
        2 => Just(Op::AdvanceToNext),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_wheel_matches_a_naive_reference(ops in proptest::collection::vec(op(), 1..200)) {
        let mut wheel = TimerWheel::new();
        // Reference: (effective deadline, id) in firing order; the effective deadline
        // is the deadline, or `now` for one set at or before `now`.
        let mut reference: BTreeMap<(u64, u64), ()> = BTreeMap::new();
        let mut live: Vec<(u64, TimerHandle, u64)> = Vec::new(); // (id, handle, effective)
        let mut stale: Vec<TimerHandle> = Vec::new();
        let mut next_id = 0u64;
        let mut now = 0u64;
        for op in ops {
            match op {
                Op::Insert { delay, back } => {
                    let deadline = (now + delay).saturating_sub(back);
                    let h = wheel.insert(deadline, next_id);
                    let eff = deadline.max(now);
                    reference.insert((eff, next_id), ());
                    live.push((next_id, h, eff));
                    next_id += 1;
                }
                Op::Cancel(i) if !live.is_empty() => {
                    let (id, h, eff) = live.swap_remove(i % live.len());
                    prop_assert_eq!(wheel.cancel(h), Some(id));
                    reference.remove(&(eff, id));
                    stale.push(h);
                }
                Op::Cancel(i) if !stale.is_empty() => {
                    prop_assert_eq!(wheel.cancel(stale[i % stale.len()]), None);
                }
                Op::Reschedule(i, delay) if !live.is_empty() => {
                    let k = i % live.len();
                    let (id, h, eff) = live[k];
                    let deadline = now + delay;
                    prop_assert!(wheel.reschedule(h, deadline));
                    reference.remove(&(eff, id));
                    reference.insert((deadline, id), ());
                    live[k].2 = deadline;
                }
                Op::Cancel(_) | Op::Reschedule(..) => {}
                Op::Advance(_) | Op::AdvanceToNext => {
                    let to = match op {
                        Op::Advance(d) => now + d,
                        _ => match wheel.next_expiration() {
                            Some(next) => next.max(now),
                            None => now,
                        },
                    };
                    let mut fired = Vec::new();
                    wheel.advance(to, |h, id| fired.push((h, id)));
                    let mut expect = Vec::new();
                    while let Some(entry) = reference.first_entry() {
                        if entry.key().0 > to {
                            break;
                        }
                        expect.push(entry.remove_entry().0);
                    }
                    // Same entries; in order of effective deadline (any order within one).
                    let effs: HashMap<u64, u64> = live.iter().map(|&(id, _, e)| (id, e)).collect();
                    let mut got: Vec<(u64, u64)> =
                        fired.iter().map(|&(_, id)| (effs[&id], id)).collect();
                    prop_assert!(got.windows(2).all(|w| w[0].0 <= w[1].0), "order: {:?}", got);
                    got.sort_unstable();
                    prop_assert_eq!(&got, &expect);
                    for (h, id) in fired {
                        let k = live.iter().position(|&(i, ..)| i == id).unwrap();
                        prop_assert_eq!(live.swap_remove(k).1, h);
                        stale.push(h);
                    }
                    now = to;
                }
            }
            wheel.check_invariants();
            prop_assert_eq!(wheel.len(), reference.len());
            // next_expiration is never late.
            match (wheel.next_expiration(), reference.keys().next()) {
                (Some(next), Some(&(first, _))) => prop_assert!(next <= first, "{} > {}", next, first),
                (None, None) => {}
                (next, first) => prop_assert!(false, "next {:?} vs first {:?}", next, first),
            }
        }
    }
}
