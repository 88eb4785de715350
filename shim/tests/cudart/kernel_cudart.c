/* Registers a fatbin the way nvcc's generated host code does (__cudaRegisterFatBinary,
 * __cudaRegisterFunction, __cudaRegisterFatBinaryEnd) and launches through the runtime API
 * (cudaLaunchKernel). There is no nvcc front end on PyPI, so the fatbin is built here by hand:
 * one container whose single uncompressed PTX-kind entry carries an RGPU-EMU-MODULE v1 test
 * module, which the emulated device runs as its built-in kernels. Layout facts (wrapper magic
 * 0x466243b1, container magic 0xBA55ED50, 64-byte entry headers) are cited in docs/worker.md.
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

/* Host stubs: their addresses name the kernels, as nvcc's stubs do. */
static void vector_add_stub(void) {}
static void fill_stub(void) {}

static dim3 d3(unsigned x) {
    dim3 v = {x, 1, 1};
    return v;
}

static int failures = 0;
static void check(int ok, const char *name, long long got) {
    if (ok) printf("ok %s\n", name);
    else { printf("FAIL %s: got %lld\n", name, got); failures++; }
}

int main(void) {
    size_t text = sizeof MODULE_TEXT; /* with its NUL */
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
    memcpy(fatbin.payload, MODULE_TEXT, text);
    fatbin.fat_size = 64 + fatbin.padded_payload_size;
    wrapper.magic = 0x466243b1u;
    wrapper.version = 1;
    wrapper.data = &fatbin;

    void **handle = __cudaRegisterFatBinary(&wrapper);
    __cudaRegisterFunction(handle, (const char *)vector_add_stub, "rgpu_vector_add_f32",
                           "rgpu_vector_add_f32", -1, NULL, NULL, NULL, NULL, NULL);
    __cudaRegisterFunction(handle, (const char *)fill_stub, "rgpu_fill_u32", "rgpu_fill_u32", -1,
                           NULL, NULL, NULL, NULL, NULL);
    __cudaRegisterFatBinaryEnd(handle);

    enum { N = 512 };
    float ha[N], hb[N], hc[N];
    for (int i = 0; i < N; i++) { ha[i] = (float)i; hb[i] = 3.0f; }
    float *a = NULL, *b = NULL, *c = NULL;
    cudaError_t e = cudaMalloc((void **)&a, sizeof ha);
    if (!e) e = cudaMalloc((void **)&b, sizeof hb);
    if (!e) e = cudaMalloc((void **)&c, sizeof hc);
    if (!e) e = cudaMemcpy(a, ha, sizeof ha, cudaMemcpyHostToDevice);
    if (!e) e = cudaMemcpy(b, hb, sizeof hb, cudaMemcpyHostToDevice);
    check(e == cudaSuccess, "cudart_alloc", e);

    unsigned n = N;
    void *args[] = {&a, &b, &c, &n};
    e = cudaLaunchKernel((const void *)vector_add_stub, d3(N / 128), d3(128), args, 0, 0);
    cudaError_t s = cudaDeviceSynchronize();
    cudaError_t d = cudaMemcpy(hc, c, sizeof hc, cudaMemcpyDeviceToHost);
    int bad = -1;
    for (int i = 0; i < N && bad < 0; i++) if (hc[i] != ha[i] + hb[i]) bad = i;
    printf("launch=%d sync=%d copy=%d\n", (int)e, (int)s, (int)d);
    check(e == 0 && s == 0 && d == 0 && bad < 0, "cudart_vector_add", bad);

    unsigned value = 42;
    void *fill_args[] = {&c, &value, &n};
    e = cudaLaunchKernel((const void *)fill_stub, d3(N / 128), d3(128), fill_args, 0, 0);
    s = cudaDeviceSynchronize();
    unsigned hu[N];
    d = cudaMemcpy(hu, c, sizeof hu, cudaMemcpyDeviceToHost);
    check(e == 0 && s == 0 && d == 0 && hu[0] == 42 && hu[N - 1] == 42, "cudart_fill", hu[0]);

    cudaFree(a); cudaFree(b); cudaFree(c);
    __cudaUnregisterFatBinary(handle);
    printf("done\n");
    return failures ? 1 : 0;
}
