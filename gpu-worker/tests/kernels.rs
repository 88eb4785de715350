//! Launch attributes and real images on the emulated device, through the `Backend` trait:
//! cooperative launches run, cluster launches are refused, unknown attributes are invalid;
//! a real (PTX) image registers, its kernels are found, and launching one is refused.

use rgpu_gpu_worker::{Backend, EmulatedBackend, EmulatedConfig, Exec, LaunchDims};
use rgpu_proto::{CudaError, LaunchAttr, StreamHandle};

const TEST_MODULE: &[u8] = b"RGPU-EMU-MODULE v1\nkernel rgpu_fill_u32\n";
const PTX: &[u8] = b"//\n.version 8.0\n.target sm_80\n.address_size 64\n.visible .entry real_k(\n.param .u64 p\n)\n{\nret;\n}\n";

fn dims(threads: u32) -> LaunchDims {
    LaunchDims {
        grid: [1, 1, 1],
        block: [threads, 1, 1],
        shared_mem_bytes: 0,
    }
}

fn attr(id: u32, value: [u32; 3]) -> LaunchAttr {
    LaunchAttr { id, value }
}

#[test]
fn launch_attributes_on_the_emulated_device() {
    let mut b = EmulatedBackend::new(EmulatedConfig::default());
    let m = b.module_load([1; 32], TEST_MODULE).unwrap();
    let f = b.function_lookup(m, b"rgpu_fill_u32").unwrap().function;
    let dst = b.mem_alloc(64).unwrap();
    let params = |value: u32| {
        [
            dst.0.to_le_bytes().as_slice(),
            &value.to_le_bytes(),
            &16u32.to_le_bytes(),
        ]
        .concat()
    };
    let read = |b: &mut EmulatedBackend| {
        let mut out = [0u8; 64];
        b.memcpy_dtoh(&mut out, dst, Exec::Sync).unwrap();
        u32::from_le_bytes([out[60], out[61], out[62], out[63]])
    };
    let s = StreamHandle(0);

    // Cooperative (and the hints) run.
    let coop = [attr(2, [1, 0, 0]), attr(8, [0, 0, 0]), attr(0, [7, 7, 7])];
    b.launch_ex(f, dims(16), &params(5), &coop, s).unwrap();
    assert_eq!(read(&mut b), 5);
    // Clusters are refused and nothing runs.
    for id in [4, 5, 11] {
        assert_eq!(
            b.launch_ex(f, dims(16), &params(6), &[attr(id, [2, 1, 1])], s),
            Err(CudaError::NOT_SUPPORTED)
        );
    }
    assert_eq!(read(&mut b), 5);
    // Unknown ids are invalid; attributes the wire never carries are refused.
    assert_eq!(
        b.launch_ex(f, dims(16), &params(6), &[attr(99, [0; 3])], s),
        Err(CudaError::INVALID_VALUE)
    );
    assert_eq!(
        b.launch_ex(f, dims(16), &params(6), &[attr(7, [0; 3])], s),
        Err(CudaError::NOT_SUPPORTED)
    );
    // No attributes: a plain launch.
    b.launch_ex(f, dims(16), &params(9), &[], s).unwrap();
    assert_eq!(read(&mut b), 9);
}

#[test]
fn real_images_register_but_do_not_run() {
    let mut b = EmulatedBackend::new(EmulatedConfig::default());
    let m = b.module_load([2; 32], PTX).unwrap();
    let info = b.function_lookup(m, b"real_k").unwrap();
    assert!(info.params.is_empty());
    let f = info.function;
    assert_eq!(
        b.function_lookup(m, b"not_there").map(|i| i.function),
        Err(CudaError::NOT_FOUND)
    );
    assert_eq!(
        b.launch(f, dims(1), &[], StreamHandle(0)),
        Err(CudaError::NOT_SUPPORTED)
    );
    assert_eq!(
        b.launch_ex(f, dims(1), &[], &[attr(2, [1, 0, 0])], StreamHandle(0)),
        Err(CudaError::NOT_SUPPORTED)
    );
    assert_eq!(b.function_attribute(f, 4), Err(CudaError::NOT_SUPPORTED));
    // Not sticky: the context still works, and the image is cached by hash.
    let again = b.module_load_cached([2; 32]).unwrap();
    assert!(b.function_lookup(again, b"real_k").is_ok());
    assert!(b.mem_alloc(16).is_ok());
}

#[test]
fn launch_attr_records_round_trip_and_are_bounded() {
    let attrs = [attr(2, [1, 0, 0]), attr(4, [2, 3, 4])];
    let mut bytes = Vec::new();
    LaunchAttr::encode_all(&attrs, &mut bytes);
    assert_eq!(bytes.len(), 32);
    let back: Vec<LaunchAttr> = LaunchAttr::decode_all(&bytes).unwrap().collect();
    assert_eq!(back, attrs);
    assert!(LaunchAttr::decode_all(&bytes[..31]).is_none());
    assert!(LaunchAttr::decode_all(&[0; 17 * 16]).is_none());
}

#[test]
fn builtin_function_attributes() {
    let cfg = EmulatedConfig::default();
    let (cc, shared) = (
        (cfg.cc_major * 10 + cfg.cc_minor) as i32,
        cfg.shared_mem_per_block_bytes as i32,
    );
    let mut b = EmulatedBackend::new(cfg);
    let m = b.module_load([3; 32], TEST_MODULE).unwrap();
    let f = b.function_lookup(m, b"rgpu_fill_u32").unwrap().function;
    assert_eq!(b.function_attribute(f, 0), Ok(1024));
    assert_eq!(
        b.function_attribute(f, 4),
        Ok(0),
        "no registers: runs on the host"
    );
    assert_eq!(b.function_attribute(f, 5), Ok(cc));
    assert_eq!(b.function_attribute(f, 8), Ok(shared));
    assert_eq!(b.function_attribute(f, 11), Err(CudaError::NOT_SUPPORTED));
    assert_eq!(b.function_attribute(f, 99), Err(CudaError::INVALID_VALUE));
    b.module_unload(m).unwrap();
    assert_eq!(b.function_attribute(f, 0), Err(CudaError::INVALID_HANDLE));
}
