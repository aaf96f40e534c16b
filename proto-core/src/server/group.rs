//! Raft group politics: which group to found, join or leave, how groups that
//! meet are ranked, leadership handover, dismissals, and the Master that
//! results.
//!
//! The Raft group exists to elect a partition-safe Master (for three or more
//! live servers the Master is its leader, see `election.rs`); it replicates
//! nothing but its own membership. A server belongs to at most one group.
//!
//! * **Founding.** Every server founds a one-voter group as it starts: a
//!   server without introducers when it is created (at term 1), any other at
//!   its first reconciliation — its first timer or its first server link,
//!   whichever comes first — since no other server's group can be known
//!   before a link is up and that server's status has arrived. Later, a
//!   server that finds itself in no group (it was dismissed, or left a dead
//!   group) joins the best group it sees, or founds a new one if there is
//!   none and no elder server without a group is about to found one (it
//!   waits at most two election timeouts for that elder). A group is named
//!   by a random 64-bit cluster ID drawn when it is founded (the `epoch` of
//!   Master mandates), and a new group starts above the highest term the
//!   server has seen.
//! * **Ranking** ([`GroupRank`]): the group with more voters present (as one
//!   of its members reports them) ranks higher; between groups with as many,
//!   the one with the smaller cluster ID. A server without a group joins the
//!   highest-ranked group among its live servers' reports. A joiner (not
//!   yet a voter, so it counts towards no quorum) moves to a group that ranks
//!   higher than its target, or to any group if no live server reports its
//!   target any more, and gives up after an election timeout with neither.
//! * **Yielding.** When a leader sees a group that beats its own, it gives
//!   its group up: it removes its members one at a time (learners first),
//!   each of which is dismissed and joins the winner, then leaves and joins
//!   the winner itself. A group beats ours if more of its voters are present;
//!   with as many present, between two one-voter groups the one whose member
//!   has run longer than this server wins (the agreed uptime verdict, which
//!   keeps the eldest server Master as a cluster grows), otherwise the
//!   smaller cluster ID.
//! * **Membership of a group** is changed only by its leader, one server at
//!   a time: it adds servers that want in as learners, promotes them once
//!   caught up, and removes members whose server is down, came back under
//!   another Raft ID (a restart), or — learners — moved to another group.
//!   So a group never waits for a voter that walked away.
//! * **Dead groups.** A member whose group has had no leader for an election
//!   timeout leaves it only if a majority of its voters is provably gone
//!   (their servers are live under another Raft ID or in another group); it
//!   then joins or founds a group as above. A group whose missing voters may
//!   still be alive elsewhere (a partition) is never left: that is what makes
//!   the `raft` basis partition-safe.
//! * **Leadership** is handed to the elder of two live servers, so growing
//!   to three keeps the Master where it was; optionally
//!   (`prefer_least_loaded`) to a far less loaded voter.

use super::election::decide;
use super::{Action, Server, election};
use crate::event::Event;
use crate::identity::NodeId;
use crate::proto::{ClusterMsg, PeerMsg, RaftStatus};
use std::time::{Duration, Instant};

/// After asking raft-rs to hand leadership over, wait this long before
/// judging again (a transfer takes an election to complete).
pub(super) const TRANSFER_PAUSE: Duration = Duration::from_secs(2);

/// How Raft groups compare: greater is better. More voters present ranks
/// higher (joining the bigger group moves the fewest servers); with as many,
/// the smaller cluster ID ranks higher. Only stable attributes count — a rank
/// that moved with terms or leadership would make servers bounce between
/// groups. A leader deciding whether to give its group up uses
/// [`Server::beaten_by`], which breaks a tie between one-voter groups by age
/// instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GroupRank {
    voters: u32,
    cluster: u64,
}

impl PartialOrd for GroupRank {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for GroupRank {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.voters.cmp(&other.voters).then(other.cluster.cmp(&self.cluster))
    }
}

impl Server {
    /// Whether group politics have nothing to do until an input comes: we
    /// are in a group with a leader and no change pending, every live
    /// server reports that group, and — as the leader sees it, which is
    /// what decides membership — the group is exactly the live servers.
    pub(super) fn settled(&self) -> bool {
        let Some(cluster) = self.consensus.cluster() else { return false };
        let quiet = !self.consensus.is_joining()
            && self.consensus.leader().is_some()
            && !self.consensus.has_pending_conf()
            && !self.consensus.has_learners()
            && !self.dissolving
            && self.leaderless_since.is_none()
            && self.unaffiliated_since.is_none()
            && self.target_lost_since.is_none();
        let statuses = || self.live.values().map(|l| l.status);
        let same_group = statuses().all(|s| s.is_some_and(|s| s.cluster == Some(cluster) && !s.joining));
        let members_live = !self.consensus.is_leader()
            || (self.consensus.voter_count() == self.live.len() + 1
                && statuses().flatten().all(|s| self.consensus.is_voter(s.raft_id)));
        quiet && same_group && members_live
    }

    /// Our standing as other servers see it (sent whenever it changes).
    pub(super) fn status(&self) -> RaftStatus {
        RaftStatus {
            cluster: self.consensus.cluster(),
            raft_id: self.consensus.raft_id(),
            voters: self.present_voters() as u32,
            joining: self.consensus.is_joining(),
        }
    }

    /// Voters of our group that are here: ourselves, and live servers that
    /// report our group under the same Raft ID.
    pub(super) fn present_voters(&self) -> usize {
        let cluster = self.consensus.cluster();
        self.consensus
            .voters()
            .iter()
            .filter(|v| {
                **v == self.consensus.raft_id()
                    || self
                        .live
                        .values()
                        .any(|l| l.status.is_some_and(|s| s.raft_id == **v && s.cluster == cluster))
            })
            .count()
    }

    /// Sends Raft's outbox and announces status changes.
    pub(super) fn flush_raft(&mut self) {
        self.send_raft_outbox();
        let st = self.status();
        if self.last_status != Some(st) {
            self.last_status = Some(st);
            self.broadcast(ClusterMsg::Status(st), None);
        }
        self.kv_pump();
    }

    /// Sends the Raft messages the group produced to their servers.
    pub(super) fn send_raft_outbox(&mut self) {
        let cluster = self.consensus.cluster().unwrap_or(0);
        for out in self.consensus.take_outbox() {
            if let Some(node) = self.consensus.node_of(out.to)
                && self.live.contains_key(&node)
            {
                self.send(node, ClusterMsg::Raft { cluster, msg: out.bytes });
            }
        }
    }

    /// The best group among live servers' statuses (members, not joiners),
    /// and one of its members.
    fn best_foreign_group(&self) -> Option<(GroupRank, NodeId)> {
        let mine = self.consensus.cluster();
        self.live
            .iter()
            .filter_map(|(id, l)| {
                let st = l.status?;
                let cluster = st.cluster?;
                let rank = GroupRank { voters: st.voters, cluster };
                (!st.joining && Some(cluster) != mine).then_some((rank, *id))
            })
            .max_by(|a, b| a.0.cmp(&b.0))
    }

    /// Whether the group `theirs`, reported by live server `member`, beats
    /// ours: more voters present wins; with as many, between one-voter groups
    /// `member`'s wins if it has run longer than this server (a stable,
    /// agreed verdict, which keeps the eldest server Master as a cluster
    /// grows), and otherwise the smaller cluster ID wins.
    fn beaten_by(&self, theirs: GroupRank, member: NodeId) -> bool {
        let mine = GroupRank {
            voters: self.present_voters() as u32,
            cluster: self.consensus.cluster().unwrap_or(u64::MAX),
        };
        if theirs.voters != mine.voters {
            return theirs.voters > mine.voters;
        }
        if mine.voters <= 1 {
            return self.live.get(&member).is_some_and(|l| l.elder);
        }
        theirs.cluster < mine.cluster
    }

    /// Joins, founds or leaves Raft groups as the situation requires.
    ///
    /// A server belongs to at most one group. Groups only ever lose voters
    /// through their leader (a committed removal, then a `Dismiss`), so a
    /// group never waits for a voter that walked away:
    ///
    /// * unaffiliated: join the best group around, or found one if there is
    ///   none and no elder unaffiliated server is about to;
    /// * joining (not yet a voter): give up if the group disappears, or move
    ///   to a better one — a learner does not count towards quorum;
    /// * leading a group beaten by another: dismiss the other members one at
    ///   a time, then leave and join the winner;
    /// * in a group that can provably never elect a leader again: leave.
    fn manage_groups(&mut self, now: Instant) {
        if self.consensus.was_removed() {
            self.consensus.leave();
        }
        let best = self.best_foreign_group();
        let election = self.cfg.raft_tick * (self.cfg.election_ticks as u32);
        match self.consensus.cluster() {
            None => {
                let since = *self.unaffiliated_since.get_or_insert(now);
                if let Some((group, _)) = best {
                    self.consensus.join(group.cluster);
                } else {
                    let elder_waiting = self
                        .live
                        .values()
                        .any(|l| l.elder && l.status.is_some_and(|s| s.cluster.is_none() || s.joining));
                    // Wait for an elder to found, but not forever (elder
                    // verdicts between three or more servers can be cyclic).
                    if !elder_waiting || now.saturating_duration_since(since) >= election * 2 {
                        let term = self.consensus.max_term().saturating_add(1);
                        self.consensus.found(term);
                    }
                }
            }
            Some(cluster) if self.consensus.is_joining() => {
                let target_alive = self
                    .live
                    .values()
                    .any(|l| l.status.is_some_and(|s| s.cluster == Some(cluster) && !s.joining));
                let since = *self.target_lost_since.get_or_insert(now);
                if target_alive {
                    self.target_lost_since = None;
                }
                let better = best.filter(|(g, _)| {
                    let target = self.group_rank_of(cluster);
                    target.is_none_or(|t| *g > t)
                });
                if let Some((group, _)) = better {
                    self.target_lost_since = None;
                    self.consensus.join(group.cluster);
                } else if !target_alive && now.saturating_duration_since(since) >= election {
                    self.target_lost_since = None;
                    self.consensus.leave();
                }
            }
            Some(_) => {
                self.target_lost_since = None;
                if let Some((group, member)) = best
                    && self.consensus.is_leader()
                    && self.beaten_by(group, member)
                {
                    self.dissolving = true;
                    if self.consensus.voters().len() + self.consensus.learners().len() <= 1 {
                        // Alone in the group: move over.
                        self.consensus.leave();
                        self.consensus.join(group.cluster);
                        self.dissolving = false;
                    }
                } else {
                    self.dissolving = false;
                }
            }
        }
        if self.consensus.cluster().is_some() {
            self.unaffiliated_since = None;
        }
    }

    /// The best rank any live member reports for `cluster`.
    fn group_rank_of(&self, cluster: u64) -> Option<GroupRank> {
        self.live
            .values()
            .filter_map(|l| l.status)
            .filter(|s| s.cluster == Some(cluster) && !s.joining)
            .map(|s| GroupRank { voters: s.voters, cluster })
            .max()
    }

    /// Lets group politics react to whatever just changed, then sends what
    /// Raft wants sent and updates the Master.
    pub(super) fn reconcile(&mut self, now: Instant) {
        self.manage_groups(now);
        self.leader_duties(now);
        self.recover_stuck_group(now);
        let rank = self.live.values().filter(|l| l.elder).count();
        self.consensus.set_rank(rank);
        self.flush_raft();
        self.dismiss_removed();
        self.update_master();
    }

    /// Tells servers removed from our group that they are out.
    fn dismiss_removed(&mut self) {
        let Some(cluster) = self.consensus.cluster() else {
            self.consensus.take_removed();
            return;
        };
        if !self.consensus.is_leader() {
            self.consensus.take_removed();
            return;
        }
        for raft_id in self.consensus.take_removed() {
            if let Some(node) = self.consensus.node_of(raft_id)
                && self.live.contains_key(&node)
            {
                self.send(node, ClusterMsg::Dismiss { cluster, raft_id });
            }
        }
    }

    /// What only a leader does, one membership change at a time (raft-rs
    /// takes single-server changes only): hand members over while giving
    /// the group up, remove members that are gone, promote caught-up
    /// learners, add servers that want in, and keep leadership where the
    /// Master rules put the Master.
    fn leader_duties(&mut self, now: Instant) {
        if !self.consensus.is_leader() || self.consensus.has_pending_conf() {
            return;
        }
        let me_raft = self.consensus.raft_id();
        let voters = self.consensus.voters();
        let learners = self.consensus.learners();
        let cluster = self.consensus.cluster();
        if self.dissolving {
            // Hand members to the winning group one at a time, learners first.
            if let Some(m) = learners.iter().chain(&voters).find(|m| **m != me_raft) {
                self.consensus.propose_remove(*m);
            }
            return;
        }
        // Remove members whose server is down, has come back under another
        // Raft ID, or (learners only) has moved to another group.
        for m in voters.iter().chain(&learners) {
            if *m == me_raft {
                continue;
            }
            let learner = learners.contains(m);
            let gone = match self.consensus.node_of(*m) {
                Some(node) => match self.live.get(&node) {
                    Some(l) => l.status.is_some_and(|s| s.raft_id != *m || (learner && s.cluster != cluster)),
                    None => true,
                },
                None => true,
            };
            if gone {
                self.consensus.propose_remove(*m);
                return;
            }
        }
        // Promote learners that have caught up and still want in.
        for l in &learners {
            let Some(node) = self.consensus.node_of(*l) else { continue };
            let wants = self
                .live
                .get(&node)
                .and_then(|x| x.status)
                .is_some_and(|s| s.raft_id == *l && s.cluster == cluster);
            if wants && self.consensus.caught_up(*l) {
                self.consensus.propose_add(*l, node);
                return;
            }
        }
        // Add live servers that want to be in this group, as learners first.
        let joiner = self.live.iter().find_map(|(id, l)| {
            let s = l.status?;
            (s.cluster == cluster && !voters.contains(&s.raft_id) && !learners.contains(&s.raft_id))
                .then_some((s.raft_id, *id))
        });
        if let Some((rid, node)) = joiner {
            self.consensus.propose_add_learner(rid, node);
            return;
        }
        // Keep leadership where the Master rules put the Master.
        if self.last_transfer.is_some_and(|t| now.saturating_duration_since(t) < TRANSFER_PAUSE) {
            return;
        }
        self.last_transfer = None;
        let target = if self.live.len() == 1 {
            // Two live servers: the eldest should lead so growing to three keeps it Master.
            self.live.iter().find(|(_, l)| l.elder).and_then(|(_, l)| l.status.map(|s| s.raft_id))
        } else if self.cfg.prefer_least_loaded && self.live.len() >= 2 {
            self.least_loaded_voter(&voters)
        } else {
            None
        };
        if let Some(rid) = target
            && voters.contains(&rid)
            && rid != me_raft
        {
            self.last_transfer = Some(now);
            self.consensus.transfer_to(rid);
        }
    }

    /// With `prefer_least_loaded`: the least loaded voter, if our load is
    /// more than `load_ratio` times its load and at least 10 more.
    fn least_loaded_voter(&self, voters: &[u64]) -> Option<u64> {
        let (rid, load) = self
            .live
            .iter()
            .filter_map(|(id, l)| {
                let s = l.status?;
                voters.contains(&s.raft_id).then(|| (s.raft_id, self.roster.get(id).map_or(0, |k| k.load)))
            })
            .min_by_key(|(_, load)| *load)?;
        let mine = f64::from(self.load);
        (mine > f64::from(load) * self.cfg.load_ratio && self.load >= load + 10).then_some(rid)
    }

    /// Leaves a group that has had no leader for an election timeout and can
    /// provably never elect one again.
    fn recover_stuck_group(&mut self, now: Instant) {
        if self.consensus.cluster().is_none()
            || self.consensus.is_joining()
            || self.consensus.leader().is_some()
        {
            self.leaderless_since = None;
            return;
        }
        let since = *self.leaderless_since.get_or_insert(now);
        let election = self.cfg.raft_tick * (self.cfg.election_ticks as u32);
        // Leaving is only ever done when a majority is provably gone, so one
        // election timeout of silence is enough to look.
        if now.saturating_duration_since(since) < election {
            return;
        }
        // Voters that may still be alive somewhere: all but those whose server
        // is live under a different Raft ID (restarted or moved on).
        let voters = self.consensus.voters();
        let maybe_alive = voters
            .iter()
            .filter(|v| {
                let Some(node) = self.consensus.node_of(**v) else { return true };
                match self.live.get(&node) {
                    Some(l) => {
                        l.status.is_none_or(|s| s.raft_id == **v && s.cluster == self.consensus.cluster())
                    }
                    None => true,
                }
            })
            .count();
        if maybe_alive <= voters.len() / 2 {
            // The group can never elect a leader again: leave it; the next
            // round joins the best group around or founds a new one.
            self.consensus.leave();
            self.leaderless_since = None;
        }
    }

    /// Applies the Master rules to our view and tells peers and the user
    /// when the Master changed.
    pub(super) fn update_master(&mut self) {
        let others: Vec<(NodeId, bool)> = self.live.iter().map(|(id, l)| (*id, l.elder)).collect();
        // A Raft leader counts only if its group holds a majority of the live
        // servers: a newcomer's one-voter group, or a group in the middle of a
        // merge, leads nobody.
        let live_voters = self.present_voters();
        let majority = live_voters > self.live.len().div_ceil(2);
        let leader = self.consensus.leader().filter(|_| majority).and_then(|(rid, term)| {
            let node = self.consensus.node_of(rid)?;
            (node == self.me || self.live.contains_key(&node)).then_some((node, term))
        });
        let mut m = decide(self.me, &others, leader);
        if m.basis == Some(election::MasterBasis::Raft) {
            m.epoch = self.consensus.cluster().unwrap_or(0);
        }
        if m != self.master {
            self.master = m;
            self.broadcast_peers(&PeerMsg::Master(m));
            self.actions.push_back(Action::Event(Event::MasterChanged {
                master: m.master,
                basis: m.basis,
                term: m.term,
                epoch: m.epoch,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterConfig;
    use crate::identity::{Identity, Role};
    use crate::rng::NodeRng;
    use crate::server::LinkMeta;
    use std::cmp::Ordering;
    use std::net::SocketAddr;

    fn server_id(n: u8) -> NodeId {
        Identity::from_seed(Role::Server, [n; 32]).id()
    }

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([198, 18, 0, n], 4433))
    }

    fn server(n: u8, introducers: &[SocketAddr], now: Instant) -> Server {
        let rng = NodeRng::from_seed([n; 32]);
        Server::new(
            server_id(n),
            format!("s{n}"),
            1,
            vec![addr(n)],
            introducers,
            ClusterConfig::default(),
            rng,
            now,
        )
    }

    /// Server `n` connected; `elder`: it has run longer than us.
    fn link(n: u8, elder: bool) -> LinkMeta {
        LinkMeta {
            id: server_id(n),
            name: format!("s{n}"),
            incarnation: 1,
            remote_addr: addr(n),
            addrs: vec![addr(n)],
            elder,
            join: false,
            lookup: false,
            probe_key: None,
        }
    }

    /// The status a member of group `cluster` reports, with `voters` present.
    fn member_of(cluster: u64, voters: u32, raft_id: u64) -> ClusterMsg {
        ClusterMsg::Status(RaftStatus { cluster: Some(cluster), raft_id, voters, joining: false })
    }

    /// Asserts `s` leads a one-voter group of its own, and returns its cluster ID.
    fn leads_alone(s: &Server, n: u8) -> u64 {
        let v = s.raft_view();
        assert!(!v.joining && v.voters.len() == 1, "{v:?}");
        assert_eq!(v.leader, Some(server_id(n)), "{v:?}");
        v.epoch.expect("a group")
    }

    #[test]
    fn groups_rank_by_voters_present_then_smaller_cluster_id() {
        let r = |voters, cluster| GroupRank { voters, cluster };
        assert!(r(2, 9) > r(1, 1));
        assert!(r(3, u64::MAX) > r(2, 0), "voters before cluster IDs");
        assert!(r(2, 1) > r(2, 9));
        assert_eq!(r(2, 5).cmp(&r(2, 5)), Ordering::Equal);
        assert_eq!([r(1, 3), r(2, 8), r(2, 4), r(1, 0)].into_iter().max(), Some(r(2, 4)));
    }

    #[test]
    fn a_server_without_introducers_founds_a_group_when_created() {
        let s = server(1, &[], crate::test_support::epoch());
        leads_alone(&s, 1);
    }

    #[test]
    fn a_server_with_introducers_founds_its_own_group_before_it_can_hear_of_another() {
        let now = crate::test_support::epoch();
        // At its first timer, when nothing is connected yet...
        let mut s = server(2, &[addr(1)], now);
        assert_eq!(s.raft_view().epoch, None, "not when created: that is for the first server");
        let first = s.poll_timeout().expect("a timer");
        s.handle_timeout(first);
        leads_alone(&s, 2);
        // ...or at its first server link, if that comes first: the other
        // server's status arrives only after the link is up.
        let mut s = server(3, &[addr(1)], now);
        s.on_link_up(now + Duration::from_millis(10), &link(1, true));
        leads_alone(&s, 3);
    }

    #[test]
    fn between_one_voter_groups_the_younger_server_yields_whatever_the_cluster_ids() {
        let now = crate::test_support::epoch();
        // The younger server yields even to a larger cluster ID...
        let mut young = server(2, &[addr(1)], now);
        young.on_link_up(now, &link(1, true));
        let mine = leads_alone(&young, 2);
        assert!(mine < u64::MAX);
        young.on_message(now, server_id(1), member_of(u64::MAX, 1, 77));
        let v = young.raft_view();
        assert_eq!((v.epoch, v.joining), (Some(u64::MAX), true), "it joins the elder's group");
        // ...and the elder keeps its group against a smaller one.
        let mut elder = server(1, &[], now);
        let mine = leads_alone(&elder, 1);
        assert!(mine > 0);
        elder.on_link_up(now, &link(2, false));
        elder.on_message(now, server_id(2), member_of(0, 1, 88));
        assert_eq!(leads_alone(&elder, 1), mine);
    }

    #[test]
    fn a_group_with_more_voters_present_wins_whatever_the_ages() {
        let now = crate::test_support::epoch();
        let mut elder = server(1, &[], now);
        let mine = leads_alone(&elder, 1);
        elder.on_link_up(now, &link(2, false));
        let theirs = mine.wrapping_add(1);
        elder.on_message(now, server_id(2), member_of(theirs, 2, 88));
        let v = elder.raft_view();
        assert_eq!((v.epoch, v.joining), (Some(theirs), true));
    }
}
