/* Calls the shim's driver ABI directly, as the runtime and libraries do through
 * cuGetProcAddress, and prints one line per check; run.sh matches the lines. */
#include <stdio.h>
#include <string.h>
#include <dlfcn.h>
#include <cuda.h>

typedef CUresult (*get_proc_v2_t)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);
typedef CUresult (*get_proc_v1_t)(const char *, void **, int, cuuint64_t);

int main(void) {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (!lib) { printf("dlopen: %s\n", dlerror()); return 1; }
    get_proc_v2_t gpa = (get_proc_v2_t)dlsym(lib, "cuGetProcAddress_v2");
    if (!gpa) { printf("no cuGetProcAddress_v2\n"); return 1; }
    void *pfn = NULL;
    CUdriverProcAddressQueryResult st = -1;

    CUresult r = gpa("cuGetProcAddress", &pfn, 12000, 0, &st);
    printf("self@12000: r=%d st=%d same=%d\n", (int)r, (int)st, pfn == (void *)gpa);
    r = gpa("cuGetProcAddress", &pfn, 11030, 0, &st);
    printf("self@11030: r=%d st=%d v1=%d\n", (int)r, (int)st, pfn == dlsym(lib, "cuGetProcAddress"));
    get_proc_v1_t v1 = (get_proc_v1_t)pfn;
    void *init = NULL;
    r = v1("cuInit", &init, 2000, 0);
    printf("v1 cuInit: r=%d found=%d\n", (int)r, init != NULL);
    r = ((CUresult (*)(unsigned))init)(0);
    printf("cuInit(0): r=%d\n", (int)r);

    r = gpa("cuDeviceGetCount", &pfn, 12000, 0, &st);
    int count = -1;
    CUresult r2 = ((CUresult (*)(int *))pfn)(&count);
    printf("cuDeviceGetCount: r=%d count=%d\n", (int)r2, count);

    void *legacy = NULL, *ptsz = NULL;
    gpa("cuLaunchKernel", &legacy, 12000, CU_GET_PROC_ADDRESS_DEFAULT, &st);
    r = gpa("cuLaunchKernel", &ptsz, 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, &st);
    printf("cuLaunchKernel ptsz: r=%d st=%d distinct=%d\n", (int)r, (int)st, legacy != ptsz && legacy && ptsz);
    gpa("cuLaunchGrid", &pfn, 12000, 0, &st);
    r = ((CUresult (*)(void))pfn)();
    printf("cuLaunchGrid stub: r=%d\n", (int)r);

    pfn = (void *)1;
    r = gpa("cuNoSuchEntryPoint", &pfn, 12000, 0, &st);
    printf("unknown: r=%d st=%d null=%d\n", (int)r, (int)st, pfn == NULL);
    r = gpa("cuGetProcAddress", &pfn, 11020, 0, &st);
    printf("too old: r=%d st=%d\n", (int)r, (int)st);

    CUresult (*get_table)(const void **, const CUuuid *) = dlsym(lib, "cuGetExportTable");
    const CUuuid cudart = {{0x6b,0xd5,0xfb,0x6c,0x5b,0xf4,0xe7,0x4a,0x89,0x87,0xd9,0x39,0x12,0xfd,0x9d,0xf9}};
    const void *table = NULL;
    r = get_table(&table, &cudart);
    printf("CUDART_INTERFACE: r=%d size=%zu\n", (int)r, table ? *(const size_t *)table : 0);
    const CUuuid integrity = {{0xd4,0x08,0x20,0x55,0xbd,0xe6,0x70,0x4b,0x8d,0x34,0xba,0x12,0x3c,0x66,0xe1,0xf2}};
    r = get_table(&table, &integrity);
    unsigned long long out[2] = {0, 0};
    CUresult r3 = ((CUresult (*)(unsigned, unsigned long long, unsigned long long *))((void *const *)table)[1])(12090, 1700000000ull, out);
    printf("INTEGRITY_CHECK: r=%d check=%d answer=%016llx%016llx\n", (int)r, (int)r3, out[0], out[1]);
    printf("done\n");
    return 0;
}
