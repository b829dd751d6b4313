//! One client connection: HTTP/2 frames in and out on a single task.
//!
//! Unary calls of the hot services are decoded, run and answered inside
//! this task: their futures live in a `FuturesUnordered`, and every answer
//! of a turn goes out in one write. Every other call is bridged to tonic's
//! generated services (`bridge.rs`) on a task of its own, whose output comes
//! back on a channel. Flow control is HTTP/2's: what a stream may send
//! waits in its queue until the client's windows allow it.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tonic::Status;

use super::bridge::{self, Credit, Event};
use super::frame::*;
use super::hpack::Decoder;
use super::{Answer, Route, Services, UnaryFn, UnaryFuture};

/// The window we give each stream of the client's, and what we credit back
/// once half of it is used.
const STREAM_WINDOW: u32 = 1 << 20;
/// The connection's receive window (raised at the start).
const CONN_WINDOW: u32 = 16 << 20;
/// Largest header block accepted (etcd's clients send well under 1 KiB).
const MAX_HEADER_BLOCK: usize = 256 << 10;
/// Output beyond this stops reading until the client takes some.
const WBUF_HIGH: usize = 4 << 20;

/// Stream ids hash by one multiplication: they are the client's own odd,
/// increasing numbers, and SipHash showed in profiles.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type StreamMap = HashMap<u32, Stream, std::hash::BuildHasherDefault<IdHasher>>;

/// A connection error: what goes in the GOAWAY.
#[derive(Debug)]
struct ConnError(u32);

struct Stream {
    kind: Kind,
    send_window: i64,
    /// Output waiting for window or for the frames before it.
    out: VecDeque<Out>,
    /// The client has ended its side.
    recv_done: bool,
    /// Our END_STREAM has been written.
    send_done: bool,
    /// Received bytes not yet credited back with a WINDOW_UPDATE.
    recv_unacked: u32,
    /// What the client may still send on this stream; a client that sends
    /// more breaks flow control (and would grow our buffers).
    recv_window: i64,
}

enum Kind {
    /// A call answered in this task.
    Unary {
        call: UnaryFn,
        /// The request so far: the first DATA payload kept as it is
        /// (usually the whole message), more copied behind it.
        first: Bytes,
        more: BytesMut,
        /// Its future is running (or its error has been answered).
        started: bool,
    },
    /// A call run by tonic on a task of its own.
    Bridged {
        body: Option<mpsc::UnboundedSender<Bytes>>,
        credit: Arc<Credit>,
        task: tokio::task::AbortHandle,
    },
}

enum Out {
    /// A header block (the fixed gRPC ones borrowed), and END_STREAM.
    Headers(Cow<'static, [u8]>, bool),
    Data(Bytes, bool),
}

/// A header block being received over HEADERS and CONTINUATION frames.
struct Partial {
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
}

pub struct Conn {
    io: TcpStream,
    services: Arc<Services>,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    wpos: usize,
    preface_seen: bool,
    decoder: Decoder,
    partial: Option<Partial>,
    streams: StreamMap,
    last_stream: u32,
    peer_initial_window: i64,
    peer_max_frame: usize,
    conn_send_window: i64,
    conn_recv_unacked: u32,
    conn_recv_window: i64,
    unary: FuturesUnordered<UnaryFuture>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    /// Ready once the server stops.
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// GOAWAY sent: no new streams; close once the open ones are done.
    going_away: bool,
    read_closed: bool,
}

impl Conn {
    pub fn new(io: TcpStream, services: Arc<Services>, stop: watch::Receiver<bool>) -> Conn {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut wbuf = Vec::with_capacity(16 << 10);
        // Our SETTINGS, then the connection window raised.
        let mut settings = Vec::new();
        settings.extend_from_slice(&SETTINGS_INITIAL_WINDOW_SIZE.to_be_bytes());
        settings.extend_from_slice(&STREAM_WINDOW.to_be_bytes());
        put_frame(&mut wbuf, SETTINGS, 0, 0, &settings);
        put_window_update(&mut wbuf, 0, CONN_WINDOW - DEFAULT_WINDOW as u32);
        Conn {
            io,
            services,
            rbuf: BytesMut::with_capacity(16 << 10),
            wbuf,
            wpos: 0,
            preface_seen: false,
            decoder: Decoder::default(),
            partial: None,
            streams: StreamMap::default(),
            last_stream: 0,
            peer_initial_window: DEFAULT_WINDOW,
            peer_max_frame: DEFAULT_MAX_FRAME,
            conn_send_window: DEFAULT_WINDOW,
            conn_recv_unacked: 0,
            conn_recv_window: i64::from(CONN_WINDOW),
            unary: FuturesUnordered::new(),
            events_tx,
            events_rx,
            stop: Box::pin(async move {
                let mut stop = stop;
                let _ = stop.changed().await;
            }),
            going_away: false,
            read_closed: false,
        }
    }

    /// Serves the connection until the client leaves, a connection error,
    /// or (after a stop) its last stream ends.
    pub async fn run(mut self) {
        let _ = poll_fn(|cx| self.poll_turn(cx)).await;
        self.abort_all();
    }

    fn abort_all(&mut self) {
        for (_, s) in self.streams.drain() {
            if let Kind::Bridged { task, .. } = s.kind {
                task.abort();
            }
        }
    }

    fn poll_turn(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut progress = false;
            if !self.going_away && self.stop.as_mut().poll(cx).is_ready() {
                self.going_away = true;
                put_goaway(&mut self.wbuf, self.last_stream, NO_ERROR);
                progress = true;
            }
            if !self.read_closed && self.wbuf.len() - self.wpos < WBUF_HIGH {
                match self.poll_read(cx) {
                    Poll::Ready(Ok(0)) => {
                        // The client is gone: nothing more can be answered.
                        return Poll::Ready(Ok(()));
                    }
                    Poll::Ready(Ok(_)) => {
                        progress = true;
                        if let Err(ConnError(code)) = self.process() {
                            put_goaway(&mut self.wbuf, self.last_stream, code);
                            self.read_closed = true;
                            self.going_away = true;
                            self.abort_all();
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            while let Poll::Ready(Some((id, answer))) = self.unary.poll_next_unpin(cx) {
                self.answer(id, answer);
                progress = true;
            }
            while let Poll::Ready(Some(ev)) = self.events_rx.poll_recv(cx) {
                self.event(ev);
                progress = true;
            }
            if self.wpos < self.wbuf.len() {
                match self.poll_write(cx) {
                    Poll::Ready(Ok(())) => progress = true,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            let flushed = self.wpos == self.wbuf.len();
            if flushed && (self.read_closed || self.going_away) && self.streams.is_empty() {
                return Poll::Ready(Ok(()));
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// Reads what the socket has; `Ready(Ok(0))` at its end.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut total = 0;
        loop {
            if self.rbuf.capacity() - self.rbuf.len() < 4096 {
                self.rbuf.reserve(32 << 10);
            }
            match self.io.try_read_buf(&mut self.rbuf) {
                // At the end, what was read first; the next call sees 0.
                Ok(0) => return Poll::Ready(Ok(total)),
                Ok(n) => {
                    total += n;
                    if total >= 256 << 10 {
                        return Poll::Ready(Ok(total));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match self.io.poll_read_ready(cx) {
                        Poll::Ready(Ok(())) => continue,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending if total > 0 => return Poll::Ready(Ok(total)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wbuf.len() {
            match self.io.try_write(&self.wbuf[self.wpos..]) {
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match self.io.poll_write_ready(cx) {
                        Poll::Ready(Ok(())) => continue,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {
                            if self.wpos > 0 && self.wpos >= self.wbuf.len() / 2 {
                                self.wbuf.drain(..self.wpos);
                                self.wpos = 0;
                            }
                            return Poll::Pending;
                        }
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
        if self.wbuf.capacity() > 1 << 20 {
            self.wbuf.shrink_to(64 << 10);
        }
        Poll::Ready(Ok(()))
    }

    /// Handles every whole frame in the read buffer.
    fn process(&mut self) -> Result<(), ConnError> {
        if !self.preface_seen {
            if self.rbuf.len() < PREFACE.len() {
                return Ok(());
            }
            if &self.rbuf[..PREFACE.len()] != PREFACE {
                // Not HTTP/2 with prior knowledge (gRPC always is).
                return Err(ConnError(PROTOCOL_ERROR));
            }
            self.rbuf.advance(PREFACE.len());
            self.preface_seen = true;
        }
        while self.rbuf.len() >= HEAD_LEN {
            let head = Head::parse(&self.rbuf);
            if head.len > DEFAULT_MAX_FRAME {
                return Err(ConnError(FRAME_SIZE_ERROR));
            }
            if self.rbuf.len() < HEAD_LEN + head.len {
                self.rbuf.reserve(HEAD_LEN + head.len - self.rbuf.len());
                break;
            }
            if self.partial.is_some() && head.kind != CONTINUATION {
                return Err(ConnError(PROTOCOL_ERROR));
            }
            if head.kind == DATA {
                let mut frame = self.rbuf.split_to(HEAD_LEN + head.len).freeze();
                frame.advance(HEAD_LEN);
                self.data(head, frame)?;
            } else {
                let frame = self.rbuf.split_to(HEAD_LEN + head.len);
                self.control(head, &frame[HEAD_LEN..])?;
            }
        }
        Ok(())
    }

    fn control(&mut self, head: Head, p: &[u8]) -> Result<(), ConnError> {
        match head.kind {
            HEADERS => {
                if head.stream == 0 {
                    return Err(ConnError(PROTOCOL_ERROR));
                }
                let mut p = p;
                if head.flags & PADDED != 0 {
                    let pad = usize::from(*p.first().ok_or(ConnError(PROTOCOL_ERROR))?);
                    p = p
                        .get(1..p.len().checked_sub(pad).ok_or(ConnError(PROTOCOL_ERROR))?)
                        .ok_or(ConnError(PROTOCOL_ERROR))?;
                }
                if head.flags & PRIORITY != 0 {
                    p = p.get(5..).ok_or(ConnError(PROTOCOL_ERROR))?;
                }
                let end_stream = head.flags & END_STREAM != 0;
                if head.flags & END_HEADERS != 0 {
                    // The usual case: one frame, decoded where it lies.
                    self.header_block(head.stream, end_stream, p)?;
                } else {
                    self.partial = Some(Partial {
                        stream: head.stream,
                        end_stream,
                        block: p.to_vec(),
                    });
                }
            }
            CONTINUATION => {
                let Some(mut partial) = self.partial.take() else {
                    return Err(ConnError(PROTOCOL_ERROR));
                };
                if partial.stream != head.stream {
                    return Err(ConnError(PROTOCOL_ERROR));
                }
                partial.block.extend_from_slice(p);
                if partial.block.len() > MAX_HEADER_BLOCK {
                    return Err(ConnError(PROTOCOL_ERROR));
                }
                if head.flags & END_HEADERS != 0 {
                    self.header_block(partial.stream, partial.end_stream, &partial.block)?;
                } else {
                    self.partial = Some(partial);
                }
            }
            RST_STREAM => {
                if head.stream == 0 || p.len() != 4 {
                    return Err(ConnError(PROTOCOL_ERROR));
                }
                if let Some(s) = self.streams.remove(&head.stream)
                    && let Kind::Bridged { task, .. } = s.kind
                {
                    task.abort();
                }
            }
            SETTINGS => {
                if head.stream != 0 {
                    return Err(ConnError(PROTOCOL_ERROR));
                }
                if head.flags & ACK != 0 {
                    return Ok(());
                }
                if !p.len().is_multiple_of(6) {
                    return Err(ConnError(FRAME_SIZE_ERROR));
                }
                for s in p.chunks(6) {
                    let id = u16::from_be_bytes([s[0], s[1]]);
                    let v = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
                    match id {
                        SETTINGS_INITIAL_WINDOW_SIZE => {
                            if i64::from(v) > MAX_WINDOW {
                                return Err(ConnError(FLOW_CONTROL_ERROR));
                            }
                            let delta = i64::from(v) - self.peer_initial_window;
                            self.peer_initial_window = i64::from(v);
                            for s in self.streams.values_mut() {
                                s.send_window += delta;
                            }
                        }
                        SETTINGS_MAX_FRAME_SIZE => {
                            if !(DEFAULT_MAX_FRAME as u32..1 << 24).contains(&v) {
                                return Err(ConnError(PROTOCOL_ERROR));
                            }
                            self.peer_max_frame = v as usize;
                        }
                        // Our header blocks never use the dynamic table;
                        // the other settings do not concern a server.
                        _ => {}
                    }
                }
                put_head(&mut self.wbuf, 0, SETTINGS, ACK, 0);
                self.pump_all();
            }
            PING => {
                if head.stream != 0 || p.len() != 8 {
                    return Err(ConnError(PROTOCOL_ERROR));
                }
                if head.flags & ACK == 0 {
                    put_frame(&mut self.wbuf, PING, ACK, 0, p);
                }
            }
            GOAWAY => {
                // The client leaves: answer what it has started, then close.
                self.going_away = true;
            }
            WINDOW_UPDATE => {
                if p.len() != 4 {
                    return Err(ConnError(FRAME_SIZE_ERROR));
                }
                let inc = i64::from(u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff);
                if head.stream == 0 {
                    if inc == 0 {
                        return Err(ConnError(PROTOCOL_ERROR));
                    }
                    self.conn_send_window += inc;
                    if self.conn_send_window > MAX_WINDOW {
                        return Err(ConnError(FLOW_CONTROL_ERROR));
                    }
                    self.pump_all();
                } else if let Some(s) = self.streams.get_mut(&head.stream) {
                    s.send_window += inc;
                    if inc == 0 || s.send_window > MAX_WINDOW {
                        self.reset(head.stream, FLOW_CONTROL_ERROR);
                    } else {
                        self.pump(head.stream);
                    }
                }
            }
            PUSH_PROMISE => return Err(ConnError(PROTOCOL_ERROR)),
            // PRIORITY and unknown frame types are ignored.
            _ => {}
        }
        Ok(())
    }

    /// A whole header block: a new call, or a stream's trailers.
    fn header_block(
        &mut self,
        stream: u32,
        end_stream: bool,
        block: &[u8],
    ) -> Result<(), ConnError> {
        // Pseudo-fields come first, so the route is known before the
        // fields that only a bridged call needs; a unary call copies
        // nothing out of the block.
        let mut route = None;
        let mut path = Vec::new();
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let decoded = self.decoder.decode(block, |name, value| {
            if name == b":path" {
                let r = super::route(value);
                if matches!(r, Route::Bridge) {
                    path = value.to_vec();
                }
                route = Some(r);
            } else if !name.starts_with(b":") && !matches!(route, Some(Route::Unary(_))) {
                fields.push((name.to_vec(), value.to_vec()));
            }
        });
        if decoded.is_err() {
            return Err(ConnError(COMPRESSION_ERROR));
        }
        if let Some(s) = self.streams.get_mut(&stream) {
            // Trailers: they end the client's side.
            if !end_stream {
                return Err(ConnError(PROTOCOL_ERROR));
            }
            s.recv_done = true;
            self.end_of_request(stream);
            return Ok(());
        }
        if stream <= self.last_stream {
            // A stream that has ended: its late frames are dropped.
            if stream.is_multiple_of(2) {
                return Err(ConnError(PROTOCOL_ERROR));
            }
            return Ok(());
        }
        if stream.is_multiple_of(2) {
            return Err(ConnError(PROTOCOL_ERROR));
        }
        self.last_stream = stream;
        if self.going_away {
            put_rst(&mut self.wbuf, stream, REFUSED_STREAM);
            return Ok(());
        }
        let kind = match route.unwrap_or(Route::Bridge) {
            Route::Unary(call) => Kind::Unary {
                call,
                first: Bytes::new(),
                more: BytesMut::new(),
                started: false,
            },
            Route::Bridge => {
                let (body_tx, body_rx) = mpsc::unbounded_channel();
                let credit = Arc::new(Credit::default());
                let task = tokio::spawn(bridge::run(
                    self.services.clone(),
                    stream,
                    path,
                    fields,
                    body_rx,
                    self.events_tx.clone(),
                    credit.clone(),
                ))
                .abort_handle();
                Kind::Bridged {
                    body: Some(body_tx),
                    credit,
                    task,
                }
            }
        };
        self.streams.insert(
            stream,
            Stream {
                kind,
                send_window: self.peer_initial_window,
                out: VecDeque::new(),
                recv_done: end_stream,
                send_done: false,
                recv_unacked: 0,
                recv_window: i64::from(STREAM_WINDOW),
            },
        );
        if end_stream {
            self.end_of_request(stream);
        }
        Ok(())
    }

    fn data(&mut self, head: Head, mut payload: Bytes) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(ConnError(PROTOCOL_ERROR));
        }
        // The connection window counts the whole frame, padding included.
        self.conn_recv_window -= head.len as i64;
        if self.conn_recv_window < 0 {
            return Err(ConnError(FLOW_CONTROL_ERROR));
        }
        self.conn_recv_unacked += head.len as u32;
        if self.conn_recv_unacked >= CONN_WINDOW / 2 {
            put_window_update(&mut self.wbuf, 0, self.conn_recv_unacked);
            self.conn_recv_window += i64::from(self.conn_recv_unacked);
            self.conn_recv_unacked = 0;
        }
        if head.flags & PADDED != 0 {
            let pad = usize::from(*payload.first().ok_or(ConnError(PROTOCOL_ERROR))?);
            if pad >= payload.len() {
                return Err(ConnError(PROTOCOL_ERROR));
            }
            payload.truncate(payload.len() - pad);
            payload.advance(1);
        }
        let end = head.flags & END_STREAM != 0;
        let max_msg = self.services.max_msg;
        let Some(s) = self.streams.get_mut(&head.stream) else {
            if head.stream > self.last_stream {
                return Err(ConnError(PROTOCOL_ERROR));
            }
            return Ok(());
        };
        if s.recv_done {
            self.reset(head.stream, STREAM_CLOSED);
            return Ok(());
        }
        s.recv_window -= head.len as i64;
        if s.recv_window < 0 {
            self.reset(head.stream, FLOW_CONTROL_ERROR);
            return Ok(());
        }
        s.recv_done = end;
        let mut too_large = None;
        match &mut s.kind {
            Kind::Unary {
                first,
                more,
                started,
                ..
            } => {
                if *started {
                    // Already answered with an error; the rest is dropped.
                } else if first.is_empty() && more.is_empty() {
                    *first = payload;
                } else {
                    if more.is_empty() {
                        more.extend_from_slice(first);
                        *first = Bytes::new();
                    }
                    more.extend_from_slice(&payload);
                }
                // As grpc-go: refused as soon as the prefix declares too
                // much (or more arrives than any allowed message).
                let have = first.len() + more.len();
                let head5: &[u8] = if more.is_empty() { first } else { more };
                let declared = super::declared_len(head5).unwrap_or(0);
                if !*started && (declared > max_msg || have > max_msg + 5) {
                    too_large = Some(declared);
                }
                // Buffered unary requests are bounded by the size check, so
                // the stream's window is credited as data arrives.
                s.recv_unacked += head.len as u32;
            }
            Kind::Bridged { body, .. } => {
                // Credited when the service has taken it (`Event::Consumed`);
                // padding at once.
                s.recv_unacked += (head.len - payload.len()) as u32;
                if let Some(tx) = body
                    && !payload.is_empty()
                    && tx.send(payload).is_err()
                {
                    *body = None;
                }
                if end {
                    *body = None;
                }
            }
        }
        if let Some(len) = too_large {
            self.fail_early(head.stream, super::too_large(len, max_msg));
            return Ok(());
        }
        if end {
            self.end_of_request(head.stream);
        } else if let Some(s) = self.streams.get_mut(&head.stream)
            && s.recv_unacked >= STREAM_WINDOW / 2
        {
            put_window_update(&mut self.wbuf, head.stream, s.recv_unacked);
            s.recv_window += i64::from(s.recv_unacked);
            s.recv_unacked = 0;
        }
        Ok(())
    }

    /// The client's side of a stream has ended.
    fn end_of_request(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        match &mut s.kind {
            Kind::Unary {
                call,
                first,
                more,
                started,
            } => {
                if *started {
                    self.maybe_close(id);
                    return;
                }
                *started = true;
                let body = if more.is_empty() {
                    std::mem::take(first)
                } else {
                    std::mem::take(more).freeze()
                };
                match super::unframe(body, self.services.max_msg) {
                    Ok(msg) => self.unary.push(call(&self.services.api, id, msg)),
                    Err(status) => self.answer(id, Err(status)),
                }
            }
            Kind::Bridged { body, .. } => *body = None,
        }
    }

    /// A unary call answered before its request ended (too large): the
    /// answer goes out, and `maybe_close` refuses the rest of the request.
    fn fail_early(&mut self, id: u32, status: Status) {
        if let Some(Stream {
            kind: Kind::Unary { started, .. },
            ..
        }) = self.streams.get_mut(&id)
        {
            *started = true;
        }
        self.answer(id, Err(status));
    }

    /// Writes a unary call's answer.
    fn answer(&mut self, id: u32, answer: Answer) {
        let Some(s) = self.streams.get_mut(&id) else {
            // Reset by the client meanwhile.
            return;
        };
        match answer {
            Ok(framed)
                if s.out.is_empty()
                    && s.recv_done
                    && (framed.len() as i64) <= s.send_window.min(self.conn_send_window)
                    && framed.len() <= self.peer_max_frame =>
            {
                // The usual case, written at once: headers, the message in
                // one DATA frame, trailers.
                put_header_block(&mut self.wbuf, id, GRPC_RESPONSE_HEADERS, false, usize::MAX);
                put_frame(&mut self.wbuf, DATA, 0, id, &framed);
                put_header_block(&mut self.wbuf, id, GRPC_OK_TRAILERS, true, usize::MAX);
                s.send_window -= framed.len() as i64;
                self.conn_send_window -= framed.len() as i64;
                self.streams.remove(&id);
                return;
            }
            Ok(framed) => {
                s.out
                    .push_back(Out::Headers(Cow::Borrowed(GRPC_RESPONSE_HEADERS), false));
                s.out.push_back(Out::Data(Bytes::from(framed), false));
                s.out
                    .push_back(Out::Headers(Cow::Borrowed(GRPC_OK_TRAILERS), true));
            }
            Err(status) => {
                let block = status_block(status.code() as i32, status.message(), true);
                s.out.push_back(Out::Headers(Cow::Owned(block), true));
            }
        }
        self.pump(id);
    }

    fn event(&mut self, ev: Event) {
        match ev {
            Event::Headers { stream, block, end } => {
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.out.push_back(Out::Headers(Cow::Owned(block), end));
                    self.pump(stream);
                }
            }
            Event::Data { stream, data, end } => {
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.out.push_back(Out::Data(data, end));
                    self.pump(stream);
                }
            }
            Event::Consumed { stream, n } => {
                if let Some(s) = self.streams.get_mut(&stream)
                    && !s.recv_done
                {
                    s.recv_unacked += n as u32;
                    if s.recv_unacked >= STREAM_WINDOW / 2 {
                        put_window_update(&mut self.wbuf, stream, s.recv_unacked);
                        s.recv_window += i64::from(s.recv_unacked);
                        s.recv_unacked = 0;
                    }
                }
            }
            Event::Reset { stream, code } => self.reset(stream, code),
        }
    }

    fn reset(&mut self, id: u32, code: u32) {
        put_rst(&mut self.wbuf, id, code);
        if let Some(s) = self.streams.remove(&id)
            && let Kind::Bridged { task, .. } = s.kind
        {
            task.abort();
        }
    }

    fn pump_all(&mut self) {
        let ids: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| !s.out.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.pump(id);
        }
    }

    /// Writes what stream `id` has queued, as far as the windows allow.
    fn pump(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let mut sent = 0usize;
        while let Some(front) = s.out.front_mut() {
            match front {
                Out::Headers(block, end) => {
                    put_header_block(&mut self.wbuf, id, block, *end, self.peer_max_frame);
                    s.send_done |= *end;
                }
                Out::Data(data, end) => {
                    loop {
                        let allowed = s.send_window.min(self.conn_send_window).max(0) as usize;
                        let n = data.len().min(allowed).min(self.peer_max_frame);
                        if n == 0 && !data.is_empty() {
                            break;
                        }
                        let last = n == data.len();
                        let flags = if last && *end { END_STREAM } else { 0 };
                        put_frame(&mut self.wbuf, DATA, flags, id, &data[..n]);
                        s.send_window -= n as i64;
                        self.conn_send_window -= n as i64;
                        sent += n;
                        data.advance(n);
                        if last {
                            s.send_done |= *end;
                            break;
                        }
                    }
                    if !data.is_empty() {
                        break;
                    }
                }
            }
            s.out.pop_front();
        }
        if sent > 0
            && let Kind::Bridged { credit, .. } = &s.kind
        {
            credit.written(sent);
        }
        self.maybe_close(id);
    }

    /// Forgets a stream once both sides have ended.
    fn maybe_close(&mut self, id: u32) {
        if let Some(s) = self.streams.get(&id)
            && s.send_done
        {
            if !s.recv_done {
                // We have answered; the client need not send the rest.
                put_rst(&mut self.wbuf, id, NO_ERROR);
            }
            self.streams.remove(&id);
        }
    }
}
