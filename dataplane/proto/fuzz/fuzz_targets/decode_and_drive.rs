//! Fuzz target: arbitrary bytes into every decoder and into client and
//! server connections after a valid handshake. The driver is shared with
//! `tests/garbage.rs`, which runs it on 10^5 inputs in CI.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = rgpu_proto::fuzzing::decode_and_drive(data);
});
