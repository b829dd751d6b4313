//! The store's point-lookup table: key hash to key handle, open addressing
//! with linear probing in one array of 8-byte slots.
//!
//! A slot holds the key's 32-bit hash and its handle, so a probe reads one
//! cache line and compares hashes without touching any key; a key is read
//! only when its full 32-bit hash matches. Because the home slot of a hash
//! is plain arithmetic, a caller that knows which keys come next can touch
//! their slots ahead of time ([`KeyTable::touch`]), which a table hiding its
//! layout (hashbrown's) cannot offer.
//!
//! Removal shifts the following slots back (no tombstones), so probes stay
//! short however many keys come and go. The table is never iterated in
//! anything observable, and its contents depend only on the sequence of
//! operations: every member builds the same one.

/// Marks a slot in use (handles are below 2^31, see `index::MAX_HANDLE`).
const USED: u64 = 1 << 31;
const HANDLE_MASK: u64 = USED - 1;
const MIN_SLOTS: usize = 8;

#[derive(Clone, Debug)]
pub(crate) struct KeyTable {
    /// `hash << 32 | USED | handle`, or 0 for a free slot.
    slots: Vec<u64>,
    len: usize,
    /// `64 - log2(slots.len())`: a hash's home slot is the top bits of its
    /// multiplied value.
    shift: u32,
}

impl Default for KeyTable {
    fn default() -> Self {
        KeyTable::with_slots(MIN_SLOTS)
    }
}

fn slot_hash(slot: u64) -> u32 {
    (slot >> 32) as u32
}

fn slot_handle(slot: u64) -> u32 {
    (slot & HANDLE_MASK) as u32
}

impl KeyTable {
    fn with_slots(n: usize) -> KeyTable {
        debug_assert!(n.is_power_of_two() && n >= MIN_SLOTS);
        KeyTable {
            slots: vec![0; n],
            len: 0,
            shift: 64 - n.trailing_zeros(),
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn home(&self, hash: u32) -> usize {
        (u64::from(hash).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
    }

    /// Reads `hash`'s home slot and returns it: a caller about to look up
    /// several keys touches their slots first so the cache misses overlap.
    pub(crate) fn touch(&self, hash: u32) -> u64 {
        self.slots[self.home(hash)]
    }

    /// The handle of the key with `hash` for which `is_key` holds.
    pub(crate) fn find(&self, hash: u32, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        let mask = self.mask();
        let mut i = self.home(hash);
        loop {
            let s = self.slots[i];
            if s == 0 {
                return None;
            }
            if slot_hash(s) == hash && is_key(slot_handle(s)) {
                return Some(slot_handle(s));
            }
            i = (i + 1) & mask;
        }
    }

    /// The first handle stored under `hash`, without reading any key (a
    /// guess that is right unless two keys share all 32 bits of hash).
    pub(crate) fn first_with_hash(&self, hash: u32) -> Option<u32> {
        self.find(hash, |_| true)
    }

    /// Adds a handle whose key is not in the table.
    pub(crate) fn insert_new(&mut self, hash: u32, handle: u32) {
        debug_assert!(u64::from(handle) <= HANDLE_MASK);
        // At most 3/4 full: linear probes stay a few slots long.
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.resize(self.slots.len() * 2);
        }
        self.place(u64::from(hash) << 32 | USED | u64::from(handle));
        self.len += 1;
    }

    fn place(&mut self, slot: u64) {
        let mask = self.mask();
        let mut i = self.home(slot_hash(slot));
        while self.slots[i] != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = slot;
    }

    /// Removes `handle`, stored under `hash`; returns whether it was there.
    pub(crate) fn remove(&mut self, hash: u32, handle: u32) -> bool {
        let mask = self.mask();
        let want = u64::from(hash) << 32 | USED | u64::from(handle);
        let mut i = self.home(hash);
        loop {
            let s = self.slots[i];
            if s == 0 {
                return false;
            }
            if s == want {
                break;
            }
            i = (i + 1) & mask;
        }
        // Shift back every following slot whose home is not after the hole,
        // so no probe ever crosses a free slot before reaching its key.
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let s = self.slots[j];
            if s == 0 {
                break;
            }
            let home = self.home(slot_hash(s));
            // `s` may fill the hole if its home is not in (hole, j].
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.slots[hole] = s;
                hole = j;
            }
        }
        self.slots[hole] = 0;
        self.len -= 1;
        true
    }

    /// Makes room for `additional` more keys without growing on the way.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let want = (self.len + additional).saturating_mul(4).div_ceil(3);
        if want > self.slots.len() {
            self.resize(want.next_power_of_two());
        }
    }

    /// Gives memory back when at most an eighth of the slots are in use.
    pub(crate) fn shrink_if_sparse(&mut self) {
        let n = self.slots.len();
        if n > MIN_SLOTS && self.len * 8 <= n {
            let want = (self.len * 4)
                .div_ceil(3)
                .next_power_of_two()
                .max(MIN_SLOTS);
            if want < n {
                self.resize(want);
            }
        }
    }

    fn resize(&mut self, n: usize) {
        let old = std::mem::replace(self, KeyTable::with_slots(n));
        self.len = old.len;
        for s in old.slots.into_iter().filter(|&s| s != 0) {
            self.place(s);
        }
    }

    /// Slots in the table, used or free.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32),
        Remove(u32),
        Shrink,
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few distinct hashes (and keys), so collisions and long runs are common.
        prop_oneof![
            4 => (0u32..200).prop_map(Op::Insert),
            3 => (0u32..200).prop_map(Op::Remove),
            1 => Just(Op::Shrink),
        ]
    }

    /// Keys are numbers; the hash keeps only a few bits, so many keys share one.
    fn hash(key: u32) -> u32 {
        key % 13
    }

    proptest! {
        #[test]
        fn table_matches_a_map(ops in prop::collection::vec(op(), 0..800)) {
            let mut t = KeyTable::default();
            // key -> handle; the handle is the key plus one.
            let mut model: BTreeMap<u32, u32> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k) => {
                        if let std::collections::btree_map::Entry::Vacant(e) = model.entry(k) {
                            t.insert_new(hash(k), k + 1);
                            e.insert(k + 1);
                        }
                    }
                    Op::Remove(k) => {
                        let removed = t.remove(hash(k), k + 1);
                        prop_assert_eq!(removed, model.remove(&k).is_some());
                    }
                    Op::Shrink => t.shrink_if_sparse(),
                }
                prop_assert_eq!(t.len(), model.len());
                prop_assert!(t.len() * 4 <= t.capacity() * 3);
                for k in 0..200 {
                    let found = t.find(hash(k), |h| h == k + 1);
                    prop_assert_eq!(found, model.get(&k).copied());
                }
            }
        }
    }

    #[test]
    fn grows_and_shrinks() {
        let mut t = KeyTable::default();
        for k in 0..10_000u32 {
            t.insert_new(k.wrapping_mul(2_654_435_761), k);
        }
        assert!(t.capacity() >= 10_000 * 4 / 3);
        for k in 0..10_000u32 {
            assert_eq!(t.first_with_hash(k.wrapping_mul(2_654_435_761)), Some(k));
        }
        for k in 0..9_900u32 {
            assert!(t.remove(k.wrapping_mul(2_654_435_761), k));
        }
        t.shrink_if_sparse();
        assert!(t.capacity() <= 256, "{}", t.capacity());
        for k in 9_900..10_000u32 {
            assert_eq!(t.first_with_hash(k.wrapping_mul(2_654_435_761)), Some(k));
        }
        let mut r = KeyTable::default();
        r.reserve(1000);
        let cap = r.capacity();
        for k in 0..1000u32 {
            r.insert_new(k, k);
        }
        assert_eq!(r.capacity(), cap, "reserve made room for all of them");
    }
}
