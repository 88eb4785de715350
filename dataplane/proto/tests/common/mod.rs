//! Shared setup for the simulation tests: configs, a default server app
//! and a seeded choice of network faults.

#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rgpu_proto::sim::{Gen, Harness, Net, NetConfig, ServerApp};
use rgpu_proto::*;

pub const TOKEN: [u8; 32] = [0x42; 32];

/// Pool that generated replies borrow from.
pub static POOL: [u8; 4096] = [0xa5; 4096];

pub fn client_cfg(framing: Framing) -> ClientConfig {
    ClientConfig {
        token: TOKEN,
        framing,
        ..ClientConfig::default()
    }
}

pub fn server_cfg(framing: Framing) -> ServerConfig {
    ServerConfig {
        token: TOKEN,
        framing,
        session_id: 77,
        ..ServerConfig::default()
    }
}

/// Random but valid network faults (no reordering, no loss) for `seed`.
pub fn net_cfg(seed: u64) -> NetConfig {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    NetConfig {
        framing: if rng.gen_bool(0.5) {
            Framing::Stream
        } else {
            Framing::Message
        },
        delay_ns_min: rng.gen_range(0..2_000),
        delay_ns_max: rng.gen_range(0..50_000),
        reorder_per_mille: 0,
        max_chunk_bytes: rng.gen_range(1..200),
        disconnect_after: None,
    }
}

/// What the recording server app saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub connected: bool,
    /// (id, class, stream, re-encoded body, code) per delivered call.
    pub calls: Vec<(CallId, CallClass, StreamHandle, u16, Vec<u8>)>,
    /// Async calls delivered but not yet completed.
    pub held: Vec<CallId>,
    pub max_outstanding: usize,
    pub closed: Option<ConnError>,
    /// Trailer pieces received through `Trailer` events: (call, offset,
    /// bytes), in arrival order.
    pub trailer_pieces: Vec<(CallId, u64, Vec<u8>)>,
    /// Sync calls with a trailer, answered once it is complete: (id, code).
    pub awaiting_trailer: Vec<(CallId, u16)>,
}

/// A server app that records calls, answers sync calls with a generated
/// reply, and completes async calls at once unless `hold_async`.
pub fn recording_app(seen: Rc<RefCell<Seen>>, hold_async: bool, seed: u64) -> ServerApp {
    let mut g = Gen::new(seed, &POOL);
    Box::new(move |_now, ev, r| {
        let mut s = seen.borrow_mut();
        match ev {
            ServerEvent::Connected { .. } => s.connected = true,
            ServerEvent::Call {
                id,
                class,
                stream,
                call,
            } => {
                let mut body = Vec::new();
                call.encode_body(&mut body);
                s.calls.push((id, class, stream, call.code(), body));
                s.max_outstanding = s.max_outstanding.max(r.async_outstanding());
                if call.trailer_len() > 0 {
                    s.awaiting_trailer.push((id, call.code()));
                    // Answering now must be refused: the trailer is pending.
                    let early = r.reply(id, Err(CudaError::UNKNOWN));
                    assert!(
                        matches!(early, Err(ReplyError::TrailerIncomplete { .. })),
                        "{early:?}"
                    );
                    return;
                }
                match class {
                    CallClass::Sync => {
                        let reply = Reply::generate(call.code(), &mut g).expect("sync has reply");
                        r.reply(id, Ok(reply)).expect("reply accepted");
                    }
                    _ if hold_async => s.held.push(id),
                    _ => r.complete_async(id, Ok(())).expect("complete accepted"),
                }
            }
            ServerEvent::Trailer {
                id,
                bytes,
                offset,
                done,
            } => {
                s.trailer_pieces.push((id, offset, bytes.to_vec()));
                if done {
                    // A call answered internally (sticky) was never seen.
                    let Some(pos) = s.awaiting_trailer.iter().position(|a| a.0 == id) else {
                        return;
                    };
                    let (_, code) = s.awaiting_trailer.remove(pos);
                    let reply = Reply::generate(code, &mut g).expect("sync has reply");
                    r.reply(id, Ok(reply)).expect("reply accepted");
                }
            }
            ServerEvent::Closed { error } => s.closed = Some(error),
        }
    })
}

pub fn harness(
    seed: u64,
    ccfg: ClientConfig,
    scfg: ServerConfig,
    net: NetConfig,
    app: ServerApp,
) -> Harness {
    let client = Client::new(ccfg, Timestamp::ZERO);
    let server = Server::new(scfg, Timestamp::ZERO);
    Harness::new(client, server, Net::new(net, seed), app)
}
