//! HPACK decoding (RFC 7541) for the header blocks clients send: the static
//! table, the connection's dynamic table, integers and Huffman strings.
//! Decoding touches no allocator for fields the client indexed earlier,
//! which after a connection's first calls is nearly all of them.

use std::collections::VecDeque;
use std::sync::OnceLock;

/// Why a header block could not be decoded (a COMPRESSION_ERROR).
#[derive(Debug, PartialEq, Eq)]
pub struct HpackError(pub &'static str);

/// The dynamic table's size limit while the client sets none (we never
/// change SETTINGS_HEADER_TABLE_SIZE from its default).
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// The static table (RFC 7541, Appendix A); index 1 is the first entry.
const STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// The length in bits of each symbol's Huffman code (RFC 7541, Appendix
/// B; symbol 256 is EOS). The code is canonical, so the lengths define it.
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

const MAX_CODE_LEN: usize = 30;

/// The canonical code as decoding needs it: per length, the first code and
/// how many codes have it; the symbols in code order.
struct Canonical {
    first: [u32; MAX_CODE_LEN + 1],
    count: [u32; MAX_CODE_LEN + 1],
    offset: [u32; MAX_CODE_LEN + 1],
    symbols: [u16; 257],
}

fn canonical() -> &'static Canonical {
    static C: OnceLock<Canonical> = OnceLock::new();
    C.get_or_init(|| {
        let mut c = Canonical {
            first: [0; MAX_CODE_LEN + 1],
            count: [0; MAX_CODE_LEN + 1],
            offset: [0; MAX_CODE_LEN + 1],
            symbols: [0; 257],
        };
        let mut order: Vec<u16> = (0..257).collect();
        order.sort_by_key(|&s| (CODE_LENGTHS[usize::from(s)], s));
        for &l in &CODE_LENGTHS {
            c.count[usize::from(l)] += 1;
        }
        let mut code = 0u32;
        let mut at = 0u32;
        for len in 1..=MAX_CODE_LEN {
            code <<= 1;
            c.first[len] = code;
            c.offset[len] = at;
            code += c.count[len];
            at += c.count[len];
        }
        c.symbols.copy_from_slice(&order);
        c
    })
}

/// The code of every symbol, for encoding (tests, and checking the table).
#[cfg(test)]
pub fn huffman_encode(data: &[u8]) -> Vec<u8> {
    let c = canonical();
    let mut codes = [(0u32, 0u8); 257];
    for len in 1..=MAX_CODE_LEN {
        for i in 0..c.count[len] {
            let s = c.symbols[(c.offset[len] + i) as usize];
            codes[usize::from(s)] = (c.first[len] + i, len as u8);
        }
    }
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u64, 0u32);
    for &b in data {
        let (code, len) = codes[usize::from(b)];
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        // Pad with the most significant bits of EOS (all ones).
        out.push(((acc << (8 - bits)) | ((1 << (8 - bits)) - 1)) as u8);
    }
    out
}

/// Decodes a Huffman-coded string into `out`.
pub fn huffman_decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let c = canonical();
    let mut code = 0u32;
    let mut len = 0usize;
    for &byte in src {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            let i = code.wrapping_sub(c.first[len]);
            if i < c.count[len] {
                let sym = c.symbols[(c.offset[len] + i) as usize];
                if sym == 256 {
                    return Err(HpackError("EOS in a Huffman string"));
                }
                out.push(sym as u8);
                code = 0;
                len = 0;
            } else if len == MAX_CODE_LEN {
                return Err(HpackError("invalid Huffman code"));
            }
        }
    }
    // What is left must be padding: fewer than 8 bits, all ones.
    if len > 7 || code != (1 << len) - 1 {
        return Err(HpackError("invalid Huffman padding"));
    }
    Ok(())
}

/// A dynamic table entry: name and value.
type Entry = (Box<[u8]>, Box<[u8]>);

/// A connection's HPACK decoder.
pub struct Decoder {
    /// Newest first: dynamic index 62 is `table[0]`.
    table: VecDeque<Entry>,
    size: usize,
    max_size: usize,
    /// The largest size the client may choose (our setting).
    limit: usize,
    scratch_name: Vec<u8>,
    scratch_value: Vec<u8>,
    memo: Memo,
}

/// The last few short Huffman strings and what they decoded to. Some
/// clients never index a value that repeats (h2 sends every `:path` as a
/// literal), so the same bytes come again and again.
#[derive(Default)]
struct Memo {
    entries: [(Vec<u8>, Vec<u8>); 4],
    next: usize,
}

const MEMO_MAX: usize = 64;

impl Memo {
    fn decode(&mut self, src: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
        let memoable = !src.is_empty() && src.len() <= MEMO_MAX;
        if memoable && let Some((_, plain)) = self.entries.iter().find(|(raw, _)| raw == src) {
            out.extend_from_slice(plain);
            return Ok(());
        }
        huffman_decode(src, out)?;
        if memoable {
            let (raw, plain) = &mut self.entries[self.next];
            raw.clear();
            raw.extend_from_slice(src);
            plain.clear();
            plain.extend_from_slice(out);
            self.next = (self.next + 1) % self.entries.len();
        }
        Ok(())
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_TABLE_SIZE)
    }
}

impl Decoder {
    pub fn new(limit: usize) -> Decoder {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max_size: limit,
            limit,
            scratch_name: Vec::new(),
            scratch_value: Vec::new(),
            memo: Memo::default(),
        }
    }

    /// Decodes a whole header block, calling `f` with each field in order.
    pub fn decode(
        &mut self,
        block: &[u8],
        mut f: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        let mut p = block;
        let mut fields_seen = false;
        while let Some(&b) = p.first() {
            if b & 0x80 != 0 {
                let index = int(&mut p, 7)?;
                let (n, v) = self.get(index)?;
                f(n, v);
                fields_seen = true;
            } else if b & 0x40 != 0 {
                let index = int(&mut p, 6)?;
                let (name, value) = self.literal(&mut p, index)?;
                f(&name, &value);
                self.insert(name, value);
                fields_seen = true;
            } else if b & 0x20 != 0 {
                // Size updates come only at the start of a block.
                if fields_seen {
                    return Err(HpackError("table size update after a field"));
                }
                let size = int(&mut p, 5)?;
                if size > self.limit {
                    return Err(HpackError("table size update above the limit"));
                }
                self.max_size = size;
                self.evict(0);
            } else {
                // Without indexing (0000) or never indexed (0001).
                let index = int(&mut p, 4)?;
                let (name, value) = self.literal_scratch(&mut p, index)?;
                f(name, value);
                fields_seen = true;
            }
        }
        Ok(())
    }

    fn get(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        match index {
            0 => Err(HpackError("index 0")),
            1..=61 => Ok(STATIC[index - 1]),
            _ => self
                .table
                .get(index - 62)
                .map(|(n, v)| (&n[..], &v[..]))
                .ok_or(HpackError("index beyond the table")),
        }
    }

    /// A literal field to be indexed (owned, as the table keeps it).
    fn literal(&mut self, p: &mut &[u8], index: usize) -> Result<Entry, HpackError> {
        let name: Box<[u8]> = if index == 0 {
            string(p, &mut self.scratch_name, &mut self.memo)?;
            self.scratch_name.as_slice().into()
        } else {
            self.get(index)?.0.into()
        };
        string(p, &mut self.scratch_value, &mut self.memo)?;
        Ok((name, self.scratch_value.as_slice().into()))
    }

    /// A literal field not to be indexed, decoded into scratch space.
    fn literal_scratch(
        &mut self,
        p: &mut &[u8],
        index: usize,
    ) -> Result<(&[u8], &[u8]), HpackError> {
        if index == 0 {
            string(p, &mut self.scratch_name, &mut self.memo)?;
        }
        string(p, &mut self.scratch_value, &mut self.memo)?;
        let name = if index == 0 {
            &self.scratch_name[..]
        } else {
            self.get(index)?.0
        };
        Ok((name, &self.scratch_value))
    }

    fn insert(&mut self, name: Box<[u8]>, value: Box<[u8]>) {
        let size = name.len() + value.len() + 32;
        if size > self.max_size {
            // Larger than the whole table: it empties the table.
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.size += size;
        self.table.push_front((name, value));
    }

    /// Evicts the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            let Some((n, v)) = self.table.pop_back() else {
                break;
            };
            self.size -= n.len() + v.len() + 32;
        }
    }
}

/// Reads an HPACK integer with an `n`-bit prefix.
fn int(p: &mut &[u8], n: u32) -> Result<usize, HpackError> {
    let (&first, rest) = p.split_first().ok_or(HpackError("truncated integer"))?;
    *p = rest;
    let max = (1usize << n) - 1;
    let mut value = usize::from(first) & max;
    if value < max {
        return Ok(value);
    }
    let mut shift = 0;
    loop {
        let (&b, rest) = p.split_first().ok_or(HpackError("truncated integer"))?;
        *p = rest;
        if shift > 21 {
            // Nothing a header block needs is this large (> 2^28).
            return Err(HpackError("integer too large"));
        }
        value += usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
}

/// Reads a string literal into `out` (replacing its contents).
fn string(p: &mut &[u8], out: &mut Vec<u8>, memo: &mut Memo) -> Result<(), HpackError> {
    let huffman = p.first().is_some_and(|b| b & 0x80 != 0);
    let len = int(p, 7)?;
    if len > p.len() {
        return Err(HpackError("truncated string"));
    }
    let (s, rest) = p.split_at(len);
    *p = rest;
    out.clear();
    if huffman {
        memo.decode(s, out)
    } else {
        out.extend_from_slice(s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn decode_all(d: &mut Decoder, block: &[u8]) -> Result<Fields, HpackError> {
        let mut out = Vec::new();
        d.decode(block, |n, v| out.push((n.to_vec(), v.to_vec())))?;
        Ok(out)
    }

    #[test]
    fn rfc7541_c4_requests_with_huffman_and_the_dynamic_table() {
        // RFC 7541, C.4.1 to C.4.3: three requests on one connection.
        let mut d = Decoder::default();
        let r1 = b"\x82\x86\x84\x41\x8c\xf1\xe3\xc2\xe5\xf2\x3a\x6b\xa0\xab\x90\xf4\xff";
        assert_eq!(
            decode_all(&mut d, r1).unwrap(),
            [
                (b":method".to_vec(), b"GET".to_vec()),
                (b":scheme".to_vec(), b"http".to_vec()),
                (b":path".to_vec(), b"/".to_vec()),
                (b":authority".to_vec(), b"www.example.com".to_vec()),
            ]
        );
        let r2 = b"\x82\x86\x84\xbe\x58\x86\xa8\xeb\x10\x64\x9c\xbf";
        let h = decode_all(&mut d, r2).unwrap();
        assert_eq!(h[3].1, b"www.example.com");
        assert_eq!(h[4], (b"cache-control".to_vec(), b"no-cache".to_vec()));
        let r3 = b"\x82\x87\x85\xbf\x40\x88\x25\xa8\x49\xe9\x5b\xa9\x7d\x7f\x89\x25\xa8\x49\xe9\x5b\xb8\xe8\xb4\xbf";
        let h = decode_all(&mut d, r3).unwrap();
        assert_eq!(h[2], (b":path".to_vec(), b"/index.html".to_vec()));
        assert_eq!(h[4], (b"custom-key".to_vec(), b"custom-value".to_vec()));
        assert_eq!(d.size, 164);
    }

    #[test]
    fn bad_blocks_are_errors() {
        let mut d = Decoder::default();
        assert!(d.decode(b"\x80", |_, _| {}).is_err(), "index 0");
        assert!(d.decode(b"\xbe", |_, _| {}).is_err(), "empty dynamic table");
        assert!(
            d.decode(b"\x3f\xe1\x3f", |_, _| {}).is_err(),
            "size above limit"
        );
        assert!(
            d.decode(b"\x82\x20", |_, _| {}).is_err(),
            "size update after a field"
        );
        assert!(
            d.decode(b"\x41\x85\xff", |_, _| {}).is_err(),
            "truncated string"
        );
        assert!(
            d.decode(b"\xff\xff\xff\xff\xff\xff\x01", |_, _| {})
                .is_err(),
            "huge int"
        );
        // Huffman: a full byte of padding, and EOS itself.
        assert!(d.decode(b"\x00\x81\xff\x00", |_, _| {}).is_err());
        assert!(
            d.decode(b"\x00\x84\xff\xff\xff\xff\x00", |_, _| {})
                .is_err()
        );
    }

    #[test]
    fn repeated_huffman_strings_decode_the_same_from_the_memo() {
        let mut d = Decoder::default();
        let mut paths = Vec::new();
        for i in 0..12 {
            // Literal without indexing, name ":path" (static 4), Huffman value.
            let path = format!("/etcdserverpb.KV/M{}", i % 6);
            let coded = huffman_encode(path.as_bytes());
            let mut b = vec![0x04, 0x80 | coded.len() as u8];
            b.extend_from_slice(&coded);
            let got = decode_all(&mut d, &b).unwrap();
            paths.push(String::from_utf8(got[0].1.clone()).unwrap());
            assert_eq!(got[0], (b":path".to_vec(), path.into_bytes()));
        }
        assert_eq!(paths[0], paths[6]);
    }

    #[test]
    fn a_field_larger_than_the_table_empties_it() {
        let mut d = Decoder::new(64);
        let mut b = vec![0x40, 1, b'a', 1, b'b']; // 34 bytes: fits.
        decode_all(&mut d, &b).unwrap();
        assert_eq!(d.table.len(), 1);
        b = vec![0x40, 1, b'a', 40];
        b.extend_from_slice(&[b'c'; 40]);
        decode_all(&mut d, &b).unwrap();
        assert_eq!((d.table.len(), d.size), (0, 0));
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::Direct(
                    concat!(env!("CARGO_MANIFEST_DIR"), "/../proptest-regressions/hpack.txt")))),
            ..ProptestConfig::default()
        })]

        /// Our Huffman code against the `hpack` crate's decoder (its own
        /// copy of RFC 7541's table): every byte value, round trip.
        #[test]
        fn huffman_matches_an_independent_decoder(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let coded = huffman_encode(&data);
            let theirs = hpack::huffman::HuffmanDecoder::new().decode(&coded).unwrap();
            prop_assert_eq!(&theirs, &data);
            let mut ours = Vec::new();
            huffman_decode(&coded, &mut ours).unwrap();
            prop_assert_eq!(ours, data);
        }

        /// Blocks written by the `hpack` crate's encoder (dynamic table
        /// indexing) decode to what was encoded, across several blocks.
        #[test]
        fn blocks_from_an_independent_encoder(
            blocks in proptest::collection::vec(
                proptest::collection::vec(("[a-z-]{1,12}", "[ -~]{0,40}"), 0..8), 1..6)
        ) {
            let mut enc = hpack::Encoder::new();
            let mut d = Decoder::default();
            for fields in blocks {
                let refs: Vec<(&[u8], &[u8])> =
                    fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect();
                let block = enc.encode(refs.iter().copied());
                let got = decode_all(&mut d, &block).unwrap();
                let want: Vec<(Vec<u8>, Vec<u8>)> =
                    fields.iter().map(|(n, v)| (n.clone().into_bytes(), v.clone().into_bytes())).collect();
                prop_assert_eq!(got, want);
            }
        }

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn arbitrary_blocks_never_panic(blocks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8)) {
            let mut d = Decoder::default();
            for b in blocks {
                let _ = d.decode(&b, |_, _| {});
                prop_assert!(d.size <= d.max_size);
            }
        }
    }
}
