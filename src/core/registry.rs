//! The client registry: a slab of clients addressed by generation-checked ids.
//!
//! A [`ClientId`] exists only once its client is inserted. Every later lookup checks
//! the generation, so an id kept by a timer, a pending cross-core reply or a topic
//! list after its client left is a no-op: it can never reach the slot's next
//! occupant. This is the cure for the close-before-register race: there is no
//! moment at which a connection is known to others but not registered.

use std::num::NonZeroU32;

use slab::Slab;

/// Generation of a slot: bumps on every removal, wraps from `u32::MAX` to 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gen(NonZeroU32);

impl Gen {
    const FIRST: Gen = Gen(NonZeroU32::MIN);

    fn next(self) -> Gen {
        Gen(self.0.checked_add(1).unwrap_or(NonZeroU32::MIN))
    }
}

/// Address of a client: its core, its slot on that core and the slot's generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId {
    core: u16,
    slot: u32,
    gen: Gen,
}

impl ClientId {
    /// The core that owns the client.
    pub fn core(self) -> usize {
        usize::from(self.core)
    }
}

/// Entries say which class they count under (for clients: their transport), so
/// the registry itself keeps the per-class counts the connection gauges show.
pub trait Classify {
    /// A class below [`CLASSES`].
    fn class(&self) -> usize;
}

/// Number of classes a registry counts.
pub const CLASSES: usize = 2;

/// A slab of `T` handing out [`ClientId`]s.
pub struct Registry<T> {
    core: u16,
    slots: Slab<T>,
    /// Generation of each slot ever used, indexed by slot.
    gens: Vec<Gen>,
    /// Live entries per class.
    counts: [usize; CLASSES],
}

impl<T: Classify> Registry<T> {
    pub fn new(core: u16) -> Self {
        Self {
            core,
            slots: Slab::new(),
            gens: Vec::new(),
            counts: [0; CLASSES],
        }
    }

    /// Inserts `value` and returns its id; the id is valid from this moment on.
    pub fn insert(&mut self, value: T) -> ClientId {
        self.counts[value.class()] += 1;
        let slot = self.slots.insert(value);
        if slot == self.gens.len() {
            self.gens.push(Gen::FIRST);
        }
        debug_assert!(slot < self.gens.len(), "slab skipped a slot: {slot:#x}");
        ClientId {
            core: self.core,
            // Slab keys stay below the number of live clients ever held at once;
            // a core holding 4 billion clients would have run out of memory first.
            slot: u32::try_from(slot).unwrap_or(u32::MAX),
            gen: self.gens[slot],
        }
    }

    fn live(&self, id: ClientId) -> Option<usize> {
        let slot = id.slot as usize;
        (id.core == self.core && self.gens.get(slot) == Some(&id.gen) && self.slots.contains(slot))
            .then_some(slot)
    }

    /// True while `id` addresses a live client.
    pub fn contains(&self, id: ClientId) -> bool {
        self.live(id).is_some()
    }

    pub fn get(&self, id: ClientId) -> Option<&T> {
        self.live(id).and_then(|slot| self.slots.get(slot))
    }

    pub fn get_mut(&mut self, id: ClientId) -> Option<&mut T> {
        self.live(id).and_then(|slot| self.slots.get_mut(slot))
    }

    /// Removes the client; a stale or already removed id returns `None`.
    pub fn remove(&mut self, id: ClientId) -> Option<T> {
        let slot = self.live(id)?;
        self.gens[slot] = self.gens[slot].next();
        let value = self.slots.remove(slot);
        self.counts[value.class()] -= 1;
        Some(value)
    }

    /// Live entries of one class.
    pub fn count(&self, class: usize) -> usize {
        self.counts[class]
    }

    /// Live clients.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every live client, for the rare whole-core walks (drain at shutdown).
    pub fn ids(&self) -> Vec<ClientId> {
        self.slots
            .iter()
            .map(|(slot, _)| ClientId {
                core: self.core,
                slot: slot as u32,
                gen: self.gens[slot],
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Classify for &str {
        fn class(&self) -> usize {
            0
        }
    }

    impl Classify for i32 {
        fn class(&self) -> usize {
            (*self % 2) as usize
        }
    }

    impl Classify for u8 {
        fn class(&self) -> usize {
            0
        }
    }

    #[test]
    fn counts_per_class_follow_inserts_and_removals() {
        let mut reg = Registry::new(0);
        let a = reg.insert(1);
        reg.insert(2);
        reg.insert(3);
        assert_eq!((reg.count(0), reg.count(1)), (1, 2));
        reg.remove(a);
        reg.remove(a);
        assert_eq!((reg.count(0), reg.count(1)), (1, 1));
    }

    #[test]
    fn a_stale_id_never_reaches_the_next_occupant_of_its_slot() {
        let mut reg = Registry::new(0);
        let first = reg.insert("first");
        assert_eq!(reg.remove(first), Some("first"));
        let second = reg.insert("second");
        assert_eq!(first.slot, second.slot, "the slot is reused");
        assert_eq!(reg.get(first), None);
        assert_eq!(reg.get_mut(first), None);
        assert_eq!(reg.remove(first), None);
        assert_eq!(reg.get(second), Some(&"second"));
    }

    #[test]
    fn double_removal_is_a_no_op() {
        let mut reg = Registry::new(0);
        let id = reg.insert(7);
        assert_eq!(reg.remove(id), Some(7));
        assert_eq!(reg.remove(id), None);
        assert!(reg.is_empty());
    }

    #[test]
    fn removal_while_walking_a_list_of_ids_skips_the_removed() {
        // Fan-out walks a topic's id list; a client removed halfway (by an earlier
        // write error) must simply be skipped, as must its slot's new occupant.
        let mut reg = Registry::new(0);
        let ids: Vec<_> = (0..10).map(|i| reg.insert(i)).collect();
        let mut seen = Vec::new();
        for (n, id) in ids.iter().enumerate() {
            if n == 3 {
                reg.remove(ids[5]);
                reg.insert(99); // takes slot 5 with a new generation
            }
            if let Some(v) = reg.get(*id) {
                seen.push(*v);
            }
        }
        assert_eq!(seen, vec![0, 1, 2, 3, 4, 6, 7, 8, 9]);
    }

    #[test]
    fn generations_wrap_to_one_not_zero() {
        let last = Gen(NonZeroU32::MAX);
        assert_eq!(last.next(), Gen::FIRST);
    }

    #[test]
    fn ids_of_another_core_are_not_ours() {
        let mut a = Registry::new(0);
        let b = Registry::<u8>::new(1);
        let id = a.insert(1u8);
        assert!(!b.contains(id));
        assert_eq!(id.core(), 0);
    }
}
