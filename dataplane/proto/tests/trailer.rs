//! Trailing payloads: bytes that follow a sync call's frame on the stream,
//! outside any frame. Round trips through the simulator with the trailer
//! cut at random chunk boundaries (over many seeds), the direct-receive
//! path, frames resuming after a trailer, and every misuse or peer lie as a
//! typed error.

#![cfg(feature = "sim")]

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rgpu_proto::frame::write_frame;
use rgpu_proto::sim::{connect, default_seed_count, run_seeds, ClientRecord, Gen};
use rgpu_proto::*;

const STEPS: usize = 200_000;

fn pair() -> (Client, Server) {
    connect(
        client_cfg(Framing::Stream),
        server_cfg(Framing::Stream),
        Timestamp::ZERO,
    )
}

fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen()).collect()
}

fn htod(len: u64) -> MemcpyHtoD<'static> {
    MemcpyHtoD {
        dst: DevicePtr(0x1000),
        src: Payload::Trailing { len },
    }
}

/// Puts trailer pieces (offset, bytes) together; panics on gaps/overlaps.
fn assemble(mut pieces: Vec<(u64, Vec<u8>)>) -> Vec<u8> {
    pieces.sort_by_key(|p| p.0);
    let mut out = Vec::new();
    for (off, b) in pieces {
        assert_eq!(off, out.len() as u64, "pieces tile the trailer");
        out.extend_from_slice(&b);
    }
    out
}

#[test]
fn trailers_round_trip_through_random_chunking() {
    let direct_pieces = std::cell::Cell::new(0usize);
    run_seeds("trailer_chunking", 21, default_seed_count(), |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut net = net_cfg(seed);
        net.framing = Framing::Stream;
        let seen = Rc::new(RefCell::new(Seen::default()));
        let mut h = harness(
            seed,
            client_cfg(Framing::Stream),
            server_cfg(Framing::Stream),
            net,
            recording_app(seen.clone(), false, seed),
        );
        h.direct_trailers = seed % 2 == 0;
        assert!(h.handshake(1000) && h.client.is_open());
        let pool: Vec<u8> = (0..4096u32).map(|i| (i * 7 + seed as u32) as u8).collect();
        let mut g = Gen::new(seed, &pool);
        // (id, code, trailer) per call, in submission order.
        let mut expect: Vec<(CallId, u16, Vec<u8>)> = Vec::new();
        for i in 0..40 {
            let result = if rng.gen_bool(0.4) {
                let len = rng.gen_range(1..3000);
                let bytes = payload(seed ^ i, len);
                let r = h.client.submit(h.now, &htod(len as u64), StreamHandle(2));
                if r.is_ok() {
                    h.trailer_payloads.push_back(bytes.clone());
                }
                r.map(|id| (id, MemcpyHtoD::CODE, bytes))
            } else {
                let call = Call::generate(rng.gen_range(0..CALL_TABLE.len()), &mut g);
                if call.class() == CallClass::Local {
                    continue;
                }
                h.client
                    .submit_call(h.now, &call, StreamHandle(2))
                    .map(|id| (id, call.code(), Vec::new()))
            };
            match result {
                Ok(e) => expect.push(e),
                Err(SubmitError::Backpressure { .. } | SubmitError::TooLarge { .. }) => {}
                Err(e) => panic!("submit: {e}"),
            }
            if rng.gen_bool(0.3) {
                h.step();
            }
        }
        h.client.flush();
        let syncs = expect
            .iter()
            .filter(|e| {
                CALL_TABLE
                    .iter()
                    .any(|c| c.code == e.1 && c.class == CallClass::Sync)
            })
            .count();
        let answered = |h: &sim::Harness| {
            h.client_log
                .iter()
                .filter(|r| matches!(r, ClientRecord::Reply { result: Ok(_), .. }))
                .count()
        };
        assert!(
            h.run_until(STEPS, |h| answered(h) == syncs
                && seen.borrow().calls.len() == expect.len()),
            "stalled: {:?} / {:?}",
            h.client.close_reason(),
            h.server.close_reason()
        );
        assert!(h.client.is_open() && h.server.is_open());
        assert!(h.trailer_payloads.is_empty(), "every trailer sent");
        assert_eq!(h.server.trailer_remaining(), None);
        let s = seen.borrow();
        let got: Vec<_> = s.calls.iter().map(|c| (c.0, c.3)).collect();
        let want: Vec<_> = expect.iter().map(|e| (e.0, e.1)).collect();
        assert_eq!(got, want, "server saw exactly the submitted calls");
        for (id, _, bytes) in expect.iter().filter(|e| !e.2.is_empty()) {
            let total = bytes.len() as u64;
            let mut pieces: Vec<(u64, Vec<u8>)> = s
                .trailer_pieces
                .iter()
                .filter(|p| p.0 == *id)
                .map(|p| (p.1, p.2.clone()))
                .collect();
            pieces.extend(
                h.direct_log
                    .iter()
                    .filter(|d| d.id == *id)
                    .map(|d| (total - d.remaining_before, d.bytes.clone())),
            );
            assert_eq!(&assemble(pieces), bytes, "trailer of {id:?} intact");
        }
        direct_pieces.set(direct_pieces.get() + h.direct_log.len());
    });
    if std::env::var(sim::SEED_ENV).is_err() {
        assert!(
            direct_pieces.get() > 0,
            "the direct-receive path was exercised"
        );
    }
}

#[test]
fn trailer_partly_with_the_frame_rest_received_directly() {
    let (mut c, mut s) = pair();
    let now = Timestamp(1);
    let data = payload(1, 1000);
    let id = c.submit(now, &htod(1000), StreamHandle(0)).unwrap();
    assert_eq!(c.peek_trailer(), Some(OwedTrailer { id, len: 1000 }));
    let mut stream = c.peek_transmit().unwrap().to_vec();
    c.advance_transmit();
    assert_eq!(c.trailer_owed(), Some(OwedTrailer { id, len: 1000 }));

    // Nothing else may go out while the trailer is owed.
    c.submit(now, &Nop {}, StreamHandle(0)).unwrap();
    assert_eq!(c.peek_transmit(), None);
    assert_eq!(c.peek_trailer(), None);
    assert_eq!(c.poll_transmit(&mut Vec::new()), None);
    assert_eq!(
        c.trailer_sent(1001),
        Err(TrailerError::Overrun {
            n: 1001,
            remaining: 1000
        })
    );
    c.trailer_sent(400).unwrap();
    assert_eq!(c.trailer_owed(), Some(OwedTrailer { id, len: 600 }));
    assert_eq!(c.peek_transmit(), None);
    c.trailer_sent(600).unwrap();
    assert_eq!(c.trailer_owed(), None);
    assert_eq!(
        c.trailer_sent(1),
        Err(TrailerError::NoneInProgress { n: 1 })
    );
    let nop_batch = c.peek_transmit().expect("batches flow again").to_vec();

    // The server gets the frame and 300 trailer bytes in one chunk.
    stream.extend_from_slice(&data[..300]);
    let mut events = Vec::new();
    s.handle_input(now, &stream, |ev, r| match ev {
        ServerEvent::Call { id: got, call, .. } => {
            assert_eq!(got, id);
            assert_eq!(call, Call::MemcpyHtoD(htod(1000)));
            let early = r.reply(got, Ok(Reply::MemcpyHtoDReply(MemcpyHtoDReply {})));
            assert_eq!(
                early,
                Err(ReplyError::TrailerIncomplete {
                    id: got.0,
                    remaining: 1000
                })
            );
            events.push((0, 0, false));
        }
        ServerEvent::Trailer {
            id: got,
            bytes,
            offset,
            done,
        } => {
            assert_eq!(got, id);
            assert_eq!(bytes, &data[..300]);
            events.push((1, offset, done));
        }
        other => panic!("unexpected {other:?}"),
    })
    .unwrap();
    assert_eq!(events, vec![(0, 0, false), (1, 0, false)]);
    assert_eq!(s.trailer_remaining(), Some((id, 700)));

    // The driver reads the rest straight into its destination.
    let mut dst = vec![0u8; 1000];
    dst[..300].copy_from_slice(&data[..300]);
    let mut at = 300;
    while let Some((got, left)) = s.trailer_remaining() {
        assert_eq!(got, id);
        let n = (left as usize).min(256);
        dst[at..at + n].copy_from_slice(&data[at..at + n]); // "recv_exact_into"
        assert_eq!(
            s.trailer_received(now, left + 1),
            Err(TrailerError::Overrun {
                n: left + 1,
                remaining: left
            })
        );
        s.trailer_received(now, n as u64).unwrap();
        at += n;
    }
    assert_eq!(dst, data);
    assert_eq!(
        s.trailer_received(now, 1),
        Err(TrailerError::NoneInProgress { n: 1 })
    );
    s.reply(id, Ok(Reply::MemcpyHtoDReply(MemcpyHtoDReply {})))
        .unwrap();

    // Frames resume after the trailer.
    let mut nops = 0;
    s.handle_input(now, &nop_batch, |ev, r| {
        if let ServerEvent::Call { id, call, .. } = ev {
            assert_eq!(call, Call::Nop(Nop {}));
            r.reply(id, Ok(Reply::NopReply(NopReply {}))).unwrap();
            nops += 1;
        }
    })
    .unwrap();
    assert_eq!(nops, 1);
    let mut back = Vec::new();
    while s.poll_transmit(&mut back).is_some() {}
    let mut replies = 0;
    c.handle_input(now, &back, |ev| {
        assert!(matches!(ev, ClientEvent::Reply { result: Ok(_), .. }));
        replies += 1;
    })
    .unwrap();
    assert_eq!(replies, 2);
}

#[test]
fn frames_after_a_trailer_decode_at_every_split() {
    let (mut c, s0) = pair();
    drop(s0);
    let now = Timestamp(1);
    let data = payload(2, 50);
    let mut stream = Vec::new();
    let id = c.submit(now, &htod(50), StreamHandle(0)).unwrap();
    while c.poll_transmit(&mut stream).is_some() {
        if let Some(owed) = c.trailer_owed() {
            stream.extend_from_slice(&data);
            c.trailer_sent(owed.len).unwrap();
        }
    }
    let nop = c.submit(now, &Nop {}, StreamHandle(0)).unwrap();
    while c.poll_transmit(&mut stream).is_some() {}
    for cut in 0..=stream.len() {
        let (_, mut s) = pair();
        let mut trailer = Vec::new();
        let mut calls = Vec::new();
        for chunk in [&stream[..cut], &stream[cut..]] {
            s.handle_input(now, chunk, |ev, r| match ev {
                ServerEvent::Call { id, .. } => calls.push(id),
                ServerEvent::Trailer {
                    bytes,
                    offset,
                    done,
                    ..
                } => {
                    assert_eq!(offset, trailer.len() as u64);
                    trailer.extend_from_slice(bytes);
                    assert_eq!(done, trailer.len() == 50);
                    if done {
                        r.reply(id, Ok(Reply::MemcpyHtoDReply(MemcpyHtoDReply {})))
                            .unwrap();
                    }
                }
                other => panic!("unexpected {other:?}"),
            })
            .unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        }
        assert_eq!(calls, vec![id, nop], "cut {cut}");
        assert_eq!(trailer, data, "cut {cut}");
        assert!(s.is_open());
    }
}

#[test]
fn trailers_refused_on_message_framing_and_async_calls() {
    let mut c = connect(
        client_cfg(Framing::Message),
        server_cfg(Framing::Message),
        Timestamp::ZERO,
    )
    .0;
    assert_eq!(
        c.submit(Timestamp(1), &htod(8), StreamHandle(0)),
        Err(SubmitError::TrailerOnMessageFraming {
            code: MemcpyHtoD::CODE
        })
    );
    let (mut c, _) = pair();
    let async_copy = MemcpyHtoDAsync {
        dst: DevicePtr(1),
        src: Payload::Trailing { len: 8 },
    };
    assert_eq!(
        c.submit(Timestamp(1), &async_copy, StreamHandle(0)),
        Err(SubmitError::TrailerOnAsync {
            code: MemcpyHtoDAsync::CODE
        })
    );
    let over = htod(MAX_TRAILER_BYTES + 1);
    assert!(matches!(
        c.submit(Timestamp(1), &over, StreamHandle(0)),
        Err(SubmitError::InvalidField { field: "src", .. })
    ));
    assert_eq!(c.peek_transmit(), None, "nothing queued on error");

    // The same frames from a lying peer close the server with typed errors.
    let frame = |code: u16, body: &dyn Fn(&mut Vec<u8>)| {
        let mut out = Vec::new();
        write_frame(&mut out, code, 0, 1, 0, body).unwrap();
        out
    };
    let htod_frame = frame(MemcpyHtoD::CODE, &|b| htod(8).encode_body(b));
    let (_, mut s) = connect(
        client_cfg(Framing::Message),
        server_cfg(Framing::Message),
        Timestamp::ZERO,
    );
    assert_eq!(
        s.handle_input(Timestamp(1), &htod_frame, |_, _| {}),
        Err(ConnError::TrailerOnMessageFraming {
            code: MemcpyHtoD::CODE
        })
    );
    let (_, mut s) = pair();
    let async_frame = frame(MemcpyHtoDAsync::CODE, &|b| async_copy.encode_body(b));
    assert_eq!(
        s.handle_input(Timestamp(1), &async_frame, |_, _| {}),
        Err(ConnError::TrailerOnAsync {
            code: MemcpyHtoDAsync::CODE
        })
    );
    let (_, mut s) = pair();
    let over_frame = frame(MemcpyHtoD::CODE, &|b| {
        DevicePtr(1).0.to_le_bytes().iter().for_each(|x| b.push(*x));
        b.push(2); // trailing tag
        b.extend_from_slice(&(MAX_TRAILER_BYTES + 1).to_le_bytes());
    });
    let err = s.handle_input(Timestamp(1), &over_frame, |_, _| {});
    assert_eq!(
        err,
        Err(ConnError::Decode(DecodeError::Field {
            kind: MemcpyHtoD::CODE,
            field: "src",
            source: FieldError::TooLong {
                len: MAX_TRAILER_BYTES + 1,
                max: MAX_TRAILER_BYTES
            }
        }))
    );
    assert_eq!(s.trailer_remaining(), None);
}

#[test]
fn eof_inside_a_trailer_is_truncation() {
    let (mut c, mut s) = pair();
    let id = c.submit(Timestamp(1), &htod(100), StreamHandle(0)).unwrap();
    let mut stream = Vec::new();
    c.poll_transmit(&mut stream).unwrap();
    stream.extend_from_slice(&[9; 40]);
    s.handle_input(Timestamp(1), &stream, |_, _| {}).unwrap();
    let mut closed = None;
    s.handle_close(|ev, _| {
        if let ServerEvent::Closed { error } = ev {
            closed = Some(error);
        }
    });
    let want = ConnError::TrailerTruncated {
        id: id.0,
        remaining: 60,
    };
    assert_eq!(closed, Some(want));
    assert_eq!(s.close_reason(), Some(want));
    assert_eq!(s.trailer_remaining(), None);
    assert_eq!(
        s.trailer_received(Timestamp(2), 1),
        Err(TrailerError::NoneInProgress { n: 1 })
    );
}

#[test]
fn replies_never_carry_trailers() {
    let (mut c, mut s) = pair();
    let now = Timestamp(1);
    let id = c
        .submit(
            now,
            &MemcpyDtoH {
                src: DevicePtr(1),
                len: 8,
                dst: Dest::Inline,
            },
            StreamHandle(0),
        )
        .unwrap();
    let mut up = Vec::new();
    c.poll_transmit(&mut up).unwrap();
    s.handle_input(now, &up, |_, _| {}).unwrap();
    let trailing = Reply::MemcpyDtoHReply(MemcpyDtoHReply {
        data: Payload::Trailing { len: 8 },
    });
    assert_eq!(
        s.reply(id, Ok(trailing)),
        Err(ReplyError::TrailerInReply { id: id.0 })
    );
    // A lying server's trailing reply closes the client.
    let mut down = Vec::new();
    write_frame(
        &mut down,
        MemcpyDtoH::CODE,
        header::FLAG_REPLY,
        1,
        id.0,
        |b| {
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&[0; 8]); // no credit
            trailing.encode_body(b);
        },
    )
    .unwrap();
    let mut aborted = 0;
    let err = c.handle_input(now, &down, |ev| {
        aborted += usize::from(matches!(ev, ClientEvent::Aborted { .. }));
    });
    let want = ConnError::TrailerInReply {
        kind: MemcpyDtoH::CODE,
    };
    assert_eq!(err, Err(want));
    assert_eq!(aborted, 1);
}

#[test]
fn poisoned_server_still_consumes_the_trailer() {
    let (mut c, mut s) = pair();
    let now = Timestamp(1);
    // Poison the context with a sticky error on a sync call.
    let nop = c.submit(now, &Nop {}, StreamHandle(0)).unwrap();
    let mut up = Vec::new();
    c.poll_transmit(&mut up).unwrap();
    s.handle_input(now, &up, |_, _| {}).unwrap();
    s.reply(nop, Err(CudaError::ILLEGAL_ADDRESS)).unwrap();
    // A trailing call sent before the client learned of it.
    let id = c.submit(now, &htod(64), StreamHandle(0)).unwrap();
    up.clear();
    c.poll_transmit(&mut up).unwrap();
    up.extend_from_slice(&[3; 64]);
    c.trailer_sent(64).unwrap();
    c.submit(now, &Nop {}, StreamHandle(0)).unwrap();
    c.poll_transmit(&mut up).unwrap();
    let mut seen_calls = 0;
    let mut trailer_bytes = 0;
    s.handle_input(now, &up, |ev, _| match ev {
        ServerEvent::Call { .. } => seen_calls += 1,
        ServerEvent::Trailer { id: got, bytes, .. } => {
            assert_eq!(got, id);
            trailer_bytes += bytes.len();
        }
        other => panic!("unexpected {other:?}"),
    })
    .unwrap();
    assert_eq!(seen_calls, 0, "poisoned: answered without delivery");
    assert_eq!(trailer_bytes, 64, "trailer consumed, frames resumed");
    assert!(s.is_open());
}
