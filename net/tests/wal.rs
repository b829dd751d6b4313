//! The production WAL on real files: the storage conformance suite, torn
//! tails and corruption at random offsets of real data directories, the
//! directory lock and modes, and crash tests with a child process killed by
//! SIGKILL at random moments.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_core::node::Persist;
use etcd_core::raft::{Entry, EntryKind, HardState};
use etcd_core::storage::{Storage, conformance};
use etcd_core::{LogIndex, NodeId, Term};
use etcd_net::wal::{Wal, WalError, WalOptions};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("etcd-rs-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover temp dir is only litter.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn opts(segment_bytes: usize) -> WalOptions {
    WalOptions {
        segment_bytes,
        max_snapshots: 3,
        wal_dir: None,
    }
}

#[test]
fn conforms_to_the_storage_suite() {
    let dirs: std::cell::RefCell<Vec<TempDir>> = Default::default();
    conformance::run(
        || {
            let d = TempDir::new("conf");
            let (w, _) = Wal::open(&d.0, NodeId(1), 9, opts(64 * 1024)).unwrap();
            dirs.borrow_mut().push(d);
            w
        },
        |w| {
            // Restart: close (unsynced writes vanish with the process) and reopen.
            let dir = dirs.borrow().last().unwrap().0.clone();
            drop(w);
            Wal::open(&dir, NodeId(1), 9, opts(64 * 1024)).unwrap().0
        },
    );
}

fn write_batches(dir: &Path, batches: u64, segment_bytes: usize) -> u64 {
    let (mut w, _) = Wal::open(dir, NodeId(1), 9, opts(segment_bytes)).unwrap();
    let mut idx = 0;
    for b in 0..batches {
        let entries: Vec<Entry> = (0..3)
            .map(|_| {
                idx += 1;
                Entry {
                    term: Term(1),
                    index: LogIndex(idx),
                    kind: EntryKind::Normal,
                    data: Bytes::from(vec![b as u8; 200]),
                }
            })
            .collect();
        let p = Persist {
            number: b + 1,
            hard_state: Some(HardState {
                term: Term(1),
                vote: NodeId(1),
                commit: LogIndex(idx),
            }),
            entries,
            must_sync: true,
            ..Persist::default()
        };
        w.write(&p).unwrap();
        w.sync().unwrap();
    }
    idx
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("member/wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}

#[test]
fn layout_modes_lock_and_owner_are_enforced() {
    let d = TempDir::new("layout");
    let (w, rec) = Wal::open(&d.0, NodeId(1), 9, opts(64 * 1024)).unwrap();
    assert!(rec.entries.is_empty());
    for sub in ["", "member", "member/wal", "member/snap"] {
        let mode = std::fs::metadata(d.0.join(sub))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700, "{sub}");
    }
    assert!(matches!(
        Wal::open(&d.0, NodeId(1), 9, opts(64 * 1024)),
        Err(WalError::Locked { .. })
    ));
    drop(w);
    match Wal::open(&d.0, NodeId(2), 9, opts(64 * 1024)) {
        Err(e @ WalError::WrongMember { .. }) => {
            assert!(e.to_string().contains("belongs to member"))
        }
        other => panic!("opened another member's WAL: {:?}", other.map(|_| ())),
    }
}

#[test]
fn rotates_segments_and_recovers_across_them() {
    let d = TempDir::new("rotate");
    let last = write_batches(&d.0, 300, 16 * 1024);
    assert!(segment_files(&d.0).len() > 3, "expected several segments");
    let (_, rec) = Wal::open(&d.0, NodeId(1), 9, opts(16 * 1024)).unwrap();
    assert_eq!(rec.entries.len() as u64, last);
    assert_eq!(rec.hard_state.commit, LogIndex(last));
}

#[test]
fn a_truncated_tail_is_cut_and_recovery_goes_on() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for round in 0..30 {
        let d = TempDir::new("trunc");
        let last = write_batches(&d.0, 20, 1 << 20);
        let seg = segment_files(&d.0).pop().unwrap();
        let data_end = {
            let b = std::fs::read(&seg).unwrap();
            b.iter().rposition(|&x| x != 0).unwrap() + 1
        };
        let cut = (rng.next_u64() as usize) % data_end;
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(cut as u64).unwrap();
        drop(f);
        let (_, rec) = Wal::open(&d.0, NodeId(1), 9, opts(1 << 20))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let n = rec.entries.len() as u64;
        assert!(
            n <= last && n.is_multiple_of(3),
            "round {round}: whole batches only, got {n}"
        );
        // Every entry recovered is the one written.
        for (k, e) in rec.entries.iter().enumerate() {
            assert_eq!(e.index, LogIndex(k as u64 + 1));
        }
        // And the WAL takes new writes after the cut.
        let (mut w, _) = Wal::open(&d.0, NodeId(1), 9, opts(1 << 20)).unwrap();
        let e = Entry {
            term: Term(2),
            index: LogIndex(n + 1),
            kind: EntryKind::Normal,
            data: Bytes::from_static(b"after"),
        };
        w.write(&Persist {
            number: 1,
            entries: vec![e],
            must_sync: true,
            ..Persist::default()
        })
        .unwrap();
        w.sync().unwrap();
        drop(w);
        let (_, rec) = Wal::open(&d.0, NodeId(1), 9, opts(1 << 20)).unwrap();
        assert_eq!(rec.entries.len() as u64, n + 1);
    }
}

#[test]
fn flipped_bytes_are_a_torn_tail_in_the_last_batch_and_corruption_before_it() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let (mut torn, mut corrupt) = (0, 0);
    for round in 0..60 {
        let d = TempDir::new("flip");
        let last = write_batches(&d.0, 20, 1 << 20);
        let seg = segment_files(&d.0).pop().unwrap();
        let mut b = std::fs::read(&seg).unwrap();
        let data_end = b.iter().rposition(|&x| x != 0).unwrap() + 1;
        let at = (rng.next_u64() as usize) % data_end;
        b[at] ^= 1 << (rng.next_u64() % 8);
        std::fs::write(&seg, &b).unwrap();
        match Wal::open(&d.0, NodeId(1), 9, opts(1 << 20)) {
            Ok((_, rec)) => {
                // Only damage in the last batch may be taken for a torn tail.
                assert_eq!(
                    rec.entries.len() as u64,
                    last - 3,
                    "round {round}: flip at {at} of {data_end}"
                );
                torn += 1;
            }
            Err(WalError::Corrupt { path, offset, .. }) => {
                assert_eq!(path, seg);
                assert!(
                    offset <= at,
                    "round {round}: reported offset {offset} after the flip at {at}"
                );
                corrupt += 1;
            }
            Err(e) => panic!("round {round}: {e}"),
        }
    }
    assert!(torn > 0 && corrupt > 0, "torn {torn}, corrupt {corrupt}");
}

/// Runs the crash child once for about `ms` milliseconds, kills it with
/// SIGKILL, and returns the highest index it reported durable.
fn crash_once(dir: &Path, ms: u64, segment_bytes: usize) -> u64 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wal-crash-child"))
        .arg(dir)
        .arg(segment_bytes.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the crash child");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut max = 0u64;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line
                .strip_prefix("durable ")
                .and_then(|s| s.parse::<u64>().ok())
            {
                max = max.max(n);
            }
        }
        max
    });
    std::thread::sleep(Duration::from_millis(ms));
    // SIGKILL: no chance to flush anything.
    child.kill().expect("kill the crash child");
    let _ = child.wait();
    reader.join().unwrap()
}

fn verify(dir: &Path, durable: u64, segment_bytes: usize) {
    let (w, rec) = Wal::open(dir, NodeId(1), 9, opts(segment_bytes))
        .unwrap_or_else(|e| panic!("recovery failed: {e}"));
    drop(w);
    let snap = rec.snapshot.as_ref().map_or(0, |s| s.meta.index.0);
    if let Some(s) = &rec.snapshot {
        assert_eq!(
            s.data,
            Bytes::from(format!("snapshot at {snap}")),
            "snapshot intact"
        );
    }
    let last = rec.entries.last().map_or(snap, |e| e.index.0);
    assert!(
        last >= durable,
        "lost acknowledged entries: recovered up to {last}, {durable} was reported durable"
    );
    for (k, e) in rec.entries.iter().enumerate() {
        let i = snap + 1 + k as u64;
        assert_eq!(e.index.0, i, "entries contiguous after the snapshot");
        assert_eq!(e.data.len(), (i * 7919 % 2000) as usize, "entry {i} intact");
        assert!(
            e.data.iter().all(|&b| b == (i % 251) as u8),
            "entry {i} intact"
        );
    }
    assert_eq!(rec.hard_state.commit.0, last, "hard state matches the log");
}

#[test]
fn survives_sigkill_at_random_moments() {
    let kills: u64 = std::env::var("WAL_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let d = TempDir::new("crash");
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let started = Instant::now();
    let mut durable = 0;
    for k in 0..kills {
        let ms = 5 + rng.next_u64() % 60;
        let seg = if k % 2 == 0 { 64 * 1024 } else { 1 << 20 };
        durable = durable.max(crash_once(&d.0, ms, seg));
        verify(&d.0, durable, seg);
    }
    println!(
        "{kills} kills, {durable} entries durable, {:?}",
        started.elapsed()
    );
    assert!(durable > 1000, "the child made progress ({durable})");
}

/// Segments covered by the newest snapshot are deleted; the hard state and
/// the snapshot marker they held must survive in the segments after them,
/// even when nothing rewrote them since.
#[test]
fn releasing_segments_keeps_the_hard_state_and_the_snapshot() {
    use etcd_core::raft::{ConfState, Snapshot, SnapshotMeta};
    let d = TempDir::new("release");
    let (mut w, _) = Wal::open(&d.0, NodeId(1), 9, opts(8 * 1024)).unwrap();
    let hs = HardState {
        term: Term(7),
        vote: NodeId(3),
        commit: LogIndex(1),
    };
    let ent = |i: u64| Entry {
        term: Term(7),
        index: LogIndex(i),
        kind: EntryKind::Normal,
        data: Bytes::from(vec![i as u8; 300]),
    };
    w.write(&Persist {
        number: 1,
        hard_state: Some(hs),
        entries: vec![ent(1)],
        must_sync: true,
        ..Persist::default()
    })
    .unwrap();
    w.sync().unwrap();
    // Many segments of entries that change no hard state.
    for i in 2..=400u64 {
        w.write(&Persist {
            number: i,
            entries: vec![ent(i)],
            must_sync: true,
            ..Persist::default()
        })
        .unwrap();
        w.sync().unwrap();
    }
    let before = w.segments();
    let snap = Snapshot {
        meta: SnapshotMeta {
            index: LogIndex(390),
            term: Term(7),
            conf: ConfState::default(),
        },
        data: Bytes::from_static(b"state at 390"),
    };
    w.write(&Persist {
        number: 401,
        local_snapshot: Some((snap, LogIndex(390))),
        must_sync: true,
        ..Persist::default()
    })
    .unwrap();
    w.flush_snapshots().unwrap();
    // Roll over into new segments, so the marker's segment closes too.
    for i in 401..=500u64 {
        w.write(&Persist {
            number: i + 1,
            entries: vec![ent(i)],
            must_sync: true,
            ..Persist::default()
        })
        .unwrap();
        w.sync().unwrap();
    }
    drop(w);
    let (w, rec) = Wal::open(&d.0, NodeId(1), 9, opts(8 * 1024)).unwrap();
    assert!(
        w.segments() < before,
        "segments covered by the snapshot were released ({} of {before} left)",
        w.segments()
    );
    assert_eq!(rec.hard_state, hs, "the hard state survives its segment");
    assert_eq!(
        rec.snapshot.as_ref().map(|s| s.meta.index),
        Some(LogIndex(390))
    );
    let got: Vec<u64> = rec.entries.iter().map(|e| e.index.0).collect();
    assert_eq!(got, (391..=500).collect::<Vec<_>>());
}

/// A small tmpfs mounted for one test, unmounted on drop (needs root).
struct SmallFs(TempDir);

impl SmallFs {
    fn mount(bytes: usize) -> Option<SmallFs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let d = TempDir::new("smallfs");
        std::fs::create_dir_all(&d.0).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tmpfs")
            .arg(&d.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a tmpfs as root failed");
        Some(SmallFs(d))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0.0).status();
    }
}

/// On a full disk, sync fails with a "no space" error and nothing of the
/// batch counts as written; once space returns the same batch goes through,
/// and a restart recovers every entry whose sync succeeded.
#[test]
fn a_full_disk_fails_syncs_cleanly_and_recovers_when_space_returns() {
    let Some(fs) = SmallFs::mount(1 << 20) else {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    };
    let dir = fs.0.0.join("data");
    let (mut w, _) = Wal::open(&dir, NodeId(1), 9, opts(128 * 1024)).unwrap();
    // Fill what is left, leaving the current segment's preallocated room.
    let filler = fs.0.0.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![7u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    let ent = |i: u64| Entry {
        term: Term(1),
        index: LogIndex(i),
        kind: EntryKind::Normal,
        data: Bytes::from(vec![i as u8; 2000]),
    };
    let mut acked = 0u64;
    let mut next = 1u64;
    let failed_at = loop {
        assert!(next < 1000, "the disk never filled up");
        w.write(&Persist {
            number: next,
            hard_state: Some(HardState {
                term: Term(1),
                vote: NodeId(1),
                commit: LogIndex(next),
            }),
            entries: vec![ent(next)],
            must_sync: true,
            ..Persist::default()
        })
        .unwrap();
        match w.sync() {
            Ok(()) => acked = next,
            Err(e) => {
                assert!(e.is_no_space(), "a full disk says so: {e}");
                break next;
            }
        }
        next += 1;
    };
    // Still full: the retry fails the same way, and writes nothing.
    let e = w.sync().expect_err("still no space");
    assert!(e.is_no_space(), "{e}");
    std::fs::remove_file(&filler).unwrap();
    w.sync().expect("space is back: the batch goes through");
    acked = acked.max(failed_at);
    for i in failed_at + 1..failed_at + 20 {
        w.write(&Persist {
            number: i,
            entries: vec![ent(i)],
            hard_state: Some(HardState {
                term: Term(1),
                vote: NodeId(1),
                commit: LogIndex(i),
            }),
            must_sync: true,
            ..Persist::default()
        })
        .unwrap();
        w.sync().unwrap();
        acked = i;
    }
    drop(w);
    let (_, rec) = Wal::open(&dir, NodeId(1), 9, opts(128 * 1024)).unwrap();
    let got: Vec<u64> = rec.entries.iter().map(|e| e.index.0).collect();
    assert_eq!(got, (1..=acked).collect::<Vec<_>>());
    assert_eq!(rec.hard_state.commit, LogIndex(acked));
}
