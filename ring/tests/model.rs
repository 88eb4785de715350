//! Property test: the ring against an exact model of its byte accounting.
//!
//! Small capacities make the ring wrap constantly; record sizes include 0 and
//! the maximum; batches, abandoned reservations and bounded pops interleave.
//! The model predicts every `Full`, every padding frame and every delivered
//! record, so any drift in wrap or batch edge handling fails the test.
#![cfg(not(loom))]

use proptest::prelude::*;
use rgpu_ring::{heap_ring, max_record_bound, PushError};
use std::collections::VecDeque;

#[derive(Debug, Clone)]
enum Op {
    Push(usize),
    Batch(Vec<usize>),
    Reserve { len: usize, commit: bool },
    Pop(usize),
}

fn len_strategy() -> impl Strategy<Value = usize> {
    // `usize::MAX` stands for "the maximum record size".
    prop_oneof![Just(0usize), Just(usize::MAX), 0..120usize, 1..8usize]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => len_strategy().prop_map(Op::Push),
        2 => prop::collection::vec(len_strategy(), 1..10).prop_map(Op::Batch),
        1 => (len_strategy(), any::<bool>()).prop_map(|(len, commit)| Op::Reserve { len, commit }),
        3 => (1..8usize).prop_map(Op::Pop),
    ]
}

const fn align(n: usize, a: usize) -> usize {
    (n + a - 1) & !(a - 1)
}

fn frame_len(lens: &[usize]) -> usize {
    align(
        16 + lens.iter().map(|l| 8 + align(*l, 8)).sum::<usize>(),
        16,
    )
}

/// Exact model: frames (including padding) in reservation order.
struct Model {
    cap: u64,
    reserve: u64,
    head: u64,
    frames: VecDeque<(u64, Vec<Vec<u8>>)>,
}

impl Model {
    /// Returns whether a frame of `len` fits, and records it (with padding) if so.
    fn reserve(&mut self, len: usize, records: Vec<Vec<u8>>) -> bool {
        let off = self.reserve % self.cap;
        let pad = if off + len as u64 > self.cap {
            self.cap - off
        } else {
            0
        };
        let end = self.reserve + pad + len as u64;
        if end - self.head > self.cap {
            return false;
        }
        if pad > 0 {
            self.frames.push_back((self.reserve + pad, Vec::new()));
        }
        self.frames.push_back((end, records));
        self.reserve = end;
        true
    }

    fn pop(&mut self, max: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some((end, recs)) = self.frames.pop_front() else {
                break;
            };
            out.extend(recs);
            self.head = end;
        }
        out
    }
}

fn run(cap: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let max = max_record_bound(cap);
    let (p, mut c) = heap_ring(cap, max).unwrap();
    let mut m = Model {
        cap: cap as u64,
        reserve: 0,
        head: 0,
        frames: VecDeque::new(),
    };
    let mut seq = 0u8;
    let mut make = |len: usize| -> Vec<u8> {
        seq = seq.wrapping_add(1);
        (0..len).map(|i| seq.wrapping_add(i as u8)).collect()
    };
    let fix = |l: usize| if l == usize::MAX { max } else { l.min(max) };
    for op in ops {
        match op {
            Op::Push(len) => {
                let rec = make(fix(len));
                let expect_ok = m.reserve(frame_len(&[rec.len()]), vec![rec.clone()]);
                let r = p.try_push(&rec);
                prop_assert_eq!(r.is_ok(), expect_ok, "push {} -> {:?}", rec.len(), r);
                if !expect_ok {
                    prop_assert!(matches!(r, Err(PushError::Full { .. })), "{:?}", r);
                }
            }
            Op::Batch(lens) => {
                let recs: Vec<Vec<u8>> = lens.into_iter().map(|l| make(fix(l))).collect();
                let lens: Vec<usize> = recs.iter().map(Vec::len).collect();
                let refs: Vec<&[u8]> = recs.iter().map(Vec::as_slice).collect();
                let flen = frame_len(&lens);
                let r = p.try_push_batch(&refs);
                if flen > cap / 2 {
                    prop_assert!(matches!(r, Err(PushError::BatchTooLarge { .. })), "{:?}", r);
                } else {
                    let expect_ok = m.reserve(flen, recs.clone());
                    prop_assert_eq!(r.is_ok(), expect_ok, "batch {:?} -> {:?}", lens, r);
                }
            }
            Op::Reserve { len, commit } => {
                let rec = make(fix(len));
                let stored = if commit {
                    vec![rec.clone()]
                } else {
                    Vec::new()
                };
                let expect_ok = m.reserve(frame_len(&[rec.len()]), stored);
                match p.try_reserve(rec.len()) {
                    Ok(mut res) => {
                        prop_assert!(expect_ok);
                        res.buf_mut().copy_from_slice(&rec);
                        if commit {
                            res.commit();
                        }
                    }
                    Err(e) => {
                        prop_assert!(!expect_ok, "reserve failed: {:?}", e);
                    }
                }
            }
            Op::Pop(max_records) => {
                c.set_pop_records_max(max_records);
                let mut got = Vec::new();
                let n = c.try_pop_batch(|r| got.push(r.to_vec())).unwrap();
                let want = m.pop(max_records);
                prop_assert_eq!(n, want.len());
                prop_assert_eq!(got, want);
            }
        }
    }
    // Drain: everything the model holds must come out, in order.
    c.set_pop_records_max(usize::MAX);
    let mut got = Vec::new();
    while c.try_pop_batch(|r| got.push(r.to_vec())).unwrap() > 0 {}
    prop_assert_eq!(got, m.pop(usize::MAX));
    prop_assert_eq!(c.position(), m.reserve);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(debug_assertions) { 128 } else { 512 }))]

    #[test]
    fn ring_matches_model(
        cap in prop_oneof![Just(256usize), Just(512), Just(1024)],
        ops in prop::collection::vec(op_strategy(), 1..300),
    ) {
        run(cap, ops)?;
    }
}
