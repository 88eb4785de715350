//! Allocation variants through the real daemon and an emulated worker:
//! pitched and stream-ordered (pool) allocations are charged to the quota
//! (refused over it), freeing returns it, and bad frees get CUDA errors.

mod common;

use common::{Conn, Kind, Server, CLIENT_BYTES};
use rgpu_proto::{
    Blob, Call, CudaError, DeviceGetDefaultMemPool, DevicePtr, MemAllocAsync,
    MemAllocFromPoolAsync, MemAllocPitch, MemFreeAsync, ModuleGetGlobal, ModuleHandle, ModuleLoad,
    Reply,
};

fn pitch(c: &mut Conn, width_bytes: u64, height: u64) -> Result<(DevicePtr, u64), CudaError> {
    c.sync(
        &Call::MemAllocPitch(MemAllocPitch {
            width_bytes,
            height,
            element_size: 4,
        }),
        |r| match r {
            Reply::MemAllocPitchReply(a) => (a.ptr, a.pitch),
            other => panic!("unexpected {other:?}"),
        },
    )
}

fn alloc_async(c: &mut Conn, bytes: u64) -> Result<DevicePtr, CudaError> {
    c.sync(&Call::MemAllocAsync(MemAllocAsync { bytes }), |r| match r {
        Reply::MemAllocAsyncReply(a) => a.ptr,
        other => panic!("unexpected {other:?}"),
    })
}

fn from_pool(c: &mut Conn, pool: u64, bytes: u64) -> Result<DevicePtr, CudaError> {
    c.sync(
        &Call::MemAllocFromPoolAsync(MemAllocFromPoolAsync { pool, bytes }),
        |r| match r {
            Reply::MemAllocFromPoolAsyncReply(a) => a.ptr,
            other => panic!("unexpected {other:?}"),
        },
    )
}

fn used(c: &mut Conn) -> u64 {
    let (free, total) = c.mem_info().unwrap();
    assert_eq!(total, CLIENT_BYTES);
    total - free
}

fn variants(kind: Kind) {
    let server = Server::standard();
    let mut c = Conn::open(&server, kind);
    assert_eq!(used(&mut c), 0);

    // Pitch: rows rounded up to 512 B, the quota charged pitch × height.
    let (p, row) = pitch(&mut c, 1000, 4).unwrap();
    assert_eq!(row, 1024);
    assert_eq!(used(&mut c), 4096);
    assert_eq!(
        pitch(&mut c, 1 << 20, CLIENT_BYTES >> 20),
        Err(CudaError::OUT_OF_MEMORY),
        "a quota's worth of rows on top of 4 KiB"
    );
    assert_eq!(pitch(&mut c, 0, 4), Err(CudaError::INVALID_VALUE));

    // Stream-ordered: charged when allocated.
    let half = CLIENT_BYTES / 2;
    let a = alloc_async(&mut c, half).unwrap();
    assert_eq!(used(&mut c), 4096 + half);
    assert_eq!(alloc_async(&mut c, half), Err(CudaError::OUT_OF_MEMORY));
    let pool = c
        .sync(
            &Call::DeviceGetDefaultMemPool(DeviceGetDefaultMemPool { device: 0 }),
            |r| match r {
                Reply::DefaultMemPool(p) => p.pool,
                other => panic!("unexpected {other:?}"),
            },
        )
        .unwrap();
    assert_eq!(
        from_pool(&mut c, pool ^ 1, 4096),
        Err(CudaError::INVALID_VALUE),
        "only the default pool"
    );
    let b = from_pool(&mut c, pool, half / 2).unwrap();
    assert_eq!(
        from_pool(&mut c, pool, half / 2),
        Err(CudaError::OUT_OF_MEMORY)
    );
    assert_eq!(used(&mut c), 4096 + half + half / 2);

    // Frees return the quota; a stream-ordered free of a bad pointer is a
    // deferred error surfacing at the next synchronous call.
    c.submit_async(&Call::MemFreeAsync(MemFreeAsync { ptr: a }));
    assert_eq!(used(&mut c), 4096 + half / 2);
    c.submit_async(&Call::MemFreeAsync(MemFreeAsync { ptr: a }));
    assert_eq!(c.ctx_sync(), Err(CudaError::INVALID_VALUE), "freed twice");
    c.submit_async(&Call::MemFreeAsync(MemFreeAsync {
        ptr: DevicePtr(b.0 + 256),
    }));
    assert_eq!(c.ctx_sync(), Err(CudaError::INVALID_VALUE), "not a base");
    c.free(b).unwrap();
    c.free(p).unwrap();
    assert_eq!(c.free(p), Err(CudaError::INVALID_VALUE));
    assert_eq!(used(&mut c), 0, "everything returned");
    c.close();
    server.wait_idle();
    assert!(server.stop().success());
}

#[test]
fn emulated_modules_have_no_globals() {
    let server = Server::standard();
    let mut c = Conn::open(&server, Kind::Tcp);
    let global = |c: &mut Conn, module| {
        c.sync(
            &Call::ModuleGetGlobal(ModuleGetGlobal {
                module,
                name: Blob(b"table"),
            }),
            |r| match r {
                Reply::ModuleGlobal(g) => (g.ptr, g.bytes),
                other => panic!("unexpected {other:?}"),
            },
        )
    };
    assert_eq!(
        global(&mut c, ModuleHandle(0x77)),
        Err(CudaError::INVALID_HANDLE)
    );
    let image = b"RGPU-EMU-MODULE v1\nkernel rgpu_fill_u32\n";
    let module = c
        .sync(
            &Call::ModuleLoad(ModuleLoad {
                hash: [3; 32],
                image: Blob(image),
            }),
            |r| match r {
                Reply::ModuleLoaded(m) => m.module,
                other => panic!("unexpected {other:?}"),
            },
        )
        .unwrap();
    assert_eq!(global(&mut c, module), Err(CudaError::NOT_FOUND));
    assert_eq!(used(&mut c), 0, "nothing charged");
    c.close();
    server.wait_idle();
    assert!(server.stop().success());
}

#[test]
fn alloc_variants_over_tcp() {
    variants(Kind::Tcp);
}

#[test]
fn alloc_variants_over_shm() {
    variants(Kind::Shm);
}
