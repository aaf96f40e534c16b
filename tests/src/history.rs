//! A linearizability checker for key-value histories (Wing & Gong's search
//! with memoised states, as in Knossos/Porcupine), checked key by key:
//! operations on different keys commute, so a history is linearizable iff
//! each key's sub-history is (Herlihy & Wing's locality).
//!
//! Every operation has an invocation time and, if it completed, a response
//! time and result. An operation without a response (a timeout: unknown
//! outcome) may have taken effect at any moment after its invocation, or
//! never.

use std::collections::{BTreeMap, HashSet};

/// What was asked of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOp {
    /// Read the key.
    Get,
    /// Write a value.
    Put(Vec<u8>),
    /// Delete the key.
    Delete,
    /// If the value equals `expect` (`None`: the key is missing), write `new`.
    Cas {
        /// The expected value.
        expect: Option<Vec<u8>>,
        /// The new value.
        new: Vec<u8>,
    },
}

/// What an operation answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvRet {
    /// A read's value (`None`: missing).
    Value(Option<Vec<u8>>),
    /// A put or delete was applied.
    Done,
    /// A compare-and-set: whether it held.
    Swapped(bool),
}

/// One operation of a history.
#[derive(Debug, Clone)]
pub struct Record {
    /// The key.
    pub key: Vec<u8>,
    /// The operation.
    pub op: KvOp,
    /// When it was invoked (any monotonic unit).
    pub invoked: u64,
    /// When it answered and what, or `None` for an unknown outcome.
    pub returned: Option<(u64, KvRet)>,
}

fn step(state: &Option<Vec<u8>>, op: &KvOp) -> (Option<Vec<u8>>, KvRet) {
    match op {
        KvOp::Get => (state.clone(), KvRet::Value(state.clone())),
        KvOp::Put(v) => (Some(v.clone()), KvRet::Done),
        KvOp::Delete => (None, KvRet::Done),
        KvOp::Cas { expect, new } => {
            if state == expect {
                (Some(new.clone()), KvRet::Swapped(true))
            } else {
                (state.clone(), KvRet::Swapped(false))
            }
        }
    }
}

/// Checks a whole history; on failure names the first key whose
/// sub-history has no linearization.
pub fn check(history: &[Record]) -> Result<(), String> {
    let mut by_key: BTreeMap<&[u8], Vec<&Record>> = BTreeMap::new();
    for r in history {
        by_key.entry(&r.key).or_default().push(r);
    }
    for (key, ops) in by_key {
        if !check_key(&ops) {
            let mut lines: Vec<String> = ops
                .iter()
                .map(|r| {
                    format!(
                        "  {:>8} .. {:>8}  {:?} -> {:?}",
                        r.invoked,
                        r.returned.as_ref().map_or(u64::MAX, |x| x.0),
                        r.op,
                        r.returned.as_ref().map(|x| &x.1)
                    )
                })
                .collect();
            lines.sort();
            return Err(format!(
                "key {:?} is not linearizable:\n{}",
                String::from_utf8_lossy(key),
                lines.join("\n")
            ));
        }
    }
    Ok(())
}

/// The search for one key, starting from a missing key.
fn check_key(ops: &[&Record]) -> bool {
    assert!(ops.len() <= 128, "the checker handles at most 128 operations per key");
    let n = ops.len();
    let end = |i: usize| ops[i].returned.as_ref().map_or(u64::MAX, |r| r.0);
    let must: u128 = (0..n).filter(|i| ops[*i].returned.is_some()).fold(0, |m, i| m | 1 << i);
    let mut seen: HashSet<(u128, Option<Vec<u8>>)> = HashSet::new();
    // Depth-first: (linearized set, state).
    let mut stack: Vec<(u128, Option<Vec<u8>>)> = vec![(0, None)];
    while let Some((done, state)) = stack.pop() {
        if done & must == must {
            return true;
        }
        if !seen.insert((done, state.clone())) {
            continue;
        }
        // An operation can go next only if it was invoked before every
        // pending completed operation returned.
        let horizon = (0..n).filter(|i| done & (1 << i) == 0).map(end).min().unwrap_or(u64::MAX);
        for (i, op) in ops.iter().enumerate() {
            if done & (1 << i) != 0 || op.invoked > horizon {
                continue;
            }
            let (next, ret) = step(&state, &op.op);
            let ok = match &op.returned {
                Some((_, r)) => *r == ret,
                None => true,
            };
            if ok {
                stack.push((done | 1 << i, next));
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(op: KvOp, invoked: u64, ret: Option<(u64, KvRet)>) -> Record {
        Record { key: b"k".to_vec(), op, invoked, returned: ret }
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_caught() {
        let h = [
            rec(KvOp::Put(b"1".to_vec()), 0, Some((10, KvRet::Done))),
            rec(KvOp::Get, 20, Some((30, KvRet::Value(None)))),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        let h = [
            rec(KvOp::Put(b"1".to_vec()), 0, Some((50, KvRet::Done))),
            rec(KvOp::Get, 10, Some((20, KvRet::Value(Some(b"1".to_vec()))))),
            rec(KvOp::Get, 30, Some((40, KvRet::Value(Some(b"1".to_vec()))))),
        ];
        assert!(check(&h).is_ok());
        // But once seen, a value cannot be unseen.
        let h = [
            rec(KvOp::Put(b"1".to_vec()), 0, Some((50, KvRet::Done))),
            rec(KvOp::Get, 10, Some((20, KvRet::Value(Some(b"1".to_vec()))))),
            rec(KvOp::Get, 30, Some((40, KvRet::Value(None)))),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn two_winning_compare_and_sets_from_the_same_value_are_caught() {
        let cas = |new: &str| KvOp::Cas { expect: None, new: new.into() };
        let h = [
            rec(cas("a"), 0, Some((10, KvRet::Swapped(true)))),
            rec(cas("b"), 5, Some((15, KvRet::Swapped(true)))),
        ];
        assert!(check(&h).is_err());
        // An unknown outcome may or may not have happened.
        let h = [
            rec(cas("a"), 0, None),
            rec(KvOp::Get, 20, Some((30, KvRet::Value(Some(b"a".to_vec()))))),
            rec(cas("b"), 40, Some((50, KvRet::Swapped(false)))),
        ];
        assert!(check(&h).is_ok());
    }
}
