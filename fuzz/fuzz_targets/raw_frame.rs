//! AFL target: `p2pcore::fuzz::raw_frame`.
fn main() {
    afl::fuzz!(|data: &[u8]| p2pcore::fuzz::raw_frame(data));
}
