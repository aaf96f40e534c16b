//! Property tests of the raw frame decoder: at least 1,000,000 random and
//! mutated inputs, zero panics, and every rejected datagram counted.
//!
//! The generator is seeded, so a failure reproduces exactly; set
//! `P2PCORE_FUZZ_SEED` to explore other seeds.

use bytes::BytesMut;
use p2pcore::wire::{self, FrameError, FrameType, HEADER_LEN};
use p2pcore::{Config, Identity, Node, Role};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::net::SocketAddr;
use std::time::Instant;

const CASES: usize = 1_000_000;

fn valid_frame(rng: &mut ChaCha20Rng) -> Vec<u8> {
    let kind = [FrameType::Ping, FrameType::Pong, FrameType::Relay][rng.random_range(0..3)];
    let len = if rng.random_bool(0.9) { rng.random_range(0..200) } else { rng.random_range(0..1400) };
    let mut payload = vec![0u8; len];
    rng.fill_bytes(&mut payload);
    let mut out = Vec::new();
    wire::encode(kind, &payload, &mut out).unwrap();
    out
}

fn mutate(rng: &mut ChaCha20Rng, mut d: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.random_range(1..4) {
        match rng.random_range(0..7) {
            // Flip a bit anywhere.
            0 if !d.is_empty() => {
                let i = rng.random_range(0..d.len());
                d[i] ^= 1 << rng.random_range(0..8);
            }
            // Overwrite a header byte with anything.
            1 if d.len() >= HEADER_LEN => {
                let i = rng.random_range(0..HEADER_LEN);
                d[i] = rng.random();
            }
            // Truncate.
            2 if !d.is_empty() => {
                let n = rng.random_range(0..d.len());
                d.truncate(n);
            }
            // Extend with junk.
            3 => {
                for _ in 0..rng.random_range(1..16) {
                    d.push(rng.random());
                }
            }
            // An older or newer format version.
            4 if d.len() >= HEADER_LEN => d[2] = rng.random_range(0..4),
            // Set the QUIC bit so the datagram goes to quinn-proto instead.
            5 if !d.is_empty() => d[0] |= 0x40,
            // Swap two bytes.
            _ if d.len() >= 2 => {
                let (i, j) = (rng.random_range(0..d.len()), rng.random_range(0..d.len()));
                d.swap(i, j);
            }
            _ => {}
        }
    }
    d
}

#[test]
fn a_million_inputs_no_panics_every_drop_counted() {
    let seed: u64 = std::env::var("P2PCORE_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed);
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let now = Instant::now();
    let mut node =
        Node::new(Config::new(Identity::from_seed(Role::Peer, [1; 32]), "fuzz", [2; 32]), now).unwrap();
    let from: SocketAddr = "192.0.2.1:9".parse().unwrap();
    let mut buf = Vec::new();

    let (mut valid, mut raw_rejected, mut quic) = (0u64, 0u64, 0u64);
    let mut by_error = std::collections::BTreeMap::<String, u64>::new();
    for case in 0..CASES {
        let input = match case % 4 {
            // Pure noise of any length, including empty.
            0 => {
                let len = rng.random_range(0..1500);
                let mut v = vec![0u8; len];
                rng.fill_bytes(&mut v);
                v
            }
            // Noise that starts like a raw frame.
            1 => {
                let mut v = vec![0x3e, 0xb1, wire::VERSION, rng.random_range(0..5)];
                let len = rng.random_range(0..64);
                v.extend((0..len).map(|_| rng.random::<u8>()));
                v
            }
            // Valid frames, mutated.
            2 => {
                let f = valid_frame(&mut rng);
                mutate(&mut rng, f)
            }
            // Valid frames, untouched.
            _ => valid_frame(&mut rng),
        };
        // The decoder alone: total, and consistent with re-encoding.
        match wire::decode(&input) {
            Ok(f) => {
                valid += 1;
                let mut again = Vec::new();
                wire::encode(f.kind, f.payload, &mut again).unwrap();
                assert_eq!(again, input, "decode/encode round trip, case {case}");
            }
            Err(FrameError::Quic) => quic += 1,
            Err(e) => {
                raw_rejected += 1;
                *by_error
                    .entry(format!("{e:?}").split(['(', ' ', '{']).next().unwrap().to_owned())
                    .or_default() += 1;
            }
        }
        // The same input through the node's front door.
        node.handle_datagram(now, from, None, None, BytesMut::from(&input[..]));
        while node.poll_transmit(1, &mut buf).is_some() {}
        while node.poll_event().is_some() {}
    }
    assert_eq!(valid + raw_rejected + quic, CASES as u64);
    // Every category was exercised.
    for k in ["Empty", "Truncated", "BadMagic", "UnsupportedVersion", "UnknownType"] {
        assert!(by_error.get(k).copied().unwrap_or(0) > 0, "no {k} cases: {by_error:?}");
    }
    assert!(valid > 200_000 && quic > 100_000, "valid {valid}, quic {quic}");
    let stats = node.stats();
    assert_eq!(stats.datagrams_in, CASES as u64);
    // Valid frames with random payloads are of no use to this node: probes
    // and relay frames fail to parse, or parse but are not from a connected
    // peer or a relay server.
    assert_eq!(stats.dropped.raw_total(), raw_rejected + valid, "{:?}", stats.dropped);
    let d = &stats.dropped;
    assert_eq!(d.unexpected + d.relay_rejected + d.probe_rejected + d.bad_payload, valid, "{d:?}");
    assert!(d.bad_payload > 0 && d.relay_rejected > 0, "{d:?}");
    assert!(stats.dropped.quic_ignored > 0);
    eprintln!("{CASES} inputs: {valid} valid frames, {raw_rejected} rejected raw, {quic} QUIC; {by_error:?}");
}
