//! Topic indexes of one core: who on this core listens to what, and which core
//! is each topic's home ([`home_of`]; what a home keeps is `core::homes`).
//!
//! [`LocalTopics`]: each topic keeps a dense list of `(client, subscription
//! index)`; a client's subscription remembers its position in that list, so
//! unsubscribe is an O(1) swap-remove, never a scan.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};

use slab::Slab;

use super::registry::ClientId;

/// Key of a topic in [`LocalTopics`].
pub type TopicKey = u32;

/// The hasher of topic names, for the per-core maps and the placement of
/// topics on cores: foldhash (several times faster than the std SipHash on
/// short names), keyed with seeds drawn at process start.
///
/// Peers choose topic names, so a fixed or unkeyed hash would let them pick
/// names that share one map bucket (hash flooding) or one home core. With a
/// per-process key they cannot compute collisions offline, and nothing the
/// server sends reveals a hash or a bucket. foldhash is not a cryptographic
/// hash: this is the "minimally DoS resistant" use its authors intend (hash
/// maps), not a security boundary. Where a hash stands for a name
/// (`core::homes`' forgotten topics), the keyed SipHash is kept.
pub type TopicHasher = foldhash::fast::RandomState;

/// A map keyed by topic name.
pub type TopicMap<V> = HashMap<Arc<str>, V, TopicHasher>;

/// The key of topic placement, the same on every core of the process.
fn placement() -> &'static TopicHasher {
    static KEY: OnceLock<TopicHasher> = OnceLock::new();
    KEY.get_or_init(TopicHasher::default)
}

/// The home core of a topic: a keyed hash of its name, the same on every core
/// of the process, so every core agrees without asking (see [`TopicHasher`]).
pub fn home_of(topic: &str, cores: usize) -> usize {
    (placement().hash_one(topic) % cores.max(1) as u64) as usize
}

pub struct LocalTopic {
    pub name: Arc<str>,
    /// Every local subscriber: its id and the index of the subscription in its
    /// client's list.
    pub subs: Vec<(ClientId, u16)>,
}

#[derive(Default)]
pub struct LocalTopics {
    by_name: TopicMap<TopicKey>,
    topics: Slab<LocalTopic>,
    subscriptions: usize,
}

impl LocalTopics {
    pub fn key(&self, name: &str) -> Option<TopicKey> {
        self.by_name.get(name).copied()
    }

    pub fn get(&self, key: TopicKey) -> Option<&LocalTopic> {
        self.topics.get(key as usize)
    }

    /// Adds a subscriber; returns the topic key, its position in the topic's list,
    /// and whether the topic is new on this core (the home must hear of it).
    pub fn add(&mut self, name: &str, client: ClientId, sub_index: u16) -> (TopicKey, u32, bool) {
        let (key, created) = match self.by_name.get(name) {
            Some(&key) => (key, false),
            None => {
                let name: Arc<str> = Arc::from(name);
                let key = self.topics.insert(LocalTopic {
                    name: name.clone(),
                    subs: Vec::new(),
                }) as TopicKey;
                self.by_name.insert(name, key);
                (key, true)
            }
        };
        let subs = &mut self.topics[key as usize].subs;
        subs.push((client, sub_index));
        self.subscriptions += 1;
        (key, (subs.len() - 1) as u32, created)
    }

    /// Removes the subscriber at `pos`. Returns the entry moved into `pos` (its
    /// client must update its subscription's position), and the topic's name when
    /// that was its last local subscriber (the topic is dropped from this core).
    pub fn remove(
        &mut self,
        key: TopicKey,
        pos: u32,
    ) -> (Option<(ClientId, u16)>, Option<Arc<str>>) {
        let Some(topic) = self.topics.get_mut(key as usize) else {
            debug_assert!(false, "remove from unknown topic key {key:#x}");
            return (None, None);
        };
        let pos = pos as usize;
        if pos >= topic.subs.len() {
            debug_assert!(
                false,
                "position {pos:#x} past {:#x} subscribers",
                topic.subs.len()
            );
            return (None, None);
        }
        topic.subs.swap_remove(pos);
        self.subscriptions -= 1;
        let moved = topic.subs.get(pos).copied();
        if topic.subs.is_empty() {
            let topic = self.topics.remove(key as usize);
            self.by_name.remove(&topic.name);
            return (None, Some(topic.name));
        }
        (moved, None)
    }

    /// Points the list entry at `pos` to the subscription's new index.
    pub fn set_sub_index(&mut self, key: TopicKey, pos: u32, sub_index: u16) {
        if let Some(entry) = self
            .topics
            .get_mut(key as usize)
            .and_then(|t| t.subs.get_mut(pos as usize))
        {
            entry.1 = sub_index;
        }
    }

    /// Topics with at least one subscriber on this core.
    pub fn len(&self) -> usize {
        self.topics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// Subscriptions on this core.
    pub fn subscriptions(&self) -> usize {
        self.subscriptions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::registry::Registry;

    #[test]
    fn the_home_of_a_topic_is_the_same_everywhere_and_spreads() {
        assert_eq!(home_of("news", 4), home_of("news", 4));
        let homes: std::collections::HashSet<_> =
            (0..64).map(|i| home_of(&format!("t{i}"), 4)).collect();
        assert_eq!(homes.len(), 4);
        assert_eq!(home_of("anything", 1), 0);
        let same = std::thread::spawn(|| home_of("news", 4)).join().unwrap();
        assert_eq!(same, home_of("news", 4), "every core (thread) agrees");
    }

    /// The unkeyed FNV-1a placement this replaced: anyone can compute it.
    fn fnv1a(topic: &str) -> u64 {
        topic.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }

    #[test]
    fn names_chosen_to_pile_onto_one_core_spread_over_all() {
        // 4,000 names that the old placement put all on core 0 of 4: what a peer
        // flooding one core would send.
        let flood: Vec<String> = (0..)
            .map(|i| format!("user:{i}"))
            .filter(|t| fnv1a(t).is_multiple_of(4))
            .take(4000)
            .collect();
        let mut per_core = [0usize; 4];
        for t in &flood {
            per_core[home_of(t, 4)] += 1;
        }
        for n in per_core {
            assert!((800..1200).contains(&n), "uneven placement: {per_core:?}");
        }
        // And the map holding them stays a map: every name found, no clash.
        let mut topics = LocalTopics::default();
        let mut reg = Registry::new(0);
        let id = reg.insert(0);
        for t in &flood {
            topics.add(t, id, 0);
        }
        assert_eq!(topics.len(), flood.len());
        assert!(flood.iter().all(|t| topics.key(t).is_some()));
    }

    #[test]
    fn unsubscribe_swaps_the_last_entry_in_and_reports_it() {
        let mut reg = Registry::new(0);
        let ids: Vec<_> = (0..3).map(|i| reg.insert(i)).collect();
        let mut topics = LocalTopics::default();
        let (key, p0, created) = topics.add("a", ids[0], 0);
        assert!(created);
        let (_, p1, created) = topics.add("a", ids[1], 0);
        assert!(!created);
        let (_, p2, _) = topics.add("a", ids[2], 4);
        assert_eq!((p0, p1, p2), (0, 1, 2));
        let (moved, gone) = topics.remove(key, 0);
        assert_eq!(moved, Some((ids[2], 4)));
        assert_eq!(gone, None);
        assert_eq!(topics.subscriptions(), 2);
        topics.remove(key, 1);
        let (moved, gone) = topics.remove(key, 0);
        assert_eq!(moved, None);
        assert_eq!(gone.as_deref(), Some("a"));
        assert!(topics.is_empty());
        assert_eq!(topics.key("a"), None);
    }
}
