//! The per-address connection cap (`--max-connections-per-ip`), counted over
//! all cores.
//!
//! Counts live in a fixed table of atomic counters indexed by a keyed hash of
//! the peer's address (an IPv6 peer by its /64, what one host is usually
//! given): no lock, no allocation per connection, and no state that grows with
//! the number of addresses seen. Two addresses that land on the same slot
//! share one count, so a rare pair is capped together (never one past its
//! cap); with 65,536 slots and a key drawn at start, a peer cannot aim for
//! another's slot.

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

const SLOTS: usize = 1 << 16;

/// Connections held per address, process-wide.
#[derive(Debug)]
pub struct PeerCounts {
    slots: Box<[AtomicU32]>,
    key: std::collections::hash_map::RandomState,
    max: u32,
}

/// One admitted connection's place in its address's count, given back on drop.
#[derive(Debug)]
pub struct PeerSlot {
    counts: Arc<PeerCounts>,
    slot: usize,
}

impl PeerCounts {
    /// A table admitting `max` connections per address.
    pub fn new(max: u32) -> Arc<PeerCounts> {
        Arc::new(PeerCounts {
            slots: (0..SLOTS).map(|_| AtomicU32::new(0)).collect(),
            key: Default::default(),
            max,
        })
    }

    fn slot(&self, ip: IpAddr) -> usize {
        let mut h = self.key.build_hasher();
        match ip {
            IpAddr::V4(v4) => v4.octets().hash(&mut h),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.octets().hash(&mut h),
                None => v6.octets()[..8].hash(&mut h),
            },
        }
        h.finish() as usize % SLOTS
    }

    /// Counts a new connection from `ip`, or `None` when the address holds
    /// its cap already.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<PeerSlot> {
        let slot = self.slot(ip);
        self.slots[slot]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        Some(PeerSlot {
            counts: self.clone(),
            slot,
        })
    }

    /// Connections counted for `ip` now.
    #[cfg(test)]
    fn held(&self, ip: IpAddr) -> u32 {
        self.slots[self.slot(ip)].load(Ordering::Acquire)
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        self.counts.slots[self.slot].fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_cap_and_a_slot_back_when_a_connection_goes() {
        let counts = PeerCounts::new(2);
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let a = counts.admit(ip).unwrap();
        let _b = counts.admit(ip).unwrap();
        assert!(counts.admit(ip).is_none());
        drop(a);
        assert_eq!(counts.held(ip), 1);
        assert!(counts.admit(ip).is_some());
    }

    #[test]
    fn addresses_are_counted_apart_and_v6_hosts_by_their_64() {
        let counts = PeerCounts::new(1);
        let held: Vec<_> = (1..=20)
            .filter_map(|i| counts.admit(IpAddr::from([10, 0, 0, i])))
            .collect();
        // Twenty addresses in 65,536 slots: a shared slot is rare.
        assert!(held.len() >= 19, "{} admitted", held.len());
        let one: IpAddr = "2001:db8::1".parse().unwrap();
        let same_host: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        let _h = counts.admit(one).unwrap();
        assert!(counts.admit(same_host).is_none());
        let mapped: IpAddr = "::ffff:10.9.9.9".parse().unwrap();
        let _m = counts.admit(mapped).unwrap();
        assert!(counts.admit(IpAddr::from([10, 9, 9, 9])).is_none());
    }
}
