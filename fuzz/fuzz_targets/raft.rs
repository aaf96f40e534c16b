//! AFL target: `p2pcore::fuzz::raft`.
//!
//! `Consensus` catches raft-rs panics with `catch_unwind`, so this target
//! must not install afl's abort-on-panic hook (`fuzz_nohook!`): a caught
//! panic is recovered from, an uncaught one still aborts (afl catches it
//! around each input). Set `P2PCORE_FUZZ_STRICT_RAFT=1` to make every
//! caught raft-rs panic a crash too.
fn main() {
    let strict = p2pcore::fuzz::RAFT_PANICS_ARE_BUGS
        || std::env::var("P2PCORE_FUZZ_STRICT_RAFT").is_ok_and(|v| v == "1");
    afl::fuzz_nohook!(|data: &[u8]| p2pcore::fuzz::raft_with(data, strict));
}
