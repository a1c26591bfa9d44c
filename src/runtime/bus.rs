//! The cross-core bus: one lock-free single-producer ring for every ordered pair
//! of cores, plus one wake-up per core.
//!
//! Core `i` owns the producer end of ring `i → j` and the consumer end of every
//! ring `j → i`, so each ring has exactly one writer and one reader thread and
//! needs no lock (rtrb). A full ring hands the message back (`PushError::Full`);
//! it then waits in a local overflow queue, in order, and the publisher that
//! caused it is slowed by [`Bus::congested`]: backpressure, not unbounded growth.
//!
//! Wake-ups: the receiving core parks its bus task in an `AtomicWaker`. A sender
//! wakes it once per batch; the waker is taken on wake, so further sends until the
//! receiver re-registers cost no system call.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use rtrb::{Consumer, Producer, PushError, RingBuffer};

use crate::core::bus_msg::CoreMsg;

/// Messages a ring holds before senders spill into their overflow queue.
pub const RING_CAPACITY: usize = 16 * 1024;

/// One core's ends of the bus. Moved to its worker thread at start.
pub struct Bus {
    core: usize,
    /// Producer ends, indexed by destination core (`None` at our own index).
    tx: Vec<Option<Producer<CoreMsg>>>,
    /// Consumer ends, one per other core.
    rx: Vec<Consumer<CoreMsg>>,
    /// Messages that found their ring full, per destination, in send order.
    overflow: Vec<VecDeque<CoreMsg>>,
    /// Destinations sent to since the last [`Bus::wake_peers`].
    to_wake: Vec<bool>,
    wakers: Arc<[AtomicWaker]>,
}

/// Builds the ends for `cores` cores; element `i` goes to core `i`.
pub fn build(cores: usize) -> Vec<Bus> {
    let wakers: Arc<[AtomicWaker]> = (0..cores).map(|_| AtomicWaker::new()).collect();
    let mut tx: Vec<Vec<Option<Producer<CoreMsg>>>> = (0..cores)
        .map(|_| (0..cores).map(|_| None).collect())
        .collect();
    let mut rx: Vec<Vec<Consumer<CoreMsg>>> = (0..cores).map(|_| Vec::new()).collect();
    for (from, row) in tx.iter_mut().enumerate() {
        for (to, slot) in row.iter_mut().enumerate() {
            if from != to {
                let (p, c) = RingBuffer::new(RING_CAPACITY);
                *slot = Some(p);
                rx[to].push(c);
            }
        }
    }
    tx.into_iter()
        .zip(rx)
        .enumerate()
        .map(|(core, (tx, rx))| Bus {
            core,
            tx,
            rx,
            overflow: (0..cores).map(|_| VecDeque::new()).collect(),
            to_wake: vec![false; cores],
            wakers: wakers.clone(),
        })
        .collect()
}

impl Bus {
    /// Sends `msg` to core `to`; it arrives after everything sent to `to` before.
    pub fn send(&mut self, to: usize, msg: CoreMsg) -> bool {
        debug_assert_ne!(to, self.core, "no ring to self");
        self.to_wake[to] = true;
        let overflow = &mut self.overflow[to];
        if !overflow.is_empty() {
            overflow.push_back(msg);
            return false;
        }
        match self.tx[to].as_mut().map(|p| p.push(msg)) {
            Some(Ok(())) => true,
            Some(Err(PushError::Full(msg))) => {
                overflow.push_back(msg);
                false
            }
            None => false,
        }
    }

    /// Moves overflowed messages into their rings as room appears; true while
    /// some remain.
    pub fn retry_overflow(&mut self) -> bool {
        let mut left = false;
        for (to, queue) in self.overflow.iter_mut().enumerate() {
            let Some(p) = self.tx[to].as_mut() else {
                continue;
            };
            while let Some(msg) = queue.pop_front() {
                if let Err(PushError::Full(msg)) = p.push(msg) {
                    queue.push_front(msg);
                    break;
                }
                self.to_wake[to] = true;
            }
            left |= !queue.is_empty();
        }
        left
    }

    /// True while some destination's ring is full: publishers should pause.
    pub fn congested(&self) -> bool {
        self.overflow.iter().any(|q| !q.is_empty())
    }

    /// Messages waiting in overflow queues (the queue-depth metric adds these).
    pub fn overflowed(&self) -> usize {
        self.overflow.iter().map(VecDeque::len).sum()
    }

    /// Messages waiting in this core's inbound rings.
    pub fn inbound_depth(&self) -> usize {
        self.rx.iter().map(Consumer::slots).sum()
    }

    /// Wakes every core sent to since the last call.
    pub fn wake_peers(&mut self) {
        for (to, flag) in self.to_wake.iter_mut().enumerate() {
            if std::mem::take(flag) {
                self.wakers[to].wake();
            }
        }
    }

    /// Takes up to `budget` inbound messages, oldest first per sender.
    pub fn drain(&mut self, budget: usize, mut f: impl FnMut(CoreMsg)) -> usize {
        let mut n = 0;
        for rx in &mut self.rx {
            while n < budget {
                match rx.pop() {
                    Ok(msg) => {
                        f(msg);
                        n += 1;
                    }
                    Err(_) => break,
                }
            }
        }
        n
    }

    /// Ready when inbound messages wait; otherwise parks `cx` until a sender wakes it.
    pub fn poll_inbound(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.rx.iter().any(|r| !r.is_empty()) {
            return Poll::Ready(());
        }
        self.wakers[self.core].register(cx.waker());
        // A sender may have pushed between the check and the registration.
        if self.rx.iter().any(|r| !r.is_empty()) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(core: u16) -> CoreMsg {
        CoreMsg::Release {
            topic: "t".into(),
            core,
        }
    }

    #[test]
    fn messages_arrive_in_order_and_overflow_keeps_the_order() {
        let mut buses = build(2);
        let mut b1 = buses.pop().expect("core 1");
        let mut b0 = buses.pop().expect("core 0");
        let total = RING_CAPACITY as u16 + 100;
        for i in 0..total {
            b0.send(1, release(i));
        }
        assert!(b0.congested());
        let mut got = Vec::new();
        let mut take = |m: CoreMsg| {
            if let CoreMsg::Release { core, .. } = m {
                got.push(core);
            }
        };
        b1.drain(usize::MAX, &mut take);
        assert!(!b0.retry_overflow());
        b1.drain(usize::MAX, &mut take);
        assert_eq!(got, (0..total).collect::<Vec<_>>());
    }

    #[test]
    fn a_parked_receiver_is_woken_by_a_send() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::{Wake, Waker};
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let mut buses = build(2);
        let b1 = buses.pop().expect("core 1");
        let mut b0 = buses.pop().expect("core 0");
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(b1.poll_inbound(&mut cx).is_pending());
        b0.send(1, release(0));
        b0.send(1, release(1));
        b0.wake_peers();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "one wake per batch");
        assert!(b1.poll_inbound(&mut cx).is_ready());
    }
}
