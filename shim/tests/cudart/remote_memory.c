/* Runs NVIDIA's static CUDA runtime against an rgpu server through the shim: device facts,
 * allocation, copies both ways with checksums, memset, device-to-device copy, memory info,
 * the quota, and a wild pointer. Each check prints one "ok NAME" or "FAIL NAME: why" line;
 * remote.sh passes only if every expected "ok" line is there and no "FAIL" line is.
 * argv[1]: the quota in bytes the server is expected to grant. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static uint32_t fnv1a(const unsigned char *p, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 16777619u; }
    return h;
}

/* H2D then D2H of n bytes of a seeded pattern; compares checksums. */
static void roundtrip(size_t n, const char *name) {
    unsigned char *src = malloc(n), *dst = malloc(n);
    void *dev = NULL;
    for (size_t i = 0; i < n; i++) src[i] = (unsigned char)((i * 2654435761u + n) >> 7);
    memset(dst, 0xAB, n);
    cudaError_t e1 = cudaMalloc(&dev, n);
    cudaError_t e2 = cudaMemcpy(dev, src, n, cudaMemcpyHostToDevice);
    cudaError_t e3 = cudaMemcpy(dst, dev, n, cudaMemcpyDeviceToHost);
    cudaError_t e4 = cudaFree(dev);
    check(e1 == 0 && e2 == 0 && e3 == 0 && e4 == 0, name, "errors malloc/h2d=%lld d2h/free=%lld",
          (long long)e1 * 1000 + e2, (long long)e3 * 1000 + e4);
    uint32_t a = fnv1a(src, n), b = fnv1a(dst, n);
    printf("checksum %s: %08x %08x\n", name, a, b);
    check(a == b && memcmp(src, dst, n) == 0, name, "checksum %llx != %llx", a, b);
    free(src); free(dst);
}

int main(int argc, char **argv) {
    long long quota = argc > 1 ? atoll(argv[1]) : 0;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    printf("cudaGetDeviceCount: %d (%s) count=%d\n", (int)e, cudaGetErrorName(e), count);
    check(e == cudaSuccess && count == 1, "device_count", "error %lld count %lld", e, count);
    if (e != cudaSuccess) { printf("done\n"); return 1; }

    struct cudaDeviceProp prop;
    memset(&prop, 0, sizeof prop);
    e = cudaGetDeviceProperties(&prop, 0);
    printf("cudaGetDeviceProperties: %d (%s) name=%s total=%zu cc=%d.%d sms=%d warp=%d\n", (int)e,
           cudaGetErrorName(e), prop.name, prop.totalGlobalMem, prop.major, prop.minor,
           prop.multiProcessorCount, prop.warpSize);
    check(e == cudaSuccess && strstr(prop.name, "emulated") != NULL, "properties_name", "error %lld %lld", e, 0);
    check((long long)prop.totalGlobalMem == quota, "properties_total", "total %lld != quota %lld",
          (long long)prop.totalGlobalMem, quota);

    roundtrip(1, "copy_1B");
    roundtrip(4096, "copy_4KiB");
    roundtrip(16u << 20, "copy_16MiB");

    /* memset, then a device-to-device copy of the set bytes */
    size_t n = 65536;
    void *a = NULL, *b = NULL;
    unsigned char *host = malloc(n);
    cudaError_t m1 = cudaMalloc(&a, n), m2 = cudaMalloc(&b, n);
    cudaError_t s1 = cudaMemset(a, 0x5A, n);
    cudaError_t s2 = cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
    memset(host, 0, n);
    cudaError_t s3 = cudaMemcpy(host, b, n, cudaMemcpyDeviceToHost);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += host[i] != 0x5A;
    check(m1 == 0 && m2 == 0 && s1 == 0, "memset", "errors %lld %lld", (long long)m1 * 1000 + m2, s1);
    check(s2 == 0 && s3 == 0 && bad == 0, "memcpy_dtod", "error %lld, %lld bytes wrong", (long long)s2 * 1000 + s3, (long long)bad);

    size_t free_b = 0, total_b = 0;
    e = cudaMemGetInfo(&free_b, &total_b);
    printf("cudaMemGetInfo: %d (%s) free=%zu total=%zu\n", (int)e, cudaGetErrorName(e), free_b, total_b);
    check(e == 0 && (long long)total_b == quota, "mem_info_total", "total %lld != quota %lld", (long long)total_b, quota);
    check(free_b + 2 * n <= total_b, "mem_info_free", "free %lld total %lld", (long long)free_b, (long long)total_b);

    void *huge = NULL;
    e = cudaMalloc(&huge, (size_t)quota + 4096);
    printf("over-quota cudaMalloc: %d (%s)\n", (int)e, cudaGetErrorName(e));
    check(e == cudaErrorMemoryAllocation, "over_quota", "error %lld (%lld)", e, 0);
    cudaGetLastError(); /* clear the non-sticky error */
    void *small = NULL;
    e = cudaMalloc(&small, 256);
    check(e == cudaSuccess && small != NULL, "malloc_after_over_quota", "error %lld %lld", e, 0);

    /* A device pointer the server never handed out: an error, never a crash. */
    unsigned char byte = 1;
    e = cudaMemcpy((void *)(uintptr_t)0x7ead0000dead0000ull, &byte, 1, cudaMemcpyHostToDevice);
    printf("wild cudaMemcpy: %d (%s)\n", (int)e, cudaGetErrorName(e));
    check(e != cudaSuccess, "wild_pointer", "error %lld %lld", e, 0);
    cudaGetLastError();

    cudaError_t f1 = cudaFree(a), f2 = cudaFree(b), f3 = cudaFree(small);
    check(f1 == 0 && f2 == 0 && f3 == 0, "free", "errors %lld %lld", (long long)f1 * 1000 + f2, f3);
    e = cudaDeviceSynchronize();
    check(e == cudaSuccess, "synchronize", "error %lld %lld", e, 0);
    free(host);
    printf("failures=%d\ndone\n", failures);
    return failures == 0 ? 0 : 1;
}
