//! A watching client: one logical watch over the `k` keys, kept alive across
//! member crashes and cut links by resuming on another member from the
//! revision after the last one delivered. Everything received is recorded
//! for `history::check_watch`.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::mpsc;

use etcd_core::ReqId;
use etcd_core::node::Input;
use etcd_core::request::Request;
use etcd_core::watch::WatchCreate;

use crate::client::pick_server;
use crate::history::WatchRecord;
use crate::options::Draw;
use crate::world::{ClientReq, Sim, WatchMsg};

/// How long a create (or a progress request) may go unanswered before the
/// watcher assumes its request or the member is lost.
const SILENCE: Duration = Duration::from_secs(4);
const POLL: Duration = Duration::from_millis(200);

pub async fn watcher_main(sim: Sim, client: u64) {
    let (tx, mut rx) = mpsc::unbounded();
    let (create, created_at) = {
        let mut w = sim.lock();
        w.watchers.insert(client, tx);
        let from_past = w.rng.chance(600);
        let create = WatchCreate {
            key: Bytes::from_static(b"k"),
            range_end: Bytes::from_static(b"l"),
            // Start a little in the past, or from now on.
            start_revision: if from_past {
                w.rng.range(1, 40) as i64
            } else {
                0
            },
            prev_kv: w.rng.chance(500),
            progress_notify: w.rng.chance(300),
            ..WatchCreate::default()
        };
        (create, 0i64)
    };
    let mut record = WatchRecord {
        client,
        create: create.clone(),
        created_at,
        responses: Vec::new(),
        complete_through: None,
    };
    let mut next_rev = create.start_revision; // 0 until the first creation fixes it
    let mut stream_seq = 0u64;
    let mut canceled = false;
    'outer: loop {
        if canceled || sim.lock().failure.is_some() {
            break;
        }
        // Open a stream on some member.
        stream_seq += 1;
        let stream = client << 32 | stream_seq;
        let server = pick_server(&sim);
        {
            let mut w = sim.lock();
            w.streams.insert(stream, (client, server));
            let mut c = create.clone();
            c.start_revision = next_rev;
            w.send_request(
                &sim,
                client,
                server,
                ReqId(0),
                ClientReq::Local(Request::WatchCreate { stream, create: c }),
            );
        }
        let mut stopping_at: Option<i64> = None;
        let mut created = false;
        let mut silent = Duration::ZERO;
        let mut behind = 0u32;
        loop {
            // When the run is quiet, ask once for progress: its answer says
            // everything up to the current revision has been delivered.
            let (stop, rev) = {
                let w = sim.lock();
                (w.quiet, w.final_revision)
            };
            if stop && created && stopping_at.is_none() {
                if behind > 0 {
                    // The member is still catching up: give it a moment (no
                    // busy loop at one instant of virtual time), and after a
                    // while try another member.
                    if behind >= 20 {
                        sim.lock().break_stream(stream);
                        continue 'outer;
                    }
                    madsim::time::sleep(POLL).await;
                }
                stopping_at = Some(rev);
                sim.lock().admin(
                    server,
                    Input::ReadLocal(ReqId(0), Request::WatchProgress { stream }),
                );
            }
            let msg = match madsim::time::timeout(POLL, rx.next()).await {
                Ok(Some(m)) => m,
                Ok(None) => break 'outer,
                Err(_) => {
                    silent += POLL;
                    // A create (or a progress answer) that never came: the
                    // request was lost or the member is gone; reconnect.
                    if (!created || stopping_at.is_some()) && silent >= SILENCE {
                        sim.lock().break_stream(stream);
                        continue 'outer;
                    }
                    continue;
                }
            };
            silent = Duration::ZERO;
            match msg {
                WatchMsg::Broken => {
                    sim.lock().streams.remove(&stream);
                    continue 'outer;
                }
                WatchMsg::Resp(r) => {
                    if r.stream != stream {
                        continue;
                    }
                    sim.lock().admin(
                        server,
                        Input::ReadLocal(ReqId(0), Request::WatchAck { stream, n: 1 }),
                    );
                    if r.created {
                        created = true;
                        if record.created_at == 0 {
                            record.created_at = r.revision;
                        }
                        if next_rev == 0 {
                            next_rev = r.revision + 1;
                        }
                    }
                    if let Some(last) = r.events.last() {
                        next_rev = last.kv.mod_revision + 1;
                    }
                    let progress = r.watch_id == -1;
                    canceled = r.canceled && r.compact_revision > 0;
                    let mut done = canceled;
                    if progress && let Some(p) = stopping_at {
                        // A progress notification vouches for its own revision
                        // only; a member still behind must be asked again.
                        record.complete_through = Some(r.revision);
                        if r.revision >= p {
                            done = true;
                        } else {
                            behind += 1;
                            stopping_at = None;
                        }
                    }
                    record.responses.push(r);
                    if done {
                        sim.lock().break_stream(stream);
                        break 'outer;
                    }
                }
            }
        }
    }
    let mut w = sim.lock();
    w.watch_records.push(record);
    w.watchers.remove(&client);
}
