"""Python multiprocessing (fork start method) with the shim loaded through ctypes: what a
PyTorch DataLoader does to a process that has CUDA initialized.

* a child forked *before* the parent's cuInit initializes CUDA itself and copies bytes
  through its own connection;
* a child forked *after* gets CUDA_ERROR_NOT_INITIALIZED (3) from cuInit, cuDeviceGetCount
  and cuMemAlloc, and never touches the parent's connection;
* the parent's session works afterwards (a checked round trip).

Prints one "ok NAME" or "FAIL NAME: why" line per check, then "done"; remote.sh matches them.
Run through `rgpu run` (which makes libcuda.so.1 the shim).
"""

import ctypes
import multiprocessing as mp
import sys

NOT_INITIALIZED = 3
# Bound on waiting for a child, in seconds (liveness, not timing).
CHILD_WAIT_S_MAX = 60


def cuda():
    return ctypes.CDLL("libcuda.so.1")


def roundtrip(lib, seed):
    """cuMemAlloc, HtoD, DtoH, cuMemFree of 4 KiB; returns (status, bytes equal)."""
    n = 4096
    src = bytes((seed + i) % 251 for i in range(n))
    dst = ctypes.create_string_buffer(n)
    dev = ctypes.c_uint64(0)
    r = lib.cuMemAlloc_v2(ctypes.byref(dev), ctypes.c_size_t(n))
    if r == 0:
        r = lib.cuMemcpyHtoD_v2(dev, src, ctypes.c_size_t(n))
    if r == 0:
        r = lib.cuMemcpyDtoH_v2(dst, dev, ctypes.c_size_t(n))
    if dev.value:
        lib.cuMemFree_v2(dev)
    return r, dst.raw == src


def init_context(lib):
    r = lib.cuInit(0)
    ctx = ctypes.c_void_p(0)
    if r == 0:
        r = lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), 0)
    if r == 0:
        r = lib.cuCtxSetCurrent(ctx)
    return r


def fresh_child(q):
    lib = cuda()
    r = init_context(lib)
    if r != 0:
        q.put(("init", r))
        return
    q.put(roundtrip(lib, 11))


def inherited_child(q):
    lib = cuda()
    count = ctypes.c_int(-1)
    dev = ctypes.c_uint64(0)
    q.put(
        (
            lib.cuInit(0),
            lib.cuDeviceGetCount(ctypes.byref(count)),
            count.value,
            lib.cuMemAlloc_v2(ctypes.byref(dev), ctypes.c_size_t(4096)),
        )
    )


def run_child(ctx, target):
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(q,))
    p.start()
    try:
        got = q.get(timeout=CHILD_WAIT_S_MAX)
    except Exception as e:  # noqa: BLE001 (queue.Empty or a broken pipe: reported below)
        got = ("no answer", repr(e))
    p.join(CHILD_WAIT_S_MAX)
    return got, p.exitcode


def check(ok, name, why):
    print(f"ok {name}" if ok else f"FAIL {name}: {why}", flush=True)
    return ok


def main():
    ctx = mp.get_context("fork")
    lib = cuda()
    good = True
    got, code = run_child(ctx, fresh_child)
    good &= check(got == (0, True) and code == 0, "py_fork_before_init_child_connects", (got, code))
    good &= check(init_context(lib) == 0, "py_parent_init", "init")
    good &= check(roundtrip(lib, 1) == (0, True), "py_parent_work", "roundtrip")
    got, code = run_child(ctx, inherited_child)
    want = (NOT_INITIALIZED, NOT_INITIALIZED, 0, NOT_INITIALIZED)
    print(f"pyfork: inherited child (cuInit, cuDeviceGetCount, count, cuMemAlloc) = {got}")
    good &= check(got == want and code == 0, "py_fork_after_init_refused", (got, code))
    good &= check(roundtrip(lib, 2) == (0, True), "py_parent_after_fork", "roundtrip")
    print("done" if good else "failed")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
