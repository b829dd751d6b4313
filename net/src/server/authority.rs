//! Accepts the `:authority` etcd's Go clients send when given endpoints
//! with a scheme. etcdctl 3.4 dials `--endpoints=http://host:port` (and the
//! client URLs that `--cluster` finds) with the whole URL as the HTTP/2
//! `:authority`, which grpc-go servers take but the Rust HTTP/2 server
//! refuses as malformed (RST_STREAM, PROTOCOL_ERROR): `endpoint status`,
//! `defrag`, `move-leader`, `snapshot save` and `hashkv` then fail.
//!
//! This wraps a client connection and looks at its first request's header
//! block. If its authority is well formed (the usual case) the connection is
//! passed through untouched from then on. If it carries a scheme, every
//! header block of the connection is decoded (HPACK, with the client's
//! dynamic table), the authority's scheme is cut, and the block is encoded
//! again without the dynamic table, so the server's decoder never depends on
//! the client's encoder state.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The HTTP/2 default SETTINGS_MAX_FRAME_SIZE, which every server accepts.
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is refused (etcd's clients send < 1 KiB).
const MAX_BLOCK: usize = 1 << 20;

#[derive(Debug, PartialEq, Eq)]
enum Mode {
    /// Still reading the preface and the first header block.
    Deciding,
    /// Bytes go through as they are.
    Pass,
    /// Header blocks are rewritten.
    Rewrite,
}

pub struct FixAuthority {
    inner: TcpStream,
    mode: Mode,
    /// Bytes read from the client, not yet processed.
    input: Vec<u8>,
    /// Processed bytes for the server.
    output: Vec<u8>,
    out_pos: usize,
    preface_done: bool,
    decoder: hpack::Decoder<'static>,
    /// A header block being collected: stream id, flags, bytes.
    block: Option<(u32, u8, Vec<u8>)>,
    /// The raw frames of the block being collected (passed as they are if
    /// the connection turns out to need no rewriting).
    block_raw: Vec<u8>,
}

impl FixAuthority {
    pub fn new(inner: TcpStream) -> FixAuthority {
        FixAuthority {
            inner,
            mode: Mode::Deciding,
            input: Vec::new(),
            output: Vec::new(),
            out_pos: 0,
            preface_done: false,
            decoder: hpack::Decoder::new(),
            block: None,
            block_raw: Vec::new(),
        }
    }

    /// Moves what can be processed from `input` to `output`.
    fn process(&mut self) -> io::Result<()> {
        if !self.preface_done {
            if self.input.len() < PREFACE.len() {
                return Ok(());
            }
            if &self.input[..PREFACE.len()] != PREFACE {
                // Not HTTP/2 with prior knowledge: not ours to touch.
                self.mode = Mode::Pass;
            }
            self.preface_done = true;
            let rest = self.input.split_off(PREFACE.len().min(self.input.len()));
            self.output.extend_from_slice(&self.input);
            self.input = rest;
        }
        while self.mode != Mode::Pass {
            if self.input.len() < 9 {
                return Ok(());
            }
            let len = (usize::from(self.input[0]) << 16)
                | (usize::from(self.input[1]) << 8)
                | usize::from(self.input[2]);
            if self.input.len() < 9 + len {
                return Ok(());
            }
            let kind = self.input[3];
            let flags = self.input[4];
            let stream = u32::from_be_bytes([
                self.input[5] & 0x7f,
                self.input[6],
                self.input[7],
                self.input[8],
            ]);
            let frame: Vec<u8> = self.input.drain(..9 + len).collect();
            let payload = &frame[9..];
            match kind {
                HEADERS => {
                    let mut p = payload;
                    if flags & PADDED != 0 {
                        let pad = usize::from(*p.first().ok_or_else(bad)?);
                        p = p
                            .get(1..p.len().checked_sub(pad).ok_or_else(bad)?)
                            .ok_or_else(bad)?;
                    }
                    if flags & PRIORITY != 0 {
                        p = p.get(5..).ok_or_else(bad)?;
                    }
                    self.block = Some((stream, flags, p.to_vec()));
                    self.block_raw = frame.clone();
                }
                CONTINUATION => {
                    let Some((_, _, b)) = self.block.as_mut() else {
                        return Err(bad());
                    };
                    b.extend_from_slice(payload);
                    if b.len() > MAX_BLOCK {
                        return Err(bad());
                    }
                    self.block_raw.extend_from_slice(&frame);
                }
                _ => {
                    if self.block.is_some() {
                        // HTTP/2 forbids frames inside a header block.
                        return Err(bad());
                    }
                    self.output.extend_from_slice(&frame);
                    continue;
                }
            }
            if flags & END_HEADERS != 0 {
                let (stream, first_flags, block) = self.block.take().ok_or_else(bad)?;
                let raw = std::mem::take(&mut self.block_raw);
                self.finish_block(stream, first_flags, &block, &raw)?;
            }
        }
        // Passing through: everything left goes as it is.
        self.output.append(&mut self.input);
        Ok(())
    }

    fn finish_block(&mut self, stream: u32, flags: u8, block: &[u8], raw: &[u8]) -> io::Result<()> {
        let headers = self.decoder.decode(block).map_err(|_| bad())?;
        let needs_fix = headers
            .iter()
            .any(|(n, v)| n == b":authority" && v.windows(3).any(|w| w == b"://"));
        if self.mode == Mode::Deciding && !needs_fix {
            self.mode = Mode::Pass;
            self.output.extend_from_slice(raw);
            return Ok(());
        }
        self.mode = Mode::Rewrite;
        let mut out = Vec::with_capacity(block.len() + 16);
        for (n, v) in &headers {
            let v: &[u8] = if n == b":authority" {
                strip_scheme(v)
            } else {
                v
            };
            // Literal header field without indexing, new name (RFC 7541 6.2.2).
            out.push(0x00);
            encode_int(&mut out, n.len(), 7);
            out.extend_from_slice(n);
            encode_int(&mut out, v.len(), 7);
            out.extend_from_slice(v);
        }
        let mut first = true;
        let mut chunks = out.chunks(MAX_FRAME).peekable();
        if chunks.peek().is_none() {
            write_frame(
                &mut self.output,
                HEADERS,
                (flags & END_STREAM) | END_HEADERS,
                stream,
                &[],
            );
        }
        while let Some(c) = chunks.next() {
            let last = chunks.peek().is_none();
            let (kind, mut f) = if first {
                (HEADERS, flags & END_STREAM)
            } else {
                (CONTINUATION, 0)
            };
            if last {
                f |= END_HEADERS;
            }
            write_frame(&mut self.output, kind, f, stream, c);
            first = false;
        }
        Ok(())
    }
}

fn bad() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed HTTP/2 header block")
}

fn strip_scheme(v: &[u8]) -> &[u8] {
    match v.windows(3).position(|w| w == b"://") {
        Some(i) => {
            let rest = &v[i + 3..];
            // Drop any path after the host.
            match rest.iter().position(|&b| b == b'/') {
                Some(j) => &rest[..j],
                None => rest,
            }
        }
        None => v,
    }
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 5.1); the prefix bits
/// above `n` are already in the last byte pushed.
fn encode_int(out: &mut Vec<u8>, mut v: usize, n: u8) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(v as u8);
        return;
    }
    out.push(max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

fn write_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

impl AsyncRead for FixAuthority {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.output.len() {
                let n = (this.output.len() - this.out_pos).min(buf.remaining());
                buf.put_slice(&this.output[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.output.len() {
                    this.output.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.mode == Mode::Pass && this.input.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut tmp = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut tmp);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if rb.filled().is_empty() {
                        // End of input: hand over whatever is left.
                        this.output.append(&mut this.input);
                        if this.output.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                        continue;
                    }
                    this.input.extend_from_slice(rb.filled());
                    this.process()?;
                }
            }
        }
    }
}

impl AsyncWrite for FixAuthority {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, b)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for FixAuthority {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_and_paths_are_cut_from_the_authority() {
        assert_eq!(strip_scheme(b"http://127.0.0.1:2379"), b"127.0.0.1:2379");
        assert_eq!(strip_scheme(b"http://h:1/x"), b"h:1");
        assert_eq!(strip_scheme(b"h:1"), b"h:1");
    }

    #[test]
    fn integers_encode_as_rfc_7541_shows() {
        // C.1.1 and C.1.2: 10 and 1337 with a 5-bit prefix.
        let mut v = Vec::new();
        encode_int(&mut v, 10, 5);
        assert_eq!(v, [10]);
        let mut v = Vec::new();
        encode_int(&mut v, 1337, 5);
        assert_eq!(v, [31, 154, 10]);
    }

    #[test]
    fn a_rewritten_block_decodes_to_the_fixed_headers() {
        let mut enc = hpack::Encoder::new();
        let block = enc.encode(vec![
            (&b":method"[..], &b"POST"[..]),
            (&b":authority"[..], &b"http://127.0.0.1:2379"[..]),
            (&b":path"[..], &b"/etcdserverpb.Maintenance/Status"[..]),
        ]);
        let mut out = Vec::new();
        write_frame(&mut out, HEADERS, END_HEADERS, 1, &block);
        let mut input = PREFACE.to_vec();
        input.extend_from_slice(&out);
        // Two requests, the second reusing the client's dynamic table.
        let block2 = enc.encode(vec![
            (&b":method"[..], &b"POST"[..]),
            (&b":authority"[..], &b"http://127.0.0.1:2379"[..]),
            (&b":path"[..], &b"/etcdserverpb.Maintenance/Status"[..]),
        ]);
        write_frame(&mut input, HEADERS, END_HEADERS | END_STREAM, 3, &block2);

        let mut f = FixAuthority::new(unreachable_stream());
        f.input = input;
        f.process().unwrap();
        assert_eq!(f.mode, Mode::Rewrite);
        let out = &f.output[PREFACE.len()..];
        let mut dec = hpack::Decoder::new();
        let mut at = 0;
        for (stream, end_stream) in [(1u32, false), (3, true)] {
            let len = (usize::from(out[at]) << 16)
                | (usize::from(out[at + 1]) << 8)
                | usize::from(out[at + 2]);
            assert_eq!(out[at + 3], HEADERS);
            assert_eq!(out[at + 4] & END_STREAM != 0, end_stream);
            assert_eq!(
                u32::from_be_bytes([out[at + 5], out[at + 6], out[at + 7], out[at + 8]]),
                stream
            );
            let hs = dec.decode(&out[at + 9..at + 9 + len]).unwrap();
            assert!(
                hs.contains(&(b":authority".to_vec(), b"127.0.0.1:2379".to_vec())),
                "{hs:?}"
            );
            assert!(hs.contains(&(
                b":path".to_vec(),
                b"/etcdserverpb.Maintenance/Status".to_vec()
            )));
            at += 9 + len;
        }
        assert_eq!(at, out.len());
    }

    /// A TcpStream the test never touches (`process` works on buffers only).
    fn unreachable_stream() -> TcpStream {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        c.set_nonblocking(true).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let _g = rt.enter();
        let s = TcpStream::from_std(c).unwrap();
        std::mem::forget(rt);
        s
    }
}
