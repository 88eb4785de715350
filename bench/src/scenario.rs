//! The three scenarios of the bench contract, each measured through rgpu and against its raw
//! baseline in the same run:
//! - `null-call`: one sync `Nop` round trip per iteration (what every sync CUDA call pays);
//! - `async-calls`: one thread submitting 64-byte async calls as fast as it can while the serving
//!   side consumes them (what a launch-heavy training step pays per call);
//! - `bulk`: one host-to-device copy of `--size` bytes per iteration (by arena reference over shm;
//!   over tcp as a trailer streamed right after the call's frame), landing in a "device" buffer on
//!   the serving side.

use std::time::Instant;

use rgpu_dataplane::{Transport, TransportError};
use rgpu_proto::{AsyncNop, Blob, DevicePtr, MemcpyHtoD, Nop, Payload, StreamHandle, SubmitError};

use crate::baseline;
use crate::link::{now, Link, LinkTuning, TransportChoice, TransportPair, WAIT_BOUND};
use crate::report::{new_histogram, record, timed_loop, Bandwidth, Measured, Percentiles, Report};
use crate::BenchError;

/// Opaque payload of the async call, chosen so one `AsyncNop` frame is 64 bytes on the wire
/// (32-byte header, 4-byte length prefix, 28 bytes).
const ASYNC_PAYLOAD_BYTES: usize = 28;

/// Async calls timed together; the per-call latency recorded is the group's time over its size,
/// because reading the clock around every 30-ns call would measure the clock.
const ASYNC_GROUP_CALLS: u64 = 1024;

/// Iterations run before timing starts, as a fraction of the measured ones (at least one).
fn warmup_of(iters: u64) -> u64 {
    (iters / 10).max(1)
}

/// `null-call`: sync round trips through the protocol and transport.
pub fn null_call(choice: TransportChoice, iters: u64) -> Result<Report, BenchError> {
    let warmup = warmup_of(iters);
    let mut link = Link::open(choice, LinkTuning::default())?;
    let request_bytes = nop_frame_bytes(&mut link)?;
    let ours = timed_loop(warmup, iters, |_| {
        let id = link.client.submit(now(), &Nop {}, StreamHandle(0))?;
        link.round_trip(id)
    })?;
    let stats = link.finish()?;
    if stats.calls < warmup + iters {
        return Err(BenchError::Mismatch(format!(
            "server executed {} calls, client made {}",
            stats.calls,
            warmup + iters
        )));
    }
    let (name, base) = match choice {
        TransportChoice::Shm => (
            "shared-atomic ping-pong".to_owned(),
            baseline::atomic_ping_pong(warmup, iters),
        ),
        TransportChoice::Tcp => (
            format!("blocking-socket ping-pong, {request_bytes} B"),
            baseline::socket_ping_pong(warmup, iters, request_bytes)?,
        ),
        TransportChoice::Rdma => (
            format!("raw rdma transport ping-pong (no protocol), {request_bytes} B"),
            raw_ping_pong(choice, warmup, iters, request_bytes)?,
        ),
    };
    let mut report = Report::new(choice.name(), "null-call", iters, ours, &name, base);
    report.notes.push(format!(
        "request frame {request_bytes} B; client on core 0, server on core 1"
    ));
    Ok(report)
}

/// Size of one `Nop` request frame, measured by encoding one (and answering it).
fn nop_frame_bytes(link: &mut Link) -> Result<usize, BenchError> {
    let id = link.client.submit(now(), &Nop {}, StreamHandle(0))?;
    let mut probe = Vec::new();
    while let Some(batch) = link.client.peek_transmit() {
        probe.extend_from_slice(batch);
        link.pair.client.send(batch)?;
        link.client.advance_transmit();
    }
    let deadline = Instant::now() + WAIT_BOUND;
    let mut answered = false;
    while !answered {
        link.receive(deadline, |ev| {
            answered |= matches!(ev, rgpu_proto::ClientEvent::Reply { id: got, .. } if *got == id);
        })?;
    }
    Ok(probe.len())
}

/// Tuning for the async scenario: batches of 256 calls (16 KiB, one doorbell each) and a credit
/// window of 64 batches, returned every 8 batches, so the producer rarely waits for credit.
fn async_tuning() -> LinkTuning {
    LinkTuning {
        batch_calls: 256,
        batch_bytes: 16 << 10,
        window_calls: 16 << 10,
        window_bytes: 1 << 20,
        credit_return_calls: 2048,
        ring_bytes: 4 << 20,
        arena_bytes: 4 << 20,
    }
}

/// `async-calls`: 64-byte async calls submitted back to back.
pub fn async_calls(choice: TransportChoice, iters: u64) -> Result<Report, BenchError> {
    let groups = iters.div_ceil(ASYNC_GROUP_CALLS).max(1);
    let iters = groups * ASYNC_GROUP_CALLS;
    let warmup_groups = (groups / 10).max(1);
    let tuning = async_tuning();
    let mut link = Link::open(choice, tuning)?;
    let payload = [0x42u8; ASYNC_PAYLOAD_BYTES];
    let call = AsyncNop {
        payload: Blob(&payload),
    };
    let mut histogram = new_histogram();
    let mut started = Instant::now();
    let mut credit_waits = 0u64;
    for g in 0..warmup_groups + groups {
        if g == warmup_groups {
            started = Instant::now();
        }
        let t0 = Instant::now();
        for _ in 0..ASYNC_GROUP_CALLS {
            loop {
                match link.client.submit(now(), &call, StreamHandle(1)) {
                    Ok(_) => break,
                    Err(SubmitError::Backpressure { .. }) => {
                        credit_waits += 1;
                        link.client.flush();
                        link.transmit()?;
                        link.receive(Instant::now() + WAIT_BOUND, |_| {})?;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if link.client.peek_transmit().is_some() {
                link.transmit()?;
            }
        }
        if g >= warmup_groups {
            record(
                &mut histogram,
                (t0.elapsed().as_nanos() as u64) / ASYNC_GROUP_CALLS,
            );
        }
    }
    // A sync call behind the stream drains it: when it is answered, every async call ran.
    let id = link.client.submit(now(), &Nop {}, StreamHandle(1))?;
    link.round_trip(id)?;
    let elapsed = started.elapsed();
    let stats = link.finish()?;
    let total = (warmup_groups + groups) * ASYNC_GROUP_CALLS + 1;
    if stats.calls < total {
        return Err(BenchError::Mismatch(format!(
            "server executed {} calls, client made {total}",
            stats.calls
        )));
    }
    let ours = Measured {
        latency: Percentiles::of(&histogram),
        ops_per_sec: iters as f64 / elapsed.as_secs_f64(),
    };
    let frame_bytes = 64usize;
    let base = raw_async(choice, iters, frame_bytes, tuning)?;
    let name = format!(
        "raw {} transport, {frame_bytes} B records, {} per batch, no protocol",
        choice.name(),
        tuning.batch_calls
    );
    let mut report = Report::new(choice.name(), "async-calls", iters, ours, &name, base);
    report.notes.push(format!(
        "latency is per call, averaged over groups of {ASYNC_GROUP_CALLS}; batches of {} calls; \
         credit window {} calls; producer waited for credit {credit_waits} times",
        tuning.batch_calls, tuning.window_calls
    ));
    Ok(report)
}

/// Baseline for `async-calls`: the same transport moving the same bytes in the same batches,
/// with no protocol on either side; the consumer only counts bytes.
fn raw_async(
    choice: TransportChoice,
    iters: u64,
    record_bytes: usize,
    tuning: LinkTuning,
) -> Result<Measured, BenchError> {
    let per_batch = tuning.batch_calls as usize;
    let batch = vec![0x42u8; record_bytes * per_batch];
    let batches = (iters as usize).div_ceil(per_batch) as u64;
    let total_bytes = batches * batch.len() as u64;
    let groups_per = (ASYNC_GROUP_CALLS as usize / per_batch).max(1) as u64;
    let run = |client: &mut dyn Transport| -> Result<Measured, BenchError> {
        let mut histogram = new_histogram();
        let started = Instant::now();
        let mut t0 = Instant::now();
        for b in 0..batches {
            client.send(&batch)?;
            if (b + 1) % groups_per == 0 {
                let per_call = t0.elapsed().as_nanos() as u64 / (groups_per * per_batch as u64);
                record(&mut histogram, per_call);
                t0 = Instant::now();
            }
        }
        let mut ack = [0u8; 1];
        client.recv_exact_into(&mut ack, Some(Instant::now() + WAIT_BOUND))?;
        let elapsed = started.elapsed();
        Ok(Measured {
            latency: Percentiles::of(&histogram),
            ops_per_sec: (batches * per_batch as u64) as f64 / elapsed.as_secs_f64(),
        })
    };
    let sink = move |t: &mut dyn Transport| -> Result<(), BenchError> {
        let mut got = 0u64;
        while got < total_bytes {
            got += t.recv(Some(Instant::now() + WAIT_BOUND), &mut |_| {})? as u64;
        }
        t.send(&[1])?;
        // Wait for the client to hang up, so the ack is read before the transport drops.
        let _ = t.recv(Some(Instant::now() + WAIT_BOUND), &mut |_| {});
        Ok(())
    };
    let mut pair = TransportPair::open(choice, tuning, move |t| sink(t))?;
    let measured = run(pair.client.as_mut());
    match pair.finish() {
        // The client hanging up first is how the sink is meant to end.
        Ok(()) | Err(BenchError::Transport(TransportError::PeerGone { .. })) => measured,
        Err(e) => Err(e),
    }
}

/// `bulk`: host-to-device copies of `size` bytes.
pub fn bulk(choice: TransportChoice, iters: u64, size: usize) -> Result<Report, BenchError> {
    if size == 0 || size > rgpu_proto::MAX_INLINE_BYTES as usize {
        return Err(BenchError::Setup(format!(
            "--size must be 1..={} bytes",
            rgpu_proto::MAX_INLINE_BYTES
        )));
    }
    let warmup = warmup_of(iters).min(3);
    let tuning = LinkTuning {
        arena_bytes: size.next_power_of_two().max(1 << 20) * 2,
        ..LinkTuning::default()
    };
    let mut link = Link::open(choice, tuning)?;
    let pattern = |i: usize| (i.wrapping_mul(31) >> 3) as u8;
    // Over shm the source is pinned host memory, which the shim carves out of the arena: the copy
    // travels as a reference. Over tcp it is an ordinary buffer streamed as the call's trailer:
    // one vectored send of [batch, buffer], received straight into the device buffer.
    let slab = link.pair.client.alloc_slab(size)?;
    let inline: Vec<u8> = (0..size).map(pattern).collect();
    if let Some(slab) = slab {
        link.pair.client.slab_mut(slab)?[..size].copy_from_slice(&inline);
    }
    let ours = timed_loop(warmup, iters, |_| {
        let src = match slab {
            Some(s) => Payload::Arena {
                offset: s.offset,
                len: size as u64,
            },
            None => Payload::Trailing { len: size as u64 },
        };
        let call = MemcpyHtoD {
            dst: DevicePtr(0x1_0000_0000),
            src,
        };
        let id = link.client.submit(now(), &call, StreamHandle(0))?;
        match slab {
            Some(_) => link.round_trip(id),
            None => link.round_trip_with_trailer(id, &inline),
        }
    })?;
    let stats = link.finish()?;
    let expected = (warmup + iters) * size as u64;
    if stats.bulk_bytes != expected {
        return Err(BenchError::Mismatch(format!(
            "server copied {} bytes, expected {expected}",
            stats.bulk_bytes
        )));
    }
    let source_crc = crc32fast::hash(&inline);
    if stats.device_crc != source_crc {
        return Err(BenchError::Mismatch(format!(
            "device buffer crc32 {:#010x} differs from the source's {source_crc:#010x}",
            stats.device_crc
        )));
    }
    let (name, base) = match choice {
        TransportChoice::Shm => (
            "memcpy of the payload".to_owned(),
            baseline::memcpy_bandwidth(warmup, iters, size),
        ),
        TransportChoice::Tcp => (
            "blocking loopback socket write + 1-byte ack".to_owned(),
            baseline::socket_bandwidth(warmup, iters, size)?,
        ),
        TransportChoice::Rdma => (
            "raw rdma transport send + 1-byte ack (no protocol)".to_owned(),
            raw_bulk(choice, warmup, iters, size)?,
        ),
    };
    let gbps = |m: &Measured| size as f64 * m.ops_per_sec / 1e9;
    let mut report = Report::new(choice.name(), "bulk", iters, ours, &name, base);
    report.bandwidth = Some(Bandwidth {
        size_bytes: size as u64,
        gbytes_per_sec: gbps(&ours),
        baseline_gbytes_per_sec: gbps(&base),
        ratio_to_baseline: gbps(&ours) / gbps(&base),
    });
    report.notes.push(match choice {
        TransportChoice::Shm => {
            "source in the shared arena (pinned host memory); sent by reference".into()
        }
        TransportChoice::Tcp => {
            "payload streamed as a trailer after the frame (one vectored send, received in place)"
                .into()
        }
        TransportChoice::Rdma => "payload streamed as a trailer after the frame (RDMA WRITE with \
             immediate into the serving side's registered ring)"
            .into(),
    });
    Ok(report)
}

/// Baseline for `null-call` where no kernel-level equivalent exists (rdma): the same transport
/// echoing `bytes`-byte messages, with no protocol on either side.
fn raw_ping_pong(
    choice: TransportChoice,
    warmup: u64,
    iters: u64,
    bytes: usize,
) -> Result<Measured, BenchError> {
    let echo = move |t: &mut dyn Transport| -> Result<(), BenchError> {
        let mut msg = vec![0u8; bytes];
        loop {
            match t.recv_exact_into(&mut msg, Some(Instant::now() + WAIT_BOUND)) {
                Ok(()) => t.send(&msg)?,
                Err(TransportError::PeerGone { .. }) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    };
    let mut pair = TransportPair::open(choice, LinkTuning::default(), move |t| echo(t))?;
    let request = vec![0x5au8; bytes];
    let mut reply = vec![0u8; bytes];
    let measured = timed_loop(warmup, iters, |_| -> Result<(), BenchError> {
        pair.client.send(&request)?;
        pair.client
            .recv_exact_into(&mut reply, Some(Instant::now() + WAIT_BOUND))?;
        Ok(())
    });
    pair.finish()?;
    let measured = measured?;
    if reply != request {
        return Err(BenchError::Mismatch("echoed bytes differ".into()));
    }
    Ok(measured)
}

/// Baseline for `bulk` where no kernel-level equivalent exists (rdma): the same transport
/// moving `size` bytes per iteration, acknowledged with one byte, with no protocol.
fn raw_bulk(
    choice: TransportChoice,
    warmup: u64,
    iters: u64,
    size: usize,
) -> Result<Measured, BenchError> {
    let total = warmup + iters;
    let sink = move |t: &mut dyn Transport| -> Result<(), BenchError> {
        let mut body = vec![0u8; size];
        for _ in 0..total {
            t.recv_exact_into(&mut body, Some(Instant::now() + WAIT_BOUND))?;
            t.send(&[1])?;
        }
        Ok(())
    };
    let mut pair = TransportPair::open(choice, LinkTuning::default(), move |t| sink(t))?;
    let body = vec![0x33u8; size];
    let mut ack = [0u8; 1];
    let measured = timed_loop(warmup, iters, |_| -> Result<(), BenchError> {
        pair.client.send(&body)?;
        pair.client
            .recv_exact_into(&mut ack, Some(Instant::now() + WAIT_BOUND))?;
        Ok(())
    });
    let served = pair.finish();
    let measured = measured?;
    served?;
    Ok(measured)
}
