//! Hierarchical timer wheel, one per core: every connection timer on a core is one entry
//! here, advanced by one tick task.

mod level;
#[cfg(test)]
mod tests;

use std::num::NonZeroU32;

use level::{level_for, slot_for, Expiration, Level};

/// Bits of the deadline consumed by one level: each level has `2^LEVEL_BITS` slots.
///
/// 6 because then [`SLOTS`] is 64, the width of a `u64`, and finding the next non-empty
/// slot of a level is one `rotate_right` + `trailing_zeros` on its `occupied` bitmap.
pub const LEVEL_BITS: u32 = 6;

/// Slots per level: `2^LEVEL_BITS` = 64, one bit each in a level's `occupied: u64`.
pub const SLOTS: usize = 1 << LEVEL_BITS;

/// Number of levels.
///
/// 6 because `SLOTS^6` ticks ([`MAX_SPAN`]) at the [`TICK`](crate::time::TICK) of 10 ms is about 21.8
/// years, so every deadline a server sets (seconds to minutes) files without clamping,
/// and the whole wheel head is 6 × (8 + 64 × 4) bytes ≈ 1.6 KiB per core.
pub const NUM_LEVELS: usize = 6;

/// Ticks covered by the whole wheel: `2^(LEVEL_BITS × NUM_LEVELS)` = 2^36. A deadline
/// further ahead than this is clamped to the top level and re-filed when that slot is
/// reached (see [`TimerWheel`]).
pub const MAX_SPAN: u64 = 1 << (LEVEL_BITS as usize * NUM_LEVELS);

/// "No entry": the null link of the intrusive lists and of the free list.
const NIL: u32 = u32::MAX;

/// The key of a wheel entry: a slab index and the generation of its occupant.
///
/// A handle outlives its entry harmlessly: once the entry fired or was cancelled, the
/// slot's generation has moved on, and every method given the old handle returns
/// `None`/`false` instead of touching the slot's next occupant. `Option<TimerHandle>` is
/// 8 bytes (the generation is non-zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerHandle {
    /// Index into the wheel's entry slab.
    slot: u32,
    /// Generation of the occupant this handle was issued for.
    gen: Generation,
}

/// A slab slot's generation: bumped each time its occupant leaves, wrapping from
/// `u32::MAX` to 1 (never 0, which is the niche). A handle can only alias a later
/// occupant after 2^32 − 1 reuses of one slot while it is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
struct Generation(NonZeroU32);

impl Generation {
    const FIRST: Generation = Generation(NonZeroU32::MIN);

    fn next(self) -> Generation {
        match NonZeroU32::new(self.0.get().wrapping_add(1)) {
            Some(gen) => Generation(gen),
            None => Generation::FIRST,
        }
    }
}

/// Which list a live entry is linked into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum List {
    /// Due: handed out by the next [`TimerWheel::poll_expired`] calls.
    Pending,
    /// Filed in `levels[level]`, slot `slot`.
    Slot { level: u8, slot: u8 },
}

/// One slab slot.
struct Entry<T> {
    /// The generation of the current occupant, or of the next one while vacant.
    gen: Generation,
    state: State<T>,
}

enum State<T> {
    /// On the free list; `next_free` is the next vacant index or [`NIL`].
    Vacant {
        next_free: u32,
    },
    Occupied(Node<T>),
}

/// A live entry, linked into exactly one list.
struct Node<T> {
    value: T,
    /// The tick at which the entry is due. INVARIANT: at or after the start tick of the
    /// slot it is filed in (it may be later: see [`TimerWheel::reschedule`]).
    deadline: u64,
    list: List,
    /// Neighbours in `list`, or [`NIL`] at either end.
    prev: u32,
    next: u32,
}

/// A hierarchical timer wheel over integer ticks (Varghese & Lauck, "Hashed and
/// Hierarchical Timing Wheels", SOSP 1987; laid out like tokio's `runtime/time/wheel`).
///
/// It is a pure data structure: no clock, no I/O. Time is a `u64` tick given by the
/// caller: a [`Tick`](crate::time::Tick)'s count, converted from real time in
/// `crate::time` only.
///
/// # Levels
///
/// [`NUM_LEVELS`] levels of [`SLOTS`] slots; a slot of level `k` spans `64^k` ticks and
/// the whole level `64^(k+1)`. At the [`TICK`](crate::time::TICK) of 10 ms:
///
/// | level | slot span (ticks) | slot span | level span |
/// |------:|------------------:|----------:|-----------:|
/// | 0 | 1 | 10 ms | 640 ms |
/// | 1 | 64 | 640 ms | 40.96 s |
/// | 2 | 4 096 | 40.96 s | ≈ 43.7 min |
/// | 3 | 262 144 | ≈ 43.7 min | ≈ 46.6 h |
/// | 4 | 16 777 216 | ≈ 46.6 h | ≈ 124 days |
/// | 5 | 1 073 741 824 | ≈ 124 days | ≈ 21.8 years ([`MAX_SPAN`]) |
///
/// # Filing and the cascade rule
///
/// An entry with deadline `d > elapsed` (the wheel's position) files into the level of
/// the highest 6-bit group in which `d` and `elapsed` differ, at slot
/// `(d >> 6·level) % 64`. So level-0 entries are due within the current 64-tick ring, and
/// an entry of level `k` is due in a later slot of the current level-`k` ring. When time
/// reaches the start of a level-`k` slot (`k > 0`), that slot is drained and each entry is
/// **cascaded**: re-filed relative to the new position, which puts it into a lower level
/// (or fires it if its deadline is exactly the slot start). Every entry is thus touched at
/// most once per level on its way down, and fires from level 0 at its exact tick.
///
/// Deadlines `MAX_SPAN` or more ahead are **clamped** to the top level, into the slot their
/// deadline maps to modulo the ring; when that slot comes round they are re-filed (again
/// at the top, until they are within range). They never fire early.
///
/// # Rounding rule
///
/// Within the wheel nothing is rounded: an entry fires exactly when `now` reaches its
/// tick, never before and, if [`poll_expired`](Self::poll_expired) is called at
/// [`next_expiration`](Self::next_expiration), never after. The only rounding is the
/// conversion from time to ticks: deadlines round up, "now" rounds down, so a timer
/// never fires before its real deadline and at most one tick after it.
///
/// # Ordering
///
/// Entries fire in deadline order; entries of the same tick in any order. An entry
/// inserted with a deadline at or before the wheel's position is due at once: it fires
/// at the next poll, before anything still in the wheel, in any order among such entries.
///
/// # One entry per connection
///
/// Resets to a later deadline (keep-alive, heartbeat) are [`reschedule`](Self::reschedule)
/// calls that only update a field: the entry stays where it is filed and is re-filed
/// (not fired) when its old slot comes due. A connection keeps its own table of timer
/// kinds and keeps one entry at the minimum of them.
///
/// ```
/// use ringcast::core::wheel::TimerWheel;
///
/// let mut wheel = TimerWheel::new();
/// let conn = 7u32; // a ClientId in the server
/// // Heartbeat due at 1500, idle at 3500: one entry at the minimum.
/// let handle = wheel.insert(1500, conn);
/// // The heartbeat was written early (outbound traffic): only a field moves.
/// assert!(wheel.reschedule(handle, 3500));
/// let mut now = 0;
/// while let Some(next) = wheel.next_expiration() {
///     now = next.max(now); // the tick task sleeps until `next`
///     while let Some((_, id)) = wheel.poll_expired(now) {
///         assert_eq!((id, now), (conn, 3500)); // nothing fired at the stale 1500
///     }
/// }
/// ```
///
/// # Cost
///
/// `insert`, `cancel` and `reschedule` are O(1) and allocate only when the slab grows
/// past its high-water mark. `poll_expired` is O(1) per fired entry plus O(levels) per
/// slot processed; each entry is cascaded at most `NUM_LEVELS - 1` times (plus once per
/// `MAX_SPAN` for clamped ones, plus once per lazy reschedule).
pub struct TimerWheel<T> {
    /// Entry slab; indices are `TimerHandle::slot` and the links of every list.
    entries: Vec<Entry<T>>,
    /// Head of the free list of vacant `entries`, or [`NIL`].
    free: u32,
    /// Number of occupied `entries`.
    len: usize,
    /// Head of the list of due entries, or [`NIL`]. Every entry in it has
    /// `deadline <= elapsed`.
    pending: u32,
    /// `levels[k]` has slots spanning `64^k` ticks.
    levels: [Level; NUM_LEVELS],
    /// The wheel's position: every entry with `deadline <= elapsed` is in `pending` (or
    /// fired); every filed entry's slot starts after `elapsed`.
    elapsed: u64,
    /// The latest `now` given to `poll_expired`; time may not go back before it.
    now: u64,
}

impl<T> Default for TimerWheel<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TimerWheel<T> {
    /// An empty wheel at tick 0.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty wheel at tick 0 with room for `capacity` entries before it allocates.
    pub fn with_capacity(capacity: usize) -> Self {
        TimerWheel {
            entries: Vec::with_capacity(capacity),
            free: NIL,
            len: 0,
            pending: NIL,
            levels: std::array::from_fn(Level::new),
            elapsed: 0,
            now: 0,
        }
    }

    /// Number of live entries (filed or due, not yet handed out).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The latest `now` given to [`poll_expired`](Self::poll_expired) (0 at first).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Adds an entry due at tick `deadline` and returns its handle. O(1).
    ///
    /// A deadline at or before the wheel's position (at most [`now`](Self::now)) is due
    /// at once and fires at the next poll. A deadline [`MAX_SPAN`] or more ahead is
    /// clamped to the top level and re-filed until it is in range; it still fires at its
    /// exact tick.
    ///
    /// # Panics
    ///
    /// If the wheel already holds `u32::MAX - 1` entries.
    pub fn insert(&mut self, deadline: u64, value: T) -> TimerHandle {
        let node = Node {
            value,
            deadline,
            list: List::Pending,
            prev: NIL,
            next: NIL,
        };
        let idx = if self.free != NIL {
            let idx = self.free;
            let entry = &mut self.entries[idx as usize];
            match entry.state {
                State::Vacant { next_free } => self.free = next_free,
                State::Occupied(_) => unreachable!("occupied entry {idx:#x} on the free list"),
            }
            entry.state = State::Occupied(node);
            idx
        } else {
            let idx = u32::try_from(self.entries.len())
                .ok()
                .filter(|&idx| idx != NIL)
                .expect("timer wheel full: u32::MAX - 1 entries");
            self.entries.push(Entry {
                gen: Generation::FIRST,
                state: State::Occupied(node),
            });
            idx
        };
        self.len += 1;
        self.file(idx);
        TimerHandle {
            slot: idx,
            gen: self.entries[idx as usize].gen,
        }
    }

    /// Removes the entry and returns its value, or `None` if the handle is stale (the
    /// entry already fired or was cancelled). O(1).
    pub fn cancel(&mut self, handle: TimerHandle) -> Option<T> {
        self.check(handle)?;
        self.unlink(handle.slot);
        Some(self.remove(handle.slot))
    }

    /// Moves the entry's deadline to `deadline`, keeping its handle. O(1). Returns
    /// `false` (and does nothing) if the handle is stale.
    ///
    /// Moving it later (the common case: a keep-alive reset) only updates the entry's
    /// deadline field; the entry stays filed where it is and is re-filed instead of fired
    /// when that slot comes due, so [`next_expiration`](Self::next_expiration) may report
    /// a wake-up at which nothing fires. Moving it earlier re-links it.
    #[must_use = "false means the handle is stale: the entry already fired or was cancelled"]
    pub fn reschedule(&mut self, handle: TimerHandle, deadline: u64) -> bool {
        if self.check(handle).is_none() {
            return false;
        }
        let node = self.node_mut(handle.slot);
        let lazy = matches!(node.list, List::Slot { .. }) && deadline >= node.deadline;
        node.deadline = deadline;
        if !lazy {
            self.unlink(handle.slot);
            self.file(handle.slot);
        }
        true
    }

    /// The value of a live entry.
    pub fn get(&self, handle: TimerHandle) -> Option<&T> {
        self.check(handle)?;
        Some(&self.node(handle.slot).value)
    }

    /// The value of a live entry, mutably.
    pub fn get_mut(&mut self, handle: TimerHandle) -> Option<&mut T> {
        self.check(handle)?;
        Some(&mut self.node_mut(handle.slot).value)
    }

    /// The deadline of a live entry (the latest one given, see `reschedule`).
    pub fn deadline(&self, handle: TimerHandle) -> Option<u64> {
        self.check(handle)?;
        Some(self.node(handle.slot).deadline)
    }

    /// The tick by which [`poll_expired`](Self::poll_expired) must next be called, or
    /// `None` if the wheel is empty.
    ///
    /// Never late: no entry is due before it. It may be early: when the next slot is
    /// above level 0, or holds only entries rescheduled later, it is the slot's start
    /// and polling then may fire nothing (it re-files; ask again). A value at or before
    /// [`now`](Self::now) means entries are already due: poll without waiting.
    pub fn next_expiration(&self) -> Option<u64> {
        if self.pending != NIL {
            return Some(self.elapsed);
        }
        self.next_slot().map(|exp| exp.deadline)
    }

    /// Hands out one entry with `deadline <= now`, or returns `None` once there are none
    /// left (and moves the wheel's position to `now`). Call it in a loop; between calls
    /// the caller may insert, cancel or reschedule freely, including the handle just
    /// returned (which is stale by then) and entries due at or before `now` (they are
    /// handed out in this same loop).
    ///
    /// Entries come out in deadline order, cascading levels as time passes `now` (see
    /// the type's doc for the one exception: entries inserted already due).
    ///
    /// # Panics
    ///
    /// If `now` is before a `now` given earlier: time does not go backwards.
    #[must_use = "an expired entry that is dropped is lost"]
    pub fn poll_expired(&mut self, now: u64) -> Option<(TimerHandle, T)> {
        assert!(
            now >= self.now,
            "timer wheel: time went backwards, now {now:#x} < previous now {:#x}",
            self.now
        );
        self.now = now;
        loop {
            if self.pending != NIL {
                let idx = self.pending;
                let handle = TimerHandle {
                    slot: idx,
                    gen: self.entries[idx as usize].gen,
                };
                self.unlink(idx);
                return Some((handle, self.remove(idx)));
            }
            match self.next_slot() {
                Some(exp) if exp.deadline <= now => self.process_expiration(exp),
                _ => {
                    debug_assert!(
                        self.elapsed <= now,
                        "elapsed {:#x} > now {now:#x}",
                        self.elapsed
                    );
                    self.elapsed = now;
                    return None;
                }
            }
        }
    }

    /// Fires every entry with `deadline <= now`, in the order of
    /// [`poll_expired`](Self::poll_expired). `fired` cannot touch the wheel; to re-insert
    /// while firing, loop on `poll_expired` instead.
    pub fn advance(&mut self, now: u64, mut fired: impl FnMut(TimerHandle, T)) {
        while let Some((handle, value)) = self.poll_expired(now) {
            fired(handle, value);
        }
    }

    /// The earliest non-empty slot. Lower levels come due first (a level-`k` entry is in a
    /// later level-`k` slot than everything below it), so the first level with an
    /// occupied slot answers.
    fn next_slot(&self) -> Option<Expiration> {
        for level in &self.levels {
            if let Some(exp) = level.next_expiration(self.elapsed) {
                debug_assert!(
                    self.no_expirations_before(exp.level + 1, exp.deadline),
                    "{exp:?}"
                );
                return Some(exp);
            }
        }
        None
    }

    /// For assertions: no level from `start_level` up comes due before `before`.
    fn no_expirations_before(&self, start_level: usize, before: u64) -> bool {
        self.levels[start_level..]
            .iter()
            .all(|level| match level.next_expiration(self.elapsed) {
                Some(exp) => exp.deadline >= before,
                None => true,
            })
    }

    /// Drains the slot `exp` names at its start tick: entries due by then move to
    /// `pending`, the others (cascaded from above, rescheduled later, or clamped) are
    /// re-filed relative to the new position.
    fn process_expiration(&mut self, exp: Expiration) {
        debug_assert!(
            exp.deadline > self.elapsed && self.pending == NIL,
            "processing {exp:?} at elapsed {:#x} with pending {:#x}",
            self.elapsed,
            self.pending
        );
        self.elapsed = exp.deadline;
        let mut idx = self.levels[exp.level].take(exp.slot);
        while idx != NIL {
            let next = self.node(idx).next;
            self.file(idx);
            idx = next;
        }
    }

    /// Links the (unlinked) node `idx` into the list its deadline belongs to now.
    fn file(&mut self, idx: u32) {
        let deadline = self.node(idx).deadline;
        let list = if deadline <= self.elapsed {
            List::Pending
        } else {
            let level = level_for(self.elapsed, deadline);
            let slot = slot_for(deadline, level);
            List::Slot {
                level: level as u8,
                slot: slot as u8,
            }
        };
        self.link(idx, list);
    }

    fn head(&self, list: List) -> u32 {
        match list {
            List::Pending => self.pending,
            List::Slot { level, slot } => self.levels[level as usize].head(slot as usize),
        }
    }

    fn set_head(&mut self, list: List, head: u32) {
        match list {
            List::Pending => self.pending = head,
            List::Slot { level, slot } => {
                self.levels[level as usize].set_head(slot as usize, head);
            }
        }
    }

    /// Pushes node `idx` on the front of `list`.
    fn link(&mut self, idx: u32, list: List) {
        let head = self.head(list);
        let node = self.node_mut(idx);
        node.list = list;
        node.prev = NIL;
        node.next = head;
        if head != NIL {
            let old = self.node_mut(head);
            debug_assert!(
                old.prev == NIL && old.list == list,
                "head {head:#x} of {list:?} has prev {:#x} and list {:?}",
                old.prev,
                old.list
            );
            old.prev = idx;
        }
        self.set_head(list, idx);
    }

    /// Takes node `idx` out of its list.
    fn unlink(&mut self, idx: u32) {
        let Node {
            prev, next, list, ..
        } = *self.node(idx);
        if prev == NIL {
            debug_assert_eq!(
                self.head(list),
                idx,
                "node {idx:#x} has no prev but is not the head of {list:?}"
            );
            self.set_head(list, next);
        } else {
            self.node_mut(prev).next = next;
        }
        if next != NIL {
            self.node_mut(next).prev = prev;
        }
        let node = self.node_mut(idx);
        node.prev = NIL;
        node.next = NIL;
    }

    /// Frees the (unlinked) entry `idx`: bumps its generation and returns its value.
    fn remove(&mut self, idx: u32) -> T {
        let entry = &mut self.entries[idx as usize];
        let state = std::mem::replace(
            &mut entry.state,
            State::Vacant {
                next_free: self.free,
            },
        );
        entry.gen = entry.gen.next();
        self.free = idx;
        self.len -= 1;
        match state {
            State::Occupied(node) => node.value,
            State::Vacant { .. } => unreachable!("removing vacant entry {idx:#x}"),
        }
    }

    /// `Some(())` iff `handle` names a live entry.
    fn check(&self, handle: TimerHandle) -> Option<()> {
        let entry = self.entries.get(handle.slot as usize)?;
        (entry.gen == handle.gen && matches!(entry.state, State::Occupied(_))).then_some(())
    }

    fn node(&self, idx: u32) -> &Node<T> {
        match &self.entries[idx as usize].state {
            State::Occupied(node) => node,
            State::Vacant { .. } => unreachable!("entry {idx:#x} is vacant"),
        }
    }

    fn node_mut(&mut self, idx: u32) -> &mut Node<T> {
        match &mut self.entries[idx as usize].state {
            State::Occupied(node) => node,
            State::Vacant { .. } => unreachable!("entry {idx:#x} is vacant"),
        }
    }
}
