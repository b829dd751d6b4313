//! The ordered key index of the MVCC store: a B+tree of 4-byte key handles
//! whose bytes live elsewhere (in the store's key records), counting in every
//! subtree the keys that are live at the current revision. With those counts
//! the number of live keys in any range is two root-to-leaf walks
//! (`RangeResponse.count` without touching the range), and a walk can skip
//! dead keys without reading them (each slot carries a live bit).
//!
//! Beside each handle a leaf keeps an 8-byte *hint*: the 8 bytes of the key
//! that follow the prefix all of that leaf's keys share, big-endian, padded
//! with zeros. Hints order keys like the keys themselves (a smaller hint means
//! a smaller key), so a search counts the smaller hints of a node (one pass
//! over a contiguous array, which the compiler vectorizes) and fetches a key
//! only to break a tie. Fetching a key costs a cache miss or two, and on this
//! path every miss is a dependent one. Inner nodes keep hints of their
//! separators the same way.
//!
//! The shared prefix of a node comes from its *fences*, the separators around
//! it in its ancestors: every key `k` with `lo <= k < hi` starts with the
//! longest common prefix of `lo` and `hi`. A node's `prefix` may be shorter
//! than that (never longer); it grows when the node splits, shrinks when nodes
//! merge or trade entries, and the hints are rewritten whenever it changes.
//!
//! Nodes are fixed-size and live in two arenas (`Vec`s indexed by `u32`), so
//! the tree is plain safe Rust, clones as data, and reaching a node's hints
//! is one memory access. Iteration order is the key order; nothing here
//! depends on anything but the sequence of operations.

use std::cmp::Ordering;

/// Where the index reads the bytes of the key a handle names.
pub(crate) trait KeySource {
    fn key(&self, handle: u32) -> &[u8];
}

/// The bit of a slot that says its key is live at the current revision.
pub(crate) const LIVE: u32 = 1 << 31;
/// The largest handle a slot can hold (the top bit is [`LIVE`]).
pub(crate) const MAX_HANDLE: u32 = LIVE - 1;
/// "No node": the end of the leaf chain, or the past-the-end cursor.
const NIL: u32 = u32::MAX;

/// Slots per leaf. 64 hints are 512 bytes: a search reads 8 adjacent cache
/// lines (in parallel), and an insert moves at most 768 bytes.
const LEAF_CAP: usize = 64;
/// Children per inner node.
const INNER_CAP: usize = 64;
/// Key bytes in a hint.
const HINT_BYTES: usize = 8;

/// A leaf: up to `leaf_cap` slots, plus one while it is about to split.
#[derive(Clone, Debug)]
struct Leaf {
    len: u32,
    /// Bytes every key here shares (and skips in its hint); at most the
    /// common prefix of the leaf's fences.
    prefix: u32,
    /// Slots with the live bit.
    live: u32,
    prev: u32,
    next: u32,
    hints: [u64; LEAF_CAP + 1],
    /// Handle, plus [`LIVE`], in key order.
    slots: [u32; LEAF_CAP + 1],
}

impl Leaf {
    const EMPTY: Leaf = Leaf {
        len: 0,
        prefix: 0,
        live: 0,
        prev: NIL,
        next: NIL,
        hints: [0; LEAF_CAP + 1],
        slots: [0; LEAF_CAP + 1],
    };

    fn len(&self) -> usize {
        self.len as usize
    }

    fn slots(&self) -> &[u32] {
        &self.slots[..self.len()]
    }

    fn hints(&self) -> &[u64] {
        &self.hints[..self.len()]
    }

    fn insert_at(&mut self, pos: usize, hint: u64, slot: u32) {
        let n = self.len();
        self.hints.copy_within(pos..n, pos + 1);
        self.slots.copy_within(pos..n, pos + 1);
        self.hints[pos] = hint;
        self.slots[pos] = slot;
        self.len += 1;
    }

    fn remove_at(&mut self, pos: usize) -> u32 {
        let n = self.len();
        let slot = self.slots[pos];
        self.hints.copy_within(pos + 1..n, pos);
        self.slots.copy_within(pos + 1..n, pos);
        self.len -= 1;
        slot
    }

    /// Moves slots `[at..]` to the front of `to` (which must have room).
    fn move_tail_to_front(&mut self, at: usize, to: &mut Leaf) {
        let (n, m, k) = (self.len(), to.len(), self.len() - at);
        to.hints.copy_within(0..m, k);
        to.slots.copy_within(0..m, k);
        to.hints[..k].copy_from_slice(&self.hints[at..n]);
        to.slots[..k].copy_from_slice(&self.slots[at..n]);
        to.len += k as u32;
        self.len = at as u32;
    }

    /// Moves the first `k` slots of `from` to the end of this leaf.
    fn take_front(&mut self, from: &mut Leaf, k: usize) {
        let (n, m) = (self.len(), from.len());
        self.hints[n..n + k].copy_from_slice(&from.hints[..k]);
        self.slots[n..n + k].copy_from_slice(&from.slots[..k]);
        from.hints.copy_within(k..m, 0);
        from.slots.copy_within(k..m, 0);
        self.len += k as u32;
        from.len -= k as u32;
    }

    fn recount(&mut self) {
        self.live = live_in(self.slots());
    }
}

/// An inner node: up to `inner_cap` children, plus one while it is about to split.
#[derive(Clone, Debug)]
struct Inner {
    /// Children; separators are one fewer.
    len: u32,
    /// Like a leaf's: bytes every separator here shares, skipped by hints.
    prefix: u32,
    /// `seps[i]` divides `children[i]` (keys `< seps[i]`) from `children[i + 1]`
    /// (keys `>= seps[i]`).
    seps: Vec<Box<[u8]>>,
    hints: [u64; INNER_CAP + 1],
    children: [u32; INNER_CAP + 1],
    /// Live keys under each child.
    live: [u64; INNER_CAP + 1],
}

impl Inner {
    const EMPTY: Inner = Inner {
        len: 0,
        prefix: 0,
        seps: Vec::new(),
        hints: [0; INNER_CAP + 1],
        children: [0; INNER_CAP + 1],
        live: [0; INNER_CAP + 1],
    };

    fn len(&self) -> usize {
        self.len as usize
    }

    fn children(&self) -> &[u32] {
        &self.children[..self.len()]
    }

    fn live(&self) -> &[u64] {
        &self.live[..self.len()]
    }

    /// Inserts `sep` at `i` and `child` right after it, at `i + 1`.
    fn insert_at(&mut self, i: usize, sep: Box<[u8]>, child: u32, live: u64) {
        let n = self.len();
        self.hints.copy_within(i..n - 1, i + 1);
        self.hints[i] = hint(&sep, self.prefix as usize);
        self.seps.insert(i, sep);
        self.children.copy_within(i + 1..n, i + 2);
        self.live.copy_within(i + 1..n, i + 2);
        self.children[i + 1] = child;
        self.live[i + 1] = live;
        self.len += 1;
    }

    /// Removes separator `i` and child `i + 1`; returns both.
    fn remove_at(&mut self, i: usize) -> (Box<[u8]>, u32, u64) {
        let n = self.len();
        let (child, live) = (self.children[i + 1], self.live[i + 1]);
        self.hints.copy_within(i + 1..n - 1, i);
        self.children.copy_within(i + 2..n, i + 1);
        self.live.copy_within(i + 2..n, i + 1);
        self.len -= 1;
        (self.seps.remove(i), child, live)
    }

    fn set_sep(&mut self, i: usize, sep: Box<[u8]>) {
        self.hints[i] = hint(&sep, self.prefix as usize);
        self.seps[i] = sep;
    }

    fn set_prefix(&mut self, prefix: usize) {
        if self.prefix as usize == prefix {
            return;
        }
        self.prefix = prefix as u32;
        for (h, s) in self.hints.iter_mut().zip(&self.seps) {
            *h = hint(s, prefix);
        }
    }

    /// The child whose subtree holds `key`: the number of separators `<= key`.
    fn route(&self, key: &[u8]) -> usize {
        let n = self.seps.len();
        let h = hint(key, self.prefix as usize);
        let hints = &self.hints[..n];
        let mut i = count_below(hints, h);
        // Equal hints: compare the separators themselves (bounded by n).
        while i < n && hints[i] == h && *self.seps[i] <= *key {
            i += 1;
        }
        i
    }
}

/// A position in the index: a slot of a leaf, or past the end.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cursor {
    leaf: u32,
    pos: u32,
}

impl Cursor {
    const END: Cursor = Cursor { leaf: NIL, pos: 0 };
}

#[derive(Clone, Debug)]
pub(crate) struct KeyIndex {
    leaf_cap: usize,
    inner_cap: usize,
    leaves: Vec<Leaf>,
    free_leaves: Vec<u32>,
    inners: Vec<Inner>,
    free_inners: Vec<u32>,
    root: u32,
    /// Inner levels above the leaves (0: the root is a leaf).
    height: usize,
    len: usize,
    live: u64,
    /// Scratch for the root-to-leaf path of a write: (inner node, child index).
    path: Vec<(u32, usize)>,
}

impl Default for KeyIndex {
    fn default() -> Self {
        KeyIndex::new()
    }
}

/// The 8 key bytes after `prefix`, big-endian, zero-padded.
fn hint(key: &[u8], prefix: usize) -> u64 {
    let rest = key.get(prefix..).unwrap_or(&[]);
    if let Some(head) = rest.first_chunk::<HINT_BYTES>() {
        return u64::from_be_bytes(*head);
    }
    let mut b = [0u8; HINT_BYTES];
    b[..rest.len()].copy_from_slice(rest);
    u64::from_be_bytes(b)
}

/// How many of the (sorted) `hints` are below `h`: a branch-free pass the
/// compiler vectorizes, where a binary search would wait on each probe.
fn count_below(hints: &[u64], h: u64) -> usize {
    hints.iter().map(|&x| usize::from(x < h)).sum()
}

fn lcp(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

/// The shortest `s` with `left < s <= right` (requires `left < right`): a
/// prefix of `right`, so separators stay short and fences stay tight.
fn separator(left: &[u8], right: &[u8]) -> Box<[u8]> {
    debug_assert!(left < right, "separator of unordered keys");
    let n = (lcp(left, right) + 1).min(right.len());
    right[..n].into()
}

fn live_in(slots: &[u32]) -> u32 {
    slots.iter().map(|&s| s >> 31).sum()
}

/// The common prefix length of a node's fences (0 if either is open).
fn fence_prefix(lo: Option<&[u8]>, hi: Option<&[u8]>) -> usize {
    match (lo, hi) {
        (Some(lo), Some(hi)) => lcp(lo, hi),
        _ => 0,
    }
}

impl KeyIndex {
    pub(crate) fn new() -> KeyIndex {
        KeyIndex::with_caps(LEAF_CAP, INNER_CAP)
    }

    /// Small capacities make deep trees from few keys (tests).
    pub(crate) fn with_caps(leaf_cap: usize, inner_cap: usize) -> KeyIndex {
        // Below 4 a split or a redistribution could leave an inner node with
        // one child, or a leaf empty.
        assert!(
            (4..=LEAF_CAP).contains(&leaf_cap),
            "leaf capacity {leaf_cap}"
        );
        assert!(
            (4..=INNER_CAP).contains(&inner_cap),
            "inner capacity {inner_cap}"
        );
        KeyIndex {
            leaf_cap,
            inner_cap,
            leaves: vec![Leaf::EMPTY],
            free_leaves: Vec::new(),
            inners: Vec::new(),
            free_inners: Vec::new(),
            root: 0,
            height: 0,
            len: 0,
            live: 0,
            path: Vec::new(),
        }
    }

    /// Keys in the index, live or not.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Keys with the live bit.
    #[cfg(test)]
    pub(crate) fn live_len(&self) -> u64 {
        self.live
    }

    fn leaf_min(&self) -> usize {
        self.leaf_cap / 4
    }

    fn inner_min(&self) -> usize {
        (self.inner_cap / 4).max(2)
    }

    fn find_leaf(&self, key: &[u8]) -> u32 {
        let mut node = self.root;
        for _ in 0..self.height {
            let inner = &self.inners[node as usize];
            node = inner.children[inner.route(key)];
        }
        node
    }

    /// Like `find_leaf`, recording the path in `path`.
    fn descend(&self, key: &[u8], path: &mut Vec<(u32, usize)>) -> u32 {
        path.clear();
        let mut node = self.root;
        for _ in 0..self.height {
            let inner = &self.inners[node as usize];
            let i = inner.route(key);
            path.push((node, i));
            node = inner.children[i];
        }
        node
    }

    /// The position of `key` in `leaf` (`Ok`), or where it would go (`Err`).
    /// `key` must lie within the leaf's fences.
    fn search<K: KeySource + ?Sized>(leaf: &Leaf, keys: &K, key: &[u8]) -> Result<usize, usize> {
        let h = hint(key, leaf.prefix as usize);
        let hints = leaf.hints();
        let mut i = count_below(hints, h);
        // Equal hints: compare the keys themselves (bounded by the leaf's length).
        while i < hints.len() && hints[i] == h {
            match keys.key(leaf.slots[i] & MAX_HANDLE).cmp(key) {
                Ordering::Less => i += 1,
                Ordering::Equal => return Ok(i),
                Ordering::Greater => return Err(i),
            }
        }
        Err(i)
    }

    /// The separators around the node that `path` leads to.
    fn fences(&self, path: &[(u32, usize)]) -> (Option<&[u8]>, Option<&[u8]>) {
        let (mut lo, mut hi) = (None, None);
        for &(node, i) in path.iter().rev() {
            let inner = &self.inners[node as usize];
            if lo.is_none() && i > 0 {
                lo = Some(&*inner.seps[i - 1]);
            }
            if hi.is_none() && i < inner.seps.len() {
                hi = Some(&*inner.seps[i]);
            }
            if lo.is_some() && hi.is_some() {
                break;
            }
        }
        (lo, hi)
    }

    fn set_leaf_prefix<K: KeySource + ?Sized>(leaf: &mut Leaf, prefix: usize, keys: &K) {
        if leaf.prefix as usize == prefix {
            return;
        }
        leaf.prefix = prefix as u32;
        let n = leaf.len();
        for (h, &s) in leaf.hints[..n].iter_mut().zip(&leaf.slots[..n]) {
            *h = hint(keys.key(s & MAX_HANDLE), prefix);
        }
    }

    fn alloc_leaf(&mut self, leaf: Leaf) -> u32 {
        if let Some(id) = self.free_leaves.pop() {
            self.leaves[id as usize] = leaf;
            return id;
        }
        let id = u32::try_from(self.leaves.len())
            .ok()
            .filter(|&id| id != NIL)
            .expect("fewer than 2^32 - 1 leaves");
        self.leaves.push(leaf);
        id
    }

    fn free_leaf(&mut self, id: u32) {
        self.leaves[id as usize] = Leaf::EMPTY;
        self.free_leaves.push(id);
    }

    fn alloc_inner(&mut self, inner: Inner) -> u32 {
        if let Some(id) = self.free_inners.pop() {
            self.inners[id as usize] = inner;
            return id;
        }
        let id = u32::try_from(self.inners.len())
            .ok()
            .filter(|&id| id != NIL)
            .expect("fewer than 2^32 - 1 inner nodes");
        self.inners.push(inner);
        id
    }

    fn free_inner(&mut self, id: u32) {
        self.inners[id as usize] = Inner::EMPTY;
        self.free_inners.push(id);
    }

    /// Adds or removes one live key under every node of `path`.
    fn add_live(&mut self, path: &[(u32, usize)], up: bool) {
        for &(node, i) in path {
            let l = &mut self.inners[node as usize].live[i];
            *l = if up { *l + 1 } else { *l - 1 };
        }
        self.live = if up { self.live + 1 } else { self.live - 1 };
    }

    /// Whether `key` is in the index, and its slot (handle plus live bit).
    #[cfg(test)]
    pub(crate) fn get<K: KeySource + ?Sized>(&self, keys: &K, key: &[u8]) -> Option<u32> {
        let leaf = &self.leaves[self.find_leaf(key) as usize];
        Self::search(leaf, keys, key).ok().map(|i| leaf.slots[i])
    }

    /// Reads every cache line of the leaf `key` belongs in; returns the leaf
    /// and a value made of what was read (see `MvccStore::warm`).
    pub(crate) fn touch_leaf(&self, key: &[u8]) -> (u32, u64) {
        let id = self.find_leaf(key);
        let leaf = &self.leaves[id as usize];
        let mut sum = u64::from(leaf.len);
        // 8 hints or 16 slots per 64-byte line.
        for h in leaf.hints.iter().step_by(8) {
            sum = sum.wrapping_add(*h);
        }
        for s in leaf.slots.iter().step_by(16) {
            sum = sum.wrapping_add(u64::from(*s));
        }
        (id, sum)
    }

    /// Searches `leaf` for `key` as an insert will, reading the keys that
    /// break ties; returns the position (see `MvccStore::warm`).
    pub(crate) fn touch_search<K: KeySource + ?Sized>(
        &self,
        keys: &K,
        leaf: u32,
        key: &[u8],
    ) -> u64 {
        match Self::search(&self.leaves[leaf as usize], keys, key) {
            Ok(i) | Err(i) => i as u64,
        }
    }

    /// Adds `key` under `handle`; false (and no change) if it is already there.
    pub(crate) fn insert<K: KeySource + ?Sized>(
        &mut self,
        keys: &K,
        key: &[u8],
        handle: u32,
        live: bool,
    ) -> bool {
        assert!(
            handle <= MAX_HANDLE,
            "handle {handle} collides with the live bit"
        );
        let mut path = std::mem::take(&mut self.path);
        let id = self.descend(key, &mut path);
        let inserted = match Self::search(&self.leaves[id as usize], keys, key) {
            Ok(_) => false,
            Err(pos) => {
                let leaf = &mut self.leaves[id as usize];
                let h = hint(key, leaf.prefix as usize);
                leaf.insert_at(pos, h, handle | if live { LIVE } else { 0 });
                leaf.live += u32::from(live);
                self.len += 1;
                if live {
                    self.add_live(&path, true);
                }
                if self.leaves[id as usize].len() > self.leaf_cap {
                    self.split_leaf(keys, id, pos, &path);
                }
                true
            }
        };
        self.path = path;
        inserted
    }

    /// Splits an over-full leaf; `pos` is where the last insert went.
    fn split_leaf<K: KeySource + ?Sized>(
        &mut self,
        keys: &K,
        id: u32,
        pos: usize,
        path: &[(u32, usize)],
    ) {
        let n = self.leaves[id as usize].len();
        // An insert at either end is what a sequential load looks like: keep
        // the full part together, so such loads leave full leaves behind
        // instead of half-full ones. Otherwise halve.
        let at = if pos + 1 == n {
            n - 1
        } else if pos == 0 {
            1
        } else {
            n / 2
        };
        let sep = {
            let leaf = &self.leaves[id as usize];
            separator(
                keys.key(leaf.slots[at - 1] & MAX_HANDLE),
                keys.key(leaf.slots[at] & MAX_HANDLE),
            )
        };
        let (lo, hi) = self.fences(path);
        // The halves' fences are narrower, so their prefixes may grow; but a
        // rewrite reads every key (a cache miss each), so grow only when half
        // the hint or more would go to bytes all keys here share anyway.
        let old = self.leaves[id as usize].prefix as usize;
        let grown = |p: usize| {
            if p < old || p >= old + HINT_BYTES / 2 {
                p
            } else {
                old
            }
        };
        let left_prefix = grown(fence_prefix(lo, Some(&sep)));
        let right_prefix = grown(fence_prefix(Some(&sep), hi));
        let leaf = &mut self.leaves[id as usize];
        let mut right = Leaf::EMPTY;
        right.prefix = leaf.prefix;
        leaf.move_tail_to_front(at, &mut right);
        right.recount();
        leaf.live -= right.live;
        right.prev = id;
        right.next = leaf.next;
        Self::set_leaf_prefix(leaf, left_prefix, keys);
        Self::set_leaf_prefix(&mut right, right_prefix, keys);
        let (right_live, next) = (u64::from(right.live), right.next);
        let rid = self.alloc_leaf(right);
        if next != NIL {
            self.leaves[next as usize].prev = rid;
        }
        self.leaves[id as usize].next = rid;
        self.insert_child(path, sep, rid, right_live);
    }

    /// Puts `child` (the right half of a split) after the child that `path`
    /// ends at; `path` empty: the root split.
    fn insert_child(&mut self, path: &[(u32, usize)], sep: Box<[u8]>, child: u32, child_live: u64) {
        let Some((&(node, i), up)) = path.split_last() else {
            let mut root = Inner::EMPTY;
            root.len = 2;
            root.children[..2].copy_from_slice(&[self.root, child]);
            root.live[..2].copy_from_slice(&[self.live - child_live, child_live]);
            root.hints[0] = hint(&sep, 0);
            root.seps.push(sep);
            self.root = self.alloc_inner(root);
            self.height += 1;
            return;
        };
        let inner = &mut self.inners[node as usize];
        inner.live[i] -= child_live;
        inner.insert_at(i, sep, child, child_live);
        if inner.len() <= self.inner_cap {
            return;
        }
        let (n, mid) = (inner.len(), inner.len() / 2);
        // Children [mid..] move right; seps[mid - 1] divided the halves and moves up.
        let mut right = Inner::EMPTY;
        right.prefix = inner.prefix;
        right.len = (n - mid) as u32;
        right.children[..n - mid].copy_from_slice(&inner.children[mid..n]);
        right.live[..n - mid].copy_from_slice(&inner.live[mid..n]);
        right.hints[..n - mid - 1].copy_from_slice(&inner.hints[mid..n - 1]);
        right.seps = inner.seps.split_off(mid);
        let up_sep = inner
            .seps
            .pop()
            .expect("an over-full inner node has separators");
        inner.len = mid as u32;
        let right_live = right.live().iter().sum();
        let (lo, hi) = self.fences(up);
        let (left_prefix, right_prefix) = (
            fence_prefix(lo, Some(&up_sep)),
            fence_prefix(Some(&up_sep), hi),
        );
        self.inners[node as usize].set_prefix(left_prefix);
        right.set_prefix(right_prefix);
        let rid = self.alloc_inner(right);
        self.insert_child(up, up_sep, rid, right_live);
    }

    /// Removes `key`; returns its slot (handle plus live bit) if it was there.
    pub(crate) fn remove<K: KeySource + ?Sized>(&mut self, keys: &K, key: &[u8]) -> Option<u32> {
        let mut path = std::mem::take(&mut self.path);
        let id = self.descend(key, &mut path);
        let out = match Self::search(&self.leaves[id as usize], keys, key) {
            Err(_) => None,
            Ok(pos) => {
                let leaf = &mut self.leaves[id as usize];
                let slot = leaf.remove_at(pos);
                self.len -= 1;
                if slot & LIVE != 0 {
                    leaf.live -= 1;
                    self.add_live(&path, false);
                }
                if !path.is_empty() && self.leaves[id as usize].len() < self.leaf_min().max(1) {
                    self.rebalance_leaf(keys, &path);
                }
                Some(slot)
            }
        };
        self.path = path;
        out
    }

    /// The leaf at the end of `path` is under-full: merge it with a sibling,
    /// or take slots from one.
    fn rebalance_leaf<K: KeySource + ?Sized>(&mut self, keys: &K, path: &[(u32, usize)]) {
        let &(p, i) = path.last().expect("a leaf with a parent");
        // Non-root inner nodes keep two children or more, and a root with one
        // child is collapsed, so a sibling exists.
        let li = if i > 0 { i - 1 } else { i };
        let (l, r) = {
            let parent = &self.inners[p as usize];
            (parent.children[li], parent.children[li + 1])
        };
        let mut left = std::mem::replace(&mut self.leaves[l as usize], Leaf::EMPTY);
        let mut right = std::mem::replace(&mut self.leaves[r as usize], Leaf::EMPTY);
        // Both move under new fences, each within the old pair's: the shorter
        // of the two prefixes is common to all of them.
        let prefix = left.prefix.min(right.prefix) as usize;
        Self::set_leaf_prefix(&mut left, prefix, keys);
        Self::set_leaf_prefix(&mut right, prefix, keys);
        if left.len() + right.len() <= self.leaf_cap {
            let k = right.len();
            left.take_front(&mut right, k);
            left.live += right.live;
            left.next = right.next;
            if right.next != NIL {
                self.leaves[right.next as usize].prev = l;
            }
            self.leaves[l as usize] = left;
            self.free_leaf(r);
            let parent = &mut self.inners[p as usize];
            let (_, _, moved) = parent.remove_at(li);
            parent.live[li] += moved;
            self.rebalance_inner(path);
            return;
        }
        let half = (left.len() + right.len()) / 2;
        if left.len() > half {
            left.move_tail_to_front(half, &mut right);
        } else {
            let k = half - left.len();
            left.take_front(&mut right, k);
        }
        left.recount();
        right.recount();
        let sep = separator(
            keys.key(*left.slots().last().expect("half of a non-empty pair") & MAX_HANDLE),
            keys.key(right.slots[0] & MAX_HANDLE),
        );
        let parent = &mut self.inners[p as usize];
        parent.set_sep(li, sep);
        parent.live[li] = u64::from(left.live);
        parent.live[li + 1] = u64::from(right.live);
        self.leaves[l as usize] = left;
        self.leaves[r as usize] = right;
    }

    /// The inner node at the end of `path` lost a child: collapse a root with
    /// one child, or merge or rebalance an under-full node with a sibling.
    fn rebalance_inner(&mut self, path: &[(u32, usize)]) {
        let &(node, _) = path.last().expect("an inner node");
        let up = &path[..path.len() - 1];
        let Some(&(p, i)) = up.last() else {
            if self.inners[node as usize].len() == 1 {
                self.root = self.inners[node as usize].children[0];
                self.height -= 1;
                self.free_inner(node);
            }
            return;
        };
        if self.inners[node as usize].len() >= self.inner_min() {
            return;
        }
        let li = if i > 0 { i - 1 } else { i };
        let (l, r) = {
            let parent = &self.inners[p as usize];
            (parent.children[li], parent.children[li + 1])
        };
        let mut left = std::mem::replace(&mut self.inners[l as usize], Inner::EMPTY);
        let mut right = std::mem::replace(&mut self.inners[r as usize], Inner::EMPTY);
        // As for leaves: the shorter prefix holds for both, and for the
        // parent's separator between them.
        let prefix = left.prefix.min(right.prefix) as usize;
        left.set_prefix(prefix);
        right.set_prefix(prefix);
        let parent = &mut self.inners[p as usize];
        if left.len() + right.len() <= self.inner_cap {
            // The parent's separator comes down between the two halves.
            let (sep, _, moved) = parent.remove_at(li);
            parent.live[li] += moved;
            let (n, m) = (left.len(), right.len());
            left.hints[n - 1] = hint(&sep, prefix);
            left.hints[n..n + m - 1].copy_from_slice(&right.hints[..m - 1]);
            left.children[n..n + m].copy_from_slice(right.children());
            left.live[n..n + m].copy_from_slice(right.live());
            left.seps.push(sep);
            left.seps.append(&mut right.seps);
            left.len += m as u32;
            self.inners[l as usize] = left;
            self.free_inner(r);
            self.rebalance_inner(up);
            return;
        }
        // Rotate children through the parent's separator until balanced; each
        // loop moves fewer than `inner_cap` children.
        let half = (left.len() + right.len()) / 2;
        while left.len() > half {
            let n = left.len();
            let (c, lv) = (left.children[n - 1], left.live[n - 1]);
            let s = left.seps.pop().expect("more than half has separators");
            left.len -= 1;
            let down = std::mem::replace(&mut parent.seps[li], s);
            parent.hints[li] = hint(&parent.seps[li], parent.prefix as usize);
            // `right` gains child `c` and separator `down` at its front.
            let m = right.len();
            right.children.copy_within(0..m, 1);
            right.live.copy_within(0..m, 1);
            right.hints.copy_within(0..m - 1, 1);
            right.children[0] = c;
            right.live[0] = lv;
            right.hints[0] = hint(&down, prefix);
            right.seps.insert(0, down);
            right.len += 1;
            parent.live[li] -= lv;
            parent.live[li + 1] += lv;
        }
        while left.len() < half {
            let m = right.len();
            let (c, lv) = (right.children[0], right.live[0]);
            let s = right.seps.remove(0);
            right.children.copy_within(1..m, 0);
            right.live.copy_within(1..m, 0);
            right.hints.copy_within(1..m - 1, 0);
            right.len -= 1;
            let down = std::mem::replace(&mut parent.seps[li], s);
            parent.hints[li] = hint(&parent.seps[li], parent.prefix as usize);
            let n = left.len();
            left.children[n] = c;
            left.live[n] = lv;
            left.hints[n - 1] = hint(&down, prefix);
            left.seps.push(down);
            left.len += 1;
            parent.live[li] += lv;
            parent.live[li + 1] -= lv;
        }
        self.inners[l as usize] = left;
        self.inners[r as usize] = right;
    }

    /// Sets the live bit of `key`; false if the key is not in the index.
    pub(crate) fn set_live<K: KeySource + ?Sized>(
        &mut self,
        keys: &K,
        key: &[u8],
        live: bool,
    ) -> bool {
        let mut path = std::mem::take(&mut self.path);
        let id = self.descend(key, &mut path);
        let found = match Self::search(&self.leaves[id as usize], keys, key) {
            Err(_) => false,
            Ok(pos) => {
                let leaf = &mut self.leaves[id as usize];
                if (leaf.slots[pos] & LIVE != 0) != live {
                    leaf.slots[pos] ^= LIVE;
                    leaf.live = if live { leaf.live + 1 } else { leaf.live - 1 };
                    self.add_live(&path, live);
                }
                true
            }
        };
        self.path = path;
        found
    }

    /// Live keys `< key`.
    pub(crate) fn rank<K: KeySource + ?Sized>(&self, keys: &K, key: &[u8]) -> u64 {
        let mut node = self.root;
        let mut below = 0;
        for _ in 0..self.height {
            let inner = &self.inners[node as usize];
            let i = inner.route(key);
            below += inner.live[..i].iter().sum::<u64>();
            node = inner.children[i];
        }
        let leaf = &self.leaves[node as usize];
        let (Ok(pos) | Err(pos)) = Self::search(leaf, keys, key);
        below + u64::from(live_in(&leaf.slots[..pos]))
    }

    /// Live keys in `[start, end)` (`end` `None`: unbounded), in O(log n).
    pub(crate) fn count_live<K: KeySource + ?Sized>(
        &self,
        keys: &K,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> u64 {
        if end.is_some_and(|e| e <= start) {
            return 0;
        }
        let hi = match end {
            Some(e) => self.rank(keys, e),
            None => self.live,
        };
        hi - self.rank(keys, start)
    }

    /// Canonical cursor for slot `pos` of `leaf`: past a leaf's end means the
    /// next leaf's first slot (leaves other than the root are never empty).
    fn normalize(&self, leaf: u32, pos: usize) -> Cursor {
        let l = &self.leaves[leaf as usize];
        if pos < l.len() {
            return Cursor {
                leaf,
                pos: pos as u32,
            };
        }
        if l.next == NIL {
            Cursor::END
        } else {
            Cursor {
                leaf: l.next,
                pos: 0,
            }
        }
    }

    /// The first key `>= key`.
    pub(crate) fn lower_bound<K: KeySource + ?Sized>(&self, keys: &K, key: &[u8]) -> Cursor {
        let leaf = self.find_leaf(key);
        let (Ok(pos) | Err(pos)) = Self::search(&self.leaves[leaf as usize], keys, key);
        self.normalize(leaf, pos)
    }

    fn first(&self) -> Cursor {
        let mut node = self.root;
        for _ in 0..self.height {
            node = self.inners[node as usize].children[0];
        }
        self.normalize(node, 0)
    }

    fn prev(&self, c: Cursor) -> Option<Cursor> {
        if c == Cursor::END {
            let mut node = self.root;
            for _ in 0..self.height {
                let inner = &self.inners[node as usize];
                node = inner.children[inner.len() - 1];
            }
            let n = self.leaves[node as usize].len();
            return n.checked_sub(1).map(|pos| Cursor {
                leaf: node,
                pos: pos as u32,
            });
        }
        if c.pos > 0 {
            return Some(Cursor {
                leaf: c.leaf,
                pos: c.pos - 1,
            });
        }
        let prev = self.leaves[c.leaf as usize].prev;
        if prev == NIL {
            return None;
        }
        let n = self.leaves[prev as usize].len();
        n.checked_sub(1).map(|pos| Cursor {
            leaf: prev,
            pos: pos as u32,
        })
    }

    /// Slots of the keys in `[start, end)` (`end` `None`: unbounded), in key
    /// order from either end.
    pub(crate) fn range<K: KeySource + ?Sized>(
        &self,
        keys: &K,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Iter<'_> {
        if end.is_some_and(|e| e <= start) {
            return Iter {
                index: self,
                front: Cursor::END,
                back: Cursor::END,
            };
        }
        let front = self.lower_bound(keys, start);
        let back = end.map_or(Cursor::END, |e| self.lower_bound(keys, e));
        Iter {
            index: self,
            front,
            back,
        }
    }

    /// Slots of every key, in key order.
    pub(crate) fn iter(&self) -> Iter<'_> {
        Iter {
            index: self,
            front: self.first(),
            back: Cursor::END,
        }
    }

    /// Checks every structural invariant (O(n); tests).
    #[cfg(test)]
    pub(crate) fn check<K: KeySource + ?Sized>(&self, keys: &K) -> Result<(), String> {
        let mut leaves_in_order = Vec::new();
        let (len, live) = self.check_node(keys, self.root, 0, None, None, &mut leaves_in_order)?;
        if len != self.len as u64 || live != self.live {
            return Err(format!("totals {len}/{live} != {}/{}", self.len, self.live));
        }
        let mut prev = NIL;
        for (j, &l) in leaves_in_order.iter().enumerate() {
            let leaf = &self.leaves[l as usize];
            let next = leaves_in_order.get(j + 1).copied().unwrap_or(NIL);
            if leaf.prev != prev || leaf.next != next {
                return Err(format!(
                    "leaf {l}: links {}/{} != {prev}/{next}",
                    leaf.prev, leaf.next
                ));
            }
            prev = l;
        }
        if leaves_in_order.len() + self.free_leaves.len() != self.leaves.len() {
            return Err(format!(
                "{} leaves reachable + free != {}",
                leaves_in_order.len(),
                self.leaves.len()
            ));
        }
        Ok(())
    }

    #[cfg(test)]
    fn check_node<K: KeySource + ?Sized>(
        &self,
        keys: &K,
        node: u32,
        depth: usize,
        lo: Option<&[u8]>,
        hi: Option<&[u8]>,
        out: &mut Vec<u32>,
    ) -> Result<(u64, u64), String> {
        let is_root = depth == 0;
        let fence_lcp = fence_prefix(lo, hi);
        if depth == self.height {
            let leaf = &self.leaves[node as usize];
            if leaf.len() > self.leaf_cap || (!is_root && leaf.len() == 0) {
                return Err(format!("leaf {node}: bad size {}", leaf.len()));
            }
            if leaf.prefix as usize > fence_lcp {
                return Err(format!(
                    "leaf {node}: prefix {} > fence lcp {fence_lcp}",
                    leaf.prefix
                ));
            }
            let mut last: Option<&[u8]> = None;
            for (&h, &s) in leaf.hints().iter().zip(leaf.slots()) {
                let k = keys.key(s & MAX_HANDLE);
                if last.is_some_and(|l| l >= k)
                    || lo.is_some_and(|lo| k < lo)
                    || hi.is_some_and(|hi| k >= hi)
                {
                    return Err(format!("leaf {node}: key {k:?} out of order or fences"));
                }
                if h != hint(k, leaf.prefix as usize) {
                    return Err(format!("leaf {node}: stale hint for {k:?}"));
                }
                last = Some(k);
            }
            if leaf.live != live_in(leaf.slots()) {
                return Err(format!("leaf {node}: live count"));
            }
            out.push(node);
            return Ok((leaf.len() as u64, u64::from(leaf.live)));
        }
        let inner = &self.inners[node as usize];
        let n = inner.len();
        let min = if is_root { 2 } else { self.inner_min() };
        if n < min || n > self.inner_cap || inner.seps.len() + 1 != n {
            return Err(format!("inner {node}: bad size {n}"));
        }
        if inner.prefix as usize > fence_lcp {
            return Err(format!(
                "inner {node}: prefix {} > fence lcp {fence_lcp}",
                inner.prefix
            ));
        }
        for (j, s) in inner.seps.iter().enumerate() {
            if inner.hints[j] != hint(s, inner.prefix as usize) {
                return Err(format!("inner {node}: stale hint for separator {j}"));
            }
        }
        let (mut len, mut live) = (0, 0);
        for j in 0..n {
            let clo = if j > 0 { Some(&*inner.seps[j - 1]) } else { lo };
            let chi = if j < n - 1 { Some(&*inner.seps[j]) } else { hi };
            if let (Some(a), Some(b)) = (clo, chi)
                && a >= b
            {
                return Err(format!("inner {node}: separators out of order"));
            }
            let (cl, cv) = self.check_node(keys, inner.children[j], depth + 1, clo, chi, out)?;
            if cv != inner.live[j] {
                return Err(format!(
                    "inner {node}: live count of child {j}: {} != {cv}",
                    inner.live[j]
                ));
            }
            len += cl;
            live += cv;
        }
        Ok((len, live))
    }

    /// Leaves in use (tests: fill factor).
    #[cfg(test)]
    fn leaf_count(&self) -> usize {
        self.leaves.len() - self.free_leaves.len()
    }
}

/// Slots in key order; see [`KeyIndex::range`].
pub(crate) struct Iter<'a> {
    index: &'a KeyIndex,
    front: Cursor,
    /// Exclusive.
    back: Cursor,
}

impl Iterator for Iter<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if self.front == self.back {
            return None;
        }
        let c = self.front;
        let slot = self.index.leaves[c.leaf as usize].slots[c.pos as usize];
        self.front = self.index.normalize(c.leaf, c.pos as usize + 1);
        Some(slot)
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<u32> {
        if self.front == self.back {
            return None;
        }
        // front != back, so something lies before back.
        let c = self.index.prev(self.back)?;
        self.back = c;
        Some(self.index.leaves[c.leaf as usize].slots[c.pos as usize])
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use proptest::test_runner::FileFailurePersistence;

    use super::*;

    /// Keys by handle; a handle is never reused.
    #[derive(Default)]
    struct TestKeys(Vec<Vec<u8>>);

    impl KeySource for TestKeys {
        fn key(&self, handle: u32) -> &[u8] {
            &self.0[handle as usize]
        }
    }

    impl TestKeys {
        fn add(&mut self, k: &[u8]) -> u32 {
            self.0.push(k.to_vec());
            (self.0.len() - 1) as u32
        }
    }

    fn keys_of(
        ix: &KeyIndex,
        keys: &TestKeys,
        it: impl Iterator<Item = u32>,
    ) -> Vec<(Vec<u8>, bool)> {
        let _ = ix;
        it.map(|s| (keys.key(s & MAX_HANDLE).to_vec(), s & LIVE != 0))
            .collect()
    }

    #[test]
    fn sequential_loads_fill_leaves() {
        for descending in [false, true] {
            let mut keys = TestKeys::default();
            let mut ix = KeyIndex::new();
            let n = 10_000u32;
            for i in 0..n {
                let i = if descending { n - 1 - i } else { i };
                let k = format!("key/{i:08}");
                let h = keys.add(k.as_bytes());
                assert!(ix.insert(&keys, k.as_bytes(), h, true));
            }
            ix.check(&keys).unwrap();
            // Full leaves except at most one.
            assert!(
                ix.leaf_count() <= (n as usize).div_ceil(LEAF_CAP) + 1,
                "{} leaves",
                ix.leaf_count()
            );
            assert_eq!(
                ix.count_live(&keys, b"key/00000100", Some(b"key/00000200")),
                100
            );
            assert_eq!(ix.count_live(&keys, b"", None), u64::from(n));
        }
    }

    #[test]
    fn random_load_then_drain() {
        let mut keys = TestKeys::default();
        let mut ix = KeyIndex::new();
        let mut model = BTreeMap::new();
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = format!("/registry/pods/default/{:x}", x % 50_000).into_bytes();
            let live = !x.is_multiple_of(3);
            if model.contains_key(&k) {
                continue;
            }
            let h = keys.add(&k);
            assert!(ix.insert(&keys, &k, h, live));
            model.insert(k, live);
        }
        ix.check(&keys).unwrap();
        assert_eq!(ix.len(), model.len());
        let all: Vec<(Vec<u8>, bool)> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
        assert_eq!(keys_of(&ix, &keys, ix.iter()), all);
        let mut rev = keys_of(&ix, &keys, ix.iter().rev());
        rev.reverse();
        assert_eq!(rev, all);
        // Remove every key but a few: the tree shrinks back to one leaf level.
        for (j, k) in all.iter().enumerate() {
            if j % 1000 != 0 {
                assert!(ix.remove(&keys, &k.0).is_some());
            }
        }
        ix.check(&keys).unwrap();
        assert_eq!(ix.len(), all.len().div_ceil(1000));
        assert_eq!(ix.height, 0);
    }

    #[test]
    fn draining_from_either_end_rebalances() {
        for from_left in [true, false] {
            let mut keys = TestKeys::default();
            let mut ix = KeyIndex::with_caps(4, 4);
            let n = 2000u32;
            for i in 0..n {
                // Scrambled order: half-full nodes, so siblings differ in size.
                let j = i.wrapping_mul(7919) % n;
                let k = format!("{j:05}");
                let h = keys.add(k.as_bytes());
                assert!(ix.insert(&keys, k.as_bytes(), h, j.is_multiple_of(2)));
            }
            ix.check(&keys).unwrap();
            for i in 0..n {
                let j = if from_left { i } else { n - 1 - i };
                assert!(ix.remove(&keys, format!("{j:05}").as_bytes()).is_some());
                ix.check(&keys).unwrap();
            }
            assert_eq!((ix.len(), ix.height), (0, 0));
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(Vec<u8>, bool),
        Remove(Vec<u8>),
        /// Every key in `[a, b)`, one by one, as compaction removes them.
        RemoveRange(Vec<u8>, Vec<u8>),
        SetLive(Vec<u8>, bool),
        Range(Vec<u8>, Option<Vec<u8>>, bool),
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        // Few distinct bytes and long shared prefixes, so hints tie and
        // prefixes grow past 8 bytes.
        (
            0u8..3,
            prop::collection::vec(prop::sample::select(vec![0u8, 1, b'a', b'b', 0xff]), 0..5),
        )
            .prop_map(|(p, tail)| {
                let mut k = match p {
                    0 => Vec::new(),
                    1 => b"pp".to_vec(),
                    _ => b"/registry/long/".to_vec(),
                };
                k.extend(tail);
                k
            })
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (key(), any::<bool>()).prop_map(|(k, l)| Op::Insert(k, l)),
            3 => key().prop_map(Op::Remove),
            1 => (key(), key()).prop_map(|(a, b)| Op::RemoveRange(a, b)),
            2 => (key(), any::<bool>()).prop_map(|(k, l)| Op::SetLive(k, l)),
            2 => (key(), prop::option::of(key()), any::<bool>()).prop_map(|(a, b, r)| Op::Range(a, b, r)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
                concat!(env!("CARGO_MANIFEST_DIR"), "/../proptest-regressions/index.txt")))),
            ..ProptestConfig::default()
        })]

        #[test]
        fn index_matches_btreemap(caps in (4usize..9, 4usize..9), ops in prop::collection::vec(op(), 0..600)) {
            let mut keys = TestKeys::default();
            let mut ix = KeyIndex::with_caps(caps.0, caps.1);
            let mut model: BTreeMap<Vec<u8>, (u32, bool)> = BTreeMap::new();
            for op in &ops {
                match op {
                    Op::Insert(k, live) => {
                        let h = keys.add(k);
                        let fresh = !model.contains_key(k);
                        prop_assert_eq!(ix.insert(&keys, k, h, *live), fresh);
                        if fresh {
                            model.insert(k.clone(), (h, *live));
                        }
                    }
                    Op::Remove(k) => {
                        let want = model.remove(k).map(|(h, l)| h | if l { LIVE } else { 0 });
                        prop_assert_eq!(ix.remove(&keys, k), want);
                    }
                    Op::RemoveRange(a, b) => {
                        let doomed: Vec<Vec<u8>> = model.keys().filter(|k| *k >= a && *k < b).cloned().collect();
                        for k in doomed {
                            let (h, l) = model.remove(&k).expect("listed");
                            prop_assert_eq!(ix.remove(&keys, &k), Some(h | if l { LIVE } else { 0 }));
                            if let Err(e) = ix.check(&keys) {
                                return Err(TestCaseError::fail(format!("removing {k:?}: {e}")));
                            }
                        }
                    }
                    Op::SetLive(k, live) => {
                        let found = ix.set_live(&keys, k, *live);
                        prop_assert_eq!(found, model.contains_key(k));
                        if let Some(e) = model.get_mut(k) {
                            e.1 = *live;
                        }
                    }
                    Op::Range(a, b, rev) => {
                        let end = b.as_deref();
                        let want: Vec<(Vec<u8>, bool)> = model
                            .iter()
                            .filter(|(k, _)| k.as_slice() >= a.as_slice() && end.is_none_or(|e| k.as_slice() < e))
                            .map(|(k, v)| (k.clone(), v.1))
                            .collect();
                        let live = want.iter().filter(|w| w.1).count() as u64;
                        let want_len = want.len();
                        prop_assert_eq!(ix.count_live(&keys, a, end), live);
                        let mut got = if *rev {
                            keys_of(&ix, &keys, ix.range(&keys, a, end).rev())
                        } else {
                            keys_of(&ix, &keys, ix.range(&keys, a, end))
                        };
                        if *rev {
                            got.reverse();
                        }
                        prop_assert_eq!(got, want);
                        // Both ends of one iterator meet in the middle.
                        let mut it = ix.range(&keys, a, end);
                        let mut seen = 0;
                        while (if seen % 2 == 0 { it.next() } else { it.next_back() }).is_some() {
                            seen += 1;
                        }
                        prop_assert_eq!(seen, want_len);
                    }
                }
                if let Err(e) = ix.check(&keys) {
                    return Err(TestCaseError::fail(format!("after {op:?}: {e}")));
                }
                prop_assert_eq!(ix.len(), model.len());
                prop_assert_eq!(ix.live_len(), model.values().filter(|v| v.1).count() as u64);
            }
            let all: Vec<(Vec<u8>, bool)> = model.iter().map(|(k, v)| (k.clone(), v.1)).collect();
            prop_assert_eq!(keys_of(&ix, &keys, ix.iter()), all);
            for (k, (h, live)) in &model {
                prop_assert_eq!(ix.get(&keys, k), Some(h | if *live { LIVE } else { 0 }));
            }
        }
    }
}
