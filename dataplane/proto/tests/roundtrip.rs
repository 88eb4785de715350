//! Property tests: every call and reply in the table survives
//! encode → frame → decode unchanged, and re-encodes to the same bytes.

#![cfg(feature = "sim")]

use proptest::prelude::*;
use rgpu_proto::frame::{write_frame, FrameDecoder, Framing};
use rgpu_proto::sim::Gen;
use rgpu_proto::*;

fn pool(seed: u64) -> Vec<u8> {
    (0..16384u64)
        .map(|i| (i.wrapping_mul(seed | 1) >> 3) as u8)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(debug_assertions) { 256 } else { 2048 }))]

    #[test]
    fn every_call_round_trips(index in 0..CALL_TABLE.len(), seed: u64, seq: u64, key: u64) {
        let pool = pool(seed);
        let mut g = Gen::new(seed, &pool);
        let call = Call::generate(index, &mut g);
        prop_assert_eq!(call.code(), CALL_TABLE[index].code);
        let mut wire = Vec::new();
        write_frame(&mut wire, call.code(), 0, seq, key, |b| call.encode_body(b)).unwrap();
        let mut frames = Vec::new();
        let mut d = FrameDecoder::new(Framing::Message);
        d.feed(&wire, |f| {
            frames.push((f.header, f.body.to_vec()));
            Ok(())
        })
        .unwrap();
        prop_assert_eq!(frames.len(), 1);
        let (h, body) = &frames[0];
        prop_assert_eq!(h.seq, seq);
        prop_assert_eq!(h.key, key);
        prop_assert_eq!(Call::decode(h.kind, body), Ok(call));
        let mut again = Vec::new();
        call.encode_body(&mut again);
        prop_assert_eq!(&again, body);
    }

    #[test]
    fn every_reply_round_trips(index in 0..CALL_TABLE.len(), seed: u64) {
        let pool = pool(seed);
        let mut g = Gen::new(seed, &pool);
        let code = CALL_TABLE[index].code;
        match Reply::generate(code, &mut g) {
            None => prop_assert_eq!(CALL_TABLE[index].class, CallClass::Async),
            Some(reply) => {
                prop_assert_eq!(reply.code(), code);
                let mut body = Vec::new();
                reply.encode_body(&mut body);
                prop_assert_eq!(Reply::decode(code, &body), Ok(reply));
                // Any truncation is a typed error, never a panic or a
                // different value.
                for cut in 0..body.len() {
                    prop_assert!(Reply::decode(code, &body[..cut]).is_err());
                }
            }
        }
    }

    #[test]
    fn truncated_calls_are_errors(index in 0..CALL_TABLE.len(), seed: u64) {
        let pool = pool(seed);
        let mut g = Gen::new(seed, &pool);
        let call = Call::generate(index, &mut g);
        let mut body = Vec::new();
        call.encode_body(&mut body);
        for cut in 0..body.len() {
            prop_assert!(Call::decode(call.code(), &body[..cut]).is_err());
        }
    }
}
