//! GPU tests of the `cuda` backend: the emulated suite's scenarios (memory,
//! copies, memsets, quota, streams, events, kernels, bad handles, release)
//! run against [`CudaBackend`] with the PTX module rgpu ships.
//!
//! Every test that needs a GPU skips with a printed reason when
//! `CudaBackend::open` fails (no driver, no device). Without a driver,
//! `open_without_driver_names_the_cause` checks the error instead.
#![cfg(feature = "cuda")]

use rgpu_gpu_worker::cuda::{ptx, CudaBackend, CudaBackendError, ModuleCache};
use rgpu_gpu_worker::{Backend, Exec, LaunchDims};
use rgpu_proto::{CudaError, DevicePtr, EventHandle, MemsetWidth, ModuleHandle, StreamHandle};

/// Quota of each test session, in bytes.
const QUOTA_BYTES: u64 = 64 << 20;
/// `CU_EVENT_DEFAULT` (timing enabled).
const EVENT_DEFAULT: u32 = 0;

fn open(test: &str) -> Option<CudaBackend> {
    match CudaBackend::open(0, QUOTA_BYTES) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("SKIPPED {test}: no usable GPU ({e})");
            None
        }
    }
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn to_f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn load_test_module(b: &mut CudaBackend) -> ModuleHandle {
    b.module_load([7; 32], ptx::TEST_MODULE_PTX.as_bytes())
        .expect("the shipped PTX loads")
}

/// Packs `args` (each little-endian bytes) per the function's layout.
fn launch(b: &mut CudaBackend, m: ModuleHandle, name: &[u8], dims: LaunchDims, args: &[&[u8]]) {
    let info = b.function_lookup(m, name).expect("lookup");
    assert_eq!(info.params.len(), args.len(), "layout of {name:?}");
    let f = info.function;
    let end = info
        .params
        .iter()
        .map(|s| (s.offset.get() + s.size.get()) as usize)
        .max()
        .unwrap_or(0);
    let mut buf = vec![0u8; end];
    for (slot, arg) in info.params.iter().zip(args) {
        assert_eq!(slot.size.get() as usize, arg.len());
        let o = slot.offset.get() as usize;
        buf[o..o + arg.len()].copy_from_slice(arg);
    }
    b.launch(f, dims, &buf, StreamHandle(0)).expect("launch");
}

fn dims(threads: u32) -> LaunchDims {
    LaunchDims {
        grid: [threads.div_ceil(128), 1, 1],
        block: [128, 1, 1],
        shared_mem_bytes: 0,
    }
}

#[test]
fn open_without_driver_names_the_cause() {
    match CudaBackend::open(0, QUOTA_BYTES) {
        Ok(b) => eprintln!(
            "driver present (device {:?}); nothing to check here",
            b.device_name(0)
        ),
        Err(e @ CudaBackendError::DriverNotFound { .. }) => {
            let text = e.to_string();
            assert!(
                text.starts_with("libcuda.so.1 not found: no NVIDIA driver on this host"),
                "{text}"
            );
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

#[test]
fn memory_copies_memsets_and_quota() {
    let Some(mut b) = open("memory_copies_memsets_and_quota") else {
        return;
    };
    let info = b.mem_get_info().unwrap();
    assert_eq!(info.total, QUOTA_BYTES);
    assert_eq!(b.device_total_mem(0).unwrap(), QUOTA_BYTES);
    assert_eq!(b.mem_alloc(QUOTA_BYTES + 1), Err(CudaError::OUT_OF_MEMORY));
    assert_eq!(b.mem_alloc(0), Err(CudaError::INVALID_VALUE));
    let a = b.mem_alloc(1 << 20).unwrap();
    let c = b.mem_alloc(1 << 20).unwrap();
    assert_eq!(b.mem_get_info().unwrap().free, QUOTA_BYTES - (2 << 20));
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 31 % 251) as u8).collect();
    b.memcpy_htod(a, &data, Exec::Sync).unwrap();
    b.memcpy_dtod(c, a, 1 << 20, Exec::Sync).unwrap();
    let mut back = vec![0u8; 1 << 20];
    b.memcpy_dtoh(&mut back, c, Exec::Sync).unwrap();
    assert_eq!(back, data);
    // Memsets of each width, sync and on a stream.
    let s = b.stream_create(0, 0).unwrap();
    b.memset(a, MemsetWidth::D8, 0xab, 16, Exec::Sync).unwrap();
    b.memset(
        DevicePtr(a.0 + 16),
        MemsetWidth::D16,
        0x1234,
        8,
        Exec::Stream(s),
    )
    .unwrap();
    b.memset(
        DevicePtr(a.0 + 32),
        MemsetWidth::D32,
        0xdead_beef,
        4,
        Exec::Stream(s),
    )
    .unwrap();
    let mut head = [0u8; 48];
    b.memcpy_dtoh(&mut head, a, Exec::Stream(s)).unwrap();
    assert!(head[..16].iter().all(|&x| x == 0xab));
    assert_eq!(&head[16..18], &0x1234u16.to_le_bytes());
    assert_eq!(&head[44..48], &0xdead_beefu32.to_le_bytes());
    // Out of range and misaligned are refused before the driver.
    assert_eq!(
        b.memcpy_htod(DevicePtr(a.0 + 1), &data, Exec::Sync),
        Err(CudaError::INVALID_VALUE)
    );
    assert_eq!(
        b.memset(DevicePtr(a.0 + 1), MemsetWidth::D32, 0, 1, Exec::Sync),
        Err(CudaError::INVALID_VALUE)
    );
    assert_eq!(
        b.mem_free(DevicePtr(a.0 + 8)),
        Err(CudaError::INVALID_VALUE)
    );
    b.mem_free(a).unwrap();
    assert_eq!(b.mem_free(a), Err(CudaError::INVALID_VALUE));
    let r = b.release_all();
    assert_eq!((r.allocations, r.bytes, r.streams), (1, 1 << 20, 1));
    assert_eq!(b.mem_get_info().unwrap().free.min(QUOTA_BYTES), QUOTA_BYTES);
}

#[test]
fn streams_and_events_behave_as_cuda() {
    let Some(mut b) = open("streams_and_events_behave_as_cuda") else {
        return;
    };
    let s = b.stream_create(1, 0).unwrap();
    let (e0, e1) = (
        b.event_create(EVENT_DEFAULT).unwrap(),
        b.event_create(EVENT_DEFAULT).unwrap(),
    );
    let buf = b.mem_alloc(8 << 20).unwrap();
    b.event_record(e0, s).unwrap();
    b.memset(buf, MemsetWidth::D32, 1, 2 << 20, Exec::Stream(s))
        .unwrap();
    b.event_record(e1, s).unwrap();
    b.stream_wait_event(StreamHandle(0), e1, 0).unwrap();
    b.event_synchronize(e1).unwrap();
    assert_eq!(b.event_query(e1), Ok(()));
    assert_eq!(b.stream_query(s), Ok(()));
    b.event_elapsed_ns(e0, e1).unwrap();
    b.stream_synchronize(s).unwrap();
    b.ctx_synchronize().unwrap();
    assert_eq!(
        b.event_query(EventHandle(e1.0 + 100)),
        Err(CudaError::INVALID_HANDLE)
    );
    assert_eq!(
        b.stream_synchronize(StreamHandle(999)),
        Err(CudaError::INVALID_HANDLE)
    );
    b.event_destroy(e0).unwrap();
    assert_eq!(b.event_destroy(e0), Err(CudaError::INVALID_HANDLE));
    b.stream_destroy(s).unwrap();
    assert_eq!(b.stream_destroy(s), Err(CudaError::INVALID_HANDLE));
}

#[test]
fn shipped_ptx_kernels_compute_correct_results() {
    let Some(mut b) = open("shipped_ptx_kernels_compute_correct_results") else {
        return;
    };
    let m = load_test_module(&mut b);
    let n: u32 = 10_000;
    let xa: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let xb: Vec<f32> = (0..n).map(|i| (2 * i) as f32).collect();
    let bytes = u64::from(n) * 4;
    let (a, c, d) = (
        b.mem_alloc(bytes).unwrap(),
        b.mem_alloc(bytes).unwrap(),
        b.mem_alloc(bytes).unwrap(),
    );
    b.memcpy_htod(a, &f32s(&xa), Exec::Sync).unwrap();
    b.memcpy_htod(c, &f32s(&xb), Exec::Sync).unwrap();
    let (pa, pc, pd) = (a.0.to_le_bytes(), c.0.to_le_bytes(), d.0.to_le_bytes());
    launch(
        &mut b,
        m,
        ptx::VADD,
        dims(n),
        &[&pa, &pc, &pd, &n.to_le_bytes()],
    );
    let mut out = vec![0u8; bytes as usize];
    b.memcpy_dtoh(&mut out, d, Exec::Sync).unwrap();
    let want: Vec<f32> = (0..n).map(|i| (3 * i) as f32).collect();
    assert_eq!(to_f32s(&out), want);

    // Reduction of 0..1024 (exact in f32).
    let sum = b.mem_alloc(4).unwrap();
    b.memset(sum, MemsetWidth::D32, 0, 1, Exec::Sync).unwrap();
    let k: u32 = 1024;
    launch(
        &mut b,
        m,
        ptx::REDUCE_SUM,
        dims(k),
        &[&pa, &sum.0.to_le_bytes(), &k.to_le_bytes()],
    );
    let mut s = [0u8; 4];
    b.memcpy_dtoh(&mut s, sum, Exec::Sync).unwrap();
    assert_eq!(f32::from_le_bytes(s), (k * (k - 1) / 2) as f32);

    // The compute-heavy kernel: 0 iterations leaves out[i] = i.
    let pn = n.to_le_bytes();
    launch(
        &mut b,
        m,
        ptx::SPIN,
        dims(n),
        &[&pd, &0u32.to_le_bytes(), &pn],
    );
    b.memcpy_dtoh(&mut out, d, Exec::Sync).unwrap();
    assert_eq!(to_f32s(&out), xa);
    launch(
        &mut b,
        m,
        ptx::SPIN,
        dims(n),
        &[&pd, &100_000u32.to_le_bytes(), &pn],
    );
    b.ctx_synchronize().unwrap();

    assert_eq!(
        b.function_lookup(m, b"no_such_kernel").map(|i| i.function),
        Err(CudaError::NOT_FOUND)
    );
    b.module_unload(m).unwrap();
    assert_eq!(b.module_unload(m), Err(CudaError::INVALID_HANDLE));
    assert_eq!(
        b.function_lookup(m, ptx::VADD).map(|i| i.function),
        Err(CudaError::INVALID_HANDLE)
    );
}

#[test]
fn module_cache_serves_a_second_session() {
    let Some(mut first) = open("module_cache_serves_a_second_session") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("rgpu-cuda-modcache-{}", std::process::id()));
    let cache = ModuleCache::open(&dir).unwrap();
    let hash = rgpu_gpu_worker::cuda::cache::sha256(ptx::TEST_MODULE_PTX.as_bytes());
    assert_eq!(first.module_load_cached(hash), Err(CudaError::NOT_FOUND));
    let mut first = first.with_module_cache(cache.clone());
    assert_eq!(first.module_load_cached(hash), Err(CudaError::NOT_FOUND));
    first
        .module_load([0x5a; 32], ptx::TEST_MODULE_PTX.as_bytes())
        .unwrap();
    // A wrong hash loads the module but does not plant it in the cache.
    assert_eq!(
        first.module_load_cached([0x5a; 32]),
        Err(CudaError::NOT_FOUND)
    );
    first
        .module_load(hash, ptx::TEST_MODULE_PTX.as_bytes())
        .unwrap();
    drop(first);
    let mut second = CudaBackend::open(0, QUOTA_BYTES)
        .unwrap()
        .with_module_cache(cache);
    let m = second.module_load_cached(hash).unwrap();
    assert!(second.function_lookup(m, ptx::VADD).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn garbage_images_and_bad_launches_are_refused() {
    let Some(mut b) = open("garbage_images_and_bad_launches_are_refused") else {
        return;
    };
    assert!(b.module_load([1; 32], b"not ptx at all").is_err());
    let mut lying_fatbin = vec![0x50, 0xed, 0x55, 0xba, 1, 0, 16, 0];
    lying_fatbin.extend_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(
        b.module_load([2; 32], &lying_fatbin),
        Err(CudaError::INVALID_IMAGE)
    );
    let m = load_test_module(&mut b);
    let f = b.function_lookup(m, ptx::VADD).unwrap().function;
    // Too few parameter bytes for the layout.
    assert_eq!(
        b.launch(f, dims(1), &[0; 8], StreamHandle(0)),
        Err(CudaError::INVALID_VALUE)
    );
    assert_eq!(
        b.launch(f, dims(1), &[0; 28], StreamHandle(777)),
        Err(CudaError::INVALID_HANDLE)
    );
    let r = b.release_all();
    assert_eq!(r.modules, 1);
    assert_eq!(
        b.launch(f, dims(1), &[0; 28], StreamHandle(0)),
        Err(CudaError::INVALID_HANDLE)
    );
}
