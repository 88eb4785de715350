/* Streams and events through NVIDIA's static CUDA runtime and the shim: creation (with flags
 * and priority), work chained across two streams with an event and a stream wait (results
 * checked), the default streams (legacy and per-thread), event record / query / synchronize /
 * elapsed time, stream query and synchronize, an async failure reported by a later call while
 * the context stays usable, and destruction. Each check prints "ok NAME" or "FAIL NAME: why";
 * remote.sh passes only if every expected "ok" line is there and no "FAIL" line is.
 *
 *   streams_events               the checks
 *   streams_events bench N       per-call cost: N x cudaEventRecord (async), N x cudaEventQuery
 *                                on a completed event (local), N/10 x cudaStreamQuery (sync) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
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

/* 1 if all n bytes of the device buffer equal v. */
static int all_equal(const void *dev, size_t n, unsigned char v) {
    unsigned char *h = malloc(n);
    if (!h) return 0;
    int ok = cudaMemcpy(h, dev, n, cudaMemcpyDeviceToHost) == cudaSuccess;
    for (size_t i = 0; ok && i < n; i++) ok = h[i] == v;
    free(h);
    return ok;
}

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* One thread's work on its own per-thread default stream. */
struct worker {
    unsigned char *buf;
    size_t n;
    unsigned char value;
    cudaError_t set, sync;
};

static void *per_thread_worker(void *arg) {
    struct worker *w = arg;
    w->set = cudaMemsetAsync(w->buf, w->value, w->n, cudaStreamPerThread);
    w->sync = cudaStreamSynchronize(cudaStreamPerThread);
    return NULL;
}

static int bench(long n) {
    cudaStream_t s;
    cudaEvent_t ev;
    if (cudaStreamCreate(&s) || cudaEventCreateWithFlags(&ev, cudaEventDisableTiming)) {
        printf("FAIL bench setup\n");
        return 1;
    }
    cudaError_t worst = cudaSuccess;
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        cudaError_t e = cudaEventRecord(ev, s);
        if (e) worst = e;
    }
    cudaError_t es = cudaStreamSynchronize(s);
    double t1 = now_ns();
    for (long i = 0; i < n; i++) {
        cudaError_t e = cudaEventQuery(ev);
        if (e) worst = e;
    }
    double t2 = now_ns();
    long m = n / 10 > 0 ? n / 10 : 1; /* round trips are slower: a tenth as many */
    for (long i = 0; i < m; i++) {
        cudaError_t e = cudaStreamQuery(s);
        if (e) worst = e;
    }
    double t3 = now_ns();
    printf("bench cudaEventRecord (async): %.0f ns/call over %ld calls (incl. the final sync)\n",
           (t1 - t0) / n, n);
    printf("bench cudaEventQuery (local, known complete): %.0f ns/call\n", (t2 - t1) / n);
    printf("bench cudaStreamQuery (sync round trip): %.0f ns/call over %ld calls\n", (t3 - t2) / m,
           m);
    check(worst == cudaSuccess && es == cudaSuccess, "bench", "errors %lld %lld", worst, es);
    cudaEventDestroy(ev);
    cudaStreamDestroy(s);
    printf("done\n");
    return failures != 0;
}

int main(int argc, char **argv) {
    if (argc > 2 && strcmp(argv[1], "bench") == 0) return bench(atol(argv[2]));

    cudaStream_t s1, s2, s3;
    cudaError_t e1 = cudaStreamCreate(&s1);
    cudaError_t e2 = cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking);
    check(e1 == 0 && e2 == 0 && s1 != s2 && s1 != 0 && s2 != 0, "stream_create", "errors %lld %lld",
          e1, e2);
    int lo = 0, hi = 0;
    cudaError_t e = cudaDeviceGetStreamPriorityRange(&lo, &hi);
    printf("cudaDeviceGetStreamPriorityRange: %d (%s) least=%d greatest=%d\n", (int)e,
           cudaGetErrorName(e), lo, hi);
    e = cudaStreamCreateWithPriority(&s3, cudaStreamDefault, -1);
    int prio = 7;
    cudaError_t ep = cudaStreamGetPriority(s3, &prio);
    check(e == 0 && ep == 0 && prio == -1, "stream_priority", "error %lld priority %lld",
          e * 1000 + ep, prio);
    unsigned flags = 7;
    e = cudaStreamGetFlags(s2, &flags);
    check(e == 0 && flags == cudaStreamNonBlocking, "stream_flags", "error %lld flags %lld", e,
          flags);

    enum cudaStreamCaptureStatus cap1 = cudaStreamCaptureStatusActive, cap2 = cap1;
    e1 = cudaStreamIsCapturing(s1, &cap1);
    e2 = cudaStreamIsCapturing(cudaStreamPerThread, &cap2);
    check(e1 == 0 && e2 == 0 && cap1 == cudaStreamCaptureStatusNone &&
              cap2 == cudaStreamCaptureStatusNone,
          "not_capturing", "errors %lld %lld", e1, e2);

    cudaEvent_t start, mid, end, quiet;
    e1 = cudaEventCreate(&start);
    e2 = cudaEventCreate(&mid);
    cudaError_t e3 = cudaEventCreate(&end);
    cudaError_t e4 = cudaEventCreateWithFlags(&quiet, cudaEventDisableTiming);
    check(e1 == 0 && e2 == 0 && e3 == 0 && e4 == 0 && start != mid, "event_create",
          "errors %lld %lld", e1 * 1000 + e2, e3 * 1000 + e4);
    e = cudaEventQuery(mid);
    check(e == cudaSuccess, "event_query_unrecorded", "error %lld%lld", e, 0);

    /* s1: a := 0x11, b := a, record mid. s2 waits for mid, then a := 0x22, c := b. */
    const size_t n = 1 << 20;
    unsigned char *a = NULL, *b = NULL, *c = NULL;
    e1 = cudaMalloc((void **)&a, n);
    e2 = cudaMalloc((void **)&b, n);
    e3 = cudaMalloc((void **)&c, n);
    check(e1 == 0 && e2 == 0 && e3 == 0, "malloc", "errors %lld %lld", e1 * 1000 + e2, e3);
    int rc = 0;
    rc |= cudaEventRecord(start, s1);
    rc |= cudaMemsetAsync(a, 0x11, n, s1);
    rc |= cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, s1);
    rc |= cudaEventRecord(mid, s1);
    rc |= cudaStreamWaitEvent(s2, mid, 0);
    rc |= cudaMemsetAsync(a, 0x22, n, s2);
    rc |= cudaMemcpyAsync(c, b, n, cudaMemcpyDeviceToDevice, s2);
    rc |= cudaEventRecord(end, s2);
    rc |= cudaEventRecord(quiet, s2);
    check(rc == 0, "enqueue", "status bits %llx%lld", rc, 0);
    e = cudaEventSynchronize(end);
    check(e == cudaSuccess, "event_synchronize", "error %lld%lld", e, 0);
    e = cudaEventQuery(end);
    check(e == cudaSuccess, "event_query_done", "error %lld%lld", e, 0);
    check(all_equal(b, n, 0x11) && all_equal(c, n, 0x11) && all_equal(a, n, 0x22),
          "cross_stream_order", "buffers wrong%lld%lld", 0, 0);
    float ms = -1.0f;
    e = cudaEventElapsedTime(&ms, start, end);
    printf("cudaEventElapsedTime: %d (%s) %.6f ms\n", (int)e, cudaGetErrorName(e), ms);
    check(e == cudaSuccess && ms >= 0.0f, "elapsed_time", "error %lld ms*1000 %lld", e,
          (long long)(ms * 1000));
    e = cudaEventElapsedTime(&ms, start, quiet);
    check(e == cudaErrorInvalidResourceHandle, "elapsed_time_no_timing", "error %lld%lld", e, 0);
    e1 = cudaStreamQuery(s1);
    e2 = cudaStreamSynchronize(s2);
    check(e1 == cudaSuccess && e2 == cudaSuccess, "stream_query_sync", "errors %lld %lld", e1, e2);

    /* Host round trip on one stream: pageable H2D then D2H, ordered. */
    unsigned char *src = malloc(n), *dst = malloc(n);
    for (size_t i = 0; i < n; i++) src[i] = (unsigned char)(i * 7 + 3);
    memset(dst, 0, n);
    e1 = cudaMemcpyAsync(b, src, n, cudaMemcpyHostToDevice, s1);
    e2 = cudaMemcpyAsync(dst, b, n, cudaMemcpyDeviceToHost, s1);
    e3 = cudaStreamSynchronize(s1);
    check(e1 == 0 && e2 == 0 && e3 == 0 && memcmp(src, dst, n) == 0, "stream_host_roundtrip",
          "errors %lld %lld", e1 * 1000 + e2, e3);
    free(src);
    free(dst);

    /* Default streams: per-thread and legacy. */
    e1 = cudaMemsetAsync(c, 0x33, n, cudaStreamPerThread);
    e2 = cudaStreamSynchronize(cudaStreamPerThread);
    check(e1 == 0 && e2 == 0 && all_equal(c, n, 0x33), "per_thread_stream", "errors %lld %lld",
          e1, e2);
    /* Two threads, each on its own per-thread stream (created on first use, destroyed when
     * the thread exits). */
    struct worker w[2] = {{a, n, 0x66, 1, 1}, {b, n, 0x77, 1, 1}};
    pthread_t t[2];
    int started = 0;
    for (int i = 0; i < 2; i++) started += pthread_create(&t[i], NULL, per_thread_worker, &w[i]) == 0;
    for (int i = 0; i < started; i++) pthread_join(t[i], NULL);
    check(started == 2 && w[0].set == 0 && w[0].sync == 0 && w[1].set == 0 && w[1].sync == 0 &&
              all_equal(a, n, 0x66) && all_equal(b, n, 0x77),
          "per_thread_streams_in_threads", "errors %lld %lld", w[0].set * 1000 + w[0].sync,
          w[1].set * 1000 + w[1].sync);
    e1 = cudaMemsetAsync(c, 0x44, n, cudaStreamLegacy);
    e2 = cudaEventRecord(mid, 0);
    e3 = cudaEventSynchronize(mid);
    check(e1 == 0 && e2 == 0 && e3 == 0 && all_equal(c, n, 0x44), "legacy_stream",
          "errors %lld %lld", e1 * 1000 + e2, e3);

    /* An async failure shows up at this call or a later one, once; the context stays usable. */
    e1 = cudaMemsetAsync((void *)(uintptr_t)0xdead0000, 0, 64, s1);
    e2 = cudaStreamSynchronize(s1);
    e3 = cudaStreamSynchronize(s1);
    printf("async failure: memset %d (%s), sync %d (%s), sync again %d\n", (int)e1,
           cudaGetErrorName(e1), (int)e2, cudaGetErrorName(e2), (int)e3);
    check((e1 != 0 || e2 != 0) && e3 == 0, "async_error_reported", "errors %lld %lld",
          e1 * 1000 + e2, e3);
    e = cudaMemsetAsync(a, 0x55, n, s1);
    e1 = cudaDeviceSynchronize();
    check(e == 0 && e1 == 0 && all_equal(a, n, 0x55), "usable_after_error", "errors %lld %lld",
          e, e1);

    e1 = cudaEventDestroy(start);
    e2 = cudaEventDestroy(mid);
    e3 = cudaEventDestroy(end);
    e4 = cudaEventDestroy(quiet);
    check(e1 == 0 && e2 == 0 && e3 == 0 && e4 == 0, "event_destroy", "errors %lld %lld",
          e1 * 1000 + e2, e3 * 1000 + e4);
    e1 = cudaStreamDestroy(s1);
    e2 = cudaStreamDestroy(s2);
    e3 = cudaStreamDestroy(s3);
    check(e1 == 0 && e2 == 0 && e3 == 0, "stream_destroy", "errors %lld %lld", e1 * 1000 + e2,
          e3);
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
    e = cudaDeviceSynchronize();
    check(e == cudaSuccess, "synchronize", "error %lld%lld", e, 0);
    printf("done\n");
    return failures != 0;
}
