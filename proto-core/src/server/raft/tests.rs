//! Tests of the Raft group: formation, membership changes, failover and
//! the validation of untrusted Raft input.

use super::*;
use crate::identity::{Identity, Role};
use raft::Storage;

fn server(seed: u8) -> Consensus {
    let id = Identity::from_seed(Role::Server, [seed; 32]).id();
    Consensus::new(
        id,
        seed as u64,
        RaftTiming { election_ticks: 10, heartbeat_ticks: 2 },
        NodeRng::from_seed([seed; 32]),
    )
}

/// Delivers messages between in-memory consensus instances until quiet.
fn pump(nodes: &mut [Consensus]) {
    pump_where(nodes, |_, _| true);
}

/// Like [`pump`], dropping messages for which `link(from, to)` is false.
fn pump_where(nodes: &mut [Consensus], link: impl Fn(u64, u64) -> bool) {
    for _ in 0..100 {
        let mut any = false;
        let mut msgs = Vec::new();
        for n in nodes.iter_mut() {
            let from = n.raft_id();
            for o in n.take_outbox() {
                msgs.push((from, o));
            }
        }
        for (from, o) in msgs {
            any = true;
            if !link(from, o.to) {
                continue;
            }
            if let Some(to) = nodes.iter_mut().find(|n| n.raft_id() == o.to) {
                let cluster = to.cluster().unwrap_or(0);
                to.step(cluster, from, &o.bytes);
            }
        }
        if !any {
            return;
        }
    }
}

#[test]
fn a_founder_leads_alone_then_adds_members() {
    let mut a = server(1);
    a.found(0);
    assert!(a.is_leader());
    assert_eq!(a.voters(), vec![a.raft_id()]);
    assert!(!a.was_removed());
    let cluster = a.cluster().unwrap();
    let mut b = server(2);
    b.join(cluster);
    let mut c = server(3);
    c.join(cluster);
    let (bid, cid) = (b.raft_id(), c.raft_id());
    let (bn, cn) = (b.me, c.me);
    let mut nodes = [a, b, c];
    for (rid, node) in [(bid, bn), (cid, cn)] {
        nodes[0].propose_add_learner(rid, node);
        pump(&mut nodes);
        assert!(nodes[0].learners().contains(&rid));
        assert!(nodes[0].caught_up(rid));
        nodes[0].propose_add(rid, node);
        pump(&mut nodes);
        assert!(!nodes[0].has_pending_conf());
    }
    for _ in 0..5 {
        for n in nodes.iter_mut() {
            n.tick();
        }
        pump(&mut nodes);
    }
    assert_eq!(nodes[0].voters().len(), 3);
    assert!(!nodes[1].is_joining() && !nodes[2].is_joining());
    let leader = nodes[0].raft_id();
    for n in &nodes {
        assert_eq!(n.leader().map(|l| l.0), Some(leader));
        assert_eq!(n.node_of(cid), Some(cn));
    }
}

#[test]
fn garbage_and_misaddressed_messages_are_ignored() {
    let mut a = server(1);
    a.found(0);
    let cluster = a.cluster().unwrap();
    assert!(!a.step(cluster, 5, b"\xff\xff\xff"));
    assert!(!a.step(cluster + 1, 5, b""));
    let m = Message { to: 12345, from: 5, ..Default::default() };
    assert!(!a.step(cluster, 5, &wire(&m)));
    assert!(a.is_leader());
    assert_eq!(a.panics, 0);
    // Garbage is counted; a wrong group or an old Raft ID of ours is stale, not faulty.
    assert_eq!(a.rejected, 1);
}

#[test]
fn an_inconsistent_message_resets_instead_of_panicking() {
    let mut a = server(1);
    a.found(0);
    let cluster = a.cluster().unwrap();
    // A heartbeat claiming a commit far beyond our log: raft-rs treats it as corruption.
    let m = Message {
        msg_type: MessageType::MsgHeartbeat,
        to: a.raft_id(),
        from: 77,
        term: 50,
        commit: 1_000_000,
        ..Default::default()
    };
    let before = a.raft_id();
    // Validation would drop it (`heartbeat_commit_past_our_log`): take the
    // unchecked path to exercise the second line of defence.
    a.step_unchecked(cluster, 77, &wire(&m));
    assert_eq!(a.panics, 1);
    assert_eq!(a.cluster(), None, "left the group");
    a.join(cluster);
    assert_ne!(a.raft_id(), before, "rejoins under a fresh Raft ID");
    assert!(a.is_joining());
}

#[test]
fn raft_ids_change_with_incarnation_and_generation() {
    let id = Identity::from_seed(Role::Server, [1; 32]).id();
    assert_ne!(raft_id_for(id, 1, 0), raft_id_for(id, 2, 0));
    assert_ne!(raft_id_for(id, 1, 0), raft_id_for(id, 1, 1));
    assert_eq!(raft_id_for(id, 1, 0), raft_id_for(id, 1, 0));
}

// ----- helpers for the hardening tests ---------------------------------

use super::raft_wire::{LIMIT, Reject};

/// The wire form of any message, including types `encode` refuses to send.
fn wire(m: &Message) -> Vec<u8> {
    WireMsg::from_message(m).expect("representable").encode().expect("encodes")
}

fn node(seed: u8) -> NodeId {
    Identity::from_seed(Role::Server, [seed; 32]).id()
}

fn msg(kind: MessageType, to: u64, from: u64, term: u64) -> Message {
    let mut m = Message { to, from, term, ..Default::default() };
    m.set_msg_type(kind);
    m
}

fn raft_of(c: &Consensus) -> &Raft<RaftLog> {
    &c.group.as_ref().expect("in a group").node.raft
}

fn last_index(c: &Consensus) -> u64 {
    raft_of(c).raft_log.last_index()
}

fn committed(c: &Consensus) -> u64 {
    raft_of(c).raft_log.committed
}

fn term_at(c: &Consensus, index: u64) -> u64 {
    raft_of(c).raft_log.term(index).expect("in the log")
}

/// A one-voter group: its founder leads.
fn solo() -> Vec<Consensus> {
    let mut a = server(1);
    a.found(0);
    vec![a]
}

/// Three voters, `[0]` leading, the others followers with its log.
fn trio() -> Vec<Consensus> {
    let mut nodes = vec![server(1), server(2), server(3)];
    nodes[0].found(0);
    let cluster = nodes[0].cluster().expect("founded");
    for i in 1..3 {
        nodes[i].join(cluster);
        let (rid, n) = (nodes[i].raft_id(), nodes[i].me);
        nodes[0].propose_add_learner(rid, n);
        pump(&mut nodes);
        nodes[0].propose_add(rid, n);
        pump(&mut nodes);
    }
    assert_eq!(nodes[0].voters().len(), 3);
    assert!(nodes[1..].iter().all(|n| !n.is_joining() && n.term() == nodes[0].term()));
    nodes
}

/// A leader and a server that asked to join but was not added yet (term 0).
fn with_joiner() -> Vec<Consensus> {
    let mut nodes = solo();
    let mut j = server(2);
    j.join(nodes[0].cluster().expect("founded"));
    nodes.push(j);
    nodes
}

/// A leader and a caught-up learner.
fn with_learner() -> Vec<Consensus> {
    let mut nodes = with_joiner();
    let (rid, n) = (nodes[1].raft_id(), nodes[1].me);
    nodes[0].propose_add_learner(rid, n);
    pump(&mut nodes);
    assert!(nodes[0].learners().contains(&rid) && nodes[0].caught_up(rid));
    nodes
}

/// Whether some leader of these servers can still add a member: ticks
/// and delivers until one has committed and applied a new learner.
fn can_commit_a_change(nodes: &mut [Consensus]) -> bool {
    let (fresh, owner) = (4242, node(42));
    for _ in 0..400 {
        if let Some(l) = nodes.iter_mut().find(|n| n.is_leader() && !n.is_joining()) {
            if l.learners().contains(&fresh) {
                return true;
            }
            if !l.has_pending_conf() {
                l.propose_add_learner(fresh, owner);
            }
        }
        for n in nodes.iter_mut() {
            n.tick();
        }
        pump(nodes);
    }
    false
}

/// One panic class: `craft` builds the message for `nodes[t]` of a fresh
/// `build()`. Stepped the old way (no validation) it makes raft-rs panic
/// when `old_panics`; stepped the new way it is rejected for `reason`,
/// nothing panics, the target keeps its leader and term, and the group
/// can still commit a membership change.
fn blocked(
    build: fn() -> Vec<Consensus>,
    t: usize,
    craft: impl Fn(&[Consensus]) -> Message,
    reason: Reject,
    old_panics: bool,
) {
    let mut old = build();
    let m = craft(&old);
    let cluster = old[t].cluster().expect("in a group");
    old[t].step_unchecked(cluster, m.from, &wire(&m));
    if old_panics {
        assert_eq!(old[t].panics, 1, "raft-rs panics on {m:?}");
    }

    let mut new = build();
    let m = craft(&new);
    let local = new[t].local().expect("in a group");
    let w = WireMsg::decode(&wire(&m)).expect("decodes");
    assert_eq!(raft_wire::check(&w, m.from, &local), Err(reason));
    let before = (new[t].leader(), new[t].term());
    assert!(!new[t].step(cluster, m.from, &wire(&m)), "rejected");
    assert_eq!((new[t].rejected, new[t].panics), (1, 0));
    assert_eq!((new[t].leader(), new[t].term()), before);
    assert!(can_commit_a_change(&mut new), "the group still works");
    assert!(new.iter().all(|n| n.panics == 0));
}

// ----- one test per panic class -------------------------------------

#[test]
fn heartbeat_commit_past_our_log() {
    // `handle_heartbeat` → `commit_to`: fatal past the last index.
    blocked(
        trio,
        1,
        |n| {
            let mut m = msg(MessageType::MsgHeartbeat, n[1].raft_id(), n[0].raft_id(), n[0].term());
            m.commit = last_index(&n[1]) + 5;
            m
        },
        Reject::CommitBeyondLog,
        true,
    );
}

#[test]
fn append_anchored_past_our_log_with_term_zero() {
    // `term()` answers 0 past the log, so the anchor "matches" and
    // `maybe_append` commits past the last index.
    blocked(
        trio,
        1,
        |n| {
            let mut m = msg(MessageType::MsgAppend, n[1].raft_id(), n[0].raft_id(), n[0].term());
            m.index = last_index(&n[1]) + 10;
            m.commit = m.index;
            m
        },
        Reject::LogPosition,
        true,
    );
}

#[test]
fn append_entry_with_term_zero() {
    // A term-0 entry past the log "matches" too: same fatal commit.
    blocked(
        trio,
        1,
        |n| {
            let last = last_index(&n[1]);
            let mut m = msg(MessageType::MsgAppend, n[1].raft_id(), n[0].raft_id(), n[0].term());
            m.index = last;
            m.log_term = term_at(&n[1], last);
            m.commit = last + 3;
            m.mut_entries().push(Entry { index: last + 1, term: 0, ..Default::default() });
            m
        },
        Reject::Entries,
        true,
    );
}

#[test]
fn append_entries_not_following_the_anchor() {
    // Entries restarting at index 1 under a newer term conflict with a
    // committed entry: `fatal!("entry 1 conflict with committed entry")`.
    blocked(
        trio,
        1,
        |n| {
            let c = committed(&n[1]);
            let term = n[0].term() + 1;
            let mut m = msg(MessageType::MsgAppend, n[1].raft_id(), n[0].raft_id(), term);
            m.index = c;
            m.log_term = term_at(&n[1], c);
            m.mut_entries().push(Entry { index: 1, term, ..Default::default() });
            m
        },
        Reject::Entries,
        true,
    );
}

#[test]
fn append_response_acknowledging_past_the_leaders_log() {
    // `Progress::maybe_update(n)` computes `n + 1`: overflow. (Release
    // builds wrap instead; the lie then marks the follower caught up.)
    blocked(
        trio,
        0,
        |n| {
            let mut m = msg(MessageType::MsgAppendResponse, n[0].raft_id(), n[1].raft_id(), n[0].term());
            m.index = u64::MAX;
            m
        },
        Reject::Range,
        cfg!(debug_assertions),
    );
    // Within range the same lie does not panic, but the leader takes a
    // learner that lacks the newest entry for caught up (and would
    // promote it).
    for checked in [false, true] {
        let mut n = with_learner();
        let (rid, cluster) = (n[1].raft_id(), n[0].cluster().expect("founded"));
        n[0].propose_add_learner(777, node(7));
        assert!(!n[0].caught_up(rid));
        let mut m = msg(MessageType::MsgAppendResponse, n[0].raft_id(), rid, n[0].term());
        m.index = last_index(&n[0]) + 1000;
        if checked {
            assert!(!n[0].step(cluster, rid, &wire(&m)));
            assert_eq!(n[0].rejected, 1);
        } else {
            n[0].step_unchecked(cluster, rid, &wire(&m));
        }
        assert_eq!(n[0].caught_up(rid), !checked);
    }
}

/// A one-voter leader probing learner 999, which never answers.
fn solo_probing() -> Vec<Consensus> {
    let mut nodes = solo();
    nodes[0].propose_add_learner(999, node(9));
    assert!(nodes[0].learners().contains(&999));
    nodes
}

#[test]
fn append_rejection_with_a_huge_hint() {
    // A probing leader takes `min(rejected, hint + 1)`: overflow.
    blocked(
        solo_probing,
        0,
        |n| {
            let next = raft_of(&n[0]).prs().get(999).expect("tracked").next_idx;
            let mut m = msg(MessageType::MsgAppendResponse, n[0].raft_id(), 999, n[0].term());
            m.reject = true;
            m.index = next - 1;
            m.reject_hint = u64::MAX;
            m
        },
        Reject::Range,
        cfg!(debug_assertions),
    );
}

#[test]
fn proposals_from_the_network() {
    // An empty MsgPropose at a leader: `fatal!("stepped empty MsgProp")`.
    // (One with entries would append them, conf changes included.)
    blocked(solo, 0, |n| msg(MessageType::MsgPropose, n[0].raft_id(), 77, 0), Reject::NeverSent, true);
}

#[test]
fn leader_transfer_request_at_a_follower() {
    // Forwarded to the leader with its term still set: `fatal!("term
    // should not be set when sending MsgTransferLeader")`.
    blocked(
        trio,
        1,
        |n| msg(MessageType::MsgTransferLeader, n[1].raft_id(), n[2].raft_id(), n[0].term()),
        Reject::NeverSent,
        true,
    );
}

#[test]
fn read_index_without_entries() {
    // A leader with followers reads `m.entries[0]`: out of bounds.
    blocked(
        trio,
        0,
        |n| msg(MessageType::MsgReadIndex, n[0].raft_id(), n[1].raft_id(), n[0].term()),
        Reject::NeverSent,
        true,
    );
}

#[test]
fn vote_request_at_term_zero() {
    // Term 0 passes as a local message; the joiner (no vote, no leader)
    // grants it with term 0: `fatal!("term should be set when sending
    // MsgRequestVoteResponse")`.
    blocked(
        with_joiner,
        1,
        |n| msg(MessageType::MsgRequestVote, n[1].raft_id(), n[0].raft_id(), 0),
        Reject::Term,
        true,
    );
}

#[test]
fn pre_vote_with_a_negative_priority_at_a_joiner() {
    // The priority makes a term-0 joiner reject; the rejection carries
    // its term, 0: the same fatal in `send`.
    blocked(
        with_joiner,
        1,
        |n| {
            let mut m = msg(MessageType::MsgRequestPreVote, n[1].raft_id(), n[0].raft_id(), 5);
            m.priority = -1;
            m
        },
        Reject::StrayField,
        true,
    );
}

fn snapshot_for(n: &[Consensus], index: u64, term: u64, cs: ConfState) -> Message {
    let mut m = msg(MessageType::MsgSnapshot, n[1].raft_id(), n[0].raft_id(), n[0].term());
    let meta = m.mut_snapshot().mut_metadata();
    meta.index = index;
    meta.term = term;
    meta.set_conf_state(cs);
    m.mut_snapshot().data = crate::store::Store::default().snapshot().into();
    m
}

#[test]
fn snapshot_with_term_zero() {
    // `restore` takes (index, 0) as matching past the log and
    // fast-forwards: `commit_to` past the last index.
    blocked(
        trio,
        1,
        |n| snapshot_for(n, last_index(&n[1]) + 10, 0, ConfState::from((n[0].voters(), vec![]))),
        Reject::Snapshot,
        true,
    );
}

#[test]
fn snapshot_index_overflow() {
    // `Unstable::restore` sets `offset = index + 1`: overflow.
    blocked(
        trio,
        1,
        |n| snapshot_for(n, u64::MAX, n[0].term(), ConfState::from((n[0].voters(), vec![]))),
        Reject::Snapshot,
        cfg!(debug_assertions),
    );
}

#[test]
fn snapshot_conf_states_raft_cannot_restore() {
    // `confchange::restore` fails or rebuilds another configuration:
    // `fatal!("unable to restore config")` / `fatal!("invalid restore")`.
    type Shape = fn(&[Consensus]) -> ConfState;
    let shapes: [Shape; 3] = [
        // A voter that is also a learner.
        |n| ConfState::from((vec![n[0].raft_id(), n[1].raft_id()], vec![n[1].raft_id()])),
        // No voters at all.
        |n| ConfState::from((vec![], vec![n[0].raft_id(), n[1].raft_id()])),
        // A joint configuration whose next learner is not an outgoing voter.
        |n| {
            let mut cs = ConfState::from((n[0].voters(), vec![]));
            cs.voters_outgoing = vec![n[0].raft_id(), n[1].raft_id()];
            cs.learners_next = vec![77];
            cs
        },
    ];
    for shape in shapes {
        blocked(
            trio,
            1,
            move |n| snapshot_for(n, last_index(&n[1]) + 10, n[0].term(), shape(n)),
            Reject::Snapshot,
            true,
        );
    }
}

/// Three servers after a leadership change (term 2) and enough
/// membership changes that every log is compacted: `[1]` leads, `[2]`
/// follows with a log starting after index 1.
fn compacted_trio() -> Vec<Consensus> {
    let mut nodes = trio();
    let to = nodes[1].raft_id();
    nodes[0].transfer_to(to);
    pump(&mut nodes);
    assert!(nodes[1].is_leader() && nodes[1].term() == 2);
    for i in 0..600 {
        nodes[1].propose_add_learner(5000 + i, node(50));
        pump(&mut nodes);
        nodes[1].propose_remove(5000 + i);
        pump(&mut nodes);
    }
    let first = nodes[2].group.as_ref().expect("in a group").node.store().first_index().expect("mem");
    assert!(first > 2 && term_at(&nodes[2], first) == 2, "compacted past the term-1 entries");
    nodes
}

#[test]
fn append_anchored_below_our_committed_term() {
    // Rejecting, the follower searches for a hint from the anchor down
    // while its terms exceed the anchor's; below the compacted start of
    // its log `term()` fails: `fatal!("term(..) must be valid")`.
    blocked(
        compacted_trio,
        2,
        |n| {
            let mut m = msg(MessageType::MsgAppend, n[2].raft_id(), n[1].raft_id(), n[1].term());
            m.index = committed(&n[2]);
            m.log_term = 1;
            m
        },
        Reject::LogPosition,
        true,
    );
}

#[test]
fn stale_leaders_are_answered_not_counted() {
    // The same anchor from the deposed leader's older term is not acted
    // on by raft-rs: it passes, and the reply tells the sender its term
    // is over.
    let mut n = compacted_trio();
    let (cluster, old) = (n[2].cluster().expect("in a group"), n[0].raft_id());
    let mut m = msg(MessageType::MsgAppend, n[2].raft_id(), old, 1);
    m.index = committed(&n[2]);
    m.log_term = 1;
    m.commit = last_index(&n[2]) + 50;
    n[2].sent.clear();
    assert!(n[2].step(cluster, old, &wire(&m)));
    let mut hb = msg(MessageType::MsgHeartbeat, n[2].raft_id(), old, 1);
    hb.commit = last_index(&n[2]) + 50;
    assert!(n[2].step(cluster, old, &wire(&hb)));
    let tn = msg(MessageType::MsgTimeoutNow, n[2].raft_id(), old, 1);
    assert!(n[2].step(cluster, old, &wire(&tn)));
    assert_eq!((n[2].rejected, n[2].panics, n[2].term()), (0, 0, 2));
    assert!(n[2].sent.iter().any(|r| r.to == old && r.term == 2), "told the old leader");
}

#[test]
fn a_huge_term_overflows_at_the_next_campaign() {
    // Accepted, the term makes the next pre-campaign compute `term + 1`.
    for checked in [false, true] {
        let mut n = solo();
        let cluster = n[0].cluster().expect("founded");
        let mut m = msg(MessageType::MsgHeartbeat, n[0].raft_id(), 77, u64::MAX);
        m.commit = 1;
        if checked {
            let w = WireMsg::decode(&wire(&m)).expect("decodes");
            assert_eq!(raft_wire::check(&w, 77, &n[0].local().expect("in a group")), Err(Reject::Term));
            assert!(!n[0].step(cluster, 77, &wire(&m)));
            assert_eq!(n[0].rejected, 1);
        } else {
            n[0].step_unchecked(cluster, 77, &wire(&m));
            assert_eq!(n[0].term(), u64::MAX, "the old path took the term");
        }
        for _ in 0..100 {
            n[0].tick();
        }
        if checked {
            assert_eq!(n[0].panics, 0);
            assert!(can_commit_a_change(&mut n));
        } else if cfg!(debug_assertions) {
            assert_eq!(n[0].panics, 1);
        }
    }
    // At the bound the same heartbeat is fine: it is a term, not an overflow.
    let mut n = solo();
    let cluster = n[0].cluster().expect("founded");
    let mut m = msg(MessageType::MsgHeartbeat, n[0].raft_id(), 77, LIMIT);
    m.commit = 1;
    assert!(n[0].step(cluster, 77, &wire(&m)));
    assert_eq!(n[0].term(), LIMIT);
}

// ----- what is not a panic but still never comes from a correct server

#[test]
fn timeout_now_only_from_our_leader() {
    // From a follower, it would force an election (no panic, a term bump).
    for checked in [false, true] {
        let mut n = trio();
        let (cluster, term) = (n[1].cluster().expect("in a group"), n[1].term());
        let other = n[2].raft_id();
        let m = msg(MessageType::MsgTimeoutNow, n[1].raft_id(), other, term);
        if checked {
            assert!(!n[1].step(cluster, other, &wire(&m)));
            assert_eq!(n[1].rejected, 1);
            assert_eq!(n[1].term(), term);
        } else {
            n[1].step_unchecked(cluster, other, &wire(&m));
            assert_eq!(n[1].term(), term + 1, "the old path campaigned");
        }
    }
    // From the leader it starts the transfer as usual.
    let mut n = trio();
    let (cluster, term) = (n[1].cluster().expect("in a group"), n[1].term());
    let leader = n[0].raft_id();
    let m = msg(MessageType::MsgTimeoutNow, n[1].raft_id(), leader, term);
    assert!(n[1].step(cluster, leader, &wire(&m)));
    assert_eq!(n[1].term(), term + 1);
}

#[test]
fn snapshot_requests_are_refused() {
    // A follower "requesting a snapshot" at an index made raft-rs's
    // MemStorage fabricate one there and send it on to the follower. Our
    // log never serves a snapshot past the one it took, and the check drops
    // such a request before raft-rs sees it.
    for checked in [false, true] {
        let mut n = trio();
        let (cluster, rid) = (n[0].cluster().expect("founded"), n[1].raft_id());
        let last = last_index(&n[0]);
        let mut m = msg(MessageType::MsgAppendResponse, n[0].raft_id(), rid, n[0].term());
        m.reject = true;
        m.index = last;
        m.reject_hint = last;
        m.request_snapshot = last + 1000;
        n[0].sent.clear();
        if checked {
            assert!(!n[0].step(cluster, rid, &wire(&m)));
            assert_eq!(n[0].rejected, 1);
        } else {
            n[0].step_unchecked(cluster, rid, &wire(&m));
        }
        let fabricated = n[0].sent.iter().any(|s| {
            s.get_msg_type() == MessageType::MsgSnapshot && s.get_snapshot().get_metadata().index > last
        });
        assert!(!fabricated);
    }
}

#[test]
fn snapshot_rewriting_our_commit_is_refused() {
    let mut n = trio();
    let c = committed(&n[1]);
    let m = snapshot_for(&n, c, term_at(&n[1], c) + 1, ConfState::from((n[0].voters(), vec![])));
    let w = WireMsg::decode(&wire(&m)).expect("decodes");
    assert_eq!(raft_wire::check(&w, m.from, &n[1].local().expect("in a group")), Err(Reject::Snapshot));
    // The same snapshot with the right term is harmless (raft-rs ignores it).
    let ok = snapshot_for(&n, c, term_at(&n[1], c), ConfState::from((n[0].voters(), vec![])));
    let cluster = n[1].cluster().expect("in a group");
    assert!(n[1].step(cluster, ok.from, &wire(&ok)));
    assert_eq!((n[1].rejected, n[1].panics), (0, 0));
}

#[test]
fn local_and_never_sent_types_are_counted() {
    use MessageType as M;
    let local = [M::MsgHup, M::MsgBeat, M::MsgUnreachable, M::MsgSnapStatus, M::MsgCheckQuorum];
    let never = [M::MsgPropose, M::MsgTransferLeader, M::MsgReadIndex, M::MsgReadIndexResp];
    let mut n = trio();
    let (cluster, term) = (n[1].cluster().expect("in a group"), n[1].term());
    let (me, leader) = (n[1].raft_id(), n[0].raft_id());
    for (kinds, reason) in [(&local[..], Reject::LocalOnly), (&never[..], Reject::NeverSent)] {
        for kind in kinds {
            let m = msg(*kind, me, leader, term);
            let w = WireMsg::decode(&wire(&m)).expect("decodes");
            assert_eq!(raft_wire::check(&w, leader, &n[1].local().expect("in a group")), Err(reason));
            assert!(!n[1].step(cluster, leader, &wire(&m)));
            // Our own encoder never puts them on the wire either.
            assert!(raft_wire::encode(&m).is_none());
        }
    }
    assert_eq!(n[1].rejected, 9);
    // A message claiming another sender than its link, or to be from us.
    let hb = msg(M::MsgHeartbeat, me, leader, term);
    let other = n[2].raft_id();
    assert!(!n[1].step(cluster, other, &wire(&hb)));
    let mine = msg(M::MsgHeartbeat, me, me, term);
    assert!(!n[1].step(cluster, me, &wire(&mine)));
    assert_eq!(n[1].rejected, 11);
    // Addressed to someone else (an old Raft ID of ours): stale, not counted.
    let stale = msg(M::MsgHeartbeat, me + 1, leader, term);
    assert!(!n[1].step(cluster, leader, &wire(&stale)));
    assert_eq!((n[1].rejected, n[1].panics), (11, 0));
    assert_eq!(n[1].leader().map(|l| l.0), Some(leader));
}

// ----- the wire encoding ------------------------------------------------

/// A one-voter leader whose log has been compacted (first index > 1),
/// so a joiner can only catch up from a snapshot.
fn compacted() -> Vec<Consensus> {
    let mut nodes = solo();
    for i in 0..600 {
        nodes[0].propose_add_learner(5000 + i, node(50));
        nodes[0].propose_remove(5000 + i);
    }
    let first = nodes[0].group.as_ref().expect("founded").node.store().first_index().expect("mem");
    assert!(first > 1, "compacted");
    nodes
}

/// Runs every kind of exchange raft-rs has (formation, heartbeats, a
/// leader transfer, an election after the leader is cut off, a join
/// from a snapshot) and returns what was sent and the servers.
fn honest_traffic() -> (Vec<Message>, Vec<Consensus>) {
    let mut nodes = trio();
    for _ in 0..5 {
        for n in nodes.iter_mut() {
            n.tick();
        }
        pump(&mut nodes);
    }
    // The founder cut off: the others elect a leader (pre-vote, then vote).
    let cut = nodes[0].raft_id();
    for _ in 0..60 {
        for n in nodes.iter_mut() {
            n.tick();
        }
        pump_where(&mut nodes, |from, to| from != cut && to != cut);
    }
    for _ in 0..20 {
        for n in nodes.iter_mut() {
            n.tick();
        }
        pump(&mut nodes);
    }
    let l = (1..3).find(|i| nodes[*i].is_leader()).expect("re-elected without the founder");
    let other = 3 - l;
    let to = nodes[other].raft_id();
    nodes[l].transfer_to(to);
    pump(&mut nodes);
    assert!(nodes[other].is_leader(), "transferred");
    let mut sent: Vec<Message> = nodes.iter_mut().flat_map(|n| std::mem::take(&mut n.sent)).collect();

    let mut group = compacted();
    let mut j = server(9);
    j.join(group[0].cluster().expect("founded"));
    group.push(j);
    let (rid, n) = (group[1].raft_id(), group[1].me);
    group[0].propose_add_learner(rid, n);
    pump(&mut group);
    assert!(group[0].caught_up(rid), "caught up from a snapshot");
    sent.extend(group.iter_mut().flat_map(|n| std::mem::take(&mut n.sent)));
    nodes.extend(group);
    (sent, nodes)
}

#[test]
fn every_message_raft_rs_sends_round_trips_and_passes_the_checks() {
    let (sent, nodes) = honest_traffic();
    let mut kinds = std::collections::BTreeSet::new();
    for m in &sent {
        let bytes = raft_wire::encode(m).expect("encodes");
        let back = WireMsg::decode(&bytes).expect("decodes").into_message().expect("converts");
        assert_eq!(&back, m, "round trip");
        kinds.insert(format!("{:?}", m.get_msg_type()));
    }
    let expected = [
        "MsgAppend",
        "MsgAppendResponse",
        "MsgRequestVote",
        "MsgRequestVoteResponse",
        "MsgRequestPreVote",
        "MsgRequestPreVoteResponse",
        "MsgSnapshot",
        "MsgHeartbeat",
        "MsgHeartbeatResponse",
        "MsgTimeoutNow",
    ];
    let want: std::collections::BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    assert_eq!(kinds, want, "every kind raft-rs sends on its own was seen");
    assert!(sent.iter().any(|m| m.get_msg_type() == MessageType::MsgAppend
        && m.entries.iter().any(|e| e.get_entry_type() == EntryType::EntryConfChangeV2)));
    assert!(sent.iter().any(|m| m.get_msg_type() == MessageType::MsgAppendResponse && m.reject));
    assert!(sent.iter().any(|m| m.context.as_ref() == raft::CAMPAIGN_TRANSFER));
    // Honest traffic is never refused.
    for n in &nodes {
        assert_eq!((n.rejected, n.panics), (0, 0));
    }
}

#[test]
fn v1_conf_changes_are_not_representable_and_snapshot_data_travels() {
    let mut m = msg(MessageType::MsgAppend, 2, 1, 1);
    let mut e = Entry::default();
    e.set_entry_type(EntryType::EntryConfChange);
    m.mut_entries().push(e);
    assert!(WireMsg::from_message(&m).is_none());
    assert!(raft_wire::encode(&m).is_none());
    let mut s = msg(MessageType::MsgSnapshot, 2, 1, 1);
    s.mut_snapshot().data = vec![1u8, 2, 3].into();
    let back = WireMsg::decode(&raft_wire::encode(&s).expect("representable")).expect("decodes");
    assert_eq!(back.into_message().expect("converts").get_snapshot().data.to_vec(), vec![1u8, 2, 3]);
}

#[test]
fn decoding_is_bounded() {
    use super::raft_wire::{Capped, MAX_CONTEXT, MAX_ENTRIES, MAX_WIRE_BYTES, WireEntry, WirePayload};
    let w = WireMsg::from_message(&msg(MessageType::MsgAppend, 2, 1, 1)).expect("representable");
    let bytes = w.encode().expect("encodes");
    assert_eq!(WireMsg::decode(&bytes), Ok(w.clone()));
    // Every truncation fails, and so does one byte too many.
    for cut in 0..bytes.len() {
        assert_eq!(WireMsg::decode(&bytes[..cut]), Err(Reject::Malformed));
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(WireMsg::decode(&trailing), Err(Reject::Malformed));
    assert_eq!(WireMsg::decode(&vec![0u8; MAX_WIRE_BYTES + 1]), Err(Reject::Oversized));
    // Lists over their caps are refused while decoding (our encoder
    // never writes them: `from_message` refuses such messages).
    let mut big = w.clone();
    big.context = Capped(vec![7; MAX_CONTEXT + 1]);
    assert_eq!(WireMsg::decode(&big.encode().expect("encodes")), Err(Reject::Malformed));
    let mut many = w.clone();
    let e = WireEntry {
        term: 1,
        index: 1,
        context: Capped(vec![]),
        payload: WirePayload::Normal(Capped(vec![])),
    };
    many.entries = Capped(vec![e; MAX_ENTRIES + 1]);
    let many = many.encode().expect("encodes");
    assert!(many.len() < MAX_WIRE_BYTES);
    assert_eq!(WireMsg::decode(&many), Err(Reject::Malformed));
    // An entry count the input cannot back: kind, to, from, term,
    // log_term, index, then the count (8,000 as a varint), then nothing.
    assert_eq!(&bytes[..7], &[3, 2, 1, 1, 0, 0, 0]);
    let mut lie = bytes[..6].to_vec();
    lie.extend_from_slice(&[0xc0, 0x3e]);
    assert_eq!(WireMsg::decode(&lie), Err(Reject::Malformed));
}

#[test]
fn the_wire_form_is_about_as_small_as_protobuf() {
    // 14 of the mirror's 15 fields cost a byte even when zero, where
    // protobuf omits them; structured conf changes save protobuf's
    // nested tags. Typical sizes: heartbeat 31 bytes (protobuf 26),
    // append with one membership change 79 (protobuf 88).
    let (sent, _) = honest_traffic();
    for m in &sent {
        let (pb, w) =
            (m.write_to_bytes().expect("protobuf").len(), raft_wire::encode(m).expect("wire").len());
        assert!(w <= pb + 8, "{:?}: {w} bytes, protobuf {pb}", m.get_msg_type());
        if m.get_msg_type() == MessageType::MsgHeartbeat {
            assert!(w <= 32, "heartbeat: {w} bytes");
        }
    }
}

#[test]
fn mutated_outbox_bytes_never_panic() {
    // What a byte-level fuzz harness does: take real `take_outbox`
    // bytes, flip, cut, splice and overwrite them, and step them into
    // every server of a working group.
    use rand::{RngExt, SeedableRng};
    let (sent, _) = honest_traffic();
    let corpus: Vec<Vec<u8>> = sent.iter().filter_map(raft_wire::encode).collect();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
    let mut nodes = trio();
    let cluster = nodes[0].cluster().expect("founded");
    let mut stepped = 0;
    for round in 0..20_000 {
        let mut b = corpus[rng.random_range(0..corpus.len())].clone();
        for _ in 0..rng.random_range(1..4) {
            let len = b.len();
            match rng.random_range(0..5) {
                0 if len > 0 => b[rng.random_range(0..len)] ^= 1 << rng.random_range(0..8),
                1 if len > 0 => b[rng.random_range(0..len)] = rng.random(),
                2 if len > 0 => b.truncate(rng.random_range(0..len)),
                3 => b.push(rng.random()),
                _ => {
                    let other = &corpus[rng.random_range(0..corpus.len())];
                    let at = rng.random_range(0..=b.len().min(other.len()));
                    b.splice(at.., other[at..].iter().copied());
                }
            }
        }
        let t = rng.random_range(0..3);
        // Address it to the target and claim the sender's link, as a
        // hostile server would, so the message gets past the stale check.
        if let Ok(mut w) = WireMsg::decode(&b) {
            w.to = nodes[t].raft_id();
            w.from = nodes[(t + 1 + round % 2) % 3].raft_id();
            b = w.encode().expect("encodes");
        }
        let from = nodes[(t + 1 + round % 2) % 3].raft_id();
        stepped += usize::from(nodes[t].step(cluster, from, &b));
        if round % 50 == 0 {
            for n in nodes.iter_mut() {
                n.tick();
            }
            pump(&mut nodes);
        }
    }
    assert!(stepped > 1000, "many mutants reached raft-rs ({stepped})");
    assert!(nodes.iter().all(|n| n.panics == 0));
}

// ----- random messages ------------------------------------------------

use proptest::prelude::*;

/// A number relative to the target's state when the message is built.
#[derive(Debug, Clone)]
enum Num {
    Zero,
    One,
    /// Our term (for terms) or last index (for indexes), plus a delta.
    Near(i8),
    /// Our commit index plus a delta.
    Commit(i8),
    /// Just past [`LIMIT`].
    Over,
    Max,
    Any(u64),
}

impl Num {
    fn at(&self, near: u64, commit: u64) -> u64 {
        match self {
            Num::Zero => 0,
            Num::One => 1,
            Num::Near(d) => near.saturating_add_signed(i64::from(*d)),
            Num::Commit(d) => commit.saturating_add_signed(i64::from(*d)),
            Num::Over => LIMIT + 1,
            Num::Max => u64::MAX,
            Num::Any(v) => *v,
        }
    }
}

fn num() -> impl Strategy<Value = Num> {
    prop_oneof![
        2 => Just(Num::Zero),
        1 => Just(Num::One),
        12 => (-3i8..=3).prop_map(Num::Near),
        4 => (-2i8..=2).prop_map(Num::Commit),
        1 => prop_oneof![Just(Num::Over), Just(Num::Max), any::<u64>().prop_map(Num::Any)],
    ]
}

/// Terms: mostly around the current one.
fn term() -> impl Strategy<Value = Num> {
    prop_oneof![12 => (0i8..=2).prop_map(Num::Near), 1 => Just(Num::Zero), 1 => num()]
}

#[derive(Debug, Clone)]
struct JunkConf {
    kind: u8,
    member: bool,
    valid_context: bool,
    transition: u8,
    two: bool,
}

#[derive(Debug, Clone)]
struct JunkEntry {
    /// `None`: the next consecutive index.
    index: Option<Num>,
    /// Relative to the message's term.
    term: Num,
    conf: Option<JunkConf>,
    data: Vec<u8>,
}

#[derive(Debug, Clone)]
struct JunkSnapshot {
    index: Num,
    /// Relative to the message's term.
    term: Num,
    /// Which members are voters (bit i: member i), besides the sender.
    voters: u8,
    with_sender: bool,
    learner: bool,
    joint: bool,
}

#[derive(Debug, Clone)]
struct Junk {
    kind: i32,
    /// Take `log_term` from the target's own log at `index`, when it has one.
    anchored: bool,
    /// Set fields this type never carries (otherwise they stay empty).
    stray: bool,
    from: usize,
    link_lies: bool,
    to_other: bool,
    term: Num,
    log_term: Num,
    index: Num,
    commit: Num,
    commit_term: Num,
    reject: bool,
    reject_hint: Num,
    request_snapshot: bool,
    priority: i64,
    context: u8,
    entries: Vec<JunkEntry>,
    snapshot: JunkSnapshot,
}

fn junk() -> impl Strategy<Value = Junk> {
    use MessageType as M;
    let sent = [
        M::MsgAppend,
        M::MsgAppendResponse,
        M::MsgRequestVote,
        M::MsgRequestVoteResponse,
        M::MsgRequestPreVote,
        M::MsgRequestPreVoteResponse,
        M::MsgSnapshot,
        M::MsgHeartbeat,
        M::MsgHeartbeatResponse,
        M::MsgTimeoutNow,
    ]
    .map(|k| k as i32);
    let kind = prop_oneof![8 => proptest::sample::select(sent.to_vec()), 1 => 0i32..19];
    let conf = (
        0u8..3,
        proptest::bool::weighted(0.2),
        proptest::bool::weighted(0.7),
        0u8..3,
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(kind, member, valid_context, transition, two)| JunkConf {
            kind,
            member,
            valid_context,
            transition,
            two,
        });
    let entry = (
        proptest::option::weighted(0.1, num()),
        prop_oneof![8 => (-1i8..=0).prop_map(Num::Near), 1 => num()],
        proptest::option::weighted(0.3, conf),
        proptest::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(|(index, term, conf, data)| JunkEntry { index, term, conf, data });
    let snap_term = prop_oneof![8 => (-1i8..=0).prop_map(Num::Near), 1 => num()];
    let snapshot = (
        num(),
        snap_term,
        any::<u8>(),
        proptest::bool::weighted(0.9),
        any::<bool>(),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(index, term, voters, with_sender, learner, joint)| JunkSnapshot {
            index,
            term,
            voters,
            with_sender,
            learner,
            joint,
        });
    let from = prop_oneof![9 => 0usize..2, 1 => 2usize..5];
    let head = (
        (kind, proptest::bool::weighted(0.1), proptest::bool::weighted(0.7)),
        from,
        proptest::bool::weighted(0.03),
        proptest::bool::weighted(0.03),
        term(),
        term(),
        num(),
    );
    let tail = (
        num(),
        num(),
        any::<bool>(),
        num(),
        any::<bool>(),
        any::<i64>(),
        0u8..3,
        proptest::collection::vec(entry, 0..5),
        snapshot,
    );
    (head, tail).prop_map(
        |(
            ((kind, stray, anchored), from, link_lies, to_other, term, log_term, index),
            (
                commit,
                commit_term,
                reject,
                reject_hint,
                request_snapshot,
                priority,
                context,
                entries,
                snapshot,
            ),
        )| Junk {
            kind,
            anchored,
            stray,
            from,
            link_lies,
            to_other,
            term,
            log_term,
            index,
            commit,
            commit_term,
            reject,
            reject_hint,
            request_snapshot,
            priority,
            context,
            entries,
            snapshot,
        },
    )
}

/// Builds the message `j` describes for `nodes[t]`, and the link it
/// arrives on. Membership changes that pass validation only ever add
/// learners or remove strangers, and snapshot voter sets are drawn from
/// the real members: a message that passes validation is trusted like
/// any Raft peer's, and voters invented by a Byzantine sender could
/// legitimately stall a group, which is not what this property is about.
fn build(j: &Junk, nodes: &[Consensus], t: usize) -> (Message, u64) {
    let me = nodes[t].raft_id();
    let others: Vec<u64> = nodes.iter().map(Consensus::raft_id).filter(|r| *r != me).collect();
    let members: Vec<u64> = nodes.iter().map(Consensus::raft_id).collect();
    // Mostly a plausible sender: another member, or a stranger.
    let mut senders = others.clone();
    senders.push(77);
    let from = match j.from {
        i if i < 2 => senders[(i + j.kind as usize) % senders.len()],
        2 => me,
        3 => 0,
        _ => 78,
    };
    let (term, last, commit) = (nodes[t].term(), last_index(&nodes[t]), committed(&nodes[t]));
    let to = if j.to_other { others.first().copied().unwrap_or(12345) } else { me };
    let kind = <MessageType as protobuf::ProtobufEnum>::from_i32(j.kind).expect("a type");
    let mut m = msg(kind, to, from, j.term.at(term, commit));
    m.index = j.index.at(last, commit);
    m.log_term = match raft_of(&nodes[t]).raft_log.term(m.index) {
        Ok(t) if j.anchored && m.index <= last => t,
        _ => j.log_term.at(term, commit),
    };
    m.commit = j.commit.at(last, commit);
    m.commit_term = j.commit_term.at(term, commit);
    use MessageType as M;
    let response =
        matches!(kind, M::MsgAppendResponse | M::MsgRequestVoteResponse | M::MsgRequestPreVoteResponse);
    m.reject = j.reject && (response || j.stray);
    m.reject_hint = j.reject_hint.at(last, commit);
    if j.stray {
        m.request_snapshot = if j.request_snapshot { last + 1 } else { 0 };
        m.priority = j.priority;
    }
    m.context = match j.context {
        1 if kind == M::MsgRequestVote || j.stray => raft::CAMPAIGN_TRANSFER.to_vec(),
        2 if j.stray => vec![1, 2, 3],
        _ => Vec::new(),
    }
    .into();
    let entries: &[JunkEntry] = if kind == M::MsgAppend || j.stray { &j.entries } else { &[] };
    for (i, e) in entries.iter().enumerate() {
        let index = e.index.as_ref().map_or(m.index.wrapping_add(1 + i as u64), |n| n.at(last, commit));
        let mut entry = Entry { index, term: e.term.at(m.term, m.term), ..Default::default() };
        match &e.conf {
            None => entry.data = e.data.clone().into(),
            Some(c) => {
                let node_id = if c.member { members[i % members.len()] } else { 6000 + i as u64 };
                let kind =
                    [ConfChangeType::AddNode, ConfChangeType::RemoveNode, ConfChangeType::AddLearnerNode]
                        [usize::from(c.kind)];
                let harmless = !c.member && kind != ConfChangeType::AddNode;
                let context = if c.valid_context && harmless {
                    postcard::to_allocvec(&vec![(node_id, node(60))]).expect("encodes")
                } else {
                    vec![9, 9]
                };
                let mut cc = ConfChangeV2::default();
                cc.set_transition(
                    [
                        ConfChangeTransition::Auto,
                        ConfChangeTransition::Implicit,
                        ConfChangeTransition::Explicit,
                    ][usize::from(c.transition)],
                );
                for _ in 0..if c.two { 2 } else { 1 } {
                    let mut single = ConfChangeSingle { node_id, ..Default::default() };
                    single.set_change_type(kind);
                    cc.changes.push(single);
                }
                cc.context = context.clone().into();
                entry.set_entry_type(EntryType::EntryConfChangeV2);
                entry.data = cc.write_to_bytes().expect("protobuf").into();
                entry.context = context.into();
            }
        }
        m.mut_entries().push(entry);
    }
    if kind == M::MsgSnapshot || j.stray {
        let (sj, msg_term) = (&j.snapshot, m.term);
        let meta = m.mut_snapshot().mut_metadata();
        meta.index = sj.index.at(last, commit);
        meta.term = sj.term.at(msg_term, commit);
        let mut voters: Vec<u64> =
            members.iter().enumerate().filter(|(i, _)| sj.voters & (1 << i) != 0).map(|(_, r)| *r).collect();
        if sj.with_sender && members.contains(&from) && !voters.contains(&from) {
            voters.push(from);
        }
        let mut cs = ConfState::from((voters.clone(), if sj.learner { vec![7000] } else { vec![] }));
        if sj.joint {
            cs.voters_outgoing = voters;
        }
        meta.set_conf_state(cs);
    }
    let link = if j.link_lies { from ^ 1 } else { from };
    (m, link)
}

/// The states a target can be in: (servers, target): a one-voter
/// leader, the leader and a follower of three, a joiner not yet added,
/// a learner, a follower whose log was compacted.
fn scenario(which: usize) -> (Vec<Consensus>, usize) {
    match which {
        0 => (solo(), 0),
        1 => (trio(), 0),
        2 => (trio(), 1),
        3 => (with_joiner(), 1),
        4 => (with_learner(), 1),
        _ => (compacted_trio(), 2),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random messages — any type, sender, term, index, entries, commit
    /// or snapshot, biased towards values near the target's own state —
    /// fed to a leader, a follower with a log (compacted or not), a
    /// joiner or a learner,
    /// never make raft-rs panic, and the group still commits a
    /// membership change afterwards.
    #[test]
    fn random_messages_never_panic_and_the_group_keeps_working(
        which in 0usize..6,
        batch in proptest::collection::vec(junk(), 1..8),
    ) {
        let (mut nodes, t) = scenario(which);
        let cluster = nodes[t].cluster().expect("in a group");
        for j in &batch {
            let (m, link) = build(j, &nodes, t);
            let bytes = wire(&m);
            nodes[t].step(cluster, link, &bytes);
            pump(&mut nodes);
            prop_assert!(nodes.iter().all(|n| n.panics == 0));
        }
        prop_assert!(can_commit_a_change(&mut nodes), "the group still works");
        prop_assert!(nodes.iter().all(|n| n.panics == 0));
    }
}

/// raft-rs 0.7 lets a leader that applied its own removal keep leading; its
/// next append response then panicked on the missing self-progress (found by
/// the `raft` fuzz target: `fuzz/regressions/raft/leader-removes-itself`).
/// It now steps down, the two others elect a leader and keep committing,
/// and the removed server knows it was removed.
#[test]
fn a_leader_that_removes_itself_steps_down() {
    let mut nodes = trio();
    let old = nodes[0].raft_id();
    let term = nodes[0].term();
    nodes[0].propose_remove(old);
    for _ in 0..50 {
        pump(&mut nodes);
        for n in nodes.iter_mut() {
            n.tick();
        }
    }
    pump(&mut nodes);
    assert_eq!(nodes.iter().map(|n| n.panics).sum::<u64>(), 0, "raft-rs panicked");
    assert!(!nodes[0].is_leader(), "the removed leader stepped down");
    assert!(nodes[0].was_removed());
    assert!(nodes[0].term() > term, "it stepped down into a later term");
    let leaders: Vec<_> = nodes[1..].iter().filter(|n| n.is_leader()).collect();
    assert_eq!(leaders.len(), 1, "the other two elected a leader");
    assert!(!leaders[0].voters().contains(&old));
    assert!(can_commit_a_change(&mut nodes[1..]));
}

#[test]
fn the_store_replicates_and_a_joiner_gets_it_from_a_snapshot() {
    use crate::store::{Command, KvRequest};
    let mut group = solo();
    let client = node(77);
    for seq in 0..1100u64 {
        let op = KvRequest::put(format!("k{}", seq % 50), format!("v{seq}")).0;
        assert!(group[0].propose_command(&Command { client, epoch: 0, seq, ack: seq, op }));
    }
    assert_eq!(group[0].take_applied().len(), 1100);
    assert!(group[0].group.as_ref().unwrap().node.store().first_index().unwrap() > 1, "compacted");
    let mut j = server(9);
    j.join(group[0].cluster().expect("founded"));
    group.push(j);
    let (rid, n) = (group[1].raft_id(), group[1].me);
    group[0].propose_add_learner(rid, n);
    pump(&mut group);
    assert!(group[0].caught_up(rid), "caught up from a snapshot");
    assert_eq!(group[1].store(), group[0].store(), "the joiner holds the same store");
    assert_eq!(group[1].store().unwrap().revision(), 1100);
    assert_eq!((group[1].rejected, group[1].panics), (0, 0));
}

/// Applies every pending write of `c` to `table` and confirms them.
fn flush_disk(c: &mut Consensus, table: &mut std::collections::BTreeMap<Vec<u8>, Vec<u8>>) {
    while let Some(w) = c.poll_write() {
        crate::persist::apply_raft_write(table, &w);
        c.written(w.seq);
    }
}

#[test]
fn a_durable_group_commits_only_what_is_on_disk_and_resumes_from_it() {
    use crate::store::{Command, KvRequest};
    let mut table = std::collections::BTreeMap::new();
    let mut c = server(1);
    c.use_disk();
    c.found(1);
    flush_disk(&mut c, &mut table);
    assert!(c.is_leader());
    let client = node(77);
    let put =
        |seq: u64| Command { client, epoch: 0, seq, ack: seq, op: KvRequest::put(format!("k{seq}"), "v").0 };
    // A lone voter: nothing commits before its own log is on disk.
    assert!(c.propose_command(&put(0)));
    assert!(c.take_applied().is_empty(), "applied before the write was confirmed");
    flush_disk(&mut c, &mut table);
    assert_eq!(c.take_applied().len(), 1);
    for seq in 1..1500 {
        c.propose_command(&put(seq));
        flush_disk(&mut c, &mut table);
    }
    assert_eq!(c.take_applied().len(), 1499);
    let (cluster, raft_id, term) = (c.cluster(), c.raft_id(), c.term());
    // A restart (another incarnation) resumes identity, log and store — the
    // log was compacted behind a snapshot on the way.
    assert!(table.contains_key(&b"s"[..]));
    let mut r = server(1);
    r.incarnation = 99;
    r.use_disk();
    assert!(r.resume(&table));
    assert_eq!((r.cluster(), r.raft_id()), (cluster, raft_id));
    assert!(r.term() >= term);
    assert_eq!(r.store(), c.store());
    // It leads again after an election timeout, at a later term.
    for _ in 0..40 {
        r.tick();
        flush_disk(&mut r, &mut table);
    }
    assert!(r.is_leader() && r.term() > term);
    // A torn tail (the last entries never reached the disk) is cut cleanly.
    let last: Vec<Vec<u8>> = table.keys().filter(|k| k[0] == b'e').rev().take(3).cloned().collect();
    for k in last {
        table.remove(&k);
    }
    let mut t = server(1);
    t.use_disk();
    assert!(t.resume(&table));
    // Garbage is no identity: the server starts afresh instead.
    let mut g = server(1);
    g.use_disk();
    assert!(!g.resume(&[(b"g".to_vec(), vec![1, 2, 3])].into_iter().collect()));
}
