//! The structures queries fill (peers, paths, links, the Master, servers,
//! counters), computed from a [`Node`] on whichever thread owns it, then
//! copied into the caller's buffers.

use crate::event::{basis_code, path_code};
use crate::result::{Error, P2P_ERR_NOT_FOUND, P2P_OK, p2p_result};
use crate::types::{arg, arg_mut, fill, name_field, p2p_addr, p2p_node_id};
use p2pcore::{Node, NodeId};
use p2pcore_mio::HostStats;
use std::collections::BTreeMap;
use std::ffi::c_char;
use std::time::Duration;

/// How this node reaches a peer.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct p2p_path_info {
    /// Smoothed round-trip time of the connection, in microseconds (0 when not
    /// connected).
    pub rtt_us: u64,
    /// `P2P_PATH_*`.
    pub kind: u8,
    /// 1 when a connection to the peer is established.
    pub connected: u8,
    /// The relaying server, for `P2P_PATH_RELAYED`.
    pub via: p2p_node_id,
    /// Padding; zero.
    pub reserved: [u8; 5],
}

/// A peer in the directory.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct p2p_peer_info {
    /// How it is reached now.
    pub path: p2p_path_info,
    /// Its ID.
    pub id: p2p_node_id,
    /// Its name, NUL-terminated.
    pub name: [c_char; 68],
    /// Padding; zero.
    pub reserved: [u8; 3],
}

/// An established connection (to a server or a peer).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct p2p_link_info {
    /// Its path (`P2P_PATH_NONE` for servers, which are always direct) and
    /// round-trip time.
    pub path: p2p_path_info,
    /// Congestion window in bytes: how much may be in flight now.
    pub cwnd: u64,
    /// QUIC packets sent on it.
    pub sent_packets: u64,
    /// QUIC packets declared lost (and their data retransmitted).
    pub lost_packets: u64,
    /// Where its packets go: the remote's address, or the relaying server's.
    pub addr: p2p_addr,
    /// The remote node.
    pub id: p2p_node_id,
    /// 1 when this node dialed.
    pub dialed: u8,
    /// Padding; zero.
    pub reserved: [u8; 2],
    /// The remote's name, NUL-terminated.
    pub name: [c_char; 68],
}

/// The Master as this node sees it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct p2p_master_info {
    /// The Raft term (`P2P_MASTER_RAFT`; 0 otherwise).
    pub term: u64,
    /// The Raft group (`P2P_MASTER_RAFT`; 0 otherwise). `(epoch, term)` is a
    /// fencing token: it only grows within one group.
    pub epoch: u64,
    /// `P2P_MASTER_*`: why it is Master; only Raft is partition-safe.
    pub basis: u32,
    /// 1 when there is a Master (during a Raft election there is none).
    pub has_master: u8,
    /// The Master.
    pub id: p2p_node_id,
    /// Padding; zero.
    pub reserved: [u8; 2],
    /// Its name, NUL-terminated (empty if not known yet).
    pub name: [c_char; 68],
    /// Padding; zero.
    pub reserved2: [u8; 4],
}

/// A server of the cluster.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct p2p_server_info {
    /// Its last reported load (connected peers, or what its operator set).
    pub load: u32,
    /// Its ID.
    pub id: p2p_node_id,
    /// 1 when this node has a live connection to it (a server counts
    /// itself).
    pub live: u8,
    /// 1 when this node sees it as the Master.
    pub master: u8,
    /// Padding; zero.
    pub reserved: u8,
    /// Its name, NUL-terminated.
    pub name: [c_char; 68],
}

/// Counters of a node (and, in hosted mode, of its socket loop). Set
/// `size` to `sizeof(p2p_stats)` before the call: the library fills what
/// both it and the caller's header know, so either may be newer.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct p2p_stats {
    /// `sizeof(p2p_stats)` (in); the bytes filled (out).
    pub size: u32,
    /// Padding; zero.
    pub reserved: u32,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Servers: datagrams relayed between peers.
    pub relayed_datagrams: u64,
    /// Servers: bytes relayed between peers.
    pub relayed_bytes: u64,
    /// Received datagrams dropped as malformed, unexpected or refused (every
    /// reason together; the Rust API breaks them down).
    pub dropped: u64,
    /// Path probes (pings) sent.
    pub path_pings: u64,
    /// Path probe answers (pongs) sent.
    pub path_pongs: u64,
    /// Incoming handshakes shed or refused under load.
    pub handshakes_refused: u64,
    /// Reliable messages resent on a new connection after one was lost.
    pub messages_resent: u64,
    /// Resent messages the receiver already had (dropped).
    pub duplicates_dropped: u64,
    /// Reliable messages given up on (reported in `P2P_EVENT_SEND_FAILED`).
    pub messages_failed: u64,
    /// Hosted mode: turns of the loop.
    pub turns: u64,
    /// Hosted mode: send system calls the kernel accepted.
    pub send_calls: u64,
    /// Hosted mode: datagrams the kernel refused (dropped, as UDP may).
    pub send_errors: u64,
    /// Hosted mode: receive system calls that returned data.
    pub recv_calls: u64,
}

/// Where a query runs: the hosted node (on the caller's thread or its
/// network thread) or the raw core.
pub(crate) trait Source {
    /// Runs `f` on the node, with the host's counters when there is a host.
    fn query<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Node, Option<HostStats>) -> R + Send + 'static,
    ) -> Result<R, Error>;
}

/// The exported queries of both modes, after their node argument was
/// checked.
///
/// # Safety
/// The pointers are NULL or valid for what they point to (the C contract).
pub(crate) unsafe fn peers_into(
    s: &impl Source,
    out: *mut p2p_peer_info,
    count: *mut u32,
) -> Result<p2p_result, Error> {
    let peers = s.query(|n, _| peers(n))?;
    // SAFETY: the caller's promise.
    unsafe { fill(peers, out, count) }
}

/// # Safety
/// As [`peers_into`].
pub(crate) unsafe fn path_into(
    s: &impl Source,
    peer: *const p2p_node_id,
    out: *mut p2p_path_info,
) -> Result<p2p_result, Error> {
    // SAFETY: the caller's promise.
    let peer = unsafe { arg(peer, "peer") }?.to_id()?;
    let out = unsafe { arg_mut(out, "out") }?;
    *out = s
        .query(move |n, _| path(n, peer))?
        .ok_or_else(|| Error::new(P2P_ERR_NOT_FOUND, format!("no link to {peer}")))?;
    Ok(P2P_OK)
}

/// # Safety
/// As [`peers_into`].
pub(crate) unsafe fn links_into(
    s: &impl Source,
    out: *mut p2p_link_info,
    count: *mut u32,
) -> Result<p2p_result, Error> {
    let links = s.query(|n, _| links(n))?;
    // SAFETY: the caller's promise.
    unsafe { fill(links, out, count) }
}

/// # Safety
/// As [`peers_into`].
pub(crate) unsafe fn master_into(s: &impl Source, out: *mut p2p_master_info) -> Result<p2p_result, Error> {
    // SAFETY: the caller's promise.
    let out = unsafe { arg_mut(out, "out") }?;
    *out = s.query(|n, _| master(n))?;
    Ok(P2P_OK)
}

/// # Safety
/// As [`peers_into`].
pub(crate) unsafe fn servers_into(
    s: &impl Source,
    out: *mut p2p_server_info,
    count: *mut u32,
) -> Result<p2p_result, Error> {
    let servers = s.query(|n, _| servers(n))?;
    // SAFETY: the caller's promise.
    unsafe { fill(servers, out, count) }
}

/// # Safety
/// As [`peers_into`].
pub(crate) unsafe fn stats_into(s: &impl Source, out: *mut p2p_stats) -> Result<p2p_result, Error> {
    let stats = s.query(stats)?;
    // SAFETY: the caller's promise.
    unsafe { fill_stats(stats, out) }
}

fn rtt_us(rtt: Duration) -> u64 {
    u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX)
}

/// Each linked peer's path info.
fn paths(node: &Node) -> BTreeMap<NodeId, p2p_path_info> {
    let rtts: BTreeMap<NodeId, Duration> = node.links().map(|l| (l.id, l.rtt)).collect();
    node.link_table()
        .into_iter()
        .map(|row| {
            let (kind, via) = path_code(Some(row.path));
            let rtt = rtts.get(&row.id);
            let info = p2p_path_info {
                rtt_us: rtt.map_or(0, |r| rtt_us(*r)),
                kind,
                connected: u8::from(rtt.is_some()),
                via,
                reserved: [0; 5],
            };
            (row.id, info)
        })
        .collect()
}

fn peers(node: &Node) -> Vec<p2p_peer_info> {
    let paths = paths(node);
    node.peers()
        .into_iter()
        .map(|p| p2p_peer_info {
            path: paths.get(&p.id).copied().unwrap_or_default(),
            id: p.id.into(),
            name: name_field(&p.name),
            reserved: [0; 3],
        })
        .collect()
}

fn path(node: &Node, id: NodeId) -> Option<p2p_path_info> {
    paths(node).remove(&id).or_else(|| {
        // Connected without a path entry (a server, or a peer between paths).
        node.links().find(|l| l.id == id).map(|l| p2p_path_info {
            rtt_us: rtt_us(l.rtt),
            kind: path_code(l.path).0,
            connected: 1,
            via: path_code(l.path).1,
            reserved: [0; 5],
        })
    })
}

fn links(node: &Node) -> Vec<p2p_link_info> {
    node.links()
        .map(|l| {
            let (kind, via) = path_code(l.path);
            p2p_link_info {
                path: p2p_path_info { rtt_us: rtt_us(l.rtt), kind, connected: 1, via, reserved: [0; 5] },
                cwnd: l.cwnd,
                sent_packets: l.sent_packets,
                lost_packets: l.lost_packets,
                addr: l.addr.into(),
                id: l.id.into(),
                dialed: u8::from(l.dialed),
                reserved: [0; 2],
                name: name_field(&l.name),
            }
        })
        .collect()
}

fn master(node: &Node) -> p2p_master_info {
    let m = node.master();
    let name = m
        .master
        .and_then(|id| node.servers().into_iter().find(|s| s.id == id).map(|s| s.name))
        .unwrap_or_default();
    p2p_master_info {
        term: m.term,
        epoch: m.epoch,
        basis: basis_code(m.basis),
        has_master: u8::from(m.master.is_some()),
        id: m.master.map(p2p_node_id::from).unwrap_or_default(),
        reserved: [0; 2],
        name: name_field(&name),
        reserved2: [0; 4],
    }
}

fn servers(node: &Node) -> Vec<p2p_server_info> {
    node.servers()
        .into_iter()
        .map(|s| p2p_server_info {
            load: s.load,
            id: s.id.into(),
            live: u8::from(s.live),
            master: u8::from(s.master),
            reserved: 0,
            name: name_field(&s.name),
        })
        .collect()
}

fn stats(node: &Node, host: Option<HostStats>) -> p2p_stats {
    let s = node.stats();
    let h = host.unwrap_or_default();
    p2p_stats {
        size: std::mem::size_of::<p2p_stats>() as u32,
        reserved: 0,
        datagrams_in: s.datagrams_in,
        bytes_in: s.bytes_in,
        datagrams_out: s.datagrams_out,
        bytes_out: s.bytes_out,
        relayed_datagrams: s.relayed_datagrams,
        relayed_bytes: s.relayed_bytes,
        dropped: s.dropped.raw_total() + s.dropped.quic_ignored + s.unroutable,
        path_pings: s.path_pings,
        path_pongs: s.path_pongs,
        handshakes_refused: s.handshakes_shed + s.handshakes_refused,
        messages_resent: s.messages_resent,
        duplicates_dropped: s.duplicates_dropped,
        messages_failed: s.messages_failed,
        turns: h.turns,
        send_calls: h.send_calls,
        send_errors: h.send_errors,
        recv_calls: h.recv_calls,
    }
}

/// Copies `stats` into the caller's `p2p_stats`, as much as both know.
///
/// # Safety
/// `out` is NULL or a writable `p2p_stats` of at least `out->size` bytes.
unsafe fn fill_stats(stats: p2p_stats, out: *mut p2p_stats) -> Result<p2p_result, Error> {
    if out.is_null() {
        return Err(Error::invalid("`out` is NULL"));
    }
    // An older caller's structure may be shorter than ours: read its size
    // without making a reference to a whole (longer) `p2p_stats`.
    // SAFETY: the caller's promise: at least the `size` field is there.
    let size = unsafe { out.cast::<u32>().read() } as usize;
    if size < 8 {
        return Err(Error::invalid("`out->size` must be sizeof(p2p_stats)"));
    }
    let n = size.min(std::mem::size_of::<p2p_stats>());
    // SAFETY: `out` has `size >= n` writable bytes; `stats` has n readable.
    unsafe {
        std::ptr::copy_nonoverlapping((&stats as *const p2p_stats).cast::<u8>(), out.cast::<u8>(), n);
        out.cast::<u32>().write(n as u32);
    }
    Ok(P2P_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_hidden_padding() {
        use std::mem::size_of;
        assert_eq!(size_of::<p2p_path_info>(), 32);
        assert_eq!(size_of::<p2p_peer_info>(), 120);
        assert_eq!(size_of::<p2p_link_info>(), 168);
        assert_eq!(size_of::<p2p_master_info>(), 112);
        assert_eq!(size_of::<p2p_server_info>(), 92);
        assert_eq!(size_of::<p2p_stats>(), 8 + 17 * 8);
    }

    #[test]
    fn stats_fill_what_both_sides_know() {
        let full = p2p_stats { datagrams_in: 5, recv_calls: 9, ..Default::default() };
        let mut old = [0u64; 3]; // a caller whose header knew only two counters
        let out = old.as_mut_ptr().cast::<p2p_stats>();
        // SAFETY: 24 writable bytes, and `size` says so.
        unsafe {
            out.cast::<u32>().write(24);
            fill_stats(full, out).unwrap();
        }
        assert_eq!(old[1], 5);
        assert_eq!(old[0] & 0xffff_ffff, 24);
    }
}
