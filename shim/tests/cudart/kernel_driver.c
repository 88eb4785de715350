/* Driver-API kernels through the shim against an rgpu server: loads an RGPU-EMU-MODULE v1
 * image, looks up the built-in kernels, launches them with kernelParams and with the extra
 * form (and through cuLaunchKernelEx / cuLaunchCooperativeKernel), checks results on the
 * host, and checks that bad launches give errors, not crashes. A real (PTX) image registers,
 * but launching its kernel is refused. One "ok NAME" or "FAIL NAME: why" line per check;
 * remote.sh matches them. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cuda.h>

#define N 1000

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
FN(cuInit); FN(cuDevicePrimaryCtxRetain); FN(cuCtxSetCurrent); FN(cuCtxSynchronize);
FN(cuModuleLoadData); FN(cuModuleUnload); FN(cuModuleGetFunction); FN(cuLaunchKernel);
FN(cuLaunchKernelEx); FN(cuLaunchCooperativeKernel); FN(cuMemAlloc_v2); FN(cuMemFree_v2);
FN(cuMemcpyHtoD_v2); FN(cuMemcpyDtoH_v2); FN(cuLibraryLoadData); FN(cuLibraryGetKernel);
FN(cuKernelGetFunction); FN(cuFuncGetAttribute); FN(cuModuleGetGlobal_v2);
#define LOAD(name) do { p_##name = (__typeof__(p_##name))dlsym(lib, #name); \
    if (!p_##name) { printf("FAIL dlsym %s\n", #name); return 1; } } while (0)

static const char *MODULE_TEXT =
    "RGPU-EMU-MODULE v1\n"
    "# the built-ins this program launches\n"
    "kernel rgpu_vector_add_f32\n"
    "kernel rgpu_saxpy_f32\n"
    "kernel rgpu_fill_u32\n"
    "kernel rgpu_sum_f32\n";

static const char *PTX_TEXT =
    "//\n.version 8.0\n.target sm_80\n.address_size 64\n"
    ".visible .entry real_kernel(\n.param .u64 real_kernel_param_0\n)\n{\nret;\n}\n";

int main(void) {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib) { printf("FAIL dlopen: %s\n", dlerror()); return 1; }
    LOAD(cuInit); LOAD(cuDevicePrimaryCtxRetain); LOAD(cuCtxSetCurrent); LOAD(cuCtxSynchronize);
    LOAD(cuModuleLoadData); LOAD(cuModuleUnload); LOAD(cuModuleGetFunction); LOAD(cuLaunchKernel);
    LOAD(cuLaunchKernelEx); LOAD(cuLaunchCooperativeKernel); LOAD(cuMemAlloc_v2); LOAD(cuMemFree_v2);
    LOAD(cuMemcpyHtoD_v2); LOAD(cuMemcpyDtoH_v2); LOAD(cuLibraryLoadData); LOAD(cuLibraryGetKernel);
    LOAD(cuKernelGetFunction); LOAD(cuFuncGetAttribute); LOAD(cuModuleGetGlobal_v2);

    CUresult r = p_cuInit(0);
    check(r == CUDA_SUCCESS, "init", r, 0);
    CUcontext ctx = NULL;
    r = p_cuDevicePrimaryCtxRetain(&ctx, 0);
    if (r == CUDA_SUCCESS) r = p_cuCtxSetCurrent(ctx);
    check(r == CUDA_SUCCESS, "context", r, 0);

    CUmodule mod = NULL;
    r = p_cuModuleLoadData(&mod, MODULE_TEXT);
    check(r == CUDA_SUCCESS && mod != NULL, "module_load", r, 0);
    CUmodule mod2 = NULL;
    r = p_cuModuleLoadData(&mod2, MODULE_TEXT);
    check(r == CUDA_SUCCESS && mod2 != NULL && mod2 != mod, "module_load_again", r, 0);

    CUfunction add = NULL, saxpy = NULL, fill = NULL, sum = NULL, none = NULL;
    r = p_cuModuleGetFunction(&add, mod, "rgpu_vector_add_f32");
    check(r == CUDA_SUCCESS, "lookup_vector_add", r, 0);
    r = p_cuModuleGetFunction(&saxpy, mod, "rgpu_saxpy_f32");
    check(r == CUDA_SUCCESS, "lookup_saxpy", r, 0);
    r = p_cuModuleGetFunction(&fill, mod, "rgpu_fill_u32");
    check(r == CUDA_SUCCESS, "lookup_fill", r, 0);
    r = p_cuModuleGetFunction(&sum, mod, "rgpu_sum_f32");
    check(r == CUDA_SUCCESS, "lookup_sum", r, 0);
    r = p_cuModuleGetFunction(&none, mod, "rgpu_no_such_kernel");
    check(r == CUDA_ERROR_NOT_FOUND, "lookup_unknown", r, CUDA_ERROR_NOT_FOUND);
    CUfunction add_again = NULL;
    r = p_cuModuleGetFunction(&add_again, mod, "rgpu_vector_add_f32");
    check(r == CUDA_SUCCESS && add_again == add, "lookup_cached", r, 0);

    float ha[N], hb[N], hc[N];
    for (int i = 0; i < N; i++) { ha[i] = (float)i; hb[i] = 0.5f * (float)i + 1.0f; }
    CUdeviceptr a = 0, b = 0, c = 0, out = 0;
    r = p_cuMemAlloc_v2(&a, sizeof ha);
    if (!r) r = p_cuMemAlloc_v2(&b, sizeof hb);
    if (!r) r = p_cuMemAlloc_v2(&c, sizeof hc);
    if (!r) r = p_cuMemAlloc_v2(&out, sizeof(float));
    if (!r) r = p_cuMemcpyHtoD_v2(a, ha, sizeof ha);
    if (!r) r = p_cuMemcpyHtoD_v2(b, hb, sizeof hb);
    check(r == CUDA_SUCCESS, "alloc_and_upload", r, 0);

    /* vector add, kernelParams form */
    unsigned n = N;
    void *add_params[] = {&a, &b, &c, &n};
    r = p_cuLaunchKernel(add, (N + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, add_params, NULL);
    CUresult s = p_cuCtxSynchronize();
    memset(hc, 0, sizeof hc);
    CUresult d = p_cuMemcpyDtoH_v2(hc, c, sizeof hc);
    int bad = -1;
    for (int i = 0; i < N && bad < 0; i++) if (hc[i] != ha[i] + hb[i]) bad = i;
    check(r == 0 && s == 0 && d == 0 && bad < 0, "vector_add_kernel_params", bad, -1);

    /* saxpy, extra form: (unsigned n, float a, const float* x, float* y) packed 0/4/8/16 */
    struct { unsigned n; float alpha; CUdeviceptr x; CUdeviceptr y; } args = {N, 2.0f, a, c};
    size_t args_size = sizeof args;
    void *extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, &args, CU_LAUNCH_PARAM_BUFFER_SIZE, &args_size,
                     CU_LAUNCH_PARAM_END};
    r = p_cuLaunchKernel(saxpy, (N + 127) / 128, 1, 1, 128, 1, 1, 0, NULL, NULL, extra);
    s = p_cuCtxSynchronize();
    d = p_cuMemcpyDtoH_v2(hc, c, sizeof hc);
    bad = -1;
    for (int i = 0; i < N && bad < 0; i++) if (hc[i] != 2.0f * ha[i] + (ha[i] + hb[i])) bad = i;
    check(r == 0 && s == 0 && d == 0 && bad < 0, "saxpy_extra", bad, -1);

    /* fill, through cuLaunchKernelEx with the cooperative attribute */
    unsigned value = 0xC0FFEEu, count = N;
    void *fill_params[] = {&c, &value, &count};
    CUlaunchAttribute coop;
    memset(&coop, 0, sizeof coop);
    coop.id = CU_LAUNCH_ATTRIBUTE_COOPERATIVE;
    coop.value.cooperative = 1;
    CUlaunchConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.gridDimX = 4; cfg.gridDimY = 1; cfg.gridDimZ = 1;
    cfg.blockDimX = 256; cfg.blockDimY = 1; cfg.blockDimZ = 1;
    cfg.attrs = &coop; cfg.numAttrs = 1;
    r = p_cuLaunchKernelEx(&cfg, fill, fill_params, NULL);
    s = p_cuCtxSynchronize();
    unsigned hu[N];
    d = p_cuMemcpyDtoH_v2(hu, c, sizeof hu);
    bad = -1;
    for (int i = 0; i < N && bad < 0; i++) if (hu[i] != value) bad = i;
    check(r == 0 && s == 0 && d == 0 && bad < 0, "fill_launch_ex_cooperative", bad, -1);

    /* cluster dimensions: the emulated device has no clusters (deferred error, not sticky) */
    CUlaunchAttribute cluster;
    memset(&cluster, 0, sizeof cluster);
    cluster.id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
    cluster.value.clusterDim.x = 2; cluster.value.clusterDim.y = 1; cluster.value.clusterDim.z = 1;
    cfg.attrs = &cluster;
    r = p_cuLaunchKernelEx(&cfg, fill, fill_params, NULL);
    s = p_cuCtxSynchronize();
    check(r == 0 && s == CUDA_ERROR_NOT_SUPPORTED, "launch_ex_cluster_refused", s, CUDA_ERROR_NOT_SUPPORTED);

    /* cooperative launch entry point, then the reduction */
    value = 7;
    r = p_cuLaunchCooperativeKernel(fill, 4, 1, 1, 256, 1, 1, 0, NULL, fill_params);
    s = p_cuCtxSynchronize();
    d = p_cuMemcpyDtoH_v2(hu, c, sizeof hu);
    check(r == 0 && s == 0 && d == 0 && hu[0] == 7 && hu[N - 1] == 7, "cooperative_launch", hu[N - 1], 7);

    void *sum_params[] = {&a, &out, &n};
    r = p_cuLaunchKernel(sum, 1, 1, 1, 1, 1, 1, 0, NULL, sum_params, NULL);
    float total = 0;
    s = p_cuCtxSynchronize();
    d = p_cuMemcpyDtoH_v2(&total, out, sizeof total);
    float want = 0;
    for (int i = 0; i < N; i++) want += ha[i];
    float diff = total > want ? total - want : want - total;
    check(r == 0 && s == 0 && d == 0 && diff <= 1e-3f * want, "sum_reduction",
          (long long)total, (long long)want);

    /* bad launches: errors, not crashes */
    size_t short_size = 8;
    void *short_extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, &args, CU_LAUNCH_PARAM_BUFFER_SIZE,
                           &short_size, CU_LAUNCH_PARAM_END};
    r = p_cuLaunchKernel(saxpy, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, short_extra);
    check(r == CUDA_ERROR_INVALID_VALUE, "bad_param_size", r, CUDA_ERROR_INVALID_VALUE);
    r = p_cuLaunchKernel(saxpy, 1, 1, 1, 1, 1, 1, 0, NULL, add_params, extra);
    check(r == CUDA_ERROR_INVALID_VALUE, "both_param_forms", r, CUDA_ERROR_INVALID_VALUE);
    r = p_cuLaunchKernel(saxpy, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL);
    check(r == CUDA_ERROR_INVALID_VALUE, "missing_params", r, CUDA_ERROR_INVALID_VALUE);
    r = p_cuLaunchKernel((CUfunction)(uintptr_t)0x1234, 1, 1, 1, 1, 1, 1, 0, NULL, add_params, NULL);
    check(r == CUDA_ERROR_INVALID_HANDLE, "unknown_function", r, CUDA_ERROR_INVALID_HANDLE);
    r = p_cuLaunchKernel(add, 1, 1, 1, 100000, 1, 1, 0, NULL, add_params, NULL);
    s = p_cuCtxSynchronize();
    check(r == 0 && s == CUDA_ERROR_INVALID_VALUE, "bad_geometry_deferred", s, CUDA_ERROR_INVALID_VALUE);
    s = p_cuCtxSynchronize();
    check(s == CUDA_SUCCESS, "context_usable_after_errors", s, 0);

    /* a real image registers; its kernel is found but cannot run on the emulated device */
    CUlibrary real = NULL;
    r = p_cuLibraryLoadData(&real, PTX_TEXT, NULL, NULL, 0, NULL, NULL, 0);
    check(r == CUDA_SUCCESS, "real_image_registers", r, 0);
    CUkernel rk = NULL;
    CUfunction rf = NULL;
    r = p_cuLibraryGetKernel(&rk, real, "real_kernel");
    if (!r) r = p_cuKernelGetFunction(&rf, rk);
    check(r == CUDA_SUCCESS && rf != NULL, "real_kernel_lookup", r, 0);
    r = p_cuLibraryGetKernel(&rk, real, "not_in_image");
    check(r == CUDA_ERROR_NOT_FOUND, "real_unknown_kernel", r, CUDA_ERROR_NOT_FOUND);
    void *real_params[] = {&a};
    r = p_cuLaunchKernel(rf, 1, 1, 1, 1, 1, 1, 0, NULL, real_params, NULL);
    s = p_cuCtxSynchronize();
    check(r == 0 && s == CUDA_ERROR_NOT_SUPPORTED, "real_kernel_launch_refused", s, CUDA_ERROR_NOT_SUPPORTED);

    int threads = 0;
    r = p_cuFuncGetAttribute(&threads, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, add);
    check(r == CUDA_SUCCESS && threads == 1024, "func_max_threads", threads, 1024);
    int regs = -1;
    r = p_cuFuncGetAttribute(&regs, CU_FUNC_ATTRIBUTE_NUM_REGS, add);
    check(r == CUDA_SUCCESS && regs == 0, "func_num_regs_builtin", regs, 0);
    r = p_cuFuncGetAttribute(&regs, CU_FUNC_ATTRIBUTE_NUM_REGS, rf);
    check(r == CUDA_ERROR_NOT_SUPPORTED, "func_attribute_real_refused", r, CUDA_ERROR_NOT_SUPPORTED);

    CUdeviceptr gptr = 0;
    size_t gsize = 0;
    r = p_cuModuleGetGlobal_v2(&gptr, &gsize, mod, "no_such_global");
    check(r == CUDA_ERROR_NOT_FOUND, "module_global_absent", r, CUDA_ERROR_NOT_FOUND);

    /* unload: the module's functions become invalid */
    r = p_cuModuleUnload(mod);
    check(r == CUDA_SUCCESS, "module_unload", r, 0);
    r = p_cuLaunchKernel(add, 1, 1, 1, 1, 1, 1, 0, NULL, add_params, NULL);
    check(r == CUDA_ERROR_INVALID_HANDLE, "launch_after_unload", r, CUDA_ERROR_INVALID_HANDLE);
    r = p_cuModuleUnload(mod);
    check(r == CUDA_ERROR_INVALID_HANDLE, "unload_twice", r, CUDA_ERROR_INVALID_HANDLE);

    p_cuMemFree_v2(a); p_cuMemFree_v2(b); p_cuMemFree_v2(c); p_cuMemFree_v2(out);
    printf("done\n");
    return failures ? 1 : 0;
}
