/* The no-GPU demo's CUDA program: an ordinary CUDA runtime program (built against NVIDIA's static
 * runtime, nothing rgpu-specific in it) that times the calls a training loop makes most, so a
 * person can see what each costs through the shim and the chosen transport.
 * argv[1]: iterations per call (default 2000). Prints what it did and p50/p99 per call.
 * It also asks NVML (libnvidia-ml.so.1, dlopened as monitoring tools do; rgpu's copy when run
 * by `rgpu run`) what it sees, if an NVML library can be loaded. */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cuda_runtime_api.h>

#define BULK_BYTES (16u << 20)

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int fail(const char *what, cudaError_t e) {
    printf("FAIL %s: %d (%s)\n", what, (int)e, cudaGetErrorName(e));
    return 1;
}

static void report(const char *name, uint64_t *ns, int n) {
    qsort(ns, (size_t)n, sizeof ns[0], cmp_u64);
    printf("  %-38s p50 %9.2f us   p99 %9.2f us\n", name, ns[n / 2] / 1e3, ns[(n * 99) / 100] / 1e3);
}

/* NVML's types, as in nvml.h. */
typedef struct { unsigned long long total, free, used; } nvml_memory;
typedef int (*nvml_fn)();
static void *nvml;

static nvml_fn nvml_sym(const char *name) { return nvml ? (nvml_fn)dlsym(nvml, name) : NULL; }

/* Prints what NVML reports for device 0; returns its handle (NULL: no NVML). */
static void *nvml_facts(void) {
    nvml = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    nvml_fn init = nvml_sym("nvmlInit_v2"), count = nvml_sym("nvmlDeviceGetCount_v2"),
            handle = nvml_sym("nvmlDeviceGetHandleByIndex_v2"), name = nvml_sym("nvmlDeviceGetName"),
            uuid = nvml_sym("nvmlDeviceGetUUID"), mem = nvml_sym("nvmlDeviceGetMemoryInfo"),
            util = nvml_sym("nvmlDeviceGetUtilizationRates");
    if (!init || !count || !handle || !name || !uuid || !mem || !util) {
        printf("nvml: no NVML library loaded (%s)\n", nvml ? "missing entry points" : "libnvidia-ml.so.1 not found");
        return NULL;
    }
    int r = init();
    if (r != 0) {
        printf("nvml: nvmlInit_v2 failed: %d\n", r);
        return NULL;
    }
    unsigned n = 0;
    void *dev = NULL;
    char dev_name[96] = "", dev_uuid[96] = "";
    nvml_memory m = {0, 0, 0};
    unsigned rates[2] = {0, 0};
    count(&n);
    handle(0u, &dev);
    name(dev, dev_name, 96u);
    uuid(dev, dev_uuid, 96u);
    mem(dev, &m);
    int ur = util(dev, rates);
    char util_text[64];
    if (ur == 0)
        snprintf(util_text, sizeof util_text, "%u%% (device-wide, past sample period)", rates[0]);
    else
        snprintf(util_text, sizeof util_text, "not reported (NVML error %d)", ur);
    printf("nvml: %u device(s); device 0: %s, %s, memory total %.1f MiB (the quota), used %.1f MiB; "
           "utilization %s\n",
           n, dev_name, dev_uuid, m.total / 1048576.0, m.used / 1048576.0, util_text);
    return dev;
}

int main(int argc, char **argv) {
    int iters = argc > 1 ? atoi(argv[1]) : 2000;
    if (iters < 10) iters = 10;
    uint64_t *ns = calloc((size_t)iters, sizeof *ns);
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) return fail("cudaGetDeviceCount", e);
    struct cudaDeviceProp prop;
    e = cudaGetDeviceProperties(&prop, 0);
    if (e != cudaSuccess) return fail("cudaGetDeviceProperties", e);
    printf("device 0: %s, %.1f MiB visible (the quota this client was granted), %d device(s)\n",
           prop.name, prop.totalGlobalMem / 1048576.0, count);
    void *nvml_dev = nvml_facts();

    void *dev = NULL;
    e = cudaMalloc(&dev, BULK_BYTES);
    if (e != cudaSuccess) return fail("cudaMalloc", e);
    unsigned char *host = malloc(BULK_BYTES), *back = malloc(BULK_BYTES);
    for (size_t i = 0; i < BULK_BYTES; i++) host[i] = (unsigned char)(i * 131u >> 3);
    printf("per-call latency over %d iterations each:\n", iters);

    for (int i = 0; i < iters; i++) {
        uint64_t t = now_ns();
        e = cudaGetDeviceCount(&count);
        ns[i] = now_ns() - t;
        if (e != cudaSuccess) return fail("cudaGetDeviceCount", e);
    }
    report("cudaGetDeviceCount (local)", ns, iters);

    for (int i = 0; i < iters; i++) {
        size_t free_b = 0, total_b = 0;
        uint64_t t = now_ns();
        e = cudaMemGetInfo(&free_b, &total_b);
        ns[i] = now_ns() - t;
        if (e != cudaSuccess) return fail("cudaMemGetInfo", e);
    }
    report("cudaMemGetInfo (sync round trip)", ns, iters);

    for (int i = 0; i < iters; i++) {
        void *p = NULL;
        uint64_t t = now_ns();
        e = cudaMalloc(&p, 4096);
        if (e == cudaSuccess) e = cudaFree(p);
        ns[i] = now_ns() - t;
        if (e != cudaSuccess) return fail("cudaMalloc+cudaFree", e);
    }
    report("cudaMalloc + cudaFree 4 KiB", ns, iters);

    nvml_fn mem = nvml_sym("nvmlDeviceGetMemoryInfo");
    if (nvml_dev && mem) {
        for (int i = 0; i < iters; i++) {
            nvml_memory m;
            uint64_t t = now_ns();
            int r = mem(nvml_dev, &m);
            ns[i] = now_ns() - t;
            if (r != 0) {
                printf("FAIL nvmlDeviceGetMemoryInfo: %d\n", r);
                return 1;
            }
        }
        report("nvmlDeviceGetMemoryInfo (round trip)", ns, iters);
    }

    for (int i = 0; i < iters; i++) {
        uint64_t t = now_ns();
        e = cudaMemcpy(dev, host, 64, cudaMemcpyHostToDevice);
        ns[i] = now_ns() - t;
        if (e != cudaSuccess) return fail("cudaMemcpy H2D 64 B", e);
    }
    report("cudaMemcpy H2D 64 B", ns, iters);

    for (int i = 0; i < iters; i++) {
        uint64_t t = now_ns();
        e = cudaMemcpy(back, dev, 64, cudaMemcpyDeviceToHost);
        ns[i] = now_ns() - t;
        if (e != cudaSuccess) return fail("cudaMemcpy D2H 64 B", e);
    }
    report("cudaMemcpy D2H 64 B", ns, iters);

    int bulk_iters = 20;
    for (int i = 0; i < bulk_iters; i++) {
        uint64_t t = now_ns();
        e = cudaMemcpy(dev, host, BULK_BYTES, cudaMemcpyHostToDevice);
        if (e == cudaSuccess) e = cudaMemcpy(back, dev, BULK_BYTES, cudaMemcpyDeviceToHost);
        ns[i] = now_ns() - t;
        if (e != cudaSuccess) return fail("cudaMemcpy 16 MiB round trip", e);
    }
    if (memcmp(host, back, BULK_BYTES) != 0) {
        printf("FAIL 16 MiB round trip: data differs\n");
        return 1;
    }
    qsort(ns, (size_t)bulk_iters, sizeof ns[0], cmp_u64);
    printf("  %-38s p50 %9.2f ms   (%.2f GB/s each way, data verified)\n",
           "cudaMemcpy 16 MiB H2D + D2H", ns[bulk_iters / 2] / 1e6,
           2.0 * BULK_BYTES / (double)ns[bulk_iters / 2]);

    e = cudaFree(dev);
    if (e != cudaSuccess) return fail("cudaFree", e);
    printf("done\n");
    return 0;
}
