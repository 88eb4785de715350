//! State-machine tests driven through the deterministic simulator, each over
//! many seeds (`RGPU_SIM_SEED=<n>` replays one).

#![cfg(feature = "sim")]

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rgpu_proto::sim::{default_seed_count, run_seeds, ClientRecord, Gen};
use rgpu_proto::*;

const STEPS: usize = 200_000;

fn connected(seed: u64, scfg: ServerConfig, hold: bool) -> (sim::Harness, Rc<RefCell<Seen>>) {
    let net = net_cfg(seed);
    let framing = net.framing;
    let seen = Rc::new(RefCell::new(Seen::default()));
    let mut h = harness(
        seed,
        client_cfg(framing),
        ServerConfig { framing, ..scfg },
        net,
        recording_app(seen.clone(), hold, seed),
    );
    assert!(h.handshake(1000), "handshake did not finish");
    assert!(
        h.client.is_open(),
        "client not open: {:?}",
        h.client.close_reason()
    );
    (h, seen)
}

#[test]
fn handshake_ok() {
    run_seeds("handshake_ok", 1, default_seed_count(), |seed| {
        let (h, seen) = connected(seed, server_cfg(Framing::Stream), false);
        assert!(seen.borrow().connected);
        assert!(h.server.is_open());
        assert_eq!(h.client_log, vec![ClientRecord::HandshakeDone]);
        let (calls, bytes) = h.client.credit();
        assert_eq!(
            (calls, bytes),
            (1024, 4 << 20),
            "initial credit from server config"
        );
    });
}

#[test]
fn bad_token_is_rejected_with_error_frame() {
    run_seeds("bad_token", 2, default_seed_count(), |seed| {
        let net = net_cfg(seed);
        let seen = Rc::new(RefCell::new(Seen::default()));
        let mut ccfg = client_cfg(net.framing);
        ccfg.token[seed as usize % 32] ^= 1;
        let scfg = ServerConfig {
            framing: net.framing,
            ..server_cfg(net.framing)
        };
        let mut h = harness(
            seed,
            ccfg,
            scfg,
            net,
            recording_app(seen.clone(), false, seed),
        );
        h.run_until(1000, |h| h.client.close_reason().is_some());
        assert_eq!(h.server.close_reason(), Some(ConnError::AuthFailed));
        assert!(!seen.borrow().connected);
        assert_eq!(
            h.client.close_reason(),
            Some(ConnError::Rejected {
                reason: control::CloseReason::AuthFailed as u32
            })
        );
        assert_eq!(
            h.client.submit(h.now, &Nop {}, StreamHandle(0)),
            Err(SubmitError::Closed(h.client.close_reason().unwrap()))
        );
    });
}

#[test]
fn nothing_accepted_before_handshake() {
    // A call frame where the handshake should be: refused, not delivered.
    let mut s = Server::new(server_cfg(Framing::Stream), Timestamp::ZERO);
    let mut frame = Vec::new();
    frame::write_frame(&mut frame, Nop::CODE, 0, 0, 0, |_| {}).unwrap();
    let mut delivered = 0;
    let err = s
        .handle_input(Timestamp::ZERO, &frame, |ev, _| {
            if matches!(ev, ServerEvent::Call { .. }) {
                delivered += 1;
            }
        })
        .unwrap_err();
    assert_eq!(delivered, 0);
    assert!(matches!(err, ConnError::UnexpectedFrame { kind, .. } if kind == Nop::CODE));
    let mut out = Vec::new();
    assert!(
        s.poll_transmit(&mut out).is_some(),
        "rejection frame queued"
    );
    let h = header::Header::parse(&out).unwrap();
    assert_eq!(h.kind, control::KIND_HANDSHAKE_REPLY);
}

#[test]
fn async_calls_are_batched() {
    run_seeds("batched", 3, default_seed_count(), |seed| {
        let (mut h, seen) = connected(seed, server_cfg(Framing::Stream), false);
        let n = 1000u64;
        let payload = [7u8; 28];
        for i in 0..n {
            let stream = StreamHandle(i % 3);
            h.client
                .submit(
                    h.now,
                    &AsyncNop {
                        payload: Blob(&payload),
                    },
                    stream,
                )
                .expect("within credit");
        }
        // Count batches the client hands out.
        let mut batches = 0;
        let mut buf = Vec::new();
        while h.client.poll_transmit(&mut buf).is_some() {
            batches += 1;
            h.net.send(h.now, sim::Dir::ToServer, &buf);
            buf.clear();
        }
        // The tail batch is lingering; its deadline is surfaced.
        assert!(h.client.poll_timeout().is_some());
        h.run_until(STEPS, |_| seen.borrow().calls.len() == n as usize);
        h.client.flush();
        while h.client.poll_transmit(&mut buf).is_some() {
            batches += 1;
            buf.clear();
        }
        let s = seen.borrow();
        assert_eq!(s.calls.len(), n as usize);
        // max_batch_calls = 256 → 4 batches (the linger timer may have sealed
        // the tail in the run above, which the harness transmitted itself).
        assert!(batches <= 4, "{batches} batches for {n} calls");
        for (i, c) in s.calls.iter().enumerate() {
            assert_eq!(
                c.2,
                StreamHandle(i as u64 % 3),
                "stream carried in header key"
            );
            assert_eq!(c.1, CallClass::Async);
        }
        assert!(s.calls.windows(2).all(|w| w[0].0 < w[1].0), "in order");
    });
}

#[test]
fn linger_zero_flushes_every_call_and_sync_flushes_batch() {
    let seed = 9;
    let seen = Rc::new(RefCell::new(Seen::default()));
    let net = sim::NetConfig {
        framing: Framing::Message,
        ..sim::NetConfig::default()
    };
    let mut ccfg = client_cfg(Framing::Message);
    ccfg.linger_ns = 1_000_000_000;
    let mut h = harness(
        seed,
        ccfg,
        server_cfg(Framing::Message),
        net,
        recording_app(seen.clone(), false, seed),
    );
    assert!(h.handshake(100));
    let p = [0u8; 4];
    h.client
        .submit(h.now, &AsyncNop { payload: Blob(&p) }, StreamHandle(1))
        .unwrap();
    h.client
        .submit(h.now, &AsyncNop { payload: Blob(&p) }, StreamHandle(1))
        .unwrap();
    let mut buf = Vec::new();
    assert_eq!(h.client.poll_transmit(&mut buf), None, "async calls linger");
    h.client.submit(h.now, &Nop {}, StreamHandle(1)).unwrap();
    let n = h.client.poll_transmit(&mut buf).expect("sync call flushes");
    assert_eq!(
        n,
        3 * HEADER_BYTES + 2 * 8,
        "one batch: two async calls then the sync call"
    );
    assert_eq!(h.client.poll_transmit(&mut buf), None);
}

#[test]
fn credit_burst_100x_window_never_overruns_server() {
    run_seeds("credit_burst", 4, default_seed_count() / 2, |seed| {
        let window = 8u32;
        let scfg = ServerConfig {
            window_calls: window,
            window_bytes: 64 * window,
            credit_return_calls: 3,
            ..server_cfg(Framing::Stream)
        };
        let (mut h, seen) = connected(seed, scfg, true);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let total = 100 * window as usize;
        let payload = [1u8; 28];
        let (mut sent, mut backpressured) = (0usize, 0usize);
        let mut steps = 0;
        while seen.borrow().calls.len() < total {
            steps += 1;
            assert!(steps < STEPS, "stalled at {sent} sent");
            if sent < total {
                match h.client.submit(
                    h.now,
                    &AsyncNop {
                        payload: Blob(&payload),
                    },
                    StreamHandle(0),
                ) {
                    Ok(_) => {
                        sent += 1;
                        continue;
                    }
                    Err(SubmitError::Backpressure { .. }) => backpressured += 1,
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            // The worker completes a random part of what it holds.
            let held = std::mem::take(&mut seen.borrow_mut().held);
            let k = rng.gen_range(0..=held.len());
            for id in &held[..k] {
                h.server.complete_async(*id, Ok(())).unwrap();
            }
            seen.borrow_mut().held.extend_from_slice(&held[k..]);
            if !h.step() {
                h.client.flush();
            }
        }
        let s = seen.borrow();
        assert!(backpressured > 0, "burst must hit backpressure");
        assert!(s.max_outstanding <= window as usize, "server queue overrun");
        assert!(h.server.is_open() && h.client.is_open());
    });
}

#[test]
fn deferred_and_sticky_errors_surface_at_next_sync() {
    run_seeds("deferred_sticky", 5, default_seed_count(), |seed| {
        let (mut h, seen) = connected(seed, server_cfg(Framing::Stream), true);
        let p = [0u8; 8];
        let submit_async = |h: &mut sim::Harness| {
            h.client
                .submit(h.now, &AsyncNop { payload: Blob(&p) }, StreamHandle(0))
                .unwrap()
        };
        let sync_result =
            |h: &mut sim::Harness, seen: &Rc<RefCell<Seen>>, fail: Option<CudaError>| {
                // Complete every held async call (first one with `fail`), then sync.
                h.run_until(STEPS, |_| !seen.borrow().held.is_empty());
                let held = std::mem::take(&mut seen.borrow_mut().held);
                for (i, id) in held.iter().enumerate() {
                    let r = if i == 0 {
                        fail.map_or(Ok(()), Err)
                    } else {
                        Ok(())
                    };
                    h.server.complete_async(*id, r).unwrap();
                }
                let id = h.client.submit(h.now, &Nop {}, StreamHandle(0)).unwrap();
                h.run_until(STEPS, |h| {
                    h.client_log
                        .iter()
                        .any(|r| matches!(r, ClientRecord::Reply { id: i, .. } if *i == id))
                });
                h.client_log
                    .iter()
                    .find_map(|r| match r {
                        ClientRecord::Reply { id: i, result } if *i == id => Some(result.clone()),
                        _ => None,
                    })
                    .expect("sync reply")
            };
        submit_async(&mut h);
        submit_async(&mut h);
        // A plain async failure is deferred to the next sync call only.
        let r = sync_result(&mut h, &seen, Some(CudaError::OUT_OF_MEMORY));
        assert_eq!(r, Err(CudaError::OUT_OF_MEMORY));
        submit_async(&mut h);
        assert_eq!(
            sync_result(&mut h, &seen, None),
            Ok(vec![]),
            "deferred error consumed"
        );
        // A sticky failure poisons every later call.
        submit_async(&mut h);
        let r = sync_result(&mut h, &seen, Some(CudaError::ILLEGAL_ADDRESS));
        assert_eq!(r, Err(CudaError::ILLEGAL_ADDRESS));
        assert_eq!(h.client.sticky_error(), Some(CudaError::ILLEGAL_ADDRESS));
        assert_eq!(
            h.client.submit(h.now, &Nop {}, StreamHandle(0)),
            Err(SubmitError::Sticky(CudaError::ILLEGAL_ADDRESS))
        );
        assert_eq!(
            h.server.responder().sticky_error(),
            Some(CudaError::ILLEGAL_ADDRESS)
        );
    });
}

#[test]
fn device_queries_leave_deferred_errors_for_the_app() {
    run_seeds("query_keeps_deferred", 5, default_seed_count(), |seed| {
        let (mut h, seen) = connected(seed, server_cfg(Framing::Stream), true);
        let p = [0u8; 8];
        h.client
            .submit(h.now, &AsyncNop { payload: Blob(&p) }, StreamHandle(0))
            .unwrap();
        h.run_until(STEPS, |_| !seen.borrow().held.is_empty());
        let held = std::mem::take(&mut seen.borrow_mut().held);
        assert_eq!(held.len(), 1);
        h.server
            .complete_async(held[0], Err(CudaError::OUT_OF_MEMORY))
            .unwrap();
        let sync = |h: &mut sim::Harness, call: &Call<'_>| {
            let id = h.client.submit_call(h.now, call, StreamHandle(0)).unwrap();
            h.run_until(STEPS, |h| {
                h.client_log
                    .iter()
                    .any(|r| matches!(r, ClientRecord::Reply { id: i, .. } if *i == id))
            });
            h.client_log
                .iter()
                .find_map(|r| match r {
                    ClientRecord::Reply { id: i, result } if *i == id => Some(result.clone()),
                    _ => None,
                })
                .expect("sync reply")
        };
        // A device query (what NVML asks on the app's connection) answers
        // for itself; the async failure is still the app's to see.
        let q = sync(
            &mut h,
            &Call::DeviceGetAttribute(DeviceGetAttribute {
                device: 0,
                attribute: 16,
            }),
        );
        assert!(q.is_ok(), "device query took the deferred error: {q:?}");
        assert_eq!(
            sync(&mut h, &Call::Nop(Nop {})),
            Err(CudaError::OUT_OF_MEMORY)
        );
        assert!(
            sync(&mut h, &Call::Nop(Nop {})).is_ok(),
            "deferred error consumed once"
        );
    });
}

#[test]
fn server_answers_sticky_without_delivering() {
    // Drive a server directly: after a sticky async failure, later sync calls
    // are answered with the sticky code and never reach the application.
    let (mut c, mut s) = fuzzing::connected_pair(Framing::Stream);
    let now = Timestamp(1);
    let mut wire = Vec::new();
    c.submit(
        now,
        &EventRecord {
            event: EventHandle(1),
        },
        StreamHandle(0),
    )
    .unwrap();
    c.flush();
    while c.poll_transmit(&mut wire).is_some() {}
    s.handle_input(now, &wire, |ev, r| {
        if let ServerEvent::Call { id, .. } = ev {
            r.complete_async(id, Err(CudaError::LAUNCH_FAILED)).unwrap();
        }
    })
    .unwrap();
    // Hand-encode a sync call so the client's own sticky check is bypassed.
    wire.clear();
    frame::write_frame(&mut wire, CtxSynchronize::CODE, 0, 2, 0, |_| {}).unwrap();
    let mut delivered = 0;
    s.handle_input(now, &wire, |_, _| delivered += 1).unwrap();
    assert_eq!(delivered, 0);
    let mut out = Vec::new();
    s.poll_transmit(&mut out).unwrap();
    let h = header::Header::parse(&out).unwrap();
    assert!(h.is_reply());
    let (status, _, _) = control::split_reply(h.kind, &out[HEADER_BYTES..]).unwrap();
    assert_eq!(status, CudaError::LAUNCH_FAILED.0);
}

#[test]
fn sequencing_violations_close_the_connection() {
    let (mut c, mut s) = fuzzing::connected_pair(Framing::Stream);
    let now = Timestamp(1);
    let mut wire = Vec::new();
    // Next expected client seq is 1 (handshake was 0). Send 1, then 1 again.
    for seq in [1u64, 1] {
        frame::write_frame(&mut wire, Nop::CODE, 0, seq, 0, |_| {}).unwrap();
    }
    let err = s.handle_input(now, &wire, |_, _| {}).unwrap_err();
    assert_eq!(
        err,
        ConnError::Sequence {
            expected: 2,
            got: 1
        }
    );
    assert_eq!(
        s.handle_input(now, &[], |_, _| {}),
        Err(err),
        "stays closed"
    );
    // Gap on the client side.
    wire.clear();
    frame::write_frame(&mut wire, control::KIND_CREDIT, 0, 5, 0, |b| {
        control::CreditGrant::default().encode(b)
    })
    .unwrap();
    let err = c.handle_input(now, &wire, |_| {}).unwrap_err();
    assert_eq!(
        err,
        ConnError::Sequence {
            expected: 1,
            got: 5
        }
    );
}

#[test]
fn reordering_is_detected_never_misdelivered() {
    let mut detected = 0;
    run_seeds("reorder", 6, default_seed_count(), |seed| {
        let mut net = net_cfg(seed);
        net.framing = Framing::Message;
        net.reorder_per_mille = 300;
        let seen = Rc::new(RefCell::new(Seen::default()));
        let mut ccfg = client_cfg(Framing::Message);
        ccfg.linger_ns = 0;
        let mut h = harness(
            seed,
            ccfg,
            server_cfg(Framing::Message),
            net,
            recording_app(seen.clone(), false, seed),
        );
        h.handshake(1000);
        let p = [3u8; 16];
        for _ in 0..50 {
            if h.client
                .submit(h.now, &AsyncNop { payload: Blob(&p) }, StreamHandle(0))
                .is_err()
            {
                break;
            }
            h.transmit();
        }
        h.run_until(STEPS, |_| false);
        let s = seen.borrow();
        // Whatever got through was in order; a reorder that happened closed
        // the connection with a sequence error.
        assert!(
            s.calls.windows(2).all(|w| w[0].0 .0 + 1 == w[1].0 .0),
            "misdelivered"
        );
        match (h.server.close_reason(), h.client.close_reason()) {
            (Some(ConnError::Sequence { .. }), _) => detected += 1,
            (Some(ConnError::PeerClosed { .. }), Some(ConnError::Sequence { .. })) => detected += 1,
            (None, None) => assert_eq!(s.calls.len(), 50, "calls lost without an error"),
            other => panic!("unexpected close: {other:?}"),
        }
    });
    if std::env::var(sim::SEED_ENV).is_err() {
        assert!(
            detected > 0,
            "30% reordering never produced a sequence error"
        );
    }
}

#[test]
fn peer_loss_aborts_every_pending_call() {
    run_seeds("peer_loss", 7, default_seed_count(), |seed| {
        let (mut h, seen) = connected(seed, server_cfg(Framing::Stream), true);
        // The worker never answers sync calls in this test.
        *seen.borrow_mut() = Seen::default();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = rng.gen_range(1..20);
        let mut ids = Vec::new();
        for _ in 0..n {
            // Stream query is sync; the recording app would answer it, so cut
            // the link before any of them can reach the server.
            ids.push(
                h.client
                    .submit(h.now, &StreamQuery {}, StreamHandle(0))
                    .unwrap(),
            );
        }
        h.net.disconnect();
        h.run_until(STEPS, |h| h.client.close_reason().is_some());
        assert_eq!(h.client.close_reason(), Some(ConnError::TransportClosed));
        let aborted: Vec<CallId> = h
            .client_log
            .iter()
            .filter_map(|r| match r {
                ClientRecord::Aborted {
                    id,
                    error: ConnError::TransportClosed,
                } => Some(*id),
                _ => None,
            })
            .collect();
        assert_eq!(aborted, ids);
        assert_eq!(h.client.pending_sync(), 0);
        assert_eq!(
            h.client_log.last(),
            Some(&ClientRecord::Closed(ConnError::TransportClosed))
        );
        assert_eq!(h.server.close_reason(), Some(ConnError::TransportClosed));
    });
}

#[test]
fn random_calls_survive_random_chunking() {
    run_seeds("chunking", 8, default_seed_count(), |seed| {
        let (mut h, seen) = connected(seed, server_cfg(Framing::Stream), false);
        let pool: Vec<u8> = (0..8192u32).map(|i| (i * 31 + seed as u32) as u8).collect();
        let mut g = Gen::new(seed, &pool);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 1);
        let mut expect = Vec::new();
        for _ in 0..60 {
            let call = Call::generate(rng.gen_range(0..CALL_TABLE.len()), &mut g);
            if call.class() == CallClass::Local {
                assert_eq!(
                    h.client.submit_call(h.now, &call, StreamHandle(5)),
                    Err(SubmitError::LocalCall { code: call.code() })
                );
                continue;
            }
            let mut body = Vec::new();
            call.encode_body(&mut body);
            match h.client.submit_call(h.now, &call, StreamHandle(5)) {
                Ok(id) => expect.push((id, call.code(), body)),
                Err(SubmitError::Backpressure { .. } | SubmitError::TooLarge { .. }) => {}
                Err(e) => panic!("submit: {e}"),
            }
            if rng.gen_bool(0.3) {
                h.step();
            }
        }
        h.client.flush();
        h.run_until(STEPS, |_| seen.borrow().calls.len() == expect.len());
        let s = seen.borrow();
        let got: Vec<_> = s.calls.iter().map(|c| (c.0, c.3, c.4.clone())).collect();
        assert_eq!(got, expect, "server saw exactly the submitted calls");
        let syncs = s.calls.iter().filter(|c| c.1 == CallClass::Sync).count();
        h.run_until(STEPS, |h| h.client.pending_sync() == 0);
        let replies = h
            .client_log
            .iter()
            .filter(|r| matches!(r, ClientRecord::Reply { result: Ok(_), .. }))
            .count();
        assert_eq!(replies, syncs, "every sync call answered");
    });
}

#[test]
fn handshake_and_reply_timeouts() {
    let mut cfg = client_cfg(Framing::Stream);
    cfg.handshake_timeout_ns = 1_000;
    let mut c = Client::new(cfg, Timestamp::ZERO);
    assert_eq!(c.poll_timeout(), Some(Timestamp(1_000)));
    let mut closed = None;
    c.handle_timeout(Timestamp(999), |_| panic!("not yet"));
    c.handle_timeout(Timestamp(1_000), |ev| {
        if let ClientEvent::Closed { error } = ev {
            closed = Some(error);
        }
    });
    assert_eq!(closed, Some(ConnError::HandshakeTimeout));

    let mut s = Server::new(server_cfg(Framing::Stream), Timestamp::ZERO);
    let deadline = s.poll_timeout().unwrap();
    s.handle_timeout(deadline, |_, _| {});
    assert_eq!(s.close_reason(), Some(ConnError::HandshakeTimeout));

    // Reply timeout: a sync call the server never answers.
    let (mut c, _s) = fuzzing::connected_pair(Framing::Stream);
    let id = c
        .submit(Timestamp(10), &CtxSynchronize {}, StreamHandle(0))
        .unwrap();
    let t = c.poll_timeout().unwrap();
    let mut aborted = Vec::new();
    c.handle_timeout(t, |ev| {
        if let ClientEvent::Aborted { id, error } = ev {
            aborted.push((id, error));
        }
    });
    assert_eq!(aborted, vec![(id, ConnError::IdleTimeout)]);
}

#[test]
fn credit_overflow_from_lying_server_is_an_error() {
    let (mut c, _s) = fuzzing::connected_pair(Framing::Stream);
    let mut wire = Vec::new();
    frame::write_frame(&mut wire, control::KIND_CREDIT, 0, 1, 0, |b| {
        control::CreditGrant { calls: 1, bytes: 0 }.encode(b)
    })
    .unwrap();
    let err = c.handle_input(Timestamp(1), &wire, |_| {}).unwrap_err();
    assert!(matches!(err, ConnError::CreditOverflow { calls: 1, .. }));
}

#[test]
fn credit_violation_by_client_closes() {
    let (_c, mut s) = fuzzing::connected_pair(Framing::Stream);
    // connected_pair grants 16 calls; send 17 async calls by hand.
    let mut wire = Vec::new();
    for seq in 1..=17u64 {
        frame::write_frame(&mut wire, EventRecord::CODE, 0, seq, 0, |b| {
            EventRecord {
                event: EventHandle(seq),
            }
            .encode_body(b)
        })
        .unwrap();
    }
    let mut delivered = 0;
    let err = s
        .handle_input(Timestamp(1), &wire, |ev, _| {
            if matches!(ev, ServerEvent::Call { .. }) {
                delivered += 1;
            }
        })
        .unwrap_err();
    assert_eq!(delivered, 16);
    assert!(matches!(err, ConnError::CreditViolation { calls: 17, .. }));
}

#[test]
fn random_disconnect_resolves_every_sync_call_once() {
    run_seeds("random_disconnect", 10, default_seed_count(), |seed| {
        let mut net = net_cfg(seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        net.disconnect_after = Some(rng.gen_range(2..40));
        let seen = Rc::new(RefCell::new(Seen::default()));
        let framing = net.framing;
        let mut h = harness(
            seed,
            client_cfg(framing),
            server_cfg(framing),
            net,
            recording_app(seen.clone(), false, seed),
        );
        h.handshake(1000);
        let mut ids = Vec::new();
        for _ in 0..40 {
            match h.client.submit(h.now, &CtxSynchronize {}, StreamHandle(0)) {
                Ok(id) => ids.push(id),
                Err(SubmitError::Closed(_) | SubmitError::NotReady) => break,
                Err(e) => panic!("submit: {e}"),
            }
            for _ in 0..rng.gen_range(0..4) {
                h.step();
            }
        }
        h.run_until(STEPS, |_| false);
        // Exactly one outcome per call: a reply or an abort.
        for id in &ids {
            let n = h
                .client_log
                .iter()
                .filter(|r| {
                    matches!(r, ClientRecord::Reply { id: i, .. } | ClientRecord::Aborted { id: i, .. } if i == id)
                })
                .count();
            assert_eq!(n, 1, "call {id:?} resolved {n} times");
        }
        assert_eq!(h.client.pending_sync(), 0);
        if h.net.is_down() {
            assert!(h.client.close_reason().is_some() && h.server.close_reason().is_some());
        }
    });
}

#[test]
fn zero_copy_transmit_matches_poll_transmit() {
    let (mut c, mut s) = fuzzing::connected_pair(Framing::Message);
    let now = Timestamp(1);
    c.submit(
        now,
        &EventRecord {
            event: EventHandle(3),
        },
        StreamHandle(2),
    )
    .unwrap();
    c.submit(now, &Nop {}, StreamHandle(2)).unwrap();
    let peeked = c
        .peek_transmit()
        .expect("sync call sealed the batch")
        .to_vec();
    c.advance_transmit();
    assert_eq!(c.peek_transmit(), None);
    let mut delivered = Vec::new();
    s.handle_input(now, &peeked, |ev, r| {
        if let ServerEvent::Call { id, class, .. } = ev {
            delivered.push(id);
            if class == CallClass::Sync {
                r.reply(id, Ok(Reply::NopReply(NopReply {}))).unwrap();
            } else {
                r.complete_async(id, Ok(())).unwrap();
            }
        }
    })
    .unwrap();
    assert_eq!(delivered.len(), 2);
    let batch = s.peek_transmit().expect("reply + credit").to_vec();
    s.advance_transmit();
    let mut replies = 0;
    c.handle_input(now, &batch, |ev| {
        if let ClientEvent::Reply { result: Ok(_), .. } = ev {
            replies += 1;
        }
    })
    .unwrap();
    assert_eq!(replies, 1);
    assert_eq!(c.credit().0, 16, "credit for the async call came back");
}

#[test]
fn over_bound_fields_are_refused_locally() {
    let (mut c, mut s) = fuzzing::connected_pair(Framing::Stream);
    let now = Timestamp(1);
    let params = vec![0u8; MAX_PARAM_BYTES as usize + 1];
    let launch = Launch {
        function: FunctionHandle(1),
        grid: [1, 1, 1],
        block: [32, 1, 1],
        shared_mem_bytes: 0,
        params: Blob(&params),
    };
    let err = c.submit(now, &launch, StreamHandle(0)).unwrap_err();
    assert!(
        matches!(
            err,
            SubmitError::InvalidField {
                field: "params",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        c.submit_call(now, &Call::Launch(launch), StreamHandle(0)),
        Err(err)
    );
    c.flush();
    assert_eq!(c.peek_transmit(), None, "nothing queued");
    assert_eq!(c.credit().0, 16, "no credit consumed");

    // Server side: a reply field over its bound is refused, the call stays
    // pending and can still be answered correctly.
    let id = c
        .submit(now, &DeviceGetName { device: 0 }, StreamHandle(0))
        .unwrap();
    let mut wire = Vec::new();
    while c.poll_transmit(&mut wire).is_some() {}
    s.handle_input(now, &wire, |_, _| {}).unwrap();
    let long = vec![b'x'; MAX_NAME_BYTES as usize + 1];
    let bad = Reply::DeviceName(DeviceName { name: Blob(&long) });
    assert!(matches!(
        s.reply(id, Ok(bad)),
        Err(ReplyError::InvalidField { field: "name", .. })
    ));
    let ok = Reply::DeviceName(DeviceName {
        name: Blob(b"H200"),
    });
    s.reply(id, Ok(ok)).unwrap();
    assert_eq!(
        s.reply(id, Ok(ok)),
        Err(ReplyError::UnknownCall { id: id.0 })
    );
}

#[test]
fn server_close_aborts_client_calls_with_peer_closed() {
    run_seeds("server_close", 11, default_seed_count(), |seed| {
        let (mut h, _seen) = connected(seed, server_cfg(Framing::Stream), true);
        // The worker shuts down before answering: pending calls are aborted.
        let ids: Vec<_> = (0..3)
            .map(|_| {
                h.client.submit(
                    h.now,
                    &EventQuery {
                        event: EventHandle(1),
                    },
                    StreamHandle(0),
                )
            })
            .collect::<Result<_, _>>()
            .unwrap();
        h.server.close(|_, _| {});
        h.run_until(STEPS, |h| h.client.close_reason().is_some());
        let want = ConnError::PeerClosed {
            reason: control::CloseReason::Shutdown as u32,
            detail: 0,
        };
        assert_eq!(h.client.close_reason(), Some(want));
        for id in ids {
            // Either answered before the close frame (the recording app
            // replies to sync calls) or aborted with the peer's reason.
            assert!(h.client_log.iter().any(|r| matches!(r,
                ClientRecord::Reply { id: i, .. } | ClientRecord::Aborted { id: i, error: _ } if *i == id)));
        }
        assert_eq!(h.client.pending_sync(), 0);
    });
}

#[test]
fn server_idle_timeout_closes_with_timeout_frame() {
    let token = [1; 32];
    let (mut c, mut s) = sim::connect(
        ClientConfig {
            token,
            ..ClientConfig::default()
        },
        ServerConfig {
            token,
            idle_timeout_ns: 1_000,
            ..ServerConfig::default()
        },
        Timestamp::ZERO,
    );
    assert_eq!(s.poll_timeout(), Some(Timestamp(1_000)));
    s.handle_timeout(Timestamp(999), |_, _| panic!("not yet"));
    assert!(s.is_open());
    let mut closed = None;
    s.handle_timeout(Timestamp(1_000), |ev, _| {
        if let ServerEvent::Closed { error } = ev {
            closed = Some(error);
        }
    });
    assert_eq!(closed, Some(ConnError::IdleTimeout));
    let mut wire = Vec::new();
    while s.poll_transmit(&mut wire).is_some() {}
    let err = c.handle_input(Timestamp(1_001), &wire, |_| {}).unwrap_err();
    assert_eq!(
        err,
        ConnError::PeerClosed {
            reason: control::CloseReason::Timeout as u32,
            detail: 0
        }
    );
}
