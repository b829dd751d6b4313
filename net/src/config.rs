//! The server's configuration, taken exactly as etcd 3.5 takes it: the same
//! flags, `ETCD_*` environment variables and YAML config file, with the same
//! precedence, defaults and (where etcd has them) the same error texts.
//!
//! Checked against etcd v3.5.x: `server/etcdmain/config.go` (flags, the
//! config-file switch), `pkg/flags/flag.go` (environment), `server/embed/config.go`
//! (defaults, YAML keys, `Validate`), `server/etcdmain/etcd.go` (default
//! `--initial-cluster` from `--name`, default data dir),
//! `server/config/config.go` (`VerifyBootstrap`) and
//! `server/etcdserver/api/membership` (member and cluster IDs).
//!
//! Precedence, as etcd does it:
//! 1. The command line is parsed first, as Go's `flag` package parses it.
//!    `--help`/`-h` and `--version` stop there (see [`Action`]).
//! 2. If `--config-file` (or, when that flag is absent, `ETCD_CONFIG_FILE`)
//!    names a file, the configuration comes from that file alone, over etcd's
//!    defaults: every other flag and every `ETCD_*` variable is ignored (with a
//!    warning).
//! 3. Otherwise each flag not given on the command line takes its
//!    `ETCD_<FLAG>` variable when that is non-empty. A variable for a flag
//!    that *was* given on the command line is an error (etcd 3.5 exits with
//!    "conflicting environment variable is shadowed by corresponding
//!    command-line flag"); an `ETCD_*` variable that names no flag is a
//!    warning.
//!
//! What is accepted but not served (yet):
//! - TLS. `--cert-file`, `--key-file`, `--client-cert-auth`,
//!   `--trusted-ca-file`, `--auto-tls` and their `--peer-*` twins (and the
//!   config file's `client-transport-security` / `peer-transport-security`)
//!   are parsed and stored in [`Config::client_tls`] / [`Config::peer_tls`],
//!   but nothing is encrypted; any `https://` URL is refused with "TLS is not
//!   supported yet".
//! - Every flag in [`IGNORED_FLAGS`]: parsed and type-checked as etcd does,
//!   kept in [`Config::ignored`], and otherwise without effect (one warning
//!   lists those that were set).
//! - Discovery (`--discovery`, `--discovery-srv`, `--discovery-srv-name`),
//!   the v2 proxy (`--proxy on|readonly`) and `unix://` URLs are refused.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The etcd release whose behaviour this server follows.
pub const ETCD_VERSION: &str = "3.5.0";
/// Default `--name`.
pub const DEFAULT_NAME: &str = "default";
/// Default `--listen-peer-urls` and `--initial-advertise-peer-urls`.
pub const DEFAULT_PEER_URL: &str = "http://localhost:2380";
/// Default `--listen-client-urls` and `--advertise-client-urls`.
pub const DEFAULT_CLIENT_URL: &str = "http://localhost:2379";
/// Default `--initial-cluster`: `DEFAULT_NAME=DEFAULT_PEER_URL`.
pub const DEFAULT_INITIAL_CLUSTER: &str = "default=http://localhost:2380";
/// Default `--initial-cluster-token`.
pub const DEFAULT_INITIAL_CLUSTER_TOKEN: &str = "etcd-cluster";
/// Default `--snapshot-count` (also what 0 means).
pub const DEFAULT_SNAPSHOT_COUNT: u64 = 100_000;
/// The backend quota `--quota-backend-bytes 0` stands for (2 GiB).
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Above this quota etcd warns (8 GiB).
pub const MAX_QUOTA_BACKEND_BYTES: u64 = 8 * 1024 * 1024 * 1024;
/// Default `--max-request-bytes` (1.5 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1_572_864;
/// Above this request limit etcd warns (10 MiB).
const RECOMMENDED_MAX_REQUEST_BYTES: u64 = 10 * 1024 * 1024;
/// `--election-timeout` may not exceed this (ms).
const MAX_ELECTION_MS: u64 = 50_000;
/// bcrypt's accepted cost range and default.
const BCRYPT_MIN_COST: u64 = 4;
const BCRYPT_MAX_COST: u64 = 31;
const BCRYPT_DEFAULT_COST: u64 = 10;

/// Flags etcd 3.5 defines that this server parses (and type-checks) but
/// does not act on. Their values land in [`Config::ignored`].
pub const IGNORED_FLAGS: &[&str] = &[
    // Backend, gRPC and socket tuning.
    "backend-bbolt-freelist-type",
    "backend-batch-interval",
    "backend-batch-limit",
    "max-concurrent-streams",
    "socket-reuse-port",
    "socket-reuse-address",
    "raft-read-timeout",
    "raft-write-timeout",
    "enable-grpc-gateway",
    "listen-client-http-urls",
    // Discovery and the v2 proxy (setting them to something that would
    // need them is an error, see the module docs).
    "discovery",
    "discovery-fallback",
    "discovery-proxy",
    "discovery-srv",
    "discovery-srv-name",
    "proxy",
    "proxy-failure-wait",
    "proxy-refresh-interval",
    "proxy-dial-timeout",
    "proxy-write-timeout",
    "proxy-read-timeout",
    // v2 emulation.
    "experimental-enable-v2v3",
    "v2-deprecation",
    // TLS details beyond what [`TlsConfig`] keeps.
    "self-signed-cert-validity",
    "cipher-suites",
    "tls-min-version",
    "tls-max-version",
    "experimental-peer-skip-client-san-verification",
    // HTTP gateway policy.
    "cors",
    "host-whitelist",
    // Log rotation.
    "enable-log-rotation",
    "log-rotation-config-json",
    // Experimental features.
    "experimental-initial-corrupt-check",
    "experimental-corrupt-check-time",
    "experimental-compact-hash-check-enabled",
    "experimental-compact-hash-check-time",
    "experimental-enable-lease-checkpoint",
    "experimental-enable-lease-checkpoint-persist",
    "experimental-compaction-batch-limit",
    "experimental-compaction-sleep-interval",
    "experimental-watch-progress-notify-interval",
    "experimental-downgrade-check-time",
    "experimental-warning-apply-duration",
    "experimental-memory-mlock",
    "experimental-txn-mode-write-with-shared-buffer",
    "experimental-stop-grpc-service-on-defrag",
    "experimental-bootstrap-defrag-threshold-megabytes",
    "experimental-snapshot-catchup-entries",
    "experimental-enable-distributed-tracing",
    "experimental-distributed-tracing-address",
    "experimental-distributed-tracing-service-name",
    "experimental-distributed-tracing-instance-id",
    "experimental-distributed-tracing-sampling-rate",
    // Flags etcd itself has retired and ignores (etcdmain's `ignored`).
    "cluster-active-size",
    "cluster-remove-delay",
    "cluster-sync-interval",
    "config",
    "force",
    "max-result-buffer",
    "max-retry-attempts",
    "peer-heartbeat-interval",
    "peer-election-timeout",
    "retry-interval",
    "snapshot",
    "v",
    "vv",
    "test.coverprofile",
    "test.outputdir",
];

/// `--initial-cluster-state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    /// Bootstrap a new cluster from `--initial-cluster`.
    New,
    /// Join a cluster this member was already added to.
    Existing,
}

impl ClusterState {
    /// The flag value: `new` or `existing`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterState::New => "new",
            ClusterState::Existing => "existing",
        }
    }
}

/// `--auto-compaction-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactionMode {
    /// Retention is a duration (a bare integer means hours).
    Periodic,
    /// Retention is a number of revisions.
    Revision,
}

/// `--log-level`, as zap reads it (case-insensitive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// `debug`
    Debug,
    /// `info` (the default)
    Info,
    /// `warn`
    Warn,
    /// `error`
    Error,
    /// `dpanic` (zap accepts it; etcd's help does not mention it)
    DPanic,
    /// `panic`
    Panic,
    /// `fatal`
    Fatal,
}

impl LogLevel {
    fn parse(s: &str) -> Result<LogLevel, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "debug" => LogLevel::Debug,
            "info" | "" => LogLevel::Info,
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            "dpanic" => LogLevel::DPanic,
            "panic" => LogLevel::Panic,
            "fatal" => LogLevel::Fatal,
            _ => return Err(format!("unrecognized level: {s:?}")),
        })
    }

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::DPanic => "dpanic",
            LogLevel::Panic => "panic",
            LogLevel::Fatal => "fatal",
        }
    }
}

/// What `--auto-compaction-mode` and `--auto-compaction-retention` amount to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Retention 0: no automatic compaction.
    Disabled,
    /// Keep this much history.
    Periodic(Duration),
    /// Keep this many revisions.
    Revision(u64),
}

/// TLS settings for one side (client or peer). Stored only: TLS is not
/// served yet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// `--cert-file` / `--peer-cert-file`
    pub cert_file: String,
    /// `--key-file` / `--peer-key-file`
    pub key_file: String,
    /// `--client-cert-file` / `--peer-client-cert-file`
    pub client_cert_file: String,
    /// `--client-key-file` / `--peer-client-key-file`
    pub client_key_file: String,
    /// `--client-cert-auth` / `--peer-client-cert-auth`
    pub client_cert_auth: bool,
    /// `--trusted-ca-file` / `--peer-trusted-ca-file`
    pub trusted_ca_file: String,
    /// `--client-crl-file` / `--peer-crl-file`
    pub crl_file: String,
    /// `--auto-tls` / `--peer-auto-tls`
    pub auto_tls: bool,
    /// `--peer-cert-allowed-cn` (YAML `allowed-cn`)
    pub allowed_cn: Vec<String>,
    /// `--client-cert-allowed-hostname` / `--peer-cert-allowed-hostname`
    /// (YAML `allowed-hostname`)
    pub allowed_hostname: Vec<String>,
}

impl TlsConfig {
    /// True when nothing TLS-related was asked for.
    pub fn is_empty(&self) -> bool {
        *self == TlsConfig::default()
    }
}

/// The server configuration. Field names follow the flags; URLs are kept in
/// the form Go's `url.URL.String()` gives them (scheme lower-cased), sorted
/// and without duplicates, as etcd keeps them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `--config-file` (or `ETCD_CONFIG_FILE`) when one was used, else empty.
    pub config_file: String,
    /// `--name` ("default").
    pub name: String,
    /// `--data-dir` (default `${name}.etcd`, filled in by [`parse`]).
    pub data_dir: String,
    /// `--wal-dir` (empty: `data_dir/member/wal`, see [`Config::wal_dir_path`]).
    pub wal_dir: String,
    /// `--snapshot-count` (100000; 0 also means 100000).
    pub snapshot_count: u64,
    /// `--max-snapshots` (5; 0 is unlimited).
    pub max_snapshots: u64,
    /// `--max-wals` (5; 0 is unlimited).
    pub max_wals: u64,
    /// `--heartbeat-interval`, milliseconds (100).
    pub heartbeat_interval_ms: u64,
    /// `--election-timeout`, milliseconds (1000).
    pub election_timeout_ms: u64,
    /// `--initial-election-tick-advance` (true).
    pub initial_election_tick_advance: bool,
    /// `--listen-peer-urls` (http://localhost:2380).
    pub listen_peer_urls: Vec<String>,
    /// `--listen-client-urls` (http://localhost:2379).
    pub listen_client_urls: Vec<String>,
    /// `--listen-metrics-urls` (none).
    pub listen_metrics_urls: Vec<String>,
    /// `--initial-advertise-peer-urls` (http://localhost:2380).
    pub initial_advertise_peer_urls: Vec<String>,
    /// `--advertise-client-urls` (http://localhost:2379).
    pub advertise_client_urls: Vec<String>,
    /// `--initial-cluster` ("default=http://localhost:2380"; when left at that
    /// default and `--name` is not "default", rebuilt as
    /// `name=<advertise peer url>,...` as etcd does).
    pub initial_cluster: String,
    /// `--initial-cluster-token` ("etcd-cluster").
    pub initial_cluster_token: String,
    /// `--initial-cluster-state` (new).
    pub initial_cluster_state: ClusterState,
    /// `--strict-reconfig-check` (true).
    pub strict_reconfig_check: bool,
    /// `--pre-vote` (true: etcd 3.5 turned it on by default; 3.4 had false).
    pub pre_vote: bool,
    /// `--enable-v2` (false; deprecated in 3.5).
    pub enable_v2: bool,
    /// `--quota-backend-bytes` (0: 2 GiB; negative: no quota). See
    /// [`Config::quota_backend_bytes_effective`].
    pub quota_backend_bytes: i64,
    /// `--max-request-bytes` (1572864).
    pub max_request_bytes: u64,
    /// `--max-txn-ops` (128).
    pub max_txn_ops: u64,
    /// `--auto-compaction-mode` (periodic).
    pub auto_compaction_mode: CompactionMode,
    /// `--auto-compaction-retention` ("0"), as given. See
    /// [`Config::auto_compaction`].
    pub auto_compaction_retention: String,
    /// `--grpc-keepalive-min-time` (5s).
    pub grpc_keepalive_min_time: Duration,
    /// `--grpc-keepalive-interval` (2h).
    pub grpc_keepalive_interval: Duration,
    /// `--grpc-keepalive-timeout` (20s).
    pub grpc_keepalive_timeout: Duration,
    /// `--logger` ("zap", the only one etcd 3.5 has).
    pub logger: String,
    /// `--log-level` (info).
    pub log_level: LogLevel,
    /// `--log-outputs` (["default"], which is stderr; also "stderr",
    /// "stdout", "systemd/journal" or file paths).
    pub log_outputs: Vec<String>,
    /// `--enable-pprof` (false).
    pub enable_pprof: bool,
    /// `--metrics` ("basic"; or "extensive").
    pub metrics: String,
    /// `--auth-token` ("simple").
    pub auth_token: String,
    /// `--bcrypt-cost` (10; outside 4..=31 etcd warns and uses 10).
    pub bcrypt_cost: u64,
    /// `--auth-token-ttl`, seconds (300).
    pub auth_token_ttl: u64,
    /// `--force-new-cluster` (false).
    pub force_new_cluster: bool,
    /// `--unsafe-no-fsync` (false).
    pub unsafe_no_fsync: bool,
    /// Client-side TLS (stored only, not served).
    pub client_tls: TlsConfig,
    /// Peer-side TLS (stored only, not served).
    pub peer_tls: TlsConfig,
    /// Accepted-and-ignored settings that were given: flag name → value as
    /// given (see [`IGNORED_FLAGS`]).
    pub ignored: BTreeMap<String, String>,
}

impl Default for Config {
    /// etcd's defaults, with the data dir filled in (`default.etcd`).
    fn default() -> Config {
        let mut cfg = Config::unresolved();
        cfg.data_dir = format!("{}.etcd", cfg.name);
        cfg
    }
}

/// What the caller should do with a successful [`parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start the server with [`Parsed::config`].
    Run,
    /// `--help` or `-h`: print [`usage`] and exit 0.
    Help,
    /// `--version`: print [`version_text`] and exit 0.
    Version,
}

/// The result of [`parse`].
#[derive(Clone, Debug)]
pub struct Parsed {
    /// The configuration (defaults when `action` is not [`Action::Run`]).
    pub config: Config,
    /// Warnings to log, in the order etcd would log them.
    pub warnings: Vec<String>,
    /// Run, or print help / version and exit 0.
    pub action: Action,
}

/// Why the configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The command line did not parse (Go's `flag` package; etcd exits 2).
    Flag(String),
    /// The config file could not be read or has an unknown key or a value of
    /// the wrong type.
    File(String),
    /// A value that parsed but is not acceptable (etcd exits 1).
    Invalid(String),
    /// Something etcd supports that this server does not (yet): TLS,
    /// discovery, the v2 proxy, unix sockets.
    Unsupported(String),
}

impl ConfigError {
    /// The exit status etcd uses for this kind of error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Flag(_) => 2,
            _ => 1,
        }
    }

    /// The message alone.
    pub fn message(&self) -> &str {
        match self {
            ConfigError::Flag(m)
            | ConfigError::File(m)
            | ConfigError::Invalid(m)
            | ConfigError::Unsupported(m) => m,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for ConfigError {}

/// One member of `--initial-cluster` with its etcd member ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialMember {
    /// The member's name.
    pub name: String,
    /// Its ID, as [`member_id`] computes it.
    pub id: u64,
    /// Its peer URLs, in the order given.
    pub peer_urls: Vec<String>,
}

/// The cluster `--initial-cluster` describes, with etcd's IDs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialCluster {
    /// [`cluster_id`] of the members' IDs.
    pub cluster_id: u64,
    /// This member's ID.
    pub local_id: u64,
    /// The members in the order `--initial-cluster` first names them.
    pub members: Vec<InitialMember>,
}

impl Config {
    /// etcd's `NewConfig()` plus the flag defaults, before the data dir is
    /// derived from the name.
    fn unresolved() -> Config {
        Config {
            config_file: String::new(),
            name: DEFAULT_NAME.to_string(),
            data_dir: String::new(),
            wal_dir: String::new(),
            snapshot_count: DEFAULT_SNAPSHOT_COUNT,
            max_snapshots: 5,
            max_wals: 5,
            heartbeat_interval_ms: 100,
            election_timeout_ms: 1000,
            initial_election_tick_advance: true,
            listen_peer_urls: vec![DEFAULT_PEER_URL.to_string()],
            listen_client_urls: vec![DEFAULT_CLIENT_URL.to_string()],
            listen_metrics_urls: Vec::new(),
            initial_advertise_peer_urls: vec![DEFAULT_PEER_URL.to_string()],
            advertise_client_urls: vec![DEFAULT_CLIENT_URL.to_string()],
            initial_cluster: DEFAULT_INITIAL_CLUSTER.to_string(),
            initial_cluster_token: DEFAULT_INITIAL_CLUSTER_TOKEN.to_string(),
            initial_cluster_state: ClusterState::New,
            strict_reconfig_check: true,
            pre_vote: true,
            enable_v2: false,
            quota_backend_bytes: 0,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: 128,
            auto_compaction_mode: CompactionMode::Periodic,
            auto_compaction_retention: "0".to_string(),
            grpc_keepalive_min_time: Duration::from_secs(5),
            grpc_keepalive_interval: Duration::from_secs(2 * 60 * 60),
            grpc_keepalive_timeout: Duration::from_secs(20),
            logger: "zap".to_string(),
            log_level: LogLevel::Info,
            log_outputs: vec!["default".to_string()],
            enable_pprof: false,
            metrics: "basic".to_string(),
            auth_token: "simple".to_string(),
            bcrypt_cost: BCRYPT_DEFAULT_COST,
            auth_token_ttl: 300,
            force_new_cluster: false,
            unsafe_no_fsync: false,
            client_tls: TlsConfig::default(),
            peer_tls: TlsConfig::default(),
            ignored: BTreeMap::new(),
        }
    }

    /// Raft heartbeat ticks: always 1 (a tick is one heartbeat interval).
    pub fn heartbeat_ticks(&self) -> u64 {
        1
    }

    /// Raft election ticks: `election_timeout / heartbeat_interval`.
    pub fn election_ticks(&self) -> u64 {
        self.election_timeout_ms / self.heartbeat_interval_ms.max(1)
    }

    /// The Raft tick: one heartbeat interval.
    pub fn tick_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// `data_dir/member`.
    pub fn member_dir(&self) -> PathBuf {
        Path::new(&self.data_dir).join("member")
    }

    /// `--wal-dir`, or `data_dir/member/wal` when that is empty.
    pub fn wal_dir_path(&self) -> PathBuf {
        if self.wal_dir.is_empty() {
            self.member_dir().join("wal")
        } else {
            PathBuf::from(&self.wal_dir)
        }
    }

    /// `data_dir/member/snap`.
    pub fn snap_dir(&self) -> PathBuf {
        self.member_dir().join("snap")
    }

    /// The snapshot count in force (0 means the default, as in etcd).
    pub fn snapshot_count_effective(&self) -> u64 {
        if self.snapshot_count == 0 {
            DEFAULT_SNAPSHOT_COUNT
        } else {
            self.snapshot_count
        }
    }

    /// The backend quota in force: 0 means 2 GiB; a negative value means no
    /// quota (`None`), as in etcd.
    pub fn quota_backend_bytes_effective(&self) -> Option<u64> {
        match self.quota_backend_bytes {
            0 => Some(DEFAULT_QUOTA_BACKEND_BYTES),
            q if q < 0 => None,
            q => Some(q as u64),
        }
    }

    /// True for `--initial-cluster-state new`.
    pub fn is_new_cluster(&self) -> bool {
        self.initial_cluster_state == ClusterState::New
    }

    /// Auto compaction as etcd's `parseCompactionRetention` reads it: a
    /// non-negative integer is hours (periodic) or revisions (revision);
    /// anything else must be a Go duration ("1h", "30m", "5m30s"), which
    /// only periodic mode accepts.
    pub fn auto_compaction(&self) -> Result<AutoCompaction, ConfigError> {
        let r = if self.auto_compaction_retention.is_empty() {
            "0"
        } else {
            self.auto_compaction_retention.as_str()
        };
        if let Ok(h) = r.parse::<i64>()
            && h >= 0
        {
            let h = h as u64;
            return Ok(match (h, self.auto_compaction_mode) {
                (0, _) => AutoCompaction::Disabled,
                (h, CompactionMode::Revision) => AutoCompaction::Revision(h),
                (h, CompactionMode::Periodic) => match h.checked_mul(3600) {
                    Some(s) if s <= (i64::MAX as u64) / 1_000_000_000 => {
                        AutoCompaction::Periodic(Duration::from_secs(s))
                    }
                    _ => {
                        return Err(ConfigError::Invalid(format!(
                            "error parsing CompactionRetention: {r:?} hours is out of range"
                        )));
                    }
                },
            });
        }
        let ns = parse_go_duration(r)
            .map_err(|e| ConfigError::Invalid(format!("error parsing CompactionRetention: {e}")))?;
        if ns < 0 {
            return Err(ConfigError::Invalid(format!(
                "error parsing CompactionRetention: negative retention {r:?}"
            )));
        }
        match self.auto_compaction_mode {
            CompactionMode::Periodic if ns == 0 => Ok(AutoCompaction::Disabled),
            CompactionMode::Periodic => {
                Ok(AutoCompaction::Periodic(Duration::from_nanos(ns as u64)))
            }
            CompactionMode::Revision => Err(ConfigError::Invalid(format!(
                "--auto-compaction-retention {r:?} must be a number of revisions (a \
                 non-negative integer) when --auto-compaction-mode is revision"
            ))),
        }
    }

    /// The members `--initial-cluster` names, in the order first named, each
    /// with its peer URLs in the order given. A name given twice gets both
    /// URLs (etcd's `types.NewURLsMap`: `a=u1,a=u2` is one member with two
    /// peer URLs).
    pub fn initial_members(&self) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
        let mut members: Vec<(String, Vec<String>)> = Vec::new();
        for entry in self.initial_cluster.split(',') {
            if entry.is_empty() {
                continue;
            }
            let (name, url) = entry.split_once('=').unwrap_or((entry, ""));
            let url = parse_url(url).map_err(|e| {
                ConfigError::Invalid(format!(
                    "error setting up initial cluster: {e} (in --initial-cluster {:?})",
                    self.initial_cluster
                ))
            })?;
            check_servable(&url, "initial-cluster")?;
            match members.iter_mut().find(|(n, _)| n == name) {
                Some((_, urls)) => urls.push(url),
                None => members.push((name.to_string(), vec![url])),
            }
        }
        Ok(members)
    }

    /// The initial members with their IDs, and the cluster ID, as etcd's
    /// `membership.NewClusterFromURLsMap` computes them for a new cluster.
    pub fn initial_cluster_ids(&self) -> Result<InitialCluster, ConfigError> {
        let mut members = Vec::new();
        for (name, peer_urls) in self.initial_members()? {
            let id = member_id(&peer_urls, &self.initial_cluster_token);
            if id == 0 {
                return Err(ConfigError::Invalid(
                    "cannot use 0 as member id".to_string(),
                ));
            }
            if members.iter().any(|m: &InitialMember| m.id == id) {
                return Err(ConfigError::Invalid(format!(
                    "member exists with identical ID {id:x} ({name})"
                )));
            }
            members.push(InitialMember {
                name,
                id,
                peer_urls,
            });
        }
        let Some(local_id) = members.iter().find(|m| m.name == self.name).map(|m| m.id) else {
            return Err(ConfigError::Invalid(format!(
                "couldn't find local name {:?} in the initial cluster configuration",
                self.name
            )));
        };
        let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        Ok(InitialCluster {
            cluster_id: cluster_id(&ids),
            local_id,
            members,
        })
    }

    /// The checks etcd makes of `--initial-cluster` when it bootstraps a
    /// member that has no data yet (`embed.StartEtcd` →
    /// `VerifyBootstrap` for state "new", `VerifyJoinExisting` for
    /// "existing"). Call it only when the data dir holds no member yet:
    /// like etcd, a restarted member ignores `--initial-cluster`.
    pub fn verify_bootstrap(&self) -> Result<(), ConfigError> {
        let members = self.initial_members()?;
        let Some((_, urls)) = members.iter().find(|(n, _)| *n == self.name) else {
            return Err(ConfigError::Invalid(format!(
                "couldn't find local name {:?} in the initial cluster configuration",
                self.name
            )));
        };
        if self.is_new_cluster() {
            self.advertise_matches_cluster(urls)?;
        }
        let mut seen = BTreeSet::new();
        for (_, urls) in &members {
            for u in urls {
                if !seen.insert(u.as_str()) {
                    return Err(ConfigError::Invalid(format!(
                        "initial cluster {} has duplicate url",
                        urls_map_string(&members)
                    )));
                }
            }
        }
        Ok(())
    }

    /// etcd's `advertiseMatchesCluster`, without DNS resolution: the
    /// advertised peer URLs must equal this member's `--initial-cluster`
    /// URLs as sets.
    fn advertise_matches_cluster(&self, cluster_urls: &[String]) -> Result<(), ConfigError> {
        let mut urls = cluster_urls.to_vec();
        urls.sort();
        let mut apurls = self.initial_advertise_peer_urls.clone();
        apurls.sort();
        if urls == apurls {
            return Ok(());
        }
        let why = if urls.len() != apurls.len() {
            format!(
                "len({}) != len({})",
                go_quote_list(&apurls),
                go_quote_list(&urls)
            )
        } else {
            let (a, b) = apurls.iter().zip(&urls).find(|(a, b)| a != b).unwrap();
            format!("resolved urls: {a:?} != {b:?}")
        };
        let missing: Vec<String> = urls
            .iter()
            .filter(|u| !apurls.contains(u))
            .map(|u| format!("{}={u}", self.name))
            .collect();
        if !missing.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "--initial-cluster has {} but missing from --initial-advertise-peer-urls={} ({why})",
                missing.join(","),
                apurls.join(",")
            )));
        }
        let missing: Vec<&str> = apurls
            .iter()
            .filter(|u| !urls.contains(u))
            .map(String::as_str)
            .collect();
        let umap: Vec<String> = apurls
            .iter()
            .map(|u| format!("{}={u}", self.name))
            .collect();
        if !missing.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "--initial-advertise-peer-urls has {} but missing from --initial-cluster={}",
                missing.join(","),
                umap.join(",")
            )));
        }
        Err(ConfigError::Invalid(format!(
            "failed to resolve {} to match --initial-cluster={} ({why})",
            apurls.join(","),
            umap.join(",")
        )))
    }

    /// etcd's `embed.Config.Validate`, plus the checks for what this server
    /// does not support. [`parse`] runs it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        // setupLogging
        match self.logger.as_str() {
            "zap" => {}
            "capnslog" => return invalid("--logger=capnslog is removed in v3.5".to_string()),
            other => return invalid(format!("unknown logger option {other:?}")),
        }
        if self.log_outputs.len() > 1 && self.log_outputs.iter().any(|o| o == "default") {
            return invalid("multi logoutput for \"default\" is not supported yet".to_string());
        }
        // checkBindURLs / checkHostURLs
        for (flag, urls) in [
            ("listen-peer-urls", &self.listen_peer_urls),
            ("listen-client-urls", &self.listen_client_urls),
            ("listen-metrics-urls", &self.listen_metrics_urls),
        ] {
            for u in urls {
                check_servable(u, flag)?;
                let host = url_host(u);
                if host != "localhost" && host.parse::<std::net::IpAddr>().is_err() {
                    return invalid(format!("expected IP in URL for binding ({u})"));
                }
            }
        }
        for (flag, urls) in [
            (
                "initial-advertise-peer-urls",
                &self.initial_advertise_peer_urls,
            ),
            ("advertise-client-urls", &self.advertise_client_urls),
        ] {
            for u in urls {
                check_servable(u, flag)?;
                if url_host(u).is_empty() {
                    return invalid(format!(
                        "--{flag} {:?} must be \"host:port\" (unexpected empty host ({u}))",
                        urls.join(",")
                    ));
                }
            }
        }
        if let Some(f) = ["discovery", "discovery-srv", "discovery-srv-name"]
            .into_iter()
            .find(|f| self.ignored.get(*f).is_some_and(|v| !v.is_empty()))
        {
            return Err(ConfigError::Unsupported(format!(
                "--{f} is not supported yet: bootstrap with --initial-cluster"
            )));
        }
        if self.ignored.get("proxy").is_some_and(|p| p != "off") {
            return Err(ConfigError::Unsupported(
                "--proxy is not supported: the v2 proxy is deprecated in etcd 3.5 and not \
                 implemented here"
                    .to_string(),
            ));
        }
        if self.heartbeat_interval_ms == 0 {
            return invalid(format!(
                "--heartbeat-interval must be >0 (set to {}ms)",
                self.heartbeat_interval_ms
            ));
        }
        if self.election_timeout_ms == 0 {
            return invalid(format!(
                "--election-timeout must be >0 (set to {}ms)",
                self.election_timeout_ms
            ));
        }
        if self.heartbeat_interval_ms.saturating_mul(5) > self.election_timeout_ms {
            return invalid(format!(
                "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
                self.election_timeout_ms, self.heartbeat_interval_ms
            ));
        }
        if self.election_timeout_ms > MAX_ELECTION_MS {
            return invalid(format!(
                "--election-timeout[{}ms] is too long, and should be set less than {}ms",
                self.election_timeout_ms, MAX_ELECTION_MS
            ));
        }
        if !self.listen_client_urls.is_empty() && self.advertise_client_urls.is_empty() {
            return invalid(
                "--advertise-client-urls is required when --listen-client-urls is set explicitly"
                    .to_string(),
            );
        }
        if self.max_request_bytes == 0 {
            return invalid("--max-request-bytes must be >0".to_string());
        }
        self.auto_compaction()?;
        Ok(())
    }

    /// etcd's `InitialClusterFromName`: `name=url` for each advertised peer
    /// URL.
    fn initial_cluster_from_name(&self) -> String {
        let n = if self.name.is_empty() {
            DEFAULT_NAME
        } else {
            &self.name
        };
        let parts: Vec<String> = self
            .initial_advertise_peer_urls
            .iter()
            .map(|u| format!("{n}={u}"))
            .collect();
        parts.join(",")
    }
}

/// An etcd member ID (`membership.computeMemberId` for an initial member):
/// the first 8 bytes, big-endian, of SHA-1 over the sorted peer URLs
/// concatenated, followed by the cluster token. The member's name is not
/// part of it.
pub fn member_id<S: AsRef<str>>(peer_urls: &[S], token: &str) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(|u| u.as_ref()).collect();
    urls.sort_unstable();
    let mut b = urls.concat().into_bytes();
    b.extend_from_slice(token.as_bytes());
    let h = sha1(&b);
    u64::from_be_bytes(h[..8].try_into().expect("8 bytes"))
}

/// An etcd cluster ID (`RaftCluster.genID`): the first 8 bytes, big-endian,
/// of SHA-1 over the member IDs sorted ascending, each as 8 bytes
/// big-endian.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let b: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    let h = sha1(&b);
    u64::from_be_bytes(h[..8].try_into().expect("8 bytes"))
}

/// SHA-1 (FIPS 180-4), only for member and cluster IDs.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&(data.len() as u64).wrapping_mul(8).to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes(word.try_into().expect("4 bytes"));
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (o, x) in out.chunks_exact_mut(4).zip(h) {
        o.copy_from_slice(&x.to_be_bytes());
    }
    out
}

/// What `--version` prints (etcd prints these four lines too).
pub fn version_text() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    format!(
        "etcd Version: {ETCD_VERSION}\n\
         Git SHA: Not provided (etcd-rs {}, a Rust implementation of etcd {ETCD_VERSION})\n\
         Go Version: none (written in Rust)\n\
         Go OS/Arch: {}/{arch}\n",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
    )
}

/// What `--help` prints.
pub fn usage() -> &'static str {
    USAGE
}

const USAGE: &str = "Usage:

  etcd [flags]
    Start an etcd server.

  etcd --version
    Show the version of etcd.

  etcd -h | --help
    Show the help information about etcd.

  etcd --config-file
    Path to the server configuration file. Note that if a configuration file is provided, other command line flags and environment variables will be ignored.

Every flag can also be set with an environment variable: ETCD_ followed by the
flag name upper-cased with '-' replaced by '_' (--data-dir: ETCD_DATA_DIR). A
flag given on the command line must not also be set in the environment.

Member:
  --name 'default'
    Human-readable name for this member.
  --data-dir '${name}.etcd'
    Path to the data directory.
  --wal-dir ''
    Path to the dedicated wal directory.
  --snapshot-count '100000'
    Number of committed transactions to trigger a snapshot to disk.
  --heartbeat-interval '100'
    Time (in milliseconds) of a heartbeat interval.
  --election-timeout '1000'
    Time (in milliseconds) for an election to timeout. See tuning documentation for details.
  --initial-election-tick-advance 'true'
    Whether to fast-forward initial election ticks on boot for faster election.
  --listen-peer-urls 'http://localhost:2380'
    List of URLs to listen on for peer traffic.
  --listen-client-urls 'http://localhost:2379'
    List of URLs to listen on for client traffic.
  --max-snapshots '5'
    Maximum number of snapshot files to retain (0 is unlimited).
  --max-wals '5'
    Maximum number of wal files to retain (0 is unlimited).
  --quota-backend-bytes '0'
    Raise alarms when backend size exceeds the given quota (0 defaults to low space quota).
  --max-txn-ops '128'
    Maximum number of operations permitted in a transaction.
  --max-request-bytes '1572864'
    Maximum client request size in bytes the server will accept.
  --grpc-keepalive-min-time '5s'
    Minimum duration interval that a client should wait before pinging server.
  --grpc-keepalive-interval '2h'
    Frequency duration of server-to-client ping to check if a connection is alive (0 to disable).
  --grpc-keepalive-timeout '20s'
    Additional duration of wait before closing a non-responsive connection (0 to disable).

Clustering:
  --initial-advertise-peer-urls 'http://localhost:2380'
    List of this member's peer URLs to advertise to the rest of the cluster.
  --initial-cluster 'default=http://localhost:2380'
    Initial cluster configuration for bootstrapping.
  --initial-cluster-state 'new'
    Initial cluster state ('new' or 'existing').
  --initial-cluster-token 'etcd-cluster'
    Initial cluster token for the etcd cluster during bootstrap.
    Specifying this can protect you from unintended cross-cluster interaction when running multiple clusters.
  --advertise-client-urls 'http://localhost:2379'
    List of this member's client URLs to advertise to the public.
    The client URLs advertised should be accessible to machines that talk to etcd cluster. etcd client libraries parse these URLs to connect to the cluster.
  --strict-reconfig-check 'true'
    Reject reconfiguration requests that would cause quorum loss.
  --pre-vote 'true'
    Enable to run an additional Raft election phase.
  --auto-compaction-retention '0'
    Auto compaction retention length. 0 means disable auto compaction.
  --auto-compaction-mode 'periodic'
    Interpret 'auto-compaction-retention' one of: periodic|revision. 'periodic' for duration based retention, defaulting to hours if no time unit is provided (e.g. '5m'). 'revision' for revision number based retention.
  --enable-v2 'false'
    Accept etcd V2 client requests. Deprecated and to be decommissioned in v3.6.

Security (accepted and stored; TLS is not served yet, and https:// URLs are refused):
  --cert-file ''
    Path to the client server TLS cert file.
  --key-file ''
    Path to the client server TLS key file.
  --client-cert-auth 'false'
    Enable client cert authentication.
  --client-crl-file ''
    Path to the client certificate revocation list file.
  --client-cert-allowed-hostname ''
    Allowed TLS hostname for client cert authentication.
  --trusted-ca-file ''
    Path to the client server TLS trusted CA cert file.
  --auto-tls 'false'
    Client TLS using generated certificates.
  --peer-cert-file ''
    Path to the peer server TLS cert file.
  --peer-key-file ''
    Path to the peer server TLS key file.
  --peer-client-cert-auth 'false'
    Enable peer client cert authentication.
  --peer-trusted-ca-file ''
    Path to the peer server TLS trusted CA file.
  --peer-cert-allowed-cn ''
    Required CN for client certs connecting to the peer endpoint.
  --peer-cert-allowed-hostname ''
    Allowed TLS hostname for inter peer authentication.
  --peer-auto-tls 'false'
    Peer TLS using self-generated certificates if --peer-key-file and --peer-cert-file are not provided.
  --peer-client-cert-file ''
    Path to an explicit peer client TLS cert file otherwise peer cert file will be used when client auth is required.
  --peer-client-key-file ''
    Path to an explicit peer client TLS key file otherwise peer key file will be used when client auth is required.
  --peer-crl-file ''
    Path to the peer certificate revocation list file.

Auth:
  --auth-token 'simple'
    Specify a v3 authentication token type and its options ('simple' or 'jwt').
  --bcrypt-cost 10
    Specify the cost / strength of the bcrypt algorithm for hashing auth passwords. Valid values are between 4 and 31.
  --auth-token-ttl 300
    Time (in seconds) of the auth-token-ttl.

Profiling and Monitoring:
  --enable-pprof 'false'
    Enable runtime profiling data via HTTP server. Address is at client URL + \"/debug/pprof/\"
  --metrics 'basic'
    Set level of detail for exported metrics, specify 'extensive' to include server side grpc histogram metrics.
  --listen-metrics-urls ''
    List of URLs to listen on for the metrics and health endpoints.

Logging:
  --logger 'zap'
    Currently only supports 'zap' for structured logging.
  --log-outputs 'default'
    Specify 'stdout' or 'stderr' to skip journald logging even when running under systemd, or list of comma separated output targets.
  --log-level 'info'
    Configures log level. Only supports debug, info, warn, error, panic, or fatal.

Unsafe feature:
  --force-new-cluster 'false'
    Force to create a new one-member cluster.
  --unsafe-no-fsync 'false'
    Disables fsync, unsafe, will cause data loss.

Every other etcd 3.5 flag (backend and socket tuning, discovery, the v2 proxy,
CORS, log rotation, the experimental-* flags) is accepted for compatibility and
has no effect; discovery and the proxy are refused if actually requested.
";

// ---------------------------------------------------------------------------
// The flag table.

/// How a flag's value is read (Go's `flag.Value` kinds etcd uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bool,
    Str,
    /// Go `uint` (64 bits), parsed with base prefixes like Go's.
    Uint,
    Uint32,
    Uint64,
    /// Go `int` (64 bits).
    Int,
    Int64,
    /// Go `time.Duration` ("5s", "2h45m"; YAML: integer nanoseconds).
    Duration,
    /// Comma-separated URLs.
    Urls,
    /// Comma-separated strings (YAML: a list).
    List,
    /// etcd's `IgnoredFlag`: boolean-like, any value, no YAML key.
    Ignored,
}

struct FlagSpec {
    name: &'static str,
    kind: Kind,
    /// Whether the config file has a key of the same name.
    yaml: bool,
}

const fn y(name: &'static str, kind: Kind) -> FlagSpec {
    FlagSpec {
        name,
        kind,
        yaml: true,
    }
}

const fn c(name: &'static str, kind: Kind) -> FlagSpec {
    FlagSpec {
        name,
        kind,
        yaml: false,
    }
}

/// Every flag etcd 3.5 defines (`etcdmain.newConfig`), with its kind and
/// whether `embed.Config` has a YAML key of the same name.
const FLAGS: &[FlagSpec] = &[
    c("config-file", Kind::Str),
    y("data-dir", Kind::Str),
    y("wal-dir", Kind::Str),
    y("listen-peer-urls", Kind::Urls),
    y("listen-client-urls", Kind::Urls),
    y("listen-client-http-urls", Kind::Urls),
    y("listen-metrics-urls", Kind::Urls),
    y("max-snapshots", Kind::Uint),
    y("max-wals", Kind::Uint),
    y("name", Kind::Str),
    y("snapshot-count", Kind::Uint64),
    y("heartbeat-interval", Kind::Uint),
    y("election-timeout", Kind::Uint),
    y("initial-election-tick-advance", Kind::Bool),
    y("quota-backend-bytes", Kind::Int64),
    y("backend-bbolt-freelist-type", Kind::Str),
    y("backend-batch-interval", Kind::Duration),
    y("backend-batch-limit", Kind::Int),
    y("max-txn-ops", Kind::Uint),
    y("max-request-bytes", Kind::Uint),
    y("grpc-keepalive-min-time", Kind::Duration),
    y("grpc-keepalive-interval", Kind::Duration),
    y("grpc-keepalive-timeout", Kind::Duration),
    c("socket-reuse-port", Kind::Bool),
    c("socket-reuse-address", Kind::Bool),
    y("max-concurrent-streams", Kind::Uint32),
    c("raft-read-timeout", Kind::Duration),
    c("raft-write-timeout", Kind::Duration),
    y("initial-advertise-peer-urls", Kind::Urls),
    y("advertise-client-urls", Kind::Urls),
    y("discovery", Kind::Str),
    y("discovery-fallback", Kind::Str),
    y("discovery-proxy", Kind::Str),
    y("discovery-srv", Kind::Str),
    y("discovery-srv-name", Kind::Str),
    y("initial-cluster", Kind::Str),
    y("initial-cluster-token", Kind::Str),
    y("initial-cluster-state", Kind::Str),
    y("strict-reconfig-check", Kind::Bool),
    y("pre-vote", Kind::Bool),
    y("enable-v2", Kind::Bool),
    y("experimental-enable-v2v3", Kind::Str),
    y("v2-deprecation", Kind::Str),
    y("proxy", Kind::Str),
    y("proxy-failure-wait", Kind::Uint),
    y("proxy-refresh-interval", Kind::Uint),
    y("proxy-dial-timeout", Kind::Uint),
    y("proxy-write-timeout", Kind::Uint),
    y("proxy-read-timeout", Kind::Uint),
    c("cert-file", Kind::Str),
    c("key-file", Kind::Str),
    c("client-cert-file", Kind::Str),
    c("client-key-file", Kind::Str),
    c("client-cert-auth", Kind::Bool),
    c("client-crl-file", Kind::Str),
    c("client-cert-allowed-hostname", Kind::List),
    c("trusted-ca-file", Kind::Str),
    c("auto-tls", Kind::Bool),
    c("peer-cert-file", Kind::Str),
    c("peer-key-file", Kind::Str),
    c("peer-client-cert-file", Kind::Str),
    c("peer-client-key-file", Kind::Str),
    c("peer-client-cert-auth", Kind::Bool),
    c("peer-trusted-ca-file", Kind::Str),
    c("peer-auto-tls", Kind::Bool),
    y("self-signed-cert-validity", Kind::Uint),
    c("peer-crl-file", Kind::Str),
    c("peer-cert-allowed-cn", Kind::List),
    c("peer-cert-allowed-hostname", Kind::List),
    y("cipher-suites", Kind::List),
    c("experimental-peer-skip-client-san-verification", Kind::Bool),
    y("tls-min-version", Kind::Str),
    y("tls-max-version", Kind::Str),
    y("cors", Kind::Str),
    y("host-whitelist", Kind::Str),
    y("logger", Kind::Str),
    y("log-outputs", Kind::List),
    y("log-level", Kind::Str),
    y("enable-log-rotation", Kind::Bool),
    y("log-rotation-config-json", Kind::Str),
    c("version", Kind::Bool),
    y("auto-compaction-retention", Kind::Str),
    y("auto-compaction-mode", Kind::Str),
    y("enable-pprof", Kind::Bool),
    y("metrics", Kind::Str),
    y("experimental-enable-distributed-tracing", Kind::Bool),
    y("experimental-distributed-tracing-address", Kind::Str),
    y("experimental-distributed-tracing-service-name", Kind::Str),
    y("experimental-distributed-tracing-instance-id", Kind::Str),
    y("experimental-distributed-tracing-sampling-rate", Kind::Int),
    y("auth-token", Kind::Str),
    y("bcrypt-cost", Kind::Uint),
    y("auth-token-ttl", Kind::Uint),
    y("enable-grpc-gateway", Kind::Bool),
    y("experimental-initial-corrupt-check", Kind::Bool),
    y("experimental-corrupt-check-time", Kind::Duration),
    y("experimental-compact-hash-check-enabled", Kind::Bool),
    y("experimental-compact-hash-check-time", Kind::Duration),
    y("experimental-enable-lease-checkpoint", Kind::Bool),
    y("experimental-enable-lease-checkpoint-persist", Kind::Bool),
    y("experimental-compaction-batch-limit", Kind::Int),
    y("experimental-compaction-sleep-interval", Kind::Duration),
    y(
        "experimental-watch-progress-notify-interval",
        Kind::Duration,
    ),
    y("experimental-downgrade-check-time", Kind::Duration),
    y("experimental-warning-apply-duration", Kind::Duration),
    y("experimental-memory-mlock", Kind::Bool),
    y("experimental-txn-mode-write-with-shared-buffer", Kind::Bool),
    y("experimental-stop-grpc-service-on-defrag", Kind::Bool),
    y(
        "experimental-bootstrap-defrag-threshold-megabytes",
        Kind::Uint,
    ),
    // YAML key: experimental-snapshot-catch-up-entries (see load_file).
    c("experimental-snapshot-catchup-entries", Kind::Uint64),
    y("unsafe-no-fsync", Kind::Bool),
    y("force-new-cluster", Kind::Bool),
    c("cluster-active-size", Kind::Ignored),
    c("cluster-remove-delay", Kind::Ignored),
    c("cluster-sync-interval", Kind::Ignored),
    c("config", Kind::Ignored),
    c("force", Kind::Ignored),
    c("max-result-buffer", Kind::Ignored),
    c("max-retry-attempts", Kind::Ignored),
    c("peer-heartbeat-interval", Kind::Ignored),
    c("peer-election-timeout", Kind::Ignored),
    c("retry-interval", Kind::Ignored),
    c("snapshot", Kind::Ignored),
    c("v", Kind::Ignored),
    c("vv", Kind::Ignored),
    c("test.coverprofile", Kind::Ignored),
    c("test.outputdir", Kind::Ignored),
];

/// Flags whose use etcd 3.5 warns about (`deprecatedFlags`).
const DEPRECATED_FLAGS: &[&str] = &[
    "enable-v2",
    "experimental-enable-v2v3",
    "proxy",
    "proxy-failure-wait",
    "proxy-refresh-interval",
    "proxy-dial-timeout",
    "proxy-write-timeout",
    "proxy-read-timeout",
];

fn lookup(name: &str) -> Option<&'static FlagSpec> {
    FLAGS.iter().find(|f| f.name == name)
}

/// `flags.FlagToEnv("ETCD", name)`.
fn flag_to_env(name: &str) -> String {
    format!("ETCD_{}", name.replace('-', "_").to_uppercase())
}

/// Sets one flag from its textual value, as the flag's `Set` would. The
/// error is the text Go's flag package puts after "invalid value ... for
/// flag -x: ".
fn apply(cfg: &mut Config, spec: &FlagSpec, v: &str) -> Result<(), String> {
    match spec.name {
        "config-file" => cfg.config_file = v.to_string(),
        "data-dir" => cfg.data_dir = v.to_string(),
        "wal-dir" => cfg.wal_dir = v.to_string(),
        "name" => cfg.name = v.to_string(),
        "listen-peer-urls" => cfg.listen_peer_urls = parse_urls(v, true)?,
        "listen-client-urls" => cfg.listen_client_urls = parse_urls(v, true)?,
        "listen-metrics-urls" => cfg.listen_metrics_urls = parse_urls(v, false)?,
        "initial-advertise-peer-urls" => cfg.initial_advertise_peer_urls = parse_urls(v, true)?,
        "advertise-client-urls" => cfg.advertise_client_urls = parse_urls(v, true)?,
        "max-snapshots" => cfg.max_snapshots = go_uint(v, 64)?,
        "max-wals" => cfg.max_wals = go_uint(v, 64)?,
        "snapshot-count" => cfg.snapshot_count = go_uint(v, 64)?,
        "heartbeat-interval" => cfg.heartbeat_interval_ms = go_uint(v, 64)?,
        "election-timeout" => cfg.election_timeout_ms = go_uint(v, 64)?,
        "initial-election-tick-advance" => cfg.initial_election_tick_advance = go_bool(v)?,
        "quota-backend-bytes" => cfg.quota_backend_bytes = go_int(v)?,
        "max-txn-ops" => cfg.max_txn_ops = go_uint(v, 64)?,
        "max-request-bytes" => cfg.max_request_bytes = go_uint(v, 64)?,
        "grpc-keepalive-min-time" => cfg.grpc_keepalive_min_time = std_duration(v)?,
        "grpc-keepalive-interval" => cfg.grpc_keepalive_interval = std_duration(v)?,
        "grpc-keepalive-timeout" => cfg.grpc_keepalive_timeout = std_duration(v)?,
        "initial-cluster" => cfg.initial_cluster = v.to_string(),
        "initial-cluster-token" => cfg.initial_cluster_token = v.to_string(),
        "initial-cluster-state" => {
            cfg.initial_cluster_state = match v {
                "new" => ClusterState::New,
                "existing" => ClusterState::Existing,
                _ => return Err("invalid value".to_string()),
            }
        }
        "strict-reconfig-check" => cfg.strict_reconfig_check = go_bool(v)?,
        "pre-vote" => cfg.pre_vote = go_bool(v)?,
        "enable-v2" => cfg.enable_v2 = go_bool(v)?,
        "cert-file" => cfg.client_tls.cert_file = v.to_string(),
        "key-file" => cfg.client_tls.key_file = v.to_string(),
        "client-cert-file" => cfg.client_tls.client_cert_file = v.to_string(),
        "client-key-file" => cfg.client_tls.client_key_file = v.to_string(),
        "client-cert-auth" => cfg.client_tls.client_cert_auth = go_bool(v)?,
        "client-crl-file" => cfg.client_tls.crl_file = v.to_string(),
        "client-cert-allowed-hostname" => cfg.client_tls.allowed_hostname = split_list(v),
        "trusted-ca-file" => cfg.client_tls.trusted_ca_file = v.to_string(),
        "auto-tls" => cfg.client_tls.auto_tls = go_bool(v)?,
        "peer-cert-file" => cfg.peer_tls.cert_file = v.to_string(),
        "peer-key-file" => cfg.peer_tls.key_file = v.to_string(),
        "peer-client-cert-file" => cfg.peer_tls.client_cert_file = v.to_string(),
        "peer-client-key-file" => cfg.peer_tls.client_key_file = v.to_string(),
        "peer-client-cert-auth" => cfg.peer_tls.client_cert_auth = go_bool(v)?,
        "peer-trusted-ca-file" => cfg.peer_tls.trusted_ca_file = v.to_string(),
        "peer-auto-tls" => cfg.peer_tls.auto_tls = go_bool(v)?,
        "peer-crl-file" => cfg.peer_tls.crl_file = v.to_string(),
        "peer-cert-allowed-cn" => cfg.peer_tls.allowed_cn = split_list(v),
        "peer-cert-allowed-hostname" => cfg.peer_tls.allowed_hostname = split_list(v),
        "logger" => cfg.logger = v.to_string(),
        "log-outputs" => {
            // flags.UniqueStringsValue: a set, listed sorted.
            let set: BTreeSet<String> = v.split(',').map(str::to_string).collect();
            cfg.log_outputs = set.into_iter().collect();
        }
        "log-level" => cfg.log_level = LogLevel::parse(v)?,
        "auto-compaction-retention" => cfg.auto_compaction_retention = v.to_string(),
        "auto-compaction-mode" => {
            cfg.auto_compaction_mode = match v {
                // etcd lets "" through Validate; it behaves as periodic here.
                "periodic" | "" => CompactionMode::Periodic,
                "revision" => CompactionMode::Revision,
                _ => return Err(format!("unknown auto-compaction-mode {v:?}")),
            }
        }
        "enable-pprof" => cfg.enable_pprof = go_bool(v)?,
        "metrics" => cfg.metrics = v.to_string(),
        "auth-token" => cfg.auth_token = v.to_string(),
        "bcrypt-cost" => cfg.bcrypt_cost = go_uint(v, 64)?,
        "auth-token-ttl" => cfg.auth_token_ttl = go_uint(v, 64)?,
        "force-new-cluster" => cfg.force_new_cluster = go_bool(v)?,
        "unsafe-no-fsync" => cfg.unsafe_no_fsync = go_bool(v)?,
        name => {
            check_kind(spec.kind, v)?;
            let choices: &[&str] = match name {
                "proxy" => &["off", "readonly", "on"],
                "discovery-fallback" => &["exit", "proxy"],
                "v2-deprecation" => &[
                    "not-yet",
                    "write-only",
                    "write-only-skip-check",
                    "write-only-drop-data",
                    "gone",
                ],
                _ => &[],
            };
            if name == "v2-deprecation" {
                if let Some(bad) = v.split(',').find(|x| !choices.contains(x)) {
                    return Err(format!("invalid value {bad:?}"));
                }
            } else if !choices.is_empty() && !choices.contains(&v) {
                return Err("invalid value".to_string());
            }
            cfg.ignored.insert(name.to_string(), v.to_string());
        }
    }
    Ok(())
}

/// Type-checks a value for a flag whose value is not kept in a typed field.
fn check_kind(kind: Kind, v: &str) -> Result<(), String> {
    match kind {
        Kind::Bool => go_bool(v).map(drop),
        Kind::Uint | Kind::Uint64 => go_uint(v, 64).map(drop),
        Kind::Uint32 => go_uint(v, 32).map(drop),
        Kind::Int | Kind::Int64 => go_int(v).map(drop),
        Kind::Duration => parse_go_duration(v)
            .map(drop)
            .map_err(|_| "parse error".to_string()),
        Kind::Urls => parse_urls(v, false).map(drop),
        Kind::Str | Kind::List | Kind::Ignored => Ok(()),
    }
}

fn split_list(v: &str) -> Vec<String> {
    if v.is_empty() {
        Vec::new()
    } else {
        v.split(',').map(str::to_string).collect()
    }
}

// ---------------------------------------------------------------------------
// Parsing.

/// Parses etcd's command line (`args`, without the program name) and
/// environment (`env`, all variables; only `ETCD_*` matter), reading the
/// config file if one is named. Reads nothing else from the process.
pub fn parse(args: &[String], env: &[(String, String)]) -> Result<Parsed, ConfigError> {
    // Go's os.Getenv: the first definition of a name wins.
    let mut env_seen = BTreeSet::new();
    let env: Vec<(&str, &str)> = env
        .iter()
        .filter(|(k, _)| env_seen.insert(k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let getenv = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);

    let mut warnings = Vec::new();
    let mut cfg = Config::unresolved();
    let mut cmdline: BTreeSet<&'static str> = BTreeSet::new();
    let mut print_version = false;

    // 1. The command line, as Go's flag.FlagSet.Parse reads it.
    let mut i = 0;
    let mut rest: &[String] = &[];
    while i < args.len() {
        let s = args[i].as_str();
        if s.len() < 2 || !s.starts_with('-') {
            rest = &args[i..];
            break;
        }
        let minuses = if s.as_bytes()[1] == b'-' { 2 } else { 1 };
        if s == "--" {
            rest = &args[i + 1..];
            break;
        }
        let name = &s[minuses..];
        if name.is_empty() || name.starts_with('-') || name.starts_with('=') {
            return Err(ConfigError::Flag(format!("bad flag syntax: {s}")));
        }
        i += 1;
        // The '=' cannot be the first character (rejected above).
        let (name, value) = match name.char_indices().skip(1).find(|(_, ch)| *ch == '=') {
            Some((p, _)) => (&name[..p], Some(&name[p + 1..])),
            None => (name, None),
        };
        let Some(spec) = lookup(name) else {
            if name == "help" || name == "h" {
                return Ok(Parsed {
                    config: Config::default(),
                    warnings,
                    action: Action::Help,
                });
            }
            return Err(ConfigError::Flag(format!(
                "flag provided but not defined: -{name}"
            )));
        };
        if matches!(spec.kind, Kind::Bool | Kind::Ignored) {
            // A boolean flag never takes the next argument.
            let v = value.unwrap_or("true");
            if spec.kind == Kind::Bool && go_bool(v).is_err() {
                return Err(ConfigError::Flag(format!(
                    "invalid boolean value {v:?} for -{name}: parse error"
                )));
            }
            if spec.name == "version" {
                print_version = go_bool(v).unwrap_or(false);
            } else {
                apply(&mut cfg, spec, v).map_err(|e| {
                    ConfigError::Flag(format!("invalid boolean value {v:?} for -{name}: {e}"))
                })?;
            }
        } else {
            let v = match value {
                Some(v) => v,
                None if i < args.len() => {
                    i += 1;
                    args[i - 1].as_str()
                }
                None => {
                    return Err(ConfigError::Flag(format!(
                        "flag needs an argument: -{name}"
                    )));
                }
            };
            apply(&mut cfg, spec, v).map_err(|e| {
                ConfigError::Flag(format!("invalid value {v:?} for flag -{name}: {e}"))
            })?;
        }
        cmdline.insert(spec.name);
    }
    if let Some(arg) = rest.first() {
        return Err(ConfigError::Invalid(format!("'{arg}' is not a valid flag")));
    }
    if print_version {
        return Ok(Parsed {
            config: Config::default(),
            warnings,
            action: Action::Version,
        });
    }

    // 2. A config file replaces everything else.
    let mut config_file = cfg.config_file.clone();
    if config_file.is_empty() {
        config_file = getenv("ETCD_CONFIG_FILE").unwrap_or("").to_string();
    }
    let visited: BTreeSet<&'static str>;
    if !config_file.is_empty() {
        let mut fcfg = Config::unresolved();
        fcfg.config_file = config_file.clone();
        load_file(&mut fcfg, &config_file)?;
        warnings.push(format!(
            "loaded server configuration from {config_file:?}; other configuration command \
             line flags and environment variables will be ignored if provided"
        ));
        let ignored_flags: Vec<String> = cmdline
            .iter()
            .filter(|f| **f != "config-file")
            .map(|f| format!("--{f}"))
            .collect();
        if !ignored_flags.is_empty() {
            warnings.push(format!(
                "ignoring command-line flags because a config file is used: {}",
                ignored_flags.join(", ")
            ));
        }
        let ignored_env: Vec<&str> = env
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| k.starts_with("ETCD_") && *k != "ETCD_CONFIG_FILE")
            .collect();
        if !ignored_env.is_empty() {
            warnings.push(format!(
                "ignoring environment variables because a config file is used: {}",
                ignored_env.join(", ")
            ));
        }
        cfg = fcfg;
        visited = cmdline;
    } else {
        // 3. The environment fills in flags not given on the command line.
        let mut set = cmdline.clone();
        apply_env(&mut cfg, &cmdline, &mut set, &env, &mut warnings)?;
        // etcd: an explicit --listen-client-urls drops the default
        // --advertise-client-urls, so it must be given too.
        if set.contains("listen-client-urls") && !set.contains("advertise-client-urls") {
            cfg.advertise_client_urls.clear();
        }
        visited = set;
    }

    cfg.validate()?;
    for f in visited.iter().filter(|f| DEPRECATED_FLAGS.contains(f)) {
        warnings.push(format!(
            "--{f} is deprecated in 3.5 and will be decommissioned in 3.6."
        ));
    }

    // etcdmain: UpdateDefaultClusterFromName and the default data dir.
    if cfg.name != DEFAULT_NAME && cfg.initial_cluster == DEFAULT_INITIAL_CLUSTER {
        cfg.initial_cluster = cfg.initial_cluster_from_name();
    }
    if cfg.data_dir.is_empty() {
        cfg.data_dir = format!("{}.etcd", cfg.name);
        warnings.push(format!(
            "'data-dir' was empty; using default: {:?}",
            cfg.data_dir
        ));
    }
    finish_warnings(&mut cfg, &mut warnings);
    Ok(Parsed {
        config: cfg,
        warnings,
        action: Action::Run,
    })
}

/// `flags.SetFlagsFromEnv` and its `verifyEnv`, plus etcdmain's special
/// case for `ETCD_VERSION`.
fn apply_env(
    cfg: &mut Config,
    cmdline: &BTreeSet<&'static str>,
    set: &mut BTreeSet<&'static str>,
    env: &[(&str, &str)],
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let mut env = env.to_vec();
    if let Some((_, v)) = env.iter().find(|(k, _)| *k == "ETCD_VERSION")
        && !v.is_empty()
    {
        warnings.push(format!(
            "cannot set special environment variable ETCD_VERSION={v}"
        ));
        env.retain(|(k, _)| *k != "ETCD_VERSION");
    }
    let already: BTreeSet<String> = cmdline.iter().map(|f| flag_to_env(f)).collect();
    let mut used = BTreeSet::new();
    let mut err = None;
    // VisitAll goes through the flags in name order; the last error wins.
    let mut specs: Vec<&FlagSpec> = FLAGS.iter().collect();
    specs.sort_by_key(|s| s.name);
    for spec in specs {
        let key = flag_to_env(spec.name);
        if already.contains(&key) {
            continue;
        }
        let Some((_, v)) = env.iter().find(|(k, _)| *k == key) else {
            continue;
        };
        if v.is_empty() {
            continue;
        }
        used.insert(key.clone());
        let r = if spec.name == "version" {
            go_bool(v).map(drop)
        } else {
            apply(cfg, spec, v)
        };
        match r {
            Ok(()) => {
                set.insert(spec.name);
            }
            Err(e) => err = Some(format!("invalid value {v:?} for {key}: {e}")),
        }
    }
    for (k, v) in &env {
        if used.contains(*k) {
            continue;
        }
        if already.contains(*k) {
            return Err(ConfigError::Invalid(format!(
                "conflicting environment variable {k:?} is shadowed by corresponding \
                 command-line flag (either unset environment variable or disable flag)"
            )));
        }
        if k.starts_with("ETCD_") {
            warnings.push(format!("unrecognized environment variable {k}={v}"));
        }
    }
    match err {
        Some(e) => Err(ConfigError::Invalid(e)),
        None => Ok(()),
    }
}

/// Warnings etcd logs later, at server start, plus ours for what is
/// accepted but not acted on.
fn finish_warnings(cfg: &mut Config, warnings: &mut Vec<String>) {
    if cfg.bcrypt_cost < BCRYPT_MIN_COST || cfg.bcrypt_cost > BCRYPT_MAX_COST {
        warnings.push(format!(
            "use default bcrypt cost instead of the invalid given cost (min-cost {BCRYPT_MIN_COST}, \
             max-cost {BCRYPT_MAX_COST}, default-cost {BCRYPT_DEFAULT_COST}, given-cost {})",
            cfg.bcrypt_cost
        ));
        cfg.bcrypt_cost = BCRYPT_DEFAULT_COST;
    }
    if cfg.quota_backend_bytes > MAX_QUOTA_BACKEND_BYTES as i64 {
        warnings.push(format!(
            "quota exceeds the maximum value (quota-size-bytes {}, quota-maximum-size-bytes \
             {MAX_QUOTA_BACKEND_BYTES})",
            cfg.quota_backend_bytes
        ));
    }
    if cfg.max_request_bytes > RECOMMENDED_MAX_REQUEST_BYTES {
        warnings.push(format!(
            "exceeded recommended request limit (max-request-bytes {}, recommended-request-bytes \
             {RECOMMENDED_MAX_REQUEST_BYTES})",
            cfg.max_request_bytes
        ));
    }
    if !cfg.client_tls.is_empty() || !cfg.peer_tls.is_empty() {
        warnings.push(
            "TLS settings are stored but TLS is not served yet: client and peer traffic stay \
             plain http"
                .to_string(),
        );
    }
    if !cfg.ignored.is_empty() {
        let names: Vec<String> = cfg.ignored.keys().map(|k| format!("--{k}")).collect();
        warnings.push(format!(
            "accepted for etcd compatibility but without effect here: {}",
            names.join(", ")
        ));
    }
}

// ---------------------------------------------------------------------------
// The config file.

/// `embed.ConfigFromFile` (+ etcdmain's proxy keys): YAML with the flags'
/// names as keys, over etcd's defaults. Unlike etcd, which ignores unknown
/// keys, an unknown key is an error.
fn load_file(cfg: &mut Config, path: &str) -> Result<(), ConfigError> {
    let ferr = |m: String| ConfigError::File(format!("config file {path}: {m}"));
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::File(format!("open {path}: {e}")))?;
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| ferr(format!("invalid YAML: {e}")))?;
    let map = match doc {
        serde_yaml::Value::Null => return Ok(()),
        serde_yaml::Value::Mapping(m) => m,
        other => {
            return Err(ferr(format!(
                "expected a mapping of settings, got {}",
                describe(&other)
            )));
        }
    };
    for (k, v) in &map {
        let serde_yaml::Value::String(key) = k else {
            return Err(ferr(format!("unknown key {}", describe(k))));
        };
        // encoding/json matches keys case-insensitively.
        let lkey = key.to_ascii_lowercase();
        if v.is_null() {
            // JSON null leaves the default in place.
            continue;
        }
        match lkey.as_str() {
            "client-transport-security" | "peer-transport-security" => {
                let tls = if lkey.starts_with("client") {
                    &mut cfg.client_tls
                } else {
                    &mut cfg.peer_tls
                };
                load_tls(tls, key, v).map_err(ferr)?;
            }
            "socket-options" => {
                let serde_yaml::Value::Mapping(m) = v else {
                    return Err(ferr(format!(
                        "invalid value for {key:?}: expected a mapping, got {}",
                        describe(v)
                    )));
                };
                for (sk, sv) in m {
                    let flag = match sk.as_str().map(str::to_ascii_lowercase).as_deref() {
                        Some("reuse-port") => "socket-reuse-port",
                        Some("reuse-address") => "socket-reuse-address",
                        _ => {
                            return Err(ferr(format!("unknown key {} in {key:?}", describe(sk))));
                        }
                    };
                    if sv.is_null() {
                        continue;
                    }
                    let spec = lookup(flag).expect("in the table");
                    let raw = yaml_scalar(spec, sv).map_err(|want| {
                        ferr(format!(
                            "invalid value for {key:?}.{}: expected {want}, got {}",
                            sk.as_str().unwrap_or("?"),
                            describe(sv)
                        ))
                    })?;
                    apply(cfg, spec, &raw).map_err(|e| ferr(e.to_string()))?;
                }
            }
            _ => {
                let flag = if lkey == "experimental-snapshot-catch-up-entries" {
                    "experimental-snapshot-catchup-entries"
                } else {
                    lkey.as_str()
                };
                let spec = lookup(flag)
                    .filter(|s| s.yaml || flag == "experimental-snapshot-catchup-entries")
                    .ok_or_else(|| ferr(unknown_key_message(key)))?;
                let raw = yaml_scalar(spec, v).map_err(|want| {
                    ferr(format!(
                        "invalid value for {key:?}: expected {want}, got {}",
                        describe(v)
                    ))
                })?;
                apply(cfg, spec, &raw).map_err(|e| match spec.name {
                    "initial-cluster-state" => {
                        ConfigError::Invalid(format!("unexpected clusterState {raw:?}"))
                    }
                    "listen-peer-urls"
                    | "listen-client-urls"
                    | "listen-client-http-urls"
                    | "listen-metrics-urls"
                    | "initial-advertise-peer-urls"
                    | "advertise-client-urls" => ConfigError::Invalid(format!(
                        "unexpected error setting up {}: {e}",
                        spec.name
                    )),
                    _ => ferr(format!("invalid value {raw:?} for {key:?}: {e}")),
                })?;
            }
        }
    }
    Ok(())
}

fn unknown_key_message(key: &str) -> String {
    let tls_keys = [
        "cert-file",
        "key-file",
        "client-cert-auth",
        "trusted-ca-file",
        "auto-tls",
        "client-cert-file",
        "client-key-file",
    ];
    let bare = key.trim_start_matches("peer-");
    if tls_keys.contains(&bare) {
        format!(
            "unknown key {key:?} (in etcd's config file TLS settings go under \
             client-transport-security: or peer-transport-security:)"
        )
    } else {
        format!("unknown key {key:?}")
    }
}

/// `client-transport-security` / `peer-transport-security`.
fn load_tls(tls: &mut TlsConfig, section: &str, v: &serde_yaml::Value) -> Result<(), String> {
    let serde_yaml::Value::Mapping(m) = v else {
        return Err(format!(
            "invalid value for {section:?}: expected a mapping, got {}",
            describe(v)
        ));
    };
    for (k, v) in m {
        let Some(key) = k.as_str() else {
            return Err(format!("unknown key {} in {section:?}", describe(k)));
        };
        if v.is_null() {
            continue;
        }
        let lkey = key.to_ascii_lowercase();
        let kind = match lkey.as_str() {
            "client-cert-auth" | "auto-tls" => Kind::Bool,
            "allowed-cn" | "allowed-hostname" => Kind::List,
            "cert-file" | "key-file" | "client-cert-file" | "client-key-file"
            | "trusted-ca-file" => Kind::Str,
            _ => return Err(format!("unknown key {key:?} in {section:?}")),
        };
        let spec = FlagSpec {
            name: "",
            kind,
            yaml: true,
        };
        let raw = yaml_scalar(&spec, v).map_err(|want| {
            format!(
                "invalid value for {section:?}.{key}: expected {want}, got {}",
                describe(v)
            )
        })?;
        match lkey.as_str() {
            "cert-file" => tls.cert_file = raw,
            "key-file" => tls.key_file = raw,
            "client-cert-file" => tls.client_cert_file = raw,
            "client-key-file" => tls.client_key_file = raw,
            "trusted-ca-file" => tls.trusted_ca_file = raw,
            "client-cert-auth" => tls.client_cert_auth = raw == "true",
            "auto-tls" => tls.auto_tls = raw == "true",
            "allowed-cn" => tls.allowed_cn = split_list(&raw),
            _ => tls.allowed_hostname = split_list(&raw),
        }
    }
    Ok(())
}

/// A YAML value as the flag text `apply` takes, if its type is the one
/// etcd's struct field has (Go decodes the YAML as JSON into that field).
/// The error names the expected type. Lenient beyond etcd in three places:
/// durations may be strings ("5s") besides integer nanoseconds,
/// `auto-compaction-retention` may be a bare integer, and list settings may
/// be a comma-separated string.
fn yaml_scalar(spec: &FlagSpec, v: &serde_yaml::Value) -> Result<String, &'static str> {
    use serde_yaml::Value as V;
    match (spec.kind, v) {
        (Kind::Bool, V::Bool(b)) => Ok(b.to_string()),
        // YAML 1.1 booleans, which etcd's YAML reader (go-yaml v2) accepts.
        (Kind::Bool, V::String(s)) => match s.as_str() {
            "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => {
                Ok("true".to_string())
            }
            "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False"
            | "FALSE" => Ok("false".to_string()),
            _ => Err("a boolean (true or false)"),
        },
        (Kind::Bool, _) => Err("a boolean (true or false)"),
        (Kind::Str, V::String(s)) => Ok(s.clone()),
        (Kind::Str, V::Number(n)) if spec.name == "auto-compaction-retention" && !n.is_f64() => {
            Ok(n.to_string())
        }
        (Kind::Str, _) => Err("a string"),
        (Kind::Uint | Kind::Uint32 | Kind::Uint64, V::Number(n)) => n
            .as_u64()
            .map(|x| x.to_string())
            .ok_or("a non-negative integer"),
        (Kind::Uint | Kind::Uint32 | Kind::Uint64, _) => Err("a non-negative integer"),
        (Kind::Int | Kind::Int64, V::Number(n)) => {
            n.as_i64().map(|x| x.to_string()).ok_or("an integer")
        }
        (Kind::Int | Kind::Int64, _) => Err("an integer"),
        (Kind::Duration, V::Number(n)) => n
            .as_i64()
            .map(|x| format!("{x}ns"))
            .ok_or("a duration (integer nanoseconds, or a string such as \"5s\")"),
        (Kind::Duration, V::String(s)) => Ok(s.clone()),
        (Kind::Duration, _) => Err("a duration (integer nanoseconds, or a string such as \"5s\")"),
        (Kind::Urls, V::String(s)) => Ok(s.clone()),
        (Kind::Urls, _) => Err("a string of comma-separated URLs"),
        (Kind::List, V::Sequence(items)) => {
            let mut out = Vec::new();
            for item in items {
                match item {
                    V::String(s) => out.push(s.clone()),
                    _ => return Err("a list of strings"),
                }
            }
            Ok(out.join(","))
        }
        (Kind::List, V::String(s)) => Ok(s.clone()),
        (Kind::List, _) => Err("a list of strings"),
        (Kind::Ignored, _) => Err("nothing (this is a command-line flag only)"),
    }
}

fn describe(v: &serde_yaml::Value) -> String {
    use serde_yaml::Value as V;
    match v {
        V::Null => "null".to_string(),
        V::Bool(b) => format!("the boolean {b}"),
        V::Number(n) => format!("the number {n}"),
        V::String(s) => format!("the string {s:?}"),
        V::Sequence(_) => "a list".to_string(),
        V::Mapping(_) => "a mapping".to_string(),
        V::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

// ---------------------------------------------------------------------------
// Values as Go parses them.

/// `strconv.ParseBool`; the error is Go flag's "parse error".
fn go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err("parse error".to_string()),
    }
}

/// `strconv.ParseUint(s, 0, bits)` with Go flag's error texts: base
/// prefixes 0x, 0o, 0b and a leading 0 for octal; underscores between
/// digits.
fn go_uint(s: &str, bits: u32) -> Result<u64, String> {
    let syntax = || "parse error".to_string();
    let b = s.as_bytes();
    let (base, digits, prefixed) = if b.len() > 1 && b[0] == b'0' {
        match b[1] {
            b'x' | b'X' => (16, &s[2..], true),
            b'o' | b'O' => (8, &s[2..], true),
            b'b' | b'B' => (2, &s[2..], true),
            _ => (8, &s[1..], true),
        }
    } else {
        (10, s, false)
    };
    if digits.is_empty() {
        return Err(syntax());
    }
    let mut n: u64 = 0;
    let mut prev_underscore = false;
    let mut prev_digit = prefixed;
    for ch in digits.chars() {
        if ch == '_' {
            if !prev_digit {
                return Err(syntax());
            }
            prev_underscore = true;
            prev_digit = false;
            continue;
        }
        let d = ch.to_digit(base).ok_or_else(syntax)?;
        n = n
            .checked_mul(u64::from(base))
            .and_then(|n| n.checked_add(u64::from(d)))
            .ok_or_else(|| "value out of range".to_string())?;
        prev_underscore = false;
        prev_digit = true;
    }
    if prev_underscore {
        return Err(syntax());
    }
    if bits < 64 && n >> bits != 0 {
        return Err("value out of range".to_string());
    }
    Ok(n)
}

/// `strconv.ParseInt(s, 0, 64)` with Go flag's error texts.
fn go_int(s: &str) -> Result<i64, String> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let n = go_uint(body, 64)?;
    if neg {
        if n > 1 << 63 {
            return Err("value out of range".to_string());
        }
        Ok((n as i64).wrapping_neg())
    } else {
        i64::try_from(n).map_err(|_| "value out of range".to_string())
    }
}

/// A Go duration for a typed field: non-negative.
fn std_duration(s: &str) -> Result<Duration, String> {
    let ns = parse_go_duration(s).map_err(|_| "parse error".to_string())?;
    if ns < 0 {
        return Err("negative durations are not supported".to_string());
    }
    Ok(Duration::from_nanos(ns as u64))
}

/// `time.ParseDuration`: a signed sequence of decimal numbers with optional
/// fraction and a unit each (ns, us, µs, ms, s, m, h), e.g. "1h", "5m30s",
/// "1.5h", "300ms"; "0" alone needs no unit. Returns nanoseconds.
pub fn parse_go_duration(orig: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {orig:?}");
    let mut s = orig;
    let mut neg = false;
    if let Some(rest) = s.strip_prefix('-') {
        neg = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = s.split_at(int_len);
        s = after;
        let mut frac_part = "";
        if let Some(after_dot) = s.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after_dot[..frac_len];
            s = &after_dot[frac_len..];
        } else if int_len == 0 {
            return Err(invalid());
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = s
            .char_indices()
            .find(|(_, ch)| *ch == '.' || ch.is_ascii_digit())
            .map_or(s.len(), |(i, _)| i);
        let (unit, after) = s.split_at(unit_len);
        s = after;
        let mult: u128 = match unit {
            "" => return Err(format!("time: missing unit in duration {orig:?}")),
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {orig:?}")),
        };
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| invalid())?
        };
        let mut v = int.checked_mul(mult).ok_or_else(invalid)?;
        if !frac_part.is_empty() {
            let digits = &frac_part[..frac_part.len().min(30)];
            let f: u128 = digits.parse().map_err(|_| invalid())?;
            v += f * mult / 10u128.pow(digits.len() as u32);
        }
        total = total.checked_add(v).ok_or_else(invalid)?;
        if total > (1u128 << 63) {
            return Err(invalid());
        }
    }
    if neg {
        Ok((total as i128).wrapping_neg() as i64)
    } else {
        i64::try_from(total).map_err(|_| invalid())
    }
}

/// etcd's `types.NewURLs` for one URL: http, https, unix or unixs; for
/// http(s) a "host:port" and no path. Returns the URL as Go's
/// `url.URL.String()` gives it (scheme lower-cased).
fn parse_url(input: &str) -> Result<String, String> {
    let s = input.trim();
    let scheme_err = || format!("URL scheme must be http, https, unix, or unixs: {s}");
    let Some((scheme, rest)) = s.split_once(':') else {
        return Err(scheme_err());
    };
    let valid_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid_scheme {
        return Err(scheme_err());
    }
    let scheme = scheme.to_ascii_lowercase();
    match scheme.as_str() {
        "http" | "https" => {}
        "unix" | "unixs" => return Ok(format!("{scheme}:{rest}")),
        _ => return Err(scheme_err()),
    }
    let hostport_err = || format!("URL address does not have the form \"host:port\": {s}");
    let Some(authority_and_more) = rest.strip_prefix("//") else {
        return Err(hostport_err());
    };
    let end = authority_and_more
        .find(['/', '?', '#'])
        .unwrap_or(authority_and_more.len());
    let (host, tail) = authority_and_more.split_at(end);
    if tail.starts_with('/') {
        return Err(format!("URL must not contain a path: {s}"));
    }
    if !tail.is_empty() {
        return Err(format!("URL must not contain a query or fragment: {s}"));
    }
    let (_, port) = split_host_port(host).ok_or_else(hostport_err)?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err()
    {
        return Err(hostport_err());
    }
    Ok(format!("{scheme}://{host}"))
}

/// Go's `net.SplitHostPort`, without the error detail.
fn split_host_port(hostport: &str) -> Option<(&str, &str)> {
    if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        Some((host, port))
    } else {
        let (host, port) = hostport.rsplit_once(':')?;
        if host.contains(':') {
            return None;
        }
        Some((host, port))
    }
}

/// The host of a URL `parse_url` returned.
fn url_host(u: &str) -> &str {
    let hostport = u.split_once("://").map_or("", |(_, h)| h);
    split_host_port(hostport).map_or("", |(h, _)| h)
}

/// Refuses what this server cannot serve: https (TLS) and unix sockets.
fn check_servable(u: &str, flag: &str) -> Result<(), ConfigError> {
    if u.starts_with("https://") {
        return Err(ConfigError::Unsupported(format!(
            "TLS is not supported yet: --{flag} has {u}; use an http:// URL"
        )));
    }
    if u.starts_with("unix:") || u.starts_with("unixs:") {
        return Err(ConfigError::Unsupported(format!(
            "unix socket URLs are not supported yet: --{flag} has {u}"
        )));
    }
    Ok(())
}

/// A comma-separated URL list as `flags.UniqueURLs` keeps it: sorted,
/// without duplicates. An empty value is refused where a URL is required.
fn parse_urls(v: &str, required: bool) -> Result<Vec<String>, String> {
    if v.is_empty() {
        return if required {
            Err("at least one URL is required".to_string())
        } else {
            Ok(Vec::new())
        };
    }
    let mut set = BTreeSet::new();
    for part in v.split(',') {
        set.insert(parse_url(part)?);
    }
    Ok(set.into_iter().collect())
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
fn go_quote_list(v: &[String]) -> String {
    let q: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", q.join(" "))
}

/// `types.URLsMap.String()`: `name=url` pairs, sorted.
fn urls_map_string(members: &[(String, Vec<String>)]) -> String {
    let mut pairs: Vec<String> = members
        .iter()
        .flat_map(|(n, urls)| urls.iter().map(move |u| format!("{n}={u}")))
        .collect();
    pairs.sort();
    pairs.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn env(e: &[(&str, &str)]) -> Vec<(String, String)> {
        e.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(a: &[&str], e: &[(&str, &str)]) -> Result<Parsed, ConfigError> {
        parse(&args(a), &env(e))
    }

    fn cfg(a: &[&str]) -> Config {
        let p = run(a, &[]).unwrap();
        assert_eq!(p.action, Action::Run);
        p.config
    }

    fn err(a: &[&str], e: &[(&str, &str)]) -> String {
        run(a, e).unwrap_err().to_string()
    }

    /// A temporary YAML file, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(contents: &str) -> TempFile {
            static N: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "etcd-net-config-test-{}-{}.yaml",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    const SEED: &str = "name: etcd-1
data-dir: /soft/etcd/data
log-level: debug
listen-peer-urls: http://192.168.1.61:2380
listen-client-urls: 'http://0.0.0.0:2379'
initial-advertise-peer-urls: http://192.168.1.61:2380
advertise-client-urls: http://192.168.1.61:2379
initial-cluster-state: new
initial-cluster-token: etcd-cluster
initial-cluster: etcd-1=http://192.168.1.61:2380,etcd-2=http://192.168.1.62:2382,etcd-3=http://192.168.1.63:2384
enable-v2: true
";

    #[test]
    fn defaults_are_etcds() {
        let p = run(&[], &[]).unwrap();
        assert_eq!(p.action, Action::Run);
        let c = &p.config;
        assert_eq!(*c, Config::default());
        assert_eq!(c.name, "default");
        assert_eq!(c.data_dir, "default.etcd");
        assert_eq!(c.wal_dir, "");
        assert_eq!(c.wal_dir_path(), PathBuf::from("default.etcd/member/wal"));
        assert_eq!(c.snap_dir(), PathBuf::from("default.etcd/member/snap"));
        assert_eq!(c.snapshot_count, 100_000);
        assert_eq!(c.heartbeat_interval_ms, 100);
        assert_eq!(c.election_timeout_ms, 1000);
        assert_eq!(c.listen_peer_urls, ["http://localhost:2380"]);
        assert_eq!(c.listen_client_urls, ["http://localhost:2379"]);
        assert_eq!(c.initial_advertise_peer_urls, ["http://localhost:2380"]);
        assert_eq!(c.advertise_client_urls, ["http://localhost:2379"]);
        assert!(c.listen_metrics_urls.is_empty());
        assert_eq!(c.initial_cluster, "default=http://localhost:2380");
        assert_eq!(c.initial_cluster_token, "etcd-cluster");
        assert_eq!(c.initial_cluster_state, ClusterState::New);
        assert_eq!(c.quota_backend_bytes, 0);
        assert_eq!(c.quota_backend_bytes_effective(), Some(2 << 30));
        assert_eq!(c.max_request_bytes, 1_572_864);
        assert_eq!(c.max_txn_ops, 128);
        assert_eq!(c.max_snapshots, 5);
        assert_eq!(c.max_wals, 5);
        assert_eq!(c.auto_compaction_mode, CompactionMode::Periodic);
        assert_eq!(c.auto_compaction_retention, "0");
        assert_eq!(c.auto_compaction().unwrap(), AutoCompaction::Disabled);
        assert_eq!(c.log_level, LogLevel::Info);
        assert_eq!(c.logger, "zap");
        assert_eq!(c.log_outputs, ["default"]);
        assert!(!c.enable_v2);
        assert!(!c.force_new_cluster);
        assert!(c.strict_reconfig_check);
        assert!(c.initial_election_tick_advance);
        assert!(c.pre_vote, "etcd 3.5 enables pre-vote by default");
        assert!(!c.enable_pprof);
        assert_eq!(c.metrics, "basic");
        assert_eq!(c.auth_token, "simple");
        assert_eq!(c.bcrypt_cost, 10);
        assert_eq!(c.auth_token_ttl, 300);
        assert_eq!(c.grpc_keepalive_min_time, Duration::from_secs(5));
        assert_eq!(c.grpc_keepalive_interval, Duration::from_secs(7200));
        assert_eq!(c.grpc_keepalive_timeout, Duration::from_secs(20));
        assert!(c.client_tls.is_empty() && c.peer_tls.is_empty());
        assert!(c.ignored.is_empty());
        assert_eq!(c.heartbeat_ticks(), 1);
        assert_eq!(c.election_ticks(), 10);
        assert_eq!(c.tick_interval(), Duration::from_millis(100));
        assert_eq!(
            p.warnings,
            ["'data-dir' was empty; using default: \"default.etcd\""]
        );
        c.verify_bootstrap().unwrap();
    }

    #[test]
    fn flag_forms() {
        for form in [
            &["--name=x"][..],
            &["--name", "x"],
            &["-name=x"],
            &["-name", "x"],
        ] {
            assert_eq!(cfg(form).name, "x", "{form:?}");
        }
        assert!(cfg(&["--enable-v2"]).enable_v2);
        assert!(cfg(&["-enable-v2=true"]).enable_v2);
        assert!(!cfg(&["--enable-v2=false"]).enable_v2);
        assert!(cfg(&["--enable-v2=1"]).enable_v2);
        assert!(!cfg(&["--strict-reconfig-check=F"]).strict_reconfig_check);
        // A bare boolean never takes the next argument.
        assert_eq!(
            err(&["--enable-v2", "false"], &[]),
            "'false' is not a valid flag"
        );
        assert_eq!(
            err(&["--enable-v2=maybe"], &[]),
            "invalid boolean value \"maybe\" for -enable-v2: parse error"
        );
        // The value of a non-boolean flag may start with '-'.
        assert_eq!(cfg(&["--name", "-x"]).name, "-x");
        // The last occurrence wins.
        assert_eq!(cfg(&["--name=a", "--name=b"]).name, "b");
        // "--" ends the flags; what follows is not a flag.
        assert_eq!(cfg(&["--name", "a", "--"]).name, "a");
        assert_eq!(
            err(&["--name", "a", "--", "x"], &[]),
            "'x' is not a valid flag"
        );
        assert_eq!(err(&["x"], &[]), "'x' is not a valid flag");
        assert_eq!(err(&["--name", "a", "-"], &[]), "'-' is not a valid flag");
        let e = run(&["--foo"], &[]).unwrap_err();
        assert_eq!(e.to_string(), "flag provided but not defined: -foo");
        assert_eq!(e.exit_code(), 2);
        assert_eq!(
            err(&["--foo=1"], &[]),
            "flag provided but not defined: -foo"
        );
        assert_eq!(err(&["--name"], &[]), "flag needs an argument: -name");
        assert_eq!(err(&["---name=x"], &[]), "bad flag syntax: ---name=x");
        assert_eq!(err(&["-=x"], &[]), "bad flag syntax: -=x");
        assert_eq!(
            err(&["--heartbeat-interval", "abc"], &[]),
            "invalid value \"abc\" for flag -heartbeat-interval: parse error"
        );
        assert_eq!(
            err(&["--max-concurrent-streams", "4294967296"], &[]),
            "invalid value \"4294967296\" for flag -max-concurrent-streams: value out of range"
        );
        // Go's base prefixes.
        assert_eq!(cfg(&["--max-txn-ops", "0x100"]).max_txn_ops, 256);
        assert_eq!(cfg(&["--max-txn-ops", "1_000"]).max_txn_ops, 1000);
        assert_eq!(
            cfg(&["--quota-backend-bytes", "-1"]).quota_backend_bytes,
            -1
        );
        assert_eq!(
            cfg(&["--quota-backend-bytes", "-1"]).quota_backend_bytes_effective(),
            None
        );
        assert_eq!(
            cfg(&["--grpc-keepalive-timeout", "1m30s"]).grpc_keepalive_timeout,
            Duration::from_secs(90)
        );
        // Help and version.
        for h in ["--help", "-h", "-help", "--h"] {
            assert_eq!(run(&[h], &[]).unwrap().action, Action::Help, "{h}");
        }
        assert_eq!(
            run(&["--name", "a", "--help", "--bogus"], &[])
                .unwrap()
                .action,
            Action::Help
        );
        assert_eq!(run(&["--version"], &[]).unwrap().action, Action::Version);
        // etcd checks positional arguments before --version.
        assert_eq!(err(&["--version", "x"], &[]), "'x' is not a valid flag");
        assert!(version_text().starts_with("etcd Version: 3.5.0\n"));
        assert!(usage().contains("--initial-cluster-state"));
    }

    #[test]
    fn accepted_but_ignored_flags() {
        let p = run(
            &[
                "--experimental-initial-corrupt-check",
                "--backend-batch-interval=10ms",
                "--snapshot",
                "--cipher-suites",
                "a,b",
            ],
            &[],
        )
        .unwrap();
        let c = &p.config;
        assert_eq!(c.ignored["experimental-initial-corrupt-check"], "true");
        assert_eq!(c.ignored["backend-batch-interval"], "10ms");
        assert_eq!(c.ignored["snapshot"], "true");
        assert_eq!(c.ignored["cipher-suites"], "a,b");
        assert!(
            p.warnings.iter().any(|w| w.contains("without effect")
                && w.contains("--experimental-initial-corrupt-check"))
        );
        assert_eq!(
            err(&["--backend-batch-interval", "soon"], &[]),
            "invalid value \"soon\" for flag -backend-batch-interval: parse error"
        );
        assert_eq!(
            err(&["--proxy", "maybe"], &[]),
            "invalid value \"maybe\" for flag -proxy: invalid value"
        );
        for f in IGNORED_FLAGS {
            assert!(lookup(f).is_some(), "{f}");
        }
        let e = run(&["--discovery", "https://discovery.etcd.io/x"], &[]).unwrap_err();
        assert!(matches!(e, ConfigError::Unsupported(_)), "{e}");
        let e = run(&["--proxy", "on"], &[]).unwrap_err();
        assert!(matches!(e, ConfigError::Unsupported(_)), "{e}");
        // Deprecated flags warn.
        let p = run(&["--enable-v2"], &[]).unwrap();
        assert!(p.warnings.contains(
            &"--enable-v2 is deprecated in 3.5 and will be decommissioned in 3.6.".to_string()
        ));
    }

    #[test]
    fn tls_flags_are_stored_and_https_refused() {
        let p = run(
            &[
                "--cert-file=/c.pem",
                "--key-file=/k.pem",
                "--client-cert-auth",
                "--trusted-ca-file=/ca.pem",
                "--auto-tls",
                "--peer-cert-file=/pc.pem",
                "--peer-key-file=/pk.pem",
                "--peer-client-cert-auth",
                "--peer-trusted-ca-file=/pca.pem",
                "--peer-auto-tls",
            ],
            &[],
        )
        .unwrap();
        let c = &p.config;
        assert_eq!(c.client_tls.cert_file, "/c.pem");
        assert_eq!(c.client_tls.key_file, "/k.pem");
        assert!(c.client_tls.client_cert_auth && c.client_tls.auto_tls);
        assert_eq!(c.client_tls.trusted_ca_file, "/ca.pem");
        assert_eq!(c.peer_tls.cert_file, "/pc.pem");
        assert_eq!(c.peer_tls.key_file, "/pk.pem");
        assert!(c.peer_tls.client_cert_auth && c.peer_tls.auto_tls);
        assert_eq!(c.peer_tls.trusted_ca_file, "/pca.pem");
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("TLS is not served yet"))
        );

        let e = run(
            &[
                "--listen-client-urls=https://127.0.0.1:2379",
                "--advertise-client-urls=https://127.0.0.1:2379",
            ],
            &[],
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::Unsupported(_)));
        assert!(e.to_string().contains("TLS is not supported yet"), "{e}");
        let e = err(
            &["--initial-advertise-peer-urls=https://10.0.0.1:2380"],
            &[],
        );
        assert!(e.contains("TLS is not supported yet"), "{e}");
        let c = cfg(&["--initial-cluster=default=https://localhost:2380"]);
        let e = c.verify_bootstrap().unwrap_err();
        assert!(e.to_string().contains("TLS is not supported yet"), "{e}");
    }

    #[test]
    fn environment() {
        let p = run(
            &[],
            &[
                ("ETCD_NAME", "e1"),
                ("ETCD_DATA_DIR", "/var/lib/etcd"),
                ("ETCD_INITIAL_CLUSTER", "e1=http://10.0.0.1:2380"),
                ("ETCD_INITIAL_ADVERTISE_PEER_URLS", "http://10.0.0.1:2380"),
                ("ETCD_LISTEN_PEER_URLS", "http://10.0.0.1:2380"),
                ("ETCD_ENABLE_V2", "true"),
                ("ETCD_HEARTBEAT_INTERVAL", "200"),
                ("ETCD_ELECTION_TIMEOUT", "2000"),
                ("ETCD_FOO", "bar"),
                ("ETCD_DEBUG", ""),
                ("PATH", "/bin"),
            ],
        )
        .unwrap();
        let c = &p.config;
        assert_eq!(c.name, "e1");
        assert_eq!(c.data_dir, "/var/lib/etcd");
        assert_eq!(c.initial_cluster, "e1=http://10.0.0.1:2380");
        assert_eq!(c.initial_advertise_peer_urls, ["http://10.0.0.1:2380"]);
        assert!(c.enable_v2);
        assert_eq!(c.election_ticks(), 10);
        assert!(
            p.warnings
                .contains(&"unrecognized environment variable ETCD_FOO=bar".to_string())
        );
        assert!(
            p.warnings
                .contains(&"unrecognized environment variable ETCD_DEBUG=".to_string())
        );
        // Set through the environment, --enable-v2 still counts as used.
        assert!(
            p.warnings
                .iter()
                .any(|w| w.starts_with("--enable-v2 is deprecated"))
        );
        c.verify_bootstrap().unwrap();

        assert_eq!(
            err(&[], &[("ETCD_HEARTBEAT_INTERVAL", "fast")]),
            "invalid value \"fast\" for ETCD_HEARTBEAT_INTERVAL: parse error"
        );
        assert_eq!(
            err(&[], &[("ETCD_INITIAL_CLUSTER_STATE", "old")]),
            "invalid value \"old\" for ETCD_INITIAL_CLUSTER_STATE: invalid value"
        );
        // Empty variables are not used.
        assert_eq!(
            run(&[], &[("ETCD_NAME", "")]).unwrap().config.name,
            "default"
        );
        // ETCD_VERSION is refused with a warning, never printing the version.
        let p = run(&[], &[("ETCD_VERSION", "true")]).unwrap();
        assert_eq!(p.action, Action::Run);
        assert!(
            p.warnings
                .contains(&"cannot set special environment variable ETCD_VERSION=true".to_string())
        );
        // As in etcd, setting --listen-client-urls through the environment
        // also requires --advertise-client-urls.
        assert_eq!(
            err(&[], &[("ETCD_LISTEN_CLIENT_URLS", "http://0.0.0.0:2379")]),
            "--advertise-client-urls is required when --listen-client-urls is set explicitly"
        );
    }

    #[test]
    fn environment_shadowed_by_flag_is_refused_as_in_etcd() {
        // etcd 3.5's verifyEnv: lg.Fatal("conflicting environment variable
        // is shadowed by corresponding command-line flag ...").
        let e = run(&["--name", "a"], &[("ETCD_NAME", "b")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "conflicting environment variable \"ETCD_NAME\" is shadowed by corresponding \
             command-line flag (either unset environment variable or disable flag)"
        );
        assert_eq!(e.exit_code(), 1);
        // Even when the variable is empty.
        assert!(run(&["--name", "a"], &[("ETCD_NAME", "")]).is_err());
        // Other variables still apply next to flags.
        let c = run(&["--name", "a"], &[("ETCD_SNAPSHOT_COUNT", "5")])
            .unwrap()
            .config;
        assert_eq!((c.name.as_str(), c.snapshot_count), ("a", 5));
    }

    #[test]
    fn seed_config_file_parses_unchanged() {
        let f = TempFile::new(SEED);
        let p = run(&["--config-file", f.path()], &[]).unwrap();
        let c = &p.config;
        assert_eq!(c.config_file, f.path());
        assert_eq!(c.name, "etcd-1");
        assert_eq!(c.data_dir, "/soft/etcd/data");
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.listen_peer_urls, ["http://192.168.1.61:2380"]);
        assert_eq!(c.listen_client_urls, ["http://0.0.0.0:2379"]);
        assert_eq!(c.initial_advertise_peer_urls, ["http://192.168.1.61:2380"]);
        assert_eq!(c.advertise_client_urls, ["http://192.168.1.61:2379"]);
        assert_eq!(c.initial_cluster_state, ClusterState::New);
        assert_eq!(c.initial_cluster_token, "etcd-cluster");
        assert!(c.enable_v2);
        assert_eq!(
            c.initial_members().unwrap(),
            vec![
                (
                    "etcd-1".to_string(),
                    vec!["http://192.168.1.61:2380".to_string()]
                ),
                (
                    "etcd-2".to_string(),
                    vec!["http://192.168.1.62:2382".to_string()]
                ),
                (
                    "etcd-3".to_string(),
                    vec!["http://192.168.1.63:2384".to_string()]
                ),
            ]
        );
        c.verify_bootstrap().unwrap();
        let ids = c.initial_cluster_ids().unwrap();
        assert_eq!(ids.members.len(), 3);
        assert_eq!(ids.local_id, ids.members[0].id);
        assert_eq!(
            ids.members[0].id,
            member_id(&["http://192.168.1.61:2380"], "etcd-cluster")
        );
        // Everything else keeps etcd's defaults.
        let expect = Config {
            config_file: f.path().to_string(),
            name: "etcd-1".into(),
            data_dir: "/soft/etcd/data".into(),
            log_level: LogLevel::Debug,
            listen_peer_urls: vec!["http://192.168.1.61:2380".into()],
            listen_client_urls: vec!["http://0.0.0.0:2379".into()],
            initial_advertise_peer_urls: vec!["http://192.168.1.61:2380".into()],
            advertise_client_urls: vec!["http://192.168.1.61:2379".into()],
            initial_cluster: "etcd-1=http://192.168.1.61:2380,etcd-2=http://192.168.1.62:2382,\
                              etcd-3=http://192.168.1.63:2384"
                .into(),
            enable_v2: true,
            ..Config::default()
        };
        assert_eq!(*c, expect);
        // ETCD_CONFIG_FILE works too.
        let p2 = run(&[], &[("ETCD_CONFIG_FILE", f.path())]).unwrap();
        assert_eq!(p2.config, *c);
    }

    #[test]
    fn config_file_ignores_flags_and_env() {
        let f = TempFile::new(SEED);
        let p = run(
            &[
                "--config-file",
                f.path(),
                "--name",
                "flag-name",
                "--enable-v2=false",
            ],
            &[("ETCD_NAME", "env-name"), ("ETCD_DATA_DIR", "/env")],
        )
        .unwrap();
        assert_eq!(p.config.name, "etcd-1");
        assert_eq!(p.config.data_dir, "/soft/etcd/data");
        assert!(p.config.enable_v2);
        assert!(p.warnings.iter().any(|w| w.contains("will be ignored")));
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("--name") && w.contains("--enable-v2"))
        );
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("ETCD_NAME, ETCD_DATA_DIR"))
        );
        // A flag on the command line wins over ETCD_CONFIG_FILE.
        let g = TempFile::new("name: other\n");
        let p = run(
            &["--config-file", g.path()],
            &[("ETCD_CONFIG_FILE", f.path())],
        )
        .unwrap();
        assert_eq!(p.config.name, "other");
        assert_eq!(p.config.initial_cluster, "other=http://localhost:2380");
        assert_eq!(p.config.data_dir, "other.etcd");
        // Flags are still parsed (and can fail) before the file is read.
        assert!(run(&["--config-file", f.path(), "--bogus"], &[]).is_err());
    }

    #[test]
    fn config_file_errors() {
        let f = TempFile::new("name: a\nnmae: b\n");
        let e = run(&["--config-file", f.path()], &[]).unwrap_err();
        assert!(matches!(e, ConfigError::File(_)));
        assert!(e.to_string().ends_with("unknown key \"nmae\""), "{e}");

        let f = TempFile::new("cert-file: /c.pem\n");
        let e = err(&["--config-file", f.path()], &[]);
        assert!(
            e.contains("unknown key \"cert-file\"") && e.contains("client-transport-security"),
            "{e}"
        );

        let f = TempFile::new("heartbeat-interval: fast\n");
        let e = err(&["--config-file", f.path()], &[]);
        assert!(
            e.contains("invalid value for \"heartbeat-interval\": expected a non-negative integer, got the string \"fast\""),
            "{e}"
        );
        let f = TempFile::new("enable-v2: 3\n");
        let e = err(&["--config-file", f.path()], &[]);
        assert!(e.contains("expected a boolean"), "{e}");
        let f = TempFile::new("name: [a, b]\n");
        let e = err(&["--config-file", f.path()], &[]);
        assert!(e.contains("expected a string, got a list"), "{e}");
        let f = TempFile::new("listen-client-urls: [http://127.0.0.1:2379]\n");
        let e = err(&["--config-file", f.path()], &[]);
        assert!(e.contains("comma-separated"), "{e}");
        let f = TempFile::new("initial-cluster-state: old\n");
        assert_eq!(
            err(&["--config-file", f.path()], &[]),
            "unexpected clusterState \"old\""
        );
        let f = TempFile::new("listen-peer-urls: localhost:2380\n");
        assert_eq!(
            err(&["--config-file", f.path()], &[]),
            "unexpected error setting up listen-peer-urls: URL scheme must be http, https, \
             unix, or unixs: localhost:2380"
        );
        let f = TempFile::new("name: [unclosed\n");
        assert!(err(&["--config-file", f.path()], &[]).contains("invalid YAML"));
        let e = err(&["--config-file", "/nonexistent/etcd.yaml"], &[]);
        assert!(e.starts_with("open /nonexistent/etcd.yaml: "), "{e}");
    }

    #[test]
    fn config_file_types() {
        let f = TempFile::new(
            "heartbeat-interval: 50
election-timeout: 500
snapshot-count: 5000
quota-backend-bytes: 8589934592
max-request-bytes: 2097152
auto-compaction-mode: revision
auto-compaction-retention: 1000
grpc-keepalive-timeout: 30000000000
grpc-keepalive-interval: 1h
log-outputs: [stdout, /var/log/etcd.log]
pre-vote: false
Strict-Reconfig-Check: no
client-transport-security:
  cert-file: /c.pem
  client-cert-auth: true
peer-transport-security:
  key-file: /pk.pem
  allowed-cn: [peer]
socket-options:
  reuse-port: true
experimental-snapshot-catch-up-entries: 100
",
        );
        let c = run(&["--config-file", f.path()], &[]).unwrap().config;
        assert_eq!(c.heartbeat_interval_ms, 50);
        assert_eq!(c.election_timeout_ms, 500);
        assert_eq!(c.snapshot_count, 5000);
        assert_eq!(c.quota_backend_bytes, 8 << 30);
        assert_eq!(c.max_request_bytes, 2 << 20);
        assert_eq!(c.auto_compaction().unwrap(), AutoCompaction::Revision(1000));
        assert_eq!(c.grpc_keepalive_timeout, Duration::from_secs(30));
        assert_eq!(c.grpc_keepalive_interval, Duration::from_secs(3600));
        assert_eq!(c.log_outputs, ["/var/log/etcd.log", "stdout"]);
        assert!(!c.pre_vote);
        assert!(!c.strict_reconfig_check);
        assert_eq!(c.client_tls.cert_file, "/c.pem");
        assert!(c.client_tls.client_cert_auth);
        assert_eq!(c.peer_tls.key_file, "/pk.pem");
        assert_eq!(c.peer_tls.allowed_cn, ["peer"]);
        assert_eq!(c.ignored["socket-reuse-port"], "true");
        assert_eq!(c.ignored["experimental-snapshot-catchup-entries"], "100");
        assert_eq!(c.election_ticks(), 10);
    }

    #[test]
    fn etcds_sample_config_file_parses() {
        // etcd.conf.yml.sample from etcd v3.5, comments removed.
        let f = TempFile::new(
            "name: 'default'
data-dir:
wal-dir:
snapshot-count: 10000
heartbeat-interval: 100
election-timeout: 1000
quota-backend-bytes: 0
listen-peer-urls: http://localhost:2380
listen-client-urls: http://localhost:2379
max-snapshots: 5
max-wals: 5
cors:
initial-advertise-peer-urls: http://localhost:2380
advertise-client-urls: http://localhost:2379
discovery:
discovery-fallback: 'proxy'
discovery-proxy:
discovery-srv:
initial-cluster:
initial-cluster-token: 'etcd-cluster'
initial-cluster-state: 'new'
strict-reconfig-check: false
enable-v2: true
enable-pprof: true
proxy: 'off'
proxy-failure-wait: 5000
proxy-refresh-interval: 30000
proxy-dial-timeout: 1000
proxy-write-timeout: 5000
proxy-read-timeout: 0
client-transport-security:
  cert-file:
  key-file:
  client-cert-auth: false
  trusted-ca-file:
  auto-tls: false
peer-transport-security:
  cert-file:
  key-file:
  client-cert-auth: false
  trusted-ca-file:
  auto-tls: false
  allowed-cn:
  allowed-hostname:
self-signed-cert-validity: 1
log-level: debug
logger: zap
log-outputs: [stderr]
force-new-cluster: false
auto-compaction-mode: periodic
auto-compaction-retention: \"1\"
",
        );
        let c = run(&["--config-file", f.path()], &[]).unwrap().config;
        assert_eq!(c.snapshot_count, 10000);
        assert_eq!(c.data_dir, "default.etcd");
        assert_eq!(c.initial_cluster, "default=http://localhost:2380");
        assert!(!c.strict_reconfig_check && c.enable_v2 && c.enable_pprof);
        assert_eq!(c.log_outputs, ["stderr"]);
        assert_eq!(
            c.auto_compaction().unwrap(),
            AutoCompaction::Periodic(Duration::from_secs(3600))
        );
        assert!(c.client_tls.is_empty() && c.peer_tls.is_empty());
        c.verify_bootstrap().unwrap();
    }

    #[test]
    fn url_validation() {
        let scheme = err(&["--listen-client-urls", "localhost:2379"], &[]);
        assert_eq!(
            scheme,
            "invalid value \"localhost:2379\" for flag -listen-client-urls: URL scheme must be \
             http, https, unix, or unixs: localhost:2379"
        );
        assert!(
            err(&["--listen-peer-urls", "ftp://1.2.3.4:2380"], &[])
                .ends_with("URL scheme must be http, https, unix, or unixs: ftp://1.2.3.4:2380")
        );
        assert!(
            err(&["--listen-peer-urls", "http://1.2.3.4"], &[])
                .ends_with("URL address does not have the form \"host:port\": http://1.2.3.4")
        );
        assert!(
            err(&["--listen-peer-urls", "http://1.2.3.4:2380/x"], &[])
                .ends_with("URL must not contain a path: http://1.2.3.4:2380/x")
        );
        assert_eq!(
            err(&["--listen-client-urls", ""], &[]),
            "invalid value \"\" for flag -listen-client-urls: at least one URL is required"
        );
        assert_eq!(
            err(&["--listen-peer-urls", "http://myhost:2380"], &[]),
            "expected IP in URL for binding (http://myhost:2380)"
        );
        assert_eq!(
            err(&["--listen-client-urls", "http://0.0.0.0:2379"], &[]),
            "--advertise-client-urls is required when --listen-client-urls is set explicitly"
        );
        assert_eq!(
            err(&["--initial-advertise-peer-urls", "http://:2380"], &[]),
            "--initial-advertise-peer-urls \"http://:2380\" must be \"host:port\" (unexpected \
             empty host (http://:2380))"
        );
        let e = run(&["--listen-peer-urls", "unix://sock:1"], &[]).unwrap_err();
        assert!(matches!(e, ConfigError::Unsupported(_)), "{e}");
        // Normalised, sorted and deduplicated as etcd keeps them; IPv6 works.
        let c = cfg(&[
            "--listen-client-urls",
            "HTTP://127.0.0.1:2379, http://[::1]:2379,http://127.0.0.1:2379",
            "--advertise-client-urls",
            "http://node1:2379",
        ]);
        assert_eq!(
            c.listen_client_urls,
            ["http://127.0.0.1:2379", "http://[::1]:2379"]
        );
    }

    #[test]
    fn value_validation() {
        assert_eq!(
            err(&["--initial-cluster-state", "x"], &[]),
            "invalid value \"x\" for flag -initial-cluster-state: invalid value"
        );
        assert_eq!(
            err(&["--election-timeout", "400"], &[]),
            "--election-timeout[400ms] should be at least as 5 times as --heartbeat-interval[100ms]"
        );
        assert_eq!(
            err(&["--heartbeat-interval", "0"], &[]),
            "--heartbeat-interval must be >0 (set to 0ms)"
        );
        assert_eq!(
            err(&["--election-timeout", "0"], &[]),
            "--election-timeout must be >0 (set to 0ms)"
        );
        assert_eq!(
            err(&["--election-timeout", "50001"], &[]),
            "--election-timeout[50001ms] is too long, and should be set less than 50000ms"
        );
        assert_eq!(
            err(&["--auto-compaction-mode", "daily"], &[]),
            "invalid value \"daily\" for flag -auto-compaction-mode: unknown auto-compaction-mode \"daily\""
        );
        assert_eq!(
            err(&["--max-request-bytes", "0"], &[]),
            "--max-request-bytes must be >0"
        );
        assert_eq!(
            err(&["--logger", "capnslog"], &[]),
            "--logger=capnslog is removed in v3.5"
        );
        assert_eq!(err(&["--logger", "x"], &[]), "unknown logger option \"x\"");
        assert_eq!(
            err(&["--log-level", "loud"], &[]),
            "invalid value \"loud\" for flag -log-level: unrecognized level: \"loud\""
        );
        assert_eq!(cfg(&["--log-level", "WARN"]).log_level, LogLevel::Warn);
        assert_eq!(
            err(&["--log-outputs", "default,stdout"], &[]),
            "multi logoutput for \"default\" is not supported yet"
        );
        assert_eq!(
            err(&["--auto-compaction-retention", "1d"], &[]),
            "error parsing CompactionRetention: time: unknown unit \"d\" in duration \"1d\""
        );
        assert_eq!(
            err(&["--auto-compaction-retention", "-1"], &[]),
            "error parsing CompactionRetention: time: missing unit in duration \"-1\""
        );
        assert!(
            err(
                &[
                    "--auto-compaction-mode",
                    "revision",
                    "--auto-compaction-retention",
                    "1h"
                ],
                &[]
            )
            .contains("must be a number of revisions")
        );
        let p = run(&["--bcrypt-cost", "99"], &[]).unwrap();
        assert_eq!(p.config.bcrypt_cost, 10);
        assert!(p.warnings.iter().any(|w| w.contains("invalid given cost")));
        let p = run(&["--quota-backend-bytes", "9000000000"], &[]).unwrap();
        assert!(
            p.warnings
                .iter()
                .any(|w| w.starts_with("quota exceeds the maximum value"))
        );
    }

    #[test]
    fn auto_compaction_retention() {
        let ac = |a: &[&str]| cfg(a).auto_compaction().unwrap();
        let p = |s: u64| AutoCompaction::Periodic(Duration::from_secs(s));
        assert_eq!(ac(&["--auto-compaction-retention", "1"]), p(3600));
        assert_eq!(ac(&["--auto-compaction-retention", "1h"]), p(3600));
        assert_eq!(ac(&["--auto-compaction-retention", "30m"]), p(1800));
        assert_eq!(ac(&["--auto-compaction-retention", "5m30s"]), p(330));
        assert_eq!(ac(&["--auto-compaction-retention", "1.5h"]), p(5400));
        assert_eq!(
            ac(&["--auto-compaction-retention", "0s"]),
            AutoCompaction::Disabled
        );
        assert_eq!(
            ac(&[
                "--auto-compaction-mode",
                "revision",
                "--auto-compaction-retention",
                "1000"
            ]),
            AutoCompaction::Revision(1000)
        );
        assert_eq!(
            ac(&["--auto-compaction-mode", "revision"]),
            AutoCompaction::Disabled
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("300ms"), Ok(300_000_000));
        assert_eq!(parse_go_duration("-1.5h"), Ok(-5_400_000_000_000));
        assert_eq!(parse_go_duration("2h45m"), Ok(9_900_000_000_000));
        assert_eq!(parse_go_duration("1µs"), Ok(1_000));
        assert_eq!(parse_go_duration(".5s"), Ok(500_000_000));
        assert_eq!(parse_go_duration("1.s"), Ok(1_000_000_000));
        assert_eq!(
            parse_go_duration("1"),
            Err("time: missing unit in duration \"1\"".into())
        );
        assert_eq!(
            parse_go_duration(""),
            Err("time: invalid duration \"\"".into())
        );
        assert_eq!(
            parse_go_duration("."),
            Err("time: invalid duration \".\"".into())
        );
        assert_eq!(
            parse_go_duration("s"),
            Err("time: invalid duration \"s\"".into())
        );
        assert!(parse_go_duration("9999999999h").is_err());
    }

    #[test]
    fn initial_cluster_from_name() {
        let c = cfg(&["--name", "infra1"]);
        assert_eq!(c.initial_cluster, "infra1=http://localhost:2380");
        assert_eq!(c.data_dir, "infra1.etcd");
        c.verify_bootstrap().unwrap();
        let c = cfg(&[
            "--name",
            "infra1",
            "--initial-advertise-peer-urls",
            "http://10.0.0.1:2380,http://10.0.0.2:2380",
        ]);
        assert_eq!(
            c.initial_cluster,
            "infra1=http://10.0.0.1:2380,infra1=http://10.0.0.2:2380"
        );
        c.verify_bootstrap().unwrap();
        // An explicit --initial-cluster is kept.
        let c = cfg(&["--name", "a", "--initial-cluster", "a=http://10.0.0.1:2380"]);
        assert_eq!(c.initial_cluster, "a=http://10.0.0.1:2380");
        // As in etcd, the name "default" keeps the default cluster, so a
        // changed advertise URL without --initial-cluster fails at bootstrap.
        let c = cfg(&["--initial-advertise-peer-urls", "http://10.0.0.1:2380"]);
        assert_eq!(c.initial_cluster, "default=http://localhost:2380");
        assert_eq!(
            c.verify_bootstrap().unwrap_err().to_string(),
            "--initial-cluster has default=http://localhost:2380 but missing from \
             --initial-advertise-peer-urls=http://10.0.0.1:2380 (resolved urls: \
             \"http://10.0.0.1:2380\" != \"http://localhost:2380\")"
        );
    }

    #[test]
    fn bootstrap_validation() {
        let c = cfg(&["--name", "x", "--initial-cluster", "a=http://10.0.0.1:2380"]);
        assert_eq!(
            c.verify_bootstrap().unwrap_err().to_string(),
            "couldn't find local name \"x\" in the initial cluster configuration"
        );
        // Existing clusters check membership too, but not advertise URLs.
        let c = cfg(&[
            "--name",
            "a",
            "--initial-cluster-state",
            "existing",
            "--initial-cluster",
            "a=http://10.0.0.9:2380",
        ]);
        assert!(!c.is_new_cluster());
        c.verify_bootstrap().unwrap();
        // Advertised URL not in the cluster entry.
        let c = cfg(&[
            "--name",
            "a",
            "--initial-advertise-peer-urls",
            "http://10.0.0.1:2380,http://10.0.0.2:2380",
            "--initial-cluster",
            "a=http://10.0.0.1:2380",
        ]);
        assert_eq!(
            c.verify_bootstrap().unwrap_err().to_string(),
            "--initial-advertise-peer-urls has http://10.0.0.2:2380 but missing from \
             --initial-cluster=a=http://10.0.0.1:2380,a=http://10.0.0.2:2380"
        );
        // A name given twice is one member with two peer URLs (etcd's
        // URLsMap); the same URL twice is an error.
        let c = cfg(&[
            "--name",
            "a",
            "--initial-advertise-peer-urls",
            "http://10.0.0.1:2380,http://10.0.0.2:2380",
            "--initial-cluster",
            "a=http://10.0.0.1:2380,b=http://10.0.0.3:2380,a=http://10.0.0.2:2380",
        ]);
        c.verify_bootstrap().unwrap();
        assert_eq!(c.initial_members().unwrap()[0].1.len(), 2);
        assert_eq!(c.initial_members().unwrap()[1].0, "b");
        let c = cfg(&[
            "--name",
            "a",
            "--initial-advertise-peer-urls",
            "http://10.0.0.1:2380",
            "--initial-cluster",
            "a=http://10.0.0.1:2380,b=http://10.0.0.1:2380",
        ]);
        assert_eq!(
            c.verify_bootstrap().unwrap_err().to_string(),
            "initial cluster a=http://10.0.0.1:2380,b=http://10.0.0.1:2380 has duplicate url"
        );
        let c = cfg(&["--initial-cluster", "default=10.0.0.1:2380"]);
        let e = c.verify_bootstrap().unwrap_err().to_string();
        assert!(
            e.contains("URL scheme must be http, https, unix, or unixs"),
            "{e}"
        );
    }

    #[test]
    fn sha1_fips_vectors() {
        let hex = |b: [u8; 20]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(hex(sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            hex(sha1(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        assert_eq!(
            hex(sha1(&vec![b'a'; 1_000_000])),
            "34aa973cd4c4daa4f61eeb2bdbad27316534016f"
        );
    }

    #[test]
    fn default_member_and_cluster_ids_match_etcd() {
        let id = member_id(&["http://localhost:2380"], "etcd-cluster");
        assert_eq!(format!("{id:x}"), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", cluster_id(&[id])), "cdf818194e3a8c32");
        let ids = Config::default().initial_cluster_ids().unwrap();
        assert_eq!(ids.local_id, 0x8e9e05c52164694d);
        assert_eq!(ids.cluster_id, 0xcdf818194e3a8c32);
        // Peer URL order does not matter; the token does.
        assert_eq!(
            member_id(&["http://b:1", "http://a:1"], "t"),
            member_id(&["http://a:1", "http://b:1"], "t")
        );
        assert_ne!(
            member_id(&["http://a:1"], "t1"),
            member_id(&["http://a:1"], "t2")
        );
        // Member ID order does not matter.
        assert_eq!(cluster_id(&[1, 2, 3]), cluster_id(&[3, 1, 2]));
    }
}
