/* The shim's memory paths through NVIDIA's static CUDA runtime: copies both ways from pinned
 * (cudaMallocHost / cudaHostAlloc) and pageable memory, 1 B to argv[1] bytes (256 MiB in
 * remote.sh), checksummed; async copies from pinned memory on a stream; cudaMemcpyDefault
 * both ways; cudaMemcpy2D; driver-API memsets of 16 and 32 bits; pointer attributes; cudaHostRegister; a
 * wild host pointer. Each check prints "ok NAME" or "FAIL NAME: why"; "perf" lines give the
 * largest size's throughput (printed, never asserted). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cuda.h>
#include <cuda_runtime_api.h>

static int failures = 0;

static void check(int ok, const char *name, const char *fmt, long long a, long long b) {
    if (ok) {
        printf("ok %s\n", name);
    } else {
        printf("FAIL %s: ", name);
        printf(fmt, a, b);
        printf("\n");
        failures++;
    }
}

static uint64_t fnv1a(const unsigned char *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 1099511628211ull; }
    return h;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)((i * 2654435761u + seed) >> 9);
}

/* H2D from `host`, clear `host`, D2H back into it; checksums must match. */
static int roundtrip(unsigned char *host, size_t n, void *dev, const char *kind, int perf) {
    fill(host, n, (unsigned)n);
    uint64_t want = fnv1a(host, n);
    double t0 = now_s();
    cudaError_t e1 = cudaMemcpy(dev, host, n, cudaMemcpyHostToDevice);
    double t1 = now_s();
    memset(host, 0x5A, n);
    double t2 = now_s();
    cudaError_t e2 = cudaMemcpy(host, dev, n, cudaMemcpyDeviceToHost);
    double t3 = now_s();
    uint64_t got = fnv1a(host, n);
    if (perf) {
        printf("perf %s h2d %zu B: %.2f GB/s\n", kind, n, n / (t1 - t0) / 1e9);
        printf("perf %s d2h %zu B: %.2f GB/s\n", kind, n, n / (t3 - t2) / 1e9);
    }
    if (e1 != cudaSuccess || e2 != cudaSuccess) {
        printf("FAIL %s %zu: errors h2d=%d d2h=%d\n", kind, n, (int)e1, (int)e2);
        return 0;
    }
    if (got != want) {
        printf("FAIL %s %zu: checksum %016llx != %016llx\n", kind, n, (unsigned long long)got,
               (unsigned long long)want);
        return 0;
    }
    return 1;
}

int main(int argc, char **argv) {
    size_t max = argc > 1 ? (size_t)atoll(argv[1]) : (size_t)16 << 20;
    if (max < 8192) max = 8192;
    const size_t sizes[] = {1, 7, 4096, 65537, (1 << 20) + 3, 16 << 20, 64 << 20, 256 << 20};
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    check(e == cudaSuccess && count == 1, "device", "error %lld count %lld", e, count);
    if (e != cudaSuccess) { printf("done\n"); return 1; }

    void *dev = NULL;
    e = cudaMalloc(&dev, max);
    check(e == cudaSuccess, "malloc_max", "error %lld (%lld)", e, 0);
    unsigned char *pageable = malloc(max);
    unsigned char *pinned = NULL, *hostalloc = NULL;
    e = cudaMallocHost((void **)&pinned, max);
    check(e == cudaSuccess && pinned, "malloc_host", "error %lld (%lld)", e, 0);
    e = cudaHostAlloc((void **)&hostalloc, 1 << 20, cudaHostAllocPortable);
    check(e == cudaSuccess && hostalloc, "host_alloc", "error %lld (%lld)", e, 0);
    unsigned int flags = 99;
    e = cudaHostGetFlags(&flags, hostalloc);
    check(e == cudaSuccess && (flags & cudaHostAllocPortable), "host_get_flags", "error %lld flags %lld", e, flags);
    if (!dev || !pageable || !pinned || !hostalloc) { printf("done\n"); return 1; }

    int ok_pageable = 1, ok_pinned = 1;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0] && sizes[i] <= max; i++) {
        int last = i + 1 == sizeof sizes / sizeof sizes[0] || sizes[i + 1] > max;
        if (last) {
            /* Untimed first: the device pages and the host buffers get touched once. */
            ok_pageable &= roundtrip(pageable, sizes[i], dev, "pageable", 0);
            ok_pinned &= roundtrip(pinned, sizes[i], dev, "pinned", 0);
        }
        ok_pageable &= roundtrip(pageable, sizes[i], dev, "pageable", last);
        ok_pinned &= roundtrip(pinned, sizes[i], dev, "pinned", last);
    }
    check(ok_pageable, "copy_pageable_sizes", "largest %lld (%lld)", (long long)max, 0);
    check(ok_pinned, "copy_pinned_sizes", "largest %lld (%lld)", (long long)max, 0);
    check(roundtrip(hostalloc, 1 << 20, dev, "hostalloc", 0), "copy_host_alloc", "%lld %lld", 0, 0);

    /* Async copies from and into pinned memory on a stream, then synchronize. */
    cudaStream_t s = NULL;
    e = cudaStreamCreate(&s);
    size_t n = max / 2 < ((size_t)8 << 20) ? max / 2 : ((size_t)8 << 20);
    fill(pinned, n, 42);
    uint64_t want = fnv1a(pinned, n);
    cudaError_t a1 = cudaMemcpyAsync(dev, pinned, n, cudaMemcpyHostToDevice, s);
    cudaError_t a2 = cudaMemsetAsync((char *)dev + n, 0, 16, s);
    cudaError_t a3 = cudaMemcpyAsync(pinned + n, dev, n, cudaMemcpyDeviceToHost, s);
    cudaError_t a4 = cudaStreamSynchronize(s);
    check(e == 0 && a1 == 0 && a2 == 0 && a3 == 0 && a4 == 0, "async_pinned_errors",
          "errors create/h2d %lld memset/d2h/sync %lld", (long long)e * 1000 + a1,
          (long long)a2 * 1000000 + a3 * 1000 + a4);
    check(fnv1a(pinned + n, n) == want, "async_pinned", "checksum %llx != %llx",
          (long long)fnv1a(pinned + n, n), (long long)want);
    cudaStreamDestroy(s);

    /* cudaMemcpyDefault: the direction comes from the pointers. */
    fill(pageable, 4096, 7);
    want = fnv1a(pageable, 4096);
    cudaError_t d1 = cudaMemcpy(dev, pageable, 4096, cudaMemcpyDefault);
    memset(pageable, 0, 4096);
    cudaError_t d2 = cudaMemcpy(pageable, dev, 4096, cudaMemcpyDefault);
    check(d1 == 0 && d2 == 0 && fnv1a(pageable, 4096) == want, "memcpy_default",
          "errors h2d %lld d2h %lld", d1, d2);

    /* cudaMemcpy2D: a 40-byte-wide, 10-row block between pitched host and device layouts. */
    {
        unsigned char hsrc[48 * 10], hdst[56 * 10];
        for (int i = 0; i < 480; i++) hsrc[i] = (unsigned char)(i * 7 + 3);
        memset(hdst, 0, sizeof hdst);
        cudaError_t m1 = cudaMemcpy2D(dev, 64, hsrc, 48, 40, 10, cudaMemcpyHostToDevice);
        cudaError_t m2 = cudaMemcpy2D(hdst, 56, dev, 64, 40, 10, cudaMemcpyDeviceToHost);
        int ok2 = m1 == 0 && m2 == 0;
        for (int r = 0; r < 10; r++) ok2 &= memcmp(hsrc + r * 48, hdst + r * 56, 40) == 0 && hdst[r * 56 + 40] == 0;
        check(ok2, "memcpy_2d", "errors %lld %lld", m1, m2);
    }

    /* Driver-API memsets of 16 and 32 bits, reached through the runtime's entry-point query. */
    void *fn16 = NULL, *fn32 = NULL;
    enum cudaDriverEntryPointQueryResult q16, q32;
    cudaError_t g1 = cudaGetDriverEntryPoint("cuMemsetD16", &fn16, cudaEnableDefault, &q16);
    cudaError_t g2 = cudaGetDriverEntryPoint("cuMemsetD32", &fn32, cudaEnableDefault, &q32);
    int memset_ok = g1 == 0 && g2 == 0 && fn16 && fn32;
    if (memset_ok) {
        CUresult r1 = ((CUresult(*)(CUdeviceptr, unsigned short, size_t))fn16)((CUdeviceptr)dev, 0xBEEF, 8);
        CUresult r2 = ((CUresult(*)(CUdeviceptr, unsigned int, size_t))fn32)((CUdeviceptr)dev + 16, 0xCAFEF00Du, 4);
        uint16_t h16[8];
        uint32_t h32[4];
        cudaError_t c1 = cudaMemcpy(h16, dev, sizeof h16, cudaMemcpyDeviceToHost);
        cudaError_t c2 = cudaMemcpy(h32, (char *)dev + 16, sizeof h32, cudaMemcpyDeviceToHost);
        memset_ok = r1 == 0 && r2 == 0 && c1 == 0 && c2 == 0;
        for (int i = 0; i < 8; i++) memset_ok &= h16[i] == 0xBEEF;
        for (int i = 0; i < 4; i++) memset_ok &= h32[i] == 0xCAFEF00Du;
    }
    check(memset_ok, "memset_d16_d32", "entry points %lld %lld", g1, g2);

    /* Pointer attributes: device, pinned host, and unknown (pageable) memory. */
    struct cudaPointerAttributes pa;
    cudaError_t p1 = cudaPointerGetAttributes(&pa, dev);
    int pa_dev = p1 == 0 && pa.type == cudaMemoryTypeDevice && pa.devicePointer == dev;
    cudaError_t p2 = cudaPointerGetAttributes(&pa, pinned + 5);
    int pa_host = p2 == 0 && pa.type == cudaMemoryTypeHost && pa.hostPointer == pinned + 5;
    cudaError_t p3 = cudaPointerGetAttributes(&pa, pageable);
    int pa_none = p3 == 0 && pa.type == cudaMemoryTypeUnregistered;
    printf("pointer attributes: %d/%d %d/%d %d/%d\n", (int)p1, pa_dev, (int)p2, pa_host, (int)p3, pa_none);
    check(pa_dev && pa_host && pa_none, "pointer_attributes", "errors %lld %lld", p1 * 1000 + p2, p3);

    /* cudaHostRegister: accepted (and staged), then unregistered. */
    size_t reg = max < ((size_t)1 << 20) ? max : ((size_t)1 << 20);
    cudaError_t r1 = cudaHostRegister(pageable, reg, cudaHostRegisterDefault);
    int reg_ok = r1 == 0 && roundtrip(pageable, reg, dev, "registered", 0);
    cudaError_t r2 = cudaHostUnregister(pageable);
    check(reg_ok && r2 == 0, "host_register", "errors %lld %lld", r1, r2);

    /* A wild host pointer is an error, not a crash. */
    cudaError_t w = cudaMemcpy(dev, (void *)(uintptr_t)0x40, 4096, cudaMemcpyHostToDevice);
    check(w != cudaSuccess, "wild_host_pointer", "error %lld (%lld)", w, 0);
    cudaGetLastError();
    cudaError_t after = cudaMemcpy(pageable, dev, 16, cudaMemcpyDeviceToHost);
    check(after == cudaSuccess, "usable_after_wild", "error %lld (%lld)", after, 0);

    cudaError_t f1 = cudaFreeHost(pinned), f2 = cudaFreeHost(hostalloc), f3 = cudaFree(dev);
    check(f1 == 0 && f2 == 0 && f3 == 0, "free", "errors %lld %lld", f1 * 1000 + f2, f3);
    free(pageable);
    printf("done\n");
    return failures == 0 ? 0 : 1;
}
