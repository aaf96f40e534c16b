//! Targets `raw_frame` and `control_stream`: the two parsers every datagram
//! and every control-stream byte from a remote goes through.

use super::input::Input;
use crate::proto::{self, Control, FrameReader, FramingError, LEN_PREFIX};
use crate::wire::{self, FrameError, FrameType, HEADER_LEN, MAX_PAYLOAD, ProbeFrame, RelayFrame};

/// Target `raw_frame`: [`wire::decode`] on the input as a datagram, then the
/// payload decoder for its type; whatever decodes is re-encoded and must
/// round-trip.
///
/// The input is tried twice: as is (so the header checks are exercised), and
/// with a valid header in front of its tail (so the fuzzer reaches the
/// payload decoders without having to find the magic first).
pub fn raw_frame(data: &[u8]) {
    check_datagram(data);
    if data.len() >= HEADER_LEN && data.len() - HEADER_LEN <= MAX_PAYLOAD {
        let mut fixed = data.to_vec();
        fixed[..2].copy_from_slice(&wire::MAGIC);
        fixed[2] = wire::VERSION;
        // Keep the type byte the fuzzer chose, within the known types.
        fixed[3] = 1 + data[3] % 3;
        check_datagram(&fixed);
    }
}

fn check_datagram(data: &[u8]) {
    let frame = match wire::decode(data) {
        Ok(f) => f,
        Err(e) => {
            check_rejection(data, &e);
            return;
        }
    };
    assert!(!wire::is_quic(data), "a raw frame must not look like QUIC");
    assert_eq!(frame.payload.len() + HEADER_LEN, data.len());
    // Header and payload re-encode to exactly the datagram.
    let mut out = Vec::new();
    wire::encode(frame.kind, frame.payload, &mut out).expect("a decoded payload fits a frame");
    assert_eq!(out, data, "raw frame does not re-encode to itself");

    match frame.kind {
        FrameType::Relay => {
            if let Ok(relay) = RelayFrame::decode(frame.payload) {
                assert!(wire::is_quic(relay.data));
                let mut out = Vec::new();
                relay.encode(&mut out).expect("a decoded relay frame re-encodes");
                // Every payload byte is meaningful: the re-encoding is the datagram.
                assert_eq!(out, data, "relay frame does not re-encode to itself");
                let again = wire::decode(&out).expect("re-encoded relay frame decodes");
                assert_eq!(RelayFrame::decode(again.payload), Ok(relay));
            }
        }
        FrameType::Ping | FrameType::Pong => {
            if let Ok(probe) = ProbeFrame::decode(frame.kind, frame.payload) {
                let mut out = Vec::new();
                probe.encode(frame.kind, &mut out).expect("a decoded probe re-encodes");
                assert_eq!(out.len(), data.len(), "probes have one size");
                let again = wire::decode(&out).expect("re-encoded probe decodes");
                assert_eq!(again.kind, frame.kind);
                let probe2 = ProbeFrame::decode(again.kind, again.payload).expect("re-encoded probe parses");
                assert_eq!(probe2, probe, "probe does not round-trip");
                // The encoding is canonical (unused address bytes are zero):
                // encoding the re-decoded probe gives the same bytes.
                let mut out2 = Vec::new();
                probe2.encode(frame.kind, &mut out2).expect("re-encodes");
                assert_eq!(out2, out);
            }
        }
    }
}

/// The error `wire::decode` gave must be the one its documented checks, in
/// order, name for this datagram.
fn check_rejection(data: &[u8], e: &FrameError) {
    let expected = if data.is_empty() {
        FrameError::Empty
    } else if wire::is_quic(data) {
        FrameError::Quic
    } else if data.len() < HEADER_LEN {
        FrameError::Truncated(data.len())
    } else if data[..2] != wire::MAGIC {
        FrameError::BadMagic
    } else if data[2] != wire::VERSION {
        FrameError::UnsupportedVersion(data[2])
    } else if FrameType::from_u8(data[3]).is_none() {
        FrameError::UnknownType(data[3])
    } else {
        panic!("wire::decode rejected a well-formed header: {e:?}");
    };
    assert_eq!(*e, expected, "wire::decode rejected {data:02x?} for the wrong reason");
}

/// Target `control_stream`: the input, cut into chunks whose sizes come from
/// the input, is pushed through a `FrameReader` with a small maximum; every
/// frame is decoded as `Control` the way a node does, and a decoded message
/// must re-encode to a value that decodes equal.
///
/// A reference splitter works on the whole byte stream at once: the reader
/// must yield exactly its frames, in order, whatever the chunking, and fail
/// with `TooLarge` exactly where it finds an oversized length.
///
/// Input layout: `[max u16][chunking seed u8][stream bytes...]`, where the
/// seed's byte picks how each next chunk length is chosen.
pub fn control_stream(data: &[u8]) {
    let mut input = Input::new(data);
    // Small maxima make oversize frames easy to reach; 4 KiB covers real messages.
    let max = input.u16() as usize % 4097;
    let mode = input.u8();
    let stream = input.rest();

    // Reference: split the whole stream at once.
    let mut expected = Vec::new();
    let mut too_large = None;
    let mut at = 0;
    while stream.len() - at >= LEN_PREFIX {
        let len = u32::from_be_bytes([stream[at], stream[at + 1], stream[at + 2], stream[at + 3]]) as usize;
        if len > max {
            too_large = Some(len);
            break;
        }
        if stream.len() - at - LEN_PREFIX < len {
            break;
        }
        expected.push(&stream[at + LEN_PREFIX..at + LEN_PREFIX + len]);
        at += LEN_PREFIX + len;
    }

    let mut reader = FrameReader::new(max);
    let mut got = 0usize;
    let mut failed = None;
    let mut pos = 0;
    let mut k = 0usize;
    'outer: while pos < stream.len() {
        // Chunk sizes: fixed, growing, or taken from the stream itself.
        let n = match mode % 4 {
            0 => 1 + (mode as usize >> 2),
            1 => 1 + k % 7,
            2 => 1 + stream[pos] as usize % 64,
            _ => 1 + (k * 31 + mode as usize) % 300,
        };
        k += 1;
        let end = (pos + n).min(stream.len());
        reader.push(&stream[pos..end]);
        pos = end;
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= max, "frame of {} bytes above max {max}", frame.len());
                    assert!(got < expected.len(), "reader produced a frame the stream does not hold");
                    assert_eq!(&frame[..], expected[got], "frame {got} differs from the stream's");
                    got += 1;
                    check_control(&frame);
                }
                Ok(None) => break,
                Err(FramingError::TooLarge { len, max: m }) => {
                    assert_eq!(m, max);
                    failed = Some(len);
                    break 'outer;
                }
            }
        }
    }
    assert_eq!(got, expected.len(), "reader missed frames");
    assert_eq!(failed, too_large, "oversize detection differs from the stream's");
    // Everything the stream held was handed out: nothing is left to give.
    if failed.is_none() {
        assert_eq!(reader.next_frame(), Ok(None));
    }
}

/// Decodes a control frame as a node does; what decodes must re-encode to a
/// value that decodes equal, and the encoding must be canonical.
pub(crate) fn check_control(frame: &[u8]) {
    let Ok((msg, [])) = postcard::take_from_bytes::<Control>(frame) else { return };
    let _ = msg.kind();
    let encoded = proto::encode(&msg);
    assert!(encoded.len() >= LEN_PREFIX, "encode failed for {msg:?}");
    let len = u32::from_be_bytes([encoded[0], encoded[1], encoded[2], encoded[3]]) as usize;
    assert_eq!(len, encoded.len() - LEN_PREFIX, "length prefix");
    let body = &encoded[LEN_PREFIX..];
    let again: Control = postcard::from_bytes(body).expect("a re-encoded control message decodes");
    assert_eq!(again, msg, "control message does not round-trip");
    assert_eq!(proto::encode(&again), encoded, "control encoding is not canonical");
    // The re-encoding passes through a reader as one frame.
    let mut r = FrameReader::new(proto::MAX_CONTROL_MESSAGE);
    r.push(&encoded);
    assert_eq!(r.next_frame().ok().flatten().as_deref(), Some(body));
}
