//! One level of the wheel: [`SLOTS`] slot lists and a bitmap of the non-empty ones.
//!
//! This module owns the slot arithmetic (which level and slot a deadline files into, and
//! when a slot comes due); the lists themselves are linked through the entry slab in
//! `mod.rs`, which only sees heads here.

use super::{LEVEL_BITS, MAX_SPAN, NIL, NUM_LEVELS, SLOTS};

/// `SLOTS - 1`: masks a slot index out of a shifted deadline.
const SLOT_MASK: u64 = SLOTS as u64 - 1;

/// One ring of [`SLOTS`] slots, each spanning `SLOTS^level` ticks.
pub(super) struct Level {
    /// Which level this is (0 = one tick per slot).
    level: usize,
    /// Bit `s` is set iff slot `s` holds at least one entry, i.e. iff `heads[s] != NIL`.
    /// The least-significant bit represents slot zero. `SLOTS == u64::BITS` so that one
    /// `trailing_zeros` finds the next non-empty slot.
    occupied: u64,
    /// Head of each slot's intrusive doubly-linked list (an index into the entry slab),
    /// or [`NIL`] for an empty slot.
    heads: [u32; SLOTS],
}

/// The next slot to process: which one, and the tick at which it comes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Expiration {
    pub(super) level: usize,
    pub(super) slot: usize,
    /// The start tick of the slot. For level 0 this is the entries' exact deadline; above,
    /// it is at or before every deadline in the slot (they are cascaded, not fired).
    pub(super) deadline: u64,
}

impl Level {
    pub(super) fn new(level: usize) -> Self {
        debug_assert!(
            level < NUM_LEVELS,
            "level {level} >= NUM_LEVELS {NUM_LEVELS}"
        );
        Level {
            level,
            occupied: 0,
            heads: [NIL; SLOTS],
        }
    }

    pub(super) fn head(&self, slot: usize) -> u32 {
        self.heads[slot]
    }

    /// Sets the head of `slot`'s list, keeping `occupied` in step with it.
    pub(super) fn set_head(&mut self, slot: usize, head: u32) {
        self.heads[slot] = head;
        if head == NIL {
            self.occupied &= !(1 << slot);
        } else {
            self.occupied |= 1 << slot;
        }
    }

    /// Detaches `slot`'s whole list and returns its head; the slot is empty afterwards.
    pub(super) fn take(&mut self, slot: usize) -> u32 {
        let head = self.heads[slot];
        self.set_head(slot, NIL);
        head
    }

    /// The first non-empty slot to come due strictly after `elapsed`, with its start tick.
    pub(super) fn next_expiration(&self, elapsed: u64) -> Option<Expiration> {
        if self.occupied == 0 {
            return None;
        }
        let now_slot = slot_for(elapsed, self.level);
        // Look from the slot after the current one, all the way round to the current one.
        //
        // Below the top level the current slot is always empty: an entry whose deadline
        // falls in the current slot of level `k` differs from `elapsed` only in lower bits
        // and so files into a level below `k`, and a slot is drained the moment `elapsed`
        // reaches its start. Every occupied slot is therefore ahead of `now_slot` in this
        // level's current ring, and its start is `level_start + slot * slot_span`.
        //
        // The top level is different: a deadline `MAX_SPAN` or more ahead is clamped into
        // it (see `level_for`), and its slot index wraps, so it may sit at or before
        // `now_slot`. Such a slot comes due one full ring later, `+ level_span`, which is
        // still at or before the clamped deadline (that deadline lies in a later ring, in
        // this very slot), so the answer is early, never late; the entry is re-filed then.
        // The current slot is looked at last because its next start is a full ring away.
        let rotated = self
            .occupied
            .rotate_right((now_slot as u32 + 1) % SLOTS as u32);
        let slot = (rotated.trailing_zeros() as usize + now_slot + 1) % SLOTS;
        let level_start = elapsed & !(level_span(self.level) - 1);
        let mut deadline = level_start + slot as u64 * slot_span(self.level);
        if slot <= now_slot {
            debug_assert_eq!(
                self.level,
                NUM_LEVELS - 1,
                "a wrapped slot below the top level: slot {slot} <= now_slot {now_slot}, \
                 elapsed {elapsed:#x}, occupied {:#066b}",
                self.occupied
            );
            // Saturating: only reachable within MAX_SPAN of u64::MAX ticks (millions of
            // years at any sane tick); at u64::MAX everything due fires.
            deadline = deadline.saturating_add(level_span(self.level));
        }
        debug_assert!(
            deadline > elapsed || deadline == u64::MAX,
            "expiration {deadline:#x} not after elapsed {elapsed:#x} (level {}, slot {slot}, \
             occupied {:#066b})",
            self.level,
            self.occupied
        );
        Some(Expiration {
            level: self.level,
            slot,
            deadline,
        })
    }

    #[cfg(test)]
    pub(super) fn occupied(&self) -> u64 {
        self.occupied
    }
}

/// Ticks covered by one slot of `level`: `SLOTS^level`.
pub(super) const fn slot_span(level: usize) -> u64 {
    1 << (LEVEL_BITS as usize * level)
}

/// Ticks covered by one full ring of `level`: `SLOTS^(level + 1)`.
pub(super) const fn level_span(level: usize) -> u64 {
    1 << (LEVEL_BITS as usize * (level + 1))
}

/// The slot of `level` that tick `when` falls into.
pub(super) fn slot_for(when: u64, level: usize) -> usize {
    ((when >> (LEVEL_BITS as usize * level)) & SLOT_MASK) as usize
}

/// The level a deadline `when > elapsed` files into: the level of the highest bit group
/// in which `when` differs from `elapsed`, so that its slot there is ahead of the
/// current one. Deadlines that differ at or above bit `LEVEL_BITS * NUM_LEVELS` (about
/// `MAX_SPAN` or more ahead) are clamped to the top level.
pub(super) fn level_for(elapsed: u64, when: u64) -> usize {
    debug_assert!(
        when > elapsed,
        "level_for: when {when:#x} <= elapsed {elapsed:#x}"
    );
    // `| SLOT_MASK` keeps `significant` >= LEVEL_BITS - 1, i.e. level >= 0, without a branch.
    let masked = ((elapsed ^ when) | SLOT_MASK).min(MAX_SPAN - 1);
    let significant = (u64::BITS - 1 - masked.leading_zeros()) as usize;
    significant / LEVEL_BITS as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_for_is_the_highest_differing_bit_group() {
        for level in 0..NUM_LEVELS {
            for pos in level * LEVEL_BITS as usize..(level + 1) * LEVEL_BITS as usize {
                let when = 1u64 << pos;
                assert_eq!(level_for(0, when), level, "when {when:#b}");
                // Just below a power of two lands one bit group lower (or at 0).
                let below = when - 1;
                if below > 0 {
                    let expect = (pos.saturating_sub(1)) / LEVEL_BITS as usize;
                    assert_eq!(level_for(0, below), expect, "when {below:#b}");
                }
            }
        }
    }

    #[test]
    fn level_for_clamps_beyond_the_wheel_to_the_top_level() {
        assert_eq!(level_for(0, MAX_SPAN), NUM_LEVELS - 1);
        assert_eq!(level_for(0, u64::MAX), NUM_LEVELS - 1);
        assert_eq!(level_for(MAX_SPAN - 1, MAX_SPAN), NUM_LEVELS - 1);
    }

    #[test]
    fn next_expiration_of_a_wrapped_top_slot_is_one_ring_later() {
        let top = NUM_LEVELS - 1;
        let mut level = Level::new(top);
        let elapsed = 5 * slot_span(top) + 7;
        level.set_head(2, 0);
        let exp = level.next_expiration(elapsed).unwrap();
        assert_eq!(exp.deadline, 2 * slot_span(top) + level_span(top));
        // The current slot comes after every other slot.
        level.set_head(5, 1);
        let exp = level.next_expiration(elapsed).unwrap();
        assert_eq!(
            (exp.slot, exp.deadline),
            (2, 2 * slot_span(top) + level_span(top))
        );
        level.set_head(2, NIL);
        let exp = level.next_expiration(elapsed).unwrap();
        assert_eq!(
            (exp.slot, exp.deadline),
            (5, 5 * slot_span(top) + level_span(top))
        );
        assert_eq!(level.occupied(), 1 << 5);
    }
}
