//! Watches: each member's own (never replicated) registry of watchers, fed
//! with every committed revision's events.
//!
//! A watcher is *synced* (it has everything up to the store's revision and
//! gets new events as they commit) or *unsynced* (it is behind, and catches up
//! from the store's history). Catch-up is done in bounded slices per step, so
//! a watcher starting far in the past never holds up writes or other
//! watchers. A stream whose driver stops draining responses has a bounded
//! number outstanding; beyond it, its watchers fall back to unsynced and
//! re-read history later, so nothing buffers without bound. If the history a
//! watcher needs is compacted, it is cancelled with `compact_revision` (as
//! etcd does).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::mvcc::store::MvccStore;
use crate::mvcc::types::{Event, EventType, KeyRange};

/// The stream a watch belongs to, chosen by the driver (one per client stream).
pub type StreamId = u64;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchCreate {
    pub key: Bytes,
    pub range_end: Bytes,
    /// 0: from the next revision.
    pub start_revision: i64,
    pub progress_notify: bool,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
    /// 0: the registry picks one.
    pub watch_id: i64,
    pub fragment: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchResponse {
    pub stream: StreamId,
    pub watch_id: i64,
    pub created: bool,
    pub canceled: bool,
    pub compact_revision: i64,
    pub cancel_reason: String,
    pub fragment: bool,
    /// The header revision.
    pub revision: i64,
    pub events: Vec<Event>,
}

/// Limits on what watches may hold.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct WatchLimits {
    /// Responses a stream may have outstanding (not yet acknowledged by the driver).
    pub max_outstanding_per_stream: usize,
    /// Revisions of history one catch-up step reads, over all watchers.
    pub catchup_revisions_per_step: usize,
    /// Event bytes per response before a fragmenting watcher splits it
    /// (etcd: `--max-request-bytes`).
    pub max_response_bytes: usize,
    /// Ticks between periodic progress notifications (etcd: 10 minutes).
    pub progress_interval_ticks: u64,
}

impl Default for WatchLimits {
    fn default() -> Self {
        WatchLimits {
            max_outstanding_per_stream: 1024,
            catchup_revisions_per_step: 256,
            max_response_bytes: 1_572_864,
            progress_interval_ticks: 6_000,
        }
    }
}

#[derive(Clone, Debug)]
struct Watcher {
    key: Bytes,
    range_end: Bytes,
    /// The next revision this watcher must get events of.
    next_rev: i64,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    progress_notify: bool,
    fragment: bool,
    /// Sent events since the last progress notification.
    active: bool,
}

impl Watcher {
    fn wants(&self, e: &Event) -> bool {
        let kind_ok = match e.kind {
            EventType::Put => !self.no_put,
            EventType::Delete => !self.no_delete,
        };
        kind_ok && KeyRange::new(&self.key, &self.range_end).contains(&e.kv.key)
    }

    fn shape(&self, e: &Event) -> Event {
        let mut e = e.clone();
        if !self.prev_kv {
            e.prev_kv = None;
        }
        e
    }
}

#[derive(Clone, Debug, Default)]
struct Stream {
    next_auto_id: i64,
    outstanding: usize,
    /// A progress request waits until every watcher here is synced.
    progress_requested: bool,
}

#[derive(Clone, Debug, Default)]
pub struct WatchRegistry {
    limits: WatchLimits,
    streams: BTreeMap<StreamId, Stream>,
    watchers: BTreeMap<(StreamId, i64), Watcher>,
    unsynced: BTreeSet<(StreamId, i64)>,
    out: Vec<WatchResponse>,
    last_progress_tick: u64,
    /// Round-robin position for catch-up.
    catchup_cursor: Option<(StreamId, i64)>,
}

impl WatchRegistry {
    pub fn new(limits: WatchLimits) -> WatchRegistry {
        WatchRegistry {
            limits,
            ..WatchRegistry::default()
        }
    }

    pub fn watchers(&self) -> usize {
        self.watchers.len()
    }

    pub fn unsynced(&self) -> usize {
        self.unsynced.len()
    }

    fn emit(&mut self, r: WatchResponse) {
        if let Some(s) = self.streams.get_mut(&r.stream) {
            s.outstanding += 1;
        }
        self.out.push(r);
    }

    fn stream_full(&self, stream: StreamId) -> bool {
        self.streams
            .get(&stream)
            .is_some_and(|s| s.outstanding >= self.limits.max_outstanding_per_stream)
    }

    /// Registers a watcher; answers `created` (or why not) on the stream.
    pub fn create(&mut self, stream: StreamId, req: WatchCreate, store: &MvccStore) {
        let current = store.current_revision();
        let st = self.streams.entry(stream).or_default();
        // etcd's gRPC layer: an empty key watches "\0"; range_end "\0" is from-key.
        let key = if req.key.is_empty() {
            Bytes::from_static(b"\0")
        } else {
            req.key.clone()
        };
        let range_end = req.range_end.clone();
        let empty_range = !range_end.is_empty() && range_end.as_ref() != [0] && key >= range_end;
        // As etcd: an empty range is refused before an id is allocated, and
        // both refusals answer with watch id -1.
        let duplicate = req.watch_id != 0 && self.watchers.contains_key(&(stream, req.watch_id));
        if empty_range || duplicate {
            let reason = if empty_range {
                "mvcc: watcher range is empty"
            } else {
                "mvcc: duplicate watch ID provided on the WatchStream"
            };
            self.emit(WatchResponse {
                stream,
                watch_id: -1,
                created: true,
                canceled: true,
                cancel_reason: reason.to_string(),
                revision: current,
                ..WatchResponse::default()
            });
            return;
        }
        let id = if req.watch_id == 0 {
            while self.watchers.contains_key(&(stream, st.next_auto_id)) {
                st.next_auto_id += 1;
            }
            let id = st.next_auto_id;
            st.next_auto_id += 1;
            id
        } else {
            req.watch_id
        };
        let next_rev = if req.start_revision <= 0 {
            current + 1
        } else {
            req.start_revision
        };
        let w = Watcher {
            key,
            range_end,
            next_rev,
            no_put: req.no_put,
            no_delete: req.no_delete,
            prev_kv: req.prev_kv,
            progress_notify: req.progress_notify,
            fragment: req.fragment,
            active: false,
        };
        self.watchers.insert((stream, id), w);
        if next_rev <= current {
            self.unsynced.insert((stream, id));
        }
        self.emit(WatchResponse {
            stream,
            watch_id: id,
            created: true,
            revision: current,
            ..WatchResponse::default()
        });
    }

    /// Cancels a watcher; answers only if it existed (as etcd).
    pub fn cancel(&mut self, stream: StreamId, id: i64, store: &MvccStore) {
        if self.watchers.remove(&(stream, id)).is_some() {
            self.unsynced.remove(&(stream, id));
            self.emit(WatchResponse {
                stream,
                watch_id: id,
                canceled: true,
                revision: store.current_revision(),
                ..WatchResponse::default()
            });
        }
    }

    /// A client asks for progress: once every watcher on the stream has all
    /// events up to the current revision, one response (watch id -1) says so.
    /// (etcd 3.5.0–3.5.7 answered at once, even with events still pending.)
    pub fn request_progress(&mut self, stream: StreamId, store: &MvccStore) {
        self.streams.entry(stream).or_default().progress_requested = true;
        self.answer_progress(store);
    }

    fn answer_progress(&mut self, store: &MvccStore) {
        let pending: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, s)| s.progress_requested)
            .map(|(id, _)| *id)
            .collect();
        for stream in pending {
            let behind = self
                .unsynced
                .range((stream, i64::MIN)..=(stream, i64::MAX))
                .next()
                .is_some();
            if !behind {
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.progress_requested = false;
                }
                self.emit(WatchResponse {
                    stream,
                    watch_id: -1,
                    revision: store.current_revision(),
                    ..WatchResponse::default()
                });
            }
        }
    }

    /// The driver delivered `n` responses of `stream`.
    pub fn ack(&mut self, stream: StreamId, n: usize) {
        if let Some(s) = self.streams.get_mut(&stream) {
            s.outstanding = s.outstanding.saturating_sub(n);
        }
    }

    /// The client stream closed: its watchers go away.
    pub fn close_stream(&mut self, stream: StreamId) {
        self.streams.remove(&stream);
        let ids: Vec<(StreamId, i64)> = self
            .watchers
            .range((stream, i64::MIN)..=(stream, i64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in ids {
            self.watchers.remove(&k);
            self.unsynced.remove(&k);
        }
    }

    /// Splits one watcher's events of a batch into responses, fragmenting
    /// only if the watcher asked for it and the batch is too large.
    fn respond(
        &mut self,
        stream: StreamId,
        id: i64,
        revision: i64,
        events: Vec<Event>,
        fragment: bool,
    ) {
        let size: usize = events.iter().map(event_bytes).sum();
        if !fragment || size <= self.limits.max_response_bytes || events.len() <= 1 {
            self.emit(WatchResponse {
                stream,
                watch_id: id,
                revision,
                events,
                ..WatchResponse::default()
            });
            return;
        }
        let mut chunk = Vec::new();
        let mut bytes = 0;
        let mut chunks = Vec::new();
        for e in events {
            let b = event_bytes(&e);
            if !chunk.is_empty() && bytes + b > self.limits.max_response_bytes {
                chunks.push(std::mem::take(&mut chunk));
                bytes = 0;
            }
            bytes += b;
            chunk.push(e);
        }
        chunks.push(chunk);
        let last = chunks.len() - 1;
        for (k, events) in chunks.into_iter().enumerate() {
            self.emit(WatchResponse {
                stream,
                watch_id: id,
                revision,
                events,
                fragment: k != last,
                ..WatchResponse::default()
            });
        }
    }

    /// Delivers one committed revision to the synced watchers that want it.
    pub fn on_commit(&mut self, revision: i64, events: &[Event]) {
        let keys: Vec<(StreamId, i64)> = self
            .watchers
            .keys()
            .filter(|k| !self.unsynced.contains(k))
            .copied()
            .collect();
        for (stream, id) in keys {
            let w = &self.watchers[&(stream, id)];
            if w.next_rev > revision {
                continue;
            }
            let mine: Vec<Event> = events
                .iter()
                .filter(|e| w.wants(e))
                .map(|e| w.shape(e))
                .collect();
            if mine.is_empty() {
                self.watchers
                    .get_mut(&(stream, id))
                    .expect("listed")
                    .next_rev = revision + 1;
                continue;
            }
            if self.stream_full(stream) {
                // The client is not keeping up: stop buffering for it; it
                // re-reads this revision from history when it catches up.
                self.unsynced.insert((stream, id));
                continue;
            }
            let fragment = w.fragment;
            let wm = self.watchers.get_mut(&(stream, id)).expect("listed");
            wm.next_rev = revision + 1;
            wm.active = true;
            self.respond(stream, id, revision, mine, fragment);
        }
    }

    /// One bounded slice of catch-up work, periodic progress, and pending
    /// progress answers. Call once per step.
    pub fn step(&mut self, store: &MvccStore, now_ticks: u64) {
        let mut budget = self.limits.catchup_revisions_per_step;
        let current = store.current_revision();
        let order: Vec<(StreamId, i64)> = match self.catchup_cursor {
            Some(c) => self
                .unsynced
                .range(c..)
                .chain(self.unsynced.range(..c))
                .copied()
                .collect(),
            None => self.unsynced.iter().copied().collect(),
        };
        for key in order {
            if budget == 0 {
                self.catchup_cursor = Some(key);
                break;
            }
            let (stream, id) = key;
            if self.stream_full(stream) {
                continue;
            }
            let Some(w) = self.watchers.get(&key).cloned() else {
                self.unsynced.remove(&key);
                continue;
            };
            if w.next_rev < store.compact_revision() {
                self.watchers.remove(&key);
                self.unsynced.remove(&key);
                self.emit(WatchResponse {
                    stream,
                    watch_id: id,
                    canceled: true,
                    compact_revision: store.compact_revision(),
                    // etcd's compaction cancel carries no header revision.
                    revision: 0,
                    ..WatchResponse::default()
                });
                continue;
            }
            let revs = store.changed_revisions_after(w.next_rev - 1, budget);
            let mut next = w.next_rev;
            for rev in revs {
                budget -= 1;
                if self.stream_full(stream) {
                    break;
                }
                let mine: Vec<Event> = store
                    .events_at(rev)
                    .iter()
                    .filter(|e| w.wants(e))
                    .map(|e| w.shape(e))
                    .collect();
                assert!(
                    rev >= w.next_rev,
                    "catch-up of watch {id} at {rev} below its next revision {}",
                    w.next_rev
                );
                next = rev + 1;
                if !mine.is_empty() {
                    // As etcd: a catch-up response's header carries the
                    // store's current revision, not the events' (clients
                    // read progress only from the events themselves).
                    self.respond(stream, id, current, mine, w.fragment);
                    if let Some(wm) = self.watchers.get_mut(&key) {
                        wm.active = true;
                    }
                }
            }
            let caught_up = store.changed_revisions_after(next - 1, 1).is_empty();
            if let Some(wm) = self.watchers.get_mut(&key) {
                // Caught up: it waits for the next revision, or for its own
                // start if that lies further ahead (never earlier than asked).
                wm.next_rev = if caught_up {
                    next.max(current + 1)
                } else {
                    next
                };
            }
            if caught_up {
                self.unsynced.remove(&key);
            }
        }
        if self.unsynced.is_empty() {
            self.catchup_cursor = None;
        }
        if now_ticks >= self.last_progress_tick + self.limits.progress_interval_ticks {
            self.last_progress_tick = now_ticks;
            let due: Vec<(StreamId, i64)> = self
                .watchers
                .iter()
                .filter(|(k, w)| w.progress_notify && !self.unsynced.contains(k))
                .map(|(k, _)| *k)
                .collect();
            for key in due {
                let w = self.watchers.get_mut(&key).expect("listed");
                if std::mem::take(&mut w.active) {
                    continue;
                }
                self.emit(WatchResponse {
                    stream: key.0,
                    watch_id: key.1,
                    revision: current,
                    ..WatchResponse::default()
                });
            }
        }
        self.answer_progress(store);
    }

    /// The store was replaced (a snapshot from the leader): everyone re-reads history.
    pub fn resync_all(&mut self) {
        self.unsynced = self.watchers.keys().copied().collect();
    }

    pub fn take_responses(&mut self) -> Vec<WatchResponse> {
        std::mem::take(&mut self.out)
    }
}

fn event_bytes(e: &Event) -> usize {
    let kv = |k: &crate::mvcc::types::KeyValue| k.key.len() + k.value.len() + 40;
    kv(&e.kv) + e.prev_kv.as_ref().map_or(0, kv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::types::PutRequest;

    fn put(store: &mut MvccStore, reg: &mut WatchRegistry, key: &'static str) -> i64 {
        let mut w = store.write();
        let _ = PutRequest::default();
        w.put(
            &Bytes::from_static(key.as_bytes()),
            &Bytes::from_static(b"v"),
            0,
        );
        let events = w.finish();
        let rev = store.current_revision();
        reg.on_commit(rev, &events);
        rev
    }

    fn event_revisions(reg: &mut WatchRegistry) -> Vec<i64> {
        reg.take_responses()
            .iter()
            .flat_map(|r| r.events.iter().map(|e| e.kv.mod_revision))
            .collect()
    }

    #[test]
    fn a_watch_from_the_future_never_gets_earlier_revisions_even_when_resynced() {
        let mut store = MvccStore::new();
        let mut reg = WatchRegistry::new(WatchLimits::default());
        reg.create(
            1,
            WatchCreate {
                key: Bytes::from_static(b"k"),
                start_revision: 5,
                ..WatchCreate::default()
            },
            &store,
        );
        let _ = reg.take_responses();
        put(&mut store, &mut reg, "k"); // revision 2
        // The store is replaced (a snapshot) while still below the start.
        reg.resync_all();
        reg.step(&store, 0);
        for _ in 0..5 {
            put(&mut store, &mut reg, "k");
            reg.step(&store, 0);
        }
        assert_eq!(event_revisions(&mut reg), vec![5, 6, 7]);
    }

    #[test]
    fn a_watch_from_the_past_catches_up_then_follows() {
        let mut store = MvccStore::new();
        let mut reg = WatchRegistry::new(WatchLimits {
            catchup_revisions_per_step: 1,
            ..WatchLimits::default()
        });
        for _ in 0..4 {
            put(&mut store, &mut reg, "k"); // revisions 2..=5
        }
        reg.create(
            1,
            WatchCreate {
                key: Bytes::from_static(b"k"),
                start_revision: 3,
                ..WatchCreate::default()
            },
            &store,
        );
        let _ = reg.take_responses();
        for _ in 0..5 {
            reg.step(&store, 0);
        }
        put(&mut store, &mut reg, "k"); // revision 6, live
        assert_eq!(event_revisions(&mut reg), vec![3, 4, 5, 6]);
    }
}
