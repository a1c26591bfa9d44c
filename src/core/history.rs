//! Per-topic history: a ring of the newest messages, bounded by count and bytes,
//! kept by the topic's home core. Resume cost is O(messages missed): the ring is
//! indexed by position, never scanned. The bounds over all topics of a core (the
//! memory budget, the age limit) are [`crate::core::homes`]'s: they take the
//! oldest message out with [`History::pop_oldest`].

use std::collections::VecDeque;
use std::sync::Arc;

use super::message::Message;

/// What a resume from a position finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Every message after the position is still here (maybe none).
    Complete,
    /// History no longer reaches back: messages between the position and
    /// `oldest` (the first one kept, or the next to come when empty) are gone.
    Trimmed { oldest: u64 },
    /// The position is ahead of anything this topic issued.
    Future,
}

/// What [`History::push`] dropped to stay within the topic's bounds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    /// Messages dropped for `--history` (count).
    pub by_count: usize,
    /// Messages dropped for `--history-bytes`.
    pub by_bytes: usize,
}

impl Trimmed {
    pub fn total(self) -> usize {
        self.by_count + self.by_bytes
    }
}

pub struct History {
    ring: VecDeque<Arc<Message>>,
    /// Every message with a position above this one is in the ring (positions
    /// are consecutive in single-node mode, sparse with a broker).
    covered_after: u64,
    /// Bytes held: the sum of [`Message::held_bytes`] over the ring.
    bytes: usize,
    max_len: usize,
    max_bytes: usize,
}

impl History {
    pub fn new(max_len: usize, max_bytes: usize) -> Self {
        Self {
            ring: VecDeque::new(),
            covered_after: 0,
            bytes: 0,
            max_len,
            max_bytes,
        }
    }

    /// Appends the newest message (positions must grow) and trims the oldest
    /// ones past either bound; says how many went for which bound. The newest is
    /// kept even when it alone is over the byte bound, so a resume right after it
    /// still works.
    pub fn push(&mut self, msg: Arc<Message>) -> Trimmed {
        debug_assert!(
            self.ring.back().is_none_or(|last| last.seq < msg.seq),
            "history positions must grow: last {:?}, new {}",
            self.ring.back().map(|m| m.seq),
            msg.seq
        );
        let mut trimmed = Trimmed::default();
        if self.max_len == 0 {
            self.covered_after = msg.seq;
            return trimmed;
        }
        self.bytes += msg.held_bytes();
        self.ring.push_back(msg);
        loop {
            if self.ring.len() > self.max_len {
                trimmed.by_count += 1;
            } else if self.bytes > self.max_bytes && self.ring.len() > 1 {
                trimmed.by_bytes += 1;
            } else {
                return trimmed;
            }
            self.pop_oldest();
        }
    }

    /// Takes the oldest message out (a bound over all topics needs the room):
    /// a resume from before it now gets a gap.
    pub fn pop_oldest(&mut self) -> Option<Arc<Message>> {
        let old = self.ring.pop_front()?;
        self.bytes -= old.held_bytes();
        self.covered_after = old.seq;
        Some(old)
    }

    /// Position of the oldest message kept.
    pub fn oldest(&self) -> Option<u64> {
        self.ring.front().map(|m| m.seq)
    }

    /// Declares that the ring holds every message after `position` (a broker-fed
    /// history starts at the stream position where reading began).
    pub fn cover_from(&mut self, position: u64) {
        self.covered_after = position;
    }

    /// Messages after this position are all kept.
    pub fn covered_after(&self) -> u64 {
        self.covered_after
    }

    /// The messages after `after`, given the topic's newest position `head`.
    /// O(log kept + returned): a binary search, then the missed messages.
    pub fn since(&self, after: u64, head: u64) -> (Resume, impl Iterator<Item = &Arc<Message>>) {
        let skip = self.ring.partition_point(|m| m.seq <= after);
        let resume = if after > head {
            Resume::Future
        } else if after < self.covered_after {
            let oldest = self.ring.front().map_or(head + 1, |m| m.seq);
            Resume::Trimmed { oldest }
        } else {
            Resume::Complete
        };
        (resume, self.ring.iter().skip(skip))
    }

    /// Every message kept, oldest first.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Message>> {
        self.ring.iter()
    }

    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Bytes held (the `ringcast_history_bytes` metric).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::cursor::{Epoch, IdScheme};

    fn msg(seq: u64, size: usize) -> Arc<Message> {
        let data = format!("\"{}\"", "x".repeat(size));
        Arc::new(Message::encode(
            IdScheme::Local(Epoch::new(1)),
            "t".into(),
            seq,
            None,
            data.as_bytes(),
        ))
    }

    fn seqs<'a>(it: impl Iterator<Item = &'a Arc<Message>>) -> Vec<u64> {
        it.map(|m| m.seq).collect()
    }

    #[test]
    fn resume_returns_exactly_the_missed_messages() {
        let mut h = History::new(10, 1 << 20);
        for seq in 1..=5 {
            h.push(msg(seq, 1));
        }
        let (r, it) = h.since(2, 5);
        assert_eq!((r, seqs(it)), (Resume::Complete, vec![3, 4, 5]));
        let (r, it) = h.since(5, 5);
        assert_eq!((r, seqs(it)), (Resume::Complete, vec![]));
        let (r, it) = h.since(0, 5);
        assert_eq!((r, seqs(it)), (Resume::Complete, vec![1, 2, 3, 4, 5]));
    }

    #[test]
    fn a_trimmed_ring_reports_the_gap_and_gives_what_it_has() {
        let mut h = History::new(3, 1 << 20);
        for seq in 1..=6 {
            h.push(msg(seq, 1));
        }
        let (r, it) = h.since(1, 6);
        assert_eq!(
            (r, seqs(it)),
            (Resume::Trimmed { oldest: 4 }, vec![4, 5, 6])
        );
        let (r, it) = h.since(3, 6);
        assert_eq!((r, seqs(it)), (Resume::Complete, vec![4, 5, 6]));
    }

    #[test]
    fn sparse_positions_resume_by_search_within_the_covered_range() {
        let mut h = History::new(10, 1 << 20);
        h.cover_from(100);
        for seq in [105, 230, 231, 900] {
            h.push(msg(seq, 1));
        }
        let (r, it) = h.since(230, 900);
        assert_eq!((r, seqs(it)), (Resume::Complete, vec![231, 900]));
        let (r, it) = h.since(100, 900);
        assert_eq!((r, seqs(it)), (Resume::Complete, vec![105, 230, 231, 900]));
        let (r, _) = h.since(99, 900);
        assert_eq!(r, Resume::Trimmed { oldest: 105 });
    }

    #[test]
    fn a_position_never_issued_is_the_future() {
        let mut h = History::new(3, 1 << 20);
        h.push(msg(1, 1));
        let (r, it) = h.since(9, 1);
        assert_eq!((r, seqs(it)), (Resume::Future, vec![]));
    }

    #[test]
    fn the_byte_bound_trims_but_keeps_the_newest() {
        let mut h = History::new(100, 1000);
        for seq in 1..=10 {
            h.push(msg(seq, 200));
        }
        assert!(h.bytes() <= 1000 || h.len() == 1, "bytes {}", h.bytes());
        assert!(h.len() < 10);
        h.push(msg(11, 5000));
        assert_eq!(seqs(h.all()), vec![11]);
        let (r, _) = h.since(3, 11);
        assert_eq!(r, Resume::Trimmed { oldest: 11 });
    }

    #[test]
    fn an_empty_history_of_a_busy_topic_is_trimmed_to_the_head() {
        let mut h = History::new(0, 0);
        for seq in 1..=7 {
            h.push(msg(seq, 1));
        }
        let (r, it) = h.since(3, 7);
        assert_eq!((r, seqs(it)), (Resume::Trimmed { oldest: 8 }, vec![]));
        let (r, _) = h.since(7, 7);
        assert_eq!(r, Resume::Complete);
    }
}
