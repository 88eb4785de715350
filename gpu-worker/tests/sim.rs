//! The worker's executor behind the deterministic `rgpu_proto::sim` net:
//! random chunking and delays, several seeds, every scenario.

mod common;

use common::scenarios::{self, Via};
use common::SimConn;
use rgpu_gpu_worker::Backend;
use rgpu_proto::sim::run_seeds;

/// Seeds per scenario: fewer in debug builds.
const SEEDS: u64 = if cfg!(debug_assertions) { 3 } else { 12 };

fn each_seed(name: &str, salt: u64, f: impl Fn(&mut SimConn)) {
    run_seeds(name, salt, SEEDS, |seed| {
        let mut c = SimConn::new(seed);
        f(&mut c);
    });
}

#[test]
fn alloc_free_and_info() {
    each_seed("alloc_free_and_info", 1, |c| {
        scenarios::alloc_free_and_info(c)
    });
}

#[test]
fn memcpy_roundtrip_inline_and_trailer() {
    each_seed("memcpy_roundtrip", 2, |c| {
        scenarios::memcpy_roundtrip(
            c,
            &[1, 3, 4096, 65_537, 300_001],
            &[Via::Inline, Via::Trailer],
            false,
        );
    });
}

#[test]
fn memset_and_d2d() {
    each_seed("memset_and_d2d", 3, scenarios::memset_and_d2d);
}

#[test]
fn streams_and_events() {
    each_seed("streams_and_events", 4, |c| {
        scenarios::streams_and_events(c)
    });
}

#[test]
fn client_handle_errors() {
    each_seed("client_handle_errors", 13, scenarios::client_handle_errors);
}

#[test]
fn quota_refusal() {
    each_seed("quota_refusal", 5, scenarios::quota_refusal);
}

#[test]
fn wild_pointers() {
    each_seed("wild_pointers", 6, scenarios::wild_pointers);
}

#[test]
fn async_failure_is_deferred() {
    each_seed("async_failure_is_deferred", 7, |c| {
        scenarios::async_failure_is_deferred(c)
    });
}

#[test]
fn builtin_kernels() {
    each_seed("builtin_kernels", 8, scenarios::builtin_kernels);
}

#[test]
fn honest_module_errors() {
    each_seed("honest_module_errors", 9, |c| {
        scenarios::honest_module_errors(c)
    });
}

#[test]
fn unknown_handles_and_device() {
    each_seed("unknown_handles_and_device", 10, |c| {
        scenarios::unknown_handles_and_device(c)
    });
}

#[test]
fn kernel_fault_is_sticky() {
    each_seed("kernel_fault_is_sticky", 11, |c| {
        scenarios::kernel_fault_is_sticky(c)
    });
}

#[test]
fn arena_calls_without_arena_are_refused() {
    use rgpu_proto::*;
    each_seed("arena_without_arena", 12, |c| {
        let p = scenarios::alloc(c, 64).unwrap();
        let r = common::Conn::sync(
            c,
            &Call::MemcpyHtoD(MemcpyHtoD {
                dst: p,
                src: Payload::Arena { offset: 0, len: 64 },
            }),
            scenarios::S0,
            None,
            |_| (),
        );
        assert_eq!(r, Err(CudaError::INVALID_VALUE));
        let used = c.worker.borrow().1.mem_get_info().unwrap();
        assert_eq!(
            used.total - used.free,
            256,
            "the worker's view matches the client's"
        );
    });
}
