/* rgpu's libnvidia-ml.so.1, loaded the way monitoring tools and PyTorch load NVML (dlopen by
 * SONAME), next to NVIDIA's static CUDA runtime in the same process. NVML is initialised
 * first, so the shim's one session is opened by NVML and then used by the runtime; remote.sh
 * checks the shim connected once. Each check prints "ok NAME" or "FAIL NAME: why".
 *
 *   nvml QUOTA_BYTES   against a server (run through `rgpu run`): the full set of checks
 *   nvml no-server     nvmlInit must fail with NVML_ERROR_DRIVER_NOT_LOADED (9)
 *   nvml no-driver     nvmlInit must fail with NVML_ERROR_LIBRARY_NOT_FOUND (12)
 *
 * NVML's types are declared here (layouts as in NVIDIA's nvml.h, which is not part of the
 * runtime packages the suite installs). */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cuda.h>
#include <cuda_runtime_api.h>

typedef int nvmlReturn_t;
typedef void *nvmlDevice_t;
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int version; unsigned long long total, reserved, free, used; } nvmlMemory_v2_t;
typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct { unsigned int pid; unsigned long long usedGpuMemory; unsigned int gpuInstanceId, computeInstanceId; } nvmlProcessInfo_t;
#define NVML_MEMORY_V2 ((unsigned int)(sizeof(nvmlMemory_v2_t) | (2u << 24)))

static int failures = 0;
static void *lib;

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

static void *sym(const char *name) {
    void *p = dlsym(lib, name);
    if (!p) { printf("FAIL dlsym %s: %s\n", name, dlerror()); exit(1); }
    return p;
}
#define NVML(name, ...) ((nvmlReturn_t(*)())sym(#name))(__VA_ARGS__)

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) { printf("FAIL dlopen: %s\n", dlerror()); return 1; }
    const char *(*err_str)(nvmlReturn_t) = (const char *(*)(nvmlReturn_t))sym("nvmlErrorString");

    nvmlReturn_t r = NVML(nvmlInit_v2);
    printf("nvmlInit_v2: %d (%s)\n", r, err_str(r));
    if (!strcmp(mode, "no-server") || !strcmp(mode, "no-driver")) {
        nvmlReturn_t want = !strcmp(mode, "no-server") ? 9 : 12;
        check(r == want, "init_refused", "got %lld want %lld", r, want);
        nvmlReturn_t r2 = NVML(nvmlInit_v2);
        check(r2 == want, "init_refused_again", "got %lld want %lld", r2, want);
        unsigned int n = 77;
        r = NVML(nvmlDeviceGetCount_v2, &n);
        check(r == 1 && n == 77, "count_uninitialized", "r=%lld n=%lld", r, n);
        printf("done\n");
        return failures ? 1 : 0;
    }
    long long quota = atoll(mode);
    check(r == 0, "init", "r=%lld %lld", r, 0);
    if (r != 0) { printf("done\n"); return 1; }

    char text[96];
    r = NVML(nvmlSystemGetDriverVersion, text, (unsigned)sizeof text);
    printf("driver version: %d %s\n", r, r == 0 ? text : "-");
    check(r == 0 && strstr(text, "rgpu") != NULL, "driver_version", "r=%lld %lld", r, 0);
    int cuda_version = 0;
    r = NVML(nvmlSystemGetCudaDriverVersion_v2, &cuda_version);
    nvmlReturn_t cuda_version_r = r; /* compared with the runtime's answer below */

    unsigned int count = 0;
    r = NVML(nvmlDeviceGetCount_v2, &count);
    check(r == 0 && count == 1, "count", "r=%lld count=%lld", r, count);
    nvmlDevice_t dev = NULL, again = NULL;
    r = NVML(nvmlDeviceGetHandleByIndex_v2, 0u, &dev);
    check(r == 0 && dev != NULL, "handle_by_index", "r=%lld %lld", r, 0);
    r = NVML(nvmlDeviceGetHandleByIndex_v2, 1u, &again);
    check(r == 2, "handle_by_index_out_of_range", "r=%lld %lld", r, 0);

    char name[96];
    r = NVML(nvmlDeviceGetName, dev, name, (unsigned)sizeof name);
    printf("name: %s\n", r == 0 ? name : "-");
    check(r == 0 && strstr(name, "emulated") != NULL, "name", "r=%lld %lld", r, 0);
    r = NVML(nvmlDeviceGetName, dev, name, 4u);
    check(r == 7, "name_insufficient_size", "r=%lld %lld", r, 0);

    nvmlMemory_t mem;
    r = NVML(nvmlDeviceGetMemoryInfo, dev, &mem);
    printf("memory: total=%llu free=%llu used=%llu\n", mem.total, mem.free, mem.used);
    check(r == 0 && (long long)mem.total == quota && mem.free + mem.used == mem.total, "memory_total_is_quota",
          "r=%lld total=%lld", r, (long long)mem.total);
    nvmlMemory_v2_t mem2;
    memset(&mem2, 0, sizeof mem2);
    mem2.version = NVML_MEMORY_V2;
    r = NVML(nvmlDeviceGetMemoryInfo_v2, dev, &mem2);
    check(r == 0 && (long long)mem2.total == quota && mem2.version == NVML_MEMORY_V2, "memory_v2", "r=%lld total=%lld",
          r, (long long)mem2.total);
    mem2.version = 1;
    r = NVML(nvmlDeviceGetMemoryInfo_v2, dev, &mem2);
    check(r == 25, "memory_v2_version_mismatch", "r=%lld %lld", r, 0);

    char uuid[96];
    r = NVML(nvmlDeviceGetUUID, dev, uuid, (unsigned)sizeof uuid);
    printf("uuid: %s\n", r == 0 ? uuid : "-");
    r = NVML(nvmlDeviceGetHandleByUUID, uuid, &again);
    check(r == 0 && again == dev, "handle_by_uuid", "r=%lld %lld", r, 0);
    r = NVML(nvmlDeviceGetHandleByUUID, "GPU-00000000-0000-0000-0000-000000000000", &again);
    check(r == 6, "handle_by_unknown_uuid", "r=%lld %lld", r, 0);

    nvmlPciInfo_t pci;
    memset(&pci, 0, sizeof pci);
    r = NVML(nvmlDeviceGetPciInfo_v3, dev, &pci);
    printf("pci: %s (legacy %s)\n", pci.busId, pci.busIdLegacy);
    check(r == 0 && strlen(pci.busId) == 16, "pci_info", "r=%lld len=%lld", r, (long long)strlen(pci.busId));
    r = NVML(nvmlDeviceGetHandleByPciBusId_v2, pci.busId, &again);
    check(r == 0 && again == dev, "handle_by_pci_bus_id", "r=%lld %lld", r, 0);

    unsigned int index = 99;
    r = NVML(nvmlDeviceGetIndex, dev, &index);
    check(r == 0 && index == 0, "index", "r=%lld index=%lld", r, index);
    int major = -1, minor = -1;
    r = NVML(nvmlDeviceGetCudaComputeCapability, dev, &major, &minor);

    /* Utilization: the worker's figure for the whole device (all tenants), memory not measured. */
    nvmlUtilization_t util = {777, 777};
    r = NVML(nvmlDeviceGetUtilizationRates, dev, &util);
    printf("utilization before kernels: gpu %u%% memory %u%%\n", util.gpu, util.memory);
    check(r == 0 && util.gpu <= 100 && util.memory == 0, "utilization_in_range", "r=%lld gpu=%lld", r, util.gpu);
    r = NVML(nvmlDeviceGetUtilizationRates, dev, NULL);
    check(r == 2, "utilization_null_refused", "r=%lld %lld", r, 0);
    unsigned int temp = 0;
    r = NVML(nvmlDeviceGetTemperature, dev, 0, &temp);
    check(r == 3, "stub_not_supported", "r=%lld %lld", r, 0);
    int bogus = 0;
    r = NVML(nvmlDeviceGetName, (nvmlDevice_t)&bogus, name, (unsigned)sizeof name);
    check(r == 2, "foreign_handle_refused", "r=%lld %lld", r, 0);

    /* Now the CUDA runtime, on the session NVML opened. */
    struct cudaDeviceProp prop;
    memset(&prop, 0, sizeof prop);
    cudaError_t e = cudaGetDeviceProperties(&prop, 0);
    char from_cuda[96];
    const unsigned char *u = (const unsigned char *)prop.uuid.bytes;
    snprintf(from_cuda, sizeof from_cuda,
             "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1], u[2],
             u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
    check(e == 0 && strcmp(from_cuda, uuid) == 0, "uuid_matches_cuda", "cuda error %lld %lld", e, 0);
    check(major == prop.major && minor == prop.minor, "compute_capability", "nvml major %lld cuda major %lld", major,
          prop.major);
    check(strcmp(name, prop.name) == 0, "name_matches_cuda", "%lld %lld", 0, 0);
    int runtime_driver_version = 0;
    e = cudaDriverGetVersion(&runtime_driver_version);
    printf("CUDA driver version: nvml %d, runtime %d\n", cuda_version, runtime_driver_version);
    check(cuda_version_r == 0 && e == 0 && cuda_version == runtime_driver_version && cuda_version >= 12000,
          "cuda_driver_version", "nvml %lld runtime %lld", cuda_version, runtime_driver_version);

    void *p = NULL;
    e = cudaMalloc(&p, 1 << 20);
    nvmlProcessInfo_t procs[4];
    unsigned int nprocs = 0;
    r = NVML(nvmlDeviceGetComputeRunningProcesses_v3, dev, &nprocs, procs);
    check(r == 7 && nprocs == 1, "processes_size_query", "r=%lld n=%lld", r, nprocs);
    nprocs = 4;
    r = NVML(nvmlDeviceGetComputeRunningProcesses_v3, dev, &nprocs, procs);
    printf("processes: %u, pid %u uses %llu bytes\n", nprocs, nprocs ? procs[0].pid : 0,
           nprocs ? procs[0].usedGpuMemory : 0);
    check(e == 0 && r == 0 && nprocs == 1 && procs[0].pid == (unsigned)getpid() && procs[0].usedGpuMemory >= (1 << 20),
          "processes_is_us", "r=%lld n=%lld", r, nprocs);
    r = NVML(nvmlDeviceGetMemoryInfo, dev, &mem);
    check(r == 0 && mem.used >= (1 << 20), "memory_used_after_malloc", "r=%lld used=%lld", r, (long long)mem.used);
    cudaFree(p);

    /* Busy the device with the emulated built-in rgpu_spin_us through the driver API (the shim
     * itself), then ask NVML: kernels ran within the sample period, so the figure is above 0. */
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    CUresult (*load)(CUmodule *, const void *) = cuda ? dlsym(cuda, "cuModuleLoadData") : NULL;
    CUresult (*get_fn)(CUfunction *, CUmodule, const char *) = cuda ? dlsym(cuda, "cuModuleGetFunction") : NULL;
    CUresult (*launch)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,
                       void **, void **) = cuda ? dlsym(cuda, "cuLaunchKernel") : NULL;
    CUresult (*sync)(void) = cuda ? dlsym(cuda, "cuCtxSynchronize") : NULL;
    CUmodule mod = NULL;
    CUfunction spin = NULL;
    CUresult cr = load && get_fn && launch && sync ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
    if (cr == CUDA_SUCCESS) cr = load(&mod, "RGPU-EMU-MODULE v1\nkernel rgpu_spin_us\n");
    if (cr == CUDA_SUCCESS) cr = get_fn(&spin, mod, "rgpu_spin_us");
    unsigned int us = 50000; /* 10 launches of 50 ms: 0.5 s of kernel time */
    void *spin_params[] = {&us};
    for (int i = 0; i < 10 && cr == CUDA_SUCCESS; i++) cr = launch(spin, 1, 1, 1, 1, 1, 1, 0, NULL, spin_params, NULL);
    if (cr == CUDA_SUCCESS) cr = sync();
    check(cr == CUDA_SUCCESS, "spin_kernels", "CUresult %lld %lld", cr, 0);
    util.gpu = util.memory = 777;
    r = NVML(nvmlDeviceGetUtilizationRates, dev, &util);
    printf("utilization after 0.5 s of kernels: gpu %u%% memory %u%%\n", util.gpu, util.memory);
    check(r == 0 && util.gpu > 0 && util.gpu <= 100 && util.memory == 0, "utilization_after_kernels",
          "r=%lld gpu=%lld", r, util.gpu);

    r = NVML(nvmlShutdown);
    check(r == 0, "shutdown", "r=%lld %lld", r, 0);
    r = NVML(nvmlDeviceGetCount_v2, &count);
    check(r == 1, "uninitialized_after_shutdown", "r=%lld %lld", r, 0);
    r = NVML(nvmlShutdown);
    check(r == 1, "shutdown_twice", "r=%lld %lld", r, 0);
    printf("done\n");
    return failures ? 1 : 0;
}
