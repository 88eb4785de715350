//! The copy engine: host↔device copies planned by where the host memory lives and which
//! transport carries them, with several chunks in flight.
//!
//! | host memory | shm | tcp |
//! |---|---|---|
//! | pinned (arena) | one call naming the arena offset: zero copy | — (no arena) |
//! | pageable, registered, local pinned | staged through [`STAGE_DEPTH`] arena slabs of [`STAGE_CHUNK_BYTES`], pipelined | H2D: trailers of up to [`TRAILER_CHUNK_BYTES`] sent straight from the caller's memory; D2H: inline replies of [`INLINE_CHUNK_BYTES`], [`INLINE_DEPTH`] in flight |
//!
//! On rdma with a registered host region (`docs/rdma.md`, "Pinned host memory") the region
//! plays the arena's part: pinned memory lives in it ([`htod_arena`] / [`dtoh_arena`]: one
//! call naming the offset; the worker moves the bytes with RDMA READ / WRITE), and pageable
//! copies are staged through slabs of it exactly as on shm. Without a region (registration
//! refused) rdma has neither arena nor trailers: both directions go inline in
//! [`MESSAGE_CHUNK_BYTES`] chunks, [`INLINE_DEPTH`] in flight.
//!
//! Copies of at most [`SMALL_COPY_BYTES`] travel inline in one call (cheapest for small
//! sizes). When no staging slab can be had (arena full), copies fall back to inline chunks.
//! Every pipeline drains all of its outstanding calls before returning, also on error, so no
//! reply is left behind and no slab is freed while the worker may still use it.

use std::collections::VecDeque;

use rgpu_dataplane::shm::Slab;
use rgpu_proto::{
    Call, CallId, Dest, DevicePtr, MemcpyDtoH, MemcpyHtoD, Payload, Reply, StreamHandle,
    MAX_INLINE_BYTES, MAX_TRAILER_BYTES,
};

use super::conn::{CallError, Conn};
use super::pinned;
use super::session::to_curesult;
use crate::cuda_types::{CUresult, CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_UNKNOWN};

/// Copies up to this size go inline in one call.
pub const SMALL_COPY_BYTES: usize = 32 << 10;
/// Chunk of a copy staged through the shm arena.
pub const STAGE_CHUNK_BYTES: usize = 4 << 20;
/// Staging slabs (chunks in flight) per copy on shm.
pub const STAGE_DEPTH: usize = 4;
/// Largest trailer of one H2D call on tcp.
pub const TRAILER_CHUNK_BYTES: usize = 64 << 20;
/// H2D trailer calls in flight on tcp.
pub const TRAILER_DEPTH: usize = 2;
/// Chunk of a D2H copy answered inline (tcp, and the fallback). 1 MiB measured faster than
/// 4 MiB over tcp loopback (less reassembly per frame on the client).
pub const INLINE_CHUNK_BYTES: usize = 1 << 20;
/// Inline D2H calls in flight.
pub const INLINE_DEPTH: usize = 4;
/// Inline chunk on message-framed transports (rdma), whose messages are bounded; the size
/// every transport used before pipelining.
pub const MESSAGE_CHUNK_BYTES: usize = 1 << 20;

const _: () = assert!(INLINE_CHUNK_BYTES as u64 <= MAX_INLINE_BYTES as u64);
const _: () = assert!(TRAILER_CHUNK_BYTES as u64 <= MAX_TRAILER_BYTES);
const _: () = assert!(SMALL_COPY_BYTES <= MESSAGE_CHUNK_BYTES);
const _: () = assert!(MESSAGE_CHUNK_BYTES <= INLINE_CHUNK_BYTES);
// The protocol client allows 64 sync calls outstanding.
const _: () = assert!(STAGE_DEPTH <= 64 && TRAILER_DEPTH <= 64 && INLINE_DEPTH <= 64);

/// One chunk of a copy: `len` bytes at byte `offset` of the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Offset from the start of the copy.
    pub offset: usize,
    /// Length in bytes (never 0).
    pub len: usize,
}

/// Splits a copy of `len` bytes into chunks of at most `chunk` bytes (`chunk > 0`).
pub fn plan(len: usize, chunk: usize) -> impl Iterator<Item = Chunk> {
    assert!(chunk > 0, "chunk size must be positive");
    (0..len.div_ceil(chunk)).map(move |i| {
        let offset = i * chunk;
        Chunk {
            offset,
            len: chunk.min(len - offset),
        }
    })
}

/// Device address `base + offset`, refusing wrap-around.
pub fn dev_at(base: u64, offset: usize) -> Result<DevicePtr, CUresult> {
    u64::try_from(offset)
        .ok()
        .and_then(|o| base.checked_add(o))
        .map(DevicePtr)
        .ok_or(CUDA_ERROR_INVALID_VALUE)
}

/// How one call of a copy ended.
type Outcome = Result<(), CUresult>;

/// Calls in flight, oldest first, each with its job and (once answered) its outcome.
struct Inflight<J> {
    name: &'static str,
    q: VecDeque<(CallId, J, Option<Outcome>)>,
    /// The first failure; later calls are not submitted, outstanding ones are drained.
    error: Option<CUresult>,
}

impl<J> Inflight<J> {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            q: VecDeque::new(),
            error: None,
        }
    }

    fn len(&self) -> usize {
        self.q.len()
    }

    fn push(&mut self, id: CallId, job: J) {
        self.q.push_back((id, job, None));
    }

    fn fail(&mut self, e: CUresult) {
        self.error.get_or_insert(e);
    }

    /// Waits until the oldest call is answered; `on_reply` checks (and consumes) a reply,
    /// returning false for a reply of the wrong kind. `Err` only when the connection is
    /// gone (no outstanding call will be answered; the queue is then emptied).
    fn pop(
        &mut self,
        conn: &mut Conn,
        on_reply: &mut dyn FnMut(&J, &Reply<'_>) -> bool,
    ) -> Result<Option<(J, Outcome)>, CUresult> {
        loop {
            match self.q.front() {
                None => return Ok(None),
                Some((_, _, Some(_))) => {
                    let Some((_, job, Some(outcome))) = self.q.pop_front() else {
                        return Err(CUDA_ERROR_UNKNOWN);
                    };
                    if let Err(e) = outcome {
                        self.fail(e);
                    }
                    return Ok(Some((job, outcome)));
                }
                Some(_) => {}
            }
            let name = self.name;
            let q = &mut self.q;
            let got = conn.collect_replies(name, &mut |id, r| {
                let Some(slot) = q.iter_mut().find(|(i, _, o)| *i == id && o.is_none()) else {
                    return;
                };
                slot.2 = Some(match r {
                    Ok(reply) if on_reply(&slot.1, reply) => Ok(()),
                    Ok(_) => Err(CUDA_ERROR_UNKNOWN),
                    Err(e) => Err(to_curesult(name, &e)),
                });
            });
            if let Err(e) = got {
                let code = to_curesult(name, &e);
                self.q.clear();
                self.fail(code);
                return Err(code);
            }
        }
    }

    /// Drains every outstanding call; the first failure of the whole copy.
    fn finish(
        mut self,
        conn: &mut Conn,
        on_reply: &mut dyn FnMut(&J, &Reply<'_>) -> bool,
        on_done: &mut dyn FnMut(&mut Conn, J, Outcome),
    ) -> Result<(), CUresult> {
        while let Ok(Some((job, outcome))) = self.pop(conn, on_reply) {
            on_done(conn, job, outcome);
        }
        self.error.map_or(Ok(()), Err)
    }
}

fn submit(
    conn: &mut Conn,
    call: &Call<'_>,
    stream: StreamHandle,
    trailer: &[u8],
) -> Result<CallId, CUresult> {
    conn.submit_sync_on(call, stream, trailer)
        .map_err(|e| to_curesult(call.name(), &e))
}

fn sync_unit(conn: &mut Conn, call: &Call<'_>, stream: StreamHandle) -> Result<(), CUresult> {
    let name = call.name();
    conn.sync_on(call, stream, |r| {
        matches!(r, Reply::MemcpyHtoDReply(_) | Reply::MemcpyDtoHReply(_)).then_some(())
    })
    .map_err(|e: CallError| to_curesult(name, &e))
}

/// Host-to-device copy of the pinned arena bytes at `arena_offset`: one call, zero copy.
pub fn htod_arena(
    conn: &mut Conn,
    stream: StreamHandle,
    dst: u64,
    arena_offset: u64,
    len: usize,
) -> Result<(), CUresult> {
    let call = Call::MemcpyHtoD(MemcpyHtoD {
        dst: DevicePtr(dst),
        src: Payload::Arena {
            offset: arena_offset,
            len: len as u64,
        },
    });
    sync_unit(conn, &call, stream)
}

/// Device-to-host copy into the pinned arena bytes at `arena_offset`: one call, zero copy.
pub fn dtoh_arena(
    conn: &mut Conn,
    stream: StreamHandle,
    arena_offset: u64,
    src: u64,
    len: usize,
) -> Result<(), CUresult> {
    let call = Call::MemcpyDtoH(MemcpyDtoH {
        src: DevicePtr(src),
        len: len as u64,
        dst: Dest::Arena {
            offset: arena_offset,
        },
    });
    let name = call.name();
    conn.sync_on(&call, stream, |r| match r {
        Reply::MemcpyDtoHReply(d) => matches!(
            d.data,
            Payload::Arena { offset, len: n } if offset == arena_offset && n == len as u64
        )
        .then_some(()),
        _ => None,
    })
    .map_err(|e| to_curesult(name, &e))
}

/// Host-to-device copy from ordinary host bytes, by the best path the transport offers.
pub fn htod(conn: &mut Conn, stream: StreamHandle, dst: u64, src: &[u8]) -> Result<(), CUresult> {
    if src.is_empty() {
        return Ok(());
    }
    if src.len() <= SMALL_COPY_BYTES {
        return htod_inline(conn, stream, dst, src);
    }
    if conn.has_arena() {
        return htod_staged(conn, stream, dst, src);
    }
    if conn.has_trailers() {
        return htod_trailers(conn, stream, dst, src);
    }
    htod_inline(conn, stream, dst, src)
}

/// The inline chunk size for this connection's transport.
fn inline_chunk(conn: &Conn) -> usize {
    if conn.is_shm() || conn.has_trailers() {
        INLINE_CHUNK_BYTES
    } else {
        MESSAGE_CHUNK_BYTES
    }
}

/// Device-to-host copy into ordinary host bytes, by the best path the transport offers.
pub fn dtoh(
    conn: &mut Conn,
    stream: StreamHandle,
    dst: &mut [u8],
    src: u64,
) -> Result<(), CUresult> {
    if dst.is_empty() {
        return Ok(());
    }
    if conn.has_arena() && dst.len() > SMALL_COPY_BYTES {
        return dtoh_staged(conn, stream, dst, src);
    }
    dtoh_inline(conn, stream, dst, src)
}

/// Inline chunks, one call each, [`INLINE_DEPTH`] in flight (payload copied into frames).
fn htod_inline(
    conn: &mut Conn,
    stream: StreamHandle,
    dst: u64,
    src: &[u8],
) -> Result<(), CUresult> {
    let mut fl: Inflight<()> = Inflight::new("cuMemcpyHtoD_v2");
    let mut ok = |_: &(), r: &Reply<'_>| matches!(r, Reply::MemcpyHtoDReply(_));
    for c in plan(src.len(), inline_chunk(conn)) {
        if fl.len() >= INLINE_DEPTH && fl.pop(conn, &mut ok).is_err() {
            break;
        }
        if fl.error.is_some() {
            break;
        }
        let call = Call::MemcpyHtoD(MemcpyHtoD {
            dst: dev_at(dst, c.offset)?,
            src: Payload::Inline(&src[c.offset..c.offset + c.len]),
        });
        match submit(conn, &call, stream, &[]) {
            Ok(id) => fl.push(id, ()),
            Err(e) => fl.fail(e),
        }
    }
    fl.finish(conn, &mut ok, &mut |_, _, _| {})
}

/// Trailer chunks sent straight from `src` (tcp).
fn htod_trailers(
    conn: &mut Conn,
    stream: StreamHandle,
    dst: u64,
    src: &[u8],
) -> Result<(), CUresult> {
    let mut fl: Inflight<()> = Inflight::new("cuMemcpyHtoD_v2");
    let mut ok = |_: &(), r: &Reply<'_>| matches!(r, Reply::MemcpyHtoDReply(_));
    for c in plan(src.len(), TRAILER_CHUNK_BYTES) {
        if fl.len() >= TRAILER_DEPTH && fl.pop(conn, &mut ok).is_err() {
            break;
        }
        if fl.error.is_some() {
            break;
        }
        let call = Call::MemcpyHtoD(MemcpyHtoD {
            dst: dev_at(dst, c.offset)?,
            src: Payload::Trailing { len: c.len as u64 },
        });
        match submit(conn, &call, stream, &src[c.offset..c.offset + c.len]) {
            Ok(id) => fl.push(id, ()),
            Err(e) => fl.fail(e),
        }
    }
    fl.finish(conn, &mut ok, &mut |_, _, _| {})
}

/// Up to [`STAGE_DEPTH`] slabs of `chunk` bytes from the connection's pool (the shm arena
/// or rdma's host region; fewer when it is short).
fn stage_slabs(conn: &mut Conn, total: usize) -> Vec<Slab> {
    let chunk = STAGE_CHUNK_BYTES.min(total);
    let want = STAGE_DEPTH.min(total.div_ceil(chunk));
    let mut slabs = Vec::with_capacity(want);
    if let Some(mut pool) = pinned::pool(conn) {
        for _ in 0..want {
            match pool.alloc_slab(chunk) {
                Some(s) => slabs.push(s),
                None => {
                    tracing::debug!("rgpu shim: fewer staging slabs than wanted");
                    break;
                }
            }
        }
    }
    slabs
}

fn free_slabs(conn: &mut Conn, slabs: impl IntoIterator<Item = Slab>) {
    if let Some(mut pool) = pinned::pool(conn) {
        for s in slabs {
            pool.free_slab(s);
        }
    }
}

/// Pageable bytes staged through arena slabs: chunk `k + 1` is copied in while the worker
/// consumes chunk `k`.
fn htod_staged(
    conn: &mut Conn,
    stream: StreamHandle,
    dst: u64,
    src: &[u8],
) -> Result<(), CUresult> {
    let mut free = stage_slabs(conn, src.len());
    if free.is_empty() {
        return htod_inline(conn, stream, dst, src);
    }
    let mut fl: Inflight<Slab> = Inflight::new("cuMemcpyHtoD_v2");
    let mut ok = |_: &Slab, r: &Reply<'_>| matches!(r, Reply::MemcpyHtoDReply(_));
    let chunk = STAGE_CHUNK_BYTES.min(src.len());
    for c in plan(src.len(), chunk) {
        if free.is_empty() {
            match fl.pop(conn, &mut ok) {
                Ok(Some((slab, _))) => free.push(slab),
                _ => break,
            }
        }
        if fl.error.is_some() {
            break;
        }
        let Some(slab) = free.pop() else { break };
        let staged = pinned::pool(conn).and_then(|pool| {
            pool.into_bytes_mut(Slab {
                offset: slab.offset,
                len: c.len as u64,
            })
        });
        let Some(view) = staged else {
            free.push(slab);
            fl.fail(CUDA_ERROR_UNKNOWN);
            break;
        };
        view.copy_from_slice(&src[c.offset..c.offset + c.len]);
        let call = Call::MemcpyHtoD(MemcpyHtoD {
            dst: dev_at(dst, c.offset)?,
            src: Payload::Arena {
                offset: slab.offset,
                len: c.len as u64,
            },
        });
        match submit(conn, &call, stream, &[]) {
            Ok(id) => fl.push(id, slab),
            Err(e) => {
                free.push(slab);
                fl.fail(e);
            }
        }
    }
    let mut done = Vec::new();
    let result = fl.finish(conn, &mut ok, &mut |_, slab, _| done.push(slab));
    free.extend(done);
    free_slabs(conn, free);
    result
}

/// Staged D2H job: the slab and where its bytes go.
#[derive(Debug, Clone, Copy)]
struct Out {
    slab: Slab,
    chunk: Chunk,
}

/// Device bytes staged back through arena slabs: the worker fills chunk `k + 1` while the
/// shim copies chunk `k` out.
fn dtoh_staged(
    conn: &mut Conn,
    stream: StreamHandle,
    dst: &mut [u8],
    src: u64,
) -> Result<(), CUresult> {
    let mut free = stage_slabs(conn, dst.len());
    if free.is_empty() {
        return dtoh_inline(conn, stream, dst, src);
    }
    let mut fl: Inflight<Out> = Inflight::new("cuMemcpyDtoH_v2");
    let mut ok = |j: &Out, r: &Reply<'_>| match r {
        Reply::MemcpyDtoHReply(d) => matches!(
            d.data,
            Payload::Arena { offset, len } if offset == j.slab.offset && len == j.chunk.len as u64
        ),
        _ => false,
    };
    let land = |conn: &mut Conn, j: Out, outcome: Result<(), CUresult>, dst: &mut [u8]| {
        if outcome.is_ok() {
            let bytes = pinned::pool(conn).and_then(|pool| {
                pool.into_bytes(Slab {
                    offset: j.slab.offset,
                    len: j.chunk.len as u64,
                })
            });
            match bytes {
                Some(b) => dst[j.chunk.offset..j.chunk.offset + j.chunk.len].copy_from_slice(b),
                None => return Err(CUDA_ERROR_UNKNOWN),
            }
        }
        Ok(())
    };
    let chunk = STAGE_CHUNK_BYTES.min(dst.len());
    for c in plan(dst.len(), chunk) {
        if free.is_empty() {
            match fl.pop(conn, &mut ok) {
                Ok(Some((j, outcome))) => {
                    if let Err(e) = land(conn, j, outcome, dst) {
                        fl.fail(e);
                    }
                    free.push(j.slab);
                }
                _ => break,
            }
        }
        if fl.error.is_some() {
            break;
        }
        let Some(slab) = free.pop() else { break };
        let call = Call::MemcpyDtoH(MemcpyDtoH {
            src: dev_at(src, c.offset)?,
            len: c.len as u64,
            dst: Dest::Arena {
                offset: slab.offset,
            },
        });
        match submit(conn, &call, stream, &[]) {
            Ok(id) => fl.push(id, Out { slab, chunk: c }),
            Err(e) => {
                free.push(slab);
                fl.fail(e);
            }
        }
    }
    let mut late = Ok(());
    let result = fl.finish(conn, &mut ok, &mut |conn, j, outcome| {
        if let Err(e) = land(conn, j, outcome, dst) {
            late = Err(e);
        }
        free.push(j.slab);
    });
    free_slabs(conn, free);
    result.and(late)
}

/// Inline D2H replies of [`INLINE_CHUNK_BYTES`], [`INLINE_DEPTH`] in flight.
fn dtoh_inline(
    conn: &mut Conn,
    stream: StreamHandle,
    dst: &mut [u8],
    src: u64,
) -> Result<(), CUresult> {
    let mut fl: Inflight<Chunk> = Inflight::new("cuMemcpyDtoH_v2");
    let chunks: Vec<Chunk> = plan(dst.len(), inline_chunk(conn)).collect();
    let base = dst.as_mut_ptr();
    let total = dst.len();
    // Replies land straight into `dst` from the receive callback; each chunk is a disjoint
    // part of `dst`, and the checks below keep every write inside it.
    let mut ok = |c: &Chunk, r: &Reply<'_>| match r {
        Reply::MemcpyDtoHReply(d) => match d.data {
            Payload::Inline(bytes) if bytes.len() == c.len && c.offset + c.len <= total => {
                // SAFETY: `base..base + total` is `dst`, exclusively borrowed by this
                // function; `[c.offset, c.offset + c.len)` is inside it (checked above).
                let at = base.wrapping_add(c.offset);
                // SAFETY: see above.
                let out = unsafe { std::slice::from_raw_parts_mut(at, c.len) };
                out.copy_from_slice(bytes);
                true
            }
            _ => false,
        },
        _ => false,
    };
    for c in chunks {
        if fl.len() >= INLINE_DEPTH && fl.pop(conn, &mut ok).is_err() {
            break;
        }
        if fl.error.is_some() {
            break;
        }
        let call = Call::MemcpyDtoH(MemcpyDtoH {
            src: dev_at(src, c.offset)?,
            len: c.len as u64,
            dst: Dest::Inline,
        });
        match submit(conn, &call, stream, &[]) {
            Ok(id) => fl.push(id, c),
            Err(e) => fl.fail(e),
        }
    }
    fl.finish(conn, &mut ok, &mut |_, _, _| {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_cover_exactly_once() {
        for (len, chunk) in [
            (0, 4),
            (1, 4),
            (4, 4),
            (5, 4),
            (4097, 1024),
            (10 << 20, 4 << 20),
        ] {
            let cs: Vec<Chunk> = plan(len, chunk).collect();
            let mut at = 0;
            for c in &cs {
                assert_eq!(c.offset, at);
                assert!(c.len > 0 && c.len <= chunk);
                at += c.len;
            }
            assert_eq!(at, len);
            assert_eq!(cs.len(), len.div_ceil(chunk));
        }
        let last = plan(10 << 20, 4 << 20).last().unwrap();
        assert_eq!(
            last,
            Chunk {
                offset: 8 << 20,
                len: 2 << 20
            }
        );
    }

    #[test]
    fn device_offsets_refuse_wraparound() {
        assert_eq!(dev_at(0x1000, 16), Ok(DevicePtr(0x1010)));
        assert_eq!(dev_at(u64::MAX, 1), Err(CUDA_ERROR_INVALID_VALUE));
    }
}
