"""PyTorch's default Linux wheel through rgpu's libcuda.so.1 against `rgpu server --backend emulated`.

Run by shim/tests/torch/run.sh through `rgpu run` (over shm and tcp):

    python3 torch_emulated.py QUOTA_BYTES COPY_BYTES_MAX
    python3 torch_emulated.py no-server
    CUDA_MODULE_LOADING=EAGER python3 torch_emulated.py eager

Prints `ok NAME` per passed check, `FAIL NAME: why` per failed one, `perf ...` timing lines and
`done` at the end; exits 1 if any check failed. The emulated device has no real kernels: every
check uses copies, memsets, allocations, streams, events and queries only, except
`kernel_refused`, which expects an op needing a real kernel to raise a RuntimeError naming CUDA
error 801 (operation not supported), `cublas_refused` (cuBLAS cannot start without real device
globals), and the checks after them, which show the process can still copy. Timings (`perf`) are
printed, never asserted.
"""

import os
import sys
import time

T0 = time.perf_counter()
import torch  # noqa: E402

IMPORT_S = time.perf_counter() - T0
MIB = 1 << 20
failed = []


def check(name, cond, why=""):
    if cond:
        print(f"ok {name}", flush=True)
    else:
        failed.append(name)
        print(f"FAIL {name}: {why}", flush=True)


def pattern(n, seed):
    """n bytes that differ per size and seed (a copy of the wrong buffer does not match)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n,), dtype=torch.uint8, generator=g)


def round_trip_timings(n):
    """Prints the best of ROUNDS host->device->host round trips of n bytes into a device
    buffer that already exists, pageable and pinned (timings only, nothing asserted)."""
    rounds = 5
    # PyTorch's host allocator keeps freed pinned blocks cached; hand them back first, so
    # the pinned buffers below fit the shim's pinned bound (RGPU_PINNED_BYTES).
    if hasattr(torch._C, "_host_emptyCache"):
        torch._C._host_emptyCache()
    d = torch.empty(n, dtype=torch.uint8, device="cuda")
    for kind in ("pageable", "pinned"):
        pinned = kind == "pinned"
        h = pattern(n, 700)
        out = torch.empty(n, dtype=torch.uint8)
        if pinned:
            h, out = h.pin_memory(), out.pin_memory()
        best = float("inf")
        for _ in range(rounds):
            t = time.perf_counter()
            d.copy_(h, non_blocking=pinned)
            out.copy_(d, non_blocking=pinned)
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        print(f"perf {kind}_round_trip {n >> 20} MiB best of {rounds}: {best * 1e3:.1f} ms, "
              f"{2 * n / best / 1e9:.2f} GB/s")
    del d


def no_server():
    """Without a server the shim reports no device: torch says so, nothing crashes."""
    check("no_device_available", not torch.cuda.is_available())
    check("no_device_count", torch.cuda.device_count() == 0, str(torch.cuda.device_count()))
    print("done" if not failed else f"failed: {' '.join(failed)}", flush=True)


def eager():
    """With CUDA_MODULE_LOADING=EAGER the runtime loads every registered fatbin at its first
    call; the device must still come up and copy."""
    t = time.perf_counter()
    check("eager_is_available", torch.cuda.is_available())
    print(f"perf eager_is_available_s {time.perf_counter() - t:.3f}")
    h = pattern(1 * MIB, 800)
    check("eager_copy", torch.equal(h.to("cuda").cpu(), h))
    print("done" if not failed else f"failed: {' '.join(failed)}", flush=True)


def main():
    if sys.argv[1] == "no-server":
        no_server()
        return
    if sys.argv[1] == "eager":
        eager()
        return
    quota = int(sys.argv[1])
    copy_max = int(sys.argv[2])
    print(f"perf import_torch_s {IMPORT_S:.3f} version {torch.__version__} cuda {torch.version.cuda}")

    t = time.perf_counter()
    avail = torch.cuda.is_available()
    print(f"perf is_available_s {time.perf_counter() - t:.3f}")
    check("is_available", avail)
    if not avail:
        return
    check("device_count", torch.cuda.device_count() == 1, f"{torch.cuda.device_count()} devices")
    name = torch.cuda.get_device_name(0)
    check("device_name", "emulated" in name, name)
    props = torch.cuda.get_device_properties(0)
    check("properties_total_memory", props.total_memory == quota, f"{props.total_memory} != {quota}")
    cap = torch.cuda.get_device_capability(0)
    check("capability", cap == (props.major, props.minor) and cap[0] >= 1, str(cap))

    t = time.perf_counter()
    torch.cuda.init()
    free, total = torch.cuda.mem_get_info()
    print(f"perf context_init_s {time.perf_counter() - t:.3f}")
    check("mem_get_info_total", total == quota, f"{total} != {quota}")
    check("mem_get_info_free", 0 < free <= quota, f"free {free}")

    # Pageable round trips: host -> device -> host, several sizes, checked equal.
    sizes = [1, 4096, 1 * MIB + 3]
    s = 16 * MIB
    while s <= copy_max:
        sizes.append(s)
        s *= 4
    ok = True
    for i, n in enumerate(sizes):
        h = pattern(n, i)
        d = h.to("cuda")
        back = d.cpu()
        if d.device.type != "cuda" or not torch.equal(back, h):
            ok = False
            print(f"  pageable round trip of {n} bytes differs")
        del d
    check("copy_pageable_sizes", ok)

    # Device-to-device copy (cudaMemcpyAsync D2D, no kernel), then back.
    h = pattern(3 * MIB, 100)
    d = h.to("cuda")
    d2 = torch.empty_like(d)
    d2.copy_(d)
    check("copy_device_to_device", torch.equal(d2.cpu(), h))
    del d, d2

    # Pinned, non-blocking copies both ways, then a synchronize.
    ok = True
    for i, n in enumerate(sizes):
        h = pattern(n, 200 + i).pin_memory()
        out = torch.empty(n, dtype=torch.uint8, pin_memory=True)
        d = h.to("cuda", non_blocking=True)
        out.copy_(d, non_blocking=True)
        torch.cuda.synchronize()
        if not (h.is_pinned() and out.is_pinned()) or not torch.equal(out, h):
            ok = False
            print(f"  pinned round trip of {n} bytes differs")
        del d
    check("copy_pinned_non_blocking", ok)

    round_trip_timings(copy_max)

    # More pinned memory than the shim's bound: a clean out-of-memory error, and the shim's
    # reason reaches the exception text through PyTorch's driver-log callback.
    pinned_max = int(os.environ.get("RGPU_PINNED_BYTES", str(256 * MIB)))
    err = ""
    try:
        torch.empty(pinned_max + MIB, dtype=torch.uint8, pin_memory=True)
        err = "no error"
    except RuntimeError as e:
        err = str(e)
    lines = [line for line in err.splitlines() if line.strip()]
    print("pinned error: " + " | ".join(lines[:1] + lines[-1:]))
    check("pinned_over_bound_refused", "out of memory" in err, err[:300])
    check("pinned_over_bound_explained", "pinned host memory exhausted" in err, err[:300])

    # The caching allocator's count grows with a tensor and shrinks when it is freed.
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    x = torch.empty(8 * MIB, dtype=torch.uint8, device="cuda")
    during = torch.cuda.memory_allocated()
    del x
    after = torch.cuda.memory_allocated()
    check("memory_allocated", during >= before + 8 * MIB and after == before, f"{before} {during} {after}")
    check("memory_reserved", torch.cuda.memory_reserved() >= 8 * MIB, str(torch.cuda.memory_reserved()))
    torch.cuda.empty_cache()
    check("empty_cache", torch.cuda.memory_reserved() <= torch.cuda.memory_allocated() + 2 * MIB,
          str(torch.cuda.memory_reserved()))

    # Streams and events: copies on a side stream, timed and ordered by events.
    side = torch.cuda.Stream()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    h = pattern(4 * MIB, 300).pin_memory()
    out = torch.empty_like(h).pin_memory()
    with torch.cuda.stream(side):
        start.record()
        d = h.to("cuda", non_blocking=True)
        out.copy_(d, non_blocking=True)
        end.record()
    check("stream_is_side", side != torch.cuda.default_stream() and side.device.type == "cuda")
    end.synchronize()
    check("event_query_done", end.query() and start.query())
    ms = start.elapsed_time(end)
    check("event_elapsed_time", ms >= 0.0, str(ms))
    check("stream_copy_result", torch.equal(out, h))
    torch.cuda.current_stream().wait_stream(side)
    side.synchronize()
    check("stream_query", side.query())
    ev = side.record_event()
    torch.cuda.current_stream().wait_event(ev)
    torch.cuda.synchronize()
    check("synchronize", True)
    del d

    # NVML-backed queries (rgpu's libnvidia-ml.so.1), where this torch version has them.
    if hasattr(torch.cuda, "device_memory_used"):
        used = torch.cuda.device_memory_used(0)
        check("nvml_device_memory_used", 0 <= used <= quota, str(used))
    if hasattr(torch.cuda, "utilization"):
        u = torch.cuda.utilization(0)
        check("nvml_utilization", 0 <= u <= 100, str(u))
    if hasattr(torch.cuda, "memory_usage"):
        u = torch.cuda.memory_usage(0)
        check("nvml_memory_usage", 0 <= u <= 100, str(u))

    # An op that needs a real kernel: a RuntimeError naming the CUDA error, not a crash.
    y = pattern(1024, 400).to("cuda")
    t = time.perf_counter()
    err = ""
    try:
        z = y + 1
        torch.cuda.synchronize()
        err = f"no error: {z.cpu()[:4]}"
    except RuntimeError as e:
        err = str(e)
    print(f"perf first_kernel_s {time.perf_counter() - t:.3f}")
    print("kernel error: " + err.splitlines()[0] if err else "kernel error: none")
    check("kernel_refused", "operation not supported" in err, err[:200])
    # The error is not sticky: the process still copies.
    h = pattern(2 * MIB, 500)
    check("copy_after_kernel_error", torch.equal(h.to("cuda").cpu(), h))
    err = ""
    try:
        torch.ones(3, device="cuda")
        torch.cuda.synchronize()
    except RuntimeError as e:
        err = str(e)
    check("kernel_refused_again", "operation not supported" in err, err[:200])
    check("copy_after_second_error", torch.equal(y.cpu(), pattern(1024, 400)))

    # torch.zeros is a memset (cudaMemsetAsync), which the emulated device runs: no kernel.
    z = torch.zeros(5 * MIB + 1, dtype=torch.uint8, device="cuda")
    check("zeros_by_memset", int(z.cpu().count_nonzero()) == 0)
    del z

    # cuBLAS: creating its handle needs a global of a real module, which the emulated device
    # does not hold (cuLibraryGetGlobal is CUDA_ERROR_NOT_FOUND); cuBLAS then fails cleanly.
    a = torch.ones(4, 4).to("cuda")
    err = ""
    try:
        b = a @ a
        torch.cuda.synchronize()
        err = f"no error: {b.cpu()[0]}"
    except RuntimeError as e:
        err = str(e)
    print("cublas error: " + err.splitlines()[0] if err else "cublas error: none")
    check("cublas_refused", err.startswith("CUDA error") or "CUBLAS_STATUS" in err, err[:200])
    check("copy_after_cublas_error", torch.equal(a.cpu(), torch.ones(4, 4)))
    torch.cuda.synchronize()
    print("done" if not failed else f"failed: {' '.join(failed)}", flush=True)


if __name__ == "__main__":
    main()
    sys.exit(1 if failed else 0)
