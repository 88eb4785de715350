//! The runtime's integrity check of its driver (export table `d4082055-…`, slot 1).
//!
//! Facts from ZLUDA's `dark_api` and LUPINE's `client.cpp` (cited in `docs/shim.md`): the
//! runtime passes its version and a Unix time, and expects 16 bytes back. For versions ending
//! in 0 or 1 the answer is a fixed pair. Otherwise it is a keyed hash over a 48-byte record
//! (driver version, runtime version, process and thread id, the addresses of the two export
//! tables and of the check function, the time) followed by one 28-byte record per device. The
//! passes those projects spell out are, step for step, HMAC with MD2 (RFC 1319, 16-byte
//! blocks, ipad 0x36 / opad 0x5c) under a fixed 16-byte key, so this module uses the RustCrypto
//! `hmac` and `md2` crates instead of re-deriving the passes by hand.

use hmac::{KeyInit, Mac, SimpleHmac};

/// The fixed HMAC key (the constant both sources call the result of the first pass).
const KEY: [u8; 16] = [
    0x14, 0x6A, 0xDD, 0xAE, 0x53, 0xA9, 0xA7, 0x52, 0xAA, 0x08, 0x41, 0x36, 0x0B, 0xF5, 0x5A, 0x9F,
];

/// The answer for runtime versions ending in 0.
pub const FIXED_ANSWER_VERSION_END_0: [u64; 2] = [0x3341_181C_03CB_675C, 0x8ED3_83AA_1F4C_D1E8];
/// The answer for runtime versions ending in 1.
pub const FIXED_ANSWER_VERSION_END_1: [u64; 2] = [0x1841_181C_03CB_675C, 0x8ED3_83AA_1F4C_D1E8];

/// Length of the fixed part of the hashed message.
pub const RECORD_LEN: usize = 48;
/// Length of one device's part of the hashed message.
pub const DEVICE_RECORD_LEN: usize = 28;

/// The per-process facts the check mixes in.
#[derive(Clone, Copy, Debug)]
pub struct CheckInput {
    /// The driver version the shim reports.
    pub driver_version: u32,
    /// The runtime version the caller passed.
    pub runtime_version: u32,
    /// Process id (truncated to 32 bits, as the runtime does).
    pub process: u32,
    /// Calling thread id (`pthread_self`, truncated to 32 bits).
    pub thread: u32,
    /// Address of the CUDART_INTERFACE table.
    pub cudart_table: usize,
    /// Address of the INTEGRITY_CHECK table.
    pub integrity_table: usize,
    /// Address of the check function itself.
    pub check_fn: usize,
    /// The Unix time the caller passed.
    pub unix_seconds: u64,
}

impl CheckInput {
    /// The 48-byte record in the layout of a C struct with these fields in order (LP64).
    pub fn record(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[0..4].copy_from_slice(&self.driver_version.to_ne_bytes());
        out[4..8].copy_from_slice(&self.runtime_version.to_ne_bytes());
        out[8..12].copy_from_slice(&self.process.to_ne_bytes());
        out[12..16].copy_from_slice(&self.thread.to_ne_bytes());
        out[16..24].copy_from_slice(&(self.cudart_table as u64).to_ne_bytes());
        out[24..32].copy_from_slice(&(self.integrity_table as u64).to_ne_bytes());
        out[32..40].copy_from_slice(&(self.check_fn as u64).to_ne_bytes());
        out[40..48].copy_from_slice(&self.unix_seconds.to_ne_bytes());
        out
    }
}

/// What the check mixes in per device.
#[derive(Clone, Copy, Debug)]
pub struct DeviceInput {
    /// The device UUID.
    pub uuid: [u8; 16],
    /// PCI domain, bus and device numbers.
    pub pci: [i32; 3],
}

impl DeviceInput {
    /// The 28-byte per-device record.
    pub fn record(&self) -> [u8; DEVICE_RECORD_LEN] {
        let mut out = [0u8; DEVICE_RECORD_LEN];
        out[0..16].copy_from_slice(&self.uuid);
        for (i, v) in self.pci.iter().enumerate() {
            out[16 + 4 * i..20 + 4 * i].copy_from_slice(&v.to_ne_bytes());
        }
        out
    }
}

/// The 16-byte answer, as the two native-endian words the runtime reads.
pub fn answer(input: &CheckInput, devices: &[DeviceInput]) -> [u64; 2] {
    match input.runtime_version % 10 {
        0 => return FIXED_ANSWER_VERSION_END_0,
        1 => return FIXED_ANSWER_VERSION_END_1,
        _ => {}
    }
    let mut mac = <SimpleHmac<md2::Md2> as KeyInit>::new_from_slice(&KEY)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(&input.record());
    for device in devices {
        mac.update(&device.record());
    }
    let digest = mac.finalize().into_bytes();
    let mut words = [0u64; 2];
    for (word, chunk) in words.iter_mut().zip(digest.chunks_exact(8)) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        *word = u64::from_ne_bytes(bytes);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use md2::{Digest, Md2};

    fn sample() -> CheckInput {
        // Field values of the pass-3 test vector in ZLUDA's dark_api (a real driver trace).
        CheckInput {
            driver_version: 0x2f30,
            runtime_version: 12082,
            process: 0x002f_a423,
            thread: 0xf79c_1000,
            cudart_table: 0x7fff_f695_8240,
            integrity_table: 0x7fff_f695_8220,
            check_fn: 0x7fff_f2aa_f4a0,
            unix_seconds: 0x682b_9cee,
        }
    }

    #[test]
    fn versions_ending_in_0_and_1_get_the_fixed_answers() {
        let mut input = sample();
        input.runtime_version = 12090;
        assert_eq!(answer(&input, &[]), FIXED_ANSWER_VERSION_END_0);
        input.runtime_version = 12091;
        assert_eq!(answer(&input, &[]), FIXED_ANSWER_VERSION_END_1);
    }

    #[test]
    fn record_layout_matches_the_c_struct() {
        let r = sample().record();
        assert_eq!(&r[0..4], &[0x30, 0x2f, 0, 0]);
        assert_eq!(&r[4..8], &12082u32.to_le_bytes());
        assert_eq!(&r[16..24], &[0x40, 0x82, 0x95, 0xf6, 0xff, 0x7f, 0, 0]);
        assert_eq!(&r[40..48], &[0xee, 0x9c, 0x2b, 0x68, 0, 0, 0, 0]);
        let d = DeviceInput {
            uuid: [7; 16],
            pci: [0, 2, 0],
        }
        .record();
        assert_eq!(&d[16..28], &[0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
    }

    /// The sources' passes: absorb key^0x36, the records, finish; reset; absorb key^0x5c and
    /// the first result, finish. Spelled out with plain MD2 to check the HMAC wiring.
    #[test]
    fn equals_the_two_pass_md2_construction() {
        let input = sample();
        let device = DeviceInput {
            uuid: [0x5a; 16],
            pci: [0, 2, 0],
        };
        let pad = |b: u8| KEY.map(|k| k ^ b);
        let mut inner = Md2::new();
        inner.update(pad(0x36));
        inner.update(input.record());
        inner.update(device.record());
        let inner = inner.finalize();
        let mut outer = Md2::new();
        outer.update(pad(0x5c));
        outer.update(inner);
        let outer = outer.finalize();
        let got = answer(&input, &[device]);
        let mut got_bytes = [0u8; 16];
        got_bytes[..8].copy_from_slice(&got[0].to_ne_bytes());
        got_bytes[8..].copy_from_slice(&got[1].to_ne_bytes());
        assert_eq!(&got_bytes[..], &outer[..]);
        // The devices are part of the message.
        assert_ne!(answer(&input, &[]), got);
    }
}
