//! HTTP/2 framing (RFC 9113) as the gRPC server needs it: frame heads,
//! settings, and header blocks written without HPACK's dynamic table, so
//! the encoder keeps no state (RFC 7541 literals "without indexing").

/// What a client sends first.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY: u8 = 0x20;

pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const INTERNAL_ERROR: u32 = 0x2;
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
pub const STREAM_CLOSED: u32 = 0x5;
pub const FRAME_SIZE_ERROR: u32 = 0x6;
pub const REFUSED_STREAM: u32 = 0x7;
pub const COMPRESSION_ERROR: u32 = 0x9;

pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

/// The frame size every peer accepts; we ask for no more.
pub const DEFAULT_MAX_FRAME: usize = 16_384;
/// The window every stream and connection starts with.
pub const DEFAULT_WINDOW: i64 = 65_535;
/// The largest window HTTP/2 allows.
pub const MAX_WINDOW: i64 = (1 << 31) - 1;

pub const HEAD_LEN: usize = 9;

/// A frame's 9-byte head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Head {
    /// Reads a head from the first 9 bytes of `b` (the caller checks the length).
    pub fn parse(b: &[u8]) -> Head {
        Head {
            len: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5] & 0x7f, b[6], b[7], b[8]]),
        }
    }
}

/// Appends a frame head.
pub fn put_head(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len < 1 << 24);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
}

/// Appends a whole frame.
pub fn put_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    put_head(out, payload.len(), kind, flags, stream);
    out.extend_from_slice(payload);
}

pub fn put_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    put_frame(out, WINDOW_UPDATE, 0, stream, &increment.to_be_bytes());
}

pub fn put_rst(out: &mut Vec<u8>, stream: u32, code: u32) {
    put_frame(out, RST_STREAM, 0, stream, &code.to_be_bytes());
}

pub fn put_goaway(out: &mut Vec<u8>, last_stream: u32, code: u32) {
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&last_stream.to_be_bytes());
    p[4..].copy_from_slice(&code.to_be_bytes());
    put_frame(out, GOAWAY, 0, 0, &p);
}

/// Appends a header block as HEADERS (and CONTINUATION frames when it is
/// larger than `max_frame`).
pub fn put_header_block(
    out: &mut Vec<u8>,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame: usize,
) {
    let mut chunks = block.chunks(max_frame.max(1)).peekable();
    let mut kind = HEADERS;
    let mut flags = if end_stream { END_STREAM } else { 0 };
    if block.is_empty() {
        put_head(out, 0, HEADERS, flags | END_HEADERS, stream);
        return;
    }
    while let Some(c) = chunks.next() {
        if chunks.peek().is_none() {
            flags |= END_HEADERS;
        }
        put_frame(out, kind, flags, stream, c);
        kind = CONTINUATION;
        flags = 0;
    }
}

/// Appends an HPACK integer with an `n`-bit prefix; `first` holds the bits
/// above the prefix.
pub fn put_int(out: &mut Vec<u8>, first: u8, n: u32, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// Appends one header field as a literal without indexing, with a literal
/// name and no Huffman coding.
pub fn put_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    put_int(out, 0, 7, name.len());
    out.extend_from_slice(name);
    put_int(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

/// `:status: 200` (static table entry 8) and `content-type:
/// application/grpc` (a literal value for static name 31).
pub const GRPC_RESPONSE_HEADERS: &[u8] = b"\x88\x0f\x10\x10application/grpc";

/// The trailers of a successful call: `grpc-status: 0`.
pub const GRPC_OK_TRAILERS: &[u8] = b"\x00\x0bgrpc-status\x010";

/// A header block for `status` and the gRPC status trailers of a failed
/// call (`grpc-status`, `grpc-message` percent-encoded as gRPC asks). With
/// `with_response_headers` it is a "trailers-only" answer.
pub fn status_block(code: i32, message: &str, with_response_headers: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + message.len());
    if with_response_headers {
        b.extend_from_slice(GRPC_RESPONSE_HEADERS);
    }
    put_literal(&mut b, b"grpc-status", code.to_string().as_bytes());
    if !message.is_empty() {
        put_literal(&mut b, b"grpc-message", &percent_encode(message));
    }
    b
}

/// gRPC's encoding of `grpc-message`: bytes outside printable ASCII, and
/// `%`, as `%XX`.
pub fn percent_encode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for &c in s.as_bytes() {
        if (0x20..=0x7e).contains(&c) && c != b'%' {
            out.push(c);
        } else {
            out.extend_from_slice(format!("%{c:02X}").as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(block: &[u8]) -> Vec<(String, String)> {
        hpack::Decoder::new()
            .decode(block)
            .unwrap()
            .into_iter()
            .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    }

    #[test]
    fn fixed_blocks_decode_to_the_grpc_headers() {
        assert_eq!(
            decode(GRPC_RESPONSE_HEADERS),
            [
                (":status".into(), "200".into()),
                ("content-type".into(), "application/grpc".into())
            ]
        );
        assert_eq!(
            decode(GRPC_OK_TRAILERS),
            [("grpc-status".into(), "0".into())]
        );
    }

    #[test]
    fn status_blocks_carry_code_and_encoded_message() {
        let b = status_block(9, "etcdserver: 100% \u{e9}", true);
        let h = decode(&b);
        assert_eq!(h[2], ("grpc-status".into(), "9".into()));
        assert_eq!(
            h[3],
            ("grpc-message".into(), "etcdserver: 100%25 %C3%A9".into())
        );
        assert_eq!(decode(&status_block(0, "", false)).len(), 1);
    }

    #[test]
    fn long_literals_use_multi_byte_integers() {
        let name = "x".repeat(300);
        let value = "y".repeat(70_000);
        let mut b = Vec::new();
        put_literal(&mut b, name.as_bytes(), value.as_bytes());
        assert_eq!(decode(&b), [(name, value)]);
    }

    #[test]
    fn large_header_blocks_are_split_into_continuations() {
        let mut out = Vec::new();
        let block = vec![7u8; 40_000];
        put_header_block(&mut out, 3, &block, true, DEFAULT_MAX_FRAME);
        let mut at = 0;
        let mut kinds = Vec::new();
        let mut joined = Vec::new();
        while at < out.len() {
            let h = Head::parse(&out[at..]);
            kinds.push((h.kind, h.flags, h.stream));
            joined.extend_from_slice(&out[at + HEAD_LEN..at + HEAD_LEN + h.len]);
            at += HEAD_LEN + h.len;
        }
        assert_eq!(
            kinds,
            [
                (HEADERS, END_STREAM, 3),
                (CONTINUATION, 0, 3),
                (CONTINUATION, END_HEADERS, 3)
            ]
        );
        assert_eq!(joined, block);
    }
}
