//! Who is Master, and on what basis.
//!
//! * one live server: it is Master (`solo`);
//! * two: the one that has run longer (`eldest`). Uptimes are compared
//!   without clock synchronisation: when two servers connect, the acceptor
//!   compares the dialer's reported uptime (plus half the round trip) with its
//!   own and announces the verdict in its `Welcome`, so both sides hold the
//!   *same* answer even when the two started within a network latency of each
//!   other. Exact ties go to the smaller ID;
//! * three or more: the Raft leader (`raft`), the only partition-safe basis.
//!
//! Each server applies these rules to its own view (itself plus the servers
//! it has a live connection to), so servers that can reach each other agree.

use crate::identity::NodeId;
use std::fmt;

/// Why a server is Master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum MasterBasis {
    /// It is the only live server.
    Solo,
    /// It has run longer than the only other live server.
    Eldest,
    /// It leads the Raft group of three or more live servers: partition-safe.
    Raft,
}

impl MasterBasis {
    /// Lower-case name, as used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            MasterBasis::Solo => "solo",
            MasterBasis::Eldest => "eldest",
            MasterBasis::Raft => "raft",
        }
    }
}

impl fmt::Display for MasterBasis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Master as one node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MasterInfo {
    /// The Master, if there is one (during a Raft election there is none).
    pub master: Option<NodeId>,
    /// Why it is Master; `None` when there is no Master.
    pub basis: Option<MasterBasis>,
    /// The Raft term for basis `raft`; 0 otherwise. Within one `epoch`, terms
    /// only grow, so `(epoch, term)` works as a fencing token.
    pub term: u64,
    /// Identifies the Raft group for basis `raft` (0 otherwise). A group is
    /// founded anew only when no server of the old one survives with its Raft
    /// state (servers keep it in memory, so a full restart founds a new one);
    /// when two groups meet, the one with the higher term absorbs the other.
    pub epoch: u64,
}

impl MasterInfo {
    /// No Master.
    pub const NONE: MasterInfo = MasterInfo { master: None, basis: None, term: 0, epoch: 0 };
}

/// Applies the rules to one server's view.
///
/// `others` are the live servers besides `me`, each with whether it has run
/// longer than `me` (the agreed pairwise verdict). `raft_leader` is the leader
/// of `me`'s Raft group and its term, if known and live.
pub(crate) fn decide(
    me: NodeId,
    others: &[(NodeId, bool)],
    raft_leader: Option<(NodeId, u64)>,
) -> MasterInfo {
    match others {
        [] => MasterInfo { master: Some(me), basis: Some(MasterBasis::Solo), term: 0, epoch: 0 },
        [(other, other_is_elder)] => MasterInfo {
            master: Some(if *other_is_elder { *other } else { me }),
            basis: Some(MasterBasis::Eldest),
            term: 0,
            epoch: 0,
        },
        _ => match raft_leader {
            Some((leader, term)) => {
                MasterInfo { master: Some(leader), basis: Some(MasterBasis::Raft), term, epoch: 0 }
            }
            None => MasterInfo::NONE,
        },
    }
}

/// The pairwise age verdict: is the dialer elder than the acceptor?
///
/// `dialer_uptime_ms` is what the dialer reported, `half_rtt_ms` how long the
/// report travelled (estimated), `acceptor_uptime_ms` the acceptor's uptime on
/// receipt. Ties go to the smaller ID.
pub(crate) fn dialer_is_elder(
    dialer: NodeId,
    dialer_uptime_ms: u64,
    half_rtt_ms: u64,
    acceptor: NodeId,
    acceptor_uptime_ms: u64,
) -> bool {
    let d = dialer_uptime_ms.saturating_add(half_rtt_ms);
    match d.cmp(&acceptor_uptime_ms) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => dialer < acceptor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Identity, Role};

    fn id(n: u8) -> NodeId {
        Identity::from_seed(Role::Server, [n; 32]).id()
    }

    #[test]
    fn rules_table() {
        let (me, a, b) = (id(1), id(2), id(3));
        let solo = MasterInfo { master: Some(me), basis: Some(MasterBasis::Solo), term: 0, epoch: 0 };
        // (others, raft leader) -> expected
        type Case = (Vec<(NodeId, bool)>, Option<(NodeId, u64)>, MasterInfo);
        let cases: Vec<Case> = vec![
            (vec![], None, solo),
            (vec![], Some((a, 9)), solo),
            (vec![(a, true)], None, MasterInfo { master: Some(a), basis: Some(MasterBasis::Eldest), ..solo }),
            (
                vec![(a, false)],
                Some((a, 4)),
                MasterInfo { master: Some(me), basis: Some(MasterBasis::Eldest), ..solo },
            ),
            (
                vec![(a, true), (b, false)],
                Some((b, 7)),
                MasterInfo { master: Some(b), basis: Some(MasterBasis::Raft), term: 7, epoch: 0 },
            ),
            (vec![(a, true), (b, false)], None, MasterInfo::NONE),
        ];
        for (others, leader, want) in cases {
            assert_eq!(decide(me, &others, leader), want, "{others:?} {leader:?}");
        }
    }

    #[test]
    fn age_verdicts_agree_and_break_ties_by_id() {
        let (x, y) = (id(1), id(2));
        assert!(dialer_is_elder(x, 5000, 10, y, 1000));
        assert!(!dialer_is_elder(x, 1000, 10, y, 5000));
        // Exact tie: the smaller ID is elder, whichever side dialed.
        let small = x.min(y);
        let big = x.max(y);
        assert!(dialer_is_elder(small, 990, 10, big, 1000));
        assert!(!dialer_is_elder(big, 990, 10, small, 1000));
    }
}
