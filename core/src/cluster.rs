//! Cluster membership data: who the members are (names, peer and client
//! URLs, learner or voter) and the cluster ID, applied through the log. Raft's
//! own configuration (`ConfState`) changes in the same entries; this is the
//! descriptive part etcd's `membership` package keeps.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{self, DecodeError, Reader};
use crate::hash::Fnv64;
use crate::raft::{ConfChange, ConfChangeKind};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterInfo {
    pub cluster_id: u64,
    pub members: BTreeMap<u64, Member>,
}

fn put_str(buf: &mut BytesMut, s: &str) {
    codec::put_bytes(buf, s.as_bytes());
}

fn get_str(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    String::from_utf8(r.bytes()?.to_vec()).map_err(|_| DecodeError::BadTag(0xff))
}

fn put_strs(buf: &mut BytesMut, v: &[String]) {
    codec::put_uvarint(buf, v.len() as u64);
    for s in v {
        put_str(buf, s);
    }
}

fn get_strs(r: &mut Reader<'_>) -> Result<Vec<String>, DecodeError> {
    let n = r.count(1)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(get_str(r)?);
    }
    Ok(v)
}

/// The conf-change context that describes a member.
pub fn encode_member(m: &Member) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_u8(1);
    buf.put_u64_le(m.id);
    put_str(&mut buf, &m.name);
    put_strs(&mut buf, &m.peer_urls);
    put_strs(&mut buf, &m.client_urls);
    buf.put_u8(u8::from(m.is_learner));
    buf.freeze()
}

pub fn decode_member(data: &[u8]) -> Result<Member, DecodeError> {
    let mut r = Reader::new(data);
    let v = r.u8()?;
    if v != 1 {
        return Err(DecodeError::BadTag(v));
    }
    let id = r.u64_le()?;
    let name = get_str(&mut r)?;
    let peer_urls = get_strs(&mut r)?;
    let client_urls = get_strs(&mut r)?;
    let is_learner = match r.u8()? {
        0 => false,
        1 => true,
        t => return Err(DecodeError::BadTag(t)),
    };
    r.finish()?;
    Ok(Member {
        id,
        name,
        peer_urls,
        client_urls,
        is_learner,
    })
}

impl ClusterInfo {
    /// A cluster ID derived from the founding members' ids, the same on every
    /// founding member.
    pub fn derive_cluster_id(member_ids: &[u64]) -> u64 {
        let mut ids = member_ids.to_vec();
        ids.sort_unstable();
        let mut h = Fnv64::new();
        for id in ids {
            h.write_u64(id);
        }
        h.finish()
    }

    /// Applies a committed membership change (the same entry Raft applies).
    pub fn apply_conf_change(&mut self, cc: &ConfChange) {
        let id = cc.node.0;
        match cc.kind {
            ConfChangeKind::AddVoter | ConfChangeKind::AddLearner => {
                let learner = cc.kind == ConfChangeKind::AddLearner;
                match self.members.get_mut(&id) {
                    // Promotion of a learner.
                    Some(m) => m.is_learner = learner && m.is_learner,
                    None => {
                        let mut m = decode_member(&cc.context).unwrap_or_default();
                        m.id = id;
                        m.is_learner = learner;
                        self.members.insert(id, m);
                    }
                }
            }
            ConfChangeKind::Remove => {
                self.members.remove(&id);
            }
        }
    }

    /// A member publishes its name and client URLs (etcd's attribute update).
    pub fn publish(&mut self, id: u64, name: &str, client_urls: &[String]) -> bool {
        match self.members.get_mut(&id) {
            Some(m) => {
                m.name = name.to_string();
                m.client_urls = client_urls.to_vec();
                true
            }
            None => false,
        }
    }

    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(1);
        buf.put_u64_le(self.cluster_id);
        codec::put_uvarint(buf, self.members.len() as u64);
        for m in self.members.values() {
            codec::put_bytes(buf, &encode_member(m));
        }
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<ClusterInfo, DecodeError> {
        let v = r.u8()?;
        if v != 1 {
            return Err(DecodeError::BadTag(v));
        }
        let cluster_id = r.u64_le()?;
        let n = r.count(1)?;
        let mut members = BTreeMap::new();
        for _ in 0..n {
            let m = decode_member(r.bytes()?)?;
            members.insert(m.id, m);
        }
        Ok(ClusterInfo {
            cluster_id,
            members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NodeId;

    fn member(id: u64, learner: bool) -> Member {
        Member {
            id,
            name: format!("m{id}"),
            peer_urls: vec![format!("http://127.0.0.1:{}", 2380 + id)],
            client_urls: vec![],
            is_learner: learner,
        }
    }

    #[test]
    fn members_follow_conf_changes() {
        let mut c = ClusterInfo::default();
        let add = |kind, m: &Member| ConfChange {
            id: 0,
            kind,
            node: NodeId(m.id),
            context: encode_member(m),
        };
        c.apply_conf_change(&add(ConfChangeKind::AddVoter, &member(1, false)));
        c.apply_conf_change(&add(ConfChangeKind::AddLearner, &member(2, true)));
        assert!(c.members[&2].is_learner);
        assert_eq!(
            c.members[&2].peer_urls,
            vec!["http://127.0.0.1:2382".to_string()]
        );
        c.apply_conf_change(&ConfChange {
            id: 0,
            kind: ConfChangeKind::AddVoter,
            node: NodeId(2),
            context: Bytes::new(),
        });
        assert!(!c.members[&2].is_learner, "promoted");
        assert!(c.publish(2, "m2", &["http://127.0.0.1:2379".to_string()]));
        c.apply_conf_change(&ConfChange {
            id: 0,
            kind: ConfChangeKind::Remove,
            node: NodeId(1),
            context: Bytes::new(),
        });
        assert!(!c.members.contains_key(&1));
        let mut buf = BytesMut::new();
        c.encode(&mut buf);
        assert_eq!(ClusterInfo::decode(&mut Reader::new(&buf)).unwrap(), c);
        assert_eq!(
            ClusterInfo::derive_cluster_id(&[3, 1, 2]),
            ClusterInfo::derive_cluster_id(&[1, 2, 3])
        );
    }
}
