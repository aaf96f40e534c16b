use super::machine::{self, Command, Fail, Outcome, Res, Store};
use super::*;
use crate::identity::{Identity, NodeId, Role};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn client(n: u8) -> NodeId {
    Identity::from_seed(Role::Peer, [n; 32]).id()
}

/// Applies `req` as client 1's next request (sequence = log index).
fn run(s: &mut Store, index: u64, req: KvRequest) -> Outcome {
    s.apply(index, Command { client: client(1), epoch: 0, seq: index, ack: index, op: req.0 })
}

fn answer(o: Outcome) -> (u64, KvResponse) {
    let (rev, res) = o.expect("applied");
    (rev, KvResponse::from(res))
}

fn values(s: &Store, prefix: &str) -> Vec<(String, String)> {
    match KvResponse::from(s.read(&KvRequest::get_prefix(prefix).0).unwrap().1) {
        KvResponse::Get { entries, .. } => entries
            .into_iter()
            .map(|e| (String::from_utf8(e.key).unwrap(), String::from_utf8(e.value).unwrap()))
            .collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn revisions_versions_and_create_revisions_follow_etcd() {
    let mut s = Store::default();
    assert_eq!(answer(run(&mut s, 1, KvRequest::put("a", "1"))).0, 1);
    assert_eq!(answer(run(&mut s, 2, KvRequest::put("b", "1"))).0, 2);
    assert_eq!(answer(run(&mut s, 3, KvRequest::put("a", "2"))).0, 3);
    // A delete of nothing changes nothing and creates no revision.
    assert_eq!(answer(run(&mut s, 4, KvRequest::delete("zzz"))), (3, KvResponse::Delete { deleted: 0 }));
    let (rev, r) = answer(run(&mut s, 5, KvRequest::get("a")));
    assert_eq!(rev, 3);
    let KvResponse::Get { entries, more } = r else { panic!() };
    assert!(!more);
    assert_eq!(
        entries,
        vec![KvEntry {
            key: b"a".to_vec(),
            value: b"2".to_vec(),
            create_revision: 1,
            mod_revision: 3,
            version: 2
        }]
    );
    // Deleting and re-creating starts a new life: version 1, new create revision.
    assert_eq!(answer(run(&mut s, 6, KvRequest::delete_prefix(""))), (4, KvResponse::Delete { deleted: 2 }));
    run(&mut s, 7, KvRequest::put("a", "3")).unwrap();
    let KvResponse::Get { entries, .. } = answer(s.read(&KvRequest::get("a").0)).1 else { panic!() };
    assert_eq!((entries[0].create_revision, entries[0].version), (5, 1));
    assert_eq!(s.used(), 1 + 1 + KEY_OVERHEAD);
}

#[test]
fn a_transaction_runs_one_branch_atomically_under_one_revision() {
    let mut s = Store::default();
    let create = |key: &str, v: &str| {
        KvRequest::txn(
            [KvCompare::missing(key)],
            [KvRequest::put(key, v), KvRequest::put("log", key)],
            [KvRequest::get(key)],
        )
    };
    let (rev, r) = answer(run(&mut s, 1, create("lock", "me")));
    assert_eq!(rev, 1, "both puts share one revision");
    assert_eq!(r, KvResponse::Txn { succeeded: true, responses: vec![KvResponse::Put, KvResponse::Put] });
    let (rev, r) = answer(run(&mut s, 2, create("lock", "you")));
    assert_eq!(rev, 1, "the failure branch only read");
    let KvResponse::Txn { succeeded: false, responses } = r else { panic!("{r:?}") };
    let KvResponse::Get { entries, .. } = &responses[0] else { panic!() };
    assert_eq!(entries[0].value, b"me");
    // Every kind of comparison.
    let holds = |s: &mut Store, i: u64, c: KvCompare| match answer(run(s, i, KvRequest::txn([c], [], []))).1 {
        KvResponse::Txn { succeeded, .. } => succeeded,
        other => panic!("{other:?}"),
    };
    assert!(holds(&mut s, 3, KvCompare::value("lock", CompareOp::Equal, "me")));
    assert!(holds(&mut s, 4, KvCompare::value("lock", CompareOp::Greater, "ma")));
    assert!(holds(&mut s, 5, KvCompare::value("lock", CompareOp::Less, "mf")));
    assert!(
        !holds(&mut s, 6, KvCompare::value("nope", CompareOp::NotEqual, "x")),
        "missing key: value compare fails"
    );
    assert!(holds(&mut s, 7, KvCompare::version("lock", CompareOp::Equal, 1)));
    assert!(holds(&mut s, 8, KvCompare::create_revision("lock", CompareOp::Equal, 1)));
    assert!(holds(&mut s, 9, KvCompare::mod_revision("nope", CompareOp::Equal, 0)));
    assert!(holds(&mut s, 10, KvCompare::exists("log")));
}

#[test]
fn a_retry_gets_the_first_answer_and_is_not_applied_twice() {
    let mut s = Store::default();
    let c = client(9);
    let incr = |seq, ack, expect: &str, new: &str| Command {
        client: c,
        epoch: 0,
        seq,
        ack,
        op: KvRequest::txn([KvCompare::value("n", CompareOp::Equal, expect)], [KvRequest::put("n", new)], [])
            .0,
    };
    run(&mut s, 1, KvRequest::put("n", "0")).unwrap();
    let first = s.apply(2, incr(0, 0, "0", "1"));
    // The same request again (a retry through another server): same answer,
    // nothing applied.
    assert_eq!(s.apply(3, incr(0, 0, "0", "1")), first);
    assert_eq!(values(&s, "n"), vec![("n".into(), "1".into())]);
    assert_eq!(s.revision(), 2);
    // Once acknowledged, the answer is forgotten and a late retry is refused.
    s.apply(4, incr(1, 1, "1", "2")).unwrap();
    assert_eq!(s.apply(5, incr(0, 1, "0", "1")), Err(Fail::Stale));
    assert_eq!(values(&s, "n"), vec![("n".into(), "2".into())]);
}

#[test]
fn bounds_are_typed_errors_and_the_store_stays_within_its_budget() {
    let big = vec![b'x'; MAX_VALUE_LEN + 1];
    assert_eq!(
        KvRequest::put("k", big).check(),
        Err(KvError::TooLarge { what: "value", len: MAX_VALUE_LEN + 1, max: MAX_VALUE_LEN })
    );
    assert!(matches!(KvRequest::put("", "v").check(), Err(KvError::Invalid(_))));
    assert!(matches!(
        KvRequest::get(vec![0; MAX_KEY_LEN + 1]).check(),
        Err(KvError::TooLarge { what: "key", .. })
    ));
    let nested = KvRequest::txn([], [KvRequest::txn([], [], [])], []);
    assert!(matches!(nested.check(), Err(KvError::Invalid(_))));
    // Fill the store with 32 KiB values until it refuses.
    let mut s = Store::default();
    let mut i = 1;
    let err = loop {
        match run(&mut s, i, KvRequest::put(format!("k{i}"), vec![7u8; MAX_VALUE_LEN])) {
            Ok(_) => i += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(KvError::from(err), KvError::StoreFull { max: MAX_STORE_BYTES, .. }));
    assert!(s.used() <= MAX_STORE_BYTES);
    // Reads are cut at MAX_READ_LEN and say so.
    let KvResponse::Get { entries, more } = answer(s.read(&KvRequest::get_prefix("k").0)).1 else { panic!() };
    assert!(more);
    assert!(entries.iter().map(|e| e.value.len()).sum::<usize>() <= MAX_READ_LEN);
    // Deleting makes room again.
    run(&mut s, i + 1, KvRequest::delete_prefix("k")).unwrap();
    assert_eq!(s.used(), 0);
    // Every failure survives its wire form.
    for e in [
        KvError::TooLarge { what: "value", len: 5, max: 4 },
        KvError::Invalid("a put needs a non-empty key"),
        KvError::StoreFull { used: 1, max: 2 },
        KvError::Stale,
        KvError::Unavailable,
    ] {
        assert_eq!(KvError::from(Fail::from(&e)), e);
    }
}

#[test]
fn kept_answers_are_bounded() {
    let mut s = Store::default();
    // 5000 clients that never acknowledge: the least recently active are forgotten.
    for i in 0..5000u64 {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&i.to_be_bytes());
        let c = Identity::from_seed(Role::Peer, seed).id();
        s.apply(i + 1, Command { client: c, epoch: 0, seq: 0, ack: 0, op: KvRequest::get_prefix("").0 })
            .unwrap();
    }
    let snap = s.snapshot();
    assert!(snap.len() < MAX_STORE_BYTES, "{}", snap.len());
    assert_eq!(Store::restore(&snap).as_ref(), Some(&s));
}

fn arb_key() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![b"a".to_vec(), b"ab".to_vec(), b"b".to_vec(), b"ba".to_vec(), b"c".to_vec()])
}

fn arb_req() -> impl Strategy<Value = KvRequest> {
    let leaf = prop_oneof![
        (arb_key(), any::<u8>()).prop_map(|(k, v)| KvRequest::put(k, vec![v])),
        arb_key().prop_map(KvRequest::delete),
        arb_key().prop_map(KvRequest::delete_prefix),
        (arb_key(), 0u32..3).prop_map(|(k, l)| KvRequest::get_prefix(k).limit(l)),
    ];
    prop_oneof![
        leaf.clone(),
        (
            arb_key(),
            any::<u8>(),
            prop::collection::vec(leaf.clone(), 0..3),
            prop::collection::vec(leaf, 0..3)
        )
            .prop_map(|(k, v, s, f)| KvRequest::txn(
                [KvCompare::value(k, CompareOp::Equal, vec![v])],
                s,
                f
            )),
    ]
}

/// A plain model: key → value, applied op by op.
fn model_apply(m: &mut BTreeMap<Vec<u8>, Vec<u8>>, op: &Op) {
    let matches = |m: &BTreeMap<Vec<u8>, Vec<u8>>, r: &Range| -> Vec<Vec<u8>> {
        m.keys()
            .filter(|k| match r {
                Range::Key(x) => *k == x,
                Range::Prefix(p) => k.starts_with(p),
            })
            .cloned()
            .collect()
    };
    let leaf = |m: &mut BTreeMap<Vec<u8>, Vec<u8>>, o: &TxnOp| match o {
        TxnOp::Put { key, value, .. } => {
            m.insert(key.clone(), value.clone());
        }
        TxnOp::Delete { range } => {
            for k in matches(m, range) {
                m.remove(&k);
            }
        }
        TxnOp::Get { .. } => {}
    };
    match op {
        Op::Put { key, value, .. } => {
            leaf(m, &TxnOp::Put { key: key.clone(), value: value.clone(), session: 0 })
        }
        Op::Delete { range } => leaf(m, &TxnOp::Delete { range: range.clone() }),
        Op::Get { .. } | Op::SessionOpen { .. } | Op::SessionClose { .. } => {}
        Op::Txn { compare, success, failure } => {
            let ok = compare.iter().all(|c| match &c.target {
                Target::Value(v) => m.get(&c.key) == Some(v),
                _ => unreachable!(),
            });
            for o in if ok { success } else { failure } {
                leaf(m, o);
            }
        }
    }
}

proptest! {
    #[test]
    fn the_store_matches_a_model_and_its_snapshot(reqs in prop::collection::vec(arb_req(), 0..40)) {
        let mut s = Store::default();
        let mut m = BTreeMap::new();
        let mut last_rev = 0;
        for (i, r) in reqs.into_iter().enumerate() {
            model_apply(&mut m, &r.0);
            let (rev, res) = run(&mut s, i as u64 + 1, r.clone()).unwrap();
            prop_assert!(rev >= last_rev && rev <= last_rev + 1);
            last_rev = rev;
            if let (Op::Get { limit, .. }, Res::Leaf(super::machine::Leaf::Get { entries, .. })) = (&r.0, &res) {
                prop_assert!(*limit == 0 || entries.len() <= *limit as usize);
            }
        }
        let all: BTreeMap<Vec<u8>, Vec<u8>> = match KvResponse::from(s.read(&KvRequest::get_prefix("").0).unwrap().1) {
            KvResponse::Get { entries, .. } => entries.into_iter().map(|e| (e.key, e.value)).collect(),
            _ => unreachable!(),
        };
        prop_assert_eq!(&all, &m);
        let restored = Store::restore(&s.snapshot()).unwrap();
        prop_assert_eq!(&restored, &s);
    }
}

#[test]
fn watches_read_whole_revisions_in_order_until_compacted() {
    let mut s = Store::default();
    run(&mut s, 1, KvRequest::put("a/1", "x")).unwrap();
    run(&mut s, 2, KvRequest::put("b/1", "y")).unwrap();
    run(&mut s, 3, KvRequest::txn([], [KvRequest::put("a/2", "z"), KvRequest::delete("a/1")], [])).unwrap();
    let (changes, next) = s.changes_since(1, b"a/", usize::MAX).unwrap();
    let got: Vec<(u64, &[u8], bool)> =
        changes.iter().map(|c| (c.rev, c.key.as_slice(), c.value.is_some())).collect();
    assert_eq!(got, vec![(1, &b"a/1"[..], true), (3, &b"a/2"[..], true), (3, &b"a/1"[..], false)]);
    assert_eq!(next, 4);
    // A small batch stops at a revision boundary, never inside one.
    let (changes, next) = s.changes_since(2, b"", 1).unwrap();
    assert_eq!((changes.len(), next), (1, 3));
    let (changes, next) = s.changes_since(3, b"", 1).unwrap();
    assert_eq!((changes.len(), next), (2, 4));
    // Far more changes than are kept: the oldest are forgotten, whole revisions at a time.
    for i in 0..machine::MAX_HISTORY_CHANGES as u64 {
        run(&mut s, 10 + i, KvRequest::put("c", i.to_be_bytes())).unwrap();
    }
    let oldest = s.changes_since(1, b"", usize::MAX).unwrap_err();
    assert!(oldest > 3);
    assert!(s.changes_since(oldest, b"", 10).is_ok());
    let restored = Store::restore(&s.snapshot()).unwrap();
    assert_eq!(restored.changes_since(oldest, b"", 100), s.changes_since(oldest, b"", 100));
    assert_eq!(restored.changes_since(1, b"", 100), Err(oldest));
}

#[test]
fn sessions_own_their_keys_and_take_them_when_they_end() {
    let mut s = Store::default();
    let (me, other) = (client(1), client(2));
    let cmd = |client, seq, req: KvRequest| Command { client, epoch: 0, seq, ack: 0, op: req.0 };
    let (_, res) =
        s.apply(1, cmd(me, 1, KvRequest::session_open(std::time::Duration::from_secs(5)))).unwrap();
    let KvResponse::SessionOpened { session } = KvResponse::from(res) else { panic!() };
    s.apply(2, cmd(me, 2, KvRequest::put("svc/a", "1").with_session(session))).unwrap();
    let txn = KvRequest::txn([], [KvRequest::put("svc/b", "2")], []).with_session(session);
    s.apply(3, cmd(me, 3, txn)).unwrap();
    s.apply(4, cmd(me, 4, KvRequest::put("plain", "3"))).unwrap();
    // Nobody else can bind to it or close it.
    let steal = s.apply(5, cmd(other, 1, KvRequest::put("x", "y").with_session(session)));
    assert!(matches!(steal.map_err(KvError::from), Err(KvError::Invalid(_))));
    assert!(s.apply(6, cmd(other, 2, KvRequest::session_close(session))).is_err());
    // A key re-put without the session is no longer bound to it.
    s.apply(7, cmd(me, 5, KvRequest::put("svc/b", "free"))).unwrap();
    let image = s.snapshot();
    // Expiry (committed by the leader) deletes the bound keys under one revision.
    let before = s.revision();
    s.expire(8, session);
    assert_eq!(s.revision(), before + 1);
    assert_eq!(values(&s, ""), vec![("plain".into(), "3".into()), ("svc/b".into(), "free".into())]);
    let (changes, _) = s.changes_since(before + 1, b"", usize::MAX).unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].key.as_slice(), changes[0].value.is_none()), (&b"svc/a"[..], true));
    assert_eq!(s.sessions().count(), 0);
    // The same from the snapshot taken before, closed by its owner instead.
    let mut r = Store::restore(&image).unwrap();
    assert_eq!(r.sessions().count(), 1);
    let (_, res) = r.apply(8, cmd(me, 6, KvRequest::session_close(session))).unwrap();
    assert_eq!(KvResponse::from(res), KvResponse::SessionClosed { deleted: 1 });
    assert_eq!(values(&r, ""), values(&s, ""));
    // TTL bounds.
    assert!(matches!(
        KvRequest::session_open(std::time::Duration::from_millis(10)).check(),
        Err(KvError::Invalid(_))
    ));
}

#[test]
fn a_new_run_of_a_peer_starts_afresh_and_ends_its_old_runs_sessions() {
    let mut s = Store::default();
    let me = client(1);
    let cmd = |epoch, seq, req: KvRequest| Command { client: me, epoch, seq, ack: seq, op: req.0 };
    let (_, res) = s.apply(1, cmd(7, 0, KvRequest::session_open(std::time::Duration::from_secs(5)))).unwrap();
    let KvResponse::SessionOpened { session } = KvResponse::from(res) else { panic!() };
    s.apply(2, cmd(7, 1, KvRequest::put("lock/a", "held").with_session(session))).unwrap();
    s.apply(3, cmd(7, 5, KvRequest::put("plain", "1"))).unwrap();
    // The peer restarts: its sequence numbers begin at 0 again. Run 8's
    // seq 0 is neither stale nor run 7's kept answer, and run 7's session
    // ends with its keys (reported as expired).
    let before = s.revision();
    let (_, res) = s.apply(4, cmd(8, 0, KvRequest::get("plain"))).unwrap();
    assert!(matches!(KvResponse::from(res), KvResponse::Get { .. }));
    assert_eq!(s.sessions().count(), 0);
    assert_eq!(values(&s, ""), vec![("plain".into(), "1".into())]);
    let (changes, _) = s.changes_since(before + 1, b"", usize::MAX).unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(crate::KvEvent::from(changes[0].clone()).kind, crate::KvEventKind::Expired);
    // Run 8 cannot bind to run 7's session either.
    let bind = s.apply(5, cmd(8, 1, KvRequest::put("x", "y").with_session(session)));
    assert!(bind.is_err());
}
