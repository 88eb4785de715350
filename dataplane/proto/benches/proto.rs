//! Criterion benches of the protocol hot paths, no transport involved:
//! the client side of 64-byte async calls (submit into a batch, hand the
//! batch out), the server side (decode, window check, deliver, complete),
//! both together with credit return, and a full null sync round trip
//! (encode, decode, reply, decode).

use criterion::{criterion_main, BatchSize, Criterion, Throughput};
use rgpu_proto::sim::connect;
use rgpu_proto::{
    AsyncNop, Blob, Client, ClientConfig, ClientEvent, Framing, Nop, NopReply, Reply, Server,
    ServerConfig, ServerEvent, StreamHandle, Timestamp,
};

const CALLS: u64 = 4096;
const PAYLOAD: [u8; 28] = [0; 28];

fn pair(window_calls: u32) -> (Client, Server) {
    let token = [1; 32];
    connect(
        ClientConfig {
            token,
            framing: Framing::Message,
            ..ClientConfig::default()
        },
        ServerConfig {
            token,
            framing: Framing::Message,
            window_calls,
            window_bytes: u32::MAX,
            credit_return_calls: window_calls / 4,
            ..ServerConfig::default()
        },
        Timestamp::ZERO,
    )
}

fn submit_n(client: &mut Client, n: u64, wire: &mut Vec<u8>) {
    let now = Timestamp(1);
    for _ in 0..n {
        let call = AsyncNop {
            payload: Blob(&PAYLOAD),
        };
        // Window is larger than n in the client-only bench.
        let _ = client.submit(now, &call, StreamHandle(0));
    }
    client.flush();
    while client.poll_transmit(wire).is_some() {}
}

fn client_async(c: &mut Criterion) {
    let mut g = c.benchmark_group("async_nop_64B");
    g.throughput(Throughput::Elements(CALLS));
    g.bench_function("client_submit_and_transmit", |b| {
        let mut wire = Vec::with_capacity(1 << 20);
        b.iter_batched_ref(
            || {
                // Warm the client's output buffer with a first round.
                let mut client = pair(CALLS as u32 * 2).0;
                submit_n(&mut client, CALLS, &mut Vec::with_capacity(1 << 20));
                client
            },
            |client| {
                wire.clear();
                submit_n(client, CALLS, &mut wire);
            },
            BatchSize::SmallInput,
        );
    });
    g.bench_function("server_decode_and_complete", |b| {
        b.iter_batched_ref(
            || {
                let (mut client, server) = pair(CALLS as u32 * 2);
                let mut wire = Vec::with_capacity(1 << 20);
                submit_n(&mut client, CALLS, &mut wire);
                (server, wire, Vec::with_capacity(1 << 12))
            },
            |(server, wire, back)| {
                let _ = server.handle_input(Timestamp(1), wire, |ev, r| {
                    if let ServerEvent::Call { id, .. } = ev {
                        let _ = r.complete_async(id, Ok(()));
                    }
                });
                while server.poll_transmit(back).is_some() {}
            },
            BatchSize::SmallInput,
        );
    });
    g.bench_function("pipeline_with_credit_return", |b| {
        let (mut client, mut server) = pair(1024);
        let mut wire = Vec::with_capacity(1 << 20);
        let mut back = Vec::with_capacity(1 << 16);
        b.iter(|| {
            let now = Timestamp(1);
            let mut sent = 0;
            while sent < CALLS {
                let call = AsyncNop {
                    payload: Blob(&PAYLOAD),
                };
                if client.submit(now, &call, StreamHandle(0)).is_ok() {
                    sent += 1;
                } else {
                    client.flush();
                    pump(&mut client, &mut server, &mut wire, &mut back);
                }
            }
            client.flush();
            pump(&mut client, &mut server, &mut wire, &mut back);
        });
    });
    g.finish();
}

fn pump(client: &mut Client, server: &mut Server, wire: &mut Vec<u8>, back: &mut Vec<u8>) {
    let now = Timestamp(1);
    while client.poll_transmit(wire).is_some() {
        let _ = server.handle_input(now, wire, |ev, r| {
            if let ServerEvent::Call { id, .. } = ev {
                let _ = r.complete_async(id, Ok(()));
            }
        });
        wire.clear();
    }
    while server.poll_transmit(back).is_some() {
        let _ = client.handle_input(now, back, |_| {});
        back.clear();
    }
}

fn null_sync_round_trip(c: &mut Criterion) {
    c.bench_function("nop_sync_round_trip", |b| {
        let (mut client, mut server) = pair(1024);
        let mut wire = Vec::with_capacity(4096);
        let mut back = Vec::with_capacity(4096);
        b.iter(|| {
            let now = Timestamp(1);
            let id = client.submit(now, &Nop {}, StreamHandle(0));
            while client.poll_transmit(&mut wire).is_some() {}
            let _ = server.handle_input(now, &wire, |ev, r| {
                if let ServerEvent::Call { id, .. } = ev {
                    let _ = r.reply(id, Ok(Reply::NopReply(NopReply {})));
                }
            });
            wire.clear();
            while server.poll_transmit(&mut back).is_some() {}
            let mut done = false;
            let _ = client.handle_input(now, &back, |ev| {
                done |= matches!(ev, ClientEvent::Reply { id: got, .. } if Ok(got) == id);
            });
            back.clear();
            assert!(done);
        });
    });
}

// `criterion_group!` expands to an undocumented `pub fn`.
mod group {
    #![allow(missing_docs)]
    use super::{client_async, null_sync_round_trip};
    criterion::criterion_group!(benches, client_async, null_sync_round_trip);
}
use group::benches;
criterion_main!(benches);
