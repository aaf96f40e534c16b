//! Target `raft`: the server's Raft group wrapper (`server::raft::Consensus`)
//! fed untrusted bytes and mutated real messages.

use super::input::Input;
use crate::identity::{Identity, NodeId, Role};
use crate::rng::NodeRng;
use crate::server::raft::{Consensus, RaftTiming};
use crate::server::raft_wire::WireMsg;
use protobuf::{Message as _, ProtobufEnum as _};
use raft::prelude::{
    ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message, MessageType,
    Snapshot,
};
use std::collections::{BTreeMap, VecDeque};

/// Whether a raft-rs panic caught inside `Consensus` (counted in
/// `Consensus::panics`, after which the server leaves its group) is a bug.
/// It is: `Consensus` validates every message before raft-rs sees it
/// (`server::raft_wire::check`), so the target fails on any input that
/// still reaches a raft-rs panic.
pub const RAFT_PANICS_ARE_BUGS: bool = true;

/// Founding at a huge minimum term used to overflow raft-rs's `term + 1`
/// (`fuzz/regressions/raft/found-at-max-term`); `Consensus::found` now clamps
/// the term to the wire's limit, so the target founds at any term.
const AVOID_FOUND_AT_MAX_TERM: bool = false;

/// The wire form of a Raft message, as `Consensus` reads and writes it.
/// This is the one place that must follow a change of that encoding.
fn decode_msg(bytes: &[u8]) -> Option<Message> {
    WireMsg::decode(bytes).ok()?.into_message()
}

fn encode_msg(m: &Message) -> Vec<u8> {
    // Not `raft_wire::encode`: the target also sends kinds receivers refuse.
    WireMsg::from_message(m).and_then(|w| w.encode()).unwrap_or_default()
}

/// A message on the in-memory network: `(from raft ID, to raft ID, bytes)`.
#[derive(Clone)]
struct Wire {
    from: u64,
    to: u64,
    bytes: Vec<u8>,
}

struct Group {
    members: Vec<Consensus>,
    /// Messages sent and not yet delivered, in order.
    inflight: VecDeque<Wire>,
    /// Copies of recent messages, for replays and mutations.
    seen: Vec<Wire>,
    /// Last term seen per `(member, raft ID, group)`: terms never go back.
    terms: BTreeMap<(usize, u64, u64), u64>,
    strict: bool,
}

const SEEN_CAP: usize = 64;

fn member(seed: u8) -> Consensus {
    let id: NodeId = Identity::from_seed(Role::Server, [0x40 + seed; 32]).id();
    Consensus::new(
        id,
        u64::from(seed) + 1,
        RaftTiming { election_ticks: 10, heartbeat_ticks: 2 },
        NodeRng::from_seed([0x50 + seed; 32]),
    )
}

fn node_id(seed: u8) -> NodeId {
    Identity::from_seed(Role::Server, [0x40 + seed; 32]).id()
}

impl Group {
    fn new(n: usize, strict: bool) -> Self {
        Self {
            members: (0..n as u8).map(member).collect(),
            inflight: VecDeque::new(),
            seen: Vec::new(),
            terms: BTreeMap::new(),
            strict,
        }
    }

    /// Moves every member's outbox onto the network.
    fn collect(&mut self) {
        for m in &mut self.members {
            let from = m.raft_id();
            for o in m.take_outbox() {
                let w = Wire { from, to: o.to, bytes: o.bytes };
                if self.seen.len() >= SEEN_CAP {
                    self.seen.remove(0);
                }
                self.seen.push(w.clone());
                self.inflight.push_back(w);
            }
        }
    }

    fn member_of(&self, raft_id: u64) -> Option<usize> {
        self.members.iter().position(|m| m.raft_id() == raft_id)
    }

    /// Delivers a message the way `Server` does: to the member with that
    /// Raft ID, as a message of its own group.
    fn deliver(&mut self, w: &Wire) {
        if let Some(k) = self.member_of(w.to) {
            let cluster = self.members[k].cluster().unwrap_or(0);
            self.members[k].step(cluster, w.from, &w.bytes);
        }
        self.collect();
    }

    /// Delivers everything in flight (and what that causes), bounded.
    fn pump(&mut self, max: usize) {
        self.collect();
        let mut n = 0;
        while let Some(w) = self.inflight.pop_front() {
            self.deliver(&w);
            n += 1;
            if n >= max {
                break;
            }
        }
    }

    fn tick_all(&mut self, rounds: usize) {
        for _ in 0..rounds {
            for m in &mut self.members {
                m.tick();
            }
            self.pump(1000);
        }
    }

    /// Grows a founder's group to every member, one learner-then-voter step at a time.
    fn form(&mut self) {
        self.members[0].found(1);
        let cluster = self.members[0].cluster().unwrap_or(0);
        for k in 1..self.members.len() {
            self.members[k].join(cluster);
            let (rid, node) = (self.members[k].raft_id(), node_id(k as u8));
            self.members[0].propose_add_learner(rid, node);
            self.pump(1000);
            self.members[0].propose_add(rid, node);
            self.pump(1000);
        }
        self.tick_all(3);
    }

    /// Checks what must hold whatever the input was.
    fn check(&mut self) {
        for (k, m) in self.members.iter().enumerate() {
            if self.strict {
                assert_eq!(m.panics, 0, "raft-rs panicked inside Consensus (member {k})");
            }
            if let Some((leader, term)) = m.leader() {
                assert_eq!(term, m.term(), "leader term is the member's term");
                assert_ne!(leader, 0);
            }
            if m.is_leader() {
                assert_eq!(m.leader(), Some((m.raft_id(), m.term())), "a leader knows it leads");
            }
            assert!(m.max_term() >= m.term());
            assert!(!m.is_joining() || m.cluster().is_some(), "joining no group");
            let (voters, learners) = (m.voters(), m.learners());
            assert!(voters.windows(2).all(|w| w[0] < w[1]), "voters repeat: {voters:?}");
            assert!(learners.windows(2).all(|w| w[0] < w[1]), "learners repeat: {learners:?}");
            assert!(!voters.iter().any(|v| learners.contains(v)), "voter and learner at once");
            assert!(!voters.contains(&0) && !learners.contains(&0), "Raft ID 0 is a member");
            if let Some(cluster) = m.cluster() {
                let key = (k, m.raft_id(), cluster);
                let last = self.terms.entry(key).or_insert(0);
                assert!(m.term() >= *last, "term went back from {} to {} (member {k})", *last, m.term());
                *last = m.term();
            }
        }
    }

    fn raft_ids(&self) -> Vec<u64> {
        self.members.iter().map(Consensus::raft_id).collect()
    }

    fn pick_id(&self, i: &mut Input<'_>) -> u64 {
        let ids = self.raft_ids();
        if !i.one_in(4) { ids[i.below(ids.len())] } else { i.interesting_u64() }
    }
}

fn mutate_u64(i: &mut Input<'_>, v: u64) -> u64 {
    match i.u8() % 6 {
        0 => v.wrapping_add(1),
        1 => v.wrapping_sub(1),
        2 => v.wrapping_add(u64::from(i.u8())),
        3 => v.wrapping_sub(u64::from(i.u8())),
        _ => i.interesting_u64(),
    }
}

fn conf_change_entry(i: &mut Input<'_>, g: &Group) -> Entry {
    let mut cc = ConfChangeV2::default();
    for _ in 0..1 + i.below(3) {
        let kind = match i.u8() % 3 {
            0 => ConfChangeType::AddNode,
            1 => ConfChangeType::RemoveNode,
            _ => ConfChangeType::AddLearnerNode,
        };
        cc.changes.push(ConfChangeSingle { change_type: kind, node_id: g.pick_id(i), ..Default::default() });
    }
    if i.bool() {
        let members: Vec<(u64, NodeId)> = vec![(g.pick_id(i), node_id(i.u8() % 4))];
        cc.context = postcard::to_allocvec(&members).unwrap_or_default().into();
    } else {
        cc.context = i.chunk(32).to_vec().into();
    }
    let data = if i.one_in(8) { i.chunk(64).to_vec() } else { cc.write_to_bytes().unwrap_or_default() };
    Entry {
        entry_type: if i.one_in(4) { EntryType::EntryNormal } else { EntryType::EntryConfChangeV2 },
        term: i.interesting_u64(),
        index: i.interesting_u64(),
        data: data.into(),
        ..Default::default()
    }
}

fn mutate(i: &mut Input<'_>, m: &mut Message, g: &Group) {
    for _ in 0..1 + i.below(4) {
        match i.u8() % 16 {
            0 => {
                let types = MessageType::values();
                m.msg_type = types[i.below(types.len())];
            }
            1 => m.term = mutate_u64(i, m.term),
            2 => m.log_term = mutate_u64(i, m.log_term),
            3 => m.index = mutate_u64(i, m.index),
            4 => m.commit = mutate_u64(i, m.commit),
            5 => m.commit_term = mutate_u64(i, m.commit_term),
            6 => m.reject = !m.reject,
            7 => m.reject_hint = mutate_u64(i, m.reject_hint),
            8 => m.request_snapshot = mutate_u64(i, m.request_snapshot),
            9 => {
                let n = m.entries.len();
                match i.u8() % 4 {
                    0 => m.entries.clear(),
                    1 if n > 0 => {
                        let e = m.entries[i.below(n)].clone();
                        m.entries.push(e);
                    }
                    2 if n > 0 => {
                        m.entries.remove(i.below(n));
                    }
                    _ => m.entries.push(conf_change_entry(i, g)),
                }
            }
            10 if !m.entries.is_empty() => {
                let k = i.below(m.entries.len());
                let e = &mut m.entries[k];
                match i.u8() % 4 {
                    0 => e.term = mutate_u64(i, e.term),
                    1 => e.index = mutate_u64(i, e.index),
                    2 => {
                        e.entry_type =
                            if i.bool() { EntryType::EntryConfChangeV2 } else { EntryType::EntryConfChange }
                    }
                    _ => e.data = i.chunk(64).to_vec().into(),
                }
            }
            11 => {
                let mut s = Snapshot::default();
                let md = s.mut_metadata();
                md.index = mutate_u64(i, m.index);
                md.term = mutate_u64(i, m.term);
                let n = i.below(4);
                let voters: Vec<u64> = (0..n).map(|_| g.pick_id(i)).collect();
                md.set_conf_state(ConfState::from((voters, vec![])));
                m.set_snapshot(s);
                if i.bool() {
                    m.msg_type = MessageType::MsgSnapshot;
                }
            }
            12 => m.from = g.pick_id(i),
            13 => m.to = g.pick_id(i),
            14 => m.priority = i.u64() as i64,
            _ => m.context = i.chunk(16).to_vec().into(),
        }
    }
}

/// Target `raft`: a `Consensus` group of one or three members in one of a
/// few states built by a fixed prelude (a founder alone; three voters with a
/// leader; the same after a leadership transfer; three voters and a joiner
/// half added; three voters with one cut off and campaigning), then an
/// input-derived sequence of: raw bytes stepped into a member as from any
/// Raft ID; real messages replayed, reordered, dropped, mutated field by
/// field or byte by byte; ticks; proposals and leadership transfers;
/// members leaving and rejoining. Invariants: a leader's view agrees with
/// itself, configurations are sets, terms never go back, and — when
/// [`RAFT_PANICS_ARE_BUGS`] — raft-rs never panics.
pub fn raft(data: &[u8]) {
    raft_with(data, RAFT_PANICS_ARE_BUGS);
}

/// [`raft()`] with the "raft-rs never panics" invariant switched explicitly.
pub fn raft_with(data: &[u8], panics_are_bugs: bool) {
    let mut i = Input::new(data);
    let state = i.u8() % 5;
    let mut g = Group::new(if state == 0 { 1 } else { 3 }, panics_are_bugs);
    match state {
        0 => {
            g.members[0].found(1);
            g.pump(100);
        }
        1 => g.form(),
        2 => {
            g.form();
            let to = g.members[1].raft_id();
            g.members[0].transfer_to(to);
            g.tick_all(3);
        }
        3 => {
            // Three voters, and a fourth member half added: its learner
            // change is proposed, the messages are left in flight.
            g.form();
            let cluster = g.members[0].cluster().unwrap_or(0);
            let mut d = member(3);
            d.join(cluster);
            let rid = d.raft_id();
            g.members.push(d);
            g.members[0].propose_add_learner(rid, node_id(3));
            g.collect();
        }
        _ => {
            g.form();
            // Member 2 is cut off: it ticks alone until it campaigns.
            for _ in 0..40 {
                g.members[2].tick();
            }
            let _ = g.members[2].take_outbox();
            g.collect();
        }
    }
    assert!(
        g.seen.iter().all(|w| decode_msg(&w.bytes).is_some()),
        "fuzz::raft's codec cannot read Consensus's messages: update decode_msg/encode_msg"
    );
    g.check();

    let mut ops = 0;
    while !i.is_empty() && ops < 128 {
        ops += 1;
        let n = g.members.len();
        match i.u8() % 14 {
            // Raw bytes, as from anyone.
            0 => {
                let k = i.below(n);
                let from = g.pick_id(&mut i);
                let cluster = match g.members[k].cluster() {
                    Some(c) if !i.one_in(8) => c,
                    _ => i.interesting_u64(),
                };
                let bytes = i.chunk(255);
                g.members[k].step(cluster, from, bytes);
                g.collect();
            }
            // A real message, mutated field by field (sender kept consistent).
            1..=3 if !g.seen.is_empty() => {
                let w = g.seen[i.below(g.seen.len())].clone();
                if let Some(mut m) = decode_msg(&w.bytes) {
                    mutate(&mut i, &mut m, &g);
                    let to = if i.one_in(4) { g.pick_id(&mut i) } else { m.to };
                    m.to = to;
                    let w = Wire { from: m.from, to, bytes: encode_msg(&m) };
                    g.deliver(&w);
                }
            }
            // A real message, mutated byte by byte.
            4 if !g.seen.is_empty() => {
                let mut w = g.seen[i.below(g.seen.len())].clone();
                for _ in 0..1 + i.below(4) {
                    let len = w.bytes.len();
                    match i.u8() % 4 {
                        0 if len > 0 => w.bytes[i.below(len)] ^= 1 << (i.u8() % 8),
                        1 if len > 0 => w.bytes.truncate(i.below(len)),
                        2 if len > 0 => w.bytes[i.below(len)] = i.u8(),
                        _ => w.bytes.extend_from_slice(i.chunk(8)),
                    }
                }
                g.deliver(&w);
            }
            // A real message replayed as is (duplicates, reordering).
            5 if !g.seen.is_empty() => {
                let w = g.seen[i.below(g.seen.len())].clone();
                g.deliver(&w);
            }
            // The network: deliver the next few, drop one, or everything.
            6 => g.pump(1 + i.below(8)),
            7 => {
                if !g.inflight.is_empty() {
                    let k = i.below(g.inflight.len());
                    g.inflight.remove(k);
                }
            }
            8 => {
                let k = i.below(n);
                for _ in 0..1 + i.below(12) {
                    g.members[k].tick();
                }
                g.collect();
            }
            9 => g.tick_all(1 + i.below(3)),
            // What the server asks of its group.
            10 => {
                let k = i.below(n);
                let rid = g.pick_id(&mut i);
                match i.u8() % 4 {
                    0 => g.members[k].propose_add_learner(rid, node_id(i.u8() % 4)),
                    1 => g.members[k].propose_add(rid, node_id(i.u8() % 4)),
                    2 => g.members[k].propose_remove(rid),
                    _ => g.members[k].transfer_to(rid),
                }
                g.collect();
            }
            11 => {
                let k = i.below(n);
                match i.u8() % 3 {
                    0 => g.members[k].leave(),
                    1 => {
                        let other = g.members[i.below(n)].cluster().unwrap_or_else(|| i.u64());
                        g.members[k].join(other);
                    }
                    _ => {
                        let t = g.members[k].max_term().saturating_add(1);
                        if !(AVOID_FOUND_AT_MAX_TERM && t == u64::MAX) {
                            g.members[k].found(t);
                        }
                    }
                }
                let _ = g.members[k].take_removed();
                g.collect();
            }
            12 => {
                let k = i.below(n);
                g.members[k].set_rank(i.below(5));
            }
            _ => g.pump(64),
        }
        g.check();
    }
    g.pump(256);
    g.check();
}
