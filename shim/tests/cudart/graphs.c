/* Stream capture and CUDA graphs through the runtime API (cudaStreamBeginCapture,
 * cudaStreamEndCapture, cudaGraphInstantiate, cudaGraphLaunch): a memset, a built-in emulated
 * kernel (rgpu_fill_u32, registered from a hand-built fatbin as in kernel_cudart.c) and a
 * device-to-device copy are captured on a stream; nothing runs during the capture; the graph
 * is launched 3 times with the buffers reset in between, and the results are checked each time.
 * Then a synchronous cudaMemcpy during a capture fails with cudaErrorStreamCaptureUnsupported
 * (900) and the capture ends with cudaErrorStreamCaptureInvalidated (901).
 * One "ok NAME" / "FAIL NAME" line per check. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cuda_runtime_api.h>

void **__cudaRegisterFatBinary(void *fat_cubin);
void __cudaRegisterFatBinaryEnd(void **handle);
void __cudaUnregisterFatBinary(void **handle);
void __cudaRegisterFunction(void **handle, const char *host_fun, char *device_fun,
                            const char *device_name, int thread_limit, uint3 *tid, uint3 *bid,
                            dim3 *block, dim3 *grid, int *warp_size);

static const char MODULE_TEXT[] = "RGPU-EMU-MODULE v1\nkernel rgpu_vector_add_f32\nkernel rgpu_fill_u32\n";

#define PAYLOAD_MAX 128
static struct {
    uint32_t magic;
    uint16_t version;
    uint16_t header_size;
    uint64_t fat_size;
    /* one entry */
    uint16_t kind;
    uint16_t entry_version;
    uint32_t entry_header_size;
    uint32_t padded_payload_size;
    uint32_t unknown0;
    uint32_t payload_size;
    uint32_t unknown1;
    uint32_t minor;
    uint32_t sm_arch;
    uint32_t reloc_offset;
    uint32_t reloc_size;
    uint64_t flags;
    uint64_t reserved[2];
    char payload[PAYLOAD_MAX];
} __attribute__((aligned(8))) fatbin;

static struct {
    uint32_t magic;
    uint32_t version;
    const void *data;
    void *filename_or_fatbins;
} wrapper;

static void fill_stub(void) {}

static int failures = 0;
static void check(int ok, const char *name, long long got) {
    if (ok) printf("ok %s\n", name);
    else { printf("FAIL %s: got %lld\n", name, got); failures++; }
}

static void register_module(void) {
    static const char text_src[] = "RGPU-EMU-MODULE v1\nkernel rgpu_fill_u32\n";
    size_t text = sizeof text_src;
    memset(&fatbin, 0, sizeof fatbin);
    fatbin.magic = 0xBA55ED50u;
    fatbin.version = 1;
    fatbin.header_size = 16;
    fatbin.kind = 1; /* PTX */
    fatbin.entry_version = 0x0101;
    fatbin.entry_header_size = 64;
    fatbin.payload_size = (uint32_t)text;
    fatbin.padded_payload_size = (uint32_t)((text + 7) & ~(size_t)7);
    fatbin.sm_arch = 80;
    memcpy(fatbin.payload, text_src, text);
    fatbin.fat_size = 64 + fatbin.padded_payload_size;
    wrapper.magic = 0x466243b1u;
    wrapper.version = 1;
    wrapper.data = &fatbin;
    void **handle = __cudaRegisterFatBinary(&wrapper);
    __cudaRegisterFunction(handle, (const char *)fill_stub, "rgpu_fill_u32", "rgpu_fill_u32", -1,
                           NULL, NULL, NULL, NULL, NULL);
    __cudaRegisterFatBinaryEnd(handle);
}

enum { N = 256 };

/* Every element of dev[0..N) equals want; -1 when so, else the first bad index. */
static int first_bad(const unsigned *dev, unsigned want) {
    unsigned h[N];
    if (cudaMemcpy(h, dev, sizeof h, cudaMemcpyDeviceToHost) != cudaSuccess) return -2;
    for (int i = 0; i < N; i++) if (h[i] != want) return i;
    return -1;
}

int main(void) {
    register_module();
    unsigned *a = NULL, *b = NULL, *c = NULL;
    cudaStream_t s = NULL;
    cudaError_t e = cudaMalloc((void **)&a, N * 4);
    if (!e) e = cudaMalloc((void **)&b, N * 4);
    if (!e) e = cudaMalloc((void **)&c, N * 4);
    if (!e) e = cudaMemset(a, 0, N * 4);
    if (!e) e = cudaMemset(b, 0, N * 4);
    if (!e) e = cudaMemset(c, 0, N * 4);
    if (!e) e = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    cudaEvent_t ev = NULL;
    if (!e) e = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
    check(e == cudaSuccess, "graph_setup", e);

    enum cudaStreamCaptureStatus st = cudaStreamCaptureStatusActive;
    e = cudaStreamIsCapturing(s, &st);
    check(e == 0 && st == cudaStreamCaptureStatusNone, "not_capturing_before", e ? e : st);

    e = cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal);
    check(e == cudaSuccess, "begin_capture", e);
    e = cudaStreamIsCapturing(s, &st);
    check(e == 0 && st == cudaStreamCaptureStatusActive, "capturing", e ? e : st);
    unsigned long long id = 0;
#if CUDART_VERSION >= 13000
    e = cudaStreamGetCaptureInfo(s, &st, &id, NULL, NULL, NULL, NULL);
#else
    e = cudaStreamGetCaptureInfo(s, &st, &id, NULL, NULL, NULL);
#endif
    check(e == 0 && st == cudaStreamCaptureStatusActive && id != 0, "capture_info", e ? e : (long long)id);

    cudaError_t m = cudaMemsetAsync(a, 0x01, N * 4, s);
    /* An event recorded and waited on inside the capture: a dependency within the graph. */
    cudaError_t ev_r = cudaEventRecord(ev, s);
    cudaError_t ev_w = cudaStreamWaitEvent(s, ev, 0);
    check(ev_r == 0 && ev_w == 0, "event_in_capture", ev_r ? ev_r : ev_w);
    unsigned value = 7, n = N;
    void *args[] = {&b, &value, &n};
    dim3 grid = {N / 128, 1, 1}, block = {128, 1, 1};
    cudaError_t k = cudaLaunchKernel((const void *)fill_stub, grid, block, args, 0, s);
    cudaError_t d = cudaMemcpyAsync(c, a, N * 4, cudaMemcpyDeviceToDevice, s);
    printf("memset=%d launch=%d d2d=%d\n", (int)m, (int)k, (int)d);
    check(m == 0 && k == 0 && d == 0, "captured_calls", m ? m : (k ? k : d));

    cudaGraph_t graph = NULL;
    e = cudaStreamEndCapture(s, &graph);
    check(e == cudaSuccess && graph != NULL, "end_capture", e);
    e = cudaStreamIsCapturing(s, &st);
    check(e == 0 && st == cudaStreamCaptureStatusNone, "not_capturing_after", e ? e : st);
    int ba = first_bad(a, 0), bb = first_bad(b, 0), bc = first_bad(c, 0);
    check(ba < 0 && bb < 0 && bc < 0, "nothing_ran_during_capture", ba >= 0 ? ba : (bb >= 0 ? bb : bc));

    cudaGraphExec_t exec = NULL;
    e = cudaGraphInstantiate(&exec, graph, 0);
    check(e == cudaSuccess && exec != NULL, "instantiate", e);

    int launches_ok = 1;
    for (int round = 0; round < 3; round++) {
        cudaMemset(a, 0, N * 4);
        cudaMemset(b, 0, N * 4);
        cudaMemset(c, 0, N * 4);
        cudaError_t l = cudaGraphLaunch(exec, s);
        cudaError_t y = cudaStreamSynchronize(s);
        int ra = first_bad(a, 0x01010101u), rb = first_bad(b, 7), rc = first_bad(c, 0x01010101u);
        printf("round %d: launch=%d sync=%d bad a=%d b=%d c=%d\n", round, (int)l, (int)y, ra, rb, rc);
        if (l || y || ra >= 0 || rb >= 0 || rc >= 0) launches_ok = 0;
    }
    check(launches_ok, "graph_launched_3_times", launches_ok);

    e = cudaGraphExecDestroy(exec);
    cudaError_t g = cudaGraphDestroy(graph);
    check(e == 0 && g == 0, "destroy", e ? e : g);

    /* A synchronous copy during a global capture is refused and invalidates it. */
    unsigned host[4];
    e = cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal);
    cudaError_t sync_copy = cudaMemcpy(host, a, sizeof host, cudaMemcpyDeviceToHost);
    cudaGraph_t bad_graph = NULL;
    cudaError_t ended = cudaStreamEndCapture(s, &bad_graph);
    printf("illegal: begin=%d copy=%d end=%d\n", (int)e, (int)sync_copy, (int)ended);
    check(e == 0 && sync_copy == cudaErrorStreamCaptureUnsupported, "sync_copy_refused", sync_copy);
    check(ended == cudaErrorStreamCaptureInvalidated && bad_graph == NULL, "capture_invalidated", ended);
    (void)cudaGetLastError();

    e = cudaDeviceSynchronize();
    int after = first_bad(a, 0x01010101u);
    check(e == cudaSuccess && after < 0, "usable_after", e ? e : after);
    cudaEventDestroy(ev);
    cudaStreamDestroy(s);
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
    puts(failures ? "failed" : "done");
    return failures ? 1 : 0;
}
