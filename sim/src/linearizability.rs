//! Linearizability checker for client histories of the key-value register.
//!
//! The simulator records every client operation with the virtual times at which it was sent
//! and answered, and calls [`check`] at the end of a run. `check` answers whether some total
//! order of the operations (a linearization) exists that respects real time (an op that
//! returned before another was called comes first) and is a legal sequential execution of a
//! register per key.
//!
//! # Algorithm
//! Keys are independent registers, and linearizability is compositional (Herlihy & Wing,
//! "locality"), so each key's sub-history is checked on its own. Per key this is the search of
//! Wing & Gong as improved by Lowe: a depth-first search that repeatedly picks an op that may
//! take effect next (no op still to be placed returned before it was called), applies it to
//! the register model, and backtracks on a dead end. Every search node (the set of linearized
//! ops as a bitset, the register value, and the two extra facts described below) is
//! remembered in a hash set, so no configuration is explored twice.
//!
//! Plain WGL is exponential in the number of concurrent ops. Most of that is wasted on orders
//! that cannot matter, so the search only builds linearizations of a canonical form that exists
//! whenever any linearization does. Each rule below comes with the rewrite that turns any
//! linearization into one that obeys it; the brute-force property test checks them all.
//! - **Reads go first.** A returned op that never changes the value (a read, a failed `Cas`)
//!   and is acceptable now is placed now, without branching: it can be moved to the front of
//!   any continuation. This removes the permutations of concurrent reads.
//! - **Dead writes are parked.** A returned `Put` whose value no op can see right after it is
//!   followed by a `Put` or by nothing in every linearization, and can be moved to just before
//!   the first `Put` placed after it became eligible. So it is parked as soon as it is
//!   eligible, and the earliest return among parked writes holds back every other op until a
//!   `Put` comes. This removes the subsets of concurrent unobserved writes. (An op can come
//!   right after a write only if no op lies entirely between them in real time, which keeps a
//!   read far in the future from keeping a write alive.)
//! - **Optional ops are used only where needed**: see below.
//!
//! Other pruning, which never rules out a linearization:
//! - **Stranding is a dead end.** Leaving a value that a returned op still needs, when nothing
//!   left can write it again, fails now instead of at that op's deadline. With unique values
//!   this prunes almost every wrong write order at once.
//! - **Unread values are one value.** Values that no op reads or expects are indistinguishable
//!   to every op, so they share one id, and states that differ only in which one the register
//!   holds are one state. Of several optional `Put`s of the same id, only one is offered.
//! - **Dominance.** A node equal to an already failed one plus one optional op fails too: the
//!   op might as well never have happened.
//!
//! Candidates are tried in order of return time (most urgent first), which finds a
//! linearization of a correct history almost without backtracking. A violation needs the
//! search to exhaust the consistent orders before it, which the pruning above keeps small when
//! written values are unique. With few distinct values per key and many ops that never
//! returned, the problem is NP-complete in general and the search may give up (`Unknown`).
//!
//! # Ops that never returned
//! Such an op may have taken effect at any time after its call, or never. Its return time is
//! taken as +infinity, so it never forces anything to wait for it, and the search may finish
//! without it. Explored naively, each one doubles the state space, because the search also
//! tries "it happened, and was overwritten unseen" at every point. Canonical form: an optional
//! op is only placed where it changes the value, and is immediately followed by a `Get` or
//! `Cas` that acts differently on the new value than on the old one (the first extra fact in
//! a search node is that old value). Rewrites: (1) drop optional ops that change nothing;
//! (2) drop an optional op directly followed by a `Put` (which overwrites it unseen) or by
//! nothing; (3) move an optional op after a following op that acts the same on the values
//! before and after it (the register holds the same value after both either way, and moving
//! an op whose return is +infinity later never breaks real-time order). Each rewrite removes
//! an op or moves one later, so rewriting terminates. An optional write that no op could see
//! is dropped up front. The second extra fact in a search node is the parked-write deadline.
//!
//! # Determinism
//! Keys are visited in byte order and candidates in call order, so the verdict, the reported
//! key and the step counts depend only on the input. The memo is a hash set used only for
//! membership tests; it is never iterated.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};

use bytes::Bytes;

/// Times are virtual nanoseconds from the simulator's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub client: u64,
    /// When the client sent the request.
    pub call_ns: u64,
    /// When the client got the answer; None if it never got one (timed out, or
    /// the run ended): the op may have taken effect at any time after call_ns, or never.
    pub return_ns: Option<u64>,
    pub kind: OpKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Sets key to value.
    Put { key: Bytes, value: Bytes },
    /// Read that returned `result` (None = key absent). Callers only record reads that returned.
    Get { key: Bytes, result: Option<Bytes> },
    /// Compare-and-set: if the current value equals `expect` (None = absent) set `new`.
    /// `result` is Some(succeeded) when known, None when the op never returned.
    Cas {
        key: Bytes,
        expect: Option<Bytes>,
        new: Bytes,
        result: Option<bool>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// The history of `key` has no linearization. `ops` is that key's history (sorted by call time) for the report.
    Violation {
        key: Bytes,
        ops: Vec<Op>,
    },
    /// The search gave up after `max_steps` on some key (not a pass, not a fail: report it).
    Unknown {
        key: Bytes,
        steps: u64,
    },
}

/// Checks a whole history. Keys are checked independently; the initial value of every key is absent.
/// `max_steps` bounds the search work per key.
///
/// Contract details:
/// - Two ops are ordered in real time only if one returned strictly before the other was
///   called; equal timestamps count as overlapping, because the simulator's clock can stamp
///   a reply and the next request in the same tick.
/// - A malformed op with `return_ns < call_ns` is treated as if it returned at `call_ns`
///   (an instantaneous op at its call time). It never causes a panic.
/// - A `Get` that never returned cannot have been observed and changes nothing, so it is
///   ignored; a `Cas` that returned with `result: None` is taken to have done whatever the
///   register model says it did at its linearization point.
/// - One step is one attempt to extend a partial linearization (one memo probe). A key that
///   needs more than `max_steps` of them yields [`Verdict::Unknown`]. The memo holds at most
///   one entry per step, so `max_steps` also bounds memory: about `ops / 8 + 100` bytes per
///   entry, freed after each key. With unique written values, a correct history needs about
///   one step per op and a violation rarely more than a few thousand steps per key, so
///   1_000_000 (tens of MB at worst) leaves ample room.
/// - If several keys fail, the first in byte order is reported, and a `Violation` on any key
///   takes precedence over an `Unknown` on another: it is a definite finding.
///
/// Never panics.
pub fn check(history: &[Op], max_steps: u64) -> Verdict {
    check_counting_steps(history, max_steps).0
}

/// [`check`], also returning the steps spent over all keys (for tests and tuning).
fn check_counting_steps(history: &[Op], max_steps: u64) -> (Verdict, u64) {
    // BTreeMap: keys are visited in byte order, so the reported key is reproducible.
    let mut by_key: BTreeMap<&Bytes, Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(key_of(&op.kind)).or_default().push(op);
    }
    let mut total_steps: u64 = 0;
    let mut first_unknown: Option<Verdict> = None;
    for (key, mut ops) in by_key {
        // Stable sort: ops called at the same instant keep their input order.
        ops.sort_by_key(|op| op.call_ns);
        let outcome = check_key(&ops, max_steps);
        total_steps = total_steps.saturating_add(outcome.steps);
        match outcome.result {
            SearchResult::Linearizable => {}
            SearchResult::Violation => {
                let verdict = Verdict::Violation {
                    key: key.clone(),
                    ops: ops.into_iter().cloned().collect(),
                };
                return (verdict, total_steps);
            }
            SearchResult::GaveUp => {
                if first_unknown.is_none() {
                    first_unknown = Some(Verdict::Unknown {
                        key: key.clone(),
                        steps: outcome.steps,
                    });
                }
            }
        }
    }
    (first_unknown.unwrap_or(Verdict::Linearizable), total_steps)
}

fn key_of(kind: &OpKind) -> &Bytes {
    match kind {
        OpKind::Put { key, .. } | OpKind::Get { key, .. } | OpKind::Cas { key, .. } => key,
    }
}

/// A register value (or absence) of one key, interned so that states hash and compare as
/// integers. Ids are dense from 0: they index per-value counters in the search.
type ValueId = usize;

/// Interning for one key's values. Only values that some op reads or expects get an id of
/// their own. Every other value is indistinguishable from the rest by any op (each op accepts
/// or rejects all of them alike, with the same effect), so they share one "anonymous" id.
/// The model on ids is then an exact quotient of the model on bytes, and search states that
/// differ only in which never-read value the register holds merge in the memo.
struct ValueIds {
    // BTreeMap rather than HashMap: lookup only, but keeps the crate free of hashed iteration.
    named: BTreeMap<Option<Bytes>, ValueId>,
}

impl ValueIds {
    fn new(ops: &[&Op]) -> Self {
        let mut named = BTreeMap::new();
        for op in ops {
            let seen = match &op.kind {
                OpKind::Put { .. } => continue,
                OpKind::Get { result, .. } => result,
                OpKind::Cas { expect, .. } => expect,
            };
            let next = named.len();
            named.entry(seen.clone()).or_insert(next);
        }
        ValueIds { named }
    }

    fn id(&self, value: Option<&Bytes>) -> ValueId {
        let anonymous = self.named.len();
        self.named
            .get(&value.cloned())
            .copied()
            .unwrap_or(anonymous)
    }

    /// Ids are `0..count()`.
    fn count(&self) -> usize {
        self.named.len() + 1
    }
}

/// What the register held just before an optional op took effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Prior {
    Value(ValueId),
    /// The value of a dead write (see `Search::push_candidates`), which was parked until this
    /// op, a Put, came along: no op after it can see that value.
    DeadWrite,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Put {
        value: ValueId,
    },
    Get {
        result: ValueId,
    },
    Cas {
        expect: ValueId,
        new: ValueId,
        result: Option<bool>,
    },
}

/// One op of a single key's history, in the form the search works on.
#[derive(Clone, Copy, Debug)]
struct Entry {
    call_ns: u64,
    /// `u64::MAX` for an op that never returned: it never precedes another op.
    return_ns: u64,
    /// Whether the op returned: only returned ops must appear in a linearization.
    returned: bool,
    /// A returned `Put` whose value no other op could ever see: see `Search::push_candidates`.
    dead_write: bool,
    action: Action,
}

impl Entry {
    fn new(op: &Op, values: &ValueIds) -> Self {
        let action = match &op.kind {
            OpKind::Put { value, .. } => Action::Put {
                value: values.id(Some(value)),
            },
            OpKind::Get { result, .. } => Action::Get {
                result: values.id(result.as_ref()),
            },
            OpKind::Cas {
                expect,
                new,
                result,
                ..
            } => Action::Cas {
                expect: values.id(expect.as_ref()),
                new: values.id(Some(new)),
                result: *result,
            },
        };
        // A return before the call is malformed; clamping keeps the op's window non-empty
        // instead of letting it precede ops that were called before it.
        let return_ns = match op.return_ns {
            Some(ret) => ret.max(op.call_ns),
            None => u64::MAX,
        };
        Entry {
            call_ns: op.call_ns,
            return_ns,
            returned: op.return_ns.is_some(),
            dead_write: false,
            action,
        }
    }

    /// The register model: the value after this op takes effect on `state`, or None if the
    /// op's recorded outcome is impossible on `state`.
    fn apply(&self, state: ValueId) -> Option<ValueId> {
        match self.action {
            Action::Put { value } => Some(value),
            Action::Get { result } => (result == state).then_some(state),
            Action::Cas {
                expect,
                new,
                result,
            } => {
                let matches = state == expect;
                match result {
                    Some(true) => matches.then_some(new),
                    Some(false) => (!matches).then_some(state),
                    // Outcome unknown: it did whatever the register dictates.
                    None => Some(if matches { new } else { state }),
                }
            }
        }
    }

    /// The value this op may leave in the register, if it can change it at all.
    fn written_value(&self) -> Option<ValueId> {
        match self.action {
            Action::Put { value } => Some(value),
            Action::Get { .. } => None,
            Action::Cas { result, new, .. } => (result != Some(false)).then_some(new),
        }
    }

    /// The one value this returned op can have seen, if it accepts only one.
    fn needs(&self) -> Option<ValueId> {
        if !self.returned {
            return None;
        }
        match self.action {
            Action::Get { result } => Some(result),
            Action::Cas {
                expect,
                result: Some(true),
                ..
            } => Some(expect),
            Action::Put { .. } | Action::Cas { .. } => None,
        }
    }

    /// Whether the op never changes the register, whatever it holds.
    fn is_read_only(&self) -> bool {
        match self.action {
            Action::Put { .. } => false,
            Action::Get { .. } => true,
            Action::Cas { result, .. } => result == Some(false),
        }
    }

    /// Whether `self` may come right after an optional op that moved the register from `prior`
    /// to `after` in a canonical linearization (see the module docs): it must read the register
    /// and must act differently on `prior` than on `after`; otherwise the optional op could be
    /// dropped or moved past it.
    fn may_follow_optional(&self, prior: Prior, after: ValueId) -> bool {
        if matches!(self.action, Action::Put { .. }) {
            return false;
        }
        let on_after = self.apply(after);
        let neutral = match prior {
            Prior::Value(before) => on_after == Some(after) && self.apply(before) == Some(before),
            // No op placed after a dead write accepts its value, so none is neutral.
            Prior::DeadWrite => false,
        };
        on_after.is_some() && !neutral
    }
}

/// One key's history in the form the search works on.
struct Prepared {
    /// Sorted by call time.
    entries: Vec<Entry>,
    /// The id of "absent", the initial value.
    initial: ValueId,
    /// Value ids are `0..value_count`.
    value_count: usize,
}

/// Builds the search's view of one key's history (`ops` sorted by call time): drops
/// optional ops that cannot appear in a canonical linearization and marks dead writes.
fn prepare(ops: &[&Op]) -> Prepared {
    let values = ValueIds::new(ops);
    let mut entries: Vec<Entry> = ops.iter().map(|op| Entry::new(op, &values)).collect();
    // An optional op that can never change the value is never needed (rewrite 1).
    entries.retain(|e| e.returned || e.written_value().is_some());
    let acceptors = Acceptors::new(&entries, values.count());
    let mut kept = Vec::with_capacity(entries.len());
    for mut e in entries.iter().copied() {
        match (e.returned, e.action, e.written_value()) {
            // An optional write must be followed by an op that sees its value (rewrite 2), so
            // if none can, drop it now rather than offer it at every node of the search.
            (false, _, Some(value)) if !acceptors.any_can_follow(value, e.call_ns, u64::MAX) => {
                continue;
            }
            (true, Action::Put { value }, _) => {
                let limit_ns = acceptors.adjacency_limit_ns(&entries, e.return_ns);
                e.dead_write = !acceptors.any_can_follow(value, e.call_ns, limit_ns);
            }
            _ => {}
        }
        kept.push(e);
    }
    Prepared {
        entries: kept,
        initial: values.id(None),
        value_count: values.count(),
    }
}

/// Which ops could take effect right after a write of a given value and accept it, in a
/// canonical linearization (`Put`s accept anything and are not counted).
struct Acceptors {
    /// Per value: the ops that accept only that value (a read of it, a `Cas` expecting it that
    /// succeeded or, being optional, must succeed), as (call, running max of return) in call
    /// order.
    specific: Vec<Vec<(u64, u64)>>,
    /// The same for returned `Cas` ops that accept nearly any value (failed, or outcome
    /// unknown). Counting them for every value overestimates, which only prunes less.
    wildcards: Vec<(u64, u64)>,
    /// For each entry index: the earliest return among returned entries from there on.
    suffix_min_return_ns: Vec<u64>,
}

impl Acceptors {
    fn new(entries: &[Entry], value_count: usize) -> Self {
        let mut specific: Vec<Vec<(u64, u64)>> = vec![Vec::new(); value_count];
        let mut wildcards = Vec::new();
        // Entries are in call order, so every list is too.
        for e in entries {
            let list = match e.action {
                Action::Put { .. } => continue,
                Action::Get { result } => specific.get_mut(result),
                Action::Cas { expect, result, .. } => {
                    if !e.returned || result == Some(true) {
                        specific.get_mut(expect)
                    } else {
                        Some(&mut wildcards)
                    }
                }
            };
            if let Some(list) = list {
                let running_max_ns = list
                    .last()
                    .map_or(e.return_ns, |&(_, m)| m.max(e.return_ns));
                list.push((e.call_ns, running_max_ns));
            }
        }
        let mut suffix_min_return_ns = vec![u64::MAX; entries.len() + 1];
        for (i, e) in entries.iter().enumerate().rev() {
            suffix_min_return_ns[i] = suffix_min_return_ns[i + 1].min(e.return_ns);
        }
        Acceptors {
            specific,
            wildcards,
            suffix_min_return_ns,
        }
    }

    /// The latest call time of an op that can come directly after an op returning at
    /// `return_ns`: one called later would have some op entirely between the two, namely one
    /// called after `return_ns` that returned before it was called.
    fn adjacency_limit_ns(&self, entries: &[Entry], return_ns: u64) -> u64 {
        let first_after = entries.partition_point(|e| e.call_ns <= return_ns);
        self.suffix_min_return_ns
            .get(first_after)
            .copied()
            .unwrap_or(u64::MAX)
    }

    /// Whether some op that is not entirely before `call_ns` and was called no later than
    /// `limit_ns` could accept `value`.
    fn any_can_follow(&self, value: ValueId, call_ns: u64, limit_ns: u64) -> bool {
        let any_in = |list: &[(u64, u64)]| {
            let called_by_limit = list.partition_point(|&(call, _)| call <= limit_ns);
            called_by_limit
                .checked_sub(1)
                .is_some_and(|last| list[last].1 >= call_ns)
        };
        self.specific.get(value).is_some_and(|list| any_in(list)) || any_in(&self.wildcards)
    }
}

enum SearchResult {
    Linearizable,
    Violation,
    GaveUp,
}

struct KeyOutcome {
    result: SearchResult,
    steps: u64,
}

fn check_key(ops: &[&Op], max_steps: u64) -> KeyOutcome {
    search(&prepare(ops), max_steps)
}

/// The ops not yet linearized, as a doubly linked list in call order (Knuth's dancing links):
/// removal and reinsertion are O(1) and undo in LIFO order, which is exactly what a
/// depth-first search needs, and iteration skips linearized ops.
struct Unlinearized {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl Unlinearized {
    /// Index `len` is the sentinel that closes the ring.
    fn new(len: usize) -> Self {
        Unlinearized {
            next: (0..=len)
                .map(|i| if i == len { 0 } else { i + 1 })
                .collect(),
            prev: (0..=len)
                .map(|i| if i == 0 { len } else { i - 1 })
                .collect(),
        }
    }

    fn sentinel(&self) -> usize {
        self.next.len() - 1
    }

    fn first(&self) -> Option<usize> {
        self.after(self.sentinel())
    }

    fn after(&self, i: usize) -> Option<usize> {
        let next = self.next[i];
        (next != self.sentinel()).then_some(next)
    }

    fn remove(&mut self, i: usize) {
        let (prev, next) = (self.prev[i], self.next[i]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    /// Undoes the most recent `remove(i)` still in effect.
    fn reinsert(&mut self, i: usize) {
        let (prev, next) = (self.prev[i], self.next[i]);
        self.next[prev] = i;
        self.prev[next] = i;
    }
}

/// A search node: everything that decides which continuations are possible.
#[derive(PartialEq, Eq, Hash)]
struct MemoKey {
    linearized: Box<[u64]>,
    state: ValueId,
    after_optional: Option<Prior>,
    overwrite_deadline_ns: Option<u64>,
}

/// A small multiplicative hasher: memo keys are a few machine words, and SipHash would
/// dominate the search's running time. Collisions cost time, never correctness, because the
/// set compares whole keys.
#[derive(Default)]
struct WordHasher(u64);

impl WordHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        for &byte in chunks.remainder() {
            self.mix(u64::from(byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    fn finish(&self) -> u64 {
        // Final avalanche (from MurmurHash3's fmix64): the hash table picks buckets and tags
        // from different bits, and neighbouring bitsets differ in a single bit.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

// Membership tests only: the set is never iterated, so its order cannot leak into results.
#[allow(clippy::disallowed_types)]
type Memo = HashSet<MemoKey, BuildHasherDefault<WordHasher>>;

/// One depth-first level: its candidates are `candidates[start..]` up to the next level's start.
struct Level {
    start: usize,
    cursor: usize,
}

/// What to restore when backtracking over a linearized op.
struct Undo {
    op: usize,
    state: ValueId,
    after_optional: Option<Prior>,
    overwrite_deadline_ns: Option<u64>,
}

/// The position of the depth-first search over one key's entries (sorted by call time).
struct Search<'a> {
    entries: &'a [Entry],
    unlinearized: Unlinearized,
    /// Bitset over `entries`.
    linearized: Vec<u64>,
    state: ValueId,
    /// Right after an optional op: what the register held before it (see
    /// `Entry::may_follow_optional`).
    after_optional: Option<Prior>,
    /// Set while dead writes are parked: the earliest of their returns. They take effect just
    /// before the next `Put`, so no other op called after this may go first.
    overwrite_deadline_ns: Option<u64>,
    /// Unlinearized ops that returned: the search succeeds when none is left.
    required_left: usize,
    /// Per value: unlinearized returned ops that accept only that value.
    needed_by: Vec<usize>,
    /// Per value: unlinearized ops that may write it.
    writable_by: Vec<usize>,
}

impl<'a> Search<'a> {
    fn new(prepared: &'a Prepared) -> Self {
        let entries = &prepared.entries[..];
        let mut needed_by = vec![0; prepared.value_count];
        let mut writable_by = vec![0; prepared.value_count];
        for e in entries {
            if let Some(v) = e.needs() {
                needed_by[v] += 1;
            }
            if let Some(v) = e.written_value() {
                writable_by[v] += 1;
            }
        }
        Search {
            entries,
            unlinearized: Unlinearized::new(entries.len()),
            linearized: vec![0u64; entries.len().div_ceil(64)],
            state: prepared.initial,
            after_optional: None,
            overwrite_deadline_ns: None,
            required_left: entries.iter().filter(|e| e.returned).count(),
            needed_by,
            writable_by,
        }
    }

    fn memo_key(&self) -> MemoKey {
        MemoKey {
            linearized: self.linearized.clone().into_boxed_slice(),
            state: self.state,
            after_optional: self.after_optional,
            overwrite_deadline_ns: self.overwrite_deadline_ns,
        }
    }

    /// Linearizes `op` next, or returns None if the model rejects it here.
    fn linearize(&mut self, op: usize) -> Option<Undo> {
        let e = &self.entries[op];
        let undo = Undo {
            op,
            state: self.state,
            after_optional: self.after_optional,
            overwrite_deadline_ns: self.overwrite_deadline_ns,
        };
        if e.dead_write {
            // Parked: it takes effect right before the next Put, so the value is unchanged
            // for everything in between, and what comes right after an optional op is still
            // to be decided.
            let deadline_ns = self.overwrite_deadline_ns.unwrap_or(u64::MAX);
            self.overwrite_deadline_ns = Some(deadline_ns.min(e.return_ns));
        } else {
            let next_state = e.apply(self.state)?;
            let is_put = matches!(e.action, Action::Put { .. });
            let prior = if is_put && self.overwrite_deadline_ns.is_some() {
                Prior::DeadWrite
            } else {
                Prior::Value(self.state)
            };
            self.after_optional = (!e.returned).then_some(prior);
            if is_put {
                self.overwrite_deadline_ns = None;
            }
            self.state = next_state;
        }
        self.unlinearized.remove(op);
        set_bit(&mut self.linearized, op);
        if let Some(v) = e.needs() {
            self.needed_by[v] -= 1;
        }
        if let Some(v) = e.written_value() {
            self.writable_by[v] -= 1;
        }
        if e.returned {
            self.required_left -= 1;
        }
        Some(undo)
    }

    /// Reverts the most recent `linearize` still in effect.
    fn revert(&mut self, undo: Undo) {
        let e = &self.entries[undo.op];
        self.unlinearized.reinsert(undo.op);
        clear_bit(&mut self.linearized, undo.op);
        if let Some(v) = e.needs() {
            self.needed_by[v] += 1;
        }
        if let Some(v) = e.written_value() {
            self.writable_by[v] += 1;
        }
        if e.returned {
            self.required_left += 1;
        }
        self.state = undo.state;
        self.after_optional = undo.after_optional;
        self.overwrite_deadline_ns = undo.overwrite_deadline_ns;
    }

    /// Appends, in the order to try them, the unlinearized ops that may take effect next:
    /// returned ops first (they must be placed anyway), then optional ones.
    fn push_candidates(&self, out: &mut Vec<usize>) {
        let (entries, unlinearized, state) = (self.entries, &self.unlinearized, self.state);
        // An op may go next only if no unlinearized op returned before it was called, i.e. if
        // it was called no later than the earliest return among unlinearized ops. Ops are in
        // call order, and an op called after the running minimum cannot lower it, so stop there.
        let mut horizon_ns = u64::MAX;
        let mut cursor = unlinearized.first();
        while let Some(i) = cursor {
            let e = &entries[i];
            if e.call_ns > horizon_ns {
                break;
            }
            horizon_ns = horizon_ns.min(e.return_ns);
            cursor = unlinearized.after(i);
        }
        // Parked dead writes come right before the next Put, so they hold back everything else.
        let others_horizon_ns = horizon_ns.min(self.overwrite_deadline_ns.unwrap_or(u64::MAX));
        let window = || {
            std::iter::successors(unlinearized.first(), |&i| unlinearized.after(i))
                .take_while(|&i| entries[i].call_ns <= horizon_ns)
        };
        let in_time =
            |e: &Entry| matches!(e.action, Action::Put { .. }) || e.call_ns <= others_horizon_ns;
        let allowed_here = |e: &Entry| {
            in_time(e)
                && match self.after_optional {
                    Some(prior) => e.may_follow_optional(prior, state),
                    None => e.apply(state).is_some(),
                }
        };

        // A dead write is a returned Put whose value no op could see, so in any linearization
        // it is followed by a Put or by nothing. It can be moved to just before the first Put
        // placed after it became eligible (here), since it changes nothing anyone sees. So it is
        // parked at once, without branching, instead of trying every subset of concurrent
        // unobserved writes.
        if let Some(i) = window().find(|&i| entries[i].dead_write) {
            out.push(i);
            return;
        }
        // A returned read-only op (a read, a Cas known to have failed) that may go here is
        // taken alone, without branching: in any linearization from this node it can be moved
        // to the front, since nothing unlinearized must precede it, it accepts the value here,
        // and it changes nothing for the ops it jumps over. This removes the permutations of
        // concurrent reads. Not so for a write of the current value: where it really belongs
        // it may change the value (the brute-force test found a four-op counterexample).
        if let Some(i) = window().find(|&i| {
            let e = &entries[i];
            e.returned && e.is_read_only() && allowed_here(e)
        }) {
            out.push(i);
            return;
        }
        let first_returned = out.len();
        for i in window() {
            let e = &entries[i];
            if e.returned && allowed_here(e) && !self.strands_current_value(i) {
                out.push(i);
            }
        }
        out[first_returned..].sort_by_key(|&i| (entries[i].return_ns, i));
        // Optional Puts of the same value that are both eligible are interchangeable from now
        // on (no deadline holds back a Put, and +infinity returns hold back nothing), so only
        // the first is offered. With never-read values all sharing one id this matters: a run
        // with many timed-out writes would otherwise branch on each of them.
        let mut offered_puts: Vec<ValueId> = Vec::new();
        for i in window() {
            let e = &entries[i];
            if e.returned || !allowed_here(e) || self.strands_current_value(i) {
                continue;
            }
            if let Action::Put { value } = e.action {
                if offered_puts.contains(&value) {
                    continue;
                }
                offered_puts.push(value);
            }
            // Canonical form: an optional op must change the value, and some other candidate
            // must be able to come right after it (linearizing it does not move the horizon,
            // since its return is +infinity, so the next candidates are these minus itself).
            let Some(after) = e.apply(state) else {
                continue;
            };
            // A Put takes the parked dead writes with it, lifting their deadline; it then
            // overwrites a dead value, which is a change even when it writes `state` again.
            let lifts_deadline =
                matches!(e.action, Action::Put { .. }) && self.overwrite_deadline_ns.is_some();
            let prior = if lifts_deadline {
                Prior::DeadWrite
            } else {
                Prior::Value(state)
            };
            if prior == Prior::Value(after) {
                continue;
            }
            let has_follower = window().any(|j| {
                let next = &entries[j];
                j != i
                    && (lifts_deadline || in_time(next))
                    && next.may_follow_optional(prior, after)
            });
            if has_follower {
                out.push(i);
            }
        }
    }

    /// Whether linearizing `op` here moves the register off a value that some other returned
    /// op still needs and that nothing left can write again: a dead end found now rather than
    /// when that op's deadline comes, after exploring everything in between. With unique
    /// values this prunes most wrong write orders at once.
    fn strands_current_value(&self, op: usize) -> bool {
        let e = &self.entries[op];
        if e.apply(self.state) == Some(self.state) {
            return false;
        }
        let own_need = usize::from(e.needs() == Some(self.state));
        let needed = self.needed_by[self.state] > own_need;
        let rewritable = self.writable_by[self.state] > 0;
        needed && !rewritable
    }
}

/// Whether the current node is no better than one already explored without success: the same
/// node minus one optional op. That op might as well never have happened (its return is
/// +infinity, so it constrains nothing), so every continuation from here was open there too.
/// The smaller node cannot be an ancestor still being explored: an optional op always changes
/// the node beyond its bit (value, prior or deadline).
fn dominated(memo: &Memo, search: &Search<'_>, path: &[Undo], newest: usize) -> bool {
    let mut key = search.memo_key();
    // `path` does not hold the newest op yet.
    for op in path.iter().map(|u| u.op).chain([newest]) {
        if search.entries[op].returned {
            continue;
        }
        clear_bit(&mut key.linearized, op);
        let found = memo.contains(&key);
        set_bit(&mut key.linearized, op);
        if found {
            return true;
        }
    }
    false
}

/// Wing & Gong / Lowe search over one key's entries (sorted by call time).
fn search(prepared: &Prepared, max_steps: u64) -> KeyOutcome {
    let mut search = Search::new(prepared);
    if search.required_left == 0 {
        return KeyOutcome {
            result: SearchResult::Linearizable,
            steps: 0,
        };
    }
    let mut memo = Memo::default();
    let mut candidates: Vec<usize> = Vec::new();
    search.push_candidates(&mut candidates);
    let mut levels = vec![Level {
        start: 0,
        cursor: 0,
    }];
    let mut path: Vec<Undo> = Vec::new();
    let mut steps: u64 = 0;

    // Bounded: every iteration either spends a step (at most `max_steps`) or pops a level, and
    // levels are pushed only after a step, so there are at most 2 * max_steps + 1 iterations.
    loop {
        let Some(level) = levels.last_mut() else {
            // The root's candidates are exhausted: no linearization exists.
            return KeyOutcome {
                result: SearchResult::Violation,
                steps,
            };
        };
        if level.cursor >= candidates.len() {
            candidates.truncate(level.start);
            levels.pop();
            if let Some(undo) = path.pop() {
                search.revert(undo);
            }
            continue;
        }
        let op = candidates[level.cursor];
        level.cursor += 1;

        if steps >= max_steps {
            return KeyOutcome {
                result: SearchResult::GaveUp,
                steps,
            };
        }
        steps += 1;

        // push_candidates offers only ops the model accepts here.
        let Some(undo) = search.linearize(op) else {
            continue;
        };
        if !memo.insert(search.memo_key()) || dominated(&memo, &search, &path, op) {
            search.revert(undo);
            continue;
        }
        path.push(undo);
        if search.required_left == 0 {
            // Optional ops still unlinearized are taken never to have happened, and parked dead
            // writes take effect at the end: nothing called after their return was placed.
            return KeyOutcome {
                result: SearchResult::Linearizable,
                steps,
            };
        }
        let start = candidates.len();
        search.push_candidates(&mut candidates);
        levels.push(Level {
            start,
            cursor: start,
        });
    }
}

fn set_bit(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

fn clear_bit(bits: &mut [u64], i: usize) {
    bits[i / 64] &= !(1 << (i % 64));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::FileFailurePersistence;

    /// Ample for every hand-made history here; the search needs a few steps per op.
    const STEPS: u64 = 1_000_000;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn put(call_ns: u64, return_ns: Option<u64>, value: &str) -> Op {
        put_on("x", call_ns, return_ns, value)
    }

    fn put_on(key: &str, call_ns: u64, return_ns: Option<u64>, value: &str) -> Op {
        Op {
            client: call_ns,
            call_ns,
            return_ns,
            kind: OpKind::Put {
                key: b(key),
                value: b(value),
            },
        }
    }

    fn get(call_ns: u64, return_ns: u64, result: Option<&str>) -> Op {
        get_on("x", call_ns, return_ns, result)
    }

    fn get_on(key: &str, call_ns: u64, return_ns: u64, result: Option<&str>) -> Op {
        Op {
            client: call_ns,
            call_ns,
            return_ns: Some(return_ns),
            kind: OpKind::Get {
                key: b(key),
                result: result.map(b),
            },
        }
    }

    fn cas(
        call_ns: u64,
        return_ns: Option<u64>,
        expect: Option<&str>,
        new: &str,
        result: Option<bool>,
    ) -> Op {
        Op {
            client: call_ns,
            call_ns,
            return_ns,
            kind: OpKind::Cas {
                key: b("x"),
                expect: expect.map(b),
                new: b(new),
                result,
            },
        }
    }

    fn assert_linearizable(history: &[Op]) {
        assert_eq!(check(history, STEPS), Verdict::Linearizable, "{history:#?}");
    }

    fn assert_violation(history: &[Op]) {
        match check(history, STEPS) {
            Verdict::Violation { key, ops } => {
                assert_eq!(key, b("x"));
                let mut expected: Vec<Op> = history.to_vec();
                expected.sort_by_key(|op| op.call_ns);
                assert_eq!(
                    ops, expected,
                    "the report is the key's history in call order"
                );
            }
            other => panic!("expected a violation, got {other:?} for {history:#?}"),
        }
    }

    // ---- Histories that must be rejected ----

    #[test]
    fn stale_read_after_completed_write_is_rejected() {
        assert_violation(&[
            put(0, Some(10), "1"),
            put(20, Some(30), "2"),
            get(40, 50, Some("1")),
        ]);
    }

    #[test]
    fn read_of_never_written_value_is_rejected() {
        assert_violation(&[put(0, Some(10), "1"), get(20, 30, Some("9"))]);
        assert_violation(&[get(0, 10, Some("9"))]);
    }

    #[test]
    fn sequential_reads_going_back_in_time_are_rejected() {
        // "2" is in flight during both reads, so either alone is fine; but once a read has
        // seen "2", a later read cannot see "1" again without another write of "1".
        assert_violation(&[
            put(0, Some(10), "1"),
            put(15, Some(100), "2"),
            get(20, 30, Some("2")),
            get(40, 50, Some("1")),
        ]);
        // Same shape with a write that never returned.
        assert_violation(&[
            put(0, Some(10), "1"),
            put(15, None, "2"),
            get(20, 30, Some("2")),
            get(40, 50, Some("1")),
        ]);
    }

    #[test]
    fn cas_success_after_value_changed_is_rejected() {
        assert_violation(&[
            put(0, Some(10), "1"),
            put(20, Some(30), "2"),
            cas(40, Some(50), Some("1"), "3", Some(true)),
        ]);
    }

    #[test]
    fn cas_failure_when_value_certainly_matched_is_rejected() {
        assert_violation(&[
            put(0, Some(10), "1"),
            cas(20, Some(30), Some("1"), "2", Some(false)),
        ]);
        // Absent is a value too: nothing was written yet.
        assert_violation(&[cas(0, Some(10), None, "1", Some(false))]);
    }

    #[test]
    fn lost_write_is_rejected() {
        // The write returned; a later, non-overlapping read still sees the key absent.
        assert_violation(&[put(0, Some(10), "1"), get(20, 30, None)]);
        // And via a Cas that acknowledged success.
        assert_violation(&[
            put(0, Some(10), "1"),
            cas(20, Some(30), Some("1"), "2", Some(true)),
            get(40, 50, Some("1")),
        ]);
    }

    #[test]
    fn read_of_value_from_write_started_after_read_returned_is_rejected() {
        assert_violation(&[get(0, 10, Some("1")), put(20, Some(30), "1")]);
        // A write that never returned cannot take effect before its call either.
        assert_violation(&[get(0, 10, Some("1")), put(20, None, "1")]);
    }

    #[test]
    fn writes_by_one_client_cannot_be_reordered() {
        assert_violation(&[
            put(0, Some(10), "1"),
            put(20, Some(30), "2"),
            get(40, 50, Some("2")),
            get(60, 70, Some("1")),
        ]);
    }

    #[test]
    fn many_writers_reads_cannot_revisit_an_overwritten_value() {
        let mut history: Vec<Op> = (0..10).map(|v| put(0, Some(100), &v.to_string())).collect();
        history.push(get(10, 15, Some("3")));
        history.push(get(20, 25, Some("7")));
        history.push(get(30, 35, Some("3")));
        assert_violation(&history);
    }

    #[test]
    fn violation_reports_the_failing_key_with_its_history_in_call_order() {
        let history = [
            get_on("b", 40, 50, Some("1")),
            put_on("a", 0, Some(10), "1"),
            put_on("b", 20, Some(30), "2"),
            put_on("b", 0, Some(10), "1"),
            get_on("a", 20, 30, Some("1")),
        ];
        let expected_ops = vec![history[3].clone(), history[2].clone(), history[0].clone()];
        assert_eq!(
            check(&history, STEPS),
            Verdict::Violation {
                key: b("b"),
                ops: expected_ops
            }
        );
    }

    // ---- Histories that must be accepted ----

    #[test]
    fn empty_history_is_linearizable() {
        assert_linearizable(&[]);
        assert_eq!(check(&[], 0), Verdict::Linearizable);
    }

    #[test]
    fn concurrent_read_may_see_old_or_new_value() {
        for seen in [Some("1"), Some("2")] {
            assert_linearizable(&[
                put(0, Some(10), "1"),
                put(20, Some(40), "2"),
                get(25, 35, seen),
            ]);
        }
        // Before the first write completes, absent is possible too.
        assert_linearizable(&[put(0, Some(10), "1"), get(5, 8, None)]);
    }

    #[test]
    fn timed_out_write_observed_long_after() {
        assert_linearizable(&[
            put(0, Some(10), "1"),
            put(20, None, "2"),
            get(1_000, 1_010, Some("2")),
        ]);
        // It may also take effect late: first the old value, then the new one.
        assert_linearizable(&[
            put(0, Some(10), "1"),
            put(20, None, "2"),
            get(500, 510, Some("1")),
            get(1_000, 1_010, Some("2")),
        ]);
    }

    #[test]
    fn timed_out_write_never_observed() {
        assert_linearizable(&[
            put(0, Some(10), "1"),
            put(20, None, "2"),
            get(1_000, 1_010, Some("1")),
        ]);
        assert_linearizable(&[put(20, None, "2")]);
        assert_linearizable(&[cas(20, None, None, "2", None), get(30, 40, None)]);
    }

    #[test]
    fn timed_out_write_can_explain_a_failed_cas() {
        // The Cas failed although "1" was the last acknowledged value: only the write that
        // never returned can have changed it in between.
        let history = [
            put(0, Some(10), "1"),
            put(20, None, "5"),
            cas(30, Some(40), Some("1"), "2", Some(false)),
            get(50, 60, Some("1")),
            put(70, Some(80), "6"),
        ];
        // ...but then the later read of "1" would need "1" written again, which never happens.
        assert_violation(&history);
        assert_linearizable(&history[..3]);
        assert_violation(&[
            put(0, Some(10), "1"),
            cas(30, Some(40), Some("1"), "2", Some(false)),
        ]);
    }

    #[test]
    fn read_observes_write_still_in_flight() {
        assert_linearizable(&[put(0, Some(100), "1"), get(10, 20, Some("1"))]);
        assert_linearizable(&[put(0, Some(100), "1"), get(10, 20, None)]);
        // Equal timestamps overlap: a reply and a request stamped in the same tick.
        assert_linearizable(&[put(0, Some(10), "1"), get(10, 20, None)]);
    }

    #[test]
    fn many_concurrent_writers_with_overlapping_reads() {
        let mut history: Vec<Op> = (0..10).map(|v| put(0, Some(100), &v.to_string())).collect();
        history.push(get(10, 15, Some("3")));
        history.push(get(20, 25, Some("7")));
        history.push(get(22, 40, Some("7")));
        history.push(get(30, 35, Some("1")));
        history.push(get(36, 120, Some("9")));
        history.push(get(37, 110, Some("1")));
        history.push(get(200, 210, Some("9")));
        assert_linearizable(&history);
    }

    #[test]
    fn cas_chains() {
        assert_linearizable(&[
            put(0, Some(10), "0"),
            cas(20, Some(30), Some("0"), "1", Some(true)),
            cas(25, Some(40), Some("1"), "2", Some(true)),
            cas(35, Some(45), Some("0"), "9", Some(false)),
            get(50, 60, Some("2")),
        ]);
        // Two overlapping Cas ops whose order is forced by their expectations, not by time.
        assert_linearizable(&[
            put(0, Some(10), "0"),
            cas(20, Some(50), Some("1"), "2", Some(true)),
            cas(21, Some(49), Some("0"), "1", Some(true)),
            get(60, 70, Some("2")),
        ]);
        // A Cas that never returned, observed later; and one from absent.
        assert_linearizable(&[
            cas(0, Some(10), None, "1", Some(true)),
            cas(20, None, Some("1"), "2", None),
            cas(30, None, Some("2"), "3", None),
            get(100, 110, Some("3")),
        ]);
        // The chain cannot skip a link.
        assert_violation(&[
            cas(0, Some(10), None, "1", Some(true)),
            cas(20, None, Some("1"), "2", None),
            cas(30, Some(40), Some("9"), "3", Some(true)),
        ]);
    }

    /// Found by the brute-force property test: only ops that never change the value may be
    /// forced early. A returned write of the value already held, or a Cas of unknown outcome
    /// that would fail now, may change the value where it really belongs.
    #[test]
    fn only_read_only_ops_are_placed_early() {
        // The second write of "a" must come after "b", for the last read.
        assert_linearizable(&[
            put(0, Some(2), "a"),
            get(1, 2, Some("a")),
            put(3, Some(5), "b"),
            put(0, Some(4), "a"),
            get(10, 11, Some("a")),
        ]);
        assert_linearizable(&[
            put(3, Some(3), "0"),
            cas(3, Some(3), Some("0"), "1", None),
            get(3, 3, Some("1")),
        ]);
    }

    /// Found by a randomized run against brute force: a timed-out Put that follows a parked
    /// dead write ("2" at 13..17, never read) changes the value even when it writes the value
    /// the search last saw ("0"), because the dead write came in between.
    #[test]
    fn timed_out_put_after_a_dead_write_may_restore_the_previous_value() {
        assert_linearizable(&[
            put(0, Some(10), "2"),
            cas(4, Some(8), Some("2"), "0", Some(true)),
            put(11, None, "0"),
            put(13, Some(17), "2"),
            get(32, 45, Some("0")),
        ]);
    }

    #[test]
    fn returned_cas_with_unknown_result_follows_the_register() {
        // result None on a returned op: whatever the register dictated.
        assert_linearizable(&[
            put(0, Some(10), "1"),
            cas(20, Some(30), Some("1"), "2", None),
            get(40, 50, Some("2")),
        ]);
        assert_violation(&[
            put(0, Some(10), "1"),
            cas(20, Some(30), Some("1"), "2", None),
            get(40, 50, Some("1")),
        ]);
    }

    #[test]
    fn malformed_return_before_call_is_clamped_not_a_panic() {
        // Treated as returning at its call time: 10 ns.
        assert_linearizable(&[put(10, Some(5), "1"), get(20, 30, Some("1"))]);
        assert_violation(&[put(10, Some(5), "1"), get(20, 30, None)]);
        assert_linearizable(&[put(10, Some(5), "1"), get(10, 30, None)]);
    }

    #[test]
    fn gives_up_after_max_steps_and_a_violation_elsewhere_wins() {
        let slow = [
            put_on("a", 0, Some(10), "1"),
            get_on("a", 20, 30, Some("1")),
        ];
        assert_eq!(
            check(&slow, 1),
            Verdict::Unknown {
                key: b("a"),
                steps: 1
            }
        );
        assert_eq!(check(&slow, 2), Verdict::Linearizable);
        let mut both = slow.to_vec();
        both.push(get_on("b", 0, 10, Some("1")));
        assert!(matches!(check(&both, 1), Verdict::Violation { key, .. } if key == b("b")));
    }

    // ---- Randomized: ground truth vs. checker ----

    /// SplitMix64: a tiny seeded generator, so each seed replays the same history.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next_u64() % n.max(1)
        }

        fn percent(&mut self, p: u64) -> bool {
            self.below(100) < p
        }
    }

    struct Workload {
        clients: u64,
        keys: u64,
        ops: usize,
        timeout_percent: u64,
        /// Percent of ops that are Cas (the rest split evenly into reads and writes).
        cas_percent: u64,
        /// Draw written values from this many per key; 0 = every value unique.
        reused_values: u64,
    }

    enum Shape {
        Put,
        Get,
        Cas,
    }

    struct Planned {
        client: u64,
        key: Bytes,
        shape: Shape,
        call_ns: u64,
        return_ns: Option<u64>,
        /// The ground-truth linearization point; None if the op never took effect.
        effect_ns: Option<u64>,
    }

    const LATENCY_MAX_NS: u64 = 100;
    /// Longer than any latency: a timed-out op's effect may land after the client moved on.
    const TIMEOUT_NS: u64 = 150;

    /// A linearizable history by construction: sequential clients issue ops whose effects are
    /// applied to a model register in order of a linearization point drawn inside each op's
    /// interval. Some ops time out; of those, half took effect (possibly much later) and half
    /// never did. Every written value is unique.
    fn generate(seed: u64, w: &Workload) -> Vec<Op> {
        let mut rng = Rng(seed);
        let mut clock_ns: Vec<u64> = (0..w.clients).map(|_| rng.below(50)).collect();
        let mut planned: Vec<Planned> = Vec::with_capacity(w.ops);
        for _ in 0..w.ops {
            // The client whose previous op finished first goes next (ties: lowest id).
            let Some((client, _)) = clock_ns.iter().enumerate().min_by_key(|&(c, t)| (*t, c))
            else {
                break;
            };
            let call_ns = clock_ns[client] + rng.below(20);
            let latency_ns = 1 + rng.below(LATENCY_MAX_NS);
            let roll = rng.below(100);
            let shape = if roll < w.cas_percent {
                Shape::Cas
            } else if roll.is_multiple_of(2) {
                Shape::Get
            } else {
                Shape::Put
            };
            // Reads are only recorded when they returned.
            let timed_out = !matches!(shape, Shape::Get) && rng.percent(w.timeout_percent);
            let (return_ns, effect_ns) = if timed_out {
                let effect_ns = rng
                    .percent(50)
                    .then(|| call_ns + rng.below(10 * TIMEOUT_NS));
                clock_ns[client] = call_ns + TIMEOUT_NS;
                (None, effect_ns)
            } else {
                clock_ns[client] = call_ns + latency_ns;
                (
                    Some(call_ns + latency_ns),
                    Some(call_ns + rng.below(latency_ns + 1)),
                )
            };
            planned.push(Planned {
                client: client as u64,
                key: b(&format!("k{}", rng.below(w.keys))),
                shape,
                call_ns,
                return_ns,
                effect_ns,
            });
        }

        // Apply effects in linearization order (ties: plan order) to fill in outcomes.
        let mut order: Vec<usize> = (0..planned.len()).collect();
        order.sort_by_key(|&i| (planned[i].effect_ns.unwrap_or(u64::MAX), i));
        let mut current: BTreeMap<Bytes, Option<Bytes>> = BTreeMap::new();
        let mut written: BTreeMap<Bytes, Vec<Bytes>> = BTreeMap::new();
        let mut kinds: Vec<Option<OpKind>> = vec![None; planned.len()];
        for i in order {
            let p = &planned[i];
            let happened = p.effect_ns.is_some();
            let now = current.get(&p.key).cloned().flatten();
            let fresh = if w.reused_values == 0 {
                b(&format!("v{i}"))
            } else {
                b(&format!("r{}", rng.below(w.reused_values)))
            };
            let kind = match p.shape {
                Shape::Put => {
                    if happened {
                        current.insert(p.key.clone(), Some(fresh.clone()));
                        written
                            .entry(p.key.clone())
                            .or_default()
                            .push(fresh.clone());
                    }
                    OpKind::Put {
                        key: p.key.clone(),
                        value: fresh,
                    }
                }
                Shape::Get => OpKind::Get {
                    key: p.key.clone(),
                    result: now,
                },
                Shape::Cas => {
                    let older = written.get(&p.key).map_or(&[][..], |v| v.as_slice());
                    let expect = match rng.below(older.len() as u64 + 2) {
                        0 => None,
                        1 => now.clone(),
                        n => older.get(n as usize - 2).cloned(),
                    };
                    let succeeded = expect == now;
                    if happened && succeeded {
                        current.insert(p.key.clone(), Some(fresh.clone()));
                        written
                            .entry(p.key.clone())
                            .or_default()
                            .push(fresh.clone());
                    }
                    OpKind::Cas {
                        key: p.key.clone(),
                        expect,
                        new: fresh,
                        result: p.return_ns.map(|_| succeeded),
                    }
                }
            };
            kinds[i] = Some(kind);
        }
        planned
            .iter()
            .zip(kinds)
            .filter_map(|(p, kind)| {
                Some(Op {
                    client: p.client,
                    call_ns: p.call_ns,
                    return_ns: p.return_ns,
                    kind: kind?,
                })
            })
            .collect()
    }

    /// The value `op` may have put in the register, if it may have written one.
    fn written_by(op: &Op) -> Option<&Bytes> {
        match &op.kind {
            OpKind::Put { value, .. } => Some(value),
            OpKind::Cas { new, result, .. } if *result != Some(false) => Some(new),
            _ => None,
        }
    }

    /// Whether `op` certainly wrote (acknowledged, so it happened within its interval).
    fn certainly_wrote(op: &Op) -> bool {
        op.return_ns.is_some()
            && matches!(
                op.kind,
                OpKind::Put { .. }
                    | OpKind::Cas {
                        result: Some(true),
                        ..
                    }
            )
    }

    /// A value a read cannot have returned, and why.
    type Unseen = (Option<Bytes>, &'static str);

    /// Values the read `history[r]` cannot return in any linearization, with a reason, from
    /// arguments that do not depend on the checker (values are unique per writer):
    /// - "future": every writer of it was called after the read returned;
    /// - "stale": its writer returned, and then another write was both called and acknowledged
    ///   before the read was called (for absent: any acknowledged write before the read).
    fn impossible_reads(history: &[Op], r: usize) -> Vec<Unseen> {
        let read = &history[r];
        let (OpKind::Get { key, .. }, Some(read_ret)) = (&read.kind, read.return_ns) else {
            return Vec::new();
        };
        let same_key: Vec<&Op> = history
            .iter()
            .filter(|op| key_of(&op.kind) == key)
            .collect();
        let mut out = Vec::new();
        if same_key
            .iter()
            .any(|w| certainly_wrote(w) && w.return_ns.is_some_and(|t| t < read.call_ns))
        {
            out.push((None, "stale"));
        }
        for writer in &same_key {
            let Some(value) = written_by(writer) else {
                continue;
            };
            if writer.call_ns > read_ret {
                out.push((Some(value.clone()), "future"));
            } else if let Some(writer_ret) = writer.return_ns {
                let overwritten = same_key.iter().any(|y| {
                    certainly_wrote(y)
                        && written_by(y) != Some(value)
                        && y.call_ns > writer_ret
                        && y.return_ns.is_some_and(|t| t < read.call_ns)
                });
                if overwritten {
                    out.push((Some(value.clone()), "stale"));
                }
            }
        }
        out
    }

    #[test]
    fn random_linearizable_histories_pass_and_mutated_reads_fail() {
        let mut informed_mutations = 0;
        const SEEDS: u64 = 300;
        for seed in 0..SEEDS {
            let mut rng = Rng(seed ^ 0xa5a5_a5a5);
            let workload = Workload {
                clients: 1 + rng.below(10),
                keys: 1 + rng.below(3),
                ops: 20 + rng.below(150) as usize,
                timeout_percent: rng.below(25),
                cas_percent: 20,
                reused_values: 0,
            };
            let history = generate(seed, &workload);
            assert_eq!(check(&history, STEPS), Verdict::Linearizable, "seed {seed}");

            // Mutate one read into a value it provably cannot have seen, preferring a stale or
            // future value (which takes reasoning about time to reject) over an unknown one.
            let reads: Vec<usize> = (0..history.len())
                .filter(|&i| matches!(history[i].kind, OpKind::Get { .. }))
                .collect();
            let Some(&fallback) = reads.first() else {
                continue;
            };
            let mut chosen: Option<(usize, Unseen)> = None;
            for _ in 0..reads.len() {
                let r = reads[rng.below(reads.len() as u64) as usize];
                let impossible = impossible_reads(&history, r);
                if let OpKind::Get { result, .. } = &history[r].kind {
                    assert!(
                        impossible.iter().all(|(v, _)| v != result),
                        "seed {seed}: the test's own reasoning calls a true read impossible"
                    );
                }
                if !impossible.is_empty() {
                    let pick = impossible[rng.below(impossible.len() as u64) as usize].clone();
                    chosen = Some((r, pick));
                    break;
                }
            }
            let (r, (value, why)) = match chosen {
                Some(informed) => {
                    informed_mutations += 1;
                    informed
                }
                None => (fallback, (Some(b("never-written")), "never written")),
            };
            let mut mutated = history.clone();
            let OpKind::Get { key, result } = &mut mutated[r].kind else {
                unreachable!("reads holds Get indices only");
            };
            let key = key.clone();
            *result = value;
            match check(&mutated, STEPS) {
                Verdict::Violation { key: bad, .. } => assert_eq!(bad, key, "seed {seed}"),
                other => panic!("seed {seed}: read of op {r} made {why} gave {other:?}"),
            }
        }
        // Teeth: most mutations are stale or future values, not merely unknown ones.
        assert!(informed_mutations > SEEDS * 3 / 4, "{informed_mutations}");
    }

    #[test]
    fn two_thousand_ops_on_eight_keys_check_in_few_steps() {
        let workload = Workload {
            clients: 10,
            keys: 8,
            ops: 2_000,
            timeout_percent: 10,
            cas_percent: 20,
            reused_values: 0,
        };
        for seed in 0..5 {
            let history = generate(seed, &workload);
            assert_eq!(history.len(), 2_000);
            let (verdict, steps) = check_counting_steps(&history, STEPS);
            assert_eq!(verdict, Verdict::Linearizable, "seed {seed}");
            assert!(steps <= 4 * 2_000, "seed {seed}: {steps} steps");

            // A violation deep in the history must not cost an exhaustive search either.
            let mut mutated = history.clone();
            let (r, value) = (history.len() / 2..history.len())
                .find_map(|r| {
                    let (value, _) = impossible_reads(&history, r).into_iter().next()?;
                    Some((r, value))
                })
                .expect("some read in the second half has a provably impossible value");
            if let OpKind::Get { result, .. } = &mut mutated[r].kind {
                *result = value;
            }
            let (verdict, steps) = check_counting_steps(&mutated, STEPS);
            assert!(
                matches!(verdict, Verdict::Violation { .. }),
                "seed {seed}: {verdict:?}"
            );
            assert!(
                steps <= 20_000,
                "seed {seed}: {steps} steps to find the violation"
            );
        }
    }

    #[test]
    fn one_hot_key_with_ten_clients_and_timeouts_checks_in_few_steps() {
        let workload = Workload {
            clients: 10,
            keys: 1,
            ops: 400,
            timeout_percent: 20,
            cas_percent: 20,
            reused_values: 0,
        };
        for seed in 0..5 {
            let history = generate(seed, &workload);
            let (verdict, steps) = check_counting_steps(&history, STEPS);
            assert_eq!(verdict, Verdict::Linearizable, "seed {seed}");
            assert!(steps <= 20 * 400, "seed {seed}: {steps} steps");
        }
    }

    // ---- Against a deliberately naive checker ----

    /// The definition, spelled out: pick which unreturned ops happened, then look for an order
    /// of the chosen ops that respects real time and replays on a map of registers.
    fn brute_force_linearizable(history: &[Op]) -> bool {
        let optional: Vec<usize> = (0..history.len())
            .filter(|&i| history[i].return_ns.is_none())
            .collect();
        (0u32..1 << optional.len()).any(|mask| {
            let mut included: Vec<bool> = history.iter().map(|op| op.return_ns.is_some()).collect();
            for (bit, &i) in optional.iter().enumerate() {
                included[i] = mask & (1 << bit) != 0;
            }
            let left = included.iter().filter(|&&inc| inc).count();
            let mut placed = vec![false; history.len()];
            extend(history, &included, &mut placed, left, &BTreeMap::new())
        })
    }

    fn extend(
        history: &[Op],
        included: &[bool],
        placed: &mut [bool],
        left: usize,
        registers: &BTreeMap<Bytes, Bytes>,
    ) -> bool {
        if left == 0 {
            return true;
        }
        let precedes = |j: usize, i: usize| {
            history[j]
                .return_ns
                .is_some_and(|ret| ret.max(history[j].call_ns) < history[i].call_ns)
        };
        for i in 0..history.len() {
            if !included[i] || placed[i] {
                continue;
            }
            if (0..history.len()).any(|j| included[j] && !placed[j] && precedes(j, i)) {
                continue;
            }
            let mut next = registers.clone();
            let ok = match &history[i].kind {
                OpKind::Put { key, value } => {
                    next.insert(key.clone(), value.clone());
                    true
                }
                OpKind::Get { key, result } => registers.get(key) == result.as_ref(),
                OpKind::Cas {
                    key,
                    expect,
                    new,
                    result,
                } => {
                    let matches = registers.get(key) == expect.as_ref();
                    if matches {
                        next.insert(key.clone(), new.clone());
                    }
                    result.is_none_or(|succeeded| succeeded == matches)
                }
            };
            if ok {
                placed[i] = true;
                if extend(history, included, placed, left - 1, &next) {
                    return true;
                }
                placed[i] = false;
            }
        }
        false
    }

    /// Small histories of varied shape: values from a tiny alphabet (so repeats and violations
    /// are common) or unique per writer (so dead writes, never-read values and the stranding
    /// prune come into play), with varied overlap and share of ops that never returned.
    fn small_history() -> impl Strategy<Value = Vec<Op>> {
        let shape = (1u64..=4, any::<bool>(), 5u64..45, 1u64..20, 0u32..60);
        shape.prop_flat_map(|(alphabet, unique, span_ns, max_dur_ns, pending_percent)| {
            let op = (
                0u8..3,
                prop::bool::weighted(0.8),
                0..span_ns,
                0..max_dur_ns,
                prop::bool::weighted(f64::from(pending_percent) / 100.0),
                0..8u64,
                prop::option::weighted(0.75, 0..8u64),
                prop_oneof![2 => Just(Some(true)), 2 => Just(Some(false)), 1 => Just(None)],
            );
            prop::collection::vec(op, 0..=8).prop_map(move |raw| {
                let name = |n: u64| {
                    if unique {
                        b(&format!("w{n}"))
                    } else {
                        b(&format!("a{}", n % alphabet))
                    }
                };
                raw.into_iter()
                    .enumerate()
                    .map(
                        |(i, (shape, on_x, call_ns, dur_ns, pending, v, seen, result))| {
                            let key = b(if on_x { "x" } else { "y" });
                            // Unique mode: op i writes "w{i}"; reads name any op's value.
                            let written = if unique { name(i as u64) } else { name(v) };
                            let kind = match shape {
                                0 => OpKind::Put {
                                    key,
                                    value: written,
                                },
                                1 => OpKind::Get {
                                    key,
                                    result: seen.map(name),
                                },
                                _ => OpKind::Cas {
                                    key,
                                    expect: seen.map(name),
                                    new: written,
                                    result: if pending { None } else { result },
                                },
                            };
                            Op {
                                client: 0,
                                call_ns,
                                return_ns: (!pending).then_some(call_ns + dur_ns),
                                kind,
                            }
                        },
                    )
                    .collect()
            })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 30_000,
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
                "../proptest-regressions/linearizability.txt",
            ))),
            ..ProptestConfig::default()
        })]

        /// Catches unsound pruning (canonical form, dropped optional ops, memo) and the
        /// per-key split: small histories, values from a tiny alphabet so that repeated
        /// values and violations are common.
        #[test]
        fn agrees_with_brute_force_on_small_histories(
            history in small_history()
        ) {
            let expected = brute_force_linearizable(&history);
            let verdict = check(&history, STEPS);
            match &verdict {
                Verdict::Linearizable => prop_assert!(expected, "checker accepted: {:#?}", history),
                Verdict::Violation { key, ops } => {
                    prop_assert!(!expected, "checker rejected: {:#?}", history);
                    let of_key: Vec<Op> = ops.clone();
                    prop_assert!(of_key.iter().all(|op| key_of(&op.kind) == key));
                    prop_assert!(!brute_force_linearizable(&of_key));
                }
                Verdict::Unknown { .. } => prop_assert!(false, "gave up on {:#?}", history),
            }
        }
    }
}
