//! Fuzzing only (feature `fuzzing`): reaching behind the handshake.
//!
//! The `pair` fuzz target drives two real nodes and needs to speak as one of
//! them on the established connection to the other, byte for byte, as a
//! malicious or broken remote could. Nothing here is used by the protocol.

use super::*;

impl Node {
    /// Writes `bytes` as they are (no framing added) to the control stream
    /// of the established connection to `to`, after anything already queued
    /// on it. Returns false if there is no such connection or the stream
    /// refuses the write.
    pub(crate) fn fuzz_write_control(&mut self, now: Instant, to: &NodeId, bytes: &[u8]) -> bool {
        self.command(now);
        let Some(&handle) = self.links.get(to) else { return false };
        let Some(conn) = self.conns.get_mut(&handle) else { return false };
        let ok = conn.send_control(Bytes::copy_from_slice(bytes)).is_ok();
        self.touch(handle);
        ok
    }
}
