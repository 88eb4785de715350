/* fork() and threads through NVIDIA's static CUDA runtime and the shim.
 *
 *   fork_threads fork        the parent initializes CUDA and works; forked children get
 *                            cudaErrorInitializationError (driver: CUDA_ERROR_NOT_INITIALIZED)
 *                            from every call, leave through _exit() and through exit() (the
 *                            runtime's atexit teardown then runs through the shim), and the
 *                            parent's session is intact afterwards (copies and syncs checked);
 *                            a child that makes no call and exit()s meets the shim first in
 *                            the runtime's teardown, after its thread-local storage is gone;
 *                            then 20 (or N: `fork N`) forks while another parent thread copies (pinned and
 *                            pageable), checked on both sides.
 *   fork_threads threads T N T threads x N iterations each of alloc / async H2D from pinned
 *                            memory / a built-in kernel (rgpu_fill_u32, driver API) / memset /
 *                            async D2H / event / stream sync / pageable copy / free, on their
 *                            own streams (even threads: a created stream, odd threads: the
 *                            per-thread default stream), every result checked.
 *
 * One "ok NAME" or "FAIL NAME: why" line per check; remote.sh matches them. */
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cuda.h>
#include <cuda_runtime_api.h>

/* Forks while another thread copies (`fork_threads fork N` overrides it). */
static int forks = 20;

static int failures = 0;
static void check(int ok, const char *name, const char *why, long long a, long long b) {
    if (ok) {
        printf("ok %s\n", name);
    } else {
        printf("FAIL %s: %s (%lld, %lld)\n", name, why, a, b);
        failures++;
    }
    fflush(stdout);
}

typedef CUresult (*cu_init_t)(unsigned);
typedef CUresult (*cu_count_t)(int *);
typedef CUresult (*cu_load_t)(CUmodule *, const void *);
typedef CUresult (*cu_getfn_t)(CUfunction *, CUmodule, const char *);
typedef CUresult (*cu_launch_t)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                                unsigned, unsigned, CUstream, void **, void **);
static cu_init_t p_cuInit;
static cu_count_t p_cuDeviceGetCount;
static cu_load_t p_cuModuleLoadData;
static cu_getfn_t p_cuModuleGetFunction;
static cu_launch_t p_cuLaunchKernel;
/* The per-thread-default-stream form: there a null stream is the thread's own stream. */
static cu_launch_t p_cuLaunchKernel_ptsz;

static int load_driver(void) {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib) { printf("FAIL dlopen: %s\n", dlerror()); return 0; }
    p_cuInit = (cu_init_t)dlsym(lib, "cuInit");
    p_cuDeviceGetCount = (cu_count_t)dlsym(lib, "cuDeviceGetCount");
    p_cuModuleLoadData = (cu_load_t)dlsym(lib, "cuModuleLoadData");
    p_cuModuleGetFunction = (cu_getfn_t)dlsym(lib, "cuModuleGetFunction");
    p_cuLaunchKernel = (cu_launch_t)dlsym(lib, "cuLaunchKernel");
    p_cuLaunchKernel_ptsz = (cu_launch_t)dlsym(lib, "cuLaunchKernel_ptsz");
    return p_cuInit && p_cuDeviceGetCount && p_cuModuleLoadData && p_cuModuleGetFunction &&
           p_cuLaunchKernel && p_cuLaunchKernel_ptsz;
}

static uint32_t pattern(uint32_t seed, size_t i) { return seed * 2654435761u + (uint32_t)i; }

/* H2D then D2H of n words through dev, pinned or pageable; 1 if the bytes came back. */
static int roundtrip(uint32_t *dev, uint32_t *host, size_t n, uint32_t seed, cudaStream_t s) {
    for (size_t i = 0; i < n; i++) host[i] = pattern(seed, i);
    if (cudaMemcpyAsync(dev, host, n * 4, cudaMemcpyHostToDevice, s) != cudaSuccess) return 0;
    /* An async copy from pinned memory reads it later: wait before reusing the buffer. */
    if (cudaStreamSynchronize(s) != cudaSuccess) return 0;
    memset(host, 0, n * 4);
    if (cudaMemcpyAsync(host, dev, n * 4, cudaMemcpyDeviceToHost, s) != cudaSuccess) return 0;
    if (cudaStreamSynchronize(s) != cudaSuccess) return 0;
    for (size_t i = 0; i < n; i++) if (host[i] != pattern(seed, i)) return 0;
    return 1;
}

/* The child's side: every call fails with the initialization error; exit how `how` says. */
static void child(int how) {
    int ok = 1;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, 4096);
    printf("child %d: cudaMalloc: %d (%s)\n", (int)getpid(), (int)e, cudaGetErrorName(e));
    ok &= e == cudaErrorInitializationError;
    int count = -1;
    CUresult r = p_cuDeviceGetCount(&count);
    ok &= r == CUDA_ERROR_NOT_INITIALIZED && count == 0;
    r = p_cuInit(0);
    printf("child: cuInit: %d\n", (int)r);
    ok &= r == CUDA_ERROR_NOT_INITIALIZED;
    e = cudaDeviceSynchronize();
    ok &= e != cudaSuccess;
    fflush(stdout);
    if (how == 0) _exit(ok ? 0 : 3);
    exit(ok ? 0 : 3);
}

static int fork_and_wait(int how) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return -1;
    /* how 2: no CUDA call at all; the runtime's atexit teardown is the first contact. */
    if (pid == 0 && how == 2) exit(0);
    if (pid == 0) child(how);
    /* Bounded wait (20 s, liveness only): a hung child is killed and reported as 200. */
    int status = 0;
    for (int i = 0; i < 20000; i++) {
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (got < 0) return -1;
        usleep(1000);
    }
    printf("child %d (how %d) hung; killed\n", (int)pid, how);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return 200;
}

struct copier {
    volatile int stop;
    volatile long rounds, bad;
    uint32_t *dev, *pinned, *pageable;
    size_t n;
};

static void *copier_main(void *arg) {
    struct copier *c = arg;
    cudaStream_t s;
    if (cudaStreamCreate(&s) != cudaSuccess) { c->bad++; return NULL; }
    while (!c->stop) {
        uint32_t seed = (uint32_t)c->rounds;
        if (!roundtrip(c->dev, c->pinned, c->n, seed, s)) c->bad++;
        if (!roundtrip(c->dev, c->pageable, c->n, seed + 7, s)) c->bad++;
        c->rounds++;
    }
    cudaStreamDestroy(s);
    return NULL;
}

static int run_fork(void) {
    const size_t n = 1 << 18; /* 1 MiB of words */
    uint32_t *dev = NULL, *pinned = NULL, *pageable = malloc(n * 4);
    cudaError_t e = cudaMalloc((void **)&dev, n * 4);
    if (e == cudaSuccess) e = cudaMallocHost((void **)&pinned, n * 4);
    check(e == cudaSuccess && pageable, "parent_init", "alloc", e, 0);
    if (e != cudaSuccess || !pageable) return 1;
    check(roundtrip(dev, pinned, n, 1, 0) && roundtrip(dev, pageable, n, 2, 0), "parent_work",
          "roundtrip", 0, 0);

    /* Queue async work, fork at once (the batch may still be unsent in the parent). */
    e = cudaMemsetAsync(dev, 0x5a, n * 4, 0);
    int st = fork_and_wait(0);
    check(st == 0, "child_refused", "child exit status", st, 0);
    st = fork_and_wait(1);
    check(st == 0, "child_exit_runs_atexit", "child exit status", st, 0);
    st = fork_and_wait(2);
    check(st == 0, "child_exit_without_calls", "child exit status", st, 0);
    int same = e == cudaSuccess && cudaMemcpy(pageable, dev, n * 4, cudaMemcpyDeviceToHost) == cudaSuccess;
    for (size_t i = 0; same && i < n; i++) same = pageable[i] == 0x5a5a5a5au;
    check(same, "parent_queued_work_survives_fork", "memset before the fork", e, 0);
    check(roundtrip(dev, pinned, n, 3, 0) && roundtrip(dev, pageable, n, 4, 0) &&
              cudaDeviceSynchronize() == cudaSuccess,
          "parent_after_fork", "roundtrip", 0, 0);

    /* Forks while another thread is inside copies (the fork handlers' lock path). */
    struct copier c = {0};
    c.n = 1 << 16;
    e = cudaMalloc((void **)&c.dev, c.n * 4);
    if (e == cudaSuccess) e = cudaMallocHost((void **)&c.pinned, c.n * 4);
    c.pageable = malloc(c.n * 4);
    pthread_t t;
    if (e != cudaSuccess || !c.pageable || pthread_create(&t, NULL, copier_main, &c) != 0) {
        check(0, "fork_while_busy", "setup", e, 0);
        return 1;
    }
    /* Fork only once the copier is under way (bounded wait: 10 s, liveness only). */
    for (int i = 0; i < 10000 && c.rounds == 0 && !c.bad; i++) usleep(1000);
    int bad_children = 0;
    for (int i = 0; i < forks; i++) {
        /* Parent work between forks too, on the legacy stream. */
        if (!roundtrip(dev, pinned, 1024, 100 + (uint32_t)i, 0)) bad_children += 1000;
        if (fork_and_wait(i & 1) != 0) bad_children++;
    }
    c.stop = 1;
    pthread_join(t, NULL);
    printf("fork_while_busy: %d forks, copier rounds %ld, bad rounds %ld\n", forks, c.rounds, c.bad);
    check(bad_children == 0 && c.bad == 0 && c.rounds > 0, "fork_while_busy", "bad children / bad rounds",
          bad_children, c.bad);
    check(roundtrip(dev, pinned, n, 5, 0) && cudaDeviceSynchronize() == cudaSuccess, "parent_after_forks",
          "roundtrip", 0, 0);
    cudaFree(c.dev);
    cudaFreeHost(c.pinned);
    free(c.pageable);
    e = cudaFree(dev);
    if (e == cudaSuccess) e = cudaFreeHost(pinned);
    free(pageable);
    check(e == cudaSuccess, "free", "free", e, 0);
    return 0;
}

static const char *MODULE_TEXT = "RGPU-EMU-MODULE v1\nkernel rgpu_fill_u32\n";
static CUfunction fill_fn;
static int iterations;

struct worker {
    int id;
    long bad;
    char why[128];
};

static void *worker_main(void *arg) {
    struct worker *w = arg;
    cudaStream_t s = cudaStreamPerThread;
    if (cudaSetDevice(0) != cudaSuccess) { w->bad++; return NULL; }
    if (w->id % 2 == 0 && cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) != cudaSuccess) {
        w->bad++;
        return NULL;
    }
    cudaEvent_t ev;
    if (cudaEventCreateWithFlags(&ev, cudaEventDisableTiming) != cudaSuccess) { w->bad++; return NULL; }
    for (int it = 0; it < iterations; it++) {
        size_t n = 1024 + (size_t)((w->id * 977 + it * 131) % 4096);
        uint32_t seed = (uint32_t)(w->id << 16 | it);
        uint32_t *dev = NULL, *dev2 = NULL, *pinned = NULL, *pageable = malloc(n * 4);
        cudaError_t e = cudaMalloc((void **)&dev, n * 4);
        if (!e) e = cudaMalloc((void **)&dev2, n * 4);
        if (!e) e = cudaMallocHost((void **)&pinned, n * 4);
        if (e || !pageable) {
            snprintf(w->why, sizeof w->why, "iter %d alloc %d", it, (int)e);
            w->bad++;
            break;
        }
        for (size_t i = 0; i < n; i++) pinned[i] = pattern(seed, i);
        /* first half: uploaded pattern; second half: the kernel's fill value. */
        e = cudaMemcpyAsync(dev, pinned, n * 4, cudaMemcpyHostToDevice, s);
        unsigned half = (unsigned)(n / 2), rest = (unsigned)(n - n / 2), value = seed ^ 0xabcdu;
        CUdeviceptr tail = (CUdeviceptr)(uintptr_t)(dev + half);
        void *params[] = {&tail, &value, &rest};
        /* Odd threads: the _ptsz form with a null stream names cudaStreamPerThread too. */
        CUresult r = w->id % 2 ? p_cuLaunchKernel_ptsz(fill_fn, (rest + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, params, NULL)
                               : p_cuLaunchKernel(fill_fn, (rest + 255) / 256, 1, 1, 256, 1, 1, 0, (CUstream)s, params, NULL);
        if (!e) e = cudaMemsetAsync(dev2, w->id & 0xff, n * 4, s);
        if (!e) e = cudaEventRecord(ev, s);
        if (!e) e = cudaEventSynchronize(ev); /* the upload has read `pinned` */
        memset(pinned, 0, n * 4);
        if (!e) e = cudaMemcpyAsync(pinned, dev, n * 4, cudaMemcpyDeviceToHost, s);
        if (!e) e = cudaStreamSynchronize(s);
        int ok = !e && r == CUDA_SUCCESS;
        for (size_t i = 0; ok && i < half; i++) ok = pinned[i] == pattern(seed, i);
        for (size_t i = half; ok && i < n; i++) ok = pinned[i] == value;
        /* pageable, synchronous (the legacy stream waits for nothing of ours: s is done) */
        if (ok) ok = cudaMemcpy(pageable, dev2, n * 4, cudaMemcpyDeviceToHost) == cudaSuccess;
        unsigned char b = (unsigned char)(w->id & 0xff);
        uint32_t word = b * 0x01010101u;
        for (size_t i = 0; ok && i < n; i++) ok = pageable[i] == word;
        if (!ok && !w->bad)
            snprintf(w->why, sizeof w->why, "iter %d: err %d launch %d", it, (int)e, (int)r);
        if (!ok) w->bad++;
        if (cudaFree(dev) || cudaFree(dev2) || cudaFreeHost(pinned)) w->bad++;
        free(pageable);
    }
    cudaEventDestroy(ev);
    if (w->id % 2 == 0) cudaStreamDestroy(s);
    return NULL;
}

static int run_threads(int threads, int n) {
    iterations = n;
    cudaError_t e = cudaFree(0); /* initializes the runtime and its primary context */
    CUmodule mod = NULL;
    CUresult r = e ? CUDA_ERROR_UNKNOWN : p_cuModuleLoadData(&mod, MODULE_TEXT);
    if (!r) r = p_cuModuleGetFunction(&fill_fn, mod, "rgpu_fill_u32");
    check(!e && !r, "threads_setup", "init / module", e, r);
    if (e || r) return 1;
    struct worker w[64];
    pthread_t t[64];
    if (threads > 64) threads = 64;
    for (int i = 0; i < threads; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].id = i;
        if (pthread_create(&t[i], NULL, worker_main, &w[i]) != 0) w[i].bad = 1;
    }
    long bad = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        if (w[i].bad) printf("thread %d: %ld bad iterations, first: %s\n", i, w[i].bad, w[i].why);
        bad += w[i].bad;
    }
    printf("threads: %d threads x %d iterations, %ld bad\n", threads, n, bad);
    check(bad == 0, "threads_concurrent", "bad iterations", bad, 0);
    check(cudaDeviceSynchronize() == cudaSuccess && cudaGetLastError() == cudaSuccess, "threads_context_clean",
          "sync", 0, 0);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || !load_driver()) {
        printf("usage: fork_threads fork | threads T N\n");
        return 2;
    }
    if (strcmp(argv[1], "fork") == 0) {
        if (argc == 3) forks = atoi(argv[2]);
        run_fork();
    } else if (strcmp(argv[1], "threads") == 0 && argc == 4) {
        run_threads(atoi(argv[2]), atoi(argv[3]));
    } else {
        printf("usage: fork_threads fork | threads T N\n");
        return 2;
    }
    printf(failures ? "failed\n" : "done\n");
    return failures ? 1 : 0;
}
