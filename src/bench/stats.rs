//! Counting what subscribers receive: the per-subscriber sequence tracker (lost,
//! duplicated, out of order) and the latency histogram.

use std::collections::VecDeque;

use hdrhistogram::Histogram;

/// Latencies are recorded in nanoseconds, from 1 ns to this (larger ones are clamped).
pub const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// A histogram for latencies in nanoseconds, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("static bounds are valid")
}

/// Words of the reordering window: sequences more than `64 × WINDOW_WORDS` ahead of
/// the oldest missing one make the tracker give that hole up (see [`SeqTracker`]).
const WINDOW_WORDS: usize = 64;

/// What one message was, by its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The next one expected.
    InOrder,
    /// New, but a later sequence arrived before it.
    OutOfOrder,
    /// Already received (or older than the reordering window).
    Duplicate,
    /// Outside `0..expected`: not a message of this run.
    Unexpected,
}

/// The sequence numbers one subscriber has received out of `0..expected`.
///
/// INVARIANT: every sequence below `next` has been received or given up;
/// `ahead` holds the received sequences at or above `next`, as bits of words
/// starting at `(next / 64) * 64` (bit `i` of word `w` is sequence
/// `(next / 64 + w) * 64 + i`); `ahead` is empty exactly when none was.
///
/// In-order delivery, the normal case, touches only `next`. A hole (a missing
/// sequence) keeps later arrivals in `ahead` until it is filled; a hole older than
/// `64 × WINDOW_WORDS` sequences is given up so that memory stays bounded, and should
/// it still arrive it is counted as a duplicate.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    next: u64,
    ahead: VecDeque<u64>,
    ahead_count: u64,
    highest: Option<u64>,
    pub received: u64,
    pub distinct: u64,
    pub duplicate: u64,
    pub out_of_order: u64,
    pub unexpected: u64,
}

impl SeqTracker {
    /// Records one message with sequence `seq` out of `0..expected`.
    pub fn record(&mut self, seq: u64, expected: u64) -> Seen {
        self.received += 1;
        if seq >= expected {
            self.unexpected += 1;
            return Seen::Unexpected;
        }
        if seq == self.next && self.ahead.is_empty() {
            self.next += 1;
            self.distinct += 1;
            self.highest = Some(seq);
            return Seen::InOrder;
        }
        if seq < self.next || self.is_ahead(seq) {
            self.duplicate += 1;
            return Seen::Duplicate;
        }
        let late = self.highest.is_some_and(|h| seq < h);
        self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
        self.distinct += 1;
        self.insert_ahead(seq);
        if late {
            self.out_of_order += 1;
            Seen::OutOfOrder
        } else {
            Seen::InOrder
        }
    }

    /// Sequences of `0..expected` never received.
    pub fn lost(&self, expected: u64) -> u64 {
        expected.saturating_sub(self.distinct)
    }

    fn base_word(&self) -> u64 {
        self.next / 64
    }

    fn is_ahead(&self, seq: u64) -> bool {
        let w = (seq / 64 - self.base_word()) as usize;
        self.ahead
            .get(w)
            .is_some_and(|word| word >> (seq % 64) & 1 == 1)
    }

    /// Sets `seq` (> `next`, not yet seen) in the window, then moves `next` past every
    /// received sequence.
    fn insert_ahead(&mut self, seq: u64) {
        let mut w = (seq / 64 - self.base_word()) as usize;
        if w >= WINDOW_WORDS {
            // Give up the holes that no longer fit: move `next` to the first sequence
            // of the word that makes `seq` fit, dropping the bits below it.
            let drop_words = w + 1 - WINDOW_WORDS;
            for i in 0..drop_words {
                // Bits below `next` in the first word are set but were never counted.
                let uncounted = if i == 0 { low_mask(self.next % 64) } else { 0 };
                if let Some(word) = self.ahead.pop_front() {
                    self.ahead_count -= u64::from((word & !uncounted).count_ones());
                }
            }
            self.next = (self.base_word() + drop_words as u64) * 64;
            w = WINDOW_WORDS - 1;
            if self.ahead_count == 0 {
                self.ahead.clear();
            }
        }
        if self.ahead.is_empty() {
            // Bits below `next` in the first word count as received.
            self.ahead.push_back(low_mask(self.next % 64));
        }
        while self.ahead.len() <= w {
            self.ahead.push_back(0);
        }
        self.ahead[w] |= 1 << (seq % 64);
        self.ahead_count += 1;
        self.advance();
    }

    /// Moves `next` over received sequences, dropping full words.
    fn advance(&mut self) {
        while let Some(&word) = self.ahead.front() {
            let bit = self.next % 64;
            let run = u64::from((word >> bit).trailing_ones()).min(64 - bit);
            self.next += run;
            debug_assert!(
                run <= self.ahead_count,
                "run {run} > ahead_count {}",
                self.ahead_count
            );
            self.ahead_count -= run;
            if bit + run < 64 {
                break;
            }
            self.ahead.pop_front();
        }
        debug_assert!(
            self.ahead_count <= 64 * self.ahead.len() as u64,
            "ahead_count {} with {} words",
            self.ahead_count,
            self.ahead.len()
        );
        if self.ahead_count == 0 {
            self.ahead.clear();
        }
    }
}

/// Bits `0..n` set.
fn low_mask(n: u64) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// Counts summed over subscribers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub expected: u64,
    pub received: u64,
    pub distinct: u64,
    pub lost: u64,
    pub duplicate: u64,
    pub out_of_order: u64,
    pub unexpected: u64,
    /// Messages with no sequence/time stamp (server events, foreign messages).
    pub unstamped: u64,
}

impl Counts {
    /// Adds one subscriber's tracker, which expected `expected` messages.
    pub fn add_tracker(&mut self, t: &SeqTracker, expected: u64) {
        self.expected += expected;
        self.received += t.received;
        self.distinct += t.distinct;
        self.lost += t.lost(expected);
        self.duplicate += t.duplicate;
        self.out_of_order += t.out_of_order;
        self.unexpected += t.unexpected;
    }

    pub fn merge(&mut self, o: &Counts) {
        self.expected += o.expected;
        self.received += o.received;
        self.distinct += o.distinct;
        self.lost += o.lost;
        self.duplicate += o.duplicate;
        self.out_of_order += o.out_of_order;
        self.unexpected += o.unexpected;
        self.unstamped += o.unstamped;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u64], expected: u64) -> SeqTracker {
        let mut t = SeqTracker::default();
        for &s in seqs {
            t.record(s, expected);
        }
        t
    }

    /// The reference: a set, counting the same way.
    fn reference(seqs: &[u64], expected: u64) -> (u64, u64, u64, u64) {
        let mut seen = std::collections::BTreeSet::new();
        let (mut dup, mut ooo, mut unexpected) = (0, 0, 0);
        let mut highest: Option<u64> = None;
        for &s in seqs {
            if s >= expected {
                unexpected += 1;
            } else if !seen.insert(s) {
                dup += 1;
            } else {
                if highest.is_some_and(|h| s < h) {
                    ooo += 1;
                }
                highest = Some(highest.map_or(s, |h| h.max(s)));
            }
        }
        (expected - seen.len() as u64, dup, ooo, unexpected)
    }

    fn check(seqs: &[u64], expected: u64) {
        let t = run(seqs, expected);
        let got = (t.lost(expected), t.duplicate, t.out_of_order, t.unexpected);
        assert_eq!(got, reference(seqs, expected), "seqs {seqs:?}");
    }

    #[test]
    fn in_order_delivery_counts_nothing_and_keeps_no_window() {
        let seqs: Vec<u64> = (0..1000).collect();
        let t = run(&seqs, 1000);
        assert_eq!((t.lost(1000), t.duplicate, t.out_of_order), (0, 0, 0));
        assert!(t.ahead.is_empty());
        assert_eq!(t.next, 1000);
    }

    #[test]
    fn a_missing_message_is_lost_and_the_rest_stays_in_order() {
        let seqs: Vec<u64> = (0..200).filter(|&s| s != 70).collect();
        let t = run(&seqs, 200);
        assert_eq!((t.lost(200), t.duplicate, t.out_of_order), (1, 0, 0));
        check(&seqs, 200);
    }

    #[test]
    fn messages_never_sent_at_the_end_are_lost() {
        let t = run(&[0, 1, 2], 10);
        assert_eq!(t.lost(10), 7);
    }

    #[test]
    fn a_repeat_is_a_duplicate_before_and_after_the_window_moves() {
        check(&[0, 1, 1, 2, 0], 5);
        check(&[0, 2, 2, 1, 2, 3], 5);
        let t = run(&[0, 2, 2, 1, 2, 3], 5);
        assert_eq!((t.duplicate, t.out_of_order, t.lost(5)), (2, 1, 1));
    }

    #[test]
    fn a_swap_is_one_out_of_order_message() {
        let t = run(&[0, 2, 1, 3], 4);
        assert_eq!((t.duplicate, t.out_of_order, t.lost(4)), (0, 1, 0));
        assert!(t.ahead.is_empty(), "the filled hole frees the window");
    }

    #[test]
    fn sequences_outside_the_run_are_unexpected() {
        let t = run(&[0, 5, 1], 2);
        assert_eq!((t.unexpected, t.distinct, t.lost(2)), (1, 2, 0));
    }

    #[test]
    fn a_hole_far_behind_is_given_up_and_memory_stays_bounded() {
        let expected = 100_000;
        let seqs: Vec<u64> = (1..expected).collect();
        let t = run(&seqs, expected);
        assert!(t.ahead.len() <= WINDOW_WORDS, "{} words", t.ahead.len());
        assert_eq!((t.lost(expected), t.duplicate, t.out_of_order), (1, 0, 0));
        assert!(t.ahead.is_empty(), "every hole is behind `next` by the end");
    }

    #[test]
    fn holes_across_word_boundaries_match_the_reference() {
        for gap in [62u64, 63, 64, 65, 127, 128, 129] {
            let mut seqs: Vec<u64> = (0..400).filter(|s| s % gap != 5).collect();
            seqs.extend((0..400).filter(|s| s % gap == 5).rev());
            seqs.push(gap);
            check(&seqs, 400);
        }
    }

    #[test]
    fn a_scrambled_stream_matches_the_reference() {
        // xorshift to shuffle within blocks and sprinkle repeats, deterministic.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..50 {
            let mut seqs: Vec<u64> = (0..2000).collect();
            for i in 0..seqs.len() {
                let j = (i + (rnd() % 300) as usize).min(seqs.len() - 1);
                seqs.swap(i, j);
            }
            seqs.retain(|_| rnd() % 50 != 0);
            for i in 0..40 {
                let r = seqs[(rnd() as usize) % seqs.len()];
                seqs.insert((rnd() as usize) % seqs.len(), r + (i % 2));
            }
            check(&seqs, 2000);
        }
    }
}
