//! The one thread that owns the member's core (`Node<EtcdState>`) and its
//! WAL. Everything else (gRPC handlers, watch streams, the peer transport)
//! talks to it through a channel and gets answers on one-shot channels; there
//! is no lock around the core. The loop only moves bytes and time: ticks in,
//! `ready()` effects out, in the order the core documents (send, persist,
//! reply).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use etcd_core::etcd::{EtcdState, Notification};
use etcd_core::node::{Input, Node, NodeError, Outcome, Persist};
use etcd_core::raft::{Message, Role};
use etcd_core::request::{Request, Response};
use etcd_core::storage::Storage;
use etcd_core::types::{NodeId, ReqId};
use etcd_core::watch::{StreamId, WatchResponse};

use crate::log::{self, V};
use crate::wal::Wal;

/// How a request is served.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Through the log.
    Write,
    /// After a confirmed read index (ReadIndex).
    Linearizable,
    /// From this member's state, at once.
    Serializable,
}

/// The answer to a request, with the Raft term at the time (for headers).
#[derive(Debug)]
pub struct Reply {
    pub outcome: Outcome<Response>,
    pub term: u64,
}

/// A point-in-time view of the member for Status and headers.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub member_id: u64,
    pub leader: u64,
    pub term: u64,
    pub raft_index: u64,
    pub applied_index: u64,
    pub revision: i64,
    pub db_size: i64,
    pub is_learner: bool,
    pub errors: Vec<String>,
}

pub enum CoreMsg {
    Request {
        req: Request,
        mode: Mode,
        reply: oneshot::Sender<Reply>,
    },
    /// A request nobody waits for (watch acks and closes).
    Local(Request),
    /// A watch stream opens: its responses go to `tx`.
    WatchOpen {
        stream: StreamId,
        tx: mpsc::UnboundedSender<WatchResponse>,
    },
    Peer(Message),
    Status(oneshot::Sender<Status>),
    /// The whole state machine as its snapshot encoding, with the store
    /// revision it is at (Maintenance.Snapshot).
    Snapshot(SnapshotReply),
    /// Hand leadership to `target`; answered once it leads, or with why not.
    MoveLeader {
        target: u64,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Finish what is in flight, sync, and stop. Answered when done.
    Shutdown(oneshot::Sender<()>),
    /// Requests gathered over one turn of the I/O runtime (`CoreHandle::call`).
    Batch(Vec<CoreMsg>),
}

/// The answer to a leadership transfer.
type MoveReply = oneshot::Sender<Result<(), String>>;

/// Where the core's outgoing peer messages go.
pub type PeerSink = Box<dyn FnMut(Vec<Message>) + Send>;

/// What the loop needs besides the node.
pub struct CoreParts {
    pub node: Node<EtcdState>,
    pub wal: Wal,
    pub tick: Duration,
    pub peers: PeerSink,
    /// This member's name and client URLs, published through the log once
    /// there is a leader (etcd's "published local member to cluster").
    pub publish: Option<Request>,
    /// The current Raft term, published for response headers.
    pub term: Arc<AtomicU64>,
    /// The state's size (bytes), published for the quota check.
    pub db_size: Arc<AtomicU64>,
    /// Campaign as soon as this member may (a new cluster of one need not
    /// wait an election timeout to lead).
    pub campaign: bool,
    /// Told once this member's attributes are applied (etcd serves clients
    /// only from then on).
    pub published: Option<oneshot::Sender<()>>,
    /// Where replies go (run [`Outbox::run`] on the I/O runtime).
    pub outbox: Arc<Outbox>,
}

/// After a failed sync, how long before the next try.
const STORAGE_RETRY: Duration = Duration::from_millis(20);
/// Ready rounds per loop turn: more waits for the next turn, so new inputs
/// (and the tick) get in between the steps of a long snapshot encode.
const MAX_READY_ROUNDS: usize = 8;
/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// A leadership transfer not done in this many ticks is reported as failed.
const MOVE_LEADER_TICKS: u64 = 50;

struct Core {
    node: Node<EtcdState>,
    wal: Wal,
    tick: Duration,
    peers: PeerSink,
    next_req: u64,
    pending: HashMap<ReqId, oneshot::Sender<Reply>>,
    streams: HashMap<StreamId, mpsc::UnboundedSender<WatchResponse>>,
    /// Persists not yet written (a failing disk keeps them here).
    unwritten: std::collections::VecDeque<Persist>,
    /// Highest persist number written and not yet synced.
    unsynced: Option<u64>,
    storage_failing: bool,
    retry_at: Option<Instant>,
    publish: Option<Request>,
    publish_req: Option<ReqId>,
    publish_at: Instant,
    /// Leadership transfers asked for: target, deadline tick, answer.
    moves: Vec<(u64, u64, MoveReply)>,
    ticks: u64,
    last_leader: u64,
    last_snapshot: u64,
    errors: Vec<String>,
    term_out: Arc<AtomicU64>,
    db_size_out: Arc<AtomicU64>,
    campaign: bool,
    published: Option<oneshot::Sender<()>>,
    /// Clients waiting for a snapshot not started yet, and those the one
    /// under way is for (Maintenance.Snapshot).
    snapshot_queued: Vec<SnapshotReply>,
    snapshot_for: Vec<SnapshotReply>,
    /// When to try again to start a client snapshot that could not start.
    snapshot_retry: Option<Instant>,
    /// This turn's replies and watch responses, handed to `outbox` at its end.
    out: Outgoing,
    outbox: Arc<Outbox>,
}

/// The answer to Maintenance.Snapshot: the state's snapshot encoding and the
/// store revision it is of.
type SnapshotReply = oneshot::Sender<(bytes::Bytes, i64)>;

/// Bytes of a client snapshot encoded per loop turn: small enough that
/// requests between steps wait well under a millisecond.
const CLIENT_SNAPSHOT_STEP: usize = 64 * 1024;

/// Runs the loop until shutdown or until the channel closes.
pub fn run(parts: CoreParts, rx: Receiver<CoreMsg>) {
    let mut core = Core {
        node: parts.node,
        wal: parts.wal,
        tick: parts.tick,
        peers: parts.peers,
        next_req: 1,
        pending: HashMap::new(),
        streams: HashMap::new(),
        unwritten: Default::default(),
        unsynced: None,
        storage_failing: false,
        retry_at: None,
        publish: parts.publish,
        publish_req: None,
        publish_at: Instant::now(),
        moves: Vec::new(),
        ticks: 0,
        last_leader: 0,
        last_snapshot: 0,
        errors: Vec::new(),
        term_out: parts.term,
        db_size_out: parts.db_size,
        campaign: parts.campaign,
        published: parts.published,
        snapshot_queued: Vec::new(),
        snapshot_for: Vec::new(),
        snapshot_retry: None,
        out: Outgoing::default(),
        outbox: parts.outbox,
    };
    core.last_snapshot = core.node.last_snapshot_index().0;
    let mut next_tick = Instant::now() + core.tick;
    let mut shutdown: Option<(oneshot::Sender<()>, Instant)> = None;
    loop {
        let now = Instant::now();
        let mut wake = next_tick;
        if let Some(r) = core.retry_at {
            wake = wake.min(r);
        }
        if core.node.has_ready() {
            wake = now;
        }
        if let Some(at) = core.client_snapshot_due() {
            wake = wake.min(at);
        }
        match rx.recv_timeout(wake.saturating_duration_since(now)) {
            Ok(m) => {
                if let Some(s) = core.handle(m) {
                    shutdown = Some((s, Instant::now() + SHUTDOWN_GRACE));
                }
                // Take everything queued now: one ready serves them all.
                while let Ok(m) = rx.try_recv() {
                    if let Some(s) = core.handle(m) {
                        shutdown = Some((s, Instant::now() + SHUTDOWN_GRACE));
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                core.finish();
                return;
            }
        }
        let now = Instant::now();
        if now >= next_tick {
            core.on_tick();
            next_tick += core.tick;
            if next_tick < now {
                // Behind (a stall): do not burst ticks to catch up.
                next_tick = now + core.tick;
            }
        }
        core.drive();
        core.step_client_snapshot();
        if core.campaign && core.node.raft().promotable() {
            // The bootstrap membership is applied: lead now.
            core.campaign = false;
            core.node.campaign();
            core.drive();
        }
        // Everything this turn produced leaves together.
        core.outbox.hand_over(&mut core.out);
        if let Some(why) = core.node.fatal() {
            log::error(
                "etcdserver/server.go",
                "member stopped",
                &[("error", V::S(why))],
            );
            core.finish();
            std::process::exit(1);
        }
        if let Some((_, deadline)) = &shutdown
            && (core.pending.is_empty() || Instant::now() >= *deadline)
        {
            core.finish();
            if let Some((s, _)) = shutdown.take() {
                let _ = s.send(());
            }
            return;
        }
    }
}

impl Core {
    /// When the loop should next work on a client snapshot, if one is
    /// wanted: at once while one is under way or can start.
    fn client_snapshot_due(&self) -> Option<Instant> {
        if !self.snapshot_for.is_empty() {
            return Some(Instant::now());
        }
        if self.snapshot_queued.is_empty() {
            return None;
        }
        Some(self.snapshot_retry.unwrap_or_else(Instant::now))
    }

    /// Encodes a step of the client snapshot under way, starting one for
    /// the clients queued when none is. Clients asking while one runs get
    /// the next one, so a snapshot is never older than its request.
    fn step_client_snapshot(&mut self) {
        let sm = self.node.state_machine_mut();
        if !self.snapshot_for.is_empty() && !sm.client_snapshot_running() {
            // Dropped by a restore from the leader: start again.
            let mut again = std::mem::take(&mut self.snapshot_for);
            again.append(&mut self.snapshot_queued);
            self.snapshot_queued = again;
        }
        if self.snapshot_for.is_empty() {
            self.snapshot_queued.retain(|r| !r.is_closed());
            if self.snapshot_queued.is_empty() {
                return;
            }
            if self.snapshot_retry.is_some_and(|at| Instant::now() < at) {
                return;
            }
            if !sm.begin_client_snapshot() {
                // A compaction waits for the member's own snapshot to end.
                self.snapshot_retry = Some(Instant::now() + Duration::from_millis(5));
                return;
            }
            self.snapshot_retry = None;
            self.snapshot_for = std::mem::take(&mut self.snapshot_queued);
        }
        if let Some((data, revision)) = sm.client_snapshot_step(CLIENT_SNAPSHOT_STEP) {
            for reply in self.snapshot_for.drain(..) {
                let _ = reply.send((data.clone(), revision));
            }
        }
    }

    fn term(&self) -> u64 {
        self.node.raft().term().0
    }

    fn next_id(&mut self) -> ReqId {
        let id = ReqId(self.next_req);
        self.next_req += 1;
        id
    }

    /// Handles one message; returns the shutdown answer channel if asked to stop.
    fn handle(&mut self, m: CoreMsg) -> Option<oneshot::Sender<()>> {
        match m {
            CoreMsg::Batch(msgs) => {
                let mut shutdown = None;
                for m in msgs {
                    shutdown = shutdown.or(self.handle(m));
                }
                return shutdown;
            }
            CoreMsg::Request { req, mode, reply } => {
                let id = self.next_id();
                self.pending.insert(id, reply);
                let input = match mode {
                    Mode::Write => Input::Propose(id, req),
                    Mode::Linearizable => Input::Read(id, req),
                    Mode::Serializable => Input::ReadLocal(id, req),
                };
                self.node.step(input);
            }
            CoreMsg::Local(req) => {
                let id = self.next_id();
                if let Request::WatchClose { stream } = &req {
                    self.streams.remove(stream);
                }
                self.node.step(Input::ReadLocal(id, req));
            }
            CoreMsg::WatchOpen { stream, tx } => {
                self.streams.insert(stream, tx);
            }
            CoreMsg::Peer(msg) => self.node.step(Input::Peer(msg)),
            CoreMsg::Status(reply) => {
                let _ = reply.send(self.status());
            }
            CoreMsg::Snapshot(reply) => self.snapshot_queued.push(reply),
            CoreMsg::MoveLeader { target, reply } => {
                let raft = self.node.raft();
                if raft.role() != Role::Leader {
                    let _ = reply.send(Err("etcdserver: not leader".into()));
                } else if raft.id().0 == target {
                    let _ = reply.send(Ok(()));
                } else if !raft.conf().voters.contains(&NodeId(target)) {
                    let _ = reply.send(Err("etcdserver: bad leader transferee".into()));
                } else {
                    self.node.step(Input::TransferLeader(NodeId(target)));
                    self.moves
                        .push((target, self.ticks + MOVE_LEADER_TICKS, reply));
                }
            }
            CoreMsg::Shutdown(s) => return Some(s),
        }
        None
    }

    fn status(&self) -> Status {
        let raft = self.node.raft();
        let sm = self.node.state_machine();
        Status {
            member_id: raft.id().0,
            leader: raft.leader().0,
            term: raft.term().0,
            // etcd reports the committed index here.
            raft_index: raft.log().committed().0,
            applied_index: raft.log().applied().0,
            revision: sm.mvcc().current_revision(),
            db_size: sm.mvcc().encoded_size_hint() as i64,
            is_learner: raft.conf().learners.contains(&raft.id()),
            // As etcd: each active alarm, then what the disk reported.
            errors: sm
                .alarms()
                .map(|(m, k)| format!("memberID:{m} alarm:{} ", k.name()))
                .chain(self.errors.iter().cloned())
                // etcd adds this whenever the member knows no leader.
                .chain((raft.leader().0 == 0).then(|| NodeError::NoLeader.to_string()))
                .collect(),
        }
    }

    fn on_tick(&mut self) {
        self.ticks += 1;
        self.node.step(Input::Tick);
        // Leadership transfers in progress.
        let leader = self.node.raft().leader().0;
        let ticks = self.ticks;
        let mut i = 0;
        while i < self.moves.len() {
            let (target, deadline, _) = &self.moves[i];
            if leader == *target || ticks >= *deadline {
                let done = leader == *target;
                let (_, _, reply) = self.moves.swap_remove(i);
                let _ = reply.send(if done {
                    Ok(())
                } else {
                    Err("etcdserver: request timed out, leader transfer took too long".into())
                });
            } else {
                i += 1;
            }
        }
        self.maybe_publish();
    }

    /// Proposes this member's attributes once a leader is known, retrying
    /// until it is applied.
    fn maybe_publish(&mut self) {
        if self.publish_req.is_some() || self.node.raft().leader().0 == 0 {
            return;
        }
        let Some(req) = self.publish.clone() else {
            return;
        };
        if Instant::now() < self.publish_at {
            return;
        }
        let id = self.next_id();
        self.publish_req = Some(id);
        self.node.step(Input::Propose(id, req));
    }

    /// Runs ready rounds and carries out their effects.
    fn drive(&mut self) {
        if let Some(at) = self.retry_at
            && Instant::now() >= at
        {
            self.retry_at = None;
            self.persist();
        }
        for _ in 0..MAX_READY_ROUNDS {
            if !self.node.has_ready() {
                break;
            }
            let rd = self.node.ready();
            if !rd.messages.is_empty() {
                (self.peers)(rd.messages);
            }
            if let Some(p) = rd.persist {
                self.unwritten.push_back(p);
                if self.retry_at.is_none() {
                    self.persist();
                }
            }
            for (id, outcome) in rd.replies {
                self.reply(id, outcome);
            }
            for n in rd.notifications {
                if let Notification::Watch(w) = n {
                    self.deliver_watch(w);
                }
            }
            self.observe();
        }
    }

    fn reply(&mut self, id: ReqId, outcome: Outcome<Response>) {
        if self.publish_req == Some(id) {
            self.publish_req = None;
            match outcome {
                Outcome::Done(Response::MemberPublish { .. }) => {
                    log::info(
                        "etcdserver/server.go",
                        "published local member to cluster through raft",
                        &[("local-member-id", V::X(self.node.id().0))],
                    );
                    self.publish = None;
                    if let Some(tx) = self.published.take() {
                        let _ = tx.send(());
                    }
                }
                other => {
                    log::warn(
                        "etcdserver/server.go",
                        "failed to publish local member to cluster through raft",
                        &[("error", V::S(&format!("{other:?}")))],
                    );
                    self.publish_at = Instant::now() + Duration::from_secs(1);
                }
            }
            return;
        }
        if let Some(tx) = self.pending.remove(&id) {
            let term = self.term();
            self.out.replies.push((tx, Reply { outcome, term }));
        }
    }

    fn deliver_watch(&mut self, w: WatchResponse) {
        let stream = w.stream;
        let gone = match self.streams.get(&stream) {
            Some(tx) if !tx.is_closed() => {
                self.out.watch.push((tx.clone(), w));
                false
            }
            _ => true,
        };
        if gone {
            self.streams.remove(&stream);
            let id = self.next_id();
            self.node
                .step(Input::ReadLocal(id, Request::WatchClose { stream }));
        }
    }

    /// Logs what changed: leadership, snapshots.
    fn observe(&mut self) {
        let raft = self.node.raft();
        self.term_out.store(raft.term().0, Ordering::Relaxed);
        self.db_size_out.store(
            self.node.state_machine().mvcc().encoded_size_hint(),
            Ordering::Relaxed,
        );
        let leader = raft.leader().0;
        if leader != self.last_leader {
            if leader != 0 {
                log::info(
                    "raft/raft.go",
                    "raft.node: elected leader",
                    &[
                        ("local-member-id", V::X(raft.id().0)),
                        ("leader-member-id", V::X(leader)),
                        ("term", V::U(raft.term().0)),
                    ],
                );
            } else {
                log::info(
                    "raft/raft.go",
                    "raft.node: lost leader",
                    &[
                        ("local-member-id", V::X(raft.id().0)),
                        ("lost-leader-member-id", V::X(self.last_leader)),
                        ("term", V::U(raft.term().0)),
                    ],
                );
            }
            self.last_leader = leader;
        }
        let snap = self.node.last_snapshot_index().0;
        if snap != self.last_snapshot {
            self.last_snapshot = snap;
            log::info(
                "etcdserver/server.go",
                "triggering snapshot",
                &[
                    ("local-member-id", V::X(raft.id().0)),
                    ("local-member-applied-index", V::U(raft.log().applied().0)),
                    ("local-member-snapshot-index", V::U(snap)),
                ],
            );
        }
    }

    /// Writes queued persists in order and syncs them; on a disk error
    /// tells the node and retries later. Nothing is reported durable before
    /// it is.
    fn persist(&mut self) {
        let mut need_sync = false;
        let mut written = None;
        while let Some(p) = self.unwritten.front() {
            let started = Instant::now();
            match self.wal.write(p) {
                Ok(()) => {
                    need_sync |= p.must_sync;
                    written = Some(p.number);
                    self.unwritten.pop_front();
                    slow("write", started);
                }
                Err(e) => {
                    self.storage_failed(e.is_no_space(), &e.to_string());
                    break;
                }
            }
        }
        if let Some(n) = written {
            self.unsynced = Some(n);
        }
        let Some(n) = self.unsynced else {
            return;
        };
        if need_sync || self.storage_failing {
            let started = Instant::now();
            if let Err(e) = self.wal.sync() {
                self.storage_failed(e.is_no_space(), &e.to_string());
                return;
            }
            slow("fdatasync", started);
        }
        self.unsynced = None;
        if self.storage_failing && self.unwritten.is_empty() {
            self.storage_failing = false;
            log::info("etcdserver/server.go", "disk writes work again", &[]);
            self.node.step(Input::StorageRecovered);
        }
        self.node.step(Input::Persisted(n));
        if let Some(e) = self.wal.take_snapshot_error() {
            log::warn(
                "etcdserver/server.go",
                "failed to write snapshot",
                &[("error", V::S(&e.to_string()))],
            );
        }
    }

    fn storage_failed(&mut self, no_space: bool, why: &str) {
        if !self.storage_failing {
            self.storage_failing = true;
            log::error(
                "etcdserver/server.go",
                "failed to write to the WAL; refusing writes until it works",
                &[("error", V::S(why)), ("no-space", V::B(no_space))],
            );
            self.node.step(Input::StorageFailed { no_space });
            let e = if no_space {
                NodeError::NoSpace
            } else {
                NodeError::StorageFailed
            };
            self.errors = vec![e.to_string()];
        }
        self.retry_at = Some(Instant::now() + STORAGE_RETRY);
    }

    /// Stops: answers what is left, makes everything durable.
    fn finish(&mut self) {
        // The runtime may no longer run the outbox: answer directly.
        for (tx, reply) in self.out.replies.drain(..) {
            let _ = tx.send(reply);
        }
        for (tx, w) in self.out.watch.drain(..) {
            let _ = tx.send(w);
        }
        for (_, tx) in self.pending.drain() {
            let _ = tx.send(Reply {
                outcome: Outcome::Failed(NodeError::Timeout),
                term: 0,
            });
        }
        if let Err(e) = self.wal.flush_snapshots() {
            log::warn(
                "etcdserver/server.go",
                "failed to flush the WAL at shutdown",
                &[("error", V::S(&format!("{e}")))],
            );
        }
    }
}

/// etcd warns when a disk operation takes over a second.
fn slow(op: &str, started: Instant) {
    let took = started.elapsed();
    if took > Duration::from_secs(1) {
        log::warn(
            "wal/wal.go",
            "slow fdatasync",
            &[
                ("op", V::S(op)),
                ("took", V::S(&format!("{took:?}"))),
                ("expected-duration", V::S("1s")),
            ],
        );
    }
}

/// Replies on their way from the core to the I/O runtime. The core collects
/// a loop turn's replies and hands them over at once, waking one task on
/// the runtime ([`Outbox::run`]) which sends them all. A one-shot send from
/// the runtime's own thread wakes its receiver without a syscall; from the
/// core thread each one costs an eventfd write to wake the runtime.
#[derive(Default)]
pub struct Outbox {
    replies: std::sync::Mutex<Outgoing>,
    notify: tokio::sync::Notify,
}

/// What the core hands over at the end of a turn.
#[derive(Default)]
struct Outgoing {
    replies: Vec<(oneshot::Sender<Reply>, Reply)>,
    watch: Vec<(mpsc::UnboundedSender<WatchResponse>, WatchResponse)>,
}

impl Outgoing {
    fn is_empty(&self) -> bool {
        self.replies.is_empty() && self.watch.is_empty()
    }
}

impl Outbox {
    /// Delivers handed-over replies and watch responses, for as long as the
    /// runtime runs.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.notify.notified().await;
            let batch =
                std::mem::take(&mut *self.replies.lock().unwrap_or_else(|e| e.into_inner()));
            for (tx, reply) in batch.replies {
                let _ = tx.send(reply);
            }
            // A stream closed meanwhile drops its response; the core sees
            // the closed stream on its next delivery.
            for (tx, w) in batch.watch {
                let _ = tx.send(w);
            }
        }
    }

    fn hand_over(&self, batch: &mut Outgoing) {
        if batch.is_empty() {
            return;
        }
        let mut b = self.replies.lock().unwrap_or_else(|e| e.into_inner());
        b.replies.append(&mut batch.replies);
        b.watch.append(&mut batch.watch);
        drop(b);
        self.notify.notify_one();
    }
}

/// A handle to the core thread.
#[derive(Clone)]
pub struct CoreHandle {
    tx: Sender<CoreMsg>,
    soon: Arc<Gather>,
}

/// Requests waiting to go to the core together. Handlers that run in one
/// turn of the I/O runtime add to it; a task spawned behind them sends them
/// as one message. The core thread then wakes once per turn, not once per
/// request: under load its sleeps and wake-ups cost more CPU than its work.
#[derive(Default)]
struct Gather {
    msgs: std::sync::Mutex<Vec<CoreMsg>>,
    flush_scheduled: std::sync::atomic::AtomicBool,
}

impl CoreHandle {
    pub fn new(tx: Sender<CoreMsg>) -> CoreHandle {
        CoreHandle {
            tx,
            soon: Arc::default(),
        }
    }

    pub fn send(&self, m: CoreMsg) -> bool {
        self.tx.send(m).is_ok()
    }

    /// Sends `m` with the others sent in this turn of the runtime (at once
    /// outside a runtime). A lost message (the core stopped) drops its reply
    /// sender, which its caller sees.
    pub fn send_soon(&self, m: CoreMsg) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.send(m);
            return;
        };
        self.soon
            .msgs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(m);
        if !self.soon.flush_scheduled.swap(true, Ordering::AcqRel) {
            let this = self.clone();
            rt.spawn(async move { this.flush() });
        }
    }

    fn flush(&self) {
        self.soon.flush_scheduled.store(false, Ordering::Release);
        let msgs = std::mem::take(&mut *self.soon.msgs.lock().unwrap_or_else(|e| e.into_inner()));
        match msgs.len() {
            0 => {}
            1 => {
                self.send(msgs.into_iter().next().expect("one message"));
            }
            _ => {
                self.send(CoreMsg::Batch(msgs));
            }
        }
    }

    /// Sends a request and waits for its answer.
    pub async fn call(&self, req: Request, mode: Mode) -> Reply {
        let (tx, rx) = oneshot::channel();
        self.send_soon(CoreMsg::Request {
            req,
            mode,
            reply: tx,
        });
        rx.await.unwrap_or_else(|_| stopped())
    }

    pub async fn status(&self) -> Option<Status> {
        let (tx, rx) = oneshot::channel();
        if !self.send(CoreMsg::Status(tx)) {
            return None;
        }
        rx.await.ok()
    }
}

fn stopped() -> Reply {
    Reply {
        outcome: Outcome::Failed(NodeError::Timeout),
        term: 0,
    }
}
