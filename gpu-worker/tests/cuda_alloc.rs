//! GPU tests of the `cuda` backend's allocation variants, module-globals
//! accounting, `.nv.info` layouts and event-timed launches. Each skips with
//! a printed reason when `CudaBackend::open` fails (no driver, no device):
//! **none of these has run on a GPU yet.**
#![cfg(feature = "cuda")]

use rgpu_gpu_worker::cuda::{nvinfo, ptx, CudaBackend};
use rgpu_gpu_worker::{Backend, LaunchDims};
use rgpu_proto::{CudaError, DevicePtr, StreamHandle};

const QUOTA_BYTES: u64 = 64 << 20;
const S0: StreamHandle = StreamHandle(0);
/// `CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR`.
const CC_MAJOR: u32 = 75;

fn open(test: &str, quota: u64) -> Option<CudaBackend> {
    match CudaBackend::open(0, quota) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("SKIPPED {test}: no usable GPU ({e})");
            None
        }
    }
}

/// The fixture cubin this GPU runs (same major architecture), if any.
fn fixture_cubin(b: &CudaBackend) -> Option<&'static [u8]> {
    match b.device_attribute(0, CC_MAJOR).ok()? {
        8 => Some(include_bytes!("fixtures/nvinfo.sm_80.cubin")),
        9 => Some(include_bytes!("fixtures/nvinfo.sm_90.cubin")),
        _ => None,
    }
}

#[test]
fn pitch_and_pool_allocations_charge_the_quota() {
    let Some(mut b) = open("pitch_and_pool_allocations_charge_the_quota", QUOTA_BYTES) else {
        return;
    };
    let (p, pitch) = b.mem_alloc_pitch(1000, 4, 4).unwrap();
    assert!(pitch >= 1000 && pitch % 512 == 0);
    assert_eq!(b.mem_used_bytes(), Some(pitch * 4));
    assert_eq!(
        b.mem_alloc_pitch(1 << 20, QUOTA_BYTES >> 20, 4),
        Err(CudaError::OUT_OF_MEMORY)
    );
    let half = QUOTA_BYTES / 2;
    match b.mem_alloc_async(half, None, S0) {
        Err(CudaError::NOT_SUPPORTED) => eprintln!("no memory pools on this device/driver"),
        Ok(a) => {
            assert_eq!(b.mem_used_bytes(), Some(pitch * 4 + half));
            assert_eq!(
                b.mem_alloc_async(half, None, S0),
                Err(CudaError::OUT_OF_MEMORY)
            );
            let pool = b.default_mem_pool(0).unwrap();
            assert_eq!(
                b.mem_alloc_async(4096, Some(pool + 1), S0),
                Err(CudaError::INVALID_VALUE)
            );
            let c = b.mem_alloc_async(4096, Some(pool), S0).unwrap();
            b.memset(
                c,
                rgpu_proto::MemsetWidth::D8,
                0x5a,
                4096,
                rgpu_gpu_worker::Exec::Stream(S0),
            )
            .unwrap();
            let mut back = vec![0u8; 4096];
            b.memcpy_dtoh(&mut back, c, rgpu_gpu_worker::Exec::Stream(S0))
                .unwrap();
            assert!(back.iter().all(|&x| x == 0x5a));
            b.mem_free_async(a, S0).unwrap();
            b.mem_free(c).unwrap();
            assert_eq!(
                b.mem_free_async(a, S0),
                Err(CudaError::INVALID_VALUE),
                "freed twice"
            );
            b.stream_synchronize(S0).unwrap();
        }
        Err(e) => panic!("cuMemAllocAsync failed: {e:?}"),
    }
    b.mem_free(p).unwrap();
    assert_eq!(b.mem_used_bytes(), Some(0));
    assert_eq!(b.mem_free(DevicePtr(p.0)), Err(CudaError::INVALID_VALUE));
}

#[test]
fn module_globals_count_and_layouts_match_nvinfo() {
    let Some(mut b) = open("module_globals_count_and_layouts_match_nvinfo", QUOTA_BYTES) else {
        return;
    };
    let Some(cubin) = fixture_cubin(&b) else {
        eprintln!("SKIPPED: no fixture cubin for this GPU's architecture");
        return;
    };
    let globals = nvinfo::globals_bytes(cubin).unwrap();
    assert_eq!(globals, 4096 + 8);
    let m = b.module_load([1; 32], cubin).unwrap();
    assert_eq!(b.mem_used_bytes(), Some(globals));
    // The driver's layout (cuFuncGetParamInfo, or .nv.info on old drivers)
    // equals the one read from the cubin.
    let want = nvinfo::param_layout(cubin, "mixed").unwrap().unwrap();
    let info = b.function_lookup(m, b"mixed").unwrap();
    assert_eq!(info.params, want.as_slice());
    // A global's range is valid for copies until the module goes.
    let (table, bytes) = b.module_global(m, b"rgpu_table").unwrap();
    assert_eq!(bytes, 4096);
    b.memcpy_htod(table, &[1u8; 4096], rgpu_gpu_worker::Exec::Sync)
        .unwrap();
    assert_eq!(
        b.mem_free(table),
        Err(CudaError::INVALID_VALUE),
        "not freeable"
    );
    assert_eq!(b.module_global(m, b"nope"), Err(CudaError::NOT_FOUND));
    b.module_unload(m).unwrap();
    assert_eq!(b.mem_used_bytes(), Some(0));
    assert_eq!(
        b.memcpy_htod(table, &[1u8; 4], rgpu_gpu_worker::Exec::Sync),
        Err(CudaError::INVALID_VALUE),
        "the global is gone with its module"
    );
    // PTX: the JIT's globals, sized by cuModuleGetGlobal.
    let ptx = include_str!("fixtures/nvinfo.ptx");
    let m = b.module_load([2; 32], ptx.as_bytes()).unwrap();
    assert_eq!(b.mem_used_bytes(), Some(globals));
    b.module_unload(m).unwrap();
    drop(b);

    let Some(mut small) = open("module_globals_count (small quota)", 4096) else {
        return;
    };
    assert_eq!(
        small.module_load([1; 32], cubin),
        Err(CudaError::OUT_OF_MEMORY),
        "4104 B of globals over a 4096 B quota"
    );
}

#[test]
fn launches_are_timed_with_events() {
    let Some(mut b) = open("launches_are_timed_with_events", QUOTA_BYTES) else {
        return;
    };
    let m = b
        .module_load([7; 32], ptx::TEST_MODULE_PTX.as_bytes())
        .unwrap();
    let out = b.mem_alloc(4 << 10).unwrap();
    let info = b.function_lookup(m, ptx::SPIN).unwrap();
    let f = info.function;
    let mut params = vec![0u8; 16];
    params[..8].copy_from_slice(&out.0.to_le_bytes());
    params[8..12].copy_from_slice(&200_000u32.to_le_bytes());
    params[12..16].copy_from_slice(&1024u32.to_le_bytes());
    let dims = LaunchDims {
        grid: [8, 1, 1],
        block: [128, 1, 1],
        shared_mem_bytes: 0,
    };
    for _ in 0..3 {
        b.launch(f, dims, &params, S0).unwrap();
    }
    b.ctx_synchronize().unwrap();
    let ns = b.take_kernel_ns().expect("the cuda backend measures");
    assert!(ns > 0, "three spin kernels took measurable time");
    assert_eq!(b.take_kernel_ns(), Some(0), "each launch charged once");
}
