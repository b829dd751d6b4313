//! A simulated member: the real core driven by madsim time and the simulated
//! network and disk. It only moves events in and effects out.

use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;

use etcd_core::NodeId;
use etcd_core::etcd::EtcdState;
use etcd_core::node::{Input, Node};

use crate::world::{ClientReq, DiskError, Event, NodeState, Sim};

/// Bound on `ready()` rounds after one batch of events; the node reports
/// through `has_ready` whether more remains, and it is picked up next time.
const MAX_READY_ROUNDS: usize = 8;

/// How long a member waits before retrying a write that found the disk full.
const DISK_RETRY: Duration = Duration::from_millis(20);

pub async fn server_main(sim: Sim, id: NodeId) {
    let (tx, mut rx) = mpsc::unbounded::<Event>();
    let (disk_kick, mut disk_rx) = mpsc::unbounded::<()>();
    let (mut node, tick, fsync) = {
        let mut w = sim.lock();
        let cfg_inc = w.nodes[&id].incarnation + 1;
        let cfg = w.node_config(id, cfg_inc);
        let sm = EtcdState::new(w.etcd_config());
        let voters = w.founding_voters.clone();
        let tick_ms = w.opts.tick_ms;
        let fsync = w.opts.fsync_us;
        let slot = w.nodes.get_mut(&id).expect("slot exists");
        slot.incarnation = cfg_inc;
        slot.inbox = Some(tx.clone());
        slot.state = NodeState::Up;
        let tick = Duration::from_micros(tick_ms * slot.tick_permille);
        let node = if slot.founding && slot.disk.is_empty() && !slot.amnesiac {
            Node::bootstrap(cfg, sm, &voters)
        } else {
            let recovered = match slot.disk.recover() {
                Ok(r) => Some(r),
                Err(DiskError::Corrupt { offset, reason }) if slot.disk.flipped => {
                    // Bit rot found, as it must be: the operator wipes the
                    // disk and the member rejoins without its log.
                    let _ = (offset, reason);
                    slot.held_before_loss = Some(slot.disk.wipe());
                    slot.amnesiac = true;
                    w.stats.repairs += 1;
                    None
                }
                Err(DiskError::Corrupt { offset, reason }) => {
                    w.fail(format!(
                        "{id:?}: WAL corrupt at {offset} without any injected damage: {reason}"
                    ));
                    return;
                }
            };
            let slot = w.nodes.get_mut(&id).expect("slot exists");
            let mut rec = recovered.unwrap_or_default();
            // Until it has caught up, a member that lost its log stays guarded,
            // across restarts too.
            rec.lost_state = slot.amnesiac;
            match Node::restart(cfg, sm, rec) {
                Ok(n) => n,
                Err(e) => {
                    w.fail(format!("{id:?} cannot restart from its disk: {e}"));
                    return;
                }
            }
        };
        (node, tick, fsync)
    };

    // Ticks, at this member's own (drifting) rate.
    let tick_tx = tx.clone();
    madsim::task::spawn(async move {
        loop {
            madsim::time::sleep(tick).await;
            if tick_tx.unbounded_send(Event::Tick).is_err() {
                break;
            }
        }
    });

    // The disk: group commit. Each sync writes what was queued as one batch
    // and returns after the fsync latency; only then may the next batch go.
    let disk_sim = sim.clone();
    let disk_tx = tx.clone();
    madsim::task::spawn(async move {
        // Whether the member was told its writes fail (and must hear they work).
        let mut failing = false;
        while disk_rx.next().await.is_some() {
            while disk_rx.try_recv().is_ok() {}
            let (started, latency, stalled_for, full) = {
                let mut w = disk_sim.lock();
                let (lo, hi) = fsync;
                use crate::options::Draw;
                let latency = Duration::from_micros(w.rng.range(lo, hi));
                let now = w.now_ns();
                let slot = w.nodes.get_mut(&id).expect("slot exists");
                let stalled = slot.disk_stalled_until_ns.saturating_sub(now);
                if slot.disk_full_until_ns > now && slot.disk.has_queued() {
                    // No space: nothing of the batch is written (segments are
                    // preallocated, so a full disk fails a write whole).
                    w.stats.writes_failed_for_space += 1;
                    (false, latency, stalled, true)
                } else {
                    (slot.disk.start_sync(), latency, stalled, false)
                }
            };
            if full {
                if !failing {
                    failing = true;
                    let failed = Input::StorageFailed { no_space: true };
                    if disk_tx.unbounded_send(Event::Admin(failed)).is_err() {
                        break;
                    }
                }
                // Try again a little later.
                madsim::time::sleep(DISK_RETRY).await;
                let w = disk_sim.lock();
                if let Some(k) = w.nodes.get(&id).and_then(|s| s.disk_kick.as_ref()) {
                    let _ = k.unbounded_send(());
                }
                continue;
            }
            if !started {
                continue;
            }
            madsim::time::sleep(latency + Duration::from_nanos(stalled_for)).await;
            let (synced, more) = {
                let mut w = disk_sim.lock();
                let slot = w.nodes.get_mut(&id).expect("slot exists");
                (slot.disk.finish_sync(), slot.disk.has_queued())
            };
            if failing {
                failing = false;
                if disk_tx
                    .unbounded_send(Event::Admin(Input::StorageRecovered))
                    .is_err()
                {
                    break;
                }
            }
            if let Some(n) = synced
                && disk_tx.unbounded_send(Event::Persisted(n)).is_err()
            {
                break;
            }
            // Writes that arrived during the sync make the next batch.
            if more {
                let w = disk_sim.lock();
                if let Some(k) = w.nodes.get(&id).and_then(|s| s.disk_kick.as_ref()) {
                    // The member is alive (we are running), so it listens.
                    let _ = k.unbounded_send(());
                }
            }
        }
    });
    sim.lock()
        .nodes
        .get_mut(&id)
        .expect("slot exists")
        .disk_kick = Some(disk_kick);

    while let Some(ev) = rx.next().await {
        let mut evs = vec![ev];
        while let Ok(ev) = rx.try_recv() {
            evs.push(ev);
        }
        for ev in evs {
            let input = match ev {
                Event::Tick => Input::Tick,
                Event::Peer(m) => Input::Peer(m),
                Event::Client {
                    id,
                    req: ClientReq::Write(r),
                } => Input::Propose(id, r),
                Event::Client {
                    id,
                    req: ClientReq::Read(r),
                } => Input::Read(id, r),
                Event::Client {
                    id,
                    req: ClientReq::Local(r),
                } => Input::ReadLocal(id, r),
                Event::Persisted(n) => Input::Persisted(n),
                Event::Admin(input) => input,
            };
            node.step(input);
        }
        for _ in 0..MAX_READY_ROUNDS {
            if !node.has_ready() {
                break;
            }
            let rd = node.ready();
            let mut w = sim.lock();
            w.after_ready(&sim, id, &node, rd);
        }
        if let Some(why) = node.fatal() {
            sim.lock().fail(format!("{id:?} stopped: {why}"));
            return;
        }
    }
}
