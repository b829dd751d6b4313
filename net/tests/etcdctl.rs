//! Our `etcd` under Debian's etcdctl 3.4, compared with Debian's etcd 3.4.23
//! running the same commands side by side: every output must be the same
//! apart from IDs, endpoints and timings. Skips (with a message) where those
//! tools are missing; `./test.sh` installs them, and under CI they must exist.

mod support;

use std::path::Path;
use std::time::Duration;

use regex::Regex;
use support::*;

const OURS: &str = env!("CARGO_BIN_EXE_etcd");

/// Makes two servers' outputs comparable: IDs, endpoints, timings and the
/// client's own log lines differ between any two runs.
fn normalize(out: &str, p: &Proc) -> String {
    let host = |u: &str| u.trim_start_matches("http://").to_string();
    let mut s = out
        .lines()
        .filter(|l| !l.contains("retry_interceptor.go"))
        .collect::<Vec<_>>()
        .join("\n");
    s = s
        .replace(&p.client, "CLIENT_URL")
        .replace(&p.peer, "PEER_URL");
    s = s.replace(&host(&p.client), "CLIENT");
    for (re, to) in [
        // Decimal IDs first: a 14- to 16-digit decimal also looks like hex.
        (r#""cluster_id":\d+,"member_id":\d+,"#, ""),
        (r#""raft_term":\d+"#, r#""raft_term":T"#),
        (r#""(ClusterID|MemberID|RaftTerm)" : \d+"#, r#""$1" : N"#),
        (r#""ID":\d+"#, r#""ID":N"#),
        // Then hex member and lease IDs as etcdctl prints them.
        (r"\b[0-9a-f]{14,16}\b", "ID"),
        (r"took = \S+", "took = T"),
        // The first second of a lease may or may not have passed.
        (r"remaining\((5[7-9]|60)s\)", "remaining(~60s)"),
    ] {
        s = Regex::new(re)
            .expect("regex")
            .replace_all(&s, to)
            .to_string();
    }
    s
}

/// One step: etcdctl arguments (`LEASE` stands for the lease granted
/// earlier on that server), optional stdin, and whether it is a watch
/// (stopped after a moment).
struct Step {
    args: &'static [&'static str],
    stdin: Option<&'static str>,
    watch: bool,
}

const fn run(args: &'static [&'static str]) -> Step {
    Step {
        args,
        stdin: None,
        watch: false,
    }
}

const fn with_stdin(args: &'static [&'static str], stdin: &'static str) -> Step {
    Step {
        args,
        stdin: Some(stdin),
        watch: false,
    }
}

const fn watch(args: &'static [&'static str]) -> Step {
    Step {
        args,
        stdin: None,
        watch: true,
    }
}

const TXN_VALUE: &str = "value(\"zed\") = \"z\"\n\nput ok yes\n\nput ok no\n\n";
const TXN_MOD: &str = "mod(\"zed\") > \"0\"\n\nget zed\ndel zed\n\nput a b\n\n";
const TXN_FAIL: &str = "version(\"nokey\") > \"0\"\n\nput never here\n\nget a\nput c d\n\n";

fn steps() -> Vec<Step> {
    vec![
        run(&["put", "foo", "bar"]),
        run(&["put", "foo2", "baz"]),
        run(&["put", "zed", "z"]),
        run(&["put", "k1", "v1"]),
        run(&["put", "k2", "v2"]),
        run(&["put", "k3", "v3"]),
        run(&["get", "foo"]),
        run(&["get", "foo", "--prefix"]),
        run(&["get", "foo", "--prefix", "--keys-only"]),
        run(&["get", "foo", "--prefix", "--print-value-only"]),
        run(&["get", "", "--from-key"]),
        run(&["get", "k", "--from-key", "--limit=2"]),
        run(&["get", "k1", "k3"]),
        run(&["get", "k", "--prefix", "--limit=1", "-w", "json"]),
        run(&["get", "k", "--prefix", "--count-only", "-w", "json"]),
        run(&[
            "get",
            "k",
            "--prefix",
            "--sort-by=MODIFY",
            "--order=DESCEND",
        ]),
        run(&["get", "k", "--prefix", "--sort-by=VALUE", "--order=ASCEND"]),
        run(&[
            "get",
            "k",
            "--prefix",
            "--sort-by=CREATE",
            "--order=DESCEND",
            "--limit=2",
        ]),
        run(&["get", "foo", "--rev=2"]),
        run(&["get", "foo", "--rev=100"]),
        run(&["get", "foo", "-w", "fields"]),
        run(&["get", "foo", "--prefix", "-w", "json"]),
        run(&["get", "nokey"]),
        run(&["put", "foo", "bar2", "--prev-kv"]),
        run(&["put", "", "v"]),
        run(&["put", "foo", "--ignore-value"]),
        run(&["del", "nothing"]),
        run(&["del", "k", "--prefix", "--prev-kv"]),
        run(&["del", "foo2"]),
        with_stdin(&["txn"], TXN_VALUE),
        with_stdin(&["txn", "-w", "json"], TXN_MOD),
        with_stdin(&["txn"], TXN_FAIL),
        watch(&["watch", "foo", "--rev=1", "--prev-kv"]),
        watch(&["watch", "ok", "--rev=1", "-w", "json"]),
        watch(&["watch", "k", "--prefix", "--rev=5"]),
        run(&["lease", "grant", "60"]),
        run(&["put", "leased", "v", "--lease=LEASE"]),
        run(&["lease", "timetolive", "LEASE", "--keys"]),
        run(&["lease", "keep-alive", "--once", "LEASE"]),
        run(&["lease", "list"]),
        run(&["lease", "revoke", "LEASE"]),
        run(&["get", "leased"]),
        run(&["lease", "timetolive", "1234"]),
        run(&["lease", "revoke", "1234"]),
        run(&["lease", "grant", "1"]),
        run(&["compaction", "3"]),
        run(&["compaction", "3"]),
        run(&["compaction", "1000"]),
        run(&["get", "foo", "--rev=2"]),
        watch(&["watch", "foo", "--rev=2"]),
        run(&["alarm", "list"]),
        run(&["defrag"]),
        run(&["member", "list"]),
        run(&["member", "list", "-w", "json"]),
        run(&["endpoint", "health"]),
    ]
}

/// Runs every step on one server; returns normalized outputs.
fn script(etcdctl: &Path, p: &Proc) -> Vec<String> {
    let ep = p.client.clone();
    let mut lease = String::from("0");
    let lease_re = Regex::new(r"lease ([0-9a-f]+) granted").expect("regex");
    let mut outs = Vec::new();
    for s in steps() {
        let args: Vec<String> = s.args.iter().map(|a| a.replace("LEASE", &lease)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = if s.watch {
            ctl_for(etcdctl, &ep, &args, Duration::from_millis(2500))
        } else {
            let (out, ok) = ctl(etcdctl, &ep, &args, s.stdin);
            format!("{out}[ok={ok}]")
        };
        if let Some(c) = lease_re.captures(&out)
            && args.first() == Some(&"lease")
            && args.get(1) == Some(&"grant")
            && lease == "0"
        {
            lease = c[1].to_string();
        }
        outs.push(format!(
            "$ etcdctl {}\n{}",
            s.args.join(" "),
            normalize(&out, p)
        ));
    }
    outs
}

#[test]
fn etcdctl_sees_the_same_answers_as_from_etcd_3_4() {
    let Some(etcdctl) = etcdctl() else { return };
    let Some(reference) = reference_etcd() else {
        return;
    };
    let ours = single(Path::new(OURS), "ctl-ours");
    let theirs = single(&reference, "ctl-etcd");
    wait_ready(&etcdctl, &ours.client, &ours);
    wait_ready(&etcdctl, &theirs.client, &theirs);
    let a = script(&etcdctl, &ours);
    let b = script(&etcdctl, &theirs);
    let mut diffs = Vec::new();
    for (x, y) in a.iter().zip(b.iter()) {
        if x != y {
            diffs.push(format!("--- ours\n{x}\n--- etcd 3.4.23\n{y}\n"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} of {} steps differ:\n{}",
        diffs.len(),
        a.len(),
        diffs.join("\n")
    );
}

#[test]
fn the_readme_walk_through_works_on_a_single_member() {
    let Some(etcdctl) = etcdctl() else { return };
    let mut m = single(Path::new(OURS), "readme");
    wait_ready(&etcdctl, &m.client, &m);
    let (out, ok) = ctl(&etcdctl, &m.client, &["put", "test", "1111"], None);
    assert!(ok && out == "OK\n", "{out}");
    let (out, ok) = ctl(&etcdctl, &m.client, &["get", "test"], None);
    assert!(ok && out == "test\n1111\n", "{out}");
    // Status: this member leads, at the revision of the one put.
    let (out, ok) = ctl(&etcdctl, &m.client, &["endpoint", "status"], None);
    assert!(ok, "{out}");
    let fields: Vec<&str> = out.trim().split(", ").collect();
    assert_eq!(fields[2], "3.5.0", "{out}");
    assert_eq!(fields[4], "true", "is leader: {out}");
    // A clean stop: SIGTERM exits 0 within seconds, and the data survives.
    let status = m
        .terminate(Duration::from_secs(5))
        .expect("exits on SIGTERM");
    assert!(status.success(), "exit {status:?}\n{}", m.log_text());
    m.restart();
    wait_ready(&etcdctl, &m.client, &m);
    let (out, ok) = ctl(&etcdctl, &m.client, &["get", "test"], None);
    assert!(ok && out == "test\n1111\n", "after restart: {out}");
    // The logs are JSON lines with etcd's fields.
    let log = m.log_text();
    for line in log.lines() {
        assert!(
            line.starts_with("{\"level\":\"") && line.contains("\"ts\":\"") && line.ends_with('}'),
            "not a zap-style JSON line: {line}"
        );
    }
    assert!(log.contains("restarting local member"), "{log}");
}

#[test]
fn over_its_quota_a_member_raises_nospace_and_frees_space_by_compaction_alone() {
    let Some(etcdctl) = etcdctl() else { return };
    let m = single_with(Path::new(OURS), "quota", |_| {
        vec!["--quota-backend-bytes=40000".into()]
    });
    wait_ready(&etcdctl, &m.client, &m);
    let value = "x".repeat(3000);
    let mut refused = 0;
    for i in 0..30 {
        let (out, ok) = ctl(
            &etcdctl,
            &m.client,
            &["put", &format!("k{i}"), &value],
            None,
        );
        if !ok {
            assert!(
                out.contains("Error: etcdserver: mvcc: database space exceeded"),
                "{out}"
            );
            refused += 1;
        }
    }
    assert!(refused > 0 && refused < 30, "{refused} of 30 puts refused");
    let (out, _) = ctl(&etcdctl, &m.client, &["alarm", "list"], None);
    assert!(
        Regex::new(r"^memberID:\d+ alarm:NOSPACE \n$")
            .expect("regex")
            .is_match(&out),
        "{out:?}"
    );
    // Reads and deletes go on; puts and lease grants do not.
    let (out, ok) = ctl(
        &etcdctl,
        &m.client,
        &["get", "k0", "--print-value-only"],
        None,
    );
    assert!(ok && out.trim() == value, "{out}");
    let (out, ok) = ctl(&etcdctl, &m.client, &["lease", "grant", "60"], None);
    assert!(!ok && out.contains("database space exceeded"), "{out}");
    let (out, ok) = ctl(&etcdctl, &m.client, &["del", "k", "--prefix"], None);
    assert!(ok, "{out}");
    // Deleted versions are history until compacted; compaction frees them
    // at once (no defragmentation needed), and after disarming, puts work.
    let (out, ok) = ctl(&etcdctl, &m.client, &["get", "k0", "-w", "json"], None);
    assert!(ok, "{out}");
    let rev: i64 = Regex::new(r#""revision":(\d+)"#)
        .expect("regex")
        .captures(&out)
        .expect("revision")[1]
        .parse()
        .expect("number");
    let (out, ok) = ctl(&etcdctl, &m.client, &["compaction", &rev.to_string()], None);
    assert!(ok, "{out}");
    let (out, ok) = ctl(&etcdctl, &m.client, &["alarm", "disarm"], None);
    assert!(ok && out.contains("alarm:NOSPACE"), "{out}");
    let (out, _) = ctl(&etcdctl, &m.client, &["alarm", "list"], None);
    assert_eq!(out, "");
    let (out, ok) = ctl(&etcdctl, &m.client, &["put", "after", "disarm"], None);
    assert!(ok && out == "OK\n", "{out}");
}

#[test]
fn with_wal_dir_the_segments_live_there_and_a_restart_reads_them() {
    let Some(etcdctl) = etcdctl() else { return };
    let mut m = single_with(Path::new(OURS), "wal-dir", |dir| {
        vec![format!("--wal-dir={}", dir.join("separate-wal").display())]
    });
    let dir = m.dir.clone();
    let wal_dir = dir.join("separate-wal");
    wait_ready(&etcdctl, &m.client, &m);
    let (out, ok) = ctl(&etcdctl, &m.client, &["put", "k", "v"], None);
    assert!(ok, "{out}");
    let segments = |d: &Path| -> usize {
        std::fs::read_dir(d)
            .map(|r| {
                r.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
                    .count()
            })
            .unwrap_or(0)
    };
    assert!(segments(&wal_dir) > 0, "no segment in --wal-dir");
    assert_eq!(
        segments(&dir.join("data/member/wal")),
        0,
        "segments in the data dir"
    );
    // The write survives a SIGKILL: it was in the separate WAL.
    m.kill();
    m.restart();
    wait_ready(&etcdctl, &m.client, &m);
    let (out, ok) = ctl(
        &etcdctl,
        &m.client,
        &["get", "k", "--print-value-only"],
        None,
    );
    assert!(ok && out == "v\n", "{out}");
}
