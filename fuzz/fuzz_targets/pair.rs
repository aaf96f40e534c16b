//! AFL target: `p2pcore::fuzz::pair`, in persistent mode with reused pairs
//! (`PairFuzzer`); set `P2PCORE_FUZZ_FRESH_PAIR=1` for a fresh pair per
//! input (slower, no history: the way to replay and minimise a crash).
//!
//! Servers run raft-rs, whose panics `Consensus` catches: no abort-on-panic
//! hook (`fuzz_nohook!`); uncaught panics still abort.
fn main() {
    let epoch = std::time::Instant::now();
    let fresh = std::env::var("P2PCORE_FUZZ_FRESH_PAIR").is_ok_and(|v| v == "1");
    // A panic aborts the process, so no state is observed after one.
    let mut fuzzer = std::panic::AssertUnwindSafe(p2pcore::fuzz::PairFuzzer::new(epoch));
    afl::fuzz_nohook!(|data: &[u8]| {
        if fresh {
            p2pcore::fuzz::pair(epoch, data);
        } else {
            fuzzer.run(data);
        }
    });
}
