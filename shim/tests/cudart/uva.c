/* Unified addressing through NVIDIA's static CUDA runtime: device ranges are reserved in this
 * (client) process, so host memory cannot appear at a device address; cudaMemcpyDefault works
 * all four ways and pointer attributes tell device from host; a freed range is released; and
 * a device range that already is host memory here is refused by cudaMemcpyDefault (no guess)
 * while explicit-direction copies still work and the host bytes stay untouched. A device
 * pointer given as the host side of a copy is an error, not a fault.
 * Each check prints "ok NAME" or "FAIL NAME: why". Linux only (MAP_FIXED_NOREPLACE). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cuda_runtime_api.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

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

/* Tries a host mapping of `len` bytes at exactly `addr` (page-rounded down); returns the
 * mapping or NULL with errno set. Never replaces an existing mapping. */
static void *map_at(uintptr_t addr, size_t len) {
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t at = addr & ~(page - 1);
    void *p = mmap((void *)at, len + (addr - at), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == MAP_FAILED) return NULL;
    if (p != (void *)at) { munmap(p, len + (addr - at)); errno = ENOSYS; return NULL; }
    return p;
}

static enum cudaMemoryType type_of(const void *p, cudaError_t *err) {
    struct cudaPointerAttributes a;
    memset(&a, 0, sizeof a);
    *err = cudaPointerGetAttributes(&a, p);
    return a.type;
}

int main(void) {
    const size_t n = 64 << 10;
    unsigned char *host = malloc(n), *back = malloc(n), *dev = NULL, *dev2 = NULL, *pinned = NULL;
    if (!host || !back) return 2;
    for (size_t i = 0; i < n; i++) host[i] = (unsigned char)(i * 31 + 7);

    cudaError_t e1 = cudaMalloc((void **)&dev, n), e2 = cudaMalloc((void **)&dev2, n);
    cudaError_t e3 = cudaMallocHost((void **)&pinned, 4096);
    check(e1 == 0 && e2 == 0 && e3 == 0, "malloc", "errors %lld %lld", e1 * 1000 + e2, e3);
    if (e1 || e2 || e3) return 1;
    printf("device pointers %p %p, host %p\n", (void *)dev, (void *)dev2, (void *)host);

    /* The device range is reserved here: a host mapping at its first and last byte fails. */
    errno = 0;
    void *m1 = map_at((uintptr_t)dev, 1);
    int err1 = errno;
    errno = 0;
    void *m2 = map_at((uintptr_t)dev + n - 1, 1);
    int err2 = errno;
    check(!m1 && !m2 && err1 == EEXIST && err2 == EEXIST, "reserved", "errno %lld %lld", err1, err2);

    /* cudaMemcpyDefault all four ways, checked byte for byte. */
    cudaError_t c1 = cudaMemcpy(dev, host, n, cudaMemcpyDefault);
    cudaError_t c2 = cudaMemcpy(dev2, dev, n, cudaMemcpyDefault);
    memset(back, 0, n);
    cudaError_t c3 = cudaMemcpy(back, dev2, n, cudaMemcpyDefault);
    int same = c1 == 0 && c2 == 0 && c3 == 0 && memcmp(back, host, n) == 0;
    unsigned char h2h[64];
    cudaError_t c4 = cudaMemcpy(h2h, host + 64, 64, cudaMemcpyDefault);
    same &= c4 == 0 && memcmp(h2h, host + 64, 64) == 0;
    check(same, "memcpy_default", "errors %lld %lld", c1 * 1000 + c2, c3 * 1000 + c4);

    /* Pointer attributes: device (base and inside), pinned host, pageable host. */
    cudaError_t p1, p2, p3, p4;
    enum cudaMemoryType t1 = type_of(dev, &p1), t2 = type_of(dev + n / 2, &p2);
    enum cudaMemoryType t3 = type_of(pinned, &p3), t4 = type_of(host, &p4);
    check(p1 == 0 && p2 == 0 && p3 == 0 && p4 == 0 && t1 == cudaMemoryTypeDevice && t2 == cudaMemoryTypeDevice &&
              t3 == cudaMemoryTypeHost && t4 == cudaMemoryTypeUnregistered,
          "pointer_attributes", "types %lld %lld", t1 * 10 + t2, t3 * 10 + t4);

    /* A device pointer passed where host memory is expected: its reserved pages are not host
     * memory, so the copy is an error, never a read or write of them (which would fault). */
    cudaError_t w1 = cudaMemcpy(dev2, dev, 256, cudaMemcpyHostToDevice);
    cudaGetLastError();
    cudaError_t w2 = cudaMemcpy(dev2, dev, 256, cudaMemcpyDeviceToHost);
    cudaGetLastError();
    cudaError_t w3 = cudaMemcpy(back, dev, 16, cudaMemcpyDeviceToHost);
    check(w1 == cudaErrorInvalidValue && w2 == cudaErrorInvalidValue && w3 == 0, "device_as_host_refused",
          "errors %lld %lld", w1, w2 * 1000 + w3);

    /* A freed range is released: host memory may now be mapped there, and it is host memory. */
    uintptr_t freed = (uintptr_t)dev2;
    cudaError_t f = cudaFree(dev2);
    void *m3 = map_at(freed, n);
    int released = f == 0 && m3 != NULL;
    if (m3) {
        unsigned char *h = (unsigned char *)freed;
        memset(h, 0x5a, 16);
        cudaError_t pa;
        released &= type_of(h, &pa) == cudaMemoryTypeUnregistered && pa == 0;
        cudaError_t c = cudaMemcpy(dev, h, 16, cudaMemcpyDefault);
        cudaError_t d = cudaMemcpy(back, dev, 16, cudaMemcpyDeviceToHost);
        released &= c == 0 && d == 0 && back[0] == 0x5a && back[15] == 0x5a;
        munmap(m3, n);
    }
    check(released, "released_on_free", "free %lld errno %lld", f, m3 ? 0 : errno);

    /* A device range that already is host memory here. The emulated worker places each
     * allocation after the previous one (a guard gap between): map host pages over the next
     * 1 MiB after `dev`, then allocate; the new range lands in them. */
    const size_t window = 1 << 20, small = 4096;
    uintptr_t after = ((uintptr_t)dev + n + 0xffff) & ~(uintptr_t)0xffff;
    unsigned char *taken = map_at(after, window);
    if (!taken) {
        check(0, "conflict_setup", "cannot map the window (errno %lld) %lld", errno, 0);
    } else {
        memset(taken, 0xc3, window);
        unsigned char *dev3 = NULL;
        cudaError_t a = cudaMalloc((void **)&dev3, small);
        int inside = a == 0 && (uintptr_t)dev3 >= (uintptr_t)taken && (uintptr_t)dev3 + small <= (uintptr_t)taken + window;
        printf("conflicting device pointer %p in host window %p\n", (void *)dev3, (void *)taken);
        check(inside, "conflict_setup", "malloc %lld, placed outside the window (offset %lld)", a,
              (long long)((uintptr_t)dev3 - (uintptr_t)taken));
        if (inside) {
            /* Direction cannot be resolved: refused, not guessed. */
            cudaError_t u1 = cudaMemcpy(dev3, host, small, cudaMemcpyDefault);
            cudaGetLastError();
            cudaError_t u2 = cudaMemcpy(back, dev3, small, cudaMemcpyDefault);
            cudaGetLastError();
            check(u1 == cudaErrorInvalidValue && u2 == cudaErrorInvalidValue, "conflict_default_refused",
                  "errors %lld %lld", u1, u2);
            /* Explicit directions still work, and the host bytes at that address are untouched. */
            memset(back, 0, small);
            cudaError_t x1 = cudaMemcpy(dev3, host, small, cudaMemcpyHostToDevice);
            cudaError_t x2 = cudaMemcpy(back, dev3, small, cudaMemcpyDeviceToHost);
            size_t off = (uintptr_t)dev3 - (uintptr_t)taken;
            int untouched = taken[off] == 0xc3 && taken[off + small - 1] == 0xc3;
            check(x1 == 0 && x2 == 0 && memcmp(back, host, small) == 0 && untouched, "conflict_explicit_works",
                  "errors %lld %lld", x1, x2);
            cudaError_t f3 = cudaFree(dev3);
            /* Freeing it must not unmap the host pages the shim never owned. */
            check(f3 == 0 && taken[off] == 0xc3, "conflict_free_keeps_host", "free %lld %lld", f3, 0);
        }
        munmap(taken, window);
    }

    cudaError_t g1 = cudaFree(dev), g2 = cudaFreeHost(pinned);
    check(g1 == 0 && g2 == 0, "free", "errors %lld %lld", g1, g2);
    free(host);
    free(back);
    printf("done\n");
    return failures == 0 ? 0 : 1;
}
