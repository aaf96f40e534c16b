//! AFL target: `p2pcore::fuzz::control_stream`.
fn main() {
    afl::fuzz!(|data: &[u8]| p2pcore::fuzz::control_stream(data));
}
