//! The cross-core bus: one lock-free single-producer ring for every ordered pair
//! of cores, plus one wake-up per core.
//!
//! Core `i` owns the producer end of ring `i → j` and the consumer end of every
//! ring `j → i`, so each ring has exactly one writer and one reader thread and
//! needs no lock (rtrb). A full ring hands the message back (`PushError::Full`);
//! it then waits in a local overflow queue, in order, and the publisher that
//! caused it is slowed by [`Bus::congested`]: backpressure, not unbounded growth.
//!
//! Wake-ups go through io_uring, not through the executor's cross-thread wakers.
//! monoio hands a waker from another thread to its task only when the runtime
//! parks, and a core that is busy (a long flush, thousands of writable sockets)
//! does not park: its bus would wait for the whole of that work. So each worker
//! core has a *doorbell*, a socket pair: its bus task waits for the read end to
//! become readable, like any socket (the poll completes in the ring, which the
//! runtime reaps between every round of tasks), and a sender rings by writing a
//! byte to the other end. A receiver arms its doorbell before it waits; the first
//! sender of a batch that finds it armed rings, later ones cost nothing. The
//! broker bridge (a tokio thread) is woken through an `AtomicWaker` instead.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{fence, AtomicBool, Ordering};
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
    wakeups: Arc<[Wakeup]>,
    /// The read end of this core's doorbell, until its bus task takes it.
    doorbell: Option<UnixStream>,
}

/// How senders wake one endpoint that waits for input (see the module doc).
struct Wakeup {
    /// The receiver waits: the next sender to clear it wakes the receiver.
    armed: AtomicBool,
    /// The write end of the receiver's doorbell (worker cores).
    bell: Option<UnixStream>,
    /// The receiver's task, when it waits through a waker (the bridge).
    waker: AtomicWaker,
}

impl Wakeup {
    fn wake(&self) {
        // Pairs with the fence in `Bus::arm`: either the receiver sees the
        // message, or this sees it armed.
        fence(Ordering::SeqCst);
        if !self.armed.swap(false, Ordering::SeqCst) {
            return;
        }
        if let Some(mut bell) = self.bell.as_ref() {
            // A full doorbell is rung already: WouldBlock needs nothing more.
            let _ = bell.write(&[1]);
        }
        self.waker.wake();
    }
}

/// Builds the ends for `cores` endpoints; element `i` goes to core `i`. The
/// first `with_doorbell` endpoints (the worker cores) get a doorbell.
pub fn build(cores: usize, with_doorbell: usize) -> io::Result<Vec<Bus>> {
    let mut doorbells = Vec::new();
    let mut wakeups = Vec::new();
    for i in 0..cores {
        let bell = if i < with_doorbell {
            let (read, write) = UnixStream::pair()?;
            read.set_nonblocking(true)?;
            write.set_nonblocking(true)?;
            doorbells.push(Some(read));
            Some(write)
        } else {
            doorbells.push(None);
            None
        };
        wakeups.push(Wakeup {
            armed: AtomicBool::new(false),
            bell,
            waker: AtomicWaker::new(),
        });
    }
    let wakeups: Arc<[Wakeup]> = wakeups.into();
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
    Ok(tx
        .into_iter()
        .zip(rx)
        .zip(doorbells)
        .enumerate()
        .map(|(core, ((tx, rx), doorbell))| Bus {
            core,
            tx,
            rx,
            overflow: (0..cores).map(|_| VecDeque::new()).collect(),
            to_wake: vec![false; cores],
            wakeups: wakeups.clone(),
            doorbell,
        })
        .collect())
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

    /// Wakes every core sent to since the last call (those waiting for input).
    pub fn wake_peers(&mut self) {
        for (to, flag) in self.to_wake.iter_mut().enumerate() {
            if std::mem::take(flag) {
                self.wakeups[to].wake();
            }
        }
    }

    /// The read end of this core's doorbell, for its bus task (once).
    pub fn take_doorbell(&mut self) -> Option<UnixStream> {
        self.doorbell.take()
    }

    /// Inbound messages wait.
    fn has_inbound(&self) -> bool {
        self.rx.iter().any(|r| !r.is_empty())
    }

    /// Before waiting on the doorbell: true when inbound messages wait already;
    /// otherwise arms the doorbell, so that the next send rings it.
    pub fn arm(&self) -> bool {
        if self.has_inbound() {
            return true;
        }
        self.wakeups[self.core].armed.store(true, Ordering::SeqCst);
        // Pairs with the fence in `Wakeup::wake`.
        fence(Ordering::SeqCst);
        self.has_inbound()
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

    /// Ready when inbound messages wait; otherwise parks `cx` until a sender
    /// wakes it (the bridge's way to wait; a worker core waits on its doorbell).
    pub fn poll_inbound(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.has_inbound() {
            return Poll::Ready(());
        }
        self.wakeups[self.core].waker.register(cx.waker());
        // A sender may have pushed between the check and the registration.
        if self.arm() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// Empties a doorbell that rang (what was written only says "look").
pub fn silence(doorbell: RawFd) {
    let mut buf = [0u8; 64];
    while matches!(crate::netio::recv(doorbell, &mut buf), Ok(n) if n > 0) {}
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
        let mut buses = build(2, 2).expect("bus");
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
        let mut buses = build(2, 2).expect("bus");
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

    #[test]
    fn an_armed_doorbell_rings_once_per_batch() {
        let mut buses = build(2, 2).expect("bus");
        let mut b1 = buses.pop().expect("core 1");
        let mut b0 = buses.pop().expect("core 0");
        let bell = b1.take_doorbell().expect("a worker core has a doorbell");
        let pending = |bell: &UnixStream| {
            use std::io::Read;
            let mut buf = [0u8; 8];
            let mut b = bell;
            match b.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => panic!("{e}"),
            }
        };
        // Not armed: a send does not ring.
        b0.send(1, release(0));
        b0.wake_peers();
        assert_eq!(pending(&bell), 0);
        // Messages wait: arming says so at once.
        assert!(b1.arm());
        b1.drain(usize::MAX, |_| {});
        // Armed and empty: the first batch rings once, the next not again.
        assert!(!b1.arm());
        b0.send(1, release(1));
        b0.wake_peers();
        b0.send(1, release(2));
        b0.wake_peers();
        assert_eq!(pending(&bell), 1, "one ring for the two batches");
        silence(std::os::fd::AsRawFd::as_raw_fd(&bell));
        assert_eq!(pending(&bell), 0);
    }
}
