/* Async work must reach the device while the program does host work and makes no driver call
 * (issue 5, call classes): the shim may batch async calls, but never hold the last batch back
 * until the program's next call.
 *
 *   overlap observe   queues a spin kernel, a memset and an async copy back into pinned memory,
 *                     then makes NO driver call and watches the pinned word on the host. On shm
 *                     the worker writes pinned (arena) memory in place, so the word changes only
 *                     if the queued batch was sent without the program calling in. Bounded by
 *                     OBSERVE_WAIT_MS_MAX (a liveness bound, not a timing check): without a
 *                     flush the word never changes and the check fails.
 *   overlap timing    prints how long "launch SPIN_MS of kernels, sleep SPIN_MS on the host, then
 *                     synchronize" takes: about SPIN_MS with overlap, about twice without. Printed
 *                     only (no timing assertion: the CI machine may be loaded).
 *
 * One "ok NAME" / "FAIL NAME: why" line per check; remote.sh matches them. Driver API only,
 * resolved with dlsym like kernel_driver.c. */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <cuda.h>

/* Longest the host waits to see the device's write, in milliseconds. */
#define OBSERVE_WAIT_MS_MAX 20000
/* Device time queued in the timing run, in milliseconds (rgpu_spin_us caps a launch at 100 ms). */
#define SPIN_MS 200
#define SPIN_LAUNCH_US 100000u
#define MAGIC 0x5eedf00du

static int failures = 0;
static void check(int ok, const char *name, long long got, long long want) {
    if (ok) {
        printf("ok %s\n", name);
    } else {
        printf("FAIL %s: got %lld want %lld\n", name, got, want);
        failures++;
    }
}

#define FN(name) static __typeof__(&name) p_##name
FN(cuInit); FN(cuDevicePrimaryCtxRetain); FN(cuCtxSetCurrent); FN(cuModuleLoadData);
FN(cuModuleGetFunction); FN(cuLaunchKernel); FN(cuMemAlloc_v2); FN(cuMemFree_v2);
FN(cuMemAllocHost_v2); FN(cuMemFreeHost); FN(cuMemsetD32Async); FN(cuMemcpyDtoHAsync_v2);
FN(cuStreamCreate); FN(cuStreamSynchronize); FN(cuStreamDestroy_v2);
#define LOAD(name) do { p_##name = (__typeof__(p_##name))dlsym(lib, #name); \
    if (!p_##name) { printf("FAIL dlsym %s\n", #name); return 1; } } while (0)

static const char *MODULE_TEXT = "RGPU-EMU-MODULE v1\nkernel rgpu_spin_us\n";

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0) {
    }
}

static CUresult spin(CUfunction f, CUstream s, unsigned us) {
    void *params[] = {&us};
    return p_cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, s, params, NULL);
}

/* The device's write must appear in pinned memory with no driver call after the queueing. */
static void observe(CUfunction f, CUstream s, CUdeviceptr dev) {
    volatile uint32_t *host = NULL;
    CUresult r = p_cuMemAllocHost_v2((void **)&host, sizeof *host);
    check(r == CUDA_SUCCESS && host != NULL, "pinned_alloc", r, 0);
    if (r != CUDA_SUCCESS) return;
    *host = 0;
    r = spin(f, s, 20000);
    if (r == CUDA_SUCCESS) r = p_cuMemsetD32Async(dev, MAGIC, 1, s);
    if (r == CUDA_SUCCESS) r = p_cuMemcpyDtoHAsync_v2((void *)host, dev, sizeof *host, s);
    check(r == CUDA_SUCCESS, "queued", r, 0);
    /* From here until the check: no driver call at all. */
    double t0 = now_ms();
    while (*host != MAGIC && now_ms() - t0 < OBSERVE_WAIT_MS_MAX) sleep_ms(1);
    double seen = now_ms() - t0;
    check(*host == MAGIC, "async_reached_device_without_a_call", *host, MAGIC);
    printf("observe: the device's write was visible after %.1f ms (20 ms kernel queued first)\n",
           seen);
    r = p_cuStreamSynchronize(s);
    check(r == CUDA_SUCCESS, "observe_synchronize", r, 0);
    p_cuMemFreeHost((void *)host);
}

/* Prints kernel time, host time and their total; overlap makes the total close to the larger. */
static void timing(CUfunction f, CUstream s) {
    double t0 = now_ms();
    CUresult r = CUDA_SUCCESS;
    for (int i = 0; r == CUDA_SUCCESS && i < SPIN_MS / 100; i++) r = spin(f, s, SPIN_LAUNCH_US);
    check(r == CUDA_SUCCESS, "timing_launch", r, 0);
    sleep_ms(SPIN_MS); /* host work: no driver call */
    double t1 = now_ms();
    r = p_cuStreamSynchronize(s);
    double t2 = now_ms();
    check(r == CUDA_SUCCESS, "timing_synchronize", r, 0);
    printf("perf overlap: %d ms of kernels, %d ms of host work, total %.1f ms (synchronize waited "
           "%.1f ms; about %d with overlap, %d without)\n",
           SPIN_MS, SPIN_MS, t2 - t0, t2 - t1, SPIN_MS, 2 * SPIN_MS);
}

int main(int argc, char **argv) {
    int do_observe = argc > 1 && strcmp(argv[1], "observe") == 0;
    int do_timing = argc > 1 && strcmp(argv[1], "timing") == 0;
    if (!do_observe && !do_timing) {
        printf("usage: overlap observe|timing\n");
        return 2;
    }
    void *lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib) { printf("FAIL dlopen: %s\n", dlerror()); return 1; }
    LOAD(cuInit); LOAD(cuDevicePrimaryCtxRetain); LOAD(cuCtxSetCurrent); LOAD(cuModuleLoadData);
    LOAD(cuModuleGetFunction); LOAD(cuLaunchKernel); LOAD(cuMemAlloc_v2); LOAD(cuMemFree_v2);
    LOAD(cuMemAllocHost_v2); LOAD(cuMemFreeHost); LOAD(cuMemsetD32Async);
    LOAD(cuMemcpyDtoHAsync_v2); LOAD(cuStreamCreate); LOAD(cuStreamSynchronize);
    LOAD(cuStreamDestroy_v2);

    CUresult r = p_cuInit(0);
    CUcontext ctx = NULL;
    if (r == CUDA_SUCCESS) r = p_cuDevicePrimaryCtxRetain(&ctx, 0);
    if (r == CUDA_SUCCESS) r = p_cuCtxSetCurrent(ctx);
    check(r == CUDA_SUCCESS, "context", r, 0);
    CUmodule mod = NULL;
    CUfunction f = NULL;
    if (r == CUDA_SUCCESS) r = p_cuModuleLoadData(&mod, MODULE_TEXT);
    if (r == CUDA_SUCCESS) r = p_cuModuleGetFunction(&f, mod, "rgpu_spin_us");
    check(r == CUDA_SUCCESS, "spin_kernel", r, 0);
    CUstream s = NULL;
    CUdeviceptr dev = 0;
    if (r == CUDA_SUCCESS) r = p_cuStreamCreate(&s, CU_STREAM_NON_BLOCKING);
    if (r == CUDA_SUCCESS) r = p_cuMemAlloc_v2(&dev, 4);
    check(r == CUDA_SUCCESS, "setup", r, 0);
    if (r != CUDA_SUCCESS) return 1;

    if (do_observe) observe(f, s, dev);
    if (do_timing) timing(f, s);

    r = p_cuMemFree_v2(dev);
    if (r == CUDA_SUCCESS) r = p_cuStreamDestroy_v2(s);
    check(r == CUDA_SUCCESS, "teardown", r, 0);
    printf("done\n");
    return failures != 0;
}
