//! The production write-ahead log: segment files written through memory maps,
//! snapshot files, the data-directory layout and recovery. The byte format
//! and the recovery rules are `etcd_core::wal`'s; this file moves bytes.
//!
//! Layout, as etcd's: `<data-dir>/member/wal/<seq>.wal` and
//! `<data-dir>/member/snap/<term>-<index>.snap`, directories mode 0700, the
//! data directory locked against a second process.
//!
//! Durability: `write` only buffers; `sync` appends the buffered records as one
//! batch (one group commit) into the current segment's map and flushes it
//! (msync, which is fdatasync for the range). A batch is never written before
//! the previous one is durable, which is what lets recovery tell a torn tail
//! from corruption. Segments are preallocated with `fallocate`, so writing
//! through the map can never find the disk full (which would be SIGBUS);
//! a full disk shows when the next segment is allocated, as an error.
//!
//! Snapshots: one from the leader is written before `write` returns (it
//! replaces the log). Our own (`local_snapshot`) is written by a background
//! thread, so a big one never holds up the batches behind it; its marker goes
//! into the WAL, and older segments are released, only once the file is
//! durable. Until then a restart recovers the previous snapshot and the log
//! after it, which is the same state.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use memmap2::MmapMut;

use etcd_core::node::Persist;
use etcd_core::raft::{HardState, Recovered, Snapshot};
use etcd_core::storage::Storage;
use etcd_core::wal::{self, SegmentEnd, WalRecord, WalReplay, snapfile};
use etcd_core::{LogIndex, NodeId, Term};

#[derive(Debug)]
pub enum WalError {
    Io {
        path: PathBuf,
        op: &'static str,
        err: io::Error,
    },
    /// Another process holds the data directory.
    Locked { path: PathBuf },
    /// Durable data is damaged: recovery stops rather than drop it.
    Corrupt {
        path: PathBuf,
        offset: usize,
        reason: String,
    },
    /// The data directory belongs to another member or cluster.
    WrongMember { path: PathBuf, reason: String },
}

impl std::fmt::Display for WalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalError::Io { path, op, err } => write!(f, "{op} {}: {err}", path.display()),
            WalError::Locked { path } => {
                write!(
                    f,
                    "{} is locked by another process (is another etcd running on this data dir?)",
                    path.display()
                )
            }
            WalError::Corrupt {
                path,
                offset,
                reason,
            } => {
                write!(
                    f,
                    "WAL file {} is corrupt at offset {offset}: {reason}",
                    path.display()
                )
            }
            WalError::WrongMember { path, reason } => write!(f, "{}: {reason}", path.display()),
        }
    }
}

impl std::error::Error for WalError {}

impl WalError {
    /// Whether the disk is full (the member should stop taking writes and retry).
    pub fn is_no_space(&self) -> bool {
        matches!(self, WalError::Io { err, .. } if err.raw_os_error() == Some(libc::ENOSPC))
    }
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |err| WalError::Io {
        path: path.to_path_buf(),
        op,
        err,
    }
}

#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Bytes per segment (etcd: 64 MB).
    pub segment_bytes: usize,
    /// Snapshot files kept (etcd: `--max-snapshots`, 5).
    pub max_snapshots: usize,
    /// Where the segments go (etcd: `--wal-dir`); `data-dir/member/wal`
    /// when `None`.
    pub wal_dir: Option<PathBuf>,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 * 1024 * 1024,
            max_snapshots: 5,
            wal_dir: None,
        }
    }
}

struct Segment {
    seq: u64,
    path: PathBuf,
    /// Highest entry index in it (0: none).
    last_index: u64,
}

struct Active {
    seq: u64,
    path: PathBuf,
    _file: File,
    map: MmapMut,
    /// Where the next batch goes.
    len: usize,
    /// Bytes at the start already given back to the page cache
    /// ([`Active::release_synced`]).
    released: usize,
    last_index: u64,
}

/// Synced bytes of the active segment kept mapped in before they are given
/// back: the WAL only appends, so written pages are never read again by
/// this process, yet each counted in its resident memory.
const RELEASE_EVERY: usize = 1 << 20;
const PAGE: usize = 4096;

impl Active {
    /// Drops the synced, whole pages behind `len` from this process's
    /// resident set (they stay in the page cache and in the file).
    fn release_synced(&mut self) {
        let upto = self.len / PAGE * PAGE;
        if upto < self.released + RELEASE_EVERY {
            return;
        }
        // SAFETY: the range is inside the map and was msync'ed: its pages
        // are clean pages of a shared file mapping, so MADV_DONTNEED only
        // unmaps them, and a later read faults the same bytes back in from
        // the file. Nothing is lost and no reference sees other contents.
        let r = unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                self.released,
                upto - self.released,
            )
        };
        // Advice that fails costs memory, never data: try again later.
        if r.is_ok() {
            self.released = upto;
        }
    }
}

pub struct Wal {
    wal_dir: PathBuf,
    snap_dir: PathBuf,
    member: NodeId,
    cluster_id: u64,
    opts: WalOptions,
    /// Closed segments, oldest first.
    closed: Vec<Segment>,
    active: Active,
    /// Records written since the last sync.
    pending: Vec<WalRecord>,
    /// The last hard state and snapshot marker written: every new segment
    /// starts with them, so releasing older segments never loses them.
    hard_state: HardState,
    marker: Option<(LogIndex, Term)>,
    /// Held for the life of the WAL: the directory lock.
    _lock: File,
    snapshots_kept: Vec<(Term, LogIndex)>,
    /// Our own snapshot being written in the background.
    snap_writer: Option<SnapWriter>,
    /// Why the last background snapshot write failed, until taken.
    snapshot_error: Option<WalError>,
    /// Deleting released segments and old snapshots (unlinking big files
    /// takes milliseconds; the next batch should not wait for it).
    janitor: Option<std::thread::JoinHandle<()>>,
}

struct SnapWriter {
    term: Term,
    index: LogIndex,
    thread: std::thread::JoinHandle<Result<(), WalError>>,
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Never leave a thread behind in a directory we no longer lock.
        if let Some(w) = self.snap_writer.take() {
            let _ = w.thread.join();
        }
        if let Some(j) = self.janitor.take() {
            let _ = j.join();
        }
    }
}

/// Lowers the calling thread's CPU priority (Linux: `nice` is per thread),
/// so background work yields to the thread serving requests.
fn lower_thread_priority() {
    // SAFETY: gettid has no preconditions; setpriority only reads its
    // arguments. Failure just leaves the priority as it was.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

fn mkdir_0700(p: &Path) -> Result<(), WalError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .map_err(io_err(p, "create directory"))
}

fn sync_dir(p: &Path) -> Result<(), WalError> {
    File::open(p)
        .and_then(|d| d.sync_all())
        .map_err(io_err(p, "sync directory"))
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.wal"))
}

fn snap_path(dir: &Path, term: Term, index: LogIndex) -> PathBuf {
    dir.join(format!("{:016x}-{:016x}.snap", term.0, index.0))
}

/// Creates a zeroed segment with its blocks allocated, and maps it.
fn create_segment(dir: &Path, seq: u64, size: usize) -> Result<(File, MmapMut, PathBuf), WalError> {
    let path = segment_path(dir, seq);
    let tmp = dir.join(format!("{seq:016x}.wal.tmp"));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp, "create segment"))?;
    // SAFETY-free allocation: posix_fallocate reserves the blocks, so later
    // writes through the map cannot fail for lack of space.
    let rc = unsafe_free_fallocate(&file, size);
    if rc != 0 {
        let _ = fs::remove_file(&tmp); // best effort: a leftover .tmp is ignored at open
        return Err(WalError::Io {
            path: tmp,
            op: "allocate segment",
            err: io::Error::from_raw_os_error(rc),
        });
    }
    file.sync_all().map_err(io_err(&tmp, "sync segment"))?;
    fs::rename(&tmp, &path).map_err(io_err(&path, "rename segment"))?;
    sync_dir(dir)?;
    let map = map_file(&file, &path)?;
    Ok((file, map, path))
}

/// `posix_fallocate` through libc (the one foreign call this file needs).
fn unsafe_free_fallocate(file: &File, size: usize) -> i32 {
    // SAFETY: posix_fallocate only reads its integer arguments; the fd is
    // valid for the duration of the call because `file` is borrowed.
    unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size as libc::off_t) }
}

fn map_file(file: &File, path: &Path) -> Result<MmapMut, WalError> {
    // SAFETY: the segment file is ours alone (the data directory is locked),
    // and is never truncated while mapped, so the map stays valid.
    unsafe { MmapMut::map_mut(file) }.map_err(io_err(path, "map segment"))
}

fn lock_dir(dir: &Path) -> Result<File, WalError> {
    let path = dir.join(".lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err(&path, "open lock"))?;
    // A process that forked between our open and its exec briefly shares the
    // lock; wait up to a second before calling the directory taken.
    for _ in 0..100 {
        // SAFETY: flock takes an fd we own for the call's duration.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(f);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(WalError::Locked { path })
}

impl Wal {
    /// Opens (or creates) the WAL under `data_dir` for this member, and
    /// recovers: the newest usable snapshot, then the WAL after it. A torn
    /// tail is cut off; damage before it is an error naming file and offset.
    pub fn open(
        data_dir: &Path,
        member: NodeId,
        cluster_id: u64,
        opts: WalOptions,
    ) -> Result<(Wal, Recovered), WalError> {
        let member_dir = data_dir.join("member");
        let wal_dir = opts
            .wal_dir
            .clone()
            .unwrap_or_else(|| member_dir.join("wal"));
        let snap_dir = member_dir.join("snap");
        mkdir_0700(data_dir)?;
        mkdir_0700(&member_dir)?;
        mkdir_0700(&wal_dir)?;
        mkdir_0700(&snap_dir)?;
        let lock = lock_dir(data_dir)?;

        let mut seqs: Vec<u64> = Vec::new();
        for e in fs::read_dir(&wal_dir).map_err(io_err(&wal_dir, "list"))? {
            let e = e.map_err(io_err(&wal_dir, "list"))?;
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(hex) = name.strip_suffix(".wal") {
                if let Ok(seq) = u64::from_str_radix(hex, 16) {
                    seqs.push(seq);
                }
            } else if name.ends_with(".wal.tmp") {
                // A segment whose creation never finished: it holds nothing.
                let p = e.path();
                fs::remove_file(&p).map_err(io_err(&p, "remove unfinished segment"))?;
            }
        }
        seqs.sort_unstable();

        let mut replay = WalReplay::default();
        let mut closed = Vec::new();
        // The last segment: its number, path, end of its last batch, and end of
        // any non-zero bytes after that.
        let mut tail: Option<(u64, PathBuf, usize, Option<usize>)> = None;
        for (k, seq) in seqs.iter().enumerate() {
            let path = segment_path(&wal_dir, *seq);
            let bytes = fs::read(&path).map_err(io_err(&path, "read segment"))?;
            let scan = wal::scan_segment(&bytes, *seq);
            let last_segment = k + 1 == seqs.len();
            let mut last_index = 0;
            for (off, rec) in scan.records {
                if let WalRecord::Entry(e) = &rec {
                    last_index = e.index.0;
                }
                replay.apply(rec).map_err(|reason| WalError::Corrupt {
                    path: path.clone(),
                    offset: off,
                    reason,
                })?;
            }
            let end = match scan.end {
                SegmentEnd::Clean { offset } => offset,
                SegmentEnd::TornTail { offset } if last_segment => offset,
                SegmentEnd::TornTail { offset } => {
                    return Err(WalError::Corrupt {
                        path,
                        offset,
                        reason: "an incomplete batch in a segment that is not the last".into(),
                    });
                }
                SegmentEnd::Corrupt { offset, reason } => {
                    return Err(WalError::Corrupt {
                        path,
                        offset,
                        reason,
                    });
                }
            };
            if last_segment {
                // Where the bytes after the last complete batch stop being
                // zero (a torn tail to wipe), found in the copy read here:
                // scanning the map instead would page in the whole segment.
                let dirty_to = bytes
                    .get(end..)
                    .and_then(|rest| rest.iter().rposition(|&b| b != 0))
                    .map(|p| end + p + 1);
                tail = Some((*seq, path, end, dirty_to));
            } else {
                closed.push(Segment {
                    seq: *seq,
                    path,
                    last_index,
                });
            }
            let _ = last_index;
        }
        if let Some((m, c)) = replay.meta
            && (m != member || c != cluster_id)
        {
            return Err(WalError::WrongMember {
                path: wal_dir.clone(),
                reason: format!(
                    "WAL belongs to member {:x} of cluster {c:x}, not {:x} of {cluster_id:x}",
                    m.0, member.0
                ),
            });
        }

        // The newest snapshot the WAL vouches for that reads back.
        let mut snaps: Vec<(Term, LogIndex)> = Vec::new();
        for e in fs::read_dir(&snap_dir).map_err(io_err(&snap_dir, "list"))? {
            let e = e.map_err(io_err(&snap_dir, "list"))?;
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(stem) = name.strip_suffix(".snap") {
                if let Some((t, i)) = stem.split_once('-')
                    && let (Ok(t), Ok(i)) = (u64::from_str_radix(t, 16), u64::from_str_radix(i, 16))
                {
                    snaps.push((Term(t), LogIndex(i)));
                }
            } else if name.ends_with(".tmp") {
                let p = e.path();
                fs::remove_file(&p).map_err(io_err(&p, "remove unfinished snapshot"))?;
            }
        }
        snaps.sort_by_key(|(t, i)| (*i, *t));
        let mut snapshot: Option<Snapshot> = None;
        if let Some((idx, term)) = replay.snapshot {
            let path = snap_path(&snap_dir, term, idx);
            let bytes = Bytes::from(fs::read(&path).map_err(io_err(&path, "read snapshot"))?);
            let s = snapfile::decode_owned(&bytes).map_err(|e| WalError::Corrupt {
                path: path.clone(),
                offset: 0,
                reason: e.to_string(),
            })?;
            snapshot = Some(s);
        }

        let (seq, path, len, dirty_to) = match tail {
            Some(t) => t,
            None => (0, segment_path(&wal_dir, 0), 0, None),
        };
        let exists = path.exists();
        let (file, mut map) = if exists {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err(&path, "open segment"))?;
            let m = map_file(&f, &path)?;
            (f, m)
        } else {
            let (f, m, _) = create_segment(&wal_dir, seq, opts.segment_bytes)?;
            (f, m)
        };
        // Cut a torn tail: zero what follows the last complete batch.
        if let Some(to) = dirty_to {
            let to = to.min(map.len());
            map[len..to].fill(0);
            map.flush_range(len, to - len)
                .map_err(io_err(&path, "flush segment"))?;
        }
        let last_index = replay.entries.last().map_or(0, |e| e.index.0);
        let mut w = Wal {
            wal_dir,
            snap_dir,
            member,
            cluster_id,
            opts,
            closed,
            active: Active {
                seq,
                path,
                _file: file,
                map,
                len,
                released: 0,
                last_index,
            },
            pending: Vec::new(),
            hard_state: replay.hard_state,
            marker: replay.snapshot,
            _lock: lock,
            snapshots_kept: snaps,
            snap_writer: None,
            snapshot_error: None,
            janitor: None,
        };
        if len == 0 {
            w.pending.push(WalRecord::Meta { member, cluster_id });
            w.sync()?;
        }
        Ok((w, replay.into_recovered(snapshot)))
    }

    /// Notes a durable snapshot file (pruned once its marker is durable).
    fn snapshot_saved(&mut self, term: Term, index: LogIndex) {
        self.snapshots_kept.push((term, index));
        self.snapshots_kept.sort_by_key(|(t, i)| (*i, *t));
    }

    /// Drops the oldest snapshot files beyond `max_snapshots`. Only after a
    /// newer marker is durable: until then recovery may need the old file.
    fn prune_snapshots(&mut self) -> Vec<PathBuf> {
        let mut gone = Vec::new();
        while self.snapshots_kept.len() > self.opts.max_snapshots.max(1) {
            let (t, i) = self.snapshots_kept.remove(0);
            gone.push(snap_path(&self.snap_dir, t, i));
        }
        gone
    }

    /// Deletes files in the background (one batch at a time). Losing an old
    /// snapshot or segment is harmless, so failures are ignored: a file left
    /// behind only costs disk (recovery skips what a newer snapshot covers).
    fn remove_later(&mut self, paths: Vec<PathBuf>) {
        if paths.is_empty() {
            return;
        }
        if let Some(j) = self.janitor.take() {
            let _ = j.join();
        }
        let spawned = std::thread::Builder::new()
            .name("wal-janitor".into())
            .spawn({
                let paths = paths.clone();
                move || {
                    lower_thread_priority();
                    for p in paths {
                        let _ = fs::remove_file(&p);
                    }
                }
            });
        match spawned {
            Ok(j) => self.janitor = Some(j),
            Err(_) => {
                for p in paths {
                    let _ = fs::remove_file(&p);
                }
            }
        }
    }

    /// Starts a new segment when the current one cannot take `need` more bytes.
    fn rotate(&mut self, need: usize) -> Result<(), WalError> {
        let size = self.opts.segment_bytes.max(need + 4096);
        let seq = self.active.seq + 1;
        let (file, map, path) = create_segment(&self.wal_dir, seq, size)?;
        let last_index = self.active.last_index;
        let old = std::mem::replace(
            &mut self.active,
            Active {
                seq,
                path,
                _file: file,
                map,
                len: 0,
                released: 0,
                last_index,
            },
        );
        self.closed.push(Segment {
            seq: old.seq,
            path: old.path,
            last_index: old.last_index,
        });
        // Every segment starts by naming its owner, then repeats the state
        // that older segments, once released, no longer hold.
        let mut head = vec![
            WalRecord::Meta {
                member: self.member,
                cluster_id: self.cluster_id,
            },
            WalRecord::HardState(self.hard_state),
        ];
        if let Some((index, term)) = self.marker {
            head.push(WalRecord::Snapshot { index, term });
        }
        let head = wal::encode_batch(&head, seq, 0);
        self.put(&head)
    }

    fn put(&mut self, bytes: &BytesMut) -> Result<(), WalError> {
        let a = &mut self.active;
        let end = a.len + bytes.len();
        a.map[a.len..end].copy_from_slice(bytes);
        a.map
            .flush_range(a.len, bytes.len())
            .map_err(io_err(&a.path, "sync segment"))?;
        a.len = end;
        a.release_synced();
        Ok(())
    }

    /// Closed segments that hold only entries covered by the newest snapshot
    /// (recovery starts from it; the older snapshot files kept are for the
    /// operator). Their hard state and marker live on in every later
    /// segment's head.
    fn release(&mut self) -> Vec<PathBuf> {
        let mut gone = Vec::new();
        let Some((newest, _)) = self.marker else {
            return gone;
        };
        while self
            .closed
            .first()
            .is_some_and(|s| s.last_index <= newest.0 && s.last_index != 0)
        {
            gone.push(self.closed.remove(0).path);
        }
        gone
    }

    pub fn segments(&self) -> usize {
        self.closed.len() + 1
    }

    /// Collects the background snapshot writer if it is done (or, with
    /// `wait`, once it is): a durable file gets its WAL marker with the next
    /// batch. A failed write is kept for `take_snapshot_error`; it loses
    /// nothing, as the segments it would have released stay.
    fn collect_snapshot(&mut self, wait: bool) {
        if !wait
            && self
                .snap_writer
                .as_ref()
                .is_some_and(|w| !w.thread.is_finished())
        {
            return;
        }
        let Some(w) = self.snap_writer.take() else {
            return;
        };
        let result = w.thread.join().unwrap_or_else(|_| {
            Err(WalError::Io {
                path: self.snap_dir.clone(),
                op: "write snapshot",
                err: io::Error::other("the snapshot writer panicked"),
            })
        });
        match result {
            Ok(()) => {
                self.pending.push(WalRecord::Snapshot {
                    index: w.index,
                    term: w.term,
                });
                self.snapshot_saved(w.term, w.index);
            }
            Err(e) => self.snapshot_error = Some(e),
        }
    }

    /// Why the last background snapshot write failed, if it did (the next
    /// snapshot tries again; nothing durable was lost).
    pub fn take_snapshot_error(&mut self) -> Option<WalError> {
        self.snapshot_error.take()
    }

    /// Whether a snapshot is still being written in the background.
    pub fn snapshot_in_progress(&self) -> bool {
        self.snap_writer.is_some()
    }
}

/// Bytes of a snapshot file written between two flushes.
const SNAPSHOT_FLUSH_BYTES: usize = 256 << 10;

/// Writes a snapshot file durably: a temporary name, fsync, rename, fsync of
/// the directory. A failure leaves no file under the final name.
fn write_snapshot_file(snap_dir: &Path, s: &Snapshot) -> Result<(), WalError> {
    let path = snap_path(snap_dir, s.meta.term, s.meta.index);
    let tmp = path.with_extension("snap.tmp");
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp, "create snapshot"))?;
        let (head, crc) = snapfile::encode_parts(s);
        f.write_all(&head).map_err(io_err(&tmp, "write snapshot"))?;
        // In slices, each flushed before the next: one flush of hundreds of
        // megabytes would hold up the WAL's next fdatasync behind it.
        for chunk in s.data.chunks(SNAPSHOT_FLUSH_BYTES) {
            f.write_all(chunk).map_err(io_err(&tmp, "write snapshot"))?;
            f.sync_data().map_err(io_err(&tmp, "sync snapshot"))?;
        }
        f.write_all(&crc.to_le_bytes())
            .map_err(io_err(&tmp, "write snapshot"))?;
        f.sync_all().map_err(io_err(&tmp, "sync snapshot"))?;
        fs::rename(&tmp, &path).map_err(io_err(&path, "rename snapshot"))?;
        sync_dir(snap_dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

impl Storage for Wal {
    type Error = WalError;

    fn write(&mut self, p: &Persist) -> Result<(), WalError> {
        // Snapshot files go to disk before the WAL says they exist.
        if let Some(s) = &p.snapshot {
            write_snapshot_file(&self.snap_dir, s)?;
            self.snapshot_saved(s.meta.term, s.meta.index);
        }
        let mut records = wal::records_of(p);
        if let Some((s, _)) = &p.local_snapshot {
            // One writer at a time (a new snapshot is due only thousands of
            // entries later, so this rarely waits).
            self.collect_snapshot(true);
            let (term, index) = (s.meta.term, s.meta.index);
            let from_leader = p
                .snapshot
                .as_ref()
                .is_some_and(|l| (l.meta.term, l.meta.index) == (term, index));
            if !from_leader {
                // Its marker waits for the file (`collect_snapshot`).
                let mut dropped = false;
                records.retain(|r| {
                    let ours = !dropped
                        && matches!(r, WalRecord::Snapshot { index: i, term: t } if (*t, *i) == (term, index));
                    dropped |= ours;
                    !ours
                });
                let (dir, snap) = (self.snap_dir.clone(), s.clone());
                let thread = std::thread::Builder::new()
                    .name("snapshot-writer".into())
                    .spawn(move || {
                        lower_thread_priority();
                        write_snapshot_file(&dir, &snap)
                    })
                    .map_err(io_err(&self.snap_dir, "start the snapshot writer"))?;
                self.snap_writer = Some(SnapWriter {
                    term,
                    index,
                    thread,
                });
            }
        }
        self.pending.extend(records);
        Ok(())
    }

    fn flush_snapshots(&mut self) -> Result<(), WalError> {
        self.collect_snapshot(true);
        if let Some(e) = self.snapshot_error.take() {
            return Err(e);
        }
        self.sync()
    }

    fn sync(&mut self) -> Result<(), WalError> {
        self.collect_snapshot(false);
        if self.pending.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.pending);
        let need = wal::batch_len(&records);
        if self.active.len + need > self.active.map.len()
            && let Err(e) = self.rotate(need)
        {
            self.pending = records; // nothing was written: try again later
            return Err(e);
        }
        let bytes = wal::encode_batch(&records, self.active.seq, self.active.len as u64);
        if let Some(last) = records.iter().rev().find_map(|r| {
            if let WalRecord::Entry(e) = r {
                Some(e.index.0)
            } else {
                None
            }
        }) {
            self.active.last_index = last;
        }
        self.put(&bytes)?;
        let mut marked = false;
        for r in &records {
            match r {
                WalRecord::HardState(hs) => self.hard_state = *hs,
                WalRecord::Snapshot { index, term }
                    if self.marker.is_none_or(|(i, _)| i < *index) =>
                {
                    self.marker = Some((*index, *term));
                    marked = true;
                }
                _ => {}
            }
        }
        if marked {
            let mut gone = self.prune_snapshots();
            gone.extend(self.release());
            self.remove_later(gone);
        }
        Ok(())
    }

    fn recovered(&self) -> Result<Recovered, WalError> {
        // Reading back means reopening; the lock is ours, so read the files.
        let mut replay = WalReplay::default();
        for path in self
            .closed
            .iter()
            .map(|s| &s.path)
            .chain(std::iter::once(&self.active.path))
        {
            let seq = if *path == self.active.path {
                self.active.seq
            } else {
                self.closed
                    .iter()
                    .find(|s| &s.path == path)
                    .map_or(0, |s| s.seq)
            };
            let bytes = fs::read(path).map_err(io_err(path, "read segment"))?;
            for (off, rec) in wal::scan_segment(&bytes, seq).records {
                replay.apply(rec).map_err(|reason| WalError::Corrupt {
                    path: path.clone(),
                    offset: off,
                    reason,
                })?;
            }
        }
        let snapshot = match replay.snapshot {
            Some((i, t)) => {
                let p = snap_path(&self.snap_dir, t, i);
                let b = fs::read(&p).map_err(io_err(&p, "read snapshot"))?;
                Some(snapfile::decode(&b).map_err(|e| WalError::Corrupt {
                    path: p,
                    offset: 0,
                    reason: e.to_string(),
                })?)
            }
            None => None,
        };
        Ok(replay.into_recovered(snapshot))
    }
}
