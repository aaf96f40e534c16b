//! Per-connection state: the QUIC connection, its control stream and the
//! user channels multiplexed over it.

use crate::identity::NodeId;
use crate::proto::{FrameReader, FramingError, MAX_HANDSHAKE_MESSAGE};
use crate::quic::{Expect, MetSlot};
use bytes::{Buf, Bytes};
use quinn_proto::{Dir, ReadError, StreamId, WriteError};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// TLS handshake in progress.
    Handshaking,
    /// TLS done; Hello sent (dialer) or awaited (acceptor).
    Greeting,
    /// Hello and Welcome exchanged: carries user traffic.
    Established,
    /// We refused the remote's Hello and wait for it to close (or for the deadline).
    Refusing,
    /// Closed by us or the remote; waiting for quinn-proto to drain it.
    Closing,
}

/// Bytes waiting to be accepted by a QUIC send stream.
#[derive(Debug, Default)]
pub(crate) struct SendQueue {
    chunks: VecDeque<Chunk>,
    bytes: usize,
}

/// Most header bytes a [`Chunk`] keeps inline: a channel stream's header.
const INLINE: usize = STREAM_HEADER;

/// A piece of a send queue: a few header bytes kept inline (a length
/// prefix, a stream header: no allocation per message) or shared payload.
#[derive(Debug)]
enum Chunk {
    Inline { buf: [u8; INLINE], start: u8, end: u8 },
    Shared(Bytes),
}

impl Chunk {
    /// Up to [`INLINE`] header bytes, kept inline.
    fn inline(header: &[u8]) -> Self {
        let mut buf = [0u8; INLINE];
        buf[..header.len()].copy_from_slice(header);
        Self::Inline { buf, start: 0, end: header.len() as u8 }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline { buf, start, end } => &buf[usize::from(*start)..usize::from(*end)],
            Self::Shared(b) => b,
        }
    }

    fn advance(&mut self, n: usize) {
        match self {
            // `n` is below the chunk's length, which fits in a u8.
            Self::Inline { start, .. } => *start += n as u8,
            Self::Shared(b) => b.advance(n),
        }
    }
}

impl SendQueue {
    pub(crate) fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.bytes += b.len();
            self.chunks.push_back(Chunk::Shared(b));
        }
    }

    /// Queues up to [`INLINE`] header bytes without allocating.
    fn push_header(&mut self, header: &[u8]) {
        let chunk = Chunk::inline(header);
        self.bytes += header.len();
        self.chunks.push_back(chunk);
    }

    /// Queues a header in front of everything already queued.
    fn push_header_front(&mut self, header: &[u8]) {
        let chunk = Chunk::inline(header);
        self.bytes += header.len();
        self.chunks.push_front(chunk);
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Writes as much as the stream accepts.
    pub(crate) fn flush(
        &mut self,
        quic: &mut quinn_proto::Connection,
        id: StreamId,
    ) -> Result<(), WriteError> {
        let mut stream = quic.send_stream(id);
        while let Some(front) = self.chunks.front_mut() {
            let len = front.as_slice().len();
            match stream.write(front.as_slice()) {
                Ok(n) => {
                    self.bytes -= n;
                    if n == len {
                        self.chunks.pop_front();
                    } else {
                        front.advance(n);
                        return Ok(());
                    }
                }
                Err(WriteError::Blocked) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A channel stream's header: the channel, the sender's session ID and the
/// sequence number of the stream's first message (see `session.rs`); the
/// messages that follow are numbered one by one from there.
pub(crate) const STREAM_HEADER: usize = 1 + 8 + 8;

/// One outgoing user channel: a unidirectional stream and its backlog.
#[derive(Debug)]
pub(crate) struct TxChannel {
    /// `None` while the peer's stream limit keeps us from opening it.
    pub(crate) stream: Option<StreamId>,
    pub(crate) queue: SendQueue,
    /// The stream's header, written when it opens.
    header: [u8; STREAM_HEADER],
}

/// One incoming unidirectional stream.
#[derive(Debug)]
pub(crate) struct RxStream {
    /// The header's bytes, until all of it arrived.
    header: [u8; STREAM_HEADER],
    have: usize,
    /// From the header: channel, session, next message's sequence number.
    start: Option<(u8, u64, u64)>,
    reader: FrameReader,
}

/// What reading the streams of a connection produced.
#[derive(Debug)]
pub(crate) enum Received {
    Control(Bytes),
    Message { channel: u8, session: u64, seq: u64, bytes: Bytes },
}

impl From<StreamViolation> for crate::error::Violation {
    fn from(v: StreamViolation) -> Self {
        match v {
            StreamViolation::Framing(FramingError::TooLarge { len, max }) => {
                crate::error::Violation::FrameTooLarge { len: len as u64, max: max as u64 }
            }
            StreamViolation::ControlClosed => crate::error::Violation::ControlStreamClosed,
            StreamViolation::UnexpectedBidi => crate::error::Violation::UnexpectedStream,
        }
    }
}

/// A protocol violation found while reading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StreamViolation {
    #[error("{0}")]
    Framing(#[from] FramingError),
    #[error("control stream closed by remote")]
    ControlClosed,
    #[error("unexpected bidirectional stream")]
    UnexpectedBidi,
}

/// The handshake state of one side of a connection: the dialer and the
/// acceptor remember different things, so each has its own type.
#[derive(Debug)]
pub(crate) enum Side {
    /// This node dialed.
    Dialer(Dialer),
    /// The remote dialed.
    Acceptor(Acceptor),
}

/// What the dialing side of a connection keeps.
#[derive(Debug)]
pub(crate) struct Dialer {
    /// Whom we meant to reach.
    pub(crate) expect: Expect,
    /// Whom TLS met (filled by the certificate verifier).
    pub(crate) met: MetSlot,
    /// Ask the acceptor for the server list in the Hello.
    pub(crate) join: bool,
    /// Dialed by the role logic (server mesh, bootstrap), not by the user:
    /// failures go to the role logic instead of `ConnectFailed` events.
    pub(crate) internal: bool,
    /// The outcome was reported to the role logic.
    pub(crate) reported: bool,
    /// How the acceptor sees our address (from its Welcome).
    pub(crate) observed: Option<SocketAddr>,
}

/// What the accepting side of a connection keeps.
#[derive(Debug, Default)]
pub(crate) struct Acceptor {
    /// Counted among the node's incoming handshakes (accepted, not yet
    /// established, not yet drained), from this source IP if it is real.
    pub(crate) slot: Option<Option<IpAddr>>,
    /// The dialer asked for the server list.
    pub(crate) join_request: bool,
    /// The dialer (a peer) asked for lookups instead of the whole directory.
    pub(crate) lookup: bool,
    /// Welcome sent, waiting for Ready.
    pub(crate) welcomed: bool,
}

/// State of one QUIC connection.
pub(crate) struct Conn {
    pub(crate) quic: quinn_proto::Connection,
    /// What only the dialing or only the accepting side knows.
    pub(crate) side: Side,
    /// The address dialed or accepted from.
    pub(crate) addr: SocketAddr,
    /// The local IP its packets last arrived on straight from the remote
    /// (not through a relay), when the driver says: where a direct peer
    /// path's packets leave from.
    pub(crate) local: Option<IpAddr>,
    /// The authenticated remote ID, known once TLS completes.
    pub(crate) remote: Option<NodeId>,
    pub(crate) phase: Phase,
    /// Until when Hello/Welcome must arrive.
    pub(crate) hello_deadline: Option<Instant>,
    pub(crate) remote_name: String,
    pub(crate) remote_incarnation: u64,
    /// Addresses the remote advertised in its Hello or Welcome.
    pub(crate) remote_addrs: Vec<SocketAddr>,
    /// Whether the remote has run longer than this node (agreed in the handshake).
    pub(crate) remote_elder: bool,
    /// Chosen by the dialer, sent in the Hello: breaks ties between duplicates.
    pub(crate) nonce: u64,
    /// The deadline currently registered in the node's timer set.
    pub(crate) timer: Option<Instant>,
    control: Option<StreamId>,
    control_in: FrameReader,
    control_out: SendQueue,
    tx: BTreeMap<u8, TxChannel>,
    rx: RxState,
    max_message: usize,
    /// How many unidirectional streams the remote may have open now, and
    /// at most (see [`Conn::admit`]).
    uni_limit: u32,
    uni_max: u32,
}

/// The incoming channel streams of a connection and their receive budget
/// (see [`Conn::read_stream`]).
#[derive(Debug)]
struct RxState {
    streams: BTreeMap<StreamId, RxStream>,
    /// Bytes of partly received messages held in `streams`.
    held: usize,
    /// Most bytes `streams` may hold before reading stops (except for `head`).
    budget: usize,
    /// The one stream allowed to read past the budget until its current
    /// message is complete, so a full budget can never stall every stream.
    head: Option<StreamId>,
    /// Streams with data left unread because the budget was full.
    starved: BTreeSet<StreamId>,
    /// The application paused receiving: no channel stream is read.
    paused: bool,
}

impl RxState {
    /// How many bytes stream `id` may read now (0: none, wait).
    fn allowance(&mut self, id: StreamId) -> usize {
        if self.paused {
            0
        } else if self.held < self.budget {
            self.budget - self.held
        } else if self.head.is_none_or(|h| h == id) {
            // Over budget: this stream becomes the head and may finish its message.
            self.head = Some(id);
            READ_CHUNK
        } else {
            0
        }
    }

    /// Appends channel-stream bytes and collects complete messages.
    fn push(
        &mut self,
        id: StreamId,
        mut data: &[u8],
        out: &mut Vec<Received>,
    ) -> Result<(), StreamViolation> {
        let Some(rx) = self.streams.get_mut(&id) else { return Ok(()) };
        if rx.start.is_none() {
            let n = (STREAM_HEADER - rx.have).min(data.len());
            rx.header[rx.have..rx.have + n].copy_from_slice(&data[..n]);
            rx.have += n;
            data = &data[n..];
            if rx.have == STREAM_HEADER {
                let h = &rx.header;
                let word = |at: usize| u64::from_be_bytes(h[at..at + 8].try_into().unwrap_or_default());
                rx.start = Some((h[0], word(1), word(9)));
            }
        }
        let before = rx.reader.buffered();
        rx.reader.push(data);
        let mut result = Ok(());
        if let Some((channel, session, seq)) = &mut rx.start {
            loop {
                match rx.reader.next_frame() {
                    Ok(Some(bytes)) => {
                        out.push(Received::Message {
                            channel: *channel,
                            session: *session,
                            seq: *seq,
                            bytes,
                        });
                        *seq = seq.wrapping_add(1);
                        if self.head == Some(id) {
                            // Its message is complete: the head's privilege ends.
                            self.head = None;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        result = Err(e.into());
                        break;
                    }
                }
            }
        }
        self.held = self.held + rx.reader.buffered() - before;
        result
    }

    /// Stream `id` ended: forget it and what it held.
    fn end(&mut self, id: StreamId) {
        if let Some(rx) = self.streams.remove(&id) {
            self.held -= rx.reader.buffered();
        }
        self.starved.remove(&id);
        if self.head == Some(id) {
            self.head = None;
        }
    }
}

impl Conn {
    /// True if this node dialed.
    pub(crate) fn dialed(&self) -> bool {
        matches!(self.side, Side::Dialer(_))
    }

    pub(crate) fn dialer(&self) -> Option<&Dialer> {
        match &self.side {
            Side::Dialer(d) => Some(d),
            Side::Acceptor(_) => None,
        }
    }

    pub(crate) fn dialer_mut(&mut self) -> Option<&mut Dialer> {
        match &mut self.side {
            Side::Dialer(d) => Some(d),
            Side::Acceptor(_) => None,
        }
    }

    pub(crate) fn acceptor(&self) -> Option<&Acceptor> {
        match &self.side {
            Side::Acceptor(a) => Some(a),
            Side::Dialer(_) => None,
        }
    }

    pub(crate) fn acceptor_mut(&mut self) -> Option<&mut Acceptor> {
        match &mut self.side {
            Side::Acceptor(a) => Some(a),
            Side::Dialer(_) => None,
        }
    }

    /// Whom we meant to reach, on a connection we dialed.
    pub(crate) fn expect(&self) -> Option<Expect> {
        self.dialer().map(|d| d.expect)
    }

    /// Whether the role logic dialed it (see [`Dialer::internal`]).
    pub(crate) fn internal(&self) -> bool {
        self.dialer().is_some_and(|d| d.internal)
    }

    /// How the acceptor sees our address, on a connection we dialed.
    pub(crate) fn observed(&self) -> Option<SocketAddr> {
        self.dialer().and_then(|d| d.observed)
    }

    pub(crate) fn new(
        quic: quinn_proto::Connection,
        side: Side,
        addr: SocketAddr,
        max_message: usize,
        rx_budget: usize,
    ) -> Self {
        Self {
            quic,
            side,
            addr,
            local: None,
            remote: None,
            phase: Phase::Handshaking,
            hello_deadline: None,
            remote_name: String::new(),
            remote_incarnation: 0,
            remote_addrs: Vec::new(),
            remote_elder: false,
            nonce: 0,
            timer: None,
            control: None,
            // Until the remote is admitted only handshake messages are due.
            control_in: FrameReader::new(MAX_HANDSHAKE_MESSAGE),
            control_out: SendQueue::default(),
            tx: BTreeMap::new(),
            rx: RxState {
                streams: BTreeMap::new(),
                held: 0,
                budget: rx_budget,
                head: None,
                starved: BTreeSet::new(),
                paused: false,
            },
            max_message,
            uni_limit: 0,
            uni_max: 0,
        }
    }

    /// Opens the control stream (dialer side).
    pub(crate) fn open_control(&mut self) -> bool {
        match self.quic.streams().open(Dir::Bi) {
            Some(id) => {
                self.control = Some(id);
                true
            }
            None => false,
        }
    }

    /// Queues a control message and writes what the stream accepts.
    pub(crate) fn send_control(&mut self, frame: Bytes) -> Result<(), WriteError> {
        self.control_out.push(frame);
        self.flush_control()
    }

    fn flush_control(&mut self) -> Result<(), WriteError> {
        match self.control {
            Some(id) => self.control_out.flush(&mut self.quic, id),
            None => Ok(()),
        }
    }

    /// The remote is admitted: accept control messages up to `max_control`
    /// bytes, and let it open channel streams and fill the full QUIC receive
    /// window (before this, it may open no unidirectional stream at all and
    /// has a small window, so a stranger can make us hold next to nothing).
    ///
    /// The stream limit starts at [`INITIAL_UNI_STREAMS`] and doubles, up to
    /// `max_streams`, whenever the remote's open streams come within two of
    /// it: quinn-proto keeps state for every stream a remote may open, so a
    /// connection that carries a few channels (or only control messages, as
    /// most server links do) should not pay for 264. A remote that opens
    /// more waits at most a round trip for the credit.
    pub(crate) fn admit(&mut self, max_control: usize, max_streams: u32, window: u64) {
        self.control_in.set_max(max_control);
        self.uni_max = max_streams;
        self.uni_limit = INITIAL_UNI_STREAMS.min(max_streams);
        self.quic.set_max_concurrent_streams(Dir::Uni, quinn_proto::VarInt::from_u32(self.uni_limit));
        self.quic
            .set_receive_window(quinn_proto::VarInt::from_u64(window).unwrap_or(quinn_proto::VarInt::MAX));
    }

    /// Pauses or resumes reading channel streams and datagrams.
    pub(crate) fn set_paused(&mut self, paused: bool) {
        self.rx.paused = paused;
    }

    /// Whether the application paused receiving on this connection.
    pub(crate) fn is_paused(&self) -> bool {
        self.rx.paused
    }

    /// Bytes of partly received messages held for this connection.
    pub(crate) fn rx_held(&self) -> usize {
        self.rx.held
    }

    /// Bytes of user messages queued locally (not yet accepted by QUIC).
    pub(crate) fn buffered(&self) -> usize {
        self.tx.values().map(|c| c.queue.bytes()).sum()
    }

    /// Queues reliable message `seq` of our session `session` on `channel`,
    /// opening its stream if needed. Messages of one channel must come in
    /// sequence order, one after the other (the stream numbers them from
    /// the first one's `seq`).
    pub(crate) fn send_reliable(
        &mut self,
        channel: u8,
        session: u64,
        seq: u64,
        bytes: Bytes,
    ) -> Result<(), WriteError> {
        let tx = self.tx.entry(channel).or_insert_with(|| {
            let mut header = [0u8; STREAM_HEADER];
            header[0] = channel;
            header[1..9].copy_from_slice(&session.to_be_bytes());
            header[9..].copy_from_slice(&seq.to_be_bytes());
            TxChannel { stream: None, queue: SendQueue::default(), header }
        });
        tx.queue.push_header(&(bytes.len() as u32).to_be_bytes());
        tx.queue.push(bytes);
        self.flush_channel(channel)
    }

    /// Sends an unreliable datagram: one channel byte, then the payload.
    pub(crate) fn send_unreliable(
        &mut self,
        channel: u8,
        bytes: &[u8],
    ) -> Result<(), quinn_proto::SendDatagramError> {
        let mut d = Vec::with_capacity(bytes.len() + 1);
        d.push(channel);
        d.extend_from_slice(bytes);
        self.quic.datagrams().send(Bytes::from(d), true)
    }

    /// Largest unreliable payload currently allowed, if the remote accepts datagrams.
    pub(crate) fn max_unreliable(&mut self) -> Option<usize> {
        self.quic.datagrams().max_size().map(|m| m.saturating_sub(1))
    }

    fn flush_channel(&mut self, channel: u8) -> Result<(), WriteError> {
        let Some(tx) = self.tx.get_mut(&channel) else {
            return Ok(());
        };
        if tx.stream.is_none() {
            let Some(id) = self.quic.streams().open(Dir::Uni) else {
                // Stream limit reached: retried on StreamEvent::Available.
                return Ok(());
            };
            tx.stream = Some(id);
            // The stream header goes before everything already queued.
            tx.queue.push_header_front(&tx.header);
        }
        match tx.stream {
            Some(id) => tx.queue.flush(&mut self.quic, id),
            None => Ok(()),
        }
    }

    /// Retries every write that may have been blocked.
    pub(crate) fn flush_all(&mut self) -> Result<(), WriteError> {
        self.flush_control()?;
        let channels: Vec<u8> = self.tx.keys().copied().collect();
        for c in channels {
            self.flush_channel(c)?;
        }
        Ok(())
    }

    /// Retries writes on one stream after a `Writable` event.
    pub(crate) fn on_writable(&mut self, id: StreamId) -> Result<(), WriteError> {
        if self.control == Some(id) {
            return self.flush_control();
        }
        let channel = self.tx.iter().find(|(_, t)| t.stream == Some(id)).map(|(c, _)| *c);
        match channel {
            Some(c) => self.flush_channel(c),
            None => Ok(()),
        }
    }

    /// Accepts streams the remote opened.
    pub(crate) fn accept_streams(
        &mut self,
        dir: Dir,
        out: &mut Vec<Received>,
    ) -> Result<(), StreamViolation> {
        while let Some(id) = self.quic.streams().accept(dir) {
            match dir {
                Dir::Bi if self.control.is_none() && !self.dialed() => self.control = Some(id),
                Dir::Bi => return Err(StreamViolation::UnexpectedBidi),
                Dir::Uni => {
                    let reader = FrameReader::new(self.max_message);
                    let stream = RxStream { header: [0; STREAM_HEADER], have: 0, start: None, reader };
                    self.rx.streams.insert(id, stream);
                    let open = u32::try_from(self.rx.streams.len()).unwrap_or(u32::MAX);
                    if open.saturating_add(2) >= self.uni_limit && self.uni_limit < self.uni_max {
                        self.uni_limit = self.uni_limit.saturating_mul(2).min(self.uni_max);
                        self.quic.set_max_concurrent_streams(
                            Dir::Uni,
                            quinn_proto::VarInt::from_u32(self.uni_limit),
                        );
                    }
                }
            }
            self.read_stream(id, out)?;
        }
        Ok(())
    }

    /// Reads what stream `id` has into `out`, within the receive budget.
    ///
    /// Channel streams are read only while the partly received messages of
    /// this connection hold fewer than `rx_budget` bytes; the rest stays in
    /// QUIC, whose flow control then holds the sender back (reading is what
    /// hands credit back). One stream at a time, the *head*, may read past
    /// the budget until its current message is complete, so the connection
    /// always progresses. Memory per connection is therefore bounded by the
    /// budget plus one largest message plus QUIC's own receive window.
    pub(crate) fn read_stream(
        &mut self,
        id: StreamId,
        out: &mut Vec<Received>,
    ) -> Result<(), StreamViolation> {
        let is_control = self.control == Some(id);
        if !is_control && !self.rx.streams.contains_key(&id) {
            return Ok(());
        }
        let mut recv = self.quic.recv_stream(id);
        let Ok(mut chunks) = recv.read(true) else {
            return Ok(());
        };
        let mut ended = false;
        let mut starved = false;
        let mut result = Ok(());
        loop {
            let allowance = if is_control { READ_CHUNK } else { self.rx.allowance(id) };
            if allowance == 0 {
                starved = true;
                break;
            }
            match chunks.next(allowance.min(READ_CHUNK)) {
                Ok(Some(chunk)) => {
                    let step = if is_control {
                        self.control_in.push(&chunk.bytes);
                        drain_control(&mut self.control_in, out)
                    } else {
                        self.rx.push(id, &chunk.bytes, out)
                    };
                    if let Err(e) = step {
                        result = Err(e);
                        break;
                    }
                }
                Ok(None) => {
                    ended = true;
                    break;
                }
                Err(ReadError::Blocked) => break,
                Err(ReadError::Reset(_)) => {
                    ended = true;
                    break;
                }
            }
        }
        // Flow-control credit for what was read is queued inside quinn-proto
        // and goes out with the next poll_transmit.
        let _ = chunks.finalize();
        result?;
        if starved {
            self.rx.starved.insert(id);
        } else {
            self.rx.starved.remove(&id);
        }
        if ended {
            if is_control {
                return Err(StreamViolation::ControlClosed);
            }
            self.rx.end(id);
        }
        Ok(())
    }

    /// Reads streams that were left unread for lack of budget, once some of
    /// it is free again (or the head is gone).
    pub(crate) fn read_starved(&mut self, out: &mut Vec<Received>) -> Result<(), StreamViolation> {
        while !self.rx.paused && (self.rx.held < self.rx.budget || self.rx.head.is_none()) {
            let Some(id) = self.rx.starved.pop_first() else { break };
            let held = self.rx.held;
            self.read_stream(id, out)?;
            if self.rx.held >= held && self.rx.starved.contains(&id) {
                // No progress possible now.
                break;
            }
        }
        Ok(())
    }
}

/// Unidirectional streams an admitted remote may open at first (see
/// [`Conn::admit`]).
pub(crate) const INITIAL_UNI_STREAMS: u32 = 8;

/// Largest chunk read from a QUIC stream at once.
const READ_CHUNK: usize = 64 << 10;

/// Collects every complete control frame.
fn drain_control(reader: &mut FrameReader, out: &mut Vec<Received>) -> Result<(), StreamViolation> {
    while let Some(f) = reader.next_frame()? {
        out.push(Received::Control(f));
    }
    Ok(())
}
