//! Hooks for tests and fuzz harnesses that play a hostile remote: raw access
//! to the QUIC connections, to do what an honest p2pcore node never does
//! (open streams before admission, claim huge lengths, flood). Compiled only
//! with the `fuzzing` feature; not part of the stable API.

use super::*;

impl Node {
    /// Runs `f` on every QUIC connection of this node, with its address (a
    /// mapped one for relayed peers) and authenticated remote ID if known,
    /// then lets the node transmit whatever `f` queued.
    #[doc(hidden)]
    pub fn hostile_raw_connections(
        &mut self,
        now: Instant,
        mut f: impl FnMut(SocketAddr, Option<NodeId>, &mut quinn_proto::Connection),
    ) {
        self.command(now);
        let chs: Vec<usize> = self.conns.keys().copied().collect();
        self.scoped(|n| {
            for handle in chs {
                if let Some(c) = n.conns.get_mut(&handle) {
                    f(c.addr, c.remote, &mut c.quic);
                    n.touch(handle);
                }
            }
        });
    }
}
