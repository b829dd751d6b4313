//! The etcd state machine against an obviously correct model
//! (`etcd_core::testing::etcd_model`): every version kept, reads by brute
//! force, compaction only a floor for reads.

use std::collections::BTreeMap;

use bytes::Bytes;
use etcd_core::etcd::{EtcdConfig, EtcdState, Notification};
use etcd_core::mvcc::*;
use etcd_core::node::StateMachine;
use etcd_core::request::{ApiLimits, Request, validate};
use etcd_core::testing::etcd_model::EtcdModel;
use etcd_core::types::LogIndex;
use etcd_core::watch::{WatchCreate, WatchResponse};
use proptest::prelude::*;

// ---- generators ---------------------------------------------------------------

fn key() -> impl Strategy<Value = Bytes> {
    prop::sample::select(vec!["a", "ab", "b", "c", "d"]).prop_map(|s: &str| Bytes::from(s))
}

fn range_end() -> impl Strategy<Value = Bytes> {
    prop::sample::select(vec!["", "", "b", "c", "e", "\0", "a"]).prop_map(|s: &str| Bytes::from(s))
}

fn value() -> impl Strategy<Value = Bytes> {
    prop::sample::select(vec!["1", "2", "3", ""]).prop_map(|s: &str| Bytes::from(s))
}

fn range_req() -> impl Strategy<Value = RangeRequest> {
    (
        key(),
        range_end(),
        0i64..4,
        -1i64..30,
        0u8..3,
        0u8..5,
        any::<(bool, bool)>(),
        (0i64..12, 0i64..12, 0i64..12, 0i64..12),
    )
        .prop_map(
            |(
                key,
                range_end,
                limit,
                revision,
                order,
                target,
                (keys_only, count_only),
                (a, b, c, d),
            )| {
                RangeRequest {
                    key,
                    range_end,
                    limit,
                    revision: revision.max(0),
                    sort_order: [SortOrder::None, SortOrder::Ascend, SortOrder::Descend]
                        [order as usize],
                    sort_target: [
                        SortTarget::Key,
                        SortTarget::Version,
                        SortTarget::Create,
                        SortTarget::Mod,
                        SortTarget::Value,
                    ][target as usize],
                    serializable: false,
                    keys_only,
                    count_only: count_only && revision % 3 == 0,
                    min_mod_revision: if a % 3 == 0 { a } else { 0 },
                    max_mod_revision: if b % 3 == 0 { b } else { 0 },
                    min_create_revision: if c % 4 == 0 { c } else { 0 },
                    max_create_revision: if d % 4 == 0 { d } else { 0 },
                }
            },
        )
}

fn put_req() -> impl Strategy<Value = PutRequest> {
    (
        key(),
        value(),
        prop::sample::select(vec![0i64, 0, 1, 2]),
        any::<(bool, bool, bool)>(),
    )
        .prop_map(|(key, value, lease, (prev_kv, iv, il))| PutRequest {
            key,
            value: if iv { Bytes::new() } else { value },
            lease: if il { 0 } else { lease },
            prev_kv,
            ignore_value: iv,
            ignore_lease: il,
        })
}

fn delete_req() -> impl Strategy<Value = DeleteRangeRequest> {
    (key(), range_end(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn compare() -> impl Strategy<Value = Compare> {
    (key(), range_end(), 0u8..4, 0u8..5, 0i64..8, value()).prop_map(
        |(key, range_end, res, tgt, n, v)| Compare {
            result: [
                CompareResult::Equal,
                CompareResult::Greater,
                CompareResult::Less,
                CompareResult::NotEqual,
            ][res as usize],
            target: match tgt {
                0 => CompareTarget::Version(n),
                1 => CompareTarget::Create(n),
                2 => CompareTarget::Mod(n),
                3 => CompareTarget::Value(v),
                _ => CompareTarget::Lease(n % 3),
            },
            key,
            range_end,
        },
    )
}

fn op() -> impl Strategy<Value = RequestOp> {
    let leaf = prop_oneof![
        range_req().prop_map(RequestOp::Range),
        put_req().prop_map(RequestOp::Put),
        delete_req().prop_map(RequestOp::DeleteRange),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        (
            prop::collection::vec(compare(), 0..2),
            prop::collection::vec(inner.clone(), 0..3),
            prop::collection::vec(inner, 0..3),
        )
            .prop_map(|(compare, success, failure)| {
                RequestOp::Txn(TxnRequest {
                    compare,
                    success,
                    failure,
                })
            })
    })
}

#[derive(Clone, Debug)]
enum Step {
    Req(Request),
    /// Advance the leader's clock (lease expiry proposals are applied).
    Tick(u64),
    /// A watch from a past (or future) revision.
    Watch {
        start: i64,
        key: Bytes,
        range_end: Bytes,
        prev_kv: bool,
        no_put: bool,
        no_delete: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => request().prop_map(Step::Req),
        1 => (1u64..40).prop_map(Step::Tick),
        1 => (1i64..3).prop_map(|id| Step::Req(Request::LeaseRenew { id })),
        3 => (0i64..25, key(), range_end(), any::<(bool, bool, bool)>()).prop_map(|(start, key, range_end, (prev_kv, a, b))| {
            Step::Watch { start, key, range_end, prev_kv, no_put: a && !b, no_delete: b && !a }
        }),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        4 => put_req().prop_map(Request::Put),
        2 => delete_req().prop_map(Request::DeleteRange),
        3 => range_req().prop_map(Request::Range),
        2 => (prop::collection::vec(compare(), 0..3), prop::collection::vec(op(), 0..4), prop::collection::vec(op(), 0..3))
            .prop_map(|(compare, success, failure)| Request::Txn(TxnRequest { compare, success, failure })),
        1 => (0i64..30).prop_map(|revision| Request::Compact { revision, physical: false }),
        1 => (1i64..3, 1i64..10).prop_map(|(id, ttl)| Request::LeaseGrant { id, ttl }),
        1 => (1i64..3).prop_map(|id| Request::LeaseRevoke { id }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1024,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                concat!(env!("CARGO_MANIFEST_DIR"), "/../proptest-regressions/mvcc.txt")))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn etcd_state_machine_matches_model(steps in prop::collection::vec(step(), 1..60)) {
        let mut cfg = EtcdConfig::new(100, 10);
        cfg.observe_events = true;
        // Tiny limits, so catch-up spans many steps, races compaction, and a
        // stream that is not drained falls back to catching up.
        cfg.watch_limits.catchup_revisions_per_step = 2;
        cfg.watch_limits.max_outstanding_per_stream = 1;
        let mut real = EtcdState::new(cfg);
        let mut model = EtcdModel::new(2);
        let mut now = 0u64;
        let mut index = 0u64;
        // Watches: (id, request, revision at creation) and what each received.
        let mut watches: Vec<(i64, WatchCreate, i64)> = vec![];
        let mut got: BTreeMap<i64, Vec<WatchResponse>> = BTreeMap::new();
        let mut empty_refusals = 0;
        // Every revision that has been the compaction point: an event there
        // may have been delivered without its (by then compacted) prev_kv.
        let mut compaction_points = std::collections::BTreeSet::new();
        let drain = |real: &mut EtcdState, model: &EtcdModel, got: &mut BTreeMap<i64, Vec<WatchResponse>>| -> Result<(), TestCaseError> {
            let mut delivered = 0;
            for n in real.take_notifications() {
                match n {
                    Notification::Committed { revision, events, .. } => {
                        prop_assert_eq!(Some(&events), model.events().get(&revision), "events of revision {}", revision);
                    }
                    Notification::Watch(r) => {
                        delivered += 1;
                        got.entry(r.watch_id).or_default().push(r);
                    }
                }
            }
            // Acknowledge only between steps: within one, the stream fills up.
            real.local(&Request::WatchAck { stream: 1, n: delivered });
            Ok(())
        };
        for (i, st) in steps.iter().enumerate() {
            let reqs: Vec<Request> = match st {
                Step::Req(r) => vec![r.clone()],
                Step::Tick(n) => {
                    now += n;
                    real.tick(now, true)
                }
                Step::Watch { start, key, range_end, prev_kv, no_put, no_delete } => {
                    let create = WatchCreate {
                        key: key.clone(), range_end: range_end.clone(), start_revision: *start,
                        prev_kv: *prev_kv, no_put: *no_put, no_delete: *no_delete, ..WatchCreate::default()
                    };
                    real.local(&Request::WatchCreate { stream: 1, create: create.clone() });
                    let empty = !range_end.is_empty() && range_end.as_ref() != [0] && key >= range_end;
                    if empty {
                        empty_refusals += 1;
                    } else {
                        watches.push((watches.len() as i64, create, model.revision()));
                    }
                    vec![]
                }
            };
            for req in reqs {
                if validate(&req, &ApiLimits::default()).is_err() {
                    continue;
                }
                index += 1;
                let got_resp = real.apply(LogIndex(index), &req);
                let want = model.apply(&req);
                prop_assert_eq!(&got_resp, &want, "step #{} {:?}", i, req);
                compaction_points.insert(model.compacted());
            }
            drain(&mut real, &model, &mut got)?;
        }
        // Let every watcher catch up.
        for _ in 0..200 {
            drain(&mut real, &model, &mut got)?;
        }
        let refused = got.get(&-1).map_or(0, |v| v.len());
        prop_assert_eq!(refused, empty_refusals, "empty-range watches are refused");
        for (id, w, created_at) in &watches {
            let rs = got.get(id).cloned().unwrap_or_default();
            prop_assert!(rs.first().is_some_and(|r| r.created && !r.canceled), "watch {} not created: {:?}", id, rs);
            let start = if w.start_revision <= 0 { created_at + 1 } else { w.start_revision };
            let want: Vec<(i64, Vec<Event>)> = model.events().range(start..).filter_map(|(rev, evs)| {
                let mine: Vec<Event> = evs.iter()
                    .filter(|e| KeyRange::new(&w.key, &w.range_end).contains(&e.kv.key))
                    .filter(|e| !(w.no_put && e.kind == EventType::Put || w.no_delete && e.kind == EventType::Delete))
                    .map(|e| { let mut e = e.clone(); if !w.prev_kv { e.prev_kv = None; } e })
                    .collect();
                (!mine.is_empty()).then_some((*rev, mine))
            }).collect();
            // Each response holds one revision's events; its header carries
            // that revision or (catching up, as etcd) a later current one.
            for r in rs[1..].iter().filter(|r| !r.events.is_empty()) {
                let rev = r.events[0].kv.mod_revision;
                prop_assert!(r.events.iter().all(|e| e.kv.mod_revision == rev), "one revision per response: {:?}", r);
                prop_assert!(r.revision >= rev, "header revision {} below its events' {}", r.revision, rev);
            }
            let delivered: Vec<(i64, Vec<Event>)> = rs[1..].iter().filter(|r| !r.events.is_empty()).map(|r| (r.events[0].kv.mod_revision, r.events.clone())).collect();
            let canceled = rs.iter().find(|r| r.canceled);
            match canceled {
                Some(c) => {
                    // Compacted before it caught up: what it got is an exact prefix.
                    prop_assert!(c.compact_revision > 0 && c.compact_revision > start, "{:?}", c);
                    prop_assert!(want.starts_with(&delivered), "watch {}: got {:?}\nwant a prefix of {:?}", id, delivered, want);
                }
                None => {
                    // Events at a compaction point (then or now) may lack
                    // prev_kv; compare without it there.
                    let strip = |v: &[(i64, Vec<Event>)]| -> Vec<(i64, Vec<Event>)> { v.iter().map(|(r, evs)| (*r, evs.iter().map(|e| {
                        let mut e = e.clone(); if compaction_points.contains(r) { e.prev_kv = None; } e }).collect())).collect() };
                    prop_assert_eq!(strip(&delivered), strip(&want), "watch {} from {}", id, start);
                }
            }
        }
        for rev in model.compacted().max(1)..=model.revision() {
            let mut want = model.events().get(&rev).cloned().unwrap_or_default();
            let mut got = real.mvcc().events_at(rev);
            if rev == model.compacted() {
                // At the compaction point the previous values may be gone.
                for e in want.iter_mut().chain(got.iter_mut()) {
                    e.prev_kv = None;
                }
            }
            prop_assert_eq!(got, want, "history at revision {}", rev);
        }
        // Historical reads of every key at every readable revision.
        for rev in model.compacted().max(1)..=model.revision() {
            let r = RangeRequest { key: Bytes::from_static(b"\0"), range_end: Bytes::from_static(b"\0"), revision: rev, ..RangeRequest::default() };
            prop_assert_eq!(real.read(&Request::Range(r.clone())), model.apply(&Request::Range(r)));
        }
        // The snapshot round-trips to an identical machine.
        let mut copy = EtcdState::new(EtcdConfig::new(100, 10));
        copy.restore(&real.snapshot()).unwrap();
        prop_assert_eq!(copy.mvcc(), real.mvcc());
        prop_assert!(copy.lessor().replicated_eq(real.lessor()));
        prop_assert_eq!(copy.mvcc().hash_kv(0).unwrap(), real.mvcc().hash_kv(0).unwrap());
    }
}

/// A machine that applied the valid ones of `reqs`, and its last index.
fn applied(reqs: &[Request]) -> (EtcdState, u64) {
    let mut s = EtcdState::new(EtcdConfig::new(100, 10));
    let mut index = 0u64;
    for req in reqs
        .iter()
        .filter(|r| validate(r, &ApiLimits::default()).is_ok())
    {
        index += 1;
        s.apply(LogIndex(index), req);
    }
    (s, index)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                concat!(env!("CARGO_MANIFEST_DIR"), "/../proptest-regressions/mvcc.txt")))),
        ..ProptestConfig::default()
    })]

    /// A snapshot encoded step by step while requests (compactions, leases,
    /// txns) keep being applied is the snapshot of the state at its start,
    /// and the machine answers exactly as one that took no snapshot.
    #[test]
    fn a_snapshot_in_steps_is_the_state_at_its_start(
        before in prop::collection::vec(request(), 0..30),
        during in prop::collection::vec((request(), 0usize..40), 0..40),
    ) {
        let ok = |r: &Request| validate(r, &ApiLimits::default()).is_ok();
        let (mut real, mut index) = applied(&before);
        let want = real.snapshot();
        let mut plain = real.clone();
        prop_assert!(real.begin_snapshot().is_none());
        let mut got = None;
        for (req, budget) in during.iter().filter(|(r, _)| ok(r)) {
            index += 1;
            let a = real.apply(LogIndex(index), req);
            let b = plain.apply(LogIndex(index), req);
            prop_assert_eq!(a, b, "{:?}", req);
            if got.is_none() {
                got = real.snapshot_step(*budget);
            }
        }
        while got.is_none() {
            got = real.snapshot_step(1);
        }
        prop_assert_eq!(got, Some(want));
        prop_assert_eq!(real.snapshot(), plain.snapshot());
    }

    /// A client's snapshot (Maintenance.Snapshot) in steps, with a member's
    /// own snapshot starting in the middle of it: each is the state at its
    /// own start, and compactions wait for both.
    #[test]
    fn a_client_snapshot_beside_a_member_snapshot(
        before in prop::collection::vec(request(), 0..30),
        during in prop::collection::vec((request(), 1usize..8, 1usize..200), 0..60),
        member_at in 0usize..10,
    ) {
        let ok = |r: &Request| validate(r, &ApiLimits::default()).is_ok();
        let (mut real, mut index) = applied(&before);
        let want_client = (real.snapshot(), real.mvcc().current_revision());
        let mut plain = real.clone();
        prop_assert!(real.begin_client_snapshot());
        prop_assert!(!real.begin_client_snapshot(), "one at a time");
        let (mut client, mut member, mut want_member) = (None, None, None);
        // The client's snapshot goes slowly (a few bytes every other
        // request), the member's faster: it often ends first, and a
        // compaction after that must still wait for the client's.
        for (i, (req, client_budget, member_budget)) in
            during.iter().filter(|(r, _, _)| ok(r)).enumerate()
        {
            if i == member_at {
                want_member = Some(plain.snapshot());
                member = real.begin_snapshot();
            }
            index += 1;
            let a = real.apply(LogIndex(index), req);
            let b = plain.apply(LogIndex(index), req);
            prop_assert_eq!(a, b, "{:?}", req);
            if client.is_none() && i % 2 == 1 {
                client = real.client_snapshot_step(*client_budget);
            }
            if want_member.is_some() && member.is_none() {
                member = real.snapshot_step(*member_budget);
            }
        }
        while client.is_none() {
            client = real.client_snapshot_step(1);
        }
        prop_assert_eq!(client, Some(want_client));
        prop_assert!(!real.client_snapshot_running());
        if let Some(want) = want_member {
            while member.is_none() {
                member = real.snapshot_step(1);
            }
            prop_assert_eq!(member, Some(want));
        }
        prop_assert_eq!(real.snapshot(), plain.snapshot());
        prop_assert_eq!(real.mvcc(), plain.mvcc());
    }
}

#[test]
fn decoders_never_panic_on_garbage() {
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..200), |data| {
            let _ = etcd_core::request::decode_request(&data);
            let mut s = EtcdState::new(EtcdConfig::new(100, 10));
            let _ = s.restore(&data);
            Ok(())
        })
        .unwrap();
}
