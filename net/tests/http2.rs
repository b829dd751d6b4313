//! The client port's HTTP/2 server (`net/src/server/grpc/`) at the frame
//! level: what real clients rarely do but may (CONTINUATION, padding,
//! small windows, resets, pings, oversized messages, garbage), with a
//! hand-driven client over a plain socket. Headers are encoded and decoded
//! with the `hpack` crate, independently of the server's HPACK code.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;

use etcd_net::pb::etcdserverpb as pb;
use support::*;

const OURS: &str = env!("CARGO_BIN_EXE_etcd");

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;
const PADDED: u8 = 8;

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// What came back on one stream.
#[derive(Default, Debug)]
struct Answer {
    headers: Vec<(String, String)>,
    data: Vec<u8>,
    trailers: Vec<(String, String)>,
    reset: Option<u32>,
}

impl Answer {
    fn field(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .chain(self.trailers.iter())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The one gRPC message of the answer.
    fn message<M: Message + Default>(&self) -> M {
        assert!(self.data.len() >= 5, "no message: {self:?}");
        let len = u32::from_be_bytes([self.data[1], self.data[2], self.data[3], self.data[4]]);
        assert_eq!(self.data.len(), 5 + len as usize);
        M::decode(&self.data[5..]).expect("a message")
    }
}

struct Client {
    sock: TcpStream,
    enc: hpack::Encoder<'static>,
    dec: hpack::Decoder<'static>,
    /// Frames read while waiting for another stream's.
    held: Vec<Frame>,
}

fn grpc_message(m: &impl Message) -> Vec<u8> {
    let body = m.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

impl Client {
    /// Connects and exchanges the preface; `settings` are (id, value).
    fn connect(url: &str, settings: &[(u16, u32)]) -> Client {
        let addr = url.trim_start_matches("http://");
        let sock = TcpStream::connect(addr).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut c = Client {
            sock,
            enc: hpack::Encoder::new(),
            dec: hpack::Decoder::new(),
            held: Vec::new(),
        };
        c.sock
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .expect("preface");
        let mut p = Vec::new();
        for (id, v) in settings {
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&v.to_be_bytes());
        }
        c.send(SETTINGS, 0, 0, &p);
        // The server's own SETTINGS comes first.
        let f = c.read().expect("server settings");
        assert_eq!((f.kind, f.flags), (SETTINGS, 0));
        c
    }

    fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        self.try_send(kind, flags, stream, payload).expect("write");
    }

    fn try_send(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        self.sock.write_all(&f)
    }

    fn request_block(&mut self, path: &str) -> Vec<u8> {
        let fields: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.as_bytes()),
            (b":authority", b"localhost"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ];
        self.enc.encode(fields)
    }

    /// A whole unary call in the simplest framing.
    fn call(&mut self, stream: u32, path: &str, msg: &impl Message) -> Answer {
        let block = self.request_block(path);
        self.send(HEADERS, END_HEADERS, stream, &block);
        let body = grpc_message(msg);
        let frames: Vec<&[u8]> = body.chunks(16_384).collect();
        for (i, f) in frames.iter().enumerate() {
            let end = if i + 1 == frames.len() { END_STREAM } else { 0 };
            self.send(DATA, end, stream, f);
        }
        self.answer(stream, Duration::from_secs(10))
    }

    /// The next frame, or `None` if the socket closed or timed out.
    fn read(&mut self) -> Option<Frame> {
        let mut head = [0u8; 9];
        self.sock.read_exact(&mut head).ok()?;
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0; len];
        self.sock.read_exact(&mut payload).ok()?;
        Some(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5] & 0x7f, head[6], head[7], head[8]]),
            payload,
        })
    }

    /// The next frame of `stream` (or of the connection, 0), acknowledging
    /// SETTINGS on the way.
    fn next_for(&mut self, stream: u32, within: Duration) -> Option<Frame> {
        if let Some(i) = self.held.iter().position(|f| f.stream == stream) {
            return Some(self.held.remove(i));
        }
        self.sock.set_read_timeout(Some(within)).expect("timeout");
        loop {
            let f = self.read()?;
            if f.kind == SETTINGS && f.flags & 1 == 0 {
                self.send(SETTINGS, 1, 0, &[]);
                continue;
            }
            if f.stream == stream {
                return Some(f);
            }
            self.held.push(f);
        }
    }

    fn decode(&mut self, block: &[u8]) -> Vec<(String, String)> {
        self.dec
            .decode(block)
            .expect("hpack")
            .into_iter()
            .map(|(n, v)| {
                (
                    String::from_utf8(n).expect("utf8"),
                    String::from_utf8(v).expect("utf8"),
                )
            })
            .collect()
    }

    /// Reads stream `stream` to its end (END_STREAM or RST_STREAM).
    fn answer(&mut self, stream: u32, within: Duration) -> Answer {
        let mut a = Answer::default();
        let mut block = Vec::new();
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let f = self
                .next_for(stream, left.max(Duration::from_millis(1)))
                .unwrap_or_else(|| panic!("stream {stream} did not end: {a:?}"));
            match f.kind {
                HEADERS | CONTINUATION => {
                    block.extend_from_slice(&f.payload);
                    if f.flags & END_HEADERS != 0 {
                        let fields = self.decode(&std::mem::take(&mut block));
                        if a.headers.is_empty() {
                            a.headers = fields;
                        } else {
                            a.trailers = fields;
                        }
                    }
                }
                DATA => {
                    a.data.extend_from_slice(&f.payload);
                    if !f.payload.is_empty() {
                        // The server may have closed the connection after its
                        // last answer (after a GOAWAY): the credit is moot then.
                        let inc = (f.payload.len() as u32).to_be_bytes();
                        let _ = self.try_send(WINDOW_UPDATE, 0, 0, &inc);
                        let _ = self.try_send(WINDOW_UPDATE, 0, stream, &inc);
                    }
                }
                RST_STREAM => {
                    a.reset = Some(u32::from_be_bytes(f.payload[..4].try_into().expect("4")));
                    return a;
                }
                _ => {}
            }
            if f.flags & END_STREAM != 0 && f.kind != CONTINUATION {
                return a;
            }
        }
    }
}

fn put(key: &str, value: Vec<u8>) -> pb::PutRequest {
    pb::PutRequest {
        key: Bytes::from(key.to_string()),
        value: Bytes::from(value),
        ..Default::default()
    }
}

fn range(key: &str) -> pb::RangeRequest {
    pb::RangeRequest {
        key: Bytes::from(key.to_string()),
        ..Default::default()
    }
}

fn member() -> Proc {
    let m = single(Path::new(OURS), "http2");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(connect_ready(&m.client, || m.log_text()));
    m
}

#[test]
fn headers_over_continuation_and_padded_data_make_one_call() {
    let m = member();
    let mut c = Client::connect(&m.client, &[]);
    let block = c.request_block("/etcdserverpb.KV/Put");
    let (a, b) = block.split_at(block.len() / 2);
    c.send(HEADERS, 0, 1, a);
    c.send(CONTINUATION, END_HEADERS, 1, b);
    let msg = grpc_message(&put("split", b"over three frames".to_vec()));
    c.send(DATA, 0, 1, &msg[..3]);
    // A padded frame: pad length, data, padding.
    let mut padded = vec![4u8];
    padded.extend_from_slice(&msg[3..10]);
    padded.extend_from_slice(&[0; 4]);
    c.send(DATA, PADDED, 1, &padded);
    c.send(DATA, END_STREAM, 1, &msg[10..]);
    let a = c.answer(1, Duration::from_secs(10));
    assert_eq!(a.field(":status"), Some("200"), "{a:?}");
    assert_eq!(a.field("content-type"), Some("application/grpc"));
    assert_eq!(a.field("grpc-status"), Some("0"), "{a:?}");
    let r: pb::PutResponse = a.message();
    assert!(r.header.expect("header").revision > 1);

    let a = c.call(3, "/etcdserverpb.KV/Range", &range("split"));
    let r: pb::RangeResponse = a.message();
    assert_eq!(&r.kvs[0].value[..], b"over three frames");
}

#[test]
fn a_large_answer_waits_for_the_clients_window() {
    let m = member();
    // SETTINGS_INITIAL_WINDOW_SIZE = 1000: each stream may receive 1000
    // bytes until the client opens it further.
    let mut c = Client::connect(&m.client, &[(4, 1000)]);
    let a = c.call(1, "/etcdserverpb.KV/Put", &put("big", vec![b'v'; 50_000]));
    assert_eq!(a.field("grpc-status"), Some("0"), "{a:?}");

    let block = c.request_block("/etcdserverpb.KV/Range");
    c.send(HEADERS, END_HEADERS, 3, &block);
    c.send(DATA, END_STREAM, 3, &grpc_message(&range("big")));
    let mut got = 0;
    while let Some(f) = c.next_for(3, Duration::from_millis(500)) {
        if f.kind == DATA {
            got += f.payload.len();
        }
        assert_eq!(f.flags & END_STREAM, 0, "ended inside a 1000-byte window");
    }
    assert_eq!(got, 1000, "exactly the window, then nothing");
    // Opening the window lets the rest through.
    c.send(WINDOW_UPDATE, 0, 3, &200_000u32.to_be_bytes());
    let rest = c.answer(3, Duration::from_secs(10));
    assert_eq!(rest.field("grpc-status"), Some("0"), "{rest:?}");
    assert!(rest.data.len() > 49_000);
}

#[test]
fn an_oversized_message_is_refused_as_soon_as_its_length_is_known() {
    let m = member();
    let mut c = Client::connect(&m.client, &[]);
    let block = c.request_block("/etcdserverpb.KV/Put");
    c.send(HEADERS, END_HEADERS, 1, &block);
    // Declares 10 MiB; sends 100 bytes of it and stops.
    let mut start = vec![0u8];
    start.extend_from_slice(&(10u32 << 20).to_be_bytes());
    start.extend_from_slice(&[0; 100]);
    c.send(DATA, 0, 1, &start);
    let a = c.answer(1, Duration::from_secs(10));
    assert_eq!(a.field("grpc-status"), Some("8"), "{a:?}");
    // The default --max-request-bytes (1.5 MiB) plus gRPC's 512 KiB.
    assert_eq!(
        a.field("grpc-message"),
        Some("grpc: received message larger than max (10485760 vs. 2097152)")
    );
    // The server does not want the rest of the request.
    let f = c.next_for(1, Duration::from_secs(5)).expect("a reset");
    assert_eq!((f.kind, &f.payload[..]), (RST_STREAM, &[0u8, 0, 0, 0][..]));
    // The connection carries on.
    let a = c.call(3, "/etcdserverpb.KV/Range", &range("x"));
    assert_eq!(a.field("grpc-status"), Some("0"), "{a:?}");
}

#[test]
fn a_reset_watch_and_an_unknown_method_leave_the_connection_working() {
    let m = member();
    let mut c = Client::connect(&m.client, &[]);
    // A Watch (bridged to tonic) created, then reset by the client.
    let block = c.request_block("/etcdserverpb.Watch/Watch");
    c.send(HEADERS, END_HEADERS, 1, &block);
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: Bytes::from_static(b"w"),
                ..Default::default()
            },
        )),
    };
    c.send(DATA, 0, 1, &grpc_message(&create));
    let f = c
        .next_for(1, Duration::from_secs(10))
        .expect("watch headers");
    assert_eq!(f.kind, HEADERS);
    let f = c.next_for(1, Duration::from_secs(10)).expect("created");
    assert_eq!(f.kind, DATA);
    c.send(RST_STREAM, 0, 1, &8u32.to_be_bytes());

    let a = c.call(3, "/etcdserverpb.KV/NoSuchMethod", &range("x"));
    assert_eq!(a.field("grpc-status"), Some("12"), "{a:?}");
    let a = c.call(5, "/etcdserverpb.KV/Put", &put("w", b"after".to_vec()));
    assert_eq!(a.field("grpc-status"), Some("0"), "{a:?}");
}

#[test]
fn pings_are_answered_and_garbage_gets_a_goaway() {
    let m = member();
    let mut c = Client::connect(&m.client, &[]);
    c.send(PING, 0, 0, b"12345678");
    // Stream 0 also carries the server's WINDOW_UPDATE and SETTINGS ack.
    let f = std::iter::from_fn(|| c.next_for(0, Duration::from_secs(5)))
        .find(|f| f.kind == PING)
        .expect("ping ack");
    assert_eq!(
        (f.kind, f.flags, &f.payload[..]),
        (PING, 1, &b"12345678"[..])
    );

    // HTTP/1.1 instead of the HTTP/2 preface.
    let addr = m.client.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let goaway = got
        .windows(4)
        .any(|w| w[..3] == [0, 0, 8] && w[3] == GOAWAY);
    assert!(goaway, "no GOAWAY in {got:?}");

    // A frame on stream 2 (even: server-initiated) is a protocol error.
    let mut c = Client::connect(&m.client, &[]);
    let block = c.request_block("/etcdserverpb.KV/Range");
    c.send(HEADERS, END_HEADERS | END_STREAM, 2, &block);
    let f = std::iter::from_fn(|| c.next_for(0, Duration::from_secs(5)))
        .find(|f| f.kind == GOAWAY)
        .expect("goaway");
    assert_eq!(&f.payload[4..8], &1u32.to_be_bytes(), "PROTOCOL_ERROR");
}

/// Random frames after a valid preface, on many connections: the server
/// never panics, and a well-formed call still works afterwards.
#[test]
fn random_frames_never_break_the_server() {
    use rand_chacha::ChaCha8Rng;
    use rand_core::{RngCore, SeedableRng};
    let m = member();
    let seed: u64 = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for _ in 0..200 {
        let mut c = Client::connect(&m.client, &[]);
        // Start with a real request half the time, so frames hit open streams.
        if rng.next_u32() % 2 == 0 {
            let block = c.request_block("/etcdserverpb.KV/Range");
            c.send(HEADERS, END_HEADERS, 1, &block);
        }
        for _ in 0..(rng.next_u32() % 20) {
            let kind = (rng.next_u32() % 11) as u8;
            let flags = rng.next_u32() as u8;
            let stream = rng.next_u32() % 8;
            let mut payload = vec![0u8; (rng.next_u32() % 64) as usize];
            rng.fill_bytes(&mut payload);
            let len = payload.len();
            let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
            f.extend_from_slice(&stream.to_be_bytes());
            f.extend_from_slice(&payload);
            if c.sock.write_all(&f).is_err() {
                break; // the server closed the connection: allowed
            }
        }
    }
    let mut c = Client::connect(&m.client, &[]);
    let a = c.call(1, "/etcdserverpb.KV/Put", &put("after", b"noise".to_vec()));
    assert_eq!(a.field("grpc-status"), Some("0"), "{a:?}");
    let log = m.log_text();
    assert!(
        !log.contains("panicked"),
        "seed {seed}: the server panicked:\n{log}"
    );
}

/// SIGTERM while a call is half sent: the server says GOAWAY naming that
/// stream, still answers it once the request is complete, refuses a new
/// stream, then exits 0 — and the write survives a restart.
#[test]
fn a_call_in_flight_at_sigterm_is_answered_before_the_server_exits() {
    let mut m = member();
    let mut c = Client::connect(&m.client, &[]);
    let block = c.request_block("/etcdserverpb.KV/Put");
    c.send(HEADERS, END_HEADERS, 1, &block);
    let msg = grpc_message(&put("in-flight", b"kept".to_vec()));
    c.send(DATA, 0, 1, &msg[..4]);
    // The connection handles frames in order, so once our PING is
    // acknowledged the server has seen stream 1 and the GOAWAY must name it.
    // Without this barrier SIGTERM can overtake the HEADERS, and a GOAWAY
    // naming stream 0 would then be the right answer.
    c.send(PING, 0, 0, b"barrier!");
    std::iter::from_fn(|| c.next_for(0, Duration::from_secs(5)))
        .find(|f| f.kind == PING && f.flags & 1 == 1)
        .expect("ping ack before SIGTERM");

    let pid = m.child.as_ref().expect("running").id();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let goaway = std::iter::from_fn(|| c.next_for(0, Duration::from_secs(5)))
        .find(|f| f.kind == GOAWAY)
        .expect("a GOAWAY after SIGTERM");
    assert_eq!(&goaway.payload[..4], &1u32.to_be_bytes(), "last stream 1");

    // A new stream after the GOAWAY is refused (REFUSED_STREAM)...
    let block = c.request_block("/etcdserverpb.KV/Range");
    c.send(HEADERS, END_HEADERS | END_STREAM, 3, &block);
    let refused = c.answer(3, Duration::from_secs(5));
    assert_eq!(refused.reset, Some(7), "{refused:?}");
    // ...while the one in flight completes.
    c.send(DATA, END_STREAM, 1, &msg[4..]);
    let a = c.answer(1, Duration::from_secs(5));
    assert_eq!(a.field("grpc-status"), Some("0"), "{a:?}");
    let r: pb::PutResponse = a.message();
    assert!(r.header.expect("header").revision > 1);

    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = m.child.as_mut().expect("running").try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no exit after SIGTERM:\n{}",
            m.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    m.child = None;

    m.restart();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(connect_ready(&m.client, || m.log_text()));
    let mut c = Client::connect(&m.client, &[]);
    let r: pb::RangeResponse = c
        .call(1, "/etcdserverpb.KV/Range", &range("in-flight"))
        .message();
    assert_eq!(&r.kvs[0].value[..], b"kept");
}
