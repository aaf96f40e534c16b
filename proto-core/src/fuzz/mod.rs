//! Entry points for fuzz harnesses; not a stable API.
//!
//! Compiled with the `fuzzing` feature only. Each target takes the fuzzer's
//! input as bytes and must not panic on any input unless it found a bug: the
//! targets assert invariants, so a logic error becomes a crash too. The AFL
//! binaries in `fuzz/` at the repository root call these functions, and
//! `tests/fuzz_replay.rs` runs every seed and saved regression through them
//! in the normal test suite.
//!
//! | target | what it feeds | what it checks |
//! | --- | --- | --- |
//! | [`raw_frame`] | a datagram to [`wire::decode`](crate::wire::decode) and the relay/probe payload decoders | rejections name the right reason; decoded frames re-encode to themselves |
//! | [`control_stream`] | a chunked byte stream to the control-stream frame reader, each frame to the `Control` decoder | frames match a reference splitter whatever the chunking; messages round-trip |
//! | [`directory`] | link events and server → peer messages to the peer role | the merged directory matches a reference model; events alternate |
//! | [`raft()`] | raw and mutated Raft messages, ticks and proposals to the server's Raft group | configurations are sets, terms never go back, optionally no raft-rs panic |
//! | [`pair`] | control-stream bytes, user messages and stray datagrams between two connected nodes | counters match the traffic, getters match events, messages arrive intact |
//!
//! Time: the core never reads a clock, and neither do these functions. The
//! stateful targets take an `epoch` (any `Instant`; the harness binary reads
//! the clock once) and move a virtual clock from there, so every run of an
//! input is the same run.

mod directory;
mod frames;
mod input;
mod msgs;
mod pair;
mod raft;

pub use directory::directory;
pub use frames::{control_stream, raw_frame};
pub use pair::{Pair, PairFuzzer, PairKind, pair};
pub use raft::{RAFT_PANICS_ARE_BUGS, raft, raft_with};

mod seeds;
pub use seeds::{Seed, seeds};

/// The targets, by the names their binaries and corpus folders have.
pub const TARGETS: &[&str] = &["raw_frame", "control_stream", "directory", "raft", "pair"];

/// Runs `data` through the target called `name` (one of [`TARGETS`]); the
/// stateful targets start their virtual clock at `epoch`, and `pair` runs
/// on a fresh pair. Returns false for an unknown name.
pub fn run_target(name: &str, epoch: std::time::Instant, data: &[u8]) -> bool {
    match name {
        "raw_frame" => raw_frame(data),
        "control_stream" => control_stream(data),
        "directory" => directory(epoch, data),
        "raft" => raft(data),
        "pair" => pair(epoch, data),
        _ => return false,
    }
    true
}

/// Regression tests of bugs the fuzzers found (all fixed). While a bug is
/// open its test is `#[ignore]`d and its target steers around it (a `const`
/// next to the target names the reproducer), so fuzzing goes on past it.
/// The store's snapshot image with `keys` keys of `value_len`-byte values
/// (keys `k0000000`, ...), put one per log entry; for the store benchmark
/// (`tests/benches/store.rs`), which times this and [`store_restores`].
pub fn store_image(keys: usize, value_len: usize) -> Vec<u8> {
    use crate::store::{Command, KvRequest, Store};
    let client = crate::identity::Identity::from_seed(crate::identity::Role::Peer, [1; 32]).id();
    let mut s = Store::default();
    for i in 0..keys as u64 {
        let op = KvRequest::put(format!("k{i:07}"), vec![b'v'; value_len]).0;
        let _ = s.apply(i + 1, Command { client, epoch: 0, seq: i, ack: i, op });
    }
    s.snapshot()
}

/// Whether a store image decodes (what a server checks before it installs
/// a snapshot from the leader).
pub fn store_restores(image: &[u8]) -> bool {
    crate::store::Store::restore(image).is_some()
}

#[cfg(test)]
mod found_bugs {
    use crate::config::PeerConfig;
    use crate::identity::{Identity, Role};
    use crate::peer::Peer;
    use crate::proto::{DirEntry, PeerAddrs, PeerMsg};
    use crate::rng::NodeRng;
    use crate::roster::Backoff;
    use crate::server::LinkMeta;
    use crate::server::raft::{Consensus, RaftTiming};
    use std::net::SocketAddr;
    use std::time::Duration;

    fn peer_linked_to_server() -> (Peer, LinkMeta, std::time::Instant) {
        let now = crate::test_support::epoch();
        let backoff = Backoff {
            min: Duration::from_millis(250),
            max: Duration::from_secs(5),
            forget_after: Duration::from_secs(60),
        };
        let me = Identity::from_seed(Role::Peer, [1; 32]).id();
        let mut p =
            Peer::new(me, Vec::new(), &[], PeerConfig::default(), backoff, NodeRng::from_seed([5; 32]), now);
        let meta = LinkMeta {
            id: Identity::from_seed(Role::Server, [2; 32]).id(),
            name: "s".into(),
            incarnation: 1,
            remote_addr: SocketAddr::from(([192, 0, 2, 1], 4433)),
            addrs: Vec::new(),
            elder: false,
            join: false,
            lookup: false,
            probe_key: None,
        };
        p.on_link_up(now, &meta, None);
        (p, meta, now)
    }

    /// Fixed bug: `Peer::next_version` (`peer/mod.rs`, `Some(v) if version == v + 1`)
    /// overflows when a server's snapshot carried version `u64::MAX`: the
    /// next delta panics the peer (debug builds, overflow checks on) or
    /// silently wraps to version 0 (release). Found while writing the model
    /// of target `directory`, which hits it within its first inputs when
    /// its detour is off (`fuzz/regressions/directory/delta-after-max-version`).
    /// Target `pair` (which has no detour) found it again end to end, through
    /// a real server's control stream, across two inputs on a reused pair:
    /// `fuzz/regressions/pair/peer-version-overflow-history/` (replay with
    /// `P2PCORE_FUZZ_REPLAY`) and the same as one input,
    /// `fuzz/regressions/pair/peer-version-overflow` (fresh pair).
    #[test]
    fn delta_after_max_version_overflows() {
        let (mut p, meta, now) = peer_linked_to_server();
        p.on_message(now, meta.id, PeerMsg::Directory { version: u64::MAX, peers: Vec::new() });
        p.on_message(now, meta.id, PeerMsg::DirRemove { version: 0, id: meta.id });
        assert_eq!(p.resyncs(), 1, "a wrapped version is a gap like any other");
    }

    /// Fixed bug: a server link that comes up while already up (a duplicate
    /// connection swapped in: `Node::swap_link` calls the role's `link_up`
    /// again) makes `Peer::on_link_up` (`peer/mod.rs`, `let kept =
    /// self.servers.remove(&meta.id)`) start that server's directory afresh
    /// without recomputing the merged one, so until the server's next
    /// snapshot a peer stays online that no directory lists (`via` empty).
    /// Transient (the server sends a snapshot on every link-up), but the
    /// getters and path selection see the wrong directory meanwhile. Found
    /// while writing the model of target `directory`
    /// (`fuzz/regressions/directory/relink-keeps-stale-peers`).
    #[test]
    fn relink_keeps_stale_peers_online() {
        let (mut p, meta, now) = peer_linked_to_server();
        let other = Identity::from_seed(Role::Peer, [3; 32]).id();
        let entry = DirEntry { id: other, name: "o".into(), addrs: PeerAddrs::default() };
        p.on_message(now, meta.id, PeerMsg::Directory { version: 1, peers: vec![entry] });
        assert_eq!(p.peers().len(), 1);
        p.on_link_up(now, &meta, None);
        let stale: Vec<_> = p.peers().into_iter().filter(|x| x.via.is_empty()).collect();
        assert!(stale.is_empty(), "online but listed by no server: {stale:?}");
    }

    /// Fixed bug: `Consensus::found` calls raft-rs's `campaign` outside
    /// `catch_unwind` (`server/raft.rs`, `let _ = node.campaign();`), and
    /// campaigning computes `term + 1`: founding at `u64::MAX` panics the
    /// server (overflow checks on) instead of being caught like every other
    /// raft-rs panic. A peer in the group can push a member's term to
    /// `u64::MAX` (any message with that term), and `Server::manage_groups`
    /// founds with `max_term() + 1` (`server/mod.rs`), itself an overflow.
    /// In release builds both wrap: the new group's terms restart at 0, so
    /// `(epoch, term)` stops growing. Found by target `raft` within seconds
    /// (`fuzz/regressions/raft/found-at-max-term`).
    #[test]
    fn found_at_max_term_overflows() {
        let id = Identity::from_seed(Role::Server, [1; 32]).id();
        let mut c = Consensus::new(
            id,
            1,
            RaftTiming { election_ticks: 10, heartbeat_ticks: 2 },
            NodeRng::from_seed([1; 32]),
        );
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.found(u64::MAX)));
        assert!(caught.is_ok(), "found panicked");
    }
}
