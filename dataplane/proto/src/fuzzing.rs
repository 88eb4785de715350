//! The fuzz driver shared by the cargo-fuzz target and the garbage test.
//!
//! [`decode_and_drive`] feeds arbitrary bytes to every decoder and to
//! client and server connections that have completed a valid handshake.
//! The only property checked is the one that matters for peer input:
//! everything returns `Ok` or a typed error, never panics, and a failed
//! connection stays failed.

use crate::calls::{Call, Reply};
use crate::client::{Client, ClientConfig};
use crate::control::{split_reply, Close, CreditGrant, Handshake, HandshakeReply};
use crate::frame::{write_frame, FrameDecoder, Framing};
use crate::header::{Header, HEADER_BYTES};
use crate::server::{Server, ServerConfig, ServerEvent};
use crate::time::Timestamp;

/// Outcome counts of one [`decode_and_drive`] run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriveStats {
    /// Decoder calls that returned `Ok`.
    pub decoded_ok: u32,
    /// Decoder calls that returned a typed error.
    pub decoded_err: u32,
    /// Calls the server delivered to its application.
    pub calls_delivered: u32,
    /// Whether the server connection closed with an error.
    pub server_failed: bool,
    /// Whether the client connection closed with an error.
    pub client_failed: bool,
}

/// The auth token [`connected_pair`] uses.
pub const FUZZ_TOKEN: [u8; 32] = [0x5a; 32];

/// A client and server that completed a handshake with [`FUZZ_TOKEN`], in
/// the given framing, with small windows so credit paths are reachable.
#[must_use]
pub fn connected_pair(framing: Framing) -> (Client, Server) {
    let now = Timestamp::ZERO;
    let token = FUZZ_TOKEN;
    crate::sim::connect(
        ClientConfig {
            token,
            framing,
            ..ClientConfig::default()
        },
        ServerConfig {
            token,
            framing,
            window_calls: 16,
            window_bytes: 4096,
            credit_return_calls: 4,
            ..ServerConfig::default()
        },
        now,
    )
}

/// Feeds `data` to the decoders and to connected client/server state
/// machines. Never panics on any input (that is what fuzzing checks).
#[must_use]
pub fn decode_and_drive(data: &[u8]) -> DriveStats {
    let mut st = DriveStats::default();
    let mut count = |ok: bool| {
        if ok {
            st.decoded_ok += 1;
        } else {
            st.decoded_err += 1;
        }
    };
    // 1. Raw decoders on the input as header and as bodies of every kind.
    count(Header::parse(data).is_ok());
    if data.len() >= 2 {
        let kind = u16::from_le_bytes([data[0], data[1]]);
        let body = &data[2..];
        count(Call::decode(kind, body).is_ok());
        count(Reply::decode(kind, body).is_ok());
        count(split_reply(kind, body).is_ok());
        count(Handshake::decode(body).is_ok());
        count(HandshakeReply::decode(body).is_ok());
        count(CreditGrant::decode(body).is_ok());
        count(Close::decode(body).is_ok());
    }
    // 2. The frame decoder over the input, split at a data-chosen point.
    let cut = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    for framing in [Framing::Stream, Framing::Message] {
        let mut d = FrameDecoder::new(framing);
        let r = d
            .feed(&data[..cut], |_| Ok(()))
            .and_then(|()| d.feed(&data[cut..], |_| Ok(())));
        count(r.is_ok());
    }
    // 3. Connected state machines, input split into data-chosen chunks.
    let framing = if data.first().is_some_and(|b| b & 1 == 1) {
        Framing::Message
    } else {
        Framing::Stream
    };
    let (mut client, mut server) = connected_pair(framing);
    let chunk = data.get(1).map_or(HEADER_BYTES, |&b| usize::from(b).max(1));
    let now = Timestamp(1);
    for piece in data.chunks(chunk) {
        let r = server.handle_input(now, piece, |ev, resp| {
            if let ServerEvent::Call { id, call, .. } = ev {
                st.calls_delivered += 1;
                // Answer with the wrong shape half the time: must be refused
                // with a typed error, never accepted or panicking.
                let _ = resp.complete_async(id, Ok(()));
                let _ = resp.reply(id, Err(crate::CudaError::UNKNOWN));
                let _ = call.code();
            }
        });
        if r.is_err() {
            st.server_failed = true;
            debug_assert!(server.handle_input(now, piece, |_, _| {}).is_err());
        }
        // Inside a trailer, claim a data-chosen number of bytes were read
        // directly (sometimes one too many: must be a typed refusal).
        if let Some((_, left)) = server.trailer_remaining() {
            let n = piece.first().map_or(0, |&b| u64::from(b)).min(left + 1);
            let res = server.trailer_received(now, n);
            debug_assert_eq!(res.is_err(), n > left);
        }
        let r = client.handle_input(now, piece, |_| {});
        if r.is_err() {
            st.client_failed = true;
        }
    }
    let mut out = Vec::new();
    while server.poll_transmit(&mut out).is_some() {}
    while client.poll_transmit(&mut out).is_some() {}
    // 4. Structure-aware: records of [kind u16][flags u8][len u8][body]
    //    wrapped in valid headers with correct sequence numbers, so bodies
    //    reach the call/reply/control decoders inside both state machines.
    let (mut client, mut server) = connected_pair(Framing::Stream);
    let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
    let mut rest = data;
    let mut seq = 1;
    while rest.len() >= 4 {
        let kind = u16::from_le_bytes([rest[0], rest[1]]);
        let flags = rest[2] & crate::header::FLAGS_KNOWN;
        let len = usize::from(rest[3]).min(rest.len() - 4);
        let body = &rest[4..4 + len];
        rest = &rest[4 + len..];
        for out in [&mut to_server, &mut to_client] {
            let r = write_frame(out, kind, flags, seq, u64::from(rest.len() as u32), |b| {
                b.extend_from_slice(body);
            });
            debug_assert!(r.is_ok(), "a 255-byte body is within bounds");
        }
        seq += 1;
    }
    let now = Timestamp(2);
    let r = server.handle_input(now, &to_server, |ev, resp| {
        if let ServerEvent::Call {
            id, class, call, ..
        } = ev
        {
            st.calls_delivered += 1;
            let _ = match class {
                crate::CallClass::Async => resp.complete_async(id, Ok(())),
                _ => resp.reply(id, Err(crate::CudaError(u32::from(call.code())))),
            };
        }
    });
    st.server_failed |= r.is_err();
    st.client_failed |= client.handle_input(now, &to_client, |_| {}).is_err();
    while server.poll_transmit(&mut out).is_some() {}
    while client.poll_transmit(&mut out).is_some() {}
    st
}
