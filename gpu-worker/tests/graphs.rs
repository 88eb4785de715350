//! Stream capture and graphs through the protocol, against the emulated
//! backend (sim net and tcp): capture records instead of executing, a
//! launch replays the recorded calls in order, a synchronous call during a
//! capture is refused (900) and invalidates it (901), unknown and
//! destroyed graph handles are `CUDA_ERROR_INVALID_HANDLE`.

mod common;

use common::scenarios::{self, Via, S0};
use common::{Conn, Kind, NetConn, SimConn};
use rgpu_proto::*;

const IMAGE: &[u8] = b"RGPU-EMU-MODULE v1\nkernel rgpu_saxpy_f32\n";
const N: u32 = 16;

fn begin<C: Conn>(c: &mut C, s: StreamHandle, mode: u32) {
    c.submit_async(&Call::StreamBeginCapture(StreamBeginCapture { mode }), s);
}

fn end<C: Conn>(c: &mut C, s: StreamHandle, graph: u64) -> Result<(), CudaError> {
    c.sync(
        &Call::StreamEndCapture(StreamEndCapture { graph }),
        s,
        None,
        |_| (),
    )
}

fn instantiate<C: Conn>(c: &mut C, graph: u64, exec: u64) -> Result<(), CudaError> {
    c.sync(
        &Call::GraphInstantiate(GraphInstantiate {
            graph,
            exec,
            flags: 0,
        }),
        S0,
        None,
        |_| (),
    )
}

fn f32_at<C: Conn>(c: &mut C, p: DevicePtr) -> Vec<f32> {
    scenarios::to_f32s(&scenarios::d2h(c, p, u64::from(N) * 4, false).unwrap())
}

fn zeroed<C: Conn>(c: &mut C) -> DevicePtr {
    let p = scenarios::alloc(c, u64::from(N) * 4).unwrap();
    scenarios::h2d(c, p, &[0; N as usize * 4], Via::Inline).unwrap();
    p
}

fn capture_and_replay<C: Conn>(c: &mut C) {
    let m = scenarios::module_load(c, IMAGE).unwrap();
    let (saxpy, layout) = scenarios::lookup(c, m, "rgpu_saxpy_f32").unwrap();
    let (x, y, z, w) = (zeroed(c), zeroed(c), zeroed(c), zeroed(c));
    let s = scenarios::stream_create(c);
    begin(c, s, 0);
    // Recorded, in this order: memset w, x = 3.0 (bytes copied in now),
    // y += 1 * x, z = y.
    c.submit_async(
        &Call::MemsetAsync(MemsetAsync {
            dst: w,
            width: MemsetWidth::D32,
            value: 5,
            count: u64::from(N),
        }),
        s,
    );
    let threes = scenarios::f32s(&[3.0; N as usize]);
    c.submit_async(
        &Call::MemcpyHtoDAsync(MemcpyHtoDAsync {
            dst: x,
            src: Payload::Inline(&threes),
        }),
        s,
    );
    let params = scenarios::pack(
        &layout,
        &[
            &N.to_le_bytes(),
            &1.0f32.to_le_bytes(),
            &x.0.to_le_bytes(),
            &y.0.to_le_bytes(),
        ],
    );
    scenarios::launch(c, saxpy, 1, N, &params, s);
    c.submit_async(
        &Call::MemcpyDtoDAsync(MemcpyDtoDAsync {
            dst: z,
            src: y,
            len: u64::from(N) * 4,
        }),
        s,
    );
    let graph = scenarios::client_handle();
    end(c, s, graph).unwrap();
    // Nothing ran during the capture.
    assert_eq!(f32_at(c, x), vec![0.0; N as usize]);
    assert_eq!(f32_at(c, w), vec![0.0; N as usize]);
    let exec = scenarios::client_handle();
    instantiate(c, graph, exec).unwrap();
    assert_eq!(
        instantiate(c, graph, exec),
        Err(CudaError::INVALID_HANDLE),
        "exec handle in use"
    );
    for round in 1..=3u8 {
        c.submit_async(&Call::GraphLaunch(GraphLaunch { exec }), s);
        c.sync(
            &Call::StreamSynchronize(StreamSynchronize {}),
            s,
            None,
            |_| (),
        )
        .unwrap();
        let want = 3.0 * f32::from(round);
        assert_eq!(f32_at(c, y), vec![want; N as usize], "round {round}");
        assert_eq!(f32_at(c, z), vec![want; N as usize], "z copied after y");
    }
    let w_bytes = scenarios::d2h(c, w, u64::from(N) * 4, false).unwrap();
    assert!(w_bytes.chunks(4).all(|e| e == 5u32.to_le_bytes()));
    // The exec outlives its graph; destroyed, it is an unknown handle.
    c.submit_async(&Call::GraphDestroy(GraphDestroy { graph }), S0);
    c.submit_async(&Call::GraphLaunch(GraphLaunch { exec }), s);
    scenarios::ctx_sync(c).unwrap();
    assert_eq!(f32_at(c, y), vec![12.0; N as usize]);
    c.submit_async(&Call::GraphExecDestroy(GraphExecDestroy { exec }), S0);
    c.submit_async(&Call::GraphLaunch(GraphLaunch { exec }), s);
    assert_eq!(scenarios::ctx_sync(c), Err(CudaError::INVALID_HANDLE));
    assert_eq!(instantiate(c, graph, exec), Err(CudaError::INVALID_HANDLE));
}

fn illegal_calls_during_capture<C: Conn>(c: &mut C) {
    let p = zeroed(c);
    let s = scenarios::stream_create(c);
    assert_eq!(end(c, s, 7), Err(CudaError::ILLEGAL_STATE), "not capturing");
    begin(c, s, 0);
    // A synchronous copy is refused and invalidates the capture.
    assert_eq!(
        scenarios::d2h(c, p, 4, false),
        Err(CudaError::STREAM_CAPTURE_UNSUPPORTED)
    );
    assert_eq!(
        end(c, s, scenarios::client_handle()),
        Err(CudaError::STREAM_CAPTURE_INVALIDATED)
    );
    // The capture is over: the same copy works again.
    scenarios::d2h(c, p, 4, false).unwrap();
    // The legacy stream cannot capture (a deferred error).
    begin(c, S0, 0);
    assert_eq!(
        scenarios::ctx_sync(c),
        Err(CudaError::STREAM_CAPTURE_UNSUPPORTED)
    );
    // Relaxed mode lets synchronous calls through.
    begin(c, s, 2);
    scenarios::d2h(c, p, 4, false).unwrap();
    let graph = scenarios::client_handle();
    end(c, s, graph).unwrap();
    // Events inside a capture: a dependency within it; a second stream
    // joining through one is not modelled (900, capture invalidated).
    let (ev, other) = (scenarios::event_create(c, 2), scenarios::stream_create(c));
    begin(c, s, 0);
    c.submit_async(&Call::EventRecord(EventRecord { event: ev }), s);
    c.submit_async(
        &Call::StreamWaitEvent(StreamWaitEvent {
            event: ev,
            flags: 0,
        }),
        s,
    );
    let g = scenarios::client_handle();
    end(c, s, g).unwrap();
    begin(c, s, 0);
    c.submit_async(&Call::EventRecord(EventRecord { event: ev }), s);
    c.submit_async(
        &Call::StreamWaitEvent(StreamWaitEvent {
            event: ev,
            flags: 0,
        }),
        other,
    );
    assert_eq!(
        scenarios::ctx_sync(c),
        Err(CudaError::STREAM_CAPTURE_UNSUPPORTED),
        "deferred fork refusal (the sync itself is refused too)"
    );
    assert_eq!(
        end(c, s, scenarios::client_handle()),
        Err(CudaError::STREAM_CAPTURE_INVALIDATED)
    );
    // An empty graph instantiates and launches.
    let exec = scenarios::client_handle();
    instantiate(c, graph, exec).unwrap();
    c.submit_async(&Call::GraphLaunch(GraphLaunch { exec }), s);
    scenarios::ctx_sync(c).unwrap();
    // Unknown handles.
    assert_eq!(
        instantiate(c, 0xdead_0000, scenarios::client_handle()),
        Err(CudaError::INVALID_HANDLE)
    );
    c.submit_async(&Call::GraphLaunch(GraphLaunch { exec: 0xdead_0000 }), s);
    assert_eq!(scenarios::ctx_sync(c), Err(CudaError::INVALID_HANDLE));
}

#[test]
fn capture_and_replay_sim() {
    rgpu_proto::sim::run_seeds("graphs", 71, 2, |seed| {
        capture_and_replay(&mut SimConn::new(seed));
    });
}

#[test]
fn illegal_calls_during_capture_sim() {
    rgpu_proto::sim::run_seeds("graphs_illegal", 72, 2, |seed| {
        illegal_calls_during_capture(&mut SimConn::new(seed));
    });
}

#[test]
fn graphs_over_tcp() {
    let mut c = NetConn::open(Kind::Tcp);
    capture_and_replay(&mut c);
    illegal_calls_during_capture(&mut c);
    let (res, _) = c.finish();
    res.expect("session ends cleanly");
}
