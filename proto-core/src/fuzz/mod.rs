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
//! | [`raft`] | raw and mutated Raft messages, ticks and proposals to the server's Raft group | configurations are sets, terms never go back, optionally no raft-rs panic |
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
