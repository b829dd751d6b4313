//! A minimal key → value register store. It is the state machine that the
//! simulator and the Raft benchmark replicate until the MVCC store takes over;
//! its semantics are simple enough to check linearizability against.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{self, DecodeError, Reader};
use crate::node::StateMachine;
use crate::types::LogIndex;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterRequest {
    Put {
        key: Bytes,
        value: Bytes,
    },
    Get {
        key: Bytes,
    },
    /// Sets `key` to `new` if its value is `expect` (`None`: absent).
    Cas {
        key: Bytes,
        expect: Option<Bytes>,
        new: Bytes,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterResponse {
    Put,
    Get(Option<Bytes>),
    Cas { succeeded: bool },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Register {
    map: BTreeMap<Bytes, Bytes>,
    /// Log index of the last applied write.
    last_write_index: LogIndex,
}

impl Register {
    pub fn get(&self, key: &[u8]) -> Option<&Bytes> {
        self.map.get(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// A digest of the contents, equal on members that applied the same writes.
    pub fn digest(&self) -> u64 {
        let mut h = crate::hash::Fnv64::new();
        for (k, v) in &self.map {
            h.write_bytes(k);
            h.write_bytes(v);
        }
        h.finish()
    }
}

const PUT: u8 = 1;
const GET: u8 = 2;
const CAS: u8 = 3;
const SNAPSHOT_VERSION: u8 = 1;

impl StateMachine for Register {
    type Request = RegisterRequest;
    type Response = RegisterResponse;
    type Notification = ();

    fn encode_request(req: &RegisterRequest, buf: &mut BytesMut) {
        match req {
            RegisterRequest::Put { key, value } => {
                buf.put_u8(PUT);
                codec::put_bytes(buf, key);
                codec::put_bytes(buf, value);
            }
            RegisterRequest::Get { key } => {
                buf.put_u8(GET);
                codec::put_bytes(buf, key);
            }
            RegisterRequest::Cas { key, expect, new } => {
                buf.put_u8(CAS);
                codec::put_bytes(buf, key);
                match expect {
                    None => buf.put_u8(0),
                    Some(e) => {
                        buf.put_u8(1);
                        codec::put_bytes(buf, e);
                    }
                }
                codec::put_bytes(buf, new);
            }
        }
    }

    fn decode_request(data: &[u8]) -> Result<RegisterRequest, DecodeError> {
        let mut r = Reader::new(data);
        let req = match r.u8()? {
            PUT => RegisterRequest::Put {
                key: Bytes::copy_from_slice(r.bytes()?),
                value: Bytes::copy_from_slice(r.bytes()?),
            },
            GET => RegisterRequest::Get {
                key: Bytes::copy_from_slice(r.bytes()?),
            },
            CAS => {
                let key = Bytes::copy_from_slice(r.bytes()?);
                let expect = match r.u8()? {
                    0 => None,
                    1 => Some(Bytes::copy_from_slice(r.bytes()?)),
                    t => return Err(DecodeError::BadTag(t)),
                };
                RegisterRequest::Cas {
                    key,
                    expect,
                    new: Bytes::copy_from_slice(r.bytes()?),
                }
            }
            t => return Err(DecodeError::BadTag(t)),
        };
        r.finish()?;
        Ok(req)
    }

    fn apply(&mut self, index: LogIndex, req: &RegisterRequest) -> RegisterResponse {
        match req {
            RegisterRequest::Put { key, value } => {
                self.map.insert(key.clone(), value.clone());
                self.last_write_index = index;
                RegisterResponse::Put
            }
            RegisterRequest::Get { .. } => self.read(req),
            RegisterRequest::Cas { key, expect, new } => {
                let succeeded = self.map.get(key) == expect.as_ref();
                if succeeded {
                    self.map.insert(key.clone(), new.clone());
                    self.last_write_index = index;
                }
                RegisterResponse::Cas { succeeded }
            }
        }
    }

    fn read(&self, req: &RegisterRequest) -> RegisterResponse {
        match req {
            RegisterRequest::Get { key }
            | RegisterRequest::Put { key, .. }
            | RegisterRequest::Cas { key, .. } => RegisterResponse::Get(self.map.get(key).cloned()),
        }
    }

    fn snapshot(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_u8(SNAPSHOT_VERSION);
        buf.put_u64_le(self.last_write_index.0);
        codec::put_uvarint(&mut buf, self.map.len() as u64);
        for (k, v) in &self.map {
            codec::put_bytes(&mut buf, k);
            codec::put_bytes(&mut buf, v);
        }
        buf.freeze()
    }

    /// Decodes fully before replacing anything: on error the state is unchanged.
    fn restore(&mut self, data: &[u8]) -> Result<(), DecodeError> {
        let mut r = Reader::new(data);
        let v = r.u8()?;
        if v != SNAPSHOT_VERSION {
            return Err(DecodeError::BadTag(v));
        }
        let last_write_index = LogIndex(r.u64_le()?);
        let n = r.count(2)?;
        let mut map = BTreeMap::new();
        for _ in 0..n {
            let k = Bytes::copy_from_slice(r.bytes()?);
            let v = Bytes::copy_from_slice(r.bytes()?);
            map.insert(k, v);
        }
        r.finish()?;
        self.map = map;
        self.last_write_index = last_write_index;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req_strategy() -> impl Strategy<Value = RegisterRequest> {
        let key = prop::sample::select(vec!["a", "b", "c"]).prop_map(|s: &str| Bytes::from(s));
        let val = prop::sample::select(vec!["1", "2", "3"]).prop_map(|s: &str| Bytes::from(s));
        prop_oneof![
            (key.clone(), val.clone()).prop_map(|(key, value)| RegisterRequest::Put { key, value }),
            key.clone().prop_map(|key| RegisterRequest::Get { key }),
            (key, proptest::option::of(val.clone()), val)
                .prop_map(|(key, expect, new)| RegisterRequest::Cas { key, expect, new }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::Direct(
                    concat!(env!("CARGO_MANIFEST_DIR"), "/../proptest-regressions/register.txt")))),
            ..ProptestConfig::default()
        })]

        #[test]
        fn requests_round_trip(req in req_strategy()) {
            let mut buf = BytesMut::new();
            Register::encode_request(&req, &mut buf);
            prop_assert_eq!(Register::decode_request(&buf).unwrap(), req);
        }

        #[test]
        fn snapshot_round_trips(reqs in proptest::collection::vec(req_strategy(), 0..50)) {
            let mut a = Register::default();
            for (i, r) in reqs.iter().enumerate() {
                a.apply(LogIndex(i as u64 + 1), r);
            }
            let mut b = Register::default();
            b.restore(&a.snapshot()).unwrap();
            prop_assert_eq!(&a, &b);
        }

        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Register::decode_request(&data);
            let mut r = Register::default();
            let before = r.clone();
            if r.restore(&data).is_err() {
                prop_assert_eq!(r, before);
            }
        }
    }
}
