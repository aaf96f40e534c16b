//! The server's cost per relayed datagram: decode the relay frame, check the
//! session token against the source address, look up the destination,
//! rewrite its header in place and queue it. Run with
//! `cargo bench -p p2pcore-tests --bench relay`.

#![allow(missing_docs)] // criterion's macros generate undocumented items

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use p2pcore::wire::{self, FrameType};
use p2pcore::{ConnectPolicy, Reliability};
use p2pcore_tests::sim::{LinkParams, NodeSpec, SendSpec, Sim, SimConfig};
use std::hint::black_box;
use std::time::Duration;

/// A server with two peers connected, and a real relay frame from one of them.
fn setup() -> (Sim, usize, std::net::SocketAddr, Vec<u8>) {
    let mut sim = Sim::new(SimConfig { seed: 1, link: LinkParams::default(), ..SimConfig::default() });
    sim.set_configure(|c, _| c.peer.connect = ConnectPolicy::OnDemand);
    let s = sim.add_node(NodeSpec::server("s1"));
    let a = sim.add_node(NodeSpec::peer("alice", None).via(&[s]));
    let b = sim.add_node(NodeSpec::peer("bob", None).via(&[s]));
    sim.run_for(Duration::from_secs(2));
    sim.tap(a);
    sim.send_messages(&SendSpec {
        from: a,
        to: b,
        count: 1,
        size: 1100,
        reliability: Reliability::Reliable,
        channel: 0,
    });
    sim.run_for(Duration::from_secs(1));
    let server = sim.host(s).addr;
    let frame = sim
        .take_tapped()
        .into_iter()
        .filter(|(_, dest, d)| *dest == server && wire::decode(d).is_ok_and(|f| f.kind == FrameType::Relay))
        .max_by_key(|(_, _, d)| d.len())
        .map(|(_, _, d)| d.to_vec())
        .expect("a relay frame");
    let from = sim.host(a).addr;
    (sim, s, from, frame)
}

fn relay(c: &mut Criterion) {
    let (mut sim, s, from, frame) = setup();
    let now = sim.now();
    let node = sim.node_mut(s).unwrap();
    let before = node.stats().relayed_datagrams;
    let mut buf = Vec::with_capacity(2048);
    let mut group = c.benchmark_group("server");
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function(format!("relay one {}-byte datagram", frame.len()), |bench| {
        bench.iter(|| {
            node.handle_datagram(now, from, None, None, BytesMut::from(black_box(&frame[..])));
            while let Some(t) = node.poll_transmit(1, &mut buf) {
                let _ = black_box(t);
            }
            while node.poll_event().is_some() {}
        })
    });
    group.finish();
    assert!(node.stats().relayed_datagrams > before, "the frames were relayed, not dropped");
}

criterion_group!(benches, relay);
criterion_main!(benches);
