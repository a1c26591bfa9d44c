//! The process-wide budget for partial inbound data: request bodies and
//! WebSocket messages that have started to arrive and are not complete yet.
//!
//! One [`InboundBudget`] per process holds the bytes no core has taken. Each
//! core owns an [`InboundShare`]: bytes it took from the budget in chunks and
//! has not handed to a connection yet. A connection holds a [`Charge`], sized
//! to what it buffers now; growing it takes from the core's share, and the
//! share borrows a chunk from the budget only when it runs low, so the common
//! case is a `Cell` update with no atomic operation. A shrinking or dropped
//! charge gives its bytes back to the share, and a share holding more than two
//! chunks spare gives the excess back to the budget.
//!
//! The bound: the bytes held by all charges never exceed the budget. A core
//! may keep up to two chunks spare that the others cannot use, so a request
//! can be refused while the sum held is that much below the budget; the chunk
//! is small against the budget (a sixteenth of an even split over the cores,
//! at most 1 MiB) so this slack stays small.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::metrics::CoreMetrics;

/// Largest chunk a share borrows from the budget at once.
const MAX_CHUNK: usize = 1 << 20;

/// The bytes of the process-wide budget not taken by any core.
#[derive(Debug)]
pub struct InboundBudget {
    free: AtomicUsize,
    total: usize,
}

impl InboundBudget {
    pub fn new(total: usize) -> Arc<InboundBudget> {
        Arc::new(InboundBudget {
            free: AtomicUsize::new(total),
            total,
        })
    }

    /// Takes `n` bytes when that many are free.
    fn take(&self, n: usize) -> bool {
        self.free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |free| {
                free.checked_sub(n)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.free.fetch_add(n, Ordering::AcqRel);
    }
}

/// One core's part of the budget (single-threaded: owned by its core).
#[derive(Debug)]
pub struct InboundShare {
    budget: Arc<InboundBudget>,
    chunk: usize,
    /// Taken from the budget, held by no charge.
    spare: Cell<usize>,
    /// Held by this core's charges.
    held: Cell<usize>,
    /// Where `held` is published (`ringcast_inbound_bytes{core}`).
    gauge: Option<Arc<CoreMetrics>>,
}

/// The budget is spent: the connection asking for more must be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the inbound memory budget is spent")]
pub struct OverBudget;

impl InboundShare {
    /// The share of one of `cores` cores; `gauge`: the core's metrics, which
    /// show what it holds.
    pub fn new(
        budget: Arc<InboundBudget>,
        cores: usize,
        gauge: Option<Arc<CoreMetrics>>,
    ) -> Rc<InboundShare> {
        let chunk = (budget.total / (16 * cores.max(1))).clamp(1, MAX_CHUNK);
        Rc::new(InboundShare {
            budget,
            chunk,
            spare: Cell::new(0),
            held: Cell::new(0),
            gauge,
        })
    }

    fn set_held(&self, held: usize) {
        self.held.set(held);
        if let Some(m) = &self.gauge {
            m.inbound_bytes.set(held as u64);
        }
    }

    /// Bytes held by this core's charges.
    pub fn held(&self) -> usize {
        self.held.get()
    }

    /// Takes `n` bytes for a charge: from the spare bytes, else a chunk (or
    /// just what is missing) from the budget.
    fn acquire(&self, n: usize) -> Result<(), OverBudget> {
        let spare = self.spare.get();
        if spare < n {
            let missing = n - spare;
            let grab = missing.max(self.chunk);
            if self.budget.take(grab) {
                self.spare.set(spare + grab);
            } else if self.budget.take(missing) {
                self.spare.set(spare + missing);
            } else {
                return Err(OverBudget);
            }
        }
        self.spare.set(self.spare.get() - n);
        self.set_held(self.held.get() + n);
        Ok(())
    }

    fn release(&self, n: usize) {
        debug_assert!(n <= self.held.get(), "released more than held");
        self.set_held(self.held.get() - n);
        let spare = self.spare.get() + n;
        if spare > 2 * self.chunk {
            self.budget.give(spare - self.chunk);
            self.spare.set(self.chunk);
        } else {
            self.spare.set(spare);
        }
    }
}

impl Drop for InboundShare {
    fn drop(&mut self) {
        // Charges hold an `Rc` of their share: none is left here.
        self.budget.give(self.spare.get() + self.held.get());
    }
}

/// The bytes one connection buffers of a partial body or message, taken from
/// its core's share and given back when it shrinks or drops.
#[derive(Debug)]
pub struct Charge {
    share: Rc<InboundShare>,
    held: usize,
}

impl Charge {
    pub fn new(share: &Rc<InboundShare>) -> Charge {
        Charge {
            share: share.clone(),
            held: 0,
        }
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Sizes the charge to `bytes` buffered now. Growing may fail: the charge
    /// then keeps its old size, and the caller refuses the connection.
    pub fn resize(&mut self, bytes: usize) -> Result<(), OverBudget> {
        if bytes > self.held {
            self.share.acquire(bytes - self.held)?;
        } else if bytes < self.held {
            self.share.release(self.held - bytes);
        }
        self.held = bytes;
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.held > 0 {
            self.share.release(self.held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn charges_grow_until_the_budget_is_spent_and_give_back_on_drop() {
        let budget = InboundBudget::new(1000);
        let share = InboundShare::new(budget.clone(), 1, None);
        let mut a = Charge::new(&share);
        let mut b = Charge::new(&share);
        assert_eq!(a.resize(600), Ok(()));
        assert_eq!(b.resize(500), Err(OverBudget));
        assert_eq!(b.held(), 0, "a refused charge keeps its size");
        assert_eq!(b.resize(400), Ok(()));
        assert_eq!(share.held(), 1000);
        drop(a);
        assert_eq!(share.held(), 400);
        assert_eq!(
            b.resize(1000),
            Ok(()),
            "the dropped charge's bytes are free again"
        );
        drop(b);
        drop(share);
        assert_eq!(budget.free.load(Ordering::Relaxed), 1000);
    }

    #[test]
    fn a_core_borrows_in_chunks_and_returns_its_excess() {
        let budget = InboundBudget::new(64 << 20);
        let share = InboundShare::new(budget.clone(), 2, None);
        assert_eq!(share.chunk, 1 << 20);
        let mut c = Charge::new(&share);
        c.resize(10).unwrap();
        assert_eq!(budget.free.load(Ordering::Relaxed), (64 << 20) - (1 << 20));
        // Many small growths: no further borrowing.
        for n in 11..1000 {
            c.resize(n).unwrap();
        }
        assert_eq!(budget.free.load(Ordering::Relaxed), (64 << 20) - (1 << 20));
        c.resize(5 << 20).unwrap();
        c.resize(0).unwrap();
        assert_eq!(share.spare.get(), share.chunk, "excess given back");
    }

    #[test]
    fn another_core_can_use_what_one_gave_back() {
        let budget = InboundBudget::new(4 << 20);
        let one = InboundShare::new(budget.clone(), 2, None);
        let two = InboundShare::new(budget.clone(), 2, None);
        let mut a = Charge::new(&one);
        a.resize(4 << 20).unwrap();
        let mut b = Charge::new(&two);
        assert_eq!(b.resize(1), Err(OverBudget));
        drop(a);
        assert_eq!(b.resize(3 << 20), Ok(()));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Open { core: usize },
        Resize { conn: usize, bytes: usize },
        Drop { conn: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..3usize).prop_map(|core| Op::Open { core }),
            (0..16usize, 0..40_000usize).prop_map(|(conn, bytes)| Op::Resize { conn, bytes }),
            (0..16usize).prop_map(|conn| Op::Drop { conn }),
        ]
    }

    proptest! {
        /// Against a model: the bytes held by all charges are what the shares
        /// count and never exceed the budget; free, spare and held bytes always
        /// add up to the budget; a refusal happens only when the core's spare
        /// and the free budget could not hold the growth; and every byte comes
        /// back when everything is dropped.
        #[test]
        fn acquire_and_release_balance_on_every_path(ops in proptest::collection::vec(op(), 1..200)) {
            const TOTAL: usize = 100_000;
            let budget = InboundBudget::new(TOTAL);
            let shares: Vec<_> = (0..3).map(|_| InboundShare::new(budget.clone(), 3, None)).collect();
            let mut conns: Vec<(usize, Charge)> = Vec::new();
            for op in ops {
                match op {
                    Op::Open { core } => conns.push((core, Charge::new(&shares[core]))),
                    Op::Resize { conn, bytes } => {
                        if conns.is_empty() { continue; }
                        let i = conn % conns.len();
                        let (core, old) = (conns[i].0, conns[i].1.held());
                        let room = shares[core].spare.get() + budget.free.load(Ordering::Relaxed);
                        match conns[i].1.resize(bytes) {
                            Ok(()) => prop_assert_eq!(conns[i].1.held(), bytes),
                            Err(OverBudget) => {
                                prop_assert_eq!(conns[i].1.held(), old);
                                prop_assert!(bytes - old > room, "refused {} more with {} free", bytes - old, room);
                            }
                        }
                    }
                    Op::Drop { conn } => {
                        if conns.is_empty() { continue; }
                        let i = conn % conns.len();
                        conns.swap_remove(i);
                    }
                }
                let held: usize = conns.iter().map(|(_, c)| c.held()).sum();
                let counted: usize = shares.iter().map(|s| s.held()).sum();
                prop_assert_eq!(held, counted);
                prop_assert!(held <= TOTAL);
                let spare: usize = shares.iter().map(|s| s.spare.get()).sum();
                prop_assert_eq!(budget.free.load(Ordering::Relaxed) + spare + held, TOTAL);
                for (core, c) in &conns {
                    prop_assert!(Rc::ptr_eq(&c.share, &shares[*core]));
                }
            }
            drop(conns);
            prop_assert!(shares.iter().all(|s| s.held() == 0));
            drop(shares);
            prop_assert_eq!(budget.free.load(Ordering::Relaxed), TOTAL);
        }
    }
}
