/* Context and stream identity through the shim against an rgpu server: cuCtxGetId, and the two
 * private table slots that cuBLASLt reads it through (TOOLS_CONTEXT slot 4, the context's id;
 * TOOLS_TLS slot 2, the current context); then stream ids, devices and contexts (cudaStreamGetId,
 * cudaStreamGetDevice, cuStreamGetCtx_v2). The runtime makes the primary context current
 * (cudaFree(0)); the driver is then called through dlopen("libcuda.so.1"), from this thread and
 * from one with no current context. One "ok NAME" or "FAIL NAME: why" line per check;
 * cuda13.sh matches them. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cuda.h>
#include <cuda_runtime_api.h>

static int failures = 0;
static void check(int ok, const char *name, long long got, long long want) {
    if (ok) {
        printf("ok %s\n", name);
    } else {
        printf("FAIL %s: got %lld want %lld\n", name, got, want);
        failures++;
    }
}

typedef CUresult (*get_id_t)(CUcontext, unsigned long long *);
typedef CUresult (*get_current_t)(CUcontext *);
typedef CUresult (*export_table_t)(const void **, const CUuuid *);
typedef CUresult (*slot_id_t)(CUcontext, uint64_t *);
typedef CUresult (*slot_current_t)(CUcontext *);
typedef CUresult (*stream_ctx_v2_t)(CUstream, CUcontext *, void **);
typedef CUresult (*stream_id_t)(CUstream, unsigned long long *);

static const unsigned char TOOLS_CONTEXT[16] = {0x21, 0x31, 0x8c, 0x60, 0x97, 0x14, 0x32, 0x48,
                                                0x8c, 0xa6, 0x41, 0xff, 0x73, 0x24, 0xc8, 0xf2};
static const unsigned char TOOLS_TLS[16] = {0x42, 0xd8, 0x5a, 0x81, 0x23, 0xf6, 0xcb, 0x47,
                                            0x82, 0x98, 0xf6, 0xe7, 0x8a, 0x3a, 0xec, 0xdc};
/* TOOLS_CONTEXT's size slot: 95 pointers, as a 595-series driver serves it. */
#define TOOLS_CONTEXT_BYTES (95 * sizeof(void *))

static get_id_t get_id;
static slot_id_t slot_id;
static slot_current_t slot_current;
static CUresult (*stream_ctx_v2_other)(CUstream, CUcontext *, void **);

/* What a thread with no current context sees. */
struct other {
    CUcontext ctx;
    CUresult id_null, id_explicit, slot_current_r, stream_ctx_r;
    unsigned long long id;
    CUcontext current;
};
static void *other_thread(void *arg) {
    struct other *o = arg;
    unsigned long long id = 0;
    o->id_null = get_id(NULL, &id);
    o->id_explicit = get_id(o->ctx, &o->id);
    o->current = (CUcontext)1;
    o->slot_current_r = slot_current(&o->current);
    CUcontext sctx = NULL;
    o->stream_ctx_r = stream_ctx_v2_other(NULL, &sctx, NULL);
    return NULL;
}

static const void *const *table(export_table_t export_table, const unsigned char id[16], CUresult *r) {
    CUuuid uuid;
    const void *t = NULL;
    memcpy(uuid.bytes, id, 16);
    *r = export_table(&t, &uuid);
    return (const void *const *)t;
}

int main(void) {
    cudaError_t e = cudaFree(0);
    check(e == cudaSuccess, "init", e, 0);
    void *lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib) { printf("FAIL dlopen: %s\n", dlerror()); return 1; }
    get_id = (get_id_t)dlsym(lib, "cuCtxGetId");
    get_current_t get_current = (get_current_t)dlsym(lib, "cuCtxGetCurrent");
    export_table_t export_table = (export_table_t)dlsym(lib, "cuGetExportTable");
    if (!get_id || !get_current || !export_table) { printf("FAIL dlsym\n"); return 1; }

    CUcontext ctx = NULL;
    CUresult r = get_current(&ctx);
    check(r == CUDA_SUCCESS && ctx != NULL, "current_context", r, 0);
    unsigned long long id = 0, again = 0, junk = 0;
    r = get_id(ctx, &id);
    check(r == CUDA_SUCCESS && id != 0, "ctx_get_id", r, 0);
    r = get_id(NULL, &again);
    check(r == CUDA_SUCCESS && again == id, "ctx_get_id_current", (long long)again, (long long)id);
    r = get_id((CUcontext)(uintptr_t)0x10, &junk);
    check(r == CUDA_ERROR_INVALID_CONTEXT, "ctx_get_id_unknown_context", r, CUDA_ERROR_INVALID_CONTEXT);
    r = get_id(ctx, NULL);
    check(r == CUDA_ERROR_INVALID_VALUE, "ctx_get_id_null_output", r, CUDA_ERROR_INVALID_VALUE);

    const void *const *tc = table(export_table, TOOLS_CONTEXT, &r);
    check(r == CUDA_SUCCESS && tc && (uintptr_t)tc[0] == TOOLS_CONTEXT_BYTES, "tools_context_table", r, 0);
    const void *const *tls = table(export_table, TOOLS_TLS, &r);
    check(r == CUDA_SUCCESS && tls && tls[2], "tools_tls_table", r, 0);
    if (!tc || !tls) { printf("FAIL tables missing\n"); return 1; }
    slot_id = (slot_id_t)tc[4];
    slot_current = (slot_current_t)tls[2];
    stream_ctx_v2_other = (CUresult(*)(CUstream, CUcontext *, void **))dlsym(lib, "cuStreamGetCtx_v2");
    if (!stream_ctx_v2_other) { printf("FAIL dlsym cuStreamGetCtx_v2\n"); return 1; }

    uint64_t sid = 0;
    r = slot_id(ctx, &sid);
    check(r == CUDA_SUCCESS && sid == id, "tools_context_id", (long long)sid, (long long)id);
    sid = 0;
    r = slot_id(NULL, &sid);
    check(r == CUDA_SUCCESS && sid == id, "tools_context_id_current", (long long)sid, (long long)id);
    r = slot_id((CUcontext)(uintptr_t)0x10, &sid);
    check(r == CUDA_ERROR_INVALID_CONTEXT, "tools_context_id_unknown_context", r, CUDA_ERROR_INVALID_CONTEXT);
    CUcontext cur = NULL;
    r = slot_current(&cur);
    check(r == CUDA_SUCCESS && cur == ctx, "tools_tls_current_context", r, 0);

    struct other o = {.ctx = ctx};
    pthread_t t;
    if (pthread_create(&t, NULL, other_thread, &o) != 0 || pthread_join(t, NULL) != 0) {
        printf("FAIL thread\n");
        return 1;
    }
    check(o.id_null == CUDA_ERROR_INVALID_CONTEXT, "other_thread_no_current_id", o.id_null, CUDA_ERROR_INVALID_CONTEXT);
    check(o.id_explicit == CUDA_SUCCESS && o.id == id, "other_thread_explicit_id", (long long)o.id, (long long)id);
    check(o.slot_current_r == CUDA_SUCCESS && o.current == NULL, "other_thread_tools_tls_no_current",
          o.slot_current_r, 0);
    check(o.stream_ctx_r == CUDA_ERROR_INVALID_CONTEXT, "other_thread_stream_ctx_v2_no_current", o.stream_ctx_r,
          CUDA_ERROR_INVALID_CONTEXT);

    /* Streams: ids unique for the life of the program, the device, and the context. */
    stream_ctx_v2_t stream_ctx_v2 = (stream_ctx_v2_t)dlsym(lib, "cuStreamGetCtx_v2");
    stream_id_t stream_id = (stream_id_t)dlsym(lib, "cuStreamGetId");
    if (!stream_ctx_v2 || !stream_id) { printf("FAIL dlsym streams\n"); return 1; }
    cudaStream_t s1 = NULL, s2 = NULL, s3 = NULL;
    e = cudaStreamCreate(&s1);
    if (e == cudaSuccess) e = cudaStreamCreate(&s2);
    check(e == cudaSuccess, "stream_create", e, 0);
    unsigned long long id1 = 0, id2 = 0, id1_again = 0, id_null = 0, id_legacy = 0, id_pt = 0, id3 = 0;
    e = cudaStreamGetId(s1, &id1);
    if (e == cudaSuccess) e = cudaStreamGetId(s2, &id2);
    if (e == cudaSuccess) e = cudaStreamGetId(s1, &id1_again);
    check(e == cudaSuccess && id1 != id2 && id1 == id1_again, "stream_ids", e, 0);
    e = cudaStreamGetId(NULL, &id_null);
    if (e == cudaSuccess) e = cudaStreamGetId(cudaStreamLegacy, &id_legacy);
    if (e == cudaSuccess) e = cudaStreamGetId(cudaStreamPerThread, &id_pt);
    check(e == cudaSuccess && id_null == id_legacy && id_pt != id_null && id_pt != id1 && id_pt != id2 &&
              id_null != id1 && id_null != id2,
          "stream_ids_special", e, 0);
    e = cudaStreamDestroy(s1);
    if (e == cudaSuccess) e = cudaStreamCreate(&s3);
    if (e == cudaSuccess) e = cudaStreamGetId(s3, &id3);
    check(e == cudaSuccess && id3 != id1 && id3 != id2, "stream_id_not_reused", e, 0);
    unsigned long long junk_id = 0;
    r = stream_id((CUstream)(uintptr_t)0x10, &junk_id);
    check(r == CUDA_ERROR_INVALID_HANDLE, "stream_id_unknown_stream", r, CUDA_ERROR_INVALID_HANDLE);
    int sdev = -1;
    e = cudaStreamGetDevice(s2, &sdev);
    check(e == cudaSuccess && sdev == 0, "stream_device", e, 0);
    CUcontext sctx = NULL;
    void *green = (void *)1;
    r = stream_ctx_v2((CUstream)s2, &sctx, &green);
    check(r == CUDA_SUCCESS && sctx == ctx && green == NULL, "stream_ctx_v2", r, 0);
    sctx = NULL;
    green = (void *)1;
    r = stream_ctx_v2(NULL, &sctx, &green);
    check(r == CUDA_SUCCESS && sctx == ctx && green == NULL, "stream_ctx_v2_null_stream", r, 0);
    e = cudaStreamDestroy(s2);
    if (e == cudaSuccess) e = cudaStreamDestroy(s3);
    check(e == cudaSuccess, "stream_destroy", e, 0);

    /* Driver symbols a library looks up by name (cuBLASLt 13.x dlsyms these and more) are
     * exported even where the shim only has a refusing stub; not called here. */
    const char *by_name[] = {"cuTensorMapEncodeTiled", "cuLinkCreate_v2", "cuGetErrorString",
                             "cuOccupancyMaxActiveBlocksPerMultiprocessor", "cuCtxPushCurrent"};
    int found = 0;
    for (unsigned i = 0; i < sizeof by_name / sizeof by_name[0]; i++) found += dlsym(lib, by_name[i]) != NULL;
    check(found == (int)(sizeof by_name / sizeof by_name[0]), "exported_by_name", found,
          (long long)(sizeof by_name / sizeof by_name[0]));

    e = cudaDeviceSynchronize();
    check(e == cudaSuccess, "synchronize", e, 0);
    printf("done\n");
    return failures ? 1 : 0;
}
