//! Protocol-level scenarios against the emulated backend, generic over the
//! connection (sim harness, shm, tcp).

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rgpu_proto::*;

use super::{arena_put, Conn, QUOTA};

/// The legacy default stream.
pub const S0: StreamHandle = StreamHandle(0);

/// How a host-to-device payload travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// In the frame.
    Inline,
    /// By arena reference (shm only).
    Arena,
    /// As a trailer after the frame.
    Trailer,
}

/// Random bytes from `seed`.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Little-endian bytes of floats.
pub fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Floats from little-endian bytes.
pub fn to_f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

pub fn nop<C: Conn>(c: &mut C) -> Result<(), CudaError> {
    c.sync(&Call::Nop(Nop {}), S0, None, |_| ())
}

pub fn alloc<C: Conn>(c: &mut C, bytes: u64) -> Result<DevicePtr, CudaError> {
    c.sync(&Call::MemAlloc(MemAlloc { bytes }), S0, None, |r| match r {
        Reply::MemAllocReply(a) => a.ptr,
        other => panic!("unexpected {other:?}"),
    })
}

pub fn free<C: Conn>(c: &mut C, ptr: DevicePtr) -> Result<(), CudaError> {
    c.sync(&Call::MemFree(MemFree { ptr }), S0, None, |_| ())
}

pub fn mem_info<C: Conn>(c: &mut C) -> (u64, u64) {
    c.sync(&Call::MemGetInfo(MemGetInfo {}), S0, None, |r| match r {
        Reply::MemInfo(m) => (m.free, m.total),
        other => panic!("unexpected {other:?}"),
    })
    .unwrap()
}

pub fn h2d<C: Conn>(c: &mut C, dst: DevicePtr, data: &[u8], via: Via) -> Result<(), CudaError> {
    match via {
        Via::Inline => c.sync(
            &Call::MemcpyHtoD(MemcpyHtoD {
                dst,
                src: Payload::Inline(data),
            }),
            S0,
            None,
            |_| (),
        ),
        Via::Trailer => c.sync(
            &Call::MemcpyHtoD(MemcpyHtoD {
                dst,
                src: Payload::Trailing {
                    len: data.len() as u64,
                },
            }),
            S0,
            Some(data),
            |_| (),
        ),
        Via::Arena => {
            let t = c.shm().expect("arena needs shm");
            let slab = arena_put(t, data);
            let res = c.sync(
                &Call::MemcpyHtoD(MemcpyHtoD {
                    dst,
                    src: Payload::Arena {
                        offset: slab.offset,
                        len: data.len() as u64,
                    },
                }),
                S0,
                None,
                |_| (),
            );
            c.shm().unwrap().free_slab(slab).unwrap();
            res
        }
    }
}

pub fn d2h<C: Conn>(
    c: &mut C,
    src: DevicePtr,
    len: u64,
    arena: bool,
) -> Result<Vec<u8>, CudaError> {
    if !arena {
        return c.sync(
            &Call::MemcpyDtoH(MemcpyDtoH {
                src,
                len,
                dst: Dest::Inline,
            }),
            S0,
            None,
            |r| match r {
                Reply::MemcpyDtoHReply(MemcpyDtoHReply {
                    data: Payload::Inline(b),
                }) => b.to_vec(),
                other => panic!("unexpected {other:?}"),
            },
        );
    }
    let slab = c.shm().unwrap().alloc_slab(len.max(1) as usize).unwrap();
    let res = c.sync(
        &Call::MemcpyDtoH(MemcpyDtoH {
            src,
            len,
            dst: Dest::Arena {
                offset: slab.offset,
            },
        }),
        S0,
        None,
        |r| match r {
            Reply::MemcpyDtoHReply(MemcpyDtoHReply {
                data: Payload::Arena { offset, len: got },
            }) => {
                assert_eq!((*offset, *got), (slab.offset, len));
            }
            other => panic!("unexpected {other:?}"),
        },
    );
    let t = c.shm().unwrap();
    let out = res.map(|()| t.slab(slab).unwrap()[..len as usize].to_vec());
    t.free_slab(slab).unwrap();
    out
}

pub fn ctx_sync<C: Conn>(c: &mut C) -> Result<(), CudaError> {
    c.sync(&Call::CtxSynchronize(CtxSynchronize {}), S0, None, |_| ())
}

/// Client handle values for streams and events, distinct across every
/// session of the test process (so one session naming another's handle is
/// a real cross-session probe).
static NEXT_CLIENT_HANDLE: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0x10_0000);

/// A fresh client-chosen handle value.
pub fn client_handle() -> u64 {
    NEXT_CLIENT_HANDLE.fetch_add(0x10, std::sync::atomic::Ordering::Relaxed)
}

/// Creates a non-blocking stream with a client-chosen handle (async: no
/// round trip; a failure would surface at the next sync call).
pub fn stream_create<C: Conn>(c: &mut C) -> StreamHandle {
    let stream = StreamHandle(client_handle());
    stream_create_as(c, stream);
    stream
}

/// Sends `StreamCreate` for the given client handle.
pub fn stream_create_as<C: Conn>(c: &mut C, stream: StreamHandle) {
    c.submit_async(
        &Call::StreamCreate(StreamCreate {
            stream,
            flags: 1,
            priority: 0,
        }),
        S0,
    );
}

/// Creates an event with a client-chosen handle (async).
pub fn event_create<C: Conn>(c: &mut C, flags: u32) -> EventHandle {
    let event = EventHandle(client_handle());
    c.submit_async(&Call::EventCreate(EventCreate { event, flags }), S0);
    event
}

/// Loads `image` with a hash derived from its bytes.
pub fn module_load<C: Conn>(c: &mut C, image: &[u8]) -> Result<ModuleHandle, CudaError> {
    c.sync(
        &Call::ModuleLoad(ModuleLoad {
            hash: hash_of(image),
            image: Blob(image),
        }),
        S0,
        None,
        |r| match r {
            Reply::ModuleLoaded(m) => m.module,
            other => panic!("unexpected {other:?}"),
        },
    )
}

/// A stand-in 32-byte content key (tests only need distinct keys).
pub fn hash_of(image: &[u8]) -> [u8; 32] {
    let mut h = [0u8; 32];
    for (i, chunk) in image.chunks(32).enumerate() {
        for (j, b) in chunk.iter().enumerate() {
            h[j] = h[j].wrapping_mul(31).wrapping_add(*b ^ i as u8);
        }
    }
    h[31] ^= image.len() as u8;
    h
}

pub fn lookup<C: Conn>(
    c: &mut C,
    module: ModuleHandle,
    name: &str,
) -> Result<(FunctionHandle, Vec<(u32, u32)>), CudaError> {
    c.sync(
        &Call::FunctionLookup(FunctionLookup {
            module,
            name: Blob(name.as_bytes()),
        }),
        S0,
        None,
        |r| match r {
            Reply::FunctionInfo(f) => (
                f.function,
                f.params
                    .0
                    .iter()
                    .map(|p| (p.offset.get(), p.size.get()))
                    .collect(),
            ),
            other => panic!("unexpected {other:?}"),
        },
    )
}

/// Packs parameters per a layout returned by function lookup.
pub fn pack(layout: &[(u32, u32)], args: &[&[u8]]) -> Vec<u8> {
    assert_eq!(layout.len(), args.len());
    let end = layout
        .iter()
        .map(|&(o, s)| (o + s) as usize)
        .max()
        .unwrap_or(0);
    let mut out = vec![0u8; end];
    for (&(o, s), a) in layout.iter().zip(args) {
        assert_eq!(a.len(), s as usize, "argument size per layout");
        out[o as usize..(o + s) as usize].copy_from_slice(a);
    }
    out
}

pub fn launch<C: Conn>(
    c: &mut C,
    function: FunctionHandle,
    grid: u32,
    block: u32,
    params: &[u8],
    stream: StreamHandle,
) {
    c.submit_async(
        &Call::Launch(Launch {
            function,
            grid: [grid, 1, 1],
            block: [block, 1, 1],
            shared_mem_bytes: 0,
            params: Blob(params),
        }),
        stream,
    );
}

// ---------------------------------------------------------------- scenarios

/// Alloc, free, double free, and memory info reporting the quota.
pub fn alloc_free_and_info<C: Conn>(c: &mut C) {
    let (free0, total) = mem_info(c);
    assert_eq!(total, QUOTA, "total memory is the quota");
    assert_eq!(free0, QUOTA);
    let a = alloc(c, 1000).unwrap();
    let b = alloc(c, 1 << 20).unwrap();
    assert_ne!(a, b);
    assert!(a.0 != 0 && a.0.is_multiple_of(256));
    let (free1, _) = mem_info(c);
    assert_eq!(free1, QUOTA - 1024 - (1 << 20));
    free(c, a).unwrap();
    assert_eq!(free(c, a), Err(CudaError::INVALID_VALUE), "double free");
    free(c, b).unwrap();
    assert_eq!(mem_info(c).0, QUOTA);
    assert_eq!(alloc(c, 0), Err(CudaError::INVALID_VALUE));
}

/// Host-to-device and back, checksummed, for each size.
pub fn memcpy_roundtrip<C: Conn>(c: &mut C, sizes: &[usize], via: &[Via], arena_d2h: bool) {
    for (i, &size) in sizes.iter().enumerate() {
        for (j, &v) in via.iter().enumerate() {
            let data = bytes((i * 10 + j) as u64, size);
            let p = alloc(c, size as u64).unwrap();
            h2d(c, p, &data, v).unwrap();
            let back = d2h(c, p, size as u64, false).unwrap();
            assert_eq!(
                crc32fast::hash(&back),
                crc32fast::hash(&data),
                "size {size} via {v:?}"
            );
            if arena_d2h {
                let back = d2h(c, p, size as u64, true).unwrap();
                assert_eq!(
                    crc32fast::hash(&back),
                    crc32fast::hash(&data),
                    "arena d2h {size}"
                );
            }
            free(c, p).unwrap();
        }
    }
}

/// Memsets of each width, D2D within and across allocations, async variants.
pub fn memset_and_d2d<C: Conn>(c: &mut C) {
    let p = alloc(c, 64).unwrap();
    let q = alloc(c, 64).unwrap();
    let set = |c: &mut C, dst: DevicePtr, width, value, count| {
        c.sync(
            &Call::Memset(Memset {
                dst,
                width,
                value,
                count,
            }),
            S0,
            None,
            |_| (),
        )
    };
    set(c, p, MemsetWidth::D8, 0x1ab, 64).unwrap();
    assert_eq!(d2h(c, p, 64, false).unwrap(), vec![0xab; 64]);
    set(c, DevicePtr(p.0 + 2), MemsetWidth::D16, 0xbeef_1234, 3).unwrap();
    assert_eq!(
        d2h(c, p, 10, false).unwrap(),
        vec![0xab, 0xab, 0x34, 0x12, 0x34, 0x12, 0x34, 0x12, 0xab, 0xab]
    );
    set(c, DevicePtr(p.0 + 4), MemsetWidth::D32, 0xdead_beef, 2).unwrap();
    assert_eq!(
        d2h(c, DevicePtr(p.0 + 4), 8, false).unwrap(),
        [0xefu8, 0xbe, 0xad, 0xde, 0xef, 0xbe, 0xad, 0xde]
    );
    assert_eq!(
        set(c, DevicePtr(p.0 + 1), MemsetWidth::D32, 0, 1),
        Err(CudaError::INVALID_VALUE),
        "misaligned D32"
    );
    assert_eq!(
        set(c, p, MemsetWidth::D32, 0, 17),
        Err(CudaError::INVALID_VALUE),
        "past the end"
    );
    // D2D across allocations, then within one (overlapping).
    let data = bytes(7, 64);
    h2d(c, p, &data, Via::Inline).unwrap();
    c.sync(
        &Call::MemcpyDtoD(MemcpyDtoD {
            dst: q,
            src: p,
            len: 64,
        }),
        S0,
        None,
        |_| (),
    )
    .unwrap();
    assert_eq!(d2h(c, q, 64, false).unwrap(), data);
    c.sync(
        &Call::MemcpyDtoD(MemcpyDtoD {
            dst: DevicePtr(q.0 + 8),
            src: q,
            len: 32,
        }),
        S0,
        None,
        |_| (),
    )
    .unwrap();
    let mut want = data.clone();
    want.copy_within(0..32, 8);
    assert_eq!(d2h(c, q, 64, false).unwrap(), want);
    // Async variants, checked after a sync point.
    c.submit_async(
        &Call::MemsetAsync(MemsetAsync {
            dst: p,
            width: MemsetWidth::D8,
            value: 5,
            count: 64,
        }),
        S0,
    );
    c.submit_async(
        &Call::MemcpyDtoDAsync(MemcpyDtoDAsync {
            dst: q,
            src: p,
            len: 16,
        }),
        S0,
    );
    ctx_sync(c).unwrap();
    assert_eq!(
        d2h(c, q, 17, false).unwrap()[..],
        [vec![5u8; 16], vec![want[16]]].concat()
    );
    free(c, p).unwrap();
    free(c, q).unwrap();
}

/// Work on several streams keeps its order; events follow CUDA's API rules.
pub fn streams_and_events<C: Conn>(c: &mut C) {
    let s1 = stream_create(c);
    let s2 = stream_create(c);
    assert_ne!(s1, s2);
    let e1 = event_create(c, 0);
    let e2 = event_create(c, 0);
    let quiet = event_create(c, 2); // CU_EVENT_DISABLE_TIMING
    let n = 4096usize;
    let a = alloc(c, n as u64).unwrap();
    let b = alloc(c, n as u64).unwrap();
    // Unrecorded: query succeeds, elapsed is refused.
    c.sync(
        &Call::EventQuery(EventQuery { event: e1 }),
        S0,
        None,
        |_| (),
    )
    .unwrap();
    let elapsed = |c: &mut C, start, end| {
        c.sync(
            &Call::EventElapsed(EventElapsed { start, end }),
            S0,
            None,
            |r| match r {
                Reply::EventElapsedReply(e) => e.elapsed_ns,
                other => panic!("unexpected {other:?}"),
            },
        )
    };
    assert_eq!(elapsed(c, e1, e2), Err(CudaError::INVALID_HANDLE));
    // s1: fill a in steps, record e1; s2: wait e1, copy a -> b, record e2.
    let data = bytes(99, n);
    c.submit_async(&Call::EventRecord(EventRecord { event: e1 }), s1);
    for (k, chunk) in data.chunks(1024).enumerate() {
        c.submit_async(
            &Call::MemcpyHtoDAsync(MemcpyHtoDAsync {
                dst: DevicePtr(a.0 + (k * 1024) as u64),
                src: Payload::Inline(chunk),
            }),
            s1,
        );
    }
    c.submit_async(&Call::EventRecord(EventRecord { event: quiet }), s1);
    c.submit_async(
        &Call::StreamWaitEvent(StreamWaitEvent {
            event: quiet,
            flags: 0,
        }),
        s2,
    );
    c.submit_async(
        &Call::MemcpyDtoDAsync(MemcpyDtoDAsync {
            dst: b,
            src: a,
            len: n as u64,
        }),
        s2,
    );
    c.submit_async(
        &Call::MemsetAsync(MemsetAsync {
            dst: a,
            width: MemsetWidth::D8,
            value: 0,
            count: n as u64,
        }),
        s1,
    );
    c.submit_async(&Call::EventRecord(EventRecord { event: e2 }), s2);
    c.sync(
        &Call::EventSynchronize(EventSynchronize { event: e2 }),
        S0,
        None,
        |_| (),
    )
    .unwrap();
    c.sync(
        &Call::StreamSynchronize(StreamSynchronize {}),
        s2,
        None,
        |_| (),
    )
    .unwrap();
    c.sync(&Call::StreamQuery(StreamQuery {}), s1, None, |_| ())
        .unwrap();
    assert_eq!(
        d2h(c, b, n as u64, false).unwrap(),
        data,
        "s2 saw s1's copies in order"
    );
    assert_eq!(
        d2h(c, a, n as u64, false).unwrap(),
        vec![0; n],
        "the later memset ran last"
    );
    elapsed(c, e1, e2).unwrap();
    assert_eq!(
        elapsed(c, e1, quiet),
        Err(CudaError::INVALID_HANDLE),
        "timing disabled"
    );
    // Destroyed handles are unknown.
    c.submit_async(&Call::EventDestroy(EventDestroy { event: e1 }), S0);
    assert_eq!(
        c.sync(
            &Call::EventQuery(EventQuery { event: e1 }),
            S0,
            None,
            |_| ()
        ),
        Err(CudaError::INVALID_HANDLE)
    );
    c.submit_async(&Call::StreamDestroy(StreamDestroy {}), s1);
    assert_eq!(
        c.sync(&Call::StreamQuery(StreamQuery {}), s1, None, |_| ()),
        Err(CudaError::INVALID_HANDLE)
    );
    c.submit_async(&Call::StreamDestroy(StreamDestroy {}), S0);
    assert_eq!(
        ctx_sync(c),
        Err(CudaError::INVALID_HANDLE),
        "the default stream cannot be destroyed (a deferred error)"
    );
    ctx_sync(c).expect("the deferred error was reported once");
    free(c, a).unwrap();
    free(c, b).unwrap();
}

/// Over-quota allocation fails with OOM and the context still works.
pub fn quota_refusal<C: Conn>(c: &mut C) {
    let keep = alloc(c, QUOTA / 2).unwrap();
    assert_eq!(alloc(c, QUOTA / 2 + 1), Err(CudaError::OUT_OF_MEMORY));
    assert_eq!(alloc(c, u64::MAX), Err(CudaError::OUT_OF_MEMORY));
    let (free_now, total) = mem_info(c);
    assert_eq!((free_now, total), (QUOTA / 2, QUOTA));
    let p = alloc(c, 4096).unwrap();
    h2d(c, p, &[9; 4096], Via::Inline).unwrap();
    assert_eq!(d2h(c, p, 4096, false).unwrap(), vec![9; 4096]);
    free(c, p).unwrap();
    free(c, keep).unwrap();
    let total_mem = c
        .sync(
            &Call::DeviceTotalMem(DeviceTotalMem { device: 0 }),
            S0,
            None,
            |r| match r {
                Reply::DeviceTotalMemReply(t) => t.bytes,
                other => panic!("unexpected {other:?}"),
            },
        )
        .unwrap();
    assert_eq!(total_mem, QUOTA);
}

/// Wild, freed and overrunning pointers are errors, not crashes.
pub fn wild_pointers<C: Conn>(c: &mut C) {
    let p = alloc(c, 100).unwrap();
    for (dst, len) in [
        (DevicePtr(0xdead_beef), 4),
        (DevicePtr(0), 1),
        (DevicePtr(p.0 + 90), 11),
    ] {
        assert_eq!(
            h2d(c, dst, &vec![1; len], Via::Inline),
            Err(CudaError::INVALID_VALUE)
        );
        assert_eq!(
            d2h(c, dst, len as u64, false),
            Err(CudaError::INVALID_VALUE)
        );
    }
    assert_eq!(d2h(c, p, u64::MAX, false), Err(CudaError::INVALID_VALUE));
    free(c, p).unwrap();
    assert_eq!(
        d2h(c, p, 1, false),
        Err(CudaError::INVALID_VALUE),
        "use after free"
    );
    assert_eq!(free(c, DevicePtr(0x1234)), Err(CudaError::INVALID_VALUE));
    nop(c).unwrap();
}

/// A failing async call surfaces at the next sync call, once.
pub fn async_failure_is_deferred<C: Conn>(c: &mut C) {
    c.submit_async(
        &Call::MemsetAsync(MemsetAsync {
            dst: DevicePtr(0xbad),
            width: MemsetWidth::D8,
            value: 1,
            count: 1,
        }),
        S0,
    );
    c.submit_async(&Call::AsyncNop(AsyncNop { payload: Blob(&[]) }), S0);
    assert_eq!(
        nop(c),
        Err(CudaError::INVALID_VALUE),
        "deferred error at the next sync"
    );
    nop(c).unwrap();
    // Unknown handles in async calls are deferred 400s.
    c.submit_async(
        &Call::EventRecord(EventRecord {
            event: EventHandle(12345),
        }),
        S0,
    );
    assert_eq!(ctx_sync(c), Err(CudaError::INVALID_HANDLE));
    ctx_sync(c).unwrap();
}

/// The test module's kernels compute the right results; layouts are real.
pub fn builtin_kernels<C: Conn>(c: &mut C) {
    let image = b"RGPU-EMU-MODULE v1\n# ci kernels\nkernel rgpu_vector_add_f32\nkernel rgpu_saxpy_f32\nkernel rgpu_sum_f32\nkernel rgpu_fill_u32\n";
    let m = module_load(c, image).unwrap();
    let (vadd, vl) = lookup(c, m, "rgpu_vector_add_f32").unwrap();
    assert_eq!(vl, vec![(0, 8), (8, 8), (16, 8), (24, 4)]);
    let (saxpy, sl) = lookup(c, m, "rgpu_saxpy_f32").unwrap();
    assert_eq!(sl, vec![(0, 4), (4, 4), (8, 8), (16, 8)]);
    let (sum, ul) = lookup(c, m, "rgpu_sum_f32").unwrap();
    let (fill, fl) = lookup(c, m, "rgpu_fill_u32").unwrap();
    assert_eq!(
        lookup(c, m, "rgpu_fill_f32"),
        Err(CudaError::NOT_FOUND),
        "not listed"
    );
    assert_eq!(lookup(c, m, "gemm"), Err(CudaError::NOT_FOUND));

    let n = 1000u32;
    let bytes_n = u64::from(n) * 4;
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..n).map(|i| (2 * i) as f32 + 0.5).collect();
    let (pa, pb, pc) = (
        alloc(c, bytes_n).unwrap(),
        alloc(c, bytes_n).unwrap(),
        alloc(c, bytes_n).unwrap(),
    );
    h2d(c, pa, &f32s(&a), Via::Inline).unwrap();
    h2d(c, pb, &f32s(&b), Via::Inline).unwrap();
    let s = stream_create(c);
    // Vector add: 4 blocks of 256 threads cover all 1000 elements.
    let params = pack(
        &vl,
        &[
            &pa.0.to_le_bytes(),
            &pb.0.to_le_bytes(),
            &pc.0.to_le_bytes(),
            &n.to_le_bytes(),
        ],
    );
    launch(c, vadd, 4, 256, &params, s);
    c.sync(
        &Call::StreamSynchronize(StreamSynchronize {}),
        s,
        None,
        |_| (),
    )
    .unwrap();
    let got = to_f32s(&d2h(c, pc, bytes_n, false).unwrap());
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    assert_eq!(got, want);
    // Too few threads: only the first grid×block elements are computed.
    let fparams = pack(
        &fl,
        &[&pc.0.to_le_bytes(), &7u32.to_le_bytes(), &n.to_le_bytes()],
    );
    launch(c, fill, 2, 100, &fparams, s);
    ctx_sync(c).unwrap();
    let got = d2h(c, pc, bytes_n, false).unwrap();
    let words: Vec<u32> = got
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
        .collect();
    assert!(words[..200].iter().all(|&w| w == 7));
    assert_eq!(f32::from_bits(words[200]), want[200]);
    // Saxpy in place: y = 2x + y.
    let sp = pack(
        &sl,
        &[
            &n.to_le_bytes(),
            &2.0f32.to_le_bytes(),
            &pa.0.to_le_bytes(),
            &pb.0.to_le_bytes(),
        ],
    );
    launch(c, saxpy, 8, 128, &sp, S0);
    let got = to_f32s(&d2h(c, pb, bytes_n, false).unwrap());
    let want: Vec<f32> = a
        .iter()
        .zip(&b)
        .map(|(x, y)| 2.0f32.mul_add(*x, *y))
        .collect();
    assert_eq!(got, want);
    // Sum reduction of a: 0 + 1 + ... + 999, exact in f32.
    let up = pack(
        &ul,
        &[&pa.0.to_le_bytes(), &pc.0.to_le_bytes(), &n.to_le_bytes()],
    );
    launch(c, sum, 1, 256, &up, S0);
    let got = to_f32s(&d2h(c, pc, 4, false).unwrap());
    assert_eq!(got, vec![(n * (n - 1) / 2) as f32]);
    // Bad geometry and a parameter buffer of the wrong size are deferred 1s.
    launch(c, sum, 1, 2048, &up, S0);
    assert_eq!(ctx_sync(c), Err(CudaError::INVALID_VALUE));
    launch(c, sum, 1, 1, &up[..8], S0);
    assert_eq!(ctx_sync(c), Err(CudaError::INVALID_VALUE));
    // Cached load by hash, unload, then the function is gone.
    let m2 = c
        .sync(
            &Call::ModuleLoadByHash(ModuleLoadByHash {
                hash: hash_of(image),
            }),
            S0,
            None,
            |r| match r {
                Reply::ModuleLoadedByHash(m) => m.module,
                other => panic!("unexpected {other:?}"),
            },
        )
        .unwrap();
    assert_ne!(m2, m);
    lookup(c, m2, "rgpu_sum_f32").unwrap();
    c.sync(
        &Call::ModuleUnload(ModuleUnload { module: m }),
        S0,
        None,
        |_| (),
    )
    .unwrap();
    launch(c, vadd, 4, 256, &params, S0);
    assert_eq!(
        ctx_sync(c),
        Err(CudaError::INVALID_HANDLE),
        "function of an unloaded module"
    );
    for p in [pa, pb, pc] {
        free(c, p).unwrap();
    }
}

/// Real GPU code registers (the runtime registers every fatbin at start) but
/// never runs: its kernels are found, launching one is a deferred
/// `CUDA_ERROR_NOT_SUPPORTED`, never a fake success. Garbage images get honest
/// errors and are not cached.
pub fn honest_module_errors<C: Conn>(c: &mut C) {
    let mut cubin = b"\x7fELF\x02\x01\x01\x33\x07\x00\x00\x00\x00\x00\x00\x00".to_vec();
    cubin.extend_from_slice(&[0xbe; 512]);
    let real_cubin = module_load(c, &cubin).expect("a cubin registers");
    let ptx = b"//\n// Generated by NVIDIA NVVM Compiler\n.version 8.1\n.target sm_80\n.address_size 64\n.visible .entry k() { ret; }\n";
    let real_ptx = module_load(c, ptx).expect("PTX registers");
    let (k, layout) = lookup(c, real_ptx, "k").expect("its kernel is found");
    assert!(
        layout.is_empty(),
        "a real kernel's layout is not known here"
    );
    assert_eq!(
        lookup(c, real_ptx, "absent").map(|(f, _)| f),
        Err(CudaError::NOT_FOUND)
    );
    launch(c, k, 1, 1, &[], S0);
    assert_eq!(
        ctx_sync(c),
        Err(CudaError::NOT_SUPPORTED),
        "a real kernel cannot run on the emulated device"
    );
    assert_eq!(ctx_sync(c), Ok(()), "not sticky");
    assert_eq!(
        module_load(c, b"not a module"),
        Err(CudaError::INVALID_IMAGE)
    );
    assert_eq!(
        module_load(c, b"RGPU-EMU-MODULE v1\nkernel flash_attention\n"),
        Err(CudaError::INVALID_IMAGE)
    );
    assert_eq!(
        c.sync(
            &Call::ModuleLoadByHash(ModuleLoadByHash {
                hash: hash_of(b"not a module")
            }),
            S0,
            None,
            |_| ()
        ),
        Err(CudaError::NOT_FOUND),
        "a refused image is not cached"
    );
    for module in [real_cubin, real_ptx] {
        c.sync(
            &Call::ModuleUnload(ModuleUnload { module }),
            S0,
            None,
            |_| (),
        )
        .unwrap();
    }
    nop(c).unwrap();
}

/// Unknown handles are CUDA_ERROR_INVALID_HANDLE; device queries answer.
pub fn unknown_handles_and_device<C: Conn>(c: &mut C) {
    let bogus_stream = StreamHandle(0xdead_0000);
    assert_eq!(
        c.sync(
            &Call::StreamQuery(StreamQuery {}),
            bogus_stream,
            None,
            |_| ()
        ),
        Err(CudaError::INVALID_HANDLE)
    );
    assert_eq!(
        c.sync(
            &Call::EventSynchronize(EventSynchronize {
                event: EventHandle(77)
            }),
            S0,
            None,
            |_| ()
        ),
        Err(CudaError::INVALID_HANDLE)
    );
    assert_eq!(
        lookup(c, ModuleHandle(5), "rgpu_sum_f32"),
        Err(CudaError::INVALID_HANDLE)
    );
    assert_eq!(
        c.sync(
            &Call::ModuleUnload(ModuleUnload {
                module: ModuleHandle(5)
            }),
            S0,
            None,
            |_| ()
        ),
        Err(CudaError::INVALID_HANDLE)
    );
    launch(c, FunctionHandle(9), 1, 1, &[], S0);
    assert_eq!(ctx_sync(c), Err(CudaError::INVALID_HANDLE));
    let count = c
        .sync(
            &Call::DeviceGetCount(DeviceGetCount {}),
            S0,
            None,
            |r| match r {
                Reply::DeviceCount(d) => d.count,
                other => panic!("unexpected {other:?}"),
            },
        )
        .unwrap();
    assert_eq!(count, 1);
    let name = c
        .sync(
            &Call::DeviceGetName(DeviceGetName { device: 0 }),
            S0,
            None,
            |r| match r {
                Reply::DeviceName(d) => String::from_utf8(d.name.0.to_vec()).unwrap(),
                other => panic!("unexpected {other:?}"),
            },
        )
        .unwrap();
    assert!(name.contains("rgpu emulated device"));
    let attr = |c: &mut C, device, attribute| {
        c.sync(
            &Call::DeviceGetAttribute(DeviceGetAttribute { device, attribute }),
            S0,
            None,
            |r| match r {
                Reply::DeviceAttribute(a) => a.value,
                other => panic!("unexpected {other:?}"),
            },
        )
    };
    assert_eq!(attr(c, 0, 75), Ok(8), "compute capability major");
    assert_eq!(attr(c, 0, 16), Ok(80), "SM count");
    assert_eq!(attr(c, 1, 16), Err(CudaError::INVALID_DEVICE));
    assert_eq!(attr(c, 0, 100_000), Err(CudaError::INVALID_VALUE));
}

/// An out-of-bounds kernel access is the sticky 700: every later call fails.
pub fn kernel_fault_is_sticky<C: Conn>(c: &mut C) {
    let m = module_load(c, b"RGPU-EMU-MODULE v1\nkernel rgpu_fill_f32\n").unwrap();
    let (fill, layout) = lookup(c, m, "rgpu_fill_f32").unwrap();
    let p = alloc(c, 64).unwrap();
    let params = pack(
        &layout,
        &[
            &p.0.to_le_bytes(),
            &1.0f32.to_le_bytes(),
            &17u32.to_le_bytes(),
        ],
    );
    launch(c, fill, 1, 32, &params, S0);
    assert_eq!(ctx_sync(c), Err(CudaError::ILLEGAL_ADDRESS));
    assert_eq!(nop(c), Err(CudaError::ILLEGAL_ADDRESS), "sticky");
    assert_eq!(alloc(c, 16), Err(CudaError::ILLEGAL_ADDRESS), "sticky");
}

/// Client-chosen handles: a duplicate, an unknown and a destroyed handle
/// are each a deferred `CUDA_ERROR_INVALID_HANDLE` at the next sync call,
/// and the context stays usable.
pub fn client_handle_errors<C: Conn>(c: &mut C) {
    let s = stream_create(c);
    let e = event_create(c, 0);
    ctx_sync(c).expect("creates succeed");
    // Duplicate stream and event handles.
    stream_create_as(c, s);
    assert_eq!(ctx_sync(c), Err(CudaError::INVALID_HANDLE), "dup stream");
    c.submit_async(&Call::EventCreate(EventCreate { event: e, flags: 0 }), S0);
    assert_eq!(ctx_sync(c), Err(CudaError::INVALID_HANDLE), "dup event");
    // Built-in streams cannot be created.
    stream_create_as(c, S0);
    assert_eq!(ctx_sync(c), Err(CudaError::INVALID_HANDLE), "builtin");
    // The originals still work.
    c.submit_async(&Call::EventRecord(EventRecord { event: e }), s);
    c.sync(
        &Call::StreamSynchronize(StreamSynchronize {}),
        s,
        None,
        |_| (),
    )
    .expect("stream and event still valid");
    // Unknown handles: an async record on an unknown stream, of an unknown event.
    let unknown_s = StreamHandle(client_handle());
    let unknown_e = EventHandle(client_handle());
    c.submit_async(&Call::EventRecord(EventRecord { event: e }), unknown_s);
    assert_eq!(
        ctx_sync(c),
        Err(CudaError::INVALID_HANDLE),
        "unknown stream"
    );
    c.submit_async(&Call::EventRecord(EventRecord { event: unknown_e }), s);
    assert_eq!(ctx_sync(c), Err(CudaError::INVALID_HANDLE), "unknown event");
    assert_eq!(
        c.sync(
            &Call::StreamSynchronize(StreamSynchronize {}),
            unknown_s,
            None,
            |_| ()
        ),
        Err(CudaError::INVALID_HANDLE),
        "sync on an unknown stream"
    );
    // Destroyed handles are unknown; destroying twice is a deferred error.
    c.submit_async(&Call::EventDestroy(EventDestroy { event: e }), S0);
    c.submit_async(&Call::StreamDestroy(StreamDestroy {}), s);
    ctx_sync(c).expect("destroys succeed");
    c.submit_async(&Call::StreamDestroy(StreamDestroy {}), s);
    assert_eq!(
        ctx_sync(c),
        Err(CudaError::INVALID_HANDLE),
        "destroyed stream"
    );
    assert_eq!(
        c.sync(&Call::EventQuery(EventQuery { event: e }), S0, None, |_| ()),
        Err(CudaError::INVALID_HANDLE),
        "destroyed event"
    );
    // A destroyed handle may be reused for a new object.
    stream_create_as(c, s);
    c.sync(&Call::StreamQuery(StreamQuery {}), s, None, |_| ())
        .expect("recreated stream");
    ctx_sync(c).expect("context still usable");
}
