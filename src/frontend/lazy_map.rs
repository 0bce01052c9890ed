//! A map that costs one pointer until something is put in it: most clients never name a
//! statement, and an idle client's state is kept small (BENCHMARKS.md, memory per idle
//! client). Keys are hashed with foldhash, seeded at random per map: a lookup is on every
//! Bind of a named statement, where SipHash cost ~250 instructions.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// The box is the point: an empty `HashMap` is 48 bytes inline, this is 8.
#[expect(
    clippy::box_collection,
    reason = "one pointer while empty instead of the map's 48 bytes"
)]
pub struct LazyMap<K, V>(Option<Box<HashMap<K, V, foldhash::fast::RandomState>>>);

impl<K, V> Default for LazyMap<K, V> {
    fn default() -> Self {
        LazyMap(None)
    }
}

impl<K: Eq + Hash, V> LazyMap<K, V> {
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|m| m.is_empty())
    }

    pub fn get<Q: Eq + Hash + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.0.as_ref()?.get(key)
    }

    pub fn contains_key<Q: Eq + Hash + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.get(key).is_some()
    }

    pub fn insert(&mut self, key: K, value: V) {
        self.0.get_or_insert_default().insert(key, value);
    }

    /// Removes `key`; the map's memory goes with its last entry.
    pub fn remove<Q: Eq + Hash + ?Sized>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
    {
        if let Some(map) = &mut self.0 {
            map.remove(key);
            if map.is_empty() {
                self.0 = None;
            }
        }
    }

    pub fn clear(&mut self) {
        self.0 = None;
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().flat_map(|m| m.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_memory_only_while_it_has_entries() {
        let mut map: LazyMap<String, u32> = LazyMap::default();
        assert!(map.is_empty() && map.0.is_none());
        map.insert("a".into(), 1);
        map.insert("b".into(), 2);
        assert_eq!((map.get("a"), map.contains_key("b")), (Some(&1), true));
        map.remove("a");
        assert!(!map.is_empty() && map.get("a").is_none());
        map.remove("b");
        assert!(map.is_empty() && map.0.is_none());
        map.insert("c".into(), 3);
        map.clear();
        assert!(map.is_empty() && map.0.is_none());
    }
}
