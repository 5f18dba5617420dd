//! The exact routes of a bus: its topics by hash, each entry holding a copy of its
//! topic's first [`HEAD`] bytes next to the topic's name and routes.
//!
//! A look-up compares the topic with that copy, in the slot it has just read, instead
//! of with the name's bytes, which live in an allocation of their own (the interned
//! name, see [`super::intern`]): on a bus with many topics those bytes are a cache miss
//! per event (`events/routing` bench, docs/performance.md). Only a topic longer than
//! `HEAD` bytes reads the rest of its name.

use std::hash::BuildHasher;

use hashbrown::hash_table::{Entry as Slot, HashTable};

use super::{Name, Route, RouteList};

/// How many of a topic's first bytes its entry keeps in place: enough for most topic
/// names (`request.completed`, `user.profile.updated`) at the price of 24 more bytes per
/// entry.
pub(super) const HEAD: usize = 24;

/// One topic's entry: its name (what its events carry), the first bytes of that name,
/// and its routes.
#[derive(Clone)]
struct Entry {
    name: Name,
    /// The first [`HEAD`] bytes of `name`, zero past its end.
    head: [u8; HEAD],
    routes: RouteList,
}

impl Entry {
    fn new(name: Name, routes: RouteList) -> Self {
        let mut head = [0; HEAD];
        let bytes = name.as_str().as_bytes();
        let kept = bytes.len().min(HEAD);
        head[..kept].copy_from_slice(&bytes[..kept]);
        Self { name, head, routes }
    }

    /// Whether this is the entry of `topic`. The name's length is in its (fat) pointer,
    /// so a topic of up to [`HEAD`] bytes is compared without reading the name's bytes.
    #[inline]
    fn is(&self, topic: &[u8]) -> bool {
        let name = self.name.as_str().as_bytes();
        if name.len() != topic.len() {
            return false;
        }
        match topic.split_at_checked(HEAD) {
            None => self.head[..topic.len()] == *topic,
            Some((head, tail)) => self.head == *head && name[HEAD..] == *tail,
        }
    }
}

/// The exact routes: the routes of each subscribed topic, by the topic's hash.
#[derive(Clone, Default)]
pub(super) struct ExactRoutes {
    table: HashTable<Entry>,
    hasher: foldhash::fast::RandomState,
}

impl ExactRoutes {
    #[inline]
    fn hash(&self, topic: &str) -> u64 {
        self.hasher.hash_one(topic)
    }

    /// The name and routes of `topic`, if it has any.
    #[inline]
    pub(super) fn get(&self, topic: &str) -> Option<(&Name, &RouteList)> {
        self.table
            .find(self.hash(topic), |entry| entry.is(topic.as_bytes()))
            .map(|entry| (&entry.name, &entry.routes))
    }

    /// Adds `route` at the end of `topic`'s routes. A topic new to the table is named
    /// by `name()`, called only then.
    pub(super) fn push(&mut self, topic: &str, route: Route, name: impl FnOnce() -> Name) {
        let hasher = &self.hasher;
        let slot = self.table.entry(
            hasher.hash_one(topic),
            |entry| entry.is(topic.as_bytes()),
            |entry| hasher.hash_one(entry.name.as_str()),
        );
        match slot {
            Slot::Occupied(mut entry) => entry.get_mut().routes.push(route),
            Slot::Vacant(entry) => {
                entry.insert(Entry::new(name(), smallvec::smallvec![route]));
            }
        }
    }

    /// Keeps the routes of `topic` for which `keep` holds, and drops the topic's entry
    /// once it has none. Makes no entry for a topic that has none.
    pub(super) fn retain(&mut self, topic: &str, mut keep: impl FnMut(&Route) -> bool) {
        let hash = self.hash(topic);
        if let Ok(mut entry) = self
            .table
            .find_entry(hash, |entry| entry.is(topic.as_bytes()))
        {
            let routes = &mut entry.get_mut().routes;
            routes.retain(|route| keep(route));
            if routes.is_empty() {
                entry.remove();
            }
        }
    }

    /// How many topics have routes.
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// Every topic's routes, in no particular order.
    pub(super) fn routes(&self) -> impl Iterator<Item = &RouteList> {
        self.table.iter().map(|entry| &entry.routes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry of `name`, with no routes.
    fn entry(name: &str) -> Entry {
        Entry::new(Name::Shared(name.into()), RouteList::new())
    }

    #[test]
    fn an_entry_is_its_topic_and_no_other_at_every_length_around_the_head() {
        for len in [0, 1, HEAD - 1, HEAD, HEAD + 1, 2 * HEAD + 3] {
            let topic: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            let e = entry(&topic);
            assert!(e.is(topic.as_bytes()), "{topic:?} is its own entry");
            let longer = format!("{topic}x");
            assert!(!e.is(longer.as_bytes()), "{longer:?} is not {topic:?}");
            if len > 0 {
                let shorter = &topic[..len - 1];
                assert!(!e.is(shorter.as_bytes()), "{shorter:?} is not {topic:?}");
                // The same length, differing in the first byte, in the last byte.
                for at in [0, len - 1] {
                    let mut other = topic.clone().into_bytes();
                    other[at] = b'#';
                    assert!(!e.is(&other), "{other:?} is not {topic:?}");
                }
            }
        }
    }

    #[test]
    fn a_name_shorter_than_the_head_is_not_matched_by_its_zero_padding() {
        let e = entry("ab");
        assert!(!e.is(b"ab\0"));
        assert!(!e.is(&[b'a', b'b', 0, 0]));
        assert!(e.is(b"ab"));
    }
}
