//! AFL target: `p2pcore::fuzz::pair`, in persistent mode with reused pairs
//! (`PairFuzzer`, which rebuilds a pair when its connection is gone or
//! after `PairFuzzer::REUSE` inputs).
//!
//! Servers run raft-rs, whose panics `Consensus` catches: no abort-on-panic
//! hook (`fuzz_nohook!`); uncaught panics still abort (afl catches them
//! around each input).
//!
//! Environment:
//! * `P2PCORE_FUZZ_FRESH_PAIR=1`: a fresh pair per input (slower, no
//!   history; what `p2pcore::fuzz::pair` and the replay test do).
//! * `P2PCORE_FUZZ_HISTORY=<dir>`: on a crash, write the inputs the crashed
//!   pair had served, in order, to `<dir>/<pid>/000`, `001`, … (the last
//!   one crashed). Needed for crashes that need their history.
//! * `P2PCORE_FUZZ_REPLAY=<dir>`: no fuzzing; run every file of `<dir>`, in
//!   name order, through one `PairFuzzer` (replays such a history).
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Mutex;

/// The inputs the current pair of each kind served (see `needs_new_pair`).
static HISTORY: Mutex<[Vec<Vec<u8>>; 2]> = Mutex::new([Vec::new(), Vec::new()]);
static CURRENT: Mutex<usize> = Mutex::new(0);

fn record(fuzzer: &p2pcore::fuzz::PairFuzzer, data: &[u8]) {
    let slot = usize::from(data.first().is_some_and(|b| b & 1 == 1));
    if let (Ok(mut h), Ok(mut c)) = (HISTORY.lock(), CURRENT.lock()) {
        if fuzzer.needs_new_pair(data) {
            h[slot].clear();
        }
        h[slot].push(data.to_vec());
        *c = slot;
    }
}

fn write_history(dir: &str) {
    let (Ok(h), Ok(c)) = (HISTORY.lock(), CURRENT.lock()) else { return };
    let out = std::path::Path::new(dir).join(std::process::id().to_string());
    if std::fs::create_dir_all(&out).is_ok() {
        for (i, input) in h[*c].iter().enumerate() {
            let _ = std::fs::write(out.join(format!("{i:03}")), input);
        }
    }
}

fn main() {
    let epoch = std::time::Instant::now();
    if let Ok(dir) = std::env::var("P2PCORE_FUZZ_REPLAY") {
        let mut files: Vec<_> =
            std::fs::read_dir(&dir).expect("replay dir").flatten().map(|e| e.path()).collect();
        files.sort();
        let mut fuzzer = p2pcore::fuzz::PairFuzzer::new(epoch);
        for f in files {
            eprintln!("replaying {}", f.display());
            fuzzer.run(&std::fs::read(&f).expect("readable input"));
        }
        return;
    }
    let fresh = std::env::var("P2PCORE_FUZZ_FRESH_PAIR").is_ok_and(|v| v == "1");
    let history = std::env::var("P2PCORE_FUZZ_HISTORY").ok();
    // A panic aborts the process, so no state is observed after one.
    let mut fuzzer = AssertUnwindSafe(p2pcore::fuzz::PairFuzzer::new(epoch));
    afl::fuzz_nohook!(|data: &[u8]| {
        if fresh {
            p2pcore::fuzz::pair(epoch, data);
            return;
        }
        record(&fuzzer, data);
        // Raft panics are caught inside the core and never get here; what
        // does is a crash: save the history, then let afl abort.
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| fuzzer.run(data))) {
            if let Some(dir) = &history {
                write_history(dir);
            }
            resume_unwind(e);
        }
    });
}
