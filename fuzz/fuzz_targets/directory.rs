//! AFL target: `p2pcore::fuzz::directory`.
fn main() {
    // The core reads no clock; the harness gives it one starting instant.
    let epoch = std::time::Instant::now();
    afl::fuzz!(|data: &[u8]| p2pcore::fuzz::directory(epoch, data));
}
