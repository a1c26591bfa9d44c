//! Resumes paced by the socket. A resuming client's backlog does not enter its
//! outbox whole: it waits here and is moved in a slice at a time
//! ([`REPLAY_SLICE`]) as the socket drains, so a resume of any length never
//! trips the slow-consumer bound. Live messages that arrive meanwhile queue
//! behind it (order is kept) and do count toward that bound: a client that
//! stops reading is still cut.
//!
//! The backlog itself is shared: every client that resumes from the same
//! position holds the same [`Backlog`], and each core encodes each of its
//! messages once, on first use, for all of them ([`BacklogFrames`]). A storm of
//! resumes costs a cursor per client, not a copy.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use super::bus_msg::Backlog;
use super::encodings::{FrameKind, LazyFrames};
use super::frame::Frame;

/// Bytes of backlog moved into an outbox at a time: enough for writes of many
/// messages, little next to `--max-outbox-bytes`.
pub const REPLAY_SLICE: usize = 64 * 1024;

/// Messages moved into an outbox at a time: the outbox's queue grows to what it
/// holds at once, so a slice of small messages must not make it big (15,000
/// clients resuming 900 small messages held 24 KiB of queue each with a
/// byte bound alone: 370 MiB).
pub const REPLAY_SLICE_ITEMS: usize = 64;

/// A backlog and its encodings on this core, shared by the clients replaying it.
pub struct BacklogFrames {
    backlog: Backlog,
    frames: RefCell<Vec<LazyFrames>>,
}

impl BacklogFrames {
    fn frame(&self, i: usize, kind: FrameKind) -> Frame {
        let mut frames = self.frames.borrow_mut();
        if frames.is_empty() {
            frames.resize_with(self.backlog.len(), LazyFrames::default);
        }
        frames[i].get(&self.backlog[i], kind).clone()
    }
}

/// The backlogs recently handed to this core's clients, so that clients
/// resuming from one position share one set of encodings. A few slots suffice:
/// the resumes of a storm arrive together.
#[derive(Default)]
pub struct BacklogCache {
    recent: [Option<(*const (), Weak<BacklogFrames>)>; 8],
    next: usize,
}

impl BacklogCache {
    /// The core's encodings of `backlog`, shared with the clients already
    /// replaying it.
    pub fn frames(&mut self, backlog: &Backlog) -> Rc<BacklogFrames> {
        let key = Arc::as_ptr(backlog) as *const ();
        // A live entry holds its backlog, so its address cannot have been reused.
        for (at, weak) in self.recent.iter().flatten() {
            if *at == key {
                if let Some(frames) = weak.upgrade() {
                    return frames;
                }
            }
        }
        let frames = Rc::new(BacklogFrames {
            backlog: backlog.clone(),
            frames: RefCell::new(Vec::new()),
        });
        self.recent[self.next] = Some((key, Rc::downgrade(&frames)));
        self.next = (self.next + 1) % self.recent.len();
        frames
    }
}

/// One piece of a client's pending replay.
enum Pending {
    /// Messages `next..` of a backlog, for subscription `index`.
    Backlog {
        frames: Rc<BacklogFrames>,
        next: usize,
        index: u16,
    },
    /// A live message that arrived during the replay.
    Live { index: u16, seq: u64, frame: Frame },
}

/// What a client still has to be sent of its resumes, in order.
#[derive(Default)]
pub struct Replay {
    pending: VecDeque<Pending>,
    /// Bytes of the live messages waiting here (they count as queued).
    live_bytes: usize,
}

impl Replay {
    /// Queues a backlog for subscription `index`.
    pub fn push_backlog(&mut self, frames: Rc<BacklogFrames>, index: u16) {
        if !frames.backlog.is_empty() {
            self.pending.push_back(Pending::Backlog {
                frames,
                next: 0,
                index,
            });
        }
    }

    /// Queues a live message behind the backlogs.
    pub fn push_live(&mut self, index: u16, seq: u64, frame: Frame) {
        self.live_bytes += frame.len();
        self.pending.push_back(Pending::Live { index, seq, frame });
    }

    /// The next message to move into the outbox: its subscription index,
    /// position and frame.
    pub fn pop(&mut self, kind: FrameKind) -> Option<(u16, u64, Frame)> {
        match self.pending.front_mut()? {
            Pending::Backlog {
                frames,
                next,
                index,
            } => {
                let i = *next;
                let out = (*index, frames.backlog[i].seq, frames.frame(i, kind));
                *next += 1;
                if *next == frames.backlog.len() {
                    self.pending.pop_front();
                }
                Some(out)
            }
            Pending::Live { .. } => match self.pending.pop_front() {
                Some(Pending::Live { index, seq, frame }) => {
                    self.live_bytes -= frame.len();
                    Some((index, seq, frame))
                }
                _ => unreachable!("the front was a live message"),
            },
        }
    }

    /// Bytes of live messages waiting behind the backlog.
    pub fn live_bytes(&self) -> usize {
        self.live_bytes
    }

    /// Messages not yet moved into the outbox.
    pub fn len(&self) -> usize {
        self.pending
            .iter()
            .map(|p| match p {
                Pending::Backlog { frames, next, .. } => frames.backlog.len() - next,
                Pending::Live { .. } => 1,
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::message::Message;
    use crate::proto::cursor::{Epoch, IdScheme};

    fn backlog(seqs: std::ops::RangeInclusive<u64>) -> Backlog {
        seqs.map(|seq| {
            Arc::new(Message::encode(
                IdScheme::Local(Epoch::new(1)),
                Arc::from("t"),
                seq,
                None,
                seq.to_string().as_bytes(),
            ))
        })
        .collect()
    }

    #[test]
    fn clients_resuming_from_one_backlog_share_its_frames() {
        let mut cache = BacklogCache::default();
        let b = backlog(1..=3);
        let first = cache.frames(&b);
        let second = cache.frames(&b);
        assert!(Rc::ptr_eq(&first, &second));
        let (mut x, mut y) = (Replay::default(), Replay::default());
        x.push_backlog(first, 0);
        y.push_backlog(second, 0);
        let (_, _, fx) = x.pop(FrameKind::Ws).unwrap();
        let (_, _, fy) = y.pop(FrameKind::Ws).unwrap();
        assert_eq!(fx.as_ptr(), fy.as_ptr(), "one encoding for both clients");
        // Another backlog, even of the same messages, has encodings of its own.
        let other = backlog(1..=3);
        assert!(!Rc::ptr_eq(&cache.frames(&other), &cache.frames(&b)));
    }

    #[test]
    fn live_messages_wait_behind_the_backlog_and_are_counted() {
        let mut cache = BacklogCache::default();
        let mut r = Replay::default();
        r.push_backlog(cache.frames(&backlog(1..=2)), 0);
        r.push_live(0, 3, Frame::new(b"live-3"));
        assert_eq!((r.len(), r.live_bytes()), (3, 6));
        let order: Vec<u64> =
            std::iter::from_fn(|| r.pop(FrameKind::Sse).map(|(_, s, _)| s)).collect();
        assert_eq!(order, vec![1, 2, 3]);
        assert!(r.is_empty());
        assert_eq!(r.live_bytes(), 0);
    }
}
