//! Garbage-in test: 10^5 random and mutated inputs (bit flips, truncation,
//! length lies, wrong magic/version, unknown kinds, bad sequence numbers,
//! huge lengths, spliced frames) against the decoders and the server state
//! machine. Every input must yield `Ok` or a typed error — never a panic —
//! and the targeted mutations must yield the matching error. Every stream
//! holds at least one sync call with a trailing payload (its trailer bytes
//! follow its frame), so the mutations also hit trailers: lying trailer
//! lengths, streams ending inside a trailer. This also exercises the
//! cargo-fuzz target's driver (`fuzzing::decode_and_drive`).

#![cfg(feature = "sim")]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rgpu_proto::control::{Handshake, KIND_HANDSHAKE};
use rgpu_proto::frame::write_frame;
use rgpu_proto::fuzzing::{decode_and_drive, FUZZ_TOKEN};
use rgpu_proto::header::{HEADER_BYTES, MAX_BODY_BYTES};
use rgpu_proto::sim::Gen;
use rgpu_proto::*;

const INPUTS: usize = 100_000;
const CORPUS: usize = 64;

/// Offset of a `MemcpyHtoD`'s trailer length inside its frame: header,
/// `dst: u64`, payload tag.
const TRAILER_LEN_AT: usize = HEADER_BYTES + 8 + 1;

/// A valid client byte stream: handshake then calls (at least one with a
/// trailer); returns the bytes, the frame start offsets (a frame's trailer
/// runs to the next start) and the indices of frames with a trailer.
fn valid_stream(seed: u64, pool: &[u8]) -> (Vec<u8>, Vec<usize>, Vec<usize>) {
    let mut g = Gen::new(seed, pool);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut starts = vec![0];
    let hs = Handshake {
        caps: 0,
        token: FUZZ_TOKEN,
    };
    write_frame(&mut out, KIND_HANDSHAKE, 0, 0, 0, |b| hs.encode(b)).unwrap();
    let n = rng.gen_range(1..12);
    let with_trailer = rng.gen_range(1..=n);
    let mut trailing = Vec::new();
    let mut seq = 1;
    while seq <= n {
        let mut call = Call::generate(rng.gen_range(0..CALL_TABLE.len()), &mut g);
        if call.class() == CallClass::Local {
            continue;
        }
        let trailer_len = if seq == with_trailer || rng.gen_bool(0.1) {
            let len = rng.gen_range(1..600u64);
            call = Call::MemcpyHtoD(MemcpyHtoD {
                dst: DevicePtr(rng.gen()),
                src: Payload::Trailing { len },
            });
            trailing.push(starts.len());
            len
        } else {
            0
        };
        starts.push(out.len());
        write_frame(&mut out, call.code(), 0, seq, rng.gen(), |b| {
            call.encode_body(b)
        })
        .unwrap();
        // Trailer bytes that look like frames half the time.
        let from = rng.gen_range(0..pool.len() - 600);
        out.extend_from_slice(&pool[from..from + trailer_len as usize]);
        seq += 1;
    }
    (out, starts, trailing)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mutation {
    None,
    BitFlips,
    Truncate,
    LengthLie,
    HugeLength,
    WrongMagic,
    WrongVersion,
    UnknownKind,
    DuplicateSeq,
    SwapFrames,
    Splice,
    RandomBytes,
    TrailerLie,
    TrailerCut,
}

const MUTATIONS: [Mutation; 14] = [
    Mutation::None,
    Mutation::BitFlips,
    Mutation::Truncate,
    Mutation::LengthLie,
    Mutation::HugeLength,
    Mutation::WrongMagic,
    Mutation::WrongVersion,
    Mutation::UnknownKind,
    Mutation::DuplicateSeq,
    Mutation::SwapFrames,
    Mutation::Splice,
    Mutation::RandomBytes,
    Mutation::TrailerLie,
    Mutation::TrailerCut,
];

fn server() -> Server {
    Server::new(
        ServerConfig {
            token: FUZZ_TOKEN,
            ..ServerConfig::default()
        },
        Timestamp::ZERO,
    )
}

/// Feeds `input` in random chunks, then reports EOF; returns (calls
/// delivered, result of the input, close reason after EOF).
fn drive(input: &[u8], rng: &mut ChaCha8Rng) -> (usize, Result<(), ConnError>, ConnError) {
    let mut s = server();
    let mut delivered = 0;
    let mut rest = input;
    let mut result = Ok(());
    while !rest.is_empty() {
        let n = rng.gen_range(1..=rest.len().min(300));
        let r = s.handle_input(Timestamp(1), &rest[..n], |ev, resp| match ev {
            ServerEvent::Call {
                id, class, call, ..
            } => {
                delivered += 1;
                let answered = match class {
                    CallClass::Async => resp.complete_async(id, Ok(())),
                    // Answered when its trailer is complete.
                    _ if call.trailer_len() > 0 => return,
                    _ => resp.reply(id, Err(CudaError::UNKNOWN)),
                };
                assert_eq!(answered, Ok(()));
            }
            ServerEvent::Trailer { id, done: true, .. } => {
                assert_eq!(resp.reply(id, Err(CudaError::UNKNOWN)), Ok(()));
            }
            _ => {}
        });
        rest = &rest[n..];
        if let Err(e) = r {
            // A failed connection stays failed with the same reason.
            assert_eq!(s.handle_input(Timestamp(2), rest, |_, _| {}), Err(e));
            let mut out = Vec::new();
            assert!(
                s.poll_transmit(&mut out).is_some(),
                "error frame queued for the peer"
            );
            result = Err(e);
            break;
        }
    }
    let mut out = Vec::new();
    while s.poll_transmit(&mut out).is_some() {}
    s.handle_close(|_, _| {});
    let closed = s.close_reason();
    assert!(closed.is_some(), "EOF closes");
    (delivered, result, closed.unwrap_or(ConnError::LocalClose))
}

#[test]
fn hundred_thousand_garbage_inputs() {
    let pool: Vec<u8> = (0..8192u32).map(|i| (i * 131 + 7) as u8).collect();
    let corpus: Vec<_> = (0..CORPUS as u64).map(|s| valid_stream(s, &pool)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(0x6761_7262);
    let mut ok = 0;
    let mut err = 0;
    for i in 0..INPUTS {
        let (base, starts, trailing) = &corpus[rng.gen_range(0..CORPUS)];
        let mut input = base.clone();
        let m = MUTATIONS[i % MUTATIONS.len()];
        // Target frame (never the handshake for frame-level mutations).
        let fi = rng.gen_range(1..starts.len());
        let at = starts[fi];
        match m {
            Mutation::None => {}
            Mutation::BitFlips => {
                for _ in 0..rng.gen_range(1..4) {
                    let b = rng.gen_range(0..input.len());
                    input[b] ^= 1 << rng.gen_range(0..8);
                }
            }
            Mutation::Truncate => input.truncate(rng.gen_range(0..input.len())),
            Mutation::LengthLie => {
                let len: u32 = rng.gen_range(0..512);
                input[at + 24..at + 28].copy_from_slice(&len.to_le_bytes());
            }
            Mutation::HugeLength => {
                let len = rng.gen_range(MAX_BODY_BYTES + 1..=u32::MAX);
                input[at + 24..at + 28].copy_from_slice(&len.to_le_bytes());
            }
            Mutation::WrongMagic => input[at + rng.gen_range(0..4)] ^= 0x20,
            Mutation::WrongVersion => input[at + 4] = rng.gen_range(2..=255),
            Mutation::UnknownKind => {
                let kind: u16 = rng.gen_range(0x0200..0xffff);
                input[at + 6..at + 8].copy_from_slice(&kind.to_le_bytes());
            }
            Mutation::DuplicateSeq => {
                let prev = (fi - 1) as u64;
                input[at + 8..at + 16].copy_from_slice(&prev.to_le_bytes());
            }
            Mutation::SwapFrames => {
                // Move frame `fi` behind its successor (or the stream end).
                let end = starts.get(fi + 1).copied().unwrap_or(input.len());
                let frame: Vec<u8> = input.drain(at..end).collect();
                let next_end = starts.get(fi + 2).map_or(input.len(), |e| e - frame.len());
                input.splice(next_end..next_end, frame);
            }
            Mutation::Splice => {
                let (other, ostarts, _) = &corpus[rng.gen_range(0..CORPUS)];
                let from = ostarts[rng.gen_range(0..ostarts.len())];
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            Mutation::RandomBytes => {
                input = (0..rng.gen_range(0..256)).map(|_| rng.gen()).collect();
            }
            Mutation::TrailerLie => {
                let t = starts[trailing[0]] + TRAILER_LEN_AT;
                let len = rng.gen_range(MAX_TRAILER_BYTES + 1..=u64::MAX);
                input[t..t + 8].copy_from_slice(&len.to_le_bytes());
            }
            Mutation::TrailerCut => {
                // End the stream inside the last trailer.
                let last = *trailing.last().unwrap_or(&0);
                let t = starts[last] + TRAILER_LEN_AT;
                let len = u64::from_le_bytes(input[t..t + 8].try_into().unwrap());
                let trailer_at = t + 8;
                input.truncate(trailer_at + rng.gen_range(0..len as usize));
            }
        }
        let stats = decode_and_drive(&input);
        assert!(stats.decoded_ok + stats.decoded_err > 0);
        let (delivered, result, closed) = drive(&input, &mut rng);
        match (m, result) {
            (Mutation::None, r) => {
                assert_eq!(r, Ok(()));
                assert_eq!(delivered, starts.len() - 1, "all valid calls delivered");
                assert_eq!(closed, ConnError::TransportClosed);
            }
            (Mutation::TrailerLie, r) => assert!(
                matches!(
                    r,
                    Err(ConnError::Decode(DecodeError::Field {
                        source: FieldError::TooLong { .. },
                        ..
                    }))
                ),
                "{r:?}"
            ),
            (Mutation::TrailerCut, r) => {
                assert_eq!(r, Ok(()));
                assert!(
                    matches!(closed, ConnError::TrailerTruncated { remaining, .. } if remaining > 0),
                    "{closed:?}"
                );
            }
            (Mutation::HugeLength, r) => assert!(
                matches!(r, Err(ConnError::Header(HeaderError::BodyTooLarge { .. }))),
                "{r:?}"
            ),
            (Mutation::WrongMagic, r) => assert!(
                matches!(r, Err(ConnError::Header(HeaderError::BadMagic { .. }))),
                "{r:?}"
            ),
            (Mutation::WrongVersion, r) => assert!(
                matches!(r, Err(ConnError::Header(HeaderError::BadVersion { .. }))),
                "{r:?}"
            ),
            (Mutation::UnknownKind, r) => assert!(
                matches!(r, Err(ConnError::Decode(DecodeError::UnknownKind { .. }))),
                "{r:?}"
            ),
            (Mutation::DuplicateSeq, r) => assert_eq!(
                r,
                Err(ConnError::Sequence {
                    expected: fi as u64,
                    got: fi as u64 - 1
                })
            ),
            (Mutation::SwapFrames, r) if fi + 1 < starts.len() => assert_eq!(
                r,
                Err(ConnError::Sequence {
                    expected: fi as u64,
                    got: fi as u64 + 1
                })
            ),
            (_, r) => {
                if r.is_ok() {
                    ok += 1;
                } else {
                    err += 1;
                }
                assert!(delivered < starts.len() + 16);
            }
        }
    }
    assert!(
        ok > 0 && err > 0,
        "mutations produced only one outcome: ok={ok} err={err}"
    );
}
