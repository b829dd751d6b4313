//! Leases: replicated state (which leases exist, their TTLs, the keys attached,
//! the remaining TTL as of the last renew or checkpoint) and the leader-only
//! expiry clock.
//!
//! Why it differs from etcd: etcd renews leases on the leader only and, on a
//! leader change, hands every lease a fresh full TTL (unless checkpointing is
//! on), so a lease kept busy by leader churn never expires. Here a renew
//! (keep-alive) is a log entry (batched with other writes, so cheap), the
//! leader checkpoints remaining TTLs through the log, and a new leader starts
//! each lease from its replicated remaining TTL. Expiry is decided by the
//! leader alone (time is ticks, local to it) and committed as a revoke that
//! names the lease's renew epoch: a keep-alive that races the revoke wins.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{self, DecodeError, Reader};
use crate::error::EtcdError;

/// etcd's `MaxLeaseTTL`.
pub const MAX_LEASE_TTL_SECS: i64 = 9_000_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// The TTL granted (after raising to the minimum).
    pub ttl_secs: i64,
    /// Remaining TTL as of the last renew or checkpoint.
    pub remaining_ms: i64,
    /// Bumped by every renew; an expiry revoke applies only to the epoch it saw.
    pub epoch: u64,
    pub keys: BTreeSet<Bytes>,
}

/// What the leader wants proposed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseProposal {
    Revoke { id: i64, epoch: u64 },
    Checkpoint(Vec<(i64, i64)>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lessor {
    leases: BTreeMap<i64, Lease>,
    /// Leader only (never replicated): expiry deadlines in ticks.
    deadlines: BTreeMap<i64, u64>,
    by_deadline: BTreeSet<(u64, i64)>,
    /// Leader only: revokes proposed and when, so they are not re-proposed
    /// every tick (but are again if lost).
    revoking: BTreeMap<i64, u64>,
    primary: bool,
    checkpoint_cursor: i64,
    last_checkpoint_tick: u64,
}

impl Default for Lessor {
    fn default() -> Self {
        Lessor::new()
    }
}

/// Lease timing, from the member's configuration.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    pub tick_ms: u64,
    /// etcd: ceil(1.5 × election timeout), in seconds.
    pub min_ttl_secs: i64,
    /// How often the leader checkpoints remaining TTLs.
    pub checkpoint_interval_ticks: u64,
    /// Leases per checkpoint entry at most.
    pub checkpoint_batch: usize,
    /// Re-propose a revoke not applied within this many ticks.
    pub revoke_retry_ticks: u64,
}

impl LeaseTiming {
    pub fn new(tick_ms: u64, election_timeout_ticks: u32) -> LeaseTiming {
        let election_ms = tick_ms * u64::from(election_timeout_ticks);
        let min_ms = (election_ms * 3).div_ceil(2);
        LeaseTiming {
            tick_ms: tick_ms.max(1),
            min_ttl_secs: min_ms.div_ceil(1000) as i64,
            checkpoint_interval_ticks: (5_000 / tick_ms.max(1)).max(1),
            checkpoint_batch: 1_000,
            revoke_retry_ticks: u64::from(election_timeout_ticks) * 2,
        }
    }

    fn ticks_for_ms(&self, ms: i64) -> u64 {
        (ms.max(0) as u64).div_ceil(self.tick_ms)
    }
}

impl Lessor {
    pub fn new() -> Lessor {
        Lessor {
            leases: BTreeMap::new(),
            deadlines: BTreeMap::new(),
            by_deadline: BTreeSet::new(),
            revoking: BTreeMap::new(),
            primary: false,
            checkpoint_cursor: i64::MIN,
            last_checkpoint_tick: 0,
        }
    }

    pub fn get(&self, id: i64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Lease ids in ascending order.
    pub fn ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.leases.keys().copied()
    }

    fn set_deadline(&mut self, id: i64, deadline: u64) {
        if let Some(old) = self.deadlines.insert(id, deadline) {
            self.by_deadline.remove(&(old, id));
        }
        self.by_deadline.insert((deadline, id));
    }

    fn clear_deadline(&mut self, id: i64) {
        if let Some(old) = self.deadlines.remove(&id) {
            self.by_deadline.remove(&(old, id));
        }
        self.revoking.remove(&id);
    }

    // ---- replicated operations (applied from the log, same on every member) ----

    /// Grants a lease. The TTL is raised to the minimum; the id must be new.
    pub fn grant(
        &mut self,
        id: i64,
        ttl_secs: i64,
        t: &LeaseTiming,
        now: u64,
    ) -> Result<i64, EtcdError> {
        if self.leases.contains_key(&id) {
            return Err(EtcdError::LeaseExist);
        }
        if ttl_secs > MAX_LEASE_TTL_SECS {
            return Err(EtcdError::LeaseTtlTooLarge);
        }
        let ttl = ttl_secs.max(t.min_ttl_secs);
        self.leases.insert(
            id,
            Lease {
                id,
                ttl_secs: ttl,
                remaining_ms: ttl * 1000,
                epoch: 0,
                keys: BTreeSet::new(),
            },
        );
        if self.primary {
            self.set_deadline(id, now + t.ticks_for_ms(ttl * 1000));
        }
        Ok(ttl)
    }

    /// Removes a lease; returns its keys (which the caller deletes in one revision).
    /// With `epoch`, only if the lease was not renewed since (an expiry).
    pub fn revoke(
        &mut self,
        id: i64,
        epoch: Option<u64>,
    ) -> Result<Option<BTreeSet<Bytes>>, EtcdError> {
        let Some(l) = self.leases.get(&id) else {
            return Err(EtcdError::LeaseNotFound);
        };
        if epoch.is_some_and(|e| e != l.epoch) {
            // Renewed after the leader decided it expired: the renew wins.
            self.revoking.remove(&id);
            return Ok(None);
        }
        let l = self.leases.remove(&id).expect("checked above");
        self.clear_deadline(id);
        Ok(Some(l.keys))
    }

    /// A keep-alive: the lease gets its full TTL again. Returns the TTL.
    pub fn renew(&mut self, id: i64, t: &LeaseTiming, now: u64) -> Result<i64, EtcdError> {
        let Some(l) = self.leases.get_mut(&id) else {
            return Err(EtcdError::LeaseNotFound);
        };
        l.remaining_ms = l.ttl_secs * 1000;
        l.epoch += 1;
        let (ttl, rem) = (l.ttl_secs, l.remaining_ms);
        if self.primary {
            self.revoking.remove(&id);
            self.set_deadline(id, now + t.ticks_for_ms(rem));
        }
        Ok(ttl)
    }

    /// Records remaining TTLs the leader measured.
    pub fn checkpoint(&mut self, entries: &[(i64, i64)]) {
        for (id, remaining_ms) in entries {
            if let Some(l) = self.leases.get_mut(id) {
                l.remaining_ms = (*remaining_ms).clamp(0, l.ttl_secs * 1000);
            }
        }
    }

    pub fn attach(&mut self, id: i64, key: Bytes) {
        if let Some(l) = self.leases.get_mut(&id) {
            l.keys.insert(key);
        }
    }

    pub fn detach(&mut self, id: i64, key: &[u8]) {
        if let Some(l) = self.leases.get_mut(&id) {
            l.keys.remove(key);
        }
    }

    /// (granted TTL, remaining seconds) of a lease. The leader answers from
    /// its clock; others from the last renew or checkpoint.
    pub fn time_to_live(&self, id: i64, t: &LeaseTiming, now: u64) -> Option<(i64, i64)> {
        let l = self.leases.get(&id)?;
        let remaining_ms = match (self.primary, self.deadlines.get(&id)) {
            (true, Some(d)) => (d.saturating_sub(now) * t.tick_ms) as i64,
            _ => l.remaining_ms,
        };
        // etcd truncates toward zero; an expired lease not yet revoked shows 0.
        Some((l.ttl_secs, remaining_ms.max(0) / 1000))
    }

    // ---- leader-only clock --------------------------------------------------

    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// Becomes the member that runs expiry: every lease gets its replicated
    /// remaining TTL from now, not a fresh full TTL.
    pub fn promote(&mut self, t: &LeaseTiming, now: u64) {
        self.primary = true;
        self.deadlines.clear();
        self.by_deadline.clear();
        self.revoking.clear();
        let all: Vec<(i64, i64)> = self
            .leases
            .values()
            .map(|l| (l.id, l.remaining_ms))
            .collect();
        for (id, rem) in all {
            self.set_deadline(id, now + t.ticks_for_ms(rem));
        }
        self.last_checkpoint_tick = now;
    }

    pub fn demote(&mut self) {
        self.primary = false;
        self.deadlines.clear();
        self.by_deadline.clear();
        self.revoking.clear();
    }

    /// What the leader should propose at tick `now`: revokes of expired leases
    /// (once each, again if not applied in time) and, periodically, a batch
    /// of remaining-TTL checkpoints.
    pub fn tick(&mut self, t: &LeaseTiming, now: u64) -> Vec<LeaseProposal> {
        if !self.primary {
            return Vec::new();
        }
        let mut out = Vec::new();
        let expired: Vec<i64> = self
            .by_deadline
            .iter()
            .take_while(|(d, _)| *d <= now)
            .map(|(_, id)| *id)
            .collect();
        for id in expired {
            let due = self
                .revoking
                .get(&id)
                .is_none_or(|at| now >= at + t.revoke_retry_ticks);
            if due && let Some(l) = self.leases.get(&id) {
                out.push(LeaseProposal::Revoke { id, epoch: l.epoch });
                self.revoking.insert(id, now);
            }
        }
        if now >= self.last_checkpoint_tick + t.checkpoint_interval_ticks && !self.leases.is_empty()
        {
            self.last_checkpoint_tick = now;
            let mut batch = Vec::new();
            let start = self.checkpoint_cursor;
            for (id, _) in self
                .leases
                .range((std::ops::Bound::Excluded(start), std::ops::Bound::Unbounded))
            {
                if batch.len() >= t.checkpoint_batch {
                    break;
                }
                if let Some(d) = self.deadlines.get(id) {
                    batch.push((*id, (d.saturating_sub(now) * t.tick_ms) as i64));
                }
            }
            self.checkpoint_cursor = batch.last().map_or(i64::MIN, |(id, _)| *id);
            if !batch.is_empty() {
                out.push(LeaseProposal::Checkpoint(batch));
            }
        }
        out
    }

    // ---- snapshot (replicated part only) ---------------------------------------

    const VERSION: u8 = 1;

    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(Self::VERSION);
        codec::put_uvarint(buf, self.leases.len() as u64);
        for l in self.leases.values() {
            buf.put_i64_le(l.id);
            buf.put_i64_le(l.ttl_secs);
            buf.put_i64_le(l.remaining_ms);
            buf.put_u64_le(l.epoch);
            codec::put_uvarint(buf, l.keys.len() as u64);
            for k in &l.keys {
                codec::put_bytes(buf, k);
            }
        }
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<Lessor, DecodeError> {
        let v = r.u8()?;
        if v != Self::VERSION {
            return Err(DecodeError::BadTag(v));
        }
        let n = r.count(33)?;
        let mut leases = BTreeMap::new();
        for _ in 0..n {
            let id = r.u64_le()? as i64;
            let ttl_secs = r.u64_le()? as i64;
            let remaining_ms = r.u64_le()? as i64;
            let epoch = r.u64_le()?;
            let nk = r.count(1)?;
            let mut keys = BTreeSet::new();
            for _ in 0..nk {
                keys.insert(Bytes::copy_from_slice(r.bytes()?));
            }
            leases.insert(
                id,
                Lease {
                    id,
                    ttl_secs,
                    remaining_ms,
                    epoch,
                    keys,
                },
            );
        }
        Ok(Lessor {
            leases,
            ..Lessor::new()
        })
    }

    /// The replicated part, for comparing members.
    pub fn replicated_eq(&self, o: &Lessor) -> bool {
        self.leases == o.leases
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> LeaseTiming {
        LeaseTiming::new(100, 10)
    }

    #[test]
    fn min_ttl_is_one_and_a_half_election_timeouts_rounded_up() {
        // 10 ticks × 100 ms = 1 s election timeout → 1.5 s → 2 s, as etcd.
        assert_eq!(timing().min_ttl_secs, 2);
        let mut l = Lessor::new();
        assert_eq!(l.grant(1, 1, &timing(), 0), Ok(2));
        assert_eq!(l.grant(1, 5, &timing(), 0), Err(EtcdError::LeaseExist));
        assert_eq!(
            l.grant(2, MAX_LEASE_TTL_SECS + 1, &timing(), 0),
            Err(EtcdError::LeaseTtlTooLarge)
        );
    }

    #[test]
    fn only_the_leader_expires_and_a_renewal_racing_the_revoke_wins() {
        let t = timing();
        let mut l = Lessor::new();
        l.grant(7, 3, &t, 0).unwrap();
        assert!(l.tick(&t, 1_000).is_empty(), "a follower never expires");
        l.promote(&t, 0);
        assert!(
            l.tick(&t, 29)
                .iter()
                .all(|p| !matches!(p, LeaseProposal::Revoke { .. }))
        );
        let props = l.tick(&t, 30);
        let Some(LeaseProposal::Revoke { id: 7, epoch }) = props.first().cloned() else {
            panic!("{props:?}")
        };
        // Not proposed again at once...
        assert!(
            l.tick(&t, 31)
                .iter()
                .all(|p| !matches!(p, LeaseProposal::Revoke { .. }))
        );
        // ...but a renew lands before the revoke applies: the revoke is void.
        l.renew(7, &t, 31).unwrap();
        assert_eq!(l.revoke(7, Some(epoch)), Ok(None));
        assert!(l.contains(7));
        // An unconditional (client) revoke always applies.
        l.attach(7, Bytes::from_static(b"k"));
        let keys = l.revoke(7, None).unwrap().unwrap();
        assert!(keys.contains(&Bytes::from_static(b"k")));
        assert_eq!(l.revoke(7, None), Err(EtcdError::LeaseNotFound));
    }

    #[test]
    fn a_new_leader_uses_the_checkpointed_remaining_ttl() {
        let t = timing();
        let mut leader = Lessor::new();
        let mut follower = Lessor::new();
        for l in [&mut leader, &mut follower] {
            l.grant(1, 100, &t, 0).unwrap();
        }
        leader.promote(&t, 0);
        // 60 s later the leader checkpoints (the batch it proposes is applied everywhere).
        let cps: Vec<LeaseProposal> = leader.tick(&t, 600);
        let Some(LeaseProposal::Checkpoint(batch)) = cps
            .iter()
            .find(|p| matches!(p, LeaseProposal::Checkpoint(_)))
            .cloned()
        else {
            panic!("no checkpoint in {cps:?}")
        };
        follower.checkpoint(&batch);
        // The follower becomes leader: about 40 s remain, not 100.
        follower.promote(&t, 600);
        let (ttl, rem) = follower.time_to_live(1, &t, 600).unwrap();
        assert_eq!(ttl, 100);
        assert!((39..=40).contains(&rem), "remaining {rem}");
        assert!(
            follower
                .tick(&t, 600 + 400)
                .iter()
                .any(|p| matches!(p, LeaseProposal::Revoke { id: 1, .. }))
        );
    }

    #[test]
    fn snapshot_round_trips_the_replicated_part() {
        let t = timing();
        let mut l = Lessor::new();
        l.grant(1, 10, &t, 0).unwrap();
        l.grant(2, 20, &t, 0).unwrap();
        l.attach(2, Bytes::from_static(b"a"));
        l.renew(2, &t, 0).unwrap();
        let mut buf = BytesMut::new();
        l.encode(&mut buf);
        let back = Lessor::decode(&mut Reader::new(&buf)).unwrap();
        assert!(back.replicated_eq(&l));
        assert!(!back.is_primary());
    }
}
